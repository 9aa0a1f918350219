/*
 * libFuzzer harness for the QMP server's input path. Byte 0 picks the mode (bit 0: negotiate
 * first, bit 1: pretty output), byte 1 the chunk size the rest is fed in. After each chunk the
 * client's socket is drained; in compact mode every reply line must itself be valid JSON. Any
 * crash, sanitizer report or leak is a bug.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "monitor/qmp_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct qmp_server *server;
static bool running = true;

static const char *f_status(void *opaque, bool *r)
{
    *r = running;
    return running ? "running" : "paused";
}

static int f_stop(void *opaque, struct error *err)
{
    if (!running)
        return error_setf(err, "already stopped");
    running = false;
    qmp_event_stop(server);
    return 0;
}

static int f_cont(void *opaque, struct error *err)
{
    running = true;
    qmp_event_resume(server);
    return 0;
}

static int f_reset(void *opaque, struct error *err)
{
    qmp_event_reset(server, QMP_CAUSE_HOST_QMP_SYSTEM_RESET);
    return 0;
}

static void f_quit(void *opaque)
{
    qmp_event_shutdown(server, QMP_CAUSE_HOST_QMP_QUIT);
}

static size_t f_cpus(void *opaque, struct qmp_cpu_info *out, size_t max)
{
    for (size_t i = 0; i < 3 && i < max; i++)
        out[i] = (struct qmp_cpu_info){.index = (unsigned)i, .thread_id = 100 + (int)i};
    return 3;
}

static size_t f_pci(void *opaque, struct qmp_pci_info *out, size_t max)
{
    for (size_t i = 0; i < 3 && i < max; i++)
        out[i] = (struct qmp_pci_info){
            .bus = (unsigned)i / 2, .slot = (unsigned)i, .nr_regions = 1, .irq_pin = 1, .irq = 5};
    return 3;
}

/* Echo the command line back: the board's output may be anything, even bad UTF-8. */
static char *f_hmp(void *opaque, const char *line)
{
    return line[0] == 'e' ? strdup(line) : NULL;
}

static const struct qmp_vm_ops ops = {
    .status = f_status,
    .stop = f_stop,
    .cont = f_cont,
    .system_reset = f_reset,
    .quit = f_quit,
    .query_cpus = f_cpus,
    .query_pci = f_pci,
    .hmp = f_hmp,
    .name = "fuzz",
};

struct sink {
    char *buf;
    size_t len, cap;
    bool check;
};

static void drain(int fd, struct sink *k)
{
    char tmp[65536];
    for (;;) {
        ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (n <= 0)
            return;
        if (!k->check)
            continue;
        if (k->len + (size_t)n > k->cap) {
            k->cap = (k->len + (size_t)n) * 2;
            k->buf = realloc(k->buf, k->cap);
            if (!k->buf)
                abort();
        }
        memcpy(k->buf + k->len, tmp, (size_t)n);
        k->len += (size_t)n;
        char *nl;
        while ((nl = memmem(k->buf, k->len, "\r\n", 2))) {
            size_t line = (size_t)(nl - k->buf);
            json_t *j = json_loadb(k->buf, line, 0, NULL);
            if (!json_is_object(j))
                abort(); /* the server sent something that is not a JSON object */
            json_decref(j);
            memmove(k->buf, nl + 2, k->len - line - 2);
            k->len -= line + 2;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct eventloop loop;
    static bool loop_ready;
    struct error err = {0};
    if (size < 2)
        return 0;
    if (!loop_ready) {
        if (eventloop_init(&loop, &err) < 0)
            abort();
        loop_ready = true;
    }
    bool negotiate = data[0] & 1, pretty = data[0] & 2;
    size_t chunk = (size_t)data[1] + 1;
    data += 2;
    size -= 2;

    running = true;
    if (qmp_server_new(&loop, &ops, &server, &err) < 0)
        abort();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct qmp_client *c = qmp_client_new(server, sv[0], pretty, &err);
    if (!c)
        abort();
    struct sink k = {.check = !pretty};
    bool alive = true;
    if (negotiate) {
        static const char caps[] = "{\"execute\": \"qmp_capabilities\"}";
        alive = qmp_client_input(c, caps, sizeof(caps) - 1);
        if (!alive || !c->negotiated)
            abort();
    }
    drain(sv[1], &k);
    for (size_t off = 0; alive && off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        alive = qmp_client_input(c, data + off, n);
        drain(sv[1], &k);
        if (alive)
            alive = qmp_client_writable(c);
        drain(sv[1], &k);
    }
    if (alive && qmp_server_client_count(server) != 1)
        abort();
    qmp_server_destroy(server);
    server = NULL;
    drain(sv[1], &k);
    close(sv[1]);
    free(k.buf);
    return 0;
}
