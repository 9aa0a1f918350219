/*
 * An address bus (port I/O or MMIO): devices register ranges with a small ops table, and the
 * vCPU loop dispatches each exit to the range containing the address. Devices see offsets
 * relative to their base and never know about KVM or the vCPU loop.
 */
#ifndef KEMU_CORE_BUS_H
#define KEMU_CORE_BUS_H

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

struct bus {
    const char *name;         /* "pio" or "mmio", for messages */
    struct bus_range *ranges; /* sorted by base, non-overlapping */
    unsigned nr, cap;
};

void bus_init(struct bus *bus, const char *name);
void bus_destroy(struct bus *bus);
/* Registration happens before vCPUs start; lookups afterwards take no lock. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_ops *ops,
                 void *opaque, const char *name, struct error *err);
const struct bus_range *bus_find(const struct bus *bus, uint64_t addr);
/* Returns false when nothing is mapped there: reads then give all-ones, writes are dropped. */
bool bus_read(const struct bus *bus, uint64_t addr, unsigned size, uint64_t *value);
bool bus_write(const struct bus *bus, uint64_t addr, unsigned size, uint64_t value);

#endif
