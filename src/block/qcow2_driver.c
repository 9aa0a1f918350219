/*
 * The qcow2 format driver: the synchronous qcow2 library (qcow2.h) behind the asynchronous
 * backend interface.
 *
 * Threads. Requests run on a few worker threads of the image's own (started as requests queue
 * up), completing through block_complete_later() as the thread pool's do, so a device sees no
 * difference from raw. The library is not thread-safe: its calls run under image_lock, as QEMU's
 * qcow2 holds its lock only for metadata. A read maps its range under the lock and transfers
 * the data without it; a write plans (allocating what it needs) under the lock, transfers
 * without it, and makes new clusters visible under the lock again (qcow2_write_begin/end). A
 * range with an allocating write in flight ("span") is kept from other writes, discards and
 * write-zeroes until the write ends; reads see the old mapping meanwhile. Commit waits until no
 * transfer is in flight. With O_DIRECT, requests that map to one piece of the file skip the
 * workers: the owner thread maps them and hands them to the backend's aio= engine (try_fast).
 *
 * Cache modes. cache=none and directsync open the backend's descriptor O_DIRECT (block.c), for
 * the guest data, straight from and to guest memory; the library gets a buffered descriptor of
 * its own on the same file, since its table updates are a few bytes at a time. Data clusters
 * never share a page with metadata (clusters of at least a page, else the data stays buffered
 * too), the kernel keeps the two descriptors coherent, and fdatasync on either covers both, so
 * the library's crash ordering holds unchanged. Pieces not aligned to the file's block size in
 * the file go through the buffered descriptor; aligned ones in unaligned memory through an
 * aligned bounce buffer. A file system that refuses O_DIRECT (EINVAL) gets buffered I/O
 * (file.c). Other cache modes: one buffered descriptor, the backend's (qcow2_open_fd duplicates
 * it, so O_DSYNC and the image locks apply), and the page cache as before.
 *
 * The library opens the backing chain by name, raw or qcow2 as the header's backing format says
 * (or by probing when it says nothing); backing reads run under backing_lock.
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

#include "block/iov.h"
#include "block/qcow2.h"

#define MAX_WORKERS 16
/* Bounce copies go in pieces of at most this (a multiple of every block size). */
#define BOUNCE_CHUNK (1u << 20)
/* Extents mapped per round of a read. */
#define READ_EXTENTS 64

/* A guest range an allocating write is filling (whole clusters). */
struct span {
    uint64_t start, end;
    struct span *next;
};

struct qcow2_state {
    struct block_backend *bb;
    struct qcow2 *q;
    bool no_flush;      /* cache=unsafe, or the temporary overlay of snapshot=on */
    bool write_through; /* writes sync the metadata (writethrough, directsync) */
    uint64_t cs;        /* cluster size */
    int bfd;            /* the library's (buffered) descriptor */
    int dfd;            /* O_DIRECT descriptor for guest data (bb->fd), or -1 */
    unsigned align;

    pthread_mutex_t lock; /* the queue and the workers */
    pthread_cond_t cond;
    struct block_request *head, **tail;
    unsigned queued, idle, nthreads;
    bool stop;
    pthread_t threads[MAX_WORKERS];
    struct scratch *scratch[MAX_WORKERS];

    pthread_mutex_t image_lock; /* the library; spans, io_active, excl */
    pthread_cond_t image_cond;  /* a span ended, io_active dropped, excl ended */
    struct span *spans;
    unsigned io_active; /* requests transferring data outside image_lock */
    unsigned excl;      /* waiting for or holding the image alone (commit) */
    pthread_mutex_t backing_lock;
    bool reported; /* the first I/O error was printed */
    /* For diagnostics (KEMU_BLK_STATS): requests by path. fast_*: owner thread only; worker:
     * under lock. */
    unsigned long long fast_reads, fast_writes, worker_reqs;
};

/* A worker's scratch memory. */
struct scratch {
    uint8_t *bounce;  /* BOUNCE_CHUNK, aligned */
    uint8_t *fill[2]; /* a cluster each, aligned: the partial clusters of a plan */
    struct qcow2_write_plan plan;
    struct qcow2_extent ext[READ_EXTENTS];
};

/* ---- a raw image under the snapshot overlay, read on the backend's descriptor ---- */

static int raw_under_read(void *opaque, uint64_t off, void *buf, size_t len, struct error *err)
{
    const struct block_backend *bb = opaque;
    /* past the end (the file shrank under us): zeros, as raw reads */
    struct iovec v = {buf, len};
    int r = iov_rw_full(bb->fd, &v, 1, off, len, false);
    if (r < 0)
        return error_setf_errno(err, -r, "%s: read at %llu", bb->filename, (unsigned long long)off);
    return 0;
}

/* ---- data transfers (no lock held) ---- */

#define MAX_XFER (1u << 30) /* bytes per system call, below Linux's cap of 2 GiB - 4 KiB */

static bool aligned(uint64_t v, unsigned a)
{
    return (v & (a - 1)) == 0;
}

/* Move len bytes between the iovecs (from byte skip on) and the file at host: O_DIRECT straight
 * from the iovecs when everything is aligned, through the bounce buffer when only the memory is
 * not, on the buffered descriptor when the file range is not. 0 or -1 with err. */
static int xfer(struct qcow2_state *s, struct scratch *w, const struct iovec *iov, int iovcnt,
                uint64_t skip, uint64_t len, uint64_t host, bool write, struct error *err)
{
    struct iovec v[IOV_MAX];
    while (len) {
        uint64_t n = len < MAX_XFER ? len : MAX_XFER;
        bool direct = s->dfd >= 0 && aligned(host, s->align) && aligned(n, s->align);
        int cnt = iov_slice(iov, iovcnt, skip, n, v, IOV_MAX);
        bool mem_ok = cnt >= 0 && (!direct || iov_is_aligned(v, cnt, s->align));
        int fd = direct ? s->dfd : s->bfd;
        int r = 0;
        if (mem_ok) {
            r = iov_rw_once(fd, v, cnt, host, n, write);
        } else {
            for (uint64_t done = 0; done < n && r == 0;) {
                uint64_t k = n - done < BOUNCE_CHUNK ? n - done : BOUNCE_CHUNK;
                struct iovec b = {w->bounce, (size_t)k};
                if (write)
                    iov_to_buf(iov, iovcnt, skip + done, w->bounce, k);
                r = iov_rw_once(fd, &b, 1, host + done, k, write);
                if (r == 0 && !write)
                    iov_from_buf(iov, iovcnt, skip + done, w->bounce, k);
                done += k;
            }
        }
        if (r < 0)
            return error_setf_errno(err, -r, "%s: %s at 0x%llx", s->bb->filename,
                                    write ? "write" : "read", (unsigned long long)host);
        skip += n;
        host += n;
        len -= n;
    }
    return 0;
}

/* A read through a library call into the bounce buffer: compressed or backing extents. */
static int lib_read(struct qcow2_state *s, struct scratch *w, struct block_request *req,
                    const struct qcow2_extent *e, struct error *err)
{
    for (uint64_t done = 0; done < e->len;) {
        uint64_t k = e->len - done < BOUNCE_CHUNK ? e->len - done : BOUNCE_CHUNK;
        int r = e->type == QCOW2_EXT_BACKING
                    ? qcow2_read_backing(s->q, e->off + done, w->bounce, (size_t)k, err)
                    : qcow2_read(s->q, e->off + done, w->bounce, (size_t)k, err);
        if (r < 0)
            return -1;
        iov_from_buf(req->iov, req->iovcnt, e->off + done - req->offset, w->bounce, k);
        done += k;
    }
    return 0;
}

/* ---- requests (worker threads) ---- */

static bool span_busy(const struct qcow2_state *s, uint64_t start, uint64_t end)
{
    for (const struct span *p = s->spans; p; p = p->next)
        if (p->start < end && start < p->end)
            return true;
    return false;
}

/* Under image_lock: wait until no allocating write covers the clusters of [off, off+len) and
 * no commit runs: two writes filling one new cluster would each write it whole. */
static void wait_range(struct qcow2_state *s, uint64_t off, uint64_t len)
{
    uint64_t start = off & ~(s->cs - 1), end = ((off + len - 1) | (s->cs - 1)) + 1;
    while (s->excl || span_busy(s, start, end))
        pthread_cond_wait(&s->image_cond, &s->image_lock);
}

/* Under image_lock: a transfer outside the lock ended. */
static void io_done(struct qcow2_state *s)
{
    s->io_active--;
    pthread_cond_broadcast(&s->image_cond);
}

static int do_read(struct qcow2_state *s, struct scratch *w, struct block_request *req,
                   struct error *err)
{
    uint64_t off = req->offset, len = req->len;
    while (len) {
        pthread_mutex_lock(&s->image_lock);
        while (s->excl)
            pthread_cond_wait(&s->image_cond, &s->image_lock);
        int n = qcow2_read_map(s->q, off, len, w->ext, READ_EXTENTS, err);
        int r = n < 0 ? -1 : 0;
        /* compressed clusters are decompressed by the library, under its lock */
        for (int i = 0; i < n && r == 0; i++)
            if (w->ext[i].type == QCOW2_EXT_LIB)
                r = lib_read(s, w, req, &w->ext[i], err);
        if (r == 0)
            s->io_active++;
        pthread_mutex_unlock(&s->image_lock);
        if (r < 0)
            return -1;
        uint64_t done = 0;
        for (int i = 0; i < n && r == 0; i++) {
            const struct qcow2_extent *e = &w->ext[i];
            uint64_t skip = e->off - req->offset;
            if (e->type == QCOW2_EXT_DATA) {
                r = xfer(s, w, req->iov, req->iovcnt, skip, e->len, e->host, false, err);
            } else if (e->type == QCOW2_EXT_ZERO) {
                iov_memset(req->iov, req->iovcnt, skip, 0, e->len);
            } else if (e->type == QCOW2_EXT_BACKING) {
                pthread_mutex_lock(&s->backing_lock);
                r = lib_read(s, w, req, e, err);
                pthread_mutex_unlock(&s->backing_lock);
            }
            done += e->len;
        }
        pthread_mutex_lock(&s->image_lock);
        io_done(s);
        pthread_mutex_unlock(&s->image_lock);
        if (r < 0)
            return -1;
        off += done;
        len -= done;
    }
    return 0;
}

/* Write one part of a request as planned (no lock held): the extents in place or in new
 * clusters straight from the iovecs, partial new clusters whole from a fill buffer. */
static int write_plan(struct qcow2_state *s, struct scratch *w, struct block_request *req,
                      struct error *err)
{
    const struct qcow2_write_plan *p = &w->plan;
    unsigned nfill = 0;
    for (unsigned i = 0; i < p->n; i++) {
        const struct qcow2_extent *e = &p->ext[i];
        uint64_t skip = e->off - req->offset;
        if (!e->fill) {
            if (xfer(s, w, req->iov, req->iovcnt, skip, e->len, e->host, true, err) < 0)
                return -1;
            continue;
        }
        uint8_t *c = w->fill[nfill++];
        if (e->fill == QCOW2_FILL_BACKING) {
            pthread_mutex_lock(&s->backing_lock);
            int r = qcow2_plan_fill(s->q, e, c, err);
            pthread_mutex_unlock(&s->backing_lock);
            if (r < 0)
                return -1;
        }
        uint64_t in = e->off & (s->cs - 1);
        iov_to_buf(req->iov, req->iovcnt, skip, c + in, e->len);
        struct iovec v = {c, (size_t)s->cs};
        if (xfer(s, w, &v, 1, 0, s->cs, e->host - in, true, err) < 0)
            return -1;
    }
    return 0;
}

static int do_write(struct qcow2_state *s, struct scratch *w, struct block_request *req,
                    struct error *err)
{
    struct qcow2_write_plan *p = &w->plan;
    uint64_t off = req->offset, len = req->len;
    p->only_fresh = false;
    while (len) {
        pthread_mutex_lock(&s->image_lock);
        wait_range(s, off, len);
        int r = qcow2_write_begin(s->q, off, len, p, err);
        /* A plan has at most two partial clusters, its first and its last. Their old contents
         * are read now, while the mapping cannot change (backing bytes: outside the lock). */
        unsigned nfill = 0;
        for (unsigned i = 0; r == 0 && i < p->n; i++) {
            const struct qcow2_extent *e = &p->ext[i];
            if (!e->fill)
                continue;
            if (nfill == 2) {
                r = error_setf(err, "%s: write plan with more than two partial clusters",
                               s->bb->filename);
                qcow2_write_end(s->q, p, false, NULL);
                break;
            }
            if (e->fill != QCOW2_FILL_BACKING &&
                qcow2_plan_fill(s->q, e, w->fill[nfill], err) < 0) {
                r = -1;
                qcow2_write_end(s->q, p, false, NULL);
            }
            nfill++;
        }
        struct span sp = {p->off & ~(s->cs - 1), ((p->off + p->len - 1) | (s->cs - 1)) + 1,
                          s->spans};
        if (r == 0) {
            if (p->allocates)
                s->spans = &sp;
            s->io_active++;
        }
        pthread_mutex_unlock(&s->image_lock);
        if (r < 0)
            return -1;

        struct error ignored = {0};
        r = write_plan(s, w, req, err);

        pthread_mutex_lock(&s->image_lock);
        if (qcow2_write_end(s->q, p, r == 0, r == 0 ? err : &ignored) < 0)
            r = -1;
        if (p->allocates) {
            struct span **pp = &s->spans;
            while (*pp != &sp)
                pp = &(*pp)->next;
            *pp = sp.next;
        }
        io_done(s);
        pthread_mutex_unlock(&s->image_lock);
        if (r < 0)
            return -1;
        off += p->len;
        len -= p->len;
    }
    return 0;
}

/* The library says why in words; the guest gets ENOSPC (werror=enospc) or EIO. */
static int report_error(struct qcow2_state *s, const struct error *err)
{
    if (!__atomic_exchange_n(&s->reported, true, __ATOMIC_RELAXED))
        fprintf(stderr, "kemu: qcow2 I/O error (reported once per image): %s\n", err->msg);
    if (strstr(err->msg, strerror(ENOSPC)) || strstr(err->msg, strerror(EDQUOT)))
        return -ENOSPC;
    return -EIO;
}

static int run_request(struct qcow2_state *s, struct scratch *w, struct block_request *req)
{
    struct block_backend *bb = s->bb;
    struct error err = {0};
    int r = 0;
    switch (req->eop) {
    case BLOCK_OP_READ:
        r = do_read(s, w, req, &err);
        break;
    case BLOCK_OP_WRITE:
        r = do_write(s, w, req, &err);
        break;
    case BLOCK_OP_FLUSH:
        /* Durable: what completed before was written (data) or is in the cache (tables). */
        pthread_mutex_lock(&s->image_lock);
        r = qcow2_flush(s->q, &err);
        pthread_mutex_unlock(&s->image_lock);
        break;
    case BLOCK_OP_DISCARD:
    case BLOCK_OP_WRITE_ZEROES:
        pthread_mutex_lock(&s->image_lock);
        wait_range(s, req->offset, req->len);
        /* a partial cluster may be copied from the backing image */
        pthread_mutex_lock(&s->backing_lock);
        if (req->eop == BLOCK_OP_DISCARD)
            r = bb->discard_unmap ? qcow2_discard(s->q, req->offset, req->len, &err) : 0;
        else
            r = qcow2_write_zeroes(s->q, req->offset, req->len, req->eunmap && bb->discard_unmap,
                                   &err);
        pthread_mutex_unlock(&s->backing_lock);
        pthread_mutex_unlock(&s->image_lock);
        break;
    }
    return r == 0 ? 0 : report_error(s, &err);
}

struct worker_arg {
    struct qcow2_state *s;
    struct scratch *w;
};

static void *worker(void *arg)
{
    pthread_setname_np(pthread_self(), "qcow2");
    struct qcow2_state *s = ((struct worker_arg *)arg)->s;
    struct scratch *w = ((struct worker_arg *)arg)->w;
    free(arg);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stop) {
            s->idle++;
            pthread_cond_wait(&s->cond, &s->lock);
            s->idle--;
        }
        if (!s->head)
            break; /* stopping and nothing left */
        struct block_request *req = s->head;
        s->head = req->next;
        if (!s->head)
            s->tail = &s->head;
        s->queued--;
        s->worker_reqs++;
        pthread_mutex_unlock(&s->lock);
        block_complete_later(s->bb, req, run_request(s, w, req));
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void free_scratch(struct scratch *w)
{
    if (!w)
        return;
    free(w->bounce);
    free(w->fill[0]);
    free(w->fill[1]);
    free(w);
}

static struct scratch *new_scratch(const struct qcow2_state *s)
{
    struct scratch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    /* aligned for O_DIRECT on any block size */
    size_t a = 65536;
    if (posix_memalign((void **)&w->bounce, a, BOUNCE_CHUNK) ||
        posix_memalign((void **)&w->fill[0], a, s->cs) ||
        posix_memalign((void **)&w->fill[1], a, s->cs)) {
        free_scratch(w);
        return NULL;
    }
    return w;
}

/* Start one more worker; under s->lock (or before any runs). Returns 0 or an errno. */
static int spawn_worker(struct qcow2_state *s)
{
    struct worker_arg *a = malloc(sizeof(*a));
    struct scratch *w = new_scratch(s);
    if (!a || !w) {
        free(a);
        free_scratch(w);
        return ENOMEM;
    }
    *a = (struct worker_arg){s, w};
    /* Workers take no signals: those are for the vCPU and main threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&s->threads[s->nthreads], NULL, worker, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        free(a);
        free_scratch(w);
        return r;
    }
    s->scratch[s->nthreads++] = w;
    return 0;
}

/* ---- the format ops ---- */

static void free_state(struct qcow2_state *s)
{
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->nthreads; i++) {
        pthread_join(s->threads[i], NULL);
        free_scratch(s->scratch[i]);
    }
    if (s->q) {
        struct error err = {0};
        if (qcow2_close(s->q, &err) < 0)
            fprintf(stderr, "kemu: %s\n", err.msg);
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->image_cond);
    pthread_mutex_destroy(&s->image_lock);
    pthread_mutex_destroy(&s->backing_lock);
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
        /* deleted at once: never worth an fdatasync (QEMU's overlay is cache=unsafe too) */
        struct qcow2_open_opts oo = {.read_write = true, .no_backing = true, .no_sync = true};
        q = qcow2_open(path, &oo, err);
    } else if (!size) {
        co.backing_file = NULL; /* an empty image: an empty overlay */
        co.backing_fmt = NULL;
        if (qcow2_create(path, 0, &co, err) == 0) {
            struct qcow2_open_opts oo = {.read_write = true, .no_sync = true};
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
    s->dfd = -1;
    s->align = 1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_mutex_init(&s->image_lock, NULL);
    pthread_cond_init(&s->image_cond, NULL);
    pthread_mutex_init(&s->backing_lock, NULL);
    s->no_flush = bb->cache == BLOCK_CACHE_UNSAFE || bb->snapshot;
    s->write_through = bb->cache == BLOCK_CACHE_WRITETHROUGH || bb->cache == BLOCK_CACHE_DIRECTSYNC;
    if (bb->snapshot) {
        s->q = open_overlay(bb, err);
    } else {
        struct qcow2_open_opts qo = {
            .read_write = !bb->readonly,
            .l2_cache_size = bb->l2_cache_size,
            .lazy_refcounts = bb->lazy_refcounts == BLOCK_LAZY_ON    ? QCOW2_LAZY_ON
                              : bb->lazy_refcounts == BLOCK_LAZY_OFF ? QCOW2_LAZY_OFF
                                                                     : QCOW2_LAZY_IMAGE,
        };
        int lfd = bb->fd;
        if (bb->direct) {
            /* the library's descriptor: the same file, buffered (see the top) */
            char path[64];
            snprintf(path, sizeof(path), "/proc/self/fd/%d", bb->fd);
            if ((lfd = open(path, bb->open_flags & ~O_DIRECT)) < 0) {
                error_setf_errno(err, errno, "%s: cannot reopen without O_DIRECT", bb->filename);
                goto fail;
            }
        }
        s->q = qcow2_open_fd(lfd, bb->filename, &qo, err);
        if (lfd != bb->fd)
            close(lfd);
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
    s->cs = qcow2_cluster_size(s->q);
    /* One write plan: a larger request is split into plans, and misses try_fast. */
    bb->max_transfer = s->cs * QCOW2_PLAN_MAX;
    s->bfd = qcow2_fd(s->q);
    /* Data clusters smaller than a page could share one with metadata written buffered: those
     * images keep their data on the buffered descriptor too. */
    long page = sysconf(_SC_PAGESIZE);
    if (bb->direct && s->cs >= (uint64_t)(page > 0 ? page : 4096) && bb->align <= s->cs) {
        s->dfd = bb->fd;
        s->align = bb->align;
    }
    int r = spawn_worker(s); /* more start as requests queue up */
    if (r != 0) {
        error_setf_errno(err, r, "qcow2: cannot start an I/O thread");
        goto fail;
    }
    bb->fmt_state = s;
    return 0;
fail:
    free_state(s);
    return -1;
}

/* A write the owner thread planned: its clusters are new until it completes. */
struct fast_write {
    struct qcow2_write_plan plan;
    struct span span;
};

/* On the owner thread: a request whose range is one piece of the file (or zeros), aligned for
 * O_DIRECT, goes to the protocol's engine (aio=native, io_uring or its thread pool) at its file
 * offset, with no hand-off to a worker, as raw requests do: reads of allocated clusters or
 * holes, writes in place, and writes that fill new clusters whole (or over zeros), which are
 * planned here and made visible when they complete (qcow2_drv_complete). Only when the image
 * lock is free: the owner thread never waits for it here. */
static bool try_fast(struct qcow2_state *s, struct block_request *req)
{
    if (!aligned(req->offset, s->align) || !aligned(req->len, s->align) ||
        !iov_is_aligned(req->iov, req->iovcnt, s->align))
        return false;
    if (pthread_mutex_trylock(&s->image_lock))
        return false;
    struct error err = {0};
    struct qcow2_extent e = {.type = QCOW2_EXT_LIB};
    struct fast_write *fw = NULL;
    bool ok = false;
    uint64_t start = req->offset & ~(s->cs - 1), end = req->offset + req->len;
    if (s->excl) {
        ; /* commit runs or waits */
    } else if (req->eop == BLOCK_OP_READ) {
        ok = qcow2_read_map(s->q, req->offset, req->len, &e, 1, &err) == 1 && e.len == req->len &&
             (e.type == QCOW2_EXT_DATA || e.type == QCOW2_EXT_ZERO);
    } else if (span_busy(s, start, end)) {
        ; /* an allocating write in flight there could still have its old mapping */
    } else if (qcow2_write_inplace(s->q, req->offset, req->len, &e.host, &err) == 1) {
        ok = true;
        e.type = QCOW2_EXT_DATA;
    } else if (!err.set && !s->write_through && (fw = malloc(sizeof(*fw)))) {
        /* (write-through would sync the metadata here, on the owner thread: not that) */
        fw->plan.only_fresh = true;
        ok =
            qcow2_write_begin(s->q, req->offset, req->len, &fw->plan, &err) == 0 && fw->plan.n == 1;
        if (ok) {
            e = fw->plan.ext[0];
            fw->span = (struct span){start, ((end - 1) | (s->cs - 1)) + 1, s->spans};
            s->spans = &fw->span;
        }
    }
    if (ok && e.type == QCOW2_EXT_DATA)
        s->io_active++; /* until qcow2_drv_complete */
    pthread_mutex_unlock(&s->image_lock);
    if (!ok) {
        free(fw);
        return false; /* errors too: the worker reports them */
    }
    if (req->eop == BLOCK_OP_READ)
        s->fast_reads++;
    else
        s->fast_writes++;
    if (e.type == QCOW2_EXT_ZERO) {
        iov_memset(req->iov, req->iovcnt, 0, 0, req->len);
        block_complete_later(s->bb, req, 0);
        return true;
    }
    req->eoff = e.host;
    req->fmt_io = true;
    req->fmt_priv = fw;
    file_submit(s->bb, req);
    return true;
}

static int qcow2_drv_complete(struct block_backend *bb, struct block_request *req, int ret)
{
    struct qcow2_state *s = bb->fmt_state;
    struct fast_write *fw = req->fmt_priv;
    struct error err = {0};
    pthread_mutex_lock(&s->image_lock);
    if (fw) {
        if (qcow2_write_end(s->q, &fw->plan, ret == 0, &err) < 0 && ret == 0)
            ret = report_error(s, &err);
        struct span **pp = &s->spans;
        while (*pp != &fw->span)
            pp = &(*pp)->next;
        *pp = fw->span.next;
    }
    io_done(s);
    pthread_mutex_unlock(&s->image_lock);
    free(fw);
    return ret;
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
    if (s->dfd >= 0 && (req->eop == BLOCK_OP_READ || req->eop == BLOCK_OP_WRITE) &&
        try_fast(s, req))
        return;
    pthread_mutex_lock(&s->lock);
    req->next = NULL;
    *s->tail = req;
    s->tail = &req->next;
    s->queued++;
    if (s->queued > s->idle && s->nthreads < MAX_WORKERS)
        spawn_worker(s); /* best effort: the running workers take the request otherwise */
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void qcow2_drv_close(struct block_backend *bb)
{
    struct qcow2_state *s = bb->fmt_state;
    if (!s)
        return;
    if (getenv("KEMU_BLK_STATS")) /* which path the requests took */
        fprintf(stderr,
                "kemu: qcow2: %llu reads and %llu writes on the owner thread (no hand-off), "
                "%llu requests on worker threads (%u started)\n",
                s->fast_reads, s->fast_writes, s->worker_reqs, s->nthreads);
    free_state(s);
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
    struct iovec v = {(void *)(uintptr_t)buf, len};
    int r = iov_rw_full(b->fd, &v, 1, off, len, true);
    return r < 0 ? error_setf_errno(err, -r, "%s: write", b->name) : 0;
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
    /* Alone: a transfer in flight could use clusters that emptying the image frees, or read
     * the backing image that is reopened. */
    pthread_mutex_lock(&s->image_lock);
    s->excl++;
    while (s->io_active)
        pthread_cond_wait(&s->image_cond, &s->image_lock);
    pthread_mutex_lock(&s->backing_lock);
    if (commit_into(s, &b, err) < 0)
        ret = strstr(err->msg, strerror(ENOSPC)) ? -ENOSPC : -EIO;
    pthread_mutex_unlock(&s->backing_lock);
    s->excl--;
    pthread_cond_broadcast(&s->image_cond);
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
    .complete = qcow2_drv_complete,
};
