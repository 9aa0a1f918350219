/*
 * QEMU's isa-debug-exit: a test guest writes a value to an I/O port to end the VM with a status
 * derived from it, so test suites can report pass/fail through the VMM's exit code.
 */
#ifndef KEMU_HW_DEBUGEXIT_H
#define KEMU_HW_DEBUGEXIT_H

#include "core/bus.h"

/* QEMU's defaults: -device isa-debug-exit[,iobase=0x501,iosize=0x02] */
#define DEBUGEXIT_DEFAULT_BASE 0x501
#define DEBUGEXIT_DEFAULT_LEN  0x02

struct debugexit;

/*
 * A write of value V (any width, any offset in the range) calls exit_cb(opaque, (V << 1) | 1)
 * on the vCPU thread, as QEMU calls exit((V << 1) | 1). The status is always odd, so a guest can
 * never make it look like a clean 0 exit; the process exit code is status & 0xff, as with exit().
 * Reads return all ones. Returns NULL when out of memory.
 */
struct debugexit *debugexit_create(void (*exit_cb)(void *opaque, int status), void *opaque);
void debugexit_destroy(struct debugexit *d);

extern const struct bus_ops debugexit_bus_ops;

#endif
