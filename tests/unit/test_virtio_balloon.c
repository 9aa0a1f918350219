/* Unit tests for virtio-balloon: the test plays the transport (status, features, queue set-up,
 * kicks, config writes) and the Linux driver (rings built by hand in anonymous memory used as
 * guest RAM, so that the pages the device drops really read as zeros afterwards). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/mman.h>
#include <time.h>

#include "core/bytes.h"
#include "virtio/balloon.h"
#include "../virtio_driver.h"

#define RAM_SIZE (4u << 20)
#define PAGE     4096u
#define RINGS    0x10000u /* queue q's rings at RINGS + q * 0x1000 */
#define DATA     0x20000u /* queue q's buffers at DATA + q * 0x2000 + slot * BUF_SIZE */
#define QSIZE    8
#define BUF_SIZE 1024
#define FILL     0xa5 /* what every page of RAM holds before the balloon */

#define F_VERSION_1 VIRTIO_BIT(VIRTIO_F_VERSION_1)
#define F_POISON    VIRTIO_BIT(VIRTIO_BALLOON_F_PAGE_POISON)
#define F_OOM       VIRTIO_BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM)
#define F_REPORTING VIRTIO_BIT(VIRTIO_BALLOON_F_REPORTING)

enum { Q_INFLATE, Q_DEFLATE, Q_REPORTING };

struct gq {
    uint16_t avail_idx;
    uint16_t used_seen;
};

struct fx {
    uint8_t *ram;
    struct guest_mem mem;
    struct virtio_balloon *b;
    struct virtio_device *vdev;
    struct gq q[3];
    unsigned config_irqs; /* atomic */
    unsigned changes;     /* change handler calls */
    uint64_t last_actual; /* its last value */
};

static void tr_notify_queue(struct virtio_device *vdev, unsigned q)
{
    (void)vdev;
    (void)q;
}

static void tr_notify_config(struct virtio_device *vdev)
{
    struct fx *f = vdev->transport_opaque;
    __atomic_fetch_add(&f->config_irqs, 1, __ATOMIC_SEQ_CST);
}

static const struct virtio_transport_ops fake_transport = {
    .notify_queue = tr_notify_queue,
    .notify_config = tr_notify_config,
};

static void on_change(void *opaque, uint64_t actual)
{
    struct fx *f = opaque;
    f->changes++;
    f->last_actual = actual;
}

static struct fx *make(const struct virtio_balloon_opts *o)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(f->ram != MAP_FAILED);
    memset(f->ram, FILL, RAM_SIZE);
    guest_mem_init_buffer(&f->mem, f->ram, RAM_SIZE);
    struct error err = {0};
    assert_int_equal(virtio_balloon_create(&f->mem, o, &f->b, &err), 0);
    f->vdev = virtio_balloon_vdev(f->b);
    f->vdev->transport = &fake_transport;
    f->vdev->transport_opaque = f;
    virtio_balloon_set_change_handler(f->b, on_change, f);
    return f;
}

static void destroy(struct fx *f)
{
    virtio_balloon_destroy(f->b);
    munmap(f->ram, RAM_SIZE);
    free(f);
}

static uint64_t ring(unsigned q)
{
    return RINGS + (uint64_t)q * 0x1000;
}

static uint64_t buf_gpa(unsigned q, unsigned slot)
{
    return DATA + (uint64_t)q * 0x2000 + (uint64_t)slot * BUF_SIZE;
}

/* Up to DRIVER_OK with nq queues; false if the device refused the features. */
static bool driver_init(struct fx *f, uint64_t features, unsigned nq)
{
    memset(f->q, 0, sizeof(f->q));
    memset(f->ram + RINGS, 0, 0x3000);
    return virtio_driver_start(f->vdev, features, nq, QSIZE, RINGS, 0x1000);
}

/* Offer one descriptor (gpa, len) and kick. */
static void add_desc(struct fx *f, unsigned q, uint64_t gpa, uint32_t len, bool writable)
{
    struct gq *g = &f->q[q];
    unsigned slot = g->avail_idx & (QSIZE - 1);
    uint8_t *d = f->ram + ring(q) + 16 * slot;
    le_put64(d, gpa);
    le_put32(d + 8, len);
    le_put16(d + 12, writable ? VIRTQ_DESC_F_WRITE : 0);
    le_put16(d + 14, 0);
    le_put16(f->ram + ring(q) + 0x200 + 4 + 2 * slot, (uint16_t)slot);
    g->avail_idx++;
    __atomic_store_n((uint16_t *)(f->ram + ring(q) + 0x200 + 2), g->avail_idx, __ATOMIC_RELEASE);
    virtio_kick(f->vdev, q);
}

/* A buffer of le32 frame numbers on queue q. */
static void send_pfns(struct fx *f, unsigned q, const uint32_t *pfn, unsigned n)
{
    unsigned slot = f->q[q].avail_idx & (QSIZE - 1);
    uint64_t gpa = buf_gpa(q, slot);
    assert_true(n * 4 <= BUF_SIZE);
    for (unsigned i = 0; i < n; i++)
        le_put32(f->ram + gpa + 4 * i, pfn[i]);
    add_desc(f, q, gpa, n * 4, false);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
    return __atomic_load_n((uint16_t *)(f->ram + ring(q) + 0x400 + 2), __ATOMIC_ACQUIRE);
}

/* Wait (5 s at most) for the next used entry of queue q; its length. */
static uint32_t take_used(struct fx *f, unsigned q)
{
    for (int i = 0; i < 5000 && used_idx(f, q) == f->q[q].used_seen; i++)
        sleep_ms(1);
    assert_int_not_equal(used_idx(f, q), f->q[q].used_seen);
    const uint8_t *e = f->ram + ring(q) + 0x400 + 4 + 8 * (f->q[q].used_seen & (QSIZE - 1));
    f->q[q].used_seen++;
    return le_get32(e + 4);
}

static bool page_is(struct fx *f, uint32_t pfn, uint8_t v)
{
    const uint8_t *p = f->ram + (uint64_t)pfn * PAGE;
    for (unsigned i = 0; i < PAGE; i++)
        if (p[i] != v)
            return false;
    return true;
}

static uint32_t cfg32(struct fx *f, unsigned off)
{
    pthread_mutex_lock(&f->vdev->lock);
    uint32_t v = virtio_read_config(f->vdev, off, 4);
    pthread_mutex_unlock(&f->vdev->lock);
    return v;
}

static void set_cfg32(struct fx *f, unsigned off, uint32_t v)
{
    pthread_mutex_lock(&f->vdev->lock);
    virtio_write_config(f->vdev, off, 4, v);
    pthread_mutex_unlock(&f->vdev->lock);
}

/* ---- tests ---- */

/* The features QEMU's defaults give, and the options' two more. */
static void test_features(void **state)
{
    (void)state;
    struct fx *f = make(NULL);
    assert_int_equal(f->vdev->device_id, VIRTIO_ID_BALLOON);
    assert_int_equal(f->vdev->nqueues, 2);
    uint64_t feat = f->vdev->device_features;
    assert_true(feat & F_POISON);
    assert_false(feat & F_OOM);
    assert_false(feat & F_REPORTING);
    assert_false(feat & VIRTIO_BIT(VIRTIO_BALLOON_F_STATS_VQ));
    destroy(f);
    struct virtio_balloon_opts o = {.deflate_on_oom = true, .free_page_reporting = true};
    f = make(&o);
    assert_int_equal(f->vdev->nqueues, 3);
    assert_true(f->vdev->device_features & F_OOM);
    assert_true(f->vdev->device_features & F_REPORTING);
    destroy(f);
}

/* The target becomes num_pages with a config interrupt; above RAM means an empty balloon. */
static void test_target(void **state)
{
    (void)state;
    struct fx *f = make(NULL);
    assert_true(driver_init(f, F_VERSION_1 | F_POISON, 2));
    assert_int_equal(cfg32(f, 0), 0);
    virtio_balloon_set_target(f->b, RAM_SIZE - 16 * PAGE);
    assert_int_equal(cfg32(f, 0), 16);
    assert_int_equal(__atomic_load_n(&f->config_irqs, __ATOMIC_SEQ_CST), 1);
    virtio_balloon_set_target(f->b, RAM_SIZE - 16 * PAGE - 100); /* down to a page */
    assert_int_equal(cfg32(f, 0), 16);
    virtio_balloon_set_target(f->b, 8ull * RAM_SIZE);
    assert_int_equal(cfg32(f, 0), 0);
    /* num_pages is the device's: a driver write does not stick */
    set_cfg32(f, 0, 1234);
    assert_int_equal(cfg32(f, 0), 0);
    destroy(f);
}

/* Inflated pages are dropped (they read as zeros), runs and single pages alike; their
 * neighbours and frames outside RAM are left alone; actual reaches query-balloon and the
 * change handler. */
static void test_inflate_deflate(void **state)
{
    (void)state;
    struct fx *f = make(NULL);
    assert_true(driver_init(f, F_VERSION_1 | F_POISON, 2));
    virtio_balloon_set_target(f->b, RAM_SIZE - 12 * PAGE);
    uint32_t pfns[] = {100, 101, 102, 103, 104, 105, 106, 107, 200, 300, 0xfffffff, 301};
    send_pfns(f, Q_INFLATE, pfns, 12);
    assert_int_equal(take_used(f, Q_INFLATE), 0);
    for (unsigned i = 0; i < 12; i++)
        if (pfns[i] < RAM_SIZE / PAGE)
            assert_true(page_is(f, pfns[i], 0));
    assert_true(page_is(f, 99, FILL));
    assert_true(page_is(f, 108, FILL));
    assert_true(page_is(f, 201, FILL));
    assert_true(page_is(f, 302, FILL));
    assert_int_equal(virtio_balloon_discarded_pages(f->b), 11);
    /* a run that goes past the end of RAM: the pages inside are dropped all the same */
    uint32_t edge[] = {1022, 1023, 1024, 1025};
    send_pfns(f, Q_INFLATE, edge, 4);
    assert_int_equal(take_used(f, Q_INFLATE), 0);
    assert_true(page_is(f, 1021, FILL));
    assert_true(page_is(f, 1022, 0));
    assert_true(page_is(f, 1023, 0));
    assert_int_equal(virtio_balloon_discarded_pages(f->b), 13);

    assert_int_equal(virtio_balloon_actual(f->b), RAM_SIZE);
    set_cfg32(f, 4, 11);
    assert_int_equal(virtio_balloon_actual(f->b), RAM_SIZE - 11 * PAGE);
    assert_int_equal(f->changes, 1);
    assert_int_equal(f->last_actual, RAM_SIZE - 11 * PAGE);
    set_cfg32(f, 4, 11); /* no change, no event */
    assert_int_equal(f->changes, 1);

    /* The guest takes pages back: they are its own again, untouched by the device. */
    memset(f->ram + 100 * PAGE, 0x3c, PAGE);
    uint32_t back[] = {100, 200};
    send_pfns(f, Q_DEFLATE, back, 2);
    assert_int_equal(take_used(f, Q_DEFLATE), 0);
    assert_true(page_is(f, 100, 0x3c));
    set_cfg32(f, 4, 9);
    assert_int_equal(virtio_balloon_actual(f->b), RAM_SIZE - 9 * PAGE);

    /* A driver claiming more than RAM gets 0, not a wrapped size. */
    set_cfg32(f, 4, 0xffffffffu);
    assert_int_equal(virtio_balloon_actual(f->b), 0);
    assert_int_equal(f->last_actual, 0);
    destroy(f);
}

/* A reset leaves no balloon (actual 0, the handler told) and keeps the target. */
static void test_reset(void **state)
{
    (void)state;
    struct fx *f = make(NULL);
    assert_true(driver_init(f, F_VERSION_1, 2));
    virtio_balloon_set_target(f->b, RAM_SIZE / 2);
    set_cfg32(f, 4, 5);
    assert_int_equal(f->changes, 1);
    pthread_mutex_lock(&f->vdev->lock);
    virtio_set_status(f->vdev, 0);
    pthread_mutex_unlock(&f->vdev->lock);
    assert_int_equal(f->changes, 2);
    assert_int_equal(f->last_actual, RAM_SIZE);
    assert_int_equal(virtio_balloon_actual(f->b), RAM_SIZE);
    assert_int_equal(cfg32(f, 0), RAM_SIZE / 2 / PAGE);
    assert_int_equal(cfg32(f, 4), 0);
    destroy(f);
}

/* Free page reporting: the reported ranges are dropped, unless the guest keeps a poison value
 * in its free pages. */
static void test_reporting(void **state)
{
    (void)state;
    struct virtio_balloon_opts o = {.free_page_reporting = true};
    struct fx *f = make(&o);
    assert_true(driver_init(f, F_VERSION_1 | F_POISON | F_REPORTING, 3));
    add_desc(f, Q_REPORTING, 0x100000, 16 * PAGE, true);
    assert_int_equal(take_used(f, Q_REPORTING), 0);
    for (uint32_t p = 0x100; p < 0x110; p++)
        assert_true(page_is(f, p, 0));
    assert_true(page_is(f, 0x110, FILL));
    assert_int_equal(virtio_balloon_discarded_pages(f->b), 16);

    /* poison_val != 0: the pages must keep it */
    assert_true(driver_init(f, F_VERSION_1 | F_POISON | F_REPORTING, 3));
    set_cfg32(f, 12, 0xaaaaaaaa);
    add_desc(f, Q_REPORTING, 0x200000, 16 * PAGE, true);
    assert_int_equal(take_used(f, Q_REPORTING), 0);
    assert_true(page_is(f, 0x200, FILL));
    assert_int_equal(virtio_balloon_discarded_pages(f->b), 16);

    /* without PAGE_POISON negotiated the value means nothing */
    assert_true(driver_init(f, F_VERSION_1 | F_REPORTING, 3));
    set_cfg32(f, 12, 0xaaaaaaaa);
    add_desc(f, Q_REPORTING, 0x200000, 2 * PAGE, true);
    assert_int_equal(take_used(f, Q_REPORTING), 0);
    assert_true(page_is(f, 0x200, 0));
    assert_true(page_is(f, 0x202, FILL));
    destroy(f);
}

/* A chain outside guest RAM breaks the queue (DEVICE_NEEDS_RESET), and nothing else; a reset
 * brings the device back. */
static void test_bad_chain(void **state)
{
    (void)state;
    struct fx *f = make(NULL);
    assert_true(driver_init(f, F_VERSION_1, 2));
    add_desc(f, Q_INFLATE, RAM_SIZE - 8, 64, false);
    for (int i = 0; i < 5000 && !(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET); i++)
        sleep_ms(1);
    assert_true(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_int_equal(used_idx(f, Q_INFLATE), 0);
    assert_true(driver_init(f, F_VERSION_1, 2));
    uint32_t pfn = 50;
    send_pfns(f, Q_INFLATE, &pfn, 1);
    assert_int_equal(take_used(f, Q_INFLATE), 0);
    assert_true(page_is(f, 50, 0));
    destroy(f);
}

/* guest_mem_discard: whole host pages inside the range only; a range outside RAM is refused. */
static void test_discard_bounds(void **state)
{
    (void)state;
    struct fx *f = make(NULL);
    assert_int_equal(guest_mem_discard(&f->mem, 10 * PAGE + 1, 2 * PAGE), PAGE);
    assert_true(page_is(f, 10, FILL));
    assert_true(page_is(f, 11, 0));
    assert_true(page_is(f, 12, FILL));
    assert_int_equal(guest_mem_discard(&f->mem, 20 * PAGE, 100), 0);
    assert_true(page_is(f, 20, FILL));
    assert_int_equal(guest_mem_discard(&f->mem, RAM_SIZE - PAGE, 2 * PAGE), -1);
    assert_int_equal(guest_mem_discard(&f->mem, UINT64_MAX - PAGE, 2 * PAGE), -1);
    destroy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features),        cmocka_unit_test(test_target),
        cmocka_unit_test(test_inflate_deflate), cmocka_unit_test(test_reset),
        cmocka_unit_test(test_reporting),       cmocka_unit_test(test_bad_chain),
        cmocka_unit_test(test_discard_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
