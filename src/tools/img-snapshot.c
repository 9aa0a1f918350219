/*
 * kemu-img resize, snapshot, commit, rebase.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/img.h"

/* ---- resize ---- */

static const struct img_opt resize_opts[] = {
    OPTE_FMT,
    OPTE_QUIET,
    {LONG_SHRINK, "shrink", NULL, "allow the image to get smaller", NULL},
    {LONG_PREALLOCATION, "preallocation", "mode", NULL, &img_ignored},
    {0},
};

static int cmd_resize(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL;
    bool shrink = false;
    int c, opt_ret;
    /* a size of "-1G" looks like an option: take it off the end first, as qemu-img does, so
     * options may follow the file name */
    const char *neg = NULL;
    if (argc > 2 && argv[argc - 1][0] == '-' && argv[argc - 1][1] >= '0' &&
        argv[argc - 1][1] <= '9')
        neg = argv[--argc];
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case LONG_SHRINK:
            shrink = true;
            break;
        }
    }
    if (c < 0)
        return opt_ret;
    if (optind != argc - (neg ? 1 : 2)) {
        err_print("Expecting image file name and size");
        return 1;
    }
    const char *file = argv[optind], *ssz = neg ? neg : argv[optind + 1];
    int sign = 0;
    if (*ssz == '+' || *ssz == '-')
        sign = *ssz++ == '+' ? 1 : -1;
    uint64_t sz;
    if (parse_img_size(ssz, &sz) < 0)
        return 1;
    struct img im;
    if (img_open(&im, file, fmt, true, false) < 0) /* growing must know the backing size */
        return 1;
    uint64_t ns = sign > 0 ? im.size + sz : sign < 0 ? im.size - sz : sz;
    if ((sign < 0 && sz > im.size) || (int64_t)ns < 0) {
        err_print("New image size must be positive");
        img_close(&im);
        return 1;
    }
    ns = (ns + 511) & ~511ull;
    int ret = 1;
    if (im.q) {
        struct error err = {0};
        if (ns < im.size && !shrink) {
            err_print("Use the --shrink option to perform a shrink operation.");
            goto out;
        }
        if (ns < im.size)
            fprintf(stderr,
                    "%s: warning: Shrinking an image will delete all data beyond the "
                    "shrunken image's end. Before performing such an operation, make "
                    "sure there is no important data there.\n",
                    prog);
        if (qcow2_resize(im.q, ns, &err) < 0) {
            err_print("%s", err.msg);
            goto out;
        }
    } else if (ns < im.size && !shrink) {
        err_print("Use the --shrink option to perform a shrink operation.");
        goto out;
    } else if (ftruncate(im.fd, (off_t)ns) < 0) {
        err_print("%s: Could not resize file: %s", file, strerror(errno));
        goto out;
    }
    qprintf("Image resized.\n");
    ret = 0;
out:
    if (img_close(&im) < 0)
        ret = 1;
    return ret;
}

const struct img_cmd img_cmd_resize = {"resize", cmd_resize, resize_opts, "filename [+ | -]size",
                                       1};

/* ---- snapshot ---- */

static const struct img_opt snapshot_opts[] = {
    OPTE_FMT,
    OPTE_QUIET,
    {'l', NULL, NULL, "list the snapshots (the default)", NULL},
    {'a', NULL, "snapshot", "apply (revert to) a snapshot", NULL},
    {'c', NULL, "snapshot", "create a snapshot", NULL},
    {'d', NULL, "snapshot", "delete a snapshot", NULL},
    OPTE_FORCE_SHARE,
    {0},
};

static int cmd_snapshot(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *arg = NULL;
    int action = 0; /* 'l', 'a', 'c' or 'd' */
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'l':
        case 'a':
        case 'c':
        case 'd':
            if (action) {
                err_print("Cannot mix '-l', '-a', '-c', '-d'");
                return 1;
            }
            action = c;
            arg = optarg;
            break;
        case 'f':
            fmt = optarg;
            break;
        }
    }
    if (c < 0)
        return opt_ret;
    if (!img_one_file(argc))
        return 1;
    if (!action)
        action = 'l'; /* qemu-img lists by default */
    struct img im;
    if (img_open(&im, argv[optind], fmt, action != 'l', true) < 0)
        return 1;
    int ret = 0;
    if (action == 'l') {
        unsigned n = im.q ? qcow2_snapshot_count(im.q) : 0;
        if (n) {
            printf("Snapshot list:\n");
            snap_header(stdout);
            for (unsigned i = 0; i < n; i++)
                snap_line(stdout, qcow2_snapshot_get(im.q, i));
        }
    } else if (!im.q) {
        err_print("%s: Could not %s snapshot '%s': raw images do not support snapshots", im.name,
                  action == 'c'   ? "create"
                  : action == 'a' ? "apply"
                                  : "delete",
                  arg);
        ret = 1;
    } else {
        struct error err = {0};
        int r = action == 'c'   ? qcow2_snapshot_create(im.q, arg, &err)
                : action == 'a' ? qcow2_snapshot_apply(im.q, arg, &err)
                                : qcow2_snapshot_delete(im.q, arg, &err);
        if (r < 0) {
            err_print("Could not %s snapshot '%s': %s",
                      action == 'c'   ? "create"
                      : action == 'a' ? "apply"
                                      : "delete",
                      arg, err.msg);
            ret = 1;
        }
    }
    if (img_close(&im) < 0)
        ret = 1;
    return ret;
}

const struct img_cmd img_cmd_snapshot = {"snapshot", cmd_snapshot, snapshot_opts, "filename", 1};

/* ---- commit, rebase ---- */

/* The image a qcow2 image's backing name points at: path (malloc'd) and format. */
static int backing_of(struct img *im, char **path, const char **fmt)
{
    struct error err = {0};
    *path = NULL;
    return im->q ? qcow2_backing_path(im->q, path, fmt, &err) : 0;
}

/* commit's target: img_write and img_zero print their own errors */
static int sink_write(void *opaque, uint64_t off, const void *buf, size_t len, struct error *err)
{
    (void)err;
    return img_write(opaque, off, buf, len);
}

static int sink_zero(void *opaque, uint64_t off, uint64_t len, struct error *err)
{
    struct img *dst = opaque;
    if (dst->q)
        return qcow2_write_zeroes(dst->q, off, len, false, err);
    static const uint8_t zeros[65536];
    while (len) {
        size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
        if (img_write(dst, off, zeros, n) < 0)
            return -1;
        off += n;
        len -= n;
    }
    return 0;
}

static void commit_progress(void *opaque, double done)
{
    (void)opaque;
    progress(done * 100.0);
}

static const struct img_opt commit_opts[] = {
    OPTE_QUIET,
    OPTE_FMT,
    {'t', NULL, "cache", "cache mode (accepted, no effect)", &img_ignored},
    {'b', NULL, "base", "commit into this image of the chain (keeps the top image)", NULL},
    {'d', NULL, NULL, "keep the top image as it is (do not empty it)", NULL},
    OPTE_PROGRESS,
    {'r', NULL, "rate_limit", NULL, &img_ignored},
    OPTE_OBJECT,
    {0},
};

static int cmd_commit(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *base = NULL;
    bool drop = false;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'b':
            base = optarg;
            drop = true; /* an explicit base leaves the top image as it is, as in qemu-img */
            break;
        case 'd':
            drop = true;
            break;
        }
    }
    if (c < 0)
        return opt_ret;
    if (!img_one_file(argc))
        return 1;
    struct img top, b = {.fd = -1}, layer;
    if (img_open(&top, argv[optind], fmt, true, false) < 0)
        return 1;
    int ret = 1, depth = 0;
    char *path = NULL, *next = NULL;
    const char *bfmt = NULL;
    backing_of(&top, &path, &bfmt);
    if (!path) {
        err_print("%s: Image does not have a backing file", top.name);
        goto out;
    }
    /* find the base's depth in the chain (the backing file itself by default) */
    struct stat want = {0}, st;
    if (base && stat(base, &want) < 0) {
        err_print("Did not find '%s' in the backing chain of '%s'", base, top.name);
        goto out;
    }
    for (depth = 1;; depth++) {
        if (!base || (stat(path, &st) == 0 && st.st_dev == want.st_dev && st.st_ino == want.st_ino))
            break;
        const char *nf = NULL;
        if (img_open(&layer, path, bfmt, false, true) < 0)
            goto out;
        backing_of(&layer, &next, &nf);
        img_close(&layer);
        if (!next) {
            err_print("Did not find '%s' in the backing chain of '%s'", base, top.name);
            goto out;
        }
        free(path);
        path = next;
        next = NULL;
        bfmt = nf;
    }
    if (img_open(&b, path, bfmt, true, false) < 0)
        goto out;
    if (b.size < top.size) {
        struct error err = {0};
        if (b.q ? qcow2_resize(b.q, top.size, &err) < 0 : ftruncate(b.fd, (off_t)top.size) < 0) {
            err_print("%s: could not grow the base image: %s", b.name,
                      b.q ? err.msg : strerror(errno));
            goto out;
        }
        b.size = top.size;
    }
    /* everything the layers above the base hold, data or zeros, goes into the base */
    struct qcow2_sink sink = {sink_write, sink_zero, &b};
    struct error cerr = {0};
    if (qcow2_copy_top(top.q, depth, &sink, show_progress ? commit_progress : NULL, NULL, &cerr) <
        0) {
        if (cerr.msg[0])
            err_print("%s", cerr.msg);
        goto out;
    }
    if (img_close(&b) < 0)
        goto out;
    if (!drop) {
        struct error err = {0};
        if (qcow2_make_empty(top.q, &err) < 0) {
            err_print("%s", err.msg);
            goto out;
        }
    }
    if (show_progress)
        printf("\n");
    qprintf("Image committed.\n");
    ret = 0;
out:
    free(path);
    free(next);
    img_close(&b);
    if (img_close(&top) < 0)
        ret = 1;
    return ret;
}

const struct img_cmd img_cmd_commit = {"commit", cmd_commit, commit_opts, "filename", 1};

static const struct img_opt rebase_opts[] = {
    OPTE_FMT,
    {'F', NULL, "backing_fmt", "format of the new backing file", NULL},
    {'u', NULL, NULL, "unsafe: only change the name, copy no data", NULL},
    OPTE_PROGRESS,
    OPTE_QUIET,
    {'b', NULL, "backing_file", "the new backing file ('' for none)", NULL},
    {'t', NULL, "cache", NULL, &img_ignored},
    OPTE_CACHE('T'),
    OPTE_FORCE_SHARE,
    OPTE_OBJECT,
    {'c', NULL, NULL, NULL, &img_ignored},
    {0},
};

static int cmd_rebase(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *bfmt = NULL, *nb = NULL;
    bool unsafe = false;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'F':
            bfmt = optarg;
            break;
        case 'b':
            nb = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        }
    }
    if (c < 0)
        return opt_ret;
    if (!img_one_file(argc))
        return 1;
    if (!nb && !unsafe) {
        err_print("Must specify backing file (-b) or use unsafe mode (-u)");
        return 1;
    }
    if (bfmt) {
        enum fmt f;
        if (parse_fmt(NULL, bfmt, &f) < 0)
            return 1;
    }
    struct img top, newb = {.fd = -1};
    /* unsafe mode must work when the old backing file is gone */
    if (img_open(&top, argv[optind], fmt, true, unsafe) < 0)
        return 1;
    int ret = 1;
    uint8_t *a = NULL, *bb = NULL;
    if (!top.q) {
        err_print("%s: raw images have no backing file", top.name);
        goto out;
    }
    if (nb && *nb) {
        char *full = path_combine(top.name, nb);
        int r = img_open(&newb, full, bfmt, false, false);
        free(full);
        if (r < 0) {
            if (!unsafe)
                goto out;
            newb = (struct img){.fd = -1}; /* unsafe: the new file need not exist yet */
        } else if (!bfmt) {
            bfmt = fmt_name(newb.fmt);
        }
    }
    if (!unsafe) {
        uint64_t cs = qcow2_cluster_size(top.q);
        a = malloc(cs);
        bb = malloc(cs);
        if (!a || !bb) {
            err_print("out of memory");
            goto out;
        }
        /* where the top image does not have its own data, keep what the old backing file
         * showed wherever the new one differs */
        for (uint64_t off = 0; off < top.size;) {
            struct qcow2_map_entry e;
            struct error err = {0};
            size_t n =
                top.size - off < cs - off % cs ? (size_t)(top.size - off) : (size_t)(cs - off % cs);
            if (qcow2_map(top.q, off, n, &e, &err) < 0) {
                err_print("%s", err.msg);
                goto out;
            }
            n = (size_t)e.len;
            if (!(e.present && e.depth == 0)) {
                if (img_read(&top, off, a, n) < 0)
                    goto out;
                memset(bb, 0, n);
                if (newb.name && off < newb.size &&
                    img_read(&newb, off, bb, newb.size - off < n ? newb.size - off : n) < 0)
                    goto out;
                if (memcmp(a, bb, n) && img_write(&top, off, a, n) < 0)
                    goto out;
            }
            off += n;
            if (show_progress)
                progress(off * 100.0 / top.size);
        }
        if (show_progress)
            printf("\n");
    }
    struct error err = {0};
    if (qcow2_change_backing(top.q, nb, nb && *nb ? bfmt : NULL, &err) < 0) {
        err_print("Could not change the backing file to '%s': %s", nb ? nb : "", err.msg);
        goto out;
    }
    ret = 0;
out:
    free(a);
    free(bb);
    img_close(&newb);
    if (img_close(&top) < 0)
        ret = 1;
    return ret;
}

const struct img_cmd img_cmd_rebase = {"rebase", cmd_rebase, rebase_opts, "filename", 1};
