/* A synchronous qcow2 image library (QEMU's format, versions 2 and 3): open, read through the
 * L1/L2 tables with a bounded write-back cache of L2 tables and refcount blocks, write with
 * cluster allocation and crash-safe metadata ordering, compressed writes, zero/discard, create,
 * resize, check (qemu-img check semantics), info, map, internal snapshots and backing file
 * changes. Every function that can fail fills a struct error with "FILE: reason" and returns -1
 * (or NULL). */
#ifndef KEMU_BLOCK_QCOW2_H
#define KEMU_BLOCK_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"

struct qcow2;

/* Where unallocated clusters read from. read() fills buf[0..len) from the backing image at off;
 * the library never asks for bytes at or past size (it zero-fills them itself). close() may be
 * NULL; it is called once when the qcow2 image that owns the backing is closed. */
struct qcow2_backing {
    int (*read)(void *opaque, uint64_t off, void *buf, size_t len, struct error *err);
    void (*close)(void *opaque);
    void *opaque;
    uint64_t size;
};

/* Lazy refcounts (QEMU's runtime option lazy-refcounts): while on, the first metadata change
 * sets the dirty bit and refcount blocks go to disk lazily; a clean close writes them and clears
 * the bit, a crash leaves them to be rebuilt at the next read-write open. The option changes
 * only the session, never the image's compatible feature bit. */
enum qcow2_lazy {
    QCOW2_LAZY_IMAGE, /* as the image's lazy_refcounts feature bit says */
    QCOW2_LAZY_ON,    /* needs a version 3 image */
    QCOW2_LAZY_OFF,
};

struct qcow2_open_opts {
    bool read_write;
    bool no_backing; /* do not open the backing chain (unallocated clusters read zero) */
    /* opened for check -r: read-write even if marked corrupt, and a dirty image is not
     * repaired by the open but left for qcow2_check to report and repair */
    bool check;
    bool no_sync;           /* cache=unsafe: never fdatasync (write order is still kept) */
    uint64_t l2_cache_size; /* bytes of L2 tables to cache; 0 = 1 MiB (at least 2 tables) */
    enum qcow2_lazy lazy_refcounts;
};

/* Open by path (the backing chain is opened relative to the image's directory). */
struct qcow2 *qcow2_open(const char *path, const struct qcow2_open_opts *opts, struct error *err);
/* Open an already-open fd (duplicated; the caller keeps its own). name is for messages and for
 * resolving a relative backing file name. */
struct qcow2 *qcow2_open_fd(int fd, const char *name, const struct qcow2_open_opts *opts,
                            struct error *err);
/* Flush and close, closing the backing chain too; with lazy refcounts, the refcounts are written
 * and the dirty bit cleared. Returns -1 if the final flush failed (the image stays dirty). */
int qcow2_close(struct qcow2 *q, struct error *err);

/* Replace the backing image (the old one is closed). The struct is copied. */
void qcow2_set_backing(struct qcow2 *q, const struct qcow2_backing *b);
/* The image as a backing interface for another image; close() closes q. */
struct qcow2_backing qcow2_as_backing(struct qcow2 *q);

/* Non-fatal notes from open (e.g. "FILE: image is marked corrupt; opened read-only"), or "". */
const char *qcow2_warning(const struct qcow2 *q);
uint64_t qcow2_size(const struct qcow2 *q);
uint64_t qcow2_cluster_size(const struct qcow2 *q);
bool qcow2_is_read_only(const struct qcow2 *q);

/* Guest I/O. Ranges must lie within the virtual size. */
int qcow2_read(struct qcow2 *q, uint64_t offset, void *buf, size_t len, struct error *err);
int qcow2_write(struct qcow2 *q, uint64_t offset, const void *buf, size_t len, struct error *err);
/* Split guest I/O, for a caller that runs the data transfers itself: the mapping (and, for
 * writes, the allocation and the L2 updates) goes through the library under the caller's lock,
 * the transfers to and from the file need no lock. A write plan allocates its clusters at
 * begin and makes them visible at end, after the data is on the file, so the crash ordering of
 * qcow2_write holds. The caller keeps overlapping writes (and zero/discard) out of a range
 * while a plan that allocates in it runs (qcow2_write_plan.allocates). */
enum qcow2_ext_type {
    QCOW2_EXT_DATA,    /* in the file at host */
    QCOW2_EXT_ZERO,    /* reads as zeros */
    QCOW2_EXT_BACKING, /* from the backing image: qcow2_read_backing */
    QCOW2_EXT_LIB,     /* compressed: qcow2_read */
};
/* What a partially written new cluster holds outside the written bytes. */
enum qcow2_fill {
    QCOW2_FILL_NONE,    /* nothing to write there: zeros already, or the cluster is in place */
    QCOW2_FILL_ZERO,    /* zeros must be written */
    QCOW2_FILL_BACKING, /* the backing image's bytes (read without the image's lock) */
    QCOW2_FILL_OLD,     /* the cluster's current contents (read under the lock, before end) */
};
struct qcow2_extent {
    uint64_t off, len; /* guest bytes */
    uint64_t host;     /* DATA: file offset of off */
    enum qcow2_ext_type type;
    /* writes: not NONE on a partial cluster only (an extent of its own); the caller writes the
     * whole cluster, qcow2_plan_fill's bytes with the guest's over them */
    enum qcow2_fill fill;
};
#define QCOW2_PLAN_MAX 64 /* clusters per plan */
struct qcow2_write_plan {
    /* in: plan only a write that goes whole, in one piece, to new clusters needing no fill
     * (else n is 0 and nothing changed) */
    bool only_fresh;
    uint64_t off, len; /* the guest range planned: a prefix of what was asked */
    unsigned n;
    struct qcow2_extent ext[QCOW2_PLAN_MAX]; /* all DATA, in guest order */
    bool allocates;                          /* L2 entries change at end */
    /* private */
    unsigned npend;
    struct qcow2_plan_pend {
        uint64_t guest, entry, old;
        bool free_old, fresh;
    } pend[QCOW2_PLAN_MAX];
};
/* Map a prefix of [off, off+len) into at most max extents; returns how many (>= 1). */
int qcow2_read_map(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_extent *ext,
                   unsigned max, struct error *err);
/* Read from the backing image (zeros where there is none): QCOW2_EXT_BACKING extents. */
int qcow2_read_backing(struct qcow2 *q, uint64_t off, void *buf, size_t len, struct error *err);
int qcow2_write_begin(struct qcow2 *q, uint64_t off, uint64_t len, struct qcow2_write_plan *p,
                      struct error *err);
/* The cluster an extent with a fill lies in, as it must be written before the guest's bytes go
 * over it (buf: cluster size bytes). */
int qcow2_plan_fill(struct qcow2 *q, const struct qcow2_extent *e, void *buf, struct error *err);
/* ok: the data transfers succeeded, the new clusters go live; else they are given back. */
int qcow2_write_end(struct qcow2 *q, struct qcow2_write_plan *p, bool ok, struct error *err);
/* 1 if [off, off+len) lies in clusters of the image's own, written in place, one after another
 * in the file (*host: the file offset of off); 0 if not, -1 on error. */
int qcow2_write_inplace(struct qcow2 *q, uint64_t off, uint64_t len, uint64_t *host,
                        struct error *err);
/* The descriptor the library does its I/O on (buffered unless the caller's was O_DIRECT). */
int qcow2_fd(const struct qcow2 *q);

/* Write whole clusters compressed (zlib or zstd, the image's type) where that makes them
 * smaller; off is cluster aligned and len a multiple of the cluster size or reaching the end of
 * the image. Only unallocated clusters are compressed; allocated ones are overwritten. */
int qcow2_write_compressed(struct qcow2 *q, uint64_t off, const void *buf, size_t len,
                           struct error *err);
/* Make [off, off+len) read as zeros; unmap frees whole clusters (v3: zero flag). */
int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len, bool unmap, struct error *err);
/* Free whole clusters in the range (advisory: partial clusters are left alone); reads as zeros
 * afterwards, or as the backing file on v2 images. */
int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len, struct error *err);
/* Write back the cached metadata (in crash-safe order) and fdatasync: everything written before
 * is durable afterwards. With lazy refcounts (as in QEMU) the refcount blocks stay cached and the
 * dirty bit stays set: a crash after the flush loses no data but needs the refcounts rebuilt. */
int qcow2_flush(struct qcow2 *q, struct error *err);

enum qcow2_prealloc {
    QCOW2_PREALLOC_OFF,
    QCOW2_PREALLOC_METADATA,
    QCOW2_PREALLOC_FALLOC,
    QCOW2_PREALLOC_FULL
};
enum qcow2_compression { QCOW2_COMPRESS_ZLIB = 0, QCOW2_COMPRESS_ZSTD = 1 };

struct qcow2_create_opts {
    uint64_t cluster_size; /* 0 = 64 KiB */
    int version;           /* 2 (compat=0.10) or 3 (compat=1.1); 0 = 3 */
    const char *backing_file;
    const char *backing_fmt; /* "qcow2", "raw" or NULL */
    bool lazy_refcounts;
    unsigned refcount_bits; /* 0 = 16 */
    enum qcow2_prealloc prealloc;
    enum qcow2_compression compression;
};

/* Create (truncate) an image. size 0 with a backing file takes the backing file's size. */
int qcow2_create(const char *path, uint64_t size, const struct qcow2_create_opts *opts,
                 struct error *err);

/* qemu-img check. */
struct qcow2_check_result {
    uint64_t corruptions, leaks, check_errors;
    uint64_t corruptions_fixed, leaks_fixed;
    uint64_t allocated_clusters, total_clusters, compressed_clusters;
    uint64_t image_end_offset;
};
#define QCOW2_FIX_LEAKS  1u
#define QCOW2_FIX_ERRORS 2u
/* Rebuild the refcounts from the header, L1/L2 tables, snapshot and refcount tables and compare
 * them with the stored ones. report (may be NULL) gets one line per problem, as qemu-img check.
 * Returns qemu-img check's exit code: 0 clean, 2 corruptions, 3 leaks only (after any repair);
 * -1 with err when the check itself could not run. */
int qcow2_check(struct qcow2 *q, unsigned fix, struct qcow2_check_result *res, FILE *report,
                struct error *err);

struct qcow2_snapshot {
    char *id, *name;
    uint64_t l1_offset;
    uint32_t l1_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size; /* 0 if the entry has no such extra data */
    uint8_t *extra;     /* the entry's extra data, kept verbatim when the table is rewritten */
    uint32_t extra_len;
};

struct qcow2_info {
    uint64_t virtual_size, disk_size, cluster_size;
    int version;
    bool lazy_refcounts, corrupt, dirty, extended_l2;
    unsigned refcount_bits;
    const char *compression_type; /* "zlib" or "zstd" */
    uint64_t incompatible, compatible, autoclear;
    const char *backing_file; /* NULL if none; owned by the image */
    const char *backing_fmt;  /* NULL if not recorded */
    unsigned nb_snapshots;
};

int qcow2_get_info(struct qcow2 *q, struct qcow2_info *info, struct error *err);
unsigned qcow2_snapshot_count(const struct qcow2 *q);
const struct qcow2_snapshot *qcow2_snapshot_get(const struct qcow2 *q, unsigned i);
/* Change the virtual size. Shrinking drops every cluster past the new end; growing makes the new
 * part read as zeros (even over a longer backing file). */
int qcow2_resize(struct qcow2 *q, uint64_t size, struct error *err);

/* What backs guest bytes [off, off+len) (len at most max, at most one cluster), following the
 * backing chain, in qemu-img map's terms: depth is the layer (0 = this image) that has them. */
struct qcow2_map_entry {
    uint64_t len;
    int depth;
    bool present, zero, data, compressed;
    bool has_offset;
    uint64_t offset;  /* in file, when has_offset */
    const char *file; /* the layer's file name, owned by the image */
};
int qcow2_map(struct qcow2 *q, uint64_t off, uint64_t max, struct qcow2_map_entry *e,
              struct error *err);

/* Where commit puts what the top layers hold: write and zero a range of the target image. */
struct qcow2_sink {
    int (*write)(void *opaque, uint64_t off, const void *buf, size_t len, struct error *err);
    int (*zero)(void *opaque, uint64_t off, uint64_t len, struct error *err);
    void *opaque;
};
/* Give sink every range that the top `depth` layers of the chain hold themselves (1: this image
 * only), data or zeros, in runs of at most 2 MiB; progress (may be NULL) sees the fraction done. */
int qcow2_copy_top(struct qcow2 *q, int depth, const struct qcow2_sink *sink,
                   void (*progress)(void *opaque, double done), void *popaque, struct error *err);
/* The backing file the header names, as a path (relative names are taken from the image's
 * directory; malloc'd) and its format ("qcow2", "raw", or NULL: to be probed). *path is NULL when
 * the image has none. */
int qcow2_backing_path(const struct qcow2 *q, char **path, const char **fmt, struct error *err);
/* Close the backing chain and open it again from the header, as at open time: after the backing
 * image was written through another handle (commit), cached tables of the old one are stale. */
int qcow2_reopen_backing(struct qcow2 *q, struct error *err);
/* Drop every cluster of the active image (commit's emptying of the top image). */
int qcow2_make_empty(struct qcow2 *q, struct error *err);
/* Rewrite the backing file name and format in the header (name NULL or "" removes the backing
 * file; fmt may be NULL). Only the header changes: the caller copies any data first. Other
 * header extensions are kept. The open backing image is not replaced. */
int qcow2_change_backing(struct qcow2 *q, const char *name, const char *fmt, struct error *err);

/* Internal snapshots, as qemu-img snapshot. Snapshots are found by ID first, then by name
 * (the first match in table order). create shares every cluster of the active tables with the
 * new snapshot (refcounts raised, COPIED flags cleared), so later writes copy on write; apply
 * makes the snapshot's tables the active ones; delete drops its references and frees what no
 * other table uses. */
int qcow2_snapshot_create(struct qcow2 *q, const char *name, struct error *err);
int qcow2_snapshot_apply(struct qcow2 *q, const char *id_or_name, struct error *err);
int qcow2_snapshot_delete(struct qcow2 *q, const char *id_or_name, struct error *err);
/* qemu-img convert -l: a read-only image reads as the snapshot (found by ID and name; either may
 * be NULL) from now on, in memory only; QEMU's messages ("Can't find snapshot"). */
int qcow2_snapshot_load_tmp(struct qcow2 *q, const char *id, const char *name, struct error *err);
/* Index of the snapshot with that ID or name, or -1. */
int qcow2_snapshot_find(const struct qcow2 *q, const char *id_or_name);
/* Print a qemu-img info style report. */
void qcow2_info_print(struct qcow2 *q, FILE *out);

#endif
