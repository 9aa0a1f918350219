/*
 * virtio-rng: the entropy source read straight into the guest's buffers by one worker thread.
 *
 * Rate limit (as QEMU's virtio-rng): a budget of max_bytes per window; the first bytes served in
 * a window start a period_ms timer, whose expiry refills the budget. Chains are popped only while
 * budget is left, each filled with at most what is left. The budget and the timer outlive a
 * device reset, so a guest cannot reset its way past the limit.
 *
 * The worker state below is touched by the worker only, or by start()/stop() while no worker
 * runs (pthread_create/pthread_join order the two).
 */
#include "virtio/rng.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/os.h"

struct virtio_rng {
    struct virtio_device vdev;
    char *filename;
    int fd; /* the entropy source, non-blocking */
    uint64_t max_bytes, period_ms;
    int stop_fd;  /* eventfd: stop() asks the worker to return */
    int timer_fd; /* rate limit window; -1 without a limit */
    pthread_t thread;

    /* Worker state. */
    bool broken;      /* vq_pop failed: nothing more until a reset */
    bool held;        /* chain was popped and waits for the source to become readable */
    bool wait_source; /* the source said EAGAIN: poll it */
    bool timer_armed; /* a window is running */
    bool read_error;  /* a read error was reported (once) */
    uint64_t budget;  /* bytes left in this window (with a limit) */
    struct vq_chain chain;
    struct iovec iov[VQ_CHAIN_MAX_SEGS];
};

static bool limited(const struct virtio_rng *r)
{
    return r->max_bytes != 0;
}

static void arm_window(struct virtio_rng *r)
{
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(r->period_ms / 1000);
    its.it_value.tv_nsec = (long)(r->period_ms % 1000) * 1000000L;
    if (timerfd_settime(r->timer_fd, 0, &its, NULL) == 0)
        r->timer_armed = true;
    else
        r->budget = r->max_bytes; /* cannot happen with a valid period: do not stall */
}

/* Fill the held chain's writable part with up to want bytes from the source. Returns the bytes
 * read (0 at end of file or on an error), or -1 when the source has nothing yet (EAGAIN). */
static ssize_t fill_chain(struct virtio_rng *r, uint32_t want)
{
    struct virtqueue *vq = &r->vdev.vq[0];
    struct vq_chain *c = &r->chain;
    unsigned n = 0;
    for (unsigned i = c->nr_readable; i < c->nr_segs && want > 0; i++) {
        const struct vq_segment *s = &c->seg[i];
        void *p = vq_segment_ptr(vq, s);
        if (!p || !s->len)
            continue; /* vq_pop checked the buffers: only a zero-length one has no pointer */
        uint32_t len = s->len < want ? s->len : want;
        r->iov[n++] = (struct iovec){.iov_base = p, .iov_len = len};
        want -= len;
    }
    if (n == 0)
        return 0;
    for (;;) {
        ssize_t got = readv(r->fd, r->iov, (int)n);
        if (got >= 0)
            return got;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -1;
        if (!r->read_error) {
            fprintf(stderr, "kemu: %s: reading '%s': %s\n", r->vdev.name, r->filename,
                    strerror(errno));
            r->read_error = true;
        }
        return 0; /* the buffer goes back empty rather than never */
    }
}

/* Serve what the driver offered, within the budget. */
static void service(struct virtio_rng *r)
{
    struct virtio_device *vdev = &r->vdev;
    struct virtqueue *vq = &vdev->vq[0];
    bool pushed = false;
    unsigned chains = 0;
    while (!r->broken) {
        if (limited(r) && r->budget == 0)
            break; /* the timer refills it */
        if (chains++ == vq->size) {
            virtio_kick(vdev, 0); /* a queue's worth per wake-up; come back for the rest */
            break;
        }
        if (!r->held) {
            struct error err = {0};
            int p = vq_pop(vq, &r->chain, &err);
            if (p < 0) {
                virtio_set_needs_reset(vdev, err.msg);
                r->broken = true;
                break;
            }
            if (p == 0)
                break;
            r->held = true;
        }
        uint32_t want = vq_chain_writable_len(&r->chain);
        if (limited(r) && want > r->budget)
            want = (uint32_t)r->budget;
        ssize_t got = want ? fill_chain(r, want) : 0;
        if (got < 0) {
            r->wait_source = true; /* keep the chain; poll the source */
            break;
        }
        r->wait_source = false;
        vq_push(vq, r->chain.head, (uint32_t)got);
        r->held = false;
        pushed = true;
        if (limited(r) && got > 0) {
            r->budget -= (uint64_t)got;
            if (!r->timer_armed)
                arm_window(r);
        }
    }
    if (pushed)
        virtio_notify_queue(vdev, 0);
}

static void *worker(void *opaque)
{
    pthread_setname_np(pthread_self(), "virtio-rng");
    struct virtio_rng *r = opaque;
    struct virtio_device *vdev = &r->vdev;
    enum { KICK, STOP, TIMER, SOURCE };
    for (;;) {
        struct pollfd pfd[4] = {
            [KICK] = {.fd = vdev->kick_fd[0], .events = POLLIN},
            [STOP] = {.fd = r->stop_fd, .events = POLLIN},
            [TIMER] = {.fd = limited(r) ? r->timer_fd : -1, .events = POLLIN},
            [SOURCE] = {.fd = r->wait_source ? r->fd : -1, .events = POLLIN},
        };
        int n = poll(pfd, 4, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (pfd[STOP].revents & POLLIN))
            break;
        bool work = false;
        if (pfd[TIMER].revents & POLLIN) {
            uint64_t expirations;
            if (read(r->timer_fd, &expirations, sizeof(expirations)) > 0) {
                r->budget = r->max_bytes;
                r->timer_armed = false;
                work = true;
            }
        }
        if ((pfd[KICK].revents & POLLIN) && os_event_drain(vdev->kick_fd[0]))
            work = true;
        if (pfd[SOURCE].revents)
            work = true; /* readable, or hung up: the read tells */
        if (work)
            service(r);
    }
    return NULL;
}

/* ---- lifecycle (vdev->lock held) ---- */

static int rng_start(struct virtio_device *vdev)
{
    struct virtio_rng *r = vdev->opaque;
    r->broken = r->held = r->wait_source = false;
    os_event_drain(r->stop_fd);
    int e = pthread_create(&r->thread, NULL, worker, r);
    if (e) {
        fprintf(stderr, "kemu: %s: cannot start the worker thread: %s\n", vdev->name, strerror(e));
        return -1;
    }
    return 0;
}

static void rng_stop(struct virtio_device *vdev)
{
    struct virtio_rng *r = vdev->opaque;
    os_event_signal(r->stop_fd);
    pthread_join(r->thread, NULL);
    os_event_drain(r->stop_fd);
    r->held = false; /* the chain belongs to the queue that is about to be reset */
    r->wait_source = false;
}

static const struct virtio_device_ops rng_ops = {
    .start = rng_start,
    .stop = rng_stop,
};

/* ---- set-up ---- */

static int open_source(const char *filename, struct error *err)
{
    int fd = open(filename, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return error_setf_errno(err, errno, "virtio-rng: cannot open '%s'", filename);
    struct stat st;
    int e = fstat(fd, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (e) {
        close(fd);
        return error_setf_errno(err, e, "virtio-rng: cannot read '%s'", filename);
    }
    return fd;
}

int virtio_rng_create(struct guest_mem *mem, const char *filename, uint64_t max_bytes,
                      uint64_t period_ms, struct virtio_rng **out, struct error *err)
{
    if (!filename || !*filename)
        filename = VIRTIO_RNG_DEFAULT_SOURCE;
    if (max_bytes && period_ms == 0)
        return error_setf(err, "virtio-rng: period must be a positive number of milliseconds");
    struct virtio_rng *r = calloc(1, sizeof(*r));
    if (!r)
        return error_setf(err, "virtio-rng: out of memory");
    r->fd = r->stop_fd = r->timer_fd = -1;
    r->max_bytes = max_bytes;
    r->period_ms = period_ms;
    r->budget = max_bytes;
    r->filename = strdup(filename);
    if (!r->filename) {
        error_setf(err, "virtio-rng: out of memory");
        goto fail;
    }
    r->fd = open_source(filename, err);
    if (r->fd < 0)
        goto fail;
    r->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->stop_fd < 0) {
        error_setf_errno(err, errno, "virtio-rng: eventfd");
        goto fail;
    }
    if (max_bytes) {
        r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (r->timer_fd < 0) {
            error_setf_errno(err, errno, "virtio-rng: timerfd");
            goto fail;
        }
    }
    if (virtio_device_init(&r->vdev, "virtio-rng", &rng_ops, r, mem, VIRTIO_ID_RNG, 0, 1,
                           VIRTIO_RNG_QUEUE_SIZE, 0, err) < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    if (r->fd >= 0)
        close(r->fd);
    if (r->stop_fd >= 0)
        close(r->stop_fd);
    if (r->timer_fd >= 0)
        close(r->timer_fd);
    free(r->filename);
    free(r);
    return -1;
}

struct virtio_device *virtio_rng_vdev(struct virtio_rng *r)
{
    return &r->vdev;
}

void virtio_rng_destroy(struct virtio_rng *r)
{
    if (!r)
        return;
    virtio_device_destroy(&r->vdev);
    close(r->fd);
    close(r->stop_fd);
    if (r->timer_fd >= 0)
        close(r->timer_fd);
    free(r->filename);
    free(r);
}
