#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "chardev/mux.h"

static void plain_bytes_pass_through(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 'a', &out), MUX_DELIVER);
    assert_int_equal(out, 'a');
    assert_int_equal(mux_input(&m, 0x03, &out), MUX_DELIVER); /* Ctrl-C goes to the guest */
    assert_int_equal(out, 0x03);
}

static void escapes(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'x', &out), MUX_QUIT);
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'h', &out), MUX_HELP);
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'c', &out), MUX_SWITCH);
    /* 'x' without the prefix is ordinary input. */
    assert_int_equal(mux_input(&m, 'x', &out), MUX_DELIVER);
    assert_int_equal(out, 'x');
}

static void double_escape_sends_ctrl_a(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_DELIVER);
    assert_int_equal(out, 0x01);
    assert_int_equal(mux_input(&m, 'x', &out), MUX_DELIVER);
}

static void unknown_escape_is_dropped(void **state)
{
    struct mux_state m = {0};
    uint8_t out = 0;
    assert_int_equal(mux_input(&m, 0x01, &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'q', &out), MUX_SWALLOW);
    assert_int_equal(mux_input(&m, 'q', &out), MUX_DELIVER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_bytes_pass_through),
        cmocka_unit_test(escapes),
        cmocka_unit_test(double_escape_sends_ctrl_a),
        cmocka_unit_test(unknown_escape_is_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
