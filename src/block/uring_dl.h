/*
 * liburing, opened with dlopen() when the first aio=io_uring drive is opened: linked, it costs
 * every run ~24 KiB of resident memory though most never use io_uring.
 *
 * Include this instead of <liburing.h>. Most of liburing is static inline in its header and
 * calls a few exported functions (__io_uring_get_cqe behind io_uring_peek_cqe, for one); every
 * exported function that kemu or those inlines reach is renamed here to a kemu_* trampoline
 * (uring_dl.c) before the header is read. A function missing from this list fails the link of
 * kemu (which no longer links liburing) rather than reaching the library behind the loader's
 * back: add it here and in uring_dl.c. Inline functions (io_uring_get_sqe in liburing 2.3) must
 * not be listed: renaming one would only rename the header's own definition.
 */
#ifndef KEMU_BLOCK_URING_DL_H
#define KEMU_BLOCK_URING_DL_H

#ifdef LIB_URING_H
#error "block/uring_dl.h must be included before any <liburing.h>"
#endif

#define __io_uring_get_cqe        kemu___io_uring_get_cqe
#define io_uring_queue_exit       kemu_io_uring_queue_exit
#define io_uring_queue_init       kemu_io_uring_queue_init
#define io_uring_register_eventfd kemu_io_uring_register_eventfd
#define io_uring_submit           kemu_io_uring_submit
#define io_uring_wait_cqe_timeout kemu_io_uring_wait_cqe_timeout

#include <liburing.h>

#include "core/error.h"

/*
 * Open liburing and resolve the functions above; 0, or -1 with "aio=io_uring needs
 * liburing.so.2: <why>". Once per run (later calls repeat the first outcome); thread-safe.
 * Calling a liburing function before a successful open is a programming error: it aborts with
 * the function's name.
 */
int uring_dl_open(struct error *err);

#endif
