/* Unit tests for the 8254 PIT with an injected clock, driven the way Linux drives it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "hw/pit.h"

#define SEC  1000000000LL
#define MSEC 1000000LL
#define USEC 1000LL

struct fixture {
    int64_t now;
    unsigned deadline_notes;
    int level;
    unsigned pulses;
    struct pit *pit;
};

static void fake_irq_set(void *opaque, unsigned gsi, int level)
{
    struct fixture *f = opaque;
    assert_int_equal(gsi, 0);
    if (level && !f->level)
        f->pulses++;
    f->level = level;
}

static int64_t fake_clock(void *opaque)
{
    return ((struct fixture *)opaque)->now;
}

static void note_deadline(void *opaque)
{
    ((struct fixture *)opaque)->deadline_notes++;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->now = 1000 * SEC; /* not zero: start times must not be confused with "never" */
    struct timed_hooks cfg = {.clock = fake_clock,
                              .clock_opaque = f,
                              .deadline_changed = note_deadline,
                              .deadline_opaque = f};
    f->pit = pit_create(&cfg, (struct irq_line){.set = fake_irq_set, .opaque = f, .gsi = 0});
    assert_non_null(f->pit);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    pit_destroy(f->pit);
    free(f);
    return 0;
}

static void outb(struct fixture *f, uint16_t port, uint8_t v)
{
    if (port == PIT_SPEAKER_IO)
        pit_speaker_ops.write(f->pit, 0, 1, v);
    else
        pit_bus_ops.write(f->pit, port - PIT_IO_BASE, 1, v);
}

static uint8_t inb(struct fixture *f, uint16_t port)
{
    if (port == PIT_SPEAKER_IO)
        return (uint8_t)pit_speaker_ops.read(f->pit, 0, 1);
    return (uint8_t)pit_bus_ops.read(f->pit, port - PIT_IO_BASE, 1);
}

/* The first ns at which n PIT clocks have passed since start. */
static int64_t clocks_ns(uint64_t n)
{
    return (int64_t)((n * (uint64_t)SEC + PIT_FREQ_HZ - 1) / PIT_FREQ_HZ);
}

static uint16_t read_word(struct fixture *f, uint16_t port)
{
    uint8_t lo = inb(f, port);
    return (uint16_t)(lo | inb(f, port) << 8);
}

static void test_reset_state(void **state)
{
    struct fixture *f = *state;
    /* Unprogrammed, as KVM's PIT: no interrupts until the guest sets a mode and count. */
    assert_int_equal(pit_next_deadline_ns(f->pit), INT64_MAX);
    f->now += SEC;
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 0);
    /* Channel 2's gate is low and the speaker off; port 0x43 reads float. */
    assert_int_equal(inb(f, PIT_SPEAKER_IO) & 0x03, 0);
    assert_int_equal(inb(f, 0x43), 0xff);
}

/* Linux's periodic tick (clockevent i8254 at HZ=250): mode 2, LATCH = 4773. */
static void test_periodic_mode2(void **state)
{
    struct fixture *f = *state;
    int64_t t0 = f->now;
    unsigned notes = f->deadline_notes;
    outb(f, 0x43, 0x34);
    outb(f, 0x40, 4773 & 0xff);
    outb(f, 0x40, 4773 >> 8);
    assert_true(f->deadline_notes > notes);
    assert_int_equal(pit_next_deadline_ns(f->pit), t0 + clocks_ns(4773));

    /* Early ticks do nothing; the due one pulses once and moves the deadline a period on. */
    pit_tick(f->pit, t0 + clocks_ns(4773) - 1);
    assert_int_equal(f->pulses, 0);
    f->now = t0 + clocks_ns(4773);
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 1);
    assert_int_equal(f->level, 0);
    assert_int_equal(pit_next_deadline_ns(f->pit), t0 + clocks_ns(2 * 4773));

    /* A loop ten periods late gets one pulse and the next edge still on the period grid. */
    f->now = t0 + clocks_ns(12 * 4773) + 5 * USEC;
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 2);
    assert_int_equal(pit_next_deadline_ns(f->pit), t0 + clocks_ns(13 * 4773));

    /* The counter runs 4773..1 within each period. */
    f->now = t0 + clocks_ns(13 * 4773 + 1000) + 1;
    outb(f, 0x43, 0x00); /* latch channel 0 */
    assert_int_equal(read_word(f, 0x40), 4773 - 1000);

    /* A new control word stops the interrupts until a count is written. */
    outb(f, 0x43, 0x34);
    assert_int_equal(pit_next_deadline_ns(f->pit), INT64_MAX);
}

/* Linux's oneshot clockevent and its shutdown: mode 0, one edge at terminal count. */
static void test_oneshot_mode0(void **state)
{
    struct fixture *f = *state;
    int64_t t0 = f->now;
    outb(f, 0x43, 0x30);
    outb(f, 0x40, 0x00);
    /* Mode 0: writing the first byte stops the count; nothing is due in between. */
    assert_int_equal(pit_next_deadline_ns(f->pit), INT64_MAX);
    outb(f, 0x40, 0x10); /* 4096 clocks */
    assert_int_equal(pit_next_deadline_ns(f->pit), t0 + clocks_ns(4096));
    /* Output low until terminal count (read-back status bit 7), high after. */
    outb(f, 0x43, 0xe2);
    assert_int_equal(inb(f, 0x40) & 0x80, 0);
    f->now = t0 + clocks_ns(4096);
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 1);
    assert_int_equal(pit_next_deadline_ns(f->pit), INT64_MAX);
    outb(f, 0x43, 0xe2);
    uint8_t st = inb(f, 0x40);
    assert_int_equal(st & 0x80, 0x80);  /* OUT high */
    assert_int_equal(st & 0x40, 0);     /* count loaded */
    assert_int_equal((st >> 4) & 3, 3); /* LSB then MSB */
    assert_int_equal((st >> 1) & 7, 0); /* mode 0 */
    f->now += SEC;
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 1); /* only once */
    /* After terminal count the counter wraps and keeps counting down. */
    outb(f, 0x43, 0x00);
    uint16_t v = read_word(f, 0x40);
    uint64_t d = (uint64_t)((unsigned __int128)(f->now - t0) * PIT_FREQ_HZ / SEC);
    assert_int_equal(v, (uint16_t)(4096 - d));
}

static void test_latch_and_status(void **state)
{
    struct fixture *f = *state;
    int64_t t0 = f->now;
    outb(f, 0x43, 0x34);
    outb(f, 0x40, 0x00);
    outb(f, 0x40, 0x00); /* 0 = 65536 */
    f->now = t0 + clocks_ns(100);
    outb(f, 0x43, 0x00);
    f->now = t0 + clocks_ns(5000);
    outb(f, 0x43, 0x00); /* ignored: the first latch is still unread */
    assert_int_equal(read_word(f, 0x40), 65536 - 100);
    /* Unlatched reads follow the clock. */
    assert_int_equal(read_word(f, 0x40), 65536 - 5000);

    /* Read-back: status then count of channel 0, each read once. */
    outb(f, 0x43, 0xc2);
    uint8_t st = inb(f, 0x40);
    assert_int_equal((st >> 1) & 7, 2);
    assert_int_equal(st & 0x40, 0);
    assert_int_equal(read_word(f, 0x40), 65536 - 5000);

    /* A control word without a count: NULL COUNT set. */
    outb(f, 0x43, 0x36);
    outb(f, 0x43, 0xe2);
    assert_int_equal(inb(f, 0x40) & 0x40, 0x40);
}

/* The square wave: the counter steps by two, the output is high for the first half. */
static void test_mode3(void **state)
{
    struct fixture *f = *state;
    int64_t t0 = f->now;
    outb(f, 0x43, 0x36);
    outb(f, 0x40, 100);
    outb(f, 0x40, 0);
    f->now = t0 + clocks_ns(10);
    outb(f, 0x43, 0x00);
    assert_int_equal(read_word(f, 0x40), 80);
    outb(f, 0x43, 0xe2);
    assert_int_equal(inb(f, 0x40) & 0x80, 0x80);
    f->now = t0 + clocks_ns(60);
    outb(f, 0x43, 0xe2);
    assert_int_equal(inb(f, 0x40) & 0x80, 0);
    assert_int_equal(pit_next_deadline_ns(f->pit), t0 + clocks_ns(100));
}

/* pit_calibrate_tsc: channel 2 in mode 0, gate on, speaker off, poll OUT2 on port 0x61. */
static void test_channel2_calibration(void **state)
{
    struct fixture *f = *state;
    outb(f, PIT_SPEAKER_IO, (uint8_t)((inb(f, PIT_SPEAKER_IO) & ~0x02) | 0x01));
    int64_t t0 = f->now;
    outb(f, 0x43, 0xb0);
    outb(f, 0x42, 11931 & 0xff);
    outb(f, 0x42, 11931 >> 8);
    /* Channel 2 never interrupts. */
    assert_int_equal(pit_next_deadline_ns(f->pit), INT64_MAX);
    f->now = t0 + clocks_ns(11930);
    assert_int_equal(inb(f, PIT_SPEAKER_IO) & 0x20, 0);
    f->now = t0 + clocks_ns(11931);
    uint8_t v = inb(f, PIT_SPEAKER_IO);
    assert_int_equal(v & 0x20, 0x20);
    assert_int_equal(v & 0x03, 0x01);
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 0);

    /* The refresh bit toggles every 15.085 us. */
    uint8_t r0 = inb(f, PIT_SPEAKER_IO) & 0x10;
    f->now += 15085;
    assert_int_not_equal(inb(f, PIT_SPEAKER_IO) & 0x10, r0);
}

/* quick_pit_calibrate: mode 0 from 0xffff, reading the MSB as it counts down. */
static void test_channel2_msb_countdown(void **state)
{
    struct fixture *f = *state;
    outb(f, PIT_SPEAKER_IO, 0x01);
    int64_t t0 = f->now;
    outb(f, 0x43, 0xb0);
    outb(f, 0x42, 0xff);
    outb(f, 0x42, 0xff);
    for (unsigned i = 1; i < 200; i++) {
        f->now = t0 + clocks_ns(256 * i);
        inb(f, 0x42); /* LSB */
        assert_int_equal(inb(f, 0x42), 0xff - i);
    }
}

/* Gate low suspends mode 0 on channel 2; gate high resumes where it stopped. */
static void test_gate_suspends(void **state)
{
    struct fixture *f = *state;
    outb(f, PIT_SPEAKER_IO, 0x01);
    int64_t t0 = f->now;
    outb(f, 0x43, 0xb0);
    outb(f, 0x42, 0x00);
    outb(f, 0x42, 0x10);
    f->now = t0 + clocks_ns(1000);
    outb(f, PIT_SPEAKER_IO, 0x00);
    f->now += 10 * MSEC;
    outb(f, 0x43, 0x80);
    assert_int_equal(read_word(f, 0x42), 4096 - 1000);
    int64_t t1 = f->now;
    outb(f, PIT_SPEAKER_IO, 0x01);
    f->now = t1 + clocks_ns(96) + 1;
    outb(f, 0x43, 0x80);
    assert_in_range(read_word(f, 0x42), 4096 - 1097, 4096 - 1095);
}

static void test_bcd(void **state)
{
    struct fixture *f = *state;
    int64_t t0 = f->now;
    outb(f, 0x43, 0x31); /* mode 0, BCD */
    outb(f, 0x40, 0x00);
    outb(f, 0x40, 0x10); /* 1000 decimal */
    assert_int_equal(pit_next_deadline_ns(f->pit), t0 + clocks_ns(1000));
    f->now = t0 + clocks_ns(1);
    assert_int_equal(read_word(f, 0x40), 0x0999);
}

/* A count of 1 in mode 2 must not make the main loop spin: pulses at most every 200 us. */
static void test_min_pulse_interval(void **state)
{
    struct fixture *f = *state;
    outb(f, 0x43, 0x14); /* channel 0, LSB only, mode 2 */
    outb(f, 0x40, 1);
    f->now += 10 * USEC;
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 1);
    assert_true(pit_next_deadline_ns(f->pit) >= f->now + 200 * USEC);
    f->now += 100 * USEC;
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 1);
    f->now += 100 * USEC;
    pit_tick(f->pit, f->now);
    assert_int_equal(f->pulses, 2);
}

static void test_reset_stops(void **state)
{
    struct fixture *f = *state;
    outb(f, 0x43, 0x34);
    outb(f, 0x40, 0x10);
    outb(f, 0x40, 0x00);
    outb(f, PIT_SPEAKER_IO, 0x03);
    assert_int_not_equal(pit_next_deadline_ns(f->pit), INT64_MAX);
    pit_reset(f->pit);
    assert_int_equal(pit_next_deadline_ns(f->pit), INT64_MAX);
    assert_int_equal(inb(f, PIT_SPEAKER_IO) & 0x03, 0);
}

/* Wide accesses reach successive ports, and nothing a guest writes can break the device. */
static void test_hostile_accesses(void **state)
{
    struct fixture *f = *state;
    pit_bus_ops.write(f->pit, 3, 1, 0x14);   /* channel 0: LSB only, mode 2 */
    pit_bus_ops.write(f->pit, 3, 1, 0x54);   /* channel 1: LSB only, mode 2 */
    pit_bus_ops.write(f->pit, 0, 2, 0x1234); /* 0x40 = 0x34, 0x41 = 0x12 */
    outb(f, 0x43, 0x00);
    outb(f, 0x43, 0x40);
    assert_int_equal(pit_bus_ops.read(f->pit, 0, 2), 0x1234);
    srand(7);
    for (unsigned i = 0; i < 100000; i++) {
        unsigned off = (unsigned)rand() % PIT_IO_LEN, size = 1u << (rand() % 3);
        if (rand() & 1)
            pit_bus_ops.write(f->pit, off, size, (uint64_t)rand());
        else
            pit_bus_ops.read(f->pit, off, size);
        if (!(i % 7))
            pit_speaker_ops.write(f->pit, 0, 1, (uint64_t)rand());
        f->now += rand() % 50000;
        pit_tick(f->pit, f->now);
        int64_t d = pit_next_deadline_ns(f->pit);
        assert_true(d == INT64_MAX || d > f->now - SEC);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reset_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_periodic_mode2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneshot_mode0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_latch_and_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_channel2_calibration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_channel2_msb_countdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gate_suspends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bcd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_min_pulse_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_accesses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
