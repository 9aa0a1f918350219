/*
 * The human monitor (HMP): QEMU's text commands, one table shared by the interactive monitor
 * (-monitor, -mon mode=readline, Ctrl-A c on a mux console) and QMP's human-monitor-command.
 * Everything runs on the main thread.
 */
#ifndef KEMU_MONITOR_HMP_H
#define KEMU_MONITOR_HMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "chardev/chardev.h"
#include "core/memory.h"
#include "monitor/qmp.h"

/* Longest command line the interactive monitor accepts; the rest of a longer one is dropped. */
#define HMP_MAX_LINE 1024
/* Most bytes one x/xp dumps, so a typo cannot make the monitor print gigabytes. */
#define HMP_MAX_DUMP (64u << 10)
/* Most instructions one x /i disassembles. */
#define HMP_MAX_INSNS 16384u

/* Run one command line; returns malloc'd output (lines end in "\r\n"), NULL only when out of
 * memory. *quit is set when the command asked to end the emulator (the caller acts on it once
 * the output is out). */
char *hmp_run(const struct qmp_vm_ops *ops, const char *line, bool *quit);
/* The same with the monitor's current CPU (`cpu N` sets *cpu; it starts at 0). */
char *hmp_run_cpu(const struct qmp_vm_ops *ops, unsigned *cpu, const char *line, bool *quit);

/* x/xp's "/fmt": [count][format][size] with format one of x d u o t c i and size b h w g
 * (i: disassembly, size ignored). */
struct hmp_xfmt {
    uint64_t count;
    char format;
    unsigned size; /* 1, 2, 4 or 8 */
};
/* Parse "/fmt" (the leading '/' included, or "" for the defaults: 1 x w). Returns 0, or -1 with
 * a one-line reason in msg. */
int hmp_parse_xfmt(const char *s, struct hmp_xfmt *f, char *msg, size_t msg_size);

/* Guest memory as x/xp see it: read len bytes at a guest physical address; 0 or -1. */
typedef int (*hmp_read_phys_fn)(void *opaque, uint64_t gpa, void *buf, size_t len);

/* Print a dump in QEMU's layout ("%016x:" then values); read failures print an error line. */
void hmp_dump(FILE *f, const struct hmp_xfmt *fmt, uint64_t addr, bool virt, uint64_t cr3,
              hmp_read_phys_fn read, void *opaque);

/* x86-64 4-level page walk from cr3 (4 KiB, 2 MiB and 1 GiB pages). Returns 0 with *gpa set,
 * -1 when an entry is not present (*level gets the table: 4 PML4 ... 1 PT), -2 when a table
 * lies outside guest memory. */
int hmp_translate(hmp_read_phys_fn read, void *opaque, uint64_t cr3, uint64_t va, uint64_t *gpa,
                  int *level);

/* The registers of one vCPU, as `info registers` prints them (independent of KVM's structs). */
struct hmp_segment {
    uint16_t selector;
    uint64_t base;
    uint32_t limit;
    uint8_t type, present, dpl, db, s, l, g, avl;
};

struct hmp_cpu_state {
    uint64_t gpr[16]; /* RAX RBX RCX RDX RSI RDI RBP RSP R8..R15 */
    uint64_t rip, rflags;
    struct hmp_segment es, cs, ss, ds, fs, gs, ldt, tr;
    uint64_t gdt_base, idt_base;
    uint16_t gdt_limit, idt_limit;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    bool halted;
};

void hmp_print_registers(FILE *f, unsigned cpu, const struct hmp_cpu_state *st);

/* ---- the interactive monitor on a chardev ---- */

struct hmp_monitor;

/*
 * Serve HMP on chr: banner and "(qemu) " prompt, echo, backspace, lines up to HMP_MAX_LINE.
 * mux: chr is a multiplexed console shared with a serial port; the banner waits for the first
 * Ctrl-A c. ops and chr must outlive the monitor. ops->quit is called after the quit command's
 * output is written.
 */
struct hmp_monitor *hmp_monitor_new(struct chardev *chr, const struct qmp_vm_ops *ops, bool mux);
/* Feed input bytes as the chardev would (tests, fuzzing). */
void hmp_monitor_input(struct hmp_monitor *m, const uint8_t *buf, size_t len);
void hmp_monitor_free(struct hmp_monitor *m);

#endif
