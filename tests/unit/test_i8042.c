/* Unit tests for the i8042 keyboard controller with no devices attached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "hw/i8042.h"

struct fake_irq {
    int level;
    unsigned raises;
};

static void fake_irq_set(void *opaque, unsigned gsi, int level)
{
    struct fake_irq *i = opaque;
    if (level && !i->level)
        i->raises++;
    i->level = level;
}

struct fixture {
    struct fake_irq kbd, aux;
    unsigned resets;
    struct i8042 *k;
};

static void on_reset(void *opaque)
{
    ((struct fixture *)opaque)->resets++;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->k = i8042_create(on_reset, f, (struct irq_line){fake_irq_set, &f->kbd, 1},
                        (struct irq_line){fake_irq_set, &f->aux, 12});
    assert_non_null(f->k);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    i8042_destroy(f->k);
    free(f);
    return 0;
}

static uint8_t status(struct fixture *f)
{
    return (uint8_t)i8042_cmd_ops.read(f->k, 0, 1);
}

static uint8_t data(struct fixture *f)
{
    return (uint8_t)i8042_data_ops.read(f->k, 0, 1);
}

static void cmd(struct fixture *f, uint8_t c)
{
    i8042_cmd_ops.write(f->k, 0, 1, c);
}

static void put(struct fixture *f, uint8_t v)
{
    i8042_data_ops.write(f->k, 0, 1, v);
}

/* i8042_command() as Linux does it: command, parameters, wait for OBF, read. */
static uint8_t command_reply(struct fixture *f, uint8_t c)
{
    assert_int_equal(status(f) & 0x02, 0); /* IBF clear: can write */
    cmd(f, c);
    assert_true(status(f) & 0x01);
    return data(f);
}

static void test_power_on(void **state)
{
    struct fixture *f = *state;
    uint8_t st = status(f);
    assert_int_equal(st & 0x01, 0); /* output buffer empty */
    assert_int_equal(st & 0x02, 0); /* input buffer empty */
    assert_true(st & 0x04);         /* system flag */
    assert_true(st & 0x10);         /* keyboard not inhibited */
    assert_int_equal(command_reply(f, 0x20), 0x65);
    assert_int_equal(f->kbd.level, 0);
    assert_int_equal(f->aux.level, 0);
}

static void test_self_tests(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(command_reply(f, 0xaa), 0x55);
    assert_int_equal(command_reply(f, 0xab), 0x00);
    assert_int_equal(command_reply(f, 0xa9), 0x00);
    assert_int_equal(status(f) & 0x01, 0);
}

static void test_ctr_round_trip(void **state)
{
    struct fixture *f = *state;
    cmd(f, 0x60);
    assert_true(status(f) & 0x08); /* last write was a command */
    put(f, 0x30);
    assert_int_equal(status(f) & 0x08, 0);
    assert_int_equal(status(f) & 0x04, 0); /* SYS follows CTR bit 2 */
    assert_int_equal(command_reply(f, 0x20), 0x30);
    cmd(f, 0x60);
    put(f, 0x47);
    assert_int_equal(command_reply(f, 0x20), 0x47);
    assert_true(status(f) & 0x04);

    /* Port enable/disable commands edit CTR bits 4 and 5. */
    cmd(f, 0xa7);
    cmd(f, 0xad);
    assert_int_equal(command_reply(f, 0x20), 0x47 | 0x30);
    cmd(f, 0xa8);
    assert_int_equal(command_reply(f, 0x20), 0x47 | 0x10);
    cmd(f, 0xae);
    assert_int_equal(command_reply(f, 0x20), 0x47);

    /* Other controller RAM bytes. */
    cmd(f, 0x65);
    put(f, 0x99);
    assert_int_equal(command_reply(f, 0x25), 0x99);
    assert_int_equal(command_reply(f, 0x20), 0x47);
}

static void test_reset_via_fe(void **state)
{
    struct fixture *f = *state;
    cmd(f, 0xff); /* pulses nothing */
    assert_int_equal(f->resets, 0);
    cmd(f, 0xfe);
    assert_int_equal(f->resets, 1);
    cmd(f, 0xf0); /* bit 0 clear: pulses reset too */
    assert_int_equal(f->resets, 2);
}

static void test_reset_via_output_port(void **state)
{
    struct fixture *f = *state;
    uint8_t outp = command_reply(f, 0xd0);
    assert_int_equal(outp & 0x03, 0x03); /* reset deasserted, A20 on */
    cmd(f, 0xd1);
    put(f, outp); /* bit 0 set: no reset */
    assert_int_equal(f->resets, 0);
    cmd(f, 0xd1);
    put(f, outp & ~0x01);
    assert_int_equal(f->resets, 1);
}

static void test_output_buffer_and_irqs(void **state)
{
    struct fixture *f = *state;
    /* CTR = KBDINT|AUXINT|SYS */
    cmd(f, 0x60);
    put(f, 0x07);
    assert_int_equal(f->kbd.level, 0);

    cmd(f, 0xd2);
    put(f, 0x1c);
    assert_int_equal(status(f) & 0x21, 0x01); /* OBF, keyboard data */
    assert_int_equal(f->kbd.level, 1);
    assert_int_equal(f->aux.level, 0);
    assert_int_equal(data(f), 0x1c);
    assert_int_equal(f->kbd.level, 0);
    assert_int_equal(status(f) & 0x01, 0);
    assert_int_equal(data(f), 0x1c); /* empty buffer: stale byte */

    /* AUX loopback, as Linux's i8042_check_aux and the IRQ 12 delivery test use it. */
    cmd(f, 0xd3);
    put(f, 0xa5);
    assert_int_equal(status(f) & 0x21, 0x21);
    assert_int_equal(f->aux.level, 1);
    assert_int_equal(f->kbd.level, 0);
    assert_int_equal(data(f), 0xa5);
    assert_int_equal(f->aux.level, 0);

    /* Two queued bytes: the line drops and rises again between them. */
    unsigned raises = f->kbd.raises;
    cmd(f, 0x20);
    cmd(f, 0xaa);
    assert_int_equal(data(f), 0x07);
    assert_int_equal(f->kbd.level, 1);
    assert_int_equal(f->kbd.raises, raises + 2);
    assert_int_equal(data(f), 0x55);
    assert_int_equal(f->kbd.level, 0);

    /* Interrupts disabled in CTR: no IRQ, but OBF is still set (polling works). */
    cmd(f, 0x60);
    put(f, 0x04);
    cmd(f, 0xd3);
    put(f, 0x5a);
    assert_int_equal(f->aux.level, 0);
    assert_int_equal(status(f) & 0x21, 0x21);
    /* Enabling the interrupt with a byte waiting raises it. */
    cmd(f, 0x60);
    put(f, 0x06);
    assert_int_equal(f->aux.level, 1);
    assert_int_equal(data(f), 0x5a);
    assert_int_equal(f->aux.level, 0);
}

static void test_absent_devices(void **state)
{
    struct fixture *f = *state;
    cmd(f, 0x60);
    put(f, 0x47); /* KBDINT|SYS|XLATE... and AUXINT */
    cmd(f, 0xad);

    /* atkbd GETID to the keyboard: timeout, 0xFE; the write re-enabled the port. */
    put(f, 0xf2);
    uint8_t st = status(f);
    assert_int_equal(st & 0x61, 0x41);
    assert_int_equal(f->kbd.level, 1);
    assert_int_equal(data(f), 0xfe);
    assert_int_equal(status(f) & 0x41, 0); /* error bits belong to the byte read */
    assert_int_equal(command_reply(f, 0x20) & 0x10, 0);

    /* psmouse via 0xD4: timeout on the aux port. */
    cmd(f, 0xa7);
    cmd(f, 0xd4);
    put(f, 0xf2);
    assert_int_equal(status(f) & 0x61, 0x61);
    assert_int_equal(f->aux.level, 1);
    assert_int_equal(data(f), 0xfe);
    assert_int_equal(command_reply(f, 0x20) & 0x20, 0);
}

static void test_reset_state(void **state)
{
    struct fixture *f = *state;
    cmd(f, 0x60);
    put(f, 0x03);
    cmd(f, 0xd2);
    put(f, 0x11);
    assert_int_equal(f->kbd.level, 1);
    cmd(f, 0x60); /* pending command dropped by reset */
    i8042_reset(f->k);
    assert_int_equal(f->kbd.level, 0);
    assert_int_equal(status(f) & 0x01, 0);
    assert_int_equal(command_reply(f, 0x20), 0x65);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_power_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_tests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctr_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_via_fe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_via_output_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_buffer_and_irqs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absent_devices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_state, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
