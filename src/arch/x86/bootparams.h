/*
 * Linux x86 boot protocol loader (Documentation/arch/x86/boot.rst), 64-bit entry only: the
 * protected-mode part of a bzImage goes to 1 MiB, the zero page (struct boot_params), command line
 * and initrd are placed as the protocol asks, and the vCPU starts in long mode at load address
 * + 0x200 with RSI pointing to the zero page (see cpu_init.h).
 */
#ifndef KEMU_ARCH_X86_BOOTPARAMS_H
#define KEMU_ARCH_X86_BOOTPARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"

/* Offsets in the bzImage file and in the zero page (the setup header sits at 0x1f1 in both). */
#define X86_BP_ACPI_RSDP_ADDR    0x070
#define X86_BP_EXT_RAMDISK_IMAGE 0x0c0
#define X86_BP_EXT_RAMDISK_SIZE  0x0c4
#define X86_BP_EXT_CMD_LINE_PTR  0x0c8
#define X86_BP_E820_ENTRIES      0x1e8
#define X86_BP_HDR               0x1f1 /* struct setup_header */
#define X86_BP_SETUP_SECTS       0x1f1
#define X86_BP_SYSSIZE           0x1f4
#define X86_BP_VID_MODE          0x1fa
#define X86_BP_BOOT_FLAG         0x1fe
#define X86_BP_JUMP              0x200
#define X86_BP_HEADER            0x202 /* "HdrS" */
#define X86_BP_VERSION           0x206
#define X86_BP_TYPE_OF_LOADER    0x210
#define X86_BP_LOADFLAGS         0x211
#define X86_BP_RAMDISK_IMAGE     0x218
#define X86_BP_RAMDISK_SIZE      0x21c
#define X86_BP_HEAP_END_PTR      0x224
#define X86_BP_CMD_LINE_PTR      0x228
#define X86_BP_INITRD_ADDR_MAX   0x22c
#define X86_BP_KERNEL_ALIGNMENT  0x230
#define X86_BP_RELOCATABLE       0x234
#define X86_BP_XLOADFLAGS        0x236
#define X86_BP_CMDLINE_SIZE      0x238
#define X86_BP_SETUP_DATA        0x250
#define X86_BP_PREF_ADDRESS      0x258
#define X86_BP_INIT_SIZE         0x260
#define X86_BP_HDR_MAX_END       0x290 /* end of the room for the header in boot_params */
#define X86_BP_E820_TABLE        0x2d0
#define X86_BP_SIZE              0x1000

#define X86_LOADFLAGS_LOADED_HIGH  0x01
#define X86_LOADFLAGS_CAN_USE_HEAP 0x80
#define X86_XLF_KERNEL_64          0x0001

struct x86_boot_info {
    uint64_t entry;         /* 64-bit entry point: kernel_addr + 0x200 -> RIP */
    uint64_t zero_page;     /* struct boot_params -> RSI */
    uint64_t kernel_addr;   /* where the protected-mode kernel was copied */
    uint64_t kernel_size;   /* bytes copied */
    uint64_t runtime_start; /* where the kernel decompresses itself (boot.rst's algorithm) */
    uint64_t kernel_end;    /* max(kernel_addr + kernel_size, runtime_start + init_size) */
    uint64_t cmdline_addr;  /* NUL-terminated command line */
    uint64_t cmdline_len;   /* without the NUL */
    uint64_t initrd_addr;   /* 0 when there is no initrd */
    uint64_t initrd_size;
    uint16_t protocol; /* boot protocol version, e.g. 0x020f */
    unsigned e820_entries;
};

/*
 * Load a bzImage (`kernel`, `kernel_len` bytes from the file), an optional initrd (NULL/0 for
 * none) and a command line (NULL = empty) into `mem` and build the zero page. Every offset read
 * from the file is checked against kernel_len. Returns 0 and fills *out, or -1 with `err` set to a
 * reason fit for "kemu: -kernel FILE: <reason>".
 */
int x86_load_linux(struct guest_mem *mem, const uint8_t *kernel, size_t kernel_len,
                   const uint8_t *initrd, size_t initrd_len, const char *cmdline,
                   struct x86_boot_info *out, struct error *err);

/*
 * Tell the kernel where the ACPI RSDP is (boot_params.acpi_rsdp_addr, protocol 2.14+; older
 * kernels scan 0xE0000-0xFFFFF instead). Call after x86_load_linux().
 */
int x86_boot_set_acpi_rsdp(struct guest_mem *mem, const struct x86_boot_info *bi,
                           uint64_t rsdp_addr, struct error *err);

#endif
