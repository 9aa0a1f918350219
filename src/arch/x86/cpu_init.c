#include "arch/x86/cpu_init.h"

#include <string.h>

#include "arch/x86/layout.h"

#define PAGE_SIZE 4096
#define GIB       (1ULL << 30)
#define MIB2      (1ULL << 21)

/* Segment descriptor type field values (S=1 code/data; S=0 system). */
#define SEG_TYPE_CODE_XRA 0xb /* execute/read, accessed */
#define SEG_TYPE_DATA_RWA 0x3 /* read/write, accessed */
#define SEG_TYPE_TSS_BUSY 0xb /* 64-bit TSS, busy */
#define SEG_TYPE_LDT      0x2

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Encode the 8-byte descriptor matching the cached state in `s` (limit in bytes). */
static uint64_t gdt_entry(const struct kvm_segment *s)
{
    uint32_t limit = s->g ? s->limit >> 12 : s->limit;
    uint64_t base = s->base;
    return (limit & 0xffffULL) | (base & 0xffffffULL) << 16 | (uint64_t)(s->type & 0xf) << 40 |
           (uint64_t)(s->s & 1) << 44 | (uint64_t)(s->dpl & 3) << 45 |
           (uint64_t)(s->present & 1) << 47 | (uint64_t)((limit >> 16) & 0xf) << 48 |
           (uint64_t)(s->avl & 1) << 52 | (uint64_t)(s->l & 1) << 53 | (uint64_t)(s->db & 1) << 54 |
           (uint64_t)(s->g & 1) << 55 | ((base >> 24) & 0xff) << 56;
}

static int write_page_tables(struct guest_mem *mem, struct error *err)
{
    uint8_t *pml4 = guest_mem_ptr(mem, X86_PML4_ADDR, PAGE_SIZE);
    uint8_t *pdpt = guest_mem_ptr(mem, X86_PDPT_ADDR, PAGE_SIZE);
    uint8_t *pd = guest_mem_ptr(mem, X86_PD_ADDR, (uint64_t)PAGE_SIZE * X86_PD_COUNT);
    if (!pml4 || !pdpt || !pd)
        return error_setf(err, "guest RAM too small for the boot page tables");
    memset(pml4, 0, PAGE_SIZE);
    memset(pdpt, 0, PAGE_SIZE);
    put64(pml4, X86_PDPT_ADDR | X86_PTE_P | X86_PTE_RW);
    for (unsigned i = 0; i < X86_PD_COUNT; i++) {
        put64(pdpt + 8 * i, (X86_PD_ADDR + (uint64_t)PAGE_SIZE * i) | X86_PTE_P | X86_PTE_RW);
        for (unsigned j = 0; j < 512; j++) /* 2 MiB pages: supported by every long-mode CPU */
            put64(pd + (size_t)PAGE_SIZE * i + 8 * j,
                  (i * GIB + j * MIB2) | X86_PTE_P | X86_PTE_RW | X86_PTE_PS);
    }
    return 0;
}

int x86_setup_long_mode(struct guest_mem *mem, const struct x86_boot_info *bi,
                        struct kvm_sregs *sregs, struct kvm_regs *regs, struct error *err)
{
    const uint64_t mapped = X86_PD_COUNT * GIB;
    if (bi->entry >= mapped || bi->zero_page >= mapped || bi->kernel_end > mapped ||
        bi->cmdline_addr + bi->cmdline_len >= mapped)
        return error_setf(err, "kernel, zero page or command line lies beyond the 4 GiB "
                               "identity map");
    if (write_page_tables(mem, err) < 0)
        return -1;

    struct kvm_segment code = {
        .base = 0,
        .limit = 0xffffffff,
        .selector = X86_BOOT_CS,
        .type = SEG_TYPE_CODE_XRA,
        .present = 1,
        .dpl = 0,
        .db = 0,
        .s = 1,
        .l = 1,
        .g = 1,
    };
    struct kvm_segment data = {
        .base = 0,
        .limit = 0xffffffff,
        .selector = X86_BOOT_DS,
        .type = SEG_TYPE_DATA_RWA,
        .present = 1,
        .dpl = 0,
        .db = 1,
        .s = 1,
        .l = 0,
        .g = 1,
    };
    /* VMX wants a usable busy TSS in TR; Linux loads its own before it needs one. */
    struct kvm_segment tss = {
        .base = 0,
        .limit = 0x67,
        .selector = X86_BOOT_TSS,
        .type = SEG_TYPE_TSS_BUSY,
        .present = 1,
        .s = 0,
    };
    struct kvm_segment ldt = {
        .base = 0,
        .limit = 0xffff,
        .selector = 0,
        .type = SEG_TYPE_LDT,
        .present = 1,
        .s = 0,
    };

    uint8_t gdt[X86_GDT_COUNT * 8] = {0};
    put64(gdt + X86_BOOT_CS, gdt_entry(&code));
    put64(gdt + X86_BOOT_DS, gdt_entry(&data));
    put64(gdt + X86_BOOT_TSS, gdt_entry(&tss)); /* upper half (base 63:32) stays zero */
    uint8_t idt[8] = {0};
    if (guest_mem_write(mem, X86_GDT_ADDR, gdt, sizeof(gdt)) < 0 ||
        guest_mem_write(mem, X86_IDT_ADDR, idt, sizeof(idt)) < 0)
        return error_setf(err, "guest RAM too small for the boot GDT");

    sregs->cs = code;
    sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
    sregs->tr = tss;
    sregs->ldt = ldt;
    sregs->gdt.base = X86_GDT_ADDR;
    sregs->gdt.limit = sizeof(gdt) - 1;
    memset(sregs->gdt.padding, 0, sizeof(sregs->gdt.padding));
    sregs->idt.base = X86_IDT_ADDR;
    sregs->idt.limit = 0;
    memset(sregs->idt.padding, 0, sizeof(sregs->idt.padding));
    sregs->cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    sregs->cr2 = 0;
    sregs->cr3 = X86_PML4_ADDR;
    sregs->cr4 = X86_CR4_PAE;
    sregs->efer = X86_EFER_LME | X86_EFER_LMA;

    memset(regs, 0, sizeof(*regs));
    regs->rip = bi->entry;
    regs->rsi = bi->zero_page;
    regs->rsp = X86_BOOT_STACK_TOP;
    regs->rbp = X86_BOOT_STACK_TOP;
    regs->rflags = 2; /* reserved bit 1; IF clear */
    return 0;
}

void x86_fpu_init(struct kvm_fpu *fpu)
{
    memset(fpu, 0, sizeof(*fpu));
    fpu->fcw = 0x37f;
    fpu->mxcsr = 0x1f80;
}
