/* The block backend core: request checks, detect-zeroes, completion delivery, the raw format. */
#include "block/block_int.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static const struct block_format_ops *const formats[] = {&block_format_raw};

const char *block_cache_name(enum block_cache c)
{
    static const char *const n[] = {"writeback", "none", "writethrough", "directsync", "unsafe"};
    return (unsigned)c < sizeof(n) / sizeof(n[0]) ? n[c] : "?";
}

const char *block_aio_name(enum block_aio a)
{
    static const char *const n[] = {"threads", "native", "io_uring"};
    return (unsigned)a < sizeof(n) / sizeof(n[0]) ? n[a] : "?";
}

int block_backend_open(const struct block_open_opts *o, struct block_backend **out,
                       struct error *err)
{
    const char *fmtname = o->format ? o->format : "raw";
    const struct block_format_ops *fmt = NULL;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        if (!strcmp(formats[i]->name, fmtname))
            fmt = formats[i];
    if (!fmt)
        return error_setf(err, "format '%s' is not supported yet (raw only)", fmtname);
    if (o->dz == DETECT_ZEROES_UNMAP && !o->discard_unmap)
        return error_setf(err, "setting detect-zeroes to unmap is not allowed without setting "
                               "discard operation to unmap");

    struct block_backend *bb = calloc(1, sizeof(*bb));
    if (!bb)
        return error_setf(err, "out of memory");
    bb->fd = -1;
    bb->efd = -1;
    bb->fmt = fmt;
    bb->cache = o->cache;
    bb->aio = o->aio;
    bb->dz = o->dz;
    bb->readonly = o->readonly;
    bb->discard_unmap = o->discard_unmap;
    bb->done_tail = &bb->done_head;
    pthread_mutex_init(&bb->done_lock, NULL);
    bb->filename = strdup(o->file ? o->file : "");
    bb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!bb->filename || bb->efd < 0) {
        error_setf_errno(err, errno, "eventfd");
        goto fail;
    }
    if (file_open(bb, o, err) < 0)
        goto fail;
    if (fmt->open(bb, err) < 0) {
        file_close(bb);
        goto fail;
    }
    *out = bb;
    return 0;
fail:
    if (bb->efd >= 0)
        close(bb->efd);
    pthread_mutex_destroy(&bb->done_lock);
    free(bb->filename);
    free(bb);
    return -1;
}

void block_backend_close(struct block_backend *bb)
{
    if (!bb)
        return;
    block_backend_drain(bb);
    if (bb->fmt->close)
        bb->fmt->close(bb);
    file_close(bb);
    close(bb->efd);
    pthread_mutex_destroy(&bb->done_lock);
    free(bb->filename);
    free(bb);
}

static bool iov_is_zero(const struct iovec *iov, int iovcnt)
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

void block_backend_submit(struct block_backend *bb, struct block_request *req)
{
    bb->inflight++;
    req->next = NULL;
    req->bounce = NULL;
    req->eop = req->op;
    req->eunmap = req->may_unmap;
    req->eiov = req->iov;
    req->eiovcnt = req->iovcnt;
    req->eoff = req->offset;
    req->elen = req->len;
    switch (req->op) {
    case BLOCK_OP_READ:
    case BLOCK_OP_FLUSH:
        break;
    case BLOCK_OP_WRITE:
    case BLOCK_OP_DISCARD:
    case BLOCK_OP_WRITE_ZEROES:
        if (bb->readonly) {
            block_complete_later(bb, req, -EROFS);
            return;
        }
        break;
    default:
        block_complete_later(bb, req, -EINVAL);
        return;
    }
    if (req->op == BLOCK_OP_WRITE && bb->dz != DETECT_ZEROES_OFF && req->len &&
        iov_is_zero(req->iov, req->iovcnt)) {
        req->eop = BLOCK_OP_WRITE_ZEROES;
        req->eunmap = bb->dz == DETECT_ZEROES_UNMAP;
    }
    bb->fmt->submit(bb, req);
}

void block_backend_plug(struct block_backend *bb)
{
    bb->plugged = true;
}

void block_backend_unplug(struct block_backend *bb)
{
    bb->plugged = false;
    file_unplug(bb);
}

int block_backend_completion_fd(const struct block_backend *bb)
{
    return bb->efd;
}

void block_complete_later(struct block_backend *bb, struct block_request *req, int ret)
{
    req->ret = ret;
    req->next = NULL;
    pthread_mutex_lock(&bb->done_lock);
    *bb->done_tail = req;
    bb->done_tail = &req->next;
    pthread_mutex_unlock(&bb->done_lock);
    uint64_t one = 1;
    ssize_t r = write(bb->efd, &one, sizeof(one));
    (void)r; /* only fails when the counter is saturated: it is readable anyway */
}

void block_complete_now(struct block_backend *bb, struct block_request *req, int ret)
{
    if (req->bounce) {
        if (ret == 0 && req->eop == BLOCK_OP_READ) {
            const uint8_t *src = (const uint8_t *)req->bounce + req->bounce_off;
            for (int i = 0; i < req->iovcnt; i++) {
                memcpy(req->iov[i].iov_base, src, req->iov[i].iov_len);
                src += req->iov[i].iov_len;
            }
        }
        free(req->bounce);
        req->bounce = NULL;
        bb->bounce_inflight -= req->bounce_len;
    }
    bb->inflight--;
    req->cb(req, ret);
}

unsigned block_backend_process(struct block_backend *bb)
{
    uint64_t v;
    ssize_t r = read(bb->efd, &v, sizeof(v));
    (void)r; /* EAGAIN: nothing signalled, the sources are checked anyway */
    unsigned n = file_process(bb);
    pthread_mutex_lock(&bb->done_lock);
    struct block_request *list = bb->done_head;
    bb->done_head = NULL;
    bb->done_tail = &bb->done_head;
    pthread_mutex_unlock(&bb->done_lock);
    while (list) {
        struct block_request *req = list;
        list = req->next;
        block_complete_now(bb, req, req->ret);
        n++;
    }
    return n;
}

void block_backend_drain(struct block_backend *bb)
{
    if (bb->plugged)
        block_backend_unplug(bb);
    while (bb->inflight) {
        struct pollfd p = {.fd = bb->efd, .events = POLLIN};
        if (poll(&p, 1, 100) < 0 && errno != EINTR)
            break;
        block_backend_process(bb);
    }
}

unsigned block_backend_inflight(const struct block_backend *bb)
{
    return bb->inflight;
}

uint64_t block_backend_size(const struct block_backend *bb)
{
    return bb->size;
}

bool block_backend_readonly(const struct block_backend *bb)
{
    return bb->readonly;
}

bool block_backend_writeback(const struct block_backend *bb)
{
    return bb->cache == BLOCK_CACHE_WRITEBACK || bb->cache == BLOCK_CACHE_NONE ||
           bb->cache == BLOCK_CACHE_UNSAFE;
}

unsigned block_backend_block_size(const struct block_backend *bb)
{
    return bb->align;
}

bool block_backend_discard_unmap(const struct block_backend *bb)
{
    return bb->discard_unmap;
}

int block_backend_open_flags(const struct block_backend *bb)
{
    return bb->open_flags;
}

int block_backend_fd(const struct block_backend *bb)
{
    return bb->fd;
}

/* ---- raw format: the disk is the file, byte for byte ---- */

static int raw_open(struct block_backend *bb, struct error *err)
{
    bb->size = bb->file_size;
    return 0;
}

static void raw_submit(struct block_backend *bb, struct block_request *req)
{
    if (req->op != BLOCK_OP_FLUSH &&
        (req->offset > bb->size || req->len > bb->size - req->offset)) {
        block_complete_later(bb, req, -EINVAL);
        return;
    }
    file_submit(bb, req);
}

const struct block_format_ops block_format_raw = {
    .name = "raw",
    .open = raw_open,
    .submit = raw_submit,
};
