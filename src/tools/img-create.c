/*
 * kemu-img create, info, check.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"

#include "tools/img.h"

static const struct img_opt create_opts[] = {
    OPTE_QUIET,
    {'f', NULL, "fmt", "image format: raw (default) or qcow2", NULL},
    {'b', NULL, "backing_file", "backing file of the new qcow2 image", NULL},
    {'F', NULL, "backing_fmt", "format of the backing file", NULL},
    {'u', NULL, NULL, "unsafe: allow a backing file without its format", NULL},
    {'o', NULL, "options", "format options, repeatable ('-o help' lists them)", NULL},
    OPTE_OBJECT,
    {0},
};

static int cmd_create(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = "raw", *base = NULL, *base_fmt = NULL;
    char *options = NULL;
    bool unsafe = false;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
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
        case 'u':
            unsafe = true;
            break;
        }
    }
    if (c < 0) {
        free(options);
        return opt_ret;
    }
    if (optind >= argc) {
        err_print("Expecting image file name");
        free(options);
        return 1;
    }
    const char *file = argv[optind++];
    /* the operands first, as qemu-img checks them */
    const char *size_arg = optind < argc ? argv[optind++] : NULL;
    uint64_t size = 0;
    if (size_arg && parse_img_size(size_arg, &size) < 0) {
        free(options);
        return 1;
    }
    if (optind < argc) {
        err_print("Unexpected argument: %s", argv[optind]);
        free(options);
        return 1;
    }
    struct create_spec s = {0};
    struct opts o;
    int ret = 1;
    int pr = create_spec_parse(&s, &o, file, fmt, options, base);
    if (pr) {
        ret = pr > 0 ? 0 : 1;
        goto out;
    }
    if (size_arg) { /* wins over -o size */
        s.size = size;
        s.size_set = true;
    }
    if (base_fmt)
        s.q.backing_fmt = base_fmt;
    if (create_image(file, &s, unsafe, true) == 0)
        ret = 0;
out:
    opts_free(&o);
    free(options);
    return ret;
}

const struct img_cmd img_cmd_create = {"create", cmd_create, create_opts, "filename [size]", 1};

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

static const struct img_opt info_opts[] = {
    OPTE_FMT,
    OPTE_OUTPUT,
    {LONG_BACKING_CHAIN, "backing-chain", NULL, "also show the backing files, in order", NULL},
    OPTE_FORCE_SHARE,
    {LONG_IMAGE_OPTS, "image-opts", NULL, NULL, NULL},
    {0},
};

static int cmd_info(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *output = "human";
    bool chain = false;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case LONG_OUTPUT:
            output = optarg;
            break;
        case LONG_BACKING_CHAIN:
            chain = true;
            break;
        case LONG_IMAGE_OPTS:
            err_print("--image-opts is not supported");
            return 1;
        }
    }
    if (c < 0)
        return opt_ret;
    bool json;
    if (!parse_output(output, &json))
        return 1;
    if (!img_one_file(argc))
        return 1;
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

const struct img_cmd img_cmd_info = {"info", cmd_info, info_opts, "filename", 1};

/* ---- check ---- */

static const struct img_opt check_opts[] = {
    OPTE_QUIET,
    OPTE_FMT,
    OPTE_OUTPUT,
    {'r', "repair", "leaks|all", "repair leaked clusters, or all errors", NULL},
    OPTE_CACHE('T'),
    OPTE_FORCE_SHARE,
    {0},
};

static int cmd_check(const struct img_cmd *cmd, int argc, char **argv)
{
    const char *fmt = NULL, *output = "human", *repair = NULL;
    int c, opt_ret;
    while ((c = img_getopt(cmd, argc, argv, &opt_ret)) > 0) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case LONG_OUTPUT:
            output = optarg;
            break;
        case 'r':
            repair = optarg;
            break;
        }
    }
    if (c < 0)
        return opt_ret;
    bool json;
    if (!parse_output(output, &json))
        return 1;
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
    if (!img_one_file(argc))
        return 1;
    const char *file = argv[optind];
    struct img im;
    open_for_check = true;
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

const struct img_cmd img_cmd_check = {"check", cmd_check, check_opts, "filename", 1};
