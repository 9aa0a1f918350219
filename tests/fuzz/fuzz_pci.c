/*
 * A hostile guest against PCI: the input is a sequence of 8-byte records replayed against a
 * port bus with the i440FX mechanism #1 ports and an MMIO bus onto which a device's BARs are
 * mapped as the guest programs them. Records: CONFIG_ADDRESS writes, data port accesses of any
 * size and offset, raw config accesses over the whole 4 KiB, MSI-X table/PBA accesses through
 * the BAR and directly with wild offsets, MSI-X notifications with wild vectors, INTx changes
 * and resets. Nothing may crash or touch memory it should not; read-only IDs must stay put.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus.h"
#include "core/bytes.h"
#include "pci/host.h"
#include "pci/pci.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct board {
    struct bus pio, mmio;
    unsigned msis, irqs;
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
    struct bus *bus = mmio ? &b->mmio : &b->pio;
    for (unsigned i = 0; i < bus->nr; i++) {
        if (bus->ranges[i].base == base && bus->ranges[i].opaque == opaque) {
            memmove(&bus->ranges[i], &bus->ranges[i + 1],
                    (bus->nr - i - 1) * sizeof(bus->ranges[0]));
            bus->nr--;
            return;
        }
    }
    __builtin_trap(); /* unmapping something never mapped */
}

static void fz_msi(void *ctx, uint64_t addr, uint32_t data)
{
    ((struct board *)ctx)->msis++;
}

static void fz_irq(void *ctx, unsigned gsi, int level)
{
    if (gsi != 10 && gsi != 11)
        __builtin_trap();
    ((struct board *)ctx)->irqs++;
}

struct fdev {
    struct pci_device pci;
    uint8_t regs[64];
};

static uint64_t fd_read(void *opaque, uint64_t off, unsigned size)
{
    struct fdev *d = opaque;
    uint64_t v = 0;
    if (pci_msix_bar_read(&d->pci, 2, off, size, &v))
        return v;
    if (off < sizeof(d->regs) && size <= sizeof(d->regs) - off)
        for (unsigned i = 0; i < size; i++)
            v |= (uint64_t)d->regs[off + i] << (8 * i);
    return v;
}

static void fd_write(void *opaque, uint64_t off, unsigned size, uint64_t val)
{
    struct fdev *d = opaque;
    if (pci_msix_bar_write(&d->pci, 2, off, size, val))
        return;
    if (off < sizeof(d->regs) && size <= sizeof(d->regs) - off)
        for (unsigned i = 0; i < size; i++)
            d->regs[off + i] = (uint8_t)(val >> (8 * i));
}

static const struct bus_ops fd_ops = {.read = fd_read, .write = fd_write};

static unsigned pick_size(uint8_t b)
{
    static const unsigned sizes[8] = {1, 2, 4, 8, 1, 2, 4, 3};
    return sizes[b & 7];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct board b = {0};
    bus_init(&b.pio, "pio");
    bus_init(&b.mmio, "mmio");
    const struct pci_bus_io io = {
        .map = fz_map, .unmap = fz_unmap, .msi_send = fz_msi, .set_irq = fz_irq, .ctx = &b};
    struct pci_bus pbus;
    struct pci_host *host = calloc(1, sizeof(*host));
    struct fdev *dev = calloc(1, sizeof(*dev));
    struct fdev *dev2 = calloc(1, sizeof(*dev2));
    if (!host || !dev || !dev2)
        abort();
    pci_bus_init(&pbus, &io);
    static const uint8_t gsi[4] = {10, 10, 11, 11};
    pci_bus_set_intx_routing(&pbus, gsi);
    if (pci_host_init(host, &pbus, NULL) < 0 || pci_host_register_ports(host, &b.pio, NULL) < 0)
        abort();
    pci_device_init(&dev->pci, "fuzz-dev", NULL, dev, 0x1af4, 0x1041, 0x020000, 1, 1);
    pci_device_set_extended_config(&dev->pci);
    if (pci_bar_init(&dev->pci, 0, PCI_BAR_TYPE_IO, false, 64, &fd_ops, dev, NULL) < 0 ||
        pci_bar_init(&dev->pci, 1, PCI_BAR_TYPE_MEM32, false, 0x1000, &fd_ops, dev, NULL) < 0 ||
        pci_bar_init(&dev->pci, 2, PCI_BAR_TYPE_MEM64, true, 0x4000, &fd_ops, dev, NULL) < 0 ||
        pci_msix_init(&dev->pci, 65, 2, 0x0, 0x2000, NULL) < 0 ||
        pci_add_capability(&dev->pci, PCI_CAP_ID_VNDR, 16) < 0 ||
        pci_bus_add(&pbus, &dev->pci, 3, 0, NULL) < 0)
        abort();
    pci_device_init(&dev2->pci, "fuzz-dev2", NULL, dev2, 0x8086, 0x100e, 0x020000, 0, 2);
    if (pci_bar_init(&dev2->pci, 0, PCI_BAR_TYPE_MEM32, false, 0x20, &fd_ops, dev2, NULL) < 0 ||
        pci_bus_add(&pbus, &dev2->pci, 3, 1, NULL) < 0)
        abort();
    /* Start from a guest-like state so short inputs reach the MSI-X paths. */
    pci_config_write(&dev->pci, 0x18, 4, 0xfe000000);
    pci_config_write(&dev->pci, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);

    for (size_t i = 0; i + 8 <= size; i += 8) {
        const uint8_t *r = data + i;
        uint8_t op = r[0];
        unsigned sz = pick_size(r[1]);
        uint16_t off = le_get16(r + 2);
        uint32_t val = le_get32(r + 4);
        uint64_t v;
        switch (op % 12) {
        case 0: /* CONFIG_ADDRESS: mostly bus 0, slots 0/3 */
            if (!(r[1] & 0x80))
                val = (val & 0x800007fc) | (r[1] & 1 ? 3u << 11 : 0) | (r[1] & 0x40 ? 0 : 1u << 31);
            bus_write(&b.pio, 0xcf8, 4, val);
            break;
        case 1:
            bus_read(&b.pio, 0xcf8 + (off & 7), sz, &v);
            break;
        case 2:
            bus_write(&b.pio, 0xcf8 + (off & 7), sz, val);
            break;
        case 3:
            pci_config_write(&dev->pci, off & 0x1fff, sz, val);
            break;
        case 4:
            v = pci_config_read(r[1] & 0x10 ? &dev2->pci : &dev->pci, off & 0x1fff, sz);
            break;
        case 5: /* through whatever is mapped on the MMIO bus */
            if (r[1] & 0x80)
                bus_write(&b.mmio, 0xfe000000ULL + (val & 0x7fff), sz, le_get32(r + 2));
            else
                bus_read(&b.mmio, 0xfe000000ULL + (val & 0x7fff), sz, &v);
            break;
        case 6:
            pci_msix_table_write(&dev->pci, (uint64_t)off << (r[1] >> 6), sz, val);
            break;
        case 7:
            v = pci_msix_table_read(&dev->pci, (uint64_t)off << (r[1] >> 6), sz);
            v += pci_msix_pba_read(&dev->pci, off, sz);
            break;
        case 8:
            pci_msix_notify(&dev->pci, r[1] & 0x80 ? val : (val & 0x7f));
            break;
        case 9:
            pci_set_irq(r[1] & 1 ? &dev2->pci : &dev->pci, val & 1);
            break;
        case 10:
            if ((val & 0xff) == 0)
                pci_bus_reset(&pbus);
            else
                pci_msix_bar_write(&dev->pci, r[1] & 7, ((uint64_t)val << 16) | off, sz, val);
            break;
        case 11: /* any port: BAR0 may be anywhere in I/O space */
            if (r[1] & 0x80)
                bus_write(&b.pio, off, sz, val);
            else
                bus_read(&b.pio, off, sz, &v);
            break;
        }
        (void)v;
        if (pci_config_read(&dev->pci, PCI_VENDOR_ID, 4) != 0x10411af4 ||
            pci_config_read(&host->dev, PCI_VENDOR_ID, 4) != 0x12378086 ||
            pci_config_read(&dev->pci, PCI_HEADER_TYPE, 1) != 0x80)
            __builtin_trap();
    }

    pci_bus_reset(&pbus); /* unmaps every BAR */
    if (b.mmio.nr != 0 || b.pio.nr != 3)
        __builtin_trap();
    pci_bus_destroy(&pbus);
    pci_device_destroy(&dev->pci);
    pci_device_destroy(&dev2->pci);
    pci_host_destroy(host);
    bus_destroy(&b.pio);
    bus_destroy(&b.mmio);
    free(host);
    free(dev);
    free(dev2);
    return 0;
}
