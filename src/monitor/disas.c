/*
 * x /i through capstone, following QEMU 7.2's disas/capstone.c (cap_disas_monitor and
 * cap_dump_insn) so the text is the same byte for byte: AT&T syntax, unknown bytes as ".byte",
 * eight instruction bytes on the first line and the rest on continuation lines.
 */
#include "monitor/disas.h"

#include <inttypes.h>
#include <string.h>

#include "kemu-config.h"

#ifdef CONFIG_CAPSTONE
#include <capstone.h>
#include <dlfcn.h>
#include <pthread.h>
#endif

#define EFER_LMA (1ULL << 10)

int disas_x86_mode(bool cs_db, bool cs_l, uint64_t efer)
{
    /* QEMU's hflags: CS32 is CS.D, or CS.L in long mode; LMA then means 64-bit, even for a
     * compatibility-mode segment (QEMU's choice, kept so both print the same). Real mode has
     * CS.D clear in the segment cache, hence 16-bit. */
    bool lma = efer & EFER_LMA;
    if (!cs_db && !(lma && cs_l))
        return 16;
    return lma ? 64 : 32;
}

#ifdef CONFIG_CAPSTONE

/* capstone, opened on first use (see meson.build: linking it costs every start 3 MiB). */
static struct {
    cs_err (*open)(cs_arch arch, cs_mode mode, csh *handle);
    cs_err (*option)(csh handle, cs_opt_type type, size_t value);
    cs_insn *(*malloc)(csh handle);
    bool (*disasm_iter)(csh handle, const uint8_t **code, size_t *size, uint64_t *address,
                        cs_insn *insn);
    void (*free)(cs_insn *insn, size_t count);
    cs_err (*close)(csh *handle);
} cs;
static bool cs_loaded;
static char cs_error[256];
static pthread_once_t cs_once = PTHREAD_ONCE_INIT;

static void cs_load(void)
{
    void *h = dlopen(CAPSTONE_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(cs_error, sizeof(cs_error), "%s", dlerror());
        return;
    }
    cs.open = (cs_err(*)(cs_arch, cs_mode, csh *))dlsym(h, "cs_open");
    cs.option = (cs_err(*)(csh, cs_opt_type, size_t))dlsym(h, "cs_option");
    cs.malloc = (cs_insn * (*)(csh)) dlsym(h, "cs_malloc");
    cs.disasm_iter = (bool (*)(csh, const uint8_t **, size_t *, uint64_t *, cs_insn *))dlsym(
        h, "cs_disasm_iter");
    cs.free = (void (*)(cs_insn *, size_t))dlsym(h, "cs_free");
    cs.close = (cs_err(*)(csh *))dlsym(h, "cs_close");
    if (!cs.open || !cs.option || !cs.malloc || !cs.disasm_iter || !cs.free || !cs.close) {
        snprintf(cs_error, sizeof(cs_error), "%s: a function is missing", CAPSTONE_SONAME);
        dlclose(h);
        return;
    }
    cs_loaded = true; /* kept open for the rest of the run */
}

bool disas_available(void)
{
    pthread_once(&cs_once, cs_load);
    return cs_loaded;
}

const char *disas_missing(void)
{
    return disas_available() ? NULL : cs_error;
}

enum { INSN_SPLIT = 8 }; /* bytes shown on an instruction's first line, as QEMU for x86 */

static void dump_insn(FILE *f, const cs_insn *insn)
{
    unsigned n = insn->size, first = n < INSN_SPLIT ? n : INSN_SPLIT;
    fprintf(f, "0x%08" PRIx64 ": ", insn->address);
    for (unsigned i = 0; i < first; i++)
        fprintf(f, " %02x", insn->bytes[i]);
    if (n < INSN_SPLIT)
        fprintf(f, "%*s", (int)(INSN_SPLIT - n) * 3, "");
    fprintf(f, "  %-8s %s\r\n", insn->mnemonic, insn->op_str);
    for (unsigned i = INSN_SPLIT; i < n; i += INSN_SPLIT) {
        fprintf(f, "0x%08" PRIx64 ": ", insn->address + i);
        for (unsigned j = i; j < n && j < i + INSN_SPLIT; j++)
            fprintf(f, " %02x", insn->bytes[j]);
        fprintf(f, "\r\n");
    }
}

int disas_x86(FILE *f, uint64_t addr, uint64_t count, int mode, disas_read_fn read, void *opaque)
{
    if (!disas_available())
        return -1;
    csh h;
    cs_mode m = mode == 64 ? CS_MODE_64 : mode == 32 ? CS_MODE_32 : CS_MODE_16;
    if (cs.open(CS_ARCH_X86, m, &h) != CS_ERR_OK) {
        fprintf(f, "0x%08" PRIx64 ": Asm output not supported on this arch\r\n", addr);
        return 0;
    }
    cs.option(h, CS_OPT_SKIPDATA, CS_OPT_ON);
    cs.option(h, CS_OPT_SYNTAX, CS_OPT_SYNTAX_ATT);
    cs_insn *insn = cs.malloc(h);
    if (!insn) {
        cs.close(&h);
        fprintf(f, "Error: out of memory\r\n");
        return 0;
    }
    /* QEMU's loop: top up a 32-byte window, never reading across a 1 KiB boundary in one go,
     * and decode one instruction from it. Near such a boundary the window can hold part of an
     * instruction only; capstone then prints ".byte", as it does in QEMU. */
    uint8_t buf[32];
    size_t have = 0;
    uint64_t pc = addr;
    if (!count)
        count = 1; /* QEMU decodes one instruction before it looks at the count */
    while (count > 0) {
        uint64_t end = (pc + have + 1 + 1023) & ~(uint64_t)1023;
        size_t want = sizeof(buf) - have;
        if (end && end - pc < want) /* end 0: the window wraps past 2^64 */
            want = (size_t)(end - pc);
        if (!want)
            break; /* cannot happen with SKIPDATA on; no endless loop if it ever does */
        int got = read(opaque, pc + have, buf + have, want);
        if (got < 0 || (size_t)got > want || (!got && !have)) {
            fprintf(f, "0x%08" PRIx64 ": unable to read memory\r\n", pc);
            break;
        }
        have += (size_t)got;
        const uint8_t *p = buf;
        if (cs.disasm_iter(h, &p, &have, &pc, insn)) {
            dump_insn(f, insn);
            count--;
        }
        memmove(buf, p, have);
    }
    cs.free(insn, 1);
    cs.close(&h);
    return 0;
}

#else

bool disas_available(void)
{
    return false;
}

const char *disas_missing(void)
{
    return "kemu was built without capstone";
}

int disas_x86(FILE *f, uint64_t addr, uint64_t count, int mode, disas_read_fn read, void *opaque)
{
    return -1;
}

#endif

struct membuf {
    const uint8_t *b;
    size_t len;
    uint64_t base;
};

static int membuf_read(void *opaque, uint64_t addr, void *buf, size_t len)
{
    const struct membuf *m = opaque;
    uint64_t off = addr - m->base;
    if (addr < m->base || off > m->len)
        return -1;
    if (len > m->len - off)
        len = m->len - off;
    memcpy(buf, m->b + off, len);
    return (int)len;
}

int disas_x86_buf(FILE *f, const uint8_t *bytes, size_t len, uint64_t addr, uint64_t count,
                  int mode)
{
    struct membuf m = {bytes, len, addr};
    return disas_x86(f, addr, count, mode, membuf_read, &m);
}
