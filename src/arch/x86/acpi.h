/*
 * ACPI tables for the x86 `pc` and `microvm` machines: RSDP, RSDT, XSDT, FADT, FACS, DSDT and
 * MADT, written into a guest-physical window the board reserves (in e820 and away from the MP
 * table). Linux finds the RSDP through boot_params.acpi_rsdp_addr, or by scanning 0xE0000-0xFFFFF
 * on 16-byte boundaries, so the window should lie there: X86_ACPI_ADDR / X86_ACPI_MAX_SIZE from
 * layout.h (the 64 KiB below the MP table at 0xF0000, inside the reserved BIOS area).
 */
#ifndef KEMU_ARCH_X86_ACPI_H
#define KEMU_ARCH_X86_ACPI_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"

#define X86_ACPI_OEM_ID       "KEMU  "   /* 6 bytes */
#define X86_ACPI_OEM_TABLE_ID "KEMUTBL " /* 8 bytes */
#define X86_ACPI_CREATOR_ID   "KEMU"     /* 4 bytes */

/*
 * CPUs with APIC id < 255 and index < 255 get xAPIC MADT entries, the others x2APIC entries;
 * 4096 CPUs need about 64 KiB, so the window bounds the count before this does.
 */
#define X86_ACPI_MAX_CPUS 4096

#define X86_ACPI_MAX_VIRTIO_MMIO 100 /* VR00..VR99 */

struct x86_acpi_virtio_mmio {
    uint32_t base, size;
    uint32_t gsi;
};

struct x86_acpi_config {
    const uint32_t *apic_ids; /* nr_cpus distinct APIC ids, BSP first */
    unsigned nr_cpus;         /* >= 1 */
    /*
     * true for `pc`: MADT PCAT_COMPAT (8259 pair present), FADT IAPC_BOOT_ARCH = LEGACY_DEVICES |
     * 8042, and COM1, the RTC and the i8042 (keyboard + mouse) described in the DSDT for Linux's
     * PNP layer. false for `microvm`: no 8259, no 8042, no VGA, nothing in the DSDT but \_S5 and
     * the virtio-mmio devices.
     */
    bool legacy_pc;
    uint16_t pm_base; /* I/O base of the ACPI PM block (ACPI_PM_BASE from hw/acpi_pm.h) */
    uint8_t sci_irq;  /* ISA IRQ of the SCI (9); the MADT maps it to the same GSI, level/high */
    /*
     * A PCI host bridge (\_SB.PCI0, PNP0A03) with configuration mechanism #1, bus 0, these
     * windows, and a _PRT routing slot s pin p (0 = INTA#) to GSI pci_gsi[(s + p) % 4], as
     * the PIIX swizzle does.
     */
    bool pci;
    uint32_t pci_mem32_base;
    uint64_t pci_mem32_len;
    uint8_t pci_gsi[4];
    /*
     * virtio-mmio devices (microvm), each a \_SB.VRnn device with _HID "LNRO0005" (what Linux's
     * virtio_mmio driver matches) and a _CRS of its window and its edge-triggered, active-high
     * GSI (16-23), as QEMU's microvm describes them.
     */
    const struct x86_acpi_virtio_mmio *virtio_mmio;
    unsigned nr_virtio_mmio; /* at most X86_ACPI_MAX_VIRTIO_MMIO */
    uint64_t base;           /* guest-physical window for the tables (16-byte aligned) */
    uint64_t size;
};

struct x86_acpi_info {
    uint64_t rsdp_addr; /* == cfg->base; give it to the kernel as boot_params.acpi_rsdp_addr */
    uint64_t used;      /* bytes of the window written (from base) */
    uint8_t ioapic_id;  /* the IOAPIC id the MADT declares */
};

/*
 * Write all tables into [cfg->base, cfg->base + cfg->size). Nothing is written unless everything
 * fits. Returns 0, or -1 with `err` set (bad configuration, duplicate APIC ids, window too small
 * or not in RAM, out of memory). `out` may be NULL.
 */
int x86_build_acpi(struct guest_mem *mem, const struct x86_acpi_config *cfg,
                   struct x86_acpi_info *out, struct error *err);

#endif
