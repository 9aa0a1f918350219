#include "arch/x86/gsi.h"

#include <string.h>

static void route(struct kvm_irq_routing_entry *e, unsigned gsi, unsigned chip, unsigned pin)
{
    memset(e, 0, sizeof(*e));
    e->gsi = gsi;
    e->type = KVM_IRQ_ROUTING_IRQCHIP;
    e->u.irqchip.irqchip = chip;
    e->u.irqchip.pin = pin;
}

unsigned x86_pc_gsi_routing(struct kvm_irq_routing_entry *out, unsigned max)
{
    if (max < X86_PC_GSI_ROUTES)
        return 0;
    unsigned n = 0;
    for (unsigned gsi = 0; gsi < 16; gsi++)
        if (gsi != 2) /* the slave 8259's cascade input */
            route(&out[n++], gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
                  gsi % 8);
    for (unsigned gsi = 0; gsi < X86_IOAPIC_PINS; gsi++)
        if (gsi != 2)
            route(&out[n++], gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? 2 : gsi);
    return n;
}
