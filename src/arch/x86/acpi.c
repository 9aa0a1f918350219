/*
 * ACPI tables (ACPI 6.x, chapter 5.2), built in a host buffer and copied into the guest window in
 * one write once everything is known to fit.
 *
 * Window layout (offsets from cfg->base):
 *   0x00  RSDP (revision 2, 36 bytes; Linux's scan wants it 16-byte aligned in 0xE0000-0xFFFFF)
 *   0x40  FACS (64 bytes, 64-byte aligned as the spec requires)
 *   0x80  DSDT, then FADT, MADT, XSDT, RSDT, each 16-byte aligned
 *
 * FADT choices:
 * - Not hardware-reduced: PM1a event/control, PM timer and GPE0 are the blocks of hw/acpi_pm.h.
 * - SMI_CMD = 0 (with ACPI_ENABLE = ACPI_DISABLE = 0): the spec says a zero SMI_CMD means the
 *   platform has no legacy/ACPI mode transition, and ACPICA's mode query then reports ACPI mode
 *   without touching hardware, so Linux never tries to enable ACPI. SCI_EN reads 1 anyway.
 * - Flags: WBINVD, PROC_C1, SLP_BUTTON (no fixed sleep button), FIX_RTC (no RTC wake status),
 *   TMR_VAL_EXT (32-bit PM timer), RESET_REG_SUP. PWR_BUTTON is clear: the power button is the
 *   fixed-feature one (PWRBTN_STS/EN in PM1).
 * - P_LVL2_LAT/P_LVL3_LAT above 100/1000 us: no C2/C3.
 * - IAPC_BOOT_ARCH: LEGACY_DEVICES | 8042 for pc; VGA_NOT_PRESENT for microvm (so Linux does not
 *   probe an i8042 there). CENTURY = 0x32, the CMOS century byte hw/rtc.c keeps.
 * - The 32-bit and X_ 64-bit forms of every address carry the same value (ACPICA warns when
 *   they differ), except the FACS: the spec allows at most one of FIRMWARE_CTRL and
 *   X_FIRMWARE_CTRL to be non-zero (Linux otherwise maps the FACS twice), so only the 32-bit
 *   FIRMWARE_CTRL is set; the window is below 4 GiB anyway.
 *
 * MADT: PCAT_COMPAT only for pc (the 8259 pair); one Processor Local APIC entry (UID = CPU
 * index) per CPU whose APIC id and index fit in 8 bits (id < 255, index < 255), a Local x2APIC
 * entry otherwise (then also a Local x2APIC NMI entry); one IOAPIC at 0xFEC00000, GSI base 0,
 * id = highest APIC id + 1 like the MP table (when that does not fit in 8 bits, the lowest 8-bit
 * id no CPU uses, or 0 if all are taken: Linux x86_64 only needs IOAPIC ids unique among
 * IOAPICs, 32-bit Linux reprograms a clashing one); ISA IRQ0 -> GSI 2 edge/high; SCI IRQ -> same
 * GSI level/high (0x000D, as QEMU); NMI on LINT1 of every CPU.
 *
 * DSDT: \_S5 = Package(4) {S5, S5, 0, 0} with S5 = ACPI_PM_SLP_TYP_S5; the virtio-mmio devices
 * under \_SB (VR00, VR01, ...: LNRO0005, window, edge GSI); for pc also, under \_SB,
 * COM1 (PNP0501), RTC (PNP0B00), KBD (PNP0303) and MOU (PNP0F13), each with _STA = 0x0F and a
 * _CRS naming its ports and ISA IRQ.
 */
#include "arch/x86/acpi.h"

#include <stdlib.h>
#include <string.h>

#include "arch/x86/aml.h"
#include "arch/x86/layout.h"
#include "hw/acpi_pm.h"
#include "core/bytes.h"

#define HDR_SIZE  36
#define RSDP_SIZE 36
#define FACS_SIZE 64
#define FADT_SIZE 276 /* revision 6 */

#define FADT_REVISION       6
#define FADT_MINOR_REVISION 0
#define MADT_REVISION       5
#define DSDT_REVISION       2 /* 64-bit integers */

/* FADT flags. */
#define FADT_F_WBINVD        (1u << 0)
#define FADT_F_PROC_C1       (1u << 2)
#define FADT_F_SLP_BUTTON    (1u << 5)
#define FADT_F_FIX_RTC       (1u << 6)
#define FADT_F_TMR_VAL_EXT   (1u << 8)
#define FADT_F_RESET_REG_SUP (1u << 10)

/* FADT IAPC_BOOT_ARCH. */
#define BOOT_ARCH_LEGACY_DEVICES  (1u << 0)
#define BOOT_ARCH_8042            (1u << 1)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)

#define GAS_SYSTEM_IO   1
#define GAS_ACCESS_BYTE 1

#define CMOS_CENTURY 0x32

/* MADT. */
#define MADT_PCAT_COMPAT    1
#define MADT_LAPIC          0
#define MADT_IOAPIC         1
#define MADT_ISO            2
#define MADT_LAPIC_NMI      4
#define MADT_X2APIC         9
#define MADT_X2APIC_NMI     10
#define MADT_LAPIC_LEN      8
#define MADT_IOAPIC_LEN     12
#define MADT_ISO_LEN        10
#define MADT_LAPIC_NMI_LEN  6
#define MADT_X2APIC_LEN     16
#define MADT_X2APIC_NMI_LEN 12
#define MADT_ENABLED        1
#define MPS_ACTIVE_HIGH     0x1
#define MPS_EDGE            0x4
#define MPS_LEVEL           0xc

#define ISA_COM1_IRQ 4
#define ISA_RTC_IRQ  8
#define ISA_KBD_IRQ  1
#define ISA_AUX_IRQ  12

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static void header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    le_put32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, X86_ACPI_OEM_ID, 6);
    memcpy(t + 16, X86_ACPI_OEM_TABLE_ID, 8);
    le_put32(t + 24, 1); /* OEM revision */
    memcpy(t + 28, X86_ACPI_CREATOR_ID, 4);
    le_put32(t + 32, 1); /* creator revision */
}

/* Call last, once the table is complete. */
static void finish(uint8_t *t)
{
    uint32_t len =
        (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
    t[9] = 0;
    t[9] = checksum8(t, len);
}

static void gas(uint8_t *p, uint8_t space, uint8_t bits, uint8_t access, uint64_t addr)
{
    p[0] = space;
    p[1] = bits;
    p[2] = 0; /* bit offset */
    p[3] = access;
    le_put64(p + 4, addr);
}

static bool use_x2apic_entry(uint32_t apic_id, unsigned index)
{
    return apic_id >= 0xff || index >= 0xff;
}

static uint64_t madt_size(const struct x86_acpi_config *cfg, bool *any_x2apic)
{
    uint64_t n = HDR_SIZE + 8;
    *any_x2apic = false;
    for (unsigned i = 0; i < cfg->nr_cpus; i++) {
        if (use_x2apic_entry(cfg->apic_ids[i], i)) {
            n += MADT_X2APIC_LEN;
            *any_x2apic = true;
        } else {
            n += MADT_LAPIC_LEN;
        }
    }
    n += MADT_IOAPIC_LEN + 2 * MADT_ISO_LEN + MADT_LAPIC_NMI_LEN;
    if (*any_x2apic)
        n += MADT_X2APIC_NMI_LEN;
    return n;
}

static uint8_t *madt_iso(uint8_t *p, uint8_t irq, uint32_t gsi, uint16_t flags)
{
    p[0] = MADT_ISO;
    p[1] = MADT_ISO_LEN;
    p[2] = 0; /* bus: ISA */
    p[3] = irq;
    le_put32(p + 4, gsi);
    le_put16(p + 8, flags);
    return p + MADT_ISO_LEN;
}

static void build_madt(uint8_t *t, uint32_t len, const struct x86_acpi_config *cfg, bool any_x2apic,
                       uint8_t ioapic_id)
{
    header(t, "APIC", len, MADT_REVISION);
    le_put32(t + HDR_SIZE, (uint32_t)X86_LAPIC_ADDR);
    le_put32(t + HDR_SIZE + 4, cfg->legacy_pc ? MADT_PCAT_COMPAT : 0);
    uint8_t *p = t + HDR_SIZE + 8;
    for (unsigned i = 0; i < cfg->nr_cpus; i++) {
        uint32_t id = cfg->apic_ids[i];
        if (use_x2apic_entry(id, i)) {
            p[0] = MADT_X2APIC;
            p[1] = MADT_X2APIC_LEN;
            le_put32(p + 4, id);
            le_put32(p + 8, MADT_ENABLED);
            le_put32(p + 12, i); /* ACPI processor UID */
            p += MADT_X2APIC_LEN;
        } else {
            p[0] = MADT_LAPIC;
            p[1] = MADT_LAPIC_LEN;
            p[2] = (uint8_t)i; /* ACPI processor UID */
            p[3] = (uint8_t)id;
            le_put32(p + 4, MADT_ENABLED);
            p += MADT_LAPIC_LEN;
        }
    }
    p[0] = MADT_IOAPIC;
    p[1] = MADT_IOAPIC_LEN;
    p[2] = ioapic_id;
    le_put32(p + 4, (uint32_t)X86_IOAPIC_ADDR);
    le_put32(p + 8, 0); /* GSI base */
    p += MADT_IOAPIC_LEN;
    p = madt_iso(p, 0, 2, MPS_ACTIVE_HIGH | MPS_EDGE);
    p = madt_iso(p, cfg->sci_irq, cfg->sci_irq, MPS_ACTIVE_HIGH | MPS_LEVEL);
    p[0] = MADT_LAPIC_NMI;
    p[1] = MADT_LAPIC_NMI_LEN;
    p[2] = 0xff; /* all processors */
    le_put16(p + 3, MPS_ACTIVE_HIGH | MPS_EDGE);
    p[5] = 1; /* LINT1 */
    p += MADT_LAPIC_NMI_LEN;
    if (any_x2apic) {
        p[0] = MADT_X2APIC_NMI;
        p[1] = MADT_X2APIC_NMI_LEN;
        le_put16(p + 2, MPS_ACTIVE_HIGH | MPS_EDGE);
        le_put32(p + 4, 0xffffffffu); /* all processors */
        p[8] = 1;                     /* LINT1 */
    }
    finish(t);
}

/* Device(name) { _HID, _UID, _STA = 0x0F, _CRS }: the caller emits the _CRS descriptors. */
static void device_begin(struct aml *a, const char *name, const char *hid, unsigned uid)
{
    aml_device_begin(a, name);
    aml_name_eisaid(a, "_HID", hid);
    aml_name_integer(a, "_UID", uid);
    aml_method_begin(a, "_STA", 0, false);
    aml_return(a);
    aml_integer(a, 0x0f); /* present, enabled, shown in UI, functioning */
    aml_end(a);
    aml_name(a, "_CRS");
    aml_resource_template_begin(a);
}

static void device_end(struct aml *a)
{
    aml_end(a); /* _CRS */
    aml_end(a); /* Device */
}

/* The host bridge: what Linux needs to find bus 0, its windows and its INTx routing without
 * pci= options. */
static void build_pci0(struct aml *a, const struct x86_acpi_config *cfg)
{
    aml_device_begin(a, "PCI0");
    aml_name_eisaid(a, "_HID", "PNP0A03");
    aml_name_integer(a, "_ADR", 0);
    aml_name_integer(a, "_UID", 0);
    aml_name_integer(a, "_SEG", 0);
    aml_name_integer(a, "_BBN", 0);
    aml_name(a, "_CRS");
    aml_resource_template_begin(a);
    aml_res_word_bus(a, 0, 0x100);
    aml_res_io(a, 0xcf8, 0xcf8, 0x01, 0x08); /* the config ports themselves */
    aml_res_word_io(a, 0x0000, 0x0cf8);
    aml_res_word_io(a, 0x0d00, 0x10000 - 0x0d00);
    aml_res_dword_memory(a, 0x000a0000, 0x20000); /* legacy VGA window */
    aml_res_dword_memory(a, cfg->pci_mem32_base, cfg->pci_mem32_len);
    aml_end(a); /* _CRS */

    /* Package (Address 0xSSSSFFFF, Pin, Source 0, GSI): 31 slots x 4 pins = 124 entries. A GSI
     * entry means level-triggered, active-low; KVM's IOAPIC takes the asserted level either way. */
    aml_name(a, "_PRT");
    aml_package_begin(a, 31 * 4);
    for (unsigned slot = 1; slot < 32; slot++) {
        for (unsigned pin = 0; pin < 4; pin++) {
            aml_package_begin(a, 4);
            aml_integer(a, ((uint64_t)slot << 16) | 0xffff);
            aml_integer(a, pin);
            aml_integer(a, 0);
            aml_integer(a, cfg->pci_gsi[(slot + pin) % 4]);
            aml_end(a);
        }
    }
    aml_end(a); /* _PRT */
    aml_end(a); /* PCI0 */
}

static void build_virtio_mmio(struct aml *a, const struct x86_acpi_config *cfg)
{
    for (unsigned i = 0; i < cfg->nr_virtio_mmio; i++) {
        const struct x86_acpi_virtio_mmio *d = &cfg->virtio_mmio[i];
        char name[5] = {'V', 'R', (char)('0' + i / 10 % 10), (char)('0' + i % 10), 0};
        aml_device_begin(a, name);
        aml_name_string(a, "_HID", "LNRO0005");
        aml_name_integer(a, "_UID", i);
        aml_name(a, "_CRS");
        aml_resource_template_begin(a);
        aml_res_memory32_fixed(a, true, d->base, d->size);
        aml_res_interrupt(a, true, false, false, d->gsi);
        aml_end(a); /* _CRS */
        aml_end(a); /* Device */
    }
}

static void build_dsdt_aml(struct aml *a, const struct x86_acpi_config *cfg)
{
    aml_name(a, "\\_S5");
    aml_package_begin(a, 4);
    aml_integer(a, ACPI_PM_SLP_TYP_S5); /* SLP_TYPa */
    aml_integer(a, ACPI_PM_SLP_TYP_S5); /* SLP_TYPb (no PM1b block) */
    aml_integer(a, 0);                  /* reserved */
    aml_integer(a, 0);
    aml_end(a);

    if (!cfg->legacy_pc && !cfg->nr_virtio_mmio)
        return;
    aml_scope_begin(a, "\\_SB");
    build_virtio_mmio(a, cfg);
    if (!cfg->legacy_pc) {
        aml_end(a); /* \_SB */
        return;
    }

    device_begin(a, "COM1", "PNP0501", 1);
    aml_res_io(a, 0x3f8, 0x3f8, 0x00, 0x08);
    aml_res_irq_noflags(a, ISA_COM1_IRQ);
    device_end(a);

    device_begin(a, "RTC", "PNP0B00", 0);
    aml_res_io(a, 0x70, 0x70, 0x01, 0x02);
    aml_res_irq_noflags(a, ISA_RTC_IRQ);
    device_end(a);

    device_begin(a, "KBD", "PNP0303", 0);
    aml_res_io(a, 0x60, 0x60, 0x01, 0x01);
    aml_res_io(a, 0x64, 0x64, 0x01, 0x01);
    aml_res_irq_noflags(a, ISA_KBD_IRQ);
    device_end(a);

    device_begin(a, "MOU", "PNP0F13", 0);
    aml_res_irq_noflags(a, ISA_AUX_IRQ);
    device_end(a);

    if (cfg->pci)
        build_pci0(a, cfg);

    aml_end(a); /* \_SB */
}

static void build_fadt(uint8_t *t, const struct x86_acpi_config *cfg, uint64_t facs, uint64_t dsdt)
{
    uint64_t pm = cfg->pm_base;
    uint64_t evt = pm + ACPI_PM1_EVT_OFFSET, cnt = pm + ACPI_PM1_CNT_OFFSET;
    uint64_t tmr = pm + ACPI_PM_TMR_OFFSET, gpe0 = pm + ACPI_GPE0_OFFSET;

    header(t, "FACP", FADT_SIZE, FADT_REVISION);
    le_put32(t + 36, (uint32_t)facs); /* FIRMWARE_CTRL */
    le_put32(t + 40, (uint32_t)dsdt); /* DSDT */
    t[45] = 0;                        /* Preferred_PM_Profile: unspecified */
    le_put16(t + 46, cfg->sci_irq);   /* SCI_INT */
    le_put32(t + 48, 0);              /* SMI_CMD: none, always in ACPI mode */
    le_put32(t + 56, (uint32_t)evt);  /* PM1a_EVT_BLK */
    le_put32(t + 64, (uint32_t)cnt);  /* PM1a_CNT_BLK */
    le_put32(t + 76, (uint32_t)tmr);  /* PM_TMR_BLK */
    le_put32(t + 80, (uint32_t)gpe0); /* GPE0_BLK */
    t[88] = ACPI_PM1_EVT_LEN;
    t[89] = ACPI_PM1_CNT_LEN;
    t[91] = ACPI_PM_TMR_LEN;
    t[92] = ACPI_GPE0_LEN;
    le_put16(t + 96, 0x0fff); /* P_LVL2_LAT > 100: no C2 */
    le_put16(t + 98, 0x0fff); /* P_LVL3_LAT > 1000: no C3 */
    t[108] = CMOS_CENTURY;
    le_put16(t + 109, cfg->legacy_pc ? BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042
                                     : BOOT_ARCH_VGA_NOT_PRESENT);
    le_put32(t + 112, FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON | FADT_F_FIX_RTC |
                          FADT_F_TMR_VAL_EXT | FADT_F_RESET_REG_SUP);
    gas(t + 116, GAS_SYSTEM_IO, 8, GAS_ACCESS_BYTE, ACPI_RESET_PORT); /* RESET_REG */
    t[128] = ACPI_RESET_VALUE;
    t[131] = FADT_MINOR_REVISION;
    le_put64(t + 132, 0);    /* X_FIRMWARE_CTRL: 0, FIRMWARE_CTRL has the FACS */
    le_put64(t + 140, dsdt); /* X_DSDT */
    gas(t + 148, GAS_SYSTEM_IO, 8 * ACPI_PM1_EVT_LEN, 0, evt); /* X_PM1a_EVT_BLK */
    gas(t + 172, GAS_SYSTEM_IO, 8 * ACPI_PM1_CNT_LEN, 0, cnt); /* X_PM1a_CNT_BLK */
    gas(t + 208, GAS_SYSTEM_IO, 8 * ACPI_PM_TMR_LEN, 0, tmr);  /* X_PM_TMR_BLK */
    gas(t + 220, GAS_SYSTEM_IO, 8 * ACPI_GPE0_LEN, 0, gpe0);   /* X_GPE0_BLK */
    finish(t);
}

static void build_facs(uint8_t *t)
{
    memcpy(t, "FACS", 4);
    le_put32(t + 4, FACS_SIZE);
    t[32] = 2; /* version */
}

static int check_config(const struct x86_acpi_config *cfg, uint8_t *ioapic_id, struct error *err)
{
    if (cfg->nr_cpus == 0 || cfg->nr_cpus > X86_ACPI_MAX_CPUS || !cfg->apic_ids)
        return error_setf(err, "ACPI: %u CPUs (1 to %u supported)", cfg->nr_cpus,
                          X86_ACPI_MAX_CPUS);
    if (cfg->sci_irq == 0 || cfg->sci_irq == 2 || cfg->sci_irq > 15)
        return error_setf(err, "ACPI: SCI IRQ %u is not a usable ISA IRQ", cfg->sci_irq);
    if (cfg->pm_base == 0 || cfg->pm_base > 0xffff - ACPI_PM_LEN + 1)
        return error_setf(err, "ACPI: bad PM block base 0x%x", cfg->pm_base);
    if (cfg->nr_virtio_mmio > X86_ACPI_MAX_VIRTIO_MMIO ||
        (cfg->nr_virtio_mmio && !cfg->virtio_mmio))
        return error_setf(err, "ACPI: %u virtio-mmio devices (at most %u)", cfg->nr_virtio_mmio,
                          X86_ACPI_MAX_VIRTIO_MMIO);
    for (unsigned i = 0; i < cfg->nr_virtio_mmio; i++) {
        const struct x86_acpi_virtio_mmio *d = &cfg->virtio_mmio[i];
        if (d->size == 0 || d->base > 0xffffffffu - (d->size - 1) || d->gsi < 16 || d->gsi > 23)
            return error_setf(err, "ACPI: virtio-mmio device %u at 0x%x+0x%x, GSI %u is unusable",
                              i, d->base, d->size, d->gsi);
    }
    if (cfg->base & 15)
        return error_setf(err, "ACPI: window 0x%llx is not 16-byte aligned",
                          (unsigned long long)cfg->base);
    uint32_t max_id = 0;
    for (unsigned i = 0; i < cfg->nr_cpus; i++) {
        uint32_t id = cfg->apic_ids[i];
        if (id == 0xffffffffu)
            return error_setf(err, "ACPI: APIC id 0x%x of CPU %u is invalid", id, i);
        for (unsigned j = 0; j < i; j++)
            if (cfg->apic_ids[j] == id)
                return error_setf(err, "ACPI: CPUs %u and %u have the same APIC id %u", j, i, id);
        if (id > max_id)
            max_id = id;
    }
    /* After the highest APIC id like the MP table, else the lowest 8-bit id no CPU has. */
    if (max_id < 0xfe) {
        *ioapic_id = (uint8_t)(max_id + 1);
        return 0;
    }
    bool used[0xff] = {false};
    for (unsigned i = 0; i < cfg->nr_cpus; i++)
        if (cfg->apic_ids[i] < 0xff)
            used[cfg->apic_ids[i]] = true;
    *ioapic_id = 0;
    for (unsigned id = 0; id < 0xff; id++) {
        if (!used[id]) {
            *ioapic_id = (uint8_t)id;
            break;
        }
    }
    return 0;
}

int x86_build_acpi(struct guest_mem *mem, const struct x86_acpi_config *cfg,
                   struct x86_acpi_info *out, struct error *err)
{
    uint8_t ioapic_id;
    if (check_config(cfg, &ioapic_id, err) < 0)
        return -1;

    struct aml dsdt_aml;
    aml_init(&dsdt_aml);
    build_dsdt_aml(&dsdt_aml, cfg);
    if (!aml_ok(&dsdt_aml)) {
        aml_free(&dsdt_aml);
        return error_setf(err, "ACPI: cannot build the DSDT (out of memory)");
    }

    bool any_x2apic;
    uint64_t madt_len = madt_size(cfg, &any_x2apic);
    uint64_t dsdt_len = HDR_SIZE + dsdt_aml.len;
    uint64_t o_rsdp = 0;
    uint64_t o_facs = align_up(o_rsdp + RSDP_SIZE, 64);
    uint64_t o_dsdt = align_up(o_facs + FACS_SIZE, 16);
    uint64_t o_fadt = align_up(o_dsdt + dsdt_len, 16);
    uint64_t o_madt = align_up(o_fadt + FADT_SIZE, 16);
    uint64_t o_xsdt = align_up(o_madt + madt_len, 16);
    uint64_t o_rsdt = align_up(o_xsdt + HDR_SIZE + 2 * 8, 16);
    uint64_t total = o_rsdt + HDR_SIZE + 2 * 4;

    if (total > cfg->size) {
        aml_free(&dsdt_aml);
        return error_setf(err, "ACPI: tables need %llu bytes, the window at 0x%llx has %llu",
                          (unsigned long long)total, (unsigned long long)cfg->base,
                          (unsigned long long)cfg->size);
    }
    if (cfg->base > 0xffffffffULL - total) {
        aml_free(&dsdt_aml);
        return error_setf(err, "ACPI: window 0x%llx must lie below 4 GiB",
                          (unsigned long long)cfg->base);
    }
    if (!guest_mem_ptr(mem, cfg->base, total)) {
        aml_free(&dsdt_aml);
        return error_setf(err, "ACPI: no guest RAM at 0x%llx for %llu bytes",
                          (unsigned long long)cfg->base, (unsigned long long)total);
    }
    uint8_t *buf = calloc(1, total);
    if (!buf) {
        aml_free(&dsdt_aml);
        return error_setf(err, "ACPI: out of memory");
    }
    uint64_t a = cfg->base;

    build_facs(buf + o_facs);

    uint8_t *dsdt = buf + o_dsdt;
    header(dsdt, "DSDT", (uint32_t)dsdt_len, DSDT_REVISION);
    memcpy(dsdt + HDR_SIZE, dsdt_aml.buf, dsdt_aml.len);
    finish(dsdt);
    aml_free(&dsdt_aml);

    build_fadt(buf + o_fadt, cfg, a + o_facs, a + o_dsdt);
    build_madt(buf + o_madt, (uint32_t)madt_len, cfg, any_x2apic, ioapic_id);

    uint8_t *xsdt = buf + o_xsdt;
    header(xsdt, "XSDT", HDR_SIZE + 2 * 8, 1);
    le_put64(xsdt + HDR_SIZE, a + o_fadt);
    le_put64(xsdt + HDR_SIZE + 8, a + o_madt);
    finish(xsdt);

    uint8_t *rsdt = buf + o_rsdt;
    header(rsdt, "RSDT", HDR_SIZE + 2 * 4, 1);
    le_put32(rsdt + HDR_SIZE, (uint32_t)(a + o_fadt));
    le_put32(rsdt + HDR_SIZE + 4, (uint32_t)(a + o_madt));
    finish(rsdt);

    /* RSDP: checksum over the ACPI 1.0 part (20 bytes), extended checksum over all 36. */
    uint8_t *rsdp = buf + o_rsdp;
    memcpy(rsdp, "RSD PTR ", 8);
    memcpy(rsdp + 9, X86_ACPI_OEM_ID, 6);
    rsdp[15] = 2; /* revision: ACPI 2.0+ */
    le_put32(rsdp + 16, (uint32_t)(a + o_rsdt));
    le_put32(rsdp + 20, RSDP_SIZE);
    le_put64(rsdp + 24, a + o_xsdt);
    rsdp[8] = checksum8(rsdp, 20);
    rsdp[32] = checksum8(rsdp, RSDP_SIZE);

    int r = guest_mem_write(mem, a, buf, total);
    free(buf);
    if (r < 0)
        return error_setf(err, "ACPI: cannot write the tables at 0x%llx", (unsigned long long)a);
    if (out) {
        out->rsdp_addr = a + o_rsdp;
        out->used = total;
        out->ioapic_id = ioapic_id;
    }
    return 0;
}
