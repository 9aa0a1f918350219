/* The kemu_* trampolines that block/zstd_dl.h renames libzstd's functions to. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "kemu-config.h"
#include "block/zstd_dl.h"

#include "core/os.h"

#define ZSTD_FNS(X)                                                                                \
    X(ZSTD_compressCCtx)                                                                           \
    X(ZSTD_createCCtx)                                                                             \
    X(ZSTD_createDCtx)                                                                             \
    X(ZSTD_decompressStream)                                                                       \
    X(ZSTD_freeCCtx)                                                                               \
    X(ZSTD_freeDCtx)                                                                               \
    X(ZSTD_isError)

/* Typed by zstd's header through the renamed declarations (same signatures). The names are
 * pasted, never expanded, so p_ZSTD_isError is not turned into p_kemu_ZSTD_isError. */
#define ZS_FIELD(n) __typeof__(kemu_##n) *p_##n;
static struct {
    ZSTD_FNS(ZS_FIELD)
} zs;

#define ZS_ENTRY(n) {#n, (void **)&zs.p_##n},
static const struct os_lib_fn zs_fns[] = {ZSTD_FNS(ZS_ENTRY)};

static struct os_lib libzstd = {
    .soname = ZSTD_SONAME,
    .what = "zstd compression",
    .fns = zs_fns,
    .nfns = sizeof(zs_fns) / sizeof(zs_fns[0]),
};

int zstd_dl_open(struct error *err)
{
    return os_lib_open(&libzstd, err);
}

#define FN(n) OS_LIB_FN(libzstd, zs.p_##n, #n)

size_t kemu_ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t dstCapacity, const void *src,
                              size_t srcSize, int compressionLevel)
{
    return FN(ZSTD_compressCCtx)(cctx, dst, dstCapacity, src, srcSize, compressionLevel);
}

ZSTD_CCtx *kemu_ZSTD_createCCtx(void)
{
    return FN(ZSTD_createCCtx)();
}

ZSTD_DCtx *kemu_ZSTD_createDCtx(void)
{
    return FN(ZSTD_createDCtx)();
}

size_t kemu_ZSTD_decompressStream(ZSTD_DStream *zds, ZSTD_outBuffer *output, ZSTD_inBuffer *input)
{
    return FN(ZSTD_decompressStream)(zds, output, input);
}

size_t kemu_ZSTD_freeCCtx(ZSTD_CCtx *cctx)
{
    return FN(ZSTD_freeCCtx)(cctx);
}

size_t kemu_ZSTD_freeDCtx(ZSTD_DCtx *dctx)
{
    return FN(ZSTD_freeDCtx)(dctx);
}

unsigned kemu_ZSTD_isError(size_t code)
{
    return FN(ZSTD_isError)(code);
}
