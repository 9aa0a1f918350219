#include "arch/x86/e820.h"

#include "arch/x86/layout.h"

struct e820_builder {
    struct x86_e820_entry *out;
    unsigned max, nr;
    struct error *err;
};

static int add(struct e820_builder *b, uint64_t addr, uint64_t size, uint32_t type)
{
    if (size == 0)
        return 0;
    if (b->nr >= b->max)
        return error_setf(b->err, "e820 map needs more than %u entries", b->max);
    b->out[b->nr++] = (struct x86_e820_entry){addr, size, type};
    return 0;
}

/* Add the RAM range [start, end) minus the legacy hole [EBDA, 1 MiB). */
static int add_ram(struct e820_builder *b, uint64_t start, uint64_t end)
{
    if (start < X86_EBDA_ADDR) {
        uint64_t e = end < X86_EBDA_ADDR ? end : X86_EBDA_ADDR;
        if (add(b, start, e - start, X86_E820_RAM) < 0)
            return -1;
    }
    if (end > X86_HIGH_MEM_ADDR) {
        uint64_t s = start > X86_HIGH_MEM_ADDR ? start : X86_HIGH_MEM_ADDR;
        if (add(b, s, end - s, X86_E820_RAM) < 0)
            return -1;
    }
    return 0;
}

int x86_e820_build(const struct guest_mem *mem, struct x86_e820_entry *out, unsigned max,
                   unsigned *nr, struct error *err)
{
    struct e820_builder b = {out, max, 0, err};

    *nr = 0;
    for (unsigned i = 0; i < mem->nr; i++) {
        const struct guest_region *r = &mem->regions[i];
        if (add_ram(&b, r->gpa, r->gpa + r->size) < 0)
            return -1;
    }
    /* What a PC's firmware reports as reserved: EBDA, VGA window, option ROMs and BIOS, the
     * interrupt controllers' MMIO pages and KVM's identity-map/TSS pages. The PCI
     * hole itself stays a gap: Linux places PCI resources in the largest gap below 4 GiB. */
    if (add(&b, X86_EBDA_ADDR, X86_HIGH_MEM_ADDR - X86_EBDA_ADDR, X86_E820_RESERVED) < 0 ||
        add(&b, X86_IOAPIC_ADDR, X86_IOAPIC_SIZE, X86_E820_RESERVED) < 0 ||
        add(&b, X86_LAPIC_ADDR, X86_LAPIC_SIZE, X86_E820_RESERVED) < 0 ||
        add(&b, X86_KVM_IDENTITY_MAP_ADDR, X86_KVM_PRIVATE_SIZE, X86_E820_RESERVED) < 0)
        return -1;

    /* Insertion sort by address: at most a handful of entries. */
    for (unsigned i = 1; i < b.nr; i++) {
        struct x86_e820_entry e = out[i];
        unsigned j = i;
        while (j > 0 && out[j - 1].addr > e.addr) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = e;
    }
    *nr = b.nr;
    return 0;
}
