/* ACPI tables and the AML builder: found and walked the way Linux/ACPICA do, every checksum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "arch/x86/aml.h"
#include "arch/x86/layout.h"
#include "hw/acpi_pm.h"
#include "core/bytes.h"

#define RAM_SIZE (1024 * 1024)

static uint8_t *ram;
static struct guest_mem mem;

static int setup(void **state)
{
    ram = calloc(1, RAM_SIZE);
    assert_non_null(ram);
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    return 0;
}

static int teardown(void **state)
{
    free(ram);
    ram = NULL;
    return 0;
}

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s;
}

/* Like Linux's acpi_find_root_pointer: 16-byte steps over 0xE0000-0xFFFFF, signature, checksums. */
static const uint8_t *find_rsdp(void)
{
    for (uint64_t a = 0xe0000; a + 36 <= 0x100000; a += 16) {
        const uint8_t *p = ram + a;
        if (memcmp(p, "RSD PTR ", 8) || sum(p, 20))
            continue;
        if (p[15] >= 2 && sum(p, le_get32(p + 20)))
            continue;
        return p;
    }
    return NULL;
}

/* A table at a guest address: signature, length inside RAM, checksum, OEM fields. */
static const uint8_t *table(uint64_t addr, const char *sig)
{
    assert_true(addr + 36 <= RAM_SIZE);
    const uint8_t *t = ram + addr;
    assert_memory_equal(t, sig, 4);
    uint32_t len = le_get32(t + 4);
    assert_true(len >= 36 && addr + len <= RAM_SIZE);
    assert_int_equal(sum(t, len), 0);
    assert_memory_equal(t + 10, "KEMU  ", 6);
    assert_memory_equal(t + 16, "KEMUTBL ", 8);
    assert_memory_equal(t + 28, "KEMU", 4);
    return t;
}

struct walk {
    const uint8_t *rsdp, *xsdt, *rsdt, *fadt, *facs, *dsdt, *madt;
};

static void build(const uint32_t *ids, unsigned n, bool pc, struct x86_acpi_info *info)
{
    struct x86_acpi_config cfg = {
        .apic_ids = ids,
        .nr_cpus = n,
        .legacy_pc = pc,
        .pm_base = ACPI_PM_BASE,
        .sci_irq = 9,
        .pci = pc,
        .pci_mem32_base = 0xc0000000,
        .pci_mem32_len = 0x3ec00000,
        .pci_gsi = {16, 17, 18, 19},
        .base = X86_ACPI_ADDR,
        .size = X86_ACPI_MAX_SIZE,
    };
    struct error err = {0};
    memset(ram, 0, RAM_SIZE);
    assert_int_equal(x86_build_acpi(&mem, &cfg, info, &err), 0);
    assert_false(err.set);
}

static struct walk walk_tables(const struct x86_acpi_info *info)
{
    struct walk w = {0};
    w.rsdp = find_rsdp();
    assert_non_null(w.rsdp);
    assert_int_equal(w.rsdp - ram, info->rsdp_addr);
    assert_int_equal(w.rsdp[15], 2);
    assert_int_equal(le_get32(w.rsdp + 20), 36);
    assert_memory_equal(w.rsdp + 9, "KEMU  ", 6);

    w.xsdt = table(le_get64(w.rsdp + 24), "XSDT");
    w.rsdt = table(le_get32(w.rsdp + 16), "RSDT");
    uint32_t xn = (le_get32(w.xsdt + 4) - 36) / 8, rn = (le_get32(w.rsdt + 4) - 36) / 4;
    assert_int_equal(xn, rn);
    for (unsigned i = 0; i < xn; i++) {
        uint64_t a = le_get64(w.xsdt + 36 + 8 * i);
        assert_int_equal(a, le_get32(w.rsdt + 36 + 4 * i));
        const uint8_t *t = ram + a;
        if (!memcmp(t, "FACP", 4))
            w.fadt = table(a, "FACP");
        else if (!memcmp(t, "APIC", 4))
            w.madt = table(a, "APIC");
        else
            fail_msg("unexpected table %.4s", (const char *)t);
    }
    assert_non_null(w.fadt);
    assert_non_null(w.madt);

    const uint8_t *f = w.fadt;
    assert_int_equal(le_get32(f + 4), 276);
    assert_int_equal(f[8], 6);
    uint64_t dsdt = le_get64(f + 140), facs = le_get32(f + 36);
    assert_int_equal(dsdt, le_get32(f + 40));
    assert_int_equal(le_get64(f + 132), 0); /* at most one of FIRMWARE_CTRL, X_FIRMWARE_CTRL */
    w.dsdt = table(dsdt, "DSDT");
    assert_int_equal(facs % 64, 0);
    w.facs = ram + facs;
    assert_memory_equal(w.facs, "FACS", 4);
    assert_int_equal(le_get32(w.facs + 4), 64);

    /* Every table lies inside the window. */
    const uint8_t *all[] = {w.rsdp, w.xsdt, w.rsdt, w.fadt, w.facs, w.dsdt, w.madt};
    for (unsigned i = 0; i < 7; i++) {
        uint64_t a = (uint64_t)(all[i] - ram);
        uint32_t len = i == 0 ? 36 : le_get32(all[i] + 4);
        assert_true(a >= X86_ACPI_ADDR && a + len <= X86_ACPI_ADDR + info->used);
    }
    assert_true(info->used <= X86_ACPI_MAX_SIZE);
    return w;
}

static void check_gas(const uint8_t *g, uint8_t bits, uint64_t addr)
{
    assert_int_equal(g[0], 1); /* system I/O */
    assert_int_equal(g[1], bits);
    assert_int_equal(g[2], 0);
    assert_int_equal(le_get64(g + 4), addr);
}

static void test_fadt(void **state)
{
    uint32_t ids[] = {0};
    struct x86_acpi_info info;
    build(ids, 1, true, &info);
    struct walk w = walk_tables(&info);
    const uint8_t *f = w.fadt;
    assert_int_equal(le_get16(f + 46), 9);     /* SCI_INT */
    assert_int_equal(le_get32(f + 48), 0);     /* SMI_CMD */
    assert_int_equal(le_get32(f + 56), 0x600); /* PM1a_EVT_BLK */
    assert_int_equal(le_get32(f + 64), 0x604); /* PM1a_CNT_BLK */
    assert_int_equal(le_get32(f + 76), 0x608); /* PM_TMR_BLK */
    assert_int_equal(le_get32(f + 80), 0x610); /* GPE0_BLK */
    assert_int_equal(f[88], 4);
    assert_int_equal(f[89], 2);
    assert_int_equal(f[91], 4);
    assert_int_equal(f[92], 4);
    assert_int_equal(le_get16(f + 109), 3); /* LEGACY_DEVICES | 8042 */
    uint32_t flags = le_get32(f + 112);
    assert_true(flags & (1u << 0));   /* WBINVD */
    assert_true(flags & (1u << 2));   /* PROC_C1 */
    assert_false(flags & (1u << 4));  /* fixed power button */
    assert_true(flags & (1u << 5));   /* no sleep button */
    assert_true(flags & (1u << 8));   /* TMR_VAL_EXT */
    assert_true(flags & (1u << 10));  /* RESET_REG_SUP */
    assert_false(flags & (1u << 20)); /* not hardware-reduced */
    check_gas(f + 116, 8, 0xcf9);
    assert_int_equal(f[128], 0x06);
    check_gas(f + 148, 32, 0x600);
    check_gas(f + 172, 16, 0x604);
    check_gas(f + 208, 32, 0x608);
    check_gas(f + 220, 32, 0x610);

    build(ids, 1, false, &info);
    w = walk_tables(&info);
    assert_int_equal(le_get16(w.fadt + 109), 4); /* microvm: VGA not present, no 8042 */
    assert_int_equal(le_get32(w.madt + 40), 0);  /* no PCAT_COMPAT */
}

struct madt_counts {
    unsigned lapic, x2apic, ioapic, iso, nmi, x2nmi;
    uint32_t ids[512];
    uint32_t uids[512];
    unsigned ncpu;
    uint8_t ioapic_id;
    uint16_t iso_flags[16];
    uint32_t iso_gsi[16];
};

static struct madt_counts parse_madt(const uint8_t *m)
{
    struct madt_counts c;
    memset(&c, 0, sizeof(c));
    memset(c.iso_gsi, 0xff, sizeof(c.iso_gsi));
    assert_int_equal(le_get32(m + 36), 0xfee00000u);
    const uint8_t *p = m + 44, *end = m + le_get32(m + 4);
    while (p < end) {
        assert_true(p[1] >= 2 && p + p[1] <= end);
        switch (p[0]) {
        case 0:
            assert_int_equal(p[1], 8);
            assert_int_equal(le_get32(p + 4), 1);
            c.uids[c.ncpu] = p[2];
            c.ids[c.ncpu++] = p[3];
            c.lapic++;
            break;
        case 1:
            assert_int_equal(p[1], 12);
            assert_int_equal(le_get32(p + 4), 0xfec00000u);
            assert_int_equal(le_get32(p + 8), 0);
            c.ioapic_id = p[2];
            c.ioapic++;
            break;
        case 2:
            assert_int_equal(p[1], 10);
            assert_int_equal(p[2], 0);
            assert_true(p[3] < 16);
            c.iso_gsi[p[3]] = le_get32(p + 4);
            c.iso_flags[p[3]] = le_get16(p + 8);
            c.iso++;
            break;
        case 4:
            assert_int_equal(p[1], 6);
            assert_int_equal(p[2], 0xff);
            assert_int_equal(p[5], 1);
            c.nmi++;
            break;
        case 9:
            assert_int_equal(p[1], 16);
            assert_int_equal(le_get32(p + 8), 1);
            c.uids[c.ncpu] = le_get32(p + 12);
            c.ids[c.ncpu++] = le_get32(p + 4);
            c.x2apic++;
            break;
        case 10:
            assert_int_equal(p[1], 12);
            assert_int_equal(le_get32(p + 4), 0xffffffffu);
            assert_int_equal(p[8], 1);
            c.x2nmi++;
            break;
        default:
            fail_msg("unexpected MADT entry type %u", p[0]);
        }
        p += p[1];
    }
    assert_ptr_equal(p, end);
    return c;
}

static void check_madt(const uint32_t *ids, unsigned n)
{
    struct x86_acpi_info info;
    build(ids, n, true, &info);
    struct walk w = walk_tables(&info);
    assert_int_equal(le_get32(w.madt + 40), 1); /* PCAT_COMPAT */
    struct madt_counts c = parse_madt(w.madt);
    assert_int_equal(c.ncpu, n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(c.ids[i], ids[i]);
        assert_int_equal(c.uids[i], i);
    }
    assert_int_equal(c.ioapic, 1);
    assert_int_equal(c.ioapic_id, info.ioapic_id);
    if (n < 255)
        for (unsigned i = 0; i < n; i++)
            assert_int_not_equal(c.ioapic_id, ids[i]);
    assert_int_equal(c.iso, 2);
    assert_int_equal(c.iso_gsi[0], 2);
    assert_int_equal(c.iso_flags[0], 0x0005);
    assert_int_equal(c.iso_gsi[9], 9);
    assert_int_equal(c.iso_flags[9], 0x000d);
    assert_int_equal(c.nmi, 1);
    assert_int_equal(c.x2nmi, c.x2apic ? 1 : 0);
}

static void test_madt_1(void **state)
{
    uint32_t ids[] = {0};
    check_madt(ids, 1);
}

static void test_madt_4(void **state)
{
    uint32_t ids[] = {0, 1, 2, 3};
    check_madt(ids, 4);
}

static void test_madt_sparse(void **state)
{
    uint32_t ids[] = {0, 1, 4, 5};
    check_madt(ids, 4);
}

static void test_madt_255(void **state)
{
    uint32_t ids[255];
    for (unsigned i = 0; i < 255; i++)
        ids[i] = i;
    check_madt(ids, 255);
    struct x86_acpi_info info;
    build(ids, 255, true, &info);
    struct madt_counts c = parse_madt(walk_tables(&info).madt);
    assert_int_equal(c.lapic, 255); /* ids and indices 0-254 all fit the xAPIC entry */
    assert_int_equal(c.x2apic, 0);
}

static void test_madt_x2apic(void **state)
{
    uint32_t ids[300];
    for (unsigned i = 0; i < 300; i++)
        ids[i] = i * 2;
    check_madt(ids, 300);
    struct x86_acpi_info info;
    build(ids, 300, true, &info);
    struct madt_counts c = parse_madt(walk_tables(&info).madt);
    assert_int_equal(c.lapic, 128); /* ids 0..254 */
    assert_int_equal(c.x2apic, 172);
    assert_int_equal(c.ioapic_id, 1); /* the lowest 8-bit id no CPU uses */
}

static void test_bad_config(void **state)
{
    uint32_t dup[] = {0, 1, 1};
    struct x86_acpi_config cfg = {
        .apic_ids = dup,
        .nr_cpus = 3,
        .legacy_pc = true,
        .pm_base = ACPI_PM_BASE,
        .sci_irq = 9,
        .base = X86_ACPI_ADDR,
        .size = X86_ACPI_MAX_SIZE,
    };
    struct error err = {0};
    assert_int_equal(x86_build_acpi(&mem, &cfg, NULL, &err), -1);
    assert_true(err.set);

    cfg.nr_cpus = 0;
    err = (struct error){0};
    assert_int_equal(x86_build_acpi(&mem, &cfg, NULL, &err), -1);

    uint32_t ok[] = {0};
    cfg.apic_ids = ok;
    cfg.nr_cpus = 1;
    cfg.base = RAM_SIZE - 0x100; /* runs past RAM */
    cfg.size = 0x10000;
    err = (struct error){0};
    assert_int_equal(x86_build_acpi(&mem, &cfg, NULL, &err), -1);
    assert_true(err.set);
}

static void test_window_too_small(void **state)
{
    uint32_t ids[64];
    for (unsigned i = 0; i < 64; i++)
        ids[i] = i;
    memset(ram, 0xa5, RAM_SIZE);
    struct x86_acpi_config cfg = {
        .apic_ids = ids,
        .nr_cpus = 64,
        .legacy_pc = true,
        .pm_base = ACPI_PM_BASE,
        .sci_irq = 9,
        .base = X86_ACPI_ADDR,
        .size = 512,
    };
    struct error err = {0};
    assert_int_equal(x86_build_acpi(&mem, &cfg, NULL, &err), -1);
    assert_true(err.set);
    for (size_t i = 0; i < RAM_SIZE; i++)
        if (ram[i] != 0xa5)
            fail_msg("byte 0x%zx written", i);

    /* The exact size fits, one byte less does not; nothing lands past the window. */
    cfg.size = X86_ACPI_MAX_SIZE;
    struct x86_acpi_info info;
    assert_int_equal(x86_build_acpi(&mem, &cfg, &info, &err), 0);
    memset(ram, 0xa5, RAM_SIZE);
    cfg.size = info.used - 1;
    err = (struct error){0};
    assert_int_equal(x86_build_acpi(&mem, &cfg, NULL, &err), -1);
    cfg.size = info.used;
    assert_int_equal(x86_build_acpi(&mem, &cfg, NULL, &err), 0);
    for (size_t i = 0; i < RAM_SIZE; i++)
        if ((i < X86_ACPI_ADDR || i >= X86_ACPI_ADDR + info.used) && ram[i] != 0xa5)
            fail_msg("byte 0x%zx outside the window written", i);
}

/* --- AML ----------------------------------------------------------------------------------- */

/* Decode a PkgLength at p: returns the value and stores the number of bytes it took. */
static uint32_t decode_pkglen(const uint8_t *p, unsigned *n)
{
    unsigned follow = p[0] >> 6;
    *n = follow + 1;
    if (follow == 0)
        return p[0] & 0x3f;
    uint32_t v = p[0] & 0x0f;
    for (unsigned i = 1; i <= follow; i++)
        v |= (uint32_t)p[i] << (4 + 8 * (i - 1));
    return v;
}

static void test_pkglen(void **state)
{
    static const struct {
        size_t body;
        unsigned size;
    } cases[] = {
        {0, 1},       {62, 1},       {63, 2},        {64, 2},        {4093, 2},
        {4094, 3},    {4095, 3},     {4096, 3},      {0xffffc, 3},   {0xffffd, 4},
        {0xfffff, 4}, {0x100000, 4}, {0xffffffb, 4}, {0xffffffc, 0},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(aml_pkglen_size(cases[i].body), cases[i].size);
        if (!cases[i].size)
            continue;
        struct aml a;
        aml_init(&a);
        aml_pkglen(&a, cases[i].body);
        assert_true(aml_ok(&a));
        assert_int_equal(a.len, cases[i].size);
        unsigned n;
        assert_int_equal(decode_pkglen(a.buf, &n), cases[i].body + cases[i].size);
        assert_int_equal(n, cases[i].size);
        if (n > 1)
            assert_int_equal(a.buf[0] & 0x30, 0); /* bits 5-4 of a multi-byte lead are 0 */
        aml_free(&a);
    }

    /* A Package whose body crosses the 1/2-byte boundary: the PkgLength is patched to 2 bytes. */
    for (unsigned elems = 55; elems < 70; elems++) {
        struct aml a;
        aml_init(&a);
        aml_package_begin(&a, elems);
        for (unsigned e = 0; e < elems; e++)
            aml_integer(&a, 1);
        aml_end(&a);
        assert_true(aml_ok(&a));
        assert_int_equal(a.buf[0], AML_PACKAGE_OP);
        unsigned n;
        uint32_t v = decode_pkglen(a.buf + 1, &n);
        assert_int_equal(v, a.len - 1);
        assert_int_equal(n, elems + 1 + 1 <= 63 ? 1 : 2);
        assert_int_equal(a.buf[1 + n], elems);
        aml_free(&a);
    }
}

static void check_name(const char *path, const uint8_t *expect, size_t len)
{
    struct aml a;
    aml_init(&a);
    aml_namestring(&a, path);
    assert_true(aml_ok(&a));
    assert_int_equal(a.len, len);
    assert_memory_equal(a.buf, expect, len);
    aml_free(&a);
}

static void test_names(void **state)
{
    check_name("_S5", (const uint8_t *)"_S5_", 4);
    check_name("\\_S5", (const uint8_t *)"\\_S5_", 5);
    check_name("\\", (const uint8_t *)"\\\0", 2);
    check_name("^^FOO", (const uint8_t *)"^^FOO_", 6);
    check_name("\\_SB.PCI0", (const uint8_t *)"\\\x2e_SB_PCI0", 10);
    check_name("_SB.PCI0.ISA", (const uint8_t *)"\x2f\x03_SB_PCI0ISA_", 14);

    static const char *bad[] = {"", "a", "1ABC", "ABCDE", "A..B", "A.", "A-B", NULL};
    for (unsigned i = 0; bad[i]; i++) {
        struct aml a;
        aml_init(&a);
        aml_namestring(&a, bad[i]);
        /* "" is a valid NullName; the rest are errors. */
        assert_int_equal(aml_ok(&a), i == 0);
        aml_free(&a);
    }
}

static void test_integers_and_ids(void **state)
{
    static const struct {
        uint64_t v;
        uint8_t enc[9];
        size_t len;
    } cases[] = {
        {0, {0x00}, 1},
        {1, {0x01}, 1},
        {2, {0x0a, 0x02}, 2},
        {0xff, {0x0a, 0xff}, 2},
        {0x100, {0x0b, 0x00, 0x01}, 3},
        {0x10000, {0x0c, 0x00, 0x00, 0x01, 0x00}, 5},
        {0x100000000ULL, {0x0e, 0, 0, 0, 0, 1, 0, 0, 0}, 9},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct aml a;
        aml_init(&a);
        aml_integer(&a, cases[i].v);
        assert_int_equal(a.len, cases[i].len);
        assert_memory_equal(a.buf, cases[i].enc, cases[i].len);
        aml_free(&a);
    }
    assert_int_equal(aml_eisaid_value("PNP0A03"), 0x030ad041);
    assert_int_equal(aml_eisaid_value("PNP0501"), 0x0105d041);
    assert_int_equal(aml_eisaid_value("pnp0a03"), 0);
    assert_int_equal(aml_eisaid_value("PNP0A0"), 0);

    struct aml a;
    aml_init(&a);
    aml_string(&a, "hi");
    assert_memory_equal(a.buf, "\x0dhi\0", 4);
    aml_free(&a);

    /* ResourceTemplate: Buffer, PkgLength, BufferSize, descriptors, EndTag. */
    aml_init(&a);
    aml_resource_template_begin(&a);
    aml_res_io(&a, 0x3f8, 0x3f8, 0, 8);
    aml_res_irq_noflags(&a, 4);
    aml_res_memory32_fixed(&a, true, 0xfec00000u, 0x1000);
    aml_end(&a);
    assert_true(aml_ok(&a));
    static const uint8_t rt[] = {
        0x11, 0x1c, 0x0a, 0x19,                                     /* Buffer, len, size 25 */
        0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08,             /* IO */
        0x22, 0x10, 0x00,                                           /* IRQNoFlags {4} */
        0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xc0, 0xfe, 0x00, 0x10, /* Memory32Fixed */
        0x00, 0x00, 0x79, 0x00,                                     /* EndTag */
    };
    assert_int_equal(a.len, sizeof(rt));
    assert_memory_equal(a.buf, rt, sizeof(rt));
    aml_free(&a);

    /* Unbalanced nesting is an error. */
    aml_init(&a);
    aml_scope_begin(&a, "\\_SB");
    assert_false(aml_ok(&a));
    aml_end(&a);
    assert_true(aml_ok(&a));
    aml_end(&a);
    assert_false(aml_ok(&a));
    aml_free(&a);
}

/* Find `needle` in the DSDT body. */
static const uint8_t *dsdt_find(const uint8_t *dsdt, const void *needle, size_t n)
{
    uint32_t len = le_get32(dsdt + 4);
    for (uint32_t i = 36; i + n <= len; i++)
        if (!memcmp(dsdt + i, needle, n))
            return dsdt + i;
    return NULL;
}

static void test_dsdt(void **state)
{
    uint32_t ids[] = {0};
    struct x86_acpi_info info;
    build(ids, 1, false, &info);
    struct walk w = walk_tables(&info);
    /* microvm: exactly Name(\_S5, Package(4) {0, 0, 0, 0}). */
    static const uint8_t s5[] = {0x08, 0x5c, '_',  'S',  '5',  '_', 0x12,
                                 0x06, 0x04, 0x00, 0x00, 0x00, 0x00};
    assert_int_equal(le_get32(w.dsdt + 4), 36 + sizeof(s5));
    assert_memory_equal(w.dsdt + 36, s5, sizeof(s5));
    assert_int_equal(ACPI_PM_SLP_TYP_S5, 0);

    build(ids, 1, true, &info);
    w = walk_tables(&info);
    assert_non_null(dsdt_find(w.dsdt, s5, sizeof(s5)));
    assert_non_null(dsdt_find(w.dsdt, "\x5b\x82", 2));
    static const uint8_t com1_hid[] = {0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01};
    assert_non_null(dsdt_find(w.dsdt, com1_hid, sizeof(com1_hid)));
    static const uint8_t rtc_hid[] = {0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0b, 0x00};
    assert_non_null(dsdt_find(w.dsdt, rtc_hid, sizeof(rtc_hid)));
    static const uint8_t kbd_hid[] = {0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x03, 0x03};
    assert_non_null(dsdt_find(w.dsdt, kbd_hid, sizeof(kbd_hid)));
    static const uint8_t sta[] = {0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f};
    assert_non_null(dsdt_find(w.dsdt, sta, sizeof(sta)));
}

/* Whether iasl (Debian package acpica-tools) is there; the tests that need it skip without. */
static bool have_iasl(void)
{
    if (system("iasl -v >/dev/null 2>&1") != 0) {
        printf("SKIP: iasl (Debian package acpica-tools) is not installed\n");
        return false;
    }
    return true;
}

/* Write table t to dir/name.dat and disassemble it there (dir/name.dsl); iasl must report no
 * error or warning. */
static void iasl_disassemble(const char *dir, const char *name, const uint8_t *t)
{
    char path[256], cmd[1024];
    snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(t, le_get32(t + 4), 1, f), 1);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "cd %s && iasl -d %s.dat >%s.log 2>&1", dir, name, name);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "grep -qi 'error\\|warning' %s/%s.dsl %s/%s.log", dir, name, dir,
             name);
    if (system(cmd) == 0) {
        snprintf(cmd, sizeof(cmd), "cat %s/%s.log %s/%s.dsl", dir, name, dir, name);
        (void)system(cmd);
        fail_msg("iasl reported a problem with %s", name);
    }
}

/* The whole of a disassembled file, NUL-terminated (malloc'd). */
static char *slurp(const char *dir, const char *file)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void rm_dir(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)system(cmd);
}

static size_t count_str(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* One AML integer as iasl prints it: Zero, One, or 0x... */
static uint64_t dsl_integer(const char **p)
{
    while (**p == ' ' || **p == '\n' || **p == '\r' || **p == ',')
        (*p)++;
    if (!strncmp(*p, "Zero", 4)) {
        *p += 4;
        return 0;
    }
    if (!strncmp(*p, "One", 3)) {
        *p += 3;
        return 1;
    }
    char *end;
    assert_true(!strncmp(*p, "0x", 2));
    uint64_t v = strtoull(*p, &end, 16);
    *p = end;
    return v;
}

/* Disassemble the DSDT with ACPICA's iasl when installed: it must parse without errors. */
static void test_iasl(void **state)
{
    if (!have_iasl())
        skip();
    /* 300 CPUs: both Local APIC and Local x2APIC entries in the MADT. */
    uint32_t ids[300];
    for (unsigned i = 0; i < 300; i++)
        ids[i] = i;
    struct x86_acpi_info info;
    build(ids, 300, true, &info);
    struct walk w = walk_tables(&info);

    char dir[] = "/tmp/kemu-acpi-XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const char *names[] = {"dsdt", "facp", "apic", "facs", "xsdt", "rsdt"};
    const uint8_t *tabs[] = {w.dsdt, w.fadt, w.madt, w.facs, w.xsdt, w.rsdt};
    for (unsigned i = 0; i < 6; i++)
        iasl_disassemble(dir, names[i], tabs[i]);
    /* The disassembled DSDT names what we put there. */
    static const char *want[] = {"_S5_",
                                 "PNP0501",
                                 "PNP0B00",
                                 "PNP0303",
                                 "PNP0F13",
                                 "IO (Decode16",
                                 "IRQNoFlags",
                                 "PNP0A03",
                                 "WordBusNumber (ResourceProducer, MinFixed, MaxFixed",
                                 "0x0CF7",
                                 "DWordMemory (ResourceProducer",
                                 "0xFEBFFFFF",
                                 "0x001FFFFF,",
                                 NULL};
    char *dsl = slurp(dir, "dsdt.dsl");
    for (unsigned i = 0; want[i]; i++)
        if (!strstr(dsl, want[i]))
            fail_msg("disassembled DSDT lacks %s:\n%s", want[i], dsl);

    /*
     * \_SB.PCI0._PRT as iasl reads it back: 124 entries, slots 1-31 x pins INTA-INTD, each
     * Package {0xSSSSFFFF, pin, 0, GSI} with the PIIX swizzle onto GSIs 16-19 (what Linux uses
     * for INTx when ACPI is on).
     */
    const char *p = strstr(dsl, "Name (_PRT, Package (0x7C)");
    if (!p)
        fail_msg("disassembled DSDT has no 124-entry _PRT:\n%s", dsl);
    unsigned seen[4] = {0};
    for (unsigned slot = 1; slot < 32; slot++) {
        for (unsigned pin = 0; pin < 4; pin++) {
            p = strstr(p, "Package (0x04)");
            assert_non_null(p);
            p = strchr(p, '{');
            assert_non_null(p);
            p++;
            assert_int_equal(dsl_integer(&p), ((uint64_t)slot << 16) | 0xffff);
            assert_int_equal(dsl_integer(&p), pin);
            assert_int_equal(dsl_integer(&p), 0);
            uint64_t gsi = dsl_integer(&p);
            assert_int_equal(gsi, 16 + (slot + pin) % 4);
            seen[gsi - 16]++;
        }
    }
    assert_null(strstr(p, "Package (0x04)")); /* nothing after the last entry */
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(seen[i], 31);
    free(dsl);
    rm_dir(dir);
}

/* microvm's DSDT: \_S5 and one LNRO0005 device per virtio-mmio transport, each with its
 * window and its edge-triggered, active-high GSI; no PCI, no _PRT. */
static void test_iasl_microvm(void **state)
{
    if (!have_iasl())
        skip();
    uint32_t ids[] = {0, 1};
    static const struct x86_acpi_virtio_mmio devs[] = {
        {0xfeb00000, 0x200, 16}, {0xfeb00200, 0x200, 17}, {0xfeb00400, 0x200, 23}};
    struct x86_acpi_config cfg = {
        .apic_ids = ids,
        .nr_cpus = 2,
        .pm_base = ACPI_PM_BASE,
        .sci_irq = 9,
        .virtio_mmio = devs,
        .nr_virtio_mmio = 3,
        .base = X86_ACPI_ADDR,
        .size = X86_ACPI_MAX_SIZE,
    };
    struct error err = {0};
    struct x86_acpi_info info;
    memset(ram, 0, RAM_SIZE);
    assert_int_equal(x86_build_acpi(&mem, &cfg, &info, &err), 0);
    struct walk w = walk_tables(&info);

    char dir[] = "/tmp/kemu-acpi-XXXXXX";
    assert_non_null(mkdtemp(dir));
    iasl_disassemble(dir, "dsdt", w.dsdt);
    char *dsl = slurp(dir, "dsdt.dsl");
    if (count_str(dsl, "\"LNRO0005\"") != 3 || !strstr(dsl, "_S5_") || strstr(dsl, "_PRT") ||
        strstr(dsl, "PNP0A03"))
        fail_msg("microvm DSDT:\n%s", dsl);
    char want[256];
    for (unsigned i = 0; i < 3; i++) {
        /* iasl prints Memory32Fixed (ReadWrite, base, length, ) and
         * Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { gsi } */
        snprintf(want, sizeof(want), "Device (VR%02u)", i);
        const char *d = strstr(dsl, want);
        if (!d)
            fail_msg("microvm DSDT lacks %s:\n%s", want, dsl);
        snprintf(want, sizeof(want), "Name (_UID, %s", i == 0 ? "Zero" : i == 1 ? "One" : "0x02");
        if (!strstr(d, want))
            fail_msg("VR%02u lacks %s:\n%s", i, want, dsl);
        snprintf(want, sizeof(want), "0x%08X,         // Address Base\n", devs[i].base);
        if (!strstr(d, want))
            fail_msg("VR%02u lacks its window 0x%08X:\n%s", i, devs[i].base, dsl);
        const char *irq = strstr(d, "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive");
        assert_non_null(irq);
        irq = strchr(irq, '{');
        assert_non_null(irq);
        irq++;
        assert_int_equal(dsl_integer(&irq), devs[i].gsi);
    }
    free(dsl);
    rm_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fadt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_madt_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_madt_4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_madt_sparse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_madt_255, setup, teardown),
        cmocka_unit_test_setup_teardown(test_madt_x2apic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_too_small, setup, teardown),
        cmocka_unit_test(test_pkglen),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_integers_and_ids),
        cmocka_unit_test_setup_teardown(test_dsdt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iasl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iasl_microvm, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
