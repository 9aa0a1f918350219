/*
 * A hostile guest against the virtio-pci transport: the input is a sequence of 8-byte records
 * replayed as config-space accesses (including the PCI_CFG window), accesses anywhere in the
 * device's BARs (common config, ISR, device config, notify, MSI-X table) and machine resets,
 * against a virtio device with three queues, config space and a backend that pops and pushes on
 * every kick, in the same thread (deterministic). Guest memory is 64 KiB whose content also
 * comes from the input. Nothing may crash, leak or touch memory outside that buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus.h"
#include "core/memory.h"
#include "pci/pci.h"
#include "virtio/device.h"
#include "virtio/pci.h"

#include "fuzz_virtio_be.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct board {
    struct bus mmio, pio;
};

static int fz_map(void *ctx, bool mmio, uint64_t base, uint64_t len, const struct bus_ops *ops,
                  void *opaque)
{
    struct board *b = ctx;
    return bus_register(mmio ? &b->mmio : &b->pio, base, len, ops, opaque, "bar", NULL);
}

static void fz_unmap(void *ctx, bool mmio, uint64_t base, void *opaque)
{
    struct board *b = ctx;
    bus_unregister(mmio ? &b->mmio : &b->pio, base, opaque);
}

static void fz_msi(void *ctx, uint64_t addr, uint32_t data) {}

static void fz_irq(void *ctx, unsigned gsi, int level)
{
    if (gsi < 16 || gsi > 19)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 16)
        return 0;
    struct guest_mem mem;
    seed_guest_mem(&mem, &data, &size);
    struct board b;
    bus_init(&b.mmio, "mmio");
    bus_init(&b.pio, "pio");
    struct pci_bus_io io = {
        .map = fz_map, .unmap = fz_unmap, .msi_send = fz_msi, .set_irq = fz_irq, .ctx = &b};
    struct pci_bus bus;
    pci_bus_init(&bus, &io);
    static const uint8_t gsi[4] = {16, 17, 18, 19};
    pci_bus_set_intx_routing(&bus, gsi);

    struct virtio_device vdev;
    struct error err = {0};
    struct virtio_pci *vp = NULL;
    if (virtio_device_init(&vdev, "virtio-fuzz", &be_ops, NULL, &mem, VIRTIO_ID_RNG, 0x5, 3, 16, 24,
                           &err) < 0 ||
        virtio_pci_create(&bus, 3, 0, &vdev, "fz", &vp, &err) < 0)
        __builtin_trap();
    struct pci_device *dev = virtio_pci_pci_device(vp);
    struct pci_windows win = {
        .io_base = 0xc000, .io_len = 0x4000, .mem32_base = 0xc0000000, .mem32_len = 0x10000000};
    if (pci_bus_assign_bars(&bus, &win, &err) < 0)
        __builtin_trap();

    static const unsigned sizes[4] = {1, 2, 4, 8};
    for (; size >= 8; data += 8, size -= 8) {
        unsigned op = data[0] % 8;
        unsigned sz = sizes[data[1] & 3];
        uint32_t off = (uint32_t)data[2] | (uint32_t)data[3] << 8;
        uint32_t val = (uint32_t)data[4] | (uint32_t)data[5] << 8 | (uint32_t)data[6] << 16 |
                       (uint32_t)data[7] << 24;
        uint64_t v;
        switch (op) {
        case 0: /* config space, any offset in 4 KiB and the next page */
            pci_config_write(dev, off & 0x1fff, sz > 4 ? 4 : sz, val);
            break;
        case 1:
            (void)pci_config_read(dev, off & 0x1fff, sz > 4 ? 4 : sz);
            break;
        case 2: /* BAR 4: the virtio structures, where the firmware put it */
        case 3: {
            uint64_t base = pci_bar_address(dev, VIRTIO_PCI_BAR);
            uint64_t addr = base + (off % (VIRTIO_PCI_BAR_SIZE + 0x100));
            if (op == 2)
                bus_write(&b.mmio, addr, sz, val | (uint64_t)val << 32);
            else
                bus_read(&b.mmio, addr, sz, &v);
            break;
        }
        case 4: /* BAR 1: MSI-X table and PBA */
        case 5: {
            uint64_t addr = pci_bar_address(dev, 1) + (off & 0xfff);
            if (op == 4)
                bus_write(&b.mmio, addr, sz, val);
            else
                bus_read(&b.mmio, addr, sz, &v);
            break;
        }
        case 6:
            service(&vdev);
            break;
        case 7:
            if ((val & 0xff) == 0) {
                pci_device_reset(dev); /* a machine reset */
                pci_bus_assign_bars(&bus, &win, &err);
            } else if (val & 1) {
                virtio_config_changed(&vdev);
            }
            break;
        }
    }
    service(&vdev);
    virtio_pci_destroy(vp);
    virtio_device_destroy(&vdev);
    pci_bus_destroy(&bus);
    bus_destroy(&b.mmio);
    bus_destroy(&b.pio);
    return 0;
}
