/* Unit tests of the core: address buses, the checked guest-memory accessor, error messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "arch/x86/gsi.h"
#include "core/bus.h"
#include "core/error.h"
#include "core/kvm.h"
#include "core/memory.h"
#include "core/os.h"

struct fake_dev {
    uint64_t last_off, last_val;
    unsigned last_size, writes;
};

static uint64_t fake_read(void *opaque, uint64_t off, unsigned size)
{
    return 0x1000 + off;
}

static void fake_write(void *opaque, uint64_t off, unsigned size, uint64_t v)
{
    struct fake_dev *d = opaque;
    d->last_off = off;
    d->last_val = v;
    d->last_size = size;
    d->writes++;
}

static const struct bus_ops fake_ops = {fake_read, fake_write};

static void bus_dispatches_by_offset(void **state)
{
    struct bus b;
    struct fake_dev d1 = {0}, d2 = {0};
    struct error err = {0};
    bus_init(&b, "pio");
    assert_int_equal(bus_register(&b, 0x3f8, 8, &fake_ops, &d1, "com1", &err), 0);
    assert_int_equal(bus_register(&b, 0x60, 1, &fake_ops, &d2, "kbd", &err), 0);
    uint64_t v;
    assert_true(bus_read(&b, 0x3fd, 1, &v));
    assert_int_equal(v, 0x1005);
    assert_true(bus_write(&b, 0x3f9, 1, 7));
    assert_int_equal(d1.last_off, 1);
    assert_int_equal(d1.last_val, 7);
    assert_true(bus_write(&b, 0x60, 1, 0xfe));
    assert_int_equal(d2.writes, 1);
    /* Unmapped: reads float high, writes are dropped. */
    assert_false(bus_read(&b, 0x400, 2, &v));
    assert_int_equal(v, 0xffff);
    assert_false(bus_read(&b, 0x3f7, 1, &v));
    assert_false(bus_write(&b, 0x400, 1, 1));
    bus_destroy(&b);
}

static void bus_rejects_overlaps_and_bad_ranges(void **state)
{
    struct bus b;
    struct fake_dev d = {0};
    bus_init(&b, "mmio");
    struct error err = {0};
    assert_int_equal(bus_register(&b, 0x1000, 0x100, &fake_ops, &d, "a", &err), 0);
    struct error e1 = {0}, e2 = {0}, e3 = {0}, e4 = {0};
    assert_int_equal(bus_register(&b, 0x10ff, 1, &fake_ops, &d, "b", &e1), -1);
    assert_non_null(strstr(e1.msg, "overlaps a"));
    assert_int_equal(bus_register(&b, 0xf00, 0x101, &fake_ops, &d, "c", &e2), -1);
    assert_int_equal(bus_register(&b, 0x2000, 0, &fake_ops, &d, "d", &e3), -1);
    assert_int_equal(bus_register(&b, UINT64_MAX - 1, 4, &fake_ops, &d, "e", &e4), -1);
    /* Adjacent ranges are fine, and many registrations grow the table. */
    for (unsigned i = 0; i < 100; i++)
        assert_int_equal(bus_register(&b, 0x1100 + i * 4, 4, &fake_ops, &d, "f", &err), 0);
    assert_non_null(bus_find(&b, 0x1100 + 99 * 4 + 3));
    assert_null(bus_find(&b, 0x1100 + 100 * 4));
    bus_destroy(&b);
}

static void memory_bounds_are_checked(void **state)
{
    static uint8_t buf[4096];
    struct guest_mem m;
    guest_mem_init_buffer(&m, buf, sizeof(buf));
    assert_ptr_equal(guest_mem_ptr(&m, 0, 4096), buf);
    assert_ptr_equal(guest_mem_ptr(&m, 4095, 1), buf + 4095);
    assert_ptr_equal(guest_mem_ptr(&m, 4096, 0), buf + 4096);
    assert_null(guest_mem_ptr(&m, 4095, 2));
    assert_null(guest_mem_ptr(&m, 4097, 0));
    assert_null(guest_mem_ptr(&m, UINT64_MAX, 2));
    assert_null(guest_mem_ptr(&m, 16, UINT64_MAX));
    uint32_t v = 0x12345678;
    assert_int_equal(guest_mem_write(&m, 100, &v, 4), 0);
    assert_int_equal(guest_mem_write(&m, 4094, &v, 4), -1);
    uint32_t r = 0;
    assert_int_equal(guest_mem_read(&m, 100, &r, 4), 0);
    assert_int_equal(r, v);
}

static void memory_x86_layout_splits_at_the_hole(void **state)
{
    struct guest_mem m;
    struct error err = {0};
    assert_int_equal(guest_mem_init_x86(&m, 4ULL << 30, 3ULL << 30, NULL, &err), 0);
    assert_int_equal(m.nr, 2);
    assert_int_equal(m.regions[0].size, 3ULL << 30);
    assert_int_equal(m.regions[1].gpa, 4ULL << 30);
    assert_int_equal(m.regions[1].size, 1ULL << 30);
    /* The hole itself is not RAM, nor is a range crossing into it. */
    assert_null(guest_mem_ptr(&m, 3ULL << 30, 1));
    assert_null(guest_mem_ptr(&m, (3ULL << 30) - 1, 2));
    assert_non_null(guest_mem_ptr(&m, (4ULL << 30) + 5, 4096));
    guest_mem_destroy(&m);
    assert_int_equal(guest_mem_init_x86(&m, 512ULL << 20, 3ULL << 30, NULL, &err), 0);
    assert_int_equal(m.nr, 1);
    guest_mem_destroy(&m);
    struct error e = {0};
    assert_int_equal(guest_mem_init_x86(&m, 0, 3ULL << 30, NULL, &e), -1);
    assert_true(e.set);
}

/* How many of the mapping's pages are resident (mincore). */
static size_t resident_pages(const struct guest_mem *m)
{
    size_t n = m->mapping_size / 4096, count = 0;
    unsigned char *v = malloc(n);
    assert_non_null(v);
    assert_int_equal(mincore(m->mapping, m->mapping_size, v), 0);
    for (size_t i = 0; i < n; i++)
        count += v[i] & 1;
    free(v);
    return count;
}

/* The VmFlags line of /proc/self/smaps for the mapping that starts at p. */
static void vm_flags(const void *p, char *out, size_t size)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    bool ours = false;
    out[0] = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long start, end;
        /* A mapping's first line is "start-end perms ..."; its "Key: value" lines follow. */
        if (sscanf(line, "%lx-%lx", &start, &end) == 2)
            ours = start == (unsigned long)p;
        else if (ours && !strncmp(line, "VmFlags:", 8)) {
            size_t n = strnlen(line + 8, size - 1);
            memcpy(out, line + 8, n);
            out[n] = 0;
            break;
        }
    }
    fclose(f);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/kemu-test-mem.XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static int count_entries(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d", &n), 1);
    pclose(f);
    return n;
}

static void memory_backed_by_a_new_file_in_a_directory(void **state)
{
    char *dir = make_tmpdir();
    struct guest_mem m;
    struct error err = {0};
    struct guest_mem_backing b = {.path = dir};
    assert_int_equal(guest_mem_init_x86(&m, 8 << 20, 3ULL << 30, &b, &err), 0);
    assert_true(m.file_backed);
    assert_int_equal((uintptr_t)m.mapping % GUEST_MEM_ALIGN, 0);
    /* Unlinked at once: nothing is left behind, even if kemu is killed. */
    assert_int_equal(count_entries(dir), 0);
    uint32_t v = 0x12345678, r = 0;
    assert_int_equal(guest_mem_write(&m, (8 << 20) - 4, &v, 4), 0);
    assert_int_equal(guest_mem_read(&m, (8 << 20) - 4, &r, 4), 0);
    assert_int_equal(r, v);
    guest_mem_destroy(&m);
    rmdir(dir);
    free(dir);
}

static void memory_backed_by_a_named_file(void **state)
{
    char *dir = make_tmpdir();
    char path[256];
    snprintf(path, sizeof(path), "%s/ram", dir);
    struct guest_mem m;
    struct error err = {0};
    struct guest_mem_backing b = {.path = path};
    /* Created, sized, kept; the guest's writes stay private. */
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &b, &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 4 << 20);
    uint8_t pattern[4096];
    memset(pattern, 0x5a, sizeof(pattern));
    assert_int_equal(guest_mem_write(&m, 8192, pattern, sizeof(pattern)), 0);
    guest_mem_destroy(&m);
    FILE *f = fopen(path, "rb");
    uint8_t back[4096];
    assert_non_null(f);
    assert_int_equal(fseek(f, 8192, SEEK_SET), 0);
    assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(back));
    fclose(f);
    assert_int_equal(back[0], 0);
    assert_int_equal(back[4095], 0);

    /* An existing file's contents are the RAM's first contents. */
    f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 8192, SEEK_SET), 0);
    assert_int_equal(fwrite(pattern, 1, sizeof(pattern), f), sizeof(pattern));
    fclose(f);
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &b, &err), 0);
    assert_int_equal(guest_mem_read(&m, 8192, back, sizeof(back)), 0);
    assert_memory_equal(back, pattern, sizeof(back));
    guest_mem_destroy(&m);

    /* A non-empty file too small for the RAM is refused and left as it was. */
    struct error e = {0};
    assert_int_equal(guest_mem_init_x86(&m, 8 << 20, 3ULL << 30, &b, &e), -1);
    assert_non_null(strstr(e.msg, "less than"));
    assert_non_null(strstr(e.msg, path));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 4 << 20);
    unlink(path);

    /* Neither a file nor a directory; a directory that does not exist. */
    struct error e2 = {0}, e3 = {0};
    b.path = "/dev/null";
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &b, &e2), -1);
    assert_non_null(strstr(e2.msg, "not a regular file"));
    snprintf(path, sizeof(path), "%s/missing/ram", dir);
    b.path = path;
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &b, &e3), -1);
    assert_non_null(strstr(e3.msg, "cannot open"));
    assert_non_null(strstr(e3.msg, "No such file or directory"));
    rmdir(dir);
    free(dir);
}

static void memory_prealloc_touches_every_page_and_reset_keeps_them(void **state)
{
    struct guest_mem m;
    struct error err = {0};
    assert_int_equal(guest_mem_init_x86(&m, 16 << 20, 3ULL << 30, NULL, &err), 0);
    assert_int_equal(resident_pages(&m), 0);
    /* Reset hands back what an ordinary guest touched... */
    uint32_t v = 1;
    assert_int_equal(guest_mem_write(&m, 1 << 20, &v, 4), 0);
    assert_true(resident_pages(&m) >= 1);
    guest_mem_reset(&m);
    assert_int_equal(resident_pages(&m), 0);
    /* ...but not preallocated memory, in parts on several threads. */
    assert_int_equal(guest_mem_prealloc(&m, 3, &err), 0);
    assert_true(m.preallocated);
    assert_int_equal(resident_pages(&m), m.mapping_size / 4096);
    guest_mem_reset(&m);
    assert_int_equal(resident_pages(&m), m.mapping_size / 4096);
    guest_mem_destroy(&m);

    /* File-backed RAM too (a private mapping: the copies are the guest's). */
    char *dir = make_tmpdir();
    struct guest_mem_backing b = {.path = dir};
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &b, &err), 0);
    assert_int_equal(guest_mem_prealloc(&m, 64, &err), 0);
    assert_int_equal(resident_pages(&m), m.mapping_size / 4096);
    guest_mem_destroy(&m);
    rmdir(dir);
    free(dir);
}

static void memory_shared_file_and_memfd(void **state)
{
    char *dir = make_tmpdir();
    char path[256];
    snprintf(path, sizeof(path), "%s/shared", dir);
    struct guest_mem m;
    struct error err = {0};
    char flags[256];
    /* share=on: the guest's writes reach the file. */
    struct guest_mem_backing b = {.path = path, .share = true};
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &b, &err), 0);
    assert_true(m.shared);
    vm_flags(m.mapping, flags, sizeof(flags));
    assert_non_null(strstr(flags, " sh"));
    uint8_t pattern[4096], back[4096];
    memset(pattern, 0xa5, sizeof(pattern));
    assert_int_equal(guest_mem_write(&m, 3 << 20, pattern, sizeof(pattern)), 0);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 3 << 20, SEEK_SET), 0);
    assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(back));
    fclose(f);
    assert_memory_equal(back, pattern, sizeof(back));
    /* A balloon's page goes back as a hole in the file: zeros there, and in the guest. */
    assert_int_equal(guest_mem_discard(&m, 3 << 20, 4096), 4096);
    assert_int_equal(guest_mem_read(&m, 3 << 20, back, sizeof(back)), 0);
    assert_int_equal(back[0], 0);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 3 << 20, SEEK_SET), 0);
    assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(back));
    fclose(f);
    assert_int_equal(back[4095], 0);
    /* Reset keeps shared RAM: it is the file's. */
    assert_int_equal(guest_mem_write(&m, 1 << 20, pattern, sizeof(pattern)), 0);
    guest_mem_reset(&m);
    assert_int_equal(guest_mem_read(&m, 1 << 20, back, sizeof(back)), 0);
    assert_memory_equal(back, pattern, sizeof(back));
    guest_mem_destroy(&m);
    unlink(path);
    rmdir(dir);
    free(dir);

    /* A memfd, shared (QEMU's default for memory-backend-memfd) and sealed. */
    struct guest_mem_backing mb = {.memfd = true, .share = true, .seal = true};
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &mb, &err), 0);
    assert_true(m.file_backed && m.shared);
    assert_int_equal(guest_mem_write(&m, 0, pattern, sizeof(pattern)), 0);
    assert_int_equal(guest_mem_read(&m, 0, back, sizeof(back)), 0);
    assert_memory_equal(back, pattern, sizeof(back));
    guest_mem_destroy(&m);
    /* Anonymous shared RAM (memory-backend-ram,share=on) is a memfd too. */
    struct guest_mem_backing sb = {.share = true};
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &sb, &err), 0);
    vm_flags(m.mapping, flags, sizeof(flags));
    assert_non_null(strstr(flags, " sh"));
    guest_mem_destroy(&m);
    /* Not a power of two. */
    struct error e = {0};
    struct guest_mem_backing hb = {.memfd = true, .hugetlb = true, .hugetlbsize = 3 << 20};
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &hb, &e), -1);
    assert_non_null(strstr(e.msg, "power of two"));
}

static void memory_merge_and_dump_flags(void **state)
{
    struct guest_mem m;
    struct error err = {0};
    char flags[256];
    struct guest_mem_backing b = {.no_merge = true, .no_dump = true};
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, &b, &err), 0);
    vm_flags(m.mapping, flags, sizeof(flags));
    assert_non_null(strstr(flags, " dd"));
    assert_null(strstr(flags, " mg"));
    guest_mem_destroy(&m);
    assert_int_equal(guest_mem_init_x86(&m, 4 << 20, 3ULL << 30, NULL, &err), 0);
    vm_flags(m.mapping, flags, sizeof(flags));
    assert_null(strstr(flags, " dd"));
    /* KSM's flag, where the kernel has KSM. */
    if (access("/sys/kernel/mm/ksm", F_OK) == 0)
        assert_non_null(strstr(flags, " mg"));
    guest_mem_destroy(&m);
}

static void errors_keep_the_first_reason_and_take_prefixes(void **state)
{
    struct error e = {0};
    assert_int_equal(error_setf(&e, "inner %d", 1), -1);
    error_setf(&e, "outer");
    assert_string_equal(e.msg, "inner 1");
    error_prefix(&e, "-drive %s: ", "x.img");
    assert_string_equal(e.msg, "-drive x.img: inner 1");
    struct error e2 = {0};
    error_setf_errno(&e2, 2, "open %s", "f");
    assert_string_equal(e2.msg, "open f: No such file or directory");
    /* A NULL error is allowed (callers that do not care). */
    assert_int_equal(error_setf(NULL, "ignored"), -1);
}

/* ---- GSI routing table (what kvm.c hands to KVM_SET_GSI_ROUTING) ---- */

static const struct kvm_irq_routing_entry *find_route(const struct kvm_irq_routing_entry *e,
                                                      unsigned n, unsigned gsi, unsigned type,
                                                      unsigned chip)
{
    for (unsigned i = 0; i < n; i++)
        if (e[i].gsi == gsi && e[i].type == type &&
            (type != KVM_IRQ_ROUTING_IRQCHIP || e[i].u.irqchip.irqchip == chip))
            return &e[i];
    return NULL;
}

static void gsi_table_keeps_irqchip_routes_and_adds_msi(void **state)
{
    struct kvm_gsi_table t;
    struct kvm_irq_routing_entry out[64];
    assert_int_equal(kvm_gsi_table_init(&t, 64), 0);
    /* Empty: only the PC's irqchip routes, with the serial port's GSI 4 on PIC and IOAPIC,
     * the PIT's GSI 0 on IOAPIC pin 2 and the PCI GSIs 16-23 on the IOAPIC. */
    unsigned n = kvm_gsi_table_entries(&t, out, 64);
    assert_int_equal(n, X86_PC_GSI_ROUTES);
    assert_non_null(find_route(out, n, 4, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_PIC_MASTER));
    const struct kvm_irq_routing_entry *r =
        find_route(out, n, 4, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC);
    assert_non_null(r);
    assert_int_equal(r->u.irqchip.pin, 4);
    r = find_route(out, n, 0, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC);
    assert_non_null(r);
    assert_int_equal(r->u.irqchip.pin, 2);
    for (unsigned g = 16; g < 24; g++)
        assert_non_null(find_route(out, n, g, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC));

    /* MSI routes start past the IOAPIC; KVM's limit counts entries, so 64 - 38 fit. */
    int first = kvm_gsi_table_alloc(&t, 0x1fee01000ULL, 0x4041);
    assert_int_equal(first, KVM_MSI_GSI_BASE);
    unsigned got = 1;
    while (kvm_gsi_table_alloc(&t, 0xfee00000, got) >= 0)
        got++;
    assert_int_equal(got, 64 - X86_PC_GSI_ROUTES);
    assert_int_equal(t.nr_msi, got);
    n = kvm_gsi_table_entries(&t, out, 64);
    assert_int_equal(n, 64);
    assert_int_equal(kvm_gsi_table_entries(&t, out, 63), 0); /* no room: nothing written */
    r = find_route(out, n, KVM_MSI_GSI_BASE, KVM_IRQ_ROUTING_MSI, 0);
    assert_non_null(r);
    assert_int_equal(r->u.msi.address_lo, 0xfee01000);
    assert_int_equal(r->u.msi.address_hi, 1);
    assert_int_equal(r->u.msi.data, 0x4041);
    assert_non_null(find_route(out, n, 4, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC));

    /* Update and free: only allocated MSI routes; irqchip GSIs are never touched. */
    assert_int_equal(kvm_gsi_table_set(&t, 30, 0xfee02000, 7), 0);
    kvm_gsi_table_free(&t, 30);
    assert_int_equal(kvm_gsi_table_set(&t, 30, 0xfee02000, 7), -1);
    assert_int_equal(kvm_gsi_table_set(&t, 4, 0xfee02000, 7), -1);
    assert_int_equal(kvm_gsi_table_set(&t, 64, 0xfee02000, 7), -1);
    assert_int_equal(kvm_gsi_table_set(&t, -1, 0xfee02000, 7), -1);
    kvm_gsi_table_free(&t, 4);
    kvm_gsi_table_free(&t, 30); /* twice: no effect */
    assert_int_equal(t.nr_msi, got - 1);
    assert_int_equal(kvm_gsi_table_alloc(&t, 0xfee03000, 9), 30); /* the freed one again */
    assert_int_equal(kvm_gsi_table_alloc(&t, 0xfee03000, 9), -1);
    n = kvm_gsi_table_entries(&t, out, 64);
    r = find_route(out, n, 30, KVM_IRQ_ROUTING_MSI, 0);
    assert_non_null(r);
    assert_int_equal(r->u.msi.address_lo, 0xfee03000);
    assert_int_equal(r->u.msi.data, 9);
    kvm_gsi_table_destroy(&t);

    /* A KVM with room for the irqchip routes only: no MSI routes (callers fall back). */
    assert_int_equal(kvm_gsi_table_init(&t, X86_PC_GSI_ROUTES), 0);
    assert_int_equal(kvm_gsi_table_alloc(&t, 0xfee00000, 0), -1);
    assert_int_equal(kvm_gsi_table_entries(&t, out, 64), X86_PC_GSI_ROUTES);
    kvm_gsi_table_destroy(&t);
    assert_int_equal(kvm_gsi_table_init(&t, 16), 0);
    assert_int_equal(kvm_gsi_table_alloc(&t, 0xfee00000, 0), -1);
    kvm_gsi_table_destroy(&t);
}

/* HOST:PORT as QMP's tcp: sockets and guestfwd's tcp: targets give it. */
static void host_port_splits_at_the_last_colon(void **state)
{
    (void)state;
    char host[16], port[6];
    assert_int_equal(os_split_host_port("localhost:4444", host, sizeof(host), port, sizeof(port)),
                     0);
    assert_string_equal(host, "localhost");
    assert_string_equal(port, "4444");
    assert_int_equal(os_split_host_port("[::1]:80", host, sizeof(host), port, sizeof(port)), 0);
    assert_string_equal(host, "::1");
    assert_string_equal(port, "80");
    assert_int_equal(os_split_host_port(":22", host, sizeof(host), port, sizeof(port)), 0);
    assert_string_equal(host, "");
    assert_int_equal(os_split_host_port("[]:22", host, sizeof(host), port, sizeof(port)), 0);
    assert_string_equal(host, "");
    assert_int_equal(os_split_host_port("localhost", host, sizeof(host), port, sizeof(port)),
                     -EINVAL);
    assert_int_equal(os_split_host_port("localhost:", host, sizeof(host), port, sizeof(port)),
                     -EINVAL);
    assert_int_equal(
        os_split_host_port("a-very-long-host-name:1", host, sizeof(host), port, sizeof(port)),
        -ENAMETOOLONG);
    assert_int_equal(os_split_host_port("h:123456", host, sizeof(host), port, sizeof(port)),
                     -ENAMETOOLONG);
    /* 15 characters fit a 16-byte buffer, brackets not counted. */
    assert_int_equal(
        os_split_host_port("[123456789012345]:1", host, sizeof(host), port, sizeof(port)), 0);
    assert_string_equal(host, "123456789012345");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bus_dispatches_by_offset),
        cmocka_unit_test(bus_rejects_overlaps_and_bad_ranges),
        cmocka_unit_test(memory_bounds_are_checked),
        cmocka_unit_test(memory_x86_layout_splits_at_the_hole),
        cmocka_unit_test(memory_backed_by_a_new_file_in_a_directory),
        cmocka_unit_test(memory_backed_by_a_named_file),
        cmocka_unit_test(memory_prealloc_touches_every_page_and_reset_keeps_them),
        cmocka_unit_test(memory_shared_file_and_memfd),
        cmocka_unit_test(memory_merge_and_dump_flags),
        cmocka_unit_test(errors_keep_the_first_reason_and_take_prefixes),
        cmocka_unit_test(gsi_table_keeps_irqchip_routes_and_adds_msi),
        cmocka_unit_test(host_port_splits_at_the_last_colon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
