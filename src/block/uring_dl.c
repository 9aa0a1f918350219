/* The kemu_* trampolines that block/uring_dl.h renames liburing's functions to. */
#include <stdio.h>
#include <stdlib.h>

#include "kemu-config.h"
#include "block/uring_dl.h"

#include "core/os.h"

#define URING_FNS(X)                                                                               \
    X(__io_uring_get_cqe)                                                                          \
    X(io_uring_queue_exit)                                                                         \
    X(io_uring_queue_init)                                                                         \
    X(io_uring_register_eventfd)                                                                   \
    X(io_uring_submit)                                                                             \
    X(io_uring_wait_cqe_timeout)

/* Typed by liburing's header through the renamed declarations (same signatures). The names are
 * pasted, never expanded, so p_io_uring_submit is not turned into p_kemu_io_uring_submit. */
#define UR_FIELD(n) __typeof__(kemu_##n) *p_##n;
static struct {
    URING_FNS(UR_FIELD)
} ur;

#define UR_ENTRY(n) {#n, (void **)&ur.p_##n},
static const struct os_lib_fn ur_fns[] = {URING_FNS(UR_ENTRY)};

static struct os_lib liburing = {
    .soname = LIBURING_SONAME,
    .what = "aio=io_uring",
    .fns = ur_fns,
    .nfns = sizeof(ur_fns) / sizeof(ur_fns[0]),
};

int uring_dl_open(struct error *err)
{
    return os_lib_open(&liburing, err);
}

#define FN(n) OS_LIB_FN(liburing, ur.p_##n, #n)

int kemu___io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr, unsigned submit,
                            unsigned wait_nr, sigset_t *sigmask)
{
    return FN(__io_uring_get_cqe)(ring, cqe_ptr, submit, wait_nr, sigmask);
}

void kemu_io_uring_queue_exit(struct io_uring *ring)
{
    FN(io_uring_queue_exit)(ring);
}

int kemu_io_uring_queue_init(unsigned entries, struct io_uring *ring, unsigned flags)
{
    return FN(io_uring_queue_init)(entries, ring, flags);
}

int kemu_io_uring_register_eventfd(struct io_uring *ring, int fd)
{
    return FN(io_uring_register_eventfd)(ring, fd);
}

int kemu_io_uring_submit(struct io_uring *ring)
{
    return FN(io_uring_submit)(ring);
}

int kemu_io_uring_wait_cqe_timeout(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                                   struct __kernel_timespec *ts)
{
    return FN(io_uring_wait_cqe_timeout)(ring, cqe_ptr, ts);
}
