/*
 * isa-debug-exit. Stateless apart from the callback, so no lock: the callback (the lead's
 * "stop the VM with this status") runs on the writing vCPU thread and must be thread-safe.
 */
#include "hw/debugexit.h"

#include <stdlib.h>

struct debugexit {
    void (*exit_cb)(void *opaque, int status);
    void *opaque;
};

static uint64_t debugexit_read(void *opaque, uint64_t offset, unsigned size)
{
    return size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1;
}

static void debugexit_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct debugexit *d = opaque;
    if (size < 8)
        value &= (1ULL << (size * 8)) - 1;
    if (d->exit_cb)
        d->exit_cb(d->opaque, (int)((value << 1) | 1));
}

const struct bus_ops debugexit_bus_ops = {
    .read = debugexit_read,
    .write = debugexit_write,
};

struct debugexit *debugexit_create(void (*exit_cb)(void *opaque, int status), void *opaque)
{
    struct debugexit *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->exit_cb = exit_cb;
    d->opaque = opaque;
    return d;
}

void debugexit_destroy(struct debugexit *d)
{
    free(d);
}
