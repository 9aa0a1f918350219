/*
 * kemu-img's shared parts (img-common.c) and its commands (img-create.c: create, info, check;
 * img-convert.c: convert, compare, measure, map; img-snapshot.c: resize, snapshot, commit,
 * rebase). Errors print one line "kemu-img: ..." on stderr; the exit codes are qemu-img's.
 */
#ifndef KEMU_TOOLS_IMG_H
#define KEMU_TOOLS_IMG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "block/qcow2.h"
#include "cli/opts.h"

#define CHUNK (2u << 20)

extern const char *prog;
extern bool quiet;
/* -p: show a progress bar; img_getopt() turns it off under -q, as qemu-img does */
extern bool show_progress;
/* set by the options accepted for qemu-img compatibility that have no effect here */
extern bool img_ignored;
/* cache=unsafe for images opened read-write from here on (convert's default target mode) */
extern bool open_no_sync;
/* images are opened to be checked (check -r): a dirty or corrupt image is left for the check
 * to report and repair, as qemu-img's BDRV_O_CHECK */
extern bool open_for_check;

void err_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* printf unless -q */
void qprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- command options ----
 * Each command describes its options once, in a table; img_getopt() parses with it, and the
 * usage lines of "kemu-img CMD --help" and "kemu-img --help" and the error messages come from
 * the same table. */

enum {
    LONG_OUTPUT = 256,
    LONG_BACKING_CHAIN,
    LONG_IMAGE_OPTS,
    LONG_OBJECT,
    LONG_SHRINK,
    LONG_PREALLOCATION,
    LONG_SIZE,
    LONG_TARGET_IS_ZERO,
};

struct img_opt {
    int id;           /* the short letter, or a LONG_* id for a long-only option */
    const char *name; /* the long form, or NULL */
    const char *arg;  /* the argument's name in help, or NULL: the option takes none */
    const char *help; /* NULL: not listed in help */
    bool *set;        /* NULL: img_getopt returns the option; else it sets *set, goes on */
};

struct img_cmd {
    const char *name;
    int (*fn)(const struct img_cmd *cmd, int argc, char **argv);
    const struct img_opt *opts; /* ends with an entry whose id is 0 */
    const char *operands;       /* for the usage line */
    int bad_status;             /* exit status after a bad option: 1, compare's is 2 */
};

/* entries several commands share */
/* clang-format off */
#define OPTE_FMT {'f', NULL, "fmt", "image format: raw or qcow2 (default: probed)", NULL}
#define OPTE_QUIET {'q', NULL, NULL, "quiet: print errors only", &quiet}
#define OPTE_PROGRESS {'p', NULL, NULL, "show progress", &show_progress}
#define OPTE_OUTPUT {LONG_OUTPUT, "output", "ofmt", "human (default) or json", NULL}
#define OPTE_CACHE(l) {l, NULL, "cache", NULL, &img_ignored}
#define OPTE_FORCE_SHARE {'U', "force-share", NULL, NULL, &img_ignored}
#define OPTE_OBJECT {LONG_OBJECT, "object", "properties", NULL, &img_ignored}
/* clang-format on */

/* getopt_long over cmd->opts: the id of the next option (optarg set if it takes one), 0 when
 * the options end (optind: first operand), -1 when the command must return *status (help was
 * printed, or an error). */
int img_getopt(const struct img_cmd *cmd, int argc, char **argv, int *status);
/* --output=ofmt: "human" or "json" (sets *json); false after qemu-img's message if neither. */
bool parse_output(const char *output, bool *json);
/* After img_getopt: exactly one file name must be left; false (message printed) if not. */
bool img_one_file(int argc);
/* "create [-q] [-f fmt] ... filename [size]" and a newline */
void cmd_synopsis(FILE *f, const struct img_cmd *cmd);

/* the commands, for main */
extern const struct img_cmd img_cmd_check, img_cmd_commit, img_cmd_compare, img_cmd_convert,
    img_cmd_create, img_cmd_info, img_cmd_map, img_cmd_measure, img_cmd_rebase, img_cmd_resize,
    img_cmd_snapshot;

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

/* an image size: "10M", "1G", ...; prints qemu-img's error */
int parse_img_size(const char *s, uint64_t *out);
/* s as a JSON string literal */
void json_str(FILE *f, const char *s);
/* qemu's path_combine: a relative backing name is relative to the image's directory. */
char *path_combine(const char *base, const char *name);
/* "raw" or "qcow2"; else prints "name: Unknown file format" (name may be NULL) */
int parse_fmt(const char *name, const char *s, enum fmt *out);
const char *fmt_name(enum fmt f);
/* Open name; fmt NULL probes. no_backing: unallocated qcow2 clusters read as zeros. */
int img_open(struct img *im, const char *name, const char *fmt, bool rw, bool no_backing);
int img_close(struct img *im);
int img_read(struct img *im, uint64_t off, void *buf, size_t len);
int img_write(struct img *im, uint64_t off, const void *buf, size_t len);
/* Bytes from off that read as zeros without being read (holes, zero clusters), at most len. */
uint64_t raw_hole_len(struct img *im, uint64_t off, uint64_t len);
bool is_zero(const uint8_t *p, size_t n);

/* ---- creating images (create, convert, measure) ---- */

struct create_spec {
    enum fmt fmt;
    uint64_t size;
    bool size_set;
    struct qcow2_create_opts q;
    const char *prealloc_text;
    const char *compat_text;
};

/* The target format fmt (create -f, convert and measure -O), its -o options (NULL: none) and a
 * backing file (-b, -B; NULL: none) into s. file names the image in messages (NULL: none). s
 * points into o, which the caller frees with opts_free() in every case. Returns 0, 1 after
 * "-o help" was printed, -1 after an error message. */
int create_spec_parse(struct create_spec *s, struct opts *o, const char *file, const char *fmt,
                      const char *options, const char *backing);
/* Create file per spec (size 0 with backing: the backing size). Prints "Formatting". */
int create_image(const char *file, struct create_spec *s, bool unsafe, bool announce);
/* old + "," + add (old freed; exits when out of memory): repeated -o options */
char *join_opts(char *old, const char *add);

/* ---- output ---- */

void snap_header(FILE *f);
void snap_line(FILE *f, const struct qcow2_snapshot *s);
/* "    (12.34/100%)\r" on stdout */
void progress(double pct);

#endif
