/*
 * kemu-img: what the commands share: messages, the table-driven option parser, opening
 * and reading images, creating them from -o options, progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"

#include "tools/img.h"

const char *prog = "kemu-img";
bool quiet, img_ignored, show_progress;
/* cache=unsafe for images opened read-write from here on (convert's default target mode) */
bool open_no_sync;
bool open_for_check;

void err_print(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* "kemu-img: file: message", or "kemu-img: message" when file is NULL */
static void err_file(const char *file, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void err_file(const char *file, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    if (file)
        fprintf(stderr, "%s: ", file);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void qprintf(const char *fmt, ...)
{
    if (quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* ---- option helpers ---- */

/* ---- command options ----
 * Each command describes its options once, in a table; img_getopt() parses with it, and the
 * usage lines of "kemu-img CMD --help" and "kemu-img --help" and the error messages come from
 * the same table. */

#define MAX_OPTS 24 /* per command, --help included */

/* "[-f fmt]" or "[--output=ofmt]": the option as the usage line shows it */
static void opt_usage(FILE *f, const struct img_opt *o)
{
    if (o->id < LONG_OUTPUT)
        fprintf(f, "[-%c%s%s]", o->id, o->arg ? " " : "", o->arg ? o->arg : "");
    else
        fprintf(f, "[--%s%s%s]", o->name, o->arg ? "=" : "", o->arg ? o->arg : "");
}

void cmd_synopsis(FILE *f, const struct img_cmd *cmd)
{
    fprintf(f, "%s", cmd->name);
    for (const struct img_opt *o = cmd->opts; o->id; o++)
        if (o->help) {
            fputc(' ', f);
            opt_usage(f, o);
        }
    fprintf(f, " %s\n", cmd->operands);
}

static void cmd_help(const struct img_cmd *cmd)
{
    printf("usage: %s ", prog);
    cmd_synopsis(stdout, cmd);
    printf("\n");
    for (const struct img_opt *o = cmd->opts; o->id; o++) {
        if (!o->help)
            continue;
        char left[64];
        int n = 0;
        if (o->id < LONG_OUTPUT)
            n = snprintf(left, sizeof(left), "-%c%s", o->id, o->name ? ", " : "");
        if (o->name)
            n += snprintf(left + n, sizeof(left) - (size_t)n, "--%s", o->name);
        if (o->arg)
            snprintf(left + n, sizeof(left) - (size_t)n, "%s%s", o->name ? "=" : " ", o->arg);
        printf("  %-24s %s\n", left, o->help);
    }
}

bool img_one_file(int argc)
{
    if (optind == argc - 1)
        return true;
    err_print("Expecting one image file name");
    return false;
}

bool parse_output(const char *output, bool *json)
{
    *json = !strcmp(output, "json");
    if (*json || !strcmp(output, "human"))
        return true;
    err_print("--output must be used with human or json as argument.");
    return false;
}

/*
 * getopt_long over the command's table. Returns the id of the next option (optarg set when it
 * takes an argument), 0 when the options end (optind is the first operand), or -1 when the
 * command must return *status: help was printed (0) or an error (cmd->bad_status).
 */
int img_getopt(const struct img_cmd *cmd, int argc, char **argv, int *status)
{
    char shorts[2 * MAX_OPTS + 3] = ":h"; /* ':' first: a missing argument returns ':' */
    struct option longs[MAX_OPTS + 2] = {{"help", no_argument, NULL, 'h'}};
    size_t ns = 2, nl = 1;
    for (const struct img_opt *o = cmd->opts; o->id; o++) {
        if (o->id < LONG_OUTPUT) {
            shorts[ns++] = (char)o->id;
            if (o->arg)
                shorts[ns++] = ':';
        }
        if (o->name)
            longs[nl++] =
                (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->id};
    }
    for (;;) {
        int c = getopt_long(argc, argv, shorts, longs, NULL);
        if (c == -1) {
            if (quiet)
                show_progress = false;
            return 0;
        }
        if (c == 'h') {
            cmd_help(cmd);
            *status = 0;
            return -1;
        }
        if (c == ':' || c == '?') {
            if (c == ':')
                err_print("%s: option '%s' requires an argument", cmd->name, argv[optind - 1]);
            else if (optopt)
                err_print("%s: Unknown option '-%c'", cmd->name, optopt);
            else
                err_print("%s: Unknown option '%s'", cmd->name, argv[optind - 1]);
            *status = cmd->bad_status;
            return -1;
        }
        const struct img_opt *o = cmd->opts;
        while (o->id != c)
            o++;
        if (!o->set)
            return c;
        *o->set = true;
    }
}

int parse_img_size(const char *s, uint64_t *out)
{
    if (!*s || *s == '-' || opts_parse_size(s, 1, out) < 0 || *out > INT64_MAX) {
        err_print("Invalid image size specified. You may use k, M, G, T, P or E suffixes for "
                  "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return -1;
    }
    return 0;
}

void json_str(FILE *f, const char *s)
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
char *path_combine(const char *base, const char *name)
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

int parse_fmt(const char *name, const char *s, enum fmt *out)
{
    if (!strcmp(s, "raw"))
        *out = FMT_RAW;
    else if (!strcmp(s, "qcow2"))
        *out = FMT_QCOW2;
    else {
        err_file(name, "Unknown file format '%s'", s);
        return -1;
    }
    return 0;
}

const char *fmt_name(enum fmt f)
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
int img_open(struct img *im, const char *name, const char *fmt, bool rw, bool no_backing)
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
    struct qcow2_open_opts o = {.read_write = rw,
                                .no_backing = no_backing,
                                .no_sync = rw && open_no_sync,
                                .check = open_for_check,
                                .l2_cache_size = 32u << 20};
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

int img_close(struct img *im)
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

int img_read(struct img *im, uint64_t off, void *buf, size_t len)
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

int img_write(struct img *im, uint64_t off, const void *buf, size_t len)
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

/* Bytes from off that read as zeros without being read: a hole in a raw file, clusters a qcow2
 * image (or its backing chain) knows to be zero (0 if data or unknown), at most len. */
uint64_t raw_hole_len(struct img *im, uint64_t off, uint64_t len)
{
    if (im->q) {
        uint64_t z = 0;
        while (z < len) {
            struct qcow2_map_entry e;
            struct error err = {0};
            if (qcow2_map(im->q, off + z, len - z, &e, &err) < 0 || !e.zero)
                break;
            z += e.len;
        }
        return z < len ? z : len;
    }
    if (!im->has_data_map)
        return 0;
    off_t d = lseek(im->fd, (off_t)off, SEEK_DATA);
    if (d < 0)
        return errno == ENXIO ? len : 0; /* ENXIO: no data past off */
    uint64_t h = (uint64_t)d - off;
    return h < len ? h : len;
}

bool is_zero(const uint8_t *p, size_t n)
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

/* Parse the -o text for format f; unknown keys are "Invalid parameter". 0, 1 after "-o help"
 * was printed, -1 on error. */
static int parse_create_opts(const char *file, enum fmt f, const char *text, struct opts *o)
{
    const struct opts_group *g = f == FMT_QCOW2 ? &qcow2_group : &raw_group;
    struct error err = {0};
    memset(o, 0, sizeof(*o));
    o->group = g;
    if (!text)
        return 0;
    if (opts_parse(o, g, text, &err) < 0) {
        err_file(file, "%s", err.msg);
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
            err_file(file, "Invalid parameter '%s'", o->kv[i].key);
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
        err_file(file, "Parameter 'preallocation' does not accept value '%s'", s);
        return -1;
    }
    return 0;
}

/* Fill spec from opts (-o). */
static int spec_from_opts(const char *file, struct create_spec *s, struct opts *o)
{
    struct error err = {0};
    uint64_t v;
    if (opts_has(o, "size")) {
        if (opts_get_size(o, "size", &v, &err) < 0) {
            err_file(file, "%s", err.msg);
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
        err_file(file, "%s", err.msg);
        return -1;
    }
    s->q.cluster_size = v;
    if (opts_get_number(o, "refcount_bits", &v, &err) < 0) {
        err_file(file, "%s", err.msg);
        return -1;
    }
    s->q.refcount_bits = (unsigned)v;
    bool b = false;
    if (opts_get_bool(o, "lazy_refcounts", &b, &err) < 0) {
        err_file(file, "%s", err.msg);
        return -1;
    }
    s->q.lazy_refcounts = b;
    b = false;
    if (opts_get_bool(o, "extended_l2", &b, &err) < 0) {
        err_file(file, "%s", err.msg);
        return -1;
    }
    if (b) {
        err_file(file, "extended_l2=on is not supported yet");
        return -1;
    }
    const char *c = opts_get_str(o, "compression_type");
    if (!strcmp(c, "zlib"))
        s->q.compression = QCOW2_COMPRESS_ZLIB;
    else if (!strcmp(c, "zstd"))
        s->q.compression = QCOW2_COMPRESS_ZSTD;
    else {
        err_file(file, "Parameter 'compression_type' does not accept value '%s'", c);
        return -1;
    }
    s->compat_text = opts_get_str(o, "compat");
    if (s->compat_text) {
        if (!strcmp(s->compat_text, "0.10") || !strcmp(s->compat_text, "v2"))
            s->q.version = 2;
        else if (!strcmp(s->compat_text, "1.1") || !strcmp(s->compat_text, "v3"))
            s->q.version = 3;
        else {
            err_file(file, "Parameter 'compat' does not accept value '%s'", s->compat_text);
            return -1;
        }
    } else {
        s->q.version = 3;
    }
    if (s->q.version == 2 && s->q.refcount_bits != 16) {
        err_file(file, "Different refcount widths than 16 bits require compatibility level 1.1 "
                       "or above (use version=v3 or greater)");
        return -1;
    }
    if (s->q.version == 2 && s->q.lazy_refcounts) {
        err_file(file, "Lazy refcounts only supported with compatibility level 1.1 and above "
                       "(use version=v3 or greater)");
        return -1;
    }
    if (s->q.version == 2 && s->q.compression != QCOW2_COMPRESS_ZLIB) {
        err_file(file, "Non-zlib compression type is only supported with compatibility level "
                       "1.1 and above (use version=v3 or greater)");
        return -1;
    }
    if (!opts_has(o, "backing_file"))
        return 0;
    s->q.backing_file = opts_get_str(o, "backing_file");
    s->q.backing_fmt = opts_get_str(o, "backing_fmt");
    return 0;
}

int create_spec_parse(struct create_spec *s, struct opts *o, const char *file, const char *fmt,
                      const char *options, const char *backing)
{
    memset(o, 0, sizeof(*o));
    if (parse_fmt(file, fmt, &s->fmt) < 0)
        return -1;
    int r = parse_create_opts(file, s->fmt, options, o);
    if (r)
        return r;
    if (spec_from_opts(file, s, o) < 0)
        return -1;
    if (backing) { /* -b/-B win over -o backing_file */
        if (s->fmt != FMT_QCOW2) {
            err_file(file, "Backing file not supported for file format '%s'", fmt);
            return -1;
        }
        s->q.backing_file = backing;
    }
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
int create_image(const char *file, struct create_spec *s, bool unsafe, bool announce)
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

char *join_opts(char *old, const char *add)
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

/* ---- snapshots, listed by info and snapshot ---- */

void snap_line(FILE *f, const struct qcow2_snapshot *s)
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

void snap_header(FILE *f)
{
    fprintf(f, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
}

/* ---- progress ---- */

void progress(double pct)
{
    printf("    (%3.2f/100%%)\r", pct);
    fflush(stdout);
}
