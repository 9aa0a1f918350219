/*
 * CPUID topology: APIC ID packing, leaf values for Intel- and AMD-like tables, and a model of how
 * Linux 6.1 turns those leaves into /proc/cpuinfo's physical id / core id / siblings / cpu cores.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "arch/x86/cpuid.h"

#define MAX_ENT  64
#define FLAG_IDX KVM_CPUID_FLAG_SIGNIFCANT_INDEX

struct table {
    struct kvm_cpuid_entry2 e[MAX_ENT];
    unsigned n;
};

static void put(struct table *t, uint32_t fn, uint32_t idx, uint32_t flags, uint32_t a, uint32_t b,
                uint32_t c, uint32_t d)
{
    assert_true(t->n < MAX_ENT);
    t->e[t->n++] = (struct kvm_cpuid_entry2){
        .function = fn, .index = idx, .flags = flags, .eax = a, .ebx = b, .ecx = c, .edx = d};
}

static void vendor(struct table *t, uint32_t max, const char *v)
{
    uint32_t r[3];
    memcpy(r, v, 12);
    put(t, 0, 0, 0, max, r[0], r[2], r[1]);
}

/* Something like KVM_GET_SUPPORTED_CPUID on a Skylake-SP host (host topology still in 4/0xB). */
static void intel_table(struct table *t)
{
    t->n = 0;
    vendor(t, 0x16, "GenuineIntel");
    put(t, 1, 0, 0, 0x50654, 0x00400800 | 0x17000000, 0x7ffefbff, 0xbfebfbff);
    put(t, 4, 0, FLAG_IDX, 0x7c004121, 0x01c0003f, 0x3f, 0);   /* L1d */
    put(t, 4, 1, FLAG_IDX, 0x7c004122, 0x01c0003f, 0x3f, 0);   /* L1i */
    put(t, 4, 2, FLAG_IDX, 0x7c004143, 0x03c0003f, 0x3ff, 0);  /* L2 */
    put(t, 4, 3, FLAG_IDX, 0x7c0fc163, 0x0280003f, 0xdfff, 4); /* L3 */
    put(t, 4, 4, FLAG_IDX, 0, 0, 0, 0);
    put(t, 0xb, 0, FLAG_IDX, 1, 2, 0x100, 0x17);
    put(t, 0xb, 1, FLAG_IDX, 6, 40, 0x201, 0x17);
    put(t, 0x40000000, 0, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d);
    put(t, 0x80000000, 0, 0, 0x80000008, 0, 0, 0);
    put(t, 0x80000001, 0, 0, 0, 0, 0x121, 0x2c100800);
    put(t, 0x80000008, 0, 0, 0x302e, 0, 0, 0);
}

/* An AMD Zen 3 host (family 0x19): no leaf 0xB in the table, TOPOEXT set. */
static void amd_table(struct table *t, uint32_t max_basic)
{
    t->n = 0;
    vendor(t, max_basic, "AuthenticAMD");
    put(t, 1, 0, 0, 0xa20f10, 0x0b100800, 0x7ef8320b, 0x178bfbff);
    put(t, 0x80000000, 0, 0, 0x80000021, 0x68747541, 0x444d4163, 0x69746e65);
    put(t, 0x80000001, 0, 0, 0xa20f10, 0x20000000, 0x75c237ff | (1u << 22), 0x2fd3fbff);
    put(t, 0x80000008, 0, 0, 0x3030, 0x111ef657, 0x400f, 0x10000);
    put(t, 0x8000001d, 0, FLAG_IDX, 0x4121, 0x1c0003f, 0x3f, 0);
    put(t, 0x8000001d, 1, FLAG_IDX, 0x4122, 0x1c0003f, 0x3f, 0);
    put(t, 0x8000001d, 2, FLAG_IDX, 0x4143, 0x1c0003f, 0x3ff, 2);
    put(t, 0x8000001d, 3, FLAG_IDX, 0x3c163, 0x3c0003f, 0x7fff, 1);
    put(t, 0x8000001d, 4, FLAG_IDX, 0, 0, 0, 0);
    put(t, 0x8000001e, 0, 0, 5, 0x105, 0, 0);
}

static const struct kvm_cpuid_entry2 *get(const struct table *t, uint32_t fn, uint32_t idx)
{
    for (unsigned i = 0; i < t->n; i++)
        if (t->e[i].function == fn && (!(t->e[i].flags & FLAG_IDX) || t->e[i].index == idx))
            return &t->e[i];
    return NULL;
}

static void regs(const struct table *t, uint32_t fn, uint32_t idx, uint32_t r[4])
{
    const struct kvm_cpuid_entry2 *e = get(t, fn, idx);
    r[0] = e ? e->eax : 0;
    r[1] = e ? e->ebx : 0;
    r[2] = e ? e->ecx : 0;
    r[3] = e ? e->edx : 0;
}

static void test_apic_ids(void **state)
{
    struct x86_topology one = {1, 1, 1, 1};
    assert_int_equal(x86_apic_id(&one, 0), 0);

    struct x86_topology s2c2 = {2, 1, 2, 1};
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(x86_apic_id(&s2c2, i), i);

    struct x86_topology c3 = {2, 1, 3, 1}; /* core field is 2 bits wide */
    const uint32_t c3_ids[] = {0, 1, 2, 4, 5, 6};
    for (unsigned i = 0; i < 6; i++)
        assert_int_equal(x86_apic_id(&c3, i), c3_ids[i]);

    struct x86_topology t2 = {1, 1, 3, 2}; /* threads lowest */
    const uint32_t t2_ids[] = {0, 1, 2, 3, 4, 5};
    for (unsigned i = 0; i < 6; i++)
        assert_int_equal(x86_apic_id(&t2, i), t2_ids[i]);
    struct x86_topology s2c3t2 = {2, 1, 3, 2};
    assert_int_equal(x86_apic_id(&s2c3t2, 6), 8); /* socket 1 starts at 1 << 3 */
    assert_int_equal(x86_apic_id(&s2c3t2, 11), 13);

    struct x86_topology d2 = {2, 2, 2, 2};
    assert_int_equal(x86_apic_id(&d2, 4), 4); /* die 1 */
    assert_int_equal(x86_apic_id(&d2, 8), 8); /* socket 1 */
    assert_int_equal(x86_apic_id(&d2, 15), 15);
    assert_int_equal(x86_topo_die_bits(&d2), 1);
}

/* ---- A model of Linux 6.1's topology detection (arch/x86/kernel/cpu/{topology,amd,intel}.c) -- */

struct linux_cpu {
    unsigned apicid, phys, core, die;
};

static unsigned count_order(unsigned n)
{
    unsigned b = 0;
    while ((1u << b) < n)
        b++;
    return b;
}

/* detect_extended_topology(): returns 0 if leaf 0x1F/0xB is usable. */
static int linux_ext_topology(const struct table *t, struct linux_cpu *c, unsigned *siblings,
                              unsigned *max_cores)
{
    uint32_t r[4], max_basic;
    regs(t, 0, 0, r);
    max_basic = r[0];
    uint32_t leaf = 0;
    if (max_basic >= 0x1f) {
        regs(t, 0x1f, 0, r);
        if (r[1] && ((r[2] >> 8) & 0xff) == 1)
            leaf = 0x1f;
    }
    if (!leaf && max_basic >= 0xb) {
        regs(t, 0xb, 0, r);
        if (r[1] && ((r[2] >> 8) & 0xff) == 1)
            leaf = 0xb;
    }
    if (!leaf)
        return -1;
    regs(t, leaf, 0, r);
    c->apicid = r[3];
    unsigned core_sib = r[1] & 0xffff, ht_w = r[0] & 0x1f, core_w = ht_w, die_w = ht_w;
    unsigned pkg_w = ht_w;
    int die_present = 0;
    if ((r[1] & 0xffff) > *siblings)
        *siblings = r[1] & 0xffff;
    for (unsigned sub = 1;; sub++) {
        regs(t, leaf, sub, r);
        unsigned type = (r[2] >> 8) & 0xff;
        if (type == 2) {
            core_sib = r[1] & 0xffff;
            core_w = die_w = r[0] & 0x1f;
        }
        if (type == 5) {
            die_present = 1;
            die_w = r[0] & 0x1f;
        }
        if (type == 0)
            break;
        pkg_w = r[0] & 0x1f;
    }
    c->core = (c->apicid >> ht_w) & ((1u << (pkg_w - ht_w)) - 1);
    if (die_present)
        c->die = (c->apicid >> core_w) & ((1u << (die_w - core_w)) - 1);
    c->phys = c->apicid >> pkg_w;
    *max_cores = core_sib / *siblings;
    return 0;
}

static void linux_identify(const struct table *t, int amd, struct linux_cpu *c)
{
    uint32_t r[4];
    memset(c, 0, sizeof(*c));
    regs(t, 1, 0, r);
    c->apicid = r[1] >> 24;
    c->phys = c->apicid;
    unsigned family = ((r[0] >> 8) & 0xf) + ((r[0] >> 20) & 0xff);
    unsigned siblings = 1, max_cores = 1;
    if (!amd) {
        int rc = linux_ext_topology(t, c, &siblings, &max_cores);
        assert_int_equal(rc, 0); /* all our Intel tables have leaf 0xB */
        return;
    }
    regs(t, 0x80000001, 0, r);
    int topoext = !!(r[2] & (1u << 22));
    regs(t, 0x80000008, 0, r);
    max_cores = (r[2] & 0xff) + 1;
    unsigned bits = (r[2] >> 12) & 0xf;
    if (!bits)
        bits = count_order(max_cores);
    if (topoext) {
        regs(t, 0x8000001e, 0, r);
        siblings = ((r[1] >> 8) & 0xff) + 1;
    }
    /* amd_detect_cmp */
    c->core = c->apicid & ((1u << bits) - 1);
    c->phys = c->apicid >> bits;
    c->die = c->phys;
    /* amd_get_topology */
    if (topoext) {
        regs(t, 0x8000001e, 0, r);
        c->die = r[2] & 0xff;
        if (family >= 0x17) {
            c->core = r[1] & 0xff;
            if (siblings > 1)
                max_cores /= siblings;
        }
        linux_ext_topology(t, c, &siblings, &max_cores);
    }
}

/* Set up every vCPU from `base` and check what /proc/cpuinfo would show. */
static void check_cpuinfo(const struct table *base, int amd, struct x86_topology topo)
{
    unsigned n = topo.sockets * topo.dies * topo.cores * topo.threads;
    struct linux_cpu cpus[64];
    assert_true(n <= 64);
    for (unsigned i = 0; i < n; i++) {
        struct table t = *base;
        assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, i, n), 0);
        linux_identify(&t, amd, &cpus[i]);
        assert_int_equal(cpus[i].apicid, x86_apic_id(&topo, i));
    }
    for (unsigned i = 0; i < n; i++) {
        unsigned socket = i / (topo.threads * topo.cores * topo.dies);
        unsigned core_in_die = i / topo.threads % topo.cores;
        assert_int_equal(cpus[i].phys, socket);
        if (topo.dies == 1)
            assert_int_equal(cpus[i].core, core_in_die);
        unsigned siblings = 0, cores = 0;
        for (unsigned j = 0; j < n; j++) {
            if (cpus[j].phys != cpus[i].phys || cpus[j].die != cpus[i].die)
                continue;
            siblings++;
            int first = 1; /* count distinct cores: first thread of each core */
            for (unsigned k = 0; k < j; k++)
                if (cpus[k].phys == cpus[j].phys && cpus[k].die == cpus[j].die &&
                    cpus[k].core == cpus[j].core)
                    first = 0;
            cores += first;
        }
        unsigned expect_sib = topo.threads * topo.cores; /* Linux: CPUs sharing package and die */
        assert_int_equal(siblings, expect_sib);
        assert_int_equal(cores, expect_sib / topo.threads);
    }
}

static void test_cpuinfo_intel(void **state)
{
    struct table t;
    intel_table(&t);
    check_cpuinfo(&t, 0, (struct x86_topology){1, 1, 1, 1});
    check_cpuinfo(&t, 0, (struct x86_topology){2, 1, 2, 1});
    check_cpuinfo(&t, 0, (struct x86_topology){2, 1, 3, 2});
    check_cpuinfo(&t, 0, (struct x86_topology){1, 1, 4, 2});
}

static void test_cpuinfo_amd(void **state)
{
    struct table t;
    amd_table(&t, 0x10); /* leaf 0xB added and used */
    check_cpuinfo(&t, 1, (struct x86_topology){1, 1, 1, 1});
    check_cpuinfo(&t, 1, (struct x86_topology){2, 1, 2, 1});
    check_cpuinfo(&t, 1, (struct x86_topology){2, 1, 3, 2});
    check_cpuinfo(&t, 1, (struct x86_topology){2, 2, 2, 1});
    amd_table(&t, 0xd); /* no leaf 0xB possible: 0x8000001E alone */
    check_cpuinfo(&t, 1, (struct x86_topology){2, 1, 2, 1});
    check_cpuinfo(&t, 1, (struct x86_topology){2, 1, 3, 2});
    amd_table(&t, 0xd); /* no TOPOEXT either: 0x80000008 alone */
    for (unsigned i = 0; i < t.n; i++)
        if (t.e[i].function == 0x80000001)
            t.e[i].ecx &= ~(1u << 22);
    check_cpuinfo(&t, 1, (struct x86_topology){2, 1, 2, 1});
    check_cpuinfo(&t, 1, (struct x86_topology){2, 1, 3, 1});
}

static void test_intel_leaves(void **state)
{
    struct table t;
    intel_table(&t);
    struct x86_topology topo = {2, 1, 3, 2}; /* APIC: 1 thread bit, 2 core bits */
    unsigned before = t.n;
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 9, 12), 0);
    uint32_t apic = x86_apic_id(&topo, 9); /* socket 1, core 1, thread 1 */
    assert_int_equal(apic, 0xb);
    uint32_t r[4];
    regs(&t, 1, 0, r);
    assert_int_equal(r[1] >> 24, apic);
    assert_int_equal((r[1] >> 16) & 0xff, 8);
    assert_int_equal(r[1] & 0xffff, 0x0800); /* CLFLUSH size kept */
    assert_true(r[3] & (1u << 28));
    assert_true(r[2] & (1u << 31));
    assert_true(r[2] & (1u << 21)); /* x2APIC kept */
    regs(&t, 0xb, 0, r);
    assert_int_equal(r[0], 1);
    assert_int_equal(r[1], 2);
    assert_int_equal(r[2], 0x100);
    assert_int_equal(r[3], apic);
    regs(&t, 0xb, 1, r);
    assert_int_equal(r[0], 3);
    assert_int_equal(r[1], 6);
    assert_int_equal(r[2], 0x201);
    assert_int_equal(r[3], apic);
    regs(&t, 0xb, 2, r);
    assert_int_equal(r[0], 0);
    assert_int_equal(r[1], 0);
    assert_int_equal(r[2], 2);
    const uint32_t host_eax[4] = {0x7c004121, 0x7c004122, 0x7c004143, 0x7c0fc163};
    /* leaf 4: cores per package (rounded) - 1 = 3; sharing: L1/L2 2 threads, L3 die (8 IDs) */
    for (unsigned i = 0; i < 4; i++) {
        regs(&t, 4, i, r);
        assert_int_equal(r[0] >> 26, 3);
        unsigned level = (r[0] >> 5) & 7;
        assert_int_equal((r[0] >> 14) & 0xfff, level <= 2 ? 1 : 7);
        assert_int_equal(r[0] & 0x3fff, host_eax[i] & 0x3fff);
    }
    regs(&t, 4, 4, r);
    assert_int_equal(r[0], 0);
    /* KVM's own leaves untouched */
    regs(&t, 0x40000000, 0, r);
    assert_int_equal(r[1], 0x4b4d564b);
    assert_null(get(&t, 0x8000001e, 0)); /* no AMD leaves on Intel */
    assert_int_equal(t.n, before + 1);   /* 0xB: 2 host subleaves -> 3 */
}

static void test_intel_single(void **state)
{
    struct table t;
    intel_table(&t);
    struct x86_topology topo = {1, 1, 1, 1};
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 0, 1), 0);
    uint32_t r[4];
    regs(&t, 1, 0, r);
    assert_int_equal(r[1] >> 16, 1);
    assert_false(r[3] & (1u << 28));
    regs(&t, 0xb, 1, r);
    assert_int_equal(r[0], 0);
    assert_int_equal(r[1], 1);
}

static void test_intel_dies(void **state)
{
    struct table t;
    intel_table(&t);
    struct x86_topology topo = {2, 2, 2, 1};
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 7, 8), 0);
    uint32_t r[4];
    regs(&t, 0, 0, r);
    assert_int_equal(r[0], 0x1f); /* raised so leaf 0x1F is visible */
    regs(&t, 0x1f, 1, r);
    assert_int_equal(r[0], 1);
    assert_int_equal(r[1], 2);
    assert_int_equal(r[2], 0x201);
    regs(&t, 0x1f, 2, r);
    assert_int_equal(r[0], 2);
    assert_int_equal(r[1], 4);
    assert_int_equal(r[2], 0x502);
    assert_int_equal(r[3], 7);
    regs(&t, 0x1f, 3, r);
    assert_int_equal(r[2], 3);
    struct linux_cpu c;
    linux_identify(&t, 0, &c);
    assert_int_equal(c.phys, 1);
    assert_int_equal(c.die, 1);
    assert_int_equal(c.core, 3); /* Linux numbers cores across the package's dies */
}

static void test_amd_leaves(void **state)
{
    struct table t;
    amd_table(&t, 0x10);
    struct x86_topology topo = {2, 1, 2, 1};
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 3, 4), 0);
    uint32_t r[4];
    regs(&t, 1, 0, r);
    assert_int_equal(r[1] >> 24, 3);
    assert_int_equal((r[1] >> 16) & 0xff, 2);
    assert_true(r[3] & (1u << 28));
    regs(&t, 0x80000001, 0, r);
    assert_true(r[2] & 2); /* CmpLegacy */
    assert_true(r[2] & (1u << 22));
    regs(&t, 0x80000008, 0, r);
    assert_int_equal(r[0], 0x3030); /* address sizes kept */
    assert_int_equal(r[2] & 0xff, 1);
    assert_int_equal((r[2] >> 12) & 0xf, 1);
    regs(&t, 0x8000001e, 0, r);
    assert_int_equal(r[0], 3);
    assert_int_equal(r[1], 0x001); /* 1 thread per core, core 1 */
    assert_int_equal(r[2], 0x001); /* node 1 of 1 per socket */
    for (unsigned i = 0; i < 4; i++) {
        regs(&t, 0x8000001d, i, r);
        unsigned level = (r[0] >> 5) & 7;
        assert_int_equal((r[0] >> 14) & 0xfff, level <= 2 ? 0 : 1);
    }
    regs(&t, 0xb, 1, r); /* added: within max basic 0x10 */
    assert_int_equal(r[0], 1);
    assert_int_equal(r[1], 2);
    assert_int_equal(r[3], 3);
    assert_null(get(&t, 0x1f, 0));
    /* leaf 4 is not Intel's cache leaf here and stays absent */
    assert_null(get(&t, 4, 0));

    /* A single-CPU guest clears CmpLegacy/HTT. */
    amd_table(&t, 0x10);
    topo = (struct x86_topology){1, 1, 1, 1};
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 0, 1), 0);
    regs(&t, 0x80000001, 0, r);
    assert_false(r[2] & 2);
    regs(&t, 1, 0, r);
    assert_false(r[3] & (1u << 28));
    regs(&t, 0x80000008, 0, r);
    assert_int_equal(r[2] & 0xf0ff, 0);
}

static void test_amd_adds_8000001e(void **state)
{
    struct table t;
    amd_table(&t, 0x10);
    for (unsigned i = 0; i < t.n; i++) /* KVM did not list 0x8000001E */
        if (t.e[i].function == 0x8000001e)
            t.e[i] = t.e[--t.n];
    struct x86_topology topo = {1, 1, 4, 2};
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 5, 8), 0);
    uint32_t r[4];
    regs(&t, 0x8000001e, 0, r);
    assert_int_equal(r[0], 5);
    assert_int_equal(r[1], 0x102);
}

static void test_errors(void **state)
{
    struct table t;
    intel_table(&t);
    struct x86_topology topo = {2, 1, 2, 1};
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 4, 4), -1);
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 0, 5), -1);
    struct x86_topology bad = {0, 1, 1, 1};
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &bad, 0, 1), -1);
    /* no room for the third 0xB subleaf */
    intel_table(&t);
    unsigned n = t.n;
    assert_int_equal(x86_cpuid_setup(t.e, &n, t.n, &topo, 0, 4), -1);
    /* no leaf 0 */
    t.n = 0;
    assert_int_equal(x86_cpuid_setup(t.e, &t.n, MAX_ENT, &topo, 0, 4), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apic_ids),     cmocka_unit_test(test_cpuinfo_intel),
        cmocka_unit_test(test_cpuinfo_amd),  cmocka_unit_test(test_intel_leaves),
        cmocka_unit_test(test_intel_single), cmocka_unit_test(test_intel_dies),
        cmocka_unit_test(test_amd_leaves),   cmocka_unit_test(test_amd_adds_8000001e),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
