/* Output-only chardevs: a file (-serial file:PATH, -chardev file) and null. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "chardev/backends.h"

struct filechr {
    struct chardev base;
    int fd;
};

static ssize_t file_write(struct chardev *c, const uint8_t *buf, size_t len)
{
    struct filechr *f = (struct filechr *)c;
    size_t done = 0;
    while (f->fd >= 0 && done < len) {
        ssize_t n = write(f->fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)len;
}

static void file_close(struct chardev *c)
{
    struct filechr *f = (struct filechr *)c;
    if (f->fd >= 0)
        close(f->fd);
    free(f);
}

static const struct chardev_ops file_ops = {.write = file_write, .close = file_close};

struct chardev *chardev_file_new(const char *path, bool append, struct error *err)
{
    struct filechr *f = calloc(1, sizeof(*f));
    if (!f) {
        error_setf(err, "out of memory");
        return NULL;
    }
    f->base.ops = &file_ops;
    f->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0666);
    if (f->fd < 0) {
        error_setf_errno(err, errno, "Could not open '%s'", path);
        free(f);
        return NULL;
    }
    return &f->base;
}

struct chardev *chardev_null_new(struct error *err)
{
    struct filechr *f = calloc(1, sizeof(*f));
    if (!f) {
        error_setf(err, "out of memory");
        return NULL;
    }
    f->base.ops = &file_ops;
    f->fd = -1;
    return &f->base;
}

void chardev_free(struct chardev *c)
{
    if (c && c->ops->close)
        c->ops->close(c);
}
