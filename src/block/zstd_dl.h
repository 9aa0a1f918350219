/*
 * libzstd, opened with dlopen() at the first zstd-compressed cluster a qcow2 image reads or
 * writes (or at the creation of a compression_type=zstd image): linked, it costs every run
 * ~92 KiB of resident memory though most never meet one.
 *
 * Include this instead of <zstd.h>. Every zstd function kemu calls is renamed here to a kemu_*
 * trampoline (zstd_dl.c) before the header is read. A function missing from this list fails the
 * link of kemu (which no longer links libzstd) rather than reaching the library behind the
 * loader's back: add it here and in zstd_dl.c.
 */
#ifndef KEMU_BLOCK_ZSTD_DL_H
#define KEMU_BLOCK_ZSTD_DL_H

#ifdef ZSTD_H_235446
#error "block/zstd_dl.h must be included before any <zstd.h>"
#endif

#define ZSTD_compressCCtx     kemu_ZSTD_compressCCtx
#define ZSTD_createCCtx       kemu_ZSTD_createCCtx
#define ZSTD_createDCtx       kemu_ZSTD_createDCtx
#define ZSTD_decompressStream kemu_ZSTD_decompressStream
#define ZSTD_freeCCtx         kemu_ZSTD_freeCCtx
#define ZSTD_freeDCtx         kemu_ZSTD_freeDCtx
#define ZSTD_isError          kemu_ZSTD_isError

#include <zstd.h>

#include "core/error.h"

/*
 * Open libzstd and resolve the functions above; 0, or -1 with "zstd compression needs
 * libzstd.so.1: <why>". Thread-safe; after the first success a call costs one atomic load.
 * Calling a zstd function before a successful open is a programming error: it aborts with the
 * function's name.
 */
int zstd_dl_open(struct error *err);

#endif
