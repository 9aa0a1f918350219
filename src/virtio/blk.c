/* virtio-blk: requests from the guest's queues to the block backend, on one worker thread. */
#include "virtio/blk.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/bytes.h"
#include "core/os.h"

#define BLK_HDR_SIZE        16
#define BLK_DWZ_SIZE        16 /* struct virtio_blk_discard_write_zeroes */
#define BLK_DWZ_F_UNMAP     1u
#define BLK_MAX_DWZ_SECTORS 0x3fffffu /* as QEMU: below 2 GiB per request */
/* Largest segment the guest may use; with SEG_MAX (queue size - 2) it bounds a Linux request
 * below BLK_MAX_REQ_BYTES. */
#define BLK_SIZE_MAX (128u << 10)
/* Largest read or write accepted: far above what Linux sends (max_sectors_kb 1280 by default,
 * max_hw_sectors_kb 32767 at most) and small enough that a guest cannot make one request pin
 * gigabytes of host buffers. */
#define BLK_MAX_REQ_BYTES (32u << 20)

/*
 * Merging. Reads or writes that one wake-up takes from a queue one after the other and that
 * continue each other on the disk go to the backend as one I/O, as QEMU's
 * virtio_blk_submit_multireq merges a batch: a sequential stream at depth arrives as neighbours
 * (fio 1 MiB writes at depth 16 in the test host: 14160 requests in 4001 I/Os). A request is
 * held back only while it may still grow (the run goes when the next request does not continue
 * it, another kind of request comes, or the wake-up ends), so random I/O is not delayed behind
 * the rest of the batch. A merged I/O is capped at IOV_MAX segments (one preadv/pwritev),
 * BLK_MAX_MERGE_BYTES and what the format serves in one piece (block_backend_max_transfer: qcow2
 * splits larger writes into plans that miss its fast path); each request still completes, fails
 * or is held on its own.
 */
#define BLK_MAX_MERGE_BYTES BLK_MAX_REQ_BYTES

/* epoll tags besides the queue numbers. */
#define TAG_STOP  0x10000u
#define TAG_COMPL 0x10001u
#define TAG_RETRY 0x10002u

/*
 * Kick suppression. While BLK_POLL_INFLIGHT or more requests of a queue are at the backend, the
 * driver's notifications stay off and the worker looks at the available ring whenever it wakes
 * anyway (each completion wakes it), or after BLK_POLL_MS at the latest. Each kick is a VM exit
 * (nested, a costly one); at depth the next completion comes soon enough. fio 4k random read at
 * depth 32 in the nested test host: 0.44 kicks per request and 7-8k IOPS before, 12-13k with a
 * threshold of 2 (15k with 1; QEMU 9.4-10.2k). Below the threshold the queue is notified as
 * before, so a lone request, or one of two, never waits for another's completion.
 */
#define BLK_POLL_INFLIGHT 2
#define BLK_POLL_MS       1

struct blk_req {
    struct block_request br;
    struct virtio_blk *b;
    struct blk_req *next_free;
    uint8_t *status; /* the chain's last writable byte, in guest RAM */
    uint32_t in_len; /* bytes written into the chain, reported in the used ring */
    uint16_t head;
    uint16_t q;
    bool flush_after; /* write cache off: flush before completing a write */
    struct iovec *iov;
    unsigned iov_cap;
    /* A merged I/O's first request carries the others' iovecs after its own and links them
     * here, in disk order; own_* restore its own request when the I/O completes. */
    struct blk_req *merge_next;
    int own_iovcnt;
    uint64_t own_len;
};

struct virtio_blk {
    struct virtio_device vdev;
    struct block_backend *bb;
    char serial[VIRTIO_BLK_ID_BYTES];
    unsigned num_queues, queue_size, blk_size;
    uint64_t max_merge; /* bytes: a merged I/O stays within it */
    bool readonly, discard, write_zeroes;
    uint64_t capacity; /* in 512-byte sectors */
    bool wce_default;  /* the backend's cache mode */
    bool wce_config;   /* writeback byte of the config space (CONFIG_WCE) */
    enum drive_error_action werror, rerror;
    void (*on_error)(void *opaque, const struct virtio_blk_error *e);
    void *error_opaque;
    int retry_fd; /* eventfd: virtio_blk_retry() asks the worker to resubmit */

    /* Worker (running between start and stop). */
    pthread_t thread;
    int epfd, stop_fd;
    bool broken; /* the driver broke the rules: no more pops until reset */
    bool dirty[VIRTIO_MAX_QUEUES];
    unsigned busy[VIRTIO_MAX_QUEUES]; /* requests of the queue at the backend */
    bool polling[VIRTIO_MAX_QUEUES];  /* notifications off: the worker looks (see above) */
    struct vq_chain *chain;
    struct blk_req *reqs, *free_reqs;
    unsigned nreqs;
    /* The run: reads or writes popped in this wake-up that continue each other on the disk,
     * not submitted yet; its iovecs and bytes. */
    struct blk_req **run;
    unsigned nrun;
    int run_iovcnt;
    uint64_t run_len;
    /* KEMU_BLK_STATS (worker only; printed at destroy): requests and the I/Os that carried
     * them. */
    unsigned long long st_rw, st_io, st_merged;
    /* Failed under a stop action, oldest first, linked by next_free (worker only). */
    struct blk_req *held, **held_tail;
    unsigned nheld; /* atomic: read by virtio_blk_held() */
};

static void fill_config(struct virtio_blk *b)
{
    uint8_t *c = b->vdev.config;
    memset(c, 0, VIRTIO_BLK_CFG_LEN);
    le_put64(c + VIRTIO_BLK_CFG_CAPACITY, b->capacity);
    le_put32(c + VIRTIO_BLK_CFG_SIZE_MAX, BLK_SIZE_MAX);
    /* At most 254 segments (QEMU's value for a 256-entry queue), so SEG_MAX x SIZE_MAX stays
     * within BLK_MAX_REQ_BYTES whatever the queue size. */
    le_put32(c + VIRTIO_BLK_CFG_SEG_MAX, b->queue_size - 2 < 254 ? b->queue_size - 2 : 254);
    le_put32(c + VIRTIO_BLK_CFG_BLK_SIZE, b->blk_size);
    c[VIRTIO_BLK_CFG_PHYSICAL_BLOCK_EXP] = 0;
    le_put16(c + VIRTIO_BLK_CFG_MIN_IO_SIZE, 1);
    le_put32(c + VIRTIO_BLK_CFG_OPT_IO_SIZE, 0);
    c[VIRTIO_BLK_CFG_WRITEBACK] = __atomic_load_n(&b->wce_config, __ATOMIC_RELAXED);
    le_put16(c + VIRTIO_BLK_CFG_NUM_QUEUES, (uint16_t)b->num_queues);
    le_put32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS, BLK_MAX_DWZ_SECTORS);
    le_put32(c + VIRTIO_BLK_CFG_MAX_DISCARD_SEG, 1);
    le_put32(c + VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT, b->blk_size / VIRTIO_BLK_SECTOR_SIZE);
    le_put32(c + VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_DWZ_SECTORS);
    le_put32(c + VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG, 1);
    c[VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP] = block_backend_discard_unmap(b->bb);
}

/* ---- completion ---- */

static void finish(struct virtio_blk *b, struct blk_req *r, uint8_t status)
{
    struct virtqueue *vq = &b->vdev.vq[r->q];
    /* The guest may read the status as soon as the used entry is published (release). */
    __atomic_store_n(r->status, status, __ATOMIC_RELAXED);
    vq_push(vq, r->head, r->in_len);
    b->dirty[r->q] = true;
    r->next_free = b->free_reqs;
    b->free_reqs = r;
}

/* A failed request under werror/rerror: hold it on stop, tell the owner. */
static enum drive_error_taken io_error(struct virtio_blk *b, struct blk_req *r, int ret)
{
    struct virtio_blk_error e = {.is_read = r->br.op == BLOCK_OP_READ, .error = -ret};
    e.action = drive_error_decide(e.is_read ? b->rerror : b->werror, e.error);
    if (e.action == DRIVE_ERROR_TAKEN_STOP) {
        r->next_free = NULL;
        *b->held_tail = r;
        b->held_tail = &r->next_free;
        __atomic_add_fetch(&b->nheld, 1, __ATOMIC_RELAXED);
    }
    if (b->on_error)
        b->on_error(b->error_opaque, &e);
    return e.action;
}

/* One request's I/O (or flush) finished. */
static void done_one(struct virtio_blk *b, struct blk_req *r, int ret)
{
    struct block_request *br = &r->br;
    b->busy[r->q]--;
    if (ret < 0) {
        enum drive_error_taken a = io_error(b, r, ret);
        if (a == DRIVE_ERROR_TAKEN_STOP)
            return;
        if (a == DRIVE_ERROR_TAKEN_IGNORE)
            ret = 0; /* and on as if it had worked, flush included */
    }
    if (ret == 0 && r->flush_after) {
        r->flush_after = false;
        br->op = BLOCK_OP_FLUSH;
        b->busy[r->q]++;
        block_backend_submit(b->bb, br);
        return;
    }
    finish(b, r, ret == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR);
}

static void io_done(struct block_request *br, int ret)
{
    struct blk_req *r = br->opaque;
    struct virtio_blk *b = r->b;
    if (!r->merge_next) {
        done_one(b, r, ret);
        return;
    }
    /* A merged I/O. Written without the write cache: one flush covers them all. */
    if (ret == 0 && r->flush_after) {
        for (struct blk_req *m = r; m; m = m->merge_next)
            m->flush_after = false;
        br->op = BLOCK_OP_FLUSH;
        block_backend_submit(b->bb, br);
        return;
    }
    /* Each request takes the result on its own from here: a failure is reported, ignored or
     * held per request (a held one is retried alone; after the flush, as a flush). */
    bool flushed = br->op == BLOCK_OP_FLUSH;
    br->iovcnt = r->own_iovcnt;
    br->len = r->own_len;
    while (r) {
        struct blk_req *next = r->merge_next;
        r->merge_next = NULL;
        if (flushed)
            r->br.op = BLOCK_OP_FLUSH;
        done_one(b, r, ret);
        r = next;
    }
}

/* ---- requests ---- */

static bool iov_reserve(struct blk_req *r, unsigned n)
{
    if (n <= r->iov_cap)
        return true;
    unsigned cap = r->iov_cap ? r->iov_cap : 16;
    while (cap < n)
        cap *= 2;
    struct iovec *v = realloc(r->iov, cap * sizeof(*v));
    if (!v)
        return false;
    r->iov = v;
    r->iov_cap = cap;
    return true;
}

/*
 * iovecs over segments [first, last) of the chain, skipping `skip` bytes at the start and
 * taking `len` bytes in all. Returns the count, or -1 if a segment is not in RAM (cannot happen
 * after a successful pop) or memory runs out.
 */
static int build_iov(struct virtio_blk *b, struct blk_req *r, const struct vq_chain *c,
                     unsigned first, unsigned last, uint32_t skip, uint32_t len)
{
    const struct virtqueue *vq = &b->vdev.vq[r->q];
    if (!iov_reserve(r, last - first))
        return -1;
    int n = 0;
    for (unsigned i = first; i < last && len; i++) {
        const struct vq_segment *s = &c->seg[i];
        uint32_t sl = s->len;
        if (skip >= sl) {
            skip -= sl;
            continue;
        }
        uint8_t *p = vq_segment_ptr(vq, s);
        if (!p)
            return -1;
        uint32_t take = sl - skip;
        if (take > len)
            take = len;
        r->iov[n].iov_base = p + skip;
        r->iov[n].iov_len = take;
        n++;
        len -= take;
        skip = 0;
    }
    return len ? -1 : n;
}

/* Is the volatile write cache on? Else every write is flushed before it completes. */
static bool write_cache(struct virtio_blk *b)
{
    if (virtio_has_feature(&b->vdev, VIRTIO_BLK_F_CONFIG_WCE))
        return __atomic_load_n(&b->wce_config, __ATOMIC_RELAXED);
    /* A driver without CONFIG_WCE flushes only if it negotiated FLUSH (spec 5.2.5.1). */
    return b->wce_default && virtio_has_feature(&b->vdev, VIRTIO_BLK_F_FLUSH);
}

static bool range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t bytes)
{
    if (bytes % VIRTIO_BLK_SECTOR_SIZE)
        return false;
    return sector <= b->capacity && bytes / VIRTIO_BLK_SECTOR_SIZE <= b->capacity - sector;
}

static void broken(struct virtio_blk *b, const char *msg)
{
    b->broken = true;
    virtio_set_needs_reset(&b->vdev, msg);
}

/* DISCARD and WRITE_ZEROES: one segment {le64 sector, le32 num_sectors, le32 flags}. */
static uint8_t prep_dwz(struct virtio_blk *b, struct blk_req *r, const struct vq_chain *c,
                        uint32_t type)
{
    const struct virtqueue *vq = &b->vdev.vq[r->q];
    bool wz = type == VIRTIO_BLK_T_WRITE_ZEROES;
    if (!(wz ? b->write_zeroes : b->discard))
        return VIRTIO_BLK_S_UNSUPP;
    uint32_t size = c->readable_len - BLK_HDR_SIZE;
    if (size < BLK_DWZ_SIZE)
        return VIRTIO_BLK_S_IOERR;
    if (size > BLK_DWZ_SIZE)
        return VIRTIO_BLK_S_UNSUPP; /* max_*_seg is 1 */
    uint8_t seg[BLK_DWZ_SIZE];
    if (vq_chain_read(vq, c, BLK_HDR_SIZE, seg, sizeof(seg)) < 0)
        return VIRTIO_BLK_S_IOERR;
    uint64_t sector = le_get64(seg);
    uint32_t num = le_get32(seg + 8), flags = le_get32(seg + 12);
    if ((flags & ~BLK_DWZ_F_UNMAP) || (!wz && (flags & BLK_DWZ_F_UNMAP)))
        return VIRTIO_BLK_S_UNSUPP;
    if (num > BLK_MAX_DWZ_SECTORS || b->readonly ||
        !range_ok(b, sector, (uint64_t)num * VIRTIO_BLK_SECTOR_SIZE))
        return VIRTIO_BLK_S_IOERR;
    r->br.op = wz ? BLOCK_OP_WRITE_ZEROES : BLOCK_OP_DISCARD;
    r->br.offset = sector * VIRTIO_BLK_SECTOR_SIZE;
    r->br.len = (uint64_t)num * VIRTIO_BLK_SECTOR_SIZE;
    r->br.may_unmap = (flags & BLK_DWZ_F_UNMAP) != 0;
    r->flush_after = wz && !write_cache(b) && b->wce_default;
    return 0xff;
}

/* Turn a chain into a backend request, or a status to complete it with at once (0xff: submit).
 */
static uint8_t prep(struct virtio_blk *b, struct blk_req *r, const struct vq_chain *c,
                    uint32_t type, uint64_t sector)
{
    const struct virtqueue *vq = &b->vdev.vq[r->q];
    unsigned wfirst = c->nr_readable, wend = c->nr_segs;
    int n;
    memset(&r->br, 0, sizeof(r->br));
    r->br.cb = io_done;
    r->br.opaque = r;
    r->flush_after = false;
    switch (type) {
    case VIRTIO_BLK_T_IN: {
        uint32_t len = c->writable_len - 1;
        if (len > BLK_MAX_REQ_BYTES || !range_ok(b, sector, len))
            return VIRTIO_BLK_S_IOERR;
        n = build_iov(b, r, c, wfirst, wend, 0, len);
        if (n < 0)
            return VIRTIO_BLK_S_IOERR;
        r->br.op = BLOCK_OP_READ;
        r->br.offset = sector * VIRTIO_BLK_SECTOR_SIZE;
        r->br.len = len;
        r->br.iov = r->iov;
        r->br.iovcnt = n;
        r->in_len = c->writable_len;
        return 0xff;
    }
    case VIRTIO_BLK_T_OUT: {
        uint32_t len = c->readable_len - BLK_HDR_SIZE;
        if (len > BLK_MAX_REQ_BYTES || b->readonly || !range_ok(b, sector, len))
            return VIRTIO_BLK_S_IOERR;
        n = build_iov(b, r, c, 0, wfirst, BLK_HDR_SIZE, len);
        if (n < 0)
            return VIRTIO_BLK_S_IOERR;
        r->br.op = BLOCK_OP_WRITE;
        r->br.offset = sector * VIRTIO_BLK_SECTOR_SIZE;
        r->br.len = len;
        r->br.iov = r->iov;
        r->br.iovcnt = n;
        r->flush_after = !write_cache(b) && b->wce_default;
        return 0xff;
    }
    case VIRTIO_BLK_T_FLUSH:
        r->br.op = BLOCK_OP_FLUSH;
        return 0xff;
    case VIRTIO_BLK_T_GET_ID: {
        uint32_t len = c->writable_len - 1;
        if (len > VIRTIO_BLK_ID_BYTES)
            len = VIRTIO_BLK_ID_BYTES;
        if (vq_chain_write(vq, c, 0, b->serial, len) < 0)
            return VIRTIO_BLK_S_IOERR;
        r->in_len = len + 1;
        return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        return prep_dwz(b, r, c, type);
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

/* Can `next` continue the I/O that ends with `last`, now `iovcnt` segments of `len` bytes? */
static bool can_merge(const struct virtio_blk *b, const struct blk_req *last,
                      const struct blk_req *next, int iovcnt, uint64_t len)
{
    return next->br.op == last->br.op && next->flush_after == last->flush_after &&
           next->q == last->q && last->br.offset + last->br.len == next->br.offset &&
           next->br.iovcnt <= IOV_MAX - iovcnt && len < b->max_merge &&
           next->br.len <= b->max_merge - len;
}

/* Make the run one I/O on its first request; false (nothing changed) without memory. */
static bool merge(struct virtio_blk *b)
{
    struct blk_req *r = b->run[0];
    if (!iov_reserve(r, (unsigned)b->run_iovcnt))
        return false;
    r->own_iovcnt = r->br.iovcnt;
    r->own_len = r->br.len;
    int n = r->br.iovcnt;
    for (unsigned i = 1; i < b->nrun; i++) {
        struct blk_req *m = b->run[i];
        memcpy(r->iov + n, m->br.iov, (size_t)m->br.iovcnt * sizeof(*r->iov));
        n += m->br.iovcnt;
        b->run[i - 1]->merge_next = m;
    }
    b->run[b->nrun - 1]->merge_next = NULL;
    r->br.iov = r->iov;
    r->br.iovcnt = n;
    r->br.len = b->run_len;
    b->st_merged += b->nrun - 1;
    return true;
}

/* Submit the run: one I/O (or, without memory for the joined iovec, one per request). */
static void submit_run(struct virtio_blk *b)
{
    unsigned n = b->nrun;
    if (!n)
        return;
    bool merged = n > 1 && merge(b);
    b->nrun = 0;
    b->st_rw += n;
    b->st_io += merged ? 1 : n;
    for (unsigned i = 0; i < (merged ? 1 : n); i++)
        block_backend_submit(b->bb, &b->run[i]->br);
}

/* A read or write: joins the run if it continues it, else the run goes and it starts one. */
static void queue_rw(struct virtio_blk *b, struct blk_req *r)
{
    if (b->nrun && (b->nrun == b->queue_size ||
                    !can_merge(b, b->run[b->nrun - 1], r, b->run_iovcnt, b->run_len)))
        submit_run(b);
    if (!b->nrun) {
        b->run_iovcnt = 0;
        b->run_len = 0;
    }
    b->run[b->nrun++] = r;
    b->run_iovcnt += r->br.iovcnt;
    b->run_len += r->br.len;
}

static void handle_chain(struct virtio_blk *b, unsigned q, const struct vq_chain *c)
{
    struct virtqueue *vq = &b->vdev.vq[q];
    uint8_t hdr[BLK_HDR_SIZE];
    if (c->readable_len < BLK_HDR_SIZE || c->writable_len < 1 ||
        vq_chain_read(vq, c, 0, hdr, sizeof(hdr)) < 0) {
        broken(b, "request without a 16-byte header or a status byte");
        return;
    }
    /* The status byte: the last byte of the last non-empty writable segment. */
    uint8_t *status = NULL;
    for (unsigned i = c->nr_segs; i-- > c->nr_readable;) {
        if (c->seg[i].len) {
            uint8_t *p = vq_segment_ptr(vq, &c->seg[i]);
            if (p)
                status = p + c->seg[i].len - 1;
            break;
        }
    }
    struct blk_req *r = b->free_reqs;
    if (!status || !r) {
        broken(b, !status ? "status byte outside guest RAM" : "too many requests in flight");
        return;
    }
    b->free_reqs = r->next_free;
    r->status = status;
    r->head = c->head;
    r->q = (uint16_t)q;
    r->in_len = 1;
    uint8_t st = prep(b, r, c, le_get32(hdr), le_get64(hdr + 8));
    if (st != 0xff) {
        if (r->in_len == 1 && le_get32(hdr) == VIRTIO_BLK_T_IN)
            r->in_len = c->writable_len;
        finish(b, r, st);
        return;
    }
    b->busy[q]++;
    if (r->br.op == BLOCK_OP_READ || r->br.op == BLOCK_OP_WRITE) {
        queue_rw(b, r);
        return;
    }
    /* Others go after the reads and writes popped before them, as QEMU orders a flush. */
    submit_run(b);
    block_backend_submit(b->bb, &r->br);
}

static void process_queue(struct virtio_blk *b, unsigned q)
{
    struct virtqueue *vq = &b->vdev.vq[q];
    /* At most a queue's worth per wake-up: a guest that refills as fast as we drain must not
     * starve completions, the other queues or stop(). The self-kick brings us back. */
    unsigned budget = vq->size;
    block_backend_plug(b->bb);
    for (;;) {
        vq_disable_notification(vq);
        while (!b->broken) {
            if (budget-- == 0) {
                virtio_kick(&b->vdev, q);
                goto out;
            }
            struct error err = {0};
            int r = vq_pop(vq, b->chain, &err);
            if (r < 0) {
                broken(b, err.msg);
                break;
            }
            if (r == 0)
                break;
            handle_chain(b, q, b->chain);
        }
        if (b->broken)
            break;
        b->polling[q] = b->busy[q] >= BLK_POLL_INFLIGHT;
        if (b->polling[q] || !vq_enable_notification(vq))
            break;
    }
out:
    submit_run(b);
    block_backend_unplug(b->bb);
}

/* Resubmit the held requests in the order they failed (cont). */
static void retry_held(struct virtio_blk *b)
{
    struct blk_req *r = b->held;
    b->held = NULL;
    b->held_tail = &b->held;
    __atomic_store_n(&b->nheld, 0, __ATOMIC_RELAXED);
    block_backend_plug(b->bb);
    while (r) {
        struct blk_req *next = r->next_free;
        b->busy[r->q]++;
        block_backend_submit(b->bb, &r->br);
        r = next;
    }
    block_backend_unplug(b->bb);
}

/* Reset or exit: held requests are forgotten (their queue is about to be reset), as QEMU's
 * virtio_blk_reset drops its list. */
static void drop_held(struct virtio_blk *b)
{
    while (b->held) {
        struct blk_req *r = b->held;
        b->held = r->next_free;
        r->next_free = b->free_reqs;
        b->free_reqs = r;
    }
    b->held_tail = &b->held;
    __atomic_store_n(&b->nheld, 0, __ATOMIC_RELAXED);
}

/* Queues with notifications off: take what the driver added since we last looked. */
static bool poll_queues(struct virtio_blk *b, bool run)
{
    bool any = false;
    for (unsigned q = 0; q < b->num_queues; q++) {
        if (b->polling[q] && run && !b->broken)
            process_queue(b, q);
        any |= b->polling[q];
    }
    return any;
}

static void notify_dirty(struct virtio_blk *b)
{
    for (unsigned q = 0; q < b->num_queues; q++) {
        if (b->dirty[q]) {
            b->dirty[q] = false;
            virtio_notify_queue(&b->vdev, q);
        }
    }
}

static void *worker(void *arg)
{
    /* Started by a vCPU thread (DRIVER_OK): without a name of its own it would pass for one. */
    pthread_setname_np(pthread_self(), "virtio-blk");
    struct virtio_blk *b = arg;
    bool stop = false;
    /* Kicks that arrived before DRIVER_OK are still counted in the kick fds: epoll sees them. */
    while (!stop) {
        struct epoll_event ev[VIRTIO_MAX_QUEUES + 2];
        int n = epoll_wait(b->epfd, ev, VIRTIO_MAX_QUEUES + 2,
                           poll_queues(b, false) ? BLK_POLL_MS : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "kemu: virtio-blk: epoll_wait: %s\n", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            uint32_t tag = ev[i].data.u32;
            if (tag == TAG_STOP) {
                stop = true;
            } else if (tag == TAG_COMPL) {
                block_backend_process(b->bb);
            } else if (tag == TAG_RETRY) {
                os_event_drain(b->retry_fd);
                retry_held(b);
            } else if (tag < b->num_queues) {
                os_event_drain(b->vdev.kick_fd[tag]);
                process_queue(b, tag);
            }
        }
        poll_queues(b, true);
        notify_dirty(b);
    }
    /* Stopping (reset or exit): complete what is in flight so no I/O touches guest memory
     * after stop() returns. */
    block_backend_drain(b->bb);
    drop_held(b);
    notify_dirty(b);
    return NULL;
}

/* ---- device ops ---- */

static int blk_start(struct virtio_device *vdev)
{
    struct virtio_blk *b = vdev->opaque;
    b->broken = false;
    memset(b->dirty, 0, sizeof(b->dirty));
    memset(b->busy, 0, sizeof(b->busy));
    memset(b->polling, 0, sizeof(b->polling));
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    b->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->epfd < 0 || b->stop_fd < 0)
        goto fail;
    struct epoll_event e = {.events = EPOLLIN};
    e.data.u32 = TAG_STOP;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->stop_fd, &e) < 0)
        goto fail;
    e.data.u32 = TAG_COMPL;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, block_backend_completion_fd(b->bb), &e) < 0)
        goto fail;
    e.data.u32 = TAG_RETRY;
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->retry_fd, &e) < 0)
        goto fail;
    for (unsigned q = 0; q < b->num_queues; q++) {
        e.data.u32 = q;
        if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, vdev->kick_fd[q], &e) < 0)
            goto fail;
    }
    /* The worker takes no signals: those are for the vCPU and main threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&b->thread, NULL, worker, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r == 0)
        return 0;
fail:
    fprintf(stderr, "kemu: virtio-blk: cannot start the worker: %s\n", strerror(errno));
    if (b->epfd >= 0)
        close(b->epfd);
    if (b->stop_fd >= 0)
        close(b->stop_fd);
    b->epfd = b->stop_fd = -1;
    return -1;
}

static void blk_stop(struct virtio_device *vdev)
{
    struct virtio_blk *b = vdev->opaque;
    os_event_signal(b->stop_fd);
    pthread_join(b->thread, NULL);
    close(b->epfd);
    close(b->stop_fd);
    b->epfd = b->stop_fd = -1;
}

static void blk_reset(struct virtio_device *vdev)
{
    struct virtio_blk *b = vdev->opaque;
    __atomic_store_n(&b->wce_config, b->wce_default, __ATOMIC_RELAXED);
    fill_config(b);
}

static void blk_config_write(struct virtio_device *vdev, unsigned offset, unsigned size)
{
    struct virtio_blk *b = vdev->opaque;
    /* Only the writeback byte is writable, and only with CONFIG_WCE (spec 5.2.5). */
    if (offset <= VIRTIO_BLK_CFG_WRITEBACK && offset + size > VIRTIO_BLK_CFG_WRITEBACK &&
        virtio_has_feature(vdev, VIRTIO_BLK_F_CONFIG_WCE))
        __atomic_store_n(&b->wce_config, vdev->config[VIRTIO_BLK_CFG_WRITEBACK] != 0,
                         __ATOMIC_RELAXED);
    fill_config(b);
}

static const struct virtio_device_ops blk_ops = {
    .reset = blk_reset,
    .start = blk_start,
    .stop = blk_stop,
    .config_write = blk_config_write,
};

/* ---- creation ---- */

int virtio_blk_create(struct guest_mem *mem, struct block_backend *bb,
                      const struct virtio_blk_params *p, struct virtio_blk **out, struct error *err)
{
    unsigned nq = p->num_queues ? p->num_queues : 1;
    unsigned qs = p->queue_size ? p->queue_size : 256;
    if (nq > VIRTIO_MAX_QUEUES)
        return error_setf(err, "virtio-blk: num-queues %u is too large (maximum %u)", nq,
                          VIRTIO_MAX_QUEUES);
    if (qs < 4 || qs > 1024 || (qs & (qs - 1)))
        return error_setf(
            err, "virtio-blk: queue-size %u must be a power of two between 4 and 1024", qs);
    struct virtio_blk *b = calloc(1, sizeof(*b));
    if (!b)
        return error_setf(err, "out of memory");
    b->bb = bb;
    b->epfd = b->stop_fd = -1;
    b->werror = p->werror;
    b->rerror = p->rerror;
    b->on_error = p->on_error;
    b->error_opaque = p->error_opaque;
    b->held_tail = &b->held;
    b->retry_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b->num_queues = nq;
    b->queue_size = qs;
    b->readonly = p->readonly || block_backend_readonly(bb);
    b->discard = p->discard;
    b->write_zeroes = p->write_zeroes;
    b->blk_size = block_backend_block_size(bb);
    b->capacity = block_backend_size(bb) / VIRTIO_BLK_SECTOR_SIZE;
    b->max_merge = block_backend_max_transfer(bb);
    if (b->max_merge > BLK_MAX_MERGE_BYTES)
        b->max_merge = BLK_MAX_MERGE_BYTES;
    b->wce_default = block_backend_writeback(bb);
    b->wce_config = b->wce_default;
    if (p->serial)
        memcpy(b->serial, p->serial, strnlen(p->serial, sizeof(b->serial))); /* no NUL at 20 */
    b->nreqs = nq * qs;
    b->reqs = calloc(b->nreqs, sizeof(*b->reqs));
    b->chain = malloc(sizeof(*b->chain));
    b->run = calloc(qs, sizeof(*b->run));
    if (!b->reqs || !b->chain || !b->run || b->retry_fd < 0) {
        if (b->retry_fd >= 0)
            close(b->retry_fd);
        free(b->run);
        free(b->reqs);
        free(b->chain);
        free(b);
        return error_setf(err, "out of memory");
    }
    for (unsigned i = b->nreqs; i-- > 0;) {
        b->reqs[i].b = b;
        b->reqs[i].next_free = b->free_reqs;
        b->free_reqs = &b->reqs[i];
    }
    uint64_t f = VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) | VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) |
                 VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) | VIRTIO_BIT(VIRTIO_BLK_F_FLUSH) |
                 VIRTIO_BIT(VIRTIO_BLK_F_TOPOLOGY) | VIRTIO_BIT(VIRTIO_BLK_F_CONFIG_WCE);
    if (nq > 1)
        f |= VIRTIO_BIT(VIRTIO_BLK_F_MQ);
    if (b->readonly)
        f |= VIRTIO_BIT(VIRTIO_BLK_F_RO);
    if (b->discard)
        f |= VIRTIO_BIT(VIRTIO_BLK_F_DISCARD);
    if (b->write_zeroes)
        f |= VIRTIO_BIT(VIRTIO_BLK_F_WRITE_ZEROES);
    if (virtio_device_init(&b->vdev, "virtio-blk", &blk_ops, b, mem, VIRTIO_ID_BLOCK, f, nq, qs,
                           VIRTIO_BLK_CFG_LEN, err) < 0) {
        close(b->retry_fd);
        free(b->run);
        free(b->reqs);
        free(b->chain);
        free(b);
        return -1;
    }
    fill_config(b);
    *out = b;
    return 0;
}

struct virtio_device *virtio_blk_vdev(struct virtio_blk *b)
{
    return &b->vdev;
}

void virtio_blk_retry(struct virtio_blk *b)
{
    /* Also fine while the worker is stopped: nothing is held then, and the count is read (and
     * ignored) at the next start. */
    os_event_signal(b->retry_fd);
}

unsigned virtio_blk_held(struct virtio_blk *b)
{
    return __atomic_load_n(&b->nheld, __ATOMIC_RELAXED);
}

void virtio_blk_destroy(struct virtio_blk *b)
{
    if (!b)
        return;
    virtio_device_destroy(&b->vdev);
    if (getenv("KEMU_BLK_STATS"))
        fprintf(stderr,
                "kemu: virtio-blk: %llu reads and writes in %llu I/Os (%llu merged into "
                "another)\n",
                b->st_rw, b->st_io, b->st_merged);
    close(b->retry_fd);
    for (unsigned i = 0; i < b->nreqs; i++)
        free(b->reqs[i].iov);
    free(b->reqs);
    free(b->run);
    free(b->chain);
    free(b);
}
