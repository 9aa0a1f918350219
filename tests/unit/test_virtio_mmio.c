/*
 * Unit tests for the virtio-mmio transport: the register block as Linux's virtio_mmio driver
 * reads it, a virtio-rng end to end (features, a queue in guest RAM, QueueNotify, the interrupt
 * pulse, InterruptStatus/ACK, bytes of a known file), and a hostile driver (bad queue index,
 * size and addresses, odd access widths, changes after DRIVER_OK) that must get
 * DEVICE_NEEDS_RESET or be ignored, never more.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "core/bus.h"
#include "core/bytes.h"
#include "core/memory.h"
#include "virtio/device.h"
#include "virtio/mmio.h"
#include "virtio/rng.h"

#define RAM_SIZE   (1u << 20)
#define BASE       0xfeb00000ull
#define GSI        16
#define DESC       0x1000u
#define AVAIL      0x2000u
#define USED       0x3000u
#define DATA       0x10000u
#define QSIZE      16
#define FILE_LEN   8192
#define TIMEOUT_MS 5000

struct tb {
    struct bus mmio;
    uint8_t *ram;
    struct guest_mem mem;
    char path[64];
    uint8_t content[FILE_LEN];

    pthread_mutex_t lock; /* the interrupt line, driven from the device's thread */
    int level;
    unsigned pulses; /* rising edges */

    struct virtio_rng *rng;
    struct virtio_device *vdev;
    struct virtio_mmio *vm;
};

static void fake_irq(void *opaque, unsigned gsi, int level)
{
    struct tb *t = opaque;
    assert_int_equal(gsi, GSI);
    pthread_mutex_lock(&t->lock);
    if (level && !t->level)
        t->pulses++;
    t->level = level;
    pthread_mutex_unlock(&t->lock);
}

static unsigned pulses(struct tb *t)
{
    pthread_mutex_lock(&t->lock);
    unsigned n = t->pulses;
    assert_int_equal(t->level, 0); /* edge: the line never stays up */
    pthread_mutex_unlock(&t->lock);
    return n;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A transport around vdev, registered at BASE. */
static void attach(struct tb *t, struct virtio_device *vdev)
{
    struct error err = {0};
    t->vdev = vdev;
    struct irq_line irq = {.set = fake_irq, .opaque = t, .gsi = GSI};
    assert_int_equal(virtio_mmio_create(vdev, irq, &t->vm, &err), 0);
    assert_int_equal(bus_register(&t->mmio, BASE, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, t->vm,
                                  "virtio-mmio", &err),
                     0);
}

static struct tb *board(void)
{
    struct tb *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    pthread_mutex_init(&t->lock, NULL);
    bus_init(&t->mmio, "mmio");
    t->ram = aligned_alloc(4096, RAM_SIZE);
    assert_non_null(t->ram);
    memset(t->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&t->mem, t->ram, RAM_SIZE);
    for (unsigned i = 0; i < FILE_LEN; i++)
        t->content[i] = (uint8_t)(i * 13 + 5 + i / 256);
    snprintf(t->path, sizeof(t->path), "/tmp/kemu-mmio-XXXXXX");
    int fd = mkstemp(t->path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t->content, FILE_LEN), FILE_LEN);
    close(fd);
    return t;
}

static struct tb *rng_board(void)
{
    struct tb *t = board();
    struct error err = {0};
    assert_int_equal(virtio_rng_create(&t->mem, t->path, 0, 1000, &t->rng, &err), 0);
    attach(t, virtio_rng_vdev(t->rng));
    return t;
}

static void board_free(struct tb *t)
{
    virtio_mmio_destroy(t->vm);
    if (t->rng)
        virtio_rng_destroy(t->rng);
    bus_destroy(&t->mmio);
    unlink(t->path);
    free(t->ram);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static uint64_t rd(struct tb *t, uint64_t off, unsigned size)
{
    uint64_t v;
    assert_true(bus_read(&t->mmio, BASE + off, size, &v));
    return v;
}

static uint32_t r32(struct tb *t, uint64_t off)
{
    return (uint32_t)rd(t, off, 4);
}

static void wr(struct tb *t, uint64_t off, unsigned size, uint64_t v)
{
    assert_true(bus_write(&t->mmio, BASE + off, size, v));
}

static void w32(struct tb *t, uint64_t off, uint32_t v)
{
    wr(t, off, 4, v);
}

/* What Linux's vm_probe and virtio_dev_probe do up to FEATURES_OK. */
static void negotiate(struct tb *t)
{
    assert_int_equal(r32(t, VIRTIO_MMIO_MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
    assert_int_equal(r32(t, VIRTIO_MMIO_VERSION), 2);
    w32(t, VIRTIO_MMIO_STATUS, 0);
    w32(t, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    w32(t, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    w32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    uint64_t f = (uint64_t)r32(t, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
    w32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    f |= r32(t, VIRTIO_MMIO_DEVICE_FEATURES);
    assert_true(f & VIRTIO_BIT(VIRTIO_F_VERSION_1));
    f &= ~VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX); /* every used buffer interrupts */
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(f >> 32));
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)f);
    w32(t, VIRTIO_MMIO_STATUS,
        VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    assert_true(r32(t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
}

/* vm_setup_vq for queue q, size n, rings at the given addresses. */
static void setup_queue(struct tb *t, unsigned q, uint32_t n, uint64_t desc, uint64_t avail,
                        uint64_t used)
{
    w32(t, VIRTIO_MMIO_QUEUE_SEL, q);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 0);
    w32(t, VIRTIO_MMIO_QUEUE_NUM, n);
    w32(t, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    w32(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    w32(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
    w32(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
    w32(t, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
    w32(t, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
    w32(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

static void driver_ok(struct tb *t)
{
    w32(t, VIRTIO_MMIO_STATUS,
        VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
            VIRTIO_STATUS_DRIVER_OK);
}

static void test_registers(void **state)
{
    struct tb *t = rng_board();
    assert_int_equal(r32(t, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
    assert_int_equal(r32(t, VIRTIO_MMIO_VERSION), 2);
    assert_int_equal(r32(t, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
    assert_int_equal(r32(t, VIRTIO_MMIO_VENDOR_ID), 0x554d4551);
    assert_string_equal(virtio_mmio_name(t->vm), "virtio-rng-device");
    /* One queue: QueueNumMax is its size; any other index reads 0 (no such queue). */
    w32(t, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_true(r32(t, VIRTIO_MMIO_QUEUE_NUM_MAX) >= QSIZE);
    for (uint32_t q = 1; q != 0; q = q * 3 + 1) {
        w32(t, VIRTIO_MMIO_QUEUE_SEL, q);
        assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
        w32(t, VIRTIO_MMIO_QUEUE_READY, 1); /* ignored */
        assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 0);
        if (q > 0x40000000u)
            break;
    }
    assert_int_equal(r32(t, VIRTIO_MMIO_STATUS), 0);
    /* Control registers take aligned 32-bit accesses only. */
    assert_int_equal(rd(t, VIRTIO_MMIO_MAGIC_VALUE, 1), 0);
    assert_int_equal(rd(t, VIRTIO_MMIO_MAGIC_VALUE, 2), 0);
    assert_int_equal(rd(t, VIRTIO_MMIO_MAGIC_VALUE, 8), 0);
    assert_int_equal(rd(t, VIRTIO_MMIO_MAGIC_VALUE + 1, 4), 0);
    wr(t, VIRTIO_MMIO_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
    assert_int_equal(r32(t, VIRTIO_MMIO_STATUS), 0);
    /* No shared memory regions: length -1. */
    assert_int_equal(r32(t, VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffffu);
    assert_int_equal(r32(t, VIRTIO_MMIO_SHM_LEN_HIGH), 0xffffffffu);
    /* No config space: reads 0. */
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG, 4), 0);
    assert_int_equal(rd(t, VIRTIO_MMIO_SIZE - 1, 1), 0);
    /* Feature words past the second read 0. */
    w32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_int_equal(r32(t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    w32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0xffffffffu);
    assert_int_equal(r32(t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    assert_int_equal(pulses(t), 0);
    board_free(t);
}

/* Offer `len` bytes at DATA as one writable buffer; returns the avail index after it. */
static uint16_t offer(struct tb *t, uint16_t avail_idx, uint32_t len)
{
    uint8_t *d = t->ram + DESC;
    le_put64(d, DATA);
    le_put32(d + 8, len);
    le_put16(d + 12, VIRTQ_DESC_F_WRITE);
    le_put16(d + 14, 0);
    uint8_t *a = t->ram + AVAIL;
    le_put16(a + 4 + 2 * (avail_idx % QSIZE), 0);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    le_put16(a + 2, (uint16_t)(avail_idx + 1));
    return (uint16_t)(avail_idx + 1);
}

static uint16_t used_idx(struct tb *t)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return le_get16(t->ram + USED + 2);
}

static void test_rng_end_to_end(void **state)
{
    struct tb *t = rng_board();
    negotiate(t);
    setup_queue(t, 0, QSIZE, DESC, AVAIL, USED);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_NUM), QSIZE);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_DESC_LOW), DESC);
    driver_ok(t);
    assert_false(r32(t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);

    uint16_t idx = offer(t, 0, 512);
    w32(t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    uint64_t end = now_ms() + TIMEOUT_MS;
    while (used_idx(t) != idx && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(used_idx(t), idx);
    end = now_ms() + TIMEOUT_MS;
    while (pulses(t) == 0 && now_ms() < end)
        sleep_ms(1);
    assert_true(pulses(t) >= 1);
    assert_int_equal(r32(t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
                     VIRTIO_MMIO_INT_VRING);
    uint32_t written = le_get32(t->ram + USED + 4 + 4);
    assert_true(written > 0 && written <= 512);
    assert_memory_equal(t->ram + DATA, t->content, written);
    /* ACK of another bit leaves it; ACK of it clears it. */
    w32(t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    assert_int_equal(r32(t, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    w32(t, VIRTIO_MMIO_INTERRUPT_ACK, 0xffffffffu);
    assert_int_equal(r32(t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);

    /* A notify naming no queue is ignored; a second buffer through queue 0 works. */
    w32(t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    w32(t, VIRTIO_MMIO_QUEUE_NOTIFY, 0xffffffffu);
    unsigned before = pulses(t);
    idx = offer(t, idx, 256);
    w32(t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    end = now_ms() + TIMEOUT_MS;
    while ((used_idx(t) != idx || pulses(t) == before) && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(used_idx(t), idx);
    assert_true(pulses(t) > before);

    /* Reset through the status register: everything back to power-on. */
    w32(t, VIRTIO_MMIO_STATUS, 0);
    assert_int_equal(r32(t, VIRTIO_MMIO_STATUS), 0);
    assert_int_equal(r32(t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    w32(t, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_DESC_LOW), 0);
    board_free(t);
}

/* The driver tries to set up queue 0 with (num, desc, avail, used) and must be refused. */
static void refused(struct tb *t, uint32_t num, uint64_t desc, uint64_t avail, uint64_t used)
{
    w32(t, VIRTIO_MMIO_STATUS, 0);
    negotiate(t);
    unsigned before = pulses(t);
    setup_queue(t, 0, num, desc, avail, used);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_true(r32(t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert_int_equal(pulses(t), before); /* before DRIVER_OK the driver is not interrupted */
}

static void test_hostile_queue_setup(void **state)
{
    struct tb *t = rng_board();
    uint32_t max = (w32(t, VIRTIO_MMIO_QUEUE_SEL, 0), r32(t, VIRTIO_MMIO_QUEUE_NUM_MAX));
    refused(t, 0, DESC, AVAIL, USED);
    refused(t, 3, DESC, AVAIL, USED);           /* not a power of two */
    refused(t, max * 2, DESC, AVAIL, USED);     /* above QueueNumMax */
    refused(t, 0xffffffffu, DESC, AVAIL, USED); /* truncation must not make it valid */
    refused(t, 0x10000u | QSIZE, DESC, AVAIL, USED);
    refused(t, QSIZE, RAM_SIZE, AVAIL, USED); /* rings outside RAM */
    refused(t, QSIZE, DESC, 0xfffffffffffffff0ull, USED);
    refused(t, QSIZE, DESC, AVAIL, RAM_SIZE - 8);
    refused(t, QSIZE, DESC + 1, AVAIL, USED); /* misaligned descriptor table */

    /* After a reset, a good set-up works again. */
    w32(t, VIRTIO_MMIO_STATUS, 0);
    negotiate(t);
    setup_queue(t, 0, QSIZE, DESC, AVAIL, USED);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 1);
    /* While enabled the queue's registers do not change. */
    w32(t, VIRTIO_MMIO_QUEUE_NUM, 2);
    w32(t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_NUM), QSIZE);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_DESC_LOW), DESC);
    driver_ok(t);
    assert_false(r32(t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    /* Disabling a queue under the running backend: DEVICE_NEEDS_RESET, not a change. */
    w32(t, VIRTIO_MMIO_QUEUE_READY, 0);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_true(r32(t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    /* Accesses outside the window or of odd sizes go nowhere. */
    assert_false(bus_write(&t->mmio, BASE + VIRTIO_MMIO_SIZE, 4, 0));
    wr(t, VIRTIO_MMIO_SIZE - 2, 4, 0xffffffff);
    wr(t, VIRTIO_MMIO_QUEUE_SEL, 3, 0xffffffff);
    wr(t, VIRTIO_MMIO_QUEUE_NOTIFY + 2, 2, 0);
    assert_int_equal(rd(t, VIRTIO_MMIO_SIZE - 2, 4), 0);
    board_free(t);
}

/* A device kind with a config space, to check the window onto it. */
static int cfg_start(struct virtio_device *vdev)
{
    return 0;
}

static void cfg_stop(struct virtio_device *vdev) {}

static void cfg_written(struct virtio_device *vdev, unsigned offset, unsigned size)
{
    (*(unsigned *)vdev->opaque)++;
}

static const struct virtio_device_ops cfg_ops = {
    .start = cfg_start, .stop = cfg_stop, .config_write = cfg_written};

static void test_config_space(void **state)
{
    struct tb *t = board();
    struct virtio_device vdev;
    unsigned writes = 0;
    struct error err = {0};
    assert_int_equal(virtio_device_init(&vdev, "virtio-test", &cfg_ops, &writes, &t->mem,
                                        VIRTIO_ID_BLOCK, 0, 2, QSIZE, 12, &err),
                     0);
    for (unsigned i = 0; i < 12; i++)
        vdev.config[i] = (uint8_t)(0xa0 + i);
    attach(t, &vdev);
    assert_int_equal(r32(t, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
    assert_string_equal(virtio_mmio_name(t->vm), "virtio-test-device");
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG, 1), 0xa0);
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG + 2, 2), 0xa3a2);
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG + 4, 4), 0xa7a6a5a4);
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG, 8), 0xa7a6a5a4a3a2a1a0ull);
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG + 12, 4), 0); /* past the config space */
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG + 10, 4) & 0xffff, 0);
    wr(t, VIRTIO_MMIO_CONFIG + 1, 1, 0x55);
    assert_int_equal(vdev.config[1], 0x55);
    assert_int_equal(writes, 1);
    wr(t, VIRTIO_MMIO_CONFIG + 0x40, 4, 0x12345678); /* past it: dropped */
    assert_int_equal(rd(t, VIRTIO_MMIO_CONFIG + 0x40, 4), 0);
    /* Two queues: the second one sets up too, and the machine reset undoes it. */
    negotiate(t);
    setup_queue(t, 1, 8, DESC, AVAIL, USED);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 1);
    driver_ok(t);
    uint32_t gen = r32(t, VIRTIO_MMIO_CONFIG_GENERATION);
    unsigned before = pulses(t);
    virtio_config_changed(&vdev);
    assert_int_equal(r32(t, VIRTIO_MMIO_CONFIG_GENERATION), gen + 1);
    assert_true(r32(t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
    assert_int_equal(pulses(t), before + 1);
    virtio_mmio_reset(t->vm);
    assert_int_equal(r32(t, VIRTIO_MMIO_STATUS), 0);
    assert_int_equal(r32(t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    w32(t, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_int_equal(r32(t, VIRTIO_MMIO_QUEUE_READY), 0);
    /* A device with a transport cannot get a second one. */
    struct virtio_mmio *second = NULL;
    struct irq_line irq = {.set = fake_irq, .opaque = t, .gsi = GSI};
    assert_int_equal(virtio_mmio_create(&vdev, irq, &second, &err), -1);
    virtio_mmio_destroy(t->vm);
    t->vm = NULL;
    assert_null(vdev.transport);
    virtio_device_destroy(&vdev);
    board_free(t);
}

/* ---- QueueNotify through ioeventfds: a fake KVM that records what is registered ---- */

struct fake_kvm {
    bool fail;     /* refuse registrations, as a KVM without room would */
    int active[4]; /* per datamatch (queue index): registered and not removed */
    int fd[4];     /* the eventfd each was registered with */
    unsigned calls;
};

static int fake_ioeventfd(void *ctx, uint64_t addr, unsigned len, uint64_t datamatch, int fd,
                          bool assign)
{
    struct fake_kvm *k = ctx;
    k->calls++;
    assert_int_equal(addr, BASE + VIRTIO_MMIO_QUEUE_NOTIFY);
    assert_int_equal(len, 4);
    assert_true(datamatch < 4);
    if (!assign) {
        /* Removal names what was registered, once. */
        assert_int_equal(k->active[datamatch], 1);
        assert_int_equal(k->fd[datamatch], fd);
        k->active[datamatch] = 0;
        return 0;
    }
    if (k->fail)
        return -1;
    assert_int_equal(k->active[datamatch], 0);
    k->active[datamatch] = 1;
    k->fd[datamatch] = fd;
    return 0;
}

/* Offer a buffer and have it used, the notification sent by kick(). */
static void serve(struct tb *t, uint16_t *idx, void (*kick)(struct tb *t))
{
    *idx = offer(t, *idx, 64);
    kick(t);
    uint64_t end = now_ms() + TIMEOUT_MS;
    while (used_idx(t) != *idx && now_ms() < end)
        sleep_ms(1);
    assert_int_equal(used_idx(t), *idx);
}

static void kick_as_kvm(struct tb *t)
{
    /* What KVM does on a matching QueueNotify write: the vCPU thread never sees it. */
    uint64_t one = 1;
    assert_int_equal(write(t->vdev->kick_fd[0], &one, sizeof(one)), (ssize_t)sizeof(one));
}

static void kick_by_trap(struct tb *t)
{
    w32(t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static void test_ioeventfd(void **state)
{
    struct tb *t = rng_board();
    struct fake_kvm k = {0};
    virtio_mmio_set_ioeventfd(t->vm, BASE, fake_ioeventfd, &k);
    assert_int_equal(k.calls, 0); /* no queue enabled yet */
    negotiate(t);
    setup_queue(t, 0, QSIZE, DESC, AVAIL, USED);
    assert_int_equal(k.active[0], 1);
    assert_int_equal(k.fd[0], t->vdev->kick_fd[0]);
    driver_ok(t);
    uint16_t idx = 0;
    serve(t, &idx, kick_as_kvm);
    serve(t, &idx, kick_by_trap); /* the trap path still works beside it */

    /* A device reset removes it before the device stops. */
    w32(t, VIRTIO_MMIO_STATUS, 0);
    assert_int_equal(k.active[0], 0);

    /* Registration refused: notifications trap, and nothing is removed later. */
    k.fail = true;
    negotiate(t);
    setup_queue(t, 0, QSIZE, DESC, AVAIL, USED);
    assert_int_equal(k.active[0], 0);
    driver_ok(t);
    idx = 0;
    serve(t, &idx, kick_by_trap);
    unsigned calls = k.calls;
    w32(t, VIRTIO_MMIO_STATUS, 0);
    assert_int_equal(k.calls, calls);

    /* QueueReady = 0 disables the queue and removes its ioeventfd; a machine reset too. */
    k.fail = false;
    negotiate(t);
    setup_queue(t, 0, QSIZE, DESC, AVAIL, USED);
    assert_int_equal(k.active[0], 1);
    w32(t, VIRTIO_MMIO_QUEUE_READY, 0);
    assert_int_equal(k.active[0], 0);
    w32(t, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_int_equal(k.active[0], 1);
    virtio_mmio_reset(t->vm);
    assert_int_equal(k.active[0], 0);

    /* Destroying the transport removes what is left. */
    negotiate(t);
    setup_queue(t, 0, QSIZE, DESC, AVAIL, USED);
    assert_int_equal(k.active[0], 1);
    board_free(t);
    assert_int_equal(k.active[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registers),           cmocka_unit_test(test_rng_end_to_end),
        cmocka_unit_test(test_hostile_queue_setup), cmocka_unit_test(test_config_space),
        cmocka_unit_test(test_ioeventfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
