/*
 * The virtio 1.x PCI transport (VIRTIO 1.x, 4.1), modern interface only: a struct virtio_device
 * wrapped as a PCI function "virtio-<kind>-pci".
 *
 * What the guest sees:
 * - vendor 0x1af4, device 0x1040 + device ID, revision 1, subsystem 0x1af4:0x1100, a class code
 *   per kind, INTA#;
 * - BAR1: 4 KiB of 32-bit memory with the MSI-X table (at 0) and PBA (at 0x800), one vector for
 *   configuration changes plus one per queue;
 * - BAR4: 16 KiB of 64-bit prefetchable memory with the virtio structures, each described by a
 *   vendor capability (cap ID 9): common configuration at 0x0000, ISR status at 0x1000, device
 *   configuration at 0x2000 (only when the kind has one), notifications at 0x3000 (queue q at
 *   0x3000 + 4 * q);
 * - a VIRTIO_PCI_CAP_PCI_CFG capability: a window in config space onto BAR1 and BAR4.
 *
 * Notifications reach the device as a kick of vdev->kick_fd[q]: from KVM directly (an ioeventfd
 * per queue, registered through pci_bus_io.ioeventfd whenever BAR4 is mapped) or from the BAR's
 * MMIO handler when no ioeventfd could be registered.
 *
 * Interrupts: with MSI-X enabled the queue's or the configuration vector (VIRTIO_MSI_NO_VECTOR:
 * none); otherwise the ISR bit and INTx, lowered when the driver reads the ISR.
 *
 * Locks: vdev->lock guards the common configuration and the device configuration; the PCI device
 * lock guards the ISR and the interrupt state. vdev->lock is taken before the PCI device lock,
 * never the other way round: the backend's threads take the PCI device lock (interrupts) while
 * vdev->lock holders wait for them (stop), so the transport releases the PCI device lock in the
 * callbacks the PCI core runs under it (config writes through the PCI_CFG window, reset) before
 * it takes vdev->lock.
 */
#ifndef KEMU_VIRTIO_PCI_H
#define KEMU_VIRTIO_PCI_H

#include <stdint.h>

#include "core/error.h"
#include "pci/pci.h"
#include "virtio/device.h"

#define VIRTIO_PCI_VENDOR_ID      0x1af4 /* Red Hat, Inc. */
#define VIRTIO_PCI_DEVICE_ID_BASE 0x1040 /* modern device ID = 0x1040 + virtio device ID */
#define VIRTIO_PCI_SUBSYS_ID      0x1100 /* QEMU's subsystem ID */
#define VIRTIO_PCI_REVISION       1      /* modern-only device (spec 4.1.2.1) */

/* Vendor capability cfg_type values (spec 4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG    3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG    5

/* struct virtio_pci_cap: u8 cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2];
 * le32 offset, length. The notify capability adds le32 notify_off_multiplier, the PCI_CFG
 * capability u8 pci_cfg_data[4]. */
#define VIRTIO_PCI_CAP_CFG_TYPE    3
#define VIRTIO_PCI_CAP_BAR         4
#define VIRTIO_PCI_CAP_OFFSET      8
#define VIRTIO_PCI_CAP_LENGTH      12
#define VIRTIO_PCI_CAP_LEN         16
#define VIRTIO_PCI_NOTIFY_CAP_MULT 16
#define VIRTIO_PCI_NOTIFY_CAP_LEN  20
#define VIRTIO_PCI_CFG_CAP_DATA    16
#define VIRTIO_PCI_CFG_CAP_LEN     20

/* struct virtio_pci_common_cfg field offsets (spec 4.1.4.3; names as Linux's uapi). */
#define VIRTIO_PCI_COMMON_DFSELECT      0x00 /* le32 device_feature_select */
#define VIRTIO_PCI_COMMON_DF            0x04 /* le32 device_feature (read-only) */
#define VIRTIO_PCI_COMMON_GFSELECT      0x08 /* le32 driver_feature_select */
#define VIRTIO_PCI_COMMON_GF            0x0c /* le32 driver_feature */
#define VIRTIO_PCI_COMMON_MSIX          0x10 /* le16 config_msix_vector */
#define VIRTIO_PCI_COMMON_NUMQ          0x12 /* le16 num_queues (read-only) */
#define VIRTIO_PCI_COMMON_STATUS        0x14 /* u8 device_status */
#define VIRTIO_PCI_COMMON_CFGGENERATION 0x15 /* u8 config_generation (read-only) */
#define VIRTIO_PCI_COMMON_Q_SELECT      0x16 /* le16 queue_select */
#define VIRTIO_PCI_COMMON_Q_SIZE        0x18 /* le16 queue_size */
#define VIRTIO_PCI_COMMON_Q_MSIX        0x1a /* le16 queue_msix_vector */
#define VIRTIO_PCI_COMMON_Q_ENABLE      0x1c /* le16 queue_enable */
#define VIRTIO_PCI_COMMON_Q_NOFF        0x1e /* le16 queue_notify_off (read-only) */
#define VIRTIO_PCI_COMMON_Q_DESCLO      0x20 /* le64 queue_desc */
#define VIRTIO_PCI_COMMON_Q_DESCHI      0x24
#define VIRTIO_PCI_COMMON_Q_AVAILLO     0x28 /* le64 queue_driver */
#define VIRTIO_PCI_COMMON_Q_AVAILHI     0x2c
#define VIRTIO_PCI_COMMON_Q_USEDLO      0x30 /* le64 queue_device */
#define VIRTIO_PCI_COMMON_Q_USEDHI      0x34
#define VIRTIO_PCI_COMMON_CFG_LEN       0x38

/* ISR status bits (spec 4.1.4.5). */
#define VIRTIO_PCI_ISR_QUEUE  0x1
#define VIRTIO_PCI_ISR_CONFIG 0x2

#define VIRTIO_MSI_NO_VECTOR 0xffff

/* kemu's layout. */
#define VIRTIO_PCI_MSIX_BAR      1
#define VIRTIO_PCI_MSIX_BAR_SIZE 0x1000
#define VIRTIO_PCI_MSIX_TABLE    0x0000
#define VIRTIO_PCI_MSIX_PBA      0x0800
#define VIRTIO_PCI_BAR           4
#define VIRTIO_PCI_BAR_SIZE      0x4000
#define VIRTIO_PCI_COMMON_OFF    0x0000
#define VIRTIO_PCI_ISR_OFF       0x1000
#define VIRTIO_PCI_DEVICE_OFF    0x2000
#define VIRTIO_PCI_NOTIFY_OFF    0x3000
#define VIRTIO_PCI_REGION_SIZE   0x1000
#define VIRTIO_PCI_NOTIFY_MULT   4 /* notify_off_multiplier; queue_notify_off = queue index */

struct virtio_pci;

/*
 * Plug vdev in at slot.func of bus (slot -1: next free). id is the user's device id or NULL.
 * Sets vdev->transport; vdev must outlive the transport (destroy the transport first).
 */
int virtio_pci_create(struct pci_bus *bus, int slot, int func, struct virtio_device *vdev,
                      const char *id, struct virtio_pci **out, struct error *err);
/*
 * Stops the backend (a device reset), detaches from vdev and forgets the function's place on the
 * bus. Makes no call into the board (its buses and KVM may be gone already): call it once no vCPU
 * runs. NULL is ignored.
 */
void virtio_pci_destroy(struct virtio_pci *vp);
struct pci_device *virtio_pci_pci_device(struct virtio_pci *vp);

#endif
