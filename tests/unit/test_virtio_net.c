/* Unit tests for virtio-net: the test plays the transport and the guest driver (rings built by
 * hand in a 1 MiB buffer), the backend is a SOCK_SEQPACKET socketpair (netdev_create_fd). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/bytes.h"
#include "virtio/net.h"
#include "../virtio_driver.h"

#define RAM_SIZE (1u << 20)
#define QSIZE    16
/* Per queue q: descriptor table, avail ring, used ring. */
#define DESC(q)  (0x1000u + (q)*0x4000u)
#define AVAIL(q) (0x2000u + (q)*0x4000u)
#define USED(q)  (0x3000u + (q)*0x4000u)
#define DATA     0x20000u

struct fx {
    uint8_t *ram;
    struct guest_mem mem;
    int sv[2];
    struct netdev *nd;
    struct virtio_net *net;
    struct virtio_device *vdev;
    struct virtio_transport_ops tops;
    unsigned notify_q[2], notify_cfg;
    uint16_t avail_idx[2];
    uint16_t next_desc[2];
};

static struct fx *cur;

static void t_notify_queue(struct virtio_device *vdev, unsigned q)
{
    __atomic_fetch_add(&cur->notify_q[q & 1], 1, __ATOMIC_SEQ_CST);
}

static void t_notify_config(struct virtio_device *vdev)
{
    __atomic_fetch_add(&cur->notify_cfg, 1, __ATOMIC_SEQ_CST);
}

static struct fx *fx_new(bool vnet_hdr, uint64_t net_features)
{
    struct fx *f = calloc(1, sizeof(*f));
    cur = f;
    f->ram = aligned_alloc(4096, RAM_SIZE);
    memset(f->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&f->mem, f->ram, RAM_SIZE);
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, f->sv), 0);
    struct error err = {0};
    assert_int_equal(netdev_create_fd("s0", f->sv[0], vnet_hdr, true, &f->nd, &err), 0);
    static const uint8_t mac[6] = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
    assert_int_equal(virtio_net_create(&f->mem, f->nd, mac, false, &f->net, &err), 0);
    f->vdev = virtio_net_vdev(f->net);
    f->tops.notify_queue = t_notify_queue;
    f->tops.notify_config = t_notify_config;
    f->vdev->transport = &f->tops;

    struct virtio_device *v = f->vdev;
    pthread_mutex_lock(&v->lock);
    uint64_t feat = VIRTIO_BIT(VIRTIO_F_VERSION_1) | net_features;
    assert_true(virtio_driver_features(v, feat));
    for (unsigned q = 0; q < 2; q++) {
        assert_int_equal(vq_set_size(&v->vq[q], QSIZE, &err), 0);
        assert_int_equal(vq_set_addresses(&v->vq[q], DESC(q), AVAIL(q), USED(q), &err), 0);
        assert_int_equal(vq_enable(&v->vq[q], &err), 0);
    }
    virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                             VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    pthread_mutex_unlock(&v->lock);
    assert_true(v->started);
    return f;
}

static void fx_free(struct fx *f)
{
    virtio_net_destroy(f->net);
    netdev_destroy(f->nd);
    close(f->sv[1]);
    free(f->ram);
    free(f);
}

static void desc(struct fx *f, unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next)
{
    uint8_t *p = f->ram + DESC(q) + 16 * i;
    le_put64(p, addr);
    le_put32(p + 8, len);
    le_put16(p + 12, flags);
    le_put16(p + 14, next);
}

/* Make chain `head` available on queue q without notifying the device. */
static void make_avail(struct fx *f, unsigned q, uint16_t head)
{
    le_put16(f->ram + AVAIL(q) + 4 + 2 * (f->avail_idx[q] % QSIZE), head);
    f->avail_idx[q]++;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    le_put16(f->ram + AVAIL(q) + 2, f->avail_idx[q]);
}

static void publish(struct fx *f, unsigned q, uint16_t head)
{
    make_avail(f, q, head);
    virtio_kick(f->vdev, q);
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
    return __atomic_load_n((uint16_t *)(f->ram + USED(q) + 2), __ATOMIC_ACQUIRE);
}

static void used_elem(struct fx *f, unsigned q, unsigned i, uint32_t *id, uint32_t *len)
{
    const uint8_t *p = f->ram + USED(q) + 4 + 8 * (i % QSIZE);
    *id = le_get32(p);
    *len = le_get32(p + 4);
}

static bool wait_used(struct fx *f, unsigned q, uint16_t idx)
{
    for (int i = 0; i < 3000; i++) {
        if (used_idx(f, q) == idx)
            return true;
        usleep(1000);
    }
    return false;
}

/* kemu's datapath counters once the netdev thread has taken `kicks` notifications on queue q
 * (0 receive, 1 transmit) and counted an interrupt for each one the transport sent there (read
 * while the thread is idle). */
static struct virtio_net_stats wait_counted(struct fx *f, unsigned q, uint64_t kicks)
{
    struct virtio_net_stats st = {0};
    for (int i = 0; i < 3000; i++) {
        virtio_net_get_stats(f->net, &st);
        uint64_t k = q ? st.tx_kicks : st.rx_kicks, irqs = q ? st.tx_irqs : st.rx_irqs;
        if (k == kicks && irqs == __atomic_load_n(&f->notify_q[q], __ATOMIC_SEQ_CST))
            break;
        usleep(1000);
    }
    return st;
}

/* The counters once queue q's first interrupt arrived and any further one had room to show. */
static struct virtio_net_stats settled_counts(struct fx *f, unsigned q, uint64_t kicks)
{
    for (int i = 0; i < 3000 && !__atomic_load_n(&f->notify_q[q], __ATOMIC_SEQ_CST); i++)
        usleep(1000);
    usleep(50 * 1000);
    return wait_counted(f, q, kicks);
}

static bool wait_status(struct fx *f, uint8_t bit)
{
    for (int i = 0; i < 3000; i++) {
        if (__atomic_load_n(&f->vdev->status, __ATOMIC_SEQ_CST) & bit)
            return true;
        usleep(1000);
    }
    return false;
}

/* The status bit is set before the config interrupt is sent: wait for the interrupt too. */
static bool wait_notify_cfg(struct fx *f)
{
    for (int i = 0; i < 3000; i++) {
        if (__atomic_load_n(&f->notify_cfg, __ATOMIC_SEQ_CST) >= 1)
            return true;
        usleep(1000);
    }
    return false;
}

static ssize_t backend_read(struct fx *f, uint8_t *buf, size_t len)
{
    struct pollfd p = {.fd = f->sv[1], .events = POLLIN};
    if (poll(&p, 1, 3000) != 1)
        return -1;
    return read(f->sv[1], buf, len);
}

static void fill(uint8_t *p, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static const uint64_t BASE = VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS);

/* ---- tests ---- */

static void test_config_features(void **state)
{
    struct fx *f = fx_new(false, BASE);
    struct virtio_device *v = f->vdev;
    assert_int_equal(v->device_id, VIRTIO_ID_NET);
    assert_int_equal(virtio_read_config(v, 0, 4), 0x12005452);
    assert_int_equal(virtio_read_config(v, 4, 2), 0x5634);
    assert_int_equal(virtio_read_config(v, 6, 2), VIRTIO_NET_S_LINK_UP);
    /* A plain backend: no offloads offered. */
    assert_false(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_CSUM));
    assert_false(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4));
    assert_true(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
    fx_free(f);

    f = fx_new(true, BASE | VIRTIO_BIT(VIRTIO_NET_F_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM) |
                         VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) | VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4));
    v = f->vdev;
    assert_true(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO6));
    assert_true(v->features & VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4));
    /* Dependencies: GUEST_TSO4 without GUEST_CSUM is refused. */
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    assert_false(virtio_driver_features(v, VIRTIO_BIT(VIRTIO_F_VERSION_1) |
                                               VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4)));
    pthread_mutex_unlock(&v->lock);
    /* One device per netdev. */
    struct virtio_net *n2;
    struct error err = {0};
    static const uint8_t mac[6] = {0};
    assert_int_equal(virtio_net_create(&f->mem, f->nd, mac, false, &n2, &err), -1);
    assert_non_null(strstr(err.msg, "already in use"));
    fx_free(f);
}

static void test_tx(void **state)
{
    for (int vh = 0; vh < 2; vh++) {
        struct fx *f = fx_new(vh, BASE);
        /* Header in its own descriptor, frame split over two more. */
        uint8_t *hdr = f->ram + DATA;
        memset(hdr, 0, 12);
        fill(f->ram + DATA + 0x100, 40, 1);
        fill(f->ram + DATA + 0x200, 60, 41);
        desc(f, 1, 0, DATA, 12, VIRTQ_DESC_F_NEXT, 1);
        desc(f, 1, 1, DATA + 0x100, 40, VIRTQ_DESC_F_NEXT, 2);
        desc(f, 1, 2, DATA + 0x200, 60, 0, 0);
        publish(f, 1, 0);
        uint8_t buf[256];
        ssize_t n = backend_read(f, buf, sizeof(buf));
        assert_int_equal(n, (vh ? 12 : 0) + 100);
        const uint8_t *fr = buf + (vh ? 12 : 0);
        assert_memory_equal(fr, f->ram + DATA + 0x100, 40);
        assert_memory_equal(fr + 40, f->ram + DATA + 0x200, 60);
        assert_true(wait_used(f, 1, 1));
        uint32_t id, len;
        used_elem(f, 1, 0, &id, &len);
        assert_int_equal(id, 0);
        assert_true(__atomic_load_n(&f->notify_q[1], __ATOMIC_SEQ_CST) >= 1);

        /* Header and frame in one descriptor. */
        memset(f->ram + DATA + 0x400, 0, 12);
        fill(f->ram + DATA + 0x40c, 64, 9);
        desc(f, 1, 3, DATA + 0x400, 12 + 64, 0, 0);
        publish(f, 1, 3);
        n = backend_read(f, buf, sizeof(buf));
        assert_int_equal(n, (vh ? 12 : 0) + 64);
        assert_memory_equal(buf + (vh ? 12 : 0), f->ram + DATA + 0x40c, 64);
        assert_true(wait_used(f, 1, 2));

        /* A too-short frame is dropped, the chain still returned, the device fine. */
        desc(f, 1, 4, DATA + 0x400, 12 + 5, 0, 0);
        publish(f, 1, 4);
        assert_true(wait_used(f, 1, 3));
        assert_false(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);

        /* The counters behind KEMU_NET_STATS: one driver kick per publish, each interrupt the
         * transport sent, nothing on the receive side. */
        struct virtio_net_stats st = wait_counted(f, 1, 3);
        assert_int_equal(st.tx_kicks, 3);
        assert_int_equal(st.tx_frames, 2);
        assert_int_equal(st.tx_dropped, 1);
        assert_true(st.tx_irqs >= 1);
        assert_int_equal(st.tx_irqs, __atomic_load_n(&f->notify_q[1], __ATOMIC_SEQ_CST));
        assert_int_equal(st.rx_kicks, 0);
        assert_int_equal(st.rx_irqs, 0);
        fx_free(f);
    }
}

/* Frames the driver queued before one kick: each completed, one interrupt for all of them
 * (without EVENT_IDX and with flags 0 the driver would take one per check). */
static void test_tx_one_irq_per_kick(void **state)
{
    (void)state;
    struct fx *f = fx_new(false, BASE);
    enum { N = 5, LEN = 100 };
    for (unsigned i = 0; i < N; i++) {
        uint64_t a = DATA + (uint64_t)i * 0x1000;
        memset(f->ram + a, 0, 12);
        fill(f->ram + a + 12, LEN, (uint8_t)i);
        desc(f, 1, i, a, 12 + LEN, 0, 0);
        make_avail(f, 1, (uint16_t)i);
    }
    virtio_kick(f->vdev, 1);
    uint8_t buf[256];
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(backend_read(f, buf, sizeof(buf)), LEN);
        assert_memory_equal(buf, f->ram + DATA + (uint64_t)i * 0x1000 + 12, LEN);
    }
    assert_true(wait_used(f, 1, N));
    struct virtio_net_stats st = settled_counts(f, 1, 1);
    assert_int_equal(st.tx_frames, N);
    assert_int_equal(__atomic_load_n(&f->notify_q[1], __ATOMIC_SEQ_CST), 1);
    assert_int_equal(st.tx_irqs, 1);
    fx_free(f);
}

/* A backend that cannot take more frames holds the chains in the ring (not dropped): every
 * frame arrives, in order, once the backend drains. */
static void test_tx_backpressure(void **state)
{
    (void)state;
    struct fx *f = fx_new(false, BASE);
    int small = 4096;
    assert_int_equal(setsockopt(f->sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    enum { N = QSIZE - 1, LEN = 1000 };
    for (unsigned i = 0; i < N; i++) {
        uint64_t a = DATA + (uint64_t)i * 0x1000;
        memset(f->ram + a, 0, 12);
        fill(f->ram + a + 12, LEN, (uint8_t)i);
        desc(f, 1, i, a, 12 + LEN, 0, 0);
        publish(f, 1, (uint16_t)i);
    }
    usleep(100 * 1000);
    assert_true(used_idx(f, 1) < N); /* the socket holds only a few frames */
    assert_false(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    uint8_t buf[2048];
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(backend_read(f, buf, sizeof(buf)), LEN);
        assert_memory_equal(buf, f->ram + DATA + (uint64_t)i * 0x1000 + 12, LEN);
    }
    assert_true(wait_used(f, 1, N));
    fx_free(f);
}

static void post_rx(struct fx *f, unsigned i, uint64_t addr, uint32_t len)
{
    desc(f, 0, i, addr, len, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0, (uint16_t)i);
}

static void test_rx(void **state)
{
    struct fx *f = fx_new(true, BASE);
    post_rx(f, 0, DATA, 2048);
    uint8_t fr[12 + 80];
    memset(fr, 0, 12);
    fill(fr + 12, 80, 3);
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    assert_true(wait_used(f, 0, 1));
    uint32_t id, len;
    used_elem(f, 0, 0, &id, &len);
    assert_int_equal(id, 0);
    assert_int_equal(len, 12 + 80);
    assert_int_equal(le_get16(f->ram + DATA + 10), 1); /* num_buffers */
    assert_int_equal(f->ram[DATA], 0);
    assert_memory_equal(f->ram + DATA + 12, fr + 12, 80);
    for (int i = 0; i < 1000 && !__atomic_load_n(&f->notify_q[0], __ATOMIC_SEQ_CST); i++)
        usleep(1000);
    assert_true(__atomic_load_n(&f->notify_q[0], __ATOMIC_SEQ_CST) >= 1);
    struct virtio_net_stats st = wait_counted(f, 0, 1);
    assert_int_equal(st.rx_irqs, __atomic_load_n(&f->notify_q[0], __ATOMIC_SEQ_CST));
    assert_int_equal(st.rx_kicks, 1); /* the one publish of a receive buffer */

    /* An offload the guest did not negotiate (NEEDS_CSUM without GUEST_CSUM) is dropped. */
    post_rx(f, 1, DATA + 0x1000, 2048);
    fr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    fr[0] = 0;
    fr[12] = 0xaa;
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    assert_true(wait_used(f, 0, 2));
    assert_int_equal(f->ram[DATA + 0x1000 + 12], 0xaa);
    fx_free(f);
}

static void test_rx_mergeable(void **state)
{
    struct fx *f = fx_new(false, BASE | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
    for (unsigned i = 0; i < 4; i++)
        post_rx(f, i, DATA + 0x100 * i, 64);
    uint8_t fr[150];
    fill(fr, sizeof(fr), 5);
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    assert_true(wait_used(f, 0, 3));
    uint32_t id, len;
    used_elem(f, 0, 0, &id, &len);
    assert_int_equal(len, 64);
    used_elem(f, 0, 1, &id, &len);
    assert_int_equal(id, 1);
    assert_int_equal(len, 64);
    used_elem(f, 0, 2, &id, &len);
    assert_int_equal(id, 2);
    assert_int_equal(len, 12 + 150 - 128);
    assert_int_equal(le_get16(f->ram + DATA + 10), 3);
    assert_memory_equal(f->ram + DATA + 12, fr, 52);
    assert_memory_equal(f->ram + DATA + 0x100, fr + 52, 64);
    assert_memory_equal(f->ram + DATA + 0x200, fr + 116, 34);

    /* Not enough buffers left (one of 64 bytes for 150): held, the buffer not consumed, then
     * delivered once more buffers come. */
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    usleep(100000);
    assert_int_equal(used_idx(f, 0), 3);
    post_rx(f, 4, DATA + 0x400, 2048);
    assert_true(wait_used(f, 0, 5));
    used_elem(f, 0, 3, &id, &len);
    assert_int_equal(id, 3);
    assert_int_equal(len, 64);
    used_elem(f, 0, 4, &id, &len);
    assert_int_equal(id, 4);
    assert_int_equal(len, 150 - 52);
    assert_int_equal(le_get16(f->ram + DATA + 0x300 + 10), 2);
    fx_free(f);
}

static void test_rx_held(void **state)
{
    struct fx *f = fx_new(false, BASE);
    uint8_t fr[60];
    for (int k = 0; k < 3; k++) {
        fill(fr, sizeof(fr), (uint8_t)k);
        assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    }
    usleep(100000);
    assert_int_equal(used_idx(f, 0), 0);
    for (unsigned i = 0; i < 3; i++)
        post_rx(f, i, DATA + 0x1000 * i, 1526);
    assert_true(wait_used(f, 0, 3));
    for (unsigned k = 0; k < 3; k++) {
        fill(fr, sizeof(fr), (uint8_t)k);
        assert_memory_equal(f->ram + DATA + 0x1000 * k + 12, fr, sizeof(fr));
    }
    /* A buffer too small for the frame without MRG_RXBUF: the frame is dropped, the buffer kept
     * for the next one. */
    post_rx(f, 3, DATA + 0x4000, 40);
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    assert_int_equal(write(f->sv[1], fr, 20), 20);
    assert_true(wait_used(f, 0, 4));
    uint32_t id, len;
    used_elem(f, 0, 3, &id, &len);
    assert_int_equal(len, 32);
    struct virtio_net_stats st;
    virtio_net_get_stats(f->net, &st);
    assert_int_equal(st.rx_dropped, 1);
    fx_free(f);
}

/* Frames read from the backend in one round: an interrupt for the first (the guest starts on
 * it) and one at the round's end, not one per frame (no EVENT_IDX here: every check fires). */
static void test_rx_irqs_per_round(void **state)
{
    (void)state;
    struct fx *f = fx_new(false, BASE);
    enum { N = 8 };
    uint8_t fr[60];
    for (unsigned k = 0; k < N; k++) {
        fill(fr, sizeof(fr), (uint8_t)k);
        assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    }
    usleep(100000); /* the first frame is held (no buffer) and reading stops; 7 wait */
    assert_int_equal(used_idx(f, 0), 0);
    for (unsigned i = 0; i < N; i++) {
        desc(f, 0, i, DATA + 0x1000 * i, 1526, VIRTQ_DESC_F_WRITE, 0);
        make_avail(f, 0, (uint16_t)i);
    }
    virtio_kick(f->vdev, 0);
    assert_true(wait_used(f, 0, N));
    for (unsigned k = 0; k < N; k++) {
        fill(fr, sizeof(fr), (uint8_t)k);
        assert_memory_equal(f->ram + DATA + 0x1000 * k + 12, fr, sizeof(fr));
    }
    struct virtio_net_stats st = settled_counts(f, 0, 1);
    assert_int_equal(st.rx_frames, N);
    /* The held frame on the kick, then the other 7 in one round: first and end. */
    assert_int_equal(__atomic_load_n(&f->notify_q[0], __ATOMIC_SEQ_CST), 3);
    assert_int_equal(st.rx_irqs, 3);
    fx_free(f);
}

/* set_link off: the status field says so with a configuration interrupt, a queued transmit is
 * completed unsent, a frame from the backend is dropped; on again, both ways work. */
static void test_link_down(void **state)
{
    (void)state;
    struct fx *f = fx_new(false, BASE);
    struct virtio_device *v = f->vdev;
    virtio_net_set_link(f->net, false);
    assert_false(virtio_net_link_up(f->net));
    assert_int_equal(virtio_read_config(v, 6, 2), 0);
    assert_int_equal(__atomic_load_n(&f->notify_cfg, __ATOMIC_SEQ_CST), 1);
    virtio_net_set_link(f->net, false); /* no change: no interrupt */
    assert_int_equal(__atomic_load_n(&f->notify_cfg, __ATOMIC_SEQ_CST), 1);

    memset(f->ram + DATA, 0, 12);
    fill(f->ram + DATA + 12, 64, 3);
    desc(f, 1, 0, DATA, 12 + 64, 0, 0);
    publish(f, 1, 0);
    assert_true(wait_used(f, 1, 1));
    struct pollfd pf = {.fd = f->sv[1], .events = POLLIN};
    assert_int_equal(poll(&pf, 1, 100), 0); /* nothing reached the backend */

    uint8_t fr[60];
    fill(fr, sizeof(fr), 5);
    desc(f, 0, 0, DATA + 0x1000, 1526, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0, 0);
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    struct virtio_net_stats st = {0};
    for (int i = 0; i < 3000 && !st.rx_dropped; i++, usleep(1000))
        virtio_net_get_stats(f->net, &st);
    assert_int_equal(st.rx_dropped, 1);
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(st.tx_dropped, 1);
    assert_int_equal(st.tx_frames, 0);

    virtio_net_set_link(f->net, true);
    assert_int_equal(virtio_read_config(v, 6, 2), VIRTIO_NET_S_LINK_UP);
    assert_int_equal(__atomic_load_n(&f->notify_cfg, __ATOMIC_SEQ_CST), 2);
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    assert_true(wait_used(f, 0, 1));
    assert_memory_equal(f->ram + DATA + 0x1000 + 12, fr, sizeof(fr));
    desc(f, 1, 1, DATA, 12 + 64, 0, 0);
    publish(f, 1, 1);
    uint8_t buf[256];
    assert_int_equal(backend_read(f, buf, sizeof(buf)), 64);
    assert_memory_equal(buf, f->ram + DATA + 12, 64);

    /* The state outlives a driver reset. */
    virtio_net_set_link(f->net, false);
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    pthread_mutex_unlock(&v->lock);
    assert_int_equal(virtio_read_config(v, 6, 2), 0);
    fx_free(f);
}

static void test_malformed(void **state)
{
    /* TX chain shorter than the header. */
    struct fx *f = fx_new(false, BASE);
    desc(f, 1, 0, DATA, 4, 0, 0);
    publish(f, 1, 0);
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    assert_true(wait_notify_cfg(f));
    fx_free(f);

    /* TX chain with a writable buffer. */
    f = fx_new(false, BASE);
    desc(f, 1, 0, DATA, 80, VIRTQ_DESC_F_NEXT, 1);
    desc(f, 1, 1, DATA + 0x100, 80, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 1, 0);
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    fx_free(f);

    /* TX descriptor outside guest RAM. */
    f = fx_new(false, BASE);
    desc(f, 1, 0, RAM_SIZE - 8, 80, 0, 0);
    publish(f, 1, 0);
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    fx_free(f);

    /* RX buffer that is device-readable. */
    f = fx_new(false, BASE);
    desc(f, 0, 0, DATA, 2048, 0, 0);
    publish(f, 0, 0);
    uint8_t fr[60] = {0};
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    /* Reset and start again: the device works afterwards. */
    struct virtio_device *v = f->vdev;
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    pthread_mutex_unlock(&v->lock);
    assert_false(v->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    fx_free(f);

    /* RX buffer smaller than the header (mergeable). */
    f = fx_new(false, BASE | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF));
    post_rx(f, 0, DATA, 8);
    assert_int_equal(write(f->sv[1], fr, sizeof(fr)), sizeof(fr));
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    fx_free(f);

    /* Head index beyond the queue size. */
    f = fx_new(false, BASE);
    publish(f, 1, QSIZE + 3);
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_features),
        cmocka_unit_test(test_tx),
        cmocka_unit_test(test_tx_one_irq_per_kick),
        cmocka_unit_test(test_tx_backpressure),
        cmocka_unit_test(test_rx),
        cmocka_unit_test(test_rx_mergeable),
        cmocka_unit_test(test_rx_held),
        cmocka_unit_test(test_rx_irqs_per_round),
        cmocka_unit_test(test_link_down),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
