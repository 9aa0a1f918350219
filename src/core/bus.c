#include "core/bus.h"

#include <stdlib.h>
#include <string.h>

void bus_init(struct bus *bus, const char *name)
{
    memset(bus, 0, sizeof(*bus));
    bus->name = name;
    pthread_rwlock_init(&bus->lock, NULL);
}

void bus_destroy(struct bus *bus)
{
    free(bus->ranges);
    bus->ranges = NULL;
    bus->nr = bus->cap = 0;
    pthread_rwlock_destroy(&bus->lock);
}

static int insert_range(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops,
                        void *opaque, const char *name, struct error *err)
{
    if (len == 0 || base + len < base)
        return error_setf(err, "%s: invalid %s range 0x%llx+0x%llx", name, bus->name,
                          (unsigned long long)base, (unsigned long long)len);
    unsigned pos = 0;
    while (pos < bus->nr && bus->ranges[pos].base < base)
        pos++;
    /* Overlap with the neighbour before or after? */
    if (pos > 0) {
        const struct bus_range *p = &bus->ranges[pos - 1];
        if (p->base + p->len > base)
            return error_setf(err, "%s: %s range 0x%llx overlaps %s", name, bus->name,
                              (unsigned long long)base, p->name);
    }
    if (pos < bus->nr && base + len > bus->ranges[pos].base)
        return error_setf(err, "%s: %s range 0x%llx overlaps %s", name, bus->name,
                          (unsigned long long)base, bus->ranges[pos].name);
    if (bus->nr == bus->cap) {
        unsigned cap = bus->cap ? bus->cap * 2 : 16;
        struct bus_range *r = realloc(bus->ranges, cap * sizeof(*r));
        if (!r)
            return error_setf(err, "%s: out of memory", name);
        bus->ranges = r;
        bus->cap = cap;
    }
    memmove(&bus->ranges[pos + 1], &bus->ranges[pos], (bus->nr - pos) * sizeof(bus->ranges[0]));
    bus->ranges[pos] = (struct bus_range){base, len, ops, opaque, name};
    bus->nr++;
    return 0;
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops,
                 void *opaque, const char *name, struct error *err)
{
    pthread_rwlock_wrlock(&bus->lock);
    int r = insert_range(bus, base, len, ops, opaque, name, err);
    pthread_rwlock_unlock(&bus->lock);
    return r;
}

bool bus_unregister(struct bus *bus, uint64_t base, void *opaque)
{
    bool found = false;
    pthread_rwlock_wrlock(&bus->lock);
    for (unsigned i = 0; i < bus->nr; i++) {
        if (bus->ranges[i].base == base && bus->ranges[i].opaque == opaque) {
            memmove(&bus->ranges[i], &bus->ranges[i + 1],
                    (bus->nr - i - 1) * sizeof(bus->ranges[0]));
            bus->nr--;
            found = true;
            break;
        }
    }
    pthread_rwlock_unlock(&bus->lock);
    return found;
}

const struct bus_range *bus_find(const struct bus *bus, uint64_t addr)
{
    unsigned lo = 0, hi = bus->nr;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        const struct bus_range *r = &bus->ranges[mid];
        if (addr < r->base)
            hi = mid;
        else if (addr - r->base >= r->len)
            lo = mid + 1;
        else
            return r;
    }
    return NULL;
}

/* Copy of the range holding addr, taken under the read lock; false if none. */
static bool lookup(struct bus *bus, uint64_t addr, struct bus_range *out)
{
    pthread_rwlock_rdlock(&bus->lock);
    const struct bus_range *r = bus_find(bus, addr);
    if (r)
        *out = *r;
    pthread_rwlock_unlock(&bus->lock);
    return r != NULL;
}

bool bus_read(struct bus *bus, uint64_t addr, unsigned size, uint64_t *value)
{
    struct bus_range r;
    bool found = lookup(bus, addr, &r);
    if (!found || !r.ops->read) {
        *value = size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1;
        return found;
    }
    *value = r.ops->read(r.opaque, addr - r.base, size);
    return true;
}

bool bus_write(struct bus *bus, uint64_t addr, unsigned size, uint64_t value)
{
    struct bus_range r;
    if (!lookup(bus, addr, &r))
        return false;
    if (r.ops->write)
        r.ops->write(r.opaque, addr - r.base, size, value);
    return true;
}
