/* e820 map built from guest RAM regions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "arch/x86/e820.h"
#include "arch/x86/layout.h"

#define MIB (1024ULL * 1024)
#define GIB (1024ULL * MIB)

static void check(const struct x86_e820_entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
    assert_int_equal(e->addr, addr);
    assert_int_equal(e->size, size);
    assert_int_equal(e->type, type);
}

/* Regions as guest_mem_init_x86() lays them out; no host memory is touched. */
static void fake_mem(struct guest_mem *mem, uint64_t ram, uint64_t limit)
{
    static uint8_t dummy;
    *mem = (struct guest_mem){0};
    uint64_t low = ram < limit ? ram : limit;
    mem->regions[mem->nr++] = (struct guest_region){0, low, &dummy};
    if (ram > low)
        mem->regions[mem->nr++] = (struct guest_region){X86_4GIB, ram - low, &dummy};
    mem->ram_size = ram;
}

static void test_low_only(void **state)
{
    struct guest_mem mem;
    struct x86_e820_entry e[X86_E820_MAX_ENTRIES];
    unsigned n;
    struct error err = {0};
    fake_mem(&mem, 512 * MIB, X86_PC_BELOW_4G_LIMIT);
    assert_int_equal(x86_e820_build(&mem, e, X86_E820_MAX_ENTRIES, &n, &err), 0);
    assert_int_equal(n, 6);
    check(&e[0], 0, X86_EBDA_ADDR, X86_E820_RAM);
    check(&e[1], X86_EBDA_ADDR, 0x100000 - X86_EBDA_ADDR, X86_E820_RESERVED);
    check(&e[2], 0x100000, 511 * MIB, X86_E820_RAM);
    check(&e[3], X86_IOAPIC_ADDR, 0x1000, X86_E820_RESERVED);
    check(&e[4], X86_LAPIC_ADDR, 0x1000, X86_E820_RESERVED);
    check(&e[5], X86_KVM_IDENTITY_MAP_ADDR, 0x4000, X86_E820_RESERVED);
}

static void test_high_ram(void **state)
{
    struct guest_mem mem;
    struct x86_e820_entry e[X86_E820_MAX_ENTRIES];
    unsigned n;
    struct error err = {0};
    fake_mem(&mem, 8 * GIB, X86_PC_BELOW_4G_LIMIT);
    assert_int_equal(x86_e820_build(&mem, e, X86_E820_MAX_ENTRIES, &n, &err), 0);
    assert_int_equal(n, 7);
    check(&e[2], 0x100000, 3 * GIB - MIB, X86_E820_RAM);
    check(&e[6], 4 * GIB, 5 * GIB, X86_E820_RAM);
    /* Sorted, non-overlapping. */
    for (unsigned i = 1; i < n; i++)
        assert_true(e[i - 1].addr + e[i - 1].size <= e[i].addr);
    /* Exactly the RAM size is usable. */
    uint64_t ram = 0;
    for (unsigned i = 0; i < n; i++)
        if (e[i].type == X86_E820_RAM)
            ram += e[i].size;
    assert_int_equal(ram, 8 * GIB - (0x100000 - X86_EBDA_ADDR));
}

static void test_tiny(void **state)
{
    struct guest_mem mem;
    struct x86_e820_entry e[X86_E820_MAX_ENTRIES];
    unsigned n;
    struct error err = {0};
    fake_mem(&mem, 256 * 1024, X86_PC_BELOW_4G_LIMIT);
    assert_int_equal(x86_e820_build(&mem, e, X86_E820_MAX_ENTRIES, &n, &err), 0);
    assert_int_equal(n, 5);
    check(&e[0], 0, 256 * 1024, X86_E820_RAM);
    check(&e[1], X86_EBDA_ADDR, 0x100000 - X86_EBDA_ADDR, X86_E820_RESERVED);
}

static void test_too_small(void **state)
{
    struct guest_mem mem;
    struct x86_e820_entry e[3];
    unsigned n;
    struct error err = {0};
    fake_mem(&mem, 8 * GIB, X86_PC_BELOW_4G_LIMIT);
    assert_int_equal(x86_e820_build(&mem, e, 3, &n, &err), -1);
    assert_true(err.set);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_low_only),
        cmocka_unit_test(test_high_ram),
        cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_too_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
