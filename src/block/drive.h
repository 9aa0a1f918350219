/*
 * -drive: QEMU's drive options, parsed into struct drive_opts and opened as a block backend.
 *
 *   -drive file=F,if=virtio|none,format=raw,id=ID,cache=MODE,aio=ENGINE,readonly=on|off,
 *          serial=S,discard=ignore|unmap,detect-zeroes=off|on|unmap,werror=,rerror=,
 *          media=disk,index=N
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

enum drive_error_action {
    DRIVE_ERROR_REPORT, /* the guest sees an I/O error */
    DRIVE_ERROR_ENOSPC, /* QEMU's werror default: stop on ENOSPC; reported here */
    DRIVE_ERROR_IGNORE, /* the error is dropped: the guest sees success */
};

struct drive_opts {
    char *file, *id, *serial; /* serial NULL if not given */
    char *format;             /* "raw" */
    enum drive_if iface;
    enum block_cache cache;
    enum block_aio aio;
    bool readonly;
    bool discard_unmap;
    enum detect_zeroes dz;
    enum drive_error_action werror, rerror;
    unsigned index; /* the unit: index= or the index argument of drive_parse() */
    bool id_generated;
};

/* The key table (also usable as the group of a command-line row: "-drive help"). */
extern const struct opts_group drive_opts_group;

/*
 * Parse one -drive argument. index: how many -drive options came before this one; it is the
 * unit number when index= is not given, and names a drive without id=: "virtio<N>" for
 * if=virtio, "none<N>" for if=none (QEMU's rule "<if><unit>"; QEMU's unit is the first free one
 * of that interface, which equals index when every -drive uses the same if=). Returns 0, 1 if
 * "help" was asked for (the keys were printed on stdout; *out is empty), or -1 with err set to
 * the reason only (the caller prefixes "-drive ARG: ").
 */
int drive_parse(const char *text, unsigned index, struct drive_opts *out, struct error *err);
void drive_opts_free(struct drive_opts *o);
/* Open the image: missing or unreadable files, O_DIRECT refusals, engine set-up errors. */
int drive_open(const struct drive_opts *o, struct block_backend **out, struct error *err);

#endif
