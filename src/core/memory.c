#include "core/memory.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int guest_mem_init_x86(struct guest_mem *mem, uint64_t ram_size, uint64_t below_4g_limit,
                       struct error *err)
{
    memset(mem, 0, sizeof(*mem));
    if (ram_size == 0)
        return error_setf(err, "RAM size must be non-zero");
    if (ram_size > (1ULL << 46))
        return error_setf(err, "RAM size %llu MiB is too large",
                          (unsigned long long)(ram_size >> 20));
    /* NORESERVE: the host commits only the pages the guest touches. The mapping starts on a
     * 2 MiB boundary: KVM maps guest memory with huge pages only where guest-physical and host
     * addresses agree modulo 2 MiB, and 4 KiB mappings cost TLB misses on every device access
     * and guest page walk (QEMU aligns the same way). */
    const size_t extra = GUEST_MEM_ALIGN;
    uint8_t *raw = mmap(NULL, ram_size + extra, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return error_setf_errno(err, errno, "cannot allocate %llu MiB of guest RAM",
                                (unsigned long long)(ram_size >> 20));
    uint8_t *p =
        (uint8_t *)(((uintptr_t)raw + GUEST_MEM_ALIGN - 1) & ~(uintptr_t)(GUEST_MEM_ALIGN - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    size_t len = (size_t)((ram_size + 4095) & ~4095ULL);
    if (p < raw + extra)
        munmap(p + len, (size_t)(raw + extra - p));
    madvise(p, ram_size, MADV_HUGEPAGE); /* best effort: THP may be off */
    /* Not the first 2 MiB: real-mode data, boot parameters and small guests live there, and a
     * huge page would cost a tiny VM 2 MiB of RSS for a few touched pages. */
    madvise(p, ram_size < GUEST_MEM_ALIGN ? ram_size : GUEST_MEM_ALIGN, MADV_NOHUGEPAGE);
    madvise(p, ram_size, MADV_MERGEABLE); /* best effort; KSM may be off */
    mem->mapping = p;
    mem->mapping_size = ram_size;
    mem->ram_size = ram_size;
    uint64_t low = ram_size < below_4g_limit ? ram_size : below_4g_limit;
    mem->regions[mem->nr++] = (struct guest_region){0, low, p};
    if (ram_size > low)
        mem->regions[mem->nr++] =
            (struct guest_region){1ULL << 32, ram_size - low, (uint8_t *)p + low};
    return 0;
}

void guest_mem_init_buffer(struct guest_mem *mem, void *buf, uint64_t size)
{
    memset(mem, 0, sizeof(*mem));
    mem->regions[0] = (struct guest_region){0, size, buf};
    mem->nr = 1;
    mem->ram_size = size;
}

void guest_mem_destroy(struct guest_mem *mem)
{
    if (mem->mapping)
        munmap(mem->mapping, mem->mapping_size);
    memset(mem, 0, sizeof(*mem));
}

void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < mem->nr; i++) {
        const struct guest_region *r = &mem->regions[i];
        /* Written so that no addition can overflow. */
        if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
            return r->hva + (gpa - r->gpa);
    }
    return NULL;
}

int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *buf, uint64_t len)
{
    const void *p = guest_mem_ptr(mem, gpa, len);
    if (!p)
        return -1;
    memcpy(buf, p, len);
    return 0;
}

int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *buf, uint64_t len)
{
    void *p = guest_mem_ptr(mem, gpa, len);
    if (!p)
        return -1;
    memcpy(p, buf, len);
    return 0;
}

int64_t guest_mem_discard(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    uint8_t *p = guest_mem_ptr(mem, gpa, len);
    if (!p)
        return -1;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096;
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(page - 1);
    if (end <= start)
        return 0;
    /* Private anonymous memory: the next touch maps a zero page. */
    if (madvise((void *)start, end - start, MADV_DONTNEED) < 0)
        return 0;
    return (int64_t)(end - start);
}
