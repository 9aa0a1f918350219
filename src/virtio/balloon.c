/*
 * virtio-balloon: the inflate, deflate and (free-page-reporting=on) reporting queues served by
 * one worker thread; the target and `actual` in the config space. See balloon.h.
 *
 * The config space (VIRTIO 1.x 5.5.4): le32 num_pages (the target, device-written), le32
 * actual (driver-written), le32 free_page_hint_cmd_id (unused: no FREE_PAGE_HINT), le32
 * poison_val (driver-written with PAGE_POISON).
 */
#include "virtio/balloon.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/bytes.h"
#include "core/os.h"

enum { Q_INFLATE, Q_DEFLATE, Q_REPORTING };

#define CFG_NUM_PAGES  0
#define CFG_ACTUAL     4
#define CFG_POISON_VAL 12
#define CFG_LEN        16

/* Frame numbers read from a buffer at a time. */
#define PFN_BATCH 256

struct virtio_balloon {
    struct virtio_device vdev;
    int stop_fd; /* eventfd: stop() asks the worker to return */
    pthread_t thread;

    /* Under vdev.lock. */
    uint32_t target_pages; /* num_pages: what the host asks the balloon to hold */
    uint32_t actual_pages; /* what the driver says it holds */
    virtio_balloon_change_fn *on_change;
    void *change_opaque;

    /* Worker state (the worker, or start/stop while none runs). */
    bool broken;
    bool stopping; /* atomic: stop() waits; a long buffer is left half done */
    struct vq_chain chain;

    bool poisoned;      /* PAGE_POISON negotiated with a non-zero value: reported pages keep it */
    uint64_t discarded; /* pages dropped from the host; atomic */
};

static uint64_t ram_size(const struct virtio_balloon *b)
{
    return b->vdev.mem->ram_size;
}

/* RAM less what a balloon of `pages` holds (0 if the driver claims more than there is). */
static uint64_t actual_bytes(const struct virtio_balloon *b, uint32_t pages)
{
    uint64_t held = (uint64_t)pages << VIRTIO_BALLOON_PFN_SHIFT;
    return held < ram_size(b) ? ram_size(b) - held : 0;
}

/* Drop the guest pages [gpa, gpa+len) from the host; count them. */
static void discard(struct virtio_balloon *b, uint64_t gpa, uint64_t len)
{
    int64_t n = guest_mem_discard(b->vdev.mem, gpa, len);
    if (n > 0)
        __atomic_add_fetch(&b->discarded, (uint64_t)n >> VIRTIO_BALLOON_PFN_SHIFT,
                           __ATOMIC_RELAXED);
}

static bool stopping(struct virtio_balloon *b)
{
    return __atomic_load_n(&b->stopping, __ATOMIC_ACQUIRE);
}

/* An inflate buffer: le32 frame numbers. Runs of consecutive frames go to the host as one
 * range; a frame outside guest RAM is skipped (the guest only hurts itself) without keeping
 * its neighbours from being dropped. A buffer may hold a billion frames: a stop request ends
 * it early (the driver is being reset; what it gave is its business then). */
static void inflate(struct virtio_balloon *b, const struct vq_chain *c)
{
    const struct virtqueue *vq = &b->vdev.vq[Q_INFLATE];
    const uint64_t page = 1u << VIRTIO_BALLOON_PFN_SHIFT;
    uint32_t n = vq_chain_readable_len(c) / 4;
    uint64_t run_start = 0, run_len = 0;
    uint8_t raw[PFN_BATCH * 4];
    for (uint32_t i = 0; i < n && !stopping(b);) {
        uint32_t k = n - i < PFN_BATCH ? n - i : PFN_BATCH;
        if (vq_chain_read(vq, c, i * 4, raw, (size_t)k * 4) < 0)
            break; /* cannot happen: the length came from the chain */
        for (uint32_t j = 0; j < k; j++) {
            uint64_t gpa = (uint64_t)le_get32(raw + j * 4) << VIRTIO_BALLOON_PFN_SHIFT;
            if (run_len && gpa == run_start + run_len &&
                guest_mem_ptr(b->vdev.mem, run_start, run_len + page)) {
                run_len += page;
                continue;
            }
            if (run_len)
                discard(b, run_start, run_len);
            run_len = 0;
            if (guest_mem_ptr(b->vdev.mem, gpa, page)) {
                run_start = gpa;
                run_len = page;
            }
        }
        i += k;
    }
    if (run_len)
        discard(b, run_start, run_len);
}

/* A reporting buffer: the free ranges themselves, as device-writable segments. They stay as
 * they are when the guest relies on their poison value. */
static void report(struct virtio_balloon *b, const struct vq_chain *c)
{
    if (__atomic_load_n(&b->poisoned, __ATOMIC_RELAXED))
        return;
    for (unsigned i = c->nr_readable; i < c->nr_segs; i++)
        discard(b, c->seg[i].gpa, c->seg[i].len);
}

/* Serve one queue; true when it pushed something. */
static bool service(struct virtio_balloon *b, unsigned q)
{
    struct virtio_device *vdev = &b->vdev;
    struct virtqueue *vq = &vdev->vq[q];
    bool pushed = false;
    for (unsigned chains = 0; !b->broken && !stopping(b); chains++) {
        if (chains == vq->size) {
            virtio_kick(vdev, q); /* a queue's worth per wake-up; come back for the rest */
            break;
        }
        struct error err = {0};
        int p = vq_pop(vq, &b->chain, &err);
        if (p < 0) {
            virtio_set_needs_reset(vdev, err.msg);
            b->broken = true;
            break;
        }
        if (p == 0)
            break;
        if (q == Q_INFLATE)
            inflate(b, &b->chain);
        else if (q == Q_REPORTING)
            report(b, &b->chain);
        /* deflate: the pages come back on their own, at the guest's next touch */
        vq_push(vq, b->chain.head, 0);
        pushed = true;
    }
    return pushed;
}

static void *worker(void *opaque)
{
    pthread_setname_np(pthread_self(), "virtio-balloon");
    struct virtio_balloon *b = opaque;
    struct virtio_device *vdev = &b->vdev;
    unsigned nq = vdev->nqueues;
    for (;;) {
        struct pollfd pfd[4];
        for (unsigned q = 0; q < nq; q++)
            pfd[q] = (struct pollfd){.fd = vdev->kick_fd[q], .events = POLLIN};
        pfd[nq] = (struct pollfd){.fd = b->stop_fd, .events = POLLIN};
        int n = poll(pfd, nq + 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (pfd[nq].revents & POLLIN))
            break;
        for (unsigned q = 0; q < nq; q++)
            if ((pfd[q].revents & POLLIN) && os_event_drain(vdev->kick_fd[q]) && service(b, q))
                virtio_notify_queue(vdev, q);
    }
    return NULL;
}

/* ---- config space (vdev->lock held) ---- */

static void put_config(struct virtio_balloon *b)
{
    le_put32(b->vdev.config + CFG_NUM_PAGES, b->target_pages);
    le_put32(b->vdev.config + CFG_ACTUAL, b->actual_pages);
}

static void update_poison(struct virtio_balloon *b)
{
    __atomic_store_n(&b->poisoned,
                     virtio_has_feature(&b->vdev, VIRTIO_BALLOON_F_PAGE_POISON) &&
                         le_get32(b->vdev.config + CFG_POISON_VAL) != 0,
                     __ATOMIC_RELAXED);
}

static void balloon_config_write(struct virtio_device *vdev, unsigned offset, unsigned size)
{
    struct virtio_balloon *b = vdev->opaque;
    uint32_t actual = le_get32(vdev->config + CFG_ACTUAL);
    /* num_pages is the device's: a driver write to it does not stick */
    uint32_t old = b->actual_pages;
    b->actual_pages = actual;
    put_config(b);
    update_poison(b);
    if (actual != old && b->on_change)
        b->on_change(b->change_opaque, actual_bytes(b, actual));
    (void)offset;
    (void)size;
}

/* ---- lifecycle (vdev->lock held) ---- */

static int balloon_start(struct virtio_device *vdev)
{
    struct virtio_balloon *b = vdev->opaque;
    b->broken = false;
    __atomic_store_n(&b->stopping, false, __ATOMIC_RELEASE);
    update_poison(b);
    os_event_drain(b->stop_fd);
    int e = pthread_create(&b->thread, NULL, worker, b);
    if (e) {
        fprintf(stderr, "kemu: %s: cannot start the worker thread: %s\n", vdev->name, strerror(e));
        return -1;
    }
    return 0;
}

static void balloon_stop(struct virtio_device *vdev)
{
    struct virtio_balloon *b = vdev->opaque;
    __atomic_store_n(&b->stopping, true, __ATOMIC_RELEASE);
    os_event_signal(b->stop_fd);
    pthread_join(b->thread, NULL);
    os_event_drain(b->stop_fd);
}

/* A reset (or a reboot) leaves the guest with no balloon: actual is 0 again (QEMU keeps the
 * old value until the next driver writes one). The target stays, as in QEMU: the next driver
 * inflates to it. */
static void balloon_reset(struct virtio_device *vdev)
{
    struct virtio_balloon *b = vdev->opaque;
    uint32_t old = b->actual_pages;
    memset(vdev->config, 0, CFG_LEN);
    b->actual_pages = 0;
    put_config(b);
    if (old && b->on_change)
        b->on_change(b->change_opaque, ram_size(b));
}

static const struct virtio_device_ops balloon_ops = {
    .reset = balloon_reset,
    .start = balloon_start,
    .stop = balloon_stop,
    .config_write = balloon_config_write,
};

/* ---- set-up and the monitor's side ---- */

int virtio_balloon_create(struct guest_mem *mem, const struct virtio_balloon_opts *o,
                          struct virtio_balloon **out, struct error *err)
{
    struct virtio_balloon *b = calloc(1, sizeof(*b));
    if (!b)
        return error_setf(err, "virtio-balloon: out of memory");
    bool reporting = o && o->free_page_reporting;
    b->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->stop_fd < 0) {
        error_setf_errno(err, errno, "virtio-balloon: eventfd");
        free(b);
        return -1;
    }
    uint64_t features = VIRTIO_BIT(VIRTIO_BALLOON_F_PAGE_POISON);
    if (o && o->deflate_on_oom)
        features |= VIRTIO_BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
    if (reporting)
        features |= VIRTIO_BIT(VIRTIO_BALLOON_F_REPORTING);
    /* Queues are numbered as the driver finds them: those of features not offered (stats,
     * free page hints) take no number, so the reporting queue is the third. */
    if (virtio_device_init(&b->vdev, "virtio-balloon", &balloon_ops, b, mem, VIRTIO_ID_BALLOON,
                           features, reporting ? 3 : 2, VIRTIO_BALLOON_QUEUE_SIZE, CFG_LEN,
                           err) < 0) {
        close(b->stop_fd);
        free(b);
        return -1;
    }
    *out = b;
    return 0;
}

struct virtio_device *virtio_balloon_vdev(struct virtio_balloon *b)
{
    return &b->vdev;
}

void virtio_balloon_set_change_handler(struct virtio_balloon *b, virtio_balloon_change_fn *fn,
                                       void *opaque)
{
    pthread_mutex_lock(&b->vdev.lock);
    b->on_change = fn;
    b->change_opaque = opaque;
    pthread_mutex_unlock(&b->vdev.lock);
}

void virtio_balloon_set_target(struct virtio_balloon *b, uint64_t target)
{
    uint64_t ram = ram_size(b);
    if (target > ram)
        target = ram;
    uint64_t pages = (ram - target) >> VIRTIO_BALLOON_PFN_SHIFT;
    pthread_mutex_lock(&b->vdev.lock);
    b->target_pages = pages > UINT32_MAX ? UINT32_MAX : (uint32_t)pages;
    put_config(b);
    pthread_mutex_unlock(&b->vdev.lock);
    virtio_config_changed(&b->vdev);
}

uint64_t virtio_balloon_actual(struct virtio_balloon *b)
{
    pthread_mutex_lock(&b->vdev.lock);
    uint32_t pages = b->actual_pages;
    pthread_mutex_unlock(&b->vdev.lock);
    return actual_bytes(b, pages);
}

uint64_t virtio_balloon_discarded_pages(struct virtio_balloon *b)
{
    return __atomic_load_n(&b->discarded, __ATOMIC_RELAXED);
}

void virtio_balloon_destroy(struct virtio_balloon *b)
{
    if (!b)
        return;
    virtio_device_destroy(&b->vdev);
    close(b->stop_fd);
    free(b);
}
