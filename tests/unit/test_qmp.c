/* Unit tests for the QMP server: the test plays QMP clients over socketpairs (and a unix
 * listener), driving the event loop by hand, against a fake VM that records what it is asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kemu-config.h"
#include "monitor/qmp_int.h"

struct fake {
    struct qmp_server *s;
    bool running;
    bool fail_stop;
    int stops, conts, resets, powerdowns, quits;
    char link_name[16]; /* the last set_link */
    bool link_up;
    bool quit_reply_seen_first; /* the quit reply was queued before ops.quit ran */
    struct qmp_client *quit_client;
};

struct conn {
    int fd;
    char buf[1 << 16];
    size_t len;
    bool eof;
};

struct fx {
    struct eventloop loop;
    struct fake fake;
    struct qmp_server *s;
    struct conn a, b, c;
};

/* ---- the fake VM ---- */

static const char *f_status(void *opaque, bool *running)
{
    struct fake *f = opaque;
    *running = f->running;
    return f->running ? "running" : "paused";
}

static int f_stop(void *opaque, struct error *err)
{
    struct fake *f = opaque;
    if (f->fail_stop)
        return error_setf(err, "cannot stop now");
    f->stops++;
    if (f->running) {
        f->running = false;
        qmp_event_stop(f->s);
    }
    return 0;
}

static int f_cont(void *opaque, struct error *err)
{
    struct fake *f = opaque;
    f->conts++;
    if (!f->running) {
        f->running = true;
        qmp_event_resume(f->s);
    }
    return 0;
}

static int f_reset(void *opaque, struct error *err)
{
    struct fake *f = opaque;
    f->resets++;
    qmp_event_reset(f->s, QMP_CAUSE_HOST_QMP_SYSTEM_RESET);
    return 0;
}

static int f_powerdown(void *opaque, struct error *err)
{
    struct fake *f = opaque;
    f->powerdowns++;
    qmp_event_powerdown(f->s);
    return 0;
}

static void f_quit(void *opaque)
{
    struct fake *f = opaque;
    f->quits++;
}

static size_t f_cpus(void *opaque, struct qmp_cpu_info *out, size_t max)
{
    for (size_t i = 0; i < 2 && i < max; i++)
        out[i] = (struct qmp_cpu_info){.index = (unsigned)i,
                                       .thread_id = 1000 + (int)i,
                                       .socket_id = 0,
                                       .core_id = (int)i,
                                       .thread_in_core = 0};
    return 2;
}

static size_t f_chardevs(void *opaque, struct qmp_chardev_info *out, size_t max)
{
    if (max >= 1)
        out[0] = (struct qmp_chardev_info){"serial0", "stdio", true};
    return 1;
}

static size_t f_pci(void *opaque, struct qmp_pci_info *out, size_t max)
{
    if (max < 2)
        return 2;
    out[0] = (struct qmp_pci_info){.slot = 0,
                                   .vendor = 0x8086,
                                   .device = 0x1237,
                                   .class_code = 0x0600,
                                   .desc = "Host bridge",
                                   .irq = -1};
    out[1] = (struct qmp_pci_info){.slot = 3,
                                   .vendor = 0x1af4,
                                   .device = 0x1001,
                                   .subsys_vendor = 0x1af4,
                                   .subsys = 2,
                                   .class_code = 0x0100,
                                   .qdev_id = "disk0",
                                   .irq_pin = 1,
                                   .irq = 11,
                                   .nr_regions = 2};
    out[1].regions[0] =
        (struct qmp_pci_region){.bar = 0, .io = true, .address = 0xc000, .size = 64};
    out[1].regions[1] = (struct qmp_pci_region){
        .bar = 4, .address = 0xfe000000, .size = 0x4000, .prefetch = true, .mem64 = true};
    return 2;
}

/* drive0 stopped the VM on ENOSPC; drive1's device keeps no io-status */
static size_t f_block(void *opaque, struct qmp_block_info *out, size_t max)
{
    if (max >= 2) {
        out[0] = (struct qmp_block_info){.device = "drive0",
                                         .inserted = true,
                                         .file = "/tmp/disk.img",
                                         .format = "raw",
                                         .node_name = "#block123",
                                         .writeback = true,
                                         .virtual_size = 1 << 20,
                                         .io_status = "nospace"};
        out[1] = (struct qmp_block_info){.device = "drive1"};
    }
    return 2;
}

/* Knows one NIC, "nic0". */
static int f_set_link(void *opaque, const char *name, bool up, struct error *err)
{
    struct fake *f = opaque;
    if (strcmp(name, "nic0")) {
        error_setf(err, "Device '%s' not found", name);
        return -ENODEV;
    }
    snprintf(f->link_name, sizeof(f->link_name), "%s", name);
    f->link_up = up;
    return 0;
}

static char *f_hmp(void *opaque, const char *line)
{
    if (!strncmp(line, "board", 5))
        return strdup("board says hi\r\n");
    return NULL;
}

static struct qmp_vm_ops fake_ops(struct fake *f)
{
    return (struct qmp_vm_ops){.status = f_status,
                               .stop = f_stop,
                               .cont = f_cont,
                               .system_reset = f_reset,
                               .system_powerdown = f_powerdown,
                               .quit = f_quit,
                               .query_cpus = f_cpus,
                               .query_chardevs = f_chardevs,
                               .query_pci = f_pci,
                               .query_block = f_block,
                               .hmp = f_hmp,
                               .set_link = f_set_link,
                               .name = "guest1",
                               .opaque = f};
}

/* ---- harness ---- */

/* One round of the main loop, as eventloop_run() would do it. */
static int pump(struct fx *x, int timeout_ms)
{
    struct epoll_event evs[32];
    int n = epoll_wait(x->loop.epfd, evs, 32, timeout_ms);
    for (int i = 0; i < n; i++) {
        struct eventloop_handler *h = evs[i].data.ptr;
        if (!h->dead)
            h->cb(h->opaque, evs[i].events);
    }
    return n;
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    struct error err = {0};
    assert_int_equal(eventloop_init(&x->loop, &err), 0);
    x->fake.running = true;
    struct qmp_vm_ops ops = fake_ops(&x->fake);
    assert_int_equal(qmp_server_new(&x->loop, &ops, &x->s, &err), 0);
    x->fake.s = x->s;
    x->a.fd = x->b.fd = x->c.fd = -1;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    qmp_server_destroy(x->s);
    eventloop_destroy(&x->loop);
    struct conn *cs[] = {&x->a, &x->b, &x->c};
    for (int i = 0; i < 3; i++)
        if (cs[i]->fd >= 0)
            close(cs[i]->fd);
    free(x);
    return 0;
}

static void open_conn(struct fx *x, struct conn *c, bool pretty)
{
    int sv[2];
    struct error err = {0};
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    if (pretty)
        assert_non_null(qmp_client_new(x->s, sv[0], true, &err));
    else
        assert_int_equal(qmp_server_add_client_fd(x->s, sv[0], &err), 0);
    c->fd = sv[1];
    c->len = 0;
    c->eof = false;
}

static void fill(struct conn *c)
{
    while (!c->eof && c->len < sizeof(c->buf)) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
        if (n > 0)
            c->len += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            c->eof = true;
        else
            break;
    }
}

/* The next "\r\n"-terminated message, pumping the loop until it arrives; NULL at EOF/timeout. */
static json_t *recv_msg(struct fx *x, struct conn *c)
{
    for (int round = 0; round < 500; round++) {
        fill(c);
        char *nl = memmem(c->buf, c->len, "\r\n", 2);
        if (nl) {
            size_t n = (size_t)(nl - c->buf) + 2;
            json_error_t jerr;
            json_t *j = json_loadb(c->buf, n - 2, 0, &jerr);
            if (!j)
                fail_msg("bad JSON from server: %s: %.*s", jerr.text, (int)n, c->buf);
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            return j;
        }
        if (c->eof)
            return NULL;
        pump(x, 10);
    }
    return NULL;
}

static void settle(struct fx *x)
{
    for (int i = 0; i < 5; i++)
        pump(x, 5);
}

static void expect_nothing(struct fx *x, struct conn *c)
{
    settle(x);
    fill(c);
    assert_int_equal(c->len, 0);
}

static void send_str(struct conn *c, const char *s)
{
    size_t len = strlen(s);
    assert_int_equal(send(c->fd, s, len, MSG_NOSIGNAL), (ssize_t)len);
}

static json_t *cmd(struct fx *x, struct conn *c, const char *s)
{
    send_str(c, s);
    json_t *r = recv_msg(x, c);
    assert_non_null(r);
    return r;
}

static void negotiate(struct fx *x, struct conn *c)
{
    json_t *g = recv_msg(x, c);
    assert_non_null(json_object_get(g, "QMP"));
    json_decref(g);
    json_t *r = cmd(x, c, "{\"execute\": \"qmp_capabilities\"}");
    assert_true(json_is_object(json_object_get(r, "return")));
    assert_int_equal(json_object_size(json_object_get(r, "return")), 0);
    json_decref(r);
}

static void assert_error(json_t *r, const char *cls, const char *desc_prefix)
{
    json_t *e = json_object_get(r, "error");
    if (!e)
        fail_msg("expected an error, got %s", json_dumps(r, 0));
    assert_string_equal(json_string_value(json_object_get(e, "class")), cls);
    const char *desc = json_string_value(json_object_get(e, "desc"));
    assert_non_null(desc);
    if (strncmp(desc, desc_prefix, strlen(desc_prefix)))
        fail_msg("desc '%s' does not start with '%s'", desc, desc_prefix);
    json_decref(r);
}

static void expect_error(struct fx *x, struct conn *c, const char *req, const char *cls,
                         const char *desc_prefix)
{
    assert_error(cmd(x, c, req), cls, desc_prefix);
}

/* The "return" of a command (borrowed from *holder, which the caller frees). */
static json_t *ret_of(struct fx *x, struct conn *c, const char *req, json_t **holder)
{
    json_t *r = cmd(x, c, req);
    json_t *ret = json_object_get(r, "return");
    if (!ret)
        fail_msg("%s failed: %s", req, json_dumps(r, 0));
    *holder = r;
    return ret;
}

static void expect_empty_return(struct fx *x, struct conn *c, const char *req)
{
    json_t *h;
    json_t *ret = ret_of(x, c, req, &h);
    assert_true(json_is_object(ret));
    assert_int_equal(json_object_size(ret), 0);
    json_decref(h);
}

static void assert_event(json_t *ev, const char *name)
{
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "event")), name);
    json_t *ts = json_object_get(ev, "timestamp");
    assert_true(json_integer_value(json_object_get(ts, "seconds")) > 1000000000);
    json_int_t us = json_integer_value(json_object_get(ts, "microseconds"));
    assert_true(us >= 0 && us < 1000000);
    assert_true(json_is_integer(json_object_get(ts, "microseconds")));
}

/* ---- tests ---- */

static void test_greeting(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    json_t *g = recv_msg(x, &x->a);
    assert_non_null(g);
    assert_int_equal(json_object_size(g), 1);
    json_t *qmp = json_object_get(g, "QMP");
    json_t *ver = json_object_get(qmp, "version");
    json_t *qemu = json_object_get(ver, "qemu");
    assert_int_equal(json_integer_value(json_object_get(qemu, "major")), 7);
    assert_int_equal(json_integer_value(json_object_get(qemu, "minor")), 2);
    assert_int_equal(json_integer_value(json_object_get(qemu, "micro")), 0);
    assert_true(json_is_integer(json_object_get(qemu, "micro")));
    assert_string_equal(json_string_value(json_object_get(ver, "package")), "kemu-" KEMU_VERSION);
    json_t *caps = json_object_get(qmp, "capabilities");
    assert_true(json_is_array(caps));
    assert_int_equal(json_array_size(caps), 0);
    json_decref(g);
    assert_int_equal(qmp_server_client_count(x->s), 1);
}

static void test_negotiation(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    json_decref(recv_msg(x, &x->a));
    const char *expecting = "Expecting capabilities negotiation with 'qmp_capabilities'";
    expect_error(x, &x->a, "{\"execute\": \"query-status\"}", "CommandNotFound", expecting);
    expect_error(x, &x->a, "{\"execute\": \"no-such-command\"}", "CommandNotFound", expecting);
    expect_error(x, &x->a, "{\"execute\": \"quit\"}", "CommandNotFound", expecting);
    assert_int_equal(x->fake.quits, 0);
    /* Events wait for negotiation too. */
    qmp_event_stop(x->s);
    expect_nothing(x, &x->a);
    expect_error(x, &x->a,
                 "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}",
                 "GenericError", "Capability 'oob' not available");
    expect_error(x, &x->a, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [1]}}",
                 "GenericError", "Invalid parameter type for 'enable[0]', expected: string");
    expect_error(x, &x->a, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": 1}}",
                 "GenericError", "Invalid parameter type for 'enable', expected: array");
    expect_empty_return(x, &x->a,
                        "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": []}}");
    expect_error(x, &x->a, "{\"execute\": \"qmp_capabilities\"}", "CommandNotFound",
                 "Capabilities negotiation is already complete, command ignored");
    json_t *h;
    json_t *ret = ret_of(x, &x->a, "{\"execute\": \"query-status\"}", &h);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "running");
    json_decref(h);
}

static void test_queries(void **state)
{
    struct fx *x = *state;
    json_t *h, *ret;
    open_conn(x, &x->a, false);
    negotiate(x, &x->a);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-version\"}", &h);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(ret, "qemu"), "major")), 7);
    assert_string_equal(json_string_value(json_object_get(ret, "package")), "kemu-" KEMU_VERSION);
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-commands\"}", &h);
    const char *want[] = {"qmp_capabilities",
                          "query-version",
                          "query-commands",
                          "query-status",
                          "query-name",
                          "query-kvm",
                          "query-cpus-fast",
                          "query-chardev",
                          "query-pci",
                          "query-block",
                          "stop",
                          "cont",
                          "system_reset",
                          "system_powerdown",
                          "quit",
                          "human-monitor-command"};
    for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
        bool found = false;
        size_t i;
        json_t *e;
        json_array_foreach(ret, i, e)
        {
            found |= !strcmp(json_string_value(json_object_get(e, "name")), want[w]);
        }
        if (!found)
            fail_msg("query-commands lacks %s", want[w]);
    }
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-status\"}", &h);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "running");
    assert_true(json_is_true(json_object_get(ret, "running")));
    assert_true(json_is_false(json_object_get(ret, "singlestep")));
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-name\"}", &h);
    assert_string_equal(json_string_value(json_object_get(ret, "name")), "guest1");
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-kvm\"}", &h);
    assert_true(json_is_true(json_object_get(ret, "enabled")));
    assert_true(json_is_true(json_object_get(ret, "present")));
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-cpus-fast\"}", &h);
    assert_int_equal(json_array_size(ret), 2);
    json_t *cpu1 = json_array_get(ret, 1);
    assert_int_equal(json_integer_value(json_object_get(cpu1, "cpu-index")), 1);
    assert_int_equal(json_integer_value(json_object_get(cpu1, "thread-id")), 1001);
    assert_string_equal(json_string_value(json_object_get(cpu1, "qom-path")),
                        "/machine/unattached/device[1]");
    assert_string_equal(json_string_value(json_object_get(cpu1, "target")), "x86_64");
    json_t *props = json_object_get(cpu1, "props");
    assert_int_equal(json_integer_value(json_object_get(props, "core-id")), 1);
    assert_int_equal(json_integer_value(json_object_get(props, "socket-id")), 0);
    assert_int_equal(json_integer_value(json_object_get(props, "thread-id")), 0);
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-chardev\"}", &h);
    assert_int_equal(json_array_size(ret), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ret, 0), "label")),
                        "serial0");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ret, 0), "filename")),
                        "stdio");
    assert_true(json_is_true(json_object_get(json_array_get(ret, 0), "frontend-open")));
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-pci\"}", &h);
    assert_int_equal(json_array_size(ret), 1);
    json_t *bus = json_array_get(ret, 0);
    assert_int_equal(json_integer_value(json_object_get(bus, "bus")), 0);
    json_t *devs = json_object_get(bus, "devices");
    assert_int_equal(json_array_size(devs), 2);
    json_t *hb = json_array_get(devs, 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(hb, "id"), "vendor")),
                     0x8086);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(hb, "class_info"), "desc")),
        "Host bridge");
    assert_null(json_object_get(hb, "irq"));
    json_t *blk = json_array_get(devs, 1);
    assert_int_equal(json_integer_value(json_object_get(blk, "slot")), 3);
    assert_int_equal(json_integer_value(json_object_get(blk, "irq")), 11);
    assert_int_equal(json_integer_value(json_object_get(blk, "irq_pin")), 1);
    assert_string_equal(json_string_value(json_object_get(blk, "qdev_id")), "disk0");
    json_t *regions = json_object_get(blk, "regions");
    assert_int_equal(json_array_size(regions), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(regions, 0), "type")),
                        "io");
    json_t *mem = json_array_get(regions, 1);
    assert_string_equal(json_string_value(json_object_get(mem, "type")), "memory");
    assert_int_equal(json_integer_value(json_object_get(mem, "address")), 0xfe000000);
    assert_true(json_is_true(json_object_get(mem, "mem_type_64")));
    json_decref(h);

    ret = ret_of(x, &x->a, "{\"execute\": \"query-block\"}", &h);
    assert_int_equal(json_array_size(ret), 2);
    /* io-status leads, as in QEMU's output; absent where the device keeps none */
    assert_string_equal(json_object_iter_key(json_object_iter(json_array_get(ret, 0))),
                        "io-status");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ret, 0), "io-status")),
                        "nospace");
    assert_null(json_object_get(json_array_get(ret, 1), "io-status"));
    assert_null(json_object_get(json_array_get(ret, 1), "inserted"));
    json_t *ins = json_object_get(json_array_get(ret, 0), "inserted");
    assert_string_equal(json_string_value(json_object_get(ins, "file")), "/tmp/disk.img");
    assert_string_equal(json_string_value(json_object_get(ins, "drv")), "raw");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(ins, "image"), "virtual-size")),
        1 << 20);
    json_decref(h);
}

static void test_actions(void **state)
{
    struct fx *x = *state;
    json_t *r, *h, *ret;
    open_conn(x, &x->a, false);
    negotiate(x, &x->a);

    /* The board emits STOP while stopping: it reaches the client before the reply, as QEMU. */
    send_str(&x->a, "{\"execute\": \"stop\"}");
    r = recv_msg(x, &x->a);
    assert_event(r, "STOP");
    assert_null(json_object_get(r, "data"));
    json_decref(r);
    r = recv_msg(x, &x->a);
    assert_non_null(json_object_get(r, "return"));
    json_decref(r);
    assert_int_equal(x->fake.stops, 1);
    ret = ret_of(x, &x->a, "{\"execute\": \"query-status\"}", &h);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "paused");
    assert_true(json_is_false(json_object_get(ret, "running")));
    json_decref(h);

    send_str(&x->a, "{\"execute\": \"cont\"}");
    r = recv_msg(x, &x->a);
    assert_event(r, "RESUME");
    json_decref(r);
    json_decref(recv_msg(x, &x->a));
    assert_int_equal(x->fake.conts, 1);

    send_str(&x->a, "{\"execute\": \"system_reset\"}");
    r = recv_msg(x, &x->a);
    assert_event(r, "RESET");
    assert_true(json_is_false(json_object_get(json_object_get(r, "data"), "guest")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "data"), "reason")),
                        "host-qmp-system-reset");
    json_decref(r);
    json_decref(recv_msg(x, &x->a));
    assert_int_equal(x->fake.resets, 1);

    send_str(&x->a, "{\"execute\": \"system_powerdown\"}");
    r = recv_msg(x, &x->a);
    assert_event(r, "POWERDOWN");
    json_decref(r);
    json_decref(recv_msg(x, &x->a));
    assert_int_equal(x->fake.powerdowns, 1);

    x->fake.fail_stop = true;
    expect_error(x, &x->a, "{\"execute\": \"stop\"}", "GenericError", "cannot stop now");

    /* set_link: both arguments required and typed; an unknown name is DeviceNotFound. */
    x->fake.link_up = true;
    expect_empty_return(x, &x->a,
                        "{\"execute\": \"set_link\", \"arguments\": {\"name\": \"nic0\", "
                        "\"up\": false}}");
    assert_string_equal(x->fake.link_name, "nic0");
    assert_false(x->fake.link_up);
    expect_error(x, &x->a,
                 "{\"execute\": \"set_link\", \"arguments\": {\"name\": \"nope\", \"up\": true}}",
                 "DeviceNotFound", "Device 'nope' not found");
    expect_error(x, &x->a, "{\"execute\": \"set_link\", \"arguments\": {\"name\": \"nic0\"}}",
                 "GenericError", "Parameter 'up' is missing");
    expect_error(x, &x->a,
                 "{\"execute\": \"set_link\", \"arguments\": {\"name\": \"nic0\", \"up\": \"on\"}}",
                 "GenericError", "Invalid parameter type for 'up', expected: boolean");
    assert_false(x->fake.link_up);
    ret = ret_of(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"set_link nic0 on\"}}",
                 &h);
    assert_string_equal(json_string_value(ret), "");
    assert_true(x->fake.link_up);
    json_decref(h);

    /* human-monitor-command: the board's handler, then the built-ins. */
    ret = ret_of(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"board thing\"}}",
                 &h);
    assert_string_equal(json_string_value(ret), "board says hi\r\n");
    json_decref(h);
    ret = ret_of(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"info status\", \"cpu-index\": 0}}",
                 &h);
    assert_string_equal(json_string_value(ret), "VM status: running\r\n");
    json_decref(h);
    ret = ret_of(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"info cpus\"}}",
                 &h);
    assert_string_equal(json_string_value(ret),
                        "* CPU #0: thread_id=1000\r\n  CPU #1: thread_id=1001\r\n");
    json_decref(h);
    ret = ret_of(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"frobnicate\"}}",
                 &h);
    assert_string_equal(json_string_value(ret), "unknown command: 'frobnicate'\r\n");
    json_decref(h);
    ret = ret_of(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"stop\"}}",
                 &h);
    assert_string_equal(json_string_value(ret), "Error: cannot stop now\r\n");
    json_decref(h);
    x->fake.fail_stop = false;
    send_str(&x->a, "{\"execute\": \"human-monitor-command\", \"arguments\": "
                    "{\"command-line\": \"stop\"}}");
    r = recv_msg(x, &x->a); /* the STOP event comes first */
    assert_event(r, "STOP");
    json_decref(r);
    r = recv_msg(x, &x->a);
    assert_string_equal(json_string_value(json_object_get(r, "return")), "");
    json_decref(r);
    assert_int_equal(x->fake.stops, 2);

    /* quit: the reply goes out, then ops.quit runs. */
    expect_empty_return(x, &x->a, "{\"execute\": \"quit\"}");
    assert_int_equal(x->fake.quits, 1);
    ret = ret_of(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": "
                 "{\"command-line\": \"q\"}}",
                 &h);
    assert_string_equal(json_string_value(ret), "");
    json_decref(h);
    assert_int_equal(x->fake.quits, 2);
}

static void test_null_ops(void **state)
{
    struct fx *x = *state;
    struct error err = {0};
    struct qmp_server *s2;
    assert_int_equal(qmp_server_new(&x->loop, NULL, &s2, &err), 0);
    qmp_server_destroy(x->s);
    x->s = s2;
    x->fake.s = NULL;
    json_t *h, *ret;
    open_conn(x, &x->a, false);
    negotiate(x, &x->a);
    expect_error(x, &x->a, "{\"execute\": \"stop\"}", "GenericError",
                 "stop is not supported by this machine");
    ret = ret_of(x, &x->a, "{\"execute\": \"query-block\"}", &h);
    assert_int_equal(json_array_size(ret), 0);
    json_decref(h);
    ret = ret_of(x, &x->a, "{\"execute\": \"query-pci\"}", &h);
    assert_int_equal(json_array_size(ret), 0);
    json_decref(h);
    ret = ret_of(x, &x->a, "{\"execute\": \"query-name\"}", &h);
    assert_int_equal(json_object_size(ret), 0);
    json_decref(h);
    ret = ret_of(x, &x->a, "{\"execute\": \"query-status\"}", &h);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "running");
    json_decref(h);
    expect_error(x, &x->a,
                 "{\"execute\": \"set_link\", \"arguments\": {\"name\": \"n0\", \"up\": true}}",
                 "DeviceNotFound", "Device 'n0' not found");
    expect_empty_return(x, &x->a, "{\"execute\": \"quit\"}"); /* no ops.quit: nothing to call */
}

static void test_id_echo(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    json_decref(recv_msg(x, &x->a));
    /* Refused before negotiation, still echoed. */
    json_t *r = cmd(x, &x->a, "{\"execute\": \"query-kvm\", \"id\": \"early\"}");
    assert_string_equal(json_string_value(json_object_get(r, "id")), "early");
    json_decref(r);
    r = cmd(x, &x->a, "{\"id\": 7, \"execute\": \"qmp_capabilities\"}");
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 7);
    assert_non_null(json_object_get(r, "return"));
    json_decref(r);
    r = cmd(x, &x->a, "{\"execute\": \"query-kvm\", \"id\": {\"a\": [1, 2.5, null]}}");
    json_t *want = json_loads("{\"a\": [1, 2.5, null]}", 0, NULL);
    assert_true(json_equal(json_object_get(r, "id"), want));
    json_decref(want);
    json_decref(r);
    r = cmd(x, &x->a, "{\"execute\": \"nope\", \"id\": [\"x\"]}");
    assert_string_equal(json_string_value(json_array_get(json_object_get(r, "id"), 0)), "x");
    assert_error(r, "CommandNotFound", "The command nope has not been found");
    r = cmd(x, &x->a, "{\"execute\": \"query-kvm\", \"id\": null}");
    assert_true(json_is_null(json_object_get(r, "id")));
    json_decref(r);
    r = cmd(x, &x->a, "{\"execute\": \"query-kvm\"}");
    assert_null(json_object_get(r, "id"));
    json_decref(r);
    /* Bad request members: id still echoed. */
    r = cmd(x, &x->a, "{\"execute\": 3, \"id\": \"bad\"}");
    assert_string_equal(json_string_value(json_object_get(r, "id")), "bad");
    assert_error(r, "GenericError", "QMP input member 'execute' must be a string");
}

static void test_bad_requests(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    negotiate(x, &x->a);
    const char *g = "GenericError";
    expect_error(x, &x->a, "[1, 2]", g, "QMP input must be a JSON object");
    expect_error(x, &x->a, "42 ", g, "QMP input must be a JSON object");
    expect_error(x, &x->a, "\"execute\"", g, "QMP input must be a JSON object");
    expect_error(x, &x->a, "{}", g, "QMP input lacks member 'execute'");
    expect_error(x, &x->a, "{\"arguments\": {}}", g, "QMP input lacks member 'execute'");
    expect_error(x, &x->a, "{\"execute\": \"stop\", \"arguments\": []}", g,
                 "QMP input member 'arguments' must be an object");
    expect_error(x, &x->a, "{\"execute\": \"stop\", \"exec-oob\": \"stop\"}", g,
                 "QMP input member 'exec-oob' is unexpected");
    expect_error(x, &x->a, "{\"execute\": \"nope\"}", "CommandNotFound",
                 "The command nope has not been found");
    expect_error(x, &x->a, "{\"execute\": \"query-status\", \"arguments\": {\"x\": 1}}", g,
                 "Parameter 'x' is unexpected");
    expect_error(x, &x->a, "{\"execute\": \"human-monitor-command\"}", g,
                 "Parameter 'command-line' is missing");
    expect_error(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": 1}}",
                 g, "Invalid parameter type for 'command-line', expected: string");
    expect_error(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"info kvm\", \"cpu-index\": \"0\"}}",
                 g, "Invalid parameter type for 'cpu-index', expected: integer");
    expect_error(x, &x->a,
                 "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": "
                 "\"info kvm\", \"bogus\": true}}",
                 g, "Parameter 'bogus' is unexpected");
    assert_int_equal(x->fake.stops, 0);
}

static void test_garbage(void **state)
{
    struct fx *x = *state;
    const char *p = "JSON parse error, ";
    open_conn(x, &x->a, false);
    negotiate(x, &x->a);
    expect_error(x, &x->a, "}", "GenericError", p);
    expect_error(x, &x->a, "nonsense\n", "GenericError", p);
    expect_error(x, &x->a, "{\"execute\": }", "GenericError", p);
    expect_error(x, &x->a, "{\"execute\": \"stop\"]", "GenericError", p);
    expect_error(x, &x->a, "{\"execute\": \"sto\xc3\"}", "GenericError", p); /* bad UTF-8 */
    expect_error(x, &x->a, "{\"execute\": \"a\\u0000b\"}", "GenericError", p);
    /* A string holding braces and escaped quotes does not confuse the splitter. */
    json_t *h;
    json_t *ret = ret_of(x, &x->a,
                         "{\"execute\": \"human-monitor-command\", \"arguments\": "
                         "{\"command-line\": \"x}]\\\"{\\\\\"}}",
                         &h);
    assert_string_equal(json_string_value(ret), "unknown command: 'x}]\"{\\'\r\n");
    json_decref(h);
    /* 0xFF abandons a half-sent request; the next one works. */
    expect_error(x, &x->a, "{\"execute\": \"st\xff", "GenericError", p);
    expect_empty_return(x, &x->a, "{\"execute\": \"cont\"}");
    /* So does any control character, even inside a string, as the QMP spec recommends. */
    expect_error(x, &x->a, "{\"execute\": \"qu\x01", "GenericError",
                 "JSON parse error, stray '\\x01', partial input discarded");
    expect_empty_return(x, &x->a, "{\"execute\": \"cont\"}");
    /* Between requests they are garbage too; still alive afterwards. */
    expect_error(x, &x->a, "\x01", "GenericError", "JSON parse error, stray '\\x01'");
    expect_error(x, &x->a, "\xff", "GenericError", "JSON parse error, stray '\\xff'");
    expect_error(x, &x->a, "@", "GenericError", "JSON parse error, stray '@'");
    assert_int_equal(send(x->a.fd, "", 1, 0), 1); /* a NUL byte */
    json_t *r = recv_msg(x, &x->a);
    assert_error(r, "GenericError", p);
    expect_empty_return(x, &x->a, "{\"execute\": \"cont\"}");
    assert_int_equal(qmp_server_client_count(x->s), 1);
}

static void test_split_writes(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    negotiate(x, &x->a);
    const char *req = "  {\"execute\" : \"query-status\", \"id\": \"split\\\"}\"}\r\n";
    const char *last = strrchr(req, '}');
    for (const char *p = req; *p; p++) {
        assert_int_equal(send(x->a.fd, p, 1, 0), 1);
        pump(x, 0);
        fill(&x->a);
        if (p < last)
            assert_int_equal(x->a.len, 0); /* nothing until the object is complete */
    }
    json_t *r = recv_msg(x, &x->a);
    assert_string_equal(json_string_value(json_object_get(r, "id")), "split\"}");
    assert_non_null(json_object_get(r, "return"));
    json_decref(r);
    expect_nothing(x, &x->a);
}

static void test_two_in_one_write(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    json_decref(recv_msg(x, &x->a));
    send_str(&x->a, "{\"execute\":\"qmp_capabilities\",\"id\":1}{\"execute\":\"query-name\","
                    "\"id\":2}\n[3]{\"execute\":\"query-kvm\",\"id\":4}");
    for (int id = 1; id <= 4; id++) {
        json_t *r = recv_msg(x, &x->a);
        assert_non_null(r);
        if (id == 3) {
            assert_error(r, "GenericError", "QMP input must be a JSON object");
            continue;
        }
        assert_int_equal(json_integer_value(json_object_get(r, "id")), id);
        assert_non_null(json_object_get(r, "return"));
        json_decref(r);
    }
}

static void test_huge_request(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    open_conn(x, &x->b, false);
    negotiate(x, &x->a);
    negotiate(x, &x->b);
    assert_int_equal(qmp_server_client_count(x->s), 2);
    char chunk[8192];
    memset(chunk, 'a', sizeof(chunk));
    send_str(&x->a,
             "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"");
    size_t sent = 0;
    bool closed = false;
    for (int round = 0; round < 5000 && !closed; round++) {
        ssize_t n = send(x->a.fd, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
        else if (n < 0 && errno != EAGAIN)
            closed = true;
        pump(x, 1);
        closed |= qmp_server_client_count(x->s) == 1;
    }
    assert_true(closed);
    assert_true(sent > QMP_MAX_INPUT / 2);
    /* The dropped client was told why, then saw EOF. */
    json_t *r = recv_msg(x, &x->a);
    assert_error(r, "GenericError", "JSON parse error, request too large");
    assert_null(recv_msg(x, &x->a));
    assert_true(x->a.eof);
    /* The other client is untouched. */
    expect_empty_return(x, &x->b, "{\"execute\": \"cont\"}");
}

static void test_events_two_clients(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    open_conn(x, &x->b, false);
    open_conn(x, &x->c, false);
    negotiate(x, &x->a);
    negotiate(x, &x->b);
    json_decref(recv_msg(x, &x->c)); /* greeting only: not negotiated */

    qmp_event_shutdown(x->s, QMP_CAUSE_GUEST_SHUTDOWN);
    qmp_event_shutdown(x->s, QMP_CAUSE_HOST_QMP_QUIT);
    qmp_event_powerdown(x->s);
    qmp_event_reset(x->s, QMP_CAUSE_GUEST_RESET);
    qmp_event_stop(x->s);
    qmp_event_resume(x->s);
    qmp_server_event(x->s, "CUSTOM", json_pack("{s:i}", "n", 5));
    qmp_event_shutdown_reason(x->s, true, "guest-panic");
    struct conn *cs[] = {&x->a, &x->b};
    for (int i = 0; i < 2; i++) {
        json_t *e = recv_msg(x, cs[i]);
        assert_event(e, "SHUTDOWN");
        json_t *d = json_object_get(e, "data");
        assert_true(json_is_true(json_object_get(d, "guest")));
        assert_string_equal(json_string_value(json_object_get(d, "reason")), "guest-shutdown");
        json_decref(e);
        e = recv_msg(x, cs[i]);
        assert_event(e, "SHUTDOWN");
        d = json_object_get(e, "data");
        assert_true(json_is_false(json_object_get(d, "guest")));
        assert_string_equal(json_string_value(json_object_get(d, "reason")), "host-qmp-quit");
        json_decref(e);
        e = recv_msg(x, cs[i]);
        assert_event(e, "POWERDOWN");
        assert_null(json_object_get(e, "data"));
        json_decref(e);
        e = recv_msg(x, cs[i]);
        assert_event(e, "RESET");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(e, "data"), "reason")),
            "guest-reset");
        json_decref(e);
        e = recv_msg(x, cs[i]);
        assert_event(e, "STOP");
        json_decref(e);
        e = recv_msg(x, cs[i]);
        assert_event(e, "RESUME");
        json_decref(e);
        e = recv_msg(x, cs[i]);
        assert_event(e, "CUSTOM");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "data"), "n")), 5);
        json_decref(e);
        e = recv_msg(x, cs[i]);
        assert_event(e, "SHUTDOWN");
        d = json_object_get(e, "data");
        assert_true(json_is_true(json_object_get(d, "guest")));
        assert_string_equal(json_string_value(json_object_get(d, "reason")), "guest-panic");
        json_decref(e);
    }
    expect_nothing(x, &x->c);
    /* No server: the helpers are no-ops (and free the data). */
    qmp_event_stop(NULL);
    qmp_event_shutdown_reason(NULL, false, "host-signal");
    qmp_server_event(NULL, "X", json_object());
    assert_string_equal(qmp_shutdown_cause_str((enum qmp_shutdown_cause)99), "none");
}

static void test_disconnect(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    open_conn(x, &x->b, false);
    negotiate(x, &x->a);
    json_decref(recv_msg(x, &x->b));
    assert_int_equal(qmp_server_client_count(x->s), 2);
    /* Gone in the middle of a request. */
    send_str(&x->a, "{\"execute\": \"query-st");
    settle(x);
    close(x->a.fd);
    x->a.fd = -1;
    settle(x);
    assert_int_equal(qmp_server_client_count(x->s), 1);
    /* Events to the remaining (unnegotiated) client are fine; then it goes too. */
    qmp_event_stop(x->s);
    close(x->b.fd);
    x->b.fd = -1;
    settle(x);
    assert_int_equal(qmp_server_client_count(x->s), 0);
    qmp_event_resume(x->s);
    /* A reply to a peer that already left (write fails) just drops it. */
    open_conn(x, &x->c, false);
    send_str(&x->c, "{\"execute\": \"qmp_capabilities\"}");
    shutdown(x->c.fd, SHUT_RD);
    close(x->c.fd);
    x->c.fd = -1;
    settle(x);
    assert_int_equal(qmp_server_client_count(x->s), 0);
}

/* Replies with ids next..: check them in order; returns the next id expected. */
static int take_replies(struct fx *x, struct conn *c, int next)
{
    fill(c);
    char *nl;
    while ((nl = memmem(c->buf, c->len, "\r\n", 2))) {
        size_t n = (size_t)(nl - c->buf) + 2;
        json_t *r = json_loadb(c->buf, n - 2, 0, NULL);
        assert_non_null(r);
        assert_int_equal(json_integer_value(json_object_get(r, "id")), next);
        next++;
        json_decref(r);
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
    }
    return next;
}

static void test_slow_reader(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, false);
    open_conn(x, &x->b, false);
    negotiate(x, &x->a);
    negotiate(x, &x->b);
    /* Requests whose replies (~1 KiB each) far outrun a reader that only reads when its writes
     * block: the server stops reading rather than buffering, and nothing is lost. */
    enum { N = 3000 };
    char req[96];
    int next = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(req, sizeof(req), "{\"execute\": \"query-commands\", \"id\": %d}", i);
        for (;;) {
            ssize_t w = send(x->a.fd, req, (size_t)n, MSG_DONTWAIT);
            if (w == n)
                break;
            assert_true(w < 0 && errno == EAGAIN); /* whole small writes or none */
            pump(x, 1);
            for (struct qmp_client *c = x->s->clients; c; c = c->next)
                assert_true(c->out_len - c->out_off < QMP_OUT_HIGH + 4096);
            next = take_replies(x, &x->a, next);
        }
        pump(x, 0);
    }
    while (next < N) {
        pump(x, 10);
        int before = next;
        next = take_replies(x, &x->a, next);
        if (next == before && x->a.eof)
            fail_msg("client dropped after %d replies", next);
    }
    assert_int_equal(qmp_server_client_count(x->s), 2);
    /* A client that never reads while events keep coming is dropped; the other stays. */
    for (int i = 0; i < 200000 && qmp_server_client_count(x->s) == 2; i++) {
        qmp_server_event(x->s, "FLOOD", json_pack("{s:i}", "i", i));
        if (i % 64 == 0) {
            pump(x, 0);
            fill(&x->a);
            x->a.len = 0;
        }
    }
    assert_int_equal(qmp_server_client_count(x->s), 1);
    fill(&x->a);
    x->a.len = 0;
    expect_empty_return(x, &x->a, "{\"execute\": \"cont\"}");
}

static void test_pretty(void **state)
{
    struct fx *x = *state;
    open_conn(x, &x->a, true);
    settle(x);
    fill(&x->a);
    const char *want = "{\r\n    \"QMP\": {\r\n        \"version\": {\r\n";
    assert_true(x->a.len > strlen(want));
    assert_memory_equal(x->a.buf, want, strlen(want));
    assert_memory_equal(x->a.buf + x->a.len - 3, "}\r\n", 3);
}

static void test_unix_listen(void **state)
{
    struct fx *x = *state;
    struct error err = {0};
    char path[64], spec[128];
    snprintf(path, sizeof(path), "/tmp/kemu-test-qmp-%d.sock", (int)getpid());
    snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", path);
    assert_int_equal(qmp_server_listen(x->s, spec, false, &err), 0);
    struct conn *cs[] = {&x->a, &x->b};
    for (int i = 0; i < 2; i++) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, path);
        cs[i]->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(cs[i]->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        negotiate(x, cs[i]);
    }
    assert_int_equal(qmp_server_client_count(x->s), 2);
    json_t *h;
    json_t *ret = ret_of(x, &x->b, "{\"execute\": \"query-status\"}", &h);
    assert_true(json_is_true(json_object_get(ret, "running")));
    json_decref(h);
    /* The old-style spelling and TCP on an ephemeral port. */
    qmp_server_destroy(x->s);
    assert_int_equal(access(path, F_OK), -1); /* unlinked */
    struct qmp_vm_ops ops = fake_ops(&x->fake);
    assert_int_equal(qmp_server_new(&x->loop, &ops, &x->s, &err), 0);
    x->fake.s = x->s;
    snprintf(spec, sizeof(spec), "unix:%s,server,nowait", path);
    assert_int_equal(qmp_server_listen(x->s, spec, true, &err), 0);
    assert_int_equal(qmp_server_listen(x->s, "tcp:127.0.0.1:0,server=on,wait=off", false, &err), 0);
    assert_false(err.set);
    /* server=off connects out, here to our own listener. */
    snprintf(spec, sizeof(spec), "unix:%s", path);
    assert_int_equal(qmp_server_listen(x->s, spec, false, &err), 0);
    settle(x);
    assert_int_equal(qmp_server_client_count(x->s), 2); /* both ends are our clients */

    const char *bad[] = {"stdio",
                         "unix:",
                         "tcp:localhost",
                         "tcp:localhost:",
                         "unix:/tmp/x,server=maybe",
                         "unix:/tmp/x,bogus=1",
                         "unix:/tmp/x,ipv4",
                         "unix:/nonexistent-dir/q.sock,server=on,wait=off",
                         "unix:/tmp/kemu-no-such-listener.sock"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct error e = {0};
        if (qmp_server_listen(x->s, bad[i], false, &e) == 0)
            fail_msg("'%s' accepted", bad[i]);
        assert_true(e.set);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_greeting),         T(test_negotiation),  T(test_queries),
        T(test_actions),          T(test_null_ops),     T(test_id_echo),
        T(test_bad_requests),     T(test_garbage),      T(test_split_writes),
        T(test_two_in_one_write), T(test_huge_request), T(test_events_two_clients),
        T(test_disconnect),       T(test_slow_reader),  T(test_pretty),
        T(test_unix_listen),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
