/*
 * The file protocol: a host file or block device, opened with the cache mode's flags, and the
 * three I/O engines. Reads and writes go to the chosen engine; flush, discard and write-zeroes
 * always go to the thread pool (they are rare and native AIO has no portable fallocate).
 */
#include "block/block_int.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "block/iov.h"
#include "kemu-config.h"

#ifdef CONFIG_IO_URING
#include "block/uring_dl.h" /* liburing, opened by the first aio=io_uring drive */
#endif

#define ZERO_CHUNK (1u << 20)

/* ---- synchronous operations (pool threads) ---- */

static int write_zeros(struct block_backend *bb, uint64_t off, uint64_t len)
{
    void *buf;
    size_t chunk = len < ZERO_CHUNK ? (size_t)len : ZERO_CHUNK;
    if (posix_memalign(&buf, 4096, chunk ? chunk : 1))
        return -ENOMEM;
    memset(buf, 0, chunk);
    int ret = 0;
    while (len && ret == 0) {
        size_t n = len < chunk ? (size_t)len : chunk;
        struct iovec v = {buf, n};
        ret = iov_rw_full(bb->fd, &v, 1, off, n, true);
        off += n;
        len -= n;
    }
    free(buf);
    return ret;
}

static int do_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
    int r;
    do
        r = fallocate(fd, mode, (off_t)off, (off_t)len);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int do_write_zeroes(struct block_backend *bb, uint64_t off, uint64_t len, bool unmap)
{
    if (!len)
        return 0;
    if (unmap && bb->discard_unmap) {
        /* A punched hole reads as zeros, on files and on block devices alike. */
        if (do_fallocate(bb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
            return 0;
    }
    int r = do_fallocate(bb->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
    if (r == 0 || (r != -EOPNOTSUPP && r != -ENOTSUP && r != -EINVAL && r != -ENODEV))
        return r;
    return write_zeros(bb, off, len);
}

static int do_discard(struct block_backend *bb, uint64_t off, uint64_t len)
{
    if (!bb->discard_unmap || !len)
        return 0;
    int r = do_fallocate(bb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
    /* Discard is advisory: a file system without hole punching just keeps the data. */
    if (r == -EOPNOTSUPP || r == -ENOTSUP || r == -ENODEV)
        return 0;
    return r;
}

static int do_flush(struct block_backend *bb)
{
    int r;
    do
        r = fdatasync(bb->fd);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int run_sync(struct block_backend *bb, struct block_request *req)
{
    switch (req->eop) {
    case BLOCK_OP_READ:
        return iov_rw_full(bb->fd, req->eiov, req->eiovcnt, req->eoff, req->elen, false);
    case BLOCK_OP_WRITE:
        return iov_rw_full(bb->fd, req->eiov, req->eiovcnt, req->eoff, req->elen, true);
    case BLOCK_OP_FLUSH:
        return do_flush(bb);
    case BLOCK_OP_DISCARD:
        return do_discard(bb, req->eoff, req->elen);
    case BLOCK_OP_WRITE_ZEROES:
        return do_write_zeroes(bb, req->eoff, req->elen, req->eunmap);
    }
    return -EINVAL;
}

/* ---- aio=threads: a small pool, grown on demand ---- */

static void *pool_worker(void *arg)
{
    pthread_setname_np(pthread_self(), "blk-pool");
    struct block_backend *bb = arg;
    struct thread_pool *p = &bb->pool;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stop) {
            p->idle++;
            pthread_cond_wait(&p->cond, &p->lock);
            p->idle--;
        }
        if (!p->head)
            break; /* stopping and nothing left */
        struct block_request *req = p->head;
        p->head = req->next;
        if (!p->head)
            p->tail = &p->head;
        p->queued--;
        pthread_mutex_unlock(&p->lock);
        int ret = run_sync(bb, req);
        block_complete_later(bb, req, ret);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void pool_init(struct thread_pool *p)
{
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->tail = &p->head;
}

static void pool_submit(struct block_backend *bb, struct block_request *req)
{
    struct thread_pool *p = &bb->pool;
    pthread_mutex_lock(&p->lock);
    req->next = NULL;
    *p->tail = req;
    p->tail = &req->next;
    p->queued++;
    if (p->queued > p->idle && p->nthreads < POOL_MAX_THREADS) {
        /* Pool threads take no signals: those are for the vCPU and main threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        if (pthread_create(&p->threads[p->nthreads], NULL, pool_worker, bb) == 0)
            p->nthreads++;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (p->nthreads == 0) {
            /* Could not start any thread: run it here, still completing later. */
            p->head = NULL;
            p->tail = &p->head;
            p->queued = 0;
            pthread_mutex_unlock(&p->lock);
            block_complete_later(bb, req, run_sync(bb, req));
            return;
        }
    }
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void pool_destroy(struct thread_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
}

/* Result of an engine read/write: res is bytes transferred or -errno. */
static int rw_result(struct block_request *req, long long res)
{
    return iov_rw_result(req->eiov, req->eiovcnt, req->elen, res, req->eop == BLOCK_OP_WRITE);
}

/* ---- aio=native: Linux AIO through the raw system calls, completions on the eventfd ---- */

#define NATIVE_DEPTH 512

struct aio_native {
    aio_context_t ctx;
    struct aio_ring_hdr *ring; /* the kernel's completion ring, or NULL: io_getevents */
    unsigned submitted;        /* in the kernel */
    struct iocb **pending;
    unsigned npending, cap;
};

/* The completion ring Linux maps at the address io_setup returns (fs/aio.c). Reading it here,
 * as libaio and QEMU do, saves an io_getevents call per batch of completions. */
struct aio_ring_hdr {
    unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
    struct io_event events[];
};
#define AIO_RING_MAGIC 0xa10a10a1u

_Static_assert(sizeof(struct iocb) <= sizeof(((struct block_request *)0)->engine),
               "iocb must fit in a request");

static int native_init(struct block_backend *bb, struct error *err)
{
    struct aio_native *n = calloc(1, sizeof(*n));
    if (!n)
        return error_setf(err, "out of memory");
    if (syscall(SYS_io_setup, NATIVE_DEPTH, &n->ctx) < 0) {
        error_setf_errno(err, errno, "aio=native: io_setup");
        free(n);
        return -1;
    }
    struct aio_ring_hdr *ring = (void *)(uintptr_t)n->ctx;
    if (ring->magic == AIO_RING_MAGIC && ring->incompat_features == 0 &&
        ring->header_length == sizeof(*ring) && ring->nr)
        n->ring = ring;
    bb->native = n;
    return 0;
}

/* Up to max completions: from the ring in user space, else with io_getevents (no waiting). */
static long native_getevents(struct aio_native *n, struct io_event *ev, long max)
{
    struct aio_ring_hdr *ring = n->ring;
    if (!ring) {
        struct timespec zero = {0, 0};
        return syscall(SYS_io_getevents, n->ctx, 0L, max, ev, &zero);
    }
    unsigned nr = ring->nr, head = ring->head;
    /* Acquire: the kernel writes the event before the tail that covers it. */
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    long got = 0;
    while (head != tail && got < max) {
        if (head >= nr || tail >= nr)
            break; /* not what Linux writes: leave the rest to io_getevents */
        ev[got++] = ring->events[head];
        head = head + 1 == nr ? 0 : head + 1;
    }
    __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    if (got == 0 && head != tail) {
        n->ring = NULL;
        return native_getevents(n, ev, max);
    }
    return got;
}

static void native_flush_pending(struct block_backend *bb)
{
    struct aio_native *n = bb->native;
    unsigned done = 0;
    while (done < n->npending) {
        unsigned room = NATIVE_DEPTH - n->submitted;
        unsigned cnt = n->npending - done;
        if (cnt > room)
            cnt = room;
        if (!cnt)
            break; /* resubmitted after the next completions */
        long r = syscall(SYS_io_submit, n->ctx, (long)cnt, n->pending + done);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            /* This one is refused: fail it and go on with the others. */
            struct block_request *req = (void *)(uintptr_t)n->pending[done]->aio_data;
            block_complete_later(bb, req, -errno);
            done++;
            continue;
        }
        if (r == 0)
            break;
        n->submitted += (unsigned)r;
        done += (unsigned)r;
    }
    memmove(n->pending, n->pending + done, (n->npending - done) * sizeof(*n->pending));
    n->npending -= done;
}

static void native_submit(struct block_backend *bb, struct block_request *req)
{
    struct aio_native *n = bb->native;
    if (n->npending == n->cap) {
        unsigned cap = n->cap ? n->cap * 2 : 64;
        struct iocb **p = realloc(n->pending, cap * sizeof(*p));
        if (!p) {
            block_complete_later(bb, req, -ENOMEM);
            return;
        }
        n->pending = p;
        n->cap = cap;
    }
    struct iocb *cb = (struct iocb *)(void *)req->engine;
    memset(cb, 0, sizeof(*cb));
    cb->aio_data = (uintptr_t)req;
    cb->aio_lio_opcode = req->eop == BLOCK_OP_READ ? IOCB_CMD_PREADV : IOCB_CMD_PWRITEV;
    cb->aio_fildes = (uint32_t)bb->fd;
    cb->aio_buf = (uintptr_t)req->eiov;
    cb->aio_nbytes = (uint64_t)req->eiovcnt;
    cb->aio_offset = (int64_t)req->eoff;
    cb->aio_flags = IOCB_FLAG_RESFD;
    cb->aio_resfd = (uint32_t)bb->efd;
    n->pending[n->npending++] = cb;
    if (!bb->plugged)
        native_flush_pending(bb);
}

static unsigned native_process(struct block_backend *bb)
{
    struct aio_native *n = bb->native;
    struct io_event ev[64];
    unsigned total = 0;
    while (n->submitted) {
        long r = native_getevents(n, ev, 64);
        if (r <= 0)
            break;
        n->submitted -= (unsigned)r;
        for (long i = 0; i < r; i++) {
            struct block_request *req = (void *)(uintptr_t)ev[i].data;
            block_complete_now(bb, req, rw_result(req, ev[i].res));
        }
        total += (unsigned)r;
    }
    if (n->npending && !bb->plugged)
        native_flush_pending(bb);
    return total;
}

static void native_destroy(struct block_backend *bb)
{
    if (!bb->native)
        return;
    syscall(SYS_io_destroy, bb->native->ctx);
    free(bb->native->pending);
    free(bb->native);
    bb->native = NULL;
}

/* ---- aio=io_uring ---- */

#ifdef CONFIG_IO_URING
#define URING_DEPTH 256

struct aio_uring {
    struct io_uring ring;
    unsigned submitted;                        /* in the kernel or in the SQ */
    struct block_request *waitq, **waitq_tail; /* no room in the ring yet */
    bool unsubmitted;                          /* SQEs prepared but not yet given to the kernel */
};

static int uring_init(struct block_backend *bb, struct error *err)
{
    if (uring_dl_open(err) < 0)
        return -1;
    struct aio_uring *u = calloc(1, sizeof(*u));
    if (!u)
        return error_setf(err, "out of memory");
    int r = io_uring_queue_init(URING_DEPTH, &u->ring, 0);
    if (r < 0) {
        free(u);
        return error_setf_errno(err, -r, "aio=io_uring: io_uring_queue_init");
    }
    r = io_uring_register_eventfd(&u->ring, bb->efd);
    if (r < 0) {
        io_uring_queue_exit(&u->ring);
        free(u);
        return error_setf_errno(err, -r, "aio=io_uring: io_uring_register_eventfd");
    }
    u->waitq_tail = &u->waitq;
    bb->uring = u;
    return 0;
}

static bool uring_prep(struct block_backend *bb, struct block_request *req)
{
    struct aio_uring *u = bb->uring;
    if (u->submitted >= URING_DEPTH)
        return false; /* keep the completions within the CQ */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
        if (!sqe)
            return false;
    }
    if (req->eop == BLOCK_OP_READ)
        io_uring_prep_readv(sqe, bb->fd, req->eiov, (unsigned)req->eiovcnt, req->eoff);
    else
        io_uring_prep_writev(sqe, bb->fd, req->eiov, (unsigned)req->eiovcnt, req->eoff);
    io_uring_sqe_set_data(sqe, req);
    u->submitted++;
    u->unsubmitted = true;
    return true;
}

static void uring_kick(struct block_backend *bb)
{
    struct aio_uring *u = bb->uring;
    if (u->unsubmitted) {
        int r;
        do
            r = io_uring_submit(&u->ring);
        while (r == -EINTR);
        u->unsubmitted = false;
    }
}

static void uring_submit(struct block_backend *bb, struct block_request *req)
{
    struct aio_uring *u = bb->uring;
    if (u->waitq || !uring_prep(bb, req)) {
        req->next = NULL;
        *u->waitq_tail = req;
        u->waitq_tail = &req->next;
    }
    if (!bb->plugged)
        uring_kick(bb);
}

static unsigned uring_process(struct block_backend *bb)
{
    struct aio_uring *u = bb->uring;
    unsigned total = 0;
    struct io_uring_cqe *cqe;
    while (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
        struct block_request *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&u->ring, cqe);
        u->submitted--;
        block_complete_now(bb, req, rw_result(req, res));
        total++;
    }
    while (u->waitq && uring_prep(bb, u->waitq)) {
        u->waitq = u->waitq->next;
        if (!u->waitq)
            u->waitq_tail = &u->waitq;
    }
    if (!bb->plugged)
        uring_kick(bb);
    return total;
}

/* Ask the kernel to cancel every request still in the ring and wait a little for them. A
 * buffered request an io-wq worker is running may not be cancellable: then the ring is left to
 * the kernel, whose ring teardown runs in the background rather than in our exit. */
static void uring_abandon(struct block_backend *bb)
{
    struct aio_uring *u = bb->uring;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe) {
        io_uring_prep_cancel(sqe, NULL, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data(sqe, NULL);
        io_uring_submit(&u->ring);
    }
    for (int i = 0; i < 10 && u->submitted; i++) {
        struct __kernel_timespec ts = {0, 100 * 1000 * 1000};
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts) < 0)
            continue;
        if (io_uring_cqe_get_data(cqe))
            u->submitted--; /* the request's memory stays allocated: see file_abandon */
        io_uring_cqe_seen(&u->ring, cqe);
    }
    io_uring_queue_exit(&u->ring);
    free(u);
    bb->uring = NULL;
}

static void uring_destroy(struct block_backend *bb)
{
    if (!bb->uring)
        return;
    io_uring_queue_exit(&bb->uring->ring);
    free(bb->uring);
    bb->uring = NULL;
}
#endif

/* ---- open ---- */

/* The smallest O_DIRECT transfer the file accepts (what QEMU probes too). */
unsigned file_probe_alignment(int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) {
        int ss = 0;
        if (ioctl(fd, BLKSSZGET, &ss) == 0 && ss >= 512 && ss <= 65536)
            return (unsigned)ss;
        return 512;
    }
    void *buf;
    if (posix_memalign(&buf, 65536, 65536))
        return 4096;
    unsigned a = 4096;
    for (unsigned s = 512; s <= 4096; s *= 2) {
        if (pread(fd, buf, s, 0) >= 0 || errno != EINVAL) {
            a = s;
            break;
        }
    }
    free(buf);
    return a;
}

int file_open(struct block_backend *bb, const struct block_open_opts *o, struct error *err)
{
    const char *name = bb->filename;
    int flags = (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    switch (o->cache) {
    case BLOCK_CACHE_NONE:
        flags |= O_DIRECT;
        break;
    case BLOCK_CACHE_WRITETHROUGH:
        flags |= O_DSYNC;
        break;
    case BLOCK_CACHE_DIRECTSYNC:
        flags |= O_DIRECT | O_DSYNC;
        break;
    case BLOCK_CACHE_WRITEBACK:
    case BLOCK_CACHE_UNSAFE:
        break;
    }
    if (o->aio == BLOCK_AIO_NATIVE && !(flags & O_DIRECT))
        return error_setf(err, "aio=native was specified, but it requires cache.direct=on, "
                               "which was not specified.");
#ifndef CONFIG_IO_URING
    if (o->aio == BLOCK_AIO_IO_URING)
        return error_setf(err, "aio=io_uring: kemu was built without liburing");
#endif
    if (!name[0])
        return error_setf(err, "Device needs media, but drive is empty");
    enum block_aio aio = o->aio;
    int fd = open(name, flags);
    if (fd < 0 && errno == EINVAL && (flags & O_DIRECT) && bb->direct_optional) {
        /* qcow2 on a file system without O_DIRECT (tmpfs before Linux 6.6): the page cache,
         * and the thread pool (native AIO would block without O_DIRECT). */
        flags &= ~O_DIRECT;
        aio = BLOCK_AIO_THREADS;
        fd = open(name, flags);
    }
    if (fd < 0) {
        int e = errno;
        if (e == EINVAL && (flags & O_DIRECT)) {
            int fd2 = open(name, flags & ~O_DIRECT);
            if (fd2 >= 0) {
                close(fd2);
                return error_setf(err, "Could not open '%s': file system may not support O_DIRECT",
                                  name);
            }
        }
        return error_setf_errno(err, e, "Could not open '%s'", name);
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        error_setf_errno(err, errno, "Could not stat '%s'", name);
        close(fd);
        return -1;
    }
    bb->fd = fd;
    bb->open_flags = flags;
    bb->direct = (flags & O_DIRECT) != 0;
    if (S_ISBLK(st.st_mode)) {
        uint64_t sz = 0;
        if (ioctl(fd, BLKGETSIZE64, &sz) < 0) {
            error_setf_errno(err, errno, "Could not get the size of '%s'", name);
            goto fail;
        }
        bb->is_blockdev = true;
        bb->file_size = sz;
    } else if (S_ISREG(st.st_mode)) {
        bb->file_size = (uint64_t)st.st_size;
    } else {
        error_setf(err, "'%s' is not a regular file or a block device", name);
        goto fail;
    }
    bb->align = bb->direct ? file_probe_alignment(bb->fd) : 512;
    pool_init(&bb->pool);
    if (aio == BLOCK_AIO_NATIVE && native_init(bb, err) < 0)
        goto fail_pool;
#ifdef CONFIG_IO_URING
    if (aio == BLOCK_AIO_IO_URING && uring_init(bb, err) < 0)
        goto fail_pool;
#endif
    return 0;
fail_pool:
    pool_destroy(&bb->pool);
fail:
    close(fd);
    bb->fd = -1;
    return -1;
}

void file_close(struct block_backend *bb)
{
    if (bb->fd < 0)
        return;
    /* As QEMU's close (and so quit): what the guest wrote is on stable storage once kemu has
     * gone, flushed by the guest or not. cache=unsafe and snapshot=on promise nothing. */
    if (!bb->readonly && bb->cache != BLOCK_CACHE_UNSAFE && !bb->snapshot)
        (void)do_flush(bb);
    pool_destroy(&bb->pool);
    native_destroy(bb);
#ifdef CONFIG_IO_URING
    uring_destroy(bb);
#endif
    close(bb->fd);
    bb->fd = -1;
}

void file_abandon(struct block_backend *bb)
{
#ifdef CONFIG_IO_URING
    if (bb->uring)
        uring_abandon(bb);
#endif
    /* io_destroy and joining a pool thread would both wait for the stuck requests; the
     * descriptor stays open for them too. */
    pthread_mutex_lock(&bb->pool.lock);
    bb->pool.stop = true;
    pthread_cond_broadcast(&bb->pool.cond);
    pthread_mutex_unlock(&bb->pool.lock);
}

static bool aligned(uint64_t v, unsigned a)
{
    return (v & (a - 1)) == 0;
}

/* O_DIRECT needs aligned memory, offsets and lengths: copy through an aligned buffer when the
 * caller's are not. Returns 0, or -errno to fail the request. */
static int setup_bounce(struct block_backend *bb, struct block_request *req)
{
    unsigned a = bb->align;
    if (aligned(req->offset, a) && aligned(req->len, a) && iov_is_aligned(req->iov, req->iovcnt, a))
        return 0;
    uint64_t start = req->offset & ~(uint64_t)(a - 1);
    uint64_t end = (req->offset + req->len + a - 1) & ~(uint64_t)(a - 1);
    if (req->eop == BLOCK_OP_WRITE && (start != req->offset || end != req->offset + req->len))
        return -EINVAL; /* would need read-modify-write; guests use the advertised block size */
    void *buf;
    if (end - start > BLOCK_BOUNCE_BUDGET - bb->bounce_inflight)
        return -ENOMEM;
    if (posix_memalign(&buf, a < 4096 ? 4096 : a, end - start ? end - start : a))
        return -ENOMEM;
    bb->bounce_inflight += end - start;
    if (req->eop == BLOCK_OP_WRITE)
        iov_to_buf(req->iov, req->iovcnt, 0, buf, req->len);
    req->bounce = buf;
    req->bounce_off = req->offset - start;
    req->bounce_len = end - start;
    req->bounce_iov.iov_base = buf;
    req->bounce_iov.iov_len = end - start;
    req->eiov = &req->bounce_iov;
    req->eiovcnt = 1;
    req->eoff = start;
    req->elen = end - start;
    return 0;
}

void file_submit(struct block_backend *bb, struct block_request *req)
{
    switch (req->eop) {
    case BLOCK_OP_FLUSH:
        if (bb->cache == BLOCK_CACHE_UNSAFE) {
            block_complete_later(bb, req, 0);
            return;
        }
        break;
    case BLOCK_OP_DISCARD:
        if (!bb->discard_unmap) {
            block_complete_later(bb, req, 0);
            return;
        }
        break;
    case BLOCK_OP_READ:
    case BLOCK_OP_WRITE:
        if (!req->len) {
            block_complete_later(bb, req, 0);
            return;
        }
        if (bb->direct) {
            int r = setup_bounce(bb, req);
            if (r < 0) {
                block_complete_later(bb, req, r);
                return;
            }
        }
        if (bb->native) {
            native_submit(bb, req);
            return;
        }
#ifdef CONFIG_IO_URING
        if (bb->uring) {
            uring_submit(bb, req);
            return;
        }
#endif
        break;
    case BLOCK_OP_WRITE_ZEROES:
        break;
    }
    pool_submit(bb, req);
}

void file_unplug(struct block_backend *bb)
{
    if (bb->native && bb->native->npending)
        native_flush_pending(bb);
#ifdef CONFIG_IO_URING
    if (bb->uring)
        uring_kick(bb);
#endif
}

unsigned file_process(struct block_backend *bb)
{
    if (bb->native)
        return native_process(bb);
#ifdef CONFIG_IO_URING
    if (bb->uring)
        return uring_process(bb);
#endif
    return 0;
}
