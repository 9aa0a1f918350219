/*
 * Intel 8254 programmable interval timer, as on every PC: three channels clocked at
 * 1.193182 MHz, ports 0x40-0x42 (counters) and 0x43 (control), channel 0 on IRQ 0, channel 2
 * gated and read back through port 0x61 (the "speaker" port, which also has the refresh bit).
 *
 * It lives in kemu rather than in KVM: KVM's in-kernel PIT costs a worker thread and two SRCU
 * grace periods when the VM is destroyed (15-20 ms on nested hosts), and a Linux guest under
 * KVM only uses it for a few milliseconds at boot (timer check, sometimes calibration). QEMU's
 * microvm makes the same choice (kernel-irqchip=split puts its PIT in userspace).
 */
#ifndef KEMU_HW_PIT_H
#define KEMU_HW_PIT_H

#include <stdint.h>

#include "core/bus.h"
#include "core/clock.h"
#include "core/irq.h"

#define PIT_IO_BASE    0x40
#define PIT_IO_LEN     4 /* 0x40-0x42 counters 0-2, 0x43 control word */
#define PIT_SPEAKER_IO 0x61
#define PIT_FREQ_HZ    1193182

struct pit;

/* Returns NULL when out of memory. irq is channel 0's output (IRQ 0); hooks: its clock and
 * who re-arms the timer behind pit_next_deadline_ns(). */
struct pit *pit_create(const struct timed_hooks *hooks, struct irq_line irq);
/* System reset: every channel unprogrammed (no interrupts), channel 2's gate low. */
void pit_reset(struct pit *pit);
void pit_destroy(struct pit *pit);

/*
 * Timer interface, clock ns. pit_next_deadline_ns: when the next rising edge of channel 0's
 * output is due (the PIC and IOAPIC see IRQ 0 as edge-triggered), INT64_MAX when none.
 * pit_tick: deliver the edge due by now_ns as one pulse on IRQ 0; edges the loop was too late
 * for are merged into it (a guest counting ticks would see time stand still, not race).
 */
int64_t pit_next_deadline_ns(struct pit *pit);
void pit_tick(struct pit *pit, int64_t now_ns);

extern const struct bus_ops pit_bus_ops;     /* at PIT_IO_BASE, PIT_IO_LEN */
extern const struct bus_ops pit_speaker_ops; /* at PIT_SPEAKER_IO, 1 byte */

#endif
