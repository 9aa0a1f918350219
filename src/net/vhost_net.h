/*
 * vhost-net: the kernel's datapath for the RX/TX virtqueues of a virtio-net device over a tap
 * (-netdev tap,vhost=on). One /dev/vhost-net descriptor serves one queue pair (its vrings 0 = RX,
 * 1 = TX) and one tap queue. kemu hands the kernel guest RAM (VHOST_SET_MEM_TABLE), the rings'
 * host addresses, the queue's kick eventfd (KVM's ioeventfd signals it) and a call eventfd; the
 * kernel then moves frames between the rings and the tap without kemu.
 *
 * The pure part (feature mapping, memory table, ring addresses) checks every guest-controlled
 * value before any ioctl and is unit-tested; the rest is the ioctl sequence QEMU's vhost_dev_start
 * and vhost_dev_stop use.
 */
#ifndef KEMU_NET_VHOST_NET_H
#define KEMU_NET_VHOST_NET_H

#include <linux/vhost.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"

/* Feature bits vhost-net may take over (QEMU's kernel_feature_bits, as far as kemu offers them):
 * the rest (offloads, control features) stay with the device model and the tap. */
#define VHOST_NET_BIT_NOTIFY_ON_EMPTY 24
#define VHOST_NET_BIT_INDIRECT_DESC   28
#define VHOST_NET_BIT_EVENT_IDX       29
#define VHOST_NET_BIT_VERSION_1       32
#define VHOST_NET_BIT_MRG_RXBUF       15
#define VHOST_NET_KERNEL_FEATURES                                                                  \
    ((1ULL << VHOST_NET_BIT_NOTIFY_ON_EMPTY) | (1ULL << VHOST_NET_BIT_INDIRECT_DESC) |             \
     (1ULL << VHOST_NET_BIT_EVENT_IDX) | (1ULL << VHOST_NET_BIT_VERSION_1) |                       \
     (1ULL << VHOST_NET_BIT_MRG_RXBUF))

/* Largest queue vhost takes (the kernel's VHOST_NET's limit is 32768 too). */
#define VHOST_NET_MAX_QUEUE_SIZE 32768

/* The device features to withdraw because this vhost lacks them (the guest must not negotiate
 * what the kernel cannot do): the bits of VHOST_NET_KERNEL_FEATURES not in vhost_features. */
uint64_t vhost_net_missing_features(uint64_t vhost_features);
/* What VHOST_SET_FEATURES gets for the negotiated guest features: the kernel's bits of them,
 * plus VHOST_NET_F_VIRTIO_NET_HDR when the tap has no vnet header (vhost adds and strips it).
 * -1 with err set when vhost lacks one of them or VERSION_1 was not negotiated. */
int vhost_net_ack_features(uint64_t guest_features, uint64_t vhost_features, bool tap_vnet_hdr,
                           uint64_t *out, struct error *err);

/* A VHOST_SET_MEM_TABLE argument for all of guest RAM; free() it. NULL with err on failure. */
struct vhost_memory *vhost_net_mem_table(const struct guest_mem *mem, struct error *err);

/* One vring as the device model configured it. */
struct vhost_net_ring {
    unsigned size; /* entries: a power of two, 1..VHOST_NET_MAX_QUEUE_SIZE */
    uint64_t desc_gpa, avail_gpa, used_gpa;
    uint16_t last_avail; /* where the kernel starts (VHOST_SET_VRING_BASE) */
    int kick_fd, call_fd;
};

/* VHOST_SET_VRING_ADDR for vring `index`: size and alignments checked, each ring wholly inside
 * one RAM region (guest_mem_ptr), its host address filled in. -1 with err otherwise. */
int vhost_net_ring_addr(const struct guest_mem *mem, unsigned index, const struct vhost_net_ring *r,
                        struct vhost_vring_addr *out, struct error *err);

/* ---- ioctls ---- */

/* Check that fd is a vhost-net descriptor and read its features (VHOST_GET_FEATURES). */
int vhost_net_probe(int fd, uint64_t *features, struct error *err);
/* Start queue pair on vhost fd `vfd` (owned already: VHOST_SET_OWNER) with tap fd `tapfd`:
 * features, memory table, the two rings (RX = r[0], TX = r[1]), then the backend. On failure
 * everything done is undone (vhost_net_stop) and err says which step failed. */
int vhost_net_start(int vfd, int tapfd, const struct guest_mem *mem, uint64_t features,
                    const struct vhost_net_ring r[2], struct error *err);
/* Have vring `index` signal eventfd fd from now on (VHOST_SET_VRING_CALL). 0, or -1 (errno). */
int vhost_net_set_call(int vfd, unsigned index, int fd);
/* Detach the tap, take back each ring's next available index (last_avail[i]; the value given at
 * start if the kernel does not answer) and unbind the kick and call eventfds. */
void vhost_net_stop(int vfd, uint16_t last_avail[2]);

#endif
