/* Unit test for isa-debug-exit: status = (value << 1) | 1, reads all ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hw/debugexit.h"

struct exits {
    unsigned calls;
    int status;
};

static void on_exit_cb(void *opaque, int status)
{
    struct exits *e = opaque;
    e->calls++;
    e->status = status;
}

static void test_exit_status(void **state)
{
    struct exits e = {0};
    struct debugexit *d = debugexit_create(on_exit_cb, &e);
    assert_non_null(d);

    debugexit_bus_ops.write(d, 0, 1, 0);
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.status, 1);

    debugexit_bus_ops.write(d, 0, 1, 0x10); /* common "success" convention: exit code 33 */
    assert_int_equal(e.status, 33);

    debugexit_bus_ops.write(d, 1, 1, 0x7f);
    assert_int_equal(e.status, 0xff);

    debugexit_bus_ops.write(d, 0, 2, 0x1234); /* wider writes keep their width */
    assert_int_equal(e.status, 0x2469);
    debugexit_bus_ops.write(d, 0, 1, 0x1234); /* ...and are truncated to it */
    assert_int_equal(e.status, 0x69);
    assert_int_equal(e.status & 0xff, 0x69);
    assert_int_equal(e.calls, 5);

    debugexit_destroy(d);
}

static void test_reads(void **state)
{
    struct exits e = {0};
    struct debugexit *d = debugexit_create(on_exit_cb, &e);
    assert_int_equal(debugexit_bus_ops.read(d, 0, 1), 0xff);
    assert_int_equal(debugexit_bus_ops.read(d, 0, 2), 0xffff);
    assert_int_equal(debugexit_bus_ops.read(d, 0, 4), 0xffffffffu);
    assert_int_equal(e.calls, 0);
    debugexit_destroy(d);

    d = debugexit_create(NULL, NULL); /* no callback: writes are dropped */
    debugexit_bus_ops.write(d, 0, 1, 1);
    debugexit_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
