/* HMP: x/xp format parsing, dumps, the page walk, register layout, commands, the line monitor. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "monitor/disas.h"
#include "monitor/hmp.h"

/* ---- x format ---- */

static void xfmt_parsing(void **state)
{
    struct hmp_xfmt f;
    char msg[128];
    assert_int_equal(hmp_parse_xfmt("", &f, msg, sizeof(msg)), 0);
    assert_true(f.count == 1 && f.format == 'x' && f.size == 4);
    assert_int_equal(hmp_parse_xfmt("/4bx", &f, msg, sizeof(msg)), 0);
    assert_true(f.count == 4 && f.format == 'x' && f.size == 1);
    assert_int_equal(hmp_parse_xfmt("/2gd", &f, msg, sizeof(msg)), 0);
    assert_true(f.count == 2 && f.format == 'd' && f.size == 8);
    assert_int_equal(hmp_parse_xfmt("/u", &f, msg, sizeof(msg)), 0);
    assert_true(f.count == 1 && f.format == 'u' && f.size == 4);
    assert_int_equal(hmp_parse_xfmt("/8c", &f, msg, sizeof(msg)), 0);
    assert_true(f.count == 8 && f.format == 'c' && f.size == 1);
    assert_int_equal(hmp_parse_xfmt("/3xh", &f, msg, sizeof(msg)), 0);
    assert_true(f.count == 3 && f.format == 'x' && f.size == 2);

    assert_int_equal(hmp_parse_xfmt("/4q", &f, msg, sizeof(msg)), -1);
    assert_string_equal(msg, "invalid char in format: 'q'"); /* QEMU's wording */
    assert_int_equal(hmp_parse_xfmt("/b\x1b", &f, msg, sizeof(msg)), -1);
    assert_string_equal(msg, "invalid char in format: '?'");
    assert_int_equal(hmp_parse_xfmt("4x", &f, msg, sizeof(msg)), -1);
    assert_int_equal(hmp_parse_xfmt("/10i", &f, msg, sizeof(msg)), 0);
    assert_true(f.count == 10 && f.format == 'i');
    assert_int_equal(hmp_parse_xfmt("/3ig", &f, msg, sizeof(msg)), 0); /* size ignored */
    assert_true(f.count == 3 && f.format == 'i');
    assert_int_equal(hmp_parse_xfmt("/16385i", &f, msg, sizeof(msg)), -1);
    assert_non_null(strstr(msg, "count too large"));
    assert_int_equal(hmp_parse_xfmt("/99999999999999999999999x", &f, msg, sizeof(msg)), -1);
    assert_non_null(strstr(msg, "count too large"));
    assert_int_equal(hmp_parse_xfmt("/20000g", &f, msg, sizeof(msg)), -1); /* 160000 bytes */
}

/* ---- dumps over a buffer standing for guest RAM ---- */

struct ram {
    uint8_t *b;
    size_t size;
};

static int ram_read(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    struct ram *r = opaque;
    if (gpa > r->size || len > r->size - gpa)
        return -1;
    memcpy(buf, r->b + gpa, len);
    return 0;
}

static char *dump(struct ram *r, const char *fmt_s, uint64_t addr, bool virt, uint64_t cr3)
{
    struct hmp_xfmt fmt;
    char msg[128];
    assert_int_equal(hmp_parse_xfmt(fmt_s, &fmt, msg, sizeof(msg)), 0);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    hmp_dump(f, &fmt, addr, virt, cr3, ram_read, r);
    fclose(f);
    return out;
}

static void physical_dumps(void **state)
{
    static uint8_t mem[0x1000];
    struct ram r = {mem, sizeof(mem)};
    memcpy(mem + 0x200, "\xfa\xf4\xeb\xfd", 4);
    char *s = dump(&r, "/4bx", 0x200, false, 0);
    assert_string_equal(s, "0000000000000200: 0xfa 0xf4 0xeb 0xfd\r\n");
    free(s);
    s = dump(&r, "/1wx", 0x200, false, 0);
    assert_string_equal(s, "0000000000000200: 0xfdebf4fa\r\n");
    free(s);
    s = dump(&r, "/2bd", 0x200, false, 0);
    assert_string_equal(s, "0000000000000200:  -6 -12\r\n");
    free(s);
    s = dump(&r, "/1hu", 0x200, false, 0);
    assert_string_equal(s, "0000000000000200: 62714\r\n");
    free(s);
    memcpy(mem + 0x300, "hi\n", 3);
    s = dump(&r, "/3c", 0x300, false, 0);
    assert_string_equal(s, "0000000000000300: 'h' 'i' '\\n'\r\n");
    free(s);
    /* As QEMU: /c with a size shows count * size characters, 16 to a line as for that size. */
    memcpy(mem + 0x300, "0123456789abcdefgh", 18);
    s = dump(&r, "/9hc", 0x300, false, 0);
    assert_string_equal(s, "0000000000000300: '0' '1' '2' '3' '4' '5' '6' '7' '8' '9' 'a' 'b' "
                           "'c' 'd' 'e' 'f'\r\n0000000000000310: 'g' 'h'\r\n");
    free(s);
    /* 5 giant words: two lines of two, one of one. */
    s = dump(&r, "/5gx", 0x0, false, 0);
    assert_int_equal(strlen(s), (17 + 2 * 19 + 2) * 2 + 17 + 19 + 2);
    free(s);
    /* Running off the end of RAM stops with an error line, not a crash. */
    s = dump(&r, "/4gx", 0xff8, false, 0);
    assert_non_null(strstr(s, "0000000000000ff8: 0x0000000000000000 Cannot access memory: 0x1000 "
                              "is outside guest RAM\r\n"));
    assert_non_null(strstr(s, "Cannot access memory"));
    free(s);
    s = dump(&r, "/1bx", 0xffffffffffffffffULL, false, 0);
    assert_non_null(strstr(s, "Cannot access memory"));
    free(s);
}

static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void page_walk(void **state)
{
    static uint8_t mem[0x800000];
    struct ram r = {mem, sizeof(mem)};
    memset(mem, 0, sizeof(mem));
    /* PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000: PD[1] a 2 MiB page at 4 MiB, PD[2] -> PT 0x4000
     * whose entry 5 maps 0x5000. */
    put64(mem + 0x1000, 0x2000 | 3);
    put64(mem + 0x2000 + 1 * 8, 0x3000 | 3); /* va bits 30-38 = 1: 1 GiB + ... */
    put64(mem + 0x3000 + 1 * 8, 0x400000 | 0x83);
    put64(mem + 0x3000 + 2 * 8, 0x4000 | 3);
    put64(mem + 0x4000 + 5 * 8, 0x5000 | 3);
    uint64_t gpa = 0;
    int level = 0;
    assert_int_equal(hmp_translate(ram_read, &r, 0x1000, 0x40200123, &gpa, &level), 0);
    assert_int_equal(gpa, 0x400123);
    assert_int_equal(hmp_translate(ram_read, &r, 0x1000, 0x40405abc, &gpa, &level), 0);
    assert_int_equal(gpa, 0x5abc);
    /* Not present at each level. */
    assert_int_equal(hmp_translate(ram_read, &r, 0x1000, 0x8000000000ULL, &gpa, &level), -1);
    assert_int_equal(level, 4);
    assert_int_equal(hmp_translate(ram_read, &r, 0x1000, 0x0, &gpa, &level), -1);
    assert_int_equal(level, 3);
    assert_int_equal(hmp_translate(ram_read, &r, 0x1000, 0x40000000, &gpa, &level), -1);
    assert_int_equal(level, 2);
    assert_int_equal(hmp_translate(ram_read, &r, 0x1000, 0x40400000, &gpa, &level), -1);
    assert_int_equal(level, 1);
    /* A table pointing outside RAM. */
    put64(mem + 0x3000 + 3 * 8, 0x7fff0000000ULL | 3);
    assert_int_equal(hmp_translate(ram_read, &r, 0x1000, 0x40600000, &gpa, &level), -2);

    /* x through the walk. */
    memcpy(mem + 0x400120, "\x11\x22\x33\x44", 4);
    char *s = dump(&r, "/4bx", 0x40200120, true, 0x1000);
    assert_string_equal(s, "0000000040200120: 0x11 0x22 0x33 0x44\r\n");
    free(s);
    s = dump(&r, "/1bx", 0x40400000, true, 0x1000);
    assert_non_null(strstr(s, "page not present"));
    free(s);
}

/* ---- x /i ---- */

static char *disas(const uint8_t *b, size_t len, uint64_t addr, uint64_t count, int mode)
{
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    assert_int_equal(disas_x86_buf(f, b, len, addr, count, mode), 0);
    fclose(f);
    return out;
}

static void disassembly(void **state)
{
    /* The mode QEMU picks: CS.D, or CS.L under EFER.LMA (then 64 even for CS.L clear). */
    assert_int_equal(disas_x86_mode(false, false, 0), 16);
    assert_int_equal(disas_x86_mode(true, false, 0), 32);
    assert_int_equal(disas_x86_mode(false, true, 0x500), 64);
    assert_int_equal(disas_x86_mode(true, false, 0x500), 64);
    assert_int_equal(disas_x86_mode(false, true, 0), 16);
    if (!disas_available()) {
        char *out = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&out, &n);
        assert_int_equal(disas_x86_buf(f, (const uint8_t *)"\xc3", 1, 0, 1, 64), -1);
        fclose(f);
        assert_string_equal(out, "");
        free(out);
        print_message("x /i not tested: kemu was built without capstone (-Dcapstone)\n");
        skip();
        return;
    }
    /* The layout and wording of Debian's QEMU 7.2 (capstone 4, AT&T syntax). */
    static const uint8_t code64[] = {0x48, 0x89, 0xe5, 0xc3};
    char *s = disas(code64, sizeof(code64), 0x100200, 2, 64);
    assert_string_equal(s, "0x00100200:  48 89 e5                 movq     %rsp, %rbp\r\n"
                           "0x00100203:  c3                       retq     \r\n");
    free(s);
    /* The halt guest's code, and a 64-bit address printed whole. */
    static const uint8_t halt[] = {0xfa, 0xf4, 0xeb, 0xfd};
    s = disas(halt, sizeof(halt), 0xffffffff81000000ULL, 3, 64);
    assert_string_equal(s, "0xffffffff81000000:  fa                       cli      \r\n"
                           "0xffffffff81000001:  f4                       hlt      \r\n"
                           "0xffffffff81000002:  eb fd                    jmp      "
                           "0xffffffff81000001\r\n");
    free(s);
    /* 16-bit: more than 8 bytes go on a second line; unknown bytes are ".byte"; the end of
     * readable memory ends the listing with QEMU's line. Checked against qemu-system-x86_64
     * -device loader with the same bytes at 0x1000. */
    static const uint8_t code16[] = {0x66, 0xc7, 0x06, 0x34, 0x12, 0x78, 0x56, 0x34,
                                     0x12, 0x90, 0xf4, 0x0f, 0x0b, 0xff, 0xff};
    uint8_t page[0x800];
    memset(page, 0, sizeof(page));
    memcpy(page, code16, sizeof(code16));
    memcpy(page + 0x3fc, code16, sizeof(code16));
    s = disas(page, sizeof(page), 0x1000, 5, 16);
    assert_string_equal(s, "0x00001000:  66 c7 06 34 12 78 56 34  movl     $0x12345678, 0x1234\r\n"
                           "0x00001008:  12\r\n"
                           "0x00001009:  90                       nop      \r\n"
                           "0x0000100a:  f4                       hlt      \r\n"
                           "0x0000100b:  0f 0b                    ud2      \r\n"
                           "0x0000100d:  ff                       .byte    0xff\r\n");
    free(s);
    /* QEMU never reads across a 1 KiB boundary at once: an instruction straddling one is cut. */
    s = disas(page, sizeof(page), 0x1000 + 0x3fc, 3, 16);
    assert_string_equal(s, "0x000013fc:  66                       .byte    0x66\r\n"
                           "0x000013fd:  c7 06 34 12 78 56        movw     $0x5678, 0x1234\r\n"
                           "0x00001403:  34 12                    xorb     $0x12, %al\r\n");
    free(s);
    /* 32-bit, then memory that ends. */
    static const uint8_t code32[] = {0x55, 0x89, 0xe5, 0xc3};
    s = disas(code32, sizeof(code32), 0x7c00, 4, 32);
    assert_string_equal(s, "0x00007c00:  55                       pushl    %ebp\r\n"
                           "0x00007c01:  89 e5                    movl     %esp, %ebp\r\n"
                           "0x00007c03:  c3                       retl     \r\n"
                           "0x00007c04: unable to read memory\r\n");
    free(s);
    s = disas(code32, sizeof(code32), 0x7c00, 0, 32); /* /0i shows one, as QEMU */
    assert_string_equal(s, "0x00007c00:  55                       pushl    %ebp\r\n");
    free(s);
    s = disas(code32, 0, 0xf0000000000ULL, 2, 64);
    assert_string_equal(s, "0xf0000000000: unable to read memory\r\n");
    free(s);
}

static void register_layout(void **state)
{
    struct hmp_cpu_state st = {0};
    for (int i = 0; i < 16; i++)
        st.gpr[i] = 0x1111111111111111ULL * (uint64_t)(i % 15 + 1);
    st.rip = 0x100202;
    st.rflags = 0x46;
    st.cs = (struct hmp_segment){
        .selector = 0x10, .limit = 0xffffffff, .type = 0xb, .present = 1, .s = 1, .l = 1, .g = 1};
    st.gdt_base = 0x500;
    st.gdt_limit = 0x27;
    st.cr0 = 0x80050033;
    st.cr3 = 0x9000;
    st.cr4 = 0x20;
    st.efer = 0x500;
    st.halted = true;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    hmp_print_registers(f, 0, &st);
    fclose(f);
    assert_non_null(strstr(out, "RAX=1111111111111111 RBX=2222222222222222 "
                                "RCX=3333333333333333 RDX=4444444444444444\r\n"));
    assert_non_null(strstr(out, "R8 =9999999999999999"));
    assert_non_null(strstr(out, "RIP=0000000000100202 RFL=00000046 [---Z-P-] CPL=0"));
    assert_non_null(strstr(out, "HLT=1"));
    assert_non_null(strstr(out, "CS =0010 0000000000000000 ffffffff 00a09b00\r\n"));
    assert_non_null(strstr(out, "GDT=     0000000000000500 00000027\r\n"));
    assert_non_null(strstr(out, "CR0=80050033 CR2=0000000000000000 CR3=0000000000009000 "
                                "CR4=00000020\r\n"));
    assert_non_null(strstr(out, "EFER=0000000000000500"));
    free(out);
}

/* ---- commands with a fake machine ---- */

struct fake {
    int stops, conts, quits;
    bool running;
    char committed[64];
    int64_t balloon;
};

static const char *f_status(void *opaque, bool *running)
{
    struct fake *f = opaque;
    *running = f->running;
    return f->running ? "running" : "paused";
}

static int f_stop(void *opaque, struct error *err)
{
    struct fake *f = opaque;
    f->stops++;
    f->running = false;
    return 0;
}

static int f_cont(void *opaque, struct error *err)
{
    struct fake *f = opaque;
    f->conts++;
    f->running = true;
    return 0;
}

static void f_quit(void *opaque)
{
    ((struct fake *)opaque)->quits++;
}

/* One drive, "virtio0", over a backing file; "raw0" has none. */
static int f_commit(void *opaque, const char *device, struct error *err)
{
    struct fake *f = opaque;
    if (!strcmp(device, "raw0")) {
        error_setf(err, "raw0.img: a raw image has no backing file");
        return -ENOTSUP;
    }
    if (!strcmp(device, "locked0")) {
        error_setf(err, "Failed to get \"write\" lock");
        return -EBUSY;
    }
    if (strcmp(device, "virtio0") && strcmp(device, "all"))
        return -ENODEV;
    snprintf(f->committed, sizeof(f->committed), "%s", device);
    return 0;
}

/* A drive whose device keeps no io-status, one that is fine, one that stopped on ENOSPC. */
static size_t f_block(void *opaque, struct qmp_block_info *out, size_t max)
{
    static const char *const status[] = {NULL, "ok", "nospace"};
    static const char *const names[] = {"d0", "d1", "d2"};
    for (size_t i = 0; i < 3 && i < max; i++)
        out[i] = (struct qmp_block_info){.device = names[i],
                                         .inserted = true,
                                         .file = "disk.img",
                                         .format = "raw",
                                         .node_name = "#block1",
                                         .writeback = true,
                                         .io_status = status[i]};
    return 3;
}

/* A 1 GiB guest whose balloon follows the target at once. */
static int f_balloon(void *opaque, int64_t target, struct error *err)
{
    struct fake *f = opaque;
    if (target <= 0) {
        error_setf(err, "Parameter 'target' expects a size");
        return -EINVAL;
    }
    f->balloon = target;
    return 0;
}

static int f_query_balloon(void *opaque, uint64_t *actual, struct error *err)
{
    *actual = (uint64_t)((struct fake *)opaque)->balloon;
    return 0;
}

static struct qmp_vm_ops fake_ops(struct fake *f)
{
    return (struct qmp_vm_ops){.status = f_status,
                               .stop = f_stop,
                               .cont = f_cont,
                               .quit = f_quit,
                               .commit = f_commit,
                               .query_block = f_block,
                               .balloon = f_balloon,
                               .query_balloon = f_query_balloon,
                               .opaque = f};
}

static char *run(const struct qmp_vm_ops *ops, const char *line, bool *quit)
{
    char *out = hmp_run(ops, line, quit);
    assert_non_null(out);
    return out;
}

static void commands(void **state)
{
    struct fake fk = {.running = true};
    struct qmp_vm_ops ops = fake_ops(&fk);
    bool quit;
    char *s = run(&ops, "help", &quit);
    assert_non_null(strstr(s, "x /fmt addr -- virtual memory dump starting at 'addr'\r\n"));
    assert_non_null(strstr(s, "cont|c -- resume emulation\r\n"));
    free(s);
    s = run(&ops, "help xp", &quit);
    assert_string_equal(s, "xp /fmt addr -- physical memory dump starting at 'addr'\r\n");
    free(s);
    s = run(&ops, "help c", &quit);
    assert_string_equal(s, "cont|c -- resume emulation\r\n");
    free(s);
    s = run(&ops, "info", &quit);
    assert_non_null(strstr(s, "info registers  -- show the cpu registers\r\n"));
    assert_non_null(strstr(s, "info mtree"));
    free(s);
    s = run(&ops, "  info   status  ", &quit);
    assert_string_equal(s, "VM status: running\r\n");
    free(s);
    s = run(&ops, "stop", &quit);
    assert_string_equal(s, "");
    assert_int_equal(fk.stops, 1);
    free(s);
    s = run(&ops, "info status", &quit);
    assert_string_equal(s, "VM status: paused\r\n");
    free(s);
    s = run(&ops, "c", &quit);
    assert_int_equal(fk.conts, 1);
    free(s);
    s = run(&ops, "info block", &quit);
    /* QEMU's layout: a blank line between drives, "I/O status" only when not ok */
    assert_string_equal(s, "d0 (#block1): disk.img (raw)\r\n"
                           "    Cache mode:       writeback\r\n"
                           "\r\n"
                           "d1 (#block1): disk.img (raw)\r\n"
                           "    Cache mode:       writeback\r\n"
                           "\r\n"
                           "d2 (#block1): disk.img (raw)\r\n"
                           "    I/O status:       nospace\r\n"
                           "    Cache mode:       writeback\r\n");
    free(s);
    s = run(&ops, "system_reset", &quit);
    assert_string_equal(s, "Error: system_reset is not supported by this machine\r\n");
    free(s);
    /* commit: nothing printed when it works; QEMU's lines when not */
    static const struct {
        const char *line, *out, *committed;
    } commits[] = {
        {"commit virtio0", "", "virtio0"},
        {"commit all", "", "all"},
        {"commit raw0", "'commit' error for 'raw0': Operation not supported\r\n", NULL},
        {"commit locked0",
         "Failed to get \"write\" lock\r\n"
         "'commit' error for 'locked0': Device or resource busy\r\n",
         NULL},
        {"commit no\x1bsuch", "Device 'no?such' not found\r\n", NULL},
        {"commit", "commit: usage: commit device|all\r\n", NULL},
    };
    for (size_t i = 0; i < sizeof(commits) / sizeof(commits[0]); i++) {
        fk.committed[0] = 0;
        s = run(&ops, commits[i].line, &quit);
        assert_string_equal(s, commits[i].out);
        assert_string_equal(fk.committed, commits[i].committed ? commits[i].committed : "");
        free(s);
    }
    /* balloon: QEMU's 'M' argument, a number of MiB (no suffixes), and its messages */
    static const struct {
        const char *line, *out;
        int64_t target;
    } balloons[] = {
        {"balloon 512", "", 512ll << 20},
        {"balloon 0x10", "", 16ll << 20},
        {"balloon 0", "Error: Parameter 'target' expects a size\r\n", -1},
        {"balloon -5", "enter a positive value\r\nTry \"help balloon\" for more information\r\n",
         -1},
        {"balloon 2G",
         "balloon: extraneous characters at the end of line\r\n"
         "Try \"help balloon\" for more information\r\n",
         -1},
        {"balloon 1 2",
         "balloon: extraneous characters at the end of line\r\n"
         "Try \"help balloon\" for more information\r\n",
         -1},
        {"balloon x",
         "invalid char 'x' in expression\r\nTry \"help balloon\" for more information\r\n", -1},
        {"balloon 99999999999999",
         "number too large\r\nTry \"help balloon\" for more information\r\n", -1},
        {"balloon", "unexpected end of expression\r\nTry \"help balloon\" for more information\r\n",
         -1},
    };
    for (size_t i = 0; i < sizeof(balloons) / sizeof(balloons[0]); i++) {
        fk.balloon = -1;
        s = run(&ops, balloons[i].line, &quit);
        assert_string_equal(s, balloons[i].out);
        assert_int_equal(fk.balloon, balloons[i].target);
        free(s);
    }
    fk.balloon = 768ll << 20;
    s = run(&ops, "info balloon", &quit);
    assert_string_equal(s, "balloon: actual=768\r\n");
    free(s);
    s = run(&ops, "frob\x1b[2J", &quit);
    assert_string_equal(s, "unknown command: 'frob?[2J'\r\n");
    free(s);
    s = run(&ops, "info \x01\x02", &quit);
    assert_string_equal(s, "unknown info item: '?"
                           "?'\r\n");
    free(s);
    s = run(&ops, "x/4bx 0x100", &quit);
    assert_string_equal(s, "Error: no machine\r\n");
    free(s);
    /* QEMU's two lines for a format it cannot parse. */
    s = run(&ops, "xp /4z 0x100", &quit);
    assert_string_equal(s,
                        "invalid char in format: 'z'\r\nTry \"help xp\" for more information\r\n");
    free(s);
    s = run(&ops, "x /-2 0x100", &quit);
    assert_string_equal(s,
                        "invalid char in format: '-'\r\nTry \"help x\" for more information\r\n");
    free(s);
    /*
     * As QEMU, x and xp remember the last format and size (not the count). Without a machine
     * that shows in kemu's limit of 64 KiB a dump: 8193 units fit when they are words, not
     * when they are giant words.
     */
    s = run(&ops, "xp /8192g 0", &quit);
    assert_string_equal(s, "Error: no machine\r\n");
    free(s);
    s = run(&ops, "x /8193 0", &quit); /* g remembered, from xp too */
    assert_non_null(strstr(s, "x: count too large"));
    free(s);
    s = run(&ops, "xp /8193w 0", &quit);
    assert_string_equal(s, "Error: no machine\r\n");
    free(s);
    s = run(&ops, "xp /8193gq 0", &quit); /* a format that does not parse changes nothing */
    assert_non_null(strstr(s, "invalid char in format: 'q'"));
    free(s);
    s = run(&ops, "xp /8193 0", &quit);
    assert_string_equal(s, "Error: no machine\r\n");
    free(s);
    s = run(&ops, "xp /16384d 0", &quit); /* the format changes, the size (w) stays */
    assert_string_equal(s, "Error: no machine\r\n");
    free(s);
    s = run(&ops, "xp /16385 0", &quit);
    assert_non_null(strstr(s, "xp: count too large"));
    free(s);
    s = run(&ops, "xp /1b 0", &quit);
    free(s);
    s = run(&ops, "xp /4bx zz", &quit);
    assert_string_equal(s, "xp: invalid address 'zz'\r\n");
    free(s);
    s = run(&ops, "xp /4bx 0x10+", &quit);
    assert_string_equal(s, "xp: invalid address '0x10+'\r\n");
    free(s);
    s = run(&ops, "x /2i $pc", &quit); /* a register needs a CPU */
    if (disas_available())
        assert_string_equal(s, "Error: no machine\r\n");
    else
        assert_non_null(strstr(s, "x: /i needs capstone ("));
    free(s);
    s = run(&ops, "xp", &quit);
    assert_string_equal(s, "xp: usage: xp /fmt addr\r\n");
    free(s);
    s = run(&ops, "info registers", &quit);
    assert_string_equal(s, "Error: no CPU to show\r\n");
    free(s);
    s = run(&ops, "info registers -a", &quit);
    assert_string_equal(s, "Error: no CPU to show\r\n");
    free(s);
    s = run(&ops, "info registers -q", &quit);
    assert_string_equal(s, "info registers: usage: info registers [-a]\r\n");
    free(s);
    s = run(&ops, "cpu 0", &quit);
    assert_string_equal(s, "invalid CPU index\r\n");
    free(s);
    s = run(&ops, "cpu -1", &quit);
    assert_string_equal(s, "cpu: usage: cpu index\r\n");
    free(s);
    s = run(&ops, "cpu", &quit);
    assert_string_equal(s, "cpu: usage: cpu index\r\n");
    free(s);
    s = run(&ops, "a b c d e f g h i j k", &quit);
    assert_string_equal(s, "Error: too many arguments\r\n");
    free(s);
    /* Several '/' in the first word (found by the fuzzer): only the first one splits. */
    s = run(&ops, "xpu/20gxpu/ff", &quit);
    assert_string_equal(s, "unknown command: 'xpu'\r\n");
    free(s);
    s = run(&ops, "", &quit);
    assert_string_equal(s, "");
    assert_false(quit);
    free(s);
    s = run(&ops, "q", &quit);
    assert_true(quit);
    assert_int_equal(fk.quits, 0); /* the caller acts on it */
    free(s);
}

/* ---- the line monitor on a chardev that records output ---- */

struct capture {
    struct chardev base;
    char out[65536];
    size_t len;
};

static ssize_t cap_write(struct chardev *c, const uint8_t *buf, size_t len)
{
    struct capture *cap = (struct capture *)c;
    size_t n = len < sizeof(cap->out) - 1 - cap->len ? len : sizeof(cap->out) - 1 - cap->len;
    memcpy(cap->out + cap->len, buf, n);
    cap->len += n;
    cap->out[cap->len] = '\0';
    return (ssize_t)len;
}

static const struct chardev_ops cap_ops = {.write = cap_write};

static void feed(struct hmp_monitor *m, const char *s)
{
    hmp_monitor_input(m, (const uint8_t *)s, strlen(s));
}

static void line_monitor(void **state)
{
    struct fake fk = {.running = true};
    struct qmp_vm_ops ops = fake_ops(&fk);
    static struct capture cap;
    memset(&cap, 0, sizeof(cap));
    cap.base.ops = &cap_ops;
    struct hmp_monitor *m = hmp_monitor_new(&cap.base, &ops, false);
    assert_non_null(m);
    assert_non_null(strstr(cap.out, "monitor - type 'help' for more information\r\n(qemu) "));
    cap.len = 0;
    feed(m, "info stat");
    feed(m, "us\r\n"); /* CR LF is one end of line */
    assert_string_equal(cap.out, "info status\r\nVM status: running\r\n(qemu) ");
    cap.len = 0;
    feed(m, "stoq\x7fp\n"); /* backspace */
    assert_int_equal(fk.stops, 1);
    cap.len = 0;
    feed(m, "\x1b[A\x1b[Binfo status\n"); /* arrow keys are dropped */
    assert_non_null(strstr(cap.out, "VM status: paused"));
    /* An overlong line is refused whole; the next line works. */
    cap.len = 0;
    for (int i = 0; i < 3000; i++)
        feed(m, "x");
    feed(m, "\n");
    assert_non_null(strstr(cap.out, "command line too long"));
    assert_int_equal(fk.stops, 1);
    cap.len = 0;
    /* Binary garbage, NULs included. */
    static const uint8_t junk[] = {0xff, 0x00, 0xfe, 'z', 0x80, '\n', 0x00, '\r'};
    hmp_monitor_input(m, junk, sizeof(junk));
    assert_non_null(strstr(cap.out, "unknown command: '?"
                                    "?z?'"));
    cap.len = 0;
    feed(m, "cont\nquit\n");
    assert_int_equal(fk.conts, 1);
    assert_int_equal(fk.quits, 1);
    assert_null(strstr(cap.out + cap.len - 8, "(qemu) ")); /* no prompt after quit */
    hmp_monitor_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(xfmt_parsing), cmocka_unit_test(physical_dumps),
        cmocka_unit_test(page_walk),    cmocka_unit_test(register_layout),
        cmocka_unit_test(commands),     cmocka_unit_test(line_monitor),
        cmocka_unit_test(disassembly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
