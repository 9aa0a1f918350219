/* Unit tests for virtio-serial: the test plays both the transport (status, features, queue
 * setup, kicks) and the Linux driver (rings built by hand in a buffer used as guest RAM), and
 * fakes the chardevs on the host side. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <time.h>

#include "core/bytes.h"
#include "virtio/console.h"
#include "../virtio_driver.h"

#define RAM_SIZE  (1u << 20)
#define RINGS     0x10000u /* queue q's rings at RINGS + q * 0x1000 */
#define DATA      0x80000u /* queue q's buffers at DATA + q * 0x1000 + slot * BUF_SIZE */
#define QSIZE     8
#define BUF_SIZE  256
#define MAX_PORTS 4

#define F_MULTIPORT VIRTIO_BIT(VIRTIO_CONSOLE_F_MULTIPORT)
#define F_VERSION_1 VIRTIO_BIT(VIRTIO_F_VERSION_1)
#define F_EVENT_IDX VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX)

#define GA_NAME "org.qemu.guest_agent.0"

/* ---- fake chardev ---- */

struct fake_chr {
    struct chardev base;
    pthread_mutex_t lock;
    uint8_t out[4096];
    size_t out_len;
    unsigned accepts; /* chardev_accept_input calls (atomic) */
};

static ssize_t fake_write(struct chardev *c, const uint8_t *buf, size_t len)
{
    struct fake_chr *f = (struct fake_chr *)c;
    pthread_mutex_lock(&f->lock);
    size_t n = len < sizeof(f->out) - f->out_len ? len : sizeof(f->out) - f->out_len;
    memcpy(f->out + f->out_len, buf, n);
    f->out_len += n;
    pthread_mutex_unlock(&f->lock);
    return (ssize_t)len;
}

static void fake_accept(struct chardev *c)
{
    struct fake_chr *f = (struct fake_chr *)c;
    __atomic_fetch_add(&f->accepts, 1, __ATOMIC_SEQ_CST);
}

static const struct chardev_ops fake_ops = {.write = fake_write, .accept_input = fake_accept};

static void fake_init(struct fake_chr *f, const char *id)
{
    memset(f, 0, sizeof(*f));
    f->base.ops = &fake_ops;
    snprintf(f->base.id, sizeof(f->base.id), "%s", id);
    pthread_mutex_init(&f->lock, NULL);
}

static size_t fake_out(struct fake_chr *f, char *buf, size_t size)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->out_len < size - 1 ? f->out_len : size - 1;
    memcpy(buf, f->out, n);
    buf[n] = 0;
    pthread_mutex_unlock(&f->lock);
    return n;
}

static unsigned accepts(struct fake_chr *f)
{
    return __atomic_load_n(&f->accepts, __ATOMIC_SEQ_CST);
}

/* ---- fixture: device, fake transport, guest driver state ---- */

struct gq {
    uint16_t avail_idx; /* the driver's next avail index */
    uint16_t used_seen; /* used entries consumed */
};

struct fx {
    uint8_t *ram;
    struct guest_mem mem;
    struct virtio_serial *vs;
    struct virtio_device *vdev;
    struct fake_chr c0, c1;
    struct gq q[VIRTIO_MAX_QUEUES];
    unsigned notified[VIRTIO_MAX_QUEUES]; /* atomic */
    unsigned config_irqs;                 /* atomic */
};

static void tr_notify_queue(struct virtio_device *vdev, unsigned q)
{
    struct fx *f = vdev->transport_opaque;
    __atomic_fetch_add(&f->notified[q], 1, __ATOMIC_SEQ_CST);
}

static void tr_notify_config(struct virtio_device *vdev)
{
    struct fx *f = vdev->transport_opaque;
    __atomic_fetch_add(&f->config_irqs, 1, __ATOMIC_SEQ_CST);
}

static const struct virtio_transport_ops fake_transport = {
    .notify_queue = tr_notify_queue,
    .notify_config = tr_notify_config,
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->ram = aligned_alloc(4096, RAM_SIZE);
    assert_non_null(f->ram);
    memset(f->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&f->mem, f->ram, RAM_SIZE);
    struct error err = {0};
    assert_int_equal(virtio_serial_create(&f->mem, MAX_PORTS, &f->vs, &err), 0);
    f->vdev = virtio_serial_vdev(f->vs);
    f->vdev->transport = &fake_transport;
    f->vdev->transport_opaque = f;
    fake_init(&f->c0, "c0");
    fake_init(&f->c1, "c1");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    virtio_serial_destroy(f->vs);
    free(f->ram);
    free(f);
    return 0;
}

static uint64_t ring(unsigned q)
{
    return RINGS + (uint64_t)q * 0x1000;
}

static uint64_t buf_gpa(unsigned q, unsigned slot)
{
    return DATA + (uint64_t)q * 0x1000 + (uint64_t)slot * BUF_SIZE;
}

/* Transport + driver initialisation up to DRIVER_OK with `nq` queues enabled. */
static void driver_init(struct fx *f, uint64_t features, unsigned nq)
{
    memset(f->q, 0, sizeof(f->q));
    memset(f->ram + RINGS, 0, DATA - RINGS);
    assert_true(virtio_driver_start(f->vdev, features, nq, QSIZE, RINGS, 0x1000));
}

static void device_reset(struct fx *f)
{
    pthread_mutex_lock(&f->vdev->lock);
    virtio_set_status(f->vdev, 0);
    pthread_mutex_unlock(&f->vdev->lock);
}

/* Offer one single-descriptor buffer (its data in the slot's area) and kick. */
static void add_buf(struct fx *f, unsigned q, const void *data, uint32_t len, bool writable)
{
    struct gq *g = &f->q[q];
    unsigned slot = g->avail_idx & (QSIZE - 1);
    uint64_t gpa = buf_gpa(q, slot);
    if (data)
        memcpy(f->ram + gpa, data, len);
    else
        memset(f->ram + gpa, 0, BUF_SIZE);
    uint8_t *d = f->ram + ring(q) + 16 * slot;
    le_put64(d, gpa);
    le_put32(d + 8, len);
    le_put16(d + 12, writable ? VIRTQ_DESC_F_WRITE : 0);
    le_put16(d + 14, 0);
    le_put16(f->ram + ring(q) + 0x200 + 4 + 2 * slot, (uint16_t)slot);
    g->avail_idx++;
    __atomic_store_n((uint16_t *)(f->ram + ring(q) + 0x200 + 2), g->avail_idx, __ATOMIC_RELEASE);
    virtio_kick(f->vdev, q);
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
    return __atomic_load_n((uint16_t *)(f->ram + ring(q) + 0x400 + 2), __ATOMIC_ACQUIRE);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wait (5 s at most) until queue q has a used entry not consumed yet. */
static bool wait_used(struct fx *f, unsigned q)
{
    for (int i = 0; i < 5000; i++) {
        if (used_idx(f, q) != f->q[q].used_seen)
            return true;
        sleep_ms(1);
    }
    return false;
}

/* Consume the next used entry: the guest address of its buffer and the length written. */
static uint64_t take_used(struct fx *f, unsigned q, uint32_t *len)
{
    assert_true(wait_used(f, q));
    const uint8_t *e = f->ram + ring(q) + 0x400 + 4 + 8 * (f->q[q].used_seen & (QSIZE - 1));
    uint32_t id = le_get32(e);
    *len = le_get32(e + 4);
    assert_true(id < QSIZE);
    f->q[q].used_seen++;
    return buf_gpa(q, id);
}

/* The guest's control message reader: takes one message and offers the buffer again. */
static void ctrl_recv(struct fx *f, uint32_t id, uint16_t event, uint16_t value, const char *name)
{
    uint32_t len;
    uint64_t gpa = take_used(f, VIRTIO_CONSOLE_CTRL_RX, &len);
    assert_true(len >= VIRTIO_CONSOLE_CTRL_SIZE);
    const uint8_t *m = f->ram + gpa;
    assert_int_equal(le_get32(m), id);
    assert_int_equal(le_get16(m + 4), event);
    assert_int_equal(le_get16(m + 6), value);
    if (name) {
        assert_int_equal(len - VIRTIO_CONSOLE_CTRL_SIZE, strlen(name));
        assert_memory_equal(m + VIRTIO_CONSOLE_CTRL_SIZE, name, strlen(name));
    } else {
        assert_int_equal(len, VIRTIO_CONSOLE_CTRL_SIZE);
    }
    add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, BUF_SIZE, true);
}

/* The guest's control message writer; waits until the device consumed it. */
static void ctrl_send_raw(struct fx *f, const void *msg, uint32_t len)
{
    add_buf(f, VIRTIO_CONSOLE_CTRL_TX, msg, len, false);
    uint32_t written;
    take_used(f, VIRTIO_CONSOLE_CTRL_TX, &written);
    assert_int_equal(written, 0);
}

static void ctrl_send(struct fx *f, uint32_t id, uint16_t event, uint16_t value)
{
    uint8_t m[VIRTIO_CONSOLE_CTRL_SIZE];
    le_put32(m, id);
    le_put16(m + 4, event);
    le_put16(m + 6, value);
    ctrl_send_raw(f, m, sizeof(m));
}

/* No control message arrives (after a short wait). */
static void ctrl_none(struct fx *f)
{
    sleep_ms(20);
    assert_int_equal(used_idx(f, VIRTIO_CONSOLE_CTRL_RX), f->q[VIRTIO_CONSOLE_CTRL_RX].used_seen);
}

/* The usual setup: console at 0 (c0), guest agent port at 1 (c1). */
static void add_ports(struct fx *f)
{
    struct error err = {0};
    assert_int_equal(virtio_serial_add_port(f->vs, -1, &f->c0.base, true, NULL, &err), 0);
    assert_int_equal(virtio_serial_add_port(f->vs, -1, &f->c1.base, false, GA_NAME, &err), 0);
}

/* Linux's probe: control rx buffers, DEVICE_READY, then PORT_READY for each port added. */
static void handshake(struct fx *f, uint64_t extra)
{
    driver_init(f, F_VERSION_1 | F_MULTIPORT | extra, 2 * (MAX_PORTS + 1));
    for (int i = 0; i < QSIZE; i++)
        add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, BUF_SIZE, true);
    ctrl_send(f, 0xffffffffu, VIRTIO_CONSOLE_DEVICE_READY, 1);
    ctrl_recv(f, 0, VIRTIO_CONSOLE_DEVICE_ADD, 1, NULL);
    ctrl_recv(f, 1, VIRTIO_CONSOLE_DEVICE_ADD, 1, NULL);
    ctrl_none(f);

    ctrl_send(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
    ctrl_recv(f, 0, VIRTIO_CONSOLE_CONSOLE_PORT, 1, NULL);
    ctrl_recv(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
    ctrl_send(f, 1, VIRTIO_CONSOLE_PORT_READY, 1);
    ctrl_recv(f, 1, VIRTIO_CONSOLE_PORT_NAME, 1, GA_NAME);
    ctrl_recv(f, 1, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
    ctrl_none(f);
    assert_true(__atomic_load_n(&f->notified[VIRTIO_CONSOLE_CTRL_RX], __ATOMIC_SEQ_CST) > 0);
}

static void assert_healthy(struct fx *f)
{
    assert_false(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_int_equal(__atomic_load_n(&f->config_irqs, __ATOMIC_SEQ_CST), 0);
}

/* Wait until the chardev's output is `want`. */
static void expect_out(struct fake_chr *c, const char *want)
{
    char got[4096];
    for (int i = 0; i < 5000; i++) {
        if (fake_out(c, got, sizeof(got)) >= strlen(want))
            break;
        sleep_ms(1);
    }
    assert_string_equal(got, want);
}

static bool wait_accepts(struct fake_chr *c, unsigned n)
{
    for (int i = 0; i < 5000; i++) {
        if (accepts(c) >= n)
            return true;
        sleep_ms(1);
    }
    return false;
}

/* ---- tests ---- */

static void test_create_errors(void **state)
{
    (void)state;
    struct guest_mem mem;
    uint8_t buf[4096];
    guest_mem_init_buffer(&mem, buf, sizeof(buf));
    struct virtio_serial *vs;
    struct error err = {0};
    assert_int_equal(virtio_serial_create(&mem, 0, &vs, &err), -1);
    assert_non_null(strstr(err.msg, "max_ports"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(virtio_serial_create(&mem, VIRTIO_SERIAL_MAX_PORTS + 1, &vs, &err), -1);
    assert_int_equal(virtio_serial_create(&mem, VIRTIO_SERIAL_MAX_PORTS, &vs, &err), 0);
    assert_int_equal(virtio_serial_vdev(vs)->nqueues, 64);
    virtio_serial_destroy(vs);
}

static void expect_add_error(struct fx *f, int nr, struct chardev *chr, bool console,
                             const char *name, const char *what)
{
    struct error err = {0};
    assert_int_equal(virtio_serial_add_port(f->vs, nr, chr, console, name, &err), -1);
    if (!strstr(err.msg, what))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, what);
    assert_null(strchr(err.msg, '\n'));
}

static void test_add_port(void **state)
{
    struct fx *f = *state;
    struct error err = {0};
    struct fake_chr c2, c3;
    fake_init(&c2, "c2");
    fake_init(&c3, "c3");
    expect_add_error(f, MAX_PORTS, NULL, true, NULL, "max_ports");
    expect_add_error(f, -2, NULL, true, NULL, "nr=-2");
    expect_add_error(f, 0, NULL, false, NULL, "reserved for virtconsole");
    /* A serial port without a number skips port 0. */
    assert_int_equal(virtio_serial_add_port(f->vs, -1, &f->c1.base, false, "a.b", &err), 0);
    assert_true(f->c1.base.has_fe);
    expect_add_error(f, 1, NULL, false, NULL, "already in use");
    expect_add_error(f, -1, &f->c1.base, false, NULL, "chardev 'c1' is already in use");
    expect_add_error(f, -1, NULL, false, "a.b", "a port named 'a.b' already exists");
    /* The first console takes port 0, the next one a free number. */
    assert_int_equal(virtio_serial_add_port(f->vs, -1, &f->c0.base, true, NULL, &err), 0);
    expect_add_error(f, 0, &c2.base, true, NULL, "port number 0 is already in use");
    assert_int_equal(virtio_serial_add_port(f->vs, -1, &c2.base, true, NULL, &err), 0);
    assert_int_equal(virtio_serial_add_port(f->vs, 3, NULL, false, NULL, &err), 0);
    expect_add_error(f, -1, &c3.base, false, NULL, "no free port number");
    assert_false(c3.base.has_fe);

    /* The numbers as the guest sees them. */
    {
        driver_init(f, F_VERSION_1 | F_MULTIPORT, 2 * (MAX_PORTS + 1));
        for (int i = 0; i < QSIZE; i++)
            add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, BUF_SIZE, true);
        ctrl_send(f, 0xffffffffu, VIRTIO_CONSOLE_DEVICE_READY, 1);
        for (uint32_t i = 0; i < MAX_PORTS; i++)
            ctrl_recv(f, i, VIRTIO_CONSOLE_DEVICE_ADD, 1, NULL);
        ctrl_send(f, 2, VIRTIO_CONSOLE_PORT_READY, 1);
        ctrl_recv(f, 2, VIRTIO_CONSOLE_CONSOLE_PORT, 1, NULL);
        ctrl_recv(f, 2, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
        ctrl_send(f, 1, VIRTIO_CONSOLE_PORT_READY, 1);
        ctrl_recv(f, 1, VIRTIO_CONSOLE_PORT_NAME, 1, "a.b");
        ctrl_recv(f, 1, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
    }
    virtio_serial_destroy(f->vs);
    f->vs = NULL;
    /* Destroying detaches the frontends. */
    assert_false(f->c0.base.has_fe);
    assert_false(c2.base.has_fe);
}

static void test_config(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    struct virtio_device *vdev = f->vdev;
    assert_int_equal(vdev->device_id, VIRTIO_ID_CONSOLE);
    assert_true(virtio_get_device_features(vdev, 0) & F_MULTIPORT);
    assert_int_equal(virtio_read_config(vdev, VIRTIO_CONSOLE_CFG_MAX_NR_PORTS, 4), MAX_PORTS);
    /* Read-only fields stay; an emergency write goes to port 0. */
    virtio_write_config(vdev, VIRTIO_CONSOLE_CFG_MAX_NR_PORTS, 4, 99);
    virtio_write_config(vdev, 0, 2, 80);
    assert_int_equal(virtio_read_config(vdev, VIRTIO_CONSOLE_CFG_MAX_NR_PORTS, 4), MAX_PORTS);
    assert_int_equal(virtio_read_config(vdev, 0, 2), 0);
    virtio_write_config(vdev, VIRTIO_CONSOLE_CFG_EMERG_WR, 4, 'E');
    virtio_write_config(vdev, VIRTIO_CONSOLE_CFG_EMERG_WR, 4, '!');
    expect_out(&f->c0, "E!");
    assert_int_equal(virtio_read_config(vdev, VIRTIO_CONSOLE_CFG_EMERG_WR, 4), 0);
}

static void test_handshake(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    handshake(f, 0);
    assert_healthy(f);
    /* The driver asking again gets the ports again (as from QEMU). */
    ctrl_send(f, 0xffffffffu, VIRTIO_CONSOLE_DEVICE_READY, 1);
    ctrl_recv(f, 0, VIRTIO_CONSOLE_DEVICE_ADD, 1, NULL);
    ctrl_recv(f, 1, VIRTIO_CONSOLE_DEVICE_ADD, 1, NULL);
    /* A driver that failed to set up a port says so: nothing is sent. */
    ctrl_send(f, 1, VIRTIO_CONSOLE_PORT_READY, 0);
    ctrl_send(f, 0xffffffffu, VIRTIO_CONSOLE_DEVICE_READY, 0);
    ctrl_none(f);
    assert_healthy(f);
}

static void test_tx(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    handshake(f, F_EVENT_IDX);
    unsigned tx0 = virtio_serial_tx_queue(0), tx1 = virtio_serial_tx_queue(1);
    assert_int_equal(tx0, 1);
    assert_int_equal(tx1, 5);
    add_buf(f, tx0, "hello, ", 7, false);
    add_buf(f, tx0, "world\n", 6, false);
    add_buf(f, tx1, "{\"execute\":\"guest-ping\"}", 24, false);
    uint32_t len;
    take_used(f, tx0, &len);
    assert_int_equal(len, 0);
    take_used(f, tx0, &len);
    take_used(f, tx1, &len);
    expect_out(&f->c0, "hello, world\n");
    expect_out(&f->c1, "{\"execute\":\"guest-ping\"}");
    assert_true(__atomic_load_n(&f->notified[tx1], __ATOMIC_SEQ_CST) > 0);
    /* Output on the queues of a port that does not exist is consumed and dropped. */
    add_buf(f, virtio_serial_tx_queue(3), "lost", 4, false);
    take_used(f, virtio_serial_tx_queue(3), &len);
    expect_out(&f->c0, "hello, world\n");
    assert_healthy(f);
}

static void test_rx(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    struct chardev *c0 = &f->c0.base, *c1 = &f->c1.base;
    /* Before the driver runs, input waits in the chardev. */
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 0);
    handshake(f, F_EVENT_IDX);
    unsigned rx0 = virtio_serial_rx_queue(0), rx1 = virtio_serial_rx_queue(1);
    assert_int_equal(rx1, 4);

    /* The guest has not opened the ports yet. */
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 0);
    unsigned a0 = accepts(&f->c0);
    ctrl_send(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
    assert_true(wait_accepts(&f->c0, a0 + 1)); /* paused before: resume */

    /* Open but no buffer: held, and resumed once the guest adds one. */
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 0);
    a0 = accepts(&f->c0);
    add_buf(f, rx0, NULL, 16, true);
    assert_true(wait_accepts(&f->c0, a0 + 1));
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 16);
    c0->fe.receive(c0->fe.opaque, (const uint8_t *)"ls\n", 3);
    uint32_t len;
    uint64_t gpa = take_used(f, rx0, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(f->ram + gpa, "ls\n", 3);
    assert_true(__atomic_load_n(&f->notified[rx0], __ATOMIC_SEQ_CST) > 0);

    /* More than one buffer holds: split over the buffers. */
    add_buf(f, rx0, NULL, 4, true);
    add_buf(f, rx0, NULL, 4, true);
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 4);
    c0->fe.receive(c0->fe.opaque, (const uint8_t *)"abcdefgh", 8);
    gpa = take_used(f, rx0, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(f->ram + gpa, "abcd", 4);
    gpa = take_used(f, rx0, &len);
    assert_int_equal(len, 4);
    assert_memory_equal(f->ram + gpa, "efgh", 4);
    /* A chardev ignoring can_receive loses the excess, nothing else. */
    c0->fe.receive(c0->fe.opaque, (const uint8_t *)"xyz", 3);
    assert_int_equal(used_idx(f, rx0), f->q[rx0].used_seen);

    /* The serial port: opened by the guest, then closed again. */
    add_buf(f, rx1, NULL, 64, true);
    assert_int_equal(c1->fe.can_receive(c1->fe.opaque), 0);
    ctrl_send(f, 1, VIRTIO_CONSOLE_PORT_OPEN, 1);
    assert_true(wait_accepts(&f->c1, 1));
    assert_int_equal(c1->fe.can_receive(c1->fe.opaque), 64);
    c1->fe.receive(c1->fe.opaque, (const uint8_t *)"{}", 2);
    gpa = take_used(f, rx1, &len);
    assert_int_equal(len, 2);
    ctrl_send(f, 1, VIRTIO_CONSOLE_PORT_OPEN, 0);
    add_buf(f, rx1, NULL, 64, true);
    assert_int_equal(c1->fe.can_receive(c1->fe.opaque), 0);
    assert_healthy(f);
}

static void test_malformed(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    handshake(f, 0);
    unsigned a1 = accepts(&f->c1);
    uint8_t m[16] = {0};
    /* Short messages. */
    ctrl_send_raw(f, m, 0);
    le_put32(m, 1);
    le_put16(m + 4, VIRTIO_CONSOLE_PORT_READY);
    le_put16(m + 6, 1);
    ctrl_send_raw(f, m, 7);
    /* Port ids: beyond max_ports, far beyond, a free number. */
    ctrl_send(f, MAX_PORTS, VIRTIO_CONSOLE_PORT_READY, 1);
    ctrl_send(f, 0x80000000u, VIRTIO_CONSOLE_PORT_OPEN, 1);
    ctrl_send(f, 2, VIRTIO_CONSOLE_PORT_READY, 1);
    ctrl_send(f, 3, VIRTIO_CONSOLE_PORT_OPEN, 1);
    /* Device-to-driver and unknown events. */
    ctrl_send(f, 0, VIRTIO_CONSOLE_DEVICE_ADD, 1);
    ctrl_send(f, 0, VIRTIO_CONSOLE_PORT_NAME, 1);
    ctrl_send(f, 0, 0xffff, 1);
    /* A writable control tx buffer. */
    add_buf(f, VIRTIO_CONSOLE_CTRL_TX, NULL, 8, true);
    uint32_t len;
    take_used(f, VIRTIO_CONSOLE_CTRL_TX, &len);
    ctrl_none(f);
    assert_int_equal(accepts(&f->c1), a1);
    /* A longer message is fine: the header counts. */
    ctrl_send_raw(f, m, 16);
    ctrl_recv(f, 1, VIRTIO_CONSOLE_PORT_NAME, 1, GA_NAME);
    ctrl_recv(f, 1, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
    assert_healthy(f);
}

static void test_small_ctrl_rx(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    driver_init(f, F_VERSION_1 | F_MULTIPORT, 2 * (MAX_PORTS + 1));
    add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, 4, true);   /* too small: the message is lost */
    add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, 8, true);   /* enough for the header */
    add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, 12, true);  /* a name cut short */
    add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, 256, true); /* room */
    ctrl_send(f, 0xffffffffu, VIRTIO_CONSOLE_DEVICE_READY, 1);
    uint32_t len;
    take_used(f, VIRTIO_CONSOLE_CTRL_RX, &len);
    assert_int_equal(len, 0);
    uint64_t gpa = take_used(f, VIRTIO_CONSOLE_CTRL_RX, &len);
    assert_int_equal(len, 8);
    assert_int_equal(le_get32(f->ram + gpa), 1);
    ctrl_send(f, 1, VIRTIO_CONSOLE_PORT_READY, 1);
    gpa = take_used(f, VIRTIO_CONSOLE_CTRL_RX, &len);
    assert_int_equal(len, 12);
    assert_int_equal(le_get16(f->ram + gpa + 4), VIRTIO_CONSOLE_PORT_NAME);
    assert_memory_equal(f->ram + gpa + 8, "org.", 4);
    gpa = take_used(f, VIRTIO_CONSOLE_CTRL_RX, &len);
    assert_int_equal(le_get16(f->ram + gpa + 4), VIRTIO_CONSOLE_PORT_OPEN);
    /* Messages wait for buffers. */
    ctrl_send(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
    ctrl_none(f);
    add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, BUF_SIZE, true);
    add_buf(f, VIRTIO_CONSOLE_CTRL_RX, NULL, BUF_SIZE, true);
    ctrl_recv(f, 0, VIRTIO_CONSOLE_CONSOLE_PORT, 1, NULL);
    ctrl_recv(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1, NULL);
    assert_healthy(f);
}

static void test_bad_ring(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    handshake(f, 0);
    /* A tx descriptor outside guest RAM: the device asks for a reset, nothing crashes. */
    unsigned q = virtio_serial_tx_queue(0);
    uint8_t *d = f->ram + ring(q);
    le_put64(d, RAM_SIZE - 4);
    le_put32(d + 8, 64);
    le_put16(d + 12, 0);
    le_put16(f->ram + ring(q) + 0x200 + 4, 0);
    f->q[q].avail_idx++;
    __atomic_store_n((uint16_t *)(f->ram + ring(q) + 0x200 + 2), f->q[q].avail_idx,
                     __ATOMIC_RELEASE);
    virtio_kick(f->vdev, q);
    for (int i = 0; i < 5000 && !__atomic_load_n(&f->config_irqs, __ATOMIC_SEQ_CST); i++)
        sleep_ms(1);
    assert_true(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    /* The reset brings it back. */
    f->config_irqs = 0;
    handshake(f, 0);
    assert_healthy(f);
}

static void test_no_multiport(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    struct chardev *c0 = &f->c0.base;
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 0);
    unsigned a0 = accepts(&f->c0);
    driver_init(f, F_VERSION_1, 2);
    /* Port 0 is usable at once, and input held before the start is resumed. */
    assert_true(wait_accepts(&f->c0, a0 + 1));
    add_buf(f, 1, "boot\n", 5, false);
    expect_out(&f->c0, "boot\n");
    add_buf(f, 0, NULL, 32, true);
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 32);
    c0->fe.receive(c0->fe.opaque, (const uint8_t *)"y", 1);
    uint32_t len;
    take_used(f, 0, &len);
    assert_int_equal(len, 1);
    /* The control queues are not the driver's: kicks there do nothing. */
    virtio_kick(f->vdev, VIRTIO_CONSOLE_CTRL_TX);
    sleep_ms(10);
    assert_healthy(f);
}

struct hammer {
    struct fx *f;
    bool stop;          /* atomic */
    unsigned delivered; /* atomic */
};

/* The main thread's side, running while the device is reset under it. */
static void *hammer_thread(void *opaque)
{
    struct hammer *h = opaque;
    struct chardev *c0 = &h->f->c0.base;
    while (!__atomic_load_n(&h->stop, __ATOMIC_SEQ_CST)) {
        if (c0->fe.can_receive(c0->fe.opaque) > 0) {
            c0->fe.receive(c0->fe.opaque, (const uint8_t *)"z", 1);
            __atomic_fetch_add(&h->delivered, 1, __ATOMIC_SEQ_CST);
        }
    }
    return NULL;
}

static void test_reset_running(void **state)
{
    struct fx *f = *state;
    add_ports(f);
    struct hammer h = {.f = f};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hammer_thread, &h), 0);
    for (int round = 0; round < 5; round++) {
        handshake(f, F_EVENT_IDX);
        ctrl_send(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
        for (int i = 0; i < QSIZE; i++)
            add_buf(f, virtio_serial_rx_queue(0), NULL, 8, true);
        /* Some output in flight while the reset comes. */
        add_buf(f, virtio_serial_tx_queue(0), "r", 1, false);
        add_buf(f, virtio_serial_tx_queue(1), "s", 1, false);
        /* Input flows before the reset. */
        assert_true(wait_used(f, virtio_serial_rx_queue(0)));
        device_reset(f);
        assert_false(f->vdev->started);
        assert_int_equal(f->vdev->status, 0);
        assert_int_equal(virtio_read_config(f->vdev, VIRTIO_CONSOLE_CFG_MAX_NR_PORTS, 4),
                         MAX_PORTS);
    }
    __atomic_store_n(&h.stop, true, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    assert_true(__atomic_load_n(&h.delivered, __ATOMIC_SEQ_CST) >= 5);
    /* After the reset the ports are closed again. */
    struct chardev *c0 = &f->c0.base;
    assert_int_equal(c0->fe.can_receive(c0->fe.opaque), 0);
    c0->fe.receive(c0->fe.opaque, (const uint8_t *)"q", 1);
    assert_healthy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test_setup_teardown(test_add_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_ctrl_rx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_multiport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_running, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
