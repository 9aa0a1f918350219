/* Unit tests for virtio-net's control queue, receive filter and multiqueue: the test plays the
 * transport and the guest driver (rings built by hand), the backend is one SOCK_SEQPACKET
 * socketpair per queue (netdev_create_fds). */
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
#include <unistd.h>

#include "core/bytes.h"
#include "virtio/net.h"
#include "../virtio_driver.h"

#define RAM_SIZE (1u << 20)
#define QSIZE    16
#define MAXQ     7 /* 3 pairs and the control queue */
/* Per queue q: descriptor table, avail ring, used ring. */
#define DESC(q)  (0x1000u + (q)*0x4000u)
#define AVAIL(q) (0x2000u + (q)*0x4000u)
#define USED(q)  (0x3000u + (q)*0x4000u)
#define DATA     0x40000u /* RX buffers: 0x1000 per (queue, slot) */
#define CTRL_BUF 0xc0000u

static const uint8_t our_mac[6] = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
static const uint8_t other_mac[6] = {0x52, 0x54, 0, 0xaa, 0xbb, 0xcc};
static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t mcast[6] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0x01};
static const uint8_t mcast2[6] = {0x33, 0x33, 0x00, 0x00, 0x00, 0x01};

struct fx {
    uint8_t *ram;
    struct guest_mem mem;
    unsigned nbq; /* backend queues */
    int peer[4];
    struct netdev *nd;
    struct virtio_net *net;
    struct virtio_device *vdev;
    struct virtio_transport_ops tops;
    unsigned notify_cfg;
    unsigned cq; /* control queue index */
    bool vnet;
    uint16_t avail_idx[MAXQ];
};

static struct fx *cur;

static void t_notify_queue(struct virtio_device *vdev, unsigned q) {}

static void t_notify_config(struct virtio_device *vdev)
{
    __atomic_fetch_add(&cur->notify_cfg, 1, __ATOMIC_SEQ_CST);
}

static const uint64_t CTRL = VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ) |
                             VIRTIO_BIT(VIRTIO_NET_F_CTRL_RX) |
                             VIRTIO_BIT(VIRTIO_NET_F_CTRL_RX_EXTRA) |
                             VIRTIO_BIT(VIRTIO_NET_F_CTRL_MAC_ADDR);

static void negotiate(struct fx *f, uint64_t features)
{
    struct virtio_device *v = f->vdev;
    struct error err = {0};
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    memset(f->avail_idx, 0, sizeof(f->avail_idx));
    memset(f->ram, 0, CTRL_BUF);
    uint64_t feat = VIRTIO_BIT(VIRTIO_F_VERSION_1) | features;
    assert_true(virtio_driver_features(v, feat));
    bool mq = features & VIRTIO_BIT(VIRTIO_NET_F_MQ);
    unsigned pairs = mq ? (v->nqueues - 1) / 2 : 1;
    f->cq = 2 * pairs;
    for (unsigned q = 0; q <= f->cq; q++) {
        assert_int_equal(vq_set_size(&v->vq[q], QSIZE, &err), 0);
        assert_int_equal(vq_set_addresses(&v->vq[q], DESC(q), AVAIL(q), USED(q), &err), 0);
        assert_int_equal(vq_enable(&v->vq[q], &err), 0);
    }
    virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                             VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    pthread_mutex_unlock(&v->lock);
    assert_true(v->started);
}

static struct fx *fx_new(bool vnet, uint64_t features, unsigned nbq, bool mq)
{
    struct fx *f = calloc(1, sizeof(*f));
    cur = f;
    f->ram = aligned_alloc(4096, RAM_SIZE);
    memset(f->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&f->mem, f->ram, RAM_SIZE);
    f->nbq = nbq;
    f->vnet = vnet;
    int fds[4];
    for (unsigned i = 0; i < nbq; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
        fds[i] = sv[0];
        f->peer[i] = sv[1];
    }
    struct error err = {0};
    assert_int_equal(netdev_create_fds("s0", fds, nbq, vnet, true, &f->nd, &err), 0);
    assert_int_equal(virtio_net_create(&f->mem, f->nd, our_mac, mq, &f->net, &err), 0);
    f->vdev = virtio_net_vdev(f->net);
    f->tops.notify_queue = t_notify_queue;
    f->tops.notify_config = t_notify_config;
    f->vdev->transport = &f->tops;
    negotiate(f, features);
    return f;
}

static void fx_free(struct fx *f)
{
    virtio_net_destroy(f->net);
    netdev_destroy(f->nd);
    for (unsigned i = 0; i < f->nbq; i++)
        close(f->peer[i]);
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

static void publish(struct fx *f, unsigned q, uint16_t head)
{
    le_put16(f->ram + AVAIL(q) + 4 + 2 * (f->avail_idx[q] % QSIZE), head);
    f->avail_idx[q]++;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    le_put16(f->ram + AVAIL(q) + 2, f->avail_idx[q]);
    virtio_kick(f->vdev, q);
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
    return __atomic_load_n((uint16_t *)(f->ram + USED(q) + 2), __ATOMIC_ACQUIRE);
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

static bool wait_status(struct fx *f, uint8_t bit)
{
    for (int i = 0; i < 3000; i++) {
        if (__atomic_load_n(&f->vdev->status, __ATOMIC_SEQ_CST) & bit)
            return true;
        usleep(1000);
    }
    return false;
}

/* ---- the driver side of the control queue ---- */

/* Send class/cmd + data (len bytes) and return the status the device wrote, or -1 if it did
 * not answer. split: header and data in separate descriptors. */
static int ctrl_ex(struct fx *f, uint8_t cls, uint8_t cmd, const void *data, size_t len, bool split)
{
    unsigned q = f->cq;
    uint16_t k = f->avail_idx[q];
    unsigned d = (k % 5) * 3;
    uint64_t buf = CTRL_BUF + (k % 8) * 0x1000u;
    f->ram[buf] = cls;
    f->ram[buf + 1] = cmd;
    if (len)
        memcpy(f->ram + buf + 2, data, len);
    f->ram[buf + 0x800] = 0xee;
    if (split && len) {
        memcpy(f->ram + buf + 0x400, data, len);
        desc(f, q, d, buf, 2, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
        desc(f, q, d + 1, buf + 0x400, (uint32_t)len, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 2));
        desc(f, q, d + 2, buf + 0x800, 1, VIRTQ_DESC_F_WRITE, 0);
    } else {
        desc(f, q, d, buf, (uint32_t)(2 + len), VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
        desc(f, q, d + 1, buf + 0x800, 1, VIRTQ_DESC_F_WRITE, 0);
    }
    publish(f, q, (uint16_t)d);
    if (!wait_used(f, q, (uint16_t)(k + 1)))
        return -1;
    const uint8_t *e = f->ram + USED(q) + 4 + 8 * (k % QSIZE);
    assert_int_equal(le_get32(e), d);
    assert_int_equal(le_get32(e + 4), 1); /* one status byte written */
    return f->ram[buf + 0x800];
}

static int ctrl(struct fx *f, uint8_t cls, uint8_t cmd, const void *data, size_t len)
{
    return ctrl_ex(f, cls, cmd, data, len, false);
}

static int rx_mode(struct fx *f, uint8_t cmd, uint8_t on)
{
    return ctrl(f, VIRTIO_NET_CTRL_RX, cmd, &on, 1);
}

/* ---- frames from the backend ---- */

static uint64_t seen(struct fx *f)
{
    struct virtio_net_stats st;
    virtio_net_get_stats(f->net, &st);
    return st.rx_frames + st.rx_filtered + st.rx_dropped;
}

/* The peer on backend queue q sends a frame to dst (VLAN-tagged with vid when vid >= 0): true
 * when it reached the guest's receive queue of pair q, false when the device refused it. */
static bool deliver(struct fx *f, unsigned q, const uint8_t dst[6], int vid)
{
    unsigned rq = 2 * q;
    if (f->avail_idx[rq] == used_idx(f, rq)) { /* keep one receive buffer posted */
        unsigned slot = f->avail_idx[rq] % QSIZE;
        desc(f, rq, slot, DATA + (rq * QSIZE + slot) * 0x1000u, 2048, VIRTQ_DESC_F_WRITE, 0);
        publish(f, rq, (uint16_t)slot);
    }
    uint8_t fr[12 + 64] = {0};
    uint8_t *e = fr + (f->vnet ? 12 : 0);
    memcpy(e, dst, 6);
    memcpy(e + 6, other_mac, 6);
    if (vid >= 0) {
        e[12] = 0x81;
        e[13] = 0x00;
        e[14] = (uint8_t)(vid >> 8);
        e[15] = (uint8_t)vid;
        e[16] = 0x08;
    } else {
        e[12] = 0x08;
    }
    uint16_t before_used = used_idx(f, rq);
    uint64_t before = seen(f);
    size_t len = (f->vnet ? 12 : 0) + 64;
    assert_int_equal(write(f->peer[q], fr, len), (ssize_t)len);
    for (int i = 0; i < 3000 && seen(f) == before; i++)
        usleep(1000);
    assert_int_equal(seen(f), before + 1);
    return used_idx(f, rq) != before_used;
}

/* ---- tests ---- */

static void test_features_and_queues(void **state)
{
    struct fx *f = fx_new(false, CTRL, 1, false);
    struct virtio_device *v = f->vdev;
    uint64_t want = VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_RX) |
                    VIRTIO_BIT(VIRTIO_NET_F_CTRL_VLAN) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_RX_EXTRA) |
                    VIRTIO_BIT(VIRTIO_NET_F_CTRL_MAC_ADDR);
    assert_int_equal(v->device_features & want, want);
    assert_false(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_MQ));
    assert_false(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_GUEST_ANNOUNCE));
    /* Without a vnet header nothing to switch: no CTRL_GUEST_OFFLOADS. */
    assert_false(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS));
    assert_int_equal(v->nqueues, 3);
    assert_int_equal(virtio_read_config(v, 8, 2), 1);
    /* Control features without the control queue are refused. */
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    assert_false(virtio_driver_features(v, VIRTIO_BIT(VIRTIO_F_VERSION_1) |
                                               VIRTIO_BIT(VIRTIO_NET_F_CTRL_RX)));
    pthread_mutex_unlock(&v->lock);
    fx_free(f);

    /* mq=on with a 2-queue backend: two pairs and the control queue last. */
    f = fx_new(true, CTRL | VIRTIO_BIT(VIRTIO_NET_F_MQ), 2, true);
    v = f->vdev;
    assert_true(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_MQ));
    assert_true(v->device_features & VIRTIO_BIT(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS));
    assert_int_equal(v->nqueues, 5);
    assert_int_equal(virtio_read_config(v, 8, 2), 2);
    assert_int_equal(f->cq, 4);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    fx_free(f);

    /* mq=on with one queue is allowed (QEMU too): MQ offered, one pair. */
    f = fx_new(false, CTRL, 1, true);
    assert_true(f->vdev->device_features & VIRTIO_BIT(VIRTIO_NET_F_MQ));
    assert_int_equal(f->vdev->nqueues, 3);
    assert_int_equal(virtio_read_config(f->vdev, 8, 2), 1);
    fx_free(f);

    /* mq=off with a 2-queue backend: one pair, only the backend's first queue. */
    f = fx_new(false, CTRL, 2, false);
    assert_int_equal(f->vdev->nqueues, 3);
    assert_true(deliver(f, 0, our_mac, -1));
    fx_free(f);
}

static void test_rx_modes(void **state)
{
    struct fx *f = fx_new(false, CTRL, 1, false);
    /* After reset the device is promiscuous, as QEMU's. */
    assert_true(deliver(f, 0, other_mac, -1));
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    assert_false(deliver(f, 0, other_mac, -1));
    assert_true(deliver(f, 0, our_mac, -1));
    assert_true(deliver(f, 0, bcast, -1));
    assert_false(deliver(f, 0, mcast, -1));
    struct virtio_net_stats st;
    virtio_net_get_stats(f->net, &st);
    assert_int_equal(st.rx_filtered, 2);

    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_ALLMULTI, 1), VIRTIO_NET_OK);
    assert_true(deliver(f, 0, mcast, -1));
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_NOMULTI, 1), VIRTIO_NET_OK);
    assert_false(deliver(f, 0, mcast, -1));
    assert_true(deliver(f, 0, bcast, -1)); /* broadcast is not multicast here */
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_NOBCAST, 1), VIRTIO_NET_OK);
    assert_false(deliver(f, 0, bcast, -1));
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_ALLUNI, 1), VIRTIO_NET_OK);
    assert_true(deliver(f, 0, other_mac, -1));
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_NOUNI, 1), VIRTIO_NET_OK);
    assert_false(deliver(f, 0, our_mac, -1));
    /* Promiscuous overrides everything. */
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 1), VIRTIO_NET_OK);
    assert_true(deliver(f, 0, our_mac, -1));
    assert_true(deliver(f, 0, bcast, -1));

    /* Bad RX commands: unknown mode, no data byte. */
    assert_int_equal(rx_mode(f, 6, 1), VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, NULL, 0),
                     VIRTIO_NET_ERR);

    /* A reset brings the promiscuous default back. */
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_NOUNI, 0), VIRTIO_NET_OK);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_ALLUNI, 0), VIRTIO_NET_OK);
    assert_false(deliver(f, 0, other_mac, -1));
    negotiate(f, CTRL);
    assert_true(deliver(f, 0, other_mac, -1));
    fx_free(f);

    /* Without CTRL_RX_EXTRA only PROMISC and ALLMULTI exist; without CTRL_RX no RX class. */
    f = fx_new(false, VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_RX), 1,
               false);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_ALLMULTI, 1), VIRTIO_NET_OK);
    for (uint8_t c = VIRTIO_NET_CTRL_RX_ALLUNI; c <= VIRTIO_NET_CTRL_RX_NOBCAST; c++)
        assert_int_equal(rx_mode(f, c, 1), VIRTIO_NET_ERR);
    negotiate(f, VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ));
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_ERR);
    assert_true(deliver(f, 0, other_mac, -1)); /* still promiscuous */
    fx_free(f);
}

/* TABLE_SET data: le32 count, MACs, le32 count, MACs. */
static size_t mac_table(uint8_t *buf, const uint8_t (*uni)[6], uint32_t nuni,
                        const uint8_t (*multi)[6], uint32_t nmulti)
{
    size_t o = 0;
    le_put32(buf + o, nuni);
    o += 4;
    for (uint32_t i = 0; i < nuni; i++, o += 6)
        memcpy(buf + o, uni[i], 6);
    le_put32(buf + o, nmulti);
    o += 4;
    for (uint32_t i = 0; i < nmulti; i++, o += 6)
        memcpy(buf + o, multi[i], 6);
    return o;
}

static void test_mac_table(void **state)
{
    struct fx *f = fx_new(false, CTRL, 1, false);
    uint8_t b[1024];
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    const uint8_t uni[1][6] = {{0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}};
    const uint8_t multi[1][6] = {{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}};
    size_t n = mac_table(b, uni, 1, multi, 1);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, b, n),
                     VIRTIO_NET_OK);
    assert_true(deliver(f, 0, other_mac, -1));
    assert_true(deliver(f, 0, mcast, -1));
    assert_false(deliver(f, 0, mcast2, -1));
    /* A unicast entry does not let the same address through as multicast, nor the reverse. */
    uint8_t odd[6];
    memcpy(odd, mcast, 6);
    odd[5] = 2;
    assert_false(deliver(f, 0, odd, -1));

    /* Malformed tables are refused and leave the table as it was. */
    uint8_t bad[1024];
    memcpy(bad, b, n);
    le_put32(bad, 3); /* more unicast entries than the data holds */
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, bad, n),
                     VIRTIO_NET_ERR);
    le_put32(bad, 0xffffffffu); /* count * 6 wraps in 32 bits */
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, bad, n),
                     VIRTIO_NET_ERR);
    le_put32(bad, 0x2aaaaaabu); /* 0x2aaaaaab * 6 == 2 (mod 2^32) */
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, bad, n),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, b, n - 1),
                     VIRTIO_NET_ERR); /* the multicast part must fill the rest exactly */
    uint8_t extra[1024];
    memcpy(extra, b, n);
    extra[n] = 0;
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, extra, n + 1),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, b, 4 + 6 + 2),
                     VIRTIO_NET_ERR); /* cut inside the second count */
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, b, 3),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, NULL, 0),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, 7, b, n), VIRTIO_NET_ERR);
    assert_true(deliver(f, 0, other_mac, -1)); /* unchanged */
    assert_true(deliver(f, 0, mcast, -1));

    /* Split over descriptors it reads the same. */
    n = mac_table(b, NULL, 0, multi, 1);
    assert_int_equal(ctrl_ex(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, b, n, true),
                     VIRTIO_NET_OK);
    assert_false(deliver(f, 0, other_mac, -1));
    assert_true(deliver(f, 0, mcast, -1));

    /* More entries than the table holds: all of that kind pass (QEMU's overflow). */
    static uint8_t many[65][6];
    for (int i = 0; i < 65; i++) {
        memcpy(many[i], other_mac, 6);
        many[i][5] = (uint8_t)(0x10 + i);
    }
    n = mac_table(b, (const uint8_t(*)[6])many, 65, NULL, 0);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, b, n),
                     VIRTIO_NET_OK);
    assert_true(deliver(f, 0, other_mac, -1));
    assert_false(deliver(f, 0, mcast, -1));
    /* 64 unicast fill the table: one multicast more overflows the multicast side. */
    n = mac_table(b, (const uint8_t(*)[6])many, 64, multi, 1);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, b, n),
                     VIRTIO_NET_OK);
    assert_false(deliver(f, 0, other_mac, -1));
    assert_true(deliver(f, 0, many[63], -1));
    assert_true(deliver(f, 0, mcast2, -1));
    fx_free(f);
}

static void test_mac_addr(void **state)
{
    struct fx *f = fx_new(false, CTRL, 1, false);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    assert_false(deliver(f, 0, other_mac, -1));
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, other_mac, 6),
                     VIRTIO_NET_OK);
    assert_true(deliver(f, 0, other_mac, -1));
    assert_false(deliver(f, 0, our_mac, -1));
    /* The config space shows the new address. */
    assert_int_equal(virtio_read_config(f->vdev, 0, 4), le_get32(other_mac));
    assert_int_equal(virtio_read_config(f->vdev, 4, 2), le_get16(other_mac + 4));
    /* Exactly six bytes. */
    uint8_t seven[7] = {0x52, 0x54, 0, 1, 2, 3, 4};
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, seven, 5),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, seven, 7),
                     VIRTIO_NET_ERR);
    assert_true(deliver(f, 0, other_mac, -1));
    /* A reset restores the address from the command line. */
    negotiate(f, CTRL);
    assert_int_equal(virtio_read_config(f->vdev, 0, 4), le_get32(our_mac));
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    assert_true(deliver(f, 0, our_mac, -1));
    assert_false(deliver(f, 0, other_mac, -1));
    /* Without CTRL_MAC_ADDR negotiated ADDR_SET is refused. */
    negotiate(f, VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_RX));
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, other_mac, 6),
                     VIRTIO_NET_ERR);
    fx_free(f);
}

static void test_vlan(void **state)
{
    uint64_t feat = CTRL | VIRTIO_BIT(VIRTIO_NET_F_CTRL_VLAN);
    struct fx *f = fx_new(false, feat, 1, false);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    assert_true(deliver(f, 0, our_mac, -1));
    assert_false(deliver(f, 0, our_mac, 5)); /* VLAN filtering: no VLAN added yet */
    uint8_t vid[2];
    le_put16(vid, 5);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, vid, 2),
                     VIRTIO_NET_OK);
    assert_true(deliver(f, 0, our_mac, 5));
    assert_false(deliver(f, 0, our_mac, 6));
    assert_false(deliver(f, 0, other_mac, 5)); /* the address filter still applies */
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_DEL, vid, 2),
                     VIRTIO_NET_OK);
    assert_false(deliver(f, 0, our_mac, 5));
    le_put16(vid, 4096);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, vid, 2),
                     VIRTIO_NET_ERR);
    le_put16(vid, 4095);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, vid, 1),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_VLAN, 2, vid, 2), VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, vid, 2),
                     VIRTIO_NET_OK);
    assert_true(deliver(f, 0, our_mac, 4095));
    /* Without CTRL_VLAN every VLAN passes and VLAN commands are refused. */
    negotiate(f, CTRL);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    assert_true(deliver(f, 0, our_mac, 77));
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, vid, 2),
                     VIRTIO_NET_ERR);
    fx_free(f);
}

static void test_bad_commands(void **state)
{
    struct fx *f = fx_new(false, CTRL, 1, false);
    uint8_t z[8] = {0};
    assert_int_equal(ctrl(f, 0x42, 0, z, 1), VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_ANNOUNCE, 0, z, 0), VIRTIO_NET_ERR);
    uint8_t two[2] = {2, 0};
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, two, 2),
                     VIRTIO_NET_ERR); /* no MQ */
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_GUEST_OFFLOADS, 0, z, 8), VIRTIO_NET_ERR);
    /* The header split from the data works as one. */
    uint8_t off = 0;
    assert_int_equal(ctrl_ex(f, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &off, 1, true),
                     VIRTIO_NET_OK);
    assert_false(deliver(f, 0, other_mac, -1));
    struct virtio_net_stats st;
    virtio_net_get_stats(f->net, &st);
    assert_int_equal(st.ctrl_err, 4);
    assert_int_equal(st.ctrl_ok, 1);
    assert_false(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);

    /* No status byte to write: the driver broke the rules. */
    unsigned q = f->cq;
    f->ram[CTRL_BUF] = VIRTIO_NET_CTRL_RX;
    desc(f, q, 0, CTRL_BUF, 3, 0, 0);
    publish(f, q, 0);
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    fx_free(f);

    /* A header of one byte. */
    f = fx_new(false, CTRL, 1, false);
    q = f->cq;
    desc(f, q, 0, CTRL_BUF, 1, VIRTQ_DESC_F_NEXT, 1);
    desc(f, q, 1, CTRL_BUF + 0x800, 1, VIRTQ_DESC_F_WRITE, 0);
    publish(f, q, 0);
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    fx_free(f);

    /* A command buffer outside guest RAM. */
    f = fx_new(false, CTRL, 1, false);
    q = f->cq;
    desc(f, q, 0, RAM_SIZE - 1, 16, VIRTQ_DESC_F_NEXT, 1);
    desc(f, q, 1, CTRL_BUF + 0x800, 1, VIRTQ_DESC_F_WRITE, 0);
    publish(f, q, 0);
    assert_true(wait_status(f, VIRTIO_STATUS_DEVICE_NEEDS_RESET));
    fx_free(f);
}

static void test_mq(void **state)
{
    uint64_t feat = CTRL | VIRTIO_BIT(VIRTIO_NET_F_MQ);
    struct fx *f = fx_new(false, feat, 2, true);
    struct virtio_net_stats st;
    virtio_net_get_stats(f->net, &st);
    assert_int_equal(st.curr_pairs, 1);
    /* Pair 1 is off: a frame on backend queue 1 waits unread. */
    uint8_t fr[64] = {0};
    memcpy(fr, our_mac, 6);
    fr[12] = 0x08;
    fr[20] = 0x77;
    assert_int_equal(write(f->peer[1], fr, sizeof(fr)), (ssize_t)sizeof(fr));
    desc(f, 2, 0, DATA, 2048, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 2, 0);
    usleep(100000);
    assert_int_equal(used_idx(f, 2), 0);

    uint8_t p[2];
    le_put16(p, 0);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, p, 2),
                     VIRTIO_NET_ERR);
    le_put16(p, 3);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, p, 2),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, p, 1),
                     VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MQ, 1, p, 2), VIRTIO_NET_ERR); /* RSS: not offered */
    le_put16(p, 2);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, p, 2),
                     VIRTIO_NET_OK);
    virtio_net_get_stats(f->net, &st);
    assert_int_equal(st.curr_pairs, 2);
    /* Now the waiting frame reaches receiveq 2. */
    assert_true(wait_used(f, 2, 1));
    assert_int_equal(f->ram[DATA + 12 + 20], 0x77);
    assert_int_equal(used_idx(f, 0), 0);
    assert_true(deliver(f, 1, our_mac, -1));
    assert_true(deliver(f, 0, our_mac, -1));

    /* transmitq 3 goes out on backend queue 1. */
    uint64_t a = DATA + 0x30000;
    memset(f->ram + a, 0, 12);
    memset(f->ram + a + 12, 0x5a, 60);
    desc(f, 3, 0, a, 72, 0, 0);
    publish(f, 3, 0);
    struct pollfd pfd = {.fd = f->peer[1], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 3000), 1);
    uint8_t buf[128];
    assert_int_equal(read(f->peer[1], buf, sizeof(buf)), 60);
    assert_int_equal(buf[0], 0x5a);
    assert_true(wait_used(f, 3, 1));

    /* Back to one pair. */
    le_put16(p, 1);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, p, 2),
                     VIRTIO_NET_OK);
    uint16_t u2 = used_idx(f, 2);
    desc(f, 2, 5, DATA + 0x5000, 2048, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 2, 5);
    assert_int_equal(write(f->peer[1], fr, sizeof(fr)), (ssize_t)sizeof(fr));
    usleep(100000);
    assert_int_equal(used_idx(f, 2), u2);
    fx_free(f);

    /* A driver without MQ on an mq device: one pair, the control queue at 2. */
    f = fx_new(false, CTRL, 2, true);
    assert_int_equal(f->cq, 2);
    assert_int_equal(rx_mode(f, VIRTIO_NET_CTRL_RX_PROMISC, 0), VIRTIO_NET_OK);
    assert_false(deliver(f, 0, other_mac, -1));
    fx_free(f);
}

static void test_guest_offloads(void **state)
{
    uint64_t feat =
        CTRL | VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS);
    struct fx *f = fx_new(true, feat, 1, false);
    desc(f, 0, 0, DATA, 2048, VIRTQ_DESC_F_WRITE, 0);
    desc(f, 0, 1, DATA + 0x1000, 2048, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0, 0);
    publish(f, 0, 1);
    uint8_t fr[12 + 64] = {0};
    fr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    memcpy(fr + 12, our_mac, 6);
    assert_int_equal(write(f->peer[0], fr, sizeof(fr)), (ssize_t)sizeof(fr));
    assert_true(wait_used(f, 0, 1));
    uint8_t o[8];
    le_put64(o, VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4)); /* not negotiated */
    assert_int_equal(
        ctrl(f, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, o, 8),
        VIRTIO_NET_ERR);
    le_put64(o, 0);
    assert_int_equal(
        ctrl(f, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, o, 7),
        VIRTIO_NET_ERR);
    assert_int_equal(ctrl(f, VIRTIO_NET_CTRL_GUEST_OFFLOADS, 1, o, 8), VIRTIO_NET_ERR);
    assert_int_equal(
        ctrl(f, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, o, 8),
        VIRTIO_NET_OK);
    /* Checksum offload off: a partial-checksum frame is not given to the guest any more. */
    assert_int_equal(write(f->peer[0], fr, sizeof(fr)), (ssize_t)sizeof(fr));
    fr[0] = 0;
    fr[12 + 20] = 0x99;
    assert_int_equal(write(f->peer[0], fr, sizeof(fr)), (ssize_t)sizeof(fr));
    assert_true(wait_used(f, 0, 2));
    assert_int_equal(f->ram[DATA + 0x1000 + 12 + 20], 0x99);
    le_put64(o, VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM));
    assert_int_equal(
        ctrl(f, VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, o, 8),
        VIRTIO_NET_OK);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_and_queues),
        cmocka_unit_test(test_rx_modes),
        cmocka_unit_test(test_mac_table),
        cmocka_unit_test(test_mac_addr),
        cmocka_unit_test(test_vlan),
        cmocka_unit_test(test_bad_commands),
        cmocka_unit_test(test_mq),
        cmocka_unit_test(test_guest_offloads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
