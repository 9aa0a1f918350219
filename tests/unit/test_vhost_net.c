/* Unit tests for vhost-net's pure logic: feature mapping, the memory table built from guest RAM
 * regions and the ring address checks (no /dev/vhost-net, no KVM). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "net/vhost_net.h"

#define BIT(b) (1ULL << (b))

/* What a 6.1 kernel's vhost-net reports (VHOST_NET_FEATURES). */
static const uint64_t kernel_features =
    BIT(24) | BIT(28) | BIT(29) | BIT(26) | BIT(27) | BIT(15) | BIT(32) | BIT(33) | BIT(30);

static void test_missing_features(void **state)
{
    (void)state;
    assert_int_equal(vhost_net_missing_features(kernel_features), 0);
    /* An old vhost without event index nor mergeable buffers: those are withdrawn. */
    uint64_t old = kernel_features & ~(BIT(29) | BIT(15));
    assert_int_equal(vhost_net_missing_features(old), BIT(29) | BIT(15));
    /* Only ring and header-layout bits: offloads and control features never. */
    assert_int_equal(vhost_net_missing_features(0), VHOST_NET_KERNEL_FEATURES);
}

static void test_ack_features(void **state)
{
    (void)state;
    struct error err = {0};
    uint64_t out = 0;
    /* A Linux guest: VERSION_1, EVENT_IDX, INDIRECT, MRG_RXBUF and many device bits (CSUM,
     * GUEST_TSO4, CTRL_VQ, MQ...) that stay out of what vhost is told. */
    uint64_t guest = BIT(32) | BIT(29) | BIT(28) | BIT(15) | BIT(0) | BIT(1) | BIT(7) | BIT(17) |
                     BIT(22) | BIT(5) | BIT(16);
    assert_int_equal(vhost_net_ack_features(guest, kernel_features, true, &out, &err), 0);
    assert_int_equal(out, BIT(32) | BIT(29) | BIT(28) | BIT(15));
    /* A tap without vnet header: vhost adds and strips it. */
    assert_int_equal(vhost_net_ack_features(guest, kernel_features, false, &out, &err), 0);
    assert_int_equal(out, BIT(32) | BIT(29) | BIT(28) | BIT(15) | BIT(VHOST_NET_F_VIRTIO_NET_HDR));
    /* Without VERSION_1 (a legacy header layout) vhost is not used. */
    err = (struct error){0};
    assert_int_equal(vhost_net_ack_features(BIT(15), kernel_features, true, &out, &err), -1);
    assert_non_null(strstr(err.msg, "VERSION_1"));
    /* A negotiated bit the kernel lacks is refused, not silently dropped. */
    err = (struct error){0};
    assert_int_equal(
        vhost_net_ack_features(BIT(32) | BIT(29), kernel_features & ~BIT(29), true, &out, &err),
        -1);
    assert_non_null(strstr(err.msg, "lacks features 0x20000000"));
    err = (struct error){0};
    assert_int_equal(vhost_net_ack_features(BIT(32), BIT(32), false, &out, &err), -1);
}

/* Two regions as a PC with 4 GiB has them: below the hole and above 4 GiB. */
static void two_regions(struct guest_mem *m, uint8_t *low, uint8_t *high)
{
    memset(m, 0, sizeof(*m));
    m->regions[0] = (struct guest_region){.gpa = 0, .size = 0x10000, .hva = low};
    m->regions[1] = (struct guest_region){.gpa = 0x100000000ULL, .size = 0x10000, .hva = high};
    m->nr = 2;
    m->ram_size = 0x20000;
}

static void test_mem_table(void **state)
{
    (void)state;
    static uint8_t low[0x10000], high[0x10000];
    struct guest_mem m;
    two_regions(&m, low, high);
    struct error err = {0};
    struct vhost_memory *t = vhost_net_mem_table(&m, &err);
    assert_non_null(t);
    assert_int_equal(t->nregions, 2);
    assert_int_equal(t->regions[0].guest_phys_addr, 0);
    assert_int_equal(t->regions[0].memory_size, 0x10000);
    assert_int_equal(t->regions[0].userspace_addr, (uintptr_t)low);
    assert_int_equal(t->regions[1].guest_phys_addr, 0x100000000ULL);
    assert_int_equal(t->regions[1].memory_size, 0x10000);
    assert_int_equal(t->regions[1].userspace_addr, (uintptr_t)high);
    assert_int_equal(t->regions[0].flags_padding, 0);
    free(t);

    /* No RAM, an empty region, a region that wraps: refused. */
    m.nr = 0;
    assert_null(vhost_net_mem_table(&m, &err));
    two_regions(&m, low, high);
    m.regions[1].size = 0;
    err = (struct error){0};
    assert_null(vhost_net_mem_table(&m, &err));
    assert_non_null(strstr(err.msg, "region 1"));
    two_regions(&m, low, high);
    m.regions[1].gpa = ~0ULL - 0xff;
    err = (struct error){0};
    assert_null(vhost_net_mem_table(&m, &err));
}

static struct vhost_net_ring ring(unsigned size, uint64_t desc, uint64_t avail, uint64_t used)
{
    return (struct vhost_net_ring){
        .size = size, .desc_gpa = desc, .avail_gpa = avail, .used_gpa = used};
}

static void test_ring_addr(void **state)
{
    (void)state;
    static uint8_t low[0x10000], high[0x10000];
    struct guest_mem m;
    two_regions(&m, low, high);
    struct error err = {0};
    struct vhost_vring_addr a;

    /* 256 entries: desc 4 KiB, avail 518 bytes, used 2054 bytes, the second ring in high RAM. */
    struct vhost_net_ring r = ring(256, 0x1000, 0x2000, 0x100003000ULL);
    assert_int_equal(vhost_net_ring_addr(&m, 1, &r, &a, &err), 0);
    assert_int_equal(a.index, 1);
    assert_int_equal(a.desc_user_addr, (uintptr_t)(low + 0x1000));
    assert_int_equal(a.avail_user_addr, (uintptr_t)(low + 0x2000));
    assert_int_equal(a.used_user_addr, (uintptr_t)(high + 0x3000));
    assert_int_equal(a.flags, 0);
    assert_int_equal(a.log_guest_addr, 0);

    /* Sizes: a power of two, 1..32768. */
    unsigned bad_sizes[] = {0, 3, 100, 65536};
    for (unsigned i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
        r = ring(bad_sizes[i], 0x1000, 0x2000, 0x3000);
        err = (struct error){0};
        assert_int_equal(vhost_net_ring_addr(&m, 0, &r, &a, &err), -1);
        assert_non_null(strstr(err.msg, "size"));
    }
    /* Alignments 16, 2, 4. */
    uint64_t bad[][3] = {
        {0x1008, 0x2000, 0x3000}, {0x1000, 0x2001, 0x3000}, {0x1000, 0x2000, 0x3002}};
    for (unsigned i = 0; i < 3; i++) {
        r = ring(256, bad[i][0], bad[i][1], bad[i][2]);
        err = (struct error){0};
        assert_int_equal(vhost_net_ring_addr(&m, 0, &r, &a, &err), -1);
        assert_non_null(strstr(err.msg, "misaligned"));
    }
    /* The used ring's last bytes (avail_event) past the end of low RAM. */
    r = ring(256, 0x1000, 0x2000, 0x10000 - 2052);
    err = (struct error){0};
    assert_int_equal(vhost_net_ring_addr(&m, 0, &r, &a, &err), -1);
    assert_non_null(strstr(err.msg, "used ring"));
    /* Exactly to the end is fine. */
    r = ring(256, 0x1000, 0x2000, 0x10000 - 2056);
    assert_int_equal(vhost_net_ring_addr(&m, 0, &r, &a, &err), 0);
    /* In the hole between the regions, straddling none, or a wrapping address. */
    uint64_t outside[][3] = {{0x80000000ULL, 0x2000, 0x3000},
                             {0x1000, 0xfffffff0ULL, 0x3000},
                             {0x1000, 0x2000, ~0ULL - 3},
                             {0x10000 - 0x800, 0x2000, 0x3000}};
    const char *which[] = {"descriptor", "available", "used", "descriptor"};
    for (unsigned i = 0; i < 4; i++) {
        r = ring(256, outside[i][0], outside[i][1], outside[i][2]);
        err = (struct error){0};
        assert_int_equal(vhost_net_ring_addr(&m, 0, &r, &a, &err), -1);
        assert_non_null(strstr(err.msg, which[i]));
        assert_non_null(strstr(err.msg, "not inside one guest RAM region"));
    }
    /* Largest queue: 32768 entries need 512 KiB of descriptors, which low RAM lacks. */
    r = ring(32768, 0x0, 0x2000, 0x3000);
    err = (struct error){0};
    assert_int_equal(vhost_net_ring_addr(&m, 0, &r, &a, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_features),
        cmocka_unit_test(test_ack_features),
        cmocka_unit_test(test_mem_table),
        cmocka_unit_test(test_ring_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
