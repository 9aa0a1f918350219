/* Unit tests for -drive parsing and the block backend: cache-mode flags, the three aio engines,
 * discard and write-zeroes on a real file in /var/tmp (tmpfs may refuse O_DIRECT). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"
#include "block/drive.h"
#include "kemu-config.h"

#define DISK_SIZE (4u << 20)

static char path[64];

static int make_disk(void **state)
{
    strcpy(path, "/var/tmp/kemu-test-block-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, DISK_SIZE), 0);
    close(fd);
    return 0;
}

static int remove_disk(void **state)
{
    unlink(path);
    return 0;
}

/* ---- parsing ---- */

static void parse_ok(const char *text, unsigned index, struct drive_opts *d)
{
    struct error err = {0};
    int r = drive_parse(text, index, d, &err);
    if (r != 0)
        fail_msg("drive_parse(\"%s\"): %s", text, err.msg);
}

static void parse_err(const char *text, const char *want)
{
    struct drive_opts d;
    struct error err = {0};
    assert_int_equal(drive_parse(text, 0, &d, &err), -1);
    if (!strstr(err.msg, want))
        fail_msg("drive_parse(\"%s\"): \"%s\" lacks \"%s\"", text, err.msg, want);
    assert_null(d.file);
    assert_null(d.id);
}

static void test_parse_all_keys(void **state)
{
    struct drive_opts d;
    parse_ok("file=/x,,y.img,if=virtio,format=raw,id=disk0,cache=none,aio=native,readonly=on,"
             "serial=ABC123,discard=unmap,detect-zeroes=unmap,werror=report,rerror=ignore,"
             "media=disk,index=3",
             0, &d);
    assert_string_equal(d.file, "/x,y.img");
    assert_int_equal(d.iface, DRIVE_IF_VIRTIO);
    assert_string_equal(d.format, "raw");
    assert_string_equal(d.id, "disk0");
    assert_false(d.id_generated);
    assert_int_equal(d.cache, BLOCK_CACHE_NONE);
    assert_int_equal(d.aio, BLOCK_AIO_NATIVE);
    assert_true(d.readonly);
    assert_string_equal(d.serial, "ABC123");
    assert_true(d.discard_unmap);
    assert_int_equal(d.dz, DETECT_ZEROES_UNMAP);
    assert_int_equal(d.werror, DRIVE_ERROR_REPORT);
    assert_int_equal(d.rerror, DRIVE_ERROR_IGNORE);
    assert_int_equal(d.index, 3);
    drive_opts_free(&d);

    /* Defaults; QEMU's default id is "<if><unit>". */
    parse_ok("file=a.img,if=virtio", 2, &d);
    assert_string_equal(d.id, "virtio2");
    assert_true(d.id_generated);
    assert_int_equal(d.cache, BLOCK_CACHE_WRITEBACK);
    assert_int_equal(d.aio, BLOCK_AIO_THREADS);
    assert_false(d.readonly);
    assert_null(d.serial);
    assert_false(d.discard_unmap);
    assert_int_equal(d.dz, DETECT_ZEROES_OFF);
    assert_int_equal(d.werror, DRIVE_ERROR_ENOSPC);
    drive_opts_free(&d);
    parse_ok("file=a.img,if=virtio,index=5", 0, &d);
    assert_string_equal(d.id, "virtio5");
    drive_opts_free(&d);
    parse_ok("file=a.img,if=none", 1, &d);
    assert_string_equal(d.id, "none1");
    assert_int_equal(d.iface, DRIVE_IF_NONE);
    drive_opts_free(&d);

    static const char *const caches[] = {"writeback", "none", "writethrough", "directsync",
                                         "unsafe"};
    for (int i = 0; i < 5; i++) {
        char t[128];
        snprintf(t, sizeof(t), "file=a,if=virtio,cache=%s", caches[i]);
        parse_ok(t, 0, &d);
        assert_int_equal(d.cache, i);
        drive_opts_free(&d);
    }
    parse_ok("file=a,if=virtio,cache=directsync,aio=native", 0, &d);
    drive_opts_free(&d);
    parse_ok("file=a,if=virtio,aio=io_uring,discard=ignore,detect-zeroes=on,readonly=off", 0, &d);
    assert_int_equal(d.aio, BLOCK_AIO_IO_URING);
    assert_int_equal(d.dz, DETECT_ZEROES_ON);
    drive_opts_free(&d);

    struct error err = {0};
    assert_int_equal(drive_parse("help", 0, &d, &err), 1);
    assert_null(d.file);
}

static void test_parse_errors(void **state)
{
    parse_err("file=a,if=virtio,aio=native",
              "aio=native was specified, but it requires cache.direct=on, which was not "
              "specified.");
    parse_err("file=a,if=virtio,cache=writethrough,aio=native", "requires cache.direct=on");
    parse_err("file=a,if=virtio,format=qcow2", "format 'qcow2' is not supported yet (raw only)");
    parse_err("file=a,if=ide", "if=ide is not supported yet, use if=virtio");
    parse_err("file=a", "if=ide is not supported yet, use if=virtio"); /* -hda's default */
    parse_err("file=a,if=scsi", "if=scsi is not supported yet, use if=virtio");
    parse_err("file=a,if=floppy", "if=floppy is not supported yet");
    parse_err("file=a,if=bogus", "unsupported bus type 'bogus'");
    parse_err("file=a,if=virtio,snapshot=on", "snapshot=on needs qcow2, not supported yet");
    parse_err("file=a,if=virtio,cache=fast", "invalid cache option 'fast'");
    parse_err("file=a,if=virtio,aio=posix", "invalid aio option 'posix'");
    parse_err("file=a,if=virtio,discard=maybe", "Invalid discard option");
    parse_err("file=a,if=virtio,detect-zeroes=yes", "invalid detect-zeroes option");
    parse_err("file=a,if=virtio,detect-zeroes=unmap", "detect-zeroes to unmap is not allowed");
    parse_err("file=a,if=virtio,werror=panic", "'panic' invalid write error action");
    parse_err("file=a,if=virtio,werror=stop", "werror=stop is not supported yet");
    parse_err("file=a,if=virtio,rerror=enospc", "invalid read error action");
    parse_err("file=a,if=virtio,media=cdrom", "media=cdrom is not supported yet");
    parse_err("file=a,if=virtio,readonly=maybe", "readonly");
    parse_err("file=a,if=virtio,index=x", "index");
    parse_err("file=a,if=virtio,bogus=1", "bogus");
    parse_err("if=virtio", "Device needs media, but drive is empty");
}

/* ---- opening ---- */

static bool direct_refused(const char *file)
{
    int fd = open(file, O_RDONLY | O_DIRECT);
    if (fd >= 0) {
        close(fd);
        return false;
    }
    printf("skipping O_DIRECT checks: %s refuses O_DIRECT (%s)\n", file, strerror(errno));
    return true;
}

static struct block_backend *open_bb(enum block_cache c, enum block_aio a, bool ro, bool unmap,
                                     enum detect_zeroes dz)
{
    struct block_open_opts o = {path, "raw", c, a, ro, unmap, dz};
    struct block_backend *bb = NULL;
    struct error err = {0};
    if (block_backend_open(&o, &bb, &err) < 0)
        fail_msg("open %s cache=%s aio=%s: %s", path, block_cache_name(c), block_aio_name(a),
                 err.msg);
    return bb;
}

static void test_open_errors(void **state)
{
    struct drive_opts d;
    struct block_backend *bb;
    struct error err = {0};
    parse_ok("file=/nonexistent/kemu.img,if=virtio", 0, &d);
    assert_int_equal(drive_open(&d, &bb, &err), -1);
    assert_string_equal(err.msg,
                        "Could not open '/nonexistent/kemu.img': No such file or directory");
    drive_opts_free(&d);

    /* Read-write open of a file we may only read: the open error. Root ignores file modes,
     * so root uses a sysfs file that refuses writes to everyone. */
    char ro[64], text[128];
    strcpy(ro, "/var/tmp/kemu-test-ro-XXXXXX");
    int fd = mkstemp(ro);
    assert_true(fd >= 0);
    close(fd);
    chmod(ro, 0444);
    const char *rofile = ro;
    fd = open(ro, O_RDWR);
    if (fd >= 0) {
        close(fd);
        rofile = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";
        fd = open(rofile, O_RDWR);
        if (fd >= 0 || errno == ENOENT) {
            if (fd >= 0)
                close(fd);
            rofile = NULL;
            printf("skipping the read-only file check: no file refuses writes to root\n");
        }
    }
    if (rofile) {
        memset(&err, 0, sizeof(err));
        snprintf(text, sizeof(text), "file=%s,if=virtio", rofile);
        parse_ok(text, 0, &d);
        assert_int_equal(drive_open(&d, &bb, &err), -1);
        assert_non_null(strstr(err.msg, rofile));
        assert_non_null(strstr(err.msg, "Permission denied"));
        drive_opts_free(&d);
        memset(&err, 0, sizeof(err));
        snprintf(text, sizeof(text), "file=%s,if=virtio,readonly=on", rofile);
        parse_ok(text, 0, &d);
        assert_int_equal(drive_open(&d, &bb, &err), 0);
        assert_true(block_backend_readonly(bb));
        block_backend_close(bb);
        drive_opts_free(&d);
    }
    unlink(ro);

    memset(&err, 0, sizeof(err));
    parse_ok("file=/dev/null,if=virtio", 0, &d);
    assert_int_equal(drive_open(&d, &bb, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file or a block device"));
    drive_opts_free(&d);

    /* tmpfs refuses O_DIRECT: the message names the file. */
    {
        char shm[] = "/dev/shm/kemu-test-block-XXXXXX";
        int fd = mkstemp(shm);
        if (fd >= 0) {
            close(fd);
            int d2 = open(shm, O_RDWR | O_DIRECT);
            if (d2 < 0) {
                struct block_open_opts o = {.file = shm, .cache = BLOCK_CACHE_NONE};
                memset(&err, 0, sizeof(err));
                assert_int_equal(block_backend_open(&o, &bb, &err), -1);
                assert_non_null(strstr(err.msg, shm));
                assert_non_null(strstr(err.msg, "file system may not support O_DIRECT"));
            } else {
                close(d2);
                printf("/dev/shm accepts O_DIRECT: refusal message not checked\n");
            }
            unlink(shm);
        }
    }
#ifndef CONFIG_IO_URING
    memset(&err, 0, sizeof(err));
    struct block_open_opts o = {.file = path, .cache = BLOCK_CACHE_NONE, .aio = BLOCK_AIO_IO_URING};
    assert_int_equal(block_backend_open(&o, &bb, &err), -1);
    assert_string_equal(err.msg, "aio=io_uring: kemu was built without liburing");
#endif
}

static void test_cache_flags(void **state)
{
    static const struct {
        enum block_cache c;
        bool direct, dsync, wb;
    } modes[] = {
        {BLOCK_CACHE_WRITEBACK, false, false, true},    {BLOCK_CACHE_NONE, true, false, true},
        {BLOCK_CACHE_WRITETHROUGH, false, true, false}, {BLOCK_CACHE_DIRECTSYNC, true, true, false},
        {BLOCK_CACHE_UNSAFE, false, false, true},
    };
    bool no_direct = direct_refused(path);
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (modes[i].direct && no_direct)
            continue;
        struct block_backend *bb = open_bb(modes[i].c, BLOCK_AIO_THREADS, false, false, 0);
        int fl = fcntl(block_backend_fd(bb), F_GETFL);
        assert_true(fl >= 0);
        assert_int_equal(!!(fl & O_DIRECT), modes[i].direct);
        assert_int_equal(!!(fl & O_DSYNC), modes[i].dsync);
        assert_int_equal((fl & O_ACCMODE), O_RDWR);
        assert_int_equal(block_backend_writeback(bb), modes[i].wb);
        assert_int_equal(block_backend_size(bb), DISK_SIZE);
        block_backend_close(bb);
    }
    struct block_backend *bb = open_bb(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS, true, false, 0);
    assert_int_equal(fcntl(block_backend_fd(bb), F_GETFL) & O_ACCMODE, O_RDONLY);
    block_backend_close(bb);
}

/* ---- I/O ---- */

struct done {
    int ret;
    int calls;
};

static void on_done(struct block_request *req, int ret)
{
    struct done *d = req->opaque;
    d->ret = ret;
    d->calls++;
}

static int run(struct block_backend *bb, enum block_op op, uint64_t off, struct iovec *iov,
               int iovcnt, uint64_t len, bool may_unmap)
{
    struct done d = {0, 0};
    struct block_request req = {.op = op,
                                .offset = off,
                                .len = len,
                                .iov = iov,
                                .iovcnt = iovcnt,
                                .may_unmap = may_unmap,
                                .cb = on_done,
                                .opaque = &d};
    block_backend_submit(bb, &req);
    assert_int_equal(d.calls, 0); /* never inside submit */
    block_backend_drain(bb);
    assert_int_equal(d.calls, 1);
    assert_int_equal(block_backend_inflight(bb), 0);
    return d.ret;
}

static int rw(struct block_backend *bb, enum block_op op, uint64_t off, void *buf, size_t len)
{
    struct iovec v = {buf, len};
    return run(bb, op, off, &v, 1, len, false);
}

static uint64_t blocks_of(void)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_blocks;
}

static uint8_t *abuf(size_t len)
{
    void *p;
    assert_int_equal(posix_memalign(&p, 4096, len), 0);
    return p;
}

static void exercise(enum block_cache c, enum block_aio a)
{
    printf("cache=%s aio=%s\n", block_cache_name(c), block_aio_name(a));
    struct block_backend *bb = open_bb(c, a, false, true, DETECT_ZEROES_OFF);
    const size_t len = 256 * 1024;
    uint8_t *w = abuf(len), *r = abuf(len + 4096);
    for (size_t i = 0; i < len; i++)
        w[i] = (uint8_t)(i * 7 + 1);

    /* Write, read back, flush. */
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 1 << 20, w, len), 0);
    memset(r, 0, len);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 1 << 20, r, len), 0);
    assert_memory_equal(r, w, len);
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);

    /* Many in flight at once, scattered over several iovecs. */
    enum { N = 64 };
    struct block_request reqs[N];
    struct done d[N];
    struct iovec iov[N][2];
    uint8_t *big = abuf(N * 8192);
    for (int i = 0; i < N; i++)
        memset(big + i * 8192, i + 1, 8192);
    for (int i = 0; i < N; i++) {
        iov[i][0] = (struct iovec){big + i * 8192, 4096};
        iov[i][1] = (struct iovec){big + i * 8192 + 4096, 4096};
        d[i] = (struct done){0, 0};
        reqs[i] = (struct block_request){.op = BLOCK_OP_WRITE,
                                         .offset = (uint64_t)i * 8192,
                                         .len = 8192,
                                         .iov = iov[i],
                                         .iovcnt = 2,
                                         .cb = on_done,
                                         .opaque = &d[i]};
    }
    block_backend_plug(bb);
    for (int i = 0; i < N; i++)
        block_backend_submit(bb, &reqs[i]);
    block_backend_unplug(bb);
    block_backend_drain(bb);
    for (int i = 0; i < N; i++) {
        assert_int_equal(d[i].calls, 1);
        assert_int_equal(d[i].ret, 0);
    }
    uint8_t *chk = abuf(N * 8192);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, chk, N * 8192), 0);
    assert_memory_equal(chk, big, N * 8192);
    free(chk);
    free(big);

    /* Unaligned iovecs (O_DIRECT bounces them) and unaligned read offsets. */
    struct iovec u[3] = {{r + 1, 100}, {r + 200, 412}, {r + 1000, 512}};
    memset(r, 0, len);
    assert_int_equal(run(bb, BLOCK_OP_READ, 1 << 20, u, 3, 1024, false), 0);
    assert_memory_equal(r + 1, w, 100);
    assert_memory_equal(r + 200, w + 100, 412);
    assert_memory_equal(r + 1000, w + 512, 512);
    memcpy(r + 1, w + 4096, 100);
    memcpy(r + 200, w + 4196, 412);
    memcpy(r + 1000, w + 4608, 512);
    assert_int_equal(run(bb, BLOCK_OP_WRITE, (1 << 20) + 8192, u, 3, 1024, false), 0);
    uint8_t *r2 = abuf(8192);
    assert_int_equal(rw(bb, BLOCK_OP_READ, (1 << 20) + 8192, r2, 1024), 0);
    assert_memory_equal(r2, w + 4096, 1024);
    if (c == BLOCK_CACHE_NONE || c == BLOCK_CACHE_DIRECTSYNC) {
        /* An unaligned read offset is widened to whole blocks. */
        assert_int_equal(rw(bb, BLOCK_OP_READ, (1 << 20) + 3, r2 + 1, 700), 0);
        assert_memory_equal(r2 + 1, w + 3, 700);
    }
    free(r2);

    /* Discard punches a hole: the data is gone and the file uses fewer blocks. */
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    uint64_t before = blocks_of();
    assert_int_equal(run(bb, BLOCK_OP_DISCARD, 1 << 20, NULL, 0, len, false), 0);
    assert_true(blocks_of() < before);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 1 << 20, r, len), 0);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(r[i], 0);

    /* Write zeroes, with and without unmapping. */
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 2 << 20, w, len), 0);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, 2 << 20, NULL, 0, 65536, false), 0);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, (2 << 20) + 65536, NULL, 0, 65536, true), 0);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 2 << 20, r, len), 0);
    for (size_t i = 0; i < 131072; i++)
        assert_int_equal(r[i], 0);
    assert_memory_equal(r + 131072, w + 131072, len - 131072);

    /* Out of range; reading the last block works. */
    assert_int_equal(rw(bb, BLOCK_OP_READ, DISK_SIZE - 4096, r, 8192), -EINVAL);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, DISK_SIZE, w, 4096), -EINVAL);
    assert_int_equal(rw(bb, BLOCK_OP_READ, UINT64_MAX - 100, r, 4096), -EINVAL);
    assert_int_equal(rw(bb, BLOCK_OP_READ, DISK_SIZE - 4096, r, 4096), 0);
    block_backend_close(bb);

    /* Read-only refuses writes, discards and write-zeroes. */
    bb = open_bb(c, a, true, true, DETECT_ZEROES_OFF);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 0, w, 4096), -EROFS);
    assert_int_equal(run(bb, BLOCK_OP_DISCARD, 0, NULL, 0, 4096, false), -EROFS);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, 0, NULL, 0, 4096, false), -EROFS);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, 4096), 0);
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    block_backend_close(bb);
    free(w);
    free(r);
}

static void test_engines(void **state)
{
    exercise(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS);
    exercise(BLOCK_CACHE_UNSAFE, BLOCK_AIO_THREADS);
    exercise(BLOCK_CACHE_WRITETHROUGH, BLOCK_AIO_THREADS);
    if (direct_refused(path))
        return;
    exercise(BLOCK_CACHE_NONE, BLOCK_AIO_THREADS);
    exercise(BLOCK_CACHE_NONE, BLOCK_AIO_NATIVE);
    exercise(BLOCK_CACHE_DIRECTSYNC, BLOCK_AIO_NATIVE);
#ifdef CONFIG_IO_URING
    exercise(BLOCK_CACHE_NONE, BLOCK_AIO_IO_URING);
    exercise(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_IO_URING);
#endif
}

static void test_discard_ignored(void **state)
{
    struct block_backend *bb = open_bb(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS, false, false, 0);
    uint8_t buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 0, buf, sizeof(buf)), 0);
    assert_int_equal(run(bb, BLOCK_OP_DISCARD, 0, NULL, 0, 4096, false), 0);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, buf, sizeof(buf)), 0);
    assert_int_equal(buf[0], 0x5a); /* discard=ignore keeps the data */
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 0, buf, 0), 0);
    block_backend_close(bb);
}

static void test_detect_zeroes(void **state)
{
    struct block_backend *bb =
        open_bb(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS, false, true, DETECT_ZEROES_UNMAP);
    uint8_t *buf = abuf(1 << 20);
    memset(buf, 0x11, 1 << 20);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 0, buf, 1 << 20), 0);
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    uint64_t before = blocks_of();
    memset(buf, 0, 1 << 20);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 0, buf, 1 << 20), 0);
    assert_true(blocks_of() < before); /* the zero write became a hole */
    memset(buf, 0xff, 1 << 20);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, buf, 1 << 20), 0);
    for (size_t i = 0; i < (1 << 20); i++)
        assert_int_equal(buf[i], 0);
    free(buf);
    block_backend_close(bb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_all_keys),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test_setup_teardown(test_open_errors, make_disk, remove_disk),
        cmocka_unit_test_setup_teardown(test_cache_flags, make_disk, remove_disk),
        cmocka_unit_test_setup_teardown(test_engines, make_disk, remove_disk),
        cmocka_unit_test_setup_teardown(test_discard_ignored, make_disk, remove_disk),
        cmocka_unit_test_setup_teardown(test_detect_zeroes, make_disk, remove_disk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
