/* qcow2 image library. Layout facts come from the qcow2 specification (QEMU
 * docs/interop/qcow2.txt).
 *
 * Refcount blocks and L2 tables are cached write-back (as QEMU caches them); the cache keeps the
 * order every update needs on disk:
 *   data cluster written -> refcount raised -> fdatasync -> L2 entry written
 * (a dirty L2 table is written only after every dirty refcount block and an fdatasync) and, when
 * a cluster is freed,
 *   L2 entry changed -> all metadata written, fdatasync -> refcount lowered
 * so a crash leaves at worst leaked clusters, never a reference to a cluster with refcount 0.
 * L1, refcount table and header changes are written through after the same ordering. A flush
 * writes everything back and syncs. New clusters are always taken at the end of the file.
 *
 * Lazy refcounts (the v3 compatible feature, or the open option) drop the first ordering, as
 * QEMU does: before the first L2 change of a session the dirty bit is written and synced; then
 * L2 tables go out without the refcounts before them, a flush writes the L2 tables only (one
 * sync), and refcount blocks reach the disk when evicted or at a clean close, which also clears
 * the bit. After a crash the next read-write open rebuilds the refcounts (qcow2_check). Freeing
 * keeps its order (the L2 change is synced before a freed cluster's hole is punched), so the
 * clusters a crash leaves referenced still hold their data. */
#include "block/block.h"
#include "block/qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* zlib and libzstd are opened at the first compressed cluster (zlib_dl.h says why and how) */
#include "block/zlib_dl.h"
#include "block/zstd_dl.h"

#define QCOW_MAGIC 0x514649fbu

#define INCOMPAT_DIRTY        (1ull << 0)
#define INCOMPAT_CORRUPT      (1ull << 1)
#define INCOMPAT_DATA_FILE    (1ull << 2)
#define INCOMPAT_COMPRESSION  (1ull << 3)
#define INCOMPAT_EXTL2        (1ull << 4)
#define INCOMPAT_KNOWN        (INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION)
#define COMPAT_LAZY_REFCOUNTS (1ull << 0)

#define EXT_END          0x00000000u
#define EXT_BACKING_FMT  0xe2792acau
#define EXT_FEATURE_NAME 0x6803f857u

#define OFLAG_COPIED     (1ull << 63)
#define OFLAG_COMPRESSED (1ull << 62)
#define OFLAG_ZERO       (1ull << 0)
#define L1E_OFFSET_MASK  0x00fffffffffffe00ull
#define L2E_OFFSET_MASK  0x00fffffffffffe00ull
#define REFT_OFFSET_MASK 0xfffffffffffffe00ull

/* Caps against hostile headers, QEMU's values. */
#define MAX_L1_BYTES       (32u << 20)
#define MAX_REFTABLE_BYTES (8u << 20)
#define MAX_SNAPSHOTS      65536u
#define MAX_BACKING_NAME   1023u
#define MAX_BACKING_DEPTH  16
#define MAX_SNAP_EXTRA     1024u

#define RC_CACHE_TABLES 4

enum ctype { C_UNALLOC, C_ZERO_PLAIN, C_ZERO_ALLOC, C_NORMAL, C_COMPRESSED };

struct tcache {
    unsigned n;
    uint64_t *off; /* 0 = empty slot (offset 0 is the header, never a table) */
    bool *dirty;   /* changed in memory, not yet written */
    unsigned ndirty;
    uint64_t *lru;
    uint8_t **data;
    uint64_t tick;
};

struct backing_id {
    dev_t dev;
    ino_t ino;
};

struct qcow2 {
    char *name;
    int fd;
    bool rw;
    bool no_sync;       /* cache=unsafe: never fdatasync (ordering still kept for the page cache) */
    bool write_through; /* O_DSYNC (writethrough, directsync): each write is complete on return */
    bool lazy;          /* lazy refcounts in this session (read-write only) */
    char warning[512];

    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t l2_bits; /* log2 of entries per L2 table */
    uint64_t size;
    uint64_t incompat, compat, autoclear;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression;

    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t *l1; /* host order */

    uint64_t reft_offset;
    uint32_t reft_clusters;
    uint64_t reft_entries;
    uint64_t *reft;   /* host order */
    uint32_t rb_bits; /* log2 of refcounts per refcount block */

    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size;
    struct qcow2_snapshot *snaps;

    char *backing_name;
    char *backing_fmt;
    struct qcow2_backing backing;
    bool has_backing;

    uint64_t file_size;    /* bytes, as last known */
    uint64_t free_cluster; /* next cluster index to allocate (end of file) */

    struct tcache l2c, rbc;
    uint64_t zbuf_off; /* compressed cluster cached in zbuf (0 = none) */
    uint8_t *zbuf;

    /* compressed writes: where the next compressed piece may go (unaligned: inside a cluster
     * already allocated for compressed data; otherwise none), and the compressor state */
    uint64_t cbyte;
    ZSTD_CCtx *zctx;
    z_stream zstrm;
    bool zstrm_init;
};

/* ---- byte order and file I/O ---- */

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* Reads past the end of the file yield zeros (like a sparse tail); returns bytes really read. */
static int64_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    memset((uint8_t *)buf + done, 0, len - done);
    return (int64_t)done;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

static int qread(struct qcow2 *q, void *buf, size_t len, uint64_t off, const char *what,
                 struct error *err)
{
    int64_t r = pread_full(q->fd, buf, len, off);
    if (r < 0)
        return error_setf_errno(err, errno, "%s: reading %s at 0x%" PRIx64, q->name, what, off);
    if ((uint64_t)r < len)
        return error_setf(err, "%s: %s at 0x%" PRIx64 " is past the end of the file", q->name, what,
                          off);
    return 0;
}

static int qwrite(struct qcow2 *q, const void *buf, size_t len, uint64_t off, struct error *err)
{
    if (pwrite_full(q->fd, buf, len, off) < 0)
        return error_setf_errno(err, errno, "%s: write at 0x%" PRIx64, q->name, off);
    if (off + len > q->file_size)
        q->file_size = off + len;
    return 0;
}

static int qsync(struct qcow2 *q, struct error *err)
{
    if (q->no_sync)
        return 0;
    if (fdatasync(q->fd) < 0)
        return error_setf_errno(err, errno, "%s: fdatasync", q->name);
    return 0;
}

static uint64_t cluster_align(const struct qcow2 *q, uint64_t v)
{
    return (v + q->cluster_size - 1) & ~(q->cluster_size - 1);
}

/* ---- table cache (L2 tables and refcount blocks), LRU, write-back ---- */

static int tcache_init(struct tcache *c, unsigned n)
{
    c->n = n;
    c->off = calloc(n, sizeof(*c->off));
    c->lru = calloc(n, sizeof(*c->lru));
    c->data = calloc(n, sizeof(*c->data));
    c->dirty = calloc(n, sizeof(*c->dirty));
    return c->off && c->lru && c->data && c->dirty ? 0 : -1;
}

static void tcache_free(struct tcache *c)
{
    for (unsigned i = 0; c->data && i < c->n; i++)
        free(c->data[i]);
    free(c->off);
    free(c->lru);
    free(c->data);
    free(c->dirty);
}

static uint8_t *tcache_find(struct tcache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->off[i] == off) {
            c->lru[i] = ++c->tick;
            return c->data[i];
        }
    return NULL;
}

/* Forget a table (freed, or its write failed): pending changes are dropped too. */
static void tcache_drop(struct tcache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->off[i] == off) {
            c->off[i] = 0;
            if (c->dirty[i])
                c->ndirty--;
            c->dirty[i] = false;
        }
}

/* The table was just written as cached: nothing pending any more. */
static void tcache_mark_clean(struct tcache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->off[i] == off && c->dirty[i]) {
            c->dirty[i] = false;
            c->ndirty--;
        }
}

static void tcache_mark_dirty(struct tcache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->off[i] == off && !c->dirty[i]) {
            c->dirty[i] = true;
            c->ndirty++;
        }
}

static int tcache_write_slot(struct qcow2 *q, struct tcache *c, unsigned i, struct error *err)
{
    if (pwrite_full(q->fd, c->data[i], q->cluster_size, c->off[i]) < 0)
        return error_setf_errno(err, errno, "%s: write at 0x%" PRIx64, q->name, c->off[i]);
    c->dirty[i] = false;
    c->ndirty--;
    return 0;
}

static int mark_dirty(struct qcow2 *q, struct error *err);

/* Write every dirty refcount block and sync: whatever L2/L1/table entry is written next may
 * point at clusters those refcounts (and the data written so far) cover. */
static int meta_sync(struct qcow2 *q, struct error *err)
{
    struct tcache *c = &q->rbc;
    for (unsigned i = 0; i < c->n && c->ndirty; i++)
        if (c->dirty[i] && tcache_write_slot(q, c, i, err) < 0)
            return -1;
    return qsync(q, err);
}

/* Before a table entry that may point at newly counted clusters is written: those refcounts on
 * disk, or with lazy refcounts the dirty bit (which makes the refcounts on disk not count). */
static int rc_barrier(struct qcow2 *q, struct error *err)
{
    return q->lazy ? mark_dirty(q, err) : meta_sync(q, err);
}

/* Write back all cached metadata in dependency order and sync. */
static int meta_flush(struct qcow2 *q, struct error *err)
{
    struct tcache *c = &q->l2c;
    if (q->lazy) {
        /* QEMU's flush on a dirty image: L2 tables and one sync; refcount blocks wait */
        if (c->ndirty && mark_dirty(q, err) < 0)
            return -1;
        for (unsigned i = 0; i < c->n && c->ndirty; i++)
            if (c->dirty[i] && tcache_write_slot(q, c, i, err) < 0)
                return -1;
        return qsync(q, err);
    }
    if (meta_sync(q, err) < 0)
        return -1;
    if (!c->ndirty)
        return 0;
    for (unsigned i = 0; i < c->n && c->ndirty; i++)
        if (c->dirty[i] && tcache_write_slot(q, c, i, err) < 0)
            return -1;
    return qsync(q, err);
}

/* Return the table at off, reading it on a miss (evicting the least recently used). */
static uint8_t *tcache_get(struct qcow2 *q, struct tcache *c, uint64_t off, const char *what,
                           struct error *err)
{
    uint8_t *d = tcache_find(c, off);
    if (d)
        return d;
    unsigned v = 0;
    for (unsigned i = 1; i < c->n; i++)
        if (c->lru[i] < c->lru[v])
            v = i;
    if (!c->data[v] && !(c->data[v] = malloc(q->cluster_size))) {
        error_setf(err, "%s: out of memory", q->name);
        return NULL;
    }
    if (c->dirty[v]) {
        /* a dirty L2 table may point at clusters whose refcounts are still only cached */
        if (c == &q->l2c && rc_barrier(q, err) < 0)
            return NULL;
        if (tcache_write_slot(q, c, v, err) < 0)
            return NULL;
    }
    c->off[v] = 0;
    if (qread(q, c->data[v], q->cluster_size, off, what, err) < 0)
        return NULL;
    c->off[v] = off;
    c->lru[v] = ++c->tick;
    return c->data[v];
}

/* ---- header field updates ---- */

static int write_header_u64(struct qcow2 *q, unsigned at, uint64_t v, struct error *err)
{
    uint8_t b[8];
    put64(b, v);
    return qwrite(q, b, 8, at, err);
}

/* Lazy refcounts: from now on the refcounts on disk may be stale. Only a durable bit lets a
 * table go out before the refcounts it relies on. */
static int mark_dirty(struct qcow2 *q, struct error *err)
{
    if (q->incompat & INCOMPAT_DIRTY)
        return 0;
    if (write_header_u64(q, 72, q->incompat | INCOMPAT_DIRTY, err) < 0 || qsync(q, err) < 0)
        return -1;
    q->incompat |= INCOMPAT_DIRTY;
    return 0;
}

/* The end of a lazy refcounts session (the L2 tables are written back already): every refcount
 * block on disk and synced before the bit goes. */
static int mark_clean(struct qcow2 *q, struct error *err)
{
    if (!(q->incompat & INCOMPAT_DIRTY))
        return 0;
    if (meta_sync(q, err) < 0 || write_header_u64(q, 72, q->incompat & ~INCOMPAT_DIRTY, err) < 0 ||
        qsync(q, err) < 0)
        return -1;
    q->incompat &= ~INCOMPAT_DIRTY;
    return 0;
}

static int mark_corrupt(struct qcow2 *q, const char *why, struct error *err)
{
    /* v3 images remember corruption so the next opener goes read-only; v2 cannot. */
    if (q->rw && q->version >= 3 && !(q->incompat & INCOMPAT_CORRUPT)) {
        q->incompat |= INCOMPAT_CORRUPT;
        struct error ignored = {0};
        write_header_u64(q, 72, q->incompat, &ignored);
        fdatasync(q->fd);
    }
    q->rw = false;
    return error_setf(err, "%s: corrupt image: %s; further writes refused", q->name, why);
}

/* ---- refcounts ---- */

static uint64_t rc_max(const struct qcow2 *q)
{
    return q->refcount_order == 6 ? UINT64_MAX : (1ull << (1u << q->refcount_order)) - 1;
}

static uint64_t rc_get(const uint8_t *blk, uint64_t i, unsigned order)
{
    switch (order) {
    case 0:
    case 1:
    case 2: {
        /* sub-byte entries are packed starting from the least significant bits */
        unsigned bits = 1u << order, per = 8 / bits;
        return (uint64_t)(blk[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
    }
    case 3:
        return blk[i];
    case 4:
        return be16(blk + 2 * i);
    case 5:
        return be32(blk + 4 * i);
    default:
        return be64(blk + 8 * i);
    }
}

/* Set entry i; returns the byte offset and length within the block that changed. */
static void rc_set(uint8_t *blk, uint64_t i, unsigned order, uint64_t v, size_t *at, size_t *len)
{
    switch (order) {
    case 0:
    case 1:
    case 2: {
        unsigned bits = 1u << order, per = 8 / bits, sh = (unsigned)(i % per) * bits;
        uint8_t m = (uint8_t)(((1u << bits) - 1) << sh);
        blk[i / per] = (uint8_t)((blk[i / per] & ~m) | ((v << sh) & m));
        *at = i / per;
        *len = 1;
        return;
    }
    case 3:
        blk[i] = (uint8_t)v;
        *at = i, *len = 1;
        return;
    case 4:
        put16(blk + 2 * i, (uint16_t)v);
        *at = 2 * i, *len = 2;
        return;
    case 5:
        put32(blk + 4 * i, (uint32_t)v);
        *at = 4 * i, *len = 4;
        return;
    default:
        put64(blk + 8 * i, v);
        *at = 8 * i, *len = 8;
        return;
    }
}

static int get_refcount(struct qcow2 *q, uint64_t cluster, uint64_t *rc, struct error *err)
{
    uint64_t b = cluster >> q->rb_bits;
    *rc = 0;
    if (b >= q->reft_entries || !(q->reft[b] & REFT_OFFSET_MASK))
        return 0;
    uint8_t *blk = tcache_get(q, &q->rbc, q->reft[b] & REFT_OFFSET_MASK, "refcount block", err);
    if (!blk)
        return -1;
    *rc = rc_get(blk, cluster & ((1ull << q->rb_bits) - 1), q->refcount_order);
    return 0;
}

static int ensure_refblock(struct qcow2 *q, uint64_t b, struct error *err);

/* Store a refcount; the refcount block must exist (ensure_refblock). */
static int put_refcount(struct qcow2 *q, uint64_t cluster, uint64_t v, struct error *err)
{
    uint64_t b = cluster >> q->rb_bits;
    uint64_t boff = q->reft[b] & REFT_OFFSET_MASK;
    uint8_t *blk = tcache_get(q, &q->rbc, boff, "refcount block", err);
    if (!blk)
        return -1;
    size_t at, len;
    rc_set(blk, cluster & ((1ull << q->rb_bits) - 1), q->refcount_order, v, &at, &len);
    tcache_mark_dirty(&q->rbc, boff);
    return 0;
}

static int grow_reftable(struct qcow2 *q, uint64_t min_entries, struct error *err);

/* Make sure refcount block b exists. A new block goes at the end of the file; when that cluster
 * falls in block b itself, the block counts itself. */
static int ensure_refblock(struct qcow2 *q, uint64_t b, struct error *err)
{
    if (b >= q->reft_entries && grow_reftable(q, b + 1, err) < 0)
        return -1;
    if (q->reft[b] & REFT_OFFSET_MASK)
        return 0;
    for (;;) {
        uint64_t e = q->free_cluster, eb = e >> q->rb_bits;
        if (eb != b && (eb >= q->reft_entries || !(q->reft[eb] & REFT_OFFSET_MASK))) {
            if (ensure_refblock(q, eb, err) < 0)
                return -1;
            continue; /* the end of the file may have moved */
        }
        uint64_t off = e << q->cluster_bits;
        uint8_t *blk = calloc(1, q->cluster_size);
        if (!blk)
            return error_setf(err, "%s: out of memory", q->name);
        size_t at, len;
        if (eb == b)
            rc_set(blk, e & ((1ull << q->rb_bits) - 1), q->refcount_order, 1, &at, &len);
        int r = qwrite(q, blk, q->cluster_size, off, err);
        free(blk);
        if (r < 0)
            return -1;
        q->free_cluster = e + 1;
        if (eb != b && put_refcount(q, e, 1, err) < 0)
            return -1;
        /* the block must be on disk before the table points at it */
        if (meta_sync(q, err) < 0)
            return -1;
        uint8_t ent[8];
        put64(ent, off);
        if (qwrite(q, ent, 8, q->reft_offset + 8 * b, err) < 0)
            return -1;
        q->reft[b] = off;
        return 0;
    }
}

/* Move the refcount table to a bigger one at the end of the file. The header switches to it
 * only once it is complete on disk; the old table is freed afterwards. */
static int grow_reftable(struct qcow2 *q, uint64_t min_entries, struct error *err)
{
    uint64_t per = q->cluster_size / 8;
    uint64_t entries = q->reft_entries * 2;
    if (entries < min_entries)
        entries = min_entries;
    /* the new table must also describe the clusters it and its new blocks occupy */
    for (int i = 0; i < 4; i++) {
        uint64_t t = (entries + per - 1) / per;
        uint64_t need = ((q->free_cluster + 2 * t + 4) >> q->rb_bits) + 1;
        if (need > entries)
            entries = need;
    }
    uint64_t clusters = (entries + per - 1) / per;
    entries = clusters * per;
    if (entries * 8 > MAX_REFTABLE_BYTES)
        return error_setf(err, "%s: refcount table would exceed %u bytes", q->name,
                          MAX_REFTABLE_BYTES);
    uint64_t *nt = calloc(entries, 8);
    if (!nt)
        return error_setf(err, "%s: out of memory", q->name);
    memcpy(nt, q->reft, q->reft_entries * 8);
    uint64_t old_off = q->reft_offset, old_clusters = q->reft_clusters, *old = q->reft;
    uint64_t start = q->free_cluster;
    q->free_cluster = start + clusters; /* reserve the table's clusters */
    q->reft = nt;
    q->reft_entries = entries;
    q->reft_offset = start << q->cluster_bits;
    q->reft_clusters = (uint32_t)clusters;
    int r = 0;
    for (uint64_t c = start; c < start + clusters && r == 0; c++)
        r = ensure_refblock(q, c >> q->rb_bits, err);
    for (uint64_t c = start; c < start + clusters && r == 0; c++)
        r = put_refcount(q, c, 1, err);
    uint8_t *buf = NULL;
    if (r == 0 && !(buf = malloc(clusters * q->cluster_size)))
        r = error_setf(err, "%s: out of memory", q->name);
    if (r == 0) {
        for (uint64_t i = 0; i < entries; i++)
            put64(buf + 8 * i, nt[i]);
        r = qwrite(q, buf, clusters * q->cluster_size, q->reft_offset, err);
    }
    free(buf);
    if (r == 0)
        r = meta_sync(q, err);
    if (r == 0) {
        uint8_t h[12];
        put64(h, q->reft_offset);
        put32(h + 8, q->reft_clusters);
        r = qwrite(q, h, 12, 48, err);
    }
    if (r == 0)
        r = meta_sync(q, err);
    if (r < 0) {
        /* the header still names the old table: return to it (new clusters are leaked) */
        q->reft = old;
        q->reft_entries = old_clusters * per;
        q->reft_offset = old_off;
        q->reft_clusters = (uint32_t)old_clusters;
        free(nt);
        return -1;
    }
    free(old);
    for (uint64_t c = 0; c < old_clusters; c++)
        if (put_refcount(q, (old_off >> q->cluster_bits) + c, 0, err) < 0)
            return -1;
    return 0;
}

/* Allocate n contiguous clusters at the end of the file with refcount 1; returns the offset. */
static int64_t alloc_clusters(struct qcow2 *q, uint64_t n, struct error *err)
{
    uint64_t start;
    if (q->free_cluster + n > ((uint64_t)INT64_MAX >> q->cluster_bits) - 64)
        return error_setf(err, "%s: image file too large", q->name);
    for (;;) {
        start = q->free_cluster;
        for (uint64_t b = start >> q->rb_bits; b <= (start + n - 1) >> q->rb_bits; b++)
            if (ensure_refblock(q, b, err) < 0)
                return -1;
        if (q->free_cluster == start)
            break;
    }
    for (uint64_t c = start; c < start + n; c++) {
        uint64_t rc;
        if (get_refcount(q, c, &rc, err) < 0)
            return -1;
        if (rc != 0)
            return mark_corrupt(q, "refcount set for a cluster past the end of the file", err);
        if (put_refcount(q, c, 1, err) < 0)
            return -1;
    }
    q->free_cluster = start + n;
    return (int64_t)(start << q->cluster_bits);
}

/* Add delta to a cluster's refcount. */
static int update_refcount(struct qcow2 *q, uint64_t cluster, int delta, struct error *err)
{
    uint64_t rc;
    if (get_refcount(q, cluster, &rc, err) < 0)
        return -1;
    if ((delta < 0 && rc == 0) || (delta > 0 && rc == rc_max(q)))
        return mark_corrupt(q, "refcount out of range", err);
    if (ensure_refblock(q, cluster >> q->rb_bits, err) < 0)
        return -1;
    return put_refcount(q, cluster, delta < 0 ? rc - 1 : rc + 1, err);
}

/* ---- open ---- */

static void qcow2_free(struct qcow2 *q)
{
    if (!q)
        return;
    if (q->has_backing && q->backing.close)
        q->backing.close(q->backing.opaque);
    if (q->fd >= 0)
        close(q->fd);
    for (uint32_t i = 0; q->snaps && i < q->nb_snapshots; i++) {
        free(q->snaps[i].id);
        free(q->snaps[i].name);
        free(q->snaps[i].extra);
    }
    free(q->snaps);
    free(q->l1);
    free(q->reft);
    free(q->backing_name);
    free(q->backing_fmt);
    free(q->zbuf);
    if (q->zctx)
        ZSTD_freeCCtx(q->zctx);
    if (q->zstrm_init)
        deflateEnd(&q->zstrm);
    tcache_free(&q->l2c);
    tcache_free(&q->rbc);
    free(q->name);
    free(q);
}

/* A table of len bytes at off must be cluster aligned and inside the file. */
static int check_table(struct qcow2 *q, uint64_t off, uint64_t len, const char *what,
                       struct error *err)
{
    if (off & (q->cluster_size - 1))
        return error_setf(err, "%s: %s offset 0x%" PRIx64 " is not cluster aligned", q->name, what,
                          off);
    if (off > q->file_size || len > q->file_size - off)
        return error_setf(err, "%s: %s (0x%" PRIx64 "+0x%" PRIx64 ") is past the end of the file",
                          q->name, what, off, len);
    if (len && off == 0)
        return error_setf(err, "%s: %s overlaps the header", q->name, what);
    return 0;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

static const char *feature_name(const uint8_t *hdr, size_t hlen, uint32_t ext_off, uint32_t ext_len,
                                int type, int bit, char *out, size_t outlen)
{
    snprintf(out, outlen, "bit %d", bit);
    for (uint32_t i = 0; ext_len && i + 48 <= ext_len && ext_off + i + 48 <= hlen; i += 48) {
        const uint8_t *e = hdr + ext_off + i;
        if (e[0] == type && e[1] == bit) {
            snprintf(out, outlen, "bit %d (%.*s)", bit, (int)strnlen((const char *)e + 2, 46),
                     (const char *)e + 2);
            break;
        }
    }
    return out;
}

static int read_snapshots(struct qcow2 *q, struct error *err)
{
    if (!q->nb_snapshots)
        return 0;
    if (q->nb_snapshots > MAX_SNAPSHOTS)
        return error_setf(err, "%s: too many snapshots (%u)", q->name, q->nb_snapshots);
    if (check_table(q, q->snapshots_offset, 40, "snapshot table", err) < 0)
        return -1;
    q->snaps = calloc(q->nb_snapshots, sizeof(*q->snaps));
    if (!q->snaps)
        return error_setf(err, "%s: out of memory", q->name);
    uint64_t off = q->snapshots_offset;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        uint8_t h[40], extra[MAX_SNAP_EXTRA];
        if (off > q->file_size || q->file_size - off < 40)
            return error_setf(err, "%s: snapshot table is past the end of the file", q->name);
        if (qread(q, h, 40, off, "snapshot table", err) < 0)
            return -1;
        struct qcow2_snapshot *s = &q->snaps[i];
        s->l1_offset = be64(h);
        s->l1_size = be32(h + 8);
        uint16_t id_len = be16(h + 12), name_len = be16(h + 14);
        s->date_sec = be32(h + 16);
        s->date_nsec = be32(h + 20);
        s->vm_clock_nsec = be64(h + 24);
        s->vm_state_size = be32(h + 32);
        uint32_t extra_len = be32(h + 36);
        if (extra_len > MAX_SNAP_EXTRA)
            return error_setf(err, "%s: snapshot %u extra data too large", q->name, i);
        uint64_t need = 40ull + extra_len + id_len + name_len;
        if (q->file_size - off < need)
            return error_setf(err, "%s: snapshot table is past the end of the file", q->name);
        if (qread(q, extra, extra_len, off + 40, "snapshot table", err) < 0)
            return -1;
        if (extra_len && !(s->extra = malloc(extra_len)))
            return error_setf(err, "%s: out of memory", q->name);
        if (extra_len)
            memcpy(s->extra, extra, extra_len);
        s->extra_len = extra_len;
        if (extra_len >= 8 && be64(extra))
            s->vm_state_size = be64(extra);
        if (extra_len >= 16)
            s->disk_size = be64(extra + 8);
        s->id = calloc(1, id_len + 1u);
        s->name = calloc(1, name_len + 1u);
        if (!s->id || !s->name)
            return error_setf(err, "%s: out of memory", q->name);
        if (qread(q, s->id, id_len, off + 40 + extra_len, "snapshot table", err) < 0 ||
            qread(q, s->name, name_len, off + 40 + extra_len + id_len, "snapshot table", err) < 0)
            return -1;
        if (s->l1_size > MAX_L1_BYTES / 8)
            return error_setf(err, "%s: snapshot %s L1 table too large", q->name, s->id);
        if (check_table(q, s->l1_offset, (uint64_t)s->l1_size * 8, "snapshot L1 table", err) < 0)
            return -1;
        off += (need + 7) & ~7ull;
    }
    q->snapshots_size = off - q->snapshots_offset;
    return 0;
}

struct raw_backing {
    int fd;
    char *name;
};

static int raw_backing_read(void *opaque, uint64_t off, void *buf, size_t len, struct error *err)
{
    struct raw_backing *rb = opaque;
    if (pread_full(rb->fd, buf, len, off) < 0)
        return error_setf_errno(err, errno, "backing file read");
    return 0;
}

static void raw_backing_close(void *opaque)
{
    struct raw_backing *rb = opaque;
    close(rb->fd);
    free(rb->name);
    free(rb);
}

static int q_backing_read(void *opaque, uint64_t off, void *buf, size_t len, struct error *err)
{
    return qcow2_read(opaque, off, buf, len, err);
}

static void q_backing_close(void *opaque)
{
    qcow2_free(opaque);
}

struct qcow2_backing qcow2_as_backing(struct qcow2 *q)
{
    return (struct qcow2_backing){q_backing_read, q_backing_close, q, q->size};
}

static struct qcow2 *open_chain(int fd, const char *name, const struct qcow2_open_opts *opts,
                                struct backing_id *chain, int depth, struct error *err);

/* The backing name as a path: relative names are relative to the image's directory. */
static void backing_path(const struct qcow2 *q, char *path, size_t size)
{
    const char *slash = strrchr(q->name, '/');
    if (q->backing_name[0] == '/' || !slash)
        snprintf(path, size, "%s", q->backing_name);
    else
        snprintf(path, size, "%.*s/%s", (int)(slash - q->name), q->name, q->backing_name);
}

static int open_backing(struct qcow2 *q, const struct qcow2_open_opts *opts,
                        struct backing_id *chain, int depth, struct error *err)
{
    char path[PATH_MAX];
    backing_path(q, path, sizeof(path));
    if (depth + 1 >= MAX_BACKING_DEPTH)
        return error_setf(err, "%s: backing chain deeper than %d", q->name, MAX_BACKING_DEPTH);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_setf_errno(err, errno, "%s: could not open backing file %s", q->name, path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return error_setf_errno(err, errno, "%s: backing file %s", q->name, path);
    }
    for (int i = 0; i <= depth; i++)
        if (chain[i].dev == st.st_dev && chain[i].ino == st.st_ino) {
            close(fd);
            return error_setf(err, "%s: backing file loop: %s is already in the chain", q->name,
                              path);
        }
    uint8_t magic[4] = {0};
    pread_full(fd, magic, 4, 0);
    bool is_qcow2 = be32(magic) == QCOW_MAGIC;
    if (q->backing_fmt) {
        if (!strcmp(q->backing_fmt, "qcow2"))
            is_qcow2 = true;
        else if (!strcmp(q->backing_fmt, "raw"))
            is_qcow2 = false;
        else {
            close(fd);
            return error_setf(err, "%s: backing format '%s' is not supported", q->name,
                              q->backing_fmt);
        }
    }
    if (is_qcow2) {
        chain[depth + 1] = (struct backing_id){st.st_dev, st.st_ino};
        struct qcow2_open_opts bo = {.l2_cache_size = opts->l2_cache_size};
        struct qcow2 *b = open_chain(fd, path, &bo, chain, depth + 1, err);
        close(fd);
        if (!b) {
            error_prefix(err, "%s: backing file: ", q->name);
            return -1;
        }
        q->backing = qcow2_as_backing(b);
    } else {
        struct raw_backing *rb = malloc(sizeof(*rb));
        if (!rb) {
            close(fd);
            return error_setf(err, "%s: out of memory", q->name);
        }
        rb->fd = fd;
        if (!(rb->name = strdup(path))) {
            close(fd);
            free(rb);
            return error_setf(err, "%s: out of memory", q->name);
        }
        q->backing =
            (struct qcow2_backing){raw_backing_read, raw_backing_close, rb, (uint64_t)st.st_size};
    }
    q->has_backing = true;
    return 0;
}

static struct qcow2 *open_chain(int fd, const char *name, const struct qcow2_open_opts *opts,
                                struct backing_id *chain, int depth, struct error *err)
{
    struct qcow2 *q = calloc(1, sizeof(*q));
    uint8_t *hdr = NULL;
    if (!q || !(q->name = strdup(name))) {
        free(q);
        error_setf(err, "%s: out of memory", name);
        return NULL;
    }
    q->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (q->fd < 0) {
        error_setf_errno(err, errno, "%s", name);
        goto fail;
    }
    q->rw = opts->read_write;
    q->no_sync = opts->no_sync;
    q->write_through = (fcntl(q->fd, F_GETFL) & O_DSYNC) == O_DSYNC;
    if (q->rw && (fcntl(q->fd, F_GETFL) & O_ACCMODE) == O_RDONLY) {
        error_setf(err, "%s: read-write open of a read-only file descriptor", name);
        goto fail;
    }
    struct stat st;
    if (fstat(q->fd, &st) < 0) {
        error_setf_errno(err, errno, "%s", name);
        goto fail;
    }
    q->file_size = (uint64_t)st.st_size;

    uint8_t h[112] = {0};
    int64_t got = pread_full(q->fd, h, sizeof(h), 0);
    if (got < 0) {
        error_setf_errno(err, errno, "%s: reading the header", name);
        goto fail;
    }
    if (got < 72 || be32(h) != QCOW_MAGIC) {
        error_setf(err, "%s: not a qcow2 image", name);
        goto fail;
    }
    q->version = be32(h + 4);
    if (q->version != 2 && q->version != 3) {
        error_setf(err, "%s: unsupported qcow2 version %u", name, q->version);
        goto fail;
    }
    uint64_t backing_off = be64(h + 8);
    uint32_t backing_len = be32(h + 16);
    q->cluster_bits = be32(h + 20);
    q->size = be64(h + 24);
    uint32_t crypt = be32(h + 32);
    q->l1_size = be32(h + 36);
    q->l1_offset = be64(h + 40);
    q->reft_offset = be64(h + 48);
    q->reft_clusters = be32(h + 56);
    q->nb_snapshots = be32(h + 60);
    q->snapshots_offset = be64(h + 64);
    q->refcount_order = 4;
    q->header_length = 72;
    if (q->version == 3) {
        if (got < 104) {
            error_setf(err, "%s: truncated header", name);
            goto fail;
        }
        q->incompat = be64(h + 72);
        q->compat = be64(h + 80);
        q->autoclear = be64(h + 88);
        q->refcount_order = be32(h + 96);
        q->header_length = be32(h + 100);
        if (q->header_length < 104 || q->header_length % 8 != 0) {
            error_setf(err, "%s: invalid header length %u", name, q->header_length);
            goto fail;
        }
        if (q->header_length > 104)
            q->compression = h[104];
    }
    if (q->cluster_bits < 9 || q->cluster_bits > 21) {
        error_setf(err, "%s: cluster_bits %u out of range 9..21", name, q->cluster_bits);
        goto fail;
    }
    q->cluster_size = 1ull << q->cluster_bits;
    q->l2_bits = q->cluster_bits - 3;
    if (q->header_length > q->cluster_size) {
        error_setf(err, "%s: header length %u larger than a cluster", name, q->header_length);
        goto fail;
    }
    if (q->refcount_order > 6) {
        error_setf(err, "%s: refcount_order %u out of range 0..6", name, q->refcount_order);
        goto fail;
    }
    q->rb_bits = q->cluster_bits + 3 - q->refcount_order;
    if (crypt) {
        error_setf(err, "%s: encrypted images are not supported", name);
        goto fail;
    }

    /* The whole header cluster (extensions and the backing name live there). */
    uint64_t hlen = q->cluster_size < q->file_size ? q->cluster_size : q->file_size;
    hdr = calloc(1, q->cluster_size);
    if (!hdr) {
        error_setf(err, "%s: out of memory", name);
        goto fail;
    }
    if (qread(q, hdr, hlen, 0, "header", err) < 0)
        goto fail;
    uint32_t fn_off = 0, fn_len = 0;
    uint64_t ext_end = backing_off && backing_off < hlen ? backing_off : hlen;
    for (uint64_t p = q->header_length; p + 8 <= ext_end;) {
        uint32_t type = be32(hdr + p), len = be32(hdr + p + 4);
        if (type == EXT_END)
            break;
        if (len > ext_end - p - 8) {
            error_setf(err, "%s: header extension 0x%08x overruns the header cluster", name, type);
            goto fail;
        }
        if (type == EXT_BACKING_FMT) {
            free(q->backing_fmt); /* a second one wins, as in QEMU */
            if (!(q->backing_fmt = strndup((const char *)hdr + p + 8, len))) {
                error_setf(err, "%s: out of memory", name);
                goto fail;
            }
        } else if (type == EXT_FEATURE_NAME) {
            fn_off = (uint32_t)p + 8;
            fn_len = len;
        }
        /* Other extensions (bitmaps, unknown) stay in place: the header is never rewritten
         * wholesale, only single fields, so they are preserved. */
        p += 8 + (((uint64_t)len + 7) & ~7ull);
    }

    uint64_t unknown = q->incompat & ~INCOMPAT_KNOWN;
    if (unknown) {
        int bit = __builtin_ctzll(unknown);
        char fname[80];
        feature_name(hdr, hlen, fn_off, fn_len, 0, bit, fname, sizeof(fname));
        if (bit == 2)
            error_setf(err, "%s: external data files (incompatible feature %s) are not supported",
                       name, fname);
        else if (bit == 4)
            error_setf(err, "%s: extended L2 entries (incompatible feature %s) are not supported",
                       name, fname);
        else
            error_setf(err, "%s: unsupported incompatible feature %s", name, fname);
        goto fail;
    }
    if (q->compression > 1) {
        error_setf(err, "%s: unknown compression type %u", name, q->compression);
        goto fail;
    }
    if (q->compression && !(q->incompat & INCOMPAT_COMPRESSION)) {
        error_setf(err, "%s: compression type set without the compression incompatible bit", name);
        goto fail;
    }
    if (opts->lazy_refcounts == QCOW2_LAZY_ON && q->version < 3) {
        error_setf(err,
                   "%s: lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility "
                   "level",
                   name);
        goto fail;
    }
    if (q->incompat & INCOMPAT_CORRUPT && q->rw && !opts->check) {
        snprintf(q->warning, sizeof(q->warning),
                 "%s: image is marked corrupt; opened read-only (run check -r)", name);
        q->rw = false;
    }

    if (backing_off) {
        if (backing_len > MAX_BACKING_NAME || backing_len == 0 || backing_off >= hlen ||
            backing_len > hlen - backing_off) {
            error_setf(err, "%s: invalid backing file name (offset 0x%" PRIx64 ", length %u)", name,
                       backing_off, backing_len);
            goto fail;
        }
        if (!(q->backing_name = strndup((const char *)hdr + backing_off, backing_len))) {
            error_setf(err, "%s: out of memory", name);
            goto fail;
        }
    }

    /* virtual size and L1 */
    uint64_t l2_cover = 1ull << (q->cluster_bits + q->l2_bits);
    if (q->size > INT64_MAX - l2_cover) {
        error_setf(err, "%s: virtual size too large", name);
        goto fail;
    }
    uint64_t l1_need = (q->size + l2_cover - 1) / l2_cover;
    if (q->l1_size > MAX_L1_BYTES / 8 || l1_need > MAX_L1_BYTES / 8) {
        error_setf(err, "%s: L1 table too large (%u entries)", name, q->l1_size);
        goto fail;
    }
    if (q->l1_size < l1_need) {
        error_setf(err, "%s: L1 table too small (%u entries for %" PRIu64 " needed)", name,
                   q->l1_size, l1_need);
        goto fail;
    }
    if (check_table(q, q->l1_offset, (uint64_t)q->l1_size * 8, "L1 table", err) < 0)
        goto fail;
    if (!q->reft_clusters || q->reft_clusters > MAX_REFTABLE_BYTES >> q->cluster_bits) {
        error_setf(err, "%s: invalid refcount table size (%u clusters)", name, q->reft_clusters);
        goto fail;
    }
    uint64_t reft_bytes = (uint64_t)q->reft_clusters << q->cluster_bits;
    if (check_table(q, q->reft_offset, reft_bytes, "refcount table", err) < 0)
        goto fail;
    if (overlaps(q->l1_offset, (uint64_t)q->l1_size * 8, q->reft_offset, reft_bytes)) {
        error_setf(err, "%s: L1 table overlaps the refcount table", name);
        goto fail;
    }
    if (read_snapshots(q, err) < 0)
        goto fail;
    if (overlaps(q->snapshots_offset, q->snapshots_size, q->reft_offset, reft_bytes) ||
        overlaps(q->snapshots_offset, q->snapshots_size, q->l1_offset, (uint64_t)q->l1_size * 8)) {
        error_setf(err, "%s: snapshot table overlaps the L1 or refcount table", name);
        goto fail;
    }

    q->l1 = calloc(q->l1_size ? q->l1_size : 1, 8);
    q->reft_entries = reft_bytes / 8;
    q->reft = calloc(q->reft_entries, 8);
    if (!q->l1 || !q->reft) {
        error_setf(err, "%s: out of memory", name);
        goto fail;
    }
    if (qread(q, q->l1, (size_t)q->l1_size * 8, q->l1_offset, "L1 table", err) < 0 ||
        qread(q, q->reft, reft_bytes, q->reft_offset, "refcount table", err) < 0)
        goto fail;
    for (uint32_t i = 0; i < q->l1_size; i++)
        q->l1[i] = be64((uint8_t *)&q->l1[i]);
    for (uint64_t i = 0; i < q->reft_entries; i++) {
        q->reft[i] = be64((uint8_t *)&q->reft[i]);
        uint64_t o = q->reft[i] & REFT_OFFSET_MASK;
        if (o && (o & (q->cluster_size - 1))) {
            error_setf(err, "%s: refcount block %" PRIu64 " offset 0x%" PRIx64 " unaligned", name,
                       i, o);
            goto fail;
        }
    }
    q->free_cluster = cluster_align(q, q->file_size) >> q->cluster_bits;

    uint64_t cache = opts->l2_cache_size ? opts->l2_cache_size : 1u << 20;
    uint64_t ntab = cache >> q->cluster_bits;
    ntab = ntab < 2 ? 2 : ntab > 65536 ? 65536 : ntab;
    if (tcache_init(&q->l2c, (unsigned)ntab) < 0 || tcache_init(&q->rbc, RC_CACHE_TABLES) < 0) {
        error_setf(err, "%s: out of memory", name);
        goto fail;
    }
    free(hdr);
    hdr = NULL;

    if (q->backing_name && !opts->no_backing && open_backing(q, opts, chain, depth, err) < 0)
        goto fail;

    if (q->rw) {
        /* autoclear bits we do not maintain (bitmaps) must be cleared by a writer */
        if (q->version == 3 && q->autoclear) {
            q->autoclear = 0;
            if (write_header_u64(q, 88, 0, err) < 0)
                goto fail;
        }
        if ((q->incompat & INCOMPAT_DIRTY) && !opts->check) {
            /* lazy refcounts left unflushed: rebuild them before writing (an open for check
             * -r leaves that to the check, which reports what it repairs) */
            struct qcow2_check_result res;
            int r = qcow2_check(q, QCOW2_FIX_LEAKS | QCOW2_FIX_ERRORS, &res, NULL, err);
            if (r < 0 || r == 2) {
                error_setf(err, "%s: dirty image could not be repaired", name);
                goto fail;
            }
            q->incompat &= ~INCOMPAT_DIRTY;
            if (meta_sync(q, err) < 0 || write_header_u64(q, 72, q->incompat, err) < 0)
                goto fail;
        }
        /* set after the repair above, which keeps the strict order */
        q->lazy = opts->lazy_refcounts == QCOW2_LAZY_ON ||
                  (opts->lazy_refcounts == QCOW2_LAZY_IMAGE && (q->compat & COMPAT_LAZY_REFCOUNTS));
    }
    return q;
fail:
    free(hdr);
    qcow2_free(q);
    return NULL;
}

static const struct qcow2_open_opts default_opts;

struct qcow2 *qcow2_open_fd(int fd, const char *name, const struct qcow2_open_opts *opts,
                            struct error *err)
{
    struct backing_id chain[MAX_BACKING_DEPTH + 1];
    struct stat st;
    if (fstat(fd, &st) < 0) {
        error_setf_errno(err, errno, "%s", name);
        return NULL;
    }
    chain[0] = (struct backing_id){st.st_dev, st.st_ino};
    return open_chain(fd, name, opts ? opts : &default_opts, chain, 0, err);
}

struct qcow2 *qcow2_open(const char *path, const struct qcow2_open_opts *opts, struct error *err)
{
    opts = opts ? opts : &default_opts;
    int fd = open(path, (opts->read_write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        error_setf_errno(err, errno, "%s", path);
        return NULL;
    }
    struct qcow2 *q = qcow2_open_fd(fd, path, opts, err);
    close(fd);
    return q;
}

/* ---- cluster lookup ---- */

struct loc {
    uint64_t l1i, l2i, l2_off, entry;
    enum ctype type;
    uint64_t host;
};

/* Does [off, off+len) hit the header, L1, refcount or snapshot table? Writes there would
 * destroy metadata, so they mean the image is corrupt. */
static bool meta_overlap(const struct qcow2 *q, uint64_t off, uint64_t len)
{
    return off < q->cluster_size || overlaps(off, len, q->l1_offset, (uint64_t)q->l1_size * 8) ||
           overlaps(off, len, q->reft_offset, (uint64_t)q->reft_clusters << q->cluster_bits) ||
           overlaps(off, len, q->snapshots_offset, q->snapshots_size);
}

static int lookup(struct qcow2 *q, uint64_t off, struct loc *l, struct error *err)
{
    l->l1i = off >> (q->cluster_bits + q->l2_bits);
    l->l2i = (off >> q->cluster_bits) & ((1ull << q->l2_bits) - 1);
    l->entry = 0;
    l->l2_off = q->l1[l->l1i] & L1E_OFFSET_MASK;
    if (l->l2_off) {
        if (l->l2_off & (q->cluster_size - 1))
            return mark_corrupt(q, "L2 table offset not cluster aligned", err);
        uint8_t *t = tcache_get(q, &q->l2c, l->l2_off, "L2 table", err);
        if (!t)
            return -1;
        l->entry = be64(t + 8 * l->l2i);
    }
    l->host = l->entry & L2E_OFFSET_MASK;
    if (l->entry & OFLAG_COMPRESSED)
        l->type = C_COMPRESSED;
    else if (q->version >= 3 && (l->entry & OFLAG_ZERO))
        l->type = l->host ? C_ZERO_ALLOC : C_ZERO_PLAIN;
    else if (!l->host)
        l->type = C_UNALLOC;
    else
        l->type = C_NORMAL;
    if ((l->type == C_NORMAL || l->type == C_ZERO_ALLOC) && (l->host & (q->cluster_size - 1)))
        return mark_corrupt(q, "data cluster offset not cluster aligned", err);
    return 0;
}

/* The bytes from off to the end of its cluster, at most len: one step of a walk over clusters. */
static uint64_t to_cluster_end(const struct qcow2 *q, uint64_t off, uint64_t len)
{
    uint64_t left = q->cluster_size - (off & (q->cluster_size - 1));
    return left < len ? left : len;
}

static void compressed_range(const struct qcow2 *q, uint64_t entry, uint64_t *off, uint64_t *len)
{
    unsigned x = 70 - q->cluster_bits; /* 62 - (cluster_bits - 8) */
    uint64_t sectors = ((entry >> x) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;
    *off = entry & ((1ull << x) - 1);
    *len = sectors * 512 - (*off & 511);
}

/* zlib or libzstd, whichever the image's compression type takes, opened at its first use. */
static int open_compression(struct qcow2 *q, struct error *err)
{
    if ((q->compression == QCOW2_COMPRESS_ZSTD ? zstd_dl_open(err) : zlib_dl_open(err)) < 0) {
        error_prefix(err, "%s: ", q->name);
        return -1;
    }
    return 0;
}

static int decompress(struct qcow2 *q, uint64_t entry, struct error *err)
{
    if (q->zbuf_off == entry)
        return 0;
    if (open_compression(q, err) < 0)
        return -1;
    uint64_t coff, clen;
    compressed_range(q, entry, &coff, &clen);
    if (coff >= q->file_size)
        return error_setf(err, "%s: compressed cluster at 0x%" PRIx64 " past the end of the file",
                          q->name, coff);
    if (clen > q->file_size - coff)
        clen = q->file_size - coff; /* the last sector may be short */
    if (!q->zbuf && !(q->zbuf = malloc(q->cluster_size)))
        return error_setf(err, "%s: out of memory", q->name);
    uint8_t *in = malloc(clen);
    if (!in)
        return error_setf(err, "%s: out of memory", q->name);
    q->zbuf_off = 0;
    int ok = 0;
    if (qread(q, in, clen, coff, "compressed cluster", err) < 0) {
        free(in);
        return -1;
    }
    if (q->compression == QCOW2_COMPRESS_ZLIB) {
        /* raw deflate, 4 KiB window, as QEMU writes it */
        z_stream z = {0};
        if (inflateInit2(&z, -12) == Z_OK) {
            z.next_in = in;
            z.avail_in = (uInt)clen;
            z.next_out = q->zbuf;
            z.avail_out = (uInt)q->cluster_size;
            int r = inflate(&z, Z_FINISH);
            ok = (r == Z_STREAM_END || r == Z_BUF_ERROR) && z.avail_out == 0;
            inflateEnd(&z);
        }
    } else {
        ZSTD_DCtx *dc = ZSTD_createDCtx();
        ZSTD_inBuffer ib = {in, clen, 0};
        ZSTD_outBuffer ob = {q->zbuf, q->cluster_size, 0};
        ok = dc != NULL;
        while (ok && ob.pos < ob.size) {
            size_t ip = ib.pos, op = ob.pos;
            size_t r = ZSTD_decompressStream(dc, &ob, &ib);
            if (ZSTD_isError(r) || (ib.pos <= ip && ob.pos <= op))
                ok = 0;
        }
        ZSTD_freeDCtx(dc);
    }
    free(in);
    if (!ok)
        return error_setf(err, "%s: corrupt compressed cluster at 0x%" PRIx64, q->name, coff);
    q->zbuf_off = entry;
    return 0;
}

static int read_backing(struct qcow2 *q, uint64_t off, uint8_t *buf, size_t n, struct error *err)
{
    size_t got = 0;
    if (q->has_backing && off < q->backing.size) {
        got = q->backing.size - off < n ? (size_t)(q->backing.size - off) : n;
        if (q->backing.read(q->backing.opaque, off, buf, got, err) < 0) {
            error_prefix(err, "%s: ", q->name);
            return -1;
        }
    }
    memset(buf + got, 0, n - got);
    return 0;
}

static int check_range(struct qcow2 *q, uint64_t off, uint64_t len, struct error *err)
{
    if (off > q->size || len > q->size - off)
        return error_setf(err, "%s: access 0x%" PRIx64 "+0x%" PRIx64 " beyond the virtual size",
                          q->name, off, len);
    return 0;
}

int qcow2_read(struct qcow2 *q, uint64_t offset, void *buf, size_t len, struct error *err)
{
    uint8_t *p = buf;
    if (check_range(q, offset, len, err) < 0)
        return -1;
    while (len) {
        uint64_t in = offset & (q->cluster_size - 1);
        size_t n = (size_t)to_cluster_end(q, offset, len);
        struct loc l;
        if (lookup(q, offset, &l, err) < 0)
            return -1;
        switch (l.type) {
        case C_UNALLOC:
            if (read_backing(q, offset, p, n, err) < 0)
                return -1;
            break;
        case C_ZERO_PLAIN:
        case C_ZERO_ALLOC:
            memset(p, 0, n);
            break;
        case C_NORMAL:
            /* clusters that follow each other in the file too are read in one go */
            while (n < len && (l.host & ~(q->cluster_size - 1)) + in + n < q->file_size) {
                struct loc nx;
                if (lookup(q, offset + n, &nx, err) < 0)
                    return -1;
                if (nx.type != C_NORMAL || nx.host != l.host + in + n)
                    break;
                n += len - n < q->cluster_size ? len - n : (size_t)q->cluster_size;
            }
            if (pread_full(q->fd, p, n, l.host + in) < 0)
                return error_setf_errno(err, errno, "%s: read at 0x%" PRIx64, q->name, l.host);
            break;
        case C_COMPRESSED:
            if (decompress(q, l.entry, err) < 0)
                return -1;
            memcpy(p, q->zbuf + in, n);
            break;
        }
        p += n;
        offset += n;
        len -= n;
    }
    return 0;
}

/* ---- writes ---- */

#define MAX_PENDING 64

struct pending {
    uint64_t l2_off, l2i, entry, old;
    bool free_old;
};

struct batch {
    struct pending p[MAX_PENDING];
    unsigned n;
};

static int free_entry(struct qcow2 *q, uint64_t entry, struct error *err)
{
    uint64_t first, last;
    if (entry & OFLAG_COMPRESSED) {
        uint64_t off, len;
        compressed_range(q, entry, &off, &len);
        first = off >> q->cluster_bits;
        last = (off + len - 1) >> q->cluster_bits;
        q->zbuf_off = 0;
    } else {
        first = last = (entry & L2E_OFFSET_MASK) >> q->cluster_bits;
        if (!first)
            return 0;
    }
    for (uint64_t c = first; c <= last; c++) {
        if (update_refcount(q, c, -1, err) < 0)
            return -1;
        uint64_t rc;
        if (!(entry & OFLAG_COMPRESSED) && get_refcount(q, c, &rc, err) == 0 && rc == 0)
            fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)(c << q->cluster_bits), (off_t)q->cluster_size);
    }
    return 0;
}

/* Make the batch's entries live in the cached L2 tables (written back later, after the
 * refcounts: see meta_sync). Replaced clusters are freed only once the new entries are on disk. */
static int commit(struct qcow2 *q, struct batch *b, struct error *err)
{
    if (!b->n)
        return 0;
    unsigned n = b->n;
    b->n = 0;
    /* where QEMU marks a lazy image dirty: before the first L2 update */
    if (q->lazy && mark_dirty(q, err) < 0)
        return -1;
    bool frees = false;
    for (unsigned i = 0; i < n; i++) {
        struct pending *p = &b->p[i];
        uint8_t *t = tcache_get(q, &q->l2c, p->l2_off, "L2 table", err);
        if (!t)
            return -1;
        put64(t + 8 * p->l2i, p->entry);
        tcache_mark_dirty(&q->l2c, p->l2_off);
        frees |= p->free_old;
    }
    if (!frees)
        return 0;
    if (meta_flush(q, err) < 0)
        return -1;
    for (unsigned i = 0; i < n; i++)
        if (b->p[i].free_old && free_entry(q, b->p[i].old, err) < 0)
            return -1;
    return 0;
}

static int add_pending(struct qcow2 *q, struct batch *b, const struct loc *l, uint64_t entry,
                       bool free_old, struct error *err)
{
    if (b->n == MAX_PENDING && commit(q, b, err) < 0)
        return -1;
    b->p[b->n++] = (struct pending){l->l2_off, l->l2i, entry, l->entry, free_old};
    return 0;
}

/* Make the L2 table for l->l1i private to the active L1 (allocating or copying it) and point
 * l->l2_off at it. */
static int ensure_l2(struct qcow2 *q, struct loc *l, struct error *err)
{
    uint64_t l1e = q->l1[l->l1i], old = l1e & L1E_OFFSET_MASK;
    if (old && meta_overlap(q, old, q->cluster_size))
        return mark_corrupt(q, "L2 table overlaps other metadata", err);
    if (old && (l1e & OFLAG_COPIED)) {
        l->l2_off = old;
        return 0;
    }
    uint64_t rc = 0;
    if (old && get_refcount(q, old >> q->cluster_bits, &rc, err) < 0)
        return -1;
    uint8_t e[8];
    if (old && rc == 1) {
        /* sole owner after all: just record it */
        put64(e, old | OFLAG_COPIED);
        if (qwrite(q, e, 8, q->l1_offset + 8 * l->l1i, err) < 0)
            return -1;
        q->l1[l->l1i] = old | OFLAG_COPIED;
        l->l2_off = old;
        return 0;
    }
    if (old && rc == 0)
        return mark_corrupt(q, "L2 table with refcount 0", err);
    uint8_t *buf = calloc(1, q->cluster_size);
    if (!buf)
        return error_setf(err, "%s: out of memory", q->name);
    int64_t nw = -1;
    const uint8_t *src = old ? tcache_get(q, &q->l2c, old, "L2 table", err) : NULL;
    if (src) /* the cached copy: it may hold changes not yet written */
        memcpy(buf, src, q->cluster_size);
    if ((!old || src) && (nw = alloc_clusters(q, 1, err)) >= 0 &&
        qwrite(q, buf, q->cluster_size, (uint64_t)nw, err) == 0 && rc_barrier(q, err) == 0) {
        put64(e, (uint64_t)nw | OFLAG_COPIED);
        if (qwrite(q, e, 8, q->l1_offset + 8 * l->l1i, err) < 0)
            nw = -1;
    } else {
        nw = -1;
    }
    free(buf);
    if (nw < 0)
        return -1;
    q->l1[l->l1i] = (uint64_t)nw | OFLAG_COPIED;
    l->l2_off = (uint64_t)nw;
    /* a shared table loses one user; its data clusters keep their counts (still reachable
     * through the other L1 tables and through the copy). Lazy: the dirty bit covers a lowered
     * count that reaches the disk before the new L1 entry (the old table is not freed). */
    if (old && ((!q->lazy && meta_sync(q, err) < 0) ||
                update_refcount(q, old >> q->cluster_bits, -1, err) < 0))
        return -1;
    return 0;
}

static int write_chunk(struct qcow2 *q, uint64_t off, const uint8_t *src, size_t n, struct batch *b,
                       struct error *err)
{
    uint64_t in = off & (q->cluster_size - 1), cstart = off - in;
    struct loc l;
    if (lookup(q, off, &l, err) < 0)
        return -1;
    bool owned = l.entry & OFLAG_COPIED;
    if (!owned && (l.type == C_NORMAL || l.type == C_ZERO_ALLOC)) {
        uint64_t rc;
        if (get_refcount(q, l.host >> q->cluster_bits, &rc, err) < 0)
            return -1;
        if (rc == 0)
            return mark_corrupt(q, "data cluster with refcount 0", err);
        owned = rc == 1;
    }
    if ((l.type == C_NORMAL || l.type == C_ZERO_ALLOC) && owned &&
        meta_overlap(q, l.host, q->cluster_size))
        return mark_corrupt(q, "data cluster overlaps metadata", err);
    if (l.type == C_NORMAL && owned) {
        if (qwrite(q, src, n, l.host + in, err) < 0)
            return -1;
        if (l.entry & OFLAG_COPIED)
            return 0;
        if (ensure_l2(q, &l, err) < 0)
            return -1;
        return add_pending(q, b, &l, l.entry | OFLAG_COPIED, false, err);
    }
    uint8_t *buf = malloc(q->cluster_size);
    if (!buf)
        return error_setf(err, "%s: out of memory", q->name);
    int r = 0;
    if (n == q->cluster_size)
        ; /* fully overwritten: nothing to copy */
    else if (l.type == C_UNALLOC) {
        uint64_t avail = q->size - cstart < q->cluster_size ? q->size - cstart : q->cluster_size;
        r = read_backing(q, cstart, buf, (size_t)avail, err);
        memset(buf + avail, 0, q->cluster_size - avail);
    } else if (l.type == C_ZERO_PLAIN || l.type == C_ZERO_ALLOC) {
        memset(buf, 0, q->cluster_size);
    } else if (l.type == C_COMPRESSED) {
        r = decompress(q, l.entry, err);
        if (r == 0)
            memcpy(buf, q->zbuf, q->cluster_size);
    } else if (pread_full(q->fd, buf, q->cluster_size, l.host) < 0) {
        r = error_setf_errno(err, errno, "%s: read at 0x%" PRIx64, q->name, l.host);
    }
    memcpy(buf + in, src, n);
    int64_t host = -1;
    if (r == 0 && l.type == C_ZERO_ALLOC && owned)
        host = (int64_t)l.host; /* preallocated zero cluster: fill it in place */
    else if (r == 0)
        host = alloc_clusters(q, 1, err);
    if (host >= 0)
        r = qwrite(q, buf, q->cluster_size, (uint64_t)host, err);
    free(buf);
    if (host < 0 || r < 0 || ensure_l2(q, &l, err) < 0)
        return -1;
    bool free_old = (uint64_t)host != l.host &&
                    (l.type == C_NORMAL || l.type == C_ZERO_ALLOC || l.type == C_COMPRESSED);
    return add_pending(q, b, &l, (uint64_t)host | OFLAG_COPIED, free_old, err);
}

/* Whole clusters from off that have no cluster of their own yet (unallocated or plain zero, in
 * one L2 table) get contiguous new clusters and one write straight from the caller's buffer.
 * Returns the bytes written, 0 if the first cluster does not qualify. */
static int64_t write_fresh_run(struct qcow2 *q, uint64_t off, const uint8_t *src, size_t len,
                               struct batch *b, struct error *err)
{
    struct loc l0, l;
    if (lookup(q, off, &l0, err) < 0)
        return -1;
    if (l0.type != C_UNALLOC && l0.type != C_ZERO_PLAIN)
        return 0;
    uint64_t per_l2 = 1ull << q->l2_bits, k = 1;
    uint64_t max = len >> q->cluster_bits;
    if (max > per_l2 - l0.l2i)
        max = per_l2 - l0.l2i;
    if (max > MAX_PENDING)
        max = MAX_PENDING;
    for (; k < max; k++) {
        if (lookup(q, off + (k << q->cluster_bits), &l, err) < 0)
            return -1;
        if (l.type != C_UNALLOC && l.type != C_ZERO_PLAIN)
            break;
    }
    if (ensure_l2(q, &l0, err) < 0)
        return -1;
    int64_t host = alloc_clusters(q, k, err);
    if (host < 0 || qwrite(q, src, k << q->cluster_bits, (uint64_t)host, err) < 0)
        return -1;
    for (uint64_t i = 0; i < k; i++) {
        l = l0;
        l.l2i = l0.l2i + i;
        l.entry = 0; /* nothing to free: the old entry had no cluster */
        if (add_pending(q, b, &l, ((uint64_t)host + (i << q->cluster_bits)) | OFLAG_COPIED, false,
                        err) < 0)
            return -1;
    }
    return (int64_t)(k << q->cluster_bits);
}

/* The end of a guest write: with a write-through descriptor the metadata goes out too. */
static int done_write(struct qcow2 *q, int r, struct error *err)
{
    if (r == 0 && q->write_through)
        r = meta_flush(q, err);
    return r;
}

static int check_writable(struct qcow2 *q, struct error *err)
{
    if (!q->rw)
        return error_setf(err, "%s: image is read-only", q->name);
    return 0;
}

int qcow2_write(struct qcow2 *q, uint64_t offset, const void *buf, size_t len, struct error *err)
{
    const uint8_t *p = buf;
    if (check_writable(q, err) < 0 || check_range(q, offset, len, err) < 0)
        return -1;
    struct batch b = {.n = 0};
    int r = 0;
    while (len && r == 0) {
        uint64_t in = offset & (q->cluster_size - 1);
        size_t n = (size_t)to_cluster_end(q, offset, len);
        if (!in && len >= q->cluster_size) {
            int64_t done = write_fresh_run(q, offset, p, len, &b, err);
            if (done < 0) {
                r = -1;
                break;
            }
            if (done) {
                p += done;
                offset += (uint64_t)done;
                len -= (size_t)done;
                continue;
            }
        }
        r = write_chunk(q, offset, p, n, &b, err);
        p += n;
        offset += n;
        len -= n;
    }
    /* what was written before an error still gets its L2 entries */
    struct error e2 = {0};
    if (commit(q, &b, r < 0 ? &e2 : err) < 0)
        r = -1;
    return done_write(q, r, err);
}

/* ---- split guest I/O: mapping under the caller's lock, transfers outside it ---- */

int qcow2_fd(const struct qcow2 *q)
{
    return q->fd;
}

int qcow2_read_backing(struct qcow2 *q, uint64_t off, void *buf, size_t len, struct error *err)
{
    return read_backing(q, off, buf, len, err);
}

int qcow2_write_inplace(struct qcow2 *q, uint64_t off, uint64_t len, uint64_t *host,
                        struct error *err)
{
    if (!q->rw || check_range(q, off, len, err) < 0)
        return q->rw ? -1 : 0;
    uint64_t next = 0;
    while (len) {
        uint64_t in = off & (q->cluster_size - 1);
        uint64_t k = to_cluster_end(q, off, len);
        struct loc l;
        if (lookup(q, off, &l, err) < 0)
            return -1;
        if (l.type != C_NORMAL || !(l.entry & OFLAG_COPIED) || (next && l.host + in != next) ||
            meta_overlap(q, l.host, q->cluster_size))
            return 0; /* qcow2_write_begin sorts it out (or finds the corruption) */
        if (!next)
            *host = l.host + in;
        next = l.host + in + k;
        off += k;
        len -= k;
    }
    return 1;
}

int qcow2_read_map(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_extent *ext,
                   unsigned max, struct error *err)
{
    if (check_range(q, off, len, err) < 0)
        return -1;
    unsigned n = 0;
    while (len) {
        uint64_t in = off & (q->cluster_size - 1);
        uint64_t k = to_cluster_end(q, off, len);
        struct loc l;
        if (lookup(q, off, &l, err) < 0)
            return -1;
        struct qcow2_extent e = {off, k, 0, QCOW2_EXT_ZERO, QCOW2_FILL_NONE};
        if (l.type == C_NORMAL) {
            e.type = QCOW2_EXT_DATA;
            e.host = l.host + in;
        } else if (l.type == C_COMPRESSED) {
            e.type = QCOW2_EXT_LIB;
        } else if (l.type == C_UNALLOC && q->has_backing) {
            e.type = QCOW2_EXT_BACKING;
        }
        struct qcow2_extent *last = n ? &ext[n - 1] : NULL;
        if (last && last->type == e.type &&
            (e.type != QCOW2_EXT_DATA || last->host + last->len == e.host))
            last->len += k; /* clusters that follow each other in the file: one transfer */
        else if (n == max)
            break;
        else
            ext[n++] = e;
        off += k;
        len -= k;
    }
    return (int)n;
}

/* Give back the clusters a plan allocated: no L2 entry ever pointed at them, so their
 * refcounts drop at once (the space at the end of the file is not taken again). */
static void plan_abort(struct qcow2 *q, struct qcow2_write_plan *p)
{
    struct error ignored = {0};
    for (unsigned i = 0; i < p->npend; i++)
        if (p->pend[i].fresh)
            update_refcount(q, (p->pend[i].entry & L2E_OFFSET_MASK) >> q->cluster_bits, -1,
                            &ignored);
    p->npend = 0;
}

int qcow2_write_begin(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_write_plan *p,
                      struct error *err)
{
    p->off = off;
    p->len = 0;
    p->n = 0;
    p->npend = 0;
    p->allocates = false;
    if (check_writable(q, err) < 0 || check_range(q, off, len, err) < 0)
        return -1;
    uint64_t cs = q->cluster_size;
    struct {
        struct loc l;
        uint64_t off, len, host;
        bool fresh; /* needs a new cluster */
        enum qcow2_fill fill;
    } c[QCOW2_PLAN_MAX];
    unsigned nc = 0;
    struct batch b = {.n = 0};
    for (; len && nc < QCOW2_PLAN_MAX; nc++) {
        uint64_t in = off & (cs - 1), k = to_cluster_end(q, off, len);
        struct loc *l = &c[nc].l;
        if (lookup(q, off, l, err) < 0)
            return -1;
        if (p->only_fresh) {
            bool zero = l->type == C_ZERO_PLAIN ||
                        (l->type == C_UNALLOC && !(q->has_backing && off - in < q->backing.size));
            if ((l->type != C_UNALLOC && l->type != C_ZERO_PLAIN) || (k < cs && !zero) ||
                (nc && l->l1i != c[0].l.l1i))
                return 0;
        }
        bool has = l->type == C_NORMAL || l->type == C_ZERO_ALLOC;
        bool owned = l->entry & OFLAG_COPIED;
        if (!owned && has) {
            uint64_t rc;
            if (get_refcount(q, l->host >> q->cluster_bits, &rc, err) < 0)
                return -1;
            if (rc == 0)
                return mark_corrupt(q, "data cluster with refcount 0", err);
            owned = rc == 1;
        }
        if (has && owned && meta_overlap(q, l->host, cs))
            return mark_corrupt(q, "data cluster overlaps metadata", err);
        c[nc].off = off;
        c[nc].len = k;
        c[nc].host = l->host + in;
        c[nc].fresh = !(has && owned);
        if (!c[nc].fresh) {
            /* in place; a preallocated zero cluster is written whole, zeros around the data */
            c[nc].fill = l->type == C_ZERO_ALLOC && k < cs ? QCOW2_FILL_ZERO : QCOW2_FILL_NONE;
            if (l->type == C_NORMAL && !(l->entry & OFLAG_COPIED) &&
                (ensure_l2(q, l, err) < 0 ||
                 add_pending(q, &b, l, l->entry | OFLAG_COPIED, false, err) < 0))
                return -1;
            if (l->type == C_ZERO_ALLOC)
                p->pend[p->npend++] = (struct qcow2_plan_pend){off - in, l->host | OFLAG_COPIED,
                                                               l->entry, false, false};
        } else if (k == cs || l->type == C_ZERO_PLAIN || l->type == C_ZERO_ALLOC) {
            /* New clusters come from the end of the file, never written: they read as zeros,
             * so a partial write over zeros needs nothing around it. */
            c[nc].fill = QCOW2_FILL_NONE;
        } else if (l->type == C_UNALLOC) {
            c[nc].fill =
                q->has_backing && off - in < q->backing.size ? QCOW2_FILL_BACKING : QCOW2_FILL_NONE;
        } else {
            c[nc].fill = QCOW2_FILL_OLD; /* compressed, or shared with a snapshot */
        }
        off += k;
        len -= k;
    }
    if (p->only_fresh && len)
        return 0;
    if (commit(q, &b, err) < 0) /* only COPIED flags of clusters kept in place */
        return -1;
    /* Runs of clusters that need new ones get contiguous clusters (one per L2 table). */
    for (unsigned i = 0; i < nc;) {
        if (!c[i].fresh) {
            i++;
            continue;
        }
        unsigned j = i + 1;
        while (j < nc && c[j].fresh && c[j].l.l1i == c[i].l.l1i)
            j++;
        struct loc l2 = c[i].l;
        int64_t host = -1;
        if (ensure_l2(q, &l2, err) < 0 || (host = alloc_clusters(q, j - i, err)) < 0) {
            plan_abort(q, p);
            return -1;
        }
        for (unsigned m = i; m < j; m++) {
            const struct loc *l = &c[m].l;
            uint64_t h = (uint64_t)host + ((uint64_t)(m - i) << q->cluster_bits);
            c[m].host = h + (c[m].off & (cs - 1));
            bool free_old =
                l->type == C_NORMAL || l->type == C_ZERO_ALLOC || l->type == C_COMPRESSED;
            p->pend[p->npend++] = (struct qcow2_plan_pend){c[m].off & ~(cs - 1), h | OFLAG_COPIED,
                                                           l->entry, free_old, true};
        }
        i = j;
    }
    for (unsigned i = 0; i < nc; i++) {
        struct qcow2_extent *last = p->n ? &p->ext[p->n - 1] : NULL;
        if (last && !last->fill && !c[i].fill && last->host + last->len == c[i].host) {
            last->len += c[i].len; /* contiguous in the file: one transfer */
        } else {
            p->ext[p->n++] =
                (struct qcow2_extent){c[i].off, c[i].len, c[i].host, QCOW2_EXT_DATA, c[i].fill};
        }
        p->len += c[i].len;
    }
    p->allocates = p->npend > 0;
    return 0;
}

int qcow2_plan_fill(struct qcow2 *q, const struct qcow2_extent *e, void *buf, struct error *err)
{
    uint64_t cs = q->cluster_size, cstart = e->off & ~(cs - 1);
    uint64_t avail = q->size - cstart < cs ? q->size - cstart : cs;
    int r = 0;
    if (e->fill == QCOW2_FILL_BACKING)
        r = read_backing(q, cstart, buf, (size_t)avail, err);
    else if (e->fill == QCOW2_FILL_OLD)
        r = qcow2_read(q, cstart, buf, (size_t)avail, err);
    else
        avail = 0;
    memset((uint8_t *)buf + avail, 0, cs - avail);
    return r;
}

int qcow2_write_end(struct qcow2 *q, struct qcow2_write_plan *p, bool ok, struct error *err)
{
    if (!ok) {
        plan_abort(q, p);
        return 0;
    }
    for (unsigned i = 0; i < p->n; i++) {
        const struct qcow2_extent *e = &p->ext[i];
        uint64_t end = e->fill ? (e->host | (q->cluster_size - 1)) + 1 : e->host + e->len;
        if (end > q->file_size)
            q->file_size = end;
    }
    struct batch b = {.n = 0};
    int r = 0;
    for (unsigned i = 0; i < p->npend && r == 0; i++) {
        struct loc l;
        if ((r = lookup(q, p->pend[i].guest, &l, err)) == 0 && (r = ensure_l2(q, &l, err)) == 0)
            r = add_pending(q, &b, &l, p->pend[i].entry,
                            p->pend[i].free_old && l.entry == p->pend[i].old, err);
    }
    p->npend = 0;
    struct error e2 = {0};
    if (commit(q, &b, r < 0 ? &e2 : err) < 0)
        r = -1;
    return done_write(q, r, err);
}

/* ---- compressed writes ---- */

/* Compress one cluster into out (room for cluster_size - 1 bytes, so a result that does not
 * shrink the cluster does not fit). Returns the compressed length, or 0 if it does not fit. */
static size_t compress_cluster(struct qcow2 *q, const uint8_t *in, uint8_t *out)
{
    size_t cap = q->cluster_size - 1;
    if (q->compression == QCOW2_COMPRESS_ZSTD) {
        if (!q->zctx && !(q->zctx = ZSTD_createCCtx()))
            return 0;
        size_t r = ZSTD_compressCCtx(q->zctx, out, cap, in, q->cluster_size, ZSTD_CLEVEL_DEFAULT);
        return ZSTD_isError(r) ? 0 : r;
    }
    /* raw deflate with a 4 KiB window, the form QEMU reads */
    z_stream *z = &q->zstrm;
    if (!q->zstrm_init) {
        if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
            return 0;
        q->zstrm_init = true;
    } else if (deflateReset(z) != Z_OK) {
        return 0;
    }
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)q->cluster_size;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    return deflate(z, Z_FINISH) == Z_STREAM_END ? cap - z->avail_out : 0;
}

/* Find len (< cluster size) bytes for compressed data. Compressed clusters are packed one after
 * another, as QEMU packs them; each host cluster a piece touches gains one reference. */
static int64_t alloc_bytes(struct qcow2 *q, uint64_t len, struct error *err)
{
    uint64_t cs = q->cluster_size, b = q->cbyte, rc = 0;
    if ((b & (cs - 1)) && get_refcount(q, b >> q->cluster_bits, &rc, err) < 0)
        return -1;
    if ((b & (cs - 1)) && rc < rc_max(q)) { /* narrow refcounts may not take another user */
        uint64_t room = cs - (b & (cs - 1)), cl = b >> q->cluster_bits;
        if (len <= room) {
            if (update_refcount(q, cl, 1, err) < 0)
                return -1;
            q->cbyte = len == room ? 0 : b + len;
            return (int64_t)b;
        }
        if (q->free_cluster == cl + 1) {
            int64_t n = alloc_clusters(q, 1, err);
            if (n < 0)
                return -1;
            if ((uint64_t)n == (cl + 1) << q->cluster_bits) {
                /* the piece spans the tail of the old cluster and the new one */
                if (update_refcount(q, cl, 1, err) < 0)
                    return -1;
                q->cbyte = b + len;
                return (int64_t)b;
            }
            q->cbyte = (uint64_t)n + len;
            return n;
        }
    }
    int64_t n = alloc_clusters(q, 1, err);
    if (n < 0)
        return -1;
    q->cbyte = (uint64_t)n + len;
    return n;
}

int qcow2_write_compressed(struct qcow2 *q, uint64_t offset, const void *buf, size_t len,
                           struct error *err)
{
    uint64_t cs = q->cluster_size;
    if (check_writable(q, err) < 0 || check_range(q, offset, len, err) < 0)
        return -1;
    if ((offset & (cs - 1)) || ((len & (cs - 1)) && q->size - offset - len > cs - (len & (cs - 1))))
        return error_setf(err, "%s: compressed writes must cover whole clusters", q->name);
    /* here rather than in compress_cluster(), whose failure means "write it uncompressed" */
    if (open_compression(q, err) < 0)
        return -1;
    uint8_t *in = malloc(cs), *out = malloc(cs);
    struct batch *b = calloc(1, sizeof(*b));
    int r = 0;
    if (!in || !out || !b)
        r = error_setf(err, "%s: out of memory", q->name);
    const uint8_t *p = buf;
    for (; len && r == 0; offset += cs, p += cs) {
        size_t n = len < cs ? len : (size_t)cs;
        len -= n;
        struct loc l;
        if ((r = lookup(q, offset, &l, err)) < 0)
            break;
        if (l.type != C_UNALLOC && l.type != C_ZERO_PLAIN) {
            /* only fresh clusters are compressed (as in QEMU); others are written in place */
            if ((r = commit(q, b, err)) == 0)
                r = qcow2_write(q, offset, p, n, err);
            continue;
        }
        memcpy(in, p, n);
        memset(in + n, 0, cs - n); /* a short last cluster is compressed zero-padded */
        size_t clen = compress_cluster(q, in, out);
        if (!clen) {
            /* does not shrink: an ordinary cluster */
            if ((r = commit(q, b, err)) == 0)
                r = qcow2_write(q, offset, p, n, err);
            continue;
        }
        int64_t host = alloc_bytes(q, clen, err);
        if (host < 0 || qwrite(q, out, clen, (uint64_t)host, err) < 0 ||
            ensure_l2(q, &l, err) < 0) {
            r = -1;
            break;
        }
        unsigned x = 70 - q->cluster_bits;
        uint64_t sectors = (((uint64_t)host + clen - 1) >> 9) - ((uint64_t)host >> 9);
        r = add_pending(q, b, &l, OFLAG_COMPRESSED | sectors << x | (uint64_t)host, false, err);
    }
    struct error e2 = {0};
    if (b && commit(q, b, r < 0 ? &e2 : err) < 0)
        r = -1;
    free(in);
    free(out);
    free(b);
    return done_write(q, r, err);
}

/* Change whole-cluster entries in [off, off+len): the v3 zero flag or deallocation. */
static int zap_clusters(struct qcow2 *q, uint64_t off, uint64_t len, bool unmap, bool discard,
                        bool drop, struct error *err)
{
    struct batch b = {.n = 0};
    uint8_t *zero = NULL;
    int r = 0;
    /* the last cluster may be partial when the virtual size is not cluster aligned */
    for (; len && r == 0;
         off += q->cluster_size, len -= len < q->cluster_size ? len : q->cluster_size) {
        struct loc l;
        if ((r = lookup(q, off, &l, err)) < 0)
            break;
        bool allocated = l.type == C_NORMAL || l.type == C_ZERO_ALLOC || l.type == C_COMPRESSED;
        uint64_t entry;
        if (drop) { /* past the end of a shrunk image: nothing at all */
            if (l.type == C_UNALLOC)
                continue;
            entry = 0;
        } else if (q->version >= 3) {
            if (l.type == C_ZERO_PLAIN || (l.type == C_ZERO_ALLOC && !unmap) ||
                (l.type == C_UNALLOC && !q->has_backing))
                continue;
            if (discard)
                entry = q->has_backing ? OFLAG_ZERO : 0;
            else if (!unmap && l.type == C_NORMAL && (l.entry & OFLAG_COPIED))
                entry = l.host | OFLAG_COPIED | OFLAG_ZERO; /* keep the allocation */
            else
                entry = OFLAG_ZERO;
        } else if (q->has_backing) {
            /* v2 cannot hide the backing file without data */
            if (discard)
                continue;
            if (!zero && !(zero = calloc(1, q->cluster_size))) {
                r = error_setf(err, "%s: out of memory", q->name);
                break;
            }
            r = write_chunk(q, off, zero, q->cluster_size, &b, err);
            continue;
        } else {
            if (l.type == C_UNALLOC)
                continue;
            entry = 0;
        }
        bool free_old = allocated && (entry & L2E_OFFSET_MASK) != l.host;
        if ((r = ensure_l2(q, &l, err)) == 0)
            r = add_pending(q, &b, &l, entry, free_old, err);
    }
    free(zero);
    struct error e2 = {0};
    if (commit(q, &b, r < 0 ? &e2 : err) < 0)
        r = -1;
    return r;
}

int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len, bool unmap, struct error *err)
{
    if (check_writable(q, err) < 0 || check_range(q, off, len, err) < 0)
        return -1;
    uint64_t cs = q->cluster_size;
    uint64_t head = (cs - (off & (cs - 1))) & (cs - 1);
    uint8_t *zero = NULL;
    if (head > len)
        head = len;
    /* the last cluster of an image whose size is not cluster aligned counts as whole */
    uint64_t end = off + len;
    uint64_t tail = end == q->size ? 0 : end & (cs - 1);
    if (tail > len - head)
        tail = len - head;
    if (head || tail) {
        if (!(zero = calloc(1, cs)))
            return error_setf(err, "%s: out of memory", q->name);
    }
    int r = 0;
    if (head)
        r = qcow2_write(q, off, zero, head, err);
    if (r == 0 && len - head - tail)
        r = zap_clusters(q, off + head, len - head - tail, unmap, false, false, err);
    if (r == 0 && tail)
        r = qcow2_write(q, end - tail, zero, tail, err);
    free(zero);
    return done_write(q, r, err);
}

int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len, struct error *err)
{
    if (check_writable(q, err) < 0 || check_range(q, off, len, err) < 0)
        return -1;
    uint64_t cs = q->cluster_size, end = off + len;
    uint64_t first = (off + cs - 1) & ~(cs - 1);
    uint64_t last = end == q->size ? cluster_align(q, end) : end & ~(cs - 1);
    if (last <= first)
        return 0;
    return done_write(q, zap_clusters(q, first, last - first, true, true, false, err), err);
}

int qcow2_flush(struct qcow2 *q, struct error *err)
{
    return q->rw ? meta_flush(q, err) : 0;
}

int qcow2_close(struct qcow2 *q, struct error *err)
{
    if (!q)
        return 0;
    int r = qcow2_flush(q, err);
    if (r == 0 && q->rw)
        r = mark_clean(q, err);
    qcow2_free(q);
    return r;
}

void qcow2_set_backing(struct qcow2 *q, const struct qcow2_backing *b)
{
    if (q->has_backing && q->backing.close)
        q->backing.close(q->backing.opaque);
    q->has_backing = b != NULL;
    if (b)
        q->backing = *b;
}

const char *qcow2_warning(const struct qcow2 *q)
{
    return q->warning;
}

uint64_t qcow2_size(const struct qcow2 *q)
{
    return q->size;
}

uint64_t qcow2_cluster_size(const struct qcow2 *q)
{
    return q->cluster_size;
}

bool qcow2_is_read_only(const struct qcow2 *q)
{
    return !q->rw;
}

/* ---- check ---- */

struct checker {
    struct qcow2 *q;
    struct qcow2_check_result *res;
    FILE *report;
    uint32_t *ref;       /* computed refcounts, saturating */
    uint64_t nb;         /* clusters tracked (the file's) */
    uint8_t *tbl;        /* one cluster of scratch */
    uint64_t copied_bad; /* COPIED flags that disagree with the refcounts */
};

static void ck_report(struct checker *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ck_report(struct checker *c, const char *fmt, ...)
{
    if (!c->report)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(c->report, fmt, ap);
    va_end(ap);
    fputc('\n', c->report);
}

static void ck_inc(struct checker *c, uint64_t off, uint64_t len)
{
    if (!len)
        return;
    uint64_t first = off >> c->q->cluster_bits, last = (off + len - 1) >> c->q->cluster_bits;
    for (uint64_t i = first; i <= last; i++) {
        if (i >= c->nb) {
            ck_report(c,
                      "ERROR: cluster %" PRIu64 " (offset 0x%" PRIx64 ") is past the end of the "
                      "image",
                      i, i << c->q->cluster_bits);
            c->res->corruptions++;
            return;
        }
        if (c->ref[i] != UINT32_MAX)
            c->ref[i]++;
    }
}

/* Count the clusters reachable through one L1 table. */
static void ck_walk_l1(struct checker *c, const uint64_t *l1, uint32_t n, bool active)
{
    struct qcow2 *q = c->q;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        if (!l2)
            continue;
        if (l2 & (q->cluster_size - 1)) {
            ck_report(c, "ERROR: L2 table offset 0x%" PRIx64 " unaligned (L1 index %u)", l2, i);
            c->res->corruptions++;
            continue;
        }
        ck_inc(c, l2, q->cluster_size);
        struct error e = {0};
        if (l2 >= q->file_size || qread(q, c->tbl, q->cluster_size, l2, "L2 table", &e) < 0) {
            ck_report(c, "ERROR: cannot read L2 table at 0x%" PRIx64, l2);
            c->res->corruptions++;
            continue;
        }
        for (uint64_t j = 0; j < (1ull << q->l2_bits); j++) {
            uint64_t ent = be64(c->tbl + 8 * j);
            if (ent & OFLAG_COMPRESSED) {
                uint64_t off, len;
                compressed_range(q, ent, &off, &len);
                if (ent & OFLAG_COPIED) {
                    ck_report(c, "ERROR: compressed cluster 0x%" PRIx64 " has the copied flag",
                              off);
                    c->res->corruptions++;
                }
                ck_inc(c, off, len);
                if (active) {
                    c->res->allocated_clusters++;
                    c->res->compressed_clusters++;
                }
                continue;
            }
            uint64_t host = ent & L2E_OFFSET_MASK;
            if (!host)
                continue;
            if (host & (q->cluster_size - 1)) {
                ck_report(c, "ERROR: data cluster offset 0x%" PRIx64 " unaligned", host);
                c->res->corruptions++;
                continue;
            }
            ck_inc(c, host, q->cluster_size);
            if (active && !(q->version >= 3 && (ent & OFLAG_ZERO)))
                c->res->allocated_clusters++;
        }
    }
}

/* The COPIED flags of the active tables must say "refcount is exactly 1". */
static void ck_copied(struct checker *c)
{
    struct qcow2 *q = c->q;
    for (uint32_t i = 0; i < q->l1_size; i++) {
        uint64_t l2 = q->l1[i] & L1E_OFFSET_MASK, rc;
        struct error e = {0};
        if (!l2 || (l2 & (q->cluster_size - 1)) || get_refcount(q, l2 >> q->cluster_bits, &rc, &e))
            continue;
        if ((rc == 1) != !!(q->l1[i] & OFLAG_COPIED)) {
            ck_report(c,
                      "ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64
                      " refcount=%" PRIu64,
                      i, q->l1[i], rc);
            c->res->corruptions++;
            c->copied_bad++;
        }
        if (l2 >= q->file_size || qread(q, c->tbl, q->cluster_size, l2, "L2 table", &e) < 0)
            continue;
        for (uint64_t j = 0; j < (1ull << q->l2_bits); j++) {
            uint64_t ent = be64(c->tbl + 8 * j), host = ent & L2E_OFFSET_MASK;
            if ((ent & OFLAG_COMPRESSED) || !host || (host & (q->cluster_size - 1)))
                continue;
            if (get_refcount(q, host >> q->cluster_bits, &rc, &e) < 0)
                continue;
            if ((rc == 1) != !!(ent & OFLAG_COPIED)) {
                ck_report(c,
                          "ERROR OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                          ent, rc);
                c->res->corruptions++;
                c->copied_bad++;
            }
        }
    }
}

static int fix_copied(struct qcow2 *q, struct error *err);

static int check_once(struct qcow2 *q, unsigned fix, struct qcow2_check_result *res, FILE *report,
                      struct error *err)
{
    struct checker c = {.q = q, .res = res, .report = report};
    c.nb = cluster_align(q, q->file_size) >> q->cluster_bits;
    if (q->free_cluster > c.nb)
        c.nb = q->free_cluster;
    c.ref = calloc(c.nb ? c.nb : 1, sizeof(*c.ref));
    c.tbl = malloc(q->cluster_size);
    if (!c.ref || !c.tbl) {
        free(c.ref);
        free(c.tbl);
        return error_setf(err, "%s: out of memory for the check", q->name);
    }
    res->total_clusters = (q->size + q->cluster_size - 1) >> q->cluster_bits;

    ck_inc(&c, 0, q->cluster_size);
    ck_inc(&c, q->l1_offset, (uint64_t)q->l1_size * 8);
    ck_walk_l1(&c, q->l1, q->l1_size, true);
    ck_inc(&c, q->snapshots_offset, q->snapshots_size);
    for (uint32_t s = 0; s < q->nb_snapshots; s++) {
        struct qcow2_snapshot *sn = &q->snaps[s];
        uint64_t *l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);
        struct error e = {0};
        if (!l1 || qread(q, l1, (size_t)sn->l1_size * 8, sn->l1_offset, "snapshot L1", &e) < 0) {
            ck_report(&c, "ERROR: cannot read the L1 table of snapshot %s", sn->id);
            res->check_errors++;
            free(l1);
            continue;
        }
        for (uint32_t i = 0; i < sn->l1_size; i++)
            l1[i] = be64((uint8_t *)&l1[i]);
        ck_inc(&c, sn->l1_offset, (uint64_t)sn->l1_size * 8);
        ck_walk_l1(&c, l1, sn->l1_size, false);
        free(l1);
    }
    ck_inc(&c, q->reft_offset, (uint64_t)q->reft_clusters << q->cluster_bits);
    for (uint64_t b = 0; b < q->reft_entries; b++) {
        uint64_t off = q->reft[b] & REFT_OFFSET_MASK;
        if (!off)
            continue;
        if (off >= q->file_size) {
            ck_report(&c, "ERROR refcount block %" PRIu64 " is outside image", b);
            res->corruptions++;
            continue;
        }
        ck_inc(&c, off, q->cluster_size);
    }

    int r = 0;
    uint64_t highest = 0;
    for (uint64_t i = 0; i < c.nb; i++) {
        uint64_t stored = 0;
        uint64_t b = i >> q->rb_bits;
        struct error e = {0};
        if (b < q->reft_entries && (q->reft[b] & REFT_OFFSET_MASK) &&
            (q->reft[b] & REFT_OFFSET_MASK) < q->file_size && get_refcount(q, i, &stored, &e) < 0) {
            res->check_errors++;
            continue;
        }
        uint64_t want = c.ref[i];
        if (want)
            highest = i + 1;
        if (stored == want)
            continue;
        bool leak = stored > want;
        ck_report(&c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                  leak ? "Leaked" : "ERROR", i, stored, want);
        if (leak)
            res->leaks++;
        else
            res->corruptions++;
        if (fix & (leak ? QCOW2_FIX_LEAKS : QCOW2_FIX_ERRORS)) {
            if (want > rc_max(q) || ensure_refblock(q, b, err) < 0 ||
                put_refcount(q, i, want, err) < 0) {
                r = -1;
                break;
            }
            if (leak)
                res->leaks_fixed++;
            else
                res->corruptions_fixed++;
        }
    }
    res->image_end_offset = highest << q->cluster_bits;
    if (r == 0)
        ck_copied(&c);
    /* as QEMU's check -r all: the flags follow the (now right) refcounts; a crash in a snapshot
     * operation, or with lazy refcounts, leaves them behind */
    if (r == 0 && c.copied_bad && (fix & QCOW2_FIX_ERRORS)) {
        r = fix_copied(q, err);
        if (r == 0)
            res->corruptions_fixed += c.copied_bad;
    }
    free(c.ref);
    free(c.tbl);
    return r;
}

int qcow2_check(struct qcow2 *q, unsigned fix, struct qcow2_check_result *res, FILE *report,
                struct error *err)
{
    struct qcow2_check_result tmp;
    res = res ? res : &tmp;
    memset(res, 0, sizeof(*res));
    if (fix && !q->rw)
        return error_setf(err, "%s: repairing needs a read-write image", q->name);
    if (q->rw && meta_flush(q, err) < 0) /* the walk reads L2 tables from the file */
        return -1;
    if (check_once(q, fix, res, report, err) < 0)
        return -1;
    if (res->leaks_fixed || res->corruptions_fixed) {
        /* report the state after the repair, as qemu-img check does */
        if (meta_sync(q, err) < 0)
            return -1;
        struct qcow2_check_result again = {0};
        if (check_once(q, 0, &again, NULL, err) < 0)
            return -1;
        again.leaks_fixed = res->leaks_fixed;
        again.corruptions_fixed = res->corruptions_fixed;
        *res = again;
        if (!res->corruptions && (q->incompat & INCOMPAT_CORRUPT) && q->version >= 3) {
            q->incompat &= ~INCOMPAT_CORRUPT;
            if (write_header_u64(q, 72, q->incompat, err) < 0 || meta_sync(q, err) < 0)
                return -1;
        }
    }
    /* as QEMU: a repair that leaves no error makes a dirty (lazy refcounts) image clean */
    if (fix && !res->corruptions && !res->check_errors && (q->incompat & INCOMPAT_DIRTY)) {
        if (meta_sync(q, err) < 0 ||
            write_header_u64(q, 72, q->incompat & ~INCOMPAT_DIRTY, err) < 0 || qsync(q, err) < 0)
            return -1;
        q->incompat &= ~INCOMPAT_DIRTY;
    }
    if (res->corruptions || res->check_errors)
        return 2;
    return res->leaks ? 3 : 0;
}

/* ---- create ---- */

static const struct {
    uint8_t type, bit;
    const char *name;
} feature_table[] = {
    {0, 0, "dirty bit"},        {0, 1, "corrupt bit"},         {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},          {2, 1, "raw external data"},
};

static int backing_size(const char *path, const char *bpath, const char *fmt, uint64_t *size,
                        struct error *err)
{
    char full[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (bpath[0] == '/' || !slash)
        snprintf(full, sizeof(full), "%s", bpath);
    else
        snprintf(full, sizeof(full), "%.*s/%s", (int)(slash - path), path, bpath);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_setf_errno(err, errno, "%s: backing file %s", path, full);
    uint8_t m[4] = {0};
    pread_full(fd, m, 4, 0);
    bool qc = fmt ? !strcmp(fmt, "qcow2") : be32(m) == QCOW_MAGIC;
    if (qc) {
        struct qcow2_open_opts o = {.no_backing = true};
        struct qcow2 *b = qcow2_open_fd(fd, full, &o, err);
        close(fd);
        if (!b)
            return -1;
        *size = b->size;
        qcow2_free(b);
        return 0;
    }
    struct stat st;
    int r = fstat(fd, &st);
    close(fd);
    if (r < 0)
        return error_setf_errno(err, errno, "%s", full);
    *size = (uint64_t)st.st_size;
    return 0;
}

static int create_prealloc(struct qcow2 *q, enum qcow2_prealloc mode, struct error *err)
{
    uint64_t n = (q->size + q->cluster_size - 1) >> q->cluster_bits;
    if (!n)
        return 0;
    uint64_t per_l2 = 1ull << q->l2_bits;
    for (uint64_t i = 0; i < (n + per_l2 - 1) / per_l2; i++) {
        struct loc l = {.l1i = i};
        if (ensure_l2(q, &l, err) < 0)
            return -1;
    }
    int64_t data = alloc_clusters(q, n, err);
    if (data < 0)
        return -1;
    uint64_t bytes = n << q->cluster_bits;
    if (mode == QCOW2_PREALLOC_FALLOC) {
        int r = posix_fallocate(q->fd, (off_t)data, (off_t)bytes);
        if (r)
            return error_setf_errno(err, r, "%s: fallocate", q->name);
    } else if (mode == QCOW2_PREALLOC_FULL) {
        size_t chunk = 1u << 20;
        uint8_t *z = calloc(1, chunk);
        if (!z)
            return error_setf(err, "%s: out of memory", q->name);
        for (uint64_t o = 0; o < bytes; o += chunk) {
            size_t len = bytes - o < chunk ? (size_t)(bytes - o) : chunk;
            if (qwrite(q, z, len, (uint64_t)data + o, err) < 0) {
                free(z);
                return -1;
            }
        }
        free(z);
    }
    if ((uint64_t)data + bytes > q->file_size) {
        if (ftruncate(q->fd, (off_t)(data + (int64_t)bytes)) < 0)
            return error_setf_errno(err, errno, "%s: truncate", q->name);
        q->file_size = (uint64_t)data + bytes;
    }
    if (meta_sync(q, err) < 0)
        return -1;
    uint8_t *t = malloc(q->cluster_size);
    if (!t)
        return error_setf(err, "%s: out of memory", q->name);
    for (uint64_t c = 0; c < n; c += per_l2) {
        memset(t, 0, q->cluster_size);
        for (uint64_t j = 0; j < per_l2 && c + j < n; j++)
            put64(t + 8 * j, ((uint64_t)data + ((c + j) << q->cluster_bits)) | OFLAG_COPIED);
        uint64_t l2 = q->l1[c / per_l2] & L1E_OFFSET_MASK;
        tcache_drop(&q->l2c, l2);
        if (qwrite(q, t, q->cluster_size, l2, err) < 0) {
            free(t);
            return -1;
        }
    }
    free(t);
    return 0;
}

int qcow2_create(const char *path, uint64_t size, const struct qcow2_create_opts *opts,
                 struct error *err)
{
    struct qcow2_create_opts o = opts ? *opts : (struct qcow2_create_opts){0};
    if (!o.cluster_size)
        o.cluster_size = 65536;
    if (!o.version)
        o.version = 3;
    if (!o.refcount_bits)
        o.refcount_bits = 16;
    if (o.cluster_size < 512 || o.cluster_size > (2u << 20) ||
        (o.cluster_size & (o.cluster_size - 1)))
        return error_setf(err, "%s: cluster size must be a power of two between 512 and 2M", path);
    if (o.version != 2 && o.version != 3)
        return error_setf(err, "%s: version must be 2 (compat=0.10) or 3 (compat=1.1)", path);
    if (o.refcount_bits > 64 || (o.refcount_bits & (o.refcount_bits - 1)))
        return error_setf(err, "%s: refcount bits must be a power of two up to 64", path);
    if (o.version == 2 &&
        (o.refcount_bits != 16 || o.lazy_refcounts || o.compression != QCOW2_COMPRESS_ZLIB))
        return error_setf(err,
                          "%s: refcount bits other than 16, lazy refcounts and zstd need "
                          "compat=1.1",
                          path);
    /* As QEMU built without zstd refuses such an image: a host without libzstd learns it now,
     * not at the first compressed write into the image. */
    if (o.compression == QCOW2_COMPRESS_ZSTD && zstd_dl_open(err) < 0) {
        error_prefix(err, "%s: ", path);
        return -1;
    }
    if (o.backing_fmt && strcmp(o.backing_fmt, "qcow2") && strcmp(o.backing_fmt, "raw"))
        return error_setf(err, "%s: backing format '%s' is not supported", path, o.backing_fmt);
    if (o.backing_file && strlen(o.backing_file) > MAX_BACKING_NAME)
        return error_setf(err, "%s: backing file name too long", path);
    if (o.backing_file && o.prealloc != QCOW2_PREALLOC_OFF)
        return error_setf(err, "%s: preallocation is not possible with a backing file", path);
    if (!size && o.backing_file &&
        backing_size(path, o.backing_file, o.backing_fmt, &size, err) < 0)
        return -1;
    size = (size + 511) & ~511ull;
    unsigned cb = (unsigned)__builtin_ctzll(o.cluster_size);
    uint64_t cs = o.cluster_size, l2_cover = 1ull << (2 * cb - 3);
    if (size > INT64_MAX - l2_cover || (size + l2_cover - 1) / l2_cover > MAX_L1_BYTES / 8)
        return error_setf(err, "%s: image size too large for cluster size %" PRIu64, path, cs);
    unsigned order = (unsigned)__builtin_ctz(o.refcount_bits);

    uint8_t *buf = calloc(3, cs);
    if (!buf)
        return error_setf(err, "%s: out of memory", path);
    uint8_t *h = buf;
    put32(h, QCOW_MAGIC);
    put32(h + 4, (uint32_t)o.version);
    put32(h + 20, cb);
    put64(h + 48, cs); /* the size is set with the L1 table, which must cover it */
    put32(h + 56, 1);
    size_t p = 72;
    if (o.version == 3) {
        put64(h + 72, o.compression == QCOW2_COMPRESS_ZSTD ? INCOMPAT_COMPRESSION : 0);
        put64(h + 80, o.lazy_refcounts ? COMPAT_LAZY_REFCOUNTS : 0);
        put32(h + 96, order);
        put32(h + 100, 112);
        h[104] = (uint8_t)o.compression;
        p = 112;
    }
    size_t bf_len = o.backing_file ? strlen(o.backing_file) : 0;
    size_t fmt_len = o.backing_fmt ? strlen(o.backing_fmt) : 0;
    size_t need = p + (fmt_len ? 8 + ((fmt_len + 7) & ~7u) : 0) + 8 + bf_len;
    if (need > cs) {
        free(buf);
        return error_setf(err, "%s: backing file name does not fit in the header cluster", path);
    }
    if (fmt_len) {
        put32(h + p, EXT_BACKING_FMT);
        put32(h + p + 4, (uint32_t)fmt_len);
        memcpy(h + p + 8, o.backing_fmt, fmt_len);
        p += 8 + ((fmt_len + 7) & ~7u);
    }
    size_t ft_len = sizeof(feature_table) / sizeof(feature_table[0]) * 48;
    if (need + 8 + ft_len <= cs) {
        /* names for the feature bits, for the error messages of older readers */
        put32(h + p, EXT_FEATURE_NAME);
        put32(h + p + 4, (uint32_t)ft_len);
        for (size_t i = 0; i < sizeof(feature_table) / sizeof(feature_table[0]); i++) {
            uint8_t *e = h + p + 8 + 48 * i;
            e[0] = feature_table[i].type;
            e[1] = feature_table[i].bit;
            memcpy(e + 2, feature_table[i].name, strlen(feature_table[i].name));
        }
        p += 8 + ft_len;
    }
    p += 8; /* end of extensions */
    if (bf_len) {
        put64(h + 8, p);
        put32(h + 16, (uint32_t)bf_len);
        memcpy(h + p, o.backing_file, bf_len);
    }
    /* cluster 1: refcount table, cluster 2: its first block, counting clusters 0..2 */
    put64(buf + cs, 2 * cs);
    for (uint64_t i = 0; i < 3; i++) {
        size_t at, len;
        rc_set(buf + 2 * cs, i, order, 1, &at, &len);
    }
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(buf);
        return error_setf_errno(err, errno, "%s", path);
    }
    int r = pwrite_full(fd, buf, 3 * cs, 0);
    free(buf);
    if (r < 0) {
        error_setf_errno(err, errno, "%s: write", path);
        close(fd);
        return -1;
    }
    struct qcow2_open_opts oo = {.read_write = true, .no_backing = true};
    struct qcow2 *q = qcow2_open_fd(fd, path, &oo, err);
    close(fd);
    if (!q)
        return -1;
    uint32_t l1n = (uint32_t)((size + l2_cover - 1) / l2_cover);
    if (l1n) {
        uint64_t bytes = cluster_align(q, (uint64_t)l1n * 8);
        uint64_t *l1 = calloc(l1n, 8);
        uint8_t *z = calloc(1, bytes);
        int64_t off = -1;
        r = -1;
        if (!l1 || !z)
            error_setf(err, "%s: out of memory", path);
        else if ((off = alloc_clusters(q, bytes >> cb, err)) >= 0 &&
                 qwrite(q, z, bytes, (uint64_t)off, err) == 0 && meta_sync(q, err) == 0) {
            uint8_t hb[24] = {0};
            put64(hb, size);
            put32(hb + 12, l1n);
            put64(hb + 16, (uint64_t)off);
            r = qwrite(q, hb, 24, 24, err);
        }
        free(z);
        if (r == 0) {
            free(q->l1);
            q->l1 = l1;
            q->l1_size = l1n;
            q->l1_offset = (uint64_t)off;
            q->size = size;
        } else {
            free(l1);
        }
        if (r == 0 && o.prealloc != QCOW2_PREALLOC_OFF)
            r = create_prealloc(q, o.prealloc, err);
        if (r < 0) {
            qcow2_free(q);
            return -1;
        }
    }
    return qcow2_close(q, err);
}

/* ---- resize and map ---- */

static int grow_l1(struct qcow2 *q, uint32_t n, struct error *err);

int qcow2_resize(struct qcow2 *q, uint64_t size, struct error *err)
{
    /* these rewrite tables in place: start from clean, written-back metadata */
    if (check_writable(q, err) < 0 || meta_flush(q, err) < 0)
        return -1;
    size = (size + 511) & ~511ull;
    uint64_t cs = q->cluster_size, old = q->size;
    uint64_t l2_cover = 1ull << (q->cluster_bits + q->l2_bits);
    if (size > INT64_MAX - l2_cover || (size + l2_cover - 1) / l2_cover > MAX_L1_BYTES / 8)
        return error_setf(err, "%s: image size too large for cluster size %" PRIu64, q->name, cs);
    uint32_t l1_need = (uint32_t)((size + l2_cover - 1) / l2_cover);
    if (size < old) {
        /* drop every cluster past the new end, then the L2 tables nothing needs any more */
        uint64_t first = cluster_align(q, size), end = cluster_align(q, old);
        if (first < end && zap_clusters(q, first, end - first, true, false, true, err) < 0)
            return -1;
        for (uint32_t i = l1_need; i < q->l1_size; i++) {
            uint64_t l2 = q->l1[i] & L1E_OFFSET_MASK;
            if (!l2)
                continue;
            uint8_t z[8] = {0};
            if (qwrite(q, z, 8, q->l1_offset + 8 * i, err) < 0)
                return -1;
            q->l1[i] = 0;
            if (meta_sync(q, err) < 0 || update_refcount(q, l2 >> q->cluster_bits, -1, err) < 0)
                return -1;
            uint64_t rc;
            if (get_refcount(q, l2 >> q->cluster_bits, &rc, err) == 0 && !rc)
                tcache_drop(&q->l2c, l2);
        }
    } else if (grow_l1(q, l1_need, err) < 0) {
        return -1;
    }
    if (write_header_u64(q, 24, size, err) < 0 || meta_sync(q, err) < 0)
        return -1;
    q->size = size;
    if (size <= old)
        return 0;
    /* the grown part reads as zeros: hide the tail of a partial last cluster and any backing
     * data that the larger size would expose */
    uint64_t zend = cluster_align(q, old) < size ? cluster_align(q, old) : size;
    uint64_t bend = q->has_backing && q->backing.size < size ? q->backing.size : size;
    if (q->has_backing && bend > zend)
        zend = bend;
    if (zend > old)
        return qcow2_write_zeroes(q, old, zend - old, false, err);
    return 0;
}

/* Is [off, off+len) of fd a hole? */
static bool file_hole(int fd, uint64_t off, uint64_t len)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0)
        return errno == ENXIO;
    return (uint64_t)d >= off + len;
}

static int map_at(struct qcow2 *q, uint64_t off, uint64_t max, int depth, struct qcow2_map_entry *e,
                  struct error *err)
{
    uint64_t in = off & (q->cluster_size - 1);
    uint64_t len = to_cluster_end(q, off, max);
    struct loc l;
    if (lookup(q, off, &l, err) < 0)
        return -1;
    *e = (struct qcow2_map_entry){.len = len, .depth = depth, .present = true, .file = q->name};
    switch (l.type) {
    case C_NORMAL:
        e->data = true;
        e->has_offset = true;
        e->offset = l.host + in;
        e->zero = file_hole(q->fd, e->offset, len); /* as QEMU asks the file too */
        return 0;
    case C_ZERO_ALLOC:
        e->has_offset = true;
        e->offset = l.host + in;
        /* fall through */
    case C_ZERO_PLAIN:
        e->zero = true;
        return 0;
    case C_COMPRESSED:
        e->data = e->compressed = true;
        return 0;
    case C_UNALLOC:
        break;
    }
    if (!q->has_backing || off >= q->backing.size) {
        e->depth = depth + (q->has_backing ? 1 : 0);
        e->present = false;
        e->zero = true;
        return 0;
    }
    if (len > q->backing.size - off)
        len = q->backing.size - off;
    if (q->backing.read == q_backing_read)
        return map_at(q->backing.opaque, off, len, depth + 1, e, err);
    e->depth = depth + 1;
    if (q->backing.read == raw_backing_read) {
        struct raw_backing *rb = q->backing.opaque;
        e->file = rb->name;
        e->has_offset = true;
        e->offset = off;
        e->zero = file_hole(rb->fd, off, len);
        e->data = !e->zero;
    } else {
        e->data = true;
    }
    e->len = len;
    return 0;
}

int qcow2_map(struct qcow2 *q, uint64_t off, uint64_t max, struct qcow2_map_entry *e,
              struct error *err)
{
    if (check_range(q, off, max, err) < 0)
        return -1;
    return map_at(q, off, max, 0, e, err);
}

/* ---- commit and rebase helpers ---- */

int qcow2_backing_path(const struct qcow2 *q, char **path, const char **fmt, struct error *err)
{
    char p[PATH_MAX];
    *path = NULL;
    *fmt = NULL;
    if (!q->backing_name)
        return 0;
    backing_path(q, p, sizeof(p));
    if (!(*path = strdup(p)))
        return error_setf(err, "%s: out of memory", q->name);
    if (q->backing_fmt && (!strcmp(q->backing_fmt, "qcow2") || !strcmp(q->backing_fmt, "raw")))
        *fmt = !strcmp(q->backing_fmt, "raw") ? "raw" : "qcow2";
    return 0;
}

int qcow2_reopen_backing(struct qcow2 *q, struct error *err)
{
    struct backing_id chain[MAX_BACKING_DEPTH + 1];
    struct stat st;
    qcow2_set_backing(q, NULL);
    if (!q->backing_name)
        return 0;
    if (fstat(q->fd, &st) < 0)
        return error_setf_errno(err, errno, "%s", q->name);
    chain[0] = (struct backing_id){st.st_dev, st.st_ino};
    return open_backing(q, &default_opts, chain, 0, err);
}

int qcow2_copy_top(struct qcow2 *q, int depth, const struct qcow2_sink *sink,
                   void (*progress)(void *opaque, double done), void *popaque, struct error *err)
{
    enum { RUN_MAX = 2u << 20 };
    uint8_t *buf = malloc(RUN_MAX);
    if (!buf)
        return error_setf(err, "%s: out of memory", q->name);
    /* runs of neighbouring extents of one kind (data or zeros), each written with one call */
    uint64_t run = 0, rlen = 0;
    bool rzero = false;
    int r = 0;
    for (uint64_t off = 0; r == 0 && off <= q->size;) {
        struct qcow2_map_entry e = {0};
        if (off < q->size && map_at(q, off, q->size - off, 0, &e, err) < 0) {
            r = -1;
            break;
        }
        bool take = off < q->size && e.present && e.depth < depth;
        bool zero = take && !e.data;
        if (rlen && (!take || zero != rzero || rlen + e.len > RUN_MAX)) {
            if (rzero)
                r = sink->zero(sink->opaque, run, rlen, err);
            else if ((r = qcow2_read(q, run, buf, (size_t)rlen, err)) == 0)
                r = sink->write(sink->opaque, run, buf, (size_t)rlen, err);
            rlen = 0;
        }
        if (r < 0 || off == q->size)
            break;
        if (take) {
            if (!rlen)
                run = off, rzero = zero;
            rlen += e.len;
        }
        off += e.len;
        if (progress)
            progress(popaque, (double)off / (double)q->size);
    }
    free(buf);
    return r;
}

int qcow2_make_empty(struct qcow2 *q, struct error *err)
{
    if (check_writable(q, err) < 0)
        return -1;
    return q->size ? zap_clusters(q, 0, cluster_align(q, q->size), true, false, true, err) : 0;
}

int qcow2_change_backing(struct qcow2 *q, const char *name, const char *fmt, struct error *err)
{
    /* these rewrite tables in place: start from clean, written-back metadata */
    if (check_writable(q, err) < 0 || meta_flush(q, err) < 0)
        return -1;
    if (name && !*name)
        name = NULL;
    if (fmt && strcmp(fmt, "qcow2") && strcmp(fmt, "raw"))
        return error_setf(err, "%s: backing format '%s' is not supported", q->name, fmt);
    size_t nlen = name ? strlen(name) : 0, flen = name && fmt ? strlen(fmt) : 0;
    if (nlen > MAX_BACKING_NAME)
        return error_setf(err, "%s: backing file name too long", q->name);
    uint8_t *old = malloc(q->cluster_size), *h = calloc(1, q->cluster_size);
    char *nname = name ? strdup(name) : NULL, *nfmt = flen ? strdup(fmt) : NULL;
    int r = -1;
    if (!old || !h || (name && !nname) || (flen && !nfmt)) {
        error_setf(err, "%s: out of memory", q->name);
        goto out;
    }
    if (qread(q, old, q->cluster_size, 0, "header", err) < 0)
        goto out;
    /* the fixed header, then every extension but the backing format, then the new one and the
     * name: extensions this library does not know stay as they were */
    uint64_t boff = be64(old + 8), p = q->header_length;
    memcpy(h, old, q->header_length);
    uint64_t end = boff && boff < q->cluster_size ? boff : q->cluster_size;
    for (uint64_t i = q->header_length; i + 8 <= end;) {
        uint32_t type = be32(old + i), len = be32(old + i + 4);
        uint64_t sz = 8 + (((uint64_t)len + 7) & ~7ull);
        if (type == EXT_END || sz > end - i)
            break;
        if (type != EXT_BACKING_FMT) {
            memcpy(h + p, old + i, sz);
            p += sz;
        }
        i += sz;
    }
    if (p + (flen ? 8 + ((flen + 7) & ~7ull) : 0) + 8 + nlen > q->cluster_size) {
        error_setf(err, "%s: backing file name does not fit in the header cluster", q->name);
        goto out;
    }
    if (flen) {
        put32(h + p, EXT_BACKING_FMT);
        put32(h + p + 4, (uint32_t)flen);
        memcpy(h + p + 8, fmt, flen);
        p += 8 + ((flen + 7) & ~7ull);
    }
    p += 8; /* end of extensions */
    put64(h + 8, nlen ? p : 0);
    put32(h + 16, (uint32_t)nlen);
    if (nlen)
        memcpy(h + p, name, nlen);
    /* data the caller copied into the image is durable before the header stops pointing at the
     * old backing file */
    if (meta_sync(q, err) < 0 || qwrite(q, h, p + nlen, 0, err) < 0 || meta_sync(q, err) < 0)
        goto out;
    free(q->backing_name);
    free(q->backing_fmt);
    q->backing_name = nname;
    q->backing_fmt = nfmt;
    nname = nfmt = NULL;
    r = 0;
out:
    free(old);
    free(h);
    free(nname);
    free(nfmt);
    return r;
}

/* ---- internal snapshots ---- */

/* Add delta (+1 or -1) to the refcounts of the clusters one L2 entry uses. A cluster that drops
 * to zero is punched out of the file. */
static int ref_entry(struct qcow2 *q, uint64_t entry, int delta, struct error *err)
{
    if (delta < 0)
        return free_entry(q, entry, err);
    uint64_t first, last;
    if (entry & OFLAG_COMPRESSED) {
        uint64_t off, len;
        compressed_range(q, entry, &off, &len);
        first = off >> q->cluster_bits;
        last = (off + len - 1) >> q->cluster_bits;
    } else {
        first = last = (entry & L2E_OFFSET_MASK) >> q->cluster_bits;
        if (!first)
            return 0;
    }
    for (uint64_t c = first; c <= last; c++)
        if (update_refcount(q, c, delta, err) < 0)
            return -1;
    return 0;
}

/* Can the clusters of one L2 entry take one more reference? */
static int ref_room(struct qcow2 *q, uint64_t entry, struct error *err)
{
    uint64_t first, last, rc;
    if (entry & OFLAG_COMPRESSED) {
        uint64_t off, len;
        compressed_range(q, entry, &off, &len);
        first = off >> q->cluster_bits;
        last = (off + len - 1) >> q->cluster_bits;
    } else {
        first = last = (entry & L2E_OFFSET_MASK) >> q->cluster_bits;
        if (!first)
            return 0;
    }
    for (uint64_t c = first; c <= last; c++) {
        if (get_refcount(q, c, &rc, err) < 0)
            return -1;
        if (rc >= rc_max(q))
            return error_setf(err, "%s: a refcount would overflow (refcount_bits=%u)", q->name,
                              1u << q->refcount_order);
    }
    return 0;
}

static int ref_l1_pass(struct qcow2 *q, const uint64_t *l1, uint32_t n, int delta, bool dry,
                       struct error *err);

/* Add delta to every L2 table and data cluster reachable from an L1 table (n entries, host
 * order). Data clusters count once per L1 table that reaches them, as check counts them, so a
 * shared L2 table's clusters are counted for each of its users. Increments are checked for
 * room first, so a narrow refcount width fails before anything changes. */
static int ref_l1_tree(struct qcow2 *q, const uint64_t *l1, uint32_t n, int delta,
                       struct error *err)
{
    if (delta > 0 && ref_l1_pass(q, l1, n, delta, true, err) < 0)
        return -1;
    return ref_l1_pass(q, l1, n, delta, false, err);
}

static int ref_l1_pass(struct qcow2 *q, const uint64_t *l1, uint32_t n, int delta, bool dry,
                       struct error *err)
{
    uint8_t *t = malloc(q->cluster_size);
    if (!t)
        return error_setf(err, "%s: out of memory", q->name);
    int r = 0;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        if (!l2)
            continue;
        if ((l2 & (q->cluster_size - 1)) || meta_overlap(q, l2, q->cluster_size)) {
            r = mark_corrupt(q, "invalid L2 table offset in a snapshot", err);
            break;
        }
        const uint8_t *c = tcache_get(q, &q->l2c, l2, "L2 table", err);
        if (!c) {
            r = -1;
            break;
        }
        memcpy(t, c, q->cluster_size); /* refcount updates may not evict it under us */
        for (uint64_t j = 0; j < (1ull << q->l2_bits) && r == 0; j++) {
            uint64_t e = be64(t + 8 * j);
            if (!(e & OFLAG_COMPRESSED) && (e & L2E_OFFSET_MASK) & (q->cluster_size - 1))
                r = mark_corrupt(q, "data cluster offset not cluster aligned", err);
            else
                r = dry ? ref_room(q, e, err) : ref_entry(q, e, delta, err);
        }
        if (dry) {
            if (r == 0)
                r = ref_room(q, l2, err);
            continue;
        }
        if (r == 0)
            r = update_refcount(q, l2 >> q->cluster_bits, delta, err);
        uint64_t rc;
        if (r == 0 && delta < 0 && get_refcount(q, l2 >> q->cluster_bits, &rc, err) == 0 && !rc)
            tcache_drop(&q->l2c, l2);
    }
    free(t);
    return r;
}

/* Set QCOW_OFLAG_COPIED in the active tables exactly where the refcount is 1. Called after
 * refcount changes are durable: a COPIED flag on a shared cluster would let a write change a
 * snapshot's data in place. */
static int fix_copied(struct qcow2 *q, struct error *err)
{
    for (uint32_t i = 0; i < q->l1_size; i++) {
        uint64_t l2 = q->l1[i] & L1E_OFFSET_MASK, rc;
        /* check -r runs this over damaged images too: never write a table to a bad place */
        if (!l2 || (l2 & (q->cluster_size - 1)) || l2 >= q->file_size ||
            meta_overlap(q, l2, q->cluster_size))
            continue;
        if (get_refcount(q, l2 >> q->cluster_bits, &rc, err) < 0)
            return -1;
        uint8_t *t = tcache_get(q, &q->l2c, l2, "L2 table", err);
        if (!t)
            return -1;
        bool dirty = false;
        for (uint64_t j = 0; j < (1ull << q->l2_bits); j++) {
            uint64_t e = be64(t + 8 * j), h = e & L2E_OFFSET_MASK, drc;
            if ((e & OFLAG_COMPRESSED) || !h)
                continue;
            if (get_refcount(q, h >> q->cluster_bits, &drc, err) < 0)
                return -1;
            uint64_t ne = drc == 1 ? e | OFLAG_COPIED : e & ~OFLAG_COPIED;
            if (ne != e) {
                /* the refcount lookup may have evicted the table: fetch it again */
                if (!(t = tcache_get(q, &q->l2c, l2, "L2 table", err)))
                    return -1;
                put64(t + 8 * j, ne);
                dirty = true;
            }
        }
        if (dirty) {
            if (!(t = tcache_get(q, &q->l2c, l2, "L2 table", err)))
                return -1;
            if (qwrite(q, t, q->cluster_size, l2, err) < 0) {
                tcache_drop(&q->l2c, l2);
                return -1;
            }
            tcache_mark_clean(&q->l2c, l2);
        }
        uint64_t ne = rc == 1 ? q->l1[i] | OFLAG_COPIED : q->l1[i] & ~OFLAG_COPIED;
        if (ne != q->l1[i]) {
            uint8_t b[8];
            put64(b, ne);
            if (qwrite(q, b, 8, q->l1_offset + 8 * i, err) < 0)
                return -1;
            q->l1[i] = ne;
        }
    }
    return 0;
}

/* Write l1 (n entries, host order) as a big-endian table at off. */
static int write_l1(struct qcow2 *q, const uint64_t *l1, uint32_t n, uint64_t off, uint64_t bytes,
                    struct error *err)
{
    uint8_t *b = calloc(1, bytes ? bytes : 1);
    if (!b)
        return error_setf(err, "%s: out of memory", q->name);
    for (uint32_t i = 0; i < n; i++)
        put64(b + 8 * i, l1[i]);
    int r = qwrite(q, b, bytes, off, err);
    free(b);
    return r;
}

/* Free n bytes of clusters starting at off (tables nothing references any more). */
static int free_range(struct qcow2 *q, uint64_t off, uint64_t n, struct error *err)
{
    if (!n)
        return 0;
    for (uint64_t c = off >> q->cluster_bits; c <= (off + n - 1) >> q->cluster_bits; c++)
        if (update_refcount(q, c, -1, err) < 0)
            return -1;
    return 0;
}

/* Replace the active L1 table with a bigger one (n entries) at the end of the file. */
static int grow_l1(struct qcow2 *q, uint32_t n, struct error *err)
{
    if (n <= q->l1_size)
        return 0;
    if (n > MAX_L1_BYTES / 8)
        return error_setf(err, "%s: L1 table would exceed %u bytes", q->name, MAX_L1_BYTES);
    uint64_t bytes = cluster_align(q, (uint64_t)n * 8);
    uint64_t *nl = calloc(n, 8);
    if (!nl)
        return error_setf(err, "%s: out of memory", q->name);
    memcpy(nl, q->l1, (size_t)q->l1_size * 8);
    int64_t off = alloc_clusters(q, bytes >> q->cluster_bits, err);
    uint8_t h[12];
    put32(h, n);
    put64(h + 4, (uint64_t)off);
    if (off < 0 || write_l1(q, nl, n, (uint64_t)off, bytes, err) < 0 || meta_sync(q, err) < 0 ||
        qwrite(q, h, 12, 36, err) < 0 || meta_sync(q, err) < 0) {
        free(nl);
        return -1;
    }
    uint64_t old = q->l1_offset, old_bytes = (uint64_t)q->l1_size * 8;
    free(q->l1);
    q->l1 = nl;
    q->l1_offset = (uint64_t)off;
    q->l1_size = n;
    return free_range(q, old, old_bytes, err);
}

/* Write a new snapshot table holding snaps[0..n) and switch the header to it; the old table is
 * freed afterwards. On success q->snaps becomes snaps (the old array is freed, not its
 * entries' strings, which the caller owns). */
static int write_snapshot_table(struct qcow2 *q, struct qcow2_snapshot *snaps, uint32_t n,
                                struct error *err)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < n; i++)
        size +=
            (40ull + snaps[i].extra_len + strlen(snaps[i].id) + strlen(snaps[i].name) + 7) & ~7ull;
    if (size > (64ull << 20))
        return error_setf(err, "%s: snapshot table would be too large", q->name);
    uint64_t bytes = cluster_align(q, size);
    int64_t off = 0;
    if (n) {
        uint8_t *b = calloc(1, bytes);
        if (!b)
            return error_setf(err, "%s: out of memory", q->name);
        uint64_t p = 0;
        for (uint32_t i = 0; i < n; i++) {
            const struct qcow2_snapshot *s = &snaps[i];
            size_t il = strlen(s->id), nl = strlen(s->name);
            put64(b + p, s->l1_offset);
            put32(b + p + 8, s->l1_size);
            put16(b + p + 12, (uint16_t)il);
            put16(b + p + 14, (uint16_t)nl);
            put32(b + p + 16, s->date_sec);
            put32(b + p + 20, s->date_nsec);
            put64(b + p + 24, s->vm_clock_nsec);
            put32(b + p + 32, s->vm_state_size > UINT32_MAX ? 0 : (uint32_t)s->vm_state_size);
            put32(b + p + 36, s->extra_len);
            if (s->extra_len)
                memcpy(b + p + 40, s->extra, s->extra_len);
            memcpy(b + p + 40 + s->extra_len, s->id, il);
            memcpy(b + p + 40 + s->extra_len + il, s->name, nl);
            p += (40ull + s->extra_len + il + nl + 7) & ~7ull;
        }
        off = alloc_clusters(q, bytes >> q->cluster_bits, err);
        int r = off < 0 ? -1 : qwrite(q, b, bytes, (uint64_t)off, err);
        free(b);
        if (r < 0)
            return -1;
    }
    /* the new table and every refcount raised for it are durable before the header names it */
    uint8_t h[12];
    put32(h, n);
    put64(h + 4, (uint64_t)off);
    if (meta_sync(q, err) < 0 || qwrite(q, h, 12, 60, err) < 0 || meta_sync(q, err) < 0)
        return -1;
    uint64_t old = q->snapshots_offset, old_size = q->snapshots_size;
    if (snaps != q->snaps)
        free(q->snaps);
    q->snaps = snaps;
    q->nb_snapshots = n;
    q->snapshots_offset = (uint64_t)off;
    q->snapshots_size = size;
    return free_range(q, old, old_size, err);
}

int qcow2_snapshot_find(const struct qcow2 *q, const char *id_or_name)
{
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (!strcmp(q->snaps[i].id, id_or_name))
            return (int)i;
    for (uint32_t i = 0; i < q->nb_snapshots; i++)
        if (!strcmp(q->snaps[i].name, id_or_name))
            return (int)i;
    return -1;
}

/* Read a snapshot's L1 table in host order, with n entries (zero-padded past its own size). */
static uint64_t *read_snap_l1(struct qcow2 *q, const struct qcow2_snapshot *s, uint32_t n,
                              struct error *err)
{
    uint64_t *l1 = calloc(n > s->l1_size ? n : s->l1_size ? s->l1_size : 1, 8);
    if (!l1) {
        error_setf(err, "%s: out of memory", q->name);
        return NULL;
    }
    if (qread(q, l1, (size_t)s->l1_size * 8, s->l1_offset, "snapshot L1 table", err) < 0) {
        free(l1);
        return NULL;
    }
    for (uint32_t i = 0; i < s->l1_size; i++)
        l1[i] = be64((uint8_t *)&l1[i]) & ~OFLAG_COPIED;
    return l1;
}

int qcow2_snapshot_create(struct qcow2 *q, const char *name, struct error *err)
{
    /* these rewrite tables in place: start from clean, written-back metadata */
    if (check_writable(q, err) < 0 || meta_flush(q, err) < 0)
        return -1;
    if (strlen(name) > UINT16_MAX)
        return error_setf(err, "%s: snapshot name too long", q->name);
    if (q->nb_snapshots >= MAX_SNAPSHOTS)
        return error_setf(err, "%s: too many snapshots", q->name);
    /* a new ID is one more than the largest numeric ID, as QEMU picks them */
    unsigned long long max_id = 0;
    for (uint32_t i = 0; i < q->nb_snapshots; i++) {
        unsigned long long v = strtoull(q->snaps[i].id, NULL, 10);
        if (v > max_id)
            max_id = v;
    }
    struct qcow2_snapshot s = {0};
    char id[32];
    snprintf(id, sizeof(id), "%llu", max_id + 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s.date_sec = (uint32_t)ts.tv_sec;
    s.date_nsec = (uint32_t)ts.tv_nsec;
    s.l1_size = q->l1_size;
    s.disk_size = q->size;
    s.extra_len = 24; /* vm state size, disk size, icount */
    s.id = strdup(id);
    s.name = strdup(name);
    s.extra = calloc(1, 24);
    struct qcow2_snapshot *arr = calloc(q->nb_snapshots + 1u, sizeof(*arr));
    uint64_t *l1 = calloc(q->l1_size ? q->l1_size : 1, 8);
    int r = -1;
    if (!s.id || !s.name || !s.extra || !arr || !l1) {
        error_setf(err, "%s: out of memory", q->name);
        goto out;
    }
    put64(s.extra + 8, q->size);
    for (uint32_t i = 0; i < q->l1_size; i++)
        l1[i] = q->l1[i] & ~OFLAG_COPIED;
    /* Order: L1 copy written, refcounts raised for it, COPIED cleared, all synced; then the
     * snapshot table and the header. A crash before the header leaves leaked clusters only. */
    if (ref_l1_pass(q, q->l1, q->l1_size, 1, true, err) < 0) /* fail before allocating */
        goto out;
    uint64_t bytes = cluster_align(q, (uint64_t)q->l1_size * 8);
    int64_t off = bytes ? alloc_clusters(q, bytes >> q->cluster_bits, err) : 0;
    if (off < 0 || (bytes && write_l1(q, l1, q->l1_size, (uint64_t)off, bytes, err) < 0))
        goto out;
    s.l1_offset = (uint64_t)off;
    if (ref_l1_tree(q, q->l1, q->l1_size, 1, err) < 0 || meta_sync(q, err) < 0 ||
        fix_copied(q, err) < 0)
        goto out;
    if (q->nb_snapshots)
        memcpy(arr, q->snaps, q->nb_snapshots * sizeof(*arr));
    arr[q->nb_snapshots] = s;
    r = write_snapshot_table(q, arr, q->nb_snapshots + 1, err);
    if (q->snaps == arr) { /* the table switched (freeing the old one may still have failed) */
        arr = NULL;
        s = (struct qcow2_snapshot){0};
    }
    if (r == 0)
        r = meta_sync(q, err);
out:
    free(arr);
    free(l1);
    free(s.id);
    free(s.name);
    free(s.extra);
    return r;
}

/* Apply and delete rewrite tables in place: they start from clean, written-back metadata.
 * Returns the snapshot's index, or -1. */
int qcow2_snapshot_load_tmp(struct qcow2 *q, const char *id, const char *name, struct error *err)
{
    if (q->rw)
        return error_setf(err, "Device is not readonly");
    int i = -1;
    for (uint32_t j = 0; i < 0 && j < q->nb_snapshots; j++)
        if ((id || name) && (!id || !strcmp(q->snaps[j].id, id)) &&
            (!name || !strcmp(q->snaps[j].name, name)))
            i = (int)j;
    if (i < 0)
        return error_setf(err, "Can't find snapshot");
    /* As QEMU, the disk keeps its current size: the snapshot's table, padded with unallocated
     * entries to cover it, reads zeros (or the backing file) where the snapshot had nothing. */
    const struct qcow2_snapshot *s = &q->snaps[i];
    uint32_t n = s->l1_size > q->l1_size ? s->l1_size : q->l1_size;
    uint64_t *nl = read_snap_l1(q, s, n, err);
    if (!nl)
        return -1;
    /* read-only: the tables are only looked up, never written, so swapping them is enough */
    free(q->l1);
    q->l1 = nl;
    q->l1_size = n;
    return 0;
}

static int snapshot_begin(struct qcow2 *q, const char *id_or_name, struct error *err)
{
    if (check_writable(q, err) < 0 || meta_flush(q, err) < 0)
        return -1;
    int i = qcow2_snapshot_find(q, id_or_name);
    if (i < 0)
        return error_setf(err, "%s: snapshot '%s' not found", q->name, id_or_name);
    return i;
}

int qcow2_snapshot_apply(struct qcow2 *q, const char *id_or_name, struct error *err)
{
    int i = snapshot_begin(q, id_or_name, err);
    if (i < 0)
        return -1;
    struct qcow2_snapshot *s = &q->snaps[i];
    uint64_t size = s->disk_size ? s->disk_size : q->size;
    uint64_t l2_cover = 1ull << (q->cluster_bits + q->l2_bits);
    if (size > INT64_MAX - l2_cover || (size + l2_cover - 1) / l2_cover > s->l1_size)
        return mark_corrupt(q, "snapshot L1 table smaller than its disk size", err);
    if (grow_l1(q, s->l1_size, err) < 0)
        return -1;
    uint64_t *nl = read_snap_l1(q, s, q->l1_size, err);
    if (!nl)
        return -1;
    uint64_t *old = malloc((size_t)q->l1_size * 8);
    int r = -1;
    if (!old) {
        error_setf(err, "%s: out of memory", q->name);
        goto out;
    }
    memcpy(old, q->l1, (size_t)q->l1_size * 8);
    /* the snapshot's clusters gain the active table as a user before it points at them; the
     * old active tree loses it only once the new table is durable */
    if (ref_l1_tree(q, nl, q->l1_size, 1, err) < 0 || meta_sync(q, err) < 0 ||
        write_l1(q, nl, q->l1_size, q->l1_offset, (uint64_t)q->l1_size * 8, err) < 0)
        goto out;
    memcpy(q->l1, nl, (size_t)q->l1_size * 8);
    if (size != q->size) {
        if (write_header_u64(q, 24, size, err) < 0)
            goto out;
        q->size = size;
    }
    if (meta_sync(q, err) < 0 || ref_l1_tree(q, old, q->l1_size, -1, err) < 0 ||
        meta_sync(q, err) < 0 || fix_copied(q, err) < 0)
        goto out;
    r = meta_sync(q, err);
out:
    free(nl);
    free(old);
    return r;
}

int qcow2_snapshot_delete(struct qcow2 *q, const char *id_or_name, struct error *err)
{
    int i = snapshot_begin(q, id_or_name, err);
    if (i < 0)
        return -1;
    struct qcow2_snapshot s = q->snaps[i];
    uint64_t *l1 = read_snap_l1(q, &s, s.l1_size, err);
    if (!l1)
        return -1;
    struct qcow2_snapshot *arr = calloc(q->nb_snapshots, sizeof(*arr));
    if (!arr) {
        free(l1);
        return error_setf(err, "%s: out of memory", q->name);
    }
    uint32_t n = 0;
    for (uint32_t j = 0; j < q->nb_snapshots; j++)
        if (j != (uint32_t)i)
            arr[n++] = q->snaps[j];
    /* the table without the entry is durable before any of its clusters is released */
    int r = write_snapshot_table(q, arr, n, err);
    if (q->snaps != arr) {
        free(arr);
        free(l1);
        return -1;
    }
    free(s.id);
    free(s.name);
    free(s.extra);
    if (r == 0)
        r = ref_l1_tree(q, l1, s.l1_size, -1, err);
    free(l1);
    if (r == 0)
        r = free_range(q, s.l1_offset, (uint64_t)s.l1_size * 8, err);
    if (r == 0)
        r = meta_sync(q, err);
    if (r == 0)
        r = fix_copied(q, err);
    if (r == 0)
        r = meta_sync(q, err);
    return r;
}

/* ---- info ---- */

int qcow2_get_info(struct qcow2 *q, struct qcow2_info *info, struct error *err)
{
    struct stat st;
    if (fstat(q->fd, &st) < 0)
        return error_setf_errno(err, errno, "%s", q->name);
    *info = (struct qcow2_info){
        .virtual_size = q->size,
        .disk_size = (uint64_t)st.st_blocks * 512,
        .cluster_size = q->cluster_size,
        .version = (int)q->version,
        .lazy_refcounts = q->compat & COMPAT_LAZY_REFCOUNTS,
        .corrupt = q->incompat & INCOMPAT_CORRUPT,
        .dirty = q->incompat & INCOMPAT_DIRTY,
        .extended_l2 = q->incompat & INCOMPAT_EXTL2,
        .refcount_bits = 1u << q->refcount_order,
        .compression_type = q->compression == QCOW2_COMPRESS_ZSTD ? "zstd" : "zlib",
        .incompatible = q->incompat,
        .compatible = q->compat,
        .autoclear = q->autoclear,
        .backing_file = q->backing_name,
        .backing_fmt = q->backing_fmt,
        .nb_snapshots = q->nb_snapshots,
    };
    return 0;
}

unsigned qcow2_snapshot_count(const struct qcow2 *q)
{
    return q->nb_snapshots;
}

const struct qcow2_snapshot *qcow2_snapshot_get(const struct qcow2 *q, unsigned i)
{
    return i < q->nb_snapshots ? &q->snaps[i] : NULL;
}

void qcow2_info_print(struct qcow2 *q, FILE *out)
{
    struct qcow2_info in;
    struct error err = {0};
    char a[32], b[32];
    if (qcow2_get_info(q, &in, &err) < 0) {
        fprintf(out, "%s\n", err.msg);
        return;
    }
    block_size_to_str(in.virtual_size, a, sizeof(a));
    block_size_to_str(in.disk_size, b, sizeof(b));
    fprintf(out,
            "image: %s\nfile format: qcow2\nvirtual size: %s (%" PRIu64 " bytes)\n"
            "disk size: %s\ncluster_size: %" PRIu64 "\n",
            q->name, a, in.virtual_size, b, in.cluster_size);
    if (in.backing_file)
        fprintf(out, "backing file: %s\n", in.backing_file);
    if (in.backing_fmt)
        fprintf(out, "backing file format: %s\n", in.backing_fmt);
    if (in.nb_snapshots) {
        fprintf(out, "Snapshot list:\n%-10s%-18s%12s%20s%16s\n", "ID", "TAG", "VM SIZE", "DATE",
                "VM CLOCK");
        for (unsigned i = 0; i < in.nb_snapshots; i++) {
            const struct qcow2_snapshot *s = &q->snaps[i];
            char date[32], vms[32];
            time_t t = (time_t)s->date_sec;
            struct tm tm;
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
            block_size_to_str(s->vm_state_size, vms, sizeof(vms));
            uint64_t ns = s->vm_clock_nsec, secs = ns / 1000000000ull;
            fprintf(out,
                    "%-10s%-18s%12s%20s %04" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%03" PRIu64 "\n",
                    s->id, s->name, vms, date, secs / 3600, secs / 60 % 60, secs % 60,
                    ns / 1000000 % 1000);
        }
    }
    fprintf(out, "Format specific information:\n    compat: %s\n",
            in.version >= 3 ? "1.1" : "0.10");
    if (in.version >= 3)
        fprintf(out,
                "    compression type: %s\n    lazy refcounts: %s\n    refcount bits: %u\n"
                "    corrupt: %s\n    extended l2: %s\n",
                in.compression_type, in.lazy_refcounts ? "true" : "false", in.refcount_bits,
                in.corrupt ? "true" : "false", in.extended_l2 ? "true" : "false");
    else
        fprintf(out, "    compression type: %s\n    refcount bits: %u\n", in.compression_type,
                in.refcount_bits);
    if (in.dirty)
        fprintf(out, "    dirty: true\n");
}
