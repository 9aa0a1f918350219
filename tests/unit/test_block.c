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
#include <sys/syscall.h>
#include <sys/wait.h>
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

/* -drive text parsed and opened; the caller closes the backend and frees d. */
static struct block_backend *drive_open_ok(const char *text, struct drive_opts *d)
{
    struct block_backend *bb = NULL;
    struct error err = {0};
    parse_ok(text, 0, d);
    if (drive_open(d, &bb, &err) < 0)
        fail_msg("%s: %s", text, err.msg);
    return bb;
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
    assert_false(d.unit_given);
    /* The machine gives it the first free unit: the generated id follows, a user's stays. */
    struct error e = {0};
    assert_int_equal(drive_set_unit(&d, 0, &e), 0);
    assert_string_equal(d.id, "none0");
    drive_opts_free(&d);
    parse_ok("file=a.img,if=virtio,id=mine", 1, &d);
    assert_int_equal(drive_set_unit(&d, 4, &e), 0);
    assert_string_equal(d.id, "mine");
    assert_int_equal(d.index, 4);
    drive_opts_free(&d);
    /* bus= and unit= (QEMU's guides write them out); index= alone stands for both. */
    parse_ok("file=a.img,if=virtio,bus=1,unit=2", 0, &d);
    assert_int_equal(d.bus, 1);
    assert_int_equal(d.index, 2);
    assert_true(d.unit_given);
    assert_string_equal(d.id, "virtio2");
    drive_opts_free(&d);
    parse_ok("file=a.img,if=virtio,index=3,bus=0", 0, &d);
    assert_int_equal(d.index, 3);
    assert_true(d.unit_given);
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

    /* qcow2, probing, snapshot=on, l2-cache-size */
    parse_ok("file=a.qcow2,if=virtio,format=qcow2,snapshot=on,l2-cache-size=4M", 0, &d);
    assert_string_equal(d.format, "qcow2");
    assert_true(d.snapshot);
    assert_int_equal(d.l2_cache_size, 4 << 20);
    assert_true(d.locking);
    drive_opts_free(&d);
    parse_ok("file=a.qcow2,if=virtio,file.locking=off", 0, &d);
    assert_false(d.locking);
    drive_opts_free(&d);
    parse_ok("file=a.img,if=virtio", 0, &d);
    assert_null(d.format); /* probed at open */
    assert_false(d.snapshot);
    assert_int_equal(d.l2_cache_size, 0);
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
    parse_err("file=a,if=virtio,format=vmdk", "format 'vmdk' is not supported yet (raw and qcow2");
    parse_err("file=a,if=virtio,format=raw,l2-cache-size=1M", "does not support the option");
    parse_err("file=a,if=virtio,format=qcow2,l2-cache-size=lots", "l2-cache-size");
    parse_err("file=a,if=virtio,file.locking=maybe", "Parameter 'locking' does not accept");
    parse_err("file=a,if=ide", "if=ide is not supported yet, use if=virtio");
    parse_err(
        "file=a",
        "no if= given, and the pc machine's default (if=ide) is not supported"); /* pc's default
                                                                                    interface */
    parse_err("file=a,if=scsi", "if=scsi is not supported yet, use if=virtio");
    parse_err("file=a,if=floppy", "if=floppy is not supported yet");
    parse_err("file=a,if=bogus", "unsupported bus type 'bogus'");
    parse_err("file=a,if=virtio,cache=fast", "invalid cache option 'fast'");
    parse_err("file=a,if=virtio,aio=posix", "invalid aio option 'posix'");
    parse_err("file=a,if=virtio,discard=maybe", "Invalid discard option");
    parse_err("file=a,if=virtio,detect-zeroes=yes", "invalid detect-zeroes option");
    parse_err("file=a,if=virtio,detect-zeroes=unmap", "detect-zeroes to unmap is not allowed");
    parse_err("file=a,if=virtio,werror=panic", "'panic' invalid write error action");
    parse_err("file=a,if=virtio,rerror=enospc", "invalid read error action");
    parse_err("file=a,if=virtio,media=cdrom", "media=cdrom is not supported yet");
    parse_err("file=a,if=virtio,readonly=maybe", "readonly");
    parse_err("file=a,if=virtio,index=x", "index");
    parse_err("file=a,if=virtio,index=1,unit=1", "index cannot be used with bus and unit");
    parse_err("file=a,if=virtio,index=1,bus=2", "index cannot be used with bus and unit");
    parse_err("file=a,if=virtio,unit=70000", "unit 70000 is too large");
    parse_err("file=a,if=virtio,bus=x", "bus");
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
    struct block_open_opts o = {.file = path,
                                .format = "raw",
                                .cache = c,
                                .aio = a,
                                .readonly = ro,
                                .discard_unmap = unmap,
                                .dz = dz};
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
    assert_true(block_backend_max_transfer(bb) == UINT64_MAX); /* raw: no limit */
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

/* ---- qcow2 (qemu-img and qemu-io make the images and judge the results) ---- */

#define Q_SIZE (8u << 20) /* virtual size; the raw backing file covers the first 4 MiB */

static char qdir[64];
static bool have_qemu;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[1024], full[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd %s && { %s; }", qdir, cmd);
    int r = system(full);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static char *saved_tmpdir;

static int make_qdir(void **state)
{
    strcpy(qdir, "/var/tmp/kemu-test-q2d-XXXXXX");
    assert_non_null(mkdtemp(qdir));
    have_qemu = sh("{ qemu-img --version && qemu-io --version; } >/dev/null 2>&1") == 0;
    /* snapshot=on puts its temporary overlay in $TMPDIR: here, where a test can see it */
    saved_tmpdir = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
    setenv("TMPDIR", qdir, 1);
    if (!have_qemu)
        printf("skipping: qemu-img or qemu-io is not installed\n");
    return 0;
}

static int remove_qdir(void **state)
{
    if (saved_tmpdir)
        setenv("TMPDIR", saved_tmpdir, 1);
    else
        unsetenv("TMPDIR");
    free(saved_tmpdir);
    saved_tmpdir = NULL;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", qdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *qpath(const char *name)
{
    static char p[4][128];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", qdir, name);
    return p[i];
}

/* base.raw: 4 MiB of 0x11; img.qcow2: 8 MiB over it, with 0x22 at 64..128 KiB written by qemu-io.
 */
static void make_qcow2(uint8_t *exp)
{
    assert_int_equal(sh("rm -f img.qcow2 base.raw && truncate -s 4M base.raw && "
                        "qemu-io -f raw -c 'write -P 0x11 0 4M' base.raw >/dev/null && "
                        "qemu-img create -q -f qcow2 -b base.raw -F raw img.qcow2 8M && "
                        "qemu-io -f qcow2 -c 'write -P 0x22 64k 64k' img.qcow2 >/dev/null"),
                     0);
    if (exp) {
        memset(exp, 0, Q_SIZE);
        memset(exp, 0x11, 4 << 20);
        memset(exp + 65536, 0x22, 65536);
    }
}

static struct block_backend *open_q(const char *file, const char *fmt, enum block_cache c,
                                    enum block_aio a, bool ro, bool snapshot, struct error *err)
{
    struct block_open_opts o = {.file = file,
                                .format = fmt,
                                .cache = c,
                                .aio = a,
                                .readonly = ro,
                                .discard_unmap = true,
                                .probe = true,
                                .snapshot = snapshot,
                                .locking = true};
    struct block_backend *bb = NULL;
    if (block_backend_open(&o, &bb, err) < 0)
        return NULL;
    return bb;
}

static struct block_backend *open_q_ok(const char *file, const char *fmt, enum block_cache c,
                                       enum block_aio a, bool ro, bool snapshot)
{
    struct error err = {0};
    struct block_backend *bb = open_q(file, fmt, c, a, ro, snapshot, &err);
    if (!bb)
        fail_msg("open %s cache=%s aio=%s: %s", file, block_cache_name(c), block_aio_name(a),
                 err.msg);
    return bb;
}

/* The image equals exp (qemu-img compare) and is clean (qemu-img check). */
static void check_image(const char *name, const uint8_t *exp)
{
    FILE *f = fopen(qpath("exp.raw"), "w");
    assert_non_null(f);
    assert_int_equal(fwrite(exp, 1, Q_SIZE, f), Q_SIZE);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(sh("qemu-img check -q %s", name), 0);
    assert_int_equal(sh("qemu-img compare -q -f raw -F qcow2 exp.raw %s", name), 0);
}

static void exercise_qcow2(enum block_cache c, enum block_aio a)
{
    printf("qcow2 cache=%s aio=%s\n", block_cache_name(c), block_aio_name(a));
    uint8_t *exp = malloc(Q_SIZE), *r = malloc(Q_SIZE);
    assert_non_null(exp);
    assert_non_null(r);
    make_qcow2(exp);
    struct block_backend *bb = open_q_ok(qpath("img.qcow2"), "qcow2", c, a, false, false);
    assert_string_equal(block_backend_format(bb), "qcow2");
    assert_int_equal(block_backend_size(bb), Q_SIZE);
    /* one write plan of 64 clusters of 64 KiB (qemu-img's default cluster size) */
    assert_int_equal(block_backend_max_transfer(bb), 64 * 65536);
    int fl = fcntl(block_backend_fd(bb), F_GETFL);
    /* guest data goes O_DIRECT (this directory has it); the library has a buffered descriptor */
    assert_int_equal(!!(fl & O_DIRECT), c == BLOCK_CACHE_NONE || c == BLOCK_CACHE_DIRECTSYNC);
    assert_int_equal(!!(fl & O_DSYNC),
                     c == BLOCK_CACHE_WRITETHROUGH || c == BLOCK_CACHE_DIRECTSYNC);
    assert_int_equal(block_backend_writeback(bb),
                     c != BLOCK_CACHE_WRITETHROUGH && c != BLOCK_CACHE_DIRECTSYNC);

    /* The whole disk in one request of three iovecs: backing, qemu's cluster, zeros. */
    struct iovec v3[3] = {{r, 100000}, {r + 100000, 3 << 20}, {r + 100000 + (3 << 20), 0}};
    v3[2].iov_len = Q_SIZE - v3[0].iov_len - v3[1].iov_len;
    memset(r, 0x5a, Q_SIZE);
    assert_int_equal(run(bb, BLOCK_OP_READ, 0, v3, 3, Q_SIZE, false), 0);
    assert_memory_equal(r, exp, Q_SIZE);

    /* An unaligned write over the backing file, and many scattered ones at once past it. */
    const size_t len = 256 * 1024;
    uint8_t *w = malloc(len);
    for (size_t i = 0; i < len; i++)
        w[i] = (uint8_t)(i * 7 + 1);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (1 << 20) + 512, w, len), 0);
    memcpy(exp + (1 << 20) + 512, w, len);
    enum { N = 64 };
    struct block_request reqs[N];
    struct done d[N];
    struct iovec iov[N][2];
    uint8_t *big = malloc(N * 8192);
    for (int i = 0; i < N; i++) {
        memset(big + i * 8192, i + 1, 8192);
        iov[i][0] = (struct iovec){big + i * 8192, 4096};
        iov[i][1] = (struct iovec){big + i * 8192 + 4096, 4096};
        d[i] = (struct done){0, 0};
        reqs[i] = (struct block_request){.op = BLOCK_OP_WRITE,
                                         .offset = (5u << 20) + (uint64_t)i * 8192,
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
    memcpy(exp + (5u << 20), big, N * 8192);
    free(big);
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, Q_SIZE), 0);
    assert_memory_equal(r, exp, Q_SIZE);

    /* Discard (whole clusters: they read as zeros, hiding the backing file), write-zeroes. */
    assert_int_equal(run(bb, BLOCK_OP_DISCARD, 2 << 20, NULL, 0, len, false), 0);
    memset(exp + (2 << 20), 0, len);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, 3 << 20, NULL, 0, 65536, false), 0);
    memset(exp + (3 << 20), 0, 65536);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, (3 << 20) + 65636, NULL, 0, 200000, true), 0);
    memset(exp + (3 << 20) + 65636, 0, 200000);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, Q_SIZE), 0);
    assert_memory_equal(r, exp, Q_SIZE);

    /* Out of range; the last block reads. */
    assert_int_equal(rw(bb, BLOCK_OP_READ, Q_SIZE - 4096, r, 8192), -EINVAL);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, Q_SIZE, w, 4096), -EINVAL);
    assert_int_equal(rw(bb, BLOCK_OP_READ, Q_SIZE - 4096, r, 4096), 0);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, 0), 0);
    block_backend_close(bb);
    check_image("img.qcow2", exp);

    /* Read-only: writes refused, the image unchanged. */
    bb = open_q_ok(qpath("img.qcow2"), "qcow2", c, a, true, false);
    assert_int_equal(fcntl(block_backend_fd(bb), F_GETFL) & O_ACCMODE, O_RDONLY);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 0, w, 4096), -EROFS);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, 0, NULL, 0, 4096, false), -EROFS);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, Q_SIZE), 0);
    assert_memory_equal(r, exp, Q_SIZE);
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    block_backend_close(bb);
    check_image("img.qcow2", exp);
    free(w);
    free(r);
    free(exp);
}

static void test_qcow2_engines(void **state)
{
    if (!have_qemu)
        return;
    exercise_qcow2(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS);
    exercise_qcow2(BLOCK_CACHE_UNSAFE, BLOCK_AIO_THREADS);
    exercise_qcow2(BLOCK_CACHE_WRITETHROUGH, BLOCK_AIO_THREADS);
    exercise_qcow2(BLOCK_CACHE_NONE, BLOCK_AIO_THREADS);
    exercise_qcow2(BLOCK_CACHE_NONE, BLOCK_AIO_NATIVE);
    exercise_qcow2(BLOCK_CACHE_DIRECTSYNC, BLOCK_AIO_NATIVE);
#ifdef CONFIG_IO_URING
    exercise_qcow2(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_IO_URING);
    exercise_qcow2(BLOCK_CACHE_NONE, BLOCK_AIO_IO_URING);
#endif
    /* aio=native still needs cache.direct=on, as QEMU says. */
    struct error err = {0};
    assert_null(open_q(qpath("img.qcow2"), "qcow2", BLOCK_CACHE_WRITEBACK, BLOCK_AIO_NATIVE, false,
                       false, &err));
    assert_non_null(strstr(err.msg, "requires cache.direct=on"));
}

/* ---- qcow2 data I/O: O_DIRECT pieces, several requests in flight ---- */

/* Submit n requests together, wait for all; each must succeed. */
static void run_all(struct block_backend *bb, struct block_request *reqs, struct done *d, int n)
{
    block_backend_plug(bb);
    for (int i = 0; i < n; i++) {
        d[i] = (struct done){0, 0};
        reqs[i].cb = on_done;
        reqs[i].opaque = &d[i];
        block_backend_submit(bb, &reqs[i]);
    }
    block_backend_unplug(bb);
    block_backend_drain(bb);
    for (int i = 0; i < n; i++) {
        assert_int_equal(d[i].calls, 1);
        assert_int_equal(d[i].ret, 0);
    }
}

static void fill_pattern(uint8_t *b, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

/* Read the whole disk and compare. */
static void expect_disk(struct block_backend *bb, const uint8_t *exp)
{
    uint8_t *r = abuf(Q_SIZE);
    memset(r, 0xa5, Q_SIZE);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, Q_SIZE), 0);
    for (size_t i = 0; i < Q_SIZE; i++)
        if (r[i] != exp[i])
            fail_msg("byte 0x%zx is 0x%02x, expected 0x%02x", i, r[i], exp[i]);
    free(r);
}

static void exercise_qcow2_pieces(enum block_cache c, enum block_aio a)
{
    printf("qcow2 pieces cache=%s aio=%s\n", block_cache_name(c), block_aio_name(a));
    const uint64_t cs = 65536;
    uint8_t *exp = malloc(Q_SIZE), *w = abuf(1 << 20), *r = abuf(1 << 20);
    assert_non_null(exp);
    make_qcow2(exp);
    /* a compressed cluster at 7 MiB, for the copy-on-write of one */
    assert_int_equal(sh("qemu-io -f qcow2 -c 'write -c -P 0x44 7M 64k' img.qcow2 >/dev/null"), 0);
    memset(exp + (7u << 20), 0x44, cs);
    struct block_backend *bb = open_q_ok(qpath("img.qcow2"), "qcow2", c, a, false, false);

    /* 16 clusters at 5 MiB written last to first: their file clusters run backwards, so one
     * request over them is 16 pieces of the file, read and then rewritten in place. */
    for (int i = 15; i >= 0; i--) {
        fill_pattern(w, cs, (unsigned)i);
        assert_int_equal(rw(bb, BLOCK_OP_WRITE, (5u << 20) + i * cs, w, cs), 0);
        memcpy(exp + (5u << 20) + i * cs, w, cs);
    }
    assert_int_equal(rw(bb, BLOCK_OP_READ, 5u << 20, r, 1 << 20), 0);
    assert_memory_equal(r, exp + (5u << 20), 1 << 20);
    fill_pattern(w, 1 << 20, 99);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (5u << 20) + 4096, w, (1 << 20) - 8192), 0);
    memcpy(exp + (5u << 20) + 4096, w, (1 << 20) - 8192);

    /* Unaligned memory: iovecs at odd addresses and of odd lengths, in place and fresh. */
    uint8_t *m = malloc((1 << 20) + 64);
    assert_non_null(m);
    fill_pattern(m, (1 << 20) + 64, 5);
    struct iovec v[4] = {
        {m + 1, 4095}, {m + 4099, 4097}, {m + 9000, 65536 - 8192}, {m + 80000, 262144 - 65536}};
    for (uint64_t at = (5u << 20) + 3 * cs; at <= (6u << 20); at += (1u << 20) - 3 * cs) {
        assert_int_equal(run(bb, BLOCK_OP_WRITE, at, v, 4, 262144, false), 0);
        uint8_t *e = exp + at;
        for (int i = 0; i < 4; i++) {
            memcpy(e, v[i].iov_base, v[i].iov_len);
            e += v[i].iov_len;
        }
    }
    memset(m, 0, (1 << 20) + 64);
    assert_int_equal(run(bb, BLOCK_OP_READ, 6u << 20, v, 4, 262144, false), 0);
    for (int i = 0, o = 0; i < 4; o += (int)v[i].iov_len, i++)
        assert_memory_equal(v[i].iov_base, exp + (6u << 20) + o, v[i].iov_len);
    free(m);

    /* Unaligned in the file: 1000 bytes at 300 into a fresh cluster and into one in place. */
    fill_pattern(w, 1000, 7);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (6u << 20) + 300000, w, 1000), 0);
    memcpy(exp + (6u << 20) + 300000, w, 1000);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (5u << 20) + 300, w, 1000), 0);
    memcpy(exp + (5u << 20) + 300, w, 1000);

    /* Copy on write with the data O_DIRECT: 4 KiB inside clusters over the backing file, one
     * write over two such clusters (both partial), and the backing file's last cluster. */
    fill_pattern(w, 65536, 11);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (2u << 20) + 8192, w, 4096), 0);
    memcpy(exp + (2u << 20) + 8192, w, 4096);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (3u << 20) + cs - 8192, w, 16384), 0);
    memcpy(exp + (3u << 20) + cs - 8192, w, 16384);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (4u << 20) - 4096, w, 8192), 0);
    memcpy(exp + (4u << 20) - 4096, w, 8192);
    /* ... of a compressed cluster, and of a preallocated zero cluster (write-zeroes without
     * unmap keeps the cluster) */
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (7u << 20) + 4096, w, 4096), 0);
    memcpy(exp + (7u << 20) + 4096, w, 4096);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, (5u << 20) + 8 * cs, NULL, 0, cs, false), 0);
    memset(exp + (5u << 20) + 8 * cs, 0, cs);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (5u << 20) + 8 * cs + 12288, w, 4096), 0);
    memcpy(exp + (5u << 20) + 8 * cs + 12288, w, 4096);
    expect_disk(bb, exp);
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    block_backend_close(bb);
    check_image("img.qcow2", exp);

    /* ... and of clusters shared with an internal snapshot. */
    assert_int_equal(sh("qemu-img snapshot -c s1 img.qcow2"), 0);
    bb = open_q_ok(qpath("img.qcow2"), "qcow2", c, a, false, false);
    fill_pattern(w, 1 << 20, 13);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (5u << 20) + 4096, w, 3 * cs), 0);
    memcpy(exp + (5u << 20) + 4096, w, 3 * cs);
    expect_disk(bb, exp);
    block_backend_close(bb);
    check_image("img.qcow2", exp);
    free(w);
    free(r);
    free(exp);
}

static void test_qcow2_pieces(void **state)
{
    if (!have_qemu)
        return;
    exercise_qcow2_pieces(BLOCK_CACHE_NONE, BLOCK_AIO_NATIVE);
    exercise_qcow2_pieces(BLOCK_CACHE_DIRECTSYNC, BLOCK_AIO_THREADS);
    exercise_qcow2_pieces(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS);
}

/* Many requests at once over fresh and allocated clusters, several 4 KiB blocks of one new
 * cluster among them (the workers run in parallel; an allocating write keeps the others out of
 * its clusters), rounds of writes and reads checked against a model of the disk. */
static void exercise_qcow2_parallel(enum block_cache c, enum block_aio a)
{
    printf("qcow2 parallel cache=%s aio=%s\n", block_cache_name(c), block_aio_name(a));
    enum { BS = 4096, NB = Q_SIZE / BS, N = 384, NR = Q_SIZE / 65536 };
    uint8_t *exp = malloc(Q_SIZE), *buf = abuf((size_t)N * BS);
    struct block_request *reqs = calloc(N, sizeof(*reqs));
    struct done *d = calloc(N, sizeof(*d));
    struct iovec *iov = calloc(N, sizeof(*iov));
    uint8_t *used = malloc(NB);
    assert_true(exp && reqs && d && iov && used);
    make_qcow2(exp);
    struct block_backend *bb = open_q_ok(qpath("img.qcow2"), "qcow2", c, a, false, false);
    srand(7);
    for (int round = 0; round < 4; round++) {
        /* distinct blocks, so the outcome does not depend on the order */
        memset(used, 0, NB);
        for (int i = 0; i < N; i++) {
            unsigned b;
            do
                b = (unsigned)rand() % NB;
            while (used[b]);
            used[b] = 1;
            fill_pattern(buf + (size_t)i * BS, BS, (unsigned)(round * N + i));
            iov[i] = (struct iovec){buf + (size_t)i * BS, BS};
            reqs[i] = (struct block_request){.op = BLOCK_OP_WRITE,
                                             .offset = (uint64_t)b * BS,
                                             .len = BS,
                                             .iov = &iov[i],
                                             .iovcnt = 1};
            memcpy(exp + (uint64_t)b * BS, iov[i].iov_base, BS);
        }
        run_all(bb, reqs, d, N);
        /* read it all back in 64 KiB requests at once */
        uint8_t *r = abuf(Q_SIZE);
        for (int i = 0; i < NR; i++) {
            iov[i] = (struct iovec){r + (size_t)i * 65536, 65536};
            reqs[i] = (struct block_request){.op = BLOCK_OP_READ,
                                             .offset = (uint64_t)i * 65536,
                                             .len = 65536,
                                             .iov = &iov[i],
                                             .iovcnt = 1};
        }
        run_all(bb, reqs, d, NR);
        for (size_t i = 0; i < Q_SIZE; i++)
            if (r[i] != exp[i])
                fail_msg("round %d: byte 0x%zx is 0x%02x, expected 0x%02x", round, i, r[i], exp[i]);
        free(r);
    }
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    block_backend_close(bb);
    check_image("img.qcow2", exp);
    free(used);
    free(iov);
    free(d);
    free(reqs);
    free(buf);
    free(exp);
}

static void test_qcow2_parallel(void **state)
{
    if (!have_qemu)
        return;
    exercise_qcow2_parallel(BLOCK_CACHE_NONE, BLOCK_AIO_NATIVE);
    exercise_qcow2_parallel(BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS);
}

/* A qcow2 image with a qcow2 backing file (relative name, no backing format recorded) over the
 * raw one, and l2-cache-size. */
static void test_qcow2_chain(void **state)
{
    if (!have_qemu)
        return;
    make_qcow2(NULL);
    assert_int_equal(sh("qemu-img create -q -f qcow2 -b img.qcow2 -F qcow2 top.qcow2 && "
                        "qemu-io -f qcow2 -c 'write -P 0x33 4M 1M' top.qcow2 >/dev/null"),
                     0);
    struct block_open_opts o = {
        .file = qpath("top.qcow2"), .format = "qcow2", .l2_cache_size = 65536};
    struct block_backend *bb = NULL;
    struct error err = {0};
    if (block_backend_open(&o, &bb, &err) < 0)
        fail_msg("%s", err.msg);
    uint8_t *r = malloc(Q_SIZE);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, Q_SIZE), 0);
    for (size_t i = 0; i < Q_SIZE; i++) {
        uint8_t want = i < 65536 ? 0x11 : i < 131072 ? 0x22 : i < (4u << 20) ? 0x11 : 0;
        if (i >= (4u << 20) && i < (5u << 20))
            want = 0x33;
        if (r[i] != want)
            fail_msg("byte %zu is 0x%02x, not 0x%02x", i, r[i], want);
    }
    memset(r, 0x44, 4096);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 4096, r, 4096), 0);
    block_backend_close(bb);
    assert_int_equal(sh("qemu-img check -q top.qcow2 && qemu-img check -q img.qcow2"), 0);
    assert_int_equal(sh("qemu-io -f qcow2 -c 'read -P 0x44 4k 4k' top.qcow2 | grep -q '^read'"), 0);
    free(r);
}

static bool dirty_bit(const char *img)
{
    uint8_t b = 0;
    FILE *f = fopen(img, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 79, SEEK_SET), 0); /* incompatible features, big-endian, bit 0 */
    assert_int_equal(fread(&b, 1, 1, f), 1);
    fclose(f);
    return b & 1;
}

/* -drive lazy-refcounts=on|off overrides the image's compatible bit for the session only. */
/* The block layer's fdatasync calls, counted: this definition takes the place of libc's in
 * the test program (the library is linked in statically). */
static int fdatasync_calls;

int fdatasync(int fd);
int fdatasync(int fd)
{
    __atomic_fetch_add(&fdatasync_calls, 1, __ATOMIC_RELAXED);
    return (int)syscall(SYS_fdatasync, fd);
}

/* Closing a writable raw image syncs it (QEMU's close, so quit), except under cache=unsafe,
 * snapshot=on and readonly=on. */
static void test_close_syncs(void **state)
{
    char path[] = "/tmp/kemu-closesync-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    close(fd);
    static const struct {
        const char *opts;
        bool sync;
    } cases[] = {
        {"", true},
        {",cache=writeback", true},
        {",cache=none", true},
        {",cache=unsafe", false},
        {",snapshot=on", false},
        {",readonly=on", false},
    };
    uint8_t buf[4096];
    memset(buf, 0x3c, sizeof(buf));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "file=%s,format=raw,if=none,id=d%s", path, cases[i].opts);
        struct drive_opts d;
        struct block_backend *bb = drive_open_ok(text, &d);
        if (!strstr(cases[i].opts, "readonly"))
            assert_int_equal(rw(bb, BLOCK_OP_WRITE, 0, buf, sizeof(buf)), 0);
        int before = __atomic_load_n(&fdatasync_calls, __ATOMIC_RELAXED);
        block_backend_close(bb);
        drive_opts_free(&d);
        int synced = __atomic_load_n(&fdatasync_calls, __ATOMIC_RELAXED) - before;
        if ((synced > 0) != cases[i].sync)
            fail_msg("%s: %d fdatasync at close", text, synced);
    }
    unlink(path);
}

static void test_drive_lazy_refcounts(void **state)
{
    if (!have_qemu)
        return;
    static const struct {
        const char *create_opts, *drive_opt;
        bool dirty;
    } cases[] = {
        {"", ",lazy-refcounts=on", true},
        {"", "", false},
        {"-o lazy_refcounts=on", "", true},
        {"-o lazy_refcounts=on", ",lazy-refcounts=off", false},
    };
    uint8_t *buf = malloc(65536);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(
            sh("rm -f l.qcow2 && qemu-img create -q -f qcow2 %s l.qcow2 8M", cases[i].create_opts),
            0);
        char text[256];
        snprintf(text, sizeof(text), "file=%s,format=qcow2,if=none,id=d%s", qpath("l.qcow2"),
                 cases[i].drive_opt);
        struct drive_opts d;
        struct block_backend *bb = drive_open_ok(text, &d);
        memset(buf, 0x5a, 65536);
        assert_int_equal(rw(bb, BLOCK_OP_WRITE, 1 << 20, buf, 65536), 0);
        assert_int_equal(rw(bb, BLOCK_OP_FLUSH, 0, NULL, 0), 0);
        if (dirty_bit(qpath("l.qcow2")) != cases[i].dirty)
            fail_msg("case %zu: dirty bit %d after a flush", i, !cases[i].dirty);
        block_backend_close(bb);
        drive_opts_free(&d);
        assert_false(dirty_bit(qpath("l.qcow2"))); /* a clean close clears it */
        /* The image's own bit is unchanged and the image is consistent. */
        assert_int_equal(sh("qemu-img check -q l.qcow2 && qemu-img info l.qcow2 | "
                            "grep -q 'lazy refcounts: %s'",
                            cases[i].create_opts[0] ? "true" : "false"),
                         0);
    }
    free(buf);
}

static void test_probe(void **state)
{
    if (!have_qemu)
        return;
    make_qcow2(NULL);
    struct block_backend *bb = open_q_ok(qpath("img.qcow2"), NULL, 0, 0, false, false);
    assert_string_equal(block_backend_format(bb), "qcow2");
    assert_false(block_backend_format_probed_raw(bb));
    assert_int_equal(block_backend_size(bb), Q_SIZE);
    block_backend_close(bb);
    bb = open_q_ok(qpath("base.raw"), NULL, 0, 0, false, false);
    assert_string_equal(block_backend_format(bb), "raw");
    assert_true(block_backend_format_probed_raw(bb));
    assert_int_equal(block_backend_size(bb), 4 << 20);
    block_backend_close(bb);
    /* Explicit format: no probing (a qcow2 image read as raw is its file). */
    bb = open_q_ok(qpath("img.qcow2"), "raw", 0, 0, false, false);
    assert_string_equal(block_backend_format(bb), "raw");
    assert_false(block_backend_format_probed_raw(bb));
    block_backend_close(bb);
    /* Through -drive: format absent is probed (the raw warning goes to stderr). */
    char text[160];
    struct drive_opts d;
    struct error err = {0};
    snprintf(text, sizeof(text), "file=%s,if=virtio", qpath("img.qcow2"));
    parse_ok(text, 0, &d);
    assert_int_equal(drive_open(&d, &bb, &err), 0);
    assert_string_equal(block_backend_format(bb), "qcow2");
    block_backend_close(bb);
    drive_opts_free(&d);
    /* A file that is not qcow2 named as qcow2. */
    struct block_open_opts o = {.file = qpath("base.raw"), .format = "qcow2"};
    assert_int_equal(block_backend_open(&o, &bb, &err), -1);
    assert_non_null(strstr(err.msg, "not a qcow2 image"));
}

static void test_locking(void **state)
{
    if (!have_qemu)
        return;
    make_qcow2(NULL);
    const char *img = qpath("img.qcow2");
    struct error err = {0};
    struct block_backend *a = open_q_ok(img, NULL, 0, 0, false, false);
    /* A second writer, a reader, and QEMU are refused while a writer holds the image. */
    assert_null(open_q(img, NULL, 0, 0, false, false, &err));
    char want[256];
    snprintf(want, sizeof(want),
             "Failed to get \"write\" lock. Is another process using the image [%s]?", img);
    assert_string_equal(err.msg, want);
    memset(&err, 0, sizeof(err));
    assert_null(open_q(img, NULL, 0, 0, true, false, &err));
    assert_non_null(strstr(err.msg, "Failed to get shared \"write\" lock"));
    memset(&err, 0, sizeof(err));
    assert_null(open_q(img, NULL, 0, 0, false, true, &err)); /* snapshot=on reads the image */
    assert_non_null(strstr(err.msg, "lock"));
    assert_int_equal(sh("qemu-io -f qcow2 -c 'read 0 512' img.qcow2 2>&1 | "
                        "grep -q 'Failed to get \"write\" lock'"),
                     0);
    assert_int_equal(sh("qemu-io -r -f qcow2 -c 'read 0 512' img.qcow2 2>&1 | "
                        "grep -q 'Failed to get shared \"write\" lock'"),
                     0);
    block_backend_close(a);

    /* Readers share: two kemu, and QEMU reading alongside; a writer is refused. */
    a = open_q_ok(img, NULL, 0, 0, true, false);
    struct block_backend *b = open_q_ok(img, "qcow2", 0, 0, true, false);
    struct block_backend *c = open_q_ok(img, NULL, 0, 0, false, true);
    assert_int_equal(sh("qemu-io -r -f qcow2 -c 'read -P 0x22 64k 4k' img.qcow2 | grep -q '^read'"),
                     0);
    assert_int_equal(sh("qemu-io -f qcow2 -c 'read 0 512' img.qcow2 2>&1 | grep -q 'lock'"), 0);
    memset(&err, 0, sizeof(err));
    assert_null(open_q(img, NULL, 0, 0, false, false, &err));
    assert_non_null(strstr(err.msg, "Failed to get \"write\" lock"));
    block_backend_close(a);
    block_backend_close(b);
    block_backend_close(c);

    /* Raw images are locked the same way. */
    a = open_q_ok(qpath("base.raw"), "raw", BLOCK_CACHE_WRITEBACK, 0, false, false);
    memset(&err, 0, sizeof(err));
    assert_null(open_q(qpath("base.raw"), "raw", 0, 0, false, false, &err));
    assert_non_null(strstr(err.msg, "Failed to get \"write\" lock"));
    block_backend_close(a);
    /* -drive locks; file.locking=off does not. */
    char text[160];
    struct drive_opts d;
    a = open_q_ok(img, NULL, 0, 0, false, false);
    snprintf(text, sizeof(text), "file=%s,if=virtio", img);
    parse_ok(text, 0, &d);
    memset(&err, 0, sizeof(err));
    assert_int_equal(drive_open(&d, &b, &err), -1);
    assert_non_null(strstr(err.msg, "Failed to get \"write\" lock"));
    drive_opts_free(&d);
    snprintf(text, sizeof(text), "file=%s,if=virtio,file.locking=off,readonly=on", img);
    parse_ok(text, 0, &d);
    assert_int_equal(drive_open(&d, &b, &err), 0);
    block_backend_close(b);
    drive_opts_free(&d);
    block_backend_close(a);
    /* All released at close. */
    a = open_q_ok(img, NULL, 0, 0, false, false);
    block_backend_close(a);
    assert_int_equal(sh("qemu-io -f qcow2 -c 'read 0 512' img.qcow2 >/dev/null"), 0);
}

/* snapshot=on: writes are seen by the guest, never reach the image (raw or qcow2). */
static void snapshot_case(const char *name, const char *fmt, uint64_t size)
{
    assert_int_equal(sh("cp %s orig && rm -f vl.*", name), 0);
    struct block_backend *bb = open_q_ok(qpath(name), fmt, BLOCK_CACHE_NONE, 0, false, true);
    assert_int_equal(block_backend_size(bb), size);
    assert_false(block_backend_readonly(bb));
    assert_int_equal(fcntl(block_backend_fd(bb), F_GETFL) & O_ACCMODE, O_RDONLY);
    uint8_t *buf = malloc(1 << 20), *r = malloc(1 << 20);
    memset(buf, 0x77, 1 << 20);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, 12345, buf, 1 << 20), 0);
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, 3 << 20, NULL, 0, 65536, true), 0);
    assert_int_equal(run(bb, BLOCK_OP_FLUSH, 0, NULL, 0, 0, false), 0);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 12345, r, 1 << 20), 0);
    assert_memory_equal(r, buf, 1 << 20);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, 12345), 0);
    for (int i = 0; i < 12345; i++)
        assert_int_equal(r[i], 0x11);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 3 << 20, r, 65536), 0);
    for (int i = 0; i < 65536; i++)
        assert_int_equal(r[i], 0);
    assert_int_equal(sh("ls vl.* 2>/dev/null | wc -l | grep -qx 0"), 0); /* TMPDIR=qdir */
    block_backend_close(bb);
    assert_int_equal(sh("cmp -s orig %s", name), 0);
    free(buf);
    free(r);
}

static void test_snapshot(void **state)
{
    if (!have_qemu)
        return;
    make_qcow2(NULL);
    snapshot_case("img.qcow2", "qcow2", Q_SIZE);
    snapshot_case("base.raw", "raw", 4 << 20);
    snapshot_case("base.raw", NULL, 4 << 20); /* probed */
    /* Through -drive. */
    char text[160];
    struct drive_opts d;
    struct error err = {0};
    struct block_backend *bb;
    snprintf(text, sizeof(text), "file=%s,if=virtio,snapshot=on", qpath("img.qcow2"));
    parse_ok(text, 0, &d);
    assert_int_equal(drive_open(&d, &bb, &err), 0);
    assert_string_equal(block_backend_format(bb), "qcow2");
    block_backend_close(bb);
    drive_opts_free(&d);
    assert_int_equal(sh("qemu-img check -q img.qcow2"), 0);
}

/* Guest-style writes for commit: data over the backing file and past its end, zeros over the
 * top image's own data; exp follows. */
static void commit_writes(struct block_backend *bb, uint8_t *exp)
{
    uint8_t *w = malloc(100000);
    memset(w, 0x55, 100000);
    assert_int_equal(rw(bb, BLOCK_OP_WRITE, (1 << 20) + 512, w, 100000), 0);
    memcpy(exp + (1 << 20) + 512, w, 100000);
    if (block_backend_size(bb) > (5u << 20)) {
        assert_int_equal(rw(bb, BLOCK_OP_WRITE, 5u << 20, w, 65536), 0);
        memcpy(exp + (5u << 20), w, 65536);
    }
    assert_int_equal(run(bb, BLOCK_OP_WRITE_ZEROES, 65536, NULL, 0, 65536, false), 0);
    memset(exp + 65536, 0, 65536);
    free(w);
}

static void read_equals(struct block_backend *bb, const uint8_t *exp, size_t len)
{
    uint8_t *r = malloc(len);
    assert_int_equal(rw(bb, BLOCK_OP_READ, 0, r, len), 0);
    assert_memory_equal(r, exp, len);
    free(r);
}

static void write_exp(const uint8_t *exp, size_t len)
{
    FILE *f = fopen(qpath("exp.raw"), "w");
    assert_non_null(f);
    assert_int_equal(fwrite(exp, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* HMP commit: a qcow2 image into its raw backing file (which grows to the image's size), and
 * snapshot=on into the image under the overlay (raw and qcow2); refusals. */
static void test_commit(void **state)
{
    if (!have_qemu)
        skip();
    uint8_t *exp = malloc(Q_SIZE);
    struct error err = {0};

    /* qcow2 over raw: the base gets everything, the top image is empty after, the guest's view
     * is unchanged (read through the reopened backing file). */
    make_qcow2(exp);
    struct block_backend *bb = open_q_ok(qpath("img.qcow2"), "qcow2", BLOCK_CACHE_WRITEBACK,
                                         BLOCK_AIO_THREADS, false, false);
    commit_writes(bb, exp);
    assert_int_equal(block_backend_commit(bb, &err), 0);
    read_equals(bb, exp, Q_SIZE);
    block_backend_close(bb);
    write_exp(exp, Q_SIZE);
    assert_int_equal(sh("qemu-img check -q img.qcow2 && cmp -s exp.raw base.raw"), 0);
    assert_int_equal(sh("qemu-io -f qcow2 -c 'alloc 0 8M' img.qcow2 | grep -q '^0/'"), 0);

    /* Another user of the base that does not share write keeps commit out. */
    make_qcow2(exp);
    bb = open_q_ok(qpath("img.qcow2"), "qcow2", BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS, false,
                   false);
    struct block_backend *other =
        open_q_ok(qpath("base.raw"), "raw", BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS, true, false);
    commit_writes(bb, exp);
    err = (struct error){0};
    assert_int_equal(block_backend_commit(bb, &err), -EBUSY);
    assert_non_null(strstr(err.msg, "Failed to get \"write\" lock"));
    block_backend_close(other);
    read_equals(bb, exp, Q_SIZE);
    block_backend_close(bb);

    /* snapshot=on over raw, then over qcow2: the overlay's writes land in the image. */
    make_qcow2(exp);
    memset(exp, 0x11, 4 << 20);
    bb = open_q_ok(qpath("base.raw"), "raw", BLOCK_CACHE_NONE, BLOCK_AIO_THREADS, false, true);
    commit_writes(bb, exp);
    assert_int_equal(block_backend_commit(bb, &err), 0);
    read_equals(bb, exp, 4 << 20);
    block_backend_close(bb);
    write_exp(exp, 4 << 20);
    assert_int_equal(sh("cmp -s exp.raw base.raw"), 0);

    make_qcow2(exp);
    bb = open_q_ok(qpath("img.qcow2"), "qcow2", BLOCK_CACHE_NONE, BLOCK_AIO_THREADS, false, true);
    commit_writes(bb, exp);
    assert_int_equal(block_backend_commit(bb, &err), 0);
    read_equals(bb, exp, Q_SIZE);
    block_backend_close(bb);
    write_exp(exp, Q_SIZE);
    assert_int_equal(sh("qemu-img check -q img.qcow2 && "
                        "qemu-img compare -q -f raw -F qcow2 exp.raw img.qcow2"),
                     0);
    assert_int_equal(sh("ls vl.* 2>/dev/null | wc -l | grep -qx 0"), 0);

    /* Nothing to commit into. */
    bb =
        open_q_ok(qpath("base.raw"), "raw", BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS, false, false);
    assert_int_equal(block_backend_commit(bb, &err), -ENOTSUP);
    block_backend_close(bb);
    assert_int_equal(sh("qemu-img create -q -f qcow2 alone.qcow2 1M"), 0);
    bb = open_q_ok(qpath("alone.qcow2"), "qcow2", BLOCK_CACHE_WRITEBACK, BLOCK_AIO_THREADS, false,
                   false);
    err = (struct error){0};
    assert_int_equal(block_backend_commit(bb, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "has no backing file"));
    block_backend_close(bb);
    free(exp);
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
        cmocka_unit_test_setup_teardown(test_qcow2_engines, make_qdir, remove_qdir),
        cmocka_unit_test_setup_teardown(test_qcow2_chain, make_qdir, remove_qdir),
        cmocka_unit_test_setup_teardown(test_qcow2_pieces, make_qdir, remove_qdir),
        cmocka_unit_test_setup_teardown(test_qcow2_parallel, make_qdir, remove_qdir),
        cmocka_unit_test(test_close_syncs),
        cmocka_unit_test_setup_teardown(test_drive_lazy_refcounts, make_qdir, remove_qdir),
        cmocka_unit_test_setup_teardown(test_probe, make_qdir, remove_qdir),
        cmocka_unit_test_setup_teardown(test_locking, make_qdir, remove_qdir),
        cmocka_unit_test_setup_teardown(test_snapshot, make_qdir, remove_qdir),
        cmocka_unit_test_setup_teardown(test_commit, make_qdir, remove_qdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
