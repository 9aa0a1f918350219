/*
 * A hostile qcow2 image against the library. The input is the image file itself; it is put in a
 * memfd, opened read-only without its backing chain (a fuzzed backing name must not open host
 * files), read at a few places derived from the virtual size, checked and mapped; then opened
 * read-write and written, snapshotted, reverted. Nothing may crash, hang, leak or allocate
 * memory in proportion to a header field rather than to the file.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/qcow2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[70000];
    int fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    struct error err = {0};
    struct qcow2_open_opts o = {.no_backing = true, .l2_cache_size = 4096};
    struct qcow2 *q = qcow2_open_fd(fd, "fuzz.qcow2", &o, &err);
    if (!q) {
        close(fd);
        return 0;
    }
    uint64_t vs = qcow2_size(q);
    uint64_t offs[4] = {0, vs / 2, vs > 70000 ? vs - 70000 : 0, vs / 3 + 1000};
    size_t lens[4] = {4096, 70000, 70000, 1};
    for (int i = 0; i < 4; i++) {
        size_t n = lens[i];
        if (offs[i] > vs)
            continue;
        if (n > vs - offs[i])
            n = (size_t)(vs - offs[i]);
        err = (struct error){0};
        qcow2_read(q, offs[i], buf, n, &err);
    }
    struct qcow2_check_result res;
    err = (struct error){0};
    qcow2_check(q, 0, &res, NULL, &err);
    struct qcow2_info info;
    qcow2_get_info(q, &info, &err);
    for (uint64_t off = 0, n = 0; off < vs && n < 64; n++) { /* map walks the tables */
        struct qcow2_map_entry e;
        err = (struct error){0};
        if (qcow2_map(q, off, vs - off, &e, &err) < 0)
            break;
        off += e.len;
    }
    /* qcow2_driver.c's split read path: map extents, read what the library itself serves */
    for (uint64_t off = 0, n = 0; off < vs && n < 16; n++) {
        struct qcow2_extent ext[8];
        err = (struct error){0};
        int k = qcow2_read_map(q, off, vs - off, ext, 8, &err);
        if (k <= 0 || ext[k - 1].off + ext[k - 1].len <= off)
            break;
        for (int i = 0; i < k; i++) {
            size_t len = ext[i].len < sizeof(buf) ? (size_t)ext[i].len : sizeof(buf);
            err = (struct error){0};
            if (ext[i].type == QCOW2_EXT_LIB)
                qcow2_read(q, ext[i].off, buf, len, &err);
        }
        off = ext[k - 1].off + ext[k - 1].len;
    }
    /* convert -l: the first snapshot's tables replace the active ones, then read through */
    err = (struct error){0};
    if (qcow2_snapshot_count(q) && qcow2_snapshot_load_tmp(q, "1", NULL, &err) == 0) {
        err = (struct error){0};
        qcow2_read(q, 0, buf, vs < 70000 ? (size_t)vs : 70000, &err);
        if (vs > 70000) {
            err = (struct error){0};
            qcow2_read(q, vs - 70000, buf, 70000, &err);
        }
    }
    qcow2_close(q, &err);

    /* Read-write on the memfd: a write, and a snapshot taken, applied and deleted, walk and
     * change every table. Errors are fine; crashes and runaway allocations are not. */
    o = (struct qcow2_open_opts){
        .read_write = true, .no_backing = true, .no_sync = true, .l2_cache_size = 4096};
    err = (struct error){0};
    q = qcow2_open_fd(fd, "fuzz.qcow2", &o, &err);
    close(fd);
    if (!q)
        return 0;
    vs = qcow2_size(q);
    err = (struct error){0};
    if (vs >= 4096 && qcow2_write(q, vs / 2 & ~511ull, buf, 4096, &err) < 0)
        goto out;
    /* and its split write path: in place, else plan (allocating), fill partial clusters, end */
    if (vs >= 8192) {
        static struct qcow2_write_plan plan;
        uint64_t off = (vs / 3 + 1000) & ~511ull, host;
        uint64_t len = vs - off < 70000 ? vs - off : 70000;
        struct qcow2_info info;
        err = (struct error){0};
        if (qcow2_get_info(q, &info, &err) == 0 &&
            qcow2_write_inplace(q, off, len, &host, &err) == 0) {
            plan = (struct qcow2_write_plan){.only_fresh = (size & 1) != 0};
            err = (struct error){0};
            if (qcow2_write_begin(q, off, len, &plan, &err) == 0) {
                uint8_t *fill = malloc(info.cluster_size);
                bool ok = fill != NULL;
                for (unsigned i = 0; ok && i < plan.n; i++)
                    if (plan.ext[i].fill != QCOW2_FILL_NONE)
                        ok = qcow2_plan_fill(q, &plan.ext[i], fill, &err) == 0;
                free(fill);
                err = (struct error){0};
                qcow2_write_end(q, &plan, ok, &err);
            }
        }
    }
    err = (struct error){0};
    if (qcow2_snapshot_create(q, "f", &err) == 0) {
        err = (struct error){0};
        if (vs >= 512)
            qcow2_write(q, 0, buf, 512, &err);
        err = (struct error){0};
        qcow2_snapshot_apply(q, "1", &err);
        err = (struct error){0};
        qcow2_snapshot_delete(q, "f", &err);
    }
out:
    err = (struct error){0};
    qcow2_close(q, &err);
    return 0;
}
