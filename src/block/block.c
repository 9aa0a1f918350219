/* The block backend core: request checks, detect-zeroes, completion delivery, the raw format. */
#include "block/block_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "block/iov.h"
#include "core/os.h"

static const struct block_format_ops *const formats[] = {&block_format_raw, &block_format_qcow2};

const char *block_cache_name(enum block_cache c)
{
    static const char *const n[] = {"writeback", "none", "writethrough", "directsync", "unsafe"};
    return (unsigned)c < sizeof(n) / sizeof(n[0]) ? n[c] : "?";
}

void block_size_to_str(uint64_t v, char *out, size_t n)
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double d = (double)v;
    unsigned u = 0;
    while (d >= 1024 && u < 6) {
        d /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, n, "%" PRIu64 " B", v);
    else
        snprintf(out, n, "%.3g %s", d, unit[u]);
}

const char *block_aio_name(enum block_aio a)
{
    static const char *const n[] = {"threads", "native", "io_uring"};
    return (unsigned)a < sizeof(n) / sizeof(n[0]) ? n[a] : "?";
}

/* QEMU's format probe, for the two formats kemu has: qcow2's magic, else raw. */
static int probe_format(const char *file, const char **fmt, struct error *err)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_setf_errno(err, errno, "Could not open '%s'", file);
    uint8_t m[4] = {0};
    ssize_t n;
    do
        n = pread(fd, m, sizeof(m), 0);
    while (n < 0 && errno == EINTR);
    close(fd);
    *fmt = n == 4 && !memcmp(m, "QFI\xfb", 4) ? "qcow2" : "raw";
    return 0;
}

/* ---- image locking: QEMU's file-posix byte ranges ---- */

#define LOCK_PERM_BASE   100 /* + bit: a permission held */
#define LOCK_SHARED_BASE 200 /* + bit: a permission not shared with others */
enum {
    PERM_CONSISTENT_READ = 1u << 0,
    PERM_WRITE = 1u << 1,
    PERM_WRITE_UNCHANGED = 1u << 2,
    PERM_RESIZE = 1u << 3,
    PERM_BITS = 4,
};
static const char *const perm_names[PERM_BITS] = {"consistent read", "write", "write unchanged",
                                                  "resize"};

/* A shared lock on one byte: 0, 1 if it conflicts, -1 if the file system has no OFD locks. */
static int lock_byte(int fd, off_t off)
{
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return 0;
    return errno == EAGAIN || errno == EACCES ? 1 : -1;
}

/* Does another open file description hold a lock on the byte? */
static bool byte_locked(int fd, off_t off)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return false;
    return fl.l_type != F_UNLCK;
}

static int lock_failed(const char *name, bool shared, unsigned bit, struct error *err)
{
    return error_setf(err, "Failed to get %s\"%s\" lock. Is another process using the image [%s]?",
                      shared ? "shared " : "", perm_names[bit], name);
}

/* As QEMU: take the locks first, then look for conflicting ones, so of two racing openers at
 * least one fails. The locks go with the descriptor (and its duplicates) when it is closed. */
int block_lock_fd(int fd, const char *name, bool readonly, struct error *err)
{
    unsigned perm = PERM_CONSISTENT_READ;
    if (!readonly)
        perm |= PERM_WRITE | PERM_WRITE_UNCHANGED | PERM_RESIZE;
    unsigned unshared = PERM_WRITE | PERM_RESIZE;
    for (unsigned i = 0; i < PERM_BITS; i++) {
        int r = 0;
        if (perm & (1u << i))
            r = lock_byte(fd, LOCK_PERM_BASE + i);
        if (r == 0 && (unshared & (1u << i)))
            r = lock_byte(fd, LOCK_SHARED_BASE + i);
        if (r < 0)
            return 0; /* no OFD locks here (some network file systems): not locked */
        if (r > 0)
            return lock_failed(name, !(perm & (1u << i)), i, err);
    }
    for (unsigned i = 0; i < PERM_BITS; i++)
        if ((perm & (1u << i)) && byte_locked(fd, LOCK_SHARED_BASE + i))
            return lock_failed(name, false, i, err);
    for (unsigned i = 0; i < PERM_BITS; i++)
        if ((unshared & (1u << i)) && byte_locked(fd, LOCK_PERM_BASE + i))
            return lock_failed(name, true, i, err);
    return 0;
}

void block_lock_share_write(int fd, bool share)
{
    for (unsigned i = 0; i < PERM_BITS; i++) {
        if (!((PERM_WRITE | PERM_RESIZE) & (1u << i)))
            continue;
        if (share) {
            struct flock fl = {.l_type = F_UNLCK,
                               .l_whence = SEEK_SET,
                               .l_start = LOCK_SHARED_BASE + i,
                               .l_len = 1};
            fcntl(fd, F_OFD_SETLK, &fl);
        } else {
            lock_byte(fd, LOCK_SHARED_BASE + i);
        }
    }
}

int block_backend_open(const struct block_open_opts *o, struct block_backend **out,
                       struct error *err)
{
    const char *fmtname = o->format ? o->format : "raw";
    bool probed = false;
    if (!o->format && o->probe && o->file && o->file[0]) {
        if (probe_format(o->file, &fmtname, err) < 0)
            return -1;
        probed = true;
    }
    const struct block_format_ops *fmt = NULL;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (!strcmp(formats[i]->name, fmtname))
            fmt = formats[i];
    if (!fmt)
        return error_setf(err, "format '%s' is not supported yet (raw and qcow2 only)", fmtname);
    if (o->dz == DETECT_ZEROES_UNMAP && !o->discard_unmap)
        return error_setf(err, "setting detect-zeroes to unmap is not allowed without setting "
                               "discard operation to unmap");
    if (o->aio == BLOCK_AIO_NATIVE && o->cache != BLOCK_CACHE_NONE &&
        o->cache != BLOCK_CACHE_DIRECTSYNC)
        return error_setf(err, "aio=native was specified, but it requires cache.direct=on, "
                               "which was not specified.");

    /* qcow2 and snapshot=on go through the qcow2 library (qcow2_driver.c). With cache=none and
     * directsync the file is opened as for raw, O_DIRECT with its aio engine, for the guest data
     * the driver sends there itself; the library reopens it buffered for its unaligned metadata
     * I/O. Otherwise the file is opened without O_DIRECT and without an aio engine; O_DSYNC
     * stays for writethrough and directsync. The overlay of snapshot=on is temporary: the
     * image under it is only read. */
    struct block_open_opts fo = *o;
    bool lib = fmt == &block_format_qcow2 || o->snapshot;
    bool lib_direct =
        lib && !o->snapshot && (o->cache == BLOCK_CACHE_NONE || o->cache == BLOCK_CACHE_DIRECTSYNC);
    if (lib && !lib_direct) {
        fo.aio = BLOCK_AIO_THREADS;
        bool sync = o->cache == BLOCK_CACHE_WRITETHROUGH || o->cache == BLOCK_CACHE_DIRECTSYNC;
        fo.cache = sync && !o->snapshot ? BLOCK_CACHE_WRITETHROUGH : BLOCK_CACHE_WRITEBACK;
        if (o->snapshot)
            fo.readonly = true;
    }

    struct block_backend *bb = calloc(1, sizeof(*bb));
    if (!bb)
        return error_setf(err, "out of memory");
    bb->fd = -1;
    bb->efd = -1;
    bb->fmt = lib ? &block_format_qcow2 : fmt;
    bb->image_format = fmt->name;
    bb->probed_raw = probed && fmt == &block_format_raw;
    bb->snapshot = o->snapshot;
    bb->locking = o->locking;
    bb->l2_cache_size = o->l2_cache_size;
    bb->lazy_refcounts = o->lazy_refcounts;
    bb->cache = o->cache;
    bb->aio = o->aio;
    bb->dz = o->dz;
    bb->readonly = o->readonly;
    bb->discard_unmap = o->discard_unmap;
    bb->direct_optional = lib_direct;
    bb->done_tail = &bb->done_head;
    pthread_mutex_init(&bb->done_lock, NULL);
    bb->filename = strdup(o->file ? o->file : "");
    bb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!bb->filename || bb->efd < 0) {
        error_setf_errno(err, errno, "eventfd");
        goto fail;
    }
    if (file_open(bb, &fo, err) < 0)
        goto fail;
    if ((o->locking && block_lock_fd(bb->fd, bb->filename, fo.readonly, err) < 0) ||
        bb->fmt->open(bb, err) < 0) {
        file_close(bb);
        goto fail;
    }
    *out = bb;
    return 0;
fail:
    if (bb->efd >= 0)
        close(bb->efd);
    pthread_mutex_destroy(&bb->done_lock);
    free(bb->filename);
    free(bb);
    return -1;
}

int block_backend_commit(struct block_backend *bb, struct error *err)
{
    if (!bb->fmt->commit) {
        error_setf(err, "%s: a %s image has no backing file", bb->filename, bb->fmt->name);
        return -ENOTSUP;
    }
    return bb->fmt->commit(bb, err);
}

static bool drain_for(struct block_backend *bb, int64_t limit_ms);

/* How long close waits for requests stuck in the kernel before it gives them up. */
#define CLOSE_DRAIN_MS 10000

void block_backend_close(struct block_backend *bb)
{
    if (!bb)
        return;
    if (!drain_for(bb, CLOSE_DRAIN_MS)) {
        /* Memory the kernel may still write into stays allocated: better a leak at exit than
         * a close (and so an exit) that never returns. */
        fprintf(stderr, "kemu: %s: %u requests still in flight after %d s; not waiting\n",
                bb->filename, bb->inflight, CLOSE_DRAIN_MS / 1000);
        file_abandon(bb);
        return;
    }
    if (bb->fmt->close)
        bb->fmt->close(bb);
    file_close(bb);
    close(bb->efd);
    pthread_mutex_destroy(&bb->done_lock);
    free(bb->filename);
    free(bb);
}

void block_backend_submit(struct block_backend *bb, struct block_request *req)
{
    bb->inflight++;
    req->next = NULL;
    req->bounce = NULL;
    req->eop = req->op;
    req->eunmap = req->may_unmap;
    req->fmt_io = false;
    req->eiov = req->iov;
    req->eiovcnt = req->iovcnt;
    req->eoff = req->offset;
    req->elen = req->len;
    switch (req->op) {
    case BLOCK_OP_READ:
    case BLOCK_OP_FLUSH:
        break;
    case BLOCK_OP_WRITE:
    case BLOCK_OP_DISCARD:
    case BLOCK_OP_WRITE_ZEROES:
        if (bb->readonly) {
            block_complete_later(bb, req, -EROFS);
            return;
        }
        break;
    default:
        block_complete_later(bb, req, -EINVAL);
        return;
    }
    if (req->op == BLOCK_OP_WRITE && bb->dz != DETECT_ZEROES_OFF && req->len &&
        iov_is_zero(req->iov, req->iovcnt)) {
        req->eop = BLOCK_OP_WRITE_ZEROES;
        req->eunmap = bb->dz == DETECT_ZEROES_UNMAP;
    }
    bb->fmt->submit(bb, req);
}

void block_backend_plug(struct block_backend *bb)
{
    bb->plugged = true;
}

void block_backend_unplug(struct block_backend *bb)
{
    bb->plugged = false;
    file_unplug(bb);
}

int block_backend_completion_fd(const struct block_backend *bb)
{
    return bb->efd;
}

void block_complete_later(struct block_backend *bb, struct block_request *req, int ret)
{
    req->ret = ret;
    req->next = NULL;
    pthread_mutex_lock(&bb->done_lock);
    bool first = !bb->done_head;
    *bb->done_tail = req;
    bb->done_tail = &req->next;
    pthread_mutex_unlock(&bb->done_lock);
    /* Only the first completion of a batch signals: until block_backend_process takes the list
     * (after reading the eventfd), the signal the first one gave is still pending. */
    if (first)
        os_event_signal(bb->efd);
}

void block_complete_now(struct block_backend *bb, struct block_request *req, int ret)
{
    if (req->bounce) {
        if (ret == 0 && req->eop == BLOCK_OP_READ)
            iov_from_buf(req->iov, req->iovcnt, 0, (const uint8_t *)req->bounce + req->bounce_off,
                         req->len);
        free(req->bounce);
        req->bounce = NULL;
        bb->bounce_inflight -= req->bounce_len;
    }
    if (req->fmt_io)
        ret = bb->fmt->complete(bb, req, ret);
    bb->inflight--;
    req->cb(req, ret);
}

unsigned block_backend_process(struct block_backend *bb)
{
    uint64_t v;
    ssize_t r = read(bb->efd, &v, sizeof(v));
    (void)r; /* EAGAIN: nothing signalled, the sources are checked anyway */
    unsigned n = file_process(bb);
    pthread_mutex_lock(&bb->done_lock);
    struct block_request *list = bb->done_head;
    bb->done_head = NULL;
    bb->done_tail = &bb->done_head;
    pthread_mutex_unlock(&bb->done_lock);
    while (list) {
        struct block_request *req = list;
        list = req->next;
        block_complete_now(bb, req, req->ret);
        n++;
    }
    return n;
}

static bool drain_for(struct block_backend *bb, int64_t limit_ms)
{
    if (bb->plugged)
        block_backend_unplug(bb);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool warned = false;
    while (bb->inflight) {
        struct pollfd p = {.fd = bb->efd, .events = POLLIN};
        if (poll(&p, 1, 100) < 0 && errno != EINTR)
            break;
        block_backend_process(bb);
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (bb->inflight && limit_ms >= 0 && ms >= limit_ms)
            return false;
        if (bb->inflight && !warned && ms >= CLOSE_DRAIN_MS) {
            /* Say so once: a host I/O stuck in the kernel otherwise looks like a hung VMM. */
            fprintf(stderr, "kemu: %s: still waiting for %u requests after %d s\n", bb->filename,
                    bb->inflight, CLOSE_DRAIN_MS / 1000);
            warned = true;
        }
    }
    return true;
}

void block_backend_drain(struct block_backend *bb)
{
    /* Unbounded: after a device reset no request may still write into guest memory. */
    drain_for(bb, -1);
}

unsigned block_backend_inflight(const struct block_backend *bb)
{
    return bb->inflight;
}

uint64_t block_backend_size(const struct block_backend *bb)
{
    return bb->size;
}

uint64_t block_backend_max_transfer(const struct block_backend *bb)
{
    return bb->max_transfer ? bb->max_transfer : UINT64_MAX;
}

bool block_backend_readonly(const struct block_backend *bb)
{
    return bb->readonly;
}

bool block_backend_writeback(const struct block_backend *bb)
{
    return bb->cache == BLOCK_CACHE_WRITEBACK || bb->cache == BLOCK_CACHE_NONE ||
           bb->cache == BLOCK_CACHE_UNSAFE;
}

unsigned block_backend_block_size(const struct block_backend *bb)
{
    return bb->align;
}

bool block_backend_discard_unmap(const struct block_backend *bb)
{
    return bb->discard_unmap;
}

int block_backend_open_flags(const struct block_backend *bb)
{
    return bb->open_flags;
}

int block_backend_fd(const struct block_backend *bb)
{
    return bb->fd;
}

const char *block_backend_format(const struct block_backend *bb)
{
    return bb->image_format;
}

bool block_backend_format_probed_raw(const struct block_backend *bb)
{
    return bb->probed_raw;
}

const char *block_backend_filename(const struct block_backend *bb)
{
    return bb->filename;
}

/* ---- raw format: the disk is the file, byte for byte ---- */

static int raw_open(struct block_backend *bb, struct error *err)
{
    bb->size = bb->file_size;
    return 0;
}

static void raw_submit(struct block_backend *bb, struct block_request *req)
{
    if (req->op != BLOCK_OP_FLUSH &&
        (req->offset > bb->size || req->len > bb->size - req->offset)) {
        block_complete_later(bb, req, -EINVAL);
        return;
    }
    file_submit(bb, req);
}

const struct block_format_ops block_format_raw = {
    .name = "raw",
    .open = raw_open,
    .submit = raw_submit,
};
