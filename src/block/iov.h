/*
 * iovec helpers of the block layer: byte ranges of a vector (copies, fills, slices, checks) and
 * the two ways a preadv/pwritev result is read (one call, or a loop until everything moved).
 *
 * Offsets and lengths are bytes from the start of the vector; zero-length elements are allowed
 * anywhere and never appear in a slice. The copies and fills stop at the end of the vector and
 * return what they did; a slice is refused when its range is not all inside the vector.
 */
#ifndef KEMU_BLOCK_IOV_H
#define KEMU_BLOCK_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Copy len bytes of buf into the vector from byte offset on; returns the bytes copied. */
size_t iov_from_buf(const struct iovec *iov, int iovcnt, size_t offset, const void *buf,
                    size_t len);
/* Copy len bytes of the vector from byte offset on into buf; returns the bytes copied. */
size_t iov_to_buf(const struct iovec *iov, int iovcnt, size_t offset, void *buf, size_t len);
/* Set len bytes of the vector from byte offset on to c; returns the bytes set. */
size_t iov_memset(const struct iovec *iov, int iovcnt, size_t offset, int c, size_t len);

/* Bytes [offset, offset+len) of the vector as iovecs in out[max]: how many, or -1 when the range
 * goes past the end of the vector or takes more than max of them (out may then be part written). */
int iov_slice(const struct iovec *iov, int iovcnt, size_t offset, size_t len, struct iovec *out,
              int max);

/* Are all bases and lengths multiples of align (a power of two), as O_DIRECT wants? */
bool iov_is_aligned(const struct iovec *iov, int iovcnt, unsigned align);
/* Is every byte of the vector zero? */
bool iov_is_zero(const struct iovec *iov, int iovcnt);

/*
 * Transfers between a vector of len bytes (len is its size) and fd at off; 0 or -errno.
 *
 * iov_rw_result: a single preadv/pwritev (or AIO engine) transfer of len bytes moved res bytes,
 * or failed with res = -errno. A short read is the end of the file: the rest of the vector reads
 * as zeros. A short write is a full file system: -ENOSPC.
 *
 * iov_rw_once: one preadv/pwritev (EINTR is retried) read as iov_rw_result does. Nothing is
 * retried at the offset a short transfer ended at, which O_DIRECT may refuse as unaligned.
 *
 * iov_rw_full: preadv/pwritev until all len bytes moved, a short transfer going on with the rest.
 * A read that gets 0 (the end of the file) zeros the rest of the vector; a write that gets 0
 * fails with -EIO. The caller's iovecs are not changed.
 */
int iov_rw_result(const struct iovec *iov, int iovcnt, uint64_t len, int64_t res, bool write);
int iov_rw_once(int fd, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len,
                bool write);
int iov_rw_full(int fd, const struct iovec *iov, int iovcnt, uint64_t off, uint64_t len,
                bool write);

#endif
