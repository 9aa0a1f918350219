/* Unit tests for the block layer's iovec helpers (src/block/iov.c): ranges across elements,
 * zero-length elements, empty vectors, slices that would run past the end, and transfers that
 * come back short at the end of a file, at a file size limit, or (through the preadv/pwritev
 * stand-ins below) with EINTR and partial counts in the middle of an element. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include "block/iov.h"

/* ---- preadv/pwritev stand-ins: a regular file never returns EINTR or a short count before its
 * end, so the retry paths are driven from here. iov.c's calls bind to these (the executable's
 * definitions come first); preadv2/pwritev2 with no flags are the real calls. ---- */

#define FAKE_EINTR (-1)
static ssize_t fake_plan[8]; /* per call: FAKE_EINTR, or move at most this many bytes */
static int fake_nplan;
static int fake_calls;
static int fake_cnt[8]; /* iovcnt each call was given */

static ssize_t fake_rw(int fd, const struct iovec *iov, int cnt, off_t off, bool write)
{
    int call = fake_calls++;
    if (call < 8)
        fake_cnt[call] = cnt;
    if (call >= fake_nplan)
        return write ? pwritev2(fd, iov, cnt, off, 0) : preadv2(fd, iov, cnt, off, 0);
    if (fake_plan[call] == FAKE_EINTR) {
        errno = EINTR;
        return -1;
    }
    /* the first fake_plan[call] bytes of the vector */
    struct iovec v[16];
    size_t left = (size_t)fake_plan[call];
    int n = 0;
    for (int i = 0; i < cnt && i < 16 && left; i++) {
        v[n] = iov[i];
        if (v[n].iov_len > left)
            v[n].iov_len = left;
        left -= v[n].iov_len;
        n++;
    }
    if (!n)
        return 0;
    return write ? pwritev2(fd, v, n, off, 0) : preadv2(fd, v, n, off, 0);
}

ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return fake_rw(fd, iov, cnt, off, false);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return fake_rw(fd, iov, cnt, off, true);
}

static void fake_set(int n, const ssize_t *plan)
{
    memcpy(fake_plan, plan, sizeof(*plan) * (size_t)n);
    fake_nplan = n;
    fake_calls = 0;
}

static int reset_fake(void **state)
{
    fake_nplan = 0;
    fake_calls = 0;
    return 0;
}

/* ---- a vector over a backing buffer with gaps, to see that nothing outside it is touched ---- */

#define CANARY 0xa5

/* Elements of 3, 0, 5, 0 and 4 bytes (12 in all) in mem[64], each followed by a gap. */
static uint8_t mem[64];
static struct iovec vec[5];

static void make_vec(void)
{
    memset(mem, CANARY, sizeof(mem));
    vec[0] = (struct iovec){mem + 0, 3};
    vec[1] = (struct iovec){mem + 8, 0};
    vec[2] = (struct iovec){mem + 16, 5};
    vec[3] = (struct iovec){NULL, 0};
    vec[4] = (struct iovec){mem + 32, 4};
}

/* Byte i of the vector. */
static uint8_t *vbyte(size_t i)
{
    return i < 3 ? mem + i : i < 8 ? mem + 16 + (i - 3) : mem + 32 + (i - 8);
}

/* Every byte of mem outside the vector still holds the canary. */
static void assert_gaps_intact(void)
{
    for (size_t i = 0; i < sizeof(mem); i++) {
        bool in = i < 3 || (i >= 16 && i < 21) || (i >= 32 && i < 36);
        if (!in && mem[i] != CANARY)
            fail_msg("mem[%zu] = 0x%02x outside the vector", i, mem[i]);
    }
}

/* ---- copies and fills ---- */

static void test_empty_vector(void **state)
{
    uint8_t buf[4] = {1, 2, 3, 4};
    struct iovec out[2] = {{buf, 1}, {buf, 1}};
    assert_int_equal(iov_from_buf(NULL, 0, 0, buf, sizeof(buf)), 0);
    assert_int_equal(iov_to_buf(NULL, 0, 0, buf, sizeof(buf)), 0);
    assert_int_equal(iov_memset(NULL, 0, 0, 0, sizeof(buf)), 0);
    assert_int_equal(buf[0], 1);
    assert_int_equal(iov_slice(NULL, 0, 0, 0, out, 2), 0);
    assert_int_equal(iov_slice(NULL, 0, 0, 1, out, 2), -1);
    assert_true(iov_is_aligned(NULL, 0, 4096));
    assert_true(iov_is_zero(NULL, 0));
    /* only zero-length elements: as empty */
    struct iovec z[2] = {{NULL, 0}, {buf, 0}};
    assert_int_equal(iov_from_buf(z, 2, 0, buf, 4), 0);
    assert_int_equal(iov_slice(z, 2, 0, 0, out, 2), 0);
    assert_int_equal(iov_slice(z, 2, 0, 1, out, 2), -1);
    assert_true(iov_is_zero(z, 2));
}

static void test_from_buf(void **state)
{
    uint8_t src[16];
    for (int i = 0; i < 16; i++)
        src[i] = (uint8_t)(0x10 + i);
    make_vec();
    /* bytes 2..9: the end of the first element, the whole second, the start of the third */
    assert_int_equal(iov_from_buf(vec, 5, 2, src, 8), 8);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), i >= 2 && i < 10 ? src[i - 2] : CANARY);
    assert_gaps_intact();
    /* from an element boundary, and through zero-length elements */
    make_vec();
    assert_int_equal(iov_from_buf(vec, 5, 3, src, 5), 5);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), i >= 3 && i < 8 ? src[i - 3] : CANARY);
    /* cut at the end of the vector */
    make_vec();
    assert_int_equal(iov_from_buf(vec, 5, 10, src, 16), 2);
    assert_int_equal(*vbyte(10), src[0]);
    assert_int_equal(*vbyte(11), src[1]);
    assert_int_equal(*vbyte(9), CANARY);
    assert_gaps_intact();
    /* at and past the end: nothing */
    make_vec();
    assert_int_equal(iov_from_buf(vec, 5, 12, src, 4), 0);
    assert_int_equal(iov_from_buf(vec, 5, 100, src, 4), 0);
    assert_int_equal(iov_from_buf(vec, 5, 0, src, 0), 0);
    for (size_t i = 0; i < sizeof(mem); i++)
        assert_int_equal(mem[i], CANARY);
}

static void test_to_buf(void **state)
{
    make_vec();
    for (size_t i = 0; i < 12; i++)
        *vbyte(i) = (uint8_t)(0x40 + i);
    uint8_t dst[20];
    memset(dst, CANARY, sizeof(dst));
    assert_int_equal(iov_to_buf(vec, 5, 1, dst, 9), 9);
    for (size_t i = 0; i < 9; i++)
        assert_int_equal(dst[i], 0x41 + i);
    assert_int_equal(dst[9], CANARY);
    /* cut at the end: dst past what the vector holds is not written */
    memset(dst, CANARY, sizeof(dst));
    assert_int_equal(iov_to_buf(vec, 5, 6, dst, sizeof(dst)), 6);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(dst[i], 0x46 + i);
    for (size_t i = 6; i < sizeof(dst); i++)
        assert_int_equal(dst[i], CANARY);
    assert_int_equal(iov_to_buf(vec, 5, 12, dst, 1), 0);
    /* the whole vector */
    assert_int_equal(iov_to_buf(vec, 5, 0, dst, 12), 12);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(dst[i], 0x40 + i);
}

static void test_memset(void **state)
{
    make_vec();
    assert_int_equal(iov_memset(vec, 5, 2, 0, 7), 7);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), i >= 2 && i < 9 ? 0 : CANARY);
    assert_gaps_intact();
    /* to the end and beyond: cut */
    make_vec();
    assert_int_equal(iov_memset(vec, 5, 7, 0x5a, SIZE_MAX), 5);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), i >= 7 ? 0x5a : CANARY);
    assert_gaps_intact();
    assert_int_equal(iov_memset(vec, 5, 13, 0, 1), 0);
}

/* ---- slices ---- */

static void test_slice(void **state)
{
    make_vec();
    struct iovec out[6];
    /* across the boundaries, skipping the zero-length elements */
    int n = iov_slice(vec, 5, 1, 10, out, 6);
    assert_int_equal(n, 3);
    assert_ptr_equal(out[0].iov_base, mem + 1);
    assert_int_equal(out[0].iov_len, 2);
    assert_ptr_equal(out[1].iov_base, mem + 16);
    assert_int_equal(out[1].iov_len, 5);
    assert_ptr_equal(out[2].iov_base, mem + 32);
    assert_int_equal(out[2].iov_len, 3);
    /* inside one element; from an element boundary */
    assert_int_equal(iov_slice(vec, 5, 4, 2, out, 6), 1);
    assert_ptr_equal(out[0].iov_base, mem + 17);
    assert_int_equal(out[0].iov_len, 2);
    assert_int_equal(iov_slice(vec, 5, 3, 5, out, 6), 1);
    assert_ptr_equal(out[0].iov_base, mem + 16);
    assert_int_equal(out[0].iov_len, 5);
    /* the whole vector, and up to its very end */
    assert_int_equal(iov_slice(vec, 5, 0, 12, out, 6), 3);
    assert_int_equal(iov_slice(vec, 5, 11, 1, out, 6), 1);
    assert_ptr_equal(out[0].iov_base, mem + 35);
    assert_int_equal(iov_slice(vec, 5, 12, 0, out, 6), 0);
    /* past the end: refused, whether the range starts inside or beyond */
    assert_int_equal(iov_slice(vec, 5, 0, 13, out, 6), -1);
    assert_int_equal(iov_slice(vec, 5, 11, 2, out, 6), -1);
    assert_int_equal(iov_slice(vec, 5, 12, 1, out, 6), -1);
    assert_int_equal(iov_slice(vec, 5, SIZE_MAX, 1, out, 6), -1);
    assert_int_equal(iov_slice(vec, 5, 1, SIZE_MAX, out, 6), -1);
}

static void test_slice_max(void **state)
{
    make_vec();
    struct iovec out[3];
    memset(out, 0, sizeof(out));
    out[2] = (struct iovec){mem, 99}; /* beyond max: must stay */
    assert_int_equal(iov_slice(vec, 5, 0, 12, out, 2), -1);
    assert_ptr_equal(out[2].iov_base, mem);
    assert_int_equal(out[2].iov_len, 99);
    assert_int_equal(iov_slice(vec, 5, 0, 8, out, 2), 2);
    assert_int_equal(iov_slice(vec, 5, 0, 1, out, 0), -1);
    assert_int_equal(iov_slice(vec, 5, 0, 0, out, 0), 0);
}

/* ---- checks ---- */

static void test_is_aligned(void **state)
{
    static _Alignas(4096) uint8_t page[3 * 4096];
    struct iovec v[3] = {{page, 4096}, {NULL, 0}, {page + 8192, 512}};
    assert_true(iov_is_aligned(v, 3, 512));
    assert_false(iov_is_aligned(v, 3, 4096)); /* a length */
    v[2].iov_len = 4096;
    assert_true(iov_is_aligned(v, 3, 4096));
    v[0].iov_base = page + 512; /* a base */
    assert_false(iov_is_aligned(v, 3, 4096));
    assert_true(iov_is_aligned(v, 3, 512));
    v[1] = (struct iovec){page + 1, 0};
    assert_false(iov_is_aligned(v, 3, 512));
    assert_true(iov_is_aligned(v, 3, 1));
}

static void test_is_zero(void **state)
{
    static _Alignas(8) uint8_t buf[160];
    memset(buf, 0, sizeof(buf));
    /* unaligned starts and odd lengths go through all three loops */
    struct iovec v[3] = {{buf + 3, 70}, {buf + 80, 0}, {buf + 81, 77}};
    assert_true(iov_is_zero(v, 3));
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = 1;
        bool inside = (i >= 3 && i < 73) || (i >= 81 && i < 158);
        if (iov_is_zero(v, 3) == inside)
            fail_msg("byte %zu set: iov_is_zero says %d", i, !inside);
        buf[i] = 0;
    }
}

/* ---- transfers ---- */

static void test_rw_result(void **state)
{
    make_vec();
    assert_int_equal(iov_rw_result(vec, 5, 12, -EIO, false), -EIO);
    assert_int_equal(iov_rw_result(vec, 5, 12, -EINVAL, true), -EINVAL);
    assert_int_equal(iov_rw_result(vec, 5, 12, 12, false), 0);
    assert_int_equal(iov_rw_result(vec, 5, 12, 12, true), 0);
    assert_int_equal(iov_rw_result(vec, 5, 12, 0, false), 0); /* nothing read: all zeros */
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), 0);
    /* a short read: zeros from where it stopped (mid-element), what came before is kept */
    make_vec();
    assert_int_equal(iov_rw_result(vec, 5, 12, 5, false), 0);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), i < 5 ? CANARY : 0);
    assert_gaps_intact();
    /* a short write: the file system is full; the vector is left alone */
    make_vec();
    assert_int_equal(iov_rw_result(vec, 5, 12, 11, true), -ENOSPC);
    assert_int_equal(iov_rw_result(vec, 5, 12, 0, true), -ENOSPC);
    for (size_t i = 0; i < sizeof(mem); i++)
        assert_int_equal(mem[i], CANARY);
}

static char path[64];

static int make_file(void **state)
{
    reset_fake(state);
    strcpy(path, "/var/tmp/kemu-test-iov-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    *state = (void *)(intptr_t)fd;
    return 0;
}

static int remove_file(void **state)
{
    reset_fake(state);
    close((int)(intptr_t)*state);
    unlink(path);
    return 0;
}

static const char text[] = "0123456789abcdef";

static void put_text(int fd, size_t len)
{
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(pwrite(fd, text, len, 0), (ssize_t)len);
}

/* Reads that meet the end of the file: the bytes before it, zeros after, one call or a loop. */
static void test_read_eof(void **state)
{
    int fd = (int)(intptr_t)*state;
    put_text(fd, 10);
    for (int full = 0; full < 2; full++) {
        int (*rw)(int, const struct iovec *, int, uint64_t, uint64_t, bool) =
            full ? iov_rw_full : iov_rw_once;
        struct iovec saved[5];
        /* from 3: seven bytes, ending inside the third element */
        make_vec();
        memcpy(saved, vec, sizeof(vec));
        fake_calls = 0;
        assert_int_equal(rw(fd, vec, 5, 3, 12, false), 0);
        for (size_t i = 0; i < 12; i++)
            assert_int_equal(*vbyte(i), i < 7 ? (uint8_t)text[3 + i] : 0);
        assert_gaps_intact();
        assert_memory_equal(saved, vec, sizeof(vec)); /* the caller's iovecs */
        /* the loop asks again for the rest (which gets 0); one call does not */
        assert_int_equal(fake_calls, full ? 2 : 1);
        if (full)
            assert_int_equal(fake_cnt[1], 2); /* the rest of the third element and the fifth */
        /* all of it past the end */
        make_vec();
        assert_int_equal(rw(fd, vec, 5, 100, 12, false), 0);
        for (size_t i = 0; i < 12; i++)
            assert_int_equal(*vbyte(i), 0);
        assert_gaps_intact();
        /* not at the end: everything, nothing zeroed */
        put_text(fd, 16);
        make_vec();
        assert_int_equal(rw(fd, vec, 5, 4, 12, false), 0);
        for (size_t i = 0; i < 12; i++)
            assert_int_equal(*vbyte(i), (uint8_t)text[4 + i]);
        put_text(fd, 10);
    }
}

/* Writes that the file takes only part of: a file size limit stands in for a full disk. */
static void test_write_short(void **state)
{
    int fd = (int)(intptr_t)*state;
    assert_int_equal(ftruncate(fd, 0), 0);
    make_vec();
    for (size_t i = 0; i < 12; i++)
        *vbyte(i) = (uint8_t)text[i];
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 10;
    struct sigaction ign = {.sa_handler = SIG_IGN}, oldsa;
    sigaction(SIGXFSZ, &ign, &oldsa);
    /* results are checked after the limit is lifted again */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int once = iov_rw_once(fd, vec, 5, 0, 12, true);
    int calls_once = fake_calls;
    fake_calls = 0;
    int full = iov_rw_full(fd, vec, 5, 0, 12, true);
    int calls_full = fake_calls;
    setrlimit(RLIMIT_FSIZE, &old);
    sigaction(SIGXFSZ, &oldsa, NULL);
    /* one call: the short write is a full file system */
    assert_int_equal(once, -ENOSPC);
    assert_int_equal(calls_once, 1);
    /* the loop goes on from byte 10 (in the fifth element) and gets the file system's error */
    assert_int_equal(full, -EFBIG);
    assert_int_equal(calls_full, 2);
    assert_int_equal(fake_cnt[1], 1);
    char got[16] = {0};
    assert_int_equal(pread(fd, got, sizeof(got), 0), 10);
    assert_memory_equal(got, text, 10);
}

/* EINTR is retried, by both. */
static void test_eintr(void **state)
{
    int fd = (int)(intptr_t)*state;
    put_text(fd, 16);
    const ssize_t plan[] = {FAKE_EINTR, FAKE_EINTR};
    for (int full = 0; full < 2; full++) {
        int (*rw)(int, const struct iovec *, int, uint64_t, uint64_t, bool) =
            full ? iov_rw_full : iov_rw_once;
        make_vec();
        fake_set(2, plan);
        assert_int_equal(rw(fd, vec, 5, 2, 12, false), 0);
        assert_int_equal(fake_calls, 3);
        for (size_t i = 0; i < 12; i++)
            assert_int_equal(*vbyte(i), (uint8_t)text[2 + i]);
        fake_set(2, plan);
        assert_int_equal(rw(fd, vec, 5, 20, 12, true), 0);
        assert_int_equal(fake_calls, 3);
        char got[12];
        assert_int_equal(pread(fd, got, sizeof(got), 20), 12);
        assert_memory_equal(got, text + 2, 12);
    }
}

/* Short transfers before the end: the loop goes on from inside an element until all moved. */
static void test_full_resumes(void **state)
{
    int fd = (int)(intptr_t)*state;
    put_text(fd, 16);
    /* 4 bytes (into the third element), EINTR, 1 byte, then the rest */
    const ssize_t plan[] = {4, FAKE_EINTR, 1};
    make_vec();
    struct iovec saved[5];
    memcpy(saved, vec, sizeof(vec));
    fake_set(3, plan);
    assert_int_equal(iov_rw_full(fd, vec, 5, 1, 12, false), 0);
    assert_int_equal(fake_calls, 4);
    assert_int_equal(fake_cnt[0], 5);
    assert_int_equal(fake_cnt[2], 2); /* the rest of the third element, the fifth */
    assert_int_equal(fake_cnt[3], 2);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), (uint8_t)text[1 + i]);
    assert_gaps_intact();
    assert_memory_equal(saved, vec, sizeof(vec));

    /* a write: 3 bytes (the first element exactly), then 6, then the rest */
    const ssize_t wplan[] = {3, 6};
    fake_set(2, wplan);
    assert_int_equal(iov_rw_full(fd, vec, 5, 100, 12, true), 0);
    assert_int_equal(fake_calls, 3);
    assert_int_equal(fake_cnt[1], 2); /* from the third element on: no zero-length ones */
    assert_int_equal(fake_cnt[2], 1);
    char got[12];
    assert_int_equal(pread(fd, got, sizeof(got), 100), 12);
    assert_memory_equal(got, text + 1, 12);
    assert_memory_equal(saved, vec, sizeof(vec));

    /* one call takes what it gets: a short write is a full file system, not retried */
    fake_set(1, wplan);
    assert_int_equal(iov_rw_once(fd, vec, 5, 200, 12, true), -ENOSPC);
    assert_int_equal(fake_calls, 1);
}

/* A write that moves nothing fails the loop with EIO; len 0 transfers nothing at all. */
static void test_full_zero(void **state)
{
    int fd = (int)(intptr_t)*state;
    put_text(fd, 16);
    const ssize_t plan[] = {0};
    make_vec();
    fake_set(1, plan);
    assert_int_equal(iov_rw_full(fd, vec, 5, 0, 12, true), -EIO);
    assert_int_equal(fake_calls, 1);
    fake_set(0, plan);
    assert_int_equal(iov_rw_full(fd, vec, 5, 0, 0, false), 0);
    assert_int_equal(iov_rw_full(fd, NULL, 0, 0, 0, true), 0);
    assert_int_equal(fake_calls, 0);
    /* a read of 0 bytes before the end of the file zeros the rest, as at the end */
    fake_set(1, plan);
    assert_int_equal(iov_rw_full(fd, vec, 5, 0, 12, false), 0);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(*vbyte(i), 0);
}

/* The kernel's own errors come back as -errno: a bad descriptor, more iovecs than IOV_MAX. */
static void test_errors(void **state)
{
    int fd = (int)(intptr_t)*state;
    put_text(fd, 16);
    make_vec();
    assert_int_equal(iov_rw_full(-1, vec, 5, 0, 12, false), -EBADF);
    assert_int_equal(iov_rw_once(-1, vec, 5, 0, 12, true), -EBADF);
    int n = IOV_MAX + 1;
    struct iovec *many = calloc((size_t)n, sizeof(*many));
    uint8_t *bytes = calloc((size_t)n, 1);
    assert_non_null(many);
    assert_non_null(bytes);
    for (int i = 0; i < n; i++)
        many[i] = (struct iovec){bytes + i, 1};
    assert_int_equal(iov_rw_full(fd, many, n, 0, (uint64_t)n, false), -EINVAL);
    assert_int_equal(iov_rw_once(fd, many, n, 0, (uint64_t)n, true), -EINVAL);
    free(many);
    free(bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_vector),
        cmocka_unit_test(test_from_buf),
        cmocka_unit_test(test_to_buf),
        cmocka_unit_test(test_memset),
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_slice_max),
        cmocka_unit_test(test_is_aligned),
        cmocka_unit_test(test_is_zero),
        cmocka_unit_test(test_rw_result),
        cmocka_unit_test_setup_teardown(test_read_eof, make_file, remove_file),
        cmocka_unit_test_setup_teardown(test_write_short, make_file, remove_file),
        cmocka_unit_test_setup_teardown(test_eintr, make_file, remove_file),
        cmocka_unit_test_setup_teardown(test_full_resumes, make_file, remove_file),
        cmocka_unit_test_setup_teardown(test_full_zero, make_file, remove_file),
        cmocka_unit_test_setup_teardown(test_errors, make_file, remove_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
