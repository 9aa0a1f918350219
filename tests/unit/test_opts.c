/* QemuOpts-style parser: grammar, typed values, errors and help output. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/opts.h"

static const struct opt_desc test_desc[] = {
    {"cpus", OPT_NUMBER, "1", "number of CPUs"}, {"sockets", OPT_NUMBER, NULL, "sockets"},
    {"size", OPT_SIZE, NULL, "a size"},          {"on", OPT_BOOL, "off", "a flag"},
    {"name", OPT_STRING, "anon", "a name"},      {NULL, 0, NULL, NULL},
};
static const struct opts_group test_group = {"test", "cpus", false, test_desc};
static const struct opts_group noimplied_group = {"test2", NULL, false, test_desc};
static const struct opts_group free_group = {"free", "name", true, test_desc};

static int parse(struct opts *o, const struct opts_group *g, const char *text, struct error *err)
{
    memset(o, 0, sizeof(*o));
    memset(err, 0, sizeof(*err));
    return opts_parse(o, g, text, err);
}

static void expect_fail(const struct opts_group *g, const char *text, const char *msg)
{
    struct opts o;
    struct error err;
    assert_int_equal(parse(&o, g, text, &err), -1);
    assert_true(err.set);
    assert_string_equal(err.msg, msg);
    opts_free(&o);
}

static void test_implied_key(void **state)
{
    struct opts o;
    struct error err;
    uint64_t v = 0;
    assert_int_equal(parse(&o, &test_group, "4,sockets=2", &err), 0);
    assert_int_equal(o.n, 2);
    assert_string_equal(o.kv[0].key, "cpus");
    assert_string_equal(o.kv[0].value, "4");
    assert_int_equal(opts_get_number(&o, "cpus", &v, &err), 1);
    assert_int_equal(v, 4);
    assert_int_equal(opts_get_number(&o, "sockets", &v, &err), 1);
    assert_int_equal(v, 2);
    opts_free(&o);
    /* explicit key in first position */
    assert_int_equal(parse(&o, &test_group, "cpus=8", &err), 0);
    assert_string_equal(opts_get_str(&o, "cpus"), "8");
    opts_free(&o);
    /* no implied key: a bare first element is a flag, "4" is unknown */
    expect_fail(&noimplied_group, "4", "unknown parameter '4'");
}

static void test_comma_escape(void **state)
{
    struct opts o;
    struct error err;
    assert_int_equal(parse(&o, &test_group, "name=a,,b,,,,c,cpus=2", &err), 0);
    assert_string_equal(opts_get_str(&o, "name"), "a,b,,c");
    assert_string_equal(opts_get_str(&o, "cpus"), "2");
    opts_free(&o);
    /* the implied value is escaped too */
    assert_int_equal(parse(&o, &free_group, "x,,y=z,on", &err), 0);
    assert_string_equal(opts_get_str(&o, "name"), "x,y=z");
    assert_string_equal(opts_get_str(&o, "on"), "on");
    opts_free(&o);
    /* trailing comma is accepted, as QEMU does */
    assert_int_equal(parse(&o, &test_group, "2,", &err), 0);
    assert_int_equal(o.n, 1);
    opts_free(&o);
    /* value ending in an escaped comma */
    assert_int_equal(parse(&o, &test_group, "name=x,,", &err), 0);
    assert_string_equal(opts_get_str(&o, "name"), "x,");
    opts_free(&o);
}

static void test_sizes(void **state)
{
    static const struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0", 0},
        {"512", 512},
        {"1b", 1},
        {"1B", 1},
        {"1k", 1024},
        {"1K", 1024},
        {"2M", 2ULL << 20},
        {"2m", 2ULL << 20},
        {"3G", 3ULL << 30},
        {"1T", 1ULL << 40},
        {"1P", 1ULL << 50},
        {"1E", 1ULL << 60},
        {"1.5G", 3ULL << 29},
        {"0.5k", 512},
        {"1.25M", 1310720},
        {"0x10", 16},
        {"0x10M", 16ULL << 20},
        {"0x1B", 27}, /* B and E are hex digits after 0x */
        {"15E", 15ULL << 60},
        {"18446744073709551615", UINT64_MAX},
        {"15.9999999999999999999E", 0xFFFFFFFFFFFFFFFEULL}, /* 18 fraction digits kept */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 0;
        int r = opts_parse_size(good[i].s, 1, &v);
        if (r)
            print_error("'%s' -> %d\n", good[i].s, r);
        assert_int_equal(r, 0);
        assert_int_equal(v, good[i].v);
    }
    static const char *const bad[] = {"",   "k",   "1Q", "1.5",    "1.5B", "1.G", "-1",  " 1",
                                      "1 ", "1kk", "0x", "0x1.5M", "1e3",  "+1",  ".5G", "1,5G"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 42;
        int r = opts_parse_size(bad[i], 1, &v);
        if (r != -EINVAL)
            print_error("'%s' -> %d\n", bad[i], r);
        assert_int_equal(r, -EINVAL);
        assert_int_equal(v, 42);
    }
    static const char *const range[] = {"16E", "18446744073709551616", "99999999999999999999k",
                                        "16384P", "0x10000000000000000"};
    for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++) {
        uint64_t v = 42;
        assert_int_equal(opts_parse_size(range[i], 1, &v), -ERANGE);
        assert_int_equal(v, 42);
    }
    /* unit for suffix-less values (-m) */
    uint64_t v = 0;
    assert_int_equal(opts_parse_size("512", 1ULL << 20, &v), 0);
    assert_int_equal(v, 512ULL << 20);
    assert_int_equal(opts_parse_size("17592186044416", 1ULL << 20, &v), -ERANGE);
    assert_int_equal(opts_parse_size("1.5", 1ULL << 20, &v), -EINVAL);
}

static void test_numbers(void **state)
{
    uint64_t v = 0;
    assert_int_equal(opts_parse_number("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(opts_parse_number("0x501", &v), 0);
    assert_int_equal(v, 0x501);
    assert_int_equal(opts_parse_number("0XfF", &v), 0);
    assert_int_equal(v, 255);
    assert_int_equal(opts_parse_number("18446744073709551615", &v), 0);
    assert_int_equal(v, UINT64_MAX);
    assert_int_equal(opts_parse_number("18446744073709551616", &v), -ERANGE);
    assert_int_equal(opts_parse_number("0x1ffffffffffffffff", &v), -ERANGE);
    assert_int_equal(opts_parse_number("", &v), -EINVAL);
    assert_int_equal(opts_parse_number("0x", &v), -EINVAL);
    assert_int_equal(opts_parse_number("-1", &v), -EINVAL);
    assert_int_equal(opts_parse_number("1k", &v), -EINVAL);
    assert_int_equal(opts_parse_number("12a", &v), -EINVAL);
    assert_int_equal(opts_parse_number(" 1", &v), -EINVAL);

    expect_fail(&test_group, "99999999999999999999",
                "number '99999999999999999999' is out of range");
    expect_fail(&test_group, "1,sockets=x", "invalid number 'x' for 'sockets'");
    expect_fail(&test_group, "1,size=12Q", "invalid size '12Q' for 'size'");
    expect_fail(&test_group, "1,size=16E", "size '16E' for 'size' is too large");
    expect_fail(&test_group, "four", "invalid number 'four'");
}

static void test_bools(void **state)
{
    static const char *const on[] = {"on", "yes", "true"};
    static const char *const off[] = {"off", "no", "false"};
    for (size_t i = 0; i < 3; i++) {
        bool b = false;
        assert_int_equal(opts_parse_bool(on[i], &b), 0);
        assert_true(b);
        assert_int_equal(opts_parse_bool(off[i], &b), 0);
        assert_false(b);
    }
    bool b;
    assert_int_equal(opts_parse_bool("ON", &b), -EINVAL);
    assert_int_equal(opts_parse_bool("1", &b), -EINVAL);
    assert_int_equal(opts_parse_bool("", &b), -EINVAL);

    struct opts o;
    struct error err;
    /* bare key = on, "nokey" = off, default from the table */
    assert_int_equal(parse(&o, &test_group, "1,on", &err), 0);
    assert_int_equal(opts_get_bool(&o, "on", &b, &err), 1);
    assert_true(b);
    opts_free(&o);
    assert_int_equal(parse(&o, &test_group, "1,noon", &err), 0);
    b = true;
    assert_int_equal(opts_get_bool(&o, "on", &b, &err), 1);
    assert_false(b);
    opts_free(&o);
    assert_int_equal(parse(&o, &test_group, "1", &err), 0);
    b = true;
    assert_int_equal(opts_get_bool(&o, "on", &b, &err), 1); /* default "off" */
    assert_false(b);
    opts_free(&o);
    expect_fail(&test_group, "1,on=maybe", "invalid boolean 'maybe' for 'on' (use on/off)");
    /* a bare non-bool key needs a value */
    expect_fail(&test_group, "1,sockets", "parameter 'sockets' requires a value");
    expect_fail(&test_group, "1,nosockets",
                "unknown parameter 'nosockets' (did you mean 'sockets'?)");
}

static void test_duplicates(void **state)
{
    struct opts o;
    struct error err;
    uint64_t v = 0;
    assert_int_equal(parse(&o, &test_group, "2,sockets=1,cpus=4,sockets=2", &err), 0);
    assert_int_equal(o.n, 2); /* one entry per key, in first-seen order */
    assert_int_equal(opts_get_number(&o, "cpus", &v, &err), 1);
    assert_int_equal(v, 4);
    assert_int_equal(opts_get_number(&o, "sockets", &v, &err), 1);
    assert_int_equal(v, 2);
    /* parsing again merges (QEMU's merged groups: -smp 4 -smp cores=2) */
    assert_int_equal(opts_parse(&o, &test_group, "size=1G,cpus=8", &err), 0);
    assert_int_equal(o.n, 3);
    assert_int_equal(opts_get_number(&o, "cpus", &v, &err), 1);
    assert_int_equal(v, 8);
    assert_int_equal(opts_get_size(&o, "size", &v, &err), 1);
    assert_int_equal(v, 1ULL << 30);
    opts_free(&o);
}

static void test_unknown_and_empty(void **state)
{
    expect_fail(&test_group, "2,socket=2", "unknown parameter 'socket' (did you mean 'sockets'?)");
    expect_fail(&test_group, "2,zzzzzzzz=2", "unknown parameter 'zzzzzzzz'");
    expect_fail(&test_group, "2,=3", "empty parameter name");
    expect_fail(&test_group, "cpus=", "parameter 'cpus' requires a value");
    expect_fail(&test_group, "1,size=", "parameter 'size' requires a value");
    expect_fail(&test_group, "1,on=", "parameter 'on' requires a value");
    expect_fail(&test_group, ",cpus=1", "parameter 'cpus' requires a value");
    expect_fail(&noimplied_group, ",cpus=1", "empty parameter name");

    struct opts o;
    struct error err;
    /* empty string values are allowed */
    assert_int_equal(parse(&o, &test_group, "name=", &err), 0);
    assert_string_equal(opts_get_str(&o, "name"), "");
    opts_free(&o);
    /* empty text: nothing */
    assert_int_equal(parse(&o, &test_group, "", &err), 0);
    assert_int_equal(o.n, 0);
    uint64_t v = 0;
    assert_int_equal(opts_get_number(&o, "cpus", &v, &err), 1); /* default */
    assert_int_equal(v, 1);
    assert_int_equal(opts_get_number(&o, "sockets", &v, &err), 0); /* none */
    assert_false(opts_has(&o, "cpus"));
    assert_null(opts_get_str(&o, "nosuch"));
    opts_free(&o);
}

static void test_free_form(void **state)
{
    struct opts o;
    struct error err;
    assert_int_equal(parse(&o, &free_group, "drv,iobase=0x501,flag,noother,cpus=3", &err), 0);
    assert_string_equal(opts_get_str(&o, "name"), "drv");
    assert_string_equal(opts_get_str(&o, "iobase"), "0x501");
    assert_string_equal(opts_get_str(&o, "flag"), "on");
    assert_string_equal(opts_get_str(&o, "other"), "off");
    /* known keys are still type-checked */
    opts_free(&o);
    expect_fail(&free_group, "drv,cpus=x", "invalid number 'x' for 'cpus'");

    /* opts_validate re-checks against a stricter group and retargets defaults */
    assert_int_equal(parse(&o, &free_group, "drv,cpus=3", &err), 0);
    assert_int_equal(opts_validate(&o, &test_group, &err), 0);
    assert_ptr_equal(o.group, &test_group);
    opts_free(&o);
    assert_int_equal(parse(&o, &free_group, "drv,socket=3", &err), 0);
    assert_int_equal(opts_validate(&o, &test_group, &err), -1);
    assert_string_equal(err.msg, "unknown parameter 'socket' (did you mean 'sockets'?)");
    opts_free(&o);
}

static void test_help_request(void **state)
{
    static const char *const texts[] = {"help", "?", "4,help", "cpus=2,?"};
    for (size_t i = 0; i < 4; i++) {
        struct opts o;
        struct error err;
        assert_int_equal(parse(&o, &test_group, texts[i], &err), 0);
        assert_true(o.help);
        opts_free(&o);
    }
    struct opts o;
    struct error err;
    assert_int_equal(parse(&o, &free_group, "drv,help", &err), 0);
    assert_true(o.help);
    assert_string_equal(opts_get_str(&o, "name"), "drv");
    opts_free(&o);
    assert_true(opts_is_help("help"));
    assert_true(opts_is_help("?"));
    assert_false(opts_is_help("helpme"));
}

static void test_help_text(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    opts_print_help(&test_group, f);
    fclose(f);
    assert_non_null(strstr(buf, "test options:\n"));
    assert_non_null(strstr(buf, "cpus=<num>"));
    assert_non_null(strstr(buf, "number of CPUs (number, default 1, implied first key)"));
    assert_non_null(strstr(buf, "size=<size>"));
    assert_non_null(strstr(buf, "on=on|off"));
    assert_non_null(strstr(buf, "name=<str>"));
    assert_non_null(strstr(buf, "default anon"));
    free(buf);

    char syn[256];
    opts_synopsis(&test_group, syn, sizeof(syn));
    assert_string_equal(syn, "[cpus=]<num>[,sockets=<num>][,size=<size>][,on=on|off][,name=<str>]");
    opts_synopsis(&free_group, syn, 16); /* truncation is safe */
    assert_int_equal(strlen(syn), 15);
}

static void test_list_add(void **state)
{
    struct opts *items = NULL;
    size_t n = 0;
    struct opts o;
    struct error err;
    assert_int_equal(parse(&o, &free_group, "a,id=x", &err), 0);
    assert_int_equal(opts_list_add(&items, &n, &o, "thing", &err), 0);
    assert_int_equal(o.n, 0); /* moved */
    assert_int_equal(parse(&o, &free_group, "b", &err), 0);
    assert_int_equal(opts_list_add(&items, &n, &o, "thing", &err), 0);
    assert_int_equal(parse(&o, &free_group, "c,id=x", &err), 0);
    assert_int_equal(opts_list_add(&items, &n, &o, "thing", &err), -1);
    assert_string_equal(err.msg, "duplicate thing id 'x'");
    opts_free(&o); /* untouched on failure */
    assert_int_equal(n, 2);
    assert_string_equal(opts_get_str(&items[0], "name"), "a");
    assert_string_equal(opts_get_str(&items[1], "name"), "b");
    opts_list_free(&items, &n);
    assert_null(items);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_implied_key),
        cmocka_unit_test(test_comma_escape),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_unknown_and_empty),
        cmocka_unit_test(test_free_form),
        cmocka_unit_test(test_help_request),
        cmocka_unit_test(test_help_text),
        cmocka_unit_test(test_list_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
