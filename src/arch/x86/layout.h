/*
 * Guest physical memory map of the x86 `pc` machine. Everything the loader and the CPU set-up put
 * in guest memory lives at one of these addresses; they are all below 1 MiB except the kernel.
 *
 *   0x00000500  GDT (boot protocol __BOOT_CS = 0x10, __BOOT_DS = 0x18, a TSS at 0x20)
 *   0x00000600  IDT (empty, limit 0: no interrupt may arrive before the kernel loads its own)
 *   0x00007000  zero page (struct boot_params, 4 KiB)
 *   0x00008000  boot stack (top 0x8ff0; the kernel switches to its own stack at once)
 *   0x00009000  PML4, 0xa000 PDPT, 0xb000..0xefff four page directories (2 MiB pages, 0..4 GiB)
 *   0x00020000  kernel command line (up to 64 KiB)
 *   0x0009fc00  EBDA start: usable RAM ends here, reserved to 1 MiB (EBDA, VGA, option ROMs, BIOS)
 *   0x000e0000  ACPI RSDP + RSDT/XSDT/MADT (Linux scans 0xE0000-0xFFFFF for the RSDP)
 *   0x000f0000  MP floating pointer + configuration table (in the BIOS area Linux scans)
 *   0x00100000  protected-mode kernel (bzImage payload), 64-bit entry at +0x200
 *   0xc0000000  end of RAM below 4 GiB for `pc`; PCI/MMIO hole up to 4 GiB
 *   0xfec00000  IOAPIC          0xfee00000  local APIC
 *   0xfffbc000  KVM's private pages on Intel: the identity-map page (KVM_SET_IDENTITY_MAP_ADDR)
 *               and the 3-page real-mode TSS (KVM_SET_TSS_ADDR), reserved in e820
 *   0x100000000 RAM above 4 GiB (whatever -m leaves after the hole)
 */
#ifndef KEMU_ARCH_X86_LAYOUT_H
#define KEMU_ARCH_X86_LAYOUT_H

#define X86_GDT_ADDR         0x500ULL
#define X86_IDT_ADDR         0x600ULL
#define X86_ZERO_PAGE_ADDR   0x7000ULL
#define X86_BOOT_STACK_ADDR  0x8000ULL
#define X86_BOOT_STACK_TOP   0x8ff0ULL
#define X86_PML4_ADDR        0x9000ULL
#define X86_PDPT_ADDR        0xa000ULL
#define X86_PD_ADDR          0xb000ULL /* 4 consecutive pages, one per GiB */
#define X86_PD_COUNT         4
#define X86_CMDLINE_ADDR     0x20000ULL
#define X86_CMDLINE_MAX      0x10000ULL /* bytes reserved, including the terminating NUL */
#define X86_EBDA_ADDR        0x9fc00ULL
#define X86_ACPI_ADDR        0xe0000ULL
#define X86_ACPI_MAX_SIZE    0x10000ULL
#define X86_BIOS_AREA_ADDR   0xf0000ULL
#define X86_MPTABLE_ADDR     0xf0000ULL
#define X86_MPTABLE_MAX_SIZE 0x10000ULL
#define X86_HIGH_MEM_ADDR    0x100000ULL /* 1 MiB */
#define X86_KERNEL_ADDR      0x100000ULL

#define X86_PC_BELOW_4G_LIMIT     0xc0000000ULL /* pass to guest_mem_init_x86() */
#define X86_IOAPIC_ADDR           0xfec00000ULL
#define X86_IOAPIC_SIZE           0x1000ULL
#define X86_LAPIC_ADDR            0xfee00000ULL
#define X86_LAPIC_SIZE            0x1000ULL
#define X86_KVM_IDENTITY_MAP_ADDR 0xfffbc000ULL /* 1 page */
#define X86_KVM_TSS_ADDR          0xfffbd000ULL /* 3 pages */
#define X86_KVM_PRIVATE_SIZE      0x4000ULL
#define X86_4GIB                  0x100000000ULL

/* GDT selectors the Linux boot protocol expects. */
#define X86_BOOT_CS  0x10
#define X86_BOOT_DS  0x18
#define X86_BOOT_TSS 0x20

#endif
