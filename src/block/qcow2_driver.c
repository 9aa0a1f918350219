/*
 * The qcow2 format driver: the synchronous qcow2 library (qcow2.h) behind the asynchronous
 * backend interface.
 *
 * The library is not thread-safe, so each image has one worker thread that runs its requests in
 * submission order, the image under one mutex; completions go through block_complete_later()
 * as the thread pool's do, so a device sees no difference from raw. The aio= engine is not used:
 * qcow2 I/O goes through this worker whatever aio= says (QEMU accepts every aio= with qcow2).
 *
 * The image is opened on the backend's descriptor (qcow2_open_fd duplicates it, so the cache
 * mode's O_DSYNC and the image locks apply); the library opens the backing chain by name, raw
 * or qcow2 as the header's backing format says (or by probing when it says nothing).
 *
 * snapshot=on: the backend's descriptor is the image, opened read-only, raw or qcow2; a
 * temporary qcow2 overlay is created in $TMPDIR (else /var/tmp), opened, unlinked, and reads
 * what it has not written from the image. Everything written vanishes at close.
 */
#include "block/block_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/qcow2.h"

/* Requests with several iovecs go through one buffer (one library call, whole clusters
 * written at once); a buffer larger than this is freed after the request. */
#define KEEP_BUF (4u << 20)

struct qcow2_state {
    struct block_backend *bb;
    struct qcow2 *q;
    bool no_flush; /* cache=unsafe, or the temporary overlay of snapshot=on */

    pthread_mutex_t lock; /* the queue */
    pthread_cond_t cond;
    struct block_request *head, **tail;
    bool stop;
    bool started;
    pthread_t thread;

    pthread_mutex_t image_lock; /* the library: one call at a time */
    uint8_t *buf;
    size_t buf_cap;
    bool reported; /* the first I/O error was printed */
};

/* ---- a raw image under the snapshot overlay, read on the backend's descriptor ---- */

static int raw_under_read(void *opaque, uint64_t off, void *buf, size_t len, struct error *err)
{
    const struct block_backend *bb = opaque;
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(bb->fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return error_setf_errno(err, errno, "%s: read at %llu", bb->filename,
                                    (unsigned long long)off);
        if (n == 0) {
            memset(p, 0, len); /* the file shrank under us: zeros, as raw reads past the end */
            break;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- requests (worker thread) ---- */

static uint8_t *get_buf(struct qcow2_state *s, size_t len)
{
    if (len > s->buf_cap) {
        free(s->buf);
        s->buf_cap = 0;
        s->buf = malloc(len ? len : 1);
        if (!s->buf)
            return NULL;
        s->buf_cap = len;
    }
    return s->buf;
}

static void put_buf(struct qcow2_state *s)
{
    if (s->buf_cap > KEEP_BUF) {
        free(s->buf);
        s->buf = NULL;
        s->buf_cap = 0;
    }
}

static int do_rw(struct qcow2_state *s, struct block_request *req, bool write, struct error *err)
{
    if (req->iovcnt == 1) {
        if (write)
            return qcow2_write(s->q, req->offset, req->iov[0].iov_base, req->len, err);
        return qcow2_read(s->q, req->offset, req->iov[0].iov_base, req->len, err);
    }
    uint8_t *b = get_buf(s, req->len);
    if (!b)
        return error_setf(err, "%s: out of memory", s->bb->filename);
    int r;
    if (write) {
        uint8_t *p = b;
        for (int i = 0; i < req->iovcnt; i++) {
            memcpy(p, req->iov[i].iov_base, req->iov[i].iov_len);
            p += req->iov[i].iov_len;
        }
        r = qcow2_write(s->q, req->offset, b, req->len, err);
    } else {
        r = qcow2_read(s->q, req->offset, b, req->len, err);
        const uint8_t *p = b;
        for (int i = 0; r == 0 && i < req->iovcnt; i++) {
            memcpy(req->iov[i].iov_base, p, req->iov[i].iov_len);
            p += req->iov[i].iov_len;
        }
    }
    put_buf(s);
    return r;
}

static int run_request(struct qcow2_state *s, struct block_request *req)
{
    struct block_backend *bb = s->bb;
    struct error err = {0};
    int r = 0;
    pthread_mutex_lock(&s->image_lock);
    switch (req->eop) {
    case BLOCK_OP_READ:
        r = do_rw(s, req, false, &err);
        break;
    case BLOCK_OP_WRITE:
        r = do_rw(s, req, true, &err);
        break;
    case BLOCK_OP_FLUSH:
        r = s->no_flush ? 0 : qcow2_flush(s->q, &err);
        break;
    case BLOCK_OP_DISCARD:
        r = bb->discard_unmap ? qcow2_discard(s->q, req->offset, req->len, &err) : 0;
        break;
    case BLOCK_OP_WRITE_ZEROES:
        r = qcow2_write_zeroes(s->q, req->offset, req->len, req->eunmap && bb->discard_unmap, &err);
        break;
    }
    bool first = r < 0 && !s->reported;
    if (first)
        s->reported = true;
    pthread_mutex_unlock(&s->image_lock);
    if (r == 0)
        return 0;
    /* The library says why in words; the guest gets ENOSPC (werror=enospc) or EIO. */
    if (first)
        fprintf(stderr, "kemu: qcow2 I/O error (reported once per image): %s\n", err.msg);
    if (strstr(err.msg, strerror(ENOSPC)) || strstr(err.msg, strerror(EDQUOT)))
        return -ENOSPC;
    return -EIO;
}

static void *worker(void *arg)
{
    struct qcow2_state *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        if (!s->head)
            break; /* stopping and nothing left */
        struct block_request *req = s->head;
        s->head = req->next;
        if (!s->head)
            s->tail = &s->head;
        pthread_mutex_unlock(&s->lock);
        block_complete_later(s->bb, req, run_request(s, req));
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the format ops ---- */

static void free_state(struct qcow2_state *s)
{
    if (s->started) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    if (s->q) {
        struct error err = {0};
        if (qcow2_close(s->q, &err) < 0)
            fprintf(stderr, "kemu: %s\n", err.msg);
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->image_lock);
    free(s->buf);
    free(s);
}

/* snapshot=on: the temporary overlay over the image on bb->fd. */
static struct qcow2 *open_overlay(struct block_backend *bb, struct error *err)
{
    struct qcow2_backing under;
    struct qcow2 *base = NULL;
    if (!strcmp(bb->image_format, "qcow2")) {
        struct qcow2_open_opts bo = {.l2_cache_size = bb->l2_cache_size};
        base = qcow2_open_fd(bb->fd, bb->filename, &bo, err);
        if (!base)
            return NULL;
        under = qcow2_as_backing(base);
    } else {
        under = (struct qcow2_backing){raw_under_read, NULL, bb, bb->file_size};
    }

    const char *dir = getenv("TMPDIR");
    char path[PATH_MAX], real[PATH_MAX];
    if (!dir || !dir[0])
        dir = "/var/tmp";
    snprintf(path, sizeof(path), "%s/vl.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        error_setf_errno(err, errno, "Could not create the temporary overlay in %s", dir);
        goto fail;
    }
    close(fd);
    /* The header names the image (for qemu-img info on a leaked overlay); the overlay reads
     * through `under`, never by this name. */
    struct qcow2_create_opts co = {
        .backing_file = realpath(bb->filename, real) ? real : bb->filename,
        .backing_fmt = bb->image_format,
    };
    uint64_t size = base ? qcow2_size(base) : bb->file_size;
    struct qcow2 *q = NULL;
    if (size && qcow2_create(path, size, &co, err) == 0) {
        struct qcow2_open_opts oo = {.read_write = true, .no_backing = true};
        q = qcow2_open(path, &oo, err);
    } else if (!size) {
        co.backing_file = NULL; /* an empty image: an empty overlay */
        co.backing_fmt = NULL;
        if (qcow2_create(path, 0, &co, err) == 0) {
            struct qcow2_open_opts oo = {.read_write = true};
            q = qcow2_open(path, &oo, err);
        }
    }
    unlink(path);
    if (!q) {
        error_prefix(err, "snapshot=on: ");
        goto fail;
    }
    if (size)
        qcow2_set_backing(q, &under); /* closes base with q */
    else if (base)
        qcow2_close(base, NULL);
    return q;
fail:
    if (base)
        qcow2_close(base, NULL);
    return NULL;
}

static int qcow2_drv_open(struct block_backend *bb, struct error *err)
{
    struct qcow2_state *s = calloc(1, sizeof(*s));
    if (!s)
        return error_setf(err, "out of memory");
    s->bb = bb;
    s->tail = &s->head;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_mutex_init(&s->image_lock, NULL);
    s->no_flush = bb->cache == BLOCK_CACHE_UNSAFE || bb->snapshot;
    if (bb->snapshot) {
        s->q = open_overlay(bb, err);
    } else {
        struct qcow2_open_opts qo = {.read_write = !bb->readonly,
                                     .l2_cache_size = bb->l2_cache_size};
        s->q = qcow2_open_fd(bb->fd, bb->filename, &qo, err);
        if (s->q && !bb->readonly && qcow2_is_read_only(s->q)) {
            /* QEMU refuses too: a corrupt image is opened read-only or repaired */
            error_setf(err, "%s (use readonly=on, or repair it with qemu-img check -r all)",
                       qcow2_warning(s->q));
            goto fail;
        }
    }
    if (!s->q)
        goto fail;
    bb->size = qcow2_size(s->q);

    /* The worker takes no signals: those are for the vCPU and main threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&s->thread, NULL, worker, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        error_setf_errno(err, r, "qcow2: cannot start the I/O thread");
        goto fail;
    }
    s->started = true;
    bb->fmt_state = s;
    return 0;
fail:
    free_state(s);
    return -1;
}

static void qcow2_drv_submit(struct block_backend *bb, struct block_request *req)
{
    struct qcow2_state *s = bb->fmt_state;
    if (req->op != BLOCK_OP_FLUSH &&
        (req->offset > bb->size || req->len > bb->size - req->offset)) {
        block_complete_later(bb, req, -EINVAL);
        return;
    }
    if ((req->op == BLOCK_OP_READ || req->op == BLOCK_OP_WRITE || req->op == BLOCK_OP_DISCARD ||
         req->op == BLOCK_OP_WRITE_ZEROES) &&
        !req->len) {
        block_complete_later(bb, req, 0);
        return;
    }
    if (req->op == BLOCK_OP_FLUSH && s->no_flush) {
        block_complete_later(bb, req, 0);
        return;
    }
    pthread_mutex_lock(&s->lock);
    req->next = NULL;
    *s->tail = req;
    s->tail = &req->next;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void qcow2_drv_close(struct block_backend *bb)
{
    if (bb->fmt_state)
        free_state(bb->fmt_state);
    bb->fmt_state = NULL;
}

/* ---- commit ---- */

/* The image commit writes into: qcow2 (q) or raw (fd). */
struct commit_base {
    struct qcow2 *q;
    int fd;
    const char *name;
};

static int base_write(void *opaque, uint64_t off, const void *buf, size_t len, struct error *err)
{
    struct commit_base *b = opaque;
    if (b->q)
        return qcow2_write(b->q, off, buf, len, err);
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(b->fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return error_setf_errno(err, n < 0 ? errno : EIO, "%s: write", b->name);
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

static int base_zero(void *opaque, uint64_t off, uint64_t len, struct error *err)
{
    struct commit_base *b = opaque;
    if (b->q)
        return qcow2_write_zeroes(b->q, off, len, false, err);
    if (fallocate(b->fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) == 0)
        return 0;
    static const uint8_t zeros[65536];
    while (len) {
        size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
        if (base_write(b, off, zeros, n, err) < 0)
            return -1;
        off += n;
        len -= n;
    }
    return 0;
}

/* Copy the top image into the open base, durably, then point the top image at the new
 * contents and empty it. Under image_lock. */
static int commit_into(struct qcow2_state *s, struct commit_base *b, struct error *err)
{
    struct block_backend *bb = s->bb;
    uint64_t size = qcow2_size(s->q);
    uint64_t bsize = b->q ? qcow2_size(b->q) : 0;
    struct stat st;
    if (!b->q && fstat(b->fd, &st) == 0)
        bsize = (uint64_t)st.st_size;
    if (bsize < size &&
        (b->q ? qcow2_resize(b->q, size, err) : ftruncate(b->fd, (off_t)size)) < 0) {
        if (!b->q)
            error_setf_errno(err, errno, "%s: could not grow the base image", b->name);
        return -1;
    }
    struct qcow2_sink sink = {base_write, base_zero, b};
    if (qcow2_copy_top(s->q, 1, &sink, NULL, NULL, err) < 0)
        return -1;
    /* the base holds everything durably before the top image lets go of it */
    if (b->q ? qcow2_flush(b->q, err) < 0 : fdatasync(b->fd) < 0) {
        if (!b->q)
            error_setf_errno(err, errno, "%s: fdatasync", b->name);
        return -1;
    }
    if (bb->snapshot && !strcmp(bb->image_format, "qcow2")) {
        /* the read-only view of the image under the overlay caches tables that changed */
        struct qcow2_open_opts bo = {.l2_cache_size = bb->l2_cache_size};
        struct qcow2 *fresh = qcow2_open_fd(bb->fd, bb->filename, &bo, err);
        if (!fresh)
            return -1;
        struct qcow2_backing under = qcow2_as_backing(fresh);
        qcow2_set_backing(s->q, &under);
    } else if (!bb->snapshot && qcow2_reopen_backing(s->q, err) < 0) {
        return -1;
    }
    if (qcow2_make_empty(s->q, err) < 0)
        return -1;
    return s->no_flush ? 0 : qcow2_flush(s->q, err);
}

static int qcow2_drv_commit(struct block_backend *bb, struct error *err)
{
    struct qcow2_state *s = bb->fmt_state;
    char *path = NULL;
    const char *fmt = NULL;
    if (bb->readonly && !bb->snapshot) {
        error_setf(err, "%s: the image is read-only", bb->filename);
        return -EACCES;
    }
    if (bb->snapshot) {
        path = strdup(bb->filename);
        fmt = bb->image_format;
    } else {
        pthread_mutex_lock(&s->image_lock);
        int r = qcow2_backing_path(s->q, &path, &fmt, err);
        pthread_mutex_unlock(&s->image_lock);
        if (r < 0)
            return -ENOMEM;
        if (!path) {
            error_setf(err, "%s has no backing file", bb->filename);
            return -ENOTSUP;
        }
    }
    if (!path) {
        error_setf(err, "out of memory");
        return -ENOMEM;
    }
    int ret = 0, fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        ret = -errno;
        error_setf_errno(err, errno, "%s", path);
        free(path);
        return ret;
    }
    /* Write permission on the base, with QEMU's locks (a QEMU using it keeps us out). Under
     * snapshot=on the backend's own descriptor holds the image read-only without sharing
     * write: it shares for the time of the commit. */
    bool share = bb->snapshot && bb->locking;
    if (share)
        block_lock_share_write(bb->fd, true);
    struct commit_base b = {.fd = fd, .name = path};
    if (bb->locking && block_lock_fd(fd, path, false, err) < 0) {
        ret = -EBUSY;
        goto out;
    }
    if (!fmt) {
        uint8_t m[4] = {0};
        fmt = pread(fd, m, 4, 0) == 4 && !memcmp(m, "QFI\xfb", 4) ? "qcow2" : "raw";
    }
    if (!strcmp(fmt, "qcow2")) {
        struct qcow2_open_opts bo = {.read_write = true, .l2_cache_size = bb->l2_cache_size};
        if (!(b.q = qcow2_open_fd(fd, path, &bo, err))) {
            ret = -EIO;
            goto out;
        }
    }
    pthread_mutex_lock(&s->image_lock);
    if (commit_into(s, &b, err) < 0)
        ret = strstr(err->msg, strerror(ENOSPC)) ? -ENOSPC : -EIO;
    pthread_mutex_unlock(&s->image_lock);
    if (b.q && qcow2_close(b.q, ret ? NULL : err) < 0 && !ret)
        ret = -EIO;
out:
    close(fd); /* drops its locks */
    if (share)
        block_lock_share_write(bb->fd, false);
    free(path);
    return ret;
}

const struct block_format_ops block_format_qcow2 = {
    .name = "qcow2",
    .open = qcow2_drv_open,
    .submit = qcow2_drv_submit,
    .close = qcow2_drv_close,
    .commit = qcow2_drv_commit,
};
