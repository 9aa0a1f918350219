/*
 * i440FX host bridge and configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2).
 *
 * CONFIG_ADDRESS: bit 31 enable, 23:16 bus, 15:11 device, 10:8 function, 7:2 register (bits 1:0
 * read back as written would be reserved; they read 0 here). Only bus 0 exists: a config cycle
 * for any other bus, or with the enable bit clear, is not claimed and reads all-ones. A missing
 * function reads all-ones as well, so its vendor ID is 0xFFFF, which is how probing finds it.
 */
#include "pci/host.h"

static uint64_t ones(unsigned size)
{
    return size >= 8 ? ~0ULL : (1ULL << (8 * size)) - 1;
}

static uint64_t addr_read(void *opaque, uint64_t offset, unsigned size)
{
    struct pci_host *h = opaque;
    if (offset != 0 || size != 4)
        return ones(size);
    pthread_mutex_lock(&h->lock);
    uint32_t v = h->config_addr;
    pthread_mutex_unlock(&h->lock);
    return v;
}

static void addr_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct pci_host *h = opaque;
    if (offset != 0 || size != 4)
        return;
    pthread_mutex_lock(&h->lock);
    h->config_addr = (uint32_t)value & ~3u;
    pthread_mutex_unlock(&h->lock);
}

const struct bus_ops pci_host_addr_ops = {.read = addr_read, .write = addr_write};

static uint64_t unclaimed_read(void *opaque, uint64_t offset, unsigned size)
{
    return ones(size);
}

static void unclaimed_write(void *opaque, uint64_t offset, unsigned size, uint64_t value) {}

const struct bus_ops pci_host_unclaimed_ops = {.read = unclaimed_read, .write = unclaimed_write};

/* The function and register a data-port access addresses, or NULL. Host lock held. */
static struct pci_device *target(struct pci_host *h, uint64_t offset, unsigned size, unsigned *reg)
{
    uint32_t a = h->config_addr;
    if (!(a & PCI_CONFIG_ENABLE) || ((a >> 16) & 0xff) != 0)
        return NULL;
    if (offset >= PCI_HOST_DATA_LEN || size > PCI_HOST_DATA_LEN - offset)
        return NULL;
    *reg = (a & 0xfc) + (unsigned)offset;
    return pci_bus_get(h->bus, (a >> 11) & 0x1f, (a >> 8) & 0x7);
}

static uint64_t data_read(void *opaque, uint64_t offset, unsigned size)
{
    struct pci_host *h = opaque;
    unsigned reg;
    uint64_t v = ones(size);
    pthread_mutex_lock(&h->lock);
    struct pci_device *d = target(h, offset, size, &reg);
    if (d)
        v = pci_config_read(d, reg, size);
    pthread_mutex_unlock(&h->lock);
    return v;
}

static void data_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct pci_host *h = opaque;
    unsigned reg;
    pthread_mutex_lock(&h->lock);
    struct pci_device *d = target(h, offset, size, &reg);
    if (d)
        pci_config_write(d, reg, size, (uint32_t)value);
    pthread_mutex_unlock(&h->lock);
}

const struct bus_ops pci_host_data_ops = {.read = data_read, .write = data_write};

int pci_host_init(struct pci_host *h, struct pci_bus *bus, struct error *err)
{
    h->bus = bus;
    h->config_addr = 0;
    pci_device_init(&h->dev, "i440FX", NULL, h, PCI_HOST_VENDOR, PCI_HOST_DEVICE, PCI_HOST_CLASS,
                    0x02, 0);
    pthread_mutex_init(&h->lock, NULL);
    if (pci_bus_add(bus, &h->dev, 0, 0, err) < 0) {
        pci_device_destroy(&h->dev);
        pthread_mutex_destroy(&h->lock);
        return -1;
    }
    return 0;
}

void pci_host_destroy(struct pci_host *h)
{
    pci_device_destroy(&h->dev);
    pthread_mutex_destroy(&h->lock);
}

int pci_host_register_ports(struct pci_host *h, struct bus *pio, struct error *err)
{
    if (bus_register(pio, PCI_HOST_ADDR_PORT, 1, &pci_host_addr_ops, h, "pci-conf-addr", err) < 0 ||
        bus_register(pio, PCI_HOST_ADDR_PORT + 2, 2, &pci_host_unclaimed_ops, h, "pci-conf-addr-hi",
                     err) < 0 ||
        bus_register(pio, PCI_HOST_DATA_PORT, PCI_HOST_DATA_LEN, &pci_host_data_ops, h,
                     "pci-conf-data", err) < 0)
        return -1;
    return 0;
}

/* ---- info pci ---------------------------------------------------------------------------- */

static const struct {
    uint16_t class;
    const char *name;
} class_names[] = {
    {0x0100, "SCSI controller"},    {0x0101, "IDE controller"},
    {0x0106, "SATA controller"},    {0x0108, "NVMe controller"},
    {0x0180, "Storage controller"}, {0x0200, "Ethernet controller"},
    {0x0300, "VGA controller"},     {0x0403, "Audio controller"},
    {0x0600, "Host bridge"},        {0x0601, "ISA bridge"},
    {0x0604, "PCI bridge"},         {0x0680, "Bridge"},
    {0x0700, "Serial port"},        {0x0780, "Communication controller"},
    {0x0c03, "USB controller"},     {0x00ff, "Unclassified device"},
};

static const char *class_name(uint16_t class)
{
    for (size_t i = 0; i < sizeof(class_names) / sizeof(class_names[0]); i++)
        if (class_names[i].class == class)
            return class_names[i].name;
    return NULL;
}

void pci_host_info(struct pci_bus *bus, FILE *out)
{
    for (unsigned s = 0; s < PCI_SLOTS; s++) {
        for (unsigned f = 0; f < PCI_FUNCS; f++) {
            struct pci_device *d = pci_bus_get(bus, s, f);
            if (!d)
                continue;
            pthread_mutex_lock(&d->lock);
            uint16_t class = (uint16_t)pci_config_read(d, PCI_CLASS_DEVICE, 2);
            const char *cn = class_name(class);
            fprintf(out, "  Bus  0, device %3u, function %u:\n", s, f);
            if (cn)
                fprintf(out, "    %s: ", cn);
            else
                fprintf(out, "    Class %04x: ", class);
            fprintf(out, "PCI device %04x:%04x\n", pci_config_read(d, PCI_VENDOR_ID, 2),
                    pci_config_read(d, PCI_DEVICE_ID, 2));
            uint8_t pin = d->config[PCI_INTERRUPT_PIN];
            if (pin) {
                int gsi = pci_device_gsi(d);
                fprintf(out, "      IRQ %u, pin %c", d->config[PCI_INTERRUPT_LINE], 'A' + pin - 1);
                if (gsi >= 0)
                    fprintf(out, " (routed to GSI %d)", gsi);
                fputc('\n', out);
            }
            for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
                const struct pci_bar *bar = &d->bar[b];
                if (!bar->size)
                    continue;
                const char *kind = bar->type == PCI_BAR_TYPE_IO      ? "I/O"
                                   : bar->type == PCI_BAR_TYPE_MEM64 ? "64 bit"
                                                                     : "32 bit";
                fprintf(out, "      BAR%u: %s%s%s", b, kind, bar->prefetch ? " prefetchable" : "",
                        bar->type == PCI_BAR_TYPE_IO ? "" : " memory");
                if (bar->addr != PCI_BAR_UNMAPPED)
                    fprintf(out, " at 0x%llx [0x%llx].\n", (unsigned long long)bar->addr,
                            (unsigned long long)(bar->addr + bar->size - 1));
                else
                    fprintf(out, " not mapped, size 0x%llx.\n", (unsigned long long)bar->size);
            }
            fprintf(out, "      id \"%s\"\n", d->name ? d->name : "");
            pthread_mutex_unlock(&d->lock);
        }
    }
}
