/*
 * virtio-blk (VIRTIO 1.x, 5.2), device ID 2, over a block backend.
 *
 * One worker thread per device, started at DRIVER_OK, services every queue: it waits on the
 * queues' kick fds and on the backend's completion fd, pops chains, submits the I/O straight into
 * guest memory (the backend's owner thread is this worker, so completions also run here), and
 * pushes the used buffers. No lock is taken per request.
 *
 * Failed requests follow werror/rerror (block/drive.h): report completes them with IOERR, ignore
 * with OK, stop keeps them on the worker (held) until virtio_blk_retry() submits them again; a
 * stop of the device (reset, exit) drops them. Every failure is told to params.on_error.
 */
#ifndef KEMU_VIRTIO_BLK_H
#define KEMU_VIRTIO_BLK_H

#include <stdbool.h>

#include "block/block.h"
#include "block/drive.h"
#include "core/error.h"
#include "core/memory.h"
#include "virtio/device.h"

/* Feature bits (spec 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_GEOMETRY     4
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_CONFIG_WCE   11
#define VIRTIO_BLK_F_MQ           12
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status (spec 5.2.6). */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK           0
#define VIRTIO_BLK_S_IOERR        1
#define VIRTIO_BLK_S_UNSUPP       2

#define VIRTIO_BLK_ID_BYTES    20
#define VIRTIO_BLK_SECTOR_SIZE 512

/* Config space offsets (struct virtio_blk_config). */
#define VIRTIO_BLK_CFG_CAPACITY                 0
#define VIRTIO_BLK_CFG_SIZE_MAX                 8
#define VIRTIO_BLK_CFG_SEG_MAX                  12
#define VIRTIO_BLK_CFG_BLK_SIZE                 20
#define VIRTIO_BLK_CFG_PHYSICAL_BLOCK_EXP       24
#define VIRTIO_BLK_CFG_MIN_IO_SIZE              26
#define VIRTIO_BLK_CFG_OPT_IO_SIZE              28
#define VIRTIO_BLK_CFG_WRITEBACK                32
#define VIRTIO_BLK_CFG_NUM_QUEUES               34
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECTORS      36
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG          40
#define VIRTIO_BLK_CFG_DISCARD_SECTOR_ALIGNMENT 44
#define VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SECTORS 48
#define VIRTIO_BLK_CFG_MAX_WRITE_ZEROES_SEG     52
#define VIRTIO_BLK_CFG_WRITE_ZEROES_MAY_UNMAP   56
#define VIRTIO_BLK_CFG_LEN                      60

/* One failed request, as params.on_error hears of it. */
struct virtio_blk_error {
    bool is_read; /* a read (rerror); anything else is a write (werror) */
    enum drive_error_taken action;
    int error; /* positive errno */
};

struct virtio_blk_params {
    const char *serial;  /* NULL: none (GET_ID returns zeros); longer than 20 bytes: cut */
    unsigned num_queues; /* 0: 1 */
    unsigned queue_size; /* 0: 256; a power of two, 4..1024 */
    bool readonly;       /* also when the backend is read-only */
    bool discard;
    bool write_zeroes;
    enum drive_error_action werror, rerror; /* zero: report */
    /* Called on the worker thread for every failed request, after the action was applied (a
     * stopped request is already held). It must not wait for the main thread, which may be
     * stopping the device. NULL: nobody is told. */
    void (*on_error)(void *opaque, const struct virtio_blk_error *e);
    void *error_opaque;
};

struct virtio_blk;

/* bb stays the caller's: close it after virtio_blk_destroy(). */
int virtio_blk_create(struct guest_mem *mem, struct block_backend *bb,
                      const struct virtio_blk_params *p, struct virtio_blk **out,
                      struct error *err);
struct virtio_device *virtio_blk_vdev(struct virtio_blk *b);
/* Submit the requests held by a stop action again, on the worker thread (any thread; at cont).
 * Those that fail again are held again. */
void virtio_blk_retry(struct virtio_blk *b);
/* How many requests are held (any thread). */
unsigned virtio_blk_held(struct virtio_blk *b);
/* Stops the worker (draining the requests in flight) and frees the device. */
void virtio_blk_destroy(struct virtio_blk *b);

#endif
