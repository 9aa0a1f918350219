/*
 * virtio-net: one RX/TX queue pair serviced on the netdev's I/O thread.
 *
 * RX: a frame from the backend is written into the guest's receive buffers (12-byte header,
 * then the frame; with MRG_RXBUF spread over as many buffers as needed, num_buffers in the first
 * header). Without enough buffers the chains taken so far are given back (rewound) and the frame
 * waits in a bounded queue until the next RX kick; the backend is paused meanwhile.
 * TX: the chain's header is copied and checked, the rest goes to the backend as an iovec that
 * points into guest memory (no copy for tap).
 */
#include "virtio/net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"

#define TX_BUDGET 256 /* chains per TX kick before other events get their turn */
/* A transmitted frame without header: at least an Ethernet header, at most a 64 KiB GSO frame. */
#define TX_MIN_FRAME 14
#define TX_MAX_FRAME (65535 + 14 + 4)

struct held_frame {
    uint8_t *data;
    size_t len;
};

struct virtio_net {
    struct virtio_device vdev;
    struct netdev *nd;
    uint8_t mac[6];
    unsigned be_hdr; /* the backend's vnet header length: 0 or 12 */

    /* State of the netdev thread (set up and torn down through netdev_run_sync). */
    bool running;
    bool broken; /* DEVICE_NEEDS_RESET was set: leave the queues alone until reset */
    bool mrg;
    bool rx_pushed; /* used RX buffers not yet notified */
    int start_err;
    struct vq_chain rx_first, rx_cur, tx;
    uint16_t rx_heads[VIRTIO_NET_QUEUE_SIZE];
    uint32_t rx_lens[VIRTIO_NET_QUEUE_SIZE];
    uint8_t tx_hdr[VIRTIO_NET_HDR_LEN];
    struct iovec tx_iov[VQ_CHAIN_MAX_SEGS + 1];
    struct held_frame held[VIRTIO_NET_RX_HELD_MAX];
    unsigned held_head, held_count;
    struct virtio_net_stats stats;
};

static void net_broken(struct virtio_net *n, const char *msg)
{
    n->broken = true;
    virtio_set_needs_reset(&n->vdev, msg);
}

/* ---- receive ---- */

/* Check a header from the backend against what the guest negotiated. */
static bool rx_hdr_ok(struct virtio_net *n, const uint8_t *hdr)
{
    struct virtio_device *v = &n->vdev;
    if ((hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !virtio_has_feature(v, VIRTIO_NET_F_GUEST_CSUM))
        return false;
    uint8_t gso = hdr[1] & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
    if (gso == VIRTIO_NET_HDR_GSO_TCPV4 && !virtio_has_feature(v, VIRTIO_NET_F_GUEST_TSO4))
        return false;
    if (gso == VIRTIO_NET_HDR_GSO_TCPV6 && !virtio_has_feature(v, VIRTIO_NET_F_GUEST_TSO6))
        return false;
    if (gso != VIRTIO_NET_HDR_GSO_NONE && gso != VIRTIO_NET_HDR_GSO_TCPV4 &&
        gso != VIRTIO_NET_HDR_GSO_TCPV6)
        return false;
    if ((hdr[1] & VIRTIO_NET_HDR_GSO_ECN) && !virtio_has_feature(v, VIRTIO_NET_F_GUEST_ECN))
        return false;
    return true;
}

/* 1 delivered, 0 no buffer available (nothing consumed), -1 dropped or device broken. */
static int rx_try(struct virtio_net *n, const uint8_t *frame, size_t len)
{
    struct virtqueue *vq = &n->vdev.vq[VIRTIO_NET_RXQ];
    uint8_t hdr[VIRTIO_NET_HDR_LEN] = {0};
    const uint8_t *payload = frame;
    size_t plen = len;
    if (n->be_hdr) {
        if (len < n->be_hdr)
            goto drop;
        memcpy(hdr, frame, VIRTIO_NET_HDR_LEN);
        if (!rx_hdr_ok(n, hdr))
            goto drop;
        if (!virtio_has_feature(&n->vdev, VIRTIO_NET_F_GUEST_CSUM))
            hdr[0] = 0; /* DATA_VALID needs GUEST_CSUM too */
        payload += n->be_hdr;
        plen -= n->be_hdr;
    }
    unsigned k = 0;
    size_t done = 0;
    while (k == 0 || done < plen) {
        if (k == vq->size || (!n->mrg && k == 1)) {
            vq_unpop(vq, k); /* the frame can never fit these buffers */
            goto drop;
        }
        struct vq_chain *c = k == 0 ? &n->rx_first : &n->rx_cur;
        struct error e = {0};
        int r = vq_pop(vq, c, &e);
        if (r < 0) {
            net_broken(n, e.msg);
            return -1;
        }
        if (r == 0) {
            vq_unpop(vq, k);
            return 0;
        }
        if (c->nr_readable || c->writable_len < VIRTIO_NET_HDR_LEN) {
            net_broken(n, "receive buffer is device-readable or smaller than the header");
            return -1;
        }
        uint32_t off = k == 0 ? VIRTIO_NET_HDR_LEN : 0;
        size_t chunk = plen - done;
        if (chunk > c->writable_len - off)
            chunk = c->writable_len - off;
        if (chunk && vq_chain_write(vq, c, off, payload + done, chunk) < 0) {
            net_broken(n, "receive buffer is not inside guest RAM");
            return -1;
        }
        n->rx_heads[k] = c->head;
        n->rx_lens[k] = off + (uint32_t)chunk;
        k++;
        done += chunk;
    }
    le_put16(hdr + VIRTIO_NET_HDR_NUM_BUFFERS_OFF, (uint16_t)k);
    if (vq_chain_write(vq, &n->rx_first, 0, hdr, sizeof(hdr)) < 0) {
        net_broken(n, "receive buffer is not inside guest RAM");
        return -1;
    }
    for (unsigned i = 0; i < k; i++)
        vq_push(vq, n->rx_heads[i], n->rx_lens[i]);
    n->rx_pushed = true;
    n->stats.rx_frames++;
    return 1;
drop:
    n->stats.rx_dropped++;
    return -1;
}

static void held_pop_front(struct virtio_net *n)
{
    free(n->held[n->held_head].data);
    n->held[n->held_head].data = NULL;
    n->held_head = (n->held_head + 1) % VIRTIO_NET_RX_HELD_MAX;
    n->held_count--;
}

static void held_drop_all(struct virtio_net *n)
{
    while (n->held_count)
        held_pop_front(n);
    n->held_head = 0;
}

static void held_push(struct virtio_net *n, const uint8_t *frame, size_t len)
{
    uint8_t *copy = n->held_count < VIRTIO_NET_RX_HELD_MAX ? malloc(len) : NULL;
    if (!copy) {
        n->stats.rx_dropped++;
        return;
    }
    memcpy(copy, frame, len);
    unsigned slot = (n->held_head + n->held_count) % VIRTIO_NET_RX_HELD_MAX;
    n->held[slot] = (struct held_frame){copy, len};
    n->held_count++;
}

static void rx_notify(struct virtio_net *n)
{
    if (n->rx_pushed) {
        n->rx_pushed = false;
        virtio_notify_queue(&n->vdev, VIRTIO_NET_RXQ);
    }
}

/* The netdev thread: a frame for the guest. */
static void net_receive(void *opaque, const uint8_t *frame, size_t len)
{
    struct virtio_net *n = opaque;
    if (!n->running || n->broken)
        return;
    if (n->held_count) { /* keep the order: behind the frames already waiting */
        held_push(n, frame, len);
        return;
    }
    int r = rx_try(n, frame, len);
    if (r == 0) {
        held_push(n, frame, len);
        netdev_set_rx_enabled(n->nd, false);
    } else if (r > 0) {
        /* Per frame, not per batch: the guest starts on the first frame while we copy the next;
         * its used_event (NAPI) keeps the interrupts few. */
        rx_notify(n);
    }
}

static void net_flush(void *opaque)
{
    rx_notify(opaque);
}

/* The guest added receive buffers: deliver what waits. */
static void rx_kick(void *opaque)
{
    struct virtio_net *n = opaque;
    virtio_kick_drain(n->vdev.kick_fd[VIRTIO_NET_RXQ]);
    if (n->broken)
        return;
    while (n->held_count) {
        struct held_frame *h = &n->held[n->held_head];
        int r = rx_try(n, h->data, h->len);
        if (r == 0)
            break;
        held_pop_front(n);
        if (n->broken)
            return;
    }
    if (!n->held_count)
        netdev_set_rx_enabled(n->nd, true);
    rx_notify(n);
}

/* ---- transmit ---- */

static bool tx_hdr_ok(struct virtio_net *n, const uint8_t *hdr)
{
    struct virtio_device *v = &n->vdev;
    if ((hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !virtio_has_feature(v, VIRTIO_NET_F_CSUM))
        return false;
    uint8_t gso = hdr[1] & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
    if (gso == VIRTIO_NET_HDR_GSO_NONE)
        return !(hdr[1] & VIRTIO_NET_HDR_GSO_ECN);
    if (gso == VIRTIO_NET_HDR_GSO_TCPV4 && !virtio_has_feature(v, VIRTIO_NET_F_HOST_TSO4))
        return false;
    if (gso == VIRTIO_NET_HDR_GSO_TCPV6 && !virtio_has_feature(v, VIRTIO_NET_F_HOST_TSO6))
        return false;
    if (gso != VIRTIO_NET_HDR_GSO_TCPV4 && gso != VIRTIO_NET_HDR_GSO_TCPV6)
        return false;
    if ((hdr[1] & VIRTIO_NET_HDR_GSO_ECN) && !virtio_has_feature(v, VIRTIO_NET_F_HOST_ECN))
        return false;
    return true;
}

/* One popped chain: 0 handled (sent or dropped), 1 the backend is full (chain not consumed),
 * -1 malformed (device broken). */
static int tx_one(struct virtio_net *n)
{
    struct virtqueue *vq = &n->vdev.vq[VIRTIO_NET_TXQ];
    const struct vq_chain *c = &n->tx;
    if (c->nr_readable != c->nr_segs) {
        net_broken(n, "transmit chain has device-writable buffers");
        return -1;
    }
    if (c->readable_len < VIRTIO_NET_HDR_LEN) {
        net_broken(n, "transmit chain is shorter than the virtio-net header");
        return -1;
    }
    /* One copy of the header: the guest may change its buffer while we look at it. */
    if (vq_chain_read(vq, c, 0, n->tx_hdr, VIRTIO_NET_HDR_LEN) < 0) {
        net_broken(n, "transmit chain is not inside guest RAM");
        return -1;
    }
    uint32_t plen = c->readable_len - VIRTIO_NET_HDR_LEN;
    if (plen < TX_MIN_FRAME || plen > TX_MAX_FRAME || !tx_hdr_ok(n, n->tx_hdr)) {
        n->stats.tx_dropped++;
        return 0;
    }
    int cnt = 0;
    if (n->be_hdr) {
        le_put16(n->tx_hdr + VIRTIO_NET_HDR_NUM_BUFFERS_OFF, 0);
        n->tx_iov[cnt++] = (struct iovec){n->tx_hdr, VIRTIO_NET_HDR_LEN};
    }
    uint32_t skip = VIRTIO_NET_HDR_LEN;
    for (unsigned i = 0; i < c->nr_readable; i++) {
        const struct vq_segment *s = &c->seg[i];
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        uint8_t *p = vq_segment_ptr(vq, s);
        if (!p) {
            net_broken(n, "transmit buffer is not inside guest RAM");
            return -1;
        }
        n->tx_iov[cnt++] = (struct iovec){p + skip, s->len - skip};
        skip = 0;
    }
    int r = netdev_send(n->nd, n->tx_iov, cnt);
    if (r == NETDEV_BUSY)
        return 1;
    if (r < 0)
        n->stats.tx_dropped++;
    else
        n->stats.tx_frames++;
    return 0;
}

static void tx_kick(void *opaque)
{
    struct virtio_net *n = opaque;
    struct virtqueue *vq = &n->vdev.vq[VIRTIO_NET_TXQ];
    virtio_kick_drain(n->vdev.kick_fd[VIRTIO_NET_TXQ]);
    if (n->broken)
        return;
    unsigned i;
    for (i = 0; i < TX_BUDGET; i++) {
        struct error e = {0};
        int r = vq_pop(vq, &n->tx, &e);
        if (r < 0) {
            net_broken(n, e.msg);
            return;
        }
        if (r == 0)
            break;
        r = tx_one(n);
        if (r < 0)
            return;
        if (r == 1) {
            /* Give the chain back; the backend's writable() hook brings us here again. */
            vq_unpop(vq, 1);
            break;
        }
        vq_push(vq, n->tx.head, 0);
        /* Complete each frame as it goes: the guest's TCP (small queues) sends more only when
         * earlier frames are freed, so holding completions until the batch ends stalls it. */
        virtio_notify_queue(&n->vdev, VIRTIO_NET_TXQ);
    }
    if (i == TX_BUDGET)
        virtio_kick(&n->vdev, VIRTIO_NET_TXQ); /* more may wait: come back after other events */
    virtio_notify_queue(&n->vdev, VIRTIO_NET_TXQ);
    /* Sending into slirp may have produced replies: deliver them now rather than next round. */
    rx_notify(n);
}

/* ---- lifecycle ---- */

static const struct netdev_frontend net_frontend = {
    .receive = net_receive,
    .flush = net_flush,
    .writable = tx_kick,
};

static void attach_on_thread(void *opaque)
{
    struct virtio_net *n = opaque;
    struct virtio_device *v = &n->vdev;
    struct error e = {0};
    n->start_err = 0;
    if (n->be_hdr) {
        unsigned off = 0;
        if (virtio_has_feature(v, VIRTIO_NET_F_GUEST_CSUM))
            off |= NETDEV_OFFLOAD_CSUM;
        if (virtio_has_feature(v, VIRTIO_NET_F_GUEST_TSO4))
            off |= NETDEV_OFFLOAD_TSO4;
        if (virtio_has_feature(v, VIRTIO_NET_F_GUEST_TSO6))
            off |= NETDEV_OFFLOAD_TSO6;
        if (virtio_has_feature(v, VIRTIO_NET_F_GUEST_ECN))
            off |= NETDEV_OFFLOAD_ECN;
        if (netdev_set_offloads(n->nd, off, &e) < 0)
            goto fail;
    }
    if (netdev_add_fd(n->nd, v->kick_fd[VIRTIO_NET_RXQ], rx_kick, n, &e) < 0)
        goto fail;
    if (netdev_add_fd(n->nd, v->kick_fd[VIRTIO_NET_TXQ], tx_kick, n, &e) < 0) {
        netdev_remove_fd(n->nd, v->kick_fd[VIRTIO_NET_RXQ]);
        goto fail;
    }
    n->running = true;
    netdev_set_frontend(n->nd, &net_frontend, n);
    netdev_set_rx_enabled(n->nd, true);
    return;
fail:
    fprintf(stderr, "kemu: %s: %s\n", v->name, e.msg);
    n->start_err = -1;
}

static void detach_on_thread(void *opaque)
{
    struct virtio_net *n = opaque;
    netdev_remove_fd(n->nd, n->vdev.kick_fd[VIRTIO_NET_RXQ]);
    netdev_remove_fd(n->nd, n->vdev.kick_fd[VIRTIO_NET_TXQ]);
    netdev_set_frontend(n->nd, NULL, NULL);
    /* Without a driver the backend keeps reading and drops, like an unplugged cable. */
    netdev_set_rx_enabled(n->nd, true);
    held_drop_all(n);
    n->running = false;
    n->rx_pushed = false;
}

static int net_start(struct virtio_device *vdev)
{
    struct virtio_net *n = vdev->opaque;
    n->broken = false;
    n->mrg = virtio_has_feature(vdev, VIRTIO_NET_F_MRG_RXBUF);
    netdev_run_sync(n->nd, attach_on_thread, n);
    return n->start_err;
}

static void net_stop(struct virtio_device *vdev)
{
    struct virtio_net *n = vdev->opaque;
    netdev_run_sync(n->nd, detach_on_thread, n);
}

static void net_reset(struct virtio_device *vdev)
{
    struct virtio_net *n = vdev->opaque;
    n->broken = false;
}

/* The dependencies of spec 5.1.3.1. */
static int net_features_ok(struct virtio_device *vdev, uint64_t f)
{
#define HAS(b) ((f >> (b)) & 1)
    if ((HAS(VIRTIO_NET_F_GUEST_TSO4) || HAS(VIRTIO_NET_F_GUEST_TSO6)) &&
        !HAS(VIRTIO_NET_F_GUEST_CSUM))
        return -1;
    if (HAS(VIRTIO_NET_F_GUEST_ECN) && !HAS(VIRTIO_NET_F_GUEST_TSO4) &&
        !HAS(VIRTIO_NET_F_GUEST_TSO6))
        return -1;
    if ((HAS(VIRTIO_NET_F_HOST_TSO4) || HAS(VIRTIO_NET_F_HOST_TSO6)) && !HAS(VIRTIO_NET_F_CSUM))
        return -1;
    if (HAS(VIRTIO_NET_F_HOST_ECN) && !HAS(VIRTIO_NET_F_HOST_TSO4) && !HAS(VIRTIO_NET_F_HOST_TSO6))
        return -1;
#undef HAS
    return 0;
}

static const struct virtio_device_ops net_ops = {
    .reset = net_reset,
    .start = net_start,
    .stop = net_stop,
    .features_ok = net_features_ok,
};

int virtio_net_create(struct guest_mem *mem, struct netdev *nd, const uint8_t mac[6],
                      struct virtio_net **out, struct error *err)
{
    *out = NULL;
    if (netdev_claim(nd, err) < 0)
        return -1;
    struct virtio_net *n = calloc(1, sizeof(*n));
    if (!n) {
        netdev_release(nd);
        return error_setf(err, "out of memory");
    }
    n->nd = nd;
    memcpy(n->mac, mac, 6);
    n->be_hdr = netdev_vnet_hdr_len(nd);
    uint64_t f = VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS) |
                 VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF);
    if (n->be_hdr) {
        /* The tap takes any offloaded frame from the guest... */
        f |= VIRTIO_BIT(VIRTIO_NET_F_CSUM) | VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO4) |
             VIRTIO_BIT(VIRTIO_NET_F_HOST_TSO6) | VIRTIO_BIT(VIRTIO_NET_F_HOST_ECN);
        /* ...and sends offloaded frames to it only as far as the kernel supports. */
        unsigned caps = netdev_offload_caps(nd);
        if (caps & NETDEV_OFFLOAD_CSUM) {
            f |= VIRTIO_BIT(VIRTIO_NET_F_GUEST_CSUM);
            if (caps & NETDEV_OFFLOAD_TSO4)
                f |= VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO4);
            if (caps & NETDEV_OFFLOAD_TSO6)
                f |= VIRTIO_BIT(VIRTIO_NET_F_GUEST_TSO6);
            if ((caps & NETDEV_OFFLOAD_ECN) && (caps & (NETDEV_OFFLOAD_TSO4 | NETDEV_OFFLOAD_TSO6)))
                f |= VIRTIO_BIT(VIRTIO_NET_F_GUEST_ECN);
        }
    }
    if (virtio_device_init(&n->vdev, "virtio-net", &net_ops, n, mem, VIRTIO_ID_NET, f, 2,
                           VIRTIO_NET_QUEUE_SIZE, VIRTIO_NET_CONFIG_LEN, err) < 0) {
        netdev_release(nd);
        free(n);
        return -1;
    }
    memcpy(n->vdev.config, mac, 6);
    le_put16(n->vdev.config + 6, VIRTIO_NET_S_LINK_UP);
    le_put16(n->vdev.config + 8, 1); /* max_virtqueue_pairs */
    *out = n;
    return 0;
}

struct virtio_device *virtio_net_vdev(struct virtio_net *n)
{
    return &n->vdev;
}

void virtio_net_get_stats(struct virtio_net *n, struct virtio_net_stats *st)
{
    *st = n->stats;
}

void virtio_net_destroy(struct virtio_net *n)
{
    if (!n)
        return;
    virtio_device_destroy(&n->vdev);
    held_drop_all(n);
    netdev_release(n->nd);
    free(n);
}
