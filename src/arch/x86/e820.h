/* The BIOS e820 memory map a PC firmware would report, built from the guest's RAM regions. */
#ifndef KEMU_ARCH_X86_E820_H
#define KEMU_ARCH_X86_E820_H

#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"

#define X86_E820_MAX_ENTRIES 128 /* what the zero page holds */

#define X86_E820_RAM      1
#define X86_E820_RESERVED 2

struct x86_e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

/*
 * Fill `out` (room for `max` entries) with the map of `mem`, sorted by address: RAM below the EBDA,
 * the EBDA/VGA/BIOS area reserved up to 1 MiB, RAM from 1 MiB to the end of low RAM, RAM above
 * 4 GiB, and the IOAPIC, local APIC and KVM identity-map/TSS pages reserved. Sets *nr. Returns 0,
 * or -1 with `err` set if `max` is too small.
 */
int x86_e820_build(const struct guest_mem *mem, struct x86_e820_entry *out, unsigned max,
                   unsigned *nr, struct error *err);

#endif
