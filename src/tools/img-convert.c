/*
 * kemu-img convert, compare, measure, map.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/img.h"

static const struct img_opt convert_opts[] = {
    {'c', NULL, NULL, "compress the qcow2 target", NULL},
    OPTE_PROGRESS,
    OPTE_QUIET,
    {'n', NULL, NULL, "do not create the target: it exists already", NULL},
    OPTE_FMT,
    {'O', NULL, "output_fmt", "target format: raw (default) or qcow2", NULL},
    {'B', NULL, "backing_file", "backing file of the target", NULL},
    {'o', NULL, "options", "target format options, repeatable", NULL},
    {'S', NULL, "sparse_size", "zero run that becomes a hole (default 4k; 0: none)", NULL},
    {'t', NULL, "cache", "target cache mode (default unsafe: no flush at the end)", NULL},
    {'l', NULL, "snapshot_param",
     "convert from an internal snapshot: snapshot.id=ID,snapshot.name=NAME or ID_OR_NAME", NULL},
    {'s', NULL, "snapshot_id_or_name", NULL, NULL},
    OPTE_CACHE('T'),
    {'m', NULL, "coroutines", NULL, &img_ignored},
    {'W', NULL, NULL, NULL, &img_ignored},
    {'C', NULL, NULL, NULL, &img_ignored},
    {'r', NULL, NULL, NULL, &img_ignored},
    OPTE_FORCE_SHARE,
    {LONG_TARGET_IS_ZERO, "target-is-zero", NULL, NULL, &img_ignored},
    {0},
};

/* -l snapshot.id=ID,snapshot.name=NAME (either) or -l ID_OR_NAME: read the source as it was
 * then. */
static int load_snapshot(struct img *im, const char *param)
{
    char *id = NULL, *name = NULL;
    struct error err = {0};
    int r = -1;
    if (!strncmp(param, "snapshot.", 9)) {
        struct opts o = {0};
        static const struct opt_desc keys[] = {
            {"snapshot.id", OPT_STRING, NULL, "snapshot ID"},
            {"snapshot.name", OPT_STRING, NULL, "snapshot name"},
            {0},
        };
        static const struct opts_group group = {"snapshot", NULL, false, keys};
        if (opts_parse(&o, &group, param, &err) < 0) {
            err_print("%s", err.msg);
            return -1;
        }
        id = opts_get_str(&o, "snapshot.id") ? strdup(opts_get_str(&o, "snapshot.id")) : NULL;
        name = opts_get_str(&o, "snapshot.name") ? strdup(opts_get_str(&o, "snapshot.name")) : NULL;
        opts_free(&o);
    }
    if (!im->q) {
        error_setf(&err, "Block format 'raw' used by device '' does not support temporarily "
                         "loading internal snapshots");
    } else if (id || name) {
        r = qcow2_snapshot_load_tmp(im->q, id, name, &err);
    } else {
        /* by ID first, then by name, as bdrv_snapshot_load_tmp_by_id_or_name */
        r = qcow2_snapshot_load_tmp(im->q, param, NULL, &err);
        if (r < 0) {
            err = (struct error){0};
            r = qcow2_snapshot_load_tmp(im->q, NULL, param, &err);
        }
    }
    if (r < 0)
        err_print("Failed to load snapshot: %s", err.msg);
    free(id);
    free(name);
    return r;
}

static int cmd_convert(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw", *base = NULL;
    char *options = NULL;
    bool compress = false, no_create = false;
    const char *cache = "unsafe"; /* qemu-img convert's default: no flush at the end */
    const char *snap = NULL;
    uint64_t min_sparse = 4096;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'O':
            ofmt = optarg;
            break;
        case 'B':
            base = optarg;
            break;
        case 'c':
            compress = true;
            break;
        case 'o':
            options = join_opts(options, optarg);
            break;
        case 'S':
            if (opts_parse_size(optarg, 1, &min_sparse) < 0 || min_sparse > (1u << 30) ||
                min_sparse % 512) {
                err_print("Invalid buffer size for sparse output specified. Valid sizes are "
                          "multiples of 512 up to 1073741824. Select 0 to disable sparse "
                          "detection (fully allocates output).");
                free(options);
                return 1;
            }
            break;
        case 'n':
            no_create = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'l':
        case 's':
            snap = optarg;
            break;
        }
    }
    if (c < 0) {
        free(options);
        return opt_ret;
    }
    int nsrc = argc - optind - 1;
    if (nsrc < 1) {
        err_print("Must specify image file name");
        free(options);
        return 1;
    }
    const char *out = argv[argc - 1];
    int ret = 1;
    struct create_spec s = {0};
    struct opts o = {0};
    struct img *src = calloc((size_t)nsrc, sizeof(*src));
    struct img dst = {.fd = -1};
    uint8_t *buf = NULL;
    int opened = 0;
    if (!src)
        goto out;
    int pr = create_spec_parse(&s, &o, out, ofmt, options, base);
    if (pr) {
        ret = pr > 0 ? 0 : 1;
        goto out;
    }
    /* after the -o options, as qemu-img checks (-o help wins) */
    if (compress && s.fmt != FMT_QCOW2) {
        err_print("%s: Compression not supported for file format '%s'", out, ofmt);
        goto out;
    }
    if (snap && nsrc > 1) {
        err_print("No support for concatenating multiple snapshot");
        goto out;
    }
    uint64_t total = 0;
    for (int i = 0; i < nsrc; i++) {
        if (img_open(&src[i], argv[optind + i], fmt, false, false) < 0)
            goto out;
        opened++; /* closed at out even when its snapshot fails to load */
        if (snap && load_snapshot(&src[i], snap) < 0)
            goto out;
        total += src[i].size;
    }
    open_no_sync = !strcmp(cache, "unsafe");
    if (no_create) {
        if (img_open(&dst, out, ofmt, true, false) < 0)
            goto out;
        if (dst.size < total) {
            err_print("%s: output file is smaller than input file", out);
            goto out;
        }
    } else {
        s.size = total;
        s.size_set = true;
        if (base && !s.q.backing_fmt) {
            /* convert probes the backing format, as qemu-img does */
            struct img b;
            char *full = path_combine(out, base);
            int r = img_open(&b, full, NULL, false, true);
            free(full);
            if (r < 0)
                goto out;
            s.q.backing_fmt = b.fmt == FMT_QCOW2 ? "qcow2" : "raw";
            img_close(&b);
        }
        if (create_image(out, &s, false, false) < 0)
            goto out;
        if (img_open(&dst, out, ofmt, true, false) < 0)
            goto out;
    }
    /* A fresh image without backing reads zeros everywhere: zero blocks need no write. */
    bool target_zero = !no_create && !base;
    buf = aligned_alloc(4096, CHUNK);
    if (!buf) {
        err_print("out of memory");
        goto out;
    }
    if (show_progress)
        progress(0);
    uint64_t done = 0, dst_off = 0;
    double last = 0;
    for (int i = 0; i < nsrc; i++) {
        struct img *im = &src[i];
        for (uint64_t off = 0; off < im->size;) {
            uint64_t left = im->size - off;
            size_t n = left < CHUNK ? (size_t)left : CHUNK;
            uint64_t hole = raw_hole_len(im, off, n);
            if (compress && dst.q) /* compressed output goes by whole clusters */
                hole &= ~(qcow2_cluster_size(dst.q) - 1);
            if (hole >= 512) {
                hole &= ~511ull;
                if (!target_zero) {
                    struct error err = {0};
                    if (dst.q ? qcow2_write_zeroes(dst.q, dst_off + off, hole, false, &err) < 0
                              : fallocate(dst.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                          (off_t)(dst_off + off), (off_t)hole) < 0) {
                        err_print("%s: error while writing zeroes: %s", out,
                                  dst.q ? err.msg : strerror(errno));
                        goto out;
                    }
                }
                off += hole;
                done += hole;
                continue;
            }
            if (img_read(im, off, buf, n) < 0)
                goto out;
            if (compress && dst.q) {
                /* whole clusters, compressed; all-zero clusters are left out (or zeroed) */
                uint64_t cs = qcow2_cluster_size(dst.q);
                uint64_t at = dst_off + off;
                if (at % cs) {
                    err_print("%s: compressed output needs input sizes that are multiples of "
                              "the cluster size",
                              out);
                    goto out;
                }
                for (size_t p = 0; p < n; p += cs) {
                    size_t l = n - p < cs ? n - p : (size_t)cs;
                    struct error err = {0};
                    int r = 0;
                    if (!is_zero(buf + p, l))
                        r = qcow2_write_compressed(dst.q, at + p, buf + p, l, &err);
                    else if (!target_zero)
                        r = qcow2_write_zeroes(dst.q, at + p, l, false, &err);
                    if (r < 0) {
                        err_print("%s", err.msg);
                        goto out;
                    }
                }
                off += n;
                done += n;
                continue;
            }
            /* write runs of non-zero blocks; zero runs of min_sparse bytes are skipped */
            size_t bs = min_sparse ? (size_t)min_sparse : n;
            size_t p = 0;
            while (p < n) {
                size_t q = p;
                bool zero = min_sparse && is_zero(buf + p, n - p < bs ? n - p : bs);
                while (q < n) {
                    size_t l = n - q < bs ? n - q : bs;
                    if (min_sparse && is_zero(buf + q, l) != zero)
                        break;
                    q += l;
                }
                if (!zero) {
                    if (img_write(&dst, dst_off + off + p, buf + p, q - p) < 0)
                        goto out;
                } else if (!target_zero) {
                    struct error err = {0};
                    if (dst.q) {
                        if (qcow2_write_zeroes(dst.q, dst_off + off + p, q - p, false, &err) < 0) {
                            err_print("%s: %s", out, err.msg);
                            goto out;
                        }
                    } else if (img_write(&dst, dst_off + off + p, buf + p, q - p) < 0) {
                        goto out;
                    }
                }
                p = q;
            }
            off += n;
            done += n;
            if (show_progress && total) {
                double pct = done * 100.0 / total;
                if (pct - last >= 1.0) {
                    progress(pct);
                    last = pct;
                }
            }
        }
        dst_off += im->size;
    }
    if (dst.q) {
        struct error err = {0};
        if (qcow2_flush(dst.q, &err) < 0) {
            err_print("%s", err.msg);
            goto out;
        }
    } else if (strcmp(cache, "unsafe") && fdatasync(dst.fd) < 0) {
        err_print("%s: %s", out, strerror(errno));
        goto out;
    }
    if (show_progress) {
        if (last < 100)
            progress(100);
        printf("\n");
    }
    ret = 0;
out:
    for (int i = 0; i < opened; i++)
        img_close(&src[i]);
    if (img_close(&dst) < 0)
        ret = 1;
    free(src);
    free(buf);
    opts_free(&o);
    free(options);
    return ret;
}

const struct img_cmd img_cmd_convert = {"convert", cmd_convert, convert_opts,
                                        "filename [filename2 [...]] output_filename", 1};

/* ---- compare ---- */

/* Offset of the first differing 512-byte sector of a and b (n bytes), or n. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (!memcmp(a, b, n))
        return n;
    for (size_t i = 0; i < n; i += 512) {
        size_t l = n - i < 512 ? n - i : 512;
        if (memcmp(a + i, b + i, l))
            return i;
    }
    return n;
}

static const struct img_opt compare_opts[] = {
    {'f', NULL, "fmt", "format of the first image (default: probed)", NULL},
    {'F', NULL, "fmt", "format of the second image (default: probed)", NULL},
    OPTE_PROGRESS,
    OPTE_QUIET,
    {'s', NULL, NULL, "strict: images of different sizes differ", NULL},
    OPTE_CACHE('T'),
    OPTE_FORCE_SHARE,
    {0},
};

static int cmd_compare(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt1 = NULL, *fmt2 = NULL;
    bool strict = false;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt1 = optarg;
            break;
        case 'F':
            fmt2 = optarg;
            break;
        case 's':
            strict = true;
            break;
        }
    }
    if (c < 0)
        return opt_ret;
    if (optind != argc - 2) {
        err_print("Expecting two image file names");
        return 2;
    }
    if (!fmt2)
        fmt2 = fmt1;
    struct img a, b;
    if (img_open(&a, argv[optind], fmt1, false, false) < 0)
        return 2;
    if (img_open(&b, argv[optind + 1], fmt2, false, false) < 0) {
        img_close(&a);
        return 2;
    }
    int ret = 2;
    uint8_t *ba = malloc(CHUNK), *bb = malloc(CHUNK);
    if (!ba || !bb)
        goto out;
    uint64_t common = a.size < b.size ? a.size : b.size;
    uint64_t total = a.size > b.size ? a.size : b.size;
    if (show_progress)
        progress(0);
    for (uint64_t off = 0; off < common; off += CHUNK) {
        size_t n = common - off < CHUNK ? (size_t)(common - off) : CHUNK;
        if (img_read(&a, off, ba, n) < 0 || img_read(&b, off, bb, n) < 0)
            goto out;
        size_t d = first_diff(ba, bb, n);
        if (d < n) {
            qprintf("Content mismatch at offset %" PRIu64 "!\n", off + d);
            ret = 1;
            goto out;
        }
        if (show_progress)
            progress((off + n) * 100.0 / total);
    }
    if (a.size != b.size) {
        if (strict) {
            qprintf("Strict mode: Image size mismatch!\n");
            ret = 1;
            goto out;
        }
        qprintf("Warning: Image size mismatch!\n");
        struct img *big = a.size > b.size ? &a : &b;
        for (uint64_t off = common; off < big->size;) {
            size_t n = big->size - off < CHUNK ? (size_t)(big->size - off) : CHUNK;
            uint64_t hole = raw_hole_len(big, off, n);
            if (hole >= 512) {
                off += hole & ~511ull;
                continue;
            }
            if (img_read(big, off, ba, n) < 0)
                goto out;
            memset(bb, 0, n);
            size_t d = first_diff(ba, bb, n);
            if (d < n) {
                qprintf("Content mismatch at offset %" PRIu64 "!\n", off + d);
                ret = 1;
                goto out;
            }
            off += n;
        }
    }
    if (show_progress) {
        progress(100);
        printf("\n");
    }
    qprintf("Images are identical.\n");
    ret = 0;
out:
    free(ba);
    free(bb);
    img_close(&a);
    img_close(&b);
    return ret;
}

const struct img_cmd img_cmd_compare = {"compare", cmd_compare, compare_opts, "filename1 filename2",
                                        2};

/* ---- measure ---- */

/* qemu's qcow2_calc_prealloc_size: metadata and data for a fully allocated image. */
static uint64_t qcow2_full_size(uint64_t size, uint64_t cs, unsigned rc_bits)
{
    uint64_t aligned = (size + cs - 1) / cs * cs;
    uint64_t meta = cs; /* header */
    uint64_t l2 = (aligned / cs * 8 + cs - 1) / cs;
    meta += l2 * cs;
    uint64_t l1 = (l2 * 8 + cs - 1) / cs;
    meta += l1 * cs;
    /* refcount blocks and table covering everything, iterated to a fixed point */
    uint64_t rb_entries = cs * 8 / rc_bits;
    uint64_t n_rb = 0, n_rt = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t clusters = (aligned + meta) / cs + n_rb + n_rt;
        n_rb = (clusters + rb_entries - 1) / rb_entries;
        n_rt = (n_rb * 8 + cs - 1) / cs;
    }
    return aligned + meta + (n_rb + n_rt) * cs;
}

static const struct img_opt measure_opts[] = {
    OPTE_OUTPUT,
    {'O', NULL, "output_fmt", "format to measure for: raw (default) or qcow2", NULL},
    {'o', NULL, "options", "format options, repeatable", NULL},
    {LONG_SIZE, "size", "N", "measure a new image of N bytes instead of filename", NULL},
    OPTE_FMT,
    {'l', NULL, "snapshot_param",
     "measure an internal snapshot: snapshot.id=ID,snapshot.name=NAME or ID_OR_NAME", NULL},
    OPTE_FORCE_SHARE,
    {0},
};

static int cmd_measure(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw", *output = "human", *ssize = NULL, *snap = NULL;
    char *options = NULL;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'l':
            snap = optarg;
            break;
        case 'O':
            ofmt = optarg;
            break;
        case 'o':
            options = join_opts(options, optarg);
            break;
        case LONG_OUTPUT:
            output = optarg;
            break;
        case LONG_SIZE:
            ssize = optarg;
            break;
        }
    }
    if (c < 0) {
        free(options);
        return opt_ret;
    }
    int ret = 1;
    struct create_spec s = {0};
    struct opts o = {0};
    bool json;
    if (!parse_output(output, &json) || create_spec_parse(&s, &o, NULL, ofmt, options, NULL))
        goto out;
    /* the operands, checked in qemu-img's order */
    if (argc - optind > 1) {
        err_print("At most one filename argument is allowed.");
        goto out;
    }
    if (optind == argc && (fmt || snap)) {
        err_print("--image-opts, -f, and -l require a filename argument.");
        goto out;
    }
    uint64_t size = 0, used = 0;
    bool bitmaps = false;
    if (ssize) {
        if (optind != argc) {
            err_print("--size N cannot be used together with a filename.");
            goto out;
        }
        if (parse_img_size(ssize, &size) < 0)
            goto out;
    } else {
        if (optind != argc - 1) {
            err_print("Either --size N or one filename must be specified.");
            goto out;
        }
        struct img im;
        if (img_open(&im, argv[optind], fmt, false, false) < 0)
            goto out;
        /* -l: measure the snapshot's clusters, as convert -l copies them */
        if (snap && load_snapshot(&im, snap) < 0) {
            img_close(&im);
            goto out;
        }
        size = im.size;
        /* qcow2_measure: a v3 target carries the source's persistent bitmaps */
        bitmaps = im.q && s.fmt == FMT_QCOW2 && s.q.version >= 3;
        uint64_t cs = s.fmt == FMT_QCOW2 && s.q.cluster_size ? s.q.cluster_size : 65536;
        /* A target cluster is needed where the source holds anything but known zeros: data
         * counts by allocation, not content, as qemu's block status does. */
        for (uint64_t off = 0; off < size; off += cs) {
            size_t n = size - off < cs ? (size_t)(size - off) : (size_t)cs;
            if (raw_hole_len(&im, off, n) < n)
                used += cs;
        }
        img_close(&im);
    }
    uint64_t required, full;
    if (s.fmt == FMT_RAW) {
        full = (size + 511) & ~511ull;
        required = ssize ? full : (used < full ? used : full);
        if (!ssize)
            required = full;
    } else {
        uint64_t cs = s.q.cluster_size ? s.q.cluster_size : 65536;
        unsigned rb = s.q.refcount_bits ? s.q.refcount_bits : 16;
        full = qcow2_full_size(size, cs, rb);
        uint64_t aligned = (size + cs - 1) / cs * cs;
        required = full - aligned + used;
    }
    if (json)
        printf("{\n%s    \"required\": %" PRIu64 ",\n    \"fully-allocated\": %" PRIu64 "\n}\n",
               bitmaps ? "    \"bitmaps\": 0,\n" : "", required, full);
    else
        printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n%s", required, full,
               bitmaps ? "bitmaps size: 0\n" : "");
    ret = 0;
out:
    opts_free(&o);
    free(options);
    return ret;
}

const struct img_cmd img_cmd_measure = {"measure", cmd_measure, measure_opts, "[filename]", 1};

/* ---- map ---- */

/* Returns -1 where qemu-img map stops: human output cannot show where compressed data is. */
static int map_print(const struct qcow2_map_entry *e, uint64_t start, bool json, bool *first)
{
    if (json) {
        printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, "
               "\"present\": %s, \"zero\": %s, \"data\": %s",
               *first ? "[" : ",\n", start, e->len, e->depth, e->present ? "true" : "false",
               e->zero ? "true" : "false", e->data ? "true" : "false");
        if (e->has_offset)
            printf(", \"offset\": %" PRIu64, e->offset);
        printf("}");
    } else if (e->data && !e->zero && e->has_offset) {
        printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", start, e->len, e->offset,
               e->file);
    } else if (e->data && e->compressed) {
        err_print("File contains external, encrypted or compressed clusters.");
        return -1;
    }
    *first = false;
    return 0;
}

/* qemu-img map of a qcow2 image: per-cluster answers merged as qemu-img merges them (same
 * layer and flags, offsets contiguous). */
static int map_qcow2(struct img *im, bool json)
{
    struct qcow2_map_entry cur = {0}, e;
    uint64_t start = 0;
    bool first = true, have = false;
    if (!json)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    for (uint64_t off = 0; off < im->size; off += e.len) {
        struct error err = {0};
        if (qcow2_map(im->q, off, im->size - off, &e, &err) < 0) {
            err_print("%s", err.msg);
            return 1;
        }
        if (have && cur.depth == e.depth && cur.present == e.present && cur.zero == e.zero &&
            cur.data == e.data && cur.compressed == e.compressed &&
            cur.has_offset == e.has_offset && cur.file == e.file &&
            (!e.has_offset || cur.offset + cur.len == e.offset)) {
            cur.len += e.len;
            continue;
        }
        if (have && map_print(&cur, start, json, &first) < 0)
            return 1;
        cur = e;
        start = off;
        have = true;
    }
    if (have && map_print(&cur, start, json, &first) < 0)
        return 1;
    if (json)
        printf(first ? "[]\n" : "]\n");
    return 0;
}

static const struct img_opt map_opts[] = {
    OPTE_FMT,
    OPTE_OUTPUT,
    OPTE_FORCE_SHARE,
    {0},
};

static int cmd_map(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *output = "human";
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case LONG_OUTPUT:
            output = optarg;
            break;
        }
    }
    if (c < 0)
        return opt_ret;
    bool json;
    if (!parse_output(output, &json) || !img_one_file(argc))
        return 1;
    struct img im;
    if (img_open(&im, argv[optind], fmt, false, false) < 0)
        return 1;
    if (im.q) {
        int r = map_qcow2(&im, json);
        img_close(&im);
        return r;
    }
    if (json)
        printf("[");
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    bool first = true;
    for (uint64_t off = 0; off < im.size;) {
        uint64_t hole = raw_hole_len(&im, off, im.size - off);
        bool data = hole == 0;
        uint64_t len;
        if (data) {
            off_t h = im.has_data_map ? lseek(im.fd, (off_t)off, SEEK_HOLE) : -1;
            len = h > (off_t)off ? (uint64_t)h - off : im.size - off;
            if (len > im.size - off)
                len = im.size - off;
        } else {
            len = hole;
        }
        if (json) {
            printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": 0, "
                   "\"present\": true, \"zero\": %s, \"data\": %s",
                   first ? "" : ",\n", off, len, data ? "false" : "true", data ? "true" : "false");
            printf(", \"offset\": %" PRIu64 "}", off); /* raw: the file maps 1:1 */
        } else if (data) {
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", off, len, off, im.name);
        }
        first = false;
        off += len;
    }
    if (json)
        printf("]\n");
    img_close(&im);
    return 0;
}

const struct img_cmd img_cmd_map = {"map", cmd_map, map_opts, "filename", 1};
