/*
 * x86 disassembly for the monitor's x /i and xp /i, in QEMU's layout, through capstone when
 * kemu is built with it (-Dcapstone=).
 */
#ifndef KEMU_MONITOR_DISAS_H
#define KEMU_MONITOR_DISAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Guest memory as the disassembler sees it: read up to len bytes (at most 32) at addr and
 * return how many, or -1 when none can be read. Guest memory is all or nothing, as in QEMU (a
 * window reaching past the end of RAM fails whole); fewer is for a buffer of given bytes. A
 * read never crosses a 1 KiB boundary, so one page translation covers it. */
typedef int (*disas_read_fn)(void *opaque, uint64_t addr, void *buf, size_t len);

/* Can x /i disassemble? capstone is opened (dlopen) on the first call. Without it disas_x86()
 * prints nothing and returns -1. */
bool disas_available(void);
/* Why not, in words (NULL when it can). */
const char *disas_missing(void);

/* The decoding mode QEMU picks for a vCPU (16, 32 or 64): from CS.D, CS.L and EFER.LMA. */
int disas_x86_mode(bool cs_db, bool cs_l, uint64_t efer);

/*
 * Print count instructions at addr, mode 16, 32 or 64, one "\r\n"-ended line each as QEMU's
 * monitor does ("0x%08x: " bytes, AT&T mnemonic and operands). A read that fails prints
 * "0x...: unable to read memory" and ends the listing. Returns 0, or -1 without capstone.
 */
int disas_x86(FILE *f, uint64_t addr, uint64_t count, int mode, disas_read_fn read, void *opaque);

/* The same over the len bytes given, standing at addr: the listing ends where they do. */
int disas_x86_buf(FILE *f, const uint8_t *bytes, size_t len, uint64_t addr, uint64_t count,
                  int mode);

#endif
