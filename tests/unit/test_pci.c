/* Unit tests for the PCI device model, bus 0, MSI-X and the i440FX mechanism #1 host bridge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/bus.h"
#include "pci/host.h"
#include "pci/pci.h"

/* ---- a fake board -------------------------------------------------------------------------- */

#define MAX_EVENTS 64

struct fake {
    struct bus pio, mmio;
    unsigned maps, unmaps;
    uint64_t last_map, last_unmap;
    bool last_mmio;
    unsigned msis;
    uint64_t msi_addr;
    uint32_t msi_data;
    int gsi_level[24];
    unsigned irq_calls;
    unsigned bar_map_calls;
    bool bar_map_enabled;
    uint64_t bar_map_addr;
    unsigned cfg_writes;
    unsigned direct_calls; /* ops->msix_direct */
    unsigned direct_vec;
    int direct_fd;
};

static int fake_map(void *ctx, bool mmio, uint64_t base, uint64_t len, const struct bus_ops *ops,
                    void *opaque)
{
    struct fake *f = ctx;
    f->maps++;
    f->last_map = base;
    f->last_mmio = mmio;
    return bus_register(mmio ? &f->mmio : &f->pio, base, len, ops, opaque, "bar", NULL);
}

/* What the proposed bus_unregister does, done here on the bus's own array. */
static void fake_unmap(void *ctx, bool mmio, uint64_t base, void *opaque)
{
    struct fake *f = ctx;
    struct bus *b = mmio ? &f->mmio : &f->pio;
    f->unmaps++;
    f->last_unmap = base;
    for (unsigned i = 0; i < b->nr; i++) {
        if (b->ranges[i].base == base && b->ranges[i].opaque == opaque) {
            memmove(&b->ranges[i], &b->ranges[i + 1], (b->nr - i - 1) * sizeof(b->ranges[0]));
            b->nr--;
            return;
        }
    }
    fail_msg("unmap of 0x%llx that was not mapped", (unsigned long long)base);
}

static void fake_msi(void *ctx, uint64_t addr, uint32_t data)
{
    struct fake *f = ctx;
    f->msis++;
    f->msi_addr = addr;
    f->msi_data = data;
}

static void fake_irq(void *ctx, unsigned gsi, int level)
{
    struct fake *f = ctx;
    assert_true(gsi < 24);
    f->gsi_level[gsi] = level;
    f->irq_calls++;
}

static struct fake fake;
static const struct pci_bus_io fake_io = {
    .map = fake_map, .unmap = fake_unmap, .msi_send = fake_msi, .set_irq = fake_irq, .ctx = &fake};

static void on_bar_map(struct pci_device *dev, unsigned bar, uint64_t addr, bool enabled)
{
    fake.bar_map_calls++;
    fake.bar_map_enabled = enabled;
    fake.bar_map_addr = addr;
}

static void on_config_write(struct pci_device *dev, unsigned off, unsigned size, uint32_t val)
{
    fake.cfg_writes++;
}

static void on_msix_direct(struct pci_device *dev, unsigned vector, int fd)
{
    fake.direct_calls++;
    fake.direct_vec = vector;
    fake.direct_fd = fd;
}

static const struct pci_device_ops test_ops = {
    .bar_map = on_bar_map, .config_write = on_config_write, .msix_direct = on_msix_direct};

/* A BAR's register space: a byte array, MSI-X forwarded. */
struct test_dev {
    struct pci_device pci;
    uint8_t regs[0x1000];
};

static uint64_t bar_read(void *opaque, uint64_t off, unsigned size)
{
    struct test_dev *t = opaque;
    uint64_t v = 0;
    if (pci_msix_bar_read(&t->pci, 4, off, size, &v))
        return v;
    if (off < sizeof(t->regs) && size <= sizeof(t->regs) - off)
        for (unsigned i = 0; i < size; i++)
            v |= (uint64_t)t->regs[off + i] << (8 * i);
    return v;
}

static void bar_write(void *opaque, uint64_t off, unsigned size, uint64_t val)
{
    struct test_dev *t = opaque;
    if (pci_msix_bar_write(&t->pci, 4, off, size, val))
        return;
    if (off < sizeof(t->regs) && size <= sizeof(t->regs) - off)
        for (unsigned i = 0; i < size; i++)
            t->regs[off + i] = (uint8_t)(val >> (8 * i));
}

static const struct bus_ops test_bar_ops = {.read = bar_read, .write = bar_write};

struct env {
    struct pci_bus bus;
    struct pci_host host;
    struct test_dev *t;
};

/* Bridge at 00:00.0, a device at 00:03.0 with I/O BAR0 (64 B), 32-bit BAR1 (4 KiB),
 * 64-bit prefetchable BAR2 (16 KiB) and 64-bit BAR4 (16 KiB) holding MSI-X (4 vectors). */
static int setup(void **state)
{
    memset(&fake, 0, sizeof(fake));
    bus_init(&fake.pio, "pio");
    bus_init(&fake.mmio, "mmio");
    struct env *e = calloc(1, sizeof(*e));
    e->t = calloc(1, sizeof(*e->t));
    struct error err = {0};
    pci_bus_init(&e->bus, &fake_io);
    assert_int_equal(pci_host_init(&e->host, &e->bus, &err), 0);
    struct pci_device *d = &e->t->pci;
    pci_device_init(d, "test-dev", &test_ops, e->t, 0x1af4, 0x1042, 0x010000, 1, 1);
    pci_device_set_subsystem(d, 0x1af4, 0x1100);
    assert_int_equal(pci_bar_init(d, 0, PCI_BAR_TYPE_IO, false, 64, &test_bar_ops, e->t, &err), 0);
    assert_int_equal(
        pci_bar_init(d, 1, PCI_BAR_TYPE_MEM32, false, 0x1000, &test_bar_ops, e->t, &err), 0);
    assert_int_equal(
        pci_bar_init(d, 2, PCI_BAR_TYPE_MEM64, true, 0x4000, &test_bar_ops, e->t, &err), 0);
    assert_int_equal(
        pci_bar_init(d, 4, PCI_BAR_TYPE_MEM64, false, 0x4000, &test_bar_ops, e->t, &err), 0);
    assert_int_equal(pci_msix_init(d, 4, 4, 0x2000, 0x3000, &err), 0);
    assert_int_equal(pci_bus_add(&e->bus, d, 3, 0, &err), 0);
    assert_int_equal(pci_host_register_ports(&e->host, &fake.pio, &err), 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    pci_bus_destroy(&e->bus);
    pci_device_destroy(&e->t->pci);
    pci_host_destroy(&e->host);
    bus_destroy(&fake.pio);
    bus_destroy(&fake.mmio);
    free(e->t);
    free(e);
    return 0;
}

static uint32_t cfg_rd(struct env *e, unsigned reg, unsigned size)
{
    return pci_config_read(&e->t->pci, reg, size);
}

static void cfg_wr(struct env *e, unsigned reg, unsigned size, uint32_t v)
{
    pci_config_write(&e->t->pci, reg, size, v);
}

/* ---- config space ------------------------------------------------------------------------ */

static void test_readonly_fields(void **state)
{
    struct env *e = *state;
    cfg_wr(e, PCI_VENDOR_ID, 4, 0x12345678);
    assert_int_equal(cfg_rd(e, PCI_VENDOR_ID, 4), 0x10421af4);
    cfg_wr(e, PCI_REVISION_ID, 4, 0xffffffff);
    assert_int_equal(cfg_rd(e, PCI_REVISION_ID, 4), 0x01000001);
    cfg_wr(e, PCI_HEADER_TYPE, 1, 0xff);
    assert_int_equal(cfg_rd(e, PCI_HEADER_TYPE, 1), 0);
    cfg_wr(e, PCI_SUBSYS_VENDOR, 4, 0);
    assert_int_equal(cfg_rd(e, PCI_SUBSYS_VENDOR, 4), 0x11001af4);
    uint8_t cap = (uint8_t)cfg_rd(e, PCI_CAP_PTR, 1);
    cfg_wr(e, PCI_CAP_PTR, 1, 0x80);
    assert_int_equal(cfg_rd(e, PCI_CAP_PTR, 1), cap);
    cfg_wr(e, PCI_INTERRUPT_PIN, 1, 3);
    assert_int_equal(cfg_rd(e, PCI_INTERRUPT_PIN, 1), 1);
    /* Writable: interrupt line, cache line size, latency timer. */
    cfg_wr(e, PCI_INTERRUPT_LINE, 1, 11);
    assert_int_equal(cfg_rd(e, PCI_INTERRUPT_LINE, 1), 11);
    cfg_wr(e, PCI_CACHE_LINE, 2, 0x4010);
    assert_int_equal(cfg_rd(e, PCI_CACHE_LINE, 2), 0x4010);
    /* Command: only the implemented bits stick. */
    cfg_wr(e, PCI_COMMAND, 2, 0xffff);
    assert_int_equal(cfg_rd(e, PCI_COMMAND, 2), 0x0547);
    cfg_wr(e, PCI_COMMAND, 2, 0);
    /* No expansion ROM: sizing reads 0. */
    cfg_wr(e, PCI_ROM_ADDRESS, 4, 0xffffffff);
    assert_int_equal(cfg_rd(e, PCI_ROM_ADDRESS, 4), 0);
    /* Out-of-range and odd sizes: all-ones, no crash. */
    assert_int_equal(cfg_rd(e, 0xfe, 4), 0xffffffff);
    assert_int_equal(cfg_rd(e, 0x100, 1), 0xff);
    assert_int_equal(cfg_rd(e, 0x10, 3), 0xffffff);
    cfg_wr(e, 0xff, 4, 0);
    assert_true(fake.cfg_writes > 0);
}

static void test_status_w1c(void **state)
{
    struct env *e = *state;
    struct pci_device *d = &e->t->pci;
    assert_true(cfg_rd(e, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    d->config[PCI_STATUS + 1] |= 0xf9; /* the device reports errors */
    cfg_wr(e, PCI_STATUS, 2, 0x0800);  /* clear signalled target abort only */
    assert_int_equal(cfg_rd(e, PCI_STATUS, 2), 0xf100 | PCI_STATUS_CAP_LIST);
    cfg_wr(e, PCI_STATUS, 2, 0xffff); /* cap list and interrupt status are read-only */
    assert_int_equal(cfg_rd(e, PCI_STATUS, 2), PCI_STATUS_CAP_LIST);
    /* A dword write to the command register with zero status leaves status alone. */
    d->config[PCI_STATUS + 1] |= 0x80;
    cfg_wr(e, PCI_COMMAND, 4, 0x00000000);
    assert_int_equal(cfg_rd(e, PCI_STATUS, 2), 0x8000 | PCI_STATUS_CAP_LIST);
}

/* ---- BARs -------------------------------------------------------------------------------- */

static void test_bar_sizing(void **state)
{
    struct env *e = *state;
    /* I/O, 64 bytes */
    assert_int_equal(cfg_rd(e, 0x10, 4), 0x1);
    cfg_wr(e, 0x10, 4, 0xffffffff);
    assert_int_equal(cfg_rd(e, 0x10, 4), 0xffffffc1);
    /* 32-bit memory, 4 KiB */
    assert_int_equal(cfg_rd(e, 0x14, 4), 0x0);
    cfg_wr(e, 0x14, 4, 0xffffffff);
    assert_int_equal(cfg_rd(e, 0x14, 4), 0xfffff000);
    /* 64-bit prefetchable, 16 KiB */
    assert_int_equal(cfg_rd(e, 0x18, 4), 0xc);
    cfg_wr(e, 0x18, 4, 0xffffffff);
    cfg_wr(e, 0x1c, 4, 0xffffffff);
    assert_int_equal(cfg_rd(e, 0x18, 4), 0xffffc00c);
    assert_int_equal(cfg_rd(e, 0x1c, 4), 0xffffffff);
    /* 64-bit non-prefetchable */
    assert_int_equal(cfg_rd(e, 0x20, 4), 0x4);
    /* Unimplemented BAR reads 0 after sizing. */
    struct pci_device plain;
    pci_device_init(&plain, "plain", NULL, NULL, 1, 2, 0xff0000, 0, 0);
    pci_config_write(&plain, 0x10, 4, 0xffffffff);
    assert_int_equal(pci_config_read(&plain, 0x10, 4), 0);
    pci_device_destroy(&plain);
    /* Nothing maps while decode is off. */
    assert_int_equal(fake.maps, 0);
}

static void test_bar_init_errors(void **state)
{
    struct pci_device d;
    struct error err = {0};
    pci_device_init(&d, "bad", NULL, NULL, 1, 2, 0xff0000, 0, 0);
    assert_int_equal(pci_bar_init(&d, 6, PCI_BAR_TYPE_IO, false, 16, NULL, NULL, &err), -1);
    err.set = false;
    assert_int_equal(pci_bar_init(&d, 5, PCI_BAR_TYPE_MEM64, false, 16, NULL, NULL, &err), -1);
    err.set = false;
    assert_int_equal(pci_bar_init(&d, 0, PCI_BAR_TYPE_MEM32, false, 0x3000, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "power of two"));
    err.set = false;
    assert_int_equal(pci_bar_init(&d, 0, PCI_BAR_TYPE_MEM64, false, 0x1000, NULL, NULL, &err), 0);
    assert_int_equal(pci_bar_init(&d, 1, PCI_BAR_TYPE_IO, false, 16, NULL, NULL, &err), -1);
    err.set = false;
    assert_int_equal(pci_bar_init(&d, 2, PCI_BAR_TYPE_IO, true, 16, NULL, NULL, &err), -1);
    err.set = false;
    assert_int_equal(pci_msix_init(&d, 4, 2, 0, 0x100, &err), -1); /* BAR2 not declared */
    err.set = false;
    assert_int_equal(pci_msix_init(&d, 4, 0, 0, 0x20, &err), -1); /* table and PBA overlap */
    err.set = false;
    assert_int_equal(pci_msix_init(&d, 300, 0, 0, 0x100, &err), -1); /* does not fit */
    err.set = false;
    assert_int_equal(pci_msix_init(&d, 4, 0, 4, 0x100, &err), -1); /* unaligned */
    pci_device_destroy(&d);
}

static void test_bar_mapping(void **state)
{
    struct env *e = *state;
    cfg_wr(e, 0x10, 4, 0xc000);
    cfg_wr(e, 0x14, 4, 0xfebc0000);
    cfg_wr(e, 0x18, 4, 0x00000000);
    cfg_wr(e, 0x1c, 4, 0x00000001); /* 0x1_0000_0000 */
    assert_int_equal(fake.maps, 0);

    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_IO);
    assert_int_equal(fake.maps, 1);
    assert_false(fake.last_mmio);
    assert_int_equal(fake.last_map, 0xc000);
    assert_int_equal(fake.bar_map_calls, 1);
    assert_true(fake.bar_map_enabled);
    uint64_t v;
    assert_true(bus_write(&fake.pio, 0xc004, 2, 0xbeef));
    assert_true(bus_read(&fake.pio, 0xc004, 2, &v));
    assert_int_equal(v, 0xbeef);
    assert_int_equal(e->t->regs[4], 0xef);

    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    assert_int_equal(fake.maps, 3); /* + BAR1, BAR2 at 4G; BAR4 at 0 stays unmapped */
    assert_int_equal(fake.mmio.nr, 2);
    assert_non_null(bus_find(&fake.mmio, 0xfebc0fff));
    assert_non_null(bus_find(&fake.mmio, 0x100003fffULL));
    assert_int_equal(pci_bar_address(&e->t->pci, 2), 0x100000000ULL);

    /* Move BAR1 with decode on: unmapped from the old place, mapped at the new one. */
    cfg_wr(e, 0x14, 4, 0xfebd0000);
    assert_int_equal(fake.unmaps, 1);
    assert_int_equal(fake.last_unmap, 0xfebc0000);
    assert_int_equal(fake.last_map, 0xfebd0000);
    assert_null(bus_find(&fake.mmio, 0xfebc0000));
    assert_non_null(bus_find(&fake.mmio, 0xfebd0000));
    assert_false(fake.bar_map_enabled == false);

    /* Sizing with decode on: all-ones is not an address, so the BAR unmaps. */
    cfg_wr(e, 0x14, 4, 0xffffffff);
    assert_null(bus_find(&fake.mmio, 0xfebd0000));
    assert_false(fake.bar_map_enabled);
    assert_int_equal(fake.bar_map_addr, 0xfebd0000);
    cfg_wr(e, 0x14, 4, 0xfebd0000);
    assert_non_null(bus_find(&fake.mmio, 0xfebd0000));

    /* Memory decode off: both memory BARs go, the I/O BAR stays. */
    unsigned unmaps = fake.unmaps;
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_IO);
    assert_int_equal(fake.unmaps, unmaps + 2);
    assert_int_equal(fake.mmio.nr, 0);
    assert_non_null(bus_find(&fake.pio, 0xc000));

    /* An I/O BAR beyond 64 KiB is not decoded. */
    cfg_wr(e, 0x10, 4, 0x10000);
    assert_null(bus_find(&fake.pio, 0xc000));
    assert_int_equal(fake.pio.nr, 3); /* just the host bridge ports */

    /* Reset unmaps everything and clears the BARs. */
    cfg_wr(e, 0x10, 4, 0xc000);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    assert_int_equal(fake.mmio.nr, 2);
    pci_bus_reset(&e->bus);
    assert_int_equal(fake.mmio.nr, 0);
    assert_int_equal(fake.pio.nr, 3);
    assert_int_equal(cfg_rd(e, 0x14, 4), 0);
    assert_int_equal(cfg_rd(e, 0x10, 4), 1);
}

static void test_bar_overlap_map_failure(void **state)
{
    struct env *e = *state;
    /* Two BARs programmed at the same address: the second cannot be registered and stays off. */
    cfg_wr(e, 0x14, 4, 0xfe000000);
    cfg_wr(e, 0x18, 4, 0xfe000000);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    assert_int_equal(fake.mmio.nr, 1);
    assert_int_equal(e->t->pci.bar[2].addr, PCI_BAR_UNMAPPED);
    /* Move BAR1 away: BAR2 can now take its place on the next write. */
    cfg_wr(e, 0x14, 4, 0xfd000000);
    assert_int_equal(fake.mmio.nr, 2);
    assert_int_equal(e->t->pci.bar[2].addr, 0xfe000000);
}

/* ---- capabilities ------------------------------------------------------------------------ */

static void test_capability_chain(void **state)
{
    struct pci_device d;
    pci_device_init(&d, "caps", NULL, NULL, 1, 2, 0xff0000, 0, 0);
    assert_false(pci_config_read(&d, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    assert_int_equal(pci_config_read(&d, PCI_CAP_PTR, 1), 0);
    int a = pci_add_capability(&d, PCI_CAP_ID_VNDR, 16);
    int b = pci_add_capability(&d, PCI_CAP_ID_VNDR, 5);
    int c = pci_add_capability(&d, 0x05, 14);
    assert_int_equal(a, 0x40);
    assert_int_equal(b, 0x50);
    assert_int_equal(c, 0x58); /* dword aligned */
    assert_true(pci_config_read(&d, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    /* Walk as a driver does. */
    uint8_t want[] = {PCI_CAP_ID_VNDR, PCI_CAP_ID_VNDR, 0x05};
    unsigned off = pci_config_read(&d, PCI_CAP_PTR, 1), n = 0;
    while (off) {
        assert_true(n < 3);
        assert_int_equal(pci_config_read(&d, off, 1), want[n++]);
        off = pci_config_read(&d, off + 1, 1);
    }
    assert_int_equal(n, 3);
    assert_int_equal(pci_find_capability(&d, 0x05), 0x58);
    assert_int_equal(pci_find_capability(&d, 0x10), 0);
    /* Next pointers and bodies are read-only unless the device says otherwise. */
    pci_config_write(&d, a, 4, 0xffffffff);
    assert_int_equal(pci_config_read(&d, a, 2), 0x5009);
    d.wmask[a + 4] = 0xff;
    pci_config_write(&d, a + 4, 1, 0x5a);
    assert_int_equal(pci_config_read(&d, a + 4, 1), 0x5a);
    /* Full: no room for 200 more bytes. */
    assert_int_equal(pci_add_capability(&d, 0x09, 200), -1);
    assert_int_equal(pci_add_capability(&d, 0x09, 1), -1);
    pci_device_destroy(&d);
}

/* ---- bus, slots, addresses --------------------------------------------------------------- */

static void test_slots(void **state)
{
    struct env *e = *state;
    struct error err = {0};
    struct pci_device a, b, c, f1;
    pci_device_init(&a, "virtio-blk-pci", NULL, NULL, 0x1af4, 0x1001, 0x010000, 0, 1);
    pci_device_init(&b, "virtio-net-pci", NULL, NULL, 0x1af4, 0x1000, 0x020000, 0, 1);
    pci_device_init(&c, "e1000", NULL, NULL, 0x8086, 0x100e, 0x020000, 0, 1);
    pci_device_init(&f1, "func1", NULL, NULL, 0x8086, 0x100e, 0x020000, 0, 1);
    /* Auto placement: first free from 1 (3 is taken by the test device). */
    assert_int_equal(pci_bus_add(&e->bus, &a, -1, 0, &err), 0);
    assert_int_equal(a.slot, 1);
    assert_int_equal(pci_bus_add(&e->bus, &b, 4, 0, &err), 0);
    assert_int_equal(pci_bus_add(&e->bus, &c, 4, 0, &err), -1);
    assert_string_equal(err.msg, "PCI slot 4 is already in use by virtio-net-pci");
    err = (struct error){0};
    assert_int_equal(pci_bus_add(&e->bus, &c, 0, 0, &err), -1);
    assert_non_null(strstr(err.msg, "i440FX"));
    err = (struct error){0};
    assert_int_equal(pci_bus_add(&e->bus, &c, 32, 0, &err), -1);
    assert_non_null(strstr(err.msg, "slot 32 is invalid"));
    err = (struct error){0};
    assert_int_equal(pci_bus_add(&e->bus, &c, 5, 8, &err), -1);
    assert_non_null(strstr(err.msg, "function 8 is invalid"));
    err = (struct error){0};
    assert_int_equal(pci_bus_add(&e->bus, &c, -1, 0, &err), 0);
    assert_int_equal(c.slot, 2);
    /* A second function sets the multi-function bit of function 0. */
    assert_int_equal(pci_config_read(&b, PCI_HEADER_TYPE, 1), 0);
    assert_int_equal(pci_bus_add(&e->bus, &f1, 4, 1, &err), 0);
    assert_int_equal(pci_config_read(&b, PCI_HEADER_TYPE, 1), 0x80);
    assert_ptr_equal(pci_bus_get(&e->bus, 4, 1), &f1);
    assert_null(pci_bus_get(&e->bus, 4, 9));
    assert_null(pci_bus_get(&e->bus, 40, 0));
    /* Already on a bus. */
    assert_int_equal(pci_bus_add(&e->bus, &f1, 9, 0, &err), -1);
    /* Fill the bus: slots 5..31 are free (27), then it is full. */
    struct pci_device *many = calloc(27, sizeof(*many));
    for (unsigned i = 0; i < 27; i++) {
        pci_device_init(&many[i], "filler", NULL, NULL, 1, 1, 0xff0000, 0, 0);
        assert_int_equal(pci_bus_add(&e->bus, &many[i], -1, 0, &err), 0);
    }
    struct pci_device extra;
    pci_device_init(&extra, "extra", NULL, NULL, 1, 1, 0xff0000, 0, 0);
    err = (struct error){0};
    assert_int_equal(pci_bus_add(&e->bus, &extra, -1, 0, &err), -1);
    assert_non_null(strstr(err.msg, "no free PCI slot"));
    pci_bus_destroy(&e->bus);
    pci_bus_init(&e->bus, &fake_io);
    /* A board that keeps slots for devices QEMU has there: placement starts after them, an
     * explicit address still goes anywhere free. */
    struct pci_device g, h;
    pci_device_init(&g, "g", NULL, NULL, 1, 1, 0xff0000, 0, 0);
    pci_device_init(&h, "h", NULL, NULL, 1, 1, 0xff0000, 0, 0);
    e->bus.first_auto_slot = 3;
    assert_int_equal(pci_bus_add(&e->bus, &g, -1, 0, &err), 0);
    assert_int_equal(g.slot, 3);
    assert_int_equal(pci_bus_add(&e->bus, &h, 1, 0, &err), 0);
    pci_bus_destroy(&e->bus);
    pci_bus_init(&e->bus, &fake_io);
    pci_device_destroy(&g);
    pci_device_destroy(&h);
    for (unsigned i = 0; i < 27; i++)
        pci_device_destroy(&many[i]);
    free(many);
    pci_device_destroy(&a);
    pci_device_destroy(&b);
    pci_device_destroy(&c);
    pci_device_destroy(&f1);
    pci_device_destroy(&extra);
}

static void test_parse_addr(void **state)
{
    static const struct {
        const char *s;
        int slot, func;
    } good[] = {{"4", 4, 0},         {"0x4", 4, 0},   {"4.0", 4, 0},
                {"0x04.1", 4, 1},    {"31.7", 31, 7}, {"0x1f", 31, 0},
                {"0X1F.0x7", 31, 7}, {"0", 0, 0},     {"010", 10, 0}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct error err = {0};
        int s = -1, f = -1;
        assert_int_equal(pci_parse_addr(good[i].s, &s, &f, &err), 0);
        assert_int_equal(s, good[i].slot);
        assert_int_equal(f, good[i].func);
    }
    static const char *bad[] = {
        "",  "x",   "32",   "0x20",           "4.8", "4.", ".1", "4.1.2", "-1", "4 ", "0x",
        "a", "4,1", "4.0x", "99999999999999", "1f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct error err = {0};
        int s = -1, f = -1;
        assert_int_equal(pci_parse_addr(bad[i], &s, &f, &err), -1);
        assert_true(err.set);
        assert_int_equal(s, -1);
    }
    struct error err = {0};
    int s, f;
    assert_int_equal(pci_parse_addr(NULL, &s, &f, &err), -1);
}

/* ---- INTx -------------------------------------------------------------------------------- */

static void test_intx(void **state)
{
    struct env *e = *state;
    struct pci_device *d = &e->t->pci;
    static const uint8_t gsi[4] = {10, 10, 11, 11};
    assert_int_equal(pci_device_gsi(d), -1); /* not routed yet */
    pci_bus_set_intx_routing(&e->bus, gsi);
    /* Swizzle: slot 3 pin A -> PIRQ (3 + 1 - 1) % 4 = 3 -> GSI 11. */
    assert_int_equal(pci_intx_pirq(3, 1), 3);
    assert_int_equal(pci_intx_pirq(1, 1), 1);
    assert_int_equal(pci_intx_pirq(4, 2), 1);
    assert_int_equal(pci_intx_pirq(0, 4), 3);
    assert_int_equal(pci_intx_pirq(5, 0), -1);
    assert_int_equal(pci_device_gsi(d), 11);
    assert_int_equal(pci_device_gsi(&e->host.dev), -1); /* no pin */

    pci_set_irq(d, 1);
    assert_int_equal(fake.gsi_level[11], 1);
    assert_true(cfg_rd(e, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
    pci_set_irq(d, 0);
    assert_int_equal(fake.gsi_level[11], 0);
    assert_false(cfg_rd(e, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);

    /* INTx disable: the status bit still shows the request, the line stays low. */
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    pci_set_irq(d, 1);
    assert_int_equal(fake.gsi_level[11], 0);
    assert_true(cfg_rd(e, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
    cfg_wr(e, PCI_COMMAND, 2, 0); /* re-enabled while pending: the line rises */
    assert_int_equal(fake.gsi_level[11], 1);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    assert_int_equal(fake.gsi_level[11], 0);
    cfg_wr(e, PCI_COMMAND, 2, 0);

    /* Sharing: a second device on the same PIRQ (slot 7 pin A -> PIRQ 3). */
    struct pci_device other;
    struct error err = {0};
    pci_device_init(&other, "other", NULL, NULL, 1, 2, 0xff0000, 0, 1);
    assert_int_equal(pci_bus_add(&e->bus, &other, 7, 0, &err), 0);
    pci_set_irq(&other, 1);
    pci_set_irq(d, 0);
    assert_int_equal(fake.gsi_level[11], 1); /* still held by the other device */
    pci_set_irq(&other, 0);
    assert_int_equal(fake.gsi_level[11], 0);
    /* Pin B of slot 7 -> PIRQ 0 -> GSI 10 */
    assert_int_equal(pci_intx_pirq(7, 2), 0);

    /* Reset drops the line. */
    pci_set_irq(d, 1);
    assert_int_equal(fake.gsi_level[11], 1);
    pci_device_reset(d);
    assert_int_equal(fake.gsi_level[11], 0);
    assert_false(cfg_rd(e, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
    pci_bus_destroy(&e->bus);
    pci_bus_init(&e->bus, &fake_io);
    pci_device_destroy(&other);
}

/* ---- MSI-X ------------------------------------------------------------------------------- */

static void msix_enable(struct env *e, uint16_t flags)
{
    unsigned cap = pci_find_capability(&e->t->pci, PCI_CAP_ID_MSIX);
    cfg_wr(e, cap + PCI_MSIX_FLAGS, 2, flags);
}

/* Map BAR4 (64-bit, MSI-X table at +0x2000) at 0xfe000000 as a guest would, with memory
 * decoding and bus mastering on. */
static void map_bar4(struct env *e)
{
    cfg_wr(e, 0x20, 4, 0xfe000004);
    cfg_wr(e, 0x24, 4, 0);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}

static void test_msix(void **state)
{
    struct env *e = *state;
    struct pci_device *d = &e->t->pci;
    unsigned cap = pci_find_capability(d, PCI_CAP_ID_MSIX);
    assert_true(cap >= 0x40);
    assert_int_equal(cfg_rd(e, cap + PCI_MSIX_FLAGS, 2), 3); /* table size N-1 */
    assert_int_equal(cfg_rd(e, cap + PCI_MSIX_TABLE, 4), 0x2004);
    assert_int_equal(cfg_rd(e, cap + PCI_MSIX_PBA, 4), 0x3004);
    cfg_wr(e, cap + PCI_MSIX_FLAGS, 2, 0x3fff); /* only the enable/mask bits are writable */
    assert_int_equal(cfg_rd(e, cap + PCI_MSIX_FLAGS, 2), 3);

    /* Map BAR4 and program vector 1 through MMIO. */
    map_bar4(e);
    uint64_t v;
    uint64_t ent = 0xfe000000 + 0x2000 + 16;
    assert_true(bus_read(&fake.mmio, ent + 12, 4, &v));
    assert_int_equal(v, 1); /* masked after reset */
    bus_write(&fake.mmio, ent, 8, 0xfee01000ULL);
    bus_write(&fake.mmio, ent + 8, 4, 0x4041);
    bus_read(&fake.mmio, ent, 8, &v);
    assert_int_equal(v, 0xfee01000ULL);
    bus_write(&fake.mmio, ent + 12, 4, 0xfffffffe); /* reserved bits stay 0; unmasked */
    bus_read(&fake.mmio, ent + 12, 4, &v);
    assert_int_equal(v, 0);

    /* Disabled: notifications are dropped. */
    pci_msix_notify(d, 1);
    assert_int_equal(fake.msis, 0);

    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_true(pci_msix_enabled(d));
    pci_msix_notify(d, 1);
    assert_int_equal(fake.msis, 1);
    assert_int_equal(fake.msi_addr, 0xfee01000ULL);
    assert_int_equal(fake.msi_data, 0x4041);

    /* Vector 0 is masked: pending bit, delivered on unmask. */
    bus_write(&fake.mmio, 0xfe002000, 8, 0xfee00000ULL);
    bus_write(&fake.mmio, 0xfe002008, 4, 0x30);
    pci_msix_notify(d, 0);
    assert_int_equal(fake.msis, 1);
    assert_true(pci_msix_masked(d, 0));
    bus_read(&fake.mmio, 0xfe003000, 8, &v);
    assert_int_equal(v, 1);
    bus_read(&fake.mmio, 0xfe003000, 1, &v);
    assert_int_equal(v, 1);
    bus_write(&fake.mmio, 0xfe003000, 8, 0); /* PBA is read-only */
    bus_read(&fake.mmio, 0xfe003000, 8, &v);
    assert_int_equal(v, 1);
    bus_write(&fake.mmio, 0xfe00200c, 4, 0);
    assert_int_equal(fake.msis, 2);
    assert_int_equal(fake.msi_data, 0x30);
    bus_read(&fake.mmio, 0xfe003000, 8, &v);
    assert_int_equal(v, 0);

    /* Function mask: everything pends, delivered when the mask is cleared. */
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    pci_msix_notify(d, 0);
    pci_msix_notify(d, 1);
    pci_msix_notify(d, 1);
    assert_int_equal(fake.msis, 2);
    assert_int_equal(pci_msix_pba_read(d, 0, 4), 3);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(fake.msis, 4); /* once per pending vector */
    assert_int_equal(pci_msix_pba_read(d, 0, 4), 0);

    /* Out of range vector and offsets. */
    pci_msix_notify(d, 4);
    pci_msix_notify(d, 0xffffffff);
    assert_int_equal(fake.msis, 4);
    assert_int_equal(pci_msix_table_read(d, 64, 4), 0);
    assert_int_equal(pci_msix_table_read(d, 62, 4), 0);
    assert_int_equal(pci_msix_table_read(d, UINT64_MAX, 8), 0);
    pci_msix_table_write(d, 60, 8, ~0ULL);
    pci_msix_table_write(d, UINT64_MAX - 2, 4, ~0ULL);
    assert_int_equal(pci_msix_pba_read(d, 8, 1), 0);
    assert_int_equal(pci_msix_table_read(d, 0, 3), 0);
    assert_false(pci_msix_bar_read(d, 4, 0x1000, 4, &v));
    assert_false(pci_msix_bar_read(d, 1, 0x2000, 4, &v));

    /* Bus mastering off: nothing is sent (MSI-X is a memory write by the device). */
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    pci_msix_notify(d, 1);
    assert_int_equal(fake.msis, 4);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);

    /* With MSI-X enabled, INTx is not asserted. */
    static const uint8_t gsi[4] = {10, 10, 11, 11};
    pci_bus_set_intx_routing(&e->bus, gsi);
    pci_set_irq(d, 1);
    assert_int_equal(fake.gsi_level[11], 0);
    msix_enable(e, 0);
    assert_int_equal(fake.gsi_level[11], 1);
    pci_set_irq(d, 0);

    /* Reset: disabled, all vectors masked again, table cleared. */
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    pci_device_reset(d);
    assert_false(pci_msix_enabled(d));
    assert_int_equal(pci_msix_table_read(d, 16 + 12, 4), 1);
    assert_int_equal(pci_msix_table_read(d, 16, 8), 0);
}

/* ---- MSI-X through irqfds --------------------------------------------------------------- */

/* A fake hypervisor with room for two MSI routes. */
#define FAKE_ROUTES 2
static struct fake_route {
    bool used;
    int fd;
    uint64_t addr;
    uint32_t data;
} routes[FAKE_ROUTES];
static unsigned route_adds, route_updates, route_dels;

static int fake_route_add(void *ctx, int fd, uint64_t addr, uint32_t data)
{
    assert_true(fd >= 0);
    for (int h = 0; h < FAKE_ROUTES; h++) {
        if (!routes[h].used) {
            routes[h] = (struct fake_route){.used = true, .fd = fd, .addr = addr, .data = data};
            route_adds++;
            return h;
        }
    }
    return -1;
}

static int fake_route_update(void *ctx, int h, uint64_t addr, uint32_t data)
{
    assert_true(h >= 0 && h < FAKE_ROUTES && routes[h].used);
    routes[h].addr = addr;
    routes[h].data = data;
    route_updates++;
    return 0;
}

static void fake_route_del(void *ctx, int h, int fd)
{
    assert_true(h >= 0 && h < FAKE_ROUTES && routes[h].used);
    assert_int_equal(routes[h].fd, fd);
    routes[h].used = false;
    route_dels++;
}

static const struct pci_bus_io fake_irqfd_io = {.map = fake_map,
                                                .unmap = fake_unmap,
                                                .msi_send = fake_msi,
                                                .set_irq = fake_irq,
                                                .msi_route_add = fake_route_add,
                                                .msi_route_update = fake_route_update,
                                                .msi_route_del = fake_route_del,
                                                .ctx = &fake};

/* Interrupts signalled through route h's eventfd since the last call. */
static uint64_t route_fired(int h)
{
    uint64_t n = 0;
    assert_true(routes[h].used);
    if (read(routes[h].fd, &n, sizeof(n)) != sizeof(n))
        return 0; /* EAGAIN: nothing signalled */
    return n;
}

static unsigned routes_used(void)
{
    unsigned n = 0;
    for (int h = 0; h < FAKE_ROUTES; h++)
        n += routes[h].used;
    return n;
}

static int setup_irqfd(void **state)
{
    memset(routes, 0, sizeof(routes));
    route_adds = route_updates = route_dels = 0;
    setup(state);
    struct env *e = *state;
    e->bus.io = &fake_irqfd_io; /* before the guest touches anything */
    return 0;
}

/* Program vector v's address and data through BAR4 at 0xfe000000. */
static void msix_entry(unsigned v, uint64_t addr, uint32_t data)
{
    uint64_t ent = 0xfe002000 + 16 * v;
    bus_write(&fake.mmio, ent, 8, addr);
    bus_write(&fake.mmio, ent + 8, 4, data);
}

static void msix_vector_mask(unsigned v, bool masked)
{
    bus_write(&fake.mmio, 0xfe002000 + 16 * v + 12, 4, masked);
}

static void test_msix_irqfd(void **state)
{
    struct env *e = *state;
    struct pci_device *d = &e->t->pci;
    map_bar4(e);

    /* Nothing is routed while MSI-X is disabled or a vector has never been unmasked. */
    msix_entry(0, 0xfee01000, 0x41);
    msix_vector_mask(0, false);
    assert_int_equal(route_adds, 0);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(route_adds, 1); /* vector 0 only */
    assert_int_equal(routes[0].addr, 0xfee01000);
    assert_int_equal(routes[0].data, 0x41);

    /* Notify goes through the eventfd, not msi_send. */
    pci_msix_notify(d, 0);
    pci_msix_notify(d, 0);
    assert_int_equal(route_fired(0), 2);
    assert_int_equal(fake.msis, 0);

    /* The guest retargets an unmasked vector: the route follows, field by field. */
    msix_entry(0, 0xfee02000, 0x42);
    assert_int_equal(routes[0].addr, 0xfee02000);
    assert_int_equal(routes[0].data, 0x42);
    assert_int_equal(route_adds, 1);
    unsigned upd = route_updates;
    assert_true(upd >= 1);

    /* Masked: changes wait for the unmask; a notify pends and is delivered then. */
    msix_vector_mask(0, true);
    msix_entry(0, 0xfee03000, 0x43);
    assert_int_equal(route_updates, upd);
    assert_int_equal(routes[0].data, 0x42);
    pci_msix_notify(d, 0);
    assert_int_equal(route_fired(0), 0);
    assert_int_equal(pci_msix_pba_read(d, 0, 8), 1);
    msix_vector_mask(0, false);
    assert_int_equal(routes[0].addr, 0xfee03000);
    assert_int_equal(routes[0].data, 0x43);
    assert_int_equal(route_fired(0), 1);
    assert_int_equal(pci_msix_pba_read(d, 0, 8), 0);
    assert_int_equal(fake.msis, 0);

    /* Routes run out: vector 2 falls back to msi_send, with its own message. */
    msix_entry(1, 0xfee04000, 0x44);
    msix_vector_mask(1, false);
    msix_entry(2, 0xfee05000, 0x45);
    msix_vector_mask(2, false);
    assert_int_equal(routes_used(), 2);
    pci_msix_notify(d, 2);
    assert_int_equal(fake.msis, 1);
    assert_int_equal(fake.msi_addr, 0xfee05000);
    assert_int_equal(fake.msi_data, 0x45);
    pci_msix_notify(d, 1);
    assert_int_equal(route_fired(1), 1);
    assert_int_equal(fake.msis, 1);

    /* Function mask: pends, then out through the irqfd when cleared. */
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    pci_msix_notify(d, 1);
    assert_int_equal(route_fired(1), 0);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(route_fired(1), 1);

    /* Bus mastering off: no eventfd write either. */
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    pci_msix_notify(d, 0);
    assert_int_equal(route_fired(0), 0);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);

    /* Disabling MSI-X gives every route back; enabling makes them again. */
    msix_enable(e, 0);
    assert_int_equal(routes_used(), 0);
    assert_int_equal(route_dels, 2);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(routes_used(), 2);

    /* Reset releases them as well. */
    pci_device_reset(d);
    assert_int_equal(routes_used(), 0);

    /* And so does discarding the bus. */
    cfg_wr(e, 0x20, 4, 0xfe000004);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    msix_vector_mask(3, false);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(routes_used(), 1);
    pci_bus_destroy(&e->bus);
    assert_int_equal(routes_used(), 0);
    pci_bus_init(&e->bus, &fake_irqfd_io);
}

/* A watched vector is told when its irqfd may be written directly (vhost) and when not. */
static void test_msix_watch_direct(void **state)
{
    struct env *e = *state;
    struct pci_device *d = &e->t->pci;
    map_bar4(e);

    /* Watching reports the state at once: MSI-X is off, no direct fd. */
    pci_msix_watch(d, 0, true);
    assert_int_equal(fake.direct_calls, 1);
    assert_int_equal(fake.direct_vec, 0);
    assert_int_equal(fake.direct_fd, -1);

    /* Enabled, vector unmasked: the route's eventfd. */
    msix_entry(0, 0xfee01000, 0x41);
    msix_vector_mask(0, false);
    assert_int_equal(fake.direct_calls, 1);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(fake.direct_calls, 2);
    assert_int_equal(fake.direct_fd, routes[0].fd);
    assert_true(fake.direct_fd >= 0);
    int fd = fake.direct_fd;

    /* Retargeting keeps the fd (the route follows): nothing to tell. */
    msix_entry(0, 0xfee02000, 0x42);
    assert_int_equal(fake.direct_calls, 2);

    /* Vector mask, function mask, bus mastering: each takes the fd away and gives it back. */
    msix_vector_mask(0, true);
    assert_int_equal(fake.direct_fd, -1);
    msix_vector_mask(0, false);
    assert_int_equal(fake.direct_fd, fd);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    assert_int_equal(fake.direct_fd, -1);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(fake.direct_fd, fd);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    assert_int_equal(fake.direct_fd, -1);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    assert_int_equal(fake.direct_fd, fd);
    assert_int_equal(fake.direct_calls, 8);

    /* An unwatched vector says nothing; out-of-range watches are ignored. */
    msix_entry(1, 0xfee04000, 0x44);
    msix_vector_mask(1, false);
    msix_vector_mask(1, true);
    pci_msix_watch(d, 9999, true);
    assert_int_equal(fake.direct_calls, 8);
    assert_int_equal(fake.direct_vec, 0);

    /* Disabling MSI-X frees the route: no fd. Watches nest; the last one ends the reports. */
    pci_msix_watch(d, 0, true);
    assert_int_equal(fake.direct_calls, 9); /* the second watcher hears the state too */
    msix_enable(e, 0);
    assert_int_equal(fake.direct_calls, 10);
    assert_int_equal(fake.direct_fd, -1);
    pci_msix_watch(d, 0, false);
    msix_enable(e, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(fake.direct_calls, 11);
    assert_true(fake.direct_fd >= 0);
    pci_msix_watch(d, 0, false);
    msix_vector_mask(0, true);
    pci_device_reset(d);
    assert_int_equal(fake.direct_calls, 11);
}

/* ---- mechanism #1 ------------------------------------------------------------------------ */

static uint64_t cf9_value;
static unsigned cf9_writes;

static uint64_t cf9_read(void *opaque, uint64_t off, unsigned size)
{
    return cf9_value;
}

static void cf9_write(void *opaque, uint64_t off, unsigned size, uint64_t v)
{
    cf9_value = v & 0xff;
    cf9_writes++;
}

static const struct bus_ops cf9_ops = {.read = cf9_read, .write = cf9_write};

static uint32_t conf_addr(unsigned bus, unsigned slot, unsigned func, unsigned reg)
{
    return 0x80000000u | bus << 16 | slot << 11 | func << 8 | (reg & 0xfc);
}

/* As Linux's pci_conf1_read: outl(addr, 0xCF8), then in{b,w,l}(0xCFC + (reg & 3)). */
static uint32_t conf1_read(unsigned slot, unsigned func, unsigned reg, unsigned size)
{
    uint64_t v;
    bus_write(&fake.pio, 0xcf8, 4, conf_addr(0, slot, func, reg));
    bus_read(&fake.pio, 0xcfc + (reg & 3), size, &v);
    return (uint32_t)v;
}

static void conf1_write(unsigned slot, unsigned func, unsigned reg, unsigned size, uint32_t v)
{
    bus_write(&fake.pio, 0xcf8, 4, conf_addr(0, slot, func, reg));
    bus_write(&fake.pio, 0xcfc + (reg & 3), size, v);
}

static void test_mechanism1(void **state)
{
    (void)state;
    struct error err = {0};
    cf9_value = 0;
    cf9_writes = 0;
    assert_int_equal(bus_register(&fake.pio, 0xcf9, 1, &cf9_ops, NULL, "reset", &err), 0);

    /* Host bridge 00:00.0 */
    assert_int_equal(conf1_read(0, 0, 0, 4), 0x12378086);
    assert_int_equal(conf1_read(0, 0, 0, 2), 0x8086);
    assert_int_equal(conf1_read(0, 0, 2, 2), 0x1237);
    assert_int_equal(conf1_read(0, 0, 0x0a, 2), 0x0600);
    assert_int_equal(conf1_read(0, 0, 0x0b, 1), 0x06);
    assert_int_equal(conf1_read(0, 0, 0x0e, 1), 0x00);
    /* The test device 00:03.0, byte by byte. */
    assert_int_equal(conf1_read(3, 0, 0, 1), 0xf4);
    assert_int_equal(conf1_read(3, 0, 1, 1), 0x1a);
    assert_int_equal(conf1_read(3, 0, 2, 1), 0x42);
    assert_int_equal(conf1_read(3, 0, 3, 1), 0x10);
    assert_int_equal(conf1_read(3, 0, PCI_INTERRUPT_PIN, 1), 1);
    /* Nothing at 00:05.0 or at 00:03.1: vendor reads 0xFFFF. */
    assert_int_equal(conf1_read(5, 0, 0, 2), 0xffff);
    assert_int_equal(conf1_read(3, 1, 0, 4), 0xffffffff);
    /* Writes through the data port: BAR sizing as Linux does it. */
    conf1_write(3, 0, 0x14, 4, 0xffffffff);
    assert_int_equal(conf1_read(3, 0, 0x14, 4), 0xfffff000);
    conf1_write(3, 0, 0x14, 4, 0xfebc0000);
    conf1_write(3, 0, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    assert_int_equal(conf1_read(3, 0, PCI_COMMAND, 2), PCI_COMMAND_MEMORY);
    assert_non_null(bus_find(&fake.mmio, 0xfebc0000));
    conf1_write(3, 0, PCI_INTERRUPT_LINE, 1, 11);
    assert_int_equal(conf1_read(3, 0, PCI_INTERRUPT_LINE, 1), 11);
    assert_int_equal(conf1_read(3, 0, PCI_INTERRUPT_LINE, 2), 0x010b);
    /* The address register reads back as written (dword only). */
    uint64_t v;
    bus_write(&fake.pio, 0xcf8, 4, conf_addr(0, 3, 0, 0x3c) | 3);
    bus_read(&fake.pio, 0xcf8, 4, &v);
    assert_int_equal(v, conf_addr(0, 3, 0, 0x3c));

    /* Byte and word accesses to 0xCF8..0xCFB are not the address register. */
    bus_write(&fake.pio, 0xcf8, 4, conf_addr(0, 0, 0, 0));
    bus_write(&fake.pio, 0xcf8, 1, 0x00);
    bus_write(&fake.pio, 0xcf8, 2, 0x0000);
    bus_write(&fake.pio, 0xcfa, 2, 0x0000);
    bus_write(&fake.pio, 0xcfa, 4, 0x0000); /* not dword aligned: not the register either */
    bus_read(&fake.pio, 0xcf8, 4, &v);
    assert_int_equal(v, conf_addr(0, 0, 0, 0));
    bus_read(&fake.pio, 0xcf8, 1, &v);
    assert_int_equal(v, 0xff);
    bus_read(&fake.pio, 0xcfa, 2, &v);
    assert_int_equal(v, 0xffff);
    bus_read(&fake.pio, 0xcfb, 1, &v);
    assert_int_equal(v, 0xff);
    /* ...and 0xCF9 stays the reset control register. */
    bus_write(&fake.pio, 0xcf9, 1, 0x02);
    assert_int_equal(cf9_writes, 1);
    assert_int_equal(cf9_value, 0x02);
    bus_read(&fake.pio, 0xcf9, 1, &v);
    assert_int_equal(v, 0x02);
    /* A dword write to 0xCF8 never reaches 0xCF9. */
    bus_write(&fake.pio, 0xcf8, 4, 0x80000000);
    assert_int_equal(cf9_writes, 1);

    /* Enable bit clear: not claimed, all-ones; writes dropped. */
    bus_write(&fake.pio, 0xcf8, 4, conf_addr(0, 3, 0, 0x3c) & ~0x80000000u);
    bus_read(&fake.pio, 0xcfc, 4, &v);
    assert_int_equal(v, 0xffffffff);
    bus_read(&fake.pio, 0xcfd, 1, &v);
    assert_int_equal(v, 0xff);
    bus_write(&fake.pio, 0xcfc, 1, 5);
    assert_int_equal(conf1_read(3, 0, PCI_INTERRUPT_LINE, 1), 11);
    /* Other buses do not exist. */
    bus_write(&fake.pio, 0xcf8, 4, conf_addr(1, 0, 0, 0));
    bus_read(&fake.pio, 0xcfc, 4, &v);
    assert_int_equal(v, 0xffffffff);
    bus_write(&fake.pio, 0xcfc, 4, 0);
    /* An access crossing 0xCFF is not claimed. */
    bus_write(&fake.pio, 0xcf8, 4, conf_addr(0, 0, 0, 0));
    bus_read(&fake.pio, 0xcfe, 4, &v);
    assert_int_equal(v, 0xffffffff);
    bus_read(&fake.pio, 0xcfe, 2, &v);
    assert_int_equal(v, 0x1237);
}

static void test_scan_like_linux(void **state)
{
    /* Enumerate bus 0 as pci_scan_slot does: vendor of function 0, header type for functions. */
    (void)state;
    unsigned found = 0;
    for (unsigned slot = 0; slot < 32; slot++) {
        if (conf1_read(slot, 0, 0, 2) == 0xffff)
            continue;
        found++;
        unsigned funcs = (conf1_read(slot, 0, PCI_HEADER_TYPE, 1) & 0x80) ? 8 : 1;
        for (unsigned f = 1; f < funcs; f++)
            if (conf1_read(slot, f, 0, 2) != 0xffff)
                found++;
    }
    assert_int_equal(found, 2);
}

static void test_info(void **state)
{
    struct env *e = *state;
    static const uint8_t gsi[4] = {10, 10, 11, 11};
    pci_bus_set_intx_routing(&e->bus, gsi);
    cfg_wr(e, 0x10, 4, 0xc000);
    cfg_wr(e, 0x14, 4, 0xfebc0000);
    cfg_wr(e, PCI_INTERRUPT_LINE, 1, 11);
    cfg_wr(e, PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    pci_host_info(&e->bus, f);
    fclose(f);
    assert_non_null(strstr(buf, "Bus  0, device   0, function 0:\n    Host bridge: PCI device "
                                "8086:1237"));
    assert_non_null(strstr(buf, "device   3, function 0:\n    SCSI controller: PCI device "
                                "1af4:1042"));
    assert_non_null(strstr(buf, "IRQ 11, pin A (routed to GSI 11)"));
    assert_non_null(strstr(buf, "BAR0: I/O at 0xc000 [0xc03f]."));
    assert_non_null(strstr(buf, "BAR1: 32 bit memory at 0xfebc0000 [0xfebc0fff]."));
    assert_non_null(strstr(buf, "BAR2: 64 bit prefetchable memory not mapped, size 0x4000."));
    assert_non_null(strstr(buf, "id \"test-dev\""));
    free(buf);
}

static void test_assign_bars(void **state)
{
    struct env *e = *state;
    struct error err = {0};
    static const uint8_t gsi[4] = {16, 17, 18, 19};
    pci_bus_set_intx_routing(&e->bus, gsi);
    struct pci_device other;
    pci_device_init(&other, "other", NULL, NULL, 1, 2, 0xff0000, 0, 2);
    assert_int_equal(
        pci_bar_init(&other, 0, PCI_BAR_TYPE_MEM32, false, 0x100000, &test_bar_ops, e->t, &err), 0);
    assert_int_equal(
        pci_bar_init(&other, 1, PCI_BAR_TYPE_IO, false, 0x100, &test_bar_ops, e->t, &err), 0);
    assert_int_equal(pci_bus_add(&e->bus, &other, 5, 0, &err), 0);
    struct pci_windows w = {.io_base = 0xc000,
                            .io_len = 0x4000,
                            .mem32_base = 0xc0000000,
                            .mem32_len = 0x3ec00000,
                            .mem64_base = 0x8000000000ULL,
                            .mem64_len = 0x8000000000ULL};
    assert_int_equal(pci_bus_assign_bars(&e->bus, &w, &err), 0);
    struct pci_device *d = &e->t->pci;
    /* Largest first: 1 MiB at the base, then 4 KiB; I/O 256 then 64. */
    assert_int_equal(pci_bar_address(&other, 0), 0xc0000000);
    assert_int_equal(pci_bar_address(d, 1), 0xc0100000);
    assert_int_equal(pci_bar_address(&other, 1), 0xc000);
    assert_int_equal(pci_bar_address(d, 0), 0xc100);
    assert_int_equal(pci_bar_address(d, 2), 0x8000000000ULL);
    assert_int_equal(pci_bar_address(d, 4), 0x8000004000ULL);
    assert_int_equal(d->bar[4].addr, 0x8000004000ULL); /* decode enabled: mapped */
    assert_non_null(bus_find(&fake.pio, 0xc13f));
    assert_int_equal(cfg_rd(e, PCI_COMMAND, 2), PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
    assert_int_equal(cfg_rd(e, PCI_INTERRUPT_LINE, 1), 19);               /* 3 + 1 - 1 = PIRQD */
    assert_int_equal(pci_config_read(&other, PCI_INTERRUPT_LINE, 1), 18); /* 5 + 2 - 1 = PIRQC */
    assert_int_equal(pci_config_read(&e->host.dev, PCI_COMMAND, 2), 0);

    /* A window too small for what is there. */
    pci_bus_reset(&e->bus);
    struct pci_windows tiny = {
        .io_base = 0xc000, .io_len = 0x100, .mem32_base = 0xc0000000, .mem32_len = 0x100000};
    err = (struct error){0};
    assert_int_equal(pci_bus_assign_bars(&e->bus, &tiny, &err), -1);
    assert_non_null(strstr(err.msg, "no room for BAR"));
    pci_bus_reset(&e->bus);
    pci_bus_destroy(&e->bus);
    pci_bus_init(&e->bus, &fake_io);
    pci_device_destroy(&other);
}

static void test_extended_config(void **state)
{
    struct pci_device d;
    pci_device_init(&d, "pcie", NULL, NULL, 1, 2, 0xff0000, 0, 0);
    assert_int_equal(pci_config_read(&d, 0x100, 4), 0xffffffff);
    pci_device_set_extended_config(&d);
    assert_int_equal(pci_config_read(&d, 0x100, 4), 0);
    assert_int_equal(pci_config_read(&d, 0xffc, 4), 0);
    assert_int_equal(pci_config_read(&d, 0xffe, 4), 0xffffffff);
    d.wmask[0x104] = 0xff;
    pci_config_write(&d, 0x104, 1, 0xaa);
    assert_int_equal(pci_config_read(&d, 0x104, 1), 0xaa);
    pci_device_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_readonly_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_w1c, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_sizing, setup, teardown),
        cmocka_unit_test(test_bar_init_errors),
        cmocka_unit_test_setup_teardown(test_bar_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_overlap_map_failure, setup, teardown),
        cmocka_unit_test(test_capability_chain),
        cmocka_unit_test_setup_teardown(test_slots, setup, teardown),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test_setup_teardown(test_intx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msix_irqfd, setup_irqfd, teardown),
        cmocka_unit_test_setup_teardown(test_msix_watch_direct, setup_irqfd, teardown),
        cmocka_unit_test_setup_teardown(test_mechanism1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_like_linux, setup, teardown),
        cmocka_unit_test_setup_teardown(test_info, setup, teardown),
        cmocka_unit_test_setup_teardown(test_assign_bars, setup, teardown),
        cmocka_unit_test(test_extended_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
