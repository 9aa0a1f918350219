/* Long-mode boot state: identity page tables, GDT, segment and control registers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arch/x86/cpu_init.h"
#include "arch/x86/layout.h"

#define RAM_SIZE (4 * 1024 * 1024)

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Walk the guest page tables like the MMU does (4-level, 2 MiB or 1 GiB leaves). */
static int translate(const uint8_t *ram, uint64_t cr3, uint64_t va, uint64_t *pa)
{
    uint64_t table = cr3 & ~0xfffULL;
    for (int level = 3; level >= 0; level--) {
        unsigned idx = (va >> (12 + 9 * level)) & 0x1ff;
        if (table + 8 * idx + 8 > RAM_SIZE)
            return -1;
        uint64_t e = get64(ram + table + 8 * idx);
        if (!(e & X86_PTE_P) || !(e & X86_PTE_RW))
            return -1;
        uint64_t addr = e & 0x000ffffffffff000ULL;
        if (level == 0 || ((level == 1 || level == 2) && (e & X86_PTE_PS))) {
            uint64_t page = 1ULL << (12 + 9 * level);
            *pa = (addr & ~(page - 1)) | (va & (page - 1));
            return 0;
        }
        table = addr;
    }
    return -1;
}

static void check_segment_matches_gdt(const uint8_t *ram, const struct kvm_segment *s)
{
    uint64_t d = get64(ram + X86_GDT_ADDR + s->selector);
    uint32_t limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));
    uint64_t base = ((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000);
    assert_int_equal(base, s->base);
    assert_int_equal(s->g ? (limit << 12 | 0xfff) : limit, s->limit);
    assert_int_equal((d >> 40) & 0xf, s->type);
    assert_int_equal((d >> 44) & 1, s->s);
    assert_int_equal((d >> 45) & 3, s->dpl);
    assert_int_equal((d >> 47) & 1, s->present);
    assert_int_equal((d >> 53) & 1, s->l);
    assert_int_equal((d >> 54) & 1, s->db);
    assert_int_equal((d >> 55) & 1, s->g);
}

static void test_long_mode(void **state)
{
    uint8_t *ram = calloc(1, RAM_SIZE);
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    struct x86_boot_info bi = {
        .entry = X86_KERNEL_ADDR + 0x200,
        .zero_page = X86_ZERO_PAGE_ADDR,
        .kernel_addr = X86_KERNEL_ADDR,
        .kernel_end = X86_KERNEL_ADDR + 0x200000,
        .cmdline_addr = X86_CMDLINE_ADDR,
    };
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    memset(&sregs, 0, sizeof(sregs));
    sregs.apic_base = 0xfee00900;
    memset(&regs, 0xff, sizeof(regs));
    struct error err = {0};
    assert_int_equal(x86_setup_long_mode(&mem, &bi, &sregs, &regs, &err), 0);

    /* Identity map of 0..4 GiB, nothing beyond. */
    for (uint64_t va = 0; va < (4ULL << 30); va += 0x1ff000 + 0x123) {
        uint64_t pa;
        assert_int_equal(translate(ram, sregs.cr3, va, &pa), 0);
        assert_int_equal(pa, va);
    }
    uint64_t pa;
    assert_int_equal(translate(ram, sregs.cr3, 0xfffff000, &pa), 0);
    assert_int_equal(pa, 0xfffff000);
    assert_int_equal(translate(ram, sregs.cr3, 4ULL << 30, &pa), -1);

    /* Control registers and EFER. */
    assert_int_equal(sregs.cr3, X86_PML4_ADDR);
    assert_true(sregs.cr0 & X86_CR0_PE);
    assert_true(sregs.cr0 & X86_CR0_PG);
    assert_true(sregs.cr0 & X86_CR0_ET);
    assert_true(sregs.cr0 & X86_CR0_NE);
    assert_true(sregs.cr4 & X86_CR4_PAE);
    assert_int_equal(sregs.efer, X86_EFER_LME | X86_EFER_LMA);
    assert_int_equal(sregs.apic_base, 0xfee00900); /* kept */

    /* Segments: boot protocol selectors, flat, cached state equals the GDT. */
    assert_int_equal(sregs.cs.selector, 0x10);
    assert_int_equal(sregs.cs.l, 1);
    assert_int_equal(sregs.cs.db, 0);
    assert_int_equal(sregs.cs.type, 0xb);
    const struct kvm_segment *data[] = {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss};
    for (unsigned i = 0; i < 5; i++) {
        assert_int_equal(data[i]->selector, 0x18);
        assert_int_equal(data[i]->base, 0);
        assert_int_equal(data[i]->limit, 0xffffffff);
        assert_int_equal(data[i]->type, 3);
        assert_int_equal(data[i]->present, 1);
        check_segment_matches_gdt(ram, data[i]);
    }
    check_segment_matches_gdt(ram, &sregs.cs);
    check_segment_matches_gdt(ram, &sregs.tr);
    assert_int_equal(get64(ram + X86_GDT_ADDR), 0);
    assert_int_equal(get64(ram + X86_GDT_ADDR + 8), 0);
    assert_int_equal(get64(ram + X86_GDT_ADDR + 0x10), 0x00af9b000000ffffULL);
    assert_int_equal(get64(ram + X86_GDT_ADDR + 0x18), 0x00cf93000000ffffULL);
    assert_int_equal(sregs.gdt.base, X86_GDT_ADDR);
    assert_int_equal(sregs.gdt.limit, X86_GDT_COUNT * 8 - 1);
    assert_int_equal(sregs.idt.base, X86_IDT_ADDR);
    assert_int_equal(sregs.tr.type, 0xb);
    assert_int_equal(sregs.tr.s, 0);

    /* General registers. */
    assert_int_equal(regs.rip, X86_KERNEL_ADDR + 0x200);
    assert_int_equal(regs.rsi, X86_ZERO_PAGE_ADDR);
    assert_int_equal(regs.rflags, 2);
    assert_int_equal(regs.rax, 0);
    assert_int_equal(regs.rdi, 0);
    assert_int_equal(regs.rsp, X86_BOOT_STACK_TOP);

    /* Nothing written over the zero page or the kernel. */
    for (uint64_t a = X86_ZERO_PAGE_ADDR; a < X86_ZERO_PAGE_ADDR + 0x1000; a++)
        assert_int_equal(ram[a], 0);
    free(ram);
}

static void test_errors(void **state)
{
    uint8_t *ram = calloc(1, 0x8000); /* too small for the page tables */
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, 0x8000);
    struct x86_boot_info bi = {.entry = 0x100200, .zero_page = 0x7000, .kernel_end = 0x300000};
    struct kvm_sregs sregs = {0};
    struct kvm_regs regs;
    struct error err = {0};
    assert_int_equal(x86_setup_long_mode(&mem, &bi, &sregs, &regs, &err), -1);
    assert_true(err.set);
    bi.kernel_end = 5ULL << 30;
    err = (struct error){0};
    assert_int_equal(x86_setup_long_mode(&mem, &bi, &sregs, &regs, &err), -1);
    assert_true(err.set);
    free(ram);
}

static void test_fpu(void **state)
{
    struct kvm_fpu fpu;
    memset(&fpu, 0xaa, sizeof(fpu));
    x86_fpu_init(&fpu);
    assert_int_equal(fpu.fcw, 0x37f);
    assert_int_equal(fpu.mxcsr, 0x1f80);
    assert_int_equal(fpu.fsw, 0);
    assert_int_equal(fpu.xmm[3][5], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_mode),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
