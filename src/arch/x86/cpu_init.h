/*
 * Initial register state of the boot vCPU for the Linux 64-bit boot protocol: long mode with
 * paging on, the first 4 GiB identity-mapped, the flat __BOOT_CS/__BOOT_DS GDT loaded, RIP at the
 * kernel's 64-bit entry and RSI at the zero page. Secondary vCPUs keep KVM's reset state (with an
 * in-kernel LAPIC they wait for INIT/SIPI) and get none of this.
 */
#ifndef KEMU_ARCH_X86_CPU_INIT_H
#define KEMU_ARCH_X86_CPU_INIT_H

#include <linux/kvm.h>

#include "arch/x86/bootparams.h"
#include "core/error.h"
#include "core/memory.h"

/* Page-table / segment bits used below (also handy for tests). */
#define X86_CR0_PE    (1ULL << 0)
#define X86_CR0_ET    (1ULL << 4)
#define X86_CR0_NE    (1ULL << 5)
#define X86_CR0_PG    (1ULL << 31)
#define X86_CR4_PAE   (1ULL << 5)
#define X86_EFER_LME  (1ULL << 8)
#define X86_EFER_LMA  (1ULL << 10)
#define X86_PTE_P     (1ULL << 0)
#define X86_PTE_RW    (1ULL << 1)
#define X86_PTE_PS    (1ULL << 7)
#define X86_GDT_COUNT 6 /* null, null, CS, DS, 16-byte TSS */

/*
 * Write the GDT, an empty IDT and identity page tables for 0..4 GiB (2 MiB pages) into `mem`, and
 * set up `sregs`/`regs` for the boot vCPU. `sregs` should come from KVM_GET_SREGS: only the
 * segment, descriptor-table, control registers and EFER are changed (apic_base and the interrupt
 * bitmap are kept). `regs` is overwritten. Returns 0, or -1 with `err` set when guest RAM is too
 * small for the tables or the kernel lies beyond the identity map.
 */
int x86_setup_long_mode(struct guest_mem *mem, const struct x86_boot_info *bi,
                        struct kvm_sregs *sregs, struct kvm_regs *regs, struct error *err);

/* x87/SSE state after FNINIT and with the default MXCSR (FCW 0x37f, MXCSR 0x1f80). */
void x86_fpu_init(struct kvm_fpu *fpu);

#endif
