/* Unit tests for the MC146818 RTC/CMOS with an injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "hw/rtc.h"

#define SEC  1000000000LL
#define MSEC 1000000LL
#define USEC 1000LL

/* 2006-06-17 16:01:21 UTC, a Saturday (QEMU's documentation example for -rtc base=) */
#define EPOCH_2006 1150560081LL

struct fake_irq {
    int level;
    unsigned raises;
};

static void fake_irq_set(void *opaque, unsigned gsi, int level)
{
    struct fake_irq *i = opaque;
    assert_int_equal(gsi, 8);
    if (level && !i->level)
        i->raises++;
    i->level = level;
}

struct fixture {
    int64_t now;  /* the injected monotonic clock */
    int64_t wall; /* the injected wall clock */
    unsigned deadline_notes;
    struct fake_irq irq;
    struct rtc *rtc;
};

static int64_t fake_clock(void *opaque)
{
    return ((struct fixture *)opaque)->now;
}

static int64_t fake_wall(void *opaque)
{
    return ((struct fixture *)opaque)->wall;
}

static void note_deadline(void *opaque)
{
    ((struct fixture *)opaque)->deadline_notes++;
}

static struct rtc *make(struct fixture *f, int base, int64_t fixed_epoch)
{
    struct rtc_config cfg = {
        .base = base,
        .fixed_epoch = fixed_epoch,
        .ram_below_4g = 128ULL << 20,
        .nr_cpus = 2,
        .hooks = {.clock = fake_clock,
                  .clock_opaque = f,
                  .deadline_changed = note_deadline,
                  .deadline_opaque = f},
        .wall_clock = fake_wall,
    };
    return rtc_create(&cfg, (struct irq_line){fake_irq_set, &f->irq, 8});
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->now = 1000 * SEC; /* arbitrary monotonic origin */
    f->rtc = make(f, RTC_BASE_FIXED, EPOCH_2006);
    assert_non_null(f->rtc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    rtc_destroy(f->rtc);
    free(f);
    return 0;
}

static uint8_t cmos_read_rtc(struct rtc *rtc, uint8_t index)
{
    rtc_bus_ops.write(rtc, 0, 1, index);
    return (uint8_t)rtc_bus_ops.read(rtc, 1, 1);
}

static void cmos_write_rtc(struct rtc *rtc, uint8_t index, uint8_t v)
{
    rtc_bus_ops.write(rtc, 0, 1, index);
    rtc_bus_ops.write(rtc, 1, 1, v);
}

static uint8_t rd(struct fixture *f, uint8_t index)
{
    return cmos_read_rtc(f->rtc, index);
}

static void wr(struct fixture *f, uint8_t index, uint8_t v)
{
    cmos_write_rtc(f->rtc, index, v);
}

static void test_fixed_base_bcd_24h(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd(f, 0x0a), 0x26);
    assert_int_equal(rd(f, 0x0b), 0x02);
    assert_int_equal(rd(f, 0x0d), 0x80);
    assert_int_equal(rd(f, 0x00), 0x21);
    assert_int_equal(rd(f, 0x02), 0x01);
    assert_int_equal(rd(f, 0x04), 0x16);
    assert_int_equal(rd(f, 0x06), 7); /* Saturday */
    assert_int_equal(rd(f, 0x07), 0x17);
    assert_int_equal(rd(f, 0x08), 0x06);
    assert_int_equal(rd(f, 0x09), 0x06);
    assert_int_equal(rd(f, 0x32), 0x20);
    /* NMI-disable bit in the index is not part of it */
    assert_int_equal(rd(f, 0x80 | 0x04), 0x16);
    /* The clock runs. */
    f->now += 5 * SEC;
    assert_int_equal(rd(f, 0x00), 0x26);
    f->now += 39 * SEC;
    assert_int_equal(rd(f, 0x00), 0x05);
    assert_int_equal(rd(f, 0x02), 0x02);
}

static void test_binary_and_12h(void **state)
{
    struct fixture *f = *state;
    wr(f, 0x0b, 0x06); /* binary, 24h */
    assert_int_equal(rd(f, 0x00), 21);
    assert_int_equal(rd(f, 0x04), 16);
    assert_int_equal(rd(f, 0x09), 6);
    assert_int_equal(rd(f, 0x32), 20);
    wr(f, 0x0b, 0x04); /* binary, 12h */
    assert_int_equal(rd(f, 0x04), 0x80 | 4);
    wr(f, 0x0b, 0x00); /* BCD, 12h */
    assert_int_equal(rd(f, 0x04), 0x84);

    /* Midnight and noon in 12-hour mode. */
    struct fixture g = {.now = 0};
    struct rtc *r = make(&g, RTC_BASE_FIXED, EPOCH_2006 - 16 * 3600 - 61 + 1800); /* 00:30 */
    cmos_write_rtc(r, 0x0b, 0x00);
    assert_int_equal(cmos_read_rtc(r, 0x04), 0x12);
    assert_int_equal(cmos_read_rtc(r, 0x02), 0x30);
    g.now += 12 * 3600 * SEC;
    assert_int_equal(cmos_read_rtc(r, 0x04), 0x92);
    g.now += 3600 * SEC;
    assert_int_equal(cmos_read_rtc(r, 0x04), 0x81);
    rtc_destroy(r);
}

static void test_uip_window(void **state)
{
    struct fixture *f = *state;
    /* The fixed base starts exactly on a second boundary. */
    assert_int_equal(rd(f, 0x0a) & 0x80, 0);
    f->now += SEC - 300 * USEC;
    assert_int_equal(rd(f, 0x0a) & 0x80, 0);
    f->now += 100 * USEC; /* 200 us before the update */
    assert_int_equal(rd(f, 0x0a), 0x80 | 0x26);
    assert_int_equal(rd(f, 0x00), 0x21);
    f->now += 200 * USEC; /* the update happened */
    assert_int_equal(rd(f, 0x0a) & 0x80, 0);
    assert_int_equal(rd(f, 0x00), 0x22);
    /* Stopped clock: no update in progress. */
    f->now += SEC - 100 * USEC;
    wr(f, 0x0b, 0x82);
    assert_int_equal(rd(f, 0x0a) & 0x80, 0);
}

static void test_set_time(void **state)
{
    struct fixture *f = *state;
    f->now += 300 * MSEC;
    /* As Linux's mc146818_set_time: SET, divider reset, write, release. */
    wr(f, 0x0b, 0x02 | 0x80);
    wr(f, 0x0a, 0x70);
    wr(f, 0x09, 0x24);
    wr(f, 0x08, 0x02);
    wr(f, 0x07, 0x29);
    wr(f, 0x04, 0x13);
    wr(f, 0x02, 0x45);
    wr(f, 0x00, 0x00);
    wr(f, 0x32, 0x20);
    f->now += 10 * SEC; /* frozen meanwhile */
    assert_int_equal(rd(f, 0x00), 0x00);
    assert_int_equal(rd(f, 0x02), 0x45);
    wr(f, 0x0b, 0x02);
    wr(f, 0x0a, 0x26); /* first update 500 ms after the divider is released */
    f->now += 499 * MSEC;
    assert_int_equal(rd(f, 0x00), 0x00);
    f->now += 1 * MSEC;
    assert_int_equal(rd(f, 0x00), 0x01);
    f->now += 3600 * SEC;
    assert_int_equal(rd(f, 0x04), 0x14);
    assert_int_equal(rd(f, 0x07), 0x29);
    assert_int_equal(rd(f, 0x08), 0x02);
    assert_int_equal(rd(f, 0x09), 0x24);
    assert_int_equal(rd(f, 0x06), 5); /* 2024-02-29 is a Thursday */

    /* SET alone keeps the phase of the second (the divider keeps running). */
    f->now += 300 * MSEC;
    wr(f, 0x0b, 0x82);
    wr(f, 0x00, 0x30);
    f->now += 2 * SEC;
    wr(f, 0x0b, 0x02);
    assert_int_equal(rd(f, 0x00), 0x30);
    f->now += 699 * MSEC;
    assert_int_equal(rd(f, 0x00), 0x30);
    f->now += 1 * MSEC;
    assert_int_equal(rd(f, 0x00), 0x31);

    /* A write while running moves the time at once. */
    wr(f, 0x02, 0x10);
    assert_int_equal(rd(f, 0x02), 0x10);
    assert_int_equal(rd(f, 0x00), 0x31);
    assert_int_equal(rd(f, 0x04), 0x14);
}

static void test_century(void **state)
{
    struct fixture g = {.now = 0};
    struct rtc *r = make(&g, RTC_BASE_FIXED, 946684798); /* 1999-12-31 23:59:58 */
    assert_int_equal(cmos_read_rtc(r, 0x09), 0x99);
    assert_int_equal(cmos_read_rtc(r, 0x32), 0x19);
    cmos_write_rtc(r, 0x0b, 0x06);
    assert_int_equal(cmos_read_rtc(r, 0x32), 19);
    g.now += 2 * SEC;
    assert_int_equal(cmos_read_rtc(r, 0x32), 20);
    assert_int_equal(cmos_read_rtc(r, 0x09), 0);
    assert_int_equal(cmos_read_rtc(r, 0x08), 1);
    cmos_write_rtc(r, 0x0b, 0x02);
    /* Writing the century moves the date a hundred years. */
    cmos_write_rtc(r, 0x32, 0x21);
    assert_int_equal(cmos_read_rtc(r, 0x32), 0x21);
    assert_int_equal(cmos_read_rtc(r, 0x09), 0x00);
    rtc_destroy(r);
}

static void test_utc_and_localtime_base(void **state)
{
    struct fixture g = {.now = 5 * SEC, .wall = 0}; /* host wall clock at the epoch */
    struct rtc *r = make(&g, RTC_BASE_UTC, 0);
    assert_int_equal(cmos_read_rtc(r, 0x09), 0x70);
    assert_int_equal(cmos_read_rtc(r, 0x32), 0x19);
    assert_int_equal(cmos_read_rtc(r, 0x04), 0x00);
    rtc_destroy(r);

    setenv("TZ", "EST5", 1);
    tzset();
    r = make(&g, RTC_BASE_LOCALTIME, 0);
    assert_int_equal(cmos_read_rtc(r, 0x09), 0x69);
    assert_int_equal(cmos_read_rtc(r, 0x04), 0x19);
    rtc_destroy(r);
}

static void test_memory_bytes(void **state)
{
    struct fixture g = {0};
    struct rtc_config cfg = {
        .base = RTC_BASE_FIXED,
        .ram_below_4g = 3ULL << 30,
        .ram_above_4g = 2ULL << 30,
        .nr_cpus = 4,
        .hooks = {.clock = fake_clock, .clock_opaque = &g},
    };
    struct rtc *r = rtc_create(&cfg, (struct irq_line){0});
    assert_int_equal(cmos_read_rtc(r, 0x15), 0x80); /* 640 KiB */
    assert_int_equal(cmos_read_rtc(r, 0x16), 0x02);
    assert_int_equal(cmos_read_rtc(r, 0x17), 0xff); /* capped */
    assert_int_equal(cmos_read_rtc(r, 0x18), 0xff);
    assert_int_equal(cmos_read_rtc(r, 0x30), 0xff);
    assert_int_equal(cmos_read_rtc(r, 0x31), 0xff);
    assert_int_equal(cmos_read_rtc(r, 0x34), 0x00); /* (3 GiB - 16 MiB) / 64 KiB = 0xbf00 */
    assert_int_equal(cmos_read_rtc(r, 0x35), 0xbf);
    assert_int_equal(cmos_read_rtc(r, 0x5b), 0x00); /* 2 GiB / 64 KiB = 0x8000 */
    assert_int_equal(cmos_read_rtc(r, 0x5c), 0x80);
    assert_int_equal(cmos_read_rtc(r, 0x5d), 0x00);
    assert_int_equal(cmos_read_rtc(r, 0x5f), 3);
    assert_int_equal(cmos_read_rtc(r, 0x14), 0x02);
    unsigned sum = 0;
    for (uint8_t i = 0x10; i <= 0x2d; i++)
        sum += cmos_read_rtc(r, i);
    assert_int_equal(cmos_read_rtc(r, 0x2e), sum >> 8);
    assert_int_equal(cmos_read_rtc(r, 0x2f), sum & 0xff);
    rtc_destroy(r);

    cfg.ram_below_4g = 8ULL << 20;
    cfg.ram_above_4g = 0;
    r = rtc_create(&cfg, (struct irq_line){0});
    assert_int_equal(cmos_read_rtc(r, 0x17), 0x00); /* 7168 KiB = 0x1c00 */
    assert_int_equal(cmos_read_rtc(r, 0x18), 0x1c);
    assert_int_equal(cmos_read_rtc(r, 0x34), 0);
    assert_int_equal(cmos_read_rtc(r, 0x35), 0);
    assert_int_equal(cmos_read_rtc(r, 0x5b), 0);
    /* Plain CMOS RAM. */
    cmos_write_rtc(r, 0x40, 0x5a);
    assert_int_equal(cmos_read_rtc(r, 0x40), 0x5a);
    cmos_write_rtc(r, 0x7f, 0xa5);
    assert_int_equal(cmos_read_rtc(r, 0x7f), 0xa5);
    rtc_destroy(r);
}

static void test_update_flag_and_register_c(void **state)
{
    struct fixture *f = *state;
    wr(f, 0x0a, 0x20); /* no periodic flag in the way */
    /* Flags are set even with their interrupts disabled; no IRQ then. */
    f->now += SEC;
    assert_int_equal(rtc_next_deadline_ns(f->rtc), INT64_MAX);
    assert_int_equal(rd(f, 0x0c), 0x10);
    assert_int_equal(rd(f, 0x0c), 0x00);
    assert_int_equal(f->irq.level, 0);

    f->now += 250 * MSEC;
    unsigned notes = f->deadline_notes;
    wr(f, 0x0b, 0x12); /* UIE */
    assert_true(f->deadline_notes > notes);
    int64_t d = rtc_next_deadline_ns(f->rtc);
    assert_int_equal(d, f->now + 750 * MSEC);
    rtc_tick(f->rtc, d - 1);
    assert_int_equal(f->irq.level, 0);
    rtc_tick(f->rtc, d);
    assert_int_equal(f->irq.level, 1);
    /* IRQF is latched: no timer needed until C is read. */
    assert_int_equal(rtc_next_deadline_ns(f->rtc), INT64_MAX);
    f->now = d;
    assert_int_equal(rd(f, 0x0c), 0x90);
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(rd(f, 0x0c), 0x00);
    assert_int_equal(rtc_next_deadline_ns(f->rtc), d + SEC);

    /* Enabling an interrupt whose flag is already set raises IRQF at once. */
    wr(f, 0x0b, 0x02);
    f->now += SEC;
    rtc_tick(f->rtc, f->now);
    assert_int_equal(f->irq.level, 0);
    wr(f, 0x0b, 0x12);
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(rd(f, 0x0c), 0x90);

    /* Setting SET clears UIE and stops updates. */
    wr(f, 0x0b, 0x92);
    assert_int_equal(rd(f, 0x0b), 0x82);
    f->now += 3 * SEC;
    assert_int_equal(rd(f, 0x0c), 0x00);
    /* Register D is read-only. */
    wr(f, 0x0d, 0x00);
    assert_int_equal(rd(f, 0x0d), 0x80);
}

/*
 * A guest that counts 64 Hz periodic interrupts, acknowledging each at once, except that it
 * stalls for `stall` periods once: with driftfix=slew the interrupts merged meanwhile are
 * delivered afterwards (twice the rate), so over 2 s it counts every period.
 */
static unsigned count_with_stall(bool slew, unsigned stall)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->now = 1000 * SEC;
    struct rtc_config cfg = {.base = RTC_BASE_FIXED,
                             .fixed_epoch = EPOCH_2006,
                             .hooks = {.clock = fake_clock, .clock_opaque = f},
                             .wall_clock = fake_wall,
                             .driftfix_slew = slew};
    f->rtc = rtc_create(&cfg, (struct irq_line){fake_irq_set, &f->irq, 8});
    wr(f, 0x0a, 0x2a); /* RS = 10: 64 Hz */
    wr(f, 0x0b, 0x42); /* PIE */
    const int64_t period = SEC / 64, end = f->now + 2 * SEC;
    unsigned count = 0;
    bool stalled = false;
    for (;;) {
        int64_t d = rtc_next_deadline_ns(f->rtc);
        if (d > end)
            break;
        f->now = d;
        rtc_tick(f->rtc, f->now);
        if (!f->irq.level)
            continue;
        count++;
        if (count == 10 && !stalled) { /* the guest is busy: no acknowledgement for a while */
            stalled = true;
            f->now += stall * period + period / 4;
            rtc_tick(f->rtc, f->now);
        }
        assert_int_equal(rd(f, 0x0c) & 0xc0, 0xc0);
    }
    rtc_destroy(f->rtc);
    free(f);
    return count;
}

/* A guest setting the century register to 99 (year 9999) gets the last date kemu keeps,
 * 2199-12-31 23:59:59, not an overflow (found by fuzz_devices). */
static void test_far_future_clamped(void **state)
{
    struct fixture *f = *state;
    wr(f, 0x32, 0x99);
    assert_int_equal(rd(f, 0x32), 0x21);
    assert_int_equal(rd(f, 0x09), 0x99);
    assert_int_equal(rd(f, 0x08), 0x12);
    assert_int_equal(rd(f, 0x07), 0x31);
    /* Stopped with SET, set to year 0000 in century 00, released: the first date kept. */
    wr(f, 0x0b, 0x82);
    wr(f, 0x32, 0x00);
    wr(f, 0x09, 0x00);
    wr(f, 0x0b, 0x02);
    assert_int_equal(rd(f, 0x32), 0x19);
    assert_int_equal(rd(f, 0x09), 0x00);
}

/* clock=host: the host's time set back an hour; update interrupts go on each second (they
 * stopped until the clock caught up with where it had been). */
static void test_clock_steps_back(void **state)
{
    struct fixture *f = *state;
    wr(f, 0x0b, 0x12); /* UIE, 24 h */
    unsigned irqs = 0;
    for (int i = 0; i < 6; i++) {
        if (i == 3)
            f->now -= 3600 * SEC;
        int64_t d = rtc_next_deadline_ns(f->rtc);
        assert_true(d <= f->now + SEC);
        f->now = d;
        rtc_tick(f->rtc, f->now);
        if (f->irq.level) {
            irqs++;
            assert_int_equal(rd(f, 0x0c) & 0x90, 0x90);
        }
    }
    assert_int_equal(irqs, 6);
}

static void test_driftfix_slew(void **state)
{
    /* 2 s at 64 Hz: 128 periods. Merged: the 20 of the stall are one interrupt. */
    assert_int_equal(count_with_stall(false, 20), 128 - 20);
    assert_int_equal(count_with_stall(true, 20), 128);
    assert_int_equal(count_with_stall(true, 0), 128);
}

static void test_periodic(void **state)
{
    struct fixture *f = *state;
    /* RS = 6: 1024 Hz, a period of 32 ticks of the 32768 Hz base = 976562.5 ns. */
    wr(f, 0x0b, 0x42);
    int64_t d = rtc_next_deadline_ns(f->rtc);
    assert_int_equal(d, f->now + 976563);
    rtc_tick(f->rtc, d);
    assert_int_equal(f->irq.level, 1);
    f->now = d;
    assert_int_equal(rd(f, 0x0c), 0xc0);
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(rtc_next_deadline_ns(f->rtc), f->now - 976563 + 1953125);

    /* RS = 15: 2 Hz. RS = 0: off. */
    wr(f, 0x0a, 0x2f);
    f->now += 400 * MSEC;
    rtc_tick(f->rtc, f->now);
    assert_int_equal(f->irq.level, 0);
    f->now += 100 * MSEC;
    rtc_tick(f->rtc, f->now);
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(rd(f, 0x0c), 0xc0);
    wr(f, 0x0a, 0x20);
    assert_int_equal(rtc_next_deadline_ns(f->rtc), INT64_MAX);
    f->now += 10 * SEC;
    assert_int_equal(rd(f, 0x0c) & 0x40, 0);
    /* PF is set at the periodic rate even with PIE clear. */
    wr(f, 0x0b, 0x02);
    wr(f, 0x0a, 0x26);
    f->now += MSEC;
    assert_int_equal(rd(f, 0x0c), 0x40);
    assert_int_equal(f->irq.level, 0);
    wr(f, 0x0b, 0x42);

    /* rtc_reset clears the enables and flags and lowers the line. */
    wr(f, 0x0a, 0x26);
    f->now += SEC;
    rtc_tick(f->rtc, f->now);
    assert_int_equal(f->irq.level, 1);
    rtc_reset(f->rtc);
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(rd(f, 0x0b), 0x02);
    assert_int_equal(rd(f, 0x0c), 0x00);
    assert_int_equal(rd(f, 0x0a), 0x26);
}

static void test_alarm(void **state)
{
    struct fixture *f = *state;
    wr(f, 0x0a, 0x20); /* no periodic flag in the way */
    wr(f, 0x01, 0x25);
    wr(f, 0x03, 0x01);
    wr(f, 0x05, 0x16);
    wr(f, 0x0b, 0x22); /* AIE */
    int64_t d = rtc_next_deadline_ns(f->rtc);
    assert_int_equal(d, f->now + 4 * SEC);
    f->now += 3 * SEC;
    rtc_tick(f->rtc, f->now);
    assert_int_equal(f->irq.level, 0);
    f->now += SEC;
    rtc_tick(f->rtc, f->now);
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(rd(f, 0x0c), 0xb0); /* IRQF | AF | UF */
    /* Next match is a day later. */
    assert_int_equal(rtc_next_deadline_ns(f->rtc), f->now + 86400 * SEC);

    /* Don't-care hour and minute: every minute at :25. */
    wr(f, 0x03, 0xc0);
    wr(f, 0x05, 0xff);
    assert_int_equal(rtc_next_deadline_ns(f->rtc), f->now + 60 * SEC);
    /* An alarm passed over without a timer still sets AF. */
    wr(f, 0x0b, 0x02);
    f->now += 61 * SEC;
    assert_int_equal(rd(f, 0x0c), 0x30);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fixed_base_bcd_24h, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_and_12h, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uip_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_time, setup, teardown),
        cmocka_unit_test(test_century),
        cmocka_unit_test(test_utc_and_localtime_base),
        cmocka_unit_test(test_memory_bytes),
        cmocka_unit_test_setup_teardown(test_update_flag_and_register_c, setup, teardown),
        cmocka_unit_test_setup_teardown(test_periodic, setup, teardown),
        cmocka_unit_test(test_driftfix_slew),
        cmocka_unit_test_setup_teardown(test_clock_steps_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_far_future_clamped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alarm, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
