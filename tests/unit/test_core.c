/* Unit tests of the core: address buses, the checked guest-memory accessor, error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/bus.h"
#include "core/error.h"
#include "core/memory.h"

struct fake_dev {
    uint64_t last_off, last_val;
    unsigned last_size, writes;
};

static uint64_t fake_read(void *opaque, uint64_t off, unsigned size)
{
    return 0x1000 + off;
}

static void fake_write(void *opaque, uint64_t off, unsigned size, uint64_t v)
{
    struct fake_dev *d = opaque;
    d->last_off = off;
    d->last_val = v;
    d->last_size = size;
    d->writes++;
}

static const struct bus_ops fake_ops = {fake_read, fake_write};

static void bus_dispatches_by_offset(void **state)
{
    struct bus b;
    struct fake_dev d1 = {0}, d2 = {0};
    struct error err = {0};
    bus_init(&b, "pio");
    assert_int_equal(bus_register(&b, 0x3f8, 8, &fake_ops, &d1, "com1", &err), 0);
    assert_int_equal(bus_register(&b, 0x60, 1, &fake_ops, &d2, "kbd", &err), 0);
    uint64_t v;
    assert_true(bus_read(&b, 0x3fd, 1, &v));
    assert_int_equal(v, 0x1005);
    assert_true(bus_write(&b, 0x3f9, 1, 7));
    assert_int_equal(d1.last_off, 1);
    assert_int_equal(d1.last_val, 7);
    assert_true(bus_write(&b, 0x60, 1, 0xfe));
    assert_int_equal(d2.writes, 1);
    /* Unmapped: reads float high, writes are dropped. */
    assert_false(bus_read(&b, 0x400, 2, &v));
    assert_int_equal(v, 0xffff);
    assert_false(bus_read(&b, 0x3f7, 1, &v));
    assert_false(bus_write(&b, 0x400, 1, 1));
    bus_destroy(&b);
}

static void bus_rejects_overlaps_and_bad_ranges(void **state)
{
    struct bus b;
    struct fake_dev d = {0};
    bus_init(&b, "mmio");
    struct error err = {0};
    assert_int_equal(bus_register(&b, 0x1000, 0x100, &fake_ops, &d, "a", &err), 0);
    struct error e1 = {0}, e2 = {0}, e3 = {0}, e4 = {0};
    assert_int_equal(bus_register(&b, 0x10ff, 1, &fake_ops, &d, "b", &e1), -1);
    assert_non_null(strstr(e1.msg, "overlaps a"));
    assert_int_equal(bus_register(&b, 0xf00, 0x101, &fake_ops, &d, "c", &e2), -1);
    assert_int_equal(bus_register(&b, 0x2000, 0, &fake_ops, &d, "d", &e3), -1);
    assert_int_equal(bus_register(&b, UINT64_MAX - 1, 4, &fake_ops, &d, "e", &e4), -1);
    /* Adjacent ranges are fine, and many registrations grow the table. */
    for (unsigned i = 0; i < 100; i++)
        assert_int_equal(bus_register(&b, 0x1100 + i * 4, 4, &fake_ops, &d, "f", &err), 0);
    assert_non_null(bus_find(&b, 0x1100 + 99 * 4 + 3));
    assert_null(bus_find(&b, 0x1100 + 100 * 4));
    bus_destroy(&b);
}

static void memory_bounds_are_checked(void **state)
{
    static uint8_t buf[4096];
    struct guest_mem m;
    guest_mem_init_buffer(&m, buf, sizeof(buf));
    assert_ptr_equal(guest_mem_ptr(&m, 0, 4096), buf);
    assert_ptr_equal(guest_mem_ptr(&m, 4095, 1), buf + 4095);
    assert_ptr_equal(guest_mem_ptr(&m, 4096, 0), buf + 4096);
    assert_null(guest_mem_ptr(&m, 4095, 2));
    assert_null(guest_mem_ptr(&m, 4097, 0));
    assert_null(guest_mem_ptr(&m, UINT64_MAX, 2));
    assert_null(guest_mem_ptr(&m, 16, UINT64_MAX));
    uint32_t v = 0x12345678;
    assert_int_equal(guest_mem_write(&m, 100, &v, 4), 0);
    assert_int_equal(guest_mem_write(&m, 4094, &v, 4), -1);
    uint32_t r = 0;
    assert_int_equal(guest_mem_read(&m, 100, &r, 4), 0);
    assert_int_equal(r, v);
}

static void memory_x86_layout_splits_at_the_hole(void **state)
{
    struct guest_mem m;
    struct error err = {0};
    assert_int_equal(guest_mem_init_x86(&m, 4ULL << 30, 3ULL << 30, &err), 0);
    assert_int_equal(m.nr, 2);
    assert_int_equal(m.regions[0].size, 3ULL << 30);
    assert_int_equal(m.regions[1].gpa, 4ULL << 30);
    assert_int_equal(m.regions[1].size, 1ULL << 30);
    /* The hole itself is not RAM, nor is a range crossing into it. */
    assert_null(guest_mem_ptr(&m, 3ULL << 30, 1));
    assert_null(guest_mem_ptr(&m, (3ULL << 30) - 1, 2));
    assert_non_null(guest_mem_ptr(&m, (4ULL << 30) + 5, 4096));
    guest_mem_destroy(&m);
    assert_int_equal(guest_mem_init_x86(&m, 512ULL << 20, 3ULL << 30, &err), 0);
    assert_int_equal(m.nr, 1);
    guest_mem_destroy(&m);
    struct error e = {0};
    assert_int_equal(guest_mem_init_x86(&m, 0, 3ULL << 30, &e), -1);
    assert_true(e.set);
}

static void errors_keep_the_first_reason_and_take_prefixes(void **state)
{
    struct error e = {0};
    assert_int_equal(error_setf(&e, "inner %d", 1), -1);
    error_setf(&e, "outer");
    assert_string_equal(e.msg, "inner 1");
    error_prefix(&e, "-drive %s: ", "x.img");
    assert_string_equal(e.msg, "-drive x.img: inner 1");
    struct error e2 = {0};
    error_setf_errno(&e2, 2, "open %s", "f");
    assert_string_equal(e2.msg, "open f: No such file or directory");
    /* A NULL error is allowed (callers that do not care). */
    assert_int_equal(error_setf(NULL, "ignored"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bus_dispatches_by_offset),
        cmocka_unit_test(bus_rejects_overlaps_and_bad_ranges),
        cmocka_unit_test(memory_bounds_are_checked),
        cmocka_unit_test(memory_x86_layout_splits_at_the_hole),
        cmocka_unit_test(errors_keep_the_first_reason_and_take_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
