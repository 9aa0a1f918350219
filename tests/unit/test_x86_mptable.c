/* MP table: checksums, entry counts and contents as Linux's mpparse reads them. */
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arch/x86/cpuid.h"
#include "arch/x86/layout.h"
#include "arch/x86/mptable.h"
#include "core/bytes.h"

#define RAM_SIZE (2 * 1024 * 1024)

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s;
}

/* Scan like Linux's smp_scan_config: 16-byte steps, "_MP_", length 1, checksum. */
static const uint8_t *find_mpf(const uint8_t *ram, uint64_t start, uint64_t len)
{
    for (uint64_t a = start; a + 16 <= start + len; a += 16)
        if (!memcmp(ram + a, "_MP_", 4) && ram[a + 8] == 1 && sum(ram + a, 16) == 0 &&
            (ram[a + 9] == 1 || ram[a + 9] == 4))
            return ram + a;
    return NULL;
}

static const uint8_t pci_gsi[4] = {16, 17, 18, 19};

/* pci: the table must carry bus 0's INTx routing (pci_gsi, PIIX swizzle). */
static void check_table(const uint8_t *ram, const uint32_t *ids, unsigned n, bool pci)
{
    const uint8_t *mpf = find_mpf(ram, X86_BIOS_AREA_ADDR, 0x10000);
    assert_non_null(mpf);
    assert_int_equal(mpf[11], 0); /* feature byte 1: a table follows */
    uint32_t phys = le_get32(mpf + 4);
    const uint8_t *mpc = ram + phys;
    assert_memory_equal(mpc, "PCMP", 4);
    uint16_t len = le_get16(mpc + 4);
    assert_int_equal(mpc[6], 4);
    assert_int_equal(sum(mpc, len), 0);
    assert_int_equal(le_get32(mpc + 36), X86_LAPIC_ADDR);
    assert_int_equal(len + 16, x86_mptable_size(n, pci));

    unsigned count = le_get16(mpc + 34), procs = 0, buses = 0, ioapics = 0, ioints = 0, lints = 0;
    unsigned irq_seen = 0, ioapic_id = 0, last_type = 0, pci_ints = 0;
    uint8_t pci_seen[32] = {0}; /* per slot, a bit per pin */
    int irq0_pin = -1;
    const uint8_t *p = mpc + 44, *end = mpc + len;
    for (unsigned i = 0; i < count; i++) {
        assert_true(p < end);
        assert_true(p[0] >= last_type); /* sorted by type */
        last_type = p[0];
        switch (p[0]) {
        case 0:
            assert_int_equal(p[1], ids[procs]);
            assert_int_equal(p[2], 0x14);
            assert_int_equal(p[3], procs == 0 ? 3 : 1);
            procs++;
            p += 20;
            continue;
        case 1:
            assert_true(!memcmp(p + 2, "ISA   ", 6) || !memcmp(p + 2, "PCI   ", 6));
            buses++;
            break;
        case 2:
            ioapic_id = p[1];
            assert_int_equal(p[2], 0x11);
            assert_int_equal(p[3], 1);
            assert_int_equal(le_get32(p + 4), X86_IOAPIC_ADDR);
            ioapics++;
            break;
        case 3:
            assert_int_equal(p[6], ioapic_id);
            assert_int_equal(p[1], 0); /* INT only: no ExtINT entry */
            if (p[4] == X86_MP_BUS_PCI) {
                unsigned slot = p[5] >> 2, pin = p[5] & 3;
                assert_true(pci);
                assert_int_equal(le_get16(p + 2), 0x0f); /* level, active low */
                assert_true(slot >= 1);
                assert_int_equal(pci_seen[slot] & (1u << pin), 0);
                pci_seen[slot] |= (uint8_t)(1u << pin);
                assert_int_equal(p[7], pci_gsi[(slot + pin) % 4]);
                pci_ints++;
                break;
            }
            assert_int_equal(p[4], X86_MP_BUS_ISA);
            assert_int_equal(le_get16(p + 2), 0);
            if (p[1] == 0) {
                irq_seen |= 1u << p[5];
                if (p[5] == 0)
                    irq0_pin = p[7];
                else
                    assert_int_equal(p[7], p[5]);
            }
            ioints++;
            break;
        case 4:
            assert_int_equal(p[6], 0xff);
            assert_int_equal(p[7], p[1] == 3 ? 0 : 1);
            lints++;
            break;
        default:
            fail_msg("unknown entry type %u", p[0]);
        }
        p += 8;
    }
    assert_ptr_equal(p, end);
    assert_int_equal(procs, n);
    assert_int_equal(buses, 2);
    assert_int_equal(ioapics, 1);
    assert_int_equal(ioints, 15); /* ISA; the PCI ones are counted apart */
    assert_int_equal(pci_ints, pci ? 31 * 4 : 0);
    assert_int_equal(lints, 2);
    assert_int_equal(irq0_pin, 2);
    assert_int_equal(irq_seen, 0xffff & ~(1u << 2));
    for (unsigned i = 0; i < n; i++)
        assert_int_not_equal(ioapic_id, ids[i]);
}

static void test_one_cpu(void **state)
{
    uint8_t *ram = calloc(1, RAM_SIZE);
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    uint32_t ids[1] = {0};
    struct error err = {0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 1, NULL, &err), 0);
    check_table(ram, ids, 1, false);
    memset(ram, 0, RAM_SIZE);
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 1, pci_gsi, &err), 0);
    check_table(ram, ids, 1, true);
    free(ram);
}

static void test_sparse_ids(void **state)
{
    uint8_t *ram = calloc(1, RAM_SIZE);
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    struct x86_topology topo = {2, 1, 3, 1}; /* 3 cores: IDs 0,1,2,4,5,6 */
    uint32_t ids[6];
    for (unsigned i = 0; i < 6; i++)
        ids[i] = x86_apic_id(&topo, i);
    struct error err = {0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 6, pci_gsi, &err), 0);
    check_table(ram, ids, 6, true);
    const uint8_t *mpf = find_mpf(ram, X86_BIOS_AREA_ADDR, 0x10000);
    const uint8_t *mpc = ram + le_get32(mpf + 4);
    assert_int_equal(mpc[44 + 6 * 20 + 2 * 8 + 1], 7); /* IOAPIC ID after the last APIC ID */
    free(ram);
}

static void test_max_cpus(void **state)
{
    uint8_t *ram = calloc(1, RAM_SIZE);
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    uint32_t ids[X86_MP_MAX_CPUS];
    for (unsigned i = 0; i < X86_MP_MAX_CPUS; i++)
        ids[i] = i;
    struct error err = {0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, X86_MP_MAX_CPUS, pci_gsi, &err),
                     0);
    check_table(ram, ids, X86_MP_MAX_CPUS, true);
    assert_true(x86_mptable_size(X86_MP_MAX_CPUS, true) <= X86_MPTABLE_MAX_SIZE);
    free(ram);
}

static void test_errors(void **state)
{
    uint8_t *ram = calloc(1, RAM_SIZE);
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    uint32_t ids[2] = {0, 0xff};
    struct error err = {0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 2, NULL, &err), -1);
    assert_true(err.set);
    ids[1] = 0xfe; /* no ID left for the IOAPIC */
    err = (struct error){0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 2, NULL, &err), -1);
    err = (struct error){0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 0, NULL, &err), -1);
    ids[1] = 1;
    err = (struct error){0};
    assert_int_equal(x86_build_mptable(&mem, RAM_SIZE - 64, ids, 2, NULL, &err), -1);
    err = (struct error){0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR + 4, ids, 2, NULL, &err), -1);
    uint8_t isa_gsi[4] = {16, 17, 9, 19}; /* an ISA IRQ is not a PCI line */
    err = (struct error){0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 2, isa_gsi, &err), -1);
    isa_gsi[2] = 24; /* past the IOAPIC */
    err = (struct error){0};
    assert_int_equal(x86_build_mptable(&mem, X86_MPTABLE_ADDR, ids, 2, isa_gsi, &err), -1);
    free(ram);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_cpu),
        cmocka_unit_test(test_sparse_ids),
        cmocka_unit_test(test_max_cpus),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
