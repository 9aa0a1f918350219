/* Inside the block layer: the backend state shared by the format drivers and the file protocol. */
#ifndef KEMU_BLOCK_BLOCK_INT_H
#define KEMU_BLOCK_BLOCK_INT_H

#include <pthread.h>

#include "block/block.h"

/* A format driver maps the guest's view (offsets of the virtual disk) onto the protocol. */
struct block_format_ops {
    const char *name;
    /* bb->file is open; set bb->size. */
    int (*open)(struct block_backend *bb, struct error *err);
    /* Range-checked request to the protocol (file_submit) or block_complete_later(). */
    void (*submit)(struct block_backend *bb, struct block_request *req);
    void (*close)(struct block_backend *bb);
    /* Optional: block_backend_commit(). */
    int (*commit)(struct block_backend *bb, struct error *err);
    /* Optional: a request the driver marked fmt_io completes (owner thread, before its
     * callback); returns the request's result. */
    int (*complete)(struct block_backend *bb, struct block_request *req, int ret);
};

extern const struct block_format_ops block_format_raw;
/* qcow2 (qcow2_driver.c), also the temporary overlay of snapshot=on over a raw or qcow2 image. */
extern const struct block_format_ops block_format_qcow2;

#define POOL_MAX_THREADS 16

struct thread_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct block_request *head, **tail;
    unsigned queued, idle, nthreads;
    bool stop;
    pthread_t threads[POOL_MAX_THREADS];
};

struct aio_native;
struct aio_uring;

/* Most bounce-buffer bytes one backend holds at once: a guest that sends huge unaligned
 * requests gets I/O errors instead of making kemu allocate without bound. */
#define BLOCK_BOUNCE_BUDGET (256ULL << 20)

struct block_backend {
    const struct block_format_ops *fmt;
    void *fmt_state;
    char *filename;

    /* Protocol: the host file. */
    int fd;
    int open_flags;
    bool is_blockdev;
    bool direct;          /* O_DIRECT: aligned buffers, offsets and lengths */
    bool direct_optional; /* a file system without O_DIRECT gets buffered I/O (qcow2) */
    unsigned align;       /* logical block size for O_DIRECT, else 512 */
    uint64_t file_size;

    enum block_cache cache;
    enum block_aio aio;
    enum detect_zeroes dz;
    bool readonly, discard_unmap;
    uint64_t size; /* virtual disk size (the format's view) */
    /* Largest read or write the format serves in one piece (0: no limit); set by open. */
    uint64_t max_transfer;

    /* What the format driver's open needs beyond the file. */
    const char *image_format; /* "raw" or "qcow2": the image's own format */
    bool probed_raw;          /* probing guessed raw */
    bool snapshot;            /* snapshot=on: fmt is qcow2, over a temporary overlay */
    bool locking;             /* QEMU's image locks are taken on fd */
    uint64_t l2_cache_size;
    enum block_lazy lazy_refcounts;

    unsigned inflight;        /* owner thread only */
    uint64_t bounce_inflight; /* bytes of O_DIRECT bounce buffers in flight (owner thread) */
    bool plugged;
    int efd; /* completion eventfd */

    /* Completions from pool threads and deferred immediate completions. */
    pthread_mutex_t done_lock;
    struct block_request *done_head, **done_tail;

    struct thread_pool pool;
    struct aio_native *native;
    struct aio_uring *uring;
};

/* Protocol (file.c). */
int file_open(struct block_backend *bb, const struct block_open_opts *o, struct error *err);
void file_close(struct block_backend *bb);
void file_submit(struct block_backend *bb, struct block_request *req);
void file_unplug(struct block_backend *bb);
/* The alignment O_DIRECT I/O on fd needs: logical block size, 512 or more. */
unsigned file_probe_alignment(int fd);
/* Requests are stuck in the kernel and the backend is being given up (close at exit): cancel
 * what can be cancelled and close nothing that would wait for them. */
void file_abandon(struct block_backend *bb);
/* Reap engine completions into callbacks; returns how many. */
unsigned file_process(struct block_backend *bb);

/* Core (block.c). */
/* Take QEMU's image locks on fd for a read-only or read-write user (error: who holds them). */
int block_lock_fd(int fd, const char *name, bool readonly, struct error *err);
/* Share (drop the "not shared" locks on) or stop sharing write and resize on fd: a read-only
 * user that is about to write through a second descriptor of its own (commit under
 * snapshot=on) shares them for that time, or its own locks would refuse the second one. */
void block_lock_share_write(int fd, bool share);
/* Complete req with ret on the owner thread, later (any thread may call). */
void block_complete_later(struct block_backend *bb, struct block_request *req, int ret);
/* Finish req on the owner thread now: bounce copy-out, callback. */
void block_complete_now(struct block_backend *bb, struct block_request *req, int ret);

#endif
