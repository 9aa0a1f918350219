/*
 * -netdev user: user-mode networking through libslirp, driven by the netdev thread. libslirp is
 * opened when the first one starts (os_lib_open): linked, it and glib cost every run 1.4 MiB.
 */
#include "kemu-config.h"

#ifdef CONFIG_SLIRP

#include <errno.h>
#include <poll.h>
#include <slirp/libslirp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/os.h"
#include "net/netdev_int.h"

/* The libslirp functions kemu calls, typed by the library's own header. */
static struct {
    __typeof__(slirp_new) *new_;
    __typeof__(slirp_cleanup) *cleanup;
    __typeof__(slirp_input) *input;
    __typeof__(slirp_pollfds_fill) *pollfds_fill;
    __typeof__(slirp_pollfds_poll) *pollfds_poll;
    __typeof__(slirp_add_hostfwd) *add_hostfwd;
    __typeof__(slirp_remove_hostfwd) *remove_hostfwd;
    __typeof__(slirp_connection_info) *connection_info;
    __typeof__(slirp_add_exec) *add_exec;
    __typeof__(slirp_add_guestfwd) *add_guestfwd;
    __typeof__(slirp_socket_can_recv) *socket_can_recv;
    __typeof__(slirp_socket_recv) *socket_recv;
} sl;

static const struct os_lib_fn sl_fns[] = {
    {"slirp_new", (void **)&sl.new_},
    {"slirp_cleanup", (void **)&sl.cleanup},
    {"slirp_input", (void **)&sl.input},
    {"slirp_pollfds_fill", (void **)&sl.pollfds_fill},
    {"slirp_pollfds_poll", (void **)&sl.pollfds_poll},
    {"slirp_add_hostfwd", (void **)&sl.add_hostfwd},
    {"slirp_remove_hostfwd", (void **)&sl.remove_hostfwd},
    {"slirp_connection_info", (void **)&sl.connection_info},
    {"slirp_add_exec", (void **)&sl.add_exec},
    {"slirp_add_guestfwd", (void **)&sl.add_guestfwd},
    {"slirp_socket_can_recv", (void **)&sl.socket_can_recv},
    {"slirp_socket_recv", (void **)&sl.socket_recv},
};

static struct os_lib libslirp = {
    .soname = SLIRP_SONAME,
    .what = "user-mode networking (-netdev user)",
    .fns = sl_fns,
    .nfns = sizeof(sl_fns) / sizeof(sl_fns[0]),
};

struct slirp_timer {
    SlirpTimerCb cb;
    void *cb_opaque;
    int64_t expire_ms; /* -1: not armed */
    struct slirp_timer *next;
};

/* guestfwd=...-tcp:HOST:PORT or -unix:PATH: one stream, connected at start-up, that the guest's
 * connections to server:port are relayed to. */
struct slirp_gfwd {
    struct netdev *nd;
    int fd;   /* -1 once the other end closed it */
    int pidx; /* its slot in this round's poll set, -1: not polled */
    struct in_addr server;
    int port;
    char *dev;
};

struct nd_slirp {
    Slirp *slirp;
    struct in_addr net, mask, dhcp; /* for rules added later (hostfwd_add) */
    struct slirp_timer *timers;
    uint8_t *buf; /* linear copy of a multi-segment frame */
    struct slirp_gfwd *gfwd;
    size_t ngfwd;
};

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    netdev_deliver(opaque, buf, len);
    return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
    struct netdev *nd = opaque;
    /* The guest controls how often this happens: a few lines, then silence. */
    static unsigned printed;
    if (printed < 10)
        fprintf(stderr, "kemu: netdev '%s': guest error: %s%s\n", nd->id, msg,
                ++printed == 10 ? " (further guest errors not shown)" : "");
}

static int64_t cb_clock_get_ns(void *opaque)
{
    return clock_ns(CLOCK_MONOTONIC);
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
    struct netdev *nd = opaque;
    struct nd_slirp *s = nd->be;
    struct slirp_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cb = cb;
    t->cb_opaque = cb_opaque;
    t->expire_ms = -1;
    t->next = s->timers;
    s->timers = t;
    return t;
}

static void cb_timer_free(void *timer, void *opaque)
{
    struct netdev *nd = opaque;
    struct nd_slirp *s = nd->be;
    for (struct slirp_timer **pp = &s->timers; *pp; pp = &(*pp)->next) {
        if (*pp == timer) {
            *pp = ((struct slirp_timer *)timer)->next;
            free(timer);
            return;
        }
    }
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    if (timer)
        ((struct slirp_timer *)timer)->expire_ms = expire_ms;
}

static void cb_register_poll_fd(int fd, void *opaque)
{
    /* Nothing: the fd set is rebuilt by slirp_pollfds_fill() on every round. */
}

static void cb_notify(void *opaque)
{
    struct netdev *nd = opaque;
    os_event_signal(nd->wake_fd);
}

static const SlirpCb slirp_cbs = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_new = cb_timer_new,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_register_poll_fd,
    .unregister_poll_fd = cb_register_poll_fd,
    .notify = cb_notify,
};

static void gfwd_close(struct slirp_gfwd *g, const char *why)
{
    fprintf(stderr,
            "kemu: netdev '%s': guestfwd %s: %s; guest connections to port %d get no "
            "more data\n",
            g->nd->id, g->dev, why, g->port);
    close(g->fd);
    g->fd = -1;
}

/* From the guest, to the stream. slirp ignores what this returns and has no way to hold data
 * back, so everything is written before returning (as QEMU does): a peer that stops reading
 * stalls this netdev. */
static ssize_t gfwd_write(const void *buf, size_t len, void *opaque)
{
    struct slirp_gfwd *g = opaque;
    size_t done = 0;
    while (g->fd >= 0 && done < len) {
        ssize_t n = send(g->fd, (const uint8_t *)buf + done, len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = g->fd, .events = POLLOUT};
            poll(&p, 1, -1);
            continue;
        }
        if (n <= 0) {
            gfwd_close(g, strerror(n < 0 ? errno : EPIPE));
            break;
        }
        done += (size_t)n;
    }
    return (ssize_t)len;
}

static int gfwd_connect(struct slirp_gfwd *g, struct error *err)
{
    int fd;
    if (!strncmp(g->dev, "unix:", 5)) {
        struct error e = {0};
        fd = os_unix_socket(g->dev + 5, false, &e);
        if (fd < 0)
            return error_setf(err, "guestfwd target %s: %s", g->dev, e.msg);
    } else {
        char host[NET_GFWD_HOST_MAX], port[8];
        /* tcp:HOST:PORT, checked at parse */
        if (os_split_host_port(g->dev + 4, host, sizeof(host), port, sizeof(port)) < 0)
            return error_setf(err, "guestfwd target %s: not tcp:HOST:PORT", g->dev);
        struct error e = {0};
        fd = os_tcp_socket(host, port, false, AF_UNSPEC, true, &e);
        if (fd < 0)
            return error_setf(err, "guestfwd target %s: %s", g->dev, e.msg);
    }
    g->fd = fd;
    return 0;
}

static int slirp_send(struct netdev *nd, const struct iovec *iov, int iovcnt)
{
    struct nd_slirp *s = nd->be;
    if (iovcnt == 1) {
        if (iov[0].iov_len > NETDEV_MAX_FRAME)
            return -1;
        sl.input(s->slirp, iov[0].iov_base, (int)iov[0].iov_len);
        return 0;
    }
    /* slirp takes one contiguous frame. */
    size_t off = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > NETDEV_MAX_FRAME - off)
            return -1;
        memcpy(s->buf + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    sl.input(s->slirp, s->buf, (int)off);
    return 0;
}

static int add_poll(int fd, int events, void *opaque)
{
    struct netdev *nd = opaque;
    short ev = 0;
    /* With the guest's receive side full, leave slirp's sockets unread (flow control). */
    if ((events & SLIRP_POLL_IN) && nd->rx_enabled)
        ev |= POLLIN;
    if (events & SLIRP_POLL_OUT)
        ev |= POLLOUT;
    if (events & SLIRP_POLL_PRI)
        ev |= POLLPRI;
    return netdev_poll_add(nd, fd, ev);
}

static int get_revents(int idx, void *opaque)
{
    struct netdev *nd = opaque;
    if (idx < 0 || idx >= nd->npfds)
        return 0;
    short r = nd->pfds[idx].revents;
    int ev = 0;
    if (r & POLLIN)
        ev |= SLIRP_POLL_IN;
    if (r & POLLOUT)
        ev |= SLIRP_POLL_OUT;
    if (r & POLLPRI)
        ev |= SLIRP_POLL_PRI;
    if (r & POLLERR)
        ev |= SLIRP_POLL_ERR;
    if (r & POLLHUP)
        ev |= SLIRP_POLL_HUP;
    return ev;
}

static void slirp_poll_fill(struct netdev *nd, int *timeout_ms)
{
    struct nd_slirp *s = nd->be;
    uint32_t t = UINT32_MAX;
    int64_t now = clock_ns(CLOCK_MONOTONIC) / 1000000;
    for (struct slirp_timer *tm = s->timers; tm; tm = tm->next) {
        if (tm->expire_ms < 0)
            continue;
        int64_t d = tm->expire_ms - now;
        d = d < 0 ? 0 : d;
        if ((uint64_t)d < t)
            t = (uint32_t)d;
    }
    sl.pollfds_fill(s->slirp, &t, add_poll, nd);
    /* A stream is read only while the guest's connection can take data (none: it waits in the
     * socket; slirp's notify() wakes us when there is room again). */
    for (size_t i = 0; i < s->ngfwd; i++) {
        struct slirp_gfwd *g = &s->gfwd[i];
        g->pidx = -1;
        if (g->fd >= 0 && nd->rx_enabled && sl.socket_can_recv(s->slirp, g->server, g->port))
            g->pidx = netdev_poll_add(nd, g->fd, POLLIN);
    }
    *timeout_ms = t == UINT32_MAX ? -1 : (t > 1000000 ? 1000000 : (int)t);
}

static void slirp_poll_done(struct netdev *nd, bool poll_error)
{
    struct nd_slirp *s = nd->be;
    sl.pollfds_poll(s->slirp, poll_error, get_revents, nd);
    for (size_t i = 0; i < s->ngfwd && !poll_error; i++) {
        struct slirp_gfwd *g = &s->gfwd[i];
        if (g->pidx < 0 || g->fd < 0 || !nd->pfds[g->pidx].revents)
            continue;
        size_t room = sl.socket_can_recv(s->slirp, g->server, g->port);
        if (!room)
            continue;
        ssize_t n =
            recv(g->fd, s->buf, room < NETDEV_MAX_FRAME ? room : NETDEV_MAX_FRAME, MSG_DONTWAIT);
        if (n > 0)
            sl.socket_recv(s->slirp, g->server, g->port, s->buf, (int)n);
        else if (n == 0)
            gfwd_close(g, "the other end closed the connection");
        else if (errno != EAGAIN && errno != EINTR)
            gfwd_close(g, strerror(errno));
    }
    /* Expired timers; a callback may re-arm or free timers, so look again from the start after
     * each one (bounded, in case one re-arms itself in the past). */
    for (int round = 0; round < 64; round++) {
        int64_t now = clock_ns(CLOCK_MONOTONIC) / 1000000;
        struct slirp_timer *tm = s->timers;
        while (tm && (tm->expire_ms < 0 || tm->expire_ms > now))
            tm = tm->next;
        if (!tm)
            break;
        tm->expire_ms = -1;
        tm->cb(tm->cb_opaque);
    }
}

static void slirp_destroy(struct netdev *nd)
{
    struct nd_slirp *s = nd->be;
    if (!s)
        return;
    if (s->slirp)
        sl.cleanup(s->slirp);
    while (s->timers) {
        struct slirp_timer *t = s->timers;
        s->timers = t->next;
        free(t);
    }
    for (size_t i = 0; i < s->ngfwd; i++) {
        if (s->gfwd[i].fd >= 0)
            close(s->gfwd[i].fd);
        free(s->gfwd[i].dev);
    }
    free(s->gfwd);
    free(s->buf);
    free(s);
    nd->be = NULL;
}

void net_slirp_addrs(const struct netdev *nd, struct net_user_cfg *c)
{
    const struct nd_slirp *s = nd->be;
    c->net = s->net;
    c->mask = s->mask;
    c->dhcp = s->dhcp;
}

struct hostfwd_req {
    struct netdev *nd;
    bool add;
    const struct net_hostfwd *f;
    int r;
};

static void hostfwd_on_thread(void *opaque)
{
    struct hostfwd_req *q = opaque;
    struct nd_slirp *s = q->nd->be;
    const struct net_hostfwd *f = q->f;
    q->r = q->add ? sl.add_hostfwd(s->slirp, f->udp, f->haddr, f->hport, f->gaddr, f->gport)
                  : sl.remove_hostfwd(s->slirp, f->udp, f->haddr, f->hport);
}

int net_slirp_hostfwd(struct netdev *nd, bool add, const struct net_hostfwd *f)
{
    /* slirp is the netdev thread's: change it there. */
    struct hostfwd_req q = {.nd = nd, .add = add, .f = f};
    netdev_run_sync(nd, hostfwd_on_thread, &q);
    return q.r < 0 ? -1 : 0;
}

struct conn_info_req {
    struct netdev *nd;
    char *text;
};

static void conn_info_on_thread(void *opaque)
{
    struct conn_info_req *q = opaque;
    struct nd_slirp *s = q->nd->be;
    q->text = sl.connection_info(s->slirp);
}

char *net_slirp_connection_info(struct netdev *nd)
{
    struct conn_info_req q = {.nd = nd};
    netdev_run_sync(nd, conn_info_on_thread, &q);
    return q.text; /* g_malloc'd; glib allocates with malloc (2.46 and later): free() it */
}

static const struct netdev_backend_ops slirp_ops = {
    .send = slirp_send,
    .poll_fill = slirp_poll_fill,
    .poll_done = slirp_poll_done,
    .destroy = slirp_destroy,
};

int net_slirp_init(struct netdev *nd, const struct net_user_cfg *c, struct error *err)
{
    if (os_lib_open(&libslirp, err) < 0)
        return -1;
    struct nd_slirp *s = calloc(1, sizeof(*s));
    if (!s)
        return error_setf(err, "out of memory");
    nd->be = s;
    nd->ops = &slirp_ops;
    s->buf = malloc(NETDEV_MAX_FRAME);
    if (!s->buf)
        return error_setf(err, "out of memory");

    SlirpConfig cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.version = 4;
    cfg.restricted = c->restricted;
    cfg.in_enabled = c->ipv4;
    cfg.vnetwork = c->net;
    cfg.vnetmask = c->mask;
    cfg.vhost = c->host;
    cfg.in6_enabled = c->ipv6;
    /* QEMU's IPv6 defaults (net.c): fec0::/64, host fec0::2, DNS fec0::3. */
    cfg.vprefix_addr6 = c->prefix6;
    cfg.vprefix_len = (uint8_t)c->prefix6_len;
    cfg.vhost6 = c->host6;
    cfg.vnameserver6 = c->dns6;
    cfg.vhostname = c->hostname;
    cfg.tftp_server_name = c->tftp_server_name;
    cfg.vdnssearch = (const char **)c->dnssearch;
    cfg.tftp_path = c->tftp;
    cfg.bootfile = c->bootfile;
    cfg.vdhcp_start = c->dhcp;
    cfg.vnameserver = c->dns;
    cfg.vdomainname = c->domainname;
    s->slirp = sl.new_(&cfg, &slirp_cbs, nd);
    if (!s->slirp)
        return error_setf(err, "libslirp refused the configuration");
    s->net = c->net;
    s->mask = c->mask;
    s->dhcp = c->dhcp;

    for (size_t i = 0; i < c->nfwd; i++) {
        const struct net_hostfwd *f = &c->fwd[i];
        if (sl.add_hostfwd(s->slirp, f->udp, f->haddr, f->hport, f->gaddr, f->gport) < 0) {
            char ha[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &f->haddr, ha, sizeof(ha));
            return error_setf(err, "could not set up host forwarding rule %s:%s:%d",
                              f->udp ? "udp" : "tcp", ha, f->hport);
        }
    }
    if (c->ngfwd && !(s->gfwd = calloc(c->ngfwd, sizeof(*s->gfwd))))
        return error_setf(err, "out of memory");
    for (size_t i = 0; i < c->ngfwd; i++) {
        const struct net_guestfwd *f = &c->gfwd[i];
        struct in_addr server = f->server; /* 0: slirp fills in its default (x.x.2.4) */
        int r;
        if (f->cmd) {
            r = sl.add_exec(s->slirp, f->cmd, &server, f->port);
        } else {
            struct slirp_gfwd *g = &s->gfwd[s->ngfwd];
            *g = (struct slirp_gfwd){.nd = nd, .fd = -1, .pidx = -1, .port = f->port};
            if (!(g->dev = strdup(f->dev)))
                return error_setf(err, "out of memory");
            s->ngfwd++;
            if (gfwd_connect(g, err) < 0)
                return -1;
            r = sl.add_guestfwd(s->slirp, gfwd_write, g, &server, f->port);
            g->server = server;
        }
        if (r < 0)
            return error_setf(err,
                              "could not set up guest forwarding rule for port %d (taken "
                              "by an earlier rule, or the address is the host's or DNS's)",
                              f->port);
    }
    return 0;
}

#endif
