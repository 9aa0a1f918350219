#include "arch/x86/mptable.h"

#include <string.h>

#include "arch/x86/layout.h"
#include "core/bytes.h"

#define MPF_SIZE        16 /* floating pointer structure */
#define MPC_HEADER_SIZE 44 /* configuration table header */
#define MP_SPEC_REV     4  /* MP 1.4 */

#define MP_ENTRY_PROCESSOR 0
#define MP_ENTRY_BUS       1
#define MP_ENTRY_IOAPIC    2
#define MP_ENTRY_IOINT     3
#define MP_ENTRY_LINT      4
#define MP_PROC_SIZE       20
#define MP_ENTRY_SIZE      8 /* every other entry type */

#define MP_CPU_ENABLED 0x01
#define MP_CPU_BSP     0x02
#define MP_LAPIC_VER   0x14 /* integrated xAPIC */
#define MP_IOAPIC_VER  0x11
#define MP_IOAPIC_EN   0x01

#define MP_INT_INT       0
#define MP_INT_NMI       1
#define MP_INT_EXTINT    3
#define MP_FLAGS_CONFORM 0    /* polarity and trigger conform to the bus (ISA: high, edge) */
#define MP_FLAGS_PCI     0x0f /* active low (bits 1:0 = 11), level (bits 3:2 = 11), as SeaBIOS */
#define MP_ALL_LAPICS    0xff

/* CPU signature and feature flags (CPUID 1 EAX/EDX) for the processor entries: family 6 with FPU
 * and APIC. Linux only prints them; the real values are in each vCPU's CPUID. */
#define MP_CPU_SIGNATURE 0x600
#define MP_CPU_FEATURES  ((1U << 0) | (1U << 9))

#define ISA_IRQS         16
#define NR_BUSES         2
#define NR_IOINTS        15 /* IRQ0 on pin 2, IRQ1 and IRQ3-15 identity */
#define NR_LINTS         2
#define NR_SMALL_ENTRIES (NR_BUSES + 1 + NR_IOINTS + NR_LINTS)
/* PCI INTx: slots 1-31 (slot 0 is the host bridge, no interrupt) x INTA#..INTD#. */
#define PCI_FIRST_SLOT 1
#define PCI_SLOTS      32
#define PCI_PINS       4
#define NR_PCI_IOINTS  ((PCI_SLOTS - PCI_FIRST_SLOT) * PCI_PINS)

static unsigned nr_small_entries(bool pci)
{
    return NR_SMALL_ENTRIES + (pci ? NR_PCI_IOINTS : 0);
}

uint64_t x86_mptable_size(unsigned nr_cpus, bool pci)
{
    return MPF_SIZE + MPC_HEADER_SIZE + (uint64_t)nr_cpus * MP_PROC_SIZE +
           (uint64_t)nr_small_entries(pci) * MP_ENTRY_SIZE;
}

static uint8_t *small_entry(uint8_t **pp, uint8_t type)
{
    uint8_t *e = *pp;
    e[0] = type;
    *pp += MP_ENTRY_SIZE;
    return e;
}

static void ioint(uint8_t **pp, uint8_t type, uint16_t flags, uint8_t bus, uint8_t bus_irq,
                  uint8_t ioapic, uint8_t pin)
{
    uint8_t *e = small_entry(pp, MP_ENTRY_IOINT);
    e[1] = type;
    le_put16(e + 2, flags);
    e[4] = bus;
    e[5] = bus_irq;
    e[6] = ioapic;
    e[7] = pin;
}

int x86_build_mptable(struct guest_mem *mem, uint64_t addr, const uint32_t *apic_ids,
                      unsigned nr_cpus, const uint8_t *pci_gsi, struct error *err)
{
    if (nr_cpus == 0 || nr_cpus > X86_MP_MAX_CPUS)
        return error_setf(err, "MP table: %u CPUs (1 to %u supported)", nr_cpus, X86_MP_MAX_CPUS);
    if (addr & 15)
        return error_setf(err, "MP table: address 0x%llx is not 16-byte aligned",
                          (unsigned long long)addr);
    uint32_t max_id = 0;
    for (unsigned i = 0; i < nr_cpus; i++) {
        if (apic_ids[i] >= 0xff)
            return error_setf(err, "MP table: APIC ID %u of CPU %u does not fit in 8 bits",
                              apic_ids[i], i);
        if (apic_ids[i] > max_id)
            max_id = apic_ids[i];
    }
    uint32_t ioapic_id = max_id + 1;
    if (ioapic_id >= 0xff)
        return error_setf(err, "MP table: no free 8-bit ID for the IOAPIC");

    for (unsigned i = 0; pci_gsi && i < PCI_PINS; i++)
        if (pci_gsi[i] < 16 || pci_gsi[i] >= X86_MP_IOAPIC_PINS)
            return error_setf(err, "MP table: PCI GSI %u is not an IOAPIC pin above the ISA IRQs",
                              pci_gsi[i]);
    uint64_t size = x86_mptable_size(nr_cpus, pci_gsi != NULL);
    if (addr > UINT32_MAX - size)
        return error_setf(err, "MP table: must lie below 4 GiB");
    uint8_t *base = guest_mem_ptr(mem, addr, size);
    if (!base)
        return error_setf(err, "MP table: no guest RAM at 0x%llx for %llu bytes",
                          (unsigned long long)addr, (unsigned long long)size);
    memset(base, 0, size);

    /* Configuration table. */
    uint8_t *mpc = base + MPF_SIZE;
    uint8_t *p = mpc + MPC_HEADER_SIZE;
    for (unsigned i = 0; i < nr_cpus; i++, p += MP_PROC_SIZE) {
        p[0] = MP_ENTRY_PROCESSOR;
        p[1] = (uint8_t)apic_ids[i];
        p[2] = MP_LAPIC_VER;
        p[3] = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0);
        le_put32(p + 4, MP_CPU_SIGNATURE);
        le_put32(p + 8, MP_CPU_FEATURES);
    }
    uint8_t *e = small_entry(&p, MP_ENTRY_BUS);
    e[1] = X86_MP_BUS_PCI;
    memcpy(e + 2, "PCI   ", 6);
    e = small_entry(&p, MP_ENTRY_BUS);
    e[1] = X86_MP_BUS_ISA;
    memcpy(e + 2, "ISA   ", 6);
    e = small_entry(&p, MP_ENTRY_IOAPIC);
    e[1] = (uint8_t)ioapic_id;
    e[2] = MP_IOAPIC_VER;
    e[3] = MP_IOAPIC_EN;
    le_put32(e + 4, (uint32_t)X86_IOAPIC_ADDR);
    /* The timer (IRQ0) is on pin 2 as on a PC; IRQ2 is the 8259 cascade and has no entry. No
     * ExtINT entry for pin 0 either (SeaBIOS has none): Linux would warn that the IOAPIC pin is
     * not programmed as ExtINT, since no firmware ran. */
    ioint(&p, MP_INT_INT, MP_FLAGS_CONFORM, X86_MP_BUS_ISA, 0, (uint8_t)ioapic_id, 2);
    for (uint8_t irq = 1; irq < ISA_IRQS; irq++)
        if (irq != 2)
            ioint(&p, MP_INT_INT, MP_FLAGS_CONFORM, X86_MP_BUS_ISA, irq, (uint8_t)ioapic_id, irq);
    /* PCI: the source bus IRQ is (slot << 2) | pin; the pin goes to the IOAPIC input the PIIX
     * swizzle gives it, the same routing as the DSDT's _PRT, for guests without ACPI. */
    for (unsigned slot = PCI_FIRST_SLOT; pci_gsi && slot < PCI_SLOTS; slot++)
        for (unsigned pin = 0; pin < PCI_PINS; pin++)
            ioint(&p, MP_INT_INT, MP_FLAGS_PCI, X86_MP_BUS_PCI, (uint8_t)(slot << 2 | pin),
                  (uint8_t)ioapic_id, pci_gsi[(slot + pin) % PCI_PINS]);
    e = small_entry(&p, MP_ENTRY_LINT);
    e[1] = MP_INT_EXTINT;
    e[4] = X86_MP_BUS_ISA;
    e[6] = MP_ALL_LAPICS;
    e[7] = 0; /* LINT0 */
    e = small_entry(&p, MP_ENTRY_LINT);
    e[1] = MP_INT_NMI;
    e[4] = X86_MP_BUS_ISA;
    e[6] = MP_ALL_LAPICS;
    e[7] = 1; /* LINT1 */

    uint16_t mpc_len = (uint16_t)(p - mpc);
    memcpy(mpc, "PCMP", 4);
    le_put16(mpc + 4, mpc_len);
    mpc[6] = MP_SPEC_REV;
    memcpy(mpc + 8, "KEMU    ", 8);       /* OEM ID */
    memcpy(mpc + 16, "PC          ", 12); /* product ID */
    le_put16(mpc + 34, (uint16_t)(nr_cpus + nr_small_entries(pci_gsi != NULL)));
    le_put32(mpc + 36, (uint32_t)X86_LAPIC_ADDR);
    mpc[7] = checksum8(mpc, mpc_len);

    /* Floating pointer: physical address of the table, length 1 (x16 bytes), feature bytes 0
     * (a configuration table is present; no IMCR, virtual wire mode). */
    memcpy(base, "_MP_", 4);
    le_put32(base + 4, (uint32_t)(addr + MPF_SIZE));
    base[8] = 1;
    base[9] = MP_SPEC_REV;
    base[10] = checksum8(base, MPF_SIZE);
    return 0;
}
