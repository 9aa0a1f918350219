/* ACPI PM block (PM1 event/control, PM timer, GPE0) and the 0xCF9 reset register. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "hw/acpi_pm.h"

struct fixture {
    int level;
    unsigned raises, poweroffs, resets;
    struct acpi_pm *pm;
};

static void sci_set(void *opaque, unsigned gsi, int level)
{
    struct fixture *f = opaque;
    assert_int_equal(gsi, 9);
    if (level && !f->level)
        f->raises++;
    f->level = level;
}

static void on_poweroff(void *opaque)
{
    struct fixture *f = opaque;
    f->poweroffs++;
    /* Called without the device lock: touching the device must not deadlock. */
    (void)acpi_pm_bus_ops.read(f->pm, ACPI_PM1_EVT_OFFSET, 2);
}

static void on_reset(void *opaque)
{
    struct fixture *f = opaque;
    f->resets++;
    (void)acpi_reset_bus_ops.read(f->pm, 0, 1);
}

static const struct acpi_pm_ops ops = {.poweroff = on_poweroff, .reset = on_reset};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->pm = acpi_pm_create(&ops, f, (struct irq_line){.set = sci_set, .opaque = f, .gsi = 9});
    assert_non_null(f->pm);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    acpi_pm_destroy(f->pm);
    free(f);
    return 0;
}

static uint64_t rd(struct fixture *f, uint64_t off, unsigned size)
{
    return acpi_pm_bus_ops.read(f->pm, off, size);
}

static void wr(struct fixture *f, uint64_t off, unsigned size, uint64_t v)
{
    acpi_pm_bus_ops.write(f->pm, off, size, v);
}

static void test_reset_values(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd(f, 0x00, 2) & ~ACPI_PM1_TMR_STS, 0);
    assert_int_equal(rd(f, 0x02, 2), 0);
    assert_int_equal(rd(f, 0x04, 2), ACPI_PM1_CNT_SCI_EN);
    assert_int_equal(rd(f, 0x10, 4), 0);
    assert_int_equal(rd(f, 0x1c, 4), 0); /* unused offset */
    /* SCI_EN cannot be cleared. */
    wr(f, 0x04, 2, 0);
    assert_int_equal(rd(f, 0x04, 2) & ACPI_PM1_CNT_SCI_EN, ACPI_PM1_CNT_SCI_EN);
    assert_int_equal(f->level, 0);
}

static void test_power_button_sci(void **state)
{
    struct fixture *f = *state;
    /* Not enabled: status set, no SCI. */
    acpi_pm_power_button(f->pm);
    assert_true(rd(f, 0x00, 2) & ACPI_PM1_PWRBTN_STS);
    assert_int_equal(f->level, 0);
    /* Enabling with the status pending raises the level-triggered SCI. */
    wr(f, 0x02, 2, ACPI_PM1_PWRBTN_EN);
    assert_int_equal(rd(f, 0x02, 2), ACPI_PM1_PWRBTN_EN);
    assert_int_equal(f->level, 1);
    assert_int_equal(f->raises, 1);
    /* Writing 0 to the status changes nothing; writing 1 to another bit neither. */
    wr(f, 0x00, 2, 0);
    wr(f, 0x00, 2, ACPI_PM1_SLPBTN_STS);
    assert_true(rd(f, 0x00, 2) & ACPI_PM1_PWRBTN_STS);
    assert_int_equal(f->level, 1);
    /* Write-1-to-clear lowers the line; a byte write to the high byte works too. */
    wr(f, 0x01, 1, ACPI_PM1_PWRBTN_STS >> 8);
    assert_false(rd(f, 0x00, 2) & ACPI_PM1_PWRBTN_STS);
    assert_int_equal(f->level, 0);
    /* Press again while enabled. */
    acpi_pm_power_button(f->pm);
    assert_int_equal(f->level, 1);
    assert_int_equal(f->raises, 2);
    /* Disabling lowers the line, status stays. */
    wr(f, 0x02, 2, 0);
    assert_int_equal(f->level, 0);
    assert_true(rd(f, 0x00, 2) & ACPI_PM1_PWRBTN_STS);
    /* A 32-bit write over status + enable at once. */
    wr(f, 0x00, 4, (uint32_t)ACPI_PM1_PWRBTN_EN << 16 | ACPI_PM1_PWRBTN_STS);
    assert_int_equal(rd(f, 0x00, 4) & 0xfffffffe, (uint32_t)ACPI_PM1_PWRBTN_EN << 16);
    assert_int_equal(f->level, 0);
    /* System reset clears everything. */
    acpi_pm_power_button(f->pm);
    assert_int_equal(f->level, 1);
    acpi_pm_reset(f->pm);
    assert_int_equal(f->level, 0);
    assert_int_equal(rd(f, 0x02, 2), 0);
    assert_false(rd(f, 0x00, 2) & ACPI_PM1_PWRBTN_STS);
}

static void test_gpe(void **state)
{
    struct fixture *f = *state;
    acpi_pm_gpe_raise(f->pm, 3);
    assert_int_equal(rd(f, 0x10, 2), 1 << 3);
    assert_int_equal(f->level, 0);
    wr(f, 0x12, 2, 1 << 3);
    assert_int_equal(f->level, 1);
    wr(f, 0x10, 2, 1 << 3);
    assert_int_equal(rd(f, 0x10, 2), 0);
    assert_int_equal(f->level, 0);
    acpi_pm_gpe_raise(f->pm, 16); /* out of range: ignored */
    assert_int_equal(rd(f, 0x10, 2), 0);
}

static void test_sleep(void **state)
{
    struct fixture *f = *state;
    /* Setting SLP_TYP alone (as ACPICA does first) is not a sleep. */
    wr(f, 0x04, 2, ACPI_PM1_CNT_SLP_TYP(ACPI_PM_SLP_TYP_S5) | ACPI_PM1_CNT_SCI_EN);
    assert_int_equal(f->poweroffs, 0);
    /* Other sleep types are ignored. */
    for (unsigned t = 0; t < 8; t++) {
        if (t == ACPI_PM_SLP_TYP_S5)
            continue;
        wr(f, 0x04, 2, ACPI_PM1_CNT_SLP_TYP(t) | ACPI_PM1_CNT_SLP_EN | ACPI_PM1_CNT_SCI_EN);
        assert_int_equal(f->poweroffs, 0);
        /* SLP_EN reads back 0, SLP_TYP is kept. */
        assert_int_equal(rd(f, 0x04, 2), ACPI_PM1_CNT_SLP_TYP(t) | ACPI_PM1_CNT_SCI_EN);
    }
    wr(f, 0x04, 2,
       ACPI_PM1_CNT_SLP_TYP(ACPI_PM_SLP_TYP_S5) | ACPI_PM1_CNT_SLP_EN | ACPI_PM1_CNT_SCI_EN);
    assert_int_equal(f->poweroffs, 1);
    /* A byte write to the high byte of PM1_CNT carries SLP_TYP and SLP_EN. */
    wr(f, 0x05, 1, (ACPI_PM1_CNT_SLP_TYP(ACPI_PM_SLP_TYP_S5) | ACPI_PM1_CNT_SLP_EN) >> 8);
    assert_int_equal(f->poweroffs, 2);
}

static uint32_t timer(struct fixture *f)
{
    return (uint32_t)rd(f, ACPI_PM_TMR_OFFSET, 4);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void test_timer(void **state)
{
    struct fixture *f = *state;
    /* Monotonic over many reads (the count cannot wrap in a test: 2^32 ticks = 20 minutes). */
    uint32_t prev = timer(f);
    for (int i = 0; i < 10000; i++) {
        uint32_t t = timer(f);
        assert_true(t >= prev);
        prev = t;
    }
    /* Rate: ticks over a measured 50 ms sleep, within 5% (reads bracket the sleep). */
    int64_t t0 = now_ns();
    uint32_t c0 = timer(f);
    struct timespec ts = {.tv_nsec = 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint32_t c1 = timer(f);
    int64_t t1 = now_ns();
    double expect = (double)(t1 - t0) * ACPI_PM_TIMER_HZ / 1e9;
    double got = (double)(c1 - c0);
    assert_true(got > expect * 0.95 && got <= expect * 1.05 + 2);
    /* Byte reads of the counter work; the timer ignores writes. */
    uint32_t lo = (uint32_t)rd(f, ACPI_PM_TMR_OFFSET + 2, 2);
    (void)lo;
    wr(f, ACPI_PM_TMR_OFFSET, 4, 0);
    assert_true(timer(f) >= c1);
}

static void test_reset_register(void **state)
{
    struct fixture *f = *state;
    acpi_reset_bus_ops.write(f->pm, 0, 1, 0x02);
    assert_int_equal(f->resets, 0);
    assert_int_equal(acpi_reset_bus_ops.read(f->pm, 0, 1), 0x02);
    acpi_reset_bus_ops.write(f->pm, 0, 1, 0x06);
    assert_int_equal(f->resets, 1);
    assert_int_equal(acpi_reset_bus_ops.read(f->pm, 0, 1), 0x02);
    acpi_reset_bus_ops.write(f->pm, 0, 1, 0x0e);
    assert_int_equal(f->resets, 2);
    assert_int_equal(acpi_reset_bus_ops.read(f->pm, 0, 1), 0x0a);
    acpi_reset_bus_ops.write(f->pm, 0, 1, 0x08);
    assert_int_equal(f->resets, 2);
    acpi_pm_reset(f->pm);
    assert_int_equal(acpi_reset_bus_ops.read(f->pm, 0, 1), 0);
}

static void test_no_ops(void **state)
{
    struct acpi_pm *pm = acpi_pm_create(NULL, NULL, (struct irq_line){0});
    assert_non_null(pm);
    acpi_pm_bus_ops.write(pm, 0x02, 2, ACPI_PM1_PWRBTN_EN);
    acpi_pm_power_button(pm);
    acpi_pm_bus_ops.write(pm, 0x04, 2, ACPI_PM1_CNT_SLP_EN);
    acpi_reset_bus_ops.write(pm, 0, 1, 0x06);
    acpi_pm_destroy(pm);
    acpi_pm_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reset_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_button_sci, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gpe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sleep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_register, setup, teardown),
        cmocka_unit_test(test_no_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
