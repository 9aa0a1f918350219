/*
 * Unit tests for the virtio-pci transport and virtio-rng. A fake board (an MMIO bus, PCI bus 0,
 * recorded MSIs and INTx levels, 1 MiB of guest RAM) and a test that plays the Linux driver:
 * it walks the capabilities, sizes and places the BARs, enables MSI-X, negotiates features, sets
 * up the queue in guest RAM and reads back random bytes from a file of known content.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "core/bus.h"
#include "core/bytes.h"
#include "core/memory.h"
#include "core/os.h"
#include "pci/pci.h"
#include "virtio/device.h"
#include "virtio/pci.h"
#include "virtio/rng.h"

#define RAM_SIZE   (1u << 20)
#define DESC       0x1000u
#define AVAIL      0x2000u
#define USED       0x3000u
#define DATA       0x10000u
#define QSIZE      16
#define SLOT       3
#define BAR1_ADDR  0xfe000000ull
#define BAR4_ADDR  0x800000000ull /* above 4 GiB: the high half of the 64-bit BAR matters */
#define MSI_ADDR   0xfee00000ull
#define MSI_DATA   0x40 /* vector v sends MSI_DATA + v */
#define FILE_LEN   8192
#define TIMEOUT_MS 5000

static const uint8_t pirq_gsi[4] = {16, 17, 18, 19};

/* ---- the fake board ------------------------------------------------------------------------ */

struct ioevt {
    uint64_t addr;
    unsigned len;
    int fd;
};

struct tb {
    struct bus mmio;
    struct pci_bus bus;
    struct pci_bus_io io;
    uint8_t *ram;
    struct guest_mem mem;
    char path[64];
    uint8_t content[FILE_LEN];

    pthread_mutex_t lock; /* the fields below: MSIs and INTx come from the worker thread */
    unsigned msis;
    uint32_t last_msi_data;
    uint64_t last_msi_addr;
    int gsi_level[24];
    bool ioeventfd_ok;            /* the board can register ioeventfds */
    struct ioevt ioevt[8];        /* currently assigned */
    unsigned nioevt, ioevt_calls; /* assigned now; calls of any kind */

    struct virtio_rng *rng;
    struct virtio_device *vdev;
    struct virtio_pci *vp;
    struct pci_device *dev;

    /* What the driver found. */
    unsigned cap_common, cap_isr, cap_notify, cap_device, cap_cfg, cap_msix;
    uint64_t bar1, bar4;
    uint32_t common_off, isr_off, notify_off, notify_mult;
    uint16_t avail_idx;
};

static int fake_map(void *ctx, bool mmio, uint64_t base, uint64_t len, const struct bus_ops *ops,
                    void *opaque)
{
    struct tb *t = ctx;
    assert_true(mmio);
    return bus_register(&t->mmio, base, len, ops, opaque, "bar", NULL);
}

static void fake_unmap(void *ctx, bool mmio, uint64_t base, void *opaque)
{
    struct tb *t = ctx;
    assert_true(bus_unregister(&t->mmio, base, opaque));
}

static void fake_msi(void *ctx, uint64_t addr, uint32_t data)
{
    struct tb *t = ctx;
    pthread_mutex_lock(&t->lock);
    t->msis++;
    t->last_msi_addr = addr;
    t->last_msi_data = data;
    pthread_mutex_unlock(&t->lock);
}

static void fake_irq(void *ctx, unsigned gsi, int level)
{
    struct tb *t = ctx;
    assert_true(gsi < 24);
    pthread_mutex_lock(&t->lock);
    t->gsi_level[gsi] = level;
    pthread_mutex_unlock(&t->lock);
}

static int fake_ioeventfd(void *ctx, uint64_t addr, unsigned len, int fd, bool assign)
{
    struct tb *t = ctx;
    pthread_mutex_lock(&t->lock);
    t->ioevt_calls++;
    int r = -1;
    if (assign && t->ioeventfd_ok && t->nioevt < 8) {
        t->ioevt[t->nioevt++] = (struct ioevt){addr, len, fd};
        r = 0;
    } else if (!assign) {
        for (unsigned i = 0; i < t->nioevt; i++) {
            if (t->ioevt[i].addr == addr && t->ioevt[i].len == len && t->ioevt[i].fd == fd) {
                t->ioevt[i] = t->ioevt[--t->nioevt];
                r = 0;
                break;
            }
        }
        assert_int_equal(r, 0); /* only what was assigned is removed */
    }
    pthread_mutex_unlock(&t->lock);
    return r;
}

static unsigned msis(struct tb *t)
{
    pthread_mutex_lock(&t->lock);
    unsigned n = t->msis;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static uint32_t last_msi(struct tb *t)
{
    pthread_mutex_lock(&t->lock);
    uint32_t d = t->last_msi_data;
    pthread_mutex_unlock(&t->lock);
    return d;
}

static int gsi_level(struct tb *t)
{
    int gsi = pci_device_gsi(t->dev);
    assert_true(gsi >= 0 && gsi < 24);
    pthread_mutex_lock(&t->lock);
    int l = t->gsi_level[gsi];
    pthread_mutex_unlock(&t->lock);
    return l;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Make a board with a virtio-rng-pci at SLOT reading the test file. */
static struct tb *board(uint64_t max_bytes, uint64_t period_ms, bool ioeventfd_ok)
{
    struct tb *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    pthread_mutex_init(&t->lock, NULL);
    t->ioeventfd_ok = ioeventfd_ok;
    bus_init(&t->mmio, "mmio");
    t->io = (struct pci_bus_io){.map = fake_map,
                                .unmap = fake_unmap,
                                .msi_send = fake_msi,
                                .set_irq = fake_irq,
                                .ioeventfd = fake_ioeventfd,
                                .ctx = t};
    pci_bus_init(&t->bus, &t->io);
    pci_bus_set_intx_routing(&t->bus, pirq_gsi);
    t->ram = aligned_alloc(4096, RAM_SIZE);
    assert_non_null(t->ram);
    memset(t->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&t->mem, t->ram, RAM_SIZE);

    for (unsigned i = 0; i < FILE_LEN; i++)
        t->content[i] = (uint8_t)(i * 7 + 3 + i / 256);
    snprintf(t->path, sizeof(t->path), "/tmp/kemu-rng-XXXXXX");
    int fd = mkstemp(t->path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t->content, FILE_LEN), FILE_LEN);
    close(fd);

    struct error err = {0};
    assert_int_equal(virtio_rng_create(&t->mem, t->path, max_bytes, period_ms, &t->rng, &err), 0);
    t->vdev = virtio_rng_vdev(t->rng);
    assert_int_equal(virtio_pci_create(&t->bus, SLOT, 0, t->vdev, "rng0", &t->vp, &err), 0);
    t->dev = virtio_pci_pci_device(t->vp);
    assert_ptr_equal(pci_bus_get(&t->bus, SLOT, 0), t->dev);
    return t;
}

static void board_free(struct tb *t)
{
    virtio_pci_destroy(t->vp);
    virtio_rng_destroy(t->rng);
    pci_bus_destroy(&t->bus);
    bus_destroy(&t->mmio);
    unlink(t->path);
    free(t->ram);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* ---- the driver ---------------------------------------------------------------------------- */

static uint32_t cfg_read(struct tb *t, unsigned off, unsigned size)
{
    return pci_config_read(t->dev, off, size);
}

static void cfg_write(struct tb *t, unsigned off, unsigned size, uint32_t val)
{
    pci_config_write(t->dev, off, size, val);
}

static uint64_t mmio_read(struct tb *t, uint64_t addr, unsigned size)
{
    uint64_t v;
    assert_true(bus_read(&t->mmio, addr, size, &v));
    return v;
}

static void mmio_write(struct tb *t, uint64_t addr, unsigned size, uint64_t val)
{
    assert_true(bus_write(&t->mmio, addr, size, val));
}

static uint64_t common(struct tb *t, unsigned field, unsigned size)
{
    return mmio_read(t, t->bar4 + t->common_off + field, size);
}

static void set_common(struct tb *t, unsigned field, unsigned size, uint64_t val)
{
    mmio_write(t, t->bar4 + t->common_off + field, size, val);
}

static uint8_t status(struct tb *t)
{
    return (uint8_t)common(t, VIRTIO_PCI_COMMON_STATUS, 1);
}

static void set_status(struct tb *t, uint8_t s)
{
    set_common(t, VIRTIO_PCI_COMMON_STATUS, 1, s);
}

/* Walk the capability list as Linux's virtio_pci_modern does; size and place the BARs. */
static void probe(struct tb *t)
{
    assert_true(cfg_read(t, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    unsigned off = cfg_read(t, PCI_CAP_PTR, 1), n = 0;
    while (off) {
        assert_true(off >= PCI_HEADER_END && off < PCI_CONFIG_SIZE && n++ < 48);
        uint8_t id = (uint8_t)cfg_read(t, off, 1);
        if (id == PCI_CAP_ID_MSIX)
            t->cap_msix = off;
        if (id == PCI_CAP_ID_VNDR) {
            uint8_t type = (uint8_t)cfg_read(t, off + VIRTIO_PCI_CAP_CFG_TYPE, 1);
            uint8_t bar = (uint8_t)cfg_read(t, off + VIRTIO_PCI_CAP_BAR, 1);
            uint32_t o = cfg_read(t, off + VIRTIO_PCI_CAP_OFFSET, 4);
            uint32_t len = cfg_read(t, off + VIRTIO_PCI_CAP_LENGTH, 4);
            assert_true(cfg_read(t, off + 2, 1) >= VIRTIO_PCI_CAP_LEN);
            switch (type) {
            case VIRTIO_PCI_CAP_COMMON_CFG:
                assert_int_equal(bar, 4);
                assert_true(len >= VIRTIO_PCI_COMMON_CFG_LEN);
                t->cap_common = off;
                t->common_off = o;
                break;
            case VIRTIO_PCI_CAP_ISR_CFG:
                assert_int_equal(bar, 4);
                assert_true(len >= 1);
                t->cap_isr = off;
                t->isr_off = o;
                break;
            case VIRTIO_PCI_CAP_NOTIFY_CFG:
                assert_int_equal(bar, 4);
                assert_int_equal(cfg_read(t, off + 2, 1), VIRTIO_PCI_NOTIFY_CAP_LEN);
                t->cap_notify = off;
                t->notify_off = o;
                t->notify_mult = cfg_read(t, off + VIRTIO_PCI_NOTIFY_CAP_MULT, 4);
                assert_true(len >= 2);
                break;
            case VIRTIO_PCI_CAP_DEVICE_CFG:
                t->cap_device = off;
                break;
            case VIRTIO_PCI_CAP_PCI_CFG:
                assert_int_equal(cfg_read(t, off + 2, 1), VIRTIO_PCI_CFG_CAP_LEN);
                t->cap_cfg = off;
                break;
            default:
                fail_msg("unknown virtio capability type %u", type);
            }
        }
        off = cfg_read(t, off + 1, 1);
    }
    assert_true(t->cap_common && t->cap_isr && t->cap_notify && t->cap_cfg && t->cap_msix);

    /* BAR sizing: all-ones, read back, restore. */
    cfg_write(t, PCI_BAR0 + 4, 4, 0xffffffff);
    uint32_t b1 = cfg_read(t, PCI_BAR0 + 4, 4);
    assert_int_equal(b1 & 0xf, 0); /* 32-bit memory, not prefetchable */
    assert_int_equal(~(b1 & ~0xfu) + 1, VIRTIO_PCI_MSIX_BAR_SIZE);
    cfg_write(t, PCI_BAR0 + 16, 4, 0xffffffff);
    cfg_write(t, PCI_BAR0 + 20, 4, 0xffffffff);
    uint64_t b4 = cfg_read(t, PCI_BAR0 + 16, 4) | (uint64_t)cfg_read(t, PCI_BAR0 + 20, 4) << 32;
    assert_int_equal(b4 & 0xf, PCI_BAR_MEM_64 | PCI_BAR_MEM_PREFETCH);
    assert_int_equal(~(b4 & ~0xfull) + 1, VIRTIO_PCI_BAR_SIZE);
    for (unsigned i = 0; i < PCI_NUM_BARS; i++)
        if (i != 1 && i != 4 && i != 5)
            assert_int_equal(cfg_read(t, PCI_BAR0 + 4 * i, 4), 0); /* not implemented */

    t->bar1 = BAR1_ADDR;
    t->bar4 = BAR4_ADDR;
    cfg_write(t, PCI_BAR0 + 4, 4, (uint32_t)t->bar1);
    cfg_write(t, PCI_BAR0 + 16, 4, (uint32_t)t->bar4);
    cfg_write(t, PCI_BAR0 + 20, 4, (uint32_t)(t->bar4 >> 32));
    cfg_write(t, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    assert_non_null(bus_find(&t->mmio, t->bar1));
    assert_non_null(bus_find(&t->mmio, t->bar4 + VIRTIO_PCI_BAR_SIZE - 1));
}

static uint64_t notify_addr(struct tb *t, unsigned q)
{
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
    uint16_t noff = (uint16_t)common(t, VIRTIO_PCI_COMMON_Q_NOFF, 2);
    return t->bar4 + t->notify_off + (uint64_t)noff * t->notify_mult;
}

/* Program every MSI-X vector (unmasked) and enable MSI-X. */
static void msix_enable(struct tb *t)
{
    uint16_t ctrl = (uint16_t)cfg_read(t, t->cap_msix + PCI_MSIX_FLAGS, 2);
    unsigned nvec = (ctrl & PCI_MSIX_FLAGS_QSIZE) + 1u;
    assert_int_equal(nvec, t->vdev->nqueues + 1);
    uint32_t table = cfg_read(t, t->cap_msix + PCI_MSIX_TABLE, 4);
    uint32_t pba = cfg_read(t, t->cap_msix + PCI_MSIX_PBA, 4);
    assert_int_equal(table & 7, VIRTIO_PCI_MSIX_BAR);
    assert_int_equal(pba & 7, VIRTIO_PCI_MSIX_BAR);
    uint64_t base = t->bar1 + (table & ~7u);
    for (unsigned v = 0; v < nvec; v++) {
        mmio_write(t, base + 16 * v, 4, (uint32_t)MSI_ADDR);
        mmio_write(t, base + 16 * v + 4, 4, 0);
        mmio_write(t, base + 16 * v + 8, 4, MSI_DATA + v);
        mmio_write(t, base + 16 * v + 12, 4, 0);
    }
    cfg_write(t, t->cap_msix + PCI_MSIX_FLAGS, 2, ctrl | PCI_MSIX_FLAGS_ENABLE);
}

/* Reset, ACKNOWLEDGE | DRIVER, features; true when FEATURES_OK stuck. */
static bool negotiate(struct tb *t, uint64_t features)
{
    set_status(t, 0);
    assert_int_equal(status(t), 0);
    set_status(t, VIRTIO_STATUS_ACKNOWLEDGE);
    set_status(t, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    set_common(t, VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
    uint64_t offered = common(t, VIRTIO_PCI_COMMON_DF, 4);
    set_common(t, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    offered |= common(t, VIRTIO_PCI_COMMON_DF, 4) << 32;
    assert_true(offered & VIRTIO_BIT(VIRTIO_F_VERSION_1));
    for (unsigned sel = 0; sel < 2; sel++) {
        set_common(t, VIRTIO_PCI_COMMON_GFSELECT, 4, sel);
        set_common(t, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(features >> (32 * sel)));
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_GF, 4), (uint32_t)(features >> (32 * sel)));
    }
    set_status(t, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    return status(t) & VIRTIO_STATUS_FEATURES_OK;
}

static void setup_queue(struct tb *t, unsigned q, uint16_t vector, uint64_t desc, uint64_t avail,
                        uint64_t used)
{
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2), VIRTIO_RNG_QUEUE_SIZE);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    set_common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2, QSIZE);
    set_common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2, vector);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2), vector);
    /* Halves, as Linux's vp_iowrite64_twopart; the used ring as one 64-bit access. */
    set_common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 4, (uint32_t)desc);
    set_common(t, VIRTIO_PCI_COMMON_Q_DESCHI, 4, (uint32_t)(desc >> 32));
    set_common(t, VIRTIO_PCI_COMMON_Q_AVAILLO, 4, (uint32_t)avail);
    set_common(t, VIRTIO_PCI_COMMON_Q_AVAILHI, 4, (uint32_t)(avail >> 32));
    set_common(t, VIRTIO_PCI_COMMON_Q_USEDLO, 8, used);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 8), desc);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_AVAILHI, 4), (uint32_t)(avail >> 32));
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_USEDLO, 4), (uint32_t)used);
    set_common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    t->avail_idx = 0;
    memset(t->ram + DESC, 0, USED + 0x1000 - DESC);
}

/* The whole Linux-like bring-up of queue 0 with MSI-X (config vector 0, queue vector 1). */
static void bring_up(struct tb *t, bool msix)
{
    probe(t);
    if (msix)
        msix_enable(t);
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX) |
                                 VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC)));
    set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, msix ? 0 : VIRTIO_MSI_NO_VECTOR);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_MSIX, 2), msix ? 0 : VIRTIO_MSI_NO_VECTOR);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
    setup_queue(t, 0, msix ? 1 : VIRTIO_MSI_NO_VECTOR, DESC, AVAIL, USED);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1);
    set_status(t, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                      VIRTIO_STATUS_DRIVER_OK);
    assert_int_equal(status(t), VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                    VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

/* Offer one buffer (descriptor `slot`) of len bytes at gpa. */
static void offer(struct tb *t, unsigned slot, uint64_t gpa, uint32_t len, uint16_t flags)
{
    uint8_t *d = t->ram + DESC + 16 * slot;
    le_put64(d, gpa);
    le_put32(d + 8, len);
    le_put16(d + 12, flags);
    le_put16(d + 14, 0);
    le_put16(t->ram + AVAIL + 4 + 2 * (t->avail_idx % QSIZE), (uint16_t)slot);
    t->avail_idx++;
    /* used_event: interrupt after every buffer. */
    le_put16(t->ram + AVAIL + 4 + 2 * QSIZE, (uint16_t)(t->avail_idx - 1));
    __atomic_store_n((uint16_t *)(t->ram + AVAIL + 2), t->avail_idx, __ATOMIC_RELEASE);
}

static uint16_t used_idx(struct tb *t)
{
    return __atomic_load_n((uint16_t *)(t->ram + USED + 2), __ATOMIC_ACQUIRE);
}

static bool wait_used(struct tb *t, uint16_t idx, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while ((uint16_t)(used_idx(t) - idx) > 0x8000 || used_idx(t) != idx) {
        if (now_ms() > end)
            return false;
        sleep_ms(1);
    }
    return true;
}

static bool wait_msis(struct tb *t, unsigned n, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while (msis(t) < n) {
        if (now_ms() > end)
            return false;
        sleep_ms(1);
    }
    return true;
}

static bool wait_status_bit(struct tb *t, uint8_t bit, unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    while (!(status(t) & bit)) {
        if (now_ms() > end)
            return false;
        sleep_ms(1);
    }
    return true;
}

static void used_elem(struct tb *t, uint16_t i, uint32_t *id, uint32_t *len)
{
    const uint8_t *e = t->ram + USED + 4 + 8 * (i % QSIZE);
    *id = le_get32(e);
    *len = le_get32(e + 4);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_identity(void **state)
{
    struct tb *t = board(0, 0, false);
    assert_int_equal(cfg_read(t, PCI_VENDOR_ID, 2), 0x1af4);
    assert_int_equal(cfg_read(t, PCI_DEVICE_ID, 2), 0x1040 + VIRTIO_ID_RNG);
    assert_int_equal(cfg_read(t, PCI_REVISION_ID, 1), 1);
    assert_int_equal(cfg_read(t, PCI_CLASS_PROG, 1), 0x00);
    assert_int_equal(cfg_read(t, PCI_CLASS_DEVICE, 2), 0x00ff);
    assert_int_equal(cfg_read(t, PCI_SUBSYS_VENDOR, 2), 0x1af4);
    assert_int_equal(cfg_read(t, PCI_SUBSYS_ID, 2), 0x1100);
    assert_int_equal(cfg_read(t, PCI_INTERRUPT_PIN, 1), 1);
    assert_string_equal(t->dev->name, "virtio-rng-pci");
    probe(t);
    assert_int_equal(t->common_off, VIRTIO_PCI_COMMON_OFF);
    assert_int_equal(t->isr_off, VIRTIO_PCI_ISR_OFF);
    assert_int_equal(t->notify_off, VIRTIO_PCI_NOTIFY_OFF);
    assert_int_equal(t->notify_mult, 4);
    assert_int_equal(cfg_read(t, t->cap_notify + VIRTIO_PCI_CAP_LENGTH, 4), 4);
    assert_int_equal(t->cap_device, 0); /* virtio-rng has no config space */
    assert_int_equal(cfg_read(t, t->cap_msix + PCI_MSIX_TABLE, 4), VIRTIO_PCI_MSIX_BAR);
    assert_int_equal(cfg_read(t, t->cap_msix + PCI_MSIX_PBA, 4),
                     VIRTIO_PCI_MSIX_PBA | VIRTIO_PCI_MSIX_BAR);
    /* Read-only: vendor capability bodies other than the PCI_CFG window registers. */
    cfg_write(t, t->cap_common + VIRTIO_PCI_CAP_OFFSET, 4, 0x1234);
    assert_int_equal(cfg_read(t, t->cap_common + VIRTIO_PCI_CAP_OFFSET, 4), 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_NOFF, 2), 0);

    /* A second device in the same slot is refused; slot -1 takes the next free one. */
    struct virtio_rng *r2;
    struct virtio_pci *vp2;
    struct error err = {0};
    assert_int_equal(virtio_rng_create(&t->mem, t->path, 0, 0, &r2, &err), 0);
    assert_int_equal(virtio_pci_create(&t->bus, SLOT, 0, virtio_rng_vdev(r2), NULL, &vp2, &err),
                     -1);
    assert_non_null(strstr(err.msg, "in use"));
    err = (struct error){0};
    assert_int_equal(virtio_pci_create(&t->bus, -1, 0, virtio_rng_vdev(r2), NULL, &vp2, &err), 0);
    assert_int_equal(virtio_pci_pci_device(vp2)->slot, 1);
    err = (struct error){0};
    struct virtio_pci *vp3;
    assert_int_equal(virtio_pci_create(&t->bus, -1, 0, virtio_rng_vdev(r2), NULL, &vp3, &err), -1);
    virtio_pci_destroy(vp2);
    assert_null(pci_bus_get(&t->bus, 1, 0));
    virtio_rng_destroy(r2);
    board_free(t);
}

static void test_rng_msix(void **state)
{
    struct tb *t = board(0, 0, false);
    bring_up(t, true);
    unsigned before = msis(t);

    memset(t->ram + DATA, 0xee, 256);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    assert_true(wait_msis(t, before + 1, TIMEOUT_MS));
    assert_int_equal(last_msi(t), MSI_DATA + 1); /* the queue's vector */
    uint32_t id, len;
    used_elem(t, 0, &id, &len);
    assert_int_equal(id, 0);
    assert_int_equal(len, 64);
    assert_memory_equal(t->ram + DATA, t->content, 64);
    assert_int_equal(t->ram[DATA + 64], 0xee);

    /* The next request continues the file; a two-buffer chain (indirect-free) is filled across
     * both buffers. */
    uint8_t *d = t->ram + DESC + 16;
    le_put64(d, DATA + 0x100);
    le_put32(d + 8, 10);
    le_put16(d + 12, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT);
    le_put16(d + 14, 2);
    d = t->ram + DESC + 32;
    le_put64(d, DATA + 0x200);
    le_put32(d + 8, 22);
    le_put16(d + 12, VIRTQ_DESC_F_WRITE);
    le_put16(t->ram + AVAIL + 4 + 2 * (t->avail_idx % QSIZE), 1);
    t->avail_idx++;
    le_put16(t->ram + AVAIL + 4 + 2 * QSIZE, (uint16_t)(t->avail_idx - 1));
    __atomic_store_n((uint16_t *)(t->ram + AVAIL + 2), t->avail_idx, __ATOMIC_RELEASE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 2, TIMEOUT_MS));
    assert_true(wait_msis(t, before + 2, TIMEOUT_MS));
    used_elem(t, 1, &id, &len);
    assert_int_equal(id, 1);
    assert_int_equal(len, 32);
    assert_memory_equal(t->ram + DATA + 0x100, t->content + 64, 10);
    assert_memory_equal(t->ram + DATA + 0x200, t->content + 74, 22);

    /* A chain without a writable part comes back with 0 bytes. */
    offer(t, 3, DATA + 0x300, 16, 0);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 3, TIMEOUT_MS));
    used_elem(t, 2, &id, &len);
    assert_int_equal(id, 3);
    assert_int_equal(len, 0);

    /* The notify value names the queue; a 4-byte write (NOTIFICATION_DATA style) works too. */
    offer(t, 4, DATA + 0x400, 8, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 4, 0);
    assert_true(wait_used(t, 4, TIMEOUT_MS));
    assert_memory_equal(t->ram + DATA + 0x400, t->content + 96, 8);

    /* queue vector NO_VECTOR: buffers still come back, without an MSI. */
    set_status(t, 0);
    assert_int_equal(status(t), 0);
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    setup_queue(t, 0, VIRTIO_MSI_NO_VECTOR, DESC, AVAIL, USED);
    set_status(t, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                      VIRTIO_STATUS_DRIVER_OK);
    unsigned m = msis(t);
    offer(t, 0, DATA, 16, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    sleep_ms(20);
    assert_int_equal(msis(t), m);
    assert_int_equal(gsi_level(t), 0); /* MSI-X on: never INTx */

    /* A vector the device does not have reads back as NO_VECTOR. */
    set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, 2);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
    set_common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2, 7);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
    board_free(t);
}

static void test_features(void **state)
{
    struct tb *t = board(0, 0, false);
    probe(t);
    set_common(t, VIRTIO_PCI_COMMON_DFSELECT, 4, 2);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_DF, 4), 0);
    set_common(t, VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
    uint32_t lo = (uint32_t)common(t, VIRTIO_PCI_COMMON_DF, 4);
    assert_true(lo & VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX));
    assert_true(lo & VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC));
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_DFSELECT, 4), 0);

    /* A legacy driver (no VERSION_1) is refused: FEATURES_OK does not stick. */
    assert_false(negotiate(t, VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX)));
    assert_int_equal(status(t), VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    /* So is a feature that was not offered. */
    assert_false(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_PACKED)));
    /* And then it works; driver features are frozen after FEATURES_OK. */
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
    set_common(t, VIRTIO_PCI_COMMON_GF, 4, VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX));
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_GF, 4), 0);
    set_common(t, VIRTIO_PCI_COMMON_GFSELECT, 4, 5);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_GF, 4), 0);
    /* The status write goes through the core: DEVICE_NEEDS_RESET cannot be set by the driver. */
    set_status(t, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                      VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_int_equal(status(t),
                     VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    board_free(t);
}

static void test_needs_reset(void **state)
{
    struct tb *t = board(0, 0, false);
    probe(t);
    msix_enable(t);

    /* Rings outside guest RAM at queue_enable: DEVICE_NEEDS_RESET, the queue stays disabled.
     * DRIVER_OK is not set yet, so no interrupt (spec 2.1.2). */
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, 0);
    unsigned m = msis(t);
    setup_queue(t, 0, 1, RAM_SIZE - 16, AVAIL, USED);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    assert_true(status(t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_int_equal(msis(t), m);
    /* DRIVER_OK does not start a device that needs a reset. */
    set_status(t, status(t) | VIRTIO_STATUS_DRIVER_OK);
    assert_false(t->vdev->started);
    /* A misaligned ring too. */
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    assert_false(status(t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    setup_queue(t, 0, 1, DESC + 8, AVAIL, USED);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    assert_true(status(t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    /* A size that is not a power of two too. */
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    set_common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2, 12);
    set_common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 8, DESC);
    set_common(t, VIRTIO_PCI_COMMON_Q_AVAILLO, 8, AVAIL);
    set_common(t, VIRTIO_PCI_COMMON_Q_USEDLO, 8, USED);
    set_common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    assert_true(status(t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);

    /* After DRIVER_OK, a buffer outside guest RAM: the worker's vq_pop fails, the device needs
     * a reset and the driver gets a configuration interrupt on vector 0. */
    set_status(t, 0);
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, 0);
    setup_queue(t, 0, 1, DESC, AVAIL, USED);
    set_status(t, status(t) | VIRTIO_STATUS_DRIVER_OK);
    m = msis(t);
    offer(t, 0, RAM_SIZE - 8, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_status_bit(t, VIRTIO_STATUS_DEVICE_NEEDS_RESET, TIMEOUT_MS));
    assert_true(wait_msis(t, m + 1, TIMEOUT_MS));
    assert_int_equal(last_msi(t), MSI_DATA + 0);
    /* Further kicks do nothing; the ISR has the configuration bit. */
    offer(t, 1, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    sleep_ms(20);
    assert_int_equal(used_idx(t), 0);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 1), VIRTIO_PCI_ISR_CONFIG);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 1), 0);

    /* A reset brings it back. */
    bring_up(t, true);
    assert_false(status(t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));

    /* Enabling a queue after DRIVER_OK is refused the same way, with a config interrupt. */
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, 0);
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    set_common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2, QSIZE);
    set_common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 8, DESC);
    set_common(t, VIRTIO_PCI_COMMON_Q_AVAILLO, 8, AVAIL);
    set_common(t, VIRTIO_PCI_COMMON_Q_USEDLO, 8, USED);
    set_status(t, status(t) | VIRTIO_STATUS_DRIVER_OK);
    assert_true(t->vdev->started);
    m = msis(t);
    set_common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    assert_true(status(t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_true(wait_msis(t, m + 1, TIMEOUT_MS));
    assert_int_equal(last_msi(t), MSI_DATA + 0);
    board_free(t);
}

static void test_intx(void **state)
{
    struct tb *t = board(0, 0, false);
    bring_up(t, false);
    int gsi = pci_device_gsi(t->dev);
    assert_int_equal(gsi, pirq_gsi[(SLOT + 0) % 4]);
    assert_int_equal(gsi_level(t), 0);

    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    uint64_t end = now_ms() + TIMEOUT_MS;
    while (!gsi_level(t) && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(gsi_level(t), 1);
    assert_true(cfg_read(t, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
    assert_memory_equal(t->ram + DATA, t->content, 64);
    assert_int_equal(msis(t), 0);

    /* Reading the ISR returns the queue bit, clears it and lowers the line. */
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 1), VIRTIO_PCI_ISR_QUEUE);
    assert_int_equal(gsi_level(t), 0);
    assert_false(cfg_read(t, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 1), 0);
    /* Only byte reads of the ISR register itself read (and clear) it. */
    offer(t, 1, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 2, TIMEOUT_MS));
    end = now_ms() + TIMEOUT_MS;
    while (!gsi_level(t) && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 4), 0);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off + 1, 1), 0);
    mmio_write(t, t->bar4 + t->isr_off, 1, 0);
    assert_int_equal(gsi_level(t), 1);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 1), VIRTIO_PCI_ISR_QUEUE);
    assert_int_equal(gsi_level(t), 0);

    /* A configuration interrupt over INTx (the device needs a reset). */
    offer(t, 2, RAM_SIZE, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    end = now_ms() + TIMEOUT_MS;
    while (!gsi_level(t) && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(gsi_level(t), 1);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 1), VIRTIO_PCI_ISR_CONFIG);
    assert_int_equal(gsi_level(t), 0);

    /* A device reset lowers a raised line. */
    set_status(t, 0);
    bring_up(t, false);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    end = now_ms() + TIMEOUT_MS;
    while (!gsi_level(t) && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(gsi_level(t), 1);
    set_status(t, 0);
    assert_int_equal(gsi_level(t), 0);
    assert_int_equal(mmio_read(t, t->bar4 + t->isr_off, 1), 0);
    board_free(t);
}

/* A small deterministic generator for the access storms. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Set up a PCI_CFG window access. */
static void window(struct tb *t, uint8_t bar, uint32_t off, uint32_t len)
{
    cfg_write(t, t->cap_cfg + VIRTIO_PCI_CAP_BAR, 1, bar);
    cfg_write(t, t->cap_cfg + VIRTIO_PCI_CAP_OFFSET, 4, off);
    cfg_write(t, t->cap_cfg + VIRTIO_PCI_CAP_LENGTH, 4, len);
}

static uint32_t window_read(struct tb *t, uint8_t bar, uint32_t off, uint32_t len)
{
    window(t, bar, off, len);
    return cfg_read(t, t->cap_cfg + VIRTIO_PCI_CFG_CAP_DATA, 4);
}

static void window_write(struct tb *t, uint8_t bar, uint32_t off, uint32_t len, uint32_t val)
{
    window(t, bar, off, len);
    cfg_write(t, t->cap_cfg + VIRTIO_PCI_CFG_CAP_DATA, 4, val);
}

static void test_pci_cfg_window(void **state)
{
    struct tb *t = board(0, 0, false);
    probe(t);
    /* The window works with memory decode off, as firmware may use it (spec 4.1.4.9). */
    cfg_write(t, PCI_COMMAND, 2, 0);
    assert_null(bus_find(&t->mmio, t->bar4));
    unsigned c = t->cap_cfg;
    assert_int_equal(cfg_read(t, c + VIRTIO_PCI_CAP_CFG_TYPE, 1), VIRTIO_PCI_CAP_PCI_CFG);

    assert_int_equal(window_read(t, 4, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
    assert_int_equal(window_read(t, 4, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
    window_write(t, 4, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    assert_int_equal(window_read(t, 4, VIRTIO_PCI_COMMON_DF, 4),
                     VIRTIO_BIT(VIRTIO_F_VERSION_1) >> 32);
    /* Status through the window, read back directly. */
    window_write(t, 4, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
    assert_int_equal(t->vdev->status, VIRTIO_STATUS_ACKNOWLEDGE);
    assert_int_equal(window_read(t, 4, VIRTIO_PCI_COMMON_STATUS, 1), VIRTIO_STATUS_ACKNOWLEDGE);
    /* Only cap.length bytes are written. */
    window_write(t, 4, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0x00050003);
    assert_int_equal(window_read(t, 4, VIRTIO_PCI_COMMON_Q_SELECT, 2), 3);
    window_write(t, 4, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    /* The MSI-X table in BAR1: vector 0's control word starts masked. */
    assert_int_equal(window_read(t, 1, VIRTIO_PCI_MSIX_TABLE + 12, 4), 1);
    window_write(t, 1, VIRTIO_PCI_MSIX_TABLE + 8, 4, 0x1234);
    assert_int_equal(window_read(t, 1, VIRTIO_PCI_MSIX_TABLE + 8, 4), 0x1234);

    /* Out-of-bounds or malformed requests do nothing; pci_cfg_data keeps what it held. */
    const struct {
        uint8_t bar;
        uint32_t off, len;
    } bad[] = {
        {0, 0, 4},          {2, 0, 4},          {3, 0, 4},
        {5, 0, 4},          {6, 0, 4},          {255, 0, 4},
        {4, 0x4000, 4},     {4, 0x3ffe, 4},     {4, 0xfffffffc, 4},
        {4, 0x14, 3},       {4, 0x14, 0},       {4, 0x14, 8},
        {4, 0x16, 4},       {4, 0x15, 2},       {1, 0x1000, 1},
        {1, 0xffffffff, 1}, {4, 0, 0xffffffff}, {4, 0xffffffff, 0xffffffff},
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* Length 0 first, so that no mix of old and new fields makes a valid access. */
        cfg_write(t, c + VIRTIO_PCI_CAP_LENGTH, 4, 0);
        cfg_write(t, c + VIRTIO_PCI_CFG_CAP_DATA, 4, 0xa5a5a5a5);
        cfg_write(t, c + VIRTIO_PCI_CAP_BAR, 1, bad[i].bar);
        cfg_write(t, c + VIRTIO_PCI_CAP_OFFSET, 4, bad[i].off);
        cfg_write(t, c + VIRTIO_PCI_CAP_LENGTH, 4, bad[i].len);
        assert_int_equal(cfg_read(t, c + VIRTIO_PCI_CFG_CAP_DATA, 4), 0xa5a5a5a5);
        cfg_write(t, c + VIRTIO_PCI_CFG_CAP_DATA, 4, 0);
        cfg_write(t, c + VIRTIO_PCI_CFG_CAP_DATA, 2, 0);
        cfg_write(t, c + VIRTIO_PCI_CFG_CAP_DATA + 3, 1, 0);
    }
    assert_int_equal(t->vdev->status, VIRTIO_STATUS_ACKNOWLEDGE);
    /* Config accesses of odd sizes or beyond the space. */
    for (unsigned off = 0; off < PCI_CONFIG_SIZE + 8; off++) {
        (void)cfg_read(t, off, 3);
        (void)cfg_read(t, off, 8);
        cfg_write(t, off, 3, 0xffffffff);
        cfg_write(t, off, 0, 0xffffffff);
    }
    assert_int_equal(t->vdev->status, VIRTIO_STATUS_ACKNOWLEDGE);

    /* A storm through the window, with plausible fields. */
    uint64_t seed = 0x243f6a8885a308d3ull;
    for (unsigned i = 0; i < 50000; i++) {
        uint64_t x = rnd(&seed), y = rnd(&seed);
        uint8_t bar = (uint8_t)(x % 7);
        uint32_t off = (uint32_t)((x >> 8) % (VIRTIO_PCI_BAR_SIZE + 16));
        if (bar == 4 && off >= VIRTIO_PCI_COMMON_STATUS - 3 && off <= VIRTIO_PCI_COMMON_STATUS)
            continue; /* status writes would start the backend before the queue is set up */
        cfg_write(t, c + VIRTIO_PCI_CAP_BAR, 1, bar);
        cfg_write(t, c + VIRTIO_PCI_CAP_OFFSET, 4, off);
        cfg_write(t, c + VIRTIO_PCI_CAP_LENGTH, 4, (uint32_t)((x >> 40) % 6));
        if (y & 1)
            cfg_write(t, c + VIRTIO_PCI_CFG_CAP_DATA, 1u << (y >> 1) % 3, (uint32_t)(y >> 8));
        else
            (void)cfg_read(t, c + VIRTIO_PCI_CFG_CAP_DATA, 1u << (y >> 1) % 3);
    }
    window_write(t, 4, VIRTIO_PCI_COMMON_STATUS, 1, 0);
    cfg_write(t, t->cap_msix + PCI_MSIX_FLAGS, 2, 0);

    /* The ISR through the window: read and cleared once (when the length is written). */
    bring_up(t, false);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    /* Notify through the window too. */
    window_write(t, 4, VIRTIO_PCI_NOTIFY_OFF, 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    uint64_t end = now_ms() + TIMEOUT_MS;
    while (!gsi_level(t) && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(gsi_level(t), 1);
    cfg_write(t, c + VIRTIO_PCI_CAP_BAR, 1, 4);
    cfg_write(t, c + VIRTIO_PCI_CAP_OFFSET, 4, VIRTIO_PCI_ISR_OFF);
    assert_int_equal(gsi_level(t), 1); /* not read yet */
    cfg_write(t, c + VIRTIO_PCI_CAP_LENGTH, 4, 1);
    assert_int_equal(gsi_level(t), 0);
    assert_int_equal(cfg_read(t, c + VIRTIO_PCI_CFG_CAP_DATA, 1), VIRTIO_PCI_ISR_QUEUE);
    assert_int_equal(cfg_read(t, c + VIRTIO_PCI_CFG_CAP_DATA, 1), VIRTIO_PCI_ISR_QUEUE);
    assert_int_equal(window_read(t, 4, VIRTIO_PCI_ISR_OFF, 1), 0);

    /* A machine reset clears the window registers. */
    pci_device_reset(t->dev);
    for (unsigned i = VIRTIO_PCI_CAP_BAR; i < VIRTIO_PCI_CFG_CAP_LEN; i++)
        assert_int_equal(cfg_read(t, c + i, 1), 0);
    board_free(t);
}

static void test_odd_accesses(void **state)
{
    struct tb *t = board(0, 0, false);
    bring_up(t, true);
    assert_non_null(bus_find(&t->mmio, t->bar4));
    assert_non_null(bus_find(&t->mmio, t->bar1));
    /* Copies: the bus's array moves when ranges come and go. */
    const struct bus_range range4 = *bus_find(&t->mmio, t->bar4);
    const struct bus_range range1 = *bus_find(&t->mmio, t->bar1);
    const struct bus_range *r4 = &range4, *r1 = &range1;
    const unsigned sizes[] = {0, 1, 2, 3, 4, 5, 7, 8, 16, 4096};

    /* Every offset of both BARs, every size, read: nothing but zeros where nothing is. */
    for (uint64_t off = 0; off < VIRTIO_PCI_BAR_SIZE + 16; off++)
        for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
            (void)r4->ops->read(r4->opaque, off, sizes[i]);
    for (uint64_t off = 0; off < VIRTIO_PCI_MSIX_BAR_SIZE + 16; off++)
        for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
            (void)r1->ops->read(r1->opaque, off, sizes[i]);
    assert_int_equal(r4->ops->read(r4->opaque, UINT64_MAX - 1, 8), 0);
    assert_int_equal(r4->ops->read(r4->opaque, VIRTIO_PCI_COMMON_NUMQ, 4), 0); /* wrong size */
    assert_int_equal(r4->ops->read(r4->opaque, VIRTIO_PCI_COMMON_NUMQ + 1, 1), 0);
    assert_int_equal(r4->ops->read(r4->opaque, VIRTIO_PCI_COMMON_CFG_LEN, 4), 0);
    assert_int_equal(r4->ops->read(r4->opaque, VIRTIO_PCI_DEVICE_OFF, 4), 0); /* no config */
    assert_int_equal(r4->ops->read(r4->opaque, VIRTIO_PCI_NOTIFY_OFF, 2), 0);
    assert_int_equal(r4->ops->read(r4->opaque, VIRTIO_PCI_REGION_SIZE - 2, 4), 0);
    /* Odd-sized and misplaced writes to the common configuration change nothing. */
    uint8_t st = status(t);
    r4->ops->write(r4->opaque, VIRTIO_PCI_COMMON_STATUS, 2, 0);
    r4->ops->write(r4->opaque, VIRTIO_PCI_COMMON_STATUS, 4, 0);
    r4->ops->write(r4->opaque, VIRTIO_PCI_COMMON_STATUS - 1, 2, 0);
    r4->ops->write(r4->opaque, VIRTIO_PCI_COMMON_Q_SELECT, 4, 0xffffffff);
    r4->ops->write(r4->opaque, VIRTIO_PCI_COMMON_Q_DESCHI, 8, ~0ull);
    r4->ops->write(r4->opaque, VIRTIO_PCI_COMMON_NUMQ, 2, 7);
    r4->ops->write(r4->opaque, VIRTIO_PCI_COMMON_CFGGENERATION, 1, 7);
    r4->ops->write(r4->opaque, UINT64_MAX, 1, 0);
    r4->ops->write(r4->opaque, VIRTIO_PCI_BAR_SIZE - 4, 8, ~0ull);
    r4->ops->write(r4->opaque, VIRTIO_PCI_NOTIFY_OFF + 4, 2, 0);  /* no queue 1 */
    r4->ops->write(r4->opaque, VIRTIO_PCI_NOTIFY_OFF, 1, 0);      /* byte notify */
    r4->ops->write(r4->opaque, VIRTIO_PCI_NOTIFY_OFF + 2, 2, 0);  /* inside queue 0's slot */
    r4->ops->write(r4->opaque, VIRTIO_PCI_NOTIFY_OFF, 2, 0xffff); /* bad value: the offset */
    r4->ops->write(r4->opaque, VIRTIO_PCI_NOTIFY_OFF + 0x800, 2, 0);
    assert_int_equal(status(t), st);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_DESCHI, 4), 0);

    /* A storm of random accesses everywhere: BAR4, BAR1, config space. No crash, no sanitizer
     * report, and a reset afterwards gives a working device. */
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < 200000; i++) {
        uint64_t x = rnd(&seed);
        unsigned size = sizes[x % (sizeof(sizes) / sizeof(sizes[0]))];
        uint64_t val = rnd(&seed);
        switch ((x >> 8) % 6) {
        case 0:
            (void)r4->ops->read(r4->opaque, (x >> 16) % (VIRTIO_PCI_BAR_SIZE + 64), size);
            break;
        case 1:
            if (((x >> 16) & 0xfff) == VIRTIO_PCI_COMMON_STATUS && !((x >> 16) & 0xf000) &&
                size == 1)
                break; /* a status write could start the worker: done below, deliberately */
            r4->ops->write(r4->opaque, (x >> 16) % (VIRTIO_PCI_BAR_SIZE + 64), size, val);
            break;
        case 2:
            (void)r1->ops->read(r1->opaque, (x >> 16) % (VIRTIO_PCI_MSIX_BAR_SIZE + 64), size);
            break;
        case 3:
            r1->ops->write(r1->opaque, (x >> 16) % (VIRTIO_PCI_MSIX_BAR_SIZE + 64), size, val);
            break;
        case 4:
            (void)cfg_read(t, (unsigned)((x >> 16) % 300), size);
            break;
        default: {
            /* Config writes, but keep the BARs and command where they are (the board's fake
             * bus would otherwise lose the ranges we hold pointers to). */
            unsigned off = (unsigned)((x >> 16) % 300);
            if (off < PCI_HEADER_END)
                break;
            cfg_write(t, off, size, (uint32_t)val);
            break;
        }
        }
    }
    /* Writes anywhere in the common configuration including the status, with the worker
     * running (and started and stopped by them), while buffers keep coming. */
    for (unsigned i = 0; i < 20000; i++) {
        uint64_t x = rnd(&seed);
        if (i % 64 == 0) {
            offer(t, i / 64 % QSIZE, DATA, 64, VIRTQ_DESC_F_WRITE);
            r4->ops->write(r4->opaque, VIRTIO_PCI_NOTIFY_OFF, 2, 0);
        }
        r4->ops->write(r4->opaque, x % (VIRTIO_PCI_COMMON_CFG_LEN + 8), 1u << (x >> 60) % 4,
                       rnd(&seed) & (x & 1 ? 0xff : ~0ull));
    }
    cfg_write(t, t->cap_msix + PCI_MSIX_FLAGS, 2, 0);
    bring_up(t, true);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    board_free(t);
}

static void test_queue_select(void **state)
{
    struct tb *t = board(0, 0, false);
    probe(t);
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    set_common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 4, DESC);
    const uint16_t sel[] = {1, 2, 63, 64, 65, 0x7fff, 0xffff};
    for (unsigned i = 0; i < sizeof(sel) / sizeof(sel[0]); i++) {
        set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, sel[i]);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2), sel[i]);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
        set_common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2, 16);
        set_common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x5000);
        set_common(t, VIRTIO_PCI_COMMON_Q_DESCHI, 4, 1);
        set_common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2, 0);
        set_common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 4), 0);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_DESCHI, 4), 0);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_NOFF, 2), 0);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
    }
    assert_false(status(t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2), VIRTIO_RNG_QUEUE_SIZE);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 8), DESC);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);

    /* An enabled queue's configuration is frozen; queue_enable = 0 is ignored. */
    setup_queue(t, 0, VIRTIO_MSI_NO_VECTOR, DESC, AVAIL, USED);
    set_common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2, 4);
    set_common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x8000);
    set_common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2), QSIZE);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 4), DESC);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1);
    /* A reset puts everything back. */
    set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, 9);
    set_status(t, 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2), 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2), VIRTIO_RNG_QUEUE_SIZE);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_DESCLO, 8), 0);
    board_free(t);
}

struct kicker {
    struct bus *mmio;
    uint64_t notify, isr; /* the addresses do not change: probe() puts the BARs back */
    bool stop;
};

/* A second vCPU that keeps notifying while the first one resets the device. */
static void *kick_loop(void *opaque)
{
    struct kicker *k = opaque;
    while (!__atomic_load_n(&k->stop, __ATOMIC_RELAXED)) {
        uint64_t v;
        bus_write(k->mmio, k->notify, 2, 0);
        bus_read(k->mmio, k->isr, 1, &v);
    }
    return NULL;
}

static void test_reset_while_running(void **state)
{
    struct tb *t = board(0, 0, false);
    bring_up(t, true);
    struct kicker k = {.mmio = &t->mmio, .notify = notify_addr(t, 0), .isr = t->bar4 + t->isr_off};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, kick_loop, &k), 0);
    for (unsigned round = 0; round < 40; round++) {
        set_status(t, 0);
        assert_int_equal(status(t), 0);
        assert_false(t->vdev->started);
        assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
        set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, 0);
        setup_queue(t, 0, 1, DESC, AVAIL, USED);
        set_status(t, status(t) | VIRTIO_STATUS_DRIVER_OK);
        assert_true(t->vdev->started);
        for (unsigned i = 0; i < QSIZE; i++)
            offer(t, i, DATA + 64 * i, 64, VIRTQ_DESC_F_WRITE);
        if (round % 2)
            sleep_ms(1);
        if (round % 4 == 1) {
            /* A reset through the PCI_CFG window: the config write path. */
            unsigned c = t->cap_cfg;
            pci_config_write(t->dev, c + VIRTIO_PCI_CAP_BAR, 1, 4);
            pci_config_write(t->dev, c + VIRTIO_PCI_CAP_OFFSET, 4, VIRTIO_PCI_COMMON_STATUS);
            pci_config_write(t->dev, c + VIRTIO_PCI_CAP_LENGTH, 4, 1);
            pci_config_write(t->dev, c + VIRTIO_PCI_CFG_CAP_DATA, 4, 0);
            assert_false(t->vdev->started);
        }
        if (round % 4 == 3) {
            /* A machine reset instead: the BARs go away, the device stops. */
            pci_bus_reset(&t->bus);
            assert_false(t->vdev->started);
            assert_int_equal(t->vdev->status, 0);
            assert_null(bus_find(&t->mmio, t->bar4));
            probe(t);
            msix_enable(t);
        }
    }
    __atomic_store_n(&k.stop, true, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    /* Still works, and the file continues where the last reads stopped. */
    bring_up(t, true);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    board_free(t);
}

static void test_rate_limit(void **state)
{
    const unsigned period = 300;
    struct tb *t = board(64, period, false);
    bring_up(t, true);
    /* Two 48-byte buffers: the first gets 48, the second the 16 left in the window; a third
     * waits for the next window. */
    uint64_t start = now_ms();
    offer(t, 0, DATA, 48, VIRTQ_DESC_F_WRITE);
    offer(t, 1, DATA + 0x100, 48, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 2, TIMEOUT_MS));
    uint32_t id, len;
    used_elem(t, 0, &id, &len);
    assert_int_equal(len, 48);
    used_elem(t, 1, &id, &len);
    assert_int_equal(len, 16);
    assert_memory_equal(t->ram + DATA, t->content, 48);
    assert_memory_equal(t->ram + DATA + 0x100, t->content + 48, 16);

    /* The first window began after `start`: the third buffer cannot come back before
     * start + period, however slow this machine is. */
    offer(t, 2, DATA + 0x200, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    if (now_ms() - start < period / 2)
        assert_false(wait_used(t, 3, period / 4));
    assert_true(wait_used(t, 3, TIMEOUT_MS));
    assert_true(now_ms() - start >= period - 2); /* ms rounding */
    used_elem(t, 2, &id, &len);
    assert_int_equal(len, 64);
    assert_memory_equal(t->ram + DATA + 0x200, t->content + 64, 64);

    /* A device reset does not refill the budget: the second window (begun at the earliest at
     * start + period) must end first. */
    set_status(t, 0);
    bring_up(t, true);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    mmio_write(t, notify_addr(t, 0), 2, 0);
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    assert_true(now_ms() - start >= 2 * period - 2);
    board_free(t);
}

static void test_ioeventfd(void **state)
{
    struct tb *t = board(0, 0, true);
    probe(t);
    pthread_mutex_lock(&t->lock);
    assert_int_equal(t->nioevt, 1);
    assert_int_equal(t->ioevt[0].addr, BAR4_ADDR + VIRTIO_PCI_NOTIFY_OFF);
    assert_int_equal(t->ioevt[0].len, 2);
    assert_int_equal(t->ioevt[0].fd, t->vdev->kick_fd[0]);
    pthread_mutex_unlock(&t->lock);

    /* Moving the BAR moves the ioeventfd; decode off removes it. */
    cfg_write(t, PCI_BAR0 + 20, 4, 0x9);
    pthread_mutex_lock(&t->lock);
    assert_int_equal(t->nioevt, 1);
    assert_int_equal(t->ioevt[0].addr, 0x900000000ull + VIRTIO_PCI_NOTIFY_OFF);
    pthread_mutex_unlock(&t->lock);
    cfg_write(t, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    pthread_mutex_lock(&t->lock);
    assert_int_equal(t->nioevt, 0);
    pthread_mutex_unlock(&t->lock);
    cfg_write(t, PCI_BAR0 + 20, 4, (uint32_t)(BAR4_ADDR >> 32));
    cfg_write(t, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);

    /* KVM would signal the kick fd itself: do what it would. */
    msix_enable(t);
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, 0);
    setup_queue(t, 0, 1, DESC, AVAIL, USED);
    set_status(t, status(t) | VIRTIO_STATUS_DRIVER_OK);
    offer(t, 0, DATA, 64, VIRTQ_DESC_F_WRITE);
    uint64_t one = 1;
    assert_int_equal(write(t->ioevt[0].fd, &one, sizeof(one)), sizeof(one));
    assert_true(wait_used(t, 1, TIMEOUT_MS));
    assert_memory_equal(t->ram + DATA, t->content, 64);

    /* A machine reset unmaps BAR4 and so removes the ioeventfd. */
    pci_bus_reset(&t->bus);
    pthread_mutex_lock(&t->lock);
    assert_int_equal(t->nioevt, 0);
    pthread_mutex_unlock(&t->lock);
    board_free(t);
}

/* A device kind of the test's own, with config space and three queues. */
struct fakedev {
    struct virtio_device vdev;
    unsigned config_writes, config_reads;
    unsigned last_off, last_size;
};

static void fake_config_write(struct virtio_device *vdev, unsigned off, unsigned size)
{
    struct fakedev *f = vdev->opaque;
    f->config_writes++;
    f->last_off = off;
    f->last_size = size;
}

static void fake_config_read(struct virtio_device *vdev, unsigned off, unsigned size)
{
    struct fakedev *f = vdev->opaque;
    f->config_reads++;
}

static const struct virtio_device_ops fake_ops = {.config_write = fake_config_write,
                                                  .config_read = fake_config_read};

static void test_device_config(void **state)
{
    struct tb *t = board(0, 0, false);
    /* Class codes and device IDs per kind. */
    const struct {
        unsigned id;
        uint32_t class;
    } kinds[] = {{VIRTIO_ID_NET, 0x020000},
                 {VIRTIO_ID_BLOCK, 0x010000},
                 {VIRTIO_ID_CONSOLE, 0x078000},
                 {VIRTIO_ID_BALLOON, 0x00ff00}, /* unclassified, as QEMU's */
                 {VIRTIO_ID_9P, 0xff0000}};
    struct error err = {0};
    for (unsigned i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        struct fakedev f;
        struct virtio_pci *vp;
        assert_int_equal(virtio_device_init(&f.vdev, "virtio-test-pci", &fake_ops, &f, &t->mem,
                                            kinds[i].id, 0, 1, 8, 4, &err),
                         0);
        assert_int_equal(virtio_pci_create(&t->bus, -1, 0, &f.vdev, NULL, &vp, &err), 0);
        struct pci_device *d = virtio_pci_pci_device(vp);
        assert_string_equal(d->name, "virtio-test-pci");
        assert_int_equal(pci_config_read(d, PCI_DEVICE_ID, 2), 0x1040 + kinds[i].id);
        assert_int_equal(pci_config_read(d, PCI_REVISION_ID, 4) >> 8, kinds[i].class);
        virtio_pci_destroy(vp);
        virtio_device_destroy(&f.vdev);
    }

    /* Swap the board's rng for the fake device, at the same slot. */
    virtio_pci_destroy(t->vp);
    struct fakedev *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(virtio_device_init(&f->vdev, "virtio-test", &fake_ops, f, &t->mem,
                                        VIRTIO_ID_BALLOON, 0, 3, 8, 24, &err),
                     0);
    for (unsigned i = 0; i < 24; i++)
        f->vdev.config[i] = (uint8_t)(0x10 + i);
    assert_int_equal(virtio_pci_create(&t->bus, SLOT, 0, &f->vdev, NULL, &t->vp, &err), 0);
    t->dev = virtio_pci_pci_device(t->vp);
    struct virtio_device *saved = t->vdev;
    t->vdev = &f->vdev;
    probe(t);
    assert_int_not_equal(t->cap_device, 0);
    assert_int_equal(cfg_read(t, t->cap_device + VIRTIO_PCI_CAP_BAR, 1), 4);
    assert_int_equal(cfg_read(t, t->cap_device + VIRTIO_PCI_CAP_OFFSET, 4), VIRTIO_PCI_DEVICE_OFF);
    assert_int_equal(cfg_read(t, t->cap_device + VIRTIO_PCI_CAP_LENGTH, 4), 24);
    assert_int_equal(cfg_read(t, t->cap_notify + VIRTIO_PCI_CAP_LENGTH, 4), 12);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_NUMQ, 2), 3);
    msix_enable(t); /* checks 4 vectors */

    uint64_t dev = t->bar4 + VIRTIO_PCI_DEVICE_OFF;
    assert_int_equal(mmio_read(t, dev, 1), 0x10);
    assert_int_equal(mmio_read(t, dev + 2, 2), 0x1312);
    assert_int_equal(mmio_read(t, dev + 4, 4), 0x17161514);
    assert_int_equal(mmio_read(t, dev + 8, 8), 0x1f1e1d1c1b1a1918ull);
    assert_int_equal(mmio_read(t, dev + 22, 4), 0); /* crosses the end */
    assert_int_equal(mmio_read(t, dev + 24, 1), 0);
    assert_int_equal(mmio_read(t, dev + 0xffc, 4), 0);
    assert_true(f->config_reads >= 4);
    mmio_write(t, dev + 4, 4, 0xdeadbeef);
    assert_int_equal(f->config_writes, 1);
    assert_int_equal(f->last_off, 4);
    assert_int_equal(f->last_size, 4);
    assert_int_equal(mmio_read(t, dev + 4, 4), 0xdeadbeef);
    mmio_write(t, dev + 16, 8, 0x0102030405060708ull);
    assert_int_equal(mmio_read(t, dev + 16, 8), 0x0102030405060708ull);
    mmio_write(t, dev + 23, 2, 0xffff); /* crosses the end: dropped */
    assert_int_equal(f->vdev.config[23], 0x01);

    /* Notifications land in the queue's kick fd: by address, or by the value written. */
    for (unsigned q = 0; q < 3; q++) {
        assert_int_equal(notify_addr(t, q), t->bar4 + VIRTIO_PCI_NOTIFY_OFF + 4 * q);
        mmio_write(t, notify_addr(t, q), 2, q);
        for (unsigned j = 0; j < 3; j++)
            assert_int_equal(os_event_drain(f->vdev.kick_fd[j]), j == q);
    }
    mmio_write(t, notify_addr(t, 2), 2, 1); /* the value names queue 1 */
    assert_true(os_event_drain(f->vdev.kick_fd[1]));
    mmio_write(t, notify_addr(t, 2), 2, 7); /* no queue 7: the address's queue 2 */
    assert_true(os_event_drain(f->vdev.kick_fd[2]));
    mmio_write(t, t->bar4 + VIRTIO_PCI_NOTIFY_OFF + 12, 2, 0); /* beyond the queues */
    for (unsigned j = 0; j < 3; j++)
        assert_false(os_event_drain(f->vdev.kick_fd[j]));

    /* A configuration change: the generation moves, the config vector fires (DRIVER_OK). */
    assert_true(negotiate(t, VIRTIO_BIT(VIRTIO_F_VERSION_1)));
    set_common(t, VIRTIO_PCI_COMMON_MSIX, 2, 3);
    for (unsigned q = 0; q < 3; q++) {
        set_common(t, VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
        set_common(t, VIRTIO_PCI_COMMON_Q_MSIX, 2, q);
        assert_int_equal(common(t, VIRTIO_PCI_COMMON_Q_SIZE, 2), 8);
    }
    uint8_t gen = (uint8_t)common(t, VIRTIO_PCI_COMMON_CFGGENERATION, 1);
    set_status(t, status(t) | VIRTIO_STATUS_DRIVER_OK);
    unsigned m = msis(t);
    virtio_config_changed(&f->vdev);
    assert_int_equal(common(t, VIRTIO_PCI_COMMON_CFGGENERATION, 1), (uint8_t)(gen + 1));
    assert_int_equal(msis(t), m + 1);
    assert_int_equal(last_msi(t), MSI_DATA + 3);
    /* Queue interrupts use each queue's vector (the transport side of virtio_notify_queue). */
    for (unsigned q = 0; q < 3; q++) {
        f->vdev.transport->notify_queue(&f->vdev, q);
        assert_int_equal(last_msi(t), MSI_DATA + q);
    }
    /* Masked vector: pending in the PBA, sent on unmask (pci.c), not lost. */
    mmio_write(t, t->bar1 + 16 * 3 + 12, 4, 1);
    m = msis(t);
    virtio_config_changed(&f->vdev);
    assert_int_equal(msis(t), m);
    assert_int_equal(mmio_read(t, t->bar1 + VIRTIO_PCI_MSIX_PBA, 8), 1u << 3);
    mmio_write(t, t->bar1 + 16 * 3 + 12, 4, 0);
    assert_int_equal(msis(t), m + 1);

    virtio_pci_destroy(t->vp);
    assert_null(f->vdev.transport);
    virtio_device_destroy(&f->vdev);
    free(f);
    /* Put an rng back for board_free. */
    t->vdev = saved;
    assert_int_equal(virtio_pci_create(&t->bus, SLOT, 0, t->vdev, NULL, &t->vp, &err), 0);
    board_free(t);
}

static void test_create_errors(void **state)
{
    struct guest_mem mem;
    static uint8_t ram[4096];
    guest_mem_init_buffer(&mem, ram, sizeof(ram));
    struct virtio_rng *r = NULL;
    struct error err = {0};
    assert_int_equal(virtio_rng_create(&mem, "/nonexistent/kemu-entropy", 0, 0, &r, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/kemu-entropy"));
    assert_null(strchr(err.msg, '\n'));
    err = (struct error){0};
    assert_int_equal(virtio_rng_create(&mem, "/", 0, 0, &r, &err), -1);
    assert_non_null(strstr(err.msg, "'/'"));
    err = (struct error){0};
    assert_int_equal(virtio_rng_create(&mem, NULL, 1024, 0, &r, &err), -1);
    assert_non_null(strstr(err.msg, "period"));
    /* The default source. */
    err = (struct error){0};
    assert_int_equal(virtio_rng_create(&mem, NULL, 0, 0, &r, &err), 0);
    assert_int_equal(virtio_rng_vdev(r)->device_id, VIRTIO_ID_RNG);
    assert_int_equal(virtio_rng_vdev(r)->nqueues, 1);
    virtio_rng_destroy(r);
    virtio_rng_destroy(NULL);
    virtio_pci_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_rng_msix),
        cmocka_unit_test(test_features),
        cmocka_unit_test(test_needs_reset),
        cmocka_unit_test(test_intx),
        cmocka_unit_test(test_pci_cfg_window),
        cmocka_unit_test(test_odd_accesses),
        cmocka_unit_test(test_queue_select),
        cmocka_unit_test(test_reset_while_running),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_ioeventfd),
        cmocka_unit_test(test_device_config),
        cmocka_unit_test(test_create_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
