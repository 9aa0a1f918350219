/*
 * GSI routing of a PC with KVM's in-kernel PIC pair and IOAPIC, matching the MP table (and a MADT
 * with the usual IRQ0 -> GSI 2 override):
 * ISA IRQ0 (the PIT) goes to IOAPIC pin 2, every other GSI to the pin of the same number, and
 * GSIs 0-15 (but 2, the cascade) also to the 8259s. KVM's default routing sends GSI 0 to IOAPIC
 * pin 0 instead, so the board passes this table to KVM_SET_GSI_ROUTING after KVM_CREATE_IRQCHIP.
 */
#ifndef KEMU_ARCH_X86_GSI_H
#define KEMU_ARCH_X86_GSI_H

#include <linux/kvm.h>

#define X86_IOAPIC_PINS   24
#define X86_PC_GSI_ROUTES 38 /* 15 PIC + 23 IOAPIC entries */

/* Fill `out` (room for `max`) and return the number of entries, or 0 if max is too small. */
unsigned x86_pc_gsi_routing(struct kvm_irq_routing_entry *out, unsigned max);

#endif
