/* iovec helpers of the block layer (iov.h). */
#include "block/iov.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

enum walk_op {
    WALK_FROM_BUF,
    WALK_TO_BUF,
    WALK_FILL,
};

/* The one walk behind the copies and the fill: bytes [offset, offset+len), cut at the end. */
static size_t walk(const struct iovec *iov, int iovcnt, size_t offset, uint8_t *buf, int c,
                   size_t len, enum walk_op op)
{
    size_t done = 0;
    for (int i = 0; i < iovcnt && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        uint8_t *p = (uint8_t *)iov[i].iov_base + offset;
        size_t k = iov[i].iov_len - offset;
        if (k > len - done)
            k = len - done;
        if (op == WALK_FROM_BUF)
            memcpy(p, buf + done, k);
        else if (op == WALK_TO_BUF)
            memcpy(buf + done, p, k);
        else
            memset(p, c, k);
        offset = 0;
        done += k;
    }
    return done;
}

size_t iov_from_buf(const struct iovec *iov, int iovcnt, size_t offset, const void *buf, size_t len)
{
    return walk(iov, iovcnt, offset, (uint8_t *)(uintptr_t)buf, 0, len, WALK_FROM_BUF);
}

size_t iov_to_buf(const struct iovec *iov, int iovcnt, size_t offset, void *buf, size_t len)
{
    return walk(iov, iovcnt, offset, buf, 0, len, WALK_TO_BUF);
}

size_t iov_memset(const struct iovec *iov, int iovcnt, size_t offset, int c, size_t len)
{
    return walk(iov, iovcnt, offset, NULL, c, len, WALK_FILL);
}

int iov_slice(const struct iovec *iov, int iovcnt, size_t offset, size_t len, struct iovec *out,
              int max)
{
    int n = 0;
    for (int i = 0; i < iovcnt && len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        if (n == max)
            return -1;
        size_t k = iov[i].iov_len - offset < len ? iov[i].iov_len - offset : len;
        out[n++] = (struct iovec){(uint8_t *)iov[i].iov_base + offset, k};
        offset = 0;
        len -= k;
    }
    return len ? -1 : n;
}

bool iov_is_aligned(const struct iovec *iov, int iovcnt, unsigned align)
{
    for (int i = 0; i < iovcnt; i++)
        if ((((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (align - 1)) != 0)
            return false;
    return true;
}

bool iov_is_zero(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;
        /* Word at a time once aligned: zero detection runs on every write. */
        while (n && ((uintptr_t)p & 7)) {
            if (*p++)
                return false;
            n--;
        }
        for (; n >= 32; n -= 32, p += 32) {
            const uint64_t *w = (const uint64_t *)(const void *)p;
            if (w[0] | w[1] | w[2] | w[3])
                return false;
        }
        while (n--)
            if (*p++)
                return false;
    }
    return true;
}

int iov_rw_result(const struct iovec *iov, int iovcnt, uint64_t len, int64_t res, bool write)
{
    if (res < 0)
        return (int)res;
    if ((uint64_t)res >= len)
        return 0;
    if (write)
        return -ENOSPC;
    iov_memset(iov, iovcnt, (size_t)res, 0, (size_t)(len - (uint64_t)res));
    return 0;
}

int iov_rw_once(int fd, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write)
{
    ssize_t r;
    do
        r = write ? pwritev(fd, iov, iovcnt, (off_t)off) : preadv(fd, iov, iovcnt, (off_t)off);
    while (r < 0 && errno == EINTR);
    return iov_rw_result(iov, iovcnt, len, r < 0 ? -errno : r, write);
}

int iov_rw_full(int fd, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len, bool write)
{
    /* After a short transfer, the rest of the vector: it has no more elements than the first
     * call, which the kernel took, so it fits (no allocation that could fail). */
    struct iovec rest[IOV_MAX];
    const struct iovec *cur = iov;
    int curcnt = iovcnt;
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = write ? pwritev(fd, cur, curcnt, (off_t)(off + done))
                          : preadv(fd, cur, curcnt, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            if (write)
                return -EIO;
            iov_memset(iov, iovcnt, (size_t)done, 0, (size_t)(len - done));
            return 0;
        }
        done += (uint64_t)n;
        if (done >= len)
            break;
        curcnt = iov_slice(iov, iovcnt, (size_t)done, (size_t)(len - done), rest, IOV_MAX);
        if (curcnt < 0)
            return -EINVAL; /* len is more than the vector holds */
        cur = rest;
    }
    return 0;
}
