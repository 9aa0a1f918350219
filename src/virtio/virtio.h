/*
 * Constants of the VIRTIO 1.x specification shared by the virtqueue, the transports (PCI, MMIO)
 * and the device backends: feature bits, device status bits, device IDs and the split-ring
 * layout. Names follow the specification.
 */
#ifndef KEMU_VIRTIO_VIRTIO_H
#define KEMU_VIRTIO_VIRTIO_H

#include <stdint.h>

/* Device status field (spec 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE        1u
#define VIRTIO_STATUS_DRIVER             2u
#define VIRTIO_STATUS_DRIVER_OK          4u
#define VIRTIO_STATUS_FEATURES_OK        8u
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED             128u

/* Reserved (device-independent) feature bits, as bit numbers (spec 6). */
#define VIRTIO_F_NOTIFY_ON_EMPTY    24 /* legacy only */
#define VIRTIO_F_ANY_LAYOUT         27 /* legacy only; implied by VERSION_1 */
#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX     29
#define VIRTIO_F_VERSION_1          32
#define VIRTIO_F_ACCESS_PLATFORM    33
#define VIRTIO_F_RING_PACKED        34
#define VIRTIO_F_IN_ORDER           35
#define VIRTIO_F_ORDER_PLATFORM     36
#define VIRTIO_F_SR_IOV             37
#define VIRTIO_F_NOTIFICATION_DATA  38
#define VIRTIO_F_NOTIF_CONFIG_DATA  39
#define VIRTIO_F_RING_RESET         40

/* The feature bit as a mask: features & VIRTIO_BIT(VIRTIO_F_VERSION_1). */
#define VIRTIO_BIT(nr) (1ULL << (nr))

/* Device IDs (spec 5). */
#define VIRTIO_ID_NET     1
#define VIRTIO_ID_BLOCK   2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG     4
#define VIRTIO_ID_BALLOON 5
#define VIRTIO_ID_SCSI    8
#define VIRTIO_ID_9P      9
#define VIRTIO_ID_GPU     16
#define VIRTIO_ID_INPUT   18
#define VIRTIO_ID_VSOCK   19
#define VIRTIO_ID_CRYPTO  20
#define VIRTIO_ID_IOMMU   23
#define VIRTIO_ID_MEM     24
#define VIRTIO_ID_SOUND   25
#define VIRTIO_ID_FS      26
#define VIRTIO_ID_PMEM    27

/* Split virtqueue (spec 2.7). */
#define VIRTQ_MAX_SIZE 32768 /* largest queue size the split ring allows */

#define VIRTQ_DESC_F_NEXT     1u /* the chain continues in `next` */
#define VIRTQ_DESC_F_WRITE    2u /* the device writes this buffer (else it reads it) */
#define VIRTQ_DESC_F_INDIRECT 4u /* the buffer is a table of descriptors */

#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u /* driver: don't interrupt me (without EVENT_IDX) */
#define VIRTQ_USED_F_NO_NOTIFY     1u /* device: don't notify me (without EVENT_IDX) */

#define VIRTQ_DESC_SIZE      16 /* le64 addr, le32 len, le16 flags, le16 next */
#define VIRTQ_USED_ELEM_SIZE 8  /* le32 id, le32 len */
#define VIRTQ_DESC_ALIGN     16
#define VIRTQ_AVAIL_ALIGN    2
#define VIRTQ_USED_ALIGN     4

/* Ring sizes in bytes for a queue of `n` entries, including used_event / avail_event. */
#define VIRTQ_DESC_TABLE_SIZE(n) ((uint64_t)(n)*VIRTQ_DESC_SIZE)
#define VIRTQ_AVAIL_RING_SIZE(n) (6 + 2 * (uint64_t)(n))
#define VIRTQ_USED_RING_SIZE(n)  (6 + (uint64_t)(n)*VIRTQ_USED_ELEM_SIZE)

#endif
