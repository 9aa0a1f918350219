/*
 * Clocks, and the hooks of a timed device: one whose interrupts fall due at times it computes
 * from a clock (the RTC, the PIT). The board gives it a clock and a way to say that its next
 * deadline moved; unit tests give it fake time.
 */
#ifndef KEMU_CORE_CLOCK_H
#define KEMU_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timed_hooks {
    /* The clock every call of the device reads, in ns; NULL means CLOCK_MONOTONIC. */
    int64_t (*clock)(void *opaque);
    void *clock_opaque;
    /*
     * Optional. Called (on a vCPU thread, without the device's lock) after a register access
     * that may have moved the device's next deadline, so the event loop can re-arm its timer.
     */
    void (*deadline_changed)(void *opaque);
    void *deadline_opaque;
};

static inline int64_t timed_now(const struct timed_hooks *h)
{
    return h->clock ? h->clock(h->clock_opaque) : clock_ns(CLOCK_MONOTONIC);
}

static inline void timed_deadline_changed(const struct timed_hooks *h)
{
    if (h->deadline_changed)
        h->deadline_changed(h->deadline_opaque);
}

#endif
