/* -drive: parse QEMU's drive options, check what kemu supports, open the image. */
#include "block/drive.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct opt_desc drive_desc[] = {
    {"file", OPT_STRING, NULL, "disk image (a file or a block device)"},
    {"if", OPT_STRING, "ide", "interface: virtio or none (ide, scsi, floppy... not yet)"},
    {"format", OPT_STRING, NULL, "image format: raw or qcow2 (probed if not given)"},
    {"id", OPT_STRING, NULL, "drive name, for -device ...,drive=ID"},
    {"cache", OPT_STRING, "writeback",
     "host cache: writeback, none, writethrough, directsync or unsafe"},
    {"aio", OPT_STRING, "threads", "I/O engine: threads, native or io_uring"},
    {"readonly", OPT_BOOL, "off", "open the image read-only"},
    {"serial", OPT_STRING, NULL, "disk serial number (up to 20 bytes reach the guest)"},
    {"discard", OPT_STRING, "ignore", "guest discards: ignore or unmap (punch holes)"},
    {"detect-zeroes", OPT_STRING, "off", "turn zero writes into write-zeroes: off, on or unmap"},
    {"werror", OPT_STRING, "enospc", "action on write errors: report, enospc, ignore or stop"},
    {"rerror", OPT_STRING, "report", "action on read errors: report, ignore or stop"},
    {"media", OPT_STRING, "disk", "media type (disk only)"},
    {"index", OPT_NUMBER, NULL, "unit number (names a drive without id=)"},
    {"bus", OPT_NUMBER, "0", "bus number"},
    {"unit", OPT_NUMBER, NULL, "unit number on the bus (default: the first free one)"},
    {"snapshot", OPT_BOOL, "off", "write to a temporary overlay, discarded at exit"},
    {"file.locking", OPT_STRING, "auto", "image locking as QEMU's: auto, on or off"},
    {"l2-cache-size", OPT_SIZE, NULL, "qcow2: bytes of L2 tables to cache (default 1M)"},
    {"lazy-refcounts", OPT_BOOL, NULL,
     "qcow2: postpone refcount updates (default: as the image's lazy_refcounts bit)"},
    {NULL, 0, NULL, NULL},
};

const struct opts_group drive_opts_group = {"drive", NULL, false, drive_desc};

/* Index of s in names (NULL-terminated), or -1. */
static int lookup(const char *s, const char *const *names)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

static int set_str(char **dst, const char *s, struct error *err)
{
    if (!s)
        return 0;
    *dst = strdup(s);
    return *dst ? 0 : error_setf(err, "out of memory");
}

static int interpret(const struct opts *o, unsigned index, struct drive_opts *d, struct error *err)
{
    const char *v = opts_get_str(o, "if");
    static const char *const other_ifs[] = {"ide", "scsi", "floppy", "pflash", "mtd",
                                            "sd",  "xen",  "none",   "virtio", NULL};
    if (!strcmp(v, "virtio"))
        d->iface = DRIVE_IF_VIRTIO;
    else if (!strcmp(v, "none"))
        d->iface = DRIVE_IF_NONE;
    else if (!opts_has(o, "if"))
        return error_setf(err, "no if= given, and the pc machine's default (if=ide) is not "
                               "supported yet: add if=virtio");
    else if (lookup(v, other_ifs) >= 0)
        return error_setf(err, "if=%s is not supported yet, use if=virtio", v);
    else
        return error_setf(err, "unsupported bus type '%s'", v);

    const char *format = opts_get_str(o, "format");
    if (format && strcmp(format, "raw") && strcmp(format, "qcow2"))
        return error_setf(err, "format '%s' is not supported yet (raw and qcow2 only)", format);
    if (opts_get_bool(o, "snapshot", &d->snapshot, err) < 0)
        return -1;
    if (opts_get_size(o, "l2-cache-size", &d->l2_cache_size, err) < 0)
        return -1;
    static const char *const lockings[] = {"off", "on", "auto", NULL};
    int li = lookup(opts_get_str(o, "file.locking"), lockings);
    if (li < 0)
        return error_setf(err, "Parameter 'locking' does not accept value '%s'",
                          opts_get_str(o, "file.locking"));
    d->locking = li != 0;
    if (opts_has(o, "l2-cache-size") && format && !strcmp(format, "raw"))
        return error_setf(err, "Block format 'raw' does not support the option 'l2-cache-size'");
    d->lazy_refcounts = BLOCK_LAZY_IMAGE;
    if (opts_has(o, "lazy-refcounts")) {
        bool lazy;
        if (opts_get_bool(o, "lazy-refcounts", &lazy, err) < 0)
            return -1;
        if (format && !strcmp(format, "raw"))
            return error_setf(err,
                              "Block format 'raw' does not support the option 'lazy-refcounts'");
        d->lazy_refcounts = lazy ? BLOCK_LAZY_ON : BLOCK_LAZY_OFF;
    }
    v = opts_get_str(o, "media");
    if (strcmp(v, "disk")) {
        if (!strcmp(v, "cdrom"))
            return error_setf(err, "media=cdrom is not supported yet");
        return error_setf(err, "'%s' invalid media", v);
    }

    static const char *const caches[] = {"writeback",  "none",   "writethrough",
                                         "directsync", "unsafe", NULL};
    int i = lookup(opts_get_str(o, "cache"), caches);
    if (i < 0)
        return error_setf(err, "invalid cache option '%s'", opts_get_str(o, "cache"));
    d->cache = (enum block_cache)i;
    static const char *const aios[] = {"threads", "native", "io_uring", NULL};
    i = lookup(opts_get_str(o, "aio"), aios);
    if (i < 0)
        return error_setf(err, "invalid aio option '%s'", opts_get_str(o, "aio"));
    d->aio = (enum block_aio)i;
    if (d->aio == BLOCK_AIO_NATIVE && d->cache != BLOCK_CACHE_NONE &&
        d->cache != BLOCK_CACHE_DIRECTSYNC)
        return error_setf(err, "aio=native was specified, but it requires cache.direct=on, "
                               "which was not specified.");
    if (opts_get_bool(o, "readonly", &d->readonly, err) < 0)
        return -1;
    static const char *const discards[] = {"ignore", "off", "unmap", "on", NULL};
    i = lookup(opts_get_str(o, "discard"), discards);
    if (i < 0)
        return error_setf(err, "Invalid discard option '%s'", opts_get_str(o, "discard"));
    d->discard_unmap = i >= 2;
    static const char *const dzs[] = {"off", "on", "unmap", NULL};
    i = lookup(opts_get_str(o, "detect-zeroes"), dzs);
    if (i < 0)
        return error_setf(err, "invalid detect-zeroes option '%s' (off, on or unmap)",
                          opts_get_str(o, "detect-zeroes"));
    d->dz = (enum detect_zeroes)i;
    if (d->dz == DETECT_ZEROES_UNMAP && !d->discard_unmap)
        return error_setf(err, "setting detect-zeroes to unmap is not allowed without setting "
                               "discard operation to unmap");
    static const char *const actions[] = {"report", "enospc", "ignore", "stop", NULL};
    i = lookup(opts_get_str(o, "werror"), actions);
    if (i < 0)
        return error_setf(err, "'%s' invalid write error action", opts_get_str(o, "werror"));
    d->werror = (enum drive_error_action)i;
    i = lookup(opts_get_str(o, "rerror"), actions);
    if (i < 0 || i == 1)
        return error_setf(err, "'%s' invalid read error action", opts_get_str(o, "rerror"));
    d->rerror = (enum drive_error_action)i;

    uint64_t n = index, bus = 0;
    if (opts_get_number(o, "bus", &bus, err) < 0 || opts_get_number(o, "index", &n, err) < 0 ||
        opts_get_number(o, "unit", &n, err) < 0)
        return -1;
    /* As QEMU: index= stands for a bus and unit pair, so it comes alone. */
    if (opts_has(o, "index") && (bus || opts_has(o, "unit")))
        return error_setf(err, "index cannot be used with bus and unit");
    if (n > 65535 || bus > 65535)
        return error_setf(err, "%s %llu is too large",
                          bus > 65535            ? "bus"
                          : opts_has(o, "index") ? "index"
                                                 : "unit",
                          (unsigned long long)(bus > 65535 ? bus : n));
    d->index = (unsigned)n;
    d->bus = (unsigned)bus;
    d->unit_given = opts_has(o, "index") || opts_has(o, "unit");

    if (set_str(&d->file, opts_get_str(o, "file"), err) < 0 ||
        set_str(&d->serial, opts_get_str(o, "serial"), err) < 0 ||
        set_str(&d->format, format, err) < 0)
        return -1;
    if (!d->file || !d->file[0])
        return error_setf(err, "Device needs media, but drive is empty");
    if (opts_has(o, "id")) {
        v = opts_get_str(o, "id");
        if (!v[0])
            return error_setf(err, "Parameter 'id' expects an identifier");
        return set_str(&d->id, v, err);
    }
    d->id_generated = true;
    return drive_set_unit(d, d->index, err);
}

int drive_set_unit(struct drive_opts *d, unsigned unit, struct error *err)
{
    d->index = unit;
    if (!d->id_generated)
        return 0;
    /* QEMU's "<if><unit>": an interface without a unit limit leaves the bus out. */
    char buf[32];
    snprintf(buf, sizeof(buf), "%s%u", d->iface == DRIVE_IF_VIRTIO ? "virtio" : "none", unit);
    free(d->id);
    d->id = NULL;
    return set_str(&d->id, buf, err);
}

int drive_parse(const char *text, unsigned index, struct drive_opts *out, struct error *err)
{
    memset(out, 0, sizeof(*out));
    struct opts o = {0};
    int r = opts_parse(&o, &drive_opts_group, text, err);
    if (r == 0 && o.help) {
        opts_print_help(&drive_opts_group, stdout);
        opts_free(&o);
        return 1;
    }
    if (r == 0)
        r = interpret(&o, index, out, err);
    opts_free(&o);
    if (r < 0)
        drive_opts_free(out);
    return r;
}

void drive_opts_free(struct drive_opts *o)
{
    free(o->file);
    free(o->id);
    free(o->serial);
    free(o->format);
    memset(o, 0, sizeof(*o));
}

int drive_open(const struct drive_opts *o, struct block_backend **out, struct error *err)
{
    struct block_open_opts bo = {
        .file = o->file,
        .format = o->format,
        .cache = o->cache,
        .aio = o->aio,
        .readonly = o->readonly,
        .discard_unmap = o->discard_unmap,
        .dz = o->dz,
        .probe = !o->format,
        .snapshot = o->snapshot,
        .l2_cache_size = o->l2_cache_size,
        .lazy_refcounts = o->lazy_refcounts,
        .locking = o->locking,
    };
    if (block_backend_open(&bo, out, err) < 0)
        return -1;
    /* QEMU's raw driver warns only when it may write the image. */
    if (block_backend_format_probed_raw(*out) && !o->readonly && !o->snapshot)
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                "         Automatically detecting the format is dangerous for raw images, write "
                "operations on block 0 will be restricted.\n"
                "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                o->file);
    return 0;
}

bool drive_error_nospace(int error)
{
    return error == ENOSPC || error == EDQUOT;
}

enum drive_error_taken drive_error_decide(enum drive_error_action on_error, int error)
{
    switch (on_error) {
    case DRIVE_ERROR_ENOSPC:
        return drive_error_nospace(error) ? DRIVE_ERROR_TAKEN_STOP : DRIVE_ERROR_TAKEN_REPORT;
    case DRIVE_ERROR_STOP:
        return DRIVE_ERROR_TAKEN_STOP;
    case DRIVE_ERROR_IGNORE:
        return DRIVE_ERROR_TAKEN_IGNORE;
    case DRIVE_ERROR_REPORT:
        break;
    }
    return DRIVE_ERROR_TAKEN_REPORT;
}

const char *drive_error_taken_name(enum drive_error_taken t)
{
    switch (t) {
    case DRIVE_ERROR_TAKEN_IGNORE:
        return "ignore";
    case DRIVE_ERROR_TAKEN_STOP:
        return "stop";
    case DRIVE_ERROR_TAKEN_REPORT:
        break;
    }
    return "report";
}
