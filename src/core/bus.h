/*
 * An address bus (port I/O or MMIO): devices register ranges with a small ops table, and the
 * vCPU loop dispatches each exit to the range containing the address. Devices see offsets
 * relative to their base and never know about KVM or the vCPU loop.
 */
#ifndef KEMU_CORE_BUS_H
#define KEMU_CORE_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

struct bus_ops {
    /* size is 1, 2, 4 or 8; the value is little-endian, zero-extended. */
    uint64_t (*read)(void *opaque, uint64_t offset, unsigned size);
    void (*write)(void *opaque, uint64_t offset, unsigned size, uint64_t value);
};

struct bus_range {
    uint64_t base, len;
    const struct bus_ops *ops;
    void *opaque;
    const char *name;
};

/*
 * Ranges change at run time (the guest moves a PCI BAR), so the array is guarded by a rwlock.
 * A dispatch copies the range under the read lock and calls the device after dropping it: a
 * device may then remap its own BARs from inside the access, and devices outlive the bus
 * mapping, so an access racing with an unmap reaches a live device (as if it came just before).
 */
struct bus {
    const char *name;         /* "pio" or "mmio", for messages */
    struct bus_range *ranges; /* sorted by base, non-overlapping */
    unsigned nr, cap;
    pthread_rwlock_t lock;
};

void bus_init(struct bus *bus, const char *name);
void bus_destroy(struct bus *bus);
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops,
                 void *opaque, const char *name, struct error *err);
/* Remove the range registered at base for opaque; returns false if there is none. */
bool bus_unregister(struct bus *bus, uint64_t base, void *opaque);
/* Unlocked lookup, for set-up code and tests while nothing changes the bus concurrently. */
const struct bus_range *bus_find(const struct bus *bus, uint64_t addr);
/* Returns false when nothing is mapped there: reads then give all-ones, writes are dropped. */
bool bus_read(struct bus *bus, uint64_t addr, unsigned size, uint64_t *value);
bool bus_write(struct bus *bus, uint64_t addr, unsigned size, uint64_t value);

#endif
