/*
 * Guest physical memory. Every access to guest memory goes through guest_mem_ptr(), which checks
 * that the whole range [gpa, gpa+len) lies inside one RAM region; nothing else turns a guest
 * address into a host pointer.
 */
#ifndef KEMU_CORE_MEMORY_H
#define KEMU_CORE_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define GUEST_MEM_MAX_REGIONS 8
#define GUEST_MEM_ALIGN       (2u << 20) /* host alignment of guest RAM: one huge page */

struct guest_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
};

struct guest_mem {
    struct guest_region regions[GUEST_MEM_MAX_REGIONS];
    unsigned nr;
    uint64_t ram_size; /* total RAM, the -m value */
    void *mapping;     /* one mapping backing all regions */
    size_t mapping_size;
    size_t page_size;  /* of the backing: the host's, or a hugetlbfs file's huge page */
    bool file_backed;  /* a mapping of a file or memfd (-mem-path, memory-backend-file/memfd) */
    bool shared;       /* MAP_SHARED: giving pages back punches holes (MADV_REMOVE) */
    bool preallocated; /* every page was touched at start (-mem-prealloc) */
    bool merge, dump;  /* offered to KSM; in core dumps */
};

/* What backs guest RAM (QEMU's -mem-path and -machine mem-merge=/dump-guest-core=). */
struct guest_mem_backing {
    /* NULL: anonymous memory. A directory (a hugetlbfs mount, say): a new file in it, unlinked
     * at once. Anything else: that file, created if missing; an existing non-empty file must
     * hold the whole RAM and is mapped privately, so the guest never writes it. */
    const char *path;
    /* Instead of a path: an anonymous memfd (memory-backend-memfd), on huge pages of
     * `hugetlbsize` bytes (0: the host's default size) with hugetlb, sealed against resizing
     * with seal. */
    bool memfd, hugetlb, seal;
    uint64_t hugetlbsize;
    /* MAP_SHARED (memory-backend-*,share=on): the guest's writes reach the file or memfd, where
     * another process mapping it (a vhost-user backend) sees them. Anonymous shared RAM is a
     * memfd. */
    bool share;
    bool no_merge; /* mem-merge=off: KSM may not merge its pages */
    bool no_dump;  /* dump-guest-core=off: left out of kemu's core dumps */
};

/*
 * Lay out ram_size bytes of RAM for an x86 PC: below `below_4g_limit` (the start of the PCI/MMIO
 * hole) and the rest from 4 GiB. Anonymous memory is reserved lazily: only pages the guest
 * touches count. `b` may be NULL (anonymous, merged, dumped). On a hugetlbfs file the mapping is
 * rounded up to whole huge pages, which the kernel reserves now: too few fails here, not later.
 */
int guest_mem_init_x86(struct guest_mem *mem, uint64_t ram_size, uint64_t below_4g_limit,
                       const struct guest_mem_backing *b, struct error *err);
/* Touch every page of RAM now (QEMU's -mem-prealloc), split over `threads` threads: the host
 * commits the memory before the guest starts, and a host without it fails here. */
int guest_mem_prealloc(struct guest_mem *mem, unsigned threads, struct error *err);
/* A machine reset: hand back the pages of anonymous, not preallocated RAM (a PC's reset does
 * not clear RAM; the host just need not keep what the next boot overwrites anyway). */
void guest_mem_reset(struct guest_mem *mem);
/* Wrap a caller-provided buffer as RAM at gpa 0 (unit tests, fuzzers). */
void guest_mem_init_buffer(struct guest_mem *mem, void *buf, uint64_t size);
void guest_mem_destroy(struct guest_mem *mem);

/* Host pointer to [gpa, gpa+len), or NULL if any byte of it is outside guest RAM. */
void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *buf, uint64_t len);
int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *buf, uint64_t len);
/*
 * The guest gave [gpa, gpa+len) away (a balloon): drop the host pages wholly inside it (huge
 * pages on hugetlbfs), which then read as zeros (as the backing file, for -mem-path) and cost
 * the host nothing until touched again. Returns the bytes dropped (0 for a range smaller than a
 * host page), or -1 if the range is not inside one RAM region.
 */
int64_t guest_mem_discard(const struct guest_mem *mem, uint64_t gpa, uint64_t len);

#endif
