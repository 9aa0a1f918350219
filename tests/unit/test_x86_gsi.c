/* GSI routing of the PC: PIT on IOAPIC pin 2, the rest identity, ISA GSIs also on the 8259s. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "arch/x86/gsi.h"

static void test_gsi_routing(void **state)
{
    struct kvm_irq_routing_entry e[X86_PC_GSI_ROUTES];
    assert_int_equal(x86_pc_gsi_routing(e, X86_PC_GSI_ROUTES - 1), 0);
    assert_int_equal(x86_pc_gsi_routing(e, X86_PC_GSI_ROUTES), X86_PC_GSI_ROUTES);
    int ioapic_pin[X86_IOAPIC_PINS], pic[16];
    for (unsigned i = 0; i < X86_IOAPIC_PINS; i++)
        ioapic_pin[i] = -1;
    for (unsigned i = 0; i < 16; i++)
        pic[i] = -1;
    for (unsigned i = 0; i < X86_PC_GSI_ROUTES; i++) {
        assert_int_equal(e[i].type, KVM_IRQ_ROUTING_IRQCHIP);
        assert_int_equal(e[i].flags, 0);
        assert_true(e[i].gsi < X86_IOAPIC_PINS);
        if (e[i].u.irqchip.irqchip == KVM_IRQCHIP_IOAPIC) {
            assert_int_equal(ioapic_pin[e[i].gsi], -1);
            ioapic_pin[e[i].gsi] = (int)e[i].u.irqchip.pin;
        } else {
            assert_true(e[i].gsi < 16);
            assert_int_equal(e[i].u.irqchip.irqchip,
                             e[i].gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE);
            assert_int_equal(e[i].u.irqchip.pin, e[i].gsi % 8);
            assert_int_equal(pic[e[i].gsi], -1);
            pic[e[i].gsi] = 1;
        }
    }
    assert_int_equal(ioapic_pin[0], 2); /* the PIT, as the MP table says */
    assert_int_equal(ioapic_pin[2], -1);
    assert_int_equal(pic[2], -1); /* the cascade */
    for (unsigned i = 3; i < X86_IOAPIC_PINS; i++)
        assert_int_equal(ioapic_pin[i], (int)i);
    for (unsigned i = 0; i < 16; i++)
        if (i != 2)
            assert_int_equal(pic[i], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gsi_routing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
