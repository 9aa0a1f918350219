/*
 * virtio-net (VIRTIO 1.x, 5.1): one receive/transmit queue pair over a netdev backend.
 *
 * The device services both queues on the netdev's I/O thread (see net/net.h): start() registers
 * the kick eventfds there and installs the receive hook, stop() removes them again, both through
 * netdev_run_sync(), so RX and TX never run concurrently and need no locks.
 */
#ifndef KEMU_VIRTIO_NET_H
#define KEMU_VIRTIO_NET_H

#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"
#include "net/net.h"
#include "virtio/device.h"

/* Feature bits (spec 5.1.3). */
#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN  9
#define VIRTIO_NET_F_GUEST_UFO  10
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_HOST_ECN   13
#define VIRTIO_NET_F_HOST_UFO   14
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16
#define VIRTIO_NET_F_CTRL_VQ    17

#define VIRTIO_NET_S_LINK_UP 1

/* struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
 * num_buffers (little-endian). */
#define VIRTIO_NET_HDR_LEN             12
#define VIRTIO_NET_HDR_F_NEEDS_CSUM    1
#define VIRTIO_NET_HDR_F_DATA_VALID    2
#define VIRTIO_NET_HDR_GSO_NONE        0
#define VIRTIO_NET_HDR_GSO_TCPV4       1
#define VIRTIO_NET_HDR_GSO_UDP         3
#define VIRTIO_NET_HDR_GSO_TCPV6       4
#define VIRTIO_NET_HDR_GSO_ECN         0x80
#define VIRTIO_NET_HDR_NUM_BUFFERS_OFF 10

#define VIRTIO_NET_RXQ        0
#define VIRTIO_NET_TXQ        1
#define VIRTIO_NET_QUEUE_SIZE 256
#define VIRTIO_NET_CONFIG_LEN 10 /* mac[6], status, max_virtqueue_pairs */
/* Frames kept while the guest has no receive buffer; more are dropped. */
#define VIRTIO_NET_RX_HELD_MAX 64

struct virtio_net;

/* Claims nd (one device per netdev). Offloads are offered only if nd has a vnet header. */
int virtio_net_create(struct guest_mem *mem, struct netdev *nd, const uint8_t mac[6],
                      struct virtio_net **out, struct error *err);
struct virtio_device *virtio_net_vdev(struct virtio_net *n);
/* Stops the device, releases the netdev (which the caller destroys afterwards). */
void virtio_net_destroy(struct virtio_net *n);

/* Counters, for tests and diagnostics (read them when the device is stopped or idle). */
struct virtio_net_stats {
    uint64_t rx_frames, rx_dropped, tx_frames, tx_dropped;
};
void virtio_net_get_stats(struct virtio_net *n, struct virtio_net_stats *st);

#endif
