/*
 * Topology in CPUID, and how Linux (6.1) reads it back into /proc/cpuinfo:
 *
 * - APIC IDs are packed socket|die|core|thread, each field ceil(log2(count)) bits wide, so every
 *   level is a shift of the APIC ID (what leaf 0xB/0x1F describe).
 * - Leaf 0xB is filled for every vendor when the maximum basic leaf reaches it. Linux uses it on
 *   Intel (detect_extended_topology from init_intel) and, when TOPOEXT is set, also on AMD
 *   (amd_get_topology calls detect_extended_topology): physical id = APIC ID >> package shift,
 *   core id = (APIC ID >> SMT shift) masked to the package, x86_max_cores = logical processors
 *   at the core level / threads per core.
 * - On AMD, before leaf 0xB is looked at: early_init_amd_mc takes x86_max_cores from
 *   0x80000008 ECX[7:0]+1 and the core-id width from ECX[15:12]; amd_detect_cmp derives
 *   physical id/core id from the APIC ID with that width; with TOPOEXT, threads per core come
 *   from 0x8000001E EBX[15:8]+1, core id from EBX[7:0] (family >= 0x17) and the die (node) id
 *   from ECX[7:0]. We make all of these agree with leaf 0xB so that the result is the same
 *   whichever path a kernel takes (no leaf 0xB on older AMD hosts, no TOPOEXT, ...).
 * - Siblings/cpu cores in /proc/cpuinfo come from CPUs sharing physical id and die id, so the node
 *   id in 0x8000001E ECX is per die (socket * dies + die), never shared across sockets.
 * - Cache leaves (Intel 4, AMD 0x8000001D) say which APIC IDs share a cache: L1/L2 per core, L3 per
 *   die. AMD's LLC id (cpu_llc_id) is APIC ID >> log2(threads sharing L3).
 * - Leaf 0x1F (Intel) is filled only when dies > 1; otherwise any KVM-listed 0x1F is dropped so
 *   Linux falls back to 0xB (a 0x1F with EBX = 0 is "not valid").
 */
#include "arch/x86/cpuid.h"

#include <string.h>

#define LEAF_VENDOR    0x0
#define LEAF_FEATURES  0x1
#define LEAF_CACHE     0x4
#define LEAF_TOPO      0xb
#define LEAF_TOPO2     0x1f
#define LEAF_EXT_MAX   0x80000000
#define LEAF_EXT_FEAT  0x80000001
#define LEAF_EXT_SIZES 0x80000008
#define LEAF_AMD_CACHE 0x8000001d
#define LEAF_AMD_TOPO  0x8000001e

#define CPUID1_ECX_HYPERVISOR (1U << 31)
#define CPUID1_EDX_HTT        (1U << 28)
#define EXT1_ECX_CMP_LEGACY   (1U << 1)
#define EXT1_ECX_TOPOEXT      (1U << 22)

#define TOPO_TYPE_INVALID 0
#define TOPO_TYPE_SMT     1
#define TOPO_TYPE_CORE    2
#define TOPO_TYPE_DIE     5

#define MAX_APIC_BITS 32

enum vendor { VENDOR_OTHER, VENDOR_INTEL, VENDOR_AMD };

static unsigned order(unsigned n)
{
    unsigned b = 0;
    while (b < MAX_APIC_BITS && (1ULL << b) < n)
        b++;
    return b;
}

unsigned x86_topo_thread_bits(const struct x86_topology *topo)
{
    return order(topo->threads);
}

unsigned x86_topo_core_bits(const struct x86_topology *topo)
{
    return order(topo->cores);
}

unsigned x86_topo_die_bits(const struct x86_topology *topo)
{
    return order(topo->dies);
}

uint32_t x86_apic_id(const struct x86_topology *topo, unsigned cpu_index)
{
    unsigned t = x86_topo_thread_bits(topo), c = x86_topo_core_bits(topo);
    unsigned d = x86_topo_die_bits(topo);
    unsigned threads = topo->threads ? topo->threads : 1, cores = topo->cores ? topo->cores : 1;
    unsigned dies = topo->dies ? topo->dies : 1;
    unsigned thread = cpu_index % threads;
    unsigned core = cpu_index / threads % cores;
    unsigned die = cpu_index / threads / cores % dies;
    unsigned socket = cpu_index / threads / cores / dies;
    uint64_t id =
        (uint64_t)socket << (t + c + d) | (uint64_t)die << (t + c) | (uint64_t)core << t | thread;
    return (uint32_t)id;
}

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid_entry2 *e, unsigned n, uint32_t fn,
                                     uint32_t index)
{
    for (unsigned i = 0; i < n; i++)
        if (e[i].function == fn &&
            (!(e[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e[i].index == index))
            return &e[i];
    return NULL;
}

static void remove_leaf(struct kvm_cpuid_entry2 *e, unsigned *n, uint32_t fn)
{
    unsigned j = 0;
    for (unsigned i = 0; i < *n; i++)
        if (e[i].function != fn)
            e[j++] = e[i];
    *n = j;
}

static struct kvm_cpuid_entry2 *add(struct kvm_cpuid_entry2 *e, unsigned *n, unsigned max,
                                    uint32_t fn, uint32_t index, uint32_t flags)
{
    if (*n >= max)
        return NULL;
    struct kvm_cpuid_entry2 *x = &e[(*n)++];
    memset(x, 0, sizeof(*x));
    x->function = fn;
    x->index = index;
    x->flags = flags;
    return x;
}

static enum vendor get_vendor(const struct kvm_cpuid_entry2 *leaf0)
{
    char s[12];
    memcpy(s, &leaf0->ebx, 4);
    memcpy(s + 4, &leaf0->edx, 4);
    memcpy(s + 8, &leaf0->ecx, 4);
    if (!memcmp(s, "GenuineIntel", 12))
        return VENDOR_INTEL;
    if (!memcmp(s, "AuthenticAMD", 12) || !memcmp(s, "HygonGenuine", 12))
        return VENDOR_AMD;
    return VENDOR_OTHER;
}

struct topo_ctx {
    const struct x86_topology *topo;
    uint32_t apic_id;
    unsigned t, c, d;  /* field widths */
    unsigned per_core; /* logical processors per core, die, package (actual counts) */
    unsigned per_die, per_pkg;
};

static uint32_t min_u32(uint64_t a, uint32_t b)
{
    return a < b ? (uint32_t)a : b;
}

struct level {
    uint32_t shift, count, type;
};

/* Fill leaf 0xB or 0x1F: SMT, core, (die), then one invalid level. */
static int fill_ext_topology(struct kvm_cpuid_entry2 *e, unsigned *n, unsigned max, uint32_t fn,
                             const struct topo_ctx *x, int with_die)
{
    struct level lv[4];
    unsigned nl = 0;
    lv[nl++] = (struct level){x->t, x->topo->threads, TOPO_TYPE_SMT};
    if (with_die) {
        lv[nl++] = (struct level){x->t + x->c, x->per_die, TOPO_TYPE_CORE};
        lv[nl++] = (struct level){x->t + x->c + x->d, x->per_pkg, TOPO_TYPE_DIE};
    } else {
        /* Without a die level the core level reaches up to the package. */
        lv[nl++] = (struct level){x->t + x->c + x->d, x->per_pkg, TOPO_TYPE_CORE};
    }
    lv[nl++] = (struct level){0, 0, TOPO_TYPE_INVALID};

    remove_leaf(e, n, fn);
    for (unsigned i = 0; i < nl; i++) {
        struct kvm_cpuid_entry2 *l = add(e, n, max, fn, i, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        if (!l)
            return -1;
        l->eax = lv[i].shift & 0x1f;
        l->ebx = lv[i].count & 0xffff;
        l->ecx = lv[i].type << 8 | (i & 0xff);
        l->edx = x->apic_id;
    }
    return 0;
}

/* Threads sharing a cache at `level` (1..3+) minus one, as cache leaves encode it (12 bits). */
static uint32_t cache_sharing(const struct topo_ctx *x, unsigned level)
{
    unsigned bits = level <= 2 ? x->t : x->t + x->c;
    return (uint32_t)(((1ULL << bits) - 1) & 0xfff);
}

static void fill_intel(struct kvm_cpuid_entry2 *e, unsigned n, const struct topo_ctx *x)
{
    for (unsigned i = 0; i < n; i++) {
        struct kvm_cpuid_entry2 *l = &e[i];
        if (l->function != LEAF_CACHE || (l->eax & 0x1f) == 0)
            continue;
        unsigned level = (l->eax >> 5) & 7;
        uint32_t cores = (uint32_t)(((1ULL << (x->c + x->d)) - 1) & 0x3f);
        l->eax = (l->eax & 0x3fff) | cache_sharing(x, level) << 14 | cores << 26;
    }
}

static int fill_amd(struct kvm_cpuid_entry2 *e, unsigned *n, unsigned max, uint32_t max_ext,
                    const struct topo_ctx *x, unsigned die_index)
{
    struct kvm_cpuid_entry2 *l;
    int topoext = 0;

    if ((l = find(e, *n, LEAF_EXT_FEAT, 0))) {
        /* CmpLegacy: HTT in leaf 1 counts cores, not just hyper-threads. */
        if (x->per_pkg > 1)
            l->ecx |= EXT1_ECX_CMP_LEGACY;
        else
            l->ecx &= ~EXT1_ECX_CMP_LEGACY;
        topoext = !!(l->ecx & EXT1_ECX_TOPOEXT);
    }
    /* Only patched, never added: its EAX holds the address sizes. */
    if ((l = find(e, *n, LEAF_EXT_SIZES, 0))) {
        uint32_t pkg_bits = x->t + x->c + x->d;
        l->ecx = (l->ecx & ~0xf0ffU) | (pkg_bits & 0xf) << 12 | min_u32(x->per_pkg - 1, 0xff);
    }
    if (!topoext)
        return 0;
    for (unsigned i = 0; i < *n; i++) {
        l = &e[i];
        if (l->function != LEAF_AMD_CACHE || (l->eax & 0x1f) == 0)
            continue;
        unsigned level = (l->eax >> 5) & 7;
        l->eax = (l->eax & ~(0xfffU << 14)) | cache_sharing(x, level) << 14;
    }
    if (max_ext >= LEAF_AMD_TOPO) {
        l = find(e, *n, LEAF_AMD_TOPO, 0);
        if (!l && !(l = add(e, n, max, LEAF_AMD_TOPO, 0, 0)))
            return -1;
        uint32_t core_id = (x->apic_id >> x->t) & (uint32_t)((1ULL << (x->c + x->d)) - 1);
        l->eax = x->apic_id;
        l->ebx = (min_u32(x->topo->threads - 1, 0xff) << 8) | (core_id & 0xff);
        l->ecx = (min_u32(x->topo->dies - 1, 7) << 8) | (die_index & 0xff);
        l->edx = 0;
    }
    return 0;
}

int x86_cpuid_setup(struct kvm_cpuid_entry2 *entries, unsigned *nent, unsigned max_nent,
                    const struct x86_topology *topo, unsigned cpu_index, unsigned nr_cpus)
{
    if (!topo->sockets || !topo->dies || !topo->cores || !topo->threads)
        return -1;
    uint64_t total = (uint64_t)topo->sockets * topo->dies * topo->cores * topo->threads;
    if (cpu_index >= nr_cpus || nr_cpus > total || *nent > max_nent)
        return -1;
    struct topo_ctx x = {
        .topo = topo,
        .apic_id = x86_apic_id(topo, cpu_index),
        .t = x86_topo_thread_bits(topo),
        .c = x86_topo_core_bits(topo),
        .d = x86_topo_die_bits(topo),
    };
    if (x.t + x.c + x.d + order(topo->sockets) > MAX_APIC_BITS)
        return -1;
    x.per_core = topo->threads;
    x.per_die = topo->threads * topo->cores;
    x.per_pkg = x.per_die * topo->dies;
    unsigned die_index = cpu_index / x.per_die; /* socket * dies + die */

    struct kvm_cpuid_entry2 *l = find(entries, *nent, LEAF_VENDOR, 0);
    if (!l)
        return -1;
    enum vendor vendor = get_vendor(l);
    uint32_t max_basic = l->eax;
    if (vendor == VENDOR_INTEL && topo->dies > 1 && max_basic < LEAF_TOPO2)
        max_basic = l->eax = LEAF_TOPO2; /* the die level lives in leaf 0x1F */
    const struct kvm_cpuid_entry2 *ext = find(entries, *nent, LEAF_EXT_MAX, 0);
    uint32_t max_ext = ext ? ext->eax : 0;

    if ((l = find(entries, *nent, LEAF_FEATURES, 0))) {
        uint32_t pkg_ids = min_u32(1ULL << (x.t + x.c + x.d), 0xff);
        l->ebx = (l->ebx & 0xffff) | pkg_ids << 16 | (x.apic_id & 0xff) << 24;
        if (x.per_pkg > 1)
            l->edx |= CPUID1_EDX_HTT;
        else
            l->edx &= ~CPUID1_EDX_HTT;
        l->ecx |= CPUID1_ECX_HYPERVISOR;
    }
    if (max_basic >= LEAF_TOPO) {
        if (fill_ext_topology(entries, nent, max_nent, LEAF_TOPO, &x, 0) < 0)
            return -1;
    } else {
        remove_leaf(entries, nent, LEAF_TOPO);
    }
    if (topo->dies > 1 && max_basic >= LEAF_TOPO2) {
        if (fill_ext_topology(entries, nent, max_nent, LEAF_TOPO2, &x, 1) < 0)
            return -1;
    } else {
        remove_leaf(entries, nent, LEAF_TOPO2);
    }
    if (vendor == VENDOR_INTEL)
        fill_intel(entries, *nent, &x);
    if (vendor == VENDOR_AMD && fill_amd(entries, nent, max_nent, max_ext, &x, die_index) < 0)
        return -1;
    return 0;
}
