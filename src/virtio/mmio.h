/*
 * The virtio-mmio transport (VIRTIO 1.x, 4.2), version 2 registers only (no legacy): a struct
 * virtio_device as a 0x200-byte MMIO window "virtio-<kind>-device" with one interrupt line.
 *
 * What the guest sees: the register block of spec 4.2.2 (MagicValue "virt", Version 2, DeviceID,
 * VendorID "QEMU", features, queue set-up, QueueNotify, InterruptStatus/ACK, Status,
 * ConfigGeneration) and the device configuration at 0x100. The control registers take aligned
 * 32-bit accesses only (others read 0 and are ignored); the configuration any width.
 *
 * Notifications: a QueueNotify write kicks vdev->kick_fd[value] (a value naming no queue is
 * ignored); the backend never runs on the vCPU thread. With the board's ioeventfd hook
 * (virtio_mmio_set_ioeventfd) KVM does that itself: every enabled queue gets an ioeventfd on
 * QueueNotify matching its index (4-byte writes), removed when the queue is disabled or the
 * device reset; the trap path stays for queues whose registration failed.
 *
 * Interrupts: InterruptStatus bit 0 (used buffer) or 1 (configuration change) is set and the
 * line is pulsed (the board describes it as edge-triggered); the driver clears bits with
 * InterruptACK. Every interrupt pulses, even when its bit was already set: a driver that read the
 * status just before the bit was set acks the old bits and still gets an edge for the new one.
 *
 * Locks: vdev->lock guards the registers; InterruptStatus is an atomic word, so the backends'
 * threads interrupt without taking a lock.
 */
#ifndef KEMU_VIRTIO_MMIO_H
#define KEMU_VIRTIO_MMIO_H

#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/error.h"
#include "core/irq.h"
#include "virtio/device.h"

#define VIRTIO_MMIO_SIZE 0x200 /* the window each device takes, as QEMU's microvm */

/* Register offsets (spec 4.2.2; names as Linux's uapi). */
#define VIRTIO_MMIO_MAGIC_VALUE         0x000
#define VIRTIO_MMIO_VERSION             0x004
#define VIRTIO_MMIO_DEVICE_ID           0x008
#define VIRTIO_MMIO_VENDOR_ID           0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES     0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES     0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL           0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX       0x034
#define VIRTIO_MMIO_QUEUE_NUM           0x038
#define VIRTIO_MMIO_QUEUE_READY         0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY        0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS    0x060
#define VIRTIO_MMIO_INTERRUPT_ACK       0x064
#define VIRTIO_MMIO_STATUS              0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW      0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH     0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW     0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH    0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW      0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH     0x0a4
#define VIRTIO_MMIO_SHM_SEL             0x0ac
#define VIRTIO_MMIO_SHM_LEN_LOW         0x0b0
#define VIRTIO_MMIO_SHM_LEN_HIGH        0x0b4
#define VIRTIO_MMIO_SHM_BASE_LOW        0x0b8
#define VIRTIO_MMIO_SHM_BASE_HIGH       0x0bc
#define VIRTIO_MMIO_CONFIG_GENERATION   0x0fc
#define VIRTIO_MMIO_CONFIG              0x100

#define VIRTIO_MMIO_MAGIC     0x74726976 /* "virt" */
#define VIRTIO_MMIO_VERSION_2 2
#define VIRTIO_MMIO_VENDOR    0x554d4551 /* "QEMU", what QEMU's devices report */

#define VIRTIO_MMIO_INT_VRING  0x1
#define VIRTIO_MMIO_INT_CONFIG 0x2

struct virtio_mmio;

/*
 * Wrap vdev; irq is the device's interrupt line (pulsed). Sets vdev->transport; vdev must
 * outlive the transport. The board registers the window: (base, VIRTIO_MMIO_SIZE) with
 * virtio_mmio_bus_ops and the returned transport as opaque.
 */
int virtio_mmio_create(struct virtio_device *vdev, struct irq_line irq, struct virtio_mmio **out,
                       struct error *err);
/* Machine reset: the device and its registers back to their power-on state. */
void virtio_mmio_reset(struct virtio_mmio *vm);
/* Stops the backend (a device reset) and detaches from vdev; the board must not dispatch to it
 * any more. NULL is ignored. */
void virtio_mmio_destroy(struct virtio_mmio *vm);
/* The board's way to KVM's ioeventfds (kvm_ioeventfd_datamatch): signal fd on a len-byte
 * write of datamatch at guest physical addr (assign), or stop (!assign). 0 or -1. */
typedef int (*virtio_mmio_ioeventfd_fn)(void *ctx, uint64_t addr, unsigned len, uint64_t datamatch,
                                        int fd, bool assign);
/* Where the board put the window (base) and how to register ioeventfds; before the guest runs.
 * Without it every QueueNotify write traps to the vCPU thread. */
void virtio_mmio_set_ioeventfd(struct virtio_mmio *vm, uint64_t base, virtio_mmio_ioeventfd_fn fn,
                               void *ctx);
/* "virtio-blk-device", for messages. */
const char *virtio_mmio_name(const struct virtio_mmio *vm);

extern const struct bus_ops virtio_mmio_bus_ops; /* opaque = struct virtio_mmio * */

#endif
