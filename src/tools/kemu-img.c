/*
 * kemu-img: disk image utility, command-compatible with qemu-img for raw and qcow2 images.
 * Built on the synchronous qcow2 library (block/qcow2.h) and the QemuOpts-style parser
 * (cli/opts.h) for -o.
 *
 * Commands: create, info, check, convert, compare, resize, snapshot -l, measure, map (raw).
 * Errors print one line "kemu-img: ..." on stderr; the exit codes are qemu-img's.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"
#include "cli/opts.h"
#include "core/error.h"
#include "kemu-config.h"

#define CHUNK (2u << 20)

static const char *prog = "kemu-img";
static bool quiet;

static void err_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err_print(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void qprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void qprintf(const char *fmt, ...)
{
    if (quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* ---- option helpers ---- */

/* getopt with opterr = 0 and a leading ':' in optstring: report the problem and return 1. */
static int bad_option(char *const argv[], int c)
{
    if (c == ':')
        err_print("option '%s' requires an argument", argv[optind - 1]);
    else if (optopt)
        err_print("Unknown option '-%c'", optopt);
    else
        err_print("Unknown option '%s'", argv[optind - 1]);
    return 1;
}

static int parse_img_size(const char *s, uint64_t *out)
{
    if (!*s || *s == '-' || opts_parse_size(s, 1, out) < 0 || *out > INT64_MAX) {
        err_print("Invalid image size specified. You may use k, M, G, T, P or E suffixes for "
                  "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    return 0;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* qemu's path_combine: a relative backing name is relative to the image's directory. */
static char *path_combine(const char *base, const char *name)
{
    const char *slash = strrchr(base, '/');
    char *r;
    if (name[0] == '/' || !slash)
        r = strdup(name);
    else if (asprintf(&r, "%.*s%s", (int)(slash - base + 1), base, name) < 0)
        r = NULL;
    if (!r) {
        perror("kemu-img");
        exit(1);
    }
    return r;
}

/* ---- images ---- */

enum fmt { FMT_RAW, FMT_QCOW2 };

struct img {
    const char *name;
    enum fmt fmt;
    int fd;          /* raw */
    struct qcow2 *q; /* qcow2 */
    uint64_t size;
    bool has_data_map; /* raw: SEEK_DATA usable */
};

static int parse_fmt(const char *name, const char *s, enum fmt *out)
{
    if (!strcmp(s, "raw"))
        *out = FMT_RAW;
    else if (!strcmp(s, "qcow2"))
        *out = FMT_QCOW2;
    else {
        if (name)
            err_print("%s: Unknown file format '%s'", name, s);
        else
            err_print("Unknown file format '%s'", s);
        return -1;
    }
    return 0;
}

static const char *fmt_name(enum fmt f)
{
    return f == FMT_QCOW2 ? "qcow2" : "raw";
}

static int probe_fd(int fd, enum fmt *out)
{
    uint8_t m[4] = {0};
    ssize_t n = pread(fd, m, 4, 0);
    *out = (n == 4 && !memcmp(m, "QFI\xfb", 4)) ? FMT_QCOW2 : FMT_RAW;
    return 0;
}

/* Open name; fmt NULL probes. no_backing: unallocated qcow2 clusters read as zeros. */
static int img_open(struct img *im, const char *name, const char *fmt, bool rw, bool no_backing)
{
    memset(im, 0, sizeof(*im));
    im->name = name;
    im->fd = -1;
    int fd = open(name, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        err_print("Could not open '%s': %s", name, strerror(errno));
        return -1;
    }
    if (fmt) {
        if (parse_fmt(name, fmt, &im->fmt) < 0) {
            close(fd);
            return -1;
        }
    } else {
        probe_fd(fd, &im->fmt);
    }
    if (im->fmt == FMT_RAW) {
        struct stat st;
        if (fstat(fd, &st) < 0) {
            err_print("Could not open '%s': %s", name, strerror(errno));
            close(fd);
            return -1;
        }
        im->fd = fd;
        im->size = (uint64_t)st.st_size;
        im->has_data_map = S_ISREG(st.st_mode);
        if (S_ISBLK(st.st_mode)) {
            off_t end = lseek(fd, 0, SEEK_END);
            im->size = end > 0 ? (uint64_t)end : 0;
        }
        return 0;
    }
    struct error err = {0};
    struct qcow2_open_opts o = {
        .read_write = rw, .no_backing = no_backing, .l2_cache_size = 32u << 20};
    im->q = qcow2_open_fd(fd, name, &o, &err);
    close(fd);
    if (!im->q) {
        err_print("Could not open '%s': %s", name, err.msg);
        return -1;
    }
    const char *w = qcow2_warning(im->q);
    if (w && *w)
        fprintf(stderr, "%s: warning: %s\n", prog, w);
    im->size = qcow2_size(im->q);
    return 0;
}

static int img_close(struct img *im)
{
    int r = 0;
    if (im->q) {
        struct error err = {0};
        if (qcow2_close(im->q, &err) < 0) {
            err_print("%s", err.msg);
            r = -1;
        }
        im->q = NULL;
    }
    if (im->fd >= 0) {
        close(im->fd);
        im->fd = -1;
    }
    return r;
}

static int img_read(struct img *im, uint64_t off, void *buf, size_t len)
{
    if (im->q) {
        struct error err = {0};
        if (qcow2_read(im->q, off, buf, len, &err) < 0) {
            err_print("error while reading at byte %" PRIu64 ": %s", off, err.msg);
            return -1;
        }
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(im->fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_print("%s: error while reading at byte %" PRIu64 ": %s", im->name, off + done,
                      strerror(errno));
            return -1;
        }
        if (n == 0) { /* past EOF reads as zeros */
            memset((char *)buf + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    return 0;
}

static int img_write(struct img *im, uint64_t off, const void *buf, size_t len)
{
    if (im->q) {
        struct error err = {0};
        if (qcow2_write(im->q, off, buf, len, &err) < 0) {
            err_print("error while writing at byte %" PRIu64 ": %s", off, err.msg);
            return -1;
        }
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(im->fd, (const char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err_print("%s: error while writing at byte %" PRIu64 ": %s", im->name, off + done,
                      n < 0 ? strerror(errno) : "short write");
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Bytes from off that are a hole in a raw file (0 if data or unknown), at most len. */
static uint64_t raw_hole_len(struct img *im, uint64_t off, uint64_t len)
{
    if (im->q || !im->has_data_map)
        return 0;
    off_t d = lseek(im->fd, (off_t)off, SEEK_DATA);
    if (d < 0)
        return errno == ENXIO ? len : 0; /* ENXIO: no data past off */
    uint64_t h = (uint64_t)d - off;
    return h < len ? h : len;
}

static bool is_zero(const uint8_t *p, size_t n)
{
    if (n >= 16) {
        const uint64_t *w = (const uint64_t *)(const void *)p;
        if (w[0] | w[1])
            return false;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        if (v)
            return false;
    }
    for (; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* ---- -o option tables ---- */

static const struct opt_desc qcow2_desc[] = {
    {"size", OPT_SIZE, NULL, "Virtual disk size"},
    {"compat", OPT_STRING, NULL, "Compatibility level (v2 [0.10] or v3 [1.1])"},
    {"backing_file", OPT_STRING, NULL, "File name of a base image"},
    {"backing_fmt", OPT_STRING, NULL, "Image format of the base image"},
    {"cluster_size", OPT_SIZE, "65536", "qcow2 cluster size"},
    {"preallocation", OPT_STRING, NULL,
     "Preallocation mode (allowed values: off, metadata, falloc, full)"},
    {"lazy_refcounts", OPT_BOOL, "off", "Postpone refcount updates"},
    {"refcount_bits", OPT_NUMBER, "16", "Width of a reference count entry in bits"},
    {"compression_type", OPT_STRING, "zlib",
     "Compression method used for image cluster "
     "compression"},
    {"extended_l2", OPT_BOOL, "off", "Extended L2 tables"},
    {NULL, 0, NULL, NULL},
};
static const struct opt_desc raw_desc[] = {
    {"size", OPT_SIZE, NULL, "Virtual disk size"},
    {"preallocation", OPT_STRING, NULL, "Preallocation mode (allowed values: off, falloc, full)"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group qcow2_group = {"qcow2", NULL, true, qcow2_desc};
static const struct opts_group raw_group = {"raw", NULL, true, raw_desc};

/* Parse the -o text for format f; unknown keys are "Invalid parameter". */
static int parse_create_opts(const char *file, enum fmt f, const char *text, struct opts *o)
{
    const struct opts_group *g = f == FMT_QCOW2 ? &qcow2_group : &raw_group;
    struct error err = {0};
    memset(o, 0, sizeof(*o));
    o->group = g;
    if (!text)
        return 0;
    if (opts_parse(o, g, text, &err) < 0) {
        err_print("%s: %s", file, err.msg);
        return -1;
    }
    if (o->help) {
        printf("Supported options:\n");
        for (const struct opt_desc *d = g->desc; d->name; d++)
            printf("  %-16s - %s\n", d->name, d->help);
        return 1;
    }
    for (size_t i = 0; i < o->n; i++) {
        if (!opts_find_desc(g, o->kv[i].key)) {
            err_print("%s: Invalid parameter '%s'", file, o->kv[i].key);
            return -1;
        }
    }
    return 0;
}

static int prealloc_parse(const char *file, const char *s, enum qcow2_prealloc *out, bool qcow2)
{
    if (!s || !strcmp(s, "off"))
        *out = QCOW2_PREALLOC_OFF;
    else if (!strcmp(s, "metadata") && qcow2)
        *out = QCOW2_PREALLOC_METADATA;
    else if (!strcmp(s, "falloc"))
        *out = QCOW2_PREALLOC_FALLOC;
    else if (!strcmp(s, "full"))
        *out = QCOW2_PREALLOC_FULL;
    else {
        err_print("%s: Parameter 'preallocation' does not accept value '%s'", file, s);
        return -1;
    }
    return 0;
}

struct create_spec {
    enum fmt fmt;
    uint64_t size;
    bool size_set;
    struct qcow2_create_opts q;
    const char *prealloc_text;
    const char *compat_text;
};

/* Fill spec from opts (-o) plus the explicit backing arguments. */
static int spec_from_opts(const char *file, struct create_spec *s, struct opts *o)
{
    struct error err = {0};
    uint64_t v;
    if (opts_has(o, "size")) {
        if (opts_get_size(o, "size", &v, &err) < 0) {
            err_print("%s: %s", file, err.msg);
            return -1;
        }
        s->size = v;
        s->size_set = true;
    }
    s->prealloc_text = opts_get_str(o, "preallocation");
    if (prealloc_parse(file, s->prealloc_text, &s->q.prealloc, s->fmt == FMT_QCOW2) < 0)
        return -1;
    if (s->fmt == FMT_RAW)
        return 0;
    if (opts_get_size(o, "cluster_size", &v, &err) < 0) {
        err_print("%s: %s", file, err.msg);
        return -1;
    }
    s->q.cluster_size = v;
    if (opts_get_number(o, "refcount_bits", &v, &err) < 0) {
        err_print("%s: %s", file, err.msg);
        return -1;
    }
    s->q.refcount_bits = (unsigned)v;
    bool b = false;
    if (opts_get_bool(o, "lazy_refcounts", &b, &err) < 0) {
        err_print("%s: %s", file, err.msg);
        return -1;
    }
    s->q.lazy_refcounts = b;
    b = false;
    if (opts_get_bool(o, "extended_l2", &b, &err) < 0) {
        err_print("%s: %s", file, err.msg);
        return -1;
    }
    if (b) {
        err_print("%s: extended_l2=on is not supported yet", file);
        return -1;
    }
    const char *c = opts_get_str(o, "compression_type");
    if (!strcmp(c, "zlib"))
        s->q.compression = QCOW2_COMPRESS_ZLIB;
    else if (!strcmp(c, "zstd"))
        s->q.compression = QCOW2_COMPRESS_ZSTD;
    else {
        err_print("%s: Parameter 'compression_type' does not accept value '%s'", file, c);
        return -1;
    }
    s->compat_text = opts_get_str(o, "compat");
    if (s->compat_text) {
        if (!strcmp(s->compat_text, "0.10") || !strcmp(s->compat_text, "v2"))
            s->q.version = 2;
        else if (!strcmp(s->compat_text, "1.1") || !strcmp(s->compat_text, "v3"))
            s->q.version = 3;
        else {
            err_print("%s: Parameter 'compat' does not accept value '%s'", file, s->compat_text);
            return -1;
        }
    } else {
        s->q.version = 3;
    }
    if (s->q.version == 2 && s->q.refcount_bits != 16) {
        err_print("%s: Different refcount widths than 16 bits require compatibility level 1.1 "
                  "or above (use version=v3 or greater)",
                  file);
        return -1;
    }
    if (s->q.version == 2 && s->q.lazy_refcounts) {
        err_print("%s: Lazy refcounts only supported with compatibility level 1.1 and above "
                  "(use version=v3 or greater)",
                  file);
        return -1;
    }
    if (s->q.version == 2 && s->q.compression != QCOW2_COMPRESS_ZLIB) {
        err_print("%s: Compression type selection is only supported with compatibility level "
                  "1.1 and above (use compat=1.1 or greater)",
                  file);
        return -1;
    }
    if (!opts_has(o, "backing_file"))
        return 0;
    s->q.backing_file = opts_get_str(o, "backing_file");
    s->q.backing_fmt = opts_get_str(o, "backing_fmt");
    return 0;
}

static void print_formatting(const char *file, const struct create_spec *s)
{
    if (quiet)
        return;
    printf("Formatting '%s', fmt=%s ", file, fmt_name(s->fmt));
    if (s->fmt == FMT_RAW) {
        printf("size=%" PRIu64, s->size);
        if (s->prealloc_text)
            printf(" preallocation=%s", s->prealloc_text);
        printf("\n");
        return;
    }
    printf("cluster_size=%" PRIu64 " extended_l2=off ", s->q.cluster_size);
    if (s->prealloc_text)
        printf("preallocation=%s ", s->prealloc_text);
    printf("compression_type=%s size=%" PRIu64,
           s->q.compression == QCOW2_COMPRESS_ZSTD ? "zstd" : "zlib", s->size);
    if (s->compat_text)
        printf(" compat=%s", s->compat_text);
    if (s->q.backing_file)
        printf(" backing_file=%s", s->q.backing_file);
    if (s->q.backing_fmt)
        printf(" backing_fmt=%s", s->q.backing_fmt);
    printf(" lazy_refcounts=%s refcount_bits=%u\n", s->q.lazy_refcounts ? "on" : "off",
           s->q.refcount_bits);
}

/* Size of the backing image (probing its format unless fmt), -1 after a message. */
static int backing_image_size(const char *file, const char *bfile, const char *bfmt, uint64_t *size)
{
    char *full = path_combine(file, bfile);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_print("%s: Could not open backing file '%s': %s", file, full, strerror(errno));
        free(full);
        return -1;
    }
    close(fd);
    struct img b;
    bool saved = quiet;
    int r = img_open(&b, full, bfmt, false, true);
    quiet = saved;
    free(full);
    if (r < 0)
        return -1;
    *size = b.size;
    img_close(&b);
    return 0;
}

static int raw_create(const char *file, uint64_t size, enum qcow2_prealloc pre)
{
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err_print("%s: Could not create '%s': %s", file, file, strerror(errno));
        return -1;
    }
    int r = ftruncate(fd, (off_t)size);
    if (r == 0 && size && pre == QCOW2_PREALLOC_FALLOC)
        r = posix_fallocate(fd, 0, (off_t)size) ? -1 : 0;
    if (r == 0 && pre == QCOW2_PREALLOC_FULL) {
        uint8_t *z = calloc(1, CHUNK);
        for (uint64_t off = 0; z && r == 0 && off < size; off += CHUNK) {
            size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
            if (pwrite(fd, z, n, (off_t)off) != (ssize_t)n)
                r = -1;
        }
        free(z);
    }
    if (r < 0) {
        err_print("%s: Could not resize file: %s", file, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* Create file per spec (size 0 with backing: the backing size). Prints "Formatting". */
static int create_image(const char *file, struct create_spec *s, bool unsafe, bool announce)
{
    if (s->fmt == FMT_QCOW2 && s->q.backing_file) {
        if (!s->q.backing_fmt && !unsafe) {
            err_print("%s: Backing file specified without backing format", file);
            return -1;
        }
        if (s->q.backing_fmt && strcmp(s->q.backing_fmt, "raw") &&
            strcmp(s->q.backing_fmt, "qcow2")) {
            err_print("%s: Unknown backing file format '%s'", file, s->q.backing_fmt);
            return -1;
        }
        if (!unsafe || !s->size_set) {
            uint64_t bsize;
            if (backing_image_size(file, s->q.backing_file, s->q.backing_fmt, &bsize) < 0)
                return -1;
            if (!s->size_set)
                s->size = bsize;
        }
        if (s->q.prealloc != QCOW2_PREALLOC_OFF) {
            err_print("%s: Backing file and preallocation can only be used at the same time if "
                      "extended_l2 is on",
                      file);
            return -1;
        }
    } else if (!s->size_set) {
        err_print("%s: Image creation needs a size parameter", file);
        return -1;
    }
    s->size = (s->size + 511) & ~511ull;
    if (announce)
        print_formatting(file, s);
    if (s->fmt == FMT_RAW)
        return raw_create(file, s->size, s->q.prealloc);
    struct error err = {0};
    if (qcow2_create(file, s->size, &s->q, &err) < 0) {
        err_print("%s", err.msg);
        return -1;
    }
    return 0;
}

static char *join_opts(char *old, const char *add)
{
    char *r;
    if (!old)
        r = strdup(add);
    else if (asprintf(&r, "%s,%s", old, add) < 0)
        r = NULL;
    free(old);
    if (!r) {
        perror("kemu-img");
        exit(1);
    }
    return r;
}

static int cmd_create(int argc, char **argv)
{
    const char *fmt = "raw", *base = NULL, *base_fmt = NULL;
    char *options = NULL;
    bool unsafe = false;
    int c;
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"object", required_argument, 0, 'O'}, {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", lo, NULL)) != -1) {
        switch (c) {
        case 'F':
            base_fmt = optarg;
            break;
        case 'b':
            base = optarg;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            options = join_opts(options, optarg);
            break;
        case 'q':
            quiet = true;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'h':
            printf("usage: kemu-img create [-q] [-f fmt] [-b backing_file [-F "
                   "backing_fmt]] [-u] [-o options] filename [size]\n");
            free(options);
            return 0;
        default:
            free(options);
            return bad_option(argv, c);
        }
    }
    if (optind >= argc) {
        err_print("Expecting image file name");
        free(options);
        return 1;
    }
    const char *file = argv[optind++];
    struct create_spec s = {0};
    struct opts o;
    int ret = 1;
    if (parse_fmt(file, fmt, &s.fmt) < 0)
        goto out_free;
    int pr = parse_create_opts(file, s.fmt, options, &o);
    if (pr) {
        ret = pr > 0 ? 0 : 1;
        goto out;
    }
    if (spec_from_opts(file, &s, &o) < 0)
        goto out;
    if (optind < argc) {
        if (parse_img_size(argv[optind++], &s.size) < 0)
            goto out;
        s.size_set = true;
    }
    if (optind < argc) {
        err_print("Unexpected argument: %s", argv[optind]);
        goto out;
    }
    if (base) {
        if (s.fmt != FMT_QCOW2) {
            err_print("%s: Backing file not supported for file format '%s'", file, fmt);
            goto out;
        }
        s.q.backing_file = base;
    }
    if (base_fmt)
        s.q.backing_fmt = base_fmt;
    if (create_image(file, &s, unsafe, true) == 0)
        ret = 0;
out:
    opts_free(&o);
out_free:
    free(options);
    return ret;
}

/* ---- info ---- */

struct info {
    char *filename;
    enum fmt fmt;
    uint64_t vsize, actual;
    bool dirty;
    bool has_q;
    struct qcow2_info qi;
    char *backing, *full_backing, *backing_fmt;
    unsigned nsnap;
    struct qcow2_snapshot *snaps; /* shallow copies (strings owned by the open image) */
};

static void snap_line(FILE *f, const struct qcow2_snapshot *s)
{
    char date[32], vms[32], clock[40];
    time_t t = (time_t)s->date_sec;
    struct tm tm;
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
    block_size_to_str(s->vm_state_size, vms, sizeof(vms));
    uint64_t ns = s->vm_clock_nsec, secs = ns / 1000000000ull;
    snprintf(clock, sizeof(clock), "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%03" PRIu64,
             secs / 3600, secs / 60 % 60, secs % 60, ns / 1000000 % 1000);
    fprintf(f, "%-9s %-16s %8s%20s%13s%11s\n", s->id, s->name, vms, date, clock, "0");
}

static void snap_header(FILE *f)
{
    fprintf(f, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
}

static void print_info_human(struct img *im, const struct info *in)
{
    char a[32], b[32];
    block_size_to_str(in->vsize, a, sizeof(a));
    block_size_to_str(in->actual, b, sizeof(b));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n",
           in->filename, fmt_name(in->fmt), a, in->vsize, b);
    if (!in->has_q)
        return;
    const struct qcow2_info *q = &in->qi;
    printf("cluster_size: %" PRIu64 "\n", q->cluster_size);
    if (in->backing) {
        printf("backing file: %s", in->backing);
        if (strcmp(in->backing, in->full_backing))
            printf(" (actual path: %s)", in->full_backing);
        printf("\n");
    }
    if (in->backing_fmt)
        printf("backing file format: %s\n", in->backing_fmt);
    if (q->dirty)
        printf("cleanly shut down: no\n");
    if (in->nsnap) {
        printf("Snapshot list:\n");
        snap_header(stdout);
        for (unsigned i = 0; i < in->nsnap; i++)
            snap_line(stdout, qcow2_snapshot_get(im->q, i));
    }
    printf("Format specific information:\n    compat: %s\n    compression type: %s\n",
           q->version >= 3 ? "1.1" : "0.10", q->compression_type);
    if (q->version >= 3)
        printf("    lazy refcounts: %s\n", q->lazy_refcounts ? "true" : "false");
    printf("    refcount bits: %u\n", q->refcount_bits);
    if (q->version >= 3)
        printf("    corrupt: %s\n    extended l2: %s\n", q->corrupt ? "true" : "false",
               q->extended_l2 ? "true" : "false");
}

static void print_info_json(struct img *im, const struct info *in, const char *ind)
{
    const struct qcow2_info *q = &in->qi;
    printf("%s{\n", ind);
    if (in->has_q && in->nsnap) {
        printf("%s    \"snapshots\": [\n", ind);
        for (unsigned i = 0; i < in->nsnap; i++) {
            const struct qcow2_snapshot *s = qcow2_snapshot_get(im->q, i);
            printf("%s        {\n%s            \"icount\": 0,\n", ind, ind);
            printf("%s            \"vm-clock-nsec\": %" PRIu64 ",\n", ind,
                   s->vm_clock_nsec % UINT64_C(1000000000));
            printf("%s            \"name\": ", ind);
            json_str(stdout, s->name);
            printf(",\n%s            \"date-sec\": %" PRIu32 ",\n", ind, s->date_sec);
            printf("%s            \"date-nsec\": %" PRIu32 ",\n", ind, s->date_nsec);
            printf("%s            \"vm-clock-sec\": %" PRIu64 ",\n", ind,
                   s->vm_clock_nsec / UINT64_C(1000000000));
            printf("%s            \"id\": ", ind);
            json_str(stdout, s->id);
            printf(",\n%s            \"vm-state-size\": %" PRIu64 "\n", ind, s->vm_state_size);
            printf("%s        }%s\n", ind, i + 1 < in->nsnap ? "," : "");
        }
        printf("%s    ],\n", ind);
    }
    if (in->backing_fmt) {
        printf("%s    \"backing-filename-format\": ", ind);
        json_str(stdout, in->backing_fmt);
        printf(",\n");
    }
    printf("%s    \"virtual-size\": %" PRIu64 ",\n%s    \"filename\": ", ind, in->vsize, ind);
    json_str(stdout, in->filename);
    printf(",\n");
    if (in->has_q)
        printf("%s    \"cluster-size\": %" PRIu64 ",\n", ind, q->cluster_size);
    printf("%s    \"format\": \"%s\",\n%s    \"actual-size\": %" PRIu64 ",\n", ind,
           fmt_name(in->fmt), ind, in->actual);
    if (in->has_q) {
        printf("%s    \"format-specific\": {\n%s        \"type\": \"qcow2\",\n"
               "%s        \"data\": {\n",
               ind, ind, ind);
        printf("%s            \"compat\": \"%s\",\n", ind, q->version >= 3 ? "1.1" : "0.10");
        printf("%s            \"compression-type\": \"%s\",\n", ind, q->compression_type);
        if (q->version >= 3) {
            printf("%s            \"lazy-refcounts\": %s,\n", ind,
                   q->lazy_refcounts ? "true" : "false");
            printf("%s            \"refcount-bits\": %u,\n", ind, q->refcount_bits);
            printf("%s            \"corrupt\": %s,\n", ind, q->corrupt ? "true" : "false");
            printf("%s            \"extended-l2\": %s\n", ind, q->extended_l2 ? "true" : "false");
        } else {
            printf("%s            \"refcount-bits\": %u\n", ind, q->refcount_bits);
        }
        printf("%s        }\n%s    },\n", ind, ind);
    }
    if (in->backing) {
        printf("%s    \"full-backing-filename\": ", ind);
        json_str(stdout, in->full_backing);
        printf(",\n%s    \"backing-filename\": ", ind);
        json_str(stdout, in->backing);
        printf(",\n");
    }
    printf("%s    \"dirty-flag\": %s\n%s}", ind, in->dirty ? "true" : "false", ind);
}

static int gather_info(struct img *im, struct info *in)
{
    memset(in, 0, sizeof(*in));
    in->filename = strdup(im->name);
    in->fmt = im->fmt;
    in->vsize = im->size;
    struct stat st;
    int fd = im->fd;
    if (fd >= 0 && fstat(fd, &st) == 0)
        in->actual = (uint64_t)st.st_blocks * 512;
    if (!im->q)
        return 0;
    struct error err = {0};
    if (qcow2_get_info(im->q, &in->qi, &err) < 0) {
        err_print("%s", err.msg);
        return -1;
    }
    in->has_q = true;
    in->actual = in->qi.disk_size;
    in->dirty = in->qi.dirty;
    in->nsnap = in->qi.nb_snapshots;
    if (in->qi.backing_file) {
        in->backing = strdup(in->qi.backing_file);
        in->full_backing = path_combine(im->name, in->qi.backing_file);
    }
    if (in->qi.backing_fmt)
        in->backing_fmt = strdup(in->qi.backing_fmt);
    return 0;
}

static void info_free(struct info *in)
{
    free(in->filename);
    free(in->backing);
    free(in->full_backing);
    free(in->backing_fmt);
}

static int cmd_info(int argc, char **argv)
{
    const char *fmt = NULL, *output = "human";
    bool chain = false;
    int c;
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'},          {"output", required_argument, 0, 'o'},
        {"backing-chain", no_argument, 0, 'B'}, {"force-share", no_argument, 0, 'U'},
        {"image-opts", no_argument, 0, 'I'},    {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":f:hU", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'B':
            chain = true;
            break;
        case 'U':
            break;
        case 'h':
            printf("usage: kemu-img info [-f fmt] [--output=ofmt] [--backing-chain] "
                   "filename\n");
            return 0;
        case 'I':
            err_print("--image-opts is not supported");
            return 1;
        default:
            return bad_option(argv, c);
        }
    }
    bool json = !strcmp(output, "json");
    if (!json && strcmp(output, "human")) {
        err_print("--output must be used with human or json as argument.");
        return 1;
    }
    if (optind != argc - 1) {
        err_print(optind >= argc ? "Expecting one image file name"
                                 : "Expecting one image file name");
        return 1;
    }
    char *name = strdup(argv[optind]);
    char *nfmt = fmt ? strdup(fmt) : NULL;
    int n = 0, ret = 0;
    if (json && chain)
        printf("[\n");
    while (name) {
        struct img im;
        struct info in;
        if (n > 16) {
            err_print("%s: backing chain too long", name);
            ret = 1;
            break;
        }
        if (img_open(&im, name, nfmt, false, true) < 0 || gather_info(&im, &in) < 0) {
            ret = 1;
            break;
        }
        if (json) {
            if (n)
                printf(",\n");
            print_info_json(&im, &in, chain ? "    " : "");
            if (!chain)
                printf("\n");
        } else {
            if (n)
                printf("\n");
            print_info_human(&im, &in);
        }
        free(name);
        free(nfmt);
        name = nfmt = NULL;
        if (chain && in.backing) {
            name = strdup(in.full_backing);
            nfmt = in.backing_fmt ? strdup(in.backing_fmt) : NULL;
        }
        info_free(&in);
        img_close(&im);
        n++;
    }
    if (json && chain && ret == 0)
        printf("\n]\n");
    free(name);
    free(nfmt);
    return ret;
}

/* ---- check ---- */

static int cmd_check(int argc, char **argv)
{
    const char *fmt = NULL, *output = "human", *repair = NULL;
    int c;
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"output", required_argument, 0, 'o'},
                                       {"repair", required_argument, 0, 'r'},
                                       {"force-share", no_argument, 0, 'U'},
                                       {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":f:hr:T:qU", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'r':
            repair = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'T':
        case 'U':
            break;
        case 'h':
            printf("usage: kemu-img check [-q] [-f fmt] [--output=ofmt] [-r [leaks | "
                   "all]] filename\n");
            return 0;
        default:
            return bad_option(argv, c);
        }
    }
    bool json = !strcmp(output, "json");
    if (!json && strcmp(output, "human")) {
        err_print("--output must be used with human or json as argument.");
        return 1;
    }
    unsigned fix = 0;
    if (repair) {
        if (!strcmp(repair, "leaks"))
            fix = QCOW2_FIX_LEAKS;
        else if (!strcmp(repair, "all"))
            fix = QCOW2_FIX_LEAKS | QCOW2_FIX_ERRORS;
        else {
            err_print("Unknown option value for -r (expecting 'leaks' or 'all'): %s", repair);
            return 1;
        }
    }
    if (optind != argc - 1) {
        err_print("Expecting one image file name");
        return 1;
    }
    const char *file = argv[optind];
    struct img im;
    if (img_open(&im, file, fmt, fix != 0, true) < 0)
        return 1;
    if (!im.q) {
        img_close(&im);
        err_print("This image format does not support checks");
        return 63;
    }
    struct qcow2_check_result r;
    struct error err = {0};
    int rc = qcow2_check(im.q, fix, &r, json || quiet ? NULL : stderr, &err);
    if (rc < 0) {
        err_print("Check failed: %s", err.msg);
        img_close(&im);
        return 1;
    }
    if (json) {
        printf("{\n    \"image-end-offset\": %" PRIu64 ",\n    \"total-clusters\": %" PRIu64
               ",\n    \"check-errors\": %" PRIu64 ",\n",
               r.image_end_offset, r.total_clusters, r.check_errors);
        if (r.leaks)
            printf("    \"leaks\": %" PRIu64 ",\n", r.leaks);
        if (r.corruptions)
            printf("    \"corruptions\": %" PRIu64 ",\n", r.corruptions);
        if (r.leaks_fixed)
            printf("    \"leaks-fixed\": %" PRIu64 ",\n", r.leaks_fixed);
        if (r.corruptions_fixed)
            printf("    \"corruptions-fixed\": %" PRIu64 ",\n", r.corruptions_fixed);
        if (r.allocated_clusters)
            printf("    \"allocated-clusters\": %" PRIu64 ",\n", r.allocated_clusters);
        if (r.compressed_clusters)
            printf("    \"compressed-clusters\": %" PRIu64 ",\n", r.compressed_clusters);
        printf("    \"filename\": ");
        json_str(stdout, file);
        printf(",\n    \"format\": \"qcow2\"\n}\n");
    } else {
        if (r.leaks_fixed || r.corruptions_fixed)
            qprintf("The following inconsistencies were found and repaired:\n\n"
                    "    %" PRIu64 " leaked clusters\n    %" PRIu64 " corruptions\n\n"
                    "Double checking the fixed image now...\n",
                    r.leaks_fixed, r.corruptions_fixed);
        if (!r.corruptions && !r.leaks && !r.check_errors) {
            qprintf("No errors were found on the image.\n");
        } else {
            if (r.corruptions)
                qprintf("\n%" PRIu64 " errors were found on the image.\nData may be corrupted, "
                        "or further writes to the image may corrupt it.\n",
                        r.corruptions);
            if (r.leaks)
                qprintf("\n%" PRIu64 " leaked clusters were found on the image.\nThis means "
                        "waste of disk space, but no harm to data.\n",
                        r.leaks);
            if (r.check_errors)
                qprintf("\n%" PRIu64 " internal errors have occurred during the check.\n",
                        r.check_errors);
        }
        if (r.total_clusters && r.allocated_clusters)
            qprintf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
                    "compressed clusters\n",
                    r.allocated_clusters, r.total_clusters,
                    r.allocated_clusters * 100.0 / r.total_clusters, 0.0,
                    r.compressed_clusters * 100.0 / r.allocated_clusters);
        if (r.image_end_offset)
            qprintf("Image end offset: %" PRIu64 "\n", r.image_end_offset);
    }
    if (img_close(&im) < 0)
        return 1;
    if (r.check_errors) {
        err_print("Check failed");
        return 1;
    }
    return rc;
}

/* ---- convert ---- */

static void progress(double pct)
{
    printf("    (%3.2f/100%%)\r", pct);
    fflush(stdout);
}

static int cmd_convert(int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw", *base = NULL;
    char *options = NULL;
    bool compress = false, show_progress = false, no_create = false;
    const char *cache = "unsafe"; /* qemu-img convert's default: no flush at the end */
    uint64_t min_sparse = 4096;
    int c;
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"force-share", no_argument, 0, 'U'},
                                       {"target-is-zero", no_argument, 0, 'z'},
                                       {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":hf:O:B:Cco:l:S:pt:T:qnm:WrU", lo, NULL)) != -1) {
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
        case 'p':
            show_progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'n':
            no_create = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'T':
        case 'm':
        case 'W':
        case 'U':
        case 'z':
        case 'C':
        case 'r':
            break;
        case 'l':
            err_print("snapshot conversion (-l) is not supported yet");
            free(options);
            return 1;
        case 'h':
            printf("usage: kemu-img convert [-c] [-p] [-q] [-n] [-f fmt] [-O "
                   "output_fmt] [-B backing_file] [-o options] [-S sparse_size] "
                   "filename [filename2 [...]] output_filename\n");
            free(options);
            return 0;
        default:
            free(options);
            return bad_option(argv, c);
        }
    }
    if (quiet)
        show_progress = false;
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
    if (parse_fmt(out, ofmt, &s.fmt) < 0)
        goto out;
    if (compress) {
        err_print("-c: compressed output is not supported yet");
        goto out;
    }
    int pr = parse_create_opts(out, s.fmt, options, &o);
    if (pr) {
        ret = pr > 0 ? 0 : 1;
        goto out;
    }
    if (spec_from_opts(out, &s, &o) < 0)
        goto out;
    if (base) {
        if (s.fmt != FMT_QCOW2) {
            err_print("%s: Backing file not supported for file format '%s'", out, ofmt);
            goto out;
        }
        s.q.backing_file = base;
    }
    uint64_t total = 0;
    for (int i = 0; i < nsrc; i++, opened++) {
        if (img_open(&src[i], argv[optind + i], fmt, false, false) < 0)
            goto out;
        total += src[i].size;
    }
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

static int cmd_compare(int argc, char **argv)
{
    const char *fmt1 = NULL, *fmt2 = NULL;
    bool strict = false, show_progress = false;
    int c;
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"force-share", no_argument, 0, 'U'}, {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", lo, NULL)) != -1) {
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
        case 'p':
            show_progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'T':
        case 'U':
            break;
        case 'h':
            printf("usage: kemu-img compare [-f fmt] [-F fmt] [-p] [-q] [-s] filename1 "
                   "filename2\n");
            return 0;
        default:
            bad_option(argv, c);
            return 2;
        }
    }
    if (quiet)
        show_progress = false;
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

/* ---- resize ---- */

static int cmd_resize(int argc, char **argv)
{
    const char *fmt = NULL;
    bool shrink = false;
    int c;
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"shrink", no_argument, 0, 'S'},
                                       {"preallocation", required_argument, 0, 'P'},
                                       {0, 0, 0, 0}};
    /* a size of "-1G" looks like an option: stop at the first non-option */
    while ((c = getopt_long(argc, argv, "+:f:hq", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'S':
            shrink = true;
            break;
        case 'P':
            break;
        case 'h':
            printf("usage: kemu-img resize [-f fmt] [--shrink] filename [+ | -]size\n");
            return 0;
        default:
            return bad_option(argv, c);
        }
    }
    if (optind != argc - 2) {
        err_print("Expecting image file name and size");
        return 1;
    }
    const char *file = argv[optind], *ssz = argv[optind + 1];
    int sign = 0;
    if (*ssz == '+' || *ssz == '-')
        sign = *ssz++ == '+' ? 1 : -1;
    uint64_t sz;
    if (parse_img_size(ssz, &sz) < 0)
        return 1;
    struct img im;
    if (img_open(&im, file, fmt, true, true) < 0)
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
        if (ns != im.size) {
            err_print("%s: resizing qcow2 images is not supported yet", file);
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

/* ---- snapshot ---- */

static int cmd_snapshot(int argc, char **argv)
{
    const char *fmt = NULL;
    bool list = false;
    int c;
    static const struct option lo[] = {
        {"help", no_argument, 0, 'h'}, {"force-share", no_argument, 0, 'U'}, {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":la:c:d:f:hqU", lo, NULL)) != -1) {
        switch (c) {
        case 'l':
            list = true;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            break;
        case 'a':
        case 'c':
        case 'd':
            err_print("snapshot -%c is not supported yet", c);
            return 1;
        case 'h':
            printf("usage: kemu-img snapshot [-f fmt] -l filename\n");
            return 0;
        default:
            return bad_option(argv, c);
        }
    }
    if (optind != argc - 1) {
        err_print("Expecting one image file name");
        return 1;
    }
    if (!list) {
        err_print("snapshot: only -l is supported");
        return 1;
    }
    struct img im;
    if (img_open(&im, argv[optind], fmt, false, true) < 0)
        return 1;
    unsigned n = im.q ? qcow2_snapshot_count(im.q) : 0;
    if (n) {
        printf("Snapshot list:\n");
        snap_header(stdout);
        for (unsigned i = 0; i < n; i++)
            snap_line(stdout, qcow2_snapshot_get(im.q, i));
    }
    img_close(&im);
    return 0;
}

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

static int cmd_measure(int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw", *output = "human", *ssize = NULL;
    char *options = NULL;
    int c;
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"output", required_argument, 0, 'j'},
                                       {"size", required_argument, 0, 's'},
                                       {"force-share", no_argument, 0, 'U'},
                                       {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":hf:O:o:l:U", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'O':
            ofmt = optarg;
            break;
        case 'o':
            options = join_opts(options, optarg);
            break;
        case 'j':
            output = optarg;
            break;
        case 's':
            ssize = optarg;
            break;
        case 'U':
        case 'l':
            break;
        case 'h':
            printf("usage: kemu-img measure [--output=ofmt] [-O output_fmt] [-o options] "
                   "[--size N | [-f fmt] filename]\n");
            free(options);
            return 0;
        default:
            free(options);
            return bad_option(argv, c);
        }
    }
    int ret = 1;
    struct create_spec s = {0};
    struct opts o = {0};
    bool json = !strcmp(output, "json");
    if (parse_fmt(NULL, ofmt, &s.fmt) < 0)
        goto out;
    if (parse_create_opts("measure", s.fmt, options, &o) || spec_from_opts("measure", &s, &o))
        goto out;
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
        size = im.size;
        bitmaps = im.q && s.fmt == FMT_QCOW2;
        uint64_t cs = s.fmt == FMT_QCOW2 && s.q.cluster_size ? s.q.cluster_size : 65536;
        uint8_t *buf = malloc(cs);
        for (uint64_t off = 0; buf && off < size; off += cs) {
            size_t n = size - off < cs ? (size_t)(size - off) : (size_t)cs;
            uint64_t hole = raw_hole_len(&im, off, n);
            if (hole >= n)
                continue;
            if (!im.q && im.has_data_map) { /* raw: allocated extents count, as qemu's */
                used += cs;
                continue;
            }
            if (img_read(&im, off, buf, n) < 0) {
                free(buf);
                img_close(&im);
                goto out;
            }
            if (!is_zero(buf, n))
                used += cs;
        }
        free(buf);
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

/* ---- map (raw files only: SEEK_DATA/SEEK_HOLE) ---- */

static int cmd_map(int argc, char **argv)
{
    const char *fmt = NULL, *output = "human";
    int c;
    static const struct option lo[] = {{"help", no_argument, 0, 'h'},
                                       {"output", required_argument, 0, 'o'},
                                       {"force-share", no_argument, 0, 'U'},
                                       {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, ":hf:U", lo, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'U':
            break;
        case 'h':
            printf("usage: kemu-img map [-f fmt] [--output=ofmt] filename\n");
            return 0;
        default:
            return bad_option(argv, c);
        }
    }
    bool json = !strcmp(output, "json");
    if (optind != argc - 1) {
        err_print("Expecting one image file name");
        return 1;
    }
    struct img im;
    if (img_open(&im, argv[optind], fmt, false, true) < 0)
        return 1;
    if (im.q) {
        err_print("%s: map of qcow2 images is not supported yet", im.name);
        img_close(&im);
        return 1;
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

/* ---- main ---- */

static void usage(void)
{
    printf("kemu-img version " KEMU_VERSION "\n"
           "usage: kemu-img [standard options] command [command options]\n"
           "QEMU-compatible disk image utility (raw and qcow2)\n\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n\n"
           "Command syntax:\n"
           "  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] filename\n"
           "  compare [-f fmt] [-F fmt] [-p] [-q] [-s] filename1 filename2\n"
           "  convert [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-B backing_file] "
           "[-o options] [-S sparse_size] filename [filename2 [...]] output_filename\n"
           "  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] "
           "filename [size]\n"
           "  info [-f fmt] [--output=ofmt] [--backing-chain] filename\n"
           "  map [-f fmt] [--output=ofmt] filename\n"
           "  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] "
           "filename]\n"
           "  resize [-f fmt] [-q] [--shrink] filename [+ | -]size\n"
           "  snapshot [-f fmt] -l filename\n\n"
           "Supported formats: raw qcow2\n");
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"create", cmd_create},     {"info", cmd_info},       {"check", cmd_check},
        {"convert", cmd_convert},   {"compare", cmd_compare}, {"resize", cmd_resize},
        {"snapshot", cmd_snapshot}, {"measure", cmd_measure}, {"map", cmd_map},
    };
    if (argc < 2) {
        err_print("Not enough arguments; try 'kemu-img --help'");
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage();
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("kemu-img version " KEMU_VERSION "\n");
        return 0;
    }
    opterr = 0;
    optind = 1;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(cmd, cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    if (cmd[0] == '-')
        err_print("Unknown option '%s'", cmd);
    else
        err_print("Command not found: %s", cmd);
    return 1;
}
