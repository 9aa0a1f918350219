/*
 * PCI device model and bus 0.
 *
 * Config writes go byte by byte through the write mask (read-only fields keep their value) and
 * the write-1-to-clear mask (status error bits). BAR sizing falls out of the mask: the address
 * bits below the size are read-only zero, so writing all-ones reads back ~(size - 1) plus the
 * type bits, which is what a driver decodes the size from.
 *
 * After a write touching the command register or a BAR, every BAR's wanted address is computed
 * (unmapped when its decode bit is off, the address is 0, or the range does not fit the address
 * space, which is also what an all-ones sizing pattern gives) and the board is asked to move it.
 */
#include "pci/pci.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/bytes.h"

static void lock_init(pthread_mutex_t *m, bool recursive)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (recursive)
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

static uint16_t cfg16(const struct pci_device *dev, unsigned off)
{
    return le_get16(dev->config + off);
}

static void set_wmask16(struct pci_device *dev, unsigned off, uint16_t mask)
{
    le_put16(dev->wmask + off, mask);
}

static void set_wmask32(struct pci_device *dev, unsigned off, uint32_t mask)
{
    le_put32(dev->wmask + off, mask);
}

/* ---- device ------------------------------------------------------------------------------ */

void pci_device_init(struct pci_device *dev, const char *name, const struct pci_device_ops *ops,
                     void *opaque, uint16_t vendor, uint16_t device, uint32_t class_code,
                     uint8_t revision, uint8_t pin)
{
    memset(dev, 0, sizeof(*dev));
    dev->name = name;
    dev->ops = ops;
    dev->opaque = opaque;
    dev->config_size = PCI_CONFIG_SIZE;
    dev->next_cap = PCI_HEADER_END;
    for (unsigned i = 0; i < PCI_NUM_BARS; i++)
        dev->bar[i].addr = PCI_BAR_UNMAPPED;
    lock_init(&dev->lock, true);

    le_put16(dev->config + PCI_VENDOR_ID, vendor);
    le_put16(dev->config + PCI_DEVICE_ID, device);
    dev->config[PCI_REVISION_ID] = revision;
    dev->config[PCI_CLASS_PROG] = (uint8_t)class_code;
    dev->config[PCI_CLASS_DEVICE] = (uint8_t)(class_code >> 8);
    dev->config[PCI_CLASS_DEVICE + 1] = (uint8_t)(class_code >> 16);
    dev->config[PCI_INTERRUPT_PIN] = pin <= 4 ? pin : 0;

    set_wmask16(dev, PCI_COMMAND,
                PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY |
                    PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE);
    le_put16(dev->w1cmask + PCI_STATUS, PCI_STATUS_W1C);
    dev->wmask[PCI_CACHE_LINE] = 0xff;
    dev->wmask[PCI_LATENCY_TIMER] = 0xff;
    dev->wmask[PCI_INTERRUPT_LINE] = 0xff;
}

void pci_device_set_subsystem(struct pci_device *dev, uint16_t vendor, uint16_t id)
{
    le_put16(dev->config + PCI_SUBSYS_VENDOR, vendor);
    le_put16(dev->config + PCI_SUBSYS_ID, id);
}

void pci_device_set_extended_config(struct pci_device *dev)
{
    dev->config_size = PCI_EXT_CONFIG_SIZE;
}

static void msix_routes_release(struct pci_device *dev);

void pci_device_destroy(struct pci_device *dev)
{
    pthread_mutex_lock(&dev->lock);
    msix_routes_release(dev);
    pthread_mutex_unlock(&dev->lock);
    free(dev->msix.route);
    dev->msix.route = NULL;
    free(dev->msix.table);
    free(dev->msix.pba);
    dev->msix.table = NULL;
    dev->msix.pba = NULL;
    dev->msix.nvec = 0;
    pthread_mutex_destroy(&dev->lock);
}

/* ---- BARs -------------------------------------------------------------------------------- */

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static uint32_t bar_type_bits(const struct pci_bar *b)
{
    if (b->type == PCI_BAR_TYPE_IO)
        return PCI_BAR_IO;
    return (b->type == PCI_BAR_TYPE_MEM64 ? PCI_BAR_MEM_64 : 0) |
           (b->prefetch ? PCI_BAR_MEM_PREFETCH : 0);
}

int pci_bar_init(struct pci_device *dev, unsigned bar, enum pci_bar_type type, bool prefetch,
                 uint64_t size, const struct bus_ops *ops, void *opaque, struct error *err)
{
    unsigned slots = type == PCI_BAR_TYPE_MEM64 ? 2 : 1;
    if (bar >= PCI_NUM_BARS || bar + slots > PCI_NUM_BARS)
        return error_setf(err, "%s: BAR%u does not exist%s", dev->name, bar,
                          slots == 2 ? " (a 64-bit BAR takes two)" : "");
    for (unsigned i = bar; i < bar + slots; i++)
        if (dev->bar[i].size ||
            (i > 0 && dev->bar[i - 1].type == PCI_BAR_TYPE_MEM64 && dev->bar[i - 1].size))
            return error_setf(err, "%s: BAR%u is already in use", dev->name, i);
    if (!is_pow2(size))
        return error_setf(err, "%s: BAR%u size 0x%llx is not a power of two", dev->name, bar,
                          (unsigned long long)size);
    if (type == PCI_BAR_TYPE_IO && (size < 4 || size > 0x10000))
        return error_setf(err, "%s: I/O BAR%u size 0x%llx is outside 4..64 KiB", dev->name, bar,
                          (unsigned long long)size);
    if (type != PCI_BAR_TYPE_IO && size < 16)
        return error_setf(err, "%s: memory BAR%u is smaller than 16 bytes", dev->name, bar);
    if (type != PCI_BAR_TYPE_MEM64 && size > 0x80000000ULL)
        return error_setf(err, "%s: BAR%u of 0x%llx bytes needs to be 64-bit", dev->name, bar,
                          (unsigned long long)size);
    if (type == PCI_BAR_TYPE_IO && prefetch)
        return error_setf(err, "%s: I/O BAR%u cannot be prefetchable", dev->name, bar);

    struct pci_bar *b = &dev->bar[bar];
    b->size = size;
    b->type = type;
    b->prefetch = prefetch;
    b->ops = ops;
    b->opaque = opaque;
    b->addr = PCI_BAR_UNMAPPED;

    unsigned off = PCI_BAR0 + 4 * bar;
    uint64_t mask = ~(size - 1);
    uint32_t low_bits = type == PCI_BAR_TYPE_IO ? 0x3 : 0xf;
    le_put32(dev->config + off, bar_type_bits(b));
    set_wmask32(dev, off, (uint32_t)mask & ~low_bits);
    if (type == PCI_BAR_TYPE_MEM64) {
        le_put32(dev->config + off + 4, 0);
        set_wmask32(dev, off + 4, (uint32_t)(mask >> 32));
    }
    return 0;
}

uint64_t pci_bar_address(const struct pci_device *dev, unsigned bar)
{
    if (bar >= PCI_NUM_BARS || !dev->bar[bar].size)
        return 0;
    const struct pci_bar *b = &dev->bar[bar];
    unsigned off = PCI_BAR0 + 4 * bar;
    uint64_t v = le_get32(dev->config + off);
    if (b->type == PCI_BAR_TYPE_IO)
        return v & ~0x3ULL;
    v &= ~0xfULL;
    if (b->type == PCI_BAR_TYPE_MEM64)
        v |= (uint64_t)le_get32(dev->config + off + 4) << 32;
    return v;
}

/* Where the BAR should be decoded now, or PCI_BAR_UNMAPPED. */
static uint64_t bar_wanted(const struct pci_device *dev, unsigned bar)
{
    const struct pci_bar *b = &dev->bar[bar];
    uint16_t cmd = cfg16(dev, PCI_COMMAND);
    uint64_t addr = pci_bar_address(dev, bar), last = addr + b->size - 1;
    if (b->type == PCI_BAR_TYPE_IO) {
        if (!(cmd & PCI_COMMAND_IO) || last > 0xffff)
            return PCI_BAR_UNMAPPED;
    } else {
        if (!(cmd & PCI_COMMAND_MEMORY) || last < addr || last == UINT64_MAX)
            return PCI_BAR_UNMAPPED;
        if (b->type == PCI_BAR_TYPE_MEM32 && last >= 0xffffffffULL)
            return PCI_BAR_UNMAPPED;
    }
    return addr ? addr : PCI_BAR_UNMAPPED;
}

static void bar_unmap(struct pci_device *dev, unsigned bar)
{
    struct pci_bar *b = &dev->bar[bar];
    if (b->addr == PCI_BAR_UNMAPPED)
        return;
    uint64_t old = b->addr;
    b->addr = PCI_BAR_UNMAPPED;
    const struct pci_bus_io *io = dev->bus ? dev->bus->io : NULL;
    if (io && io->unmap)
        io->unmap(io->ctx, b->type != PCI_BAR_TYPE_IO, old, b->opaque);
    if (dev->ops && dev->ops->bar_map)
        dev->ops->bar_map(dev, bar, old, false);
}

static void update_mappings(struct pci_device *dev)
{
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        struct pci_bar *b = &dev->bar[i];
        if (!b->size)
            continue;
        uint64_t want = dev->bus ? bar_wanted(dev, i) : PCI_BAR_UNMAPPED;
        if (want == b->addr)
            continue;
        bar_unmap(dev, i);
        if (want == PCI_BAR_UNMAPPED)
            continue;
        const struct pci_bus_io *io = dev->bus->io;
        if (!io || !io->map ||
            io->map(io->ctx, b->type != PCI_BAR_TYPE_IO, want, b->size, b->ops, b->opaque) < 0)
            continue; /* e.g. overlapping another range: the BAR stays undecoded */
        b->addr = want;
        if (dev->ops && dev->ops->bar_map)
            dev->ops->bar_map(dev, i, want, true);
    }
}

/* ---- capabilities ------------------------------------------------------------------------ */

int pci_add_capability(struct pci_device *dev, uint8_t id, unsigned len)
{
    if (len < 2)
        return -1;
    unsigned off = (dev->next_cap + 3) & ~3u;
    if (off + len > PCI_CONFIG_SIZE)
        return -1;
    /* Append to the chain: the last capability's next pointer, or 0x34 for the first. */
    unsigned link = PCI_CAP_PTR;
    unsigned guard = 0;
    while (dev->config[link] && guard++ < 64)
        link = dev->config[link] + 1u;
    dev->config[link] = (uint8_t)off;
    memset(dev->config + off, 0, len);
    memset(dev->wmask + off, 0, len);
    memset(dev->w1cmask + off, 0, len);
    dev->config[off] = id;
    dev->config[off + 1] = 0;
    le_put16(dev->config + PCI_STATUS, cfg16(dev, PCI_STATUS) | PCI_STATUS_CAP_LIST);
    dev->next_cap = off + len;
    return (int)off;
}

unsigned pci_find_capability(const struct pci_device *dev, uint8_t id)
{
    if (!(cfg16(dev, PCI_STATUS) & PCI_STATUS_CAP_LIST))
        return 0;
    unsigned off = dev->config[PCI_CAP_PTR] & ~3u;
    for (unsigned n = 0; off >= PCI_HEADER_END && n < 48; n++) {
        if (dev->config[off] == id)
            return off;
        off = dev->config[off + 1] & ~3u;
    }
    return 0;
}

/* ---- INTx -------------------------------------------------------------------------------- */

int pci_intx_pirq(unsigned slot, unsigned pin)
{
    if (pin < 1 || pin > 4)
        return -1;
    return (int)((slot + pin - 1) % 4);
}

int pci_device_gsi(const struct pci_device *dev)
{
    int pirq = pci_intx_pirq(dev->slot, dev->config[PCI_INTERRUPT_PIN]);
    if (pirq < 0 || !dev->bus || !dev->bus->intx_routed)
        return -1;
    return dev->bus->gsi_for_pirq[pirq];
}

/* Drive the PIRQ from intx_level, INTx-disable and MSI-X enable. Device lock held. */
static void update_intx(struct pci_device *dev)
{
    bool want = dev->intx_level && !(cfg16(dev, PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE) &&
                !pci_msix_enabled(dev);
    if (want == dev->intx_asserted)
        return;
    dev->intx_asserted = want;
    struct pci_bus *bus = dev->bus;
    int pirq = pci_intx_pirq(dev->slot, dev->config[PCI_INTERRUPT_PIN]);
    if (!bus || pirq < 0)
        return;
    pthread_mutex_lock(&bus->lock);
    unsigned before = bus->pirq_count[pirq];
    if (want)
        bus->pirq_count[pirq]++;
    else if (bus->pirq_count[pirq])
        bus->pirq_count[pirq]--;
    unsigned after = bus->pirq_count[pirq];
    if ((before == 0) != (after == 0) && bus->intx_routed && bus->io && bus->io->set_irq)
        bus->io->set_irq(bus->io->ctx, bus->gsi_for_pirq[pirq], after != 0);
    pthread_mutex_unlock(&bus->lock);
}

void pci_set_irq(struct pci_device *dev, int level)
{
    pthread_mutex_lock(&dev->lock);
    dev->intx_level = level != 0;
    uint16_t st = cfg16(dev, PCI_STATUS);
    st = level ? st | PCI_STATUS_INTERRUPT : st & ~PCI_STATUS_INTERRUPT;
    le_put16(dev->config + PCI_STATUS, st);
    update_intx(dev);
    pthread_mutex_unlock(&dev->lock);
}

/* ---- MSI-X ------------------------------------------------------------------------------- */

static uint16_t msix_ctrl(const struct pci_device *dev)
{
    return dev->msix.nvec ? cfg16(dev, dev->msix.cap + PCI_MSIX_FLAGS) : 0;
}

bool pci_msix_enabled(struct pci_device *dev)
{
    return (msix_ctrl(dev) & PCI_MSIX_FLAGS_ENABLE) != 0;
}

static bool vector_masked(const struct pci_device *dev, unsigned v)
{
    uint16_t ctrl = msix_ctrl(dev);
    if (!(ctrl & PCI_MSIX_FLAGS_ENABLE) || (ctrl & PCI_MSIX_FLAGS_MASKALL))
        return true;
    return dev->msix.table[v * PCI_MSIX_ENTRY_SIZE + 12] & PCI_MSIX_ENTRY_CTRL_MASKBIT;
}

bool pci_msix_masked(struct pci_device *dev, unsigned vector)
{
    pthread_mutex_lock(&dev->lock);
    bool m = vector >= dev->msix.nvec || vector_masked(dev, vector);
    pthread_mutex_unlock(&dev->lock);
    return m;
}

/* The bus's irqfd interface, when it has all of it. */
static const struct pci_bus_io *route_io(const struct pci_device *dev)
{
    const struct pci_bus_io *io = dev->bus ? dev->bus->io : NULL;
    return io && io->msi_route_add && io->msi_route_update && io->msi_route_del ? io : NULL;
}

/* Drop vector v's irqfd route and eventfd. Device lock held. */
static void msix_route_release(struct pci_device *dev, unsigned v)
{
    struct pci_msix_route *r = &dev->msix.route[v];
    const struct pci_bus_io *io = route_io(dev);
    if (r->handle >= 0 && io)
        io->msi_route_del(io->ctx, r->handle, r->fd);
    r->handle = -1;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

static void msix_routes_release(struct pci_device *dev)
{
    for (unsigned v = 0; dev->msix.route && v < dev->msix.nvec; v++)
        msix_route_release(dev, v);
}

/*
 * Make vector v's irqfd route match its table entry (device lock held). Called whenever the
 * entry, its mask or the MSI-X control register may have changed. The route is made (or moved)
 * only while the vector is unmasked: a masked vector never writes its eventfd (notify latches
 * it in the PBA), and the guest may rewrite a masked entry in several steps. Disabling MSI-X
 * frees the route. Any failure leaves the vector on msi_send; the guest never notices.
 */
static void msix_route_sync(struct pci_device *dev, unsigned v)
{
    const struct pci_bus_io *io = route_io(dev);
    if (!io || !dev->msix.route)
        return;
    struct pci_msix_route *r = &dev->msix.route[v];
    if (!pci_msix_enabled(dev)) {
        msix_route_release(dev, v);
        return;
    }
    if (vector_masked(dev, v))
        return;
    const uint8_t *e = dev->msix.table + v * PCI_MSIX_ENTRY_SIZE;
    uint64_t addr = le_get64(e);
    uint32_t data = le_get32(e + 8);
    if (r->handle >= 0) {
        if (r->addr == addr && r->data == data)
            return;
        if (io->msi_route_update(io->ctx, r->handle, addr, data) < 0) {
            msix_route_release(dev, v);
            return;
        }
    } else {
        if (r->fd < 0)
            r->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (r->fd < 0)
            return;
        r->handle = io->msi_route_add(io->ctx, r->fd, addr, data);
        if (r->handle < 0)
            return; /* e.g. out of routes: msi_send; retried at the next unmask */
    }
    r->addr = addr;
    r->data = data;
}

static void msix_routes_sync(struct pci_device *dev)
{
    for (unsigned v = 0; v < dev->msix.nvec; v++)
        msix_route_sync(dev, v);
}

/* Send vector v (unmasked: its route, if any, matches the table entry). Device lock held. */
static void msix_send(struct pci_device *dev, unsigned v)
{
    const struct pci_msix_route *r = dev->msix.route ? &dev->msix.route[v] : NULL;
    if (r && r->handle >= 0) {
        uint64_t one = 1;
        /* Only EAGAIN (counter saturated, an interrupt already pending) can fail here. */
        if (write(r->fd, &one, sizeof(one)) == sizeof(one) || errno == EAGAIN)
            return;
    }
    const uint8_t *e = dev->msix.table + v * PCI_MSIX_ENTRY_SIZE;
    const struct pci_bus_io *io = dev->bus ? dev->bus->io : NULL;
    if (io && io->msi_send)
        io->msi_send(io->ctx, le_get64(e), le_get32(e + 8));
}

static bool pba_test(const struct pci_device *dev, unsigned v)
{
    return (dev->msix.pba[v / 64] >> (v % 64)) & 1;
}

/* Send what became unmasked while pending. Device lock held. */
static void msix_deliver_pending(struct pci_device *dev)
{
    if (!dev->msix.nvec || !pci_msix_enabled(dev))
        return;
    for (unsigned v = 0; v < dev->msix.nvec; v++) {
        if (pba_test(dev, v) && !vector_masked(dev, v)) {
            dev->msix.pba[v / 64] &= ~(1ULL << (v % 64));
            if (cfg16(dev, PCI_COMMAND) & PCI_COMMAND_MASTER)
                msix_send(dev, v);
        }
    }
}

/* The eventfd that raises vector v with no help from kemu now, or -1. Device lock held. */
static int direct_fd(struct pci_device *dev, unsigned v)
{
    const struct pci_msix_route *r = &dev->msix.route[v];
    if (r->handle < 0 || vector_masked(dev, v) || !(cfg16(dev, PCI_COMMAND) & PCI_COMMAND_MASTER))
        return -1;
    return r->fd;
}

/* Tell the device about watched vectors whose direct fd changed. Device lock held; called
 * after every change of the table, the MSI-X control, the command register or the routes. */
static void msix_direct_sync(struct pci_device *dev)
{
    if (!dev->msix.route || !dev->ops || !dev->ops->msix_direct)
        return;
    for (unsigned v = 0; v < dev->msix.nvec; v++) {
        struct pci_msix_route *r = &dev->msix.route[v];
        if (!r->watchers)
            continue;
        int fd = direct_fd(dev, v);
        if (fd != r->direct) {
            r->direct = fd;
            dev->ops->msix_direct(dev, v, fd);
        }
    }
}

void pci_msix_watch(struct pci_device *dev, unsigned vector, bool on)
{
    pthread_mutex_lock(&dev->lock);
    if (dev->msix.route && vector < dev->msix.nvec) {
        struct pci_msix_route *r = &dev->msix.route[vector];
        if (on) {
            r->watchers++;
            r->direct = -2; /* report to the new watcher */
        } else if (r->watchers) {
            r->watchers--;
        }
        msix_direct_sync(dev);
    }
    pthread_mutex_unlock(&dev->lock);
}

void pci_msix_notify(struct pci_device *dev, unsigned vector)
{
    pthread_mutex_lock(&dev->lock);
    if (vector < dev->msix.nvec && pci_msix_enabled(dev) &&
        (cfg16(dev, PCI_COMMAND) & PCI_COMMAND_MASTER)) {
        if (vector_masked(dev, vector))
            dev->msix.pba[vector / 64] |= 1ULL << (vector % 64);
        else
            msix_send(dev, vector);
    }
    pthread_mutex_unlock(&dev->lock);
}

static void msix_reset(struct pci_device *dev)
{
    struct pci_msix *m = &dev->msix;
    if (!m->nvec)
        return;
    memset(m->table, 0, (size_t)m->nvec * PCI_MSIX_ENTRY_SIZE);
    for (unsigned v = 0; v < m->nvec; v++)
        m->table[v * PCI_MSIX_ENTRY_SIZE + 12] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
    memset(m->pba, 0, (m->nvec + 63) / 64 * sizeof(uint64_t));
}

int pci_msix_init(struct pci_device *dev, unsigned nvec, unsigned bar, uint32_t table_off,
                  uint32_t pba_off, struct error *err)
{
    if (dev->msix.nvec)
        return error_setf(err, "%s: MSI-X is already set up", dev->name);
    if (nvec < 1 || nvec > PCI_MSIX_MAX_VECTORS)
        return error_setf(err, "%s: %u MSI-X vectors (1..%u)", dev->name, nvec,
                          PCI_MSIX_MAX_VECTORS);
    if (bar >= PCI_NUM_BARS || !dev->bar[bar].size || dev->bar[bar].type == PCI_BAR_TYPE_IO)
        return error_setf(err, "%s: MSI-X needs a memory BAR, BAR%u is not one", dev->name, bar);
    if ((table_off | pba_off) & 7)
        return error_setf(err, "%s: MSI-X table and PBA offsets must be 8-byte aligned", dev->name);
    uint64_t tlen = (uint64_t)nvec * PCI_MSIX_ENTRY_SIZE, plen = (nvec + 63) / 64 * 8ULL;
    uint64_t size = dev->bar[bar].size;
    if (table_off + tlen > size || pba_off + plen > size)
        return error_setf(err, "%s: MSI-X table or PBA does not fit BAR%u", dev->name, bar);
    if (table_off < pba_off + plen && pba_off < table_off + tlen)
        return error_setf(err, "%s: MSI-X table and PBA overlap", dev->name);
    int cap = pci_add_capability(dev, PCI_CAP_ID_MSIX, PCI_MSIX_CAP_LEN);
    if (cap < 0)
        return error_setf(err, "%s: no config space left for the MSI-X capability", dev->name);
    uint8_t *table = calloc(nvec, PCI_MSIX_ENTRY_SIZE);
    uint64_t *pba = calloc((nvec + 63) / 64, sizeof(uint64_t));
    struct pci_msix_route *route = calloc(nvec, sizeof(*route));
    if (!table || !pba || !route) {
        free(table);
        free(pba);
        free(route);
        return error_setf(err, "%s: out of memory", dev->name);
    }
    struct pci_msix *m = &dev->msix;
    m->nvec = nvec;
    m->bar = bar;
    m->table_off = table_off;
    m->pba_off = pba_off;
    m->cap = (unsigned)cap;
    m->table = table;
    m->pba = pba;
    m->route = route;
    for (unsigned v = 0; v < nvec; v++)
        route[v] = (struct pci_msix_route){.fd = -1, .handle = -1, .direct = -1};
    le_put16(dev->config + cap + PCI_MSIX_FLAGS, (uint16_t)(nvec - 1));
    set_wmask16(dev, (unsigned)cap + PCI_MSIX_FLAGS,
                PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    le_put32(dev->config + cap + PCI_MSIX_TABLE, table_off | bar);
    le_put32(dev->config + cap + PCI_MSIX_PBA, pba_off | bar);
    msix_reset(dev);
    return 0;
}

/* An access of size bytes at off inside a region of len bytes? */
static bool access_ok(uint64_t off, unsigned size, uint64_t len)
{
    return (size == 1 || size == 2 || size == 4 || size == 8) && off < len && size <= len - off;
}

uint64_t pci_msix_table_read(struct pci_device *dev, uint64_t off, unsigned size)
{
    uint64_t v = 0;
    pthread_mutex_lock(&dev->lock);
    if (dev->msix.nvec && access_ok(off, size, (uint64_t)dev->msix.nvec * PCI_MSIX_ENTRY_SIZE))
        for (unsigned i = 0; i < size; i++)
            v |= (uint64_t)dev->msix.table[off + i] << (8 * i);
    pthread_mutex_unlock(&dev->lock);
    return v;
}

void pci_msix_table_write(struct pci_device *dev, uint64_t off, unsigned size, uint64_t val)
{
    pthread_mutex_lock(&dev->lock);
    if (dev->msix.nvec && access_ok(off, size, (uint64_t)dev->msix.nvec * PCI_MSIX_ENTRY_SIZE)) {
        for (unsigned i = 0; i < size; i++) {
            uint64_t o = off + i;
            uint8_t b = (uint8_t)(val >> (8 * i));
            unsigned field = o % PCI_MSIX_ENTRY_SIZE;
            if (field == 12)
                b &= PCI_MSIX_ENTRY_CTRL_MASKBIT; /* only the mask bit is writable */
            else if (field > 12)
                continue; /* rest of vector control: reserved */
            dev->msix.table[o] = b;
        }
        for (uint64_t v = off / PCI_MSIX_ENTRY_SIZE; v <= (off + size - 1) / PCI_MSIX_ENTRY_SIZE;
             v++)
            msix_route_sync(dev, (unsigned)v);
        msix_deliver_pending(dev);
        msix_direct_sync(dev);
    }
    pthread_mutex_unlock(&dev->lock);
}

uint64_t pci_msix_pba_read(struct pci_device *dev, uint64_t off, unsigned size)
{
    uint64_t v = 0;
    pthread_mutex_lock(&dev->lock);
    if (dev->msix.nvec && access_ok(off, size, (dev->msix.nvec + 63) / 64 * 8ULL))
        for (unsigned i = 0; i < size; i++) {
            uint64_t o = off + i;
            v |= (dev->msix.pba[o / 8] >> (8 * (o % 8)) & 0xff) << (8 * i);
        }
    pthread_mutex_unlock(&dev->lock);
    return v;
}

bool pci_msix_bar_read(struct pci_device *dev, unsigned bar, uint64_t off, unsigned size,
                       uint64_t *val)
{
    const struct pci_msix *m = &dev->msix;
    if (!m->nvec || bar != m->bar)
        return false;
    uint64_t tlen = (uint64_t)m->nvec * PCI_MSIX_ENTRY_SIZE, plen = (m->nvec + 63) / 64 * 8ULL;
    if (off >= m->table_off && off - m->table_off < tlen) {
        *val = pci_msix_table_read(dev, off - m->table_off, size);
        return true;
    }
    if (off >= m->pba_off && off - m->pba_off < plen) {
        *val = pci_msix_pba_read(dev, off - m->pba_off, size);
        return true;
    }
    return false;
}

bool pci_msix_bar_write(struct pci_device *dev, unsigned bar, uint64_t off, unsigned size,
                        uint64_t val)
{
    const struct pci_msix *m = &dev->msix;
    if (!m->nvec || bar != m->bar)
        return false;
    uint64_t tlen = (uint64_t)m->nvec * PCI_MSIX_ENTRY_SIZE, plen = (m->nvec + 63) / 64 * 8ULL;
    if (off >= m->table_off && off - m->table_off < tlen) {
        pci_msix_table_write(dev, off - m->table_off, size, val);
        return true;
    }
    return off >= m->pba_off && off - m->pba_off < plen; /* the PBA is read-only */
}

/* ---- config space ------------------------------------------------------------------------ */

static bool config_access_ok(const struct pci_device *dev, unsigned off, unsigned size)
{
    return (size == 1 || size == 2 || size == 4) && off < dev->config_size &&
           size <= dev->config_size - off;
}

uint32_t pci_config_read(struct pci_device *dev, unsigned off, unsigned size)
{
    if (!config_access_ok(dev, off, size))
        return size >= 4 ? 0xffffffffu : (1u << (8 * size)) - 1;
    uint32_t v = 0;
    pthread_mutex_lock(&dev->lock);
    for (unsigned i = 0; i < size; i++)
        v |= (uint32_t)dev->config[off + i] << (8 * i);
    pthread_mutex_unlock(&dev->lock);
    return v;
}

static bool overlaps(unsigned off, unsigned size, unsigned start, unsigned len)
{
    return off < start + len && start < off + size;
}

void pci_config_write(struct pci_device *dev, unsigned off, unsigned size, uint32_t val)
{
    if (!config_access_ok(dev, off, size))
        return;
    pthread_mutex_lock(&dev->lock);
    bool msix_was = pci_msix_enabled(dev);
    for (unsigned i = 0; i < size; i++) {
        uint8_t b = (uint8_t)(val >> (8 * i)), wm = dev->wmask[off + i];
        uint8_t nv = (uint8_t)((dev->config[off + i] & ~wm) | (b & wm));
        nv &= (uint8_t) ~(b & dev->w1cmask[off + i]);
        dev->config[off + i] = nv;
    }
    if (overlaps(off, size, PCI_COMMAND, 2) || overlaps(off, size, PCI_BAR0, 24))
        update_mappings(dev);
    if (overlaps(off, size, PCI_COMMAND, 2) ||
        (dev->msix.nvec && overlaps(off, size, dev->msix.cap + PCI_MSIX_FLAGS, 2))) {
        if (msix_was != pci_msix_enabled(dev) || overlaps(off, size, PCI_COMMAND, 2))
            update_intx(dev);
        if (dev->msix.nvec && overlaps(off, size, dev->msix.cap + PCI_MSIX_FLAGS, 2))
            msix_routes_sync(dev);
        msix_deliver_pending(dev);
        msix_direct_sync(dev);
    }
    if (dev->ops && dev->ops->config_write)
        dev->ops->config_write(dev, off, size, val);
    pthread_mutex_unlock(&dev->lock);
}

void pci_device_reset(struct pci_device *dev)
{
    pthread_mutex_lock(&dev->lock);
    le_put16(dev->config + PCI_COMMAND, 0);
    le_put16(dev->config + PCI_STATUS, cfg16(dev, PCI_STATUS) & PCI_STATUS_CAP_LIST);
    dev->config[PCI_CACHE_LINE] = 0;
    dev->config[PCI_LATENCY_TIMER] = 0;
    dev->config[PCI_INTERRUPT_LINE] = 0;
    for (unsigned i = 0; i < PCI_NUM_BARS; i++) {
        const struct pci_bar *b = &dev->bar[i];
        if (!b->size)
            continue;
        le_put32(dev->config + PCI_BAR0 + 4 * i, bar_type_bits(b));
        if (b->type == PCI_BAR_TYPE_MEM64)
            le_put32(dev->config + PCI_BAR0 + 4 * i + 4, 0);
    }
    update_mappings(dev); /* decode is off: everything unmaps */
    if (dev->msix.nvec) {
        uint16_t ctrl = cfg16(dev, dev->msix.cap + PCI_MSIX_FLAGS);
        le_put16(dev->config + dev->msix.cap + PCI_MSIX_FLAGS,
                 ctrl & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL));
        msix_routes_release(dev);
        msix_reset(dev);
        msix_direct_sync(dev);
    }
    dev->intx_level = false;
    update_intx(dev);
    if (dev->ops && dev->ops->reset)
        dev->ops->reset(dev);
    pthread_mutex_unlock(&dev->lock);
}

/* ---- bus --------------------------------------------------------------------------------- */

void pci_bus_init(struct pci_bus *bus, const struct pci_bus_io *io)
{
    memset(bus, 0, sizeof(*bus));
    bus->first_auto_slot = 1; /* slot 0 is the host bridge */
    bus->io = io;
    lock_init(&bus->lock, false);
}

void pci_bus_destroy(struct pci_bus *bus)
{
    for (unsigned s = 0; s < PCI_SLOTS; s++)
        for (unsigned f = 0; f < PCI_FUNCS; f++) {
            struct pci_device *dev = bus->dev[s][f];
            if (!dev)
                continue;
            /* Its routes belong to the board's hypervisor: give them back while it is known. */
            pthread_mutex_lock(&dev->lock);
            msix_routes_release(dev);
            dev->bus = NULL;
            pthread_mutex_unlock(&dev->lock);
        }
    memset(bus->dev, 0, sizeof(bus->dev));
    pthread_mutex_destroy(&bus->lock);
}

static void update_multifunction(struct pci_bus *bus, unsigned slot)
{
    struct pci_device *f0 = bus->dev[slot][0];
    if (!f0)
        return;
    bool multi = false;
    for (unsigned f = 1; f < PCI_FUNCS; f++)
        multi |= bus->dev[slot][f] != NULL;
    if (multi)
        f0->config[PCI_HEADER_TYPE] |= PCI_HEADER_TYPE_MULTIFUNC;
    else
        f0->config[PCI_HEADER_TYPE] &= (uint8_t)~PCI_HEADER_TYPE_MULTIFUNC;
}

int pci_bus_add(struct pci_bus *bus, struct pci_device *dev, int slot, int func, struct error *err)
{
    if (dev->bus)
        return error_setf(err, "%s: already on a PCI bus", dev->name);
    if (func < 0)
        func = 0;
    if (slot < 0) {
        for (int s = (int)bus->first_auto_slot; s < PCI_SLOTS && slot < 0; s++) {
            bool empty = true;
            for (unsigned f = 0; f < PCI_FUNCS; f++)
                empty &= bus->dev[s][f] == NULL;
            if (empty)
                slot = s;
        }
        if (slot < 0)
            return error_setf(err, "%s: no free PCI slot left on bus 0", dev->name);
    }
    if (slot >= PCI_SLOTS)
        return error_setf(err, "%s: PCI slot %d is invalid (0..%d)", dev->name, slot,
                          PCI_SLOTS - 1);
    if (func < 0 || func >= PCI_FUNCS)
        return error_setf(err, "%s: PCI function %d is invalid (0..%d)", dev->name, func,
                          PCI_FUNCS - 1);
    struct pci_device *taken = bus->dev[slot][func];
    if (taken) {
        if (func)
            return error_setf(err, "PCI slot %d function %d is already in use by %s", slot, func,
                              taken->name);
        return error_setf(err, "PCI slot %d is already in use by %s", slot, taken->name);
    }
    bus->dev[slot][func] = dev;
    dev->bus = bus;
    dev->slot = (unsigned)slot;
    dev->func = (unsigned)func;
    update_multifunction(bus, (unsigned)slot);
    return 0;
}

struct pci_device *pci_bus_get(struct pci_bus *bus, unsigned slot, unsigned func)
{
    if (slot >= PCI_SLOTS || func >= PCI_FUNCS)
        return NULL;
    return bus->dev[slot][func];
}

void pci_bus_reset(struct pci_bus *bus)
{
    for (unsigned s = 0; s < PCI_SLOTS; s++)
        for (unsigned f = 0; f < PCI_FUNCS; f++)
            if (bus->dev[s][f])
                pci_device_reset(bus->dev[s][f]);
}

void pci_bus_set_intx_routing(struct pci_bus *bus, const uint8_t gsi_for_pirq[4])
{
    pthread_mutex_lock(&bus->lock);
    memcpy(bus->gsi_for_pirq, gsi_for_pirq, 4);
    bus->intx_routed = true;
    pthread_mutex_unlock(&bus->lock);
}

/* Take size bytes, aligned to size, from [*cursor, end). */
static bool window_take(uint64_t *cursor, uint64_t end, uint64_t size, uint64_t *addr)
{
    uint64_t a = (*cursor + size - 1) & ~(size - 1);
    if (a < *cursor || a > end || size > end - a)
        return false;
    *addr = a;
    *cursor = a + size;
    return true;
}

int pci_bus_assign_bars(struct pci_bus *bus, const struct pci_windows *win, struct error *err)
{
    uint64_t io = win->io_base, m32 = win->mem32_base, m64 = win->mem64_base;
    uint64_t io_end = win->io_base + win->io_len, m32_end = win->mem32_base + win->mem32_len;
    uint64_t m64_end = win->mem64_base + win->mem64_len;
    /* Largest sizes first keep every allocation naturally aligned without holes. */
    for (int shift = 63; shift >= 2; shift--) {
        uint64_t size = 1ULL << shift;
        for (unsigned s = 0; s < PCI_SLOTS; s++) {
            for (unsigned f = 0; f < PCI_FUNCS; f++) {
                struct pci_device *d = bus->dev[s][f];
                for (unsigned i = 0; d && i < PCI_NUM_BARS; i++) {
                    const struct pci_bar *b = &d->bar[i];
                    if (b->size != size)
                        continue;
                    uint64_t addr;
                    bool ok;
                    if (b->type == PCI_BAR_TYPE_IO)
                        ok = window_take(&io, io_end, size, &addr);
                    else if (b->type == PCI_BAR_TYPE_MEM64 && win->mem64_len)
                        ok = window_take(&m64, m64_end, size, &addr);
                    else
                        ok = window_take(&m32, m32_end, size, &addr);
                    if (!ok)
                        return error_setf(err,
                                          "%s (PCI %02x.%x): no room for BAR%u of 0x%llx bytes",
                                          d->name, s, f, i, (unsigned long long)size);
                    pci_config_write(d, PCI_BAR0 + 4 * i, 4, (uint32_t)addr);
                    if (b->type == PCI_BAR_TYPE_MEM64)
                        pci_config_write(d, PCI_BAR0 + 4 * i + 4, 4, (uint32_t)(addr >> 32));
                }
            }
        }
    }
    for (unsigned s = 0; s < PCI_SLOTS; s++) {
        for (unsigned f = 0; f < PCI_FUNCS; f++) {
            struct pci_device *d = bus->dev[s][f];
            if (!d)
                continue;
            uint16_t cmd = (uint16_t)pci_config_read(d, PCI_COMMAND, 2);
            for (unsigned i = 0; i < PCI_NUM_BARS; i++)
                if (d->bar[i].size)
                    cmd |= d->bar[i].type == PCI_BAR_TYPE_IO ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
            pci_config_write(d, PCI_COMMAND, 2, cmd);
            int gsi = pci_device_gsi(d);
            if (gsi >= 0 && gsi < 0xff)
                pci_config_write(d, PCI_INTERRUPT_LINE, 1, (uint32_t)gsi);
        }
    }
    return 0;
}

/* A decimal or 0x-hex number up to max; *end set past it. */
static bool parse_num(const char *s, const char **end, unsigned max, int *out)
{
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!isxdigit((unsigned char)s[0]) || (base == 10 && !isdigit((unsigned char)s[0])))
        return false;
    unsigned long v = 0;
    const char *p = s;
    for (; *p; p++) {
        unsigned d;
        if (isdigit((unsigned char)*p))
            d = (unsigned)(*p - '0');
        else if (base == 16 && isxdigit((unsigned char)*p))
            d = (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
        else
            break;
        v = v * (unsigned)base + d;
        if (v > max)
            return false;
    }
    *end = p;
    *out = (int)v;
    return true;
}

int pci_parse_addr(const char *s, int *slot, int *func, struct error *err)
{
    const char *p;
    int sl, fn = 0;
    if (!s || !parse_num(s, &p, PCI_SLOTS - 1, &sl))
        return error_setf(err, "invalid PCI address '%s': want slot[.function], slot 0..%d",
                          s ? s : "", PCI_SLOTS - 1);
    if (*p == '.') {
        const char *q;
        if (!parse_num(p + 1, &q, PCI_FUNCS - 1, &fn) || *q)
            return error_setf(err, "invalid PCI address '%s': function must be 0..%d", s,
                              PCI_FUNCS - 1);
    } else if (*p) {
        return error_setf(err, "invalid PCI address '%s': want slot[.function]", s);
    }
    *slot = sl;
    *func = fn;
    return 0;
}

/* Names from the PCI code and ID assignment specification, the ones QEMU 7.2 prints (it has
 * none for 0x0780, virtio-serial's class, nor for 0x00ff, virtio-rng's). */
static const struct {
    uint16_t class_code;
    const char *desc;
} class_names[] = {
    {0x0100, "SCSI controller"},     {0x0101, "IDE controller"},
    {0x0102, "Floppy controller"},   {0x0104, "RAID controller"},
    {0x0106, "SATA controller"},     {0x0180, "Storage controller"},
    {0x0200, "Ethernet controller"}, {0x0280, "Network controller"},
    {0x0300, "VGA controller"},      {0x0380, "Display controller"},
    {0x0401, "Audio controller"},    {0x0480, "Multimedia controller"},
    {0x0500, "RAM controller"},      {0x0580, "Memory controller"},
    {0x0600, "Host bridge"},         {0x0601, "ISA bridge"},
    {0x0604, "PCI bridge"},          {0x0680, "Bridge"},
    {0x0700, "Serial port"},         {0x0701, "Parallel port"},
    {0x0c03, "USB controller"},      {0x0c05, "SMBus"},
};

const char *pci_class_desc(uint16_t class_code)
{
    for (size_t i = 0; i < sizeof(class_names) / sizeof(class_names[0]); i++)
        if (class_names[i].class_code == class_code)
            return class_names[i].desc;
    return NULL;
}
