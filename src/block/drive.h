/*
 * -drive: QEMU's drive options, parsed into struct drive_opts and opened as a block backend.
 *
 *   -drive file=F,if=virtio|none,format=raw|qcow2,id=ID,cache=MODE,aio=ENGINE,readonly=on|off,
 *          serial=S,discard=ignore|unmap,detect-zeroes=off|on|unmap,werror=,rerror=,
 *          media=disk,index=N,snapshot=on|off,l2-cache-size=SIZE,file.locking=auto|on|off
 *
 * Without format= the format is probed as QEMU does: qcow2's magic means qcow2, anything else
 * raw, with QEMU's warning on stderr when the image is writable (readonly=off, snapshot=off);
 * kemu does not restrict writes to block 0.
 *
 * qcow2 images (and every image under snapshot=on) run through the qcow2 library and a few
 * worker threads per image (block/qcow2_driver.c):
 *   - aio=threads, native and io_uring are all accepted (aio=native still needs cache=none or
 *     directsync, as QEMU); the engine carries the reads and in-place writes of allocated
 *     clusters with cache=none and directsync, the workers everything else.
 *   - cache=none and directsync send guest data O_DIRECT; the library's metadata I/O is
 *     buffered (a second descriptor). none is a writeback cache whose guest flushes run
 *     qcow2_flush (fdatasync), directsync is writethrough (O_DSYNC). writeback: flushes run
 *     qcow2_flush; writethrough: O_DSYNC, every write is durable when it completes; unsafe:
 *     flushes are ignored.
 *   - snapshot=on (raw or qcow2 images): the image is opened read-only (and read-locked) under a
 *     temporary qcow2 overlay in $TMPDIR (else /var/tmp), unlinked at once; writes go to the
 *     overlay and vanish at exit; the overlay's flushes are skipped, as QEMU's cache=unsafe
 *     overlay.
 *   - l2-cache-size: bytes of L2 tables the library caches (default 1 MiB).
 * werror=report|ignore|enospc|stop (default enospc), rerror=report|ignore|stop (default report),
 * as QEMU: report hands the guest the error (VIRTIO_BLK_S_IOERR), ignore completes the request as
 * a success, stop keeps the failed request, pauses the VM (runstate "io-error") and submits the
 * request again at the next cont, so the guest never sees an error whose cause went away;
 * enospc stops on ENOSPC (and EDQUOT: a full quota is as curable as a full disk) and reports
 * anything else. Flushes, discards and write-zeroes count as writes. Every failed request, whatever
 * the action, is announced by a QMP BLOCK_IO_ERROR event (not rate-limited). A reset or quit
 * while requests are held drops them, as QEMU does.
 * Images are locked with QEMU's OFD byte-range scheme (block.h), so QEMU and kemu exclude each
 * other: 'Failed to get "write" lock. Is another process using the image [F]?' (raw images
 * too; file.locking=off leaves them unlocked). Backing files are opened by the library and are
 * not locked.
 */
#ifndef KEMU_BLOCK_DRIVE_H
#define KEMU_BLOCK_DRIVE_H

#include <stdbool.h>

#include "block/block.h"
#include "cli/opts.h"
#include "core/error.h"

enum drive_if {
    DRIVE_IF_NONE,   /* backend only, for -device virtio-blk-pci,drive=ID */
    DRIVE_IF_VIRTIO, /* a virtio-blk-pci device is created for it */
};

/* werror=, rerror=: what to do about a failed request (QEMU's BlockdevOnError). */
enum drive_error_action {
    DRIVE_ERROR_REPORT, /* the guest sees an I/O error */
    DRIVE_ERROR_ENOSPC, /* QEMU's werror default: stop on ENOSPC/EDQUOT, else report */
    DRIVE_ERROR_IGNORE, /* the error is dropped: the guest sees success */
    DRIVE_ERROR_STOP,   /* the request is kept and the VM paused until cont */
};

/* What was done about one failed request (QEMU's BlockErrorAction). */
enum drive_error_taken {
    DRIVE_ERROR_TAKEN_REPORT,
    DRIVE_ERROR_TAKEN_IGNORE,
    DRIVE_ERROR_TAKEN_STOP,
};

/* QEMU's blk_get_error_action: the action for error (a positive errno) under on_error. */
enum drive_error_taken drive_error_decide(enum drive_error_action on_error, int error);
/* "report", "ignore", "stop": BLOCK_IO_ERROR's action. */
const char *drive_error_taken_name(enum drive_error_taken t);
/* The error is a full disk or quota (BLOCK_IO_ERROR's nospace). */
bool drive_error_nospace(int error);

struct drive_opts {
    char *file, *id, *serial; /* serial NULL if not given */
    char *format;             /* "raw", "qcow2", or NULL: probe */
    enum drive_if iface;
    enum block_cache cache;
    enum block_aio aio;
    bool readonly;
    bool discard_unmap;
    enum detect_zeroes dz;
    enum drive_error_action werror, rerror;
    unsigned bus;    /* bus= (an interface like virtio has one unit per drive on any bus) */
    unsigned index;  /* the unit: unit=, index= or the index argument of drive_parse() */
    bool unit_given; /* unit= or index= was given */
    bool id_generated;
    bool snapshot;
    bool locking;                   /* file.locking=on|auto (default), off */
    uint64_t l2_cache_size;         /* 0: the default */
    enum block_lazy lazy_refcounts; /* lazy-refcounts=, unset: as the image says */
};

/* The key table (also usable as the group of a command-line row: "-drive help"). */
extern const struct opts_group drive_opts_group;

/*
 * Parse one -drive argument. index: the unit number when neither unit= nor index= is given
 * (the machine then sets QEMU's, the first free one, with drive_set_unit()); the unit names a
 * drive without id=: "virtio<N>" for if=virtio, "none<N>" for if=none. Returns 0, 1 if
 * "help" was asked for (the keys were printed on stdout; *out is empty), or -1 with err set to
 * the reason only (the caller prefixes "-drive ARG: ").
 */
int drive_parse(const char *text, unsigned index, struct drive_opts *out, struct error *err);
/* Give a drive parsed without unit= or index= its unit (QEMU: the first free one of its
 * interface and bus), renaming it if its id was generated. */
int drive_set_unit(struct drive_opts *o, unsigned unit, struct error *err);
void drive_opts_free(struct drive_opts *o);
/* Open the image: missing or unreadable files, O_DIRECT refusals, engine set-up errors. */
int drive_open(const struct drive_opts *o, struct block_backend **out, struct error *err);

#endif
