#include "core/memory.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef MFD_HUGE_SHIFT
#define MFD_HUGE_SHIFT 26 /* linux/memfd.h, as MAP_HUGE_SHIFT */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* `size` bytes of private anonymous memory (NORESERVE) at an `align`-aligned address (a power of
 * two): mapped `align` larger, then trimmed at both ends. NULL with errno set on failure. */
static uint8_t *map_aligned(size_t size, size_t align, int prot)
{
    uint8_t *raw =
        mmap(NULL, size + align, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (p < raw + align)
        munmap(p + size, (size_t)(raw + align - p));
    return p;
}

/* The -mem-path file: a new unlinked one in a directory, or the named file (created if need be,
 * *created says so). Returns the fd or -1. */
static int open_backing(const char *path, bool *created, struct error *err)
{
    struct stat st;
    *created = false;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t n = strlen(path) + sizeof("/kemu_back_mem.XXXXXX");
        char *tmpl = malloc(n);
        if (!tmpl)
            return error_setf(err, "out of memory");
        snprintf(tmpl, n, "%s/kemu_back_mem.XXXXXX", path);
        int fd = mkostemp(tmpl, O_CLOEXEC);
        int e = errno;
        if (fd >= 0)
            unlink(tmpl); /* nothing is left behind, whatever happens next */
        free(tmpl);
        if (fd < 0)
            return error_setf_errno(err, e, "cannot create a file in '%s'", path);
        return fd;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        *created = fd >= 0;
    }
    if (fd < 0)
        return error_setf_errno(err, errno, "cannot open '%s'", path);
    return fd;
}

/* An anonymous memfd for RAM (memory-backend-memfd, or shared anonymous RAM). */
static int open_memfd(const struct guest_mem_backing *b, struct error *err)
{
    unsigned flags = MFD_CLOEXEC | (b->seal ? MFD_ALLOW_SEALING : 0);
    if (b->hugetlb) {
        flags |= MFD_HUGETLB;
        if (b->hugetlbsize) {
            /* Linux takes the page size as its log2 in the flags. */
            unsigned shift = 0;
            while (shift < 63 && (1ULL << shift) < b->hugetlbsize)
                shift++;
            if ((1ULL << shift) != b->hugetlbsize)
                return error_setf(err, "hugetlbsize %llu is not a power of two",
                                  (unsigned long long)b->hugetlbsize);
            flags |= shift << MFD_HUGE_SHIFT;
        }
    }
    int fd = memfd_create("kemu-ram", flags);
    if (fd < 0)
        return error_setf_errno(err, errno, "cannot create a memfd%s for guest RAM",
                                b->hugetlb ? " on huge pages" : "");
    return fd;
}

/* Map `size` bytes of the file (sized here if empty) at an `align`-aligned address, shared or
 * private. */
static uint8_t *map_backing(int fd, const char *path, size_t size, size_t align, bool share,
                            struct error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        error_setf_errno(err, errno, "'%s'", path);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        error_setf(err, "'%s' is not a regular file or a directory", path);
        return NULL;
    }
    /* A non-empty file is somebody's data: used as it is, never truncated. */
    if (st.st_size > 0 && (uint64_t)st.st_size < size) {
        error_setf(err, "'%s' holds %llu bytes, less than the %zu the guest RAM needs", path,
                   (unsigned long long)st.st_size, size);
        return NULL;
    }
    if (st.st_size == 0 && ftruncate(fd, (off_t)size) < 0) {
        error_setf_errno(err, errno, "cannot size '%s' to %zu bytes", path, size);
        return NULL;
    }
    /* Reserve an aligned range first, then put the file over it. */
    uint8_t *p = map_aligned(size, align, PROT_NONE);
    if (!p) {
        error_setf_errno(err, errno, "cannot reserve %zu MiB of address space", size >> 20);
        return NULL;
    }
    /* Private unless asked: the guest's writes never reach the file. Without MAP_NORESERVE,
     * hugetlbfs reserves every huge page now, so a short pool fails here rather than at a guest
     * fault. */
    int flags = (share ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED;
    if (mmap(p, size, PROT_READ | PROT_WRITE, flags, fd, 0) == MAP_FAILED) {
        error_setf_errno(err, errno, "cannot map %zu MiB of '%s' for guest RAM", size >> 20, path);
        munmap(p, size);
        return NULL;
    }
    return p;
}

static size_t round_up(uint64_t size, size_t page)
{
    return (size_t)((size + page - 1) & ~(uint64_t)(page - 1));
}

static uint8_t *map_anonymous(size_t size, struct error *err)
{
    /* NORESERVE: the host commits only the pages the guest touches. The mapping starts on a
     * 2 MiB boundary: KVM maps guest memory with huge pages only where guest-physical and host
     * addresses agree modulo 2 MiB, and 4 KiB mappings cost TLB misses on every device access
     * and guest page walk (QEMU aligns the same way). */
    uint8_t *p = map_aligned(size, GUEST_MEM_ALIGN, PROT_READ | PROT_WRITE);
    if (!p) {
        error_setf_errno(err, errno, "cannot allocate %zu MiB of guest RAM", size >> 20);
        return NULL;
    }
    madvise(p, size, MADV_HUGEPAGE); /* best effort: THP may be off */
    /* Not the first 2 MiB: real-mode data, boot parameters and small guests live there, and a
     * huge page would cost a tiny VM 2 MiB of RSS for a few touched pages. */
    madvise(p, size < GUEST_MEM_ALIGN ? size : GUEST_MEM_ALIGN, MADV_NOHUGEPAGE);
    return p;
}

int guest_mem_init_x86(struct guest_mem *mem, uint64_t ram_size, uint64_t below_4g_limit,
                       const struct guest_mem_backing *b, struct error *err)
{
    memset(mem, 0, sizeof(*mem));
    if (ram_size == 0)
        return error_setf(err, "RAM size must be non-zero");
    if (ram_size > (1ULL << 46))
        return error_setf(err, "RAM size %llu MiB is too large",
                          (unsigned long long)(ram_size >> 20));
    long hp = sysconf(_SC_PAGESIZE);
    size_t page = hp > 0 ? (size_t)hp : 4096;
    size_t len;
    uint8_t *p;
    if (b && (b->path || b->memfd || b->share)) {
        bool created = false;
        const char *name = b->path ? b->path : "memfd";
        int fd = b->path ? open_backing(b->path, &created, err) : open_memfd(b, err);
        if (fd < 0)
            return -1;
        struct statfs fs;
        if (fstatfs(fd, &fs) == 0 && (uint32_t)fs.f_type == HUGETLBFS_MAGIC && fs.f_bsize > 0)
            page = (size_t)fs.f_bsize;
        if (ram_size < page) {
            close(fd);
            if (created)
                unlink(b->path);
            return error_setf(err,
                              "the RAM size (%llu bytes) is smaller than the huge page "
                              "size of '%s' (%zu bytes)",
                              (unsigned long long)ram_size, name, page);
        }
        len = round_up(ram_size, page);
        p = map_backing(fd, name, len, page > GUEST_MEM_ALIGN ? page : GUEST_MEM_ALIGN, b->share,
                        err);
        /* A sealed memfd keeps its size for good (QEMU's seal=on). */
        if (p && b->memfd && b->seal &&
            fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
            error_setf_errno(err, errno, "cannot seal the memfd");
            munmap(p, len);
            p = NULL;
        }
        close(fd); /* the mapping keeps the file */
        if (!p) {
            if (created)
                unlink(b->path);
            return -1;
        }
        mem->file_backed = true;
        mem->shared = b->share;
    } else {
        len = round_up(ram_size, page);
        p = map_anonymous(len, err);
        if (!p)
            return -1;
    }
    mem->merge = !b || !b->no_merge;
    mem->dump = !b || !b->no_dump;
    if (mem->merge)
        madvise(p, len, MADV_MERGEABLE); /* best effort; KSM may be off */
    if (!mem->dump)
        madvise(p, len, MADV_DONTDUMP);
    mem->mapping = p;
    mem->mapping_size = len;
    mem->page_size = page;
    mem->ram_size = ram_size;
    uint64_t low = ram_size < below_4g_limit ? ram_size : below_4g_limit;
    mem->regions[mem->nr++] = (struct guest_region){0, low, p};
    if (ram_size > low)
        mem->regions[mem->nr++] =
            (struct guest_region){1ULL << 32, ram_size - low, (uint8_t *)p + low};
    return 0;
}

struct prealloc_part {
    uint8_t *p;
    size_t len, page;
    int error;
    bool running; /* on a thread of its own */
    pthread_t thread;
};

static void *prealloc_thread(void *opaque)
{
    struct prealloc_part *t = opaque;
    int r;
    do
        r = madvise(t->p, t->len, MADV_POPULATE_WRITE);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return NULL;
    t->error = errno;
    if (t->error != EINVAL) /* ENOMEM, EFAULT (a hugetlbfs pool ran dry)... */
        return NULL;
    /* Before Linux 5.14: write each page (a read would map the shared zero page). */
    t->error = 0;
    for (size_t off = 0; off < t->len; off += t->page)
        __atomic_fetch_add((volatile uint8_t *)(t->p + off), 0, __ATOMIC_RELAXED);
    return NULL;
}

int guest_mem_prealloc(struct guest_mem *mem, unsigned threads, struct error *err)
{
    if (!mem->mapping)
        return 0;
    size_t pages = mem->mapping_size / mem->page_size;
    if (threads < 1)
        threads = 1;
    if (threads > 16)
        threads = 16;
    if (threads > pages)
        threads = (unsigned)pages;
    struct prealloc_part parts[16];
    size_t per = pages / threads, extra = pages % threads, at = 0;
    for (unsigned i = 0; i < threads; i++) {
        size_t n = per + (i < extra);
        parts[i] = (struct prealloc_part){.p = (uint8_t *)mem->mapping + at * mem->page_size,
                                          .len = n * mem->page_size,
                                          .page = mem->page_size};
        at += n;
        /* The last part runs here, and any whose thread could not start. */
        parts[i].running =
            i + 1 < threads && !pthread_create(&parts[i].thread, NULL, prealloc_thread, &parts[i]);
        if (!parts[i].running)
            prealloc_thread(&parts[i]);
    }
    int error = 0;
    for (unsigned i = 0; i < threads; i++) {
        if (parts[i].running)
            pthread_join(parts[i].thread, NULL);
        if (parts[i].error)
            error = parts[i].error;
    }
    if (error)
        return error_setf_errno(err, error, "preallocating %zu MiB of guest RAM failed",
                                mem->mapping_size >> 20);
    mem->preallocated = true;
    return 0;
}

void guest_mem_reset(struct guest_mem *mem)
{
    if (mem->mapping && !mem->file_backed && !mem->preallocated)
        madvise(mem->mapping, mem->mapping_size, MADV_DONTNEED);
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
    uintptr_t page = mem->page_size ? mem->page_size : ps > 0 ? (uintptr_t)ps : 4096;
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(page - 1);
    if (end <= start)
        return 0;
    /* Private memory: the next touch maps a zero page (or the file's page, for -mem-path).
     * Shared memory: a hole in the file or memfd, which is where the pages live. */
    if (madvise((void *)start, end - start, mem->shared ? MADV_REMOVE : MADV_DONTNEED) < 0)
        return 0;
    return (int64_t)(end - start);
}
