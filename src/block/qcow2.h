/* A synchronous qcow2 image library (QEMU's format, versions 2 and 3): open, read through the
 * L1/L2 tables with a bounded L2 cache, write with cluster allocation and crash-safe metadata
 * ordering, zero/discard, create, check (qemu-img check semantics) and info. Every function that
 * can fail fills a struct error with "FILE: reason" and returns -1 (or NULL). */
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

struct qcow2_open_opts {
    bool read_write;
    bool no_backing;        /* do not open the backing chain (unallocated clusters read zero) */
    bool check;             /* opened for check -r: allow read-write even if marked corrupt */
    uint64_t l2_cache_size; /* bytes of L2 tables to cache; 0 = 1 MiB (at least 2 tables) */
};

/* Open by path (the backing chain is opened relative to the image's directory). */
struct qcow2 *qcow2_open(const char *path, const struct qcow2_open_opts *opts, struct error *err);
/* Open an already-open fd (duplicated; the caller keeps its own). name is for messages and for
 * resolving a relative backing file name. */
struct qcow2 *qcow2_open_fd(int fd, const char *name, const struct qcow2_open_opts *opts,
                            struct error *err);
/* Flush and close, closing the backing chain too. Returns -1 if the final flush failed. */
int qcow2_close(struct qcow2 *q, struct error *err);

/* Replace the backing image (the old one is closed). The struct is copied. */
void qcow2_set_backing(struct qcow2 *q, const struct qcow2_backing *b);
/* The image as a backing interface for another image; close() closes q. */
struct qcow2_backing qcow2_as_backing(struct qcow2 *q);

/* Non-fatal notes from open (e.g. "FILE: image is marked corrupt; opened read-only"), or "". */
const char *qcow2_warning(const struct qcow2 *q);
uint64_t qcow2_size(const struct qcow2 *q);
bool qcow2_is_read_only(const struct qcow2 *q);

/* Guest I/O. Ranges must lie within the virtual size. */
int qcow2_read(struct qcow2 *q, uint64_t offset, void *buf, size_t len, struct error *err);
int qcow2_write(struct qcow2 *q, uint64_t offset, const void *buf, size_t len, struct error *err);
/* Make [off, off+len) read as zeros; unmap frees whole clusters (v3: zero flag). */
int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len, bool unmap, struct error *err);
/* Free whole clusters in the range (advisory: partial clusters are left alone); reads as zeros
 * afterwards, or as the backing file on v2 images. */
int qcow2_discard(struct qcow2 *q, uint64_t off, uint64_t len, struct error *err);
/* fdatasync the file (metadata is written through, so nothing else is pending). */
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
/* Print a qemu-img info style report. */
void qcow2_info_print(struct qcow2 *q, FILE *out);

#endif
