/*
 * zlib, opened with dlopen() at the first compressed cluster a qcow2 image reads or writes:
 * linked, it costs every run ~84 KiB of resident memory though most never meet one.
 *
 * Include this instead of <zlib.h>. Every zlib function kemu calls, and the ones behind zlib.h's
 * macros (deflateInit2 is deflateInit2_ with the header's version and sizeof(z_stream)), is
 * renamed here to a kemu_* trampoline (zlib_dl.c) before the header is read. A function missing
 * from this list fails the link of kemu (which no longer links zlib) rather than reaching the
 * library behind the loader's back: add it here and in zlib_dl.c.
 */
#ifndef KEMU_BLOCK_ZLIB_DL_H
#define KEMU_BLOCK_ZLIB_DL_H

#ifdef ZLIB_H
#error "block/zlib_dl.h must be included before any <zlib.h>"
#endif

#define deflate       kemu_deflate
#define deflateEnd    kemu_deflateEnd
#define deflateInit2_ kemu_deflateInit2_
#define deflateReset  kemu_deflateReset
#define inflate       kemu_inflate
#define inflateEnd    kemu_inflateEnd
#define inflateInit2_ kemu_inflateInit2_

#include <zlib.h>

#include "core/error.h"

/*
 * Open zlib and resolve the functions above; 0, or -1 with "zlib compression needs libz.so.1:
 * <why>". Thread-safe; after the first success a call costs one atomic load. Calling a zlib
 * function before a successful open is a programming error: it aborts with the function's name.
 */
int zlib_dl_open(struct error *err);

#endif
