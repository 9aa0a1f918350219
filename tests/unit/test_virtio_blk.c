/* Unit tests for virtio-blk: the test plays the transport and the guest driver, with a 1 MiB
 * buffer as guest RAM and a raw image in /var/tmp behind the device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "block/block_int.h"
#include "core/bytes.h"
#include "virtio/blk.h"
#include "../virtio_driver.h"

#define RAM_SIZE  (1u << 20)
#define QSIZE     16
#define DESC      0x1000u
#define AVAIL     0x2000u
#define USED      0x3000u
#define HDR       0x4000u /* request headers, 16 bytes each, one per slot */
#define STATUS    0x5000u /* status bytes, one per slot */
#define DATA      0x10000u
#define DISK_SIZE (1u << 20)

struct fake_transport {
    int queue_irqs;
    int config_irqs;
};

struct fx {
    uint8_t *ram;
    struct guest_mem mem;
    char path[64];
    struct block_backend *bb;
    struct virtio_blk *blk;
    struct virtio_device *vdev;
    struct fake_transport tr;
    uint16_t avail_idx, used_seen;
};

static struct fx *cur;

/* The driver kicks after every request, or (kick_as_needed) only when the device's avail_event
 * asks, as Linux's does with EVENT_IDX; kicks counts them. */
static bool kick_as_needed;
static unsigned kicks;
/* While set, publish() does not kick: the test kicks once for a batch. */
static bool no_kick;

/* Error injection: the backend's format driver is wrapped so that requests of the ops in
 * inject_mask (1 << BLOCK_OP_*) fail with -inject_errno while it is set. */
static const struct block_format_ops *real_fmt;
static struct block_format_ops faulty_fmt;
static int inject_errno;
static unsigned inject_mask;
/* Requests that reached the format driver, by op, and the last one's length and iovec count. */
static unsigned submitted[BLOCK_OP_WRITE_ZEROES + 1];
static uint64_t last_len;
static int last_iovcnt;

/* The gate: while it is on, reads stay at the backend until the test releases them. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static bool gate_on;
static struct block_request *gated[QSIZE];
static unsigned ngated;

static void faulty_submit(struct block_backend *bb, struct block_request *req)
{
    pthread_mutex_lock(&gate_lock);
    submitted[req->op]++;
    last_len = req->len;
    last_iovcnt = req->iovcnt;
    if (gate_on && req->op == BLOCK_OP_READ && ngated < QSIZE) {
        gated[ngated++] = req;
        pthread_mutex_unlock(&gate_lock);
        return;
    }
    pthread_mutex_unlock(&gate_lock);
    int e = __atomic_load_n(&inject_errno, __ATOMIC_SEQ_CST);
    if (e && (__atomic_load_n(&inject_mask, __ATOMIC_SEQ_CST) & (1u << req->op))) {
        block_complete_later(bb, req, -e);
        return;
    }
    real_fmt->submit(bb, req);
}

static void inject(int err, unsigned mask)
{
    __atomic_store_n(&inject_mask, mask, __ATOMIC_SEQ_CST);
    __atomic_store_n(&inject_errno, err, __ATOMIC_SEQ_CST);
}

/* What the device told its owner (on_error, worker thread). */
static pthread_mutex_t errs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct virtio_blk_error errs[64];
static unsigned nerrs;

static void on_error(void *opaque, const struct virtio_blk_error *e)
{
    pthread_mutex_lock(&errs_lock);
    if (nerrs < 64)
        errs[nerrs] = *e;
    nerrs++;
    pthread_mutex_unlock(&errs_lock);
}

static unsigned errors_seen(struct virtio_blk_error *last)
{
    pthread_mutex_lock(&errs_lock);
    unsigned n = nerrs;
    if (last && n)
        *last = errs[(n - 1) % 64];
    pthread_mutex_unlock(&errs_lock);
    return n;
}

static void notify_queue(struct virtio_device *vdev, unsigned q)
{
    __atomic_fetch_add(&cur->tr.queue_irqs, 1, __ATOMIC_SEQ_CST);
}

static void notify_config(struct virtio_device *vdev)
{
    __atomic_fetch_add(&cur->tr.config_irqs, 1, __ATOMIC_SEQ_CST);
}

static const struct virtio_transport_ops fake_ops = {.notify_queue = notify_queue,
                                                     .notify_config = notify_config};

static void create_with(struct fx *f, bool readonly, enum block_cache cache,
                        enum drive_error_action werror, enum drive_error_action rerror)
{
    struct error err = {0};
    struct block_open_opts o = {.file = f->path, .cache = cache, .discard_unmap = true};
    o.readonly = readonly;
    assert_int_equal(block_backend_open(&o, &f->bb, &err), 0);
    real_fmt = f->bb->fmt;
    faulty_fmt = *real_fmt;
    faulty_fmt.submit = faulty_submit;
    f->bb->fmt = &faulty_fmt;
    inject(0, 0);
    gate_on = false;
    ngated = 0;
    nerrs = 0;
    memset(submitted, 0, sizeof(submitted));
    struct virtio_blk_params p = {.serial = "KEMU-SERIAL-0123456789",
                                  .queue_size = QSIZE,
                                  .discard = true,
                                  .write_zeroes = true,
                                  .werror = werror,
                                  .rerror = rerror,
                                  .on_error = on_error};
    assert_int_equal(virtio_blk_create(&f->mem, f->bb, &p, &f->blk, &err), 0);
    f->vdev = virtio_blk_vdev(f->blk);
    f->vdev->transport = &fake_ops;
}

static void create(struct fx *f, bool readonly, enum block_cache cache)
{
    create_with(f, readonly, cache, DRIVE_ERROR_REPORT, DRIVE_ERROR_REPORT);
}

/* What the transport does on the driver's initialisation. */
static void driver_init(struct fx *f, uint64_t features)
{
    struct virtio_device *v = f->vdev;
    struct error err = {0};
    pthread_mutex_lock(&v->lock);
    features |= VIRTIO_BIT(VIRTIO_F_VERSION_1);
    assert_true(virtio_driver_features(v, features));
    assert_int_equal(vq_set_size(&v->vq[0], QSIZE, &err), 0);
    assert_int_equal(vq_set_addresses(&v->vq[0], DESC, AVAIL, USED, &err), 0);
    assert_int_equal(vq_enable(&v->vq[0], &err), 0);
    virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                             VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    pthread_mutex_unlock(&v->lock);
    f->avail_idx = f->used_seen = 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->ram = aligned_alloc(4096, RAM_SIZE);
    assert_non_null(f->ram);
    memset(f->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&f->mem, f->ram, RAM_SIZE);
    strcpy(f->path, "/var/tmp/kemu-test-vblk-XXXXXX");
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, DISK_SIZE), 0);
    close(fd);
    cur = f;
    *state = f;
    return 0;
}

static void release_one(struct fx *f);

static int teardown(void **state)
{
    struct fx *f = *state;
    /* A failed test may leave reads at the gate: stopping the device waits for them. */
    gate_on = false;
    while (ngated)
        release_one(f);
    kick_as_needed = false;
    no_kick = false;
    virtio_blk_destroy(f->blk);
    if (f->bb)
        f->bb->fmt = real_fmt; /* close runs the real driver's close */
    block_backend_close(f->bb);
    unlink(f->path);
    free(f->ram);
    free(f);
    return 0;
}

static void desc(struct fx *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next)
{
    uint8_t *p = f->ram + DESC + 16 * i;
    le_put64(p, addr);
    le_put32(p + 8, len);
    le_put16(p + 12, flags);
    le_put16(p + 14, next);
}

static bool kick_needed(struct fx *f)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t ev = le_get16(f->ram + USED + 4 + 8 * QSIZE), new_idx = f->avail_idx;
    return (uint16_t)(new_idx - ev - 1) < 1; /* vring_need_event for one added entry */
}

static void publish(struct fx *f, uint16_t head)
{
    le_put16(f->ram + AVAIL + 4 + 2 * (f->avail_idx % QSIZE), head);
    f->avail_idx++;
    __atomic_store_n((uint16_t *)(void *)(f->ram + AVAIL + 2), f->avail_idx, __ATOMIC_RELEASE);
    if (no_kick)
        return;
    if (!kick_as_needed || kick_needed(f)) {
        kicks++;
        virtio_kick(f->vdev, 0);
    }
}

/* Wait until the device used every published chain. */
static void wait_used(struct fx *f)
{
    for (int i = 0; i < 5000; i++) {
        uint16_t u = __atomic_load_n((uint16_t *)(void *)(f->ram + USED + 2), __ATOMIC_ACQUIRE);
        if (u == f->avail_idx) {
            f->used_seen = u;
            return;
        }
        usleep(1000);
    }
    fail_msg("the device did not complete the requests");
}

static uint32_t used_len(struct fx *f, uint16_t i)
{
    return le_get32(f->ram + USED + 4 + 8 * (i % QSIZE) + 4);
}

static void wait_needs_reset(struct fx *f)
{
    for (int i = 0; i < 5000; i++) {
        if (__atomic_load_n(&f->vdev->status, __ATOMIC_SEQ_CST) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
            return;
        usleep(1000);
    }
    fail_msg("DEVICE_NEEDS_RESET was not set");
}

/* A request in slot s (descriptors 3s..3s+2): header, optional data, status; not waited for. */
static void post(struct fx *f, unsigned s, uint32_t type, uint64_t sector, uint64_t data,
                 uint32_t len, bool device_writes)
{
    uint8_t *h = f->ram + HDR + 16 * s;
    le_put32(h, type);
    le_put32(h + 4, 0);
    le_put64(h + 8, sector);
    f->ram[STATUS + s] = 0xee;
    unsigned d0 = 3 * s;
    if (len) {
        desc(f, d0, HDR + 16 * s, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(d0 + 1));
        desc(f, d0 + 1, data, len,
             (uint16_t)(VIRTQ_DESC_F_NEXT | (device_writes ? VIRTQ_DESC_F_WRITE : 0)),
             (uint16_t)(d0 + 2));
    } else {
        desc(f, d0, HDR + 16 * s, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(d0 + 2));
    }
    desc(f, d0 + 2, STATUS + s, 1, VIRTQ_DESC_F_WRITE, 0);
    publish(f, (uint16_t)d0);
}

/* The same, waited for: returns the status byte. */
static uint8_t request(struct fx *f, unsigned s, uint32_t type, uint64_t sector, uint64_t data,
                       uint32_t len, bool device_writes)
{
    post(f, s, type, sector, data, len, device_writes);
    wait_used(f);
    return f->ram[STATUS + s];
}

static uint16_t used_idx(struct fx *f)
{
    return __atomic_load_n((uint16_t *)(void *)(f->ram + USED + 2), __ATOMIC_ACQUIRE);
}

/* Wait until the device holds n requests (werror/rerror=stop). */
static void wait_held(struct fx *f, unsigned n)
{
    for (int i = 0; i < 5000; i++) {
        if (virtio_blk_held(f->blk) == n)
            return;
        usleep(1000);
    }
    fail_msg("the device holds %u requests, not %u", virtio_blk_held(f->blk), n);
}

static const uint64_t all_features =
    VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) |
    VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |
    VIRTIO_BIT(VIRTIO_BLK_F_TOPOLOGY) | VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE) |
    VIRTIO_BIT(VIRTIO_BLK_F_DISCARD) | VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES) |
    VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);

static void test_config(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);
    struct virtio_device *v = f->vdev;
    assert_int_equal(v->device_id, VIRTIO_ID_BLOCK);
    uint64_t feat = v->device_features;
    assert_true(feat & VIRTIO_BIT(VIRTIO_BLK_F_FLUSH));
    assert_true(feat & VIRTIO_BIT(VIRTIO_BLK_F_DISCARD));
    assert_true(feat & VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES));
    assert_true(feat & VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE));
    assert_false(feat & VIRTIO_BIT(VIRTIO_BLK_F_RO));
    assert_false(feat & VIRTIO_BIT(VIRTIO_BLK_F_MQ));
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_CAPACITY, 4), DISK_SIZE / 512);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_CAPACITY + 4, 4), 0);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_SEG_MAX, 4), QSIZE - 2);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_BLK_SIZE, 4), 512);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_WRITEBACK, 1), 1);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_NUM_QUEUES, 2), 1);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_MAX_DISCARD_SEG, 4), 1);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP, 1), 1);
    /* The capacity is read-only; writeback is writable once CONFIG_WCE is negotiated. */
    virtio_write_config(v, VIRTIO_BLK_CFG_CAPACITY, 4, 1);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_CAPACITY, 4), DISK_SIZE / 512);
    driver_init(f, all_features);
    virtio_write_config(v, VIRTIO_BLK_CFG_WRITEBACK, 1, 0);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_WRITEBACK, 1), 0);
    /* Writes still work, each followed by a flush. */
    memset(f->ram + DATA, 0x42, 4096);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 0, DATA, 4096, false), VIRTIO_BLK_S_OK);
    pthread_mutex_lock(&v->lock);
    virtio_reset(v);
    pthread_mutex_unlock(&v->lock);
    assert_int_equal(virtio_read_config(v, VIRTIO_BLK_CFG_WRITEBACK, 1), 1);

    struct error err = {0};
    struct virtio_blk *b2;
    struct virtio_blk_params p = {.queue_size = 100};
    assert_int_equal(virtio_blk_create(&f->mem, f->bb, &p, &b2, &err), -1);
    assert_non_null(strstr(err.msg, "power of two"));
    p = (struct virtio_blk_params){.num_queues = 4};
    memset(&err, 0, sizeof(err));
    assert_int_equal(virtio_blk_create(&f->mem, f->bb, &p, &b2, &err), 0);
    assert_true(virtio_blk_vdev(b2)->device_features & VIRTIO_BIT(VIRTIO_BLK_F_MQ));
    assert_int_equal(virtio_read_config(virtio_blk_vdev(b2), VIRTIO_BLK_CFG_NUM_QUEUES, 2), 4);
    virtio_blk_destroy(b2);
}

static void test_io(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);
    driver_init(f, all_features);

    /* Write a pattern to sectors 8.., read it back. */
    for (unsigned i = 0; i < 8192; i++)
        f->ram[DATA + i] = (uint8_t)(i * 13 + 5);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 8, DATA, 8192, false), VIRTIO_BLK_S_OK);
    assert_int_equal(used_len(f, 0), 1);
    memset(f->ram + DATA + 0x10000, 0, 8192);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_IN, 8, DATA + 0x10000, 8192, true),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(used_len(f, 1), 8193);
    assert_memory_equal(f->ram + DATA + 0x10000, f->ram + DATA, 8192);
    assert_true(__atomic_load_n(&f->tr.queue_irqs, __ATOMIC_SEQ_CST) > 0);

    /* The data reached the file. */
    FILE *fp = fopen(f->path, "rb");
    uint8_t buf[8192];
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 8 * 512, SEEK_SET), 0);
    assert_int_equal(fread(buf, 1, sizeof(buf), fp), sizeof(buf));
    fclose(fp);
    assert_memory_equal(buf, f->ram + DATA, 8192);

    assert_int_equal(request(f, 2, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_OK);

    /* GET_ID: the first 20 bytes of the serial, no NUL. */
    memset(f->ram + DATA, 0xff, 64);
    assert_int_equal(request(f, 3, VIRTIO_BLK_T_GET_ID, 0, DATA, 64, true), VIRTIO_BLK_S_OK);
    assert_memory_equal(f->ram + DATA, "KEMU-SERIAL-01234567", 20);
    assert_int_equal(used_len(f, 3), 21);

    /* Write zeroes over sectors 8..15, discard 16..23. */
    uint8_t *seg = f->ram + DATA + 0x20000;
    le_put64(seg, 8);
    le_put32(seg + 8, 8);
    le_put32(seg + 12, 0);
    assert_int_equal(request(f, 4, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA + 0x20000, 16, false),
                     VIRTIO_BLK_S_OK);
    le_put64(seg, 16);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_DISCARD, 0, DATA + 0x20000, 16, false),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_IN, 8, DATA + 0x10000, 8192, true),
                     VIRTIO_BLK_S_OK);
    for (unsigned i = 0; i < 8192; i++)
        assert_int_equal(f->ram[DATA + 0x10000 + i], 0);
    /* Discard with the unmap flag, unknown flags, two segments: unsupported. */
    le_put32(seg + 12, 1);
    assert_int_equal(request(f, 2, VIRTIO_BLK_T_DISCARD, 0, DATA + 0x20000, 16, false),
                     VIRTIO_BLK_S_UNSUPP);
    le_put32(seg + 12, 2);
    assert_int_equal(request(f, 2, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA + 0x20000, 16, false),
                     VIRTIO_BLK_S_UNSUPP);
    le_put32(seg + 12, 0);
    assert_int_equal(request(f, 2, VIRTIO_BLK_T_DISCARD, 0, DATA + 0x20000, 32, false),
                     VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(request(f, 2, VIRTIO_BLK_T_DISCARD, 0, DATA + 0x20000, 8, false),
                     VIRTIO_BLK_S_IOERR);
    le_put64(seg, DISK_SIZE / 512 - 4);
    assert_int_equal(request(f, 2, VIRTIO_BLK_T_DISCARD, 0, DATA + 0x20000, 16, false),
                     VIRTIO_BLK_S_IOERR);

    /* Out of range, misaligned length, unknown type. */
    assert_int_equal(request(f, 3, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 1, DATA, 1024, true),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, 3, VIRTIO_BLK_T_IN, UINT64_MAX, DATA, 512, true),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, 3, VIRTIO_BLK_T_OUT, DISK_SIZE / 512, DATA, 512, false),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, 3, VIRTIO_BLK_T_OUT, 0, DATA, 100, false), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, 3, 99, 0, 0, 0, false), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(request(f, 3, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 1, DATA, 512, true),
                     VIRTIO_BLK_S_OK);

    /* Header and data in one descriptor, then a write into the last sector. */
    uint8_t *h = f->ram + DATA + 0x30000;
    le_put32(h, VIRTIO_BLK_T_OUT);
    le_put32(h + 4, 0);
    le_put64(h + 8, 100);
    memset(h + 16, 0x77, 512);
    desc(f, 0, DATA + 0x30000, 16 + 512, VIRTQ_DESC_F_NEXT, 1);
    desc(f, 1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0);
    wait_used(f);
    assert_int_equal(f->ram[STATUS], VIRTIO_BLK_S_OK);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_IN, 100, DATA, 512, true), VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[DATA + 511], 0x77);

    /* Many requests in flight at once. */
    for (unsigned s = 0; s < 5; s++) {
        uint8_t *hh = f->ram + HDR + 16 * s;
        le_put32(hh, VIRTIO_BLK_T_IN);
        le_put64(hh + 8, 8 * s);
        desc(f, 3 * s, HDR + 16 * s, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * s + 1));
        desc(f, 3 * s + 1, DATA + 4096 * s, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
             (uint16_t)(3 * s + 2));
        desc(f, 3 * s + 2, STATUS + s, 1, VIRTQ_DESC_F_WRITE, 0);
        le_put16(f->ram + AVAIL + 4 + 2 * (f->avail_idx % QSIZE), (uint16_t)(3 * s));
        f->avail_idx++;
    }
    le_put16(f->ram + AVAIL + 2, f->avail_idx);
    virtio_kick(f->vdev, 0);
    wait_used(f);
    for (unsigned s = 0; s < 5; s++)
        assert_int_equal(f->ram[STATUS + s], VIRTIO_BLK_S_OK);
    assert_false(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
}

static void test_readonly(void **state)
{
    struct fx *f = *state;
    create(f, true, BLOCK_CACHE_WRITEBACK);
    assert_true(f->vdev->device_features & VIRTIO_BIT(VIRTIO_BLK_F_RO));
    driver_init(f, all_features | VIRTIO_BIT(VIRTIO_BLK_F_RO));
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 0, DATA, 512, false), VIRTIO_BLK_S_IOERR);
    uint8_t *seg = f->ram + DATA + 0x20000;
    le_put64(seg, 0);
    le_put32(seg + 8, 1);
    le_put32(seg + 12, 0);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA + 0x20000, 16, false),
                     VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, 2, VIRTIO_BLK_T_IN, 0, DATA, 512, true), VIRTIO_BLK_S_OK);
}

static void test_malformed(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);

    /* No status byte: a readable-only chain. */
    driver_init(f, all_features);
    le_put32(f->ram + HDR, VIRTIO_BLK_T_IN);
    desc(f, 0, HDR, 16, 0, 0);
    publish(f, 0);
    wait_needs_reset(f);
    /* The status bit comes first, the config interrupt right after it. */
    for (int i = 0; i < 3000 && !__atomic_load_n(&f->tr.config_irqs, __ATOMIC_SEQ_CST); i++)
        usleep(1000);
    assert_true(__atomic_load_n(&f->tr.config_irqs, __ATOMIC_SEQ_CST) > 0);

    /* A short header. */
    pthread_mutex_lock(&f->vdev->lock);
    virtio_reset(f->vdev);
    pthread_mutex_unlock(&f->vdev->lock);
    assert_false(f->vdev->status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    driver_init(f, all_features);
    desc(f, 0, HDR, 8, VIRTQ_DESC_F_NEXT, 1);
    desc(f, 1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0);
    wait_needs_reset(f);

    /* A descriptor outside guest RAM: the virtqueue refuses it. */
    pthread_mutex_lock(&f->vdev->lock);
    virtio_reset(f->vdev);
    pthread_mutex_unlock(&f->vdev->lock);
    driver_init(f, all_features);
    desc(f, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
    desc(f, 1, RAM_SIZE - 100, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
    desc(f, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0);
    wait_needs_reset(f);

    /* After a reset the device works again. */
    pthread_mutex_lock(&f->vdev->lock);
    virtio_reset(f->vdev);
    pthread_mutex_unlock(&f->vdev->lock);
    driver_init(f, all_features);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_IN, 0, DATA, 512, true), VIRTIO_BLK_S_OK);
}

/* A reset with requests in flight: stop drains them; nothing crashes. */
static void test_reset_inflight(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);
    for (int round = 0; round < 20; round++) {
        driver_init(f, all_features);
        for (unsigned s = 0; s < 5; s++) {
            uint8_t *hh = f->ram + HDR + 16 * s;
            le_put32(hh, s & 1 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN);
            le_put64(hh + 8, 64 * s);
            desc(f, 3 * s, HDR + 16 * s, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * s + 1));
            desc(f, 3 * s + 1, DATA + 32768 * s, 32768,
                 (uint16_t)(VIRTQ_DESC_F_NEXT | (s & 1 ? 0 : VIRTQ_DESC_F_WRITE)),
                 (uint16_t)(3 * s + 2));
            desc(f, 3 * s + 2, STATUS + s, 1, VIRTQ_DESC_F_WRITE, 0);
            publish(f, (uint16_t)(3 * s));
        }
        pthread_mutex_lock(&f->vdev->lock);
        virtio_set_status(f->vdev, 0);
        pthread_mutex_unlock(&f->vdev->lock);
        assert_int_equal(block_backend_inflight(f->bb), 0);
    }
}

static void wait_gated(unsigned n)
{
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&gate_lock);
        unsigned have = ngated;
        pthread_mutex_unlock(&gate_lock);
        if (have == n)
            return;
        usleep(1000);
    }
    fail_msg("%u reads at the backend, not %u", ngated, n);
}

/* Complete the oldest gated read (as a backend thread would). */
static void release_one(struct fx *f)
{
    pthread_mutex_lock(&gate_lock);
    assert_true(ngated > 0);
    struct block_request *req = gated[0];
    memmove(gated, gated + 1, --ngated * sizeof(gated[0]));
    pthread_mutex_unlock(&gate_lock);
    block_complete_later(f->bb, req, 0);
}

/* Wait until the device asks to be kicked for the next request (its notifications are on). */
static void wait_kick_wanted(struct fx *f)
{
    for (int i = 0; i < 5000 && le_get16(f->ram + USED + 4 + 8 * QSIZE) != f->avail_idx; i++)
        usleep(1000);
    assert_int_equal(le_get16(f->ram + USED + 4 + 8 * QSIZE), f->avail_idx);
}

/* With two or more requests at the backend the device turns the driver's kicks off and takes
 * new requests when a completion wakes it, or within BLK_POLL_MS; below that, kicks as usual. */
static void test_kick_suppression(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);
    driver_init(f, all_features);
    kick_as_needed = true;
    kicks = 0;
    gate_on = true;

    /* Sectors 16 apart: neighbours would be merged into one backend request. */
    /* One read in flight: the device still wants a kick for the next. */
    post(f, 0, VIRTIO_BLK_T_IN, 0, DATA, 4096, true);
    wait_gated(1);
    wait_kick_wanted(f);
    /* Two: from now on no kick is asked for... */
    post(f, 1, VIRTIO_BLK_T_IN, 16, DATA + 4096, 4096, true);
    assert_int_equal(kicks, 2);
    wait_gated(2);
    usleep(20000); /* the worker settles with notifications off */
    post(f, 2, VIRTIO_BLK_T_IN, 32, DATA + 8192, 4096, true);
    post(f, 3, VIRTIO_BLK_T_IN, 48, DATA + 12288, 4096, true);
    assert_int_equal(kicks, 2);
    /* ...and the requests still reach the backend (the poll timer: nothing completed). */
    wait_gated(4);
    /* A completion is a moment to look as well. */
    post(f, 4, VIRTIO_BLK_T_IN, 64, DATA + 16384, 4096, true);
    assert_int_equal(kicks, 2);
    release_one(f);
    wait_gated(4);

    /* All done: kicks are wanted again, and work. */
    gate_on = false;
    while (ngated)
        release_one(f);
    wait_used(f);
    for (unsigned s = 0; s < 5; s++)
        assert_int_equal(f->ram[STATUS + s], VIRTIO_BLK_S_OK);
    wait_kick_wanted(f);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_IN, 40, DATA, 4096, true), VIRTIO_BLK_S_OK);
    assert_int_equal(kicks, 3);
    kick_as_needed = false;
}

#define W_OPS (1u << BLOCK_OP_WRITE | 1u << BLOCK_OP_FLUSH)
#define R_OPS (1u << BLOCK_OP_READ)

/* Requests posted with no_kick, then one kick: the device takes them in one wake-up. */
static void kick_batch(struct fx *f)
{
    no_kick = false;
    virtio_kick(f->vdev, 0);
    wait_used(f);
}

static unsigned nsubmitted(enum block_op op)
{
    pthread_mutex_lock(&gate_lock);
    unsigned n = submitted[op];
    pthread_mutex_unlock(&gate_lock);
    return n;
}

static void pattern(struct fx *f, uint32_t off, uint32_t len, unsigned seed)
{
    for (uint32_t i = 0; i < len; i++)
        f->ram[off + i] = (uint8_t)(i * 31 + seed * 7 + (i >> 9));
}

static void assert_file_has(struct fx *f, uint64_t off, const uint8_t *want, size_t len)
{
    uint8_t *buf = malloc(len);
    FILE *fp = fopen(f->path, "rb");
    assert_non_null(buf);
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)off, SEEK_SET), 0);
    assert_int_equal(fread(buf, 1, len, fp), len);
    fclose(fp);
    assert_memory_equal(buf, want, len);
    free(buf);
}

/* n 4 KiB writes of a pattern to sectors 0, 8, ... in one wake-up; each must succeed. */
static void write_run(struct fx *f, unsigned n, unsigned seed)
{
    pattern(f, DATA, n * 4096, seed);
    no_kick = true;
    for (unsigned s = 0; s < n; s++)
        post(f, s, VIRTIO_BLK_T_OUT, 8 * s, DATA + 4096 * s, 4096, false);
    kick_batch(f);
    for (unsigned s = 0; s < n; s++)
        assert_int_equal(f->ram[STATUS + s], VIRTIO_BLK_S_OK);
}

/* Reads and writes of one wake-up that continue each other go to the backend as one request;
 * a gap, another type or a flush between them ends a run. */
static void test_merge(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);
    driver_init(f, all_features);

    /* Five requests fill the test's queue (three descriptors each). Writes to sectors 0, 8,
     * 16 (one run), 64 and 72 (another). */
    static const uint64_t sectors[5] = {0, 8, 16, 64, 72};
    pattern(f, DATA, 5 * 4096, 1);
    no_kick = true;
    for (unsigned s = 0; s < 5; s++)
        post(f, s, VIRTIO_BLK_T_OUT, sectors[s], DATA + 4096 * s, 4096, false);
    kick_batch(f);
    for (unsigned s = 0; s < 5; s++)
        assert_int_equal(f->ram[STATUS + s], VIRTIO_BLK_S_OK);
    assert_int_equal(nsubmitted(BLOCK_OP_WRITE), 2);
    assert_int_equal(last_len, 8192);
    assert_int_equal(last_iovcnt, 2);
    assert_file_has(f, 0, f->ram + DATA, 3 * 4096);
    assert_file_has(f, 64 * 512, f->ram + DATA + 3 * 4096, 2 * 4096);

    /* Read them back: a flush in the middle ends the first run; the read at 64 follows the
     * one at 16 in the queue but not on the disk. */
    memset(f->ram + DATA + 0x20000, 0, 5 * 4096);
    no_kick = true;
    post(f, 0, VIRTIO_BLK_T_IN, 0, DATA + 0x20000, 4096, true);
    post(f, 1, VIRTIO_BLK_T_IN, 8, DATA + 0x21000, 4096, true);
    post(f, 2, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false);
    post(f, 3, VIRTIO_BLK_T_IN, 16, DATA + 0x22000, 4096, true);
    post(f, 4, VIRTIO_BLK_T_IN, 64, DATA + 0x23000, 8192, true);
    kick_batch(f);
    for (unsigned s = 0; s < 5; s++)
        assert_int_equal(f->ram[STATUS + s], VIRTIO_BLK_S_OK);
    assert_int_equal(nsubmitted(BLOCK_OP_READ), 3);
    assert_int_equal(nsubmitted(BLOCK_OP_FLUSH), 1);
    assert_memory_equal(f->ram + DATA + 0x20000, f->ram + DATA, 5 * 4096);
    /* Each request's own used length: a merged read reports its own bytes. */
    static const uint32_t used[5] = {4097, 4097, 1, 4097, 8193};
    for (unsigned i = 0; i < 5; i++) {
        uint16_t e = (uint16_t)(f->used_seen - 5 + i);
        uint32_t head = le_get32(f->ram + USED + 4 + 8 * (e % QSIZE));
        assert_int_equal(used_len(f, e), used[head / 3]); /* in completion order */
    }

    /* A read and a write that continue each other on the disk stay apart. */
    no_kick = true;
    post(f, 0, VIRTIO_BLK_T_IN, 0, DATA + 0x20000, 4096, true);
    post(f, 1, VIRTIO_BLK_T_OUT, 8, DATA + 4096, 4096, false);
    kick_batch(f);
    assert_int_equal(nsubmitted(BLOCK_OP_READ), 4);
    assert_int_equal(nsubmitted(BLOCK_OP_WRITE), 3);
    assert_int_equal(f->ram[STATUS], VIRTIO_BLK_S_OK);
    assert_int_equal(f->ram[STATUS + 1], VIRTIO_BLK_S_OK);
}

/* A merged I/O stays within what the format serves in one piece (qcow2: one write plan). */
static void test_merge_max_transfer(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);
    f->bb->max_transfer = 8192; /* before the device reads it at creation: a new device */
    virtio_blk_destroy(f->blk);
    struct error err = {0};
    struct virtio_blk_params p = {.queue_size = QSIZE, .discard = true, .write_zeroes = true};
    assert_int_equal(virtio_blk_create(&f->mem, f->bb, &p, &f->blk, &err), 0);
    f->vdev = virtio_blk_vdev(f->blk);
    f->vdev->transport = &fake_ops;
    driver_init(f, all_features);
    write_run(f, 5, 4);
    assert_int_equal(nsubmitted(BLOCK_OP_WRITE), 3); /* 8 KiB, 8 KiB, 4 KiB */
    assert_int_equal(last_len, 4096);
    assert_file_has(f, 0, f->ram + DATA, 5 * 4096);
}

/* Without the write cache a merged write is flushed once for all of its requests. */
static void test_merge_write_through(void **state)
{
    struct fx *f = *state;
    create(f, false, BLOCK_CACHE_WRITEBACK);
    /* A driver without FLUSH or CONFIG_WCE: every write must be durable when it completes. */
    driver_init(f, all_features &
                       ~(VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) | VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE)));
    write_run(f, 3, 2);
    assert_int_equal(nsubmitted(BLOCK_OP_WRITE), 1);
    assert_int_equal(nsubmitted(BLOCK_OP_FLUSH), 1);
    assert_file_has(f, 0, f->ram + DATA, 3 * 4096);
}

/* A merged write that fails fails for each of its requests: werror=report completes each with
 * IOERR, werror=stop holds each, and the retry submits them one by one. */
static void test_merge_errors(void **state)
{
    struct fx *f = *state;
    create_with(f, false, BLOCK_CACHE_WRITEBACK, DRIVE_ERROR_STOP, DRIVE_ERROR_REPORT);
    driver_init(f, all_features);
    pattern(f, DATA, 3 * 4096, 3);

    /* rerror=report: three reads in one I/O, three errors. */
    inject(EIO, R_OPS);
    no_kick = true;
    for (unsigned s = 0; s < 3; s++)
        post(f, s, VIRTIO_BLK_T_IN, 8 * s, DATA + 0x20000 + 4096 * s, 4096, true);
    kick_batch(f);
    for (unsigned s = 0; s < 3; s++)
        assert_int_equal(f->ram[STATUS + s], VIRTIO_BLK_S_IOERR);
    assert_int_equal(nsubmitted(BLOCK_OP_READ), 1);
    assert_int_equal(errors_seen(NULL), 3);

    /* werror=stop: all three held, no used entry; then retried alone and completed. */
    inject(EIO, W_OPS);
    uint16_t used_before = used_idx(f);
    no_kick = true;
    for (unsigned s = 0; s < 3; s++)
        post(f, s, VIRTIO_BLK_T_OUT, 8 * s, DATA + 4096 * s, 4096, false);
    no_kick = false;
    virtio_kick(f->vdev, 0);
    wait_held(f, 3);
    assert_int_equal(errors_seen(NULL), 6);
    assert_int_equal(nsubmitted(BLOCK_OP_WRITE), 1);
    usleep(20000);
    assert_int_equal(used_idx(f), used_before);
    inject(0, 0);
    virtio_blk_retry(f->blk);
    wait_used(f);
    for (unsigned s = 0; s < 3; s++)
        assert_int_equal(f->ram[STATUS + s], VIRTIO_BLK_S_OK);
    assert_int_equal(nsubmitted(BLOCK_OP_WRITE), 4);
    assert_int_equal(virtio_blk_held(f->blk), 0);
    assert_file_has(f, 0, f->ram + DATA, 3 * 4096);
}

static void wait_errors(unsigned n)
{
    for (int i = 0; i < 5000; i++) {
        if (errors_seen(NULL) >= n)
            return;
        usleep(1000);
    }
    fail_msg("on_error was called %u times, not %u", errors_seen(NULL), n);
}

/* report: the guest sees IOERR; the owner hears of it with action report. */
static void test_error_report(void **state)
{
    struct fx *f = *state;
    create_with(f, false, BLOCK_CACHE_WRITEBACK, DRIVE_ERROR_REPORT, DRIVE_ERROR_REPORT);
    driver_init(f, all_features);
    inject(EIO, W_OPS | R_OPS);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 0, DATA, 4096, false), VIRTIO_BLK_S_IOERR);
    struct virtio_blk_error e = {0};
    assert_int_equal(errors_seen(&e), 1);
    assert_false(e.is_read);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_REPORT);
    assert_int_equal(e.error, EIO);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_IN, 0, DATA, 4096, true), VIRTIO_BLK_S_IOERR);
    assert_int_equal(errors_seen(&e), 2);
    assert_true(e.is_read);
    /* Flushes are writes (werror). */
    assert_int_equal(request(f, 2, VIRTIO_BLK_T_FLUSH, 0, 0, 0, false), VIRTIO_BLK_S_IOERR);
    assert_int_equal(errors_seen(&e), 3);
    assert_false(e.is_read);
    inject(0, 0);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 0, DATA, 4096, false), VIRTIO_BLK_S_OK);
    assert_int_equal(errors_seen(NULL), 3);
    assert_int_equal(virtio_blk_held(f->blk), 0);
}

/* ignore: the guest sees success; the owner still hears of it. */
static void test_error_ignore(void **state)
{
    struct fx *f = *state;
    create_with(f, false, BLOCK_CACHE_WRITEBACK, DRIVE_ERROR_IGNORE, DRIVE_ERROR_IGNORE);
    driver_init(f, all_features);
    inject(EIO, W_OPS | R_OPS);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 0, DATA, 4096, false), VIRTIO_BLK_S_OK);
    struct virtio_blk_error e = {0};
    assert_int_equal(errors_seen(&e), 1);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_IGNORE);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_IN, 0, DATA, 4096, true), VIRTIO_BLK_S_OK);
    assert_int_equal(errors_seen(&e), 2);
    assert_true(e.is_read);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_IGNORE);
    assert_int_equal(virtio_blk_held(f->blk), 0);
}

/* stop: the request is held (no used entry) until a retry, which completes it once the cause is
 * gone; a retry while it persists holds it again. */
static void test_error_stop(void **state)
{
    struct fx *f = *state;
    create_with(f, false, BLOCK_CACHE_WRITEBACK, DRIVE_ERROR_STOP, DRIVE_ERROR_STOP);
    driver_init(f, all_features);
    for (unsigned i = 0; i < 4096; i++)
        f->ram[DATA + i] = (uint8_t)(i * 7 + 1);
    inject(EIO, W_OPS);
    post(f, 0, VIRTIO_BLK_T_OUT, 16, DATA, 4096, false);
    wait_held(f, 1);
    struct virtio_blk_error e = {0};
    assert_int_equal(errors_seen(&e), 1);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_STOP);
    assert_false(e.is_read);
    assert_int_equal(e.error, EIO);
    usleep(20000);
    assert_int_equal(used_idx(f), 0);
    assert_int_equal(f->ram[STATUS], 0xee);

    /* cont with the cause still there: stopped again. */
    virtio_blk_retry(f->blk);
    wait_errors(2);
    wait_held(f, 1);
    assert_int_equal(used_idx(f), 0);

    /* The cause went away: the retry completes the request, the data is on disk. */
    inject(0, 0);
    virtio_blk_retry(f->blk);
    wait_used(f);
    assert_int_equal(f->ram[STATUS], VIRTIO_BLK_S_OK);
    assert_int_equal(virtio_blk_held(f->blk), 0);
    assert_int_equal(errors_seen(NULL), 2);
    memset(f->ram + DATA + 0x10000, 0, 4096);
    assert_int_equal(request(f, 1, VIRTIO_BLK_T_IN, 16, DATA + 0x10000, 4096, true),
                     VIRTIO_BLK_S_OK);
    assert_memory_equal(f->ram + DATA + 0x10000, f->ram + DATA, 4096);

    /* rerror=stop holds a read the same way; a retry with nothing held does nothing. */
    inject(EIO, R_OPS);
    memset(f->ram + DATA + 0x10000, 0, 4096);
    post(f, 2, VIRTIO_BLK_T_IN, 16, DATA + 0x10000, 4096, true);
    wait_held(f, 1);
    assert_int_equal(errors_seen(&e), 3);
    assert_true(e.is_read);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_STOP);
    inject(0, 0);
    virtio_blk_retry(f->blk);
    wait_used(f);
    assert_int_equal(f->ram[STATUS + 2], VIRTIO_BLK_S_OK);
    assert_memory_equal(f->ram + DATA + 0x10000, f->ram + DATA, 4096);
    virtio_blk_retry(f->blk);
    usleep(20000);
    assert_int_equal(used_idx(f), f->avail_idx);
}

/* enospc (werror's default): ENOSPC and EDQUOT stop, anything else is reported. */
static void test_error_enospc(void **state)
{
    struct fx *f = *state;
    create_with(f, false, BLOCK_CACHE_WRITEBACK, DRIVE_ERROR_ENOSPC, DRIVE_ERROR_REPORT);
    driver_init(f, all_features);
    inject(EIO, W_OPS);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 0, DATA, 4096, false), VIRTIO_BLK_S_IOERR);
    struct virtio_blk_error e = {0};
    assert_int_equal(errors_seen(&e), 1);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_REPORT);
    assert_false(drive_error_nospace(e.error));

    inject(ENOSPC, W_OPS);
    post(f, 1, VIRTIO_BLK_T_OUT, 0, DATA, 4096, false);
    wait_held(f, 1);
    assert_int_equal(errors_seen(&e), 2);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_STOP);
    assert_int_equal(e.error, ENOSPC);
    assert_true(drive_error_nospace(e.error));
    inject(EDQUOT, W_OPS);
    virtio_blk_retry(f->blk);
    wait_errors(3);
    wait_held(f, 1);
    assert_int_equal(errors_seen(&e), 3);
    assert_int_equal(e.action, DRIVE_ERROR_TAKEN_STOP);
    inject(0, 0);
    virtio_blk_retry(f->blk);
    wait_used(f);
    assert_int_equal(f->ram[STATUS + 1], VIRTIO_BLK_S_OK);
}

/* A reset (or the end) with requests held drops them; the device works after it. */
static void test_error_stop_reset(void **state)
{
    struct fx *f = *state;
    create_with(f, false, BLOCK_CACHE_WRITEBACK, DRIVE_ERROR_STOP, DRIVE_ERROR_REPORT);
    driver_init(f, all_features);
    inject(ENOSPC, W_OPS);
    for (unsigned s = 0; s < 3; s++)
        post(f, s, VIRTIO_BLK_T_OUT, 8 * s, DATA, 4096, false);
    wait_held(f, 3);
    pthread_mutex_lock(&f->vdev->lock);
    virtio_set_status(f->vdev, 0);
    pthread_mutex_unlock(&f->vdev->lock);
    assert_int_equal(virtio_blk_held(f->blk), 0);
    inject(0, 0);
    virtio_blk_retry(f->blk); /* a cont after the reset: nothing to do, harmless */
    driver_init(f, all_features);
    assert_int_equal(request(f, 0, VIRTIO_BLK_T_OUT, 0, DATA, 4096, false), VIRTIO_BLK_S_OK);
    /* Held again at destroy (teardown): dropped without a leak. */
    inject(EIO, W_OPS);
    post(f, 1, VIRTIO_BLK_T_OUT, 8, DATA, 4096, false);
    wait_held(f, 1);
}

/* The drive options' decisions, QEMU's blk_get_error_action. */
static void test_error_decide(void **state)
{
    (void)state;
    assert_int_equal(drive_error_decide(DRIVE_ERROR_REPORT, ENOSPC), DRIVE_ERROR_TAKEN_REPORT);
    assert_int_equal(drive_error_decide(DRIVE_ERROR_IGNORE, EIO), DRIVE_ERROR_TAKEN_IGNORE);
    assert_int_equal(drive_error_decide(DRIVE_ERROR_STOP, EIO), DRIVE_ERROR_TAKEN_STOP);
    assert_int_equal(drive_error_decide(DRIVE_ERROR_ENOSPC, ENOSPC), DRIVE_ERROR_TAKEN_STOP);
    assert_int_equal(drive_error_decide(DRIVE_ERROR_ENOSPC, EDQUOT), DRIVE_ERROR_TAKEN_STOP);
    assert_int_equal(drive_error_decide(DRIVE_ERROR_ENOSPC, EIO), DRIVE_ERROR_TAKEN_REPORT);
    assert_string_equal(drive_error_taken_name(DRIVE_ERROR_TAKEN_REPORT), "report");
    assert_string_equal(drive_error_taken_name(DRIVE_ERROR_TAKEN_IGNORE), "ignore");
    assert_string_equal(drive_error_taken_name(DRIVE_ERROR_TAKEN_STOP), "stop");
    struct drive_opts d;
    struct error err = {0};
    assert_int_equal(drive_parse("file=a,if=virtio,werror=stop,rerror=stop", 0, &d, &err), 0);
    assert_int_equal(d.werror, DRIVE_ERROR_STOP);
    assert_int_equal(d.rerror, DRIVE_ERROR_STOP);
    drive_opts_free(&d);
    assert_int_equal(drive_parse("file=a,if=virtio", 0, &d, &err), 0);
    assert_int_equal(d.werror, DRIVE_ERROR_ENOSPC);
    assert_int_equal(d.rerror, DRIVE_ERROR_REPORT);
    drive_opts_free(&d);
    memset(&err, 0, sizeof(err));
    assert_int_equal(drive_parse("file=a,if=virtio,werror=x", 0, &d, &err), -1);
    assert_string_equal(err.msg, "'x' invalid write error action");
    memset(&err, 0, sizeof(err));
    assert_int_equal(drive_parse("file=a,if=virtio,rerror=enospc", 0, &d, &err), -1);
    assert_string_equal(err.msg, "'enospc' invalid read error action");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kick_suppression, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_max_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_write_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_ignore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_enospc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_stop_reset, setup, teardown),
        cmocka_unit_test(test_error_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
