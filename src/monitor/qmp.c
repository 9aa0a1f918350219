/*
 * QMP transport: client sockets, the input splitter, buffered non-blocking output, listening
 * sockets and event broadcast. Commands live in qmp_cmds.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "monitor/qmp_int.h"

#include "core/os.h"

struct qmp_listener {
    struct qmp_server *s;
    struct qmp_listener *next;
    int fd;
    bool pretty;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* unix: unlinked on destroy */
};

int qmp_err_set(struct qmp_err *e, const char *cls, const char *fmt, ...)
{
    va_list ap;
    if (e->set)
        return -1;
    e->set = true;
    e->cls = cls;
    va_start(ap, fmt);
    vsnprintf(e->desc, sizeof(e->desc), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- clients ---- */

static void client_free(struct qmp_client *c)
{
    free(c->in);
    free(c->out);
    free(c);
}

static void client_drop(struct qmp_client *c)
{
    if (c->dead)
        return;
    c->dead = true;
    struct qmp_server *s = c->s;
    for (struct qmp_client **pp = &s->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    s->nr_clients--;
    if (c->fd >= 0) {
        eventloop_remove(s->loop, c->fd);
        close(c->fd);
        c->fd = -1;
    }
    if (!c->busy)
        client_free(c);
}

/* Enter/leave a stretch of work on c; leaving frees a client dropped meanwhile. */
static void client_get(struct qmp_client *c)
{
    c->busy++;
}

static bool client_put(struct qmp_client *c)
{
    if (--c->busy == 0 && c->dead) {
        client_free(c);
        return false;
    }
    return !c->dead;
}

static size_t out_pending(const struct qmp_client *c)
{
    return c->out_len - c->out_off;
}

/* Input is paused while output backs up, so a client that does not read cannot make us buffer
 * unbounded replies. */
static void client_update_watch(struct qmp_client *c)
{
    if (c->dead || c->fd < 0)
        return;
    uint32_t ev = 0;
    if (out_pending(c) < QMP_OUT_HIGH)
        ev |= EPOLLIN;
    if (out_pending(c))
        ev |= EPOLLOUT;
    if (ev != c->watched) {
        eventloop_modify(c->s->loop, c->fd, ev);
        c->watched = ev;
    }
}

static void client_flush(struct qmp_client *c)
{
    while (!c->dead && out_pending(c)) {
        ssize_t n = send(c->fd, c->out + c->out_off, out_pending(c), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            client_drop(c); /* peer gone */
            return;
        }
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    client_update_watch(c);
}

static bool out_reserve(struct qmp_client *c, size_t more)
{
    if (c->out_off && c->out_len + more > c->out_cap) {
        memmove(c->out, c->out + c->out_off, out_pending(c));
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + more <= c->out_cap)
        return true;
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + more)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p)
        return false;
    c->out = p;
    c->out_cap = cap;
    return true;
}

void qmp_client_send(struct qmp_client *c, json_t *msg)
{
    if (c->dead || !msg)
        return;
    size_t flags = JSON_ENSURE_ASCII | (c->pretty ? JSON_INDENT(4) : 0);
    char *text = json_dumps(msg, flags);
    if (!text) {
        client_drop(c);
        return;
    }
    size_t len = strlen(text), nl = 0;
    for (size_t i = 0; i < len; i++)
        nl += text[i] == '\n';
    if (out_pending(c) + len + nl + 2 > QMP_OUT_MAX || !out_reserve(c, len + nl + 2)) {
        free(text);
        client_drop(c);
        return;
    }
    /* QEMU's monitor ends every line with CR LF, inside pretty output too. */
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n')
            c->out[c->out_len++] = '\r';
        c->out[c->out_len++] = text[i];
    }
    c->out[c->out_len++] = '\r';
    c->out[c->out_len++] = '\n';
    free(text);
    client_flush(c);
}

static void send_parse_error(struct qmp_client *c, const char *what)
{
    char desc[256];
    snprintf(desc, sizeof(desc), "JSON parse error, %s", what);
    json_t *rsp =
        json_pack("{s:{s:s,s:o}}", "error", "class", "GenericError", "desc", qmp_jstr(desc));
    qmp_client_send(c, rsp);
    json_decref(rsp);
}

static void run_value(struct qmp_client *c, size_t a, size_t b)
{
    json_error_t jerr;
    json_t *v = json_loadb(c->in + a, b - a, JSON_DECODE_ANY, &jerr);
    if (!v) {
        send_parse_error(c, jerr.text[0] ? jerr.text : "invalid input");
        return;
    }
    qmp_dispatch(c, v);
    json_decref(v);
    if (c->s->quit_pending && !c->dead) {
        /* The reply is queued (and most likely written): now the VM may go away. */
        c->s->quit_pending = false;
        if (c->s->ops.quit)
            c->s->ops.quit(c->s->ops.opaque);
    }
}

static bool is_space(unsigned char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Bytes that may make up a bare token (number, true, false, null, or a misspelling of one). */
static bool token_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '+' || ch == '.';
}

/*
 * Split the input into top-level JSON values by tracking strings, escapes and nesting, then let
 * jansson parse each one. Mismatched brackets are jansson's to report: the splitter only needs
 * to know where a value ends so that one bad request does not poison the next.
 */
static void process_input(struct qmp_client *c)
{
    while (!c->dead && c->scan < c->in_len) {
        if (out_pending(c) >= QMP_OUT_HIGH)
            break; /* resumed from qmp_client_writable() */
        size_t i = c->scan;
        unsigned char ch = (unsigned char)c->in[i];
        c->scan++;
        if (ch == 0xff || (ch < 0x20 && !is_space(ch))) {
            /* The QMP spec's way back to a known-good parser state: a control character (or
             * 0xFF, never valid UTF-8) is a lexical error that throws away any partial input. */
            char what[64];
            snprintf(what, sizeof(what), "stray '\\x%02x'%s", ch,
                     c->in_value ? ", partial input discarded" : "");
            c->in_value = c->in_string = c->escape = false;
            send_parse_error(c, what);
            continue;
        }
        if (!c->in_value) {
            if (is_space(ch))
                continue;
            c->in_value = true;
            c->start = i;
            c->depth = 0;
            c->bare = false;
            if (ch == '{' || ch == '[') {
                c->depth = 1;
            } else if (ch == '"') {
                c->in_string = true;
            } else if (token_char(ch)) {
                c->bare = true;
            } else {
                /* Cannot start any value: report at once rather than wait for a terminator. */
                char what[32];
                snprintf(what, sizeof(what),
                         (ch >= 0x20 && ch < 0x7f) ? "stray '%c'" : "stray '\\x%02x'", ch);
                c->in_value = false;
                send_parse_error(c, what);
            }
            continue;
        }
        if (c->in_string) {
            if (c->escape) {
                c->escape = false;
            } else if (ch == '\\') {
                c->escape = true;
            } else if (ch == '"') {
                c->in_string = false;
                if (c->depth == 0) {
                    c->in_value = false;
                    run_value(c, c->start, i + 1);
                }
            }
            continue;
        }
        if (c->bare) {
            if (!token_char(ch)) {
                c->in_value = false;
                c->scan = i; /* the terminator starts whatever comes next */
                run_value(c, c->start, i);
            }
            continue;
        }
        if (ch == '"') {
            c->in_string = true;
        } else if (ch == '{' || ch == '[') {
            c->depth++;
        } else if (ch == '}' || ch == ']') {
            if (--c->depth == 0) {
                c->in_value = false;
                run_value(c, c->start, i + 1);
            }
        }
    }
    if (c->dead)
        return;
    /* Keep only the unconsumed tail. */
    size_t keep_from = c->in_value ? c->start : c->scan;
    if (keep_from) {
        memmove(c->in, c->in + keep_from, c->in_len - keep_from);
        c->in_len -= keep_from;
        c->scan -= keep_from;
        c->start = 0; /* the value in progress, if any, now begins the buffer */
    }
    if (c->in_len > QMP_MAX_INPUT) {
        send_parse_error(c, "request too large");
        client_flush(c);
        client_drop(c);
    }
}

bool qmp_client_input(struct qmp_client *c, const void *buf, size_t len)
{
    client_get(c);
    if (!c->dead && len) {
        if (c->in_len + len > c->in_cap) {
            size_t cap = c->in_cap ? c->in_cap : 4096;
            while (cap < c->in_len + len)
                cap *= 2;
            char *p = realloc(c->in, cap);
            if (!p) {
                client_drop(c);
                return client_put(c);
            }
            c->in = p;
            c->in_cap = cap;
        }
        memcpy(c->in + c->in_len, buf, len);
        c->in_len += len;
        process_input(c);
    }
    return client_put(c);
}

bool qmp_client_writable(struct qmp_client *c)
{
    client_get(c);
    client_flush(c);
    if (!c->dead && out_pending(c) < QMP_OUT_HIGH && c->scan < c->in_len)
        process_input(c);
    if (!c->dead)
        client_update_watch(c);
    return client_put(c);
}

static void client_read(struct qmp_client *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            if (!qmp_client_input(c, buf, (size_t)n) || out_pending(c) >= QMP_OUT_HIGH)
                return;
            if ((size_t)n < sizeof(buf))
                return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            /* EOF or error, possibly mid-request: flush what we can (a half-closed peer still
             * reads) and forget the rest. */
            client_flush(c);
            client_drop(c);
            return;
        }
    }
}

static void on_client(void *opaque, uint32_t events)
{
    struct qmp_client *c = opaque;
    client_get(c);
    if (events & EPOLLOUT)
        qmp_client_writable(c);
    if (!c->dead && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        client_read(c);
    client_put(c);
}

struct qmp_client *qmp_client_new(struct qmp_server *s, int fd, bool pretty, struct error *err)
{
    /* Every JSON value is made for a client: one exists only once jansson is open, and the
     * event helpers build nothing without one. */
    if (jansson_dl_open(err) < 0) {
        close(fd);
        return NULL;
    }
    if (s->nr_clients >= QMP_MAX_CLIENTS) {
        close(fd);
        error_setf(err, "too many QMP clients");
        return NULL;
    }
    struct qmp_client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        error_setf(err, "out of memory");
        return NULL;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    c->s = s;
    c->fd = fd;
    c->pretty = pretty;
    c->watched = EPOLLIN;
    if (eventloop_add(s->loop, fd, EPOLLIN, on_client, c, err) < 0) {
        close(fd);
        free(c);
        return NULL;
    }
    c->next = s->clients;
    s->clients = c;
    s->nr_clients++;
    json_t *greeting = qmp_greeting();
    client_get(c);
    qmp_client_send(c, greeting);
    json_decref(greeting);
    if (!client_put(c)) {
        error_setf(err, "QMP client went away during the greeting");
        return NULL;
    }
    return c;
}

int qmp_server_add_client_fd(struct qmp_server *s, int fd, struct error *err)
{
    return qmp_client_new(s, fd, false, err) ? 0 : -1;
}

unsigned qmp_server_client_count(const struct qmp_server *s)
{
    return s ? s->nr_clients : 0;
}

/* ---- server ---- */

int qmp_server_new(struct eventloop *loop, const struct qmp_vm_ops *ops, struct qmp_server **out,
                   struct error *err)
{
    struct qmp_server *s = calloc(1, sizeof(*s));
    if (!s)
        return error_setf(err, "out of memory");
    s->loop = loop;
    if (ops)
        s->ops = *ops;
    *out = s;
    return 0;
}

void qmp_server_destroy(struct qmp_server *s)
{
    if (!s)
        return;
    while (s->clients) {
        struct qmp_client *c = s->clients;
        client_get(c);
        /* Last chance for replies such as quit's; never block on a slow reader. */
        if (out_pending(c))
            client_flush(c);
        client_drop(c);
        client_put(c);
    }
    while (s->listeners) {
        struct qmp_listener *l = s->listeners;
        s->listeners = l->next;
        eventloop_remove(s->loop, l->fd);
        close(l->fd);
        if (l->path[0])
            unlink(l->path);
        free(l);
    }
    free(s);
}

void qmp_server_event(struct qmp_server *s, const char *name, json_t *data)
{
    if (!s || !s->clients) {
        /* No one to tell. Without a client jansson may not be open, and then no data exists. */
        json_decref(data);
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    /* QEMU's member order: timestamp, event, data. */
    json_t *ev = json_pack("{s:{s:I,s:I},s:s}", "timestamp", "seconds", (json_int_t)tv.tv_sec,
                           "microseconds", (json_int_t)tv.tv_usec, "event", name);
    if (ev && data)
        json_object_set(ev, "data", data);
    json_decref(data);
    if (!ev)
        return;
    struct qmp_client *next;
    for (struct qmp_client *c = s->clients; c; c = next) {
        next = c->next;
        if (c->negotiated)
            qmp_client_send(c, ev);
    }
    json_decref(ev);
}

static const char *const cause_names[] = {
    [QMP_CAUSE_NONE] = "none",
    [QMP_CAUSE_HOST_ERROR] = "host-error",
    [QMP_CAUSE_HOST_QMP_QUIT] = "host-qmp-quit",
    [QMP_CAUSE_HOST_QMP_SYSTEM_RESET] = "host-qmp-system-reset",
    [QMP_CAUSE_HOST_SIGNAL] = "host-signal",
    [QMP_CAUSE_HOST_UI] = "host-ui",
    [QMP_CAUSE_GUEST_SHUTDOWN] = "guest-shutdown",
    [QMP_CAUSE_GUEST_RESET] = "guest-reset",
    [QMP_CAUSE_GUEST_PANIC] = "guest-panic",
    [QMP_CAUSE_SUBSYSTEM_RESET] = "subsystem-reset",
};

const char *qmp_shutdown_cause_str(enum qmp_shutdown_cause cause)
{
    if ((unsigned)cause >= sizeof(cause_names) / sizeof(cause_names[0]))
        return "none";
    return cause_names[cause];
}

static bool cause_is_guest(enum qmp_shutdown_cause cause)
{
    return cause == QMP_CAUSE_GUEST_SHUTDOWN || cause == QMP_CAUSE_GUEST_RESET ||
           cause == QMP_CAUSE_GUEST_PANIC;
}

void qmp_event_shutdown_reason(struct qmp_server *s, bool guest, const char *reason)
{
    if (s && s->clients)
        qmp_server_event(s, "SHUTDOWN",
                         json_pack("{s:b,s:o}", "guest", guest, "reason", qmp_jstr(reason)));
}

void qmp_event_reset_reason(struct qmp_server *s, bool guest, const char *reason)
{
    if (s && s->clients)
        qmp_server_event(s, "RESET",
                         json_pack("{s:b,s:o}", "guest", guest, "reason", qmp_jstr(reason)));
}

void qmp_event_shutdown(struct qmp_server *s, enum qmp_shutdown_cause cause)
{
    qmp_event_shutdown_reason(s, cause_is_guest(cause), qmp_shutdown_cause_str(cause));
}

void qmp_event_reset(struct qmp_server *s, enum qmp_shutdown_cause cause)
{
    qmp_event_reset_reason(s, cause_is_guest(cause), qmp_shutdown_cause_str(cause));
}

void qmp_event_powerdown(struct qmp_server *s)
{
    qmp_server_event(s, "POWERDOWN", NULL);
}

void qmp_event_stop(struct qmp_server *s)
{
    qmp_server_event(s, "STOP", NULL);
}

void qmp_event_resume(struct qmp_server *s)
{
    qmp_server_event(s, "RESUME", NULL);
}

void qmp_event_block_io_error(struct qmp_server *s, const char *device, const char *node_name,
                              bool is_read, const char *action, bool nospace, const char *reason)
{
    if (!s || !s->clients)
        return;
    /* QEMU's member order: device, node-name, operation, action, nospace, reason. */
    json_t *d = json_object();
    if (!d)
        return;
    json_object_set_new(d, "device", qmp_jstr(device));
    if (node_name)
        json_object_set_new(d, "node-name", qmp_jstr(node_name));
    json_object_set_new(d, "operation", json_string(is_read ? "read" : "write"));
    json_object_set_new(d, "action", qmp_jstr(action));
    json_object_set_new(d, "nospace", json_boolean(nospace));
    json_object_set_new(d, "reason", qmp_jstr(reason));
    qmp_server_event(s, "BLOCK_IO_ERROR", d);
}

void qmp_event_balloon_change(struct qmp_server *s, uint64_t actual)
{
    if (s && s->clients)
        qmp_server_event(s, "BALLOON_CHANGE", json_pack("{s:I}", "actual", (json_int_t)actual));
}

/* ---- listening ---- */

static void on_accept(void *opaque, uint32_t events)
{
    struct qmp_listener *l = opaque;
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return; /* EAGAIN, or a transient error: the listener stays */
        struct error err = {0};
        qmp_client_new(l->s, fd, l->pretty, &err);
    }
}

/* on|off|yes|no|true|false, or a bare flag meaning on. */
static int parse_bool(const char *key, const char *val, bool *out, struct error *err)
{
    if (!val || !strcmp(val, "on") || !strcmp(val, "yes") || !strcmp(val, "true")) {
        *out = true;
        return 0;
    }
    if (!strcmp(val, "off") || !strcmp(val, "no") || !strcmp(val, "false")) {
        *out = false;
        return 0;
    }
    return error_setf(err, "Parameter '%s' expects 'on' or 'off'", key);
}

/* Split at unescaped commas; ",," stands for a comma in the value, as in QEMU's option syntax. */
static int next_field(const char **p, char *out, size_t size, struct error *err)
{
    size_t n = 0;
    const char *s = *p;
    while (*s) {
        if (*s == ',') {
            if (s[1] != ',')
                break;
            s++;
        }
        if (n + 1 >= size)
            return error_setf(err, "option too long");
        out[n++] = *s++;
    }
    out[n] = '\0';
    *p = *s ? s + 1 : s;
    return 0;
}

int qmp_parse_sock_spec(const char *spec, struct qmp_sock_spec *o, struct error *err)
{
    char field[512];
    memset(o, 0, sizeof(*o));
    o->wait = true;
    const char *p = spec;
    if (!strncmp(p, "unix:", 5)) {
        o->is_unix = true;
        p += 5;
        if (next_field(&p, field, sizeof(field), err) < 0)
            return -1;
        if (!field[0])
            return error_setf(err, "unix socket path is empty");
        if (strlen(field) >= sizeof(o->path))
            return error_setf(err, "unix socket path '%s' is too long", field);
        strcpy(o->path, field);
    } else if (!strncmp(p, "tcp:", 4)) {
        p += 4;
        if (next_field(&p, field, sizeof(field), err) < 0)
            return -1;
        int r = os_split_host_port(field, o->host, sizeof(o->host), o->port, sizeof(o->port));
        if (r == -EINVAL)
            return error_setf(err, "tcp address '%s' lacks a port", field);
        if (r < 0)
            return error_setf(err, "tcp address too long");
    } else {
        return error_setf(err, "'%s': QMP needs a unix: or tcp: socket", spec);
    }
    while (*p) {
        if (next_field(&p, field, sizeof(field), err) < 0)
            return -1;
        char *val = strchr(field, '=');
        if (val)
            *val++ = '\0';
        int r;
        if (!strcmp(field, "server"))
            r = parse_bool(field, val, &o->server, err);
        else if (!strcmp(field, "wait"))
            r = parse_bool(field, val, &o->wait, err);
        else if (!strcmp(field, "nowait") && !val)
            r = (o->wait = false, 0);
        else if (!strcmp(field, "nodelay"))
            r = parse_bool(field, val, &o->nodelay, err);
        else if (!strcmp(field, "ipv4") && !o->is_unix)
            r = parse_bool(field, val, &o->ipv4, err);
        else if (!strcmp(field, "ipv6") && !o->is_unix)
            r = parse_bool(field, val, &o->ipv6, err);
        else if (!field[0])
            r = 0;
        else
            r = error_setf(err, "Invalid parameter '%s'", field);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Bound (server) or connected (client) socket for o; -1 with err set on failure. */
static int open_socket(const struct qmp_sock_spec *o, struct error *err)
{
    if (o->is_unix)
        return os_unix_socket(o->path, o->server, err);
    int family = o->ipv4 && !o->ipv6 ? AF_INET : o->ipv6 && !o->ipv4 ? AF_INET6 : AF_UNSPEC;
    return os_tcp_socket(o->host, o->port, o->server, family, o->nodelay, err);
}

int qmp_server_listen(struct qmp_server *s, const char *spec, bool pretty, struct error *err)
{
    struct qmp_sock_spec o;
    if (qmp_parse_sock_spec(spec, &o, err) < 0)
        return -1;
    /* Now rather than at the first client: a wait=off server must fail at start-up, too. */
    if (jansson_dl_open(err) < 0)
        return -1;
    int fd = open_socket(&o, err);
    if (fd < 0)
        return -1;
    if (!o.server)
        return qmp_client_new(s, fd, pretty, err) ? 0 : -1;

    struct qmp_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return error_setf(err, "out of memory");
    }
    l->s = s;
    l->fd = fd;
    l->pretty = pretty;
    if (o.is_unix)
        strcpy(l->path, o.path);
    if (o.wait) {
        /* QEMU's wait=on: hold start-up until the first client is there. */
        int cfd;
        do
            cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        while (cfd < 0 && errno == EINTR);
        if (cfd < 0 || !qmp_client_new(s, cfd, pretty, err)) {
            if (cfd < 0)
                error_setf_errno(err, errno, "accept");
            goto fail;
        }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (eventloop_add(s->loop, fd, EPOLLIN, on_accept, l, err) < 0)
        goto fail;
    l->next = s->listeners;
    s->listeners = l;
    return 0;
fail:
    close(fd);
    if (l->path[0])
        unlink(l->path);
    free(l);
    return -1;
}
