/*
 * The block backend: an asynchronous request interface over one image, in two layers as QEMU's
 * block layer: a format driver (raw, qcow2; struct block_format_ops) maps guest offsets to the
 * protocol layer, the host file (file.c), which runs the I/O with one of three engines
 * (aio=threads, native, io_uring). qcow2 images run the synchronous qcow2 library (qcow2.h) on a
 * worker thread of their own whatever aio= says (see qcow2_driver.c).
 *
 * Locking. Every image is locked with open file description locks on the byte ranges QEMU's
 * file-posix driver uses (100 + permission bit: permissions held; 200 + bit: permissions not
 * shared), so a kemu and a QEMU, or two kemus, cannot both write one image: a read-write open
 * holds consistent-read, write, write-unchanged and resize and shares neither write nor resize;
 * a read-only open holds consistent-read and shares neither write nor resize either (as a QEMU
 * guest device does). Two read-only opens coexist. File systems without OFD locks are not locked.
 * Only when block_open_opts.locking is set (every -drive unless file.locking=off).
 *
 * Threads. A backend has one owner thread: the thread that submits requests, calls
 * block_backend_process() and block_backend_drain(). Completion callbacks run only on that
 * thread, inside block_backend_process() or block_backend_drain(), never inside
 * block_backend_submit(), so a device can keep its queues single-threaded. The owner waits for
 * completions by polling block_backend_completion_fd() (readable when completions are pending)
 * and then calls block_backend_process(). The owner may change (the device's worker thread is
 * restarted after a reset) as long as two threads never use the backend at once.
 */
#ifndef KEMU_BLOCK_BLOCK_H
#define KEMU_BLOCK_BLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/error.h"

struct block_backend;
struct block_request;

enum block_op {
    BLOCK_OP_READ,
    BLOCK_OP_WRITE,
    BLOCK_OP_FLUSH,
    BLOCK_OP_DISCARD,
    BLOCK_OP_WRITE_ZEROES,
};

/* ret: 0 or -errno. */
typedef void block_complete_fn(struct block_request *req, int ret);

struct block_request {
    /* Filled by the caller. */
    enum block_op op;
    uint64_t offset;   /* bytes; READ, WRITE, DISCARD, WRITE_ZEROES */
    uint64_t len;      /* bytes: the sum of the iovec lengths for READ/WRITE */
    struct iovec *iov; /* READ/WRITE data; kept valid until completion */
    int iovcnt;
    bool may_unmap; /* WRITE_ZEROES: the range may be deallocated (if discard=unmap) */
    block_complete_fn *cb;
    void *opaque; /* for the caller */

    /* Private to the block layer. */
    struct block_request *next;
    void *bounce;        /* aligned copy for O_DIRECT when iov is not aligned */
    uint64_t bounce_off; /* offset of the request inside the bounce buffer */
    uint64_t bounce_len; /* aligned length of the bounce I/O */
    struct iovec bounce_iov;
    struct iovec *eiov; /* what the engine transfers: iov or bounce_iov */
    int eiovcnt;
    uint64_t eoff, elen;
    enum block_op eop; /* what the engine runs (a zero WRITE becomes WRITE_ZEROES) */
    bool eunmap;
    bool fmt_io;    /* the format driver sent it to the protocol itself: fmt->complete runs first */
    void *fmt_priv; /* the format driver's, with fmt_io */
    int ret;
    uint64_t engine[8]; /* engine state (the Linux AIO control block) */
};

enum block_cache {
    BLOCK_CACHE_WRITEBACK, /* QEMU's default */
    BLOCK_CACHE_NONE,
    BLOCK_CACHE_WRITETHROUGH,
    BLOCK_CACHE_DIRECTSYNC,
    BLOCK_CACHE_UNSAFE,
};

enum block_aio {
    BLOCK_AIO_THREADS,
    BLOCK_AIO_NATIVE,
    BLOCK_AIO_IO_URING,
};

enum detect_zeroes {
    DETECT_ZEROES_OFF,
    DETECT_ZEROES_ON,
    DETECT_ZEROES_UNMAP,
};

/* How to open an image: what drive_open() derives from -drive. */
/* Lazy refcounts for a session on a qcow2 image (QEMU's lazy-refcounts=on|off). */
enum block_lazy {
    BLOCK_LAZY_IMAGE, /* as the image's lazy_refcounts compatible bit says */
    BLOCK_LAZY_ON,    /* on (version 3 images only) */
    BLOCK_LAZY_OFF,
};

struct block_open_opts {
    const char *file;
    const char *format; /* "raw" or "qcow2" (NULL: raw, or probed if probe is set) */
    enum block_cache cache;
    enum block_aio aio;
    bool readonly;
    bool discard_unmap;
    enum detect_zeroes dz;
    /* format NULL: qcow2 if the file starts with qcow2's magic, else raw (the caller warns, as
     * QEMU does: block_backend_format_probed_raw()). */
    bool probe;
    /* Open the image read-only under a temporary qcow2 overlay in $TMPDIR (else /var/tmp),
     * deleted at once: writes go to the overlay and vanish at close. Flushes are not needed for
     * the overlay and are skipped (QEMU opens its temporary overlay with cache=unsafe). */
    bool snapshot;
    uint64_t l2_cache_size;         /* qcow2: bytes of L2 tables cached; 0 = the library's 1 MiB */
    enum block_lazy lazy_refcounts; /* qcow2, QEMU's lazy-refcounts= */
    /* Take QEMU's image locks (see above). drive_open() sets it unless file.locking=off; other
     * users (tests, fuzz harnesses that open one file twice) leave it off. */
    bool locking;
};

int block_backend_open(const struct block_open_opts *o, struct block_backend **out,
                       struct error *err);
/* Drains, then frees. On the owner thread (or when no thread uses the backend). */
void block_backend_close(struct block_backend *bb);

/* Start a request; its callback runs later on the owner thread (errors included). */
void block_backend_submit(struct block_backend *bb, struct block_request *req);
/* Batch submissions: between plug and unplug, native AIO and io_uring queue the requests and
 * submit them with one system call at unplug. Optional. */
void block_backend_plug(struct block_backend *bb);
void block_backend_unplug(struct block_backend *bb);
/* An eventfd, readable when completions are pending; do not read it, call process. */
int block_backend_completion_fd(const struct block_backend *bb);
/* Run the callbacks of the completed requests; returns how many. */
unsigned block_backend_process(struct block_backend *bb);
/* Wait until no request is in flight, running callbacks (including those submitted by the
 * callbacks). */
void block_backend_drain(struct block_backend *bb);
unsigned block_backend_inflight(const struct block_backend *bb);

/* QEMU's HMP commit: write what the image holds itself into its backing file (under
 * snapshot=on: into the image under the temporary overlay), make that durable, then empty the
 * image, so the guest sees the same disk. Guest requests wait meanwhile. Any thread. Returns 0
 * or -errno with err set (-ENOTSUP: a raw image or a qcow2 image without a backing file). */
int block_backend_commit(struct block_backend *bb, struct error *err);

uint64_t block_backend_size(const struct block_backend *bb);
bool block_backend_readonly(const struct block_backend *bb);
/* Volatile write cache in effect (cache=writeback, none, unsafe): flushes are needed. */
bool block_backend_writeback(const struct block_backend *bb);
/* Largest read or write worth one request: larger ones are split by the format (qcow2: one
 * write plan, QCOW2_PLAN_MAX clusters). UINT64_MAX when there is no such limit (raw). */
uint64_t block_backend_max_transfer(const struct block_backend *bb);
/* Logical block size the I/O must be aligned to with O_DIRECT (512 for buffered I/O). */
unsigned block_backend_block_size(const struct block_backend *bb);
bool block_backend_discard_unmap(const struct block_backend *bb);
/* The open(2) flags in use (O_DIRECT, O_DSYNC, O_RDONLY/O_RDWR), for tests and messages. */
int block_backend_open_flags(const struct block_backend *bb);
int block_backend_fd(const struct block_backend *bb);

/* The image's format: "raw" or "qcow2" (the image's own format, also under snapshot=on). */
const char *block_backend_format(const struct block_backend *bb);
/* The format was probed (format NULL, probe set) and probing found raw: QEMU warns then. */
bool block_backend_format_probed_raw(const struct block_backend *bb);
const char *block_backend_filename(const struct block_backend *bb);

const char *block_cache_name(enum block_cache c);
const char *block_aio_name(enum block_aio a);
/* "1 GiB", "512 B", "1.5 MiB": a size as qemu-img's size_to_str prints it (3 significant digits).
 */
void block_size_to_str(uint64_t v, char *out, size_t n);

#endif
