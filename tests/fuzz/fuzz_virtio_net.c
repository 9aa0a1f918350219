/*
 * A hostile driver and a hostile peer against virtio-net. The input is
 *   byte 0      features: bit 0 MRG_RXBUF, bit 1 EVENT_IDX, bit 2 INDIRECT_DESC, bit 3 a backend
 *               with vnet headers (with every offload negotiated)
 *   byte 1      queue sizes: RX 1 << (b & 7), TX 1 << ((b >> 4) & 7) (1..128)
 *   byte 2      n, the number of operation bytes that follow
 *   n bytes     operations (low 3 bits the operation, high 5 bits its argument; 5 with an odd
 *               argument flips the link, as set_link)
 *   the rest    laid over guest memory from address 0: RX rings at 0 / 0x1000 / 0x2000, TX rings
 *               at 0x3000 / 0x4000 / 0x5000, buffers anywhere, in a 64 KiB guest
 * The netdev runs without its own thread: every operation is followed by one poll round on
 * this thread, so a run is deterministic. Nothing may crash, hang or touch memory outside the
 * guest buffer.
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
    int peer;
    struct netdev *nd;
    struct virtio_net *net;
};
static struct rig rigs[2]; /* [0] plain frames, [1] vnet headers */

static void rig_init(struct rig *r, bool vnet)
{
    int sv[2];
    struct error err = {0};
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv) < 0 ||
        netdev_create_fd("fuzz", sv[0], vnet, false, &r->nd, &err) < 0)
        abort();
    r->peer = sv[1];
    static const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
    if (virtio_net_create(&mem, r->nd, mac, false, &r->net, &err) < 0)
        abort();
}

static void drain_peer(struct rig *r)
{
    static uint8_t buf[NETDEV_MAX_FRAME];
    while (read(r->peer, buf, sizeof(buf)) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rigs[0].nd) {
        guest_mem_init_buffer(&mem, ram, RAM_SIZE);
        rig_init(&rigs[0], false);
        rig_init(&rigs[1], true);
    }
    if (size < HDR)
        return 0;
    struct rig *r = &rigs[(data[0] >> 3) & 1];
    struct virtio_device *v = virtio_net_vdev(r->net);
    uint64_t feat = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_NET_F_MAC);
    if (data[0] & 1)
        feat |= VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
    if (data[0] & 2)
        feat |= VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
    if (data[0] & 4)
        feat |= VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC);
    if (data[0] & 8)
        feat |= v->device_features; /* every offload the backend offers */
    unsigned qsize[2] = {1u << (data[1] & 7), 1u << ((data[1] >> 4) & 7)};
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
    virtio_driver_features(v, feat); /* a refusal shows as queues that do not start */
    bool ok = true;
    for (unsigned q = 0; q < 2 && ok; q++)
        ok = vq_set_size(&v->vq[q], qsize[q], &err) == 0 &&
             vq_set_addresses(&v->vq[q], 0x3000u * q, 0x3000u * q + 0x1000, 0x3000u * q + 0x2000,
                              &err) == 0 &&
             vq_enable(&v->vq[q], &err) == 0;
    if (ok)
        virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    pthread_mutex_unlock(&v->lock);

    static uint8_t frame[NETDEV_MAX_FRAME];
    size_t img_off = 0;
    for (size_t i = 0; i < nops && ok; i++) {
        unsigned op = ops[i] & 7, arg = ops[i] >> 3;
        switch (op) {
        case 0: /* the driver notifies TX */
            virtio_kick(v, VIRTIO_NET_TXQ);
            break;
        case 1: /* the driver notifies RX */
            virtio_kick(v, VIRTIO_NET_RXQ);
            break;
        case 2:   /* the peer sends a frame: its bytes come from the image, size from arg */
        case 3: { /* ...or a big one */
            size_t len = op == 2 ? (size_t)arg * 13 + 1 : (size_t)arg * 2100 + 1;
            for (size_t k = 0; k < len; k++)
                frame[k] = image_len ? image[(img_off + k) % image_len] : (uint8_t)k;
            img_off += len;
            ssize_t w = write(r->peer, frame, len);
            (void)w;
            break;
        }
        case 4: /* the driver publishes arg more entries on a queue */
            le_put16(ram + 0x3000u * (arg & 1) + 0x1002,
                     (uint16_t)(le_get16(ram + 0x3000u * (arg & 1) + 0x1002) + (arg >> 1)));
            break;
        case 5: /* the host drains the peer, or (odd arg) flips the link (set_link) */
            if (arg & 1)
                virtio_net_set_link(r->net, !virtio_net_link_up(r->net));
            else
                drain_peer(r);
            break;
        case 6: /* the driver changes a ring entry or descriptor byte */
            ram[(arg * 0x811u) % RAM_SIZE] ^= (uint8_t)(arg | 1);
            break;
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
    virtio_net_set_link(r->net, true); /* the next input starts with the cable in */
    netdev_poll(r->nd, 0);
    drain_peer(r);
    return 0;
}
