/*
 * MC146818 real-time clock and CMOS RAM, as on every PC: index port 0x70, data port 0x71,
 * IRQ 8. Besides the clock it carries the CMOS bytes a PC BIOS fills in (memory sizes,
 * equipment byte, CPU count) that some guests and firmware read.
 */
#ifndef KEMU_HW_RTC_H
#define KEMU_HW_RTC_H

#include <stdint.h>

#include "core/bus.h"
#include "core/clock.h"
#include "core/irq.h"

#define RTC_IO_BASE 0x70
#define RTC_IO_LEN  2 /* 0x70 index (bit 7 = NMI disable, ignored), 0x71 data */

enum {
    RTC_BASE_UTC,       /* the RTC shows UTC (QEMU -rtc base=utc, the default) */
    RTC_BASE_LOCALTIME, /* the RTC shows the host's local time (base=localtime) */
    RTC_BASE_FIXED,     /* the RTC starts at fixed_epoch and runs from there (base=<date>) */
};

struct rtc_config {
    int base;            /* RTC_BASE_* */
    int64_t fixed_epoch; /* RTC_BASE_FIXED: seconds since 1970-01-01 00:00:00, shown as UTC */
    uint64_t ram_below_4g, ram_above_4g; /* bytes, for the CMOS memory-size fields */
    unsigned nr_cpus;                    /* CMOS 0x5f = nr_cpus - 1 (as QEMU sets for SeaBIOS) */

    /* The clock every rtc_* function uses and who re-arms the timer behind
     * rtc_next_deadline_ns(). wall_clock() gives the host's wall time in ns since 1970 for
     * base=utc/localtime, read once at creation (with hooks.clock_opaque); NULL means
     * CLOCK_REALTIME. Tests inject fakes. */
    struct timed_hooks hooks;
    int64_t (*wall_clock)(void *opaque);

    /*
     * QEMU's -rtc driftfix=slew: periodic interrupts the guest missed because it had not yet
     * acknowledged the previous one (read register C) are counted and delivered later, at
     * twice the programmed rate, so a guest that keeps time by counting them (Windows) does
     * not fall behind. Off: they are merged, as on real hardware.
     */
    bool driftfix_slew;
};

struct rtc;

/* Returns NULL when out of memory. */
struct rtc *rtc_create(const struct rtc_config *cfg, struct irq_line irq);
/*
 * System reset, as the chip's RESET pin: clears PIE/AIE/UIE/SQWE and the interrupt flags and
 * lowers the IRQ. The time and the CMOS RAM (battery-backed) are kept.
 */
void rtc_reset(struct rtc *rtc);
void rtc_destroy(struct rtc *rtc);

/*
 * Timer interface. All times are on the configured clock (CLOCK_MONOTONIC by default): the
 * guest's time of day is that clock plus an offset fixed at creation (from the wall clock or
 * the fixed date) and moved by guest writes to the time registers, and one clock serves both.
 * The board picks the clock as QEMU's -rtc clock= says: host (CLOCK_REALTIME: host time steps
 * move the guest RTC), rt (CLOCK_MONOTONIC: they do not), vm (stops with the VM).
 *
 * rtc_next_deadline_ns: when rtc_tick must next run for an enabled interrupt (periodic,
 * alarm, update-ended) to be raised on time; INT64_MAX when none is needed (no interrupt
 * enabled, or IRQF is already set and nothing can change until the guest reads register C).
 * rtc_tick: bring flags up to now_ns and raise IRQ 8 as due. Calling it early or late is
 * harmless; flags that need no interrupt are also computed lazily when the guest reads C.
 */
int64_t rtc_next_deadline_ns(struct rtc *rtc);
void rtc_tick(struct rtc *rtc, int64_t now_ns);

extern const struct bus_ops rtc_bus_ops;

#endif
