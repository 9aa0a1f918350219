/* -smp topology inference: expected values are what QEMU 7.2 (pc / microvm) resolves. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "cli/smp.h"

/* Given values; 0 means "not given" (zero values are tested separately with has_x). */
struct smp_case {
    uint64_t cpus, sockets, dies, cores, threads, maxcpus;
    struct smp_topology want;
};

static const struct smp_machine pc = {"pc", true, 255};
static const struct smp_machine microvm = {"microvm", false, 255};

static struct smp_request req_of(const struct smp_case *c)
{
    struct smp_request r = {
        .has_cpus = c->cpus != 0,
        .cpus = c->cpus,
        .has_sockets = c->sockets != 0,
        .sockets = c->sockets,
        .has_dies = c->dies != 0,
        .dies = c->dies,
        .has_cores = c->cores != 0,
        .cores = c->cores,
        .has_threads = c->threads != 0,
        .threads = c->threads,
        .has_maxcpus = c->maxcpus != 0,
        .maxcpus = c->maxcpus,
    };
    return r;
}

/* want = {cpus, maxcpus, sockets, dies, cores, threads} */
static const struct smp_case ok_cases[] = {
    /* Documentation examples (qemu-options "-smp"). */
    {8, 2, 0, 2, 2, 8, {8, 8, 2, 1, 2, 2}},
    {16, 2, 2, 2, 2, 16, {16, 16, 2, 2, 2, 2}},
    {2, 0, 0, 0, 0, 0, {2, 2, 1, 1, 2, 1}},    /* since 6.2: 1 socket of 2 cores */
    {1, 2, 0, 0, 0, 2, {1, 2, 2, 1, 1, 1}},    /* -smp 1,sockets=2,maxcpus=2 (numa) */
    {16, 2, 2, 0, 2, 0, {16, 16, 2, 2, 2, 2}}, /* omitted cores computed */
    /* Omitted values, checked against QEMU 7.2 on pc. */
    {0, 0, 0, 0, 0, 0, {1, 1, 1, 1, 1, 1}},         /* nothing: 1 cpu */
    {0, 2, 0, 0, 0, 0, {2, 2, 2, 1, 1, 1}},         /* sockets=2 */
    {0, 0, 0, 0, 0, 8, {8, 8, 1, 1, 8, 1}},         /* maxcpus=8 */
    {4, 0, 0, 0, 0, 8, {4, 8, 1, 1, 8, 1}},         /* 4,maxcpus=8 */
    {0, 0, 0, 2, 2, 0, {4, 4, 1, 1, 2, 2}},         /* threads=2,cores=2 */
    {8, 0, 0, 2, 0, 0, {8, 8, 4, 1, 2, 1}},         /* 8,cores=2: sockets next */
    {8, 2, 0, 2, 0, 0, {8, 8, 2, 1, 2, 2}},         /* 8,cores=2,sockets=2: threads last */
    {8, 2, 0, 0, 0, 0, {8, 8, 2, 1, 4, 1}},         /* 8,sockets=2 */
    {0, 0, 0, 4, 0, 8, {8, 8, 2, 1, 4, 1}},         /* cores=4,maxcpus=8 */
    {4, 0, 0, 0, 2, 8, {4, 8, 1, 1, 4, 2}},         /* 4,threads=2,maxcpus=8 */
    {0, 0, 2, 0, 0, 0, {2, 2, 1, 2, 1, 1}},         /* dies=2 */
    {6, 0, 2, 0, 0, 0, {6, 6, 1, 2, 3, 1}},         /* 6,dies=2 */
    {8, 0, 0, 0, 2, 0, {8, 8, 1, 1, 4, 2}},         /* 8,threads=2 */
    {255, 0, 0, 0, 0, 0, {255, 255, 1, 1, 255, 1}}, /* the limit */
};

static void test_resolve_ok(void **state)
{
    for (size_t i = 0; i < sizeof(ok_cases) / sizeof(ok_cases[0]); i++) {
        struct smp_request r = req_of(&ok_cases[i]);
        struct smp_topology t;
        struct error err = {0};
        memset(&t, 0xff, sizeof(t));
        int ret = smp_resolve(&r, &pc, &t, &err);
        if (ret != 0)
            print_error("case %zu: %s\n", i, err.msg);
        assert_int_equal(ret, 0);
        assert_false(err.set);
        assert_memory_equal(&t, &ok_cases[i].want, sizeof(t));
    }
}

static void expect_error(const struct smp_request *r, const struct smp_machine *m, const char *msg)
{
    struct smp_topology t = {0};
    struct error err = {0};
    assert_int_equal(smp_resolve(r, m, &t, &err), -1);
    assert_true(err.set);
    assert_string_equal(err.msg, msg);
}

static void test_product_mismatch(void **state)
{
    struct smp_case c = {6, 2, 0, 2, 0, 0, {0}};
    struct smp_request r = req_of(&c);
    expect_error(&r, &pc,
                 "Invalid CPU topology: product of the hierarchy must match maxcpus: "
                 "sockets (2) * dies (1) * cores (2) * threads (1) != maxcpus (6)");
    /* microvm has no dies: not shown */
    expect_error(&r, &microvm,
                 "Invalid CPU topology: product of the hierarchy must match maxcpus: "
                 "sockets (2) * cores (2) * threads (1) != maxcpus (6)");
    struct smp_case c2 = {4, 0, 0, 3, 0, 0, {0}};
    r = req_of(&c2);
    expect_error(&r, &pc,
                 "Invalid CPU topology: product of the hierarchy must match maxcpus: "
                 "sockets (1) * dies (1) * cores (3) * threads (1) != maxcpus (4)");
    /* computed cores of 0 */
    struct smp_case c3 = {2, 4, 0, 0, 0, 0, {0}};
    r = req_of(&c3);
    expect_error(&r, &pc,
                 "Invalid CPU topology: product of the hierarchy must match maxcpus: "
                 "sockets (4) * dies (1) * cores (0) * threads (1) != maxcpus (2)");
    struct smp_case c4 = {4, 2, 0, 2, 2, 0, {0}};
    r = req_of(&c4);
    expect_error(&r, &pc,
                 "Invalid CPU topology: product of the hierarchy must match maxcpus: "
                 "sockets (2) * dies (1) * cores (2) * threads (2) != maxcpus (4)");
}

static void test_maxcpus_below_cpus(void **state)
{
    struct smp_case c = {4, 0, 0, 0, 0, 2, {0}};
    struct smp_request r = req_of(&c);
    expect_error(&r, &pc,
                 "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
                 "sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)");
}

static void test_zero_rejected(void **state)
{
    const char *msg = "Invalid CPU topology: CPU topology parameters must be greater than zero";
    for (int k = 0; k < 6; k++) {
        struct smp_request r = {0};
        bool *has[] = {&r.has_cpus,  &r.has_sockets, &r.has_dies,
                       &r.has_cores, &r.has_threads, &r.has_maxcpus};
        *has[k] = true; /* given as 0 */
        expect_error(&r, &pc, msg);
    }
}

static void test_dies(void **state)
{
    struct smp_case c = {2, 0, 2, 0, 0, 0, {0}};
    struct smp_request r = req_of(&c);
    expect_error(&r, &microvm, "dies not supported by this machine's CPU topology");
    /* dies=1 is fine everywhere */
    struct smp_case c1 = {2, 0, 1, 0, 0, 0, {0}};
    r = req_of(&c1);
    struct smp_topology t;
    struct error err = {0};
    assert_int_equal(smp_resolve(&r, &microvm, &t, &err), 0);
    assert_int_equal(t.cores, 2);
    assert_int_equal(t.dies, 1);
}

static void test_max_cpus(void **state)
{
    struct smp_case c = {300, 0, 0, 0, 0, 0, {0}};
    struct smp_request r = req_of(&c);
    expect_error(&r, &pc, "Invalid SMP CPUs 300. The max CPUs supported by machine 'pc' is 255");
    struct smp_case c2 = {1, 0, 0, 0, 0, 256, {0}};
    r = req_of(&c2);
    expect_error(&r, &pc, "Invalid SMP CPUs 256. The max CPUs supported by machine 'pc' is 255");
    /* Huge values must not overflow into a valid product. */
    struct smp_case c3 = {0, 1ULL << 32, 0, 1ULL << 32, 1ULL << 32, 0, {0}};
    r = req_of(&c3);
    struct smp_topology t;
    struct error err = {0};
    assert_int_equal(smp_resolve(&r, &pc, &t, &err), -1);
    struct smp_case c4 = {UINT64_MAX, 0, 0, 0, 0, 0, {0}};
    r = req_of(&c4);
    memset(&err, 0, sizeof(err));
    assert_int_equal(smp_resolve(&r, &pc, &t, &err), -1);
    struct smp_case c5 = {16, 1ULL << 62, 4, 0, 0, 0, {0}};
    r = req_of(&c5);
    memset(&err, 0, sizeof(err));
    assert_int_equal(smp_resolve(&r, &pc, &t, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve_ok),
        cmocka_unit_test(test_product_mismatch),
        cmocka_unit_test(test_maxcpus_below_cpus),
        cmocka_unit_test(test_zero_rejected),
        cmocka_unit_test(test_dies),
        cmocka_unit_test(test_max_cpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
