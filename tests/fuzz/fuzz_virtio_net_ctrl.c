/*
 * A hostile driver against virtio-net's control queue and receive filter, on a multiqueue device
 * (mq=on over a 2-queue backend). The input is
 *   byte 0      features: bit 0 CTRL_RX, 1 CTRL_RX_EXTRA, 2 CTRL_VLAN, 3 CTRL_MAC_ADDR, 4 MQ,
 *               5 a backend with vnet headers (GUEST_CSUM and CTRL_GUEST_OFFLOADS negotiated),
 *               6 EVENT_IDX, 7 INDIRECT_DESC (CTRL_VQ always)
 *   byte 1      control queue size 1 << (b & 7), RX queue sizes 1 << ((b >> 4) & 3)
 *   byte 2      n, the number of operation bytes that follow
 *   n bytes     operations (low 3 bits the operation, high 5 bits its argument)
 *   the rest    laid over guest memory from address 0: the control queue's rings at 0 / 0x1000 /
 *               0x2000, receive queue 0 at 0x3000 / 0x4000 / 0x5000, receive queue 2 at 0x6000
 *               / 0x7000 / 0x8000; commands and buffers anywhere in the 64 KiB guest
 * The netdev runs without its own thread: every operation is followed by poll rounds on this
 * thread, so a run is deterministic. Nothing may crash, hang or touch memory outside the guest.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/bytes.h"
#include "virtio/net.h"
#include "../virtio_driver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE 0x10000u
#define HDR      3

static uint8_t ram[RAM_SIZE] __attribute__((aligned(4096)));
static struct guest_mem mem;

struct rig {
    int peer[2];
    struct netdev *nd;
    struct virtio_net *net;
};
static struct rig rigs[2]; /* [0] plain frames, [1] vnet headers */

static void rig_init(struct rig *r, bool vnet)
{
    int fds[2];
    struct error err = {0};
    for (int i = 0; i < 2; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv) < 0)
            abort();
        fds[i] = sv[0];
        r->peer[i] = sv[1];
    }
    if (netdev_create_fds("fuzz", fds, 2, vnet, false, &r->nd, &err) < 0)
        abort();
    static const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
    if (virtio_net_create(&mem, r->nd, mac, true, &r->net, &err) < 0)
        abort();
}

static void drain_peers(struct rig *r)
{
    static uint8_t buf[NETDEV_MAX_FRAME];
    for (int i = 0; i < 2; i++)
        while (read(r->peer[i], buf, sizeof(buf)) > 0)
            ;
}

/* Destination addresses the filter tells apart. */
static const uint8_t dsts[6][6] = {
    {0x52, 0x54, 0, 1, 2, 3}, /* ours */
    {0x52, 0x54, 0, 9, 9, 9}, /* someone else's */
    {0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
    {0x01, 0x00, 0x5e, 0, 0, 1},
    {0x33, 0x33, 0, 0, 0, 1},
    {0x52, 0x54, 0, 0xaa, 0xbb, 0xcc}, /* what a fuzzed MAC table or ADDR_SET may hold */
};

static const unsigned bit_of[6] = {VIRTIO_NET_F_CTRL_RX,   VIRTIO_NET_F_CTRL_RX_EXTRA,
                                   VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_MAC_ADDR,
                                   VIRTIO_NET_F_MQ,        VIRTIO_NET_F_CTRL_GUEST_OFFLOADS};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rigs[0].nd) {
        guest_mem_init_buffer(&mem, ram, RAM_SIZE);
        rig_init(&rigs[0], false);
        rig_init(&rigs[1], true);
    }
    if (size < HDR)
        return 0;
    bool vnet = (data[0] >> 5) & 1;
    struct rig *r = &rigs[vnet];
    struct virtio_device *v = virtio_net_vdev(r->net);
    uint64_t feat = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_NET_F_MAC) |
                    VIRTIO_BIT(VIRTIO_NET_F_CTRL_VQ);
    for (unsigned i = 0; i < 6; i++)
        if ((data[0] >> i) & 1)
            feat |= VIRTIO_BIT(bit_of[i]);
    if (vnet)
        feat |= VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM);
    if (data[0] & 0x40)
        feat |= VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
    if (data[0] & 0x80)
        feat |= VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC);
    feat &= v->device_features;
    bool mq = (feat >> VIRTIO_NET_F_MQ) & 1;
    unsigned cq = mq ? 4 : 2;
    unsigned csize = 1u << (data[1] & 7), rsize = 1u << ((data[1] >> 4) & 3);
    size_t nops = data[2];
    const uint8_t *ops = data + HDR;
    if (nops > size - HDR)
        nops = size - HDR;
    const uint8_t *image = ops + nops;
    size_t image_len = size - HDR - nops;
    memset(ram, 0, sizeof(ram));
    memcpy(ram, image, image_len < RAM_SIZE ? image_len : RAM_SIZE);

    struct error err = {0};
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    bool ok = virtio_driver_features(v, feat);
    /* The control queue and the receive queues of both pairs (the second only used with MQ). */
    const unsigned qs[3] = {cq, 0, 2};
    const uint64_t base[3] = {0, 0x3000, 0x6000};
    for (unsigned i = 0; i < (mq ? 3u : 2u) && ok; i++)
        ok = vq_set_size(&v->vq[qs[i]], i ? rsize : csize, &err) == 0 &&
             vq_set_addresses(&v->vq[qs[i]], base[i], base[i] + 0x1000, base[i] + 0x2000, &err) ==
                 0 &&
             vq_enable(&v->vq[qs[i]], &err) == 0;
    if (ok)
        virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    pthread_mutex_unlock(&v->lock);

    static uint8_t frame[2048];
    size_t img_off = 0;
    for (size_t i = 0; i < nops && ok; i++) {
        unsigned op = ops[i] & 7, arg = ops[i] >> 3;
        switch (op) {
        case 0: /* the driver notifies the control queue */
            virtio_kick(v, cq);
            break;
        case 1: /* the driver publishes arg entries more on the control queue */
            le_put16(ram + 0x1002, (uint16_t)(le_get16(ram + 0x1002) + arg));
            break;
        case 2: { /* a peer sends a frame: bits 0-1 its size, 2 VLAN-tagged, 3 which queue,
                   * 4 to one of the interesting addresses (else what the image says) */
            size_t hl = vnet ? 12 : 0, len = (size_t)(arg & 3) * 20 + 14 + hl;
            for (size_t k = 0; k < len; k++)
                frame[k] = image_len ? image[(img_off + k) % image_len] : (uint8_t)k;
            img_off += len;
            uint8_t *e = frame + hl;
            if (arg & 16)
                memcpy(e, dsts[e[6] % 6], 6);
            if (arg & 4) {
                e[12] = 0x81;
                e[13] = 0;
            }
            if (vnet)
                frame[0] &= VIRTIO_NET_HDR_F_NEEDS_CSUM; /* mostly headers the guest takes */
            ssize_t w = write(r->peer[(arg >> 3) & 1], frame, len);
            (void)w;
            break;
        }
        case 3: /* the driver publishes arg entries more on a receive queue and notifies */
            le_put16(ram + 0x4002 + 0x3000u * (arg & 1),
                     (uint16_t)(le_get16(ram + 0x4002 + 0x3000u * (arg & 1)) + (arg >> 1)));
            virtio_kick(v, (arg & 1) ? 2 : 0);
            break;
        case 4: /* the driver changes a command, ring entry or descriptor byte */
            ram[(arg * 0x811u) % RAM_SIZE] ^= (uint8_t)(arg | 1);
            break;
        case 5:
            drain_peers(r);
            break;
        case 6: { /* the driver reads the config space (the MAC may have changed) */
            pthread_mutex_lock(&v->lock);
            uint32_t c = virtio_read_config(v, arg % 10, 2);
            pthread_mutex_unlock(&v->lock);
            (void)c;
            break;
        }
        case 7: /* reset and start again */
            pthread_mutex_lock(&v->lock);
            virtio_set_status(v, 0);
            pthread_mutex_unlock(&v->lock);
            ok = false;
            break;
        }
        netdev_poll(r->nd, 0);
        netdev_poll(r->nd, 0);
    }
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    pthread_mutex_unlock(&v->lock);
    /* Frames left on the second queue would leak into the next run: read and drop them (no
     * frontend now). */
    netdev_set_active_queues(r->nd, 2, &err);
    for (int k = 0; k < 8; k++)
        netdev_poll(r->nd, 0);
    drain_peers(r);
    return 0;
}
