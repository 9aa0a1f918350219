/* The kemu_* trampolines that block/zlib_dl.h renames zlib's functions to. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "kemu-config.h"
#include "block/zlib_dl.h"

#include "core/os.h"

#define ZLIB_FNS(X)                                                                                \
    X(deflate)                                                                                     \
    X(deflateEnd)                                                                                  \
    X(deflateInit2_)                                                                               \
    X(deflateReset)                                                                                \
    X(inflate)                                                                                     \
    X(inflateEnd)                                                                                  \
    X(inflateInit2_)

/* Typed by zlib's header through the renamed declarations (same signatures). The names are
 * pasted, never expanded, so p_deflate is not turned into p_kemu_deflate. */
#define ZL_FIELD(n) __typeof__(kemu_##n) *p_##n;
static struct {
    ZLIB_FNS(ZL_FIELD)
} zl;

#define ZL_ENTRY(n) {#n, (void **)&zl.p_##n},
static const struct os_lib_fn zl_fns[] = {ZLIB_FNS(ZL_ENTRY)};

static struct os_lib libz = {
    .soname = ZLIB_SONAME,
    .what = "zlib compression",
    .fns = zl_fns,
    .nfns = sizeof(zl_fns) / sizeof(zl_fns[0]),
};

int zlib_dl_open(struct error *err)
{
    return os_lib_open(&libz, err);
}

#define FN(n) OS_LIB_FN(libz, zl.p_##n, #n)

int kemu_deflate(z_streamp strm, int flush)
{
    return FN(deflate)(strm, flush);
}

int kemu_deflateEnd(z_streamp strm)
{
    return FN(deflateEnd)(strm);
}

int kemu_deflateInit2_(z_streamp strm, int level, int method, int windowBits, int memLevel,
                       int strategy, const char *version, int stream_size)
{
    return FN(deflateInit2_)(strm, level, method, windowBits, memLevel, strategy, version,
                             stream_size);
}

int kemu_deflateReset(z_streamp strm)
{
    return FN(deflateReset)(strm);
}

int kemu_inflate(z_streamp strm, int flush)
{
    return FN(inflate)(strm, flush);
}

int kemu_inflateEnd(z_streamp strm)
{
    return FN(inflateEnd)(strm);
}

int kemu_inflateInit2_(z_streamp strm, int windowBits, const char *version, int stream_size)
{
    return FN(inflateInit2_)(strm, windowBits, version, stream_size);
}
