/*
 * virtio-net (VIRTIO 1.x, 5.1): receive/transmit queue pairs and a control queue over a netdev
 * backend.
 *
 * Queues: pair i is receiveq 2i and transmitq 2i+1; with mq the device has as many pairs as the
 * netdev has queues (VIRTIO_NET_F_MQ, max_virtqueue_pairs), pair i served by backend queue i,
 * and the controlq comes last (2N); without it one pair and the controlq at 2.
 *
 * The device services every queue on the netdev's I/O thread (see net/net.h): start() registers
 * the kick eventfds there and installs the receive hook, stop() removes them again, both through
 * netdev_run_sync(), so RX, TX and control commands never run concurrently and need no locks.
 *
 * The control queue takes the commands of QEMU 7.2: RX modes (promisc, allmulti, and with
 * CTRL_RX_EXTRA alluni, nomulti, nouni, nobcast), the MAC filter table and the primary address,
 * VLAN filter, VQ_PAIRS_SET and GUEST_OFFLOADS_SET. Received frames pass QEMU's receive filter.
 * After a reset the device is promiscuous (as QEMU) until the driver says otherwise.
 *
 * vhost-net (a tap netdev with vhost=on): from DRIVER_OK to the next reset the kernel services
 * the RX/TX pairs straight from the queues' ioeventfds; kemu relays its call eventfds to the
 * transport's interrupt (so MSI-X masking and the pending bit behave as for the userspace path)
 * and takes the rings' indices back when it stops it. A pair vhost cannot take (a ring outside
 * RAM, an ioctl refused) stays on the userspace path. The control queue is always served here;
 * its receive filter cannot apply to frames vhost delivers (QEMU has the same limit).
 */
#ifndef KEMU_VIRTIO_NET_H
#define KEMU_VIRTIO_NET_H

#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"
#include "net/net.h"
#include "virtio/device.h"

/* Feature bits (spec 5.1.3). */
#define VIRTIO_NET_F_CSUM                0
#define VIRTIO_NET_F_GUEST_CSUM          1
#define VIRTIO_NET_F_CTRL_GUEST_OFFLOADS 2
#define VIRTIO_NET_F_MAC                 5
#define VIRTIO_NET_F_GUEST_TSO4          7
#define VIRTIO_NET_F_GUEST_TSO6          8
#define VIRTIO_NET_F_GUEST_ECN           9
#define VIRTIO_NET_F_GUEST_UFO           10
#define VIRTIO_NET_F_HOST_TSO4           11
#define VIRTIO_NET_F_HOST_TSO6           12
#define VIRTIO_NET_F_HOST_ECN            13
#define VIRTIO_NET_F_HOST_UFO            14
#define VIRTIO_NET_F_MRG_RXBUF           15
#define VIRTIO_NET_F_STATUS              16
#define VIRTIO_NET_F_CTRL_VQ             17
#define VIRTIO_NET_F_CTRL_RX             18
#define VIRTIO_NET_F_CTRL_VLAN           19
#define VIRTIO_NET_F_CTRL_RX_EXTRA       20
#define VIRTIO_NET_F_GUEST_ANNOUNCE      21
#define VIRTIO_NET_F_MQ                  22
#define VIRTIO_NET_F_CTRL_MAC_ADDR       23

/* Control queue (spec 5.1.6.5): class, command, data..., then one status byte written back. */
#define VIRTIO_NET_OK                      0
#define VIRTIO_NET_ERR                     1
#define VIRTIO_NET_CTRL_RX                 0
#define VIRTIO_NET_CTRL_RX_PROMISC         0
#define VIRTIO_NET_CTRL_RX_ALLMULTI        1
#define VIRTIO_NET_CTRL_RX_ALLUNI          2
#define VIRTIO_NET_CTRL_RX_NOMULTI         3
#define VIRTIO_NET_CTRL_RX_NOUNI           4
#define VIRTIO_NET_CTRL_RX_NOBCAST         5
#define VIRTIO_NET_CTRL_MAC                1
#define VIRTIO_NET_CTRL_MAC_TABLE_SET      0
#define VIRTIO_NET_CTRL_MAC_ADDR_SET       1
#define VIRTIO_NET_CTRL_VLAN               2
#define VIRTIO_NET_CTRL_VLAN_ADD           0
#define VIRTIO_NET_CTRL_VLAN_DEL           1
#define VIRTIO_NET_CTRL_ANNOUNCE           3
#define VIRTIO_NET_CTRL_MQ                 4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET    0
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN    1
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX    0x8000
#define VIRTIO_NET_CTRL_GUEST_OFFLOADS     5
#define VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET 0

/* QEMU's sizes: MAC filter entries (more switch to "all unicast/multicast"), VLAN ids, and the
 * control queue. */
#define VIRTIO_NET_MAC_TABLE_ENTRIES 64
#define VIRTIO_NET_MAX_VLAN          4096
#define VIRTIO_NET_CTRL_QUEUE_SIZE   64
#define VIRTIO_NET_MAX_PAIRS         NETDEV_MAX_QUEUES

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

#define VIRTIO_NET_RXQ        0 /* of pair 0 */
#define VIRTIO_NET_TXQ        1
#define VIRTIO_NET_QUEUE_SIZE 256
#define VIRTIO_NET_CONFIG_LEN 10 /* mac[6], status, max_virtqueue_pairs */
/* Frames kept while the guest has no receive buffer; more are dropped. */
#define VIRTIO_NET_RX_HELD_MAX 64

struct virtio_net;

/* Claims nd (one device per netdev). Offloads are offered only if nd has a vnet header. mq
 * (QEMU's mq=on) offers VIRTIO_NET_F_MQ with one queue pair per netdev queue; without it the
 * device has one pair (and uses the netdev's first queue only). */
int virtio_net_create(struct guest_mem *mem, struct netdev *nd, const uint8_t mac[6], bool mq,
                      struct virtio_net **out, struct error *err);
struct virtio_device *virtio_net_vdev(struct virtio_net *n);
/* QEMU's set_link: with the link down the status field lacks VIRTIO_NET_S_LINK_UP (the driver
 * gets a configuration interrupt when it changes), frames are dropped both ways and vhost-net is
 * stopped until the link is up again. Lasts across resets; from any thread but the netdev's. */
void virtio_net_set_link(struct virtio_net *n, bool up);
bool virtio_net_link_up(struct virtio_net *n);
/* Stops the device, releases the netdev (which the caller destroys afterwards). */
void virtio_net_destroy(struct virtio_net *n);

/* Counters, for tests and diagnostics (read them when the device is stopped or idle). */
struct virtio_net_stats {
    uint64_t rx_frames, rx_dropped, tx_frames, tx_dropped;
    uint64_t rx_filtered;       /* refused by the receive filter */
    uint64_t ctrl_ok, ctrl_err; /* control commands answered VIRTIO_NET_OK / _ERR */
    uint64_t vhost_starts;      /* queue pairs handed to vhost-net (once per driver start) */
    uint64_t vhost_calls;       /* interrupts vhost-net asked for through kemu's relay */
    uint64_t vhost_call_binds;  /* vhost's call fd switched to an irqfd or back to the relay */
    /* kemu's own datapath: the driver's notifications (each a VM exit) and the interrupts sent. */
    uint64_t rx_kicks, tx_kicks, rx_irqs, tx_irqs;
    unsigned curr_pairs; /* queue pairs in use (VQ_PAIRS_SET) */
};
void virtio_net_get_stats(struct virtio_net *n, struct virtio_net_stats *st);

#endif
