#include "arch/x86/bootparams.h"

#include <stdbool.h>
#include <string.h>

#include "arch/x86/e820.h"
#include "arch/x86/layout.h"
#include "core/bytes.h"

#define SECTOR_SIZE     512
#define PAGE_SIZE       4096ULL
#define HEADER_MAGIC    0x53726448 /* "HdrS" little-endian */
#define BOOT_FLAG_MAGIC 0xaa55
#define JMP_SHORT       0xeb
/* The 64-bit entry needs xloadflags (2.12); 2.06 is the oldest with cmdline_size. */
#define PROTO_MIN        0x0206
#define PROTO_XLOADFLAGS 0x020c
#define PROTO_INIT_SIZE  0x020a
#define PROTO_SETUP_DATA 0x0209
/* Header bytes we read must come from the file: up to and including init_size. */
#define HDR_MIN_END       (X86_BP_INIT_SIZE + 4)
#define INITRD_MAX_LEGACY 0x37ffffffULL /* initrd_addr_max before protocol 2.03 */
#define HEAP_END_PTR      0xfe00 /* setup heap end, relative to the (unused) real-mode code */

/* Little-endian accessors over a byte buffer whose bounds the caller has already checked. */

/* End of the RAM region that starts at guest physical 0 (the RAM below the PCI hole). */
static uint64_t low_ram_end(const struct guest_mem *mem)
{
    for (unsigned i = 0; i < mem->nr; i++)
        if (mem->regions[i].gpa == 0)
            return mem->regions[i].size;
    return 0;
}

struct bzimage {
    uint16_t protocol;
    uint8_t loadflags;
    size_t hdr_end;    /* end of the setup header in the file (exclusive) */
    size_t setup_size; /* real-mode part: (setup_sects + 1) * 512 */
    uint32_t cmdline_size;
    uint64_t initrd_addr_max;
    uint32_t init_size;
    bool relocatable;
    uint32_t kernel_alignment;
    uint64_t pref_address;
};

static int parse_header(const uint8_t *k, size_t len, struct bzimage *bz, struct error *err)
{
    if (len < X86_BP_HEADER + 4 || le_get32(k + X86_BP_HEADER) != HEADER_MAGIC)
        return error_setf(err, "not a Linux bzImage (no \"HdrS\" setup header at 0x%x)",
                          X86_BP_HEADER);
    /* From here on every fixed header field we read lies below HDR_MIN_END. */
    if (len < HDR_MIN_END)
        return error_setf(err, "file truncated (%zu bytes) inside the setup header", len);
    if (le_get16(k + X86_BP_BOOT_FLAG) != BOOT_FLAG_MAGIC)
        return error_setf(err, "not a Linux bzImage (boot flag is not 0xAA55)");
    bz->protocol = le_get16(k + X86_BP_VERSION);
    if (bz->protocol < PROTO_MIN)
        return error_setf(err, "boot protocol %u.%02u is too old (kemu needs 2.12 or later)",
                          bz->protocol >> 8, bz->protocol & 0xff);

    /* The header ends where the short jump at 0x200 lands. */
    if (k[X86_BP_JUMP] != JMP_SHORT || k[X86_BP_JUMP + 1] >= 0x80)
        return error_setf(err, "malformed setup header (no short jump at 0x%x)", X86_BP_JUMP);
    size_t end = X86_BP_HEADER + (size_t)k[X86_BP_JUMP + 1];
    if (end > X86_BP_HDR_MAX_END)
        end = X86_BP_HDR_MAX_END; /* boot_params has no room for more */
    if (end < HDR_MIN_END && bz->protocol >= PROTO_XLOADFLAGS)
        return error_setf(err,
                          "malformed setup header (ends at 0x%zx, protocol %u.%02u needs "
                          "at least 0x%x)",
                          end, bz->protocol >> 8, bz->protocol & 0xff, HDR_MIN_END);
    if (len < end)
        return error_setf(err, "file truncated (%zu bytes) inside the setup header", len);
    bz->hdr_end = end;

    uint16_t xlf = le_get16(k + X86_BP_XLOADFLAGS);
    if (bz->protocol < PROTO_XLOADFLAGS || !(xlf & X86_XLF_KERNEL_64))
        return error_setf(err,
                          "kernel has no 64-bit entry point (boot protocol %u.%02u, "
                          "XLF_KERNEL_64 not set in xloadflags)",
                          bz->protocol >> 8, bz->protocol & 0xff);
    bz->loadflags = k[X86_BP_LOADFLAGS];
    if (!(bz->loadflags & X86_LOADFLAGS_LOADED_HIGH))
        return error_setf(err, "not a bzImage (LOADED_HIGH not set: a zImage loads at 64 KiB)");

    unsigned sects = k[X86_BP_SETUP_SECTS];
    if (sects == 0)
        sects = 4;
    bz->setup_size = ((size_t)sects + 1) * SECTOR_SIZE;
    if (bz->setup_size >= len)
        return error_setf(err, "file truncated: %zu bytes, but the setup code alone takes %zu", len,
                          bz->setup_size);
    /* syssize counts 16-byte paragraphs of the protected-mode part; allow its rounding. */
    uint64_t sys = (uint64_t)le_get32(k + X86_BP_SYSSIZE) * 16;
    if (sys > (uint64_t)(len - bz->setup_size) + 15)
        return error_setf(err,
                          "file truncated: the kernel is %llu bytes after the setup code, "
                          "only %zu present",
                          (unsigned long long)sys, len - bz->setup_size);

    bz->cmdline_size = le_get32(k + X86_BP_CMDLINE_SIZE);
    bz->initrd_addr_max = le_get32(k + X86_BP_INITRD_ADDR_MAX);
    if (bz->initrd_addr_max == 0)
        bz->initrd_addr_max = INITRD_MAX_LEGACY;
    bz->init_size = bz->protocol >= PROTO_INIT_SIZE ? le_get32(k + X86_BP_INIT_SIZE) : 0;
    bz->relocatable = k[X86_BP_RELOCATABLE] != 0;
    bz->kernel_alignment = le_get32(k + X86_BP_KERNEL_ALIGNMENT);
    bz->pref_address = bz->protocol >= PROTO_INIT_SIZE ? le_get64(k + X86_BP_PREF_ADDRESS) : 0;
    return 0;
}

/*
 * The kernel runtime start address (boot.rst, init_size): the kernel decompresses itself there
 * and needs init_size bytes from it before it reads the memory map. We always load at 1 MiB.
 */
static int runtime_start(const struct bzimage *bz, uint64_t ram_end, uint64_t *start,
                         struct error *err)
{
    uint64_t s = X86_KERNEL_ADDR;
    if (bz->relocatable) {
        if (s < bz->pref_address)
            s = bz->pref_address;
        uint64_t align = bz->kernel_alignment ? bz->kernel_alignment : 1;
        if (s > ram_end || align > ram_end)
            return error_setf(err,
                              "kernel wants to run at 0x%llx (alignment 0x%llx), beyond "
                              "the end of RAM below 4 GiB (0x%llx)",
                              (unsigned long long)s, (unsigned long long)align,
                              (unsigned long long)ram_end);
        s = (s + align - 1) / align * align; /* no overflow: both below 2^46 */
    } else if (bz->pref_address) {
        s = bz->pref_address;
    }
    *start = s;
    return 0;
}

static int place_initrd(struct guest_mem *mem, const struct bzimage *bz, uint64_t kernel_end,
                        const uint8_t *initrd, size_t initrd_len, struct x86_boot_info *out,
                        struct error *err)
{
    uint64_t limit = low_ram_end(mem);
    if (bz->initrd_addr_max + 1 < limit) /* initrd_addr_max is the last byte allowed */
        limit = bz->initrd_addr_max + 1;
    if (limit > X86_4GIB)
        limit = X86_4GIB;
    uint64_t lowest = (kernel_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    if (initrd_len > limit || ((limit - initrd_len) & ~(PAGE_SIZE - 1)) < lowest)
        return error_setf(err,
                          "initrd (%zu bytes) does not fit in RAM between the kernel's end "
                          "(0x%llx) and 0x%llx; give the guest more memory",
                          initrd_len, (unsigned long long)lowest, (unsigned long long)limit);
    uint64_t addr = (limit - initrd_len) & ~(PAGE_SIZE - 1);
    if (guest_mem_write(mem, addr, initrd, initrd_len) < 0)
        return error_setf(err, "initrd does not fit in guest RAM at 0x%llx",
                          (unsigned long long)addr);
    out->initrd_addr = addr;
    out->initrd_size = initrd_len;
    return 0;
}

static int write_zero_page(struct guest_mem *mem, const uint8_t *k, const struct bzimage *bz,
                           struct x86_boot_info *out, struct error *err)
{
    uint8_t *zp = guest_mem_ptr(mem, X86_ZERO_PAGE_ADDR, X86_BP_SIZE);
    if (!zp)
        return error_setf(err, "guest RAM too small for the zero page at 0x%llx",
                          (unsigned long long)X86_ZERO_PAGE_ADDR);
    memset(zp, 0, X86_BP_SIZE);
    /* The protocol: copy the setup header as found in the file, then fill in our fields. */
    memcpy(zp + X86_BP_HDR, k + X86_BP_HDR, bz->hdr_end - X86_BP_HDR);
    le_put16(zp + X86_BP_VID_MODE, 0xffff); /* "normal" */
    zp[X86_BP_TYPE_OF_LOADER] = 0xff;       /* undefined loader */
    zp[X86_BP_LOADFLAGS] = bz->loadflags | X86_LOADFLAGS_CAN_USE_HEAP;
    le_put16(zp + X86_BP_HEAP_END_PTR, HEAP_END_PTR);
    le_put32(zp + X86_BP_CMD_LINE_PTR, (uint32_t)out->cmdline_addr);
    le_put32(zp + X86_BP_EXT_CMD_LINE_PTR, (uint32_t)(out->cmdline_addr >> 32));
    le_put32(zp + X86_BP_RAMDISK_IMAGE, (uint32_t)out->initrd_addr);
    le_put32(zp + X86_BP_EXT_RAMDISK_IMAGE, (uint32_t)(out->initrd_addr >> 32));
    le_put32(zp + X86_BP_RAMDISK_SIZE, (uint32_t)out->initrd_size);
    le_put32(zp + X86_BP_EXT_RAMDISK_SIZE, (uint32_t)(out->initrd_size >> 32));
    if (bz->protocol >= PROTO_SETUP_DATA)
        le_put64(zp + X86_BP_SETUP_DATA, 0); /* no setup_data chain */

    struct x86_e820_entry e820[X86_E820_MAX_ENTRIES];
    unsigned n;
    if (x86_e820_build(mem, e820, X86_E820_MAX_ENTRIES, &n, err) < 0)
        return -1;
    for (unsigned i = 0; i < n; i++) { /* struct boot_e820_entry: packed, 20 bytes */
        uint8_t *e = zp + X86_BP_E820_TABLE + 20 * i;
        le_put64(e, e820[i].addr);
        le_put64(e + 8, e820[i].size);
        le_put32(e + 16, e820[i].type);
    }
    zp[X86_BP_E820_ENTRIES] = (uint8_t)n;
    out->e820_entries = n;
    return 0;
}

int x86_load_linux(struct guest_mem *mem, const uint8_t *kernel, size_t kernel_len,
                   const uint8_t *initrd, size_t initrd_len, const char *cmdline,
                   struct x86_boot_info *out, struct error *err)
{
    struct bzimage bz;

    memset(out, 0, sizeof(*out));
    if (!kernel)
        kernel_len = 0;
    if (parse_header(kernel, kernel_len, &bz, err) < 0)
        return -1;

    /* Command line: the kernel's cmdline_size excludes the NUL. */
    if (!cmdline)
        cmdline = "";
    size_t clen = strlen(cmdline);
    if (clen > bz.cmdline_size)
        return error_setf(err, "command line is %zu bytes, the kernel accepts at most %u", clen,
                          bz.cmdline_size);
    if (clen >= X86_CMDLINE_MAX)
        return error_setf(err, "command line is %zu bytes, kemu accepts at most %llu", clen,
                          X86_CMDLINE_MAX - 1);

    /* Protected-mode kernel at 1 MiB; from its runtime start it needs init_size bytes before
     * it reads e820. */
    uint64_t ksize = kernel_len - bz.setup_size;
    uint64_t ram_end = low_ram_end(mem);
    uint64_t start = 0;
    if (ram_end < X86_KERNEL_ADDR || ksize > ram_end - X86_KERNEL_ADDR)
        return error_setf(err, "kernel is %llu KiB but RAM from 1 MiB to 0x%llx is smaller",
                          (unsigned long long)(ksize >> 10), (unsigned long long)ram_end);
    if (runtime_start(&bz, ram_end, &start, err) < 0)
        return -1;
    if (start > ram_end || bz.init_size > ram_end - start)
        return error_setf(err,
                          "kernel needs %llu KiB from 0x%llx (init_size) but RAM below 4 GiB "
                          "ends at 0x%llx",
                          (unsigned long long)(bz.init_size >> 10), (unsigned long long)start,
                          (unsigned long long)ram_end);
    uint64_t end = start + bz.init_size;
    if (end < X86_KERNEL_ADDR + ksize)
        end = X86_KERNEL_ADDR + ksize;
    out->protocol = bz.protocol;
    out->kernel_addr = X86_KERNEL_ADDR;
    out->kernel_size = ksize;
    out->runtime_start = start;
    out->kernel_end = end;
    out->entry = X86_KERNEL_ADDR + 0x200;
    out->zero_page = X86_ZERO_PAGE_ADDR;
    out->cmdline_addr = X86_CMDLINE_ADDR;
    out->cmdline_len = clen;

    if (guest_mem_write(mem, X86_CMDLINE_ADDR, cmdline, clen + 1) < 0)
        return error_setf(err, "guest RAM too small for the command line");
    if (initrd && initrd_len > 0 &&
        place_initrd(mem, &bz, out->kernel_end, initrd, initrd_len, out, err) < 0)
        return -1;
    if (write_zero_page(mem, kernel, &bz, out, err) < 0)
        return -1;
    if (guest_mem_write(mem, X86_KERNEL_ADDR, kernel + bz.setup_size, ksize) < 0)
        return error_setf(err, "kernel does not fit in guest RAM at 1 MiB");
    return 0;
}

int x86_boot_set_acpi_rsdp(struct guest_mem *mem, const struct x86_boot_info *bi,
                           uint64_t rsdp_addr, struct error *err)
{
    uint8_t v[8];
    le_put64(v, rsdp_addr);
    if (guest_mem_write(mem, bi->zero_page + X86_BP_ACPI_RSDP_ADDR, v, sizeof(v)) < 0)
        return error_setf(err, "zero page at 0x%llx is not in guest RAM",
                          (unsigned long long)bi->zero_page);
    return 0;
}
