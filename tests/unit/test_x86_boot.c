/* Linux boot protocol loader: a synthetic bzImage, hostile variants, and the real one if cached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arch/x86/bootparams.h"
#include "arch/x86/e820.h"
#include "arch/x86/layout.h"
#include "core/bytes.h"

#define MIB          (1024 * 1024)
#define RAM_SIZE     (32 * MIB)
#define GUARD        4096
#define SETUP_SECTS  4
#define SETUP_SIZE   ((SETUP_SECTS + 1) * 512)
#define PAYLOAD_SIZE 8192
#define INIT_SIZE    (2 * MIB)
#define PREF_ADDR    (16 * MIB) /* runtime start of a relocatable kernel loaded at 1 MiB */
#define CMDLINE_SIZE 2047

struct fixture {
    uint8_t *raw; /* guard | RAM | guard */
    uint8_t *ram;
    struct guest_mem mem;
    uint8_t *kernel;
    size_t kernel_len;
};

/* A minimal bzImage as a 2.15 kernel would look: header fields plus a recognisable payload. */
static uint8_t *make_bzimage(size_t *len)
{
    size_t n = SETUP_SIZE + PAYLOAD_SIZE;
    uint8_t *k = calloc(1, n);
    assert_non_null(k);
    k[0x1f1] = SETUP_SECTS;
    le_put32(k + 0x1f4, PAYLOAD_SIZE / 16); /* syssize */
    le_put16(k + 0x1fa, 0xffff);
    le_put16(k + 0x1fe, 0xaa55);
    k[0x200] = 0xeb;
    k[0x201] = 0x6a; /* header ends at 0x26c */
    memcpy(k + 0x202, "HdrS", 4);
    le_put16(k + 0x206, 0x020f);
    k[0x211] = 0x01;                      /* LOADED_HIGH */
    le_put32(k + 0x214, 0x100000);        /* code32_start */
    le_put32(k + 0x22c, 0x7fffffff);      /* initrd_addr_max */
    le_put32(k + 0x230, 0x200000);        /* kernel_alignment */
    k[0x234] = 1;                         /* relocatable */
    le_put16(k + 0x236, 0x0001 | 0x0002); /* XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G */
    le_put32(k + 0x238, CMDLINE_SIZE);
    le_put32(k + 0x258, PREF_ADDR); /* pref_address */
    le_put32(k + 0x260, INIT_SIZE);
    k[0x26c] = 0x5a; /* beyond the header: must not be copied */
    for (size_t i = 0; i < PAYLOAD_SIZE; i++)
        k[SETUP_SIZE + i] = (uint8_t)(i * 7 + 3);
    *len = n;
    return k;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->raw = malloc(RAM_SIZE + 2 * GUARD);
    assert_non_null(f->raw);
    memset(f->raw, 0xcc, RAM_SIZE + 2 * GUARD);
    f->ram = f->raw + GUARD;
    memset(f->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&f->mem, f->ram, RAM_SIZE);
    f->kernel = make_bzimage(&f->kernel_len);
    *state = f;
    return 0;
}

static void check_guards(const struct fixture *f)
{
    for (size_t i = 0; i < GUARD; i++) {
        assert_int_equal(f->raw[i], 0xcc);
        assert_int_equal(f->raw[GUARD + RAM_SIZE + i], 0xcc);
    }
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    check_guards(f);
    free(f->kernel);
    free(f->raw);
    free(f);
    return 0;
}

static void test_good_kernel(void **state)
{
    struct fixture *f = *state;
    struct x86_boot_info bi;
    struct error err = {0};
    uint8_t initrd[10000];
    for (size_t i = 0; i < sizeof(initrd); i++)
        initrd[i] = (uint8_t)(i ^ 0x55);
    const char *cmdline = "console=ttyS0 root=/dev/vda";

    int rc = x86_load_linux(&f->mem, f->kernel, f->kernel_len, initrd, sizeof(initrd), cmdline, &bi,
                            &err);
    assert_int_equal(rc, 0);
    assert_false(err.set);
    assert_int_equal(bi.entry, X86_KERNEL_ADDR + 0x200);
    assert_int_equal(bi.zero_page, X86_ZERO_PAGE_ADDR);
    assert_int_equal(bi.kernel_addr, X86_KERNEL_ADDR);
    assert_int_equal(bi.kernel_size, PAYLOAD_SIZE);
    assert_int_equal(bi.runtime_start, PREF_ADDR);
    assert_int_equal(bi.kernel_end, PREF_ADDR + INIT_SIZE);
    assert_int_equal(bi.protocol, 0x020f);

    /* Payload at 1 MiB, command line, initrd page-aligned at the top of RAM. */
    assert_memory_equal(f->ram + X86_KERNEL_ADDR, f->kernel + SETUP_SIZE, PAYLOAD_SIZE);
    assert_string_equal((const char *)f->ram + X86_CMDLINE_ADDR, cmdline);
    assert_int_equal(bi.initrd_size, sizeof(initrd));
    assert_int_equal(bi.initrd_addr % 4096, 0);
    assert_true(bi.initrd_addr + sizeof(initrd) <= RAM_SIZE);
    assert_true(bi.initrd_addr + sizeof(initrd) + 4096 > RAM_SIZE);
    assert_memory_equal(f->ram + bi.initrd_addr, initrd, sizeof(initrd));

    /* Zero page. */
    const uint8_t *zp = f->ram + X86_ZERO_PAGE_ADDR;
    assert_int_equal(zp[0x1f1], SETUP_SECTS);
    assert_memory_equal(zp + 0x202, "HdrS", 4);
    assert_int_equal(le_get16(zp + 0x206), 0x020f);
    assert_int_equal(le_get16(zp + 0x1fa), 0xffff);
    assert_int_equal(zp[0x210], 0xff);
    assert_int_equal(zp[0x211], 0x81); /* LOADED_HIGH | CAN_USE_HEAP */
    assert_int_equal(le_get16(zp + 0x224), 0xfe00);
    assert_int_equal(le_get32(zp + 0x228), X86_CMDLINE_ADDR);
    assert_int_equal(le_get32(zp + 0xc8), 0);
    assert_int_equal(le_get32(zp + 0x218), bi.initrd_addr);
    assert_int_equal(le_get32(zp + 0x21c), sizeof(initrd));
    assert_int_equal(le_get32(zp + 0xc0), 0);
    assert_int_equal(le_get32(zp + 0xc4), 0);
    assert_int_equal(le_get32(zp + 0x260), INIT_SIZE);
    assert_int_equal(le_get16(zp + 0x236), 3);
    assert_int_equal(zp[0x26c], 0); /* not part of the header */
    assert_int_equal(zp[0x1ef], 0); /* sentinel */

    /* e820: RAM 0..EBDA, reserved to 1 MiB, RAM 1 MiB..32 MiB, IOAPIC, LAPIC. */
    assert_int_equal(zp[0x1e8], 6);
    assert_int_equal(bi.e820_entries, 6);
    const uint8_t *e = zp + 0x2d0;
    assert_int_equal(le_get64(e), 0);
    assert_int_equal(le_get64(e + 8), X86_EBDA_ADDR);
    assert_int_equal(le_get32(e + 16), 1);
    assert_int_equal(le_get64(e + 20), X86_EBDA_ADDR);
    assert_int_equal(le_get64(e + 28), 0x100000 - X86_EBDA_ADDR);
    assert_int_equal(le_get32(e + 36), 2);
    assert_int_equal(le_get64(e + 40), 0x100000);
    assert_int_equal(le_get64(e + 48), RAM_SIZE - 0x100000);
    assert_int_equal(le_get32(e + 56), 1);
    assert_int_equal(le_get64(e + 60), X86_IOAPIC_ADDR);
    assert_int_equal(le_get64(e + 80), X86_LAPIC_ADDR);
    assert_int_equal(le_get64(e + 100), X86_KVM_IDENTITY_MAP_ADDR);
}

static void test_acpi_rsdp(void **state)
{
    struct fixture *f = *state;
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, NULL, 0, "", &bi, &err), 0);
    assert_int_equal(le_get64(f->ram + X86_ZERO_PAGE_ADDR + 0x70), 0);
    assert_int_equal(x86_boot_set_acpi_rsdp(&f->mem, &bi, 0xe0000, &err), 0);
    assert_int_equal(le_get64(f->ram + X86_ZERO_PAGE_ADDR + 0x70), 0xe0000);
    bi.zero_page = RAM_SIZE - 4;
    assert_int_equal(x86_boot_set_acpi_rsdp(&f->mem, &bi, 0xe0000, &err), -1);
    assert_true(err.set);
}

static void test_no_initrd_no_cmdline(void **state)
{
    struct fixture *f = *state;
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, NULL, 0, NULL, &bi, &err),
                     0);
    assert_int_equal(bi.initrd_addr, 0);
    assert_int_equal(le_get32(f->ram + X86_ZERO_PAGE_ADDR + 0x218), 0);
    assert_int_equal(f->ram[X86_CMDLINE_ADDR], 0);
}

/* Load `k` and expect failure with a message containing `what`. */
static void expect_error(struct fixture *f, const uint8_t *k, size_t len, const uint8_t *initrd,
                         size_t initrd_len, const char *cmdline, const char *what)
{
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(x86_load_linux(&f->mem, k, len, initrd, initrd_len, cmdline, &bi, &err), -1);
    assert_true(err.set);
    if (!strstr(err.msg, what))
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, what);
    check_guards(f);
}

static void test_truncated(void **state)
{
    struct fixture *f = *state;
    /* Every prefix must fail cleanly; copies are exact-size so ASan sees over-reads. */
    for (size_t len = 0; len < f->kernel_len; len += (len < 0x300 ? 1 : 97)) {
        uint8_t *k = malloc(len ? len : 1);
        memcpy(k, f->kernel, len);
        struct x86_boot_info bi;
        struct error err = {0};
        assert_int_equal(x86_load_linux(&f->mem, k, len, NULL, 0, "", &bi, &err), -1);
        assert_true(err.set);
        free(k);
    }
    expect_error(f, f->kernel, 0x100, NULL, 0, "", "HdrS");
    expect_error(f, f->kernel, 0x250, NULL, 0, "", "truncated");
    expect_error(f, f->kernel, SETUP_SIZE, NULL, 0, "", "truncated");
    expect_error(f, f->kernel, SETUP_SIZE + 100, NULL, 0, "", "truncated");
    expect_error(f, NULL, 0, NULL, 0, "", "HdrS");
}

static void test_bad_magic(void **state)
{
    struct fixture *f = *state;
    f->kernel[0x202] = 'X';
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "HdrS");
    f->kernel[0x202] = 'H';
    f->kernel[0x1fe] = 0;
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "0xAA55");
}

static void test_old_protocol(void **state)
{
    struct fixture *f = *state;
    le_put16(f->kernel + 0x206, 0x0204);
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "too old");
    le_put16(f->kernel + 0x206, 0x020a); /* has no xloadflags */
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "64-bit");
}

static void test_no_64bit_entry(void **state)
{
    struct fixture *f = *state;
    le_put16(f->kernel + 0x236, 0x0002);
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "64-bit");
}

static void test_not_loaded_high(void **state)
{
    struct fixture *f = *state;
    f->kernel[0x211] = 0;
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "LOADED_HIGH");
}

static void test_setup_sects(void **state)
{
    struct fixture *f = *state;
    f->kernel[0x1f1] = 0xff; /* setup would be 128 KiB: beyond the file */
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "truncated");
    /* setup_sects 0 means 4 */
    f->kernel[0x1f1] = 0;
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, NULL, 0, "", &bi, &err), 0);
    assert_int_equal(bi.kernel_size, PAYLOAD_SIZE);
}

static void test_bad_jump(void **state)
{
    struct fixture *f = *state;
    f->kernel[0x201] = 0x10; /* header would end at 0x212 */
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "setup header");
    f->kernel[0x201] = 0xf0; /* backwards */
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "setup header");
    f->kernel[0x201] = 0x7f; /* ends at 0x281: allowed, still inside boot_params' room */
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, NULL, 0, "", &bi, &err), 0);
    assert_int_equal(f->ram[X86_ZERO_PAGE_ADDR + 0x26c], 0x5a);
}

static void test_cmdline_too_long(void **state)
{
    struct fixture *f = *state;
    char *cmd = malloc(CMDLINE_SIZE + 2);
    memset(cmd, 'a', CMDLINE_SIZE + 1);
    cmd[CMDLINE_SIZE + 1] = '\0';
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, cmd, "command line");
    cmd[CMDLINE_SIZE] = '\0'; /* exactly cmdline_size: fine */
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, NULL, 0, cmd, &bi, &err), 0);
    assert_int_equal(bi.cmdline_len, CMDLINE_SIZE);
    free(cmd);
}

static void test_initrd_does_not_fit(void **state)
{
    struct fixture *f = *state;
    /* RAM 32 MiB, the kernel needs up to 18 MiB: 14 MiB left. */
    size_t len = 14 * MIB + 1;
    uint8_t *initrd = calloc(1, len);
    expect_error(f, f->kernel, f->kernel_len, initrd, len, "", "initrd");
    free(initrd);
    /* initrd_addr_max below the kernel's end */
    le_put32(f->kernel + 0x22c, PREF_ADDR + INIT_SIZE + 4095);
    uint8_t small[4097] = {0};
    expect_error(f, f->kernel, f->kernel_len, small, sizeof(small), "", "initrd");
}

static void test_initrd_addr_max(void **state)
{
    struct fixture *f = *state;
    le_put32(f->kernel + 0x22c, 0x17fffff); /* last byte allowed: 24 MiB - 1 */
    uint8_t initrd[5000] = {1};
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(
        x86_load_linux(&f->mem, f->kernel, f->kernel_len, initrd, sizeof(initrd), "", &bi, &err),
        0);
    assert_int_equal(bi.initrd_addr, 0x1800000 - 8192);
    /* Exactly fits: one page right above the kernel's runtime area. */
    le_put32(f->kernel + 0x22c, PREF_ADDR + INIT_SIZE + 4095);
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, initrd, 4096, "", &bi, &err),
                     0);
    assert_int_equal(bi.initrd_addr, PREF_ADDR + INIT_SIZE);
}

static void test_kernel_larger_than_ram(void **state)
{
    struct fixture *f = *state;
    le_put32(f->kernel + 0x260, 16 * MIB + 1); /* init_size from 16 MiB beyond 32 MiB */
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "RAM");
    /* A tiny guest: under 1 MiB of RAM. */
    le_put32(f->kernel + 0x260, INIT_SIZE);
    struct guest_mem small;
    guest_mem_init_buffer(&small, f->ram, 512 * 1024);
    struct x86_boot_info bi;
    struct error err = {0};
    assert_int_equal(x86_load_linux(&small, f->kernel, f->kernel_len, NULL, 0, "", &bi, &err), -1);
    assert_non_null(strstr(err.msg, "RAM"));
}

static void test_runtime_start(void **state)
{
    struct fixture *f = *state;
    struct x86_boot_info bi;
    struct error err = {0};
    /* relocatable: max(1 MiB, pref_address) aligned up to kernel_alignment */
    le_put32(f->kernel + 0x258, 0x300001);
    le_put32(f->kernel + 0x230, 0x400000);
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, NULL, 0, "", &bi, &err), 0);
    assert_int_equal(bi.runtime_start, 0x400000);
    assert_int_equal(bi.kernel_end, 0x400000 + INIT_SIZE);
    /* not relocatable: pref_address itself */
    f->kernel[0x234] = 0;
    le_put32(f->kernel + 0x258, 0x600000);
    assert_int_equal(x86_load_linux(&f->mem, f->kernel, f->kernel_len, NULL, 0, "", &bi, &err), 0);
    assert_int_equal(bi.runtime_start, 0x600000);
    /* hostile values: no overflow, a clear error */
    f->kernel[0x234] = 1;
    le_put32(f->kernel + 0x258, 0xffffffff);
    le_put32(f->kernel + 0x25c, 0xffffffff);
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "RAM");
    le_put32(f->kernel + 0x258, PREF_ADDR);
    le_put32(f->kernel + 0x25c, 0);
    le_put32(f->kernel + 0x230, 0xffffffff);
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "RAM");
    f->kernel[0x234] = 0;
    le_put32(f->kernel + 0x25c, 0x80000000);
    expect_error(f, f->kernel, f->kernel_len, NULL, 0, "", "RAM");
}

static void test_real_kernel(void **state)
{
    struct fixture *f = *state;
    const char *home = getenv("HOME");
    char path[4096];
    snprintf(path, sizeof(path), "%s/.cache/kemu/vmlinuz-cloud", home ? home : "");
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        printf("skipping: %s not present\n", path);
        skip();
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    assert_true(n > 0);
    uint8_t *k = malloc((size_t)n);
    assert_int_equal(fread(k, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);

    size_t ram = 256 * MIB;
    uint8_t *buf = calloc(1, ram);
    assert_non_null(buf);
    struct guest_mem mem;
    guest_mem_init_buffer(&mem, buf, ram);
    struct x86_boot_info bi;
    struct error err = {0};
    uint8_t initrd[4096] = {0};
    int rc = x86_load_linux(&mem, k, (size_t)n, initrd, sizeof(initrd), "console=ttyS0", &bi, &err);
    if (rc)
        fail_msg("%s: %s", path, err.msg);
    printf("%s: protocol %u.%02u, %llu bytes at 1 MiB, runs at 0x%llx..0x%llx, initrd at "
           "0x%llx\n",
           path, bi.protocol >> 8, bi.protocol & 0xff, (unsigned long long)bi.kernel_size,
           (unsigned long long)bi.runtime_start, (unsigned long long)bi.kernel_end,
           (unsigned long long)bi.initrd_addr);
    assert_true(bi.protocol >= 0x020c);
    assert_true(bi.initrd_addr >= bi.kernel_end);
    /* Truncating the real file must be caught. */
    err = (struct error){0};
    assert_int_equal(x86_load_linux(&mem, k, (size_t)n - 4096, NULL, 0, "", &bi, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
    free(buf);
    free(k);
    (void)f;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_kernel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_initrd_no_cmdline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acpi_rsdp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_protocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_64bit_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_loaded_high, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setup_sects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_jump, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmdline_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initrd_does_not_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initrd_addr_max, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kernel_larger_than_ram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_kernel, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
