/*
 * Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI finds its CPUs, the
 * IOAPIC and the ISA interrupt routing. Linux looks for the floating pointer in the first KiB of
 * the EBDA, the last KiB of base memory and 0xF0000-0xFFFFF (X86_MPTABLE_ADDR).
 */
#ifndef KEMU_ARCH_X86_MPTABLE_H
#define KEMU_ARCH_X86_MPTABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"

#define X86_MP_MAX_CPUS    254 /* 8-bit APIC IDs; 0xff is the broadcast ID */
#define X86_MP_IOAPIC_PINS 24

/* Bus IDs in the table. */
#define X86_MP_BUS_PCI 0
#define X86_MP_BUS_ISA 1

/*
 * Write the floating pointer at `addr` (16-byte aligned) and the configuration table right after
 * it: one processor entry per APIC ID (cpu 0 is the BSP), buses PCI 0 and ISA 1, one IOAPIC
 * (ID = highest APIC ID + 1, at 0xFEC00000), ISA IRQs 0-15 (IRQ0 on IOAPIC pin 2, IRQ2 - the
 * cascade - absent, the others identity) and ExtINT/NMI on every LAPIC's LINT0/LINT1. The board
 * must route GSI 0 to IOAPIC pin 2 to match (see gsi.h).
 * pci_gsi (NULL: no PCI devices) adds the INTx routing of PCI bus 0: slot s (1-31) pin p
 * (0 = INTA#) on IOAPIC pin pci_gsi[(s + p) % 4], level-triggered and active-low; each of the
 * four must be an IOAPIC pin 16-23.
 * Returns 0, or -1 with `err` set (bad IDs, too many CPUs, bad GSI, no RAM at addr).
 */
int x86_build_mptable(struct guest_mem *mem, uint64_t addr, const uint32_t *apic_ids,
                      unsigned nr_cpus, const uint8_t *pci_gsi, struct error *err);

/* Bytes x86_build_mptable() writes for nr_cpus processors (with PCI routing or not). */
uint64_t x86_mptable_size(unsigned nr_cpus, bool pci);

#endif
