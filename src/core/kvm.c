#include "core/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arch/x86/gsi.h"
#include "arch/x86/layout.h"

static const struct {
    int cap;
    const char *name;
} required_caps[] = {
    {KVM_CAP_IRQCHIP, "in-kernel irqchip"},     {KVM_CAP_USER_MEMORY, "user memory"},
    {KVM_CAP_SET_TSS_ADDR, "TSS address"},      {KVM_CAP_EXT_CPUID, "extended CPUID"},
    {KVM_CAP_IMMEDIATE_EXIT, "immediate exit"}, {KVM_CAP_SIGNAL_MSI, "MSI injection"},
    {KVM_CAP_IOEVENTFD, "ioeventfd"},
};

int kvm_open(struct kvm *kvm, const char *path, struct error *err)
{
    memset(kvm, 0, sizeof(*kvm));
    kvm->vm_fd = -1;
    pthread_mutex_init(&kvm->route_lock, NULL);
    kvm->sys_fd = open(path, O_RDWR | O_CLOEXEC);
    if (kvm->sys_fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return error_setf(err,
                              "%s: no such device; is the kvm module loaded "
                              "(modprobe kvm_intel or kvm_amd)?",
                              path);
        if (e == EACCES)
            return error_setf(err, "%s: permission denied; add the user to the 'kvm' group", path);
        return error_setf_errno(err, e, "%s", path);
    }
    int ver = ioctl(kvm->sys_fd, KVM_GET_API_VERSION, 0);
    if (ver != KVM_API_VERSION) {
        kvm_close(kvm);
        return error_setf(err, "%s: KVM API version %d, expected %d", path, ver, KVM_API_VERSION);
    }
    for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
        if (ioctl(kvm->sys_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
            kvm_close(kvm);
            return error_setf(err, "%s: KVM lacks a required capability: %s", path,
                              required_caps[i].name);
        }
    }
    kvm->run_size = ioctl(kvm->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (kvm->run_size <= 0) {
        kvm_close(kvm);
        return error_setf(err, "%s: cannot get the vCPU mmap size", path);
    }
    kvm->max_vcpus = ioctl(kvm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (kvm->max_vcpus <= 0)
        kvm->max_vcpus = ioctl(kvm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    if (kvm->max_vcpus <= 0)
        kvm->max_vcpus = 4;
    kvm->max_vcpu_id = ioctl(kvm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
    if (kvm->max_vcpu_id <= 0)
        kvm->max_vcpu_id = kvm->max_vcpus;

    kvm->tsc_deadline = ioctl(kvm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    /* KVM_CAP_IRQ_ROUTING answers with KVM_MAX_IRQ_ROUTES, the bound on routes and GSIs. */
    int routes = ioctl(kvm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING);
    if (routes < X86_PC_GSI_ROUTES) {
        kvm_close(kvm);
        return error_setf(err, "%s: KVM lacks a required capability: GSI routing", path);
    }
    kvm->max_routes = (unsigned)routes;
    kvm->irqfd = ioctl(kvm->sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) > 0;
    /* Its own variable: any KEMU_TRACE but "reset" also logs every exit (vm.c). */
    const char *trace = getenv("KEMU_TRACE_IRQ");
    kvm->trace_irq = trace && *trace && strcmp(trace, "0") != 0;
    /* The supported CPUID set; grow the buffer until the kernel is satisfied. */
    for (int n = 64; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
        if (!c) {
            kvm_close(kvm);
            return error_setf(err, "out of memory");
        }
        c->nent = n;
        if (ioctl(kvm->sys_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            kvm->supported_cpuid = c;
            break;
        }
        int e = errno;
        free(c);
        if (e != E2BIG) {
            kvm_close(kvm);
            return error_setf_errno(err, e, "%s: KVM_GET_SUPPORTED_CPUID", path);
        }
    }
    if (!kvm->supported_cpuid) {
        kvm_close(kvm);
        return error_setf(err, "%s: KVM_GET_SUPPORTED_CPUID: too many entries", path);
    }
    return 0;
}

void kvm_close(struct kvm *kvm)
{
    kvm_destroy_vm(kvm);
    if (kvm->sys_fd >= 0)
        close(kvm->sys_fd);
    kvm->sys_fd = -1;
    free(kvm->supported_cpuid);
    kvm->supported_cpuid = NULL;
    /* route_lock stays initialised: devices torn down after the VM may still ask to remove
     * their routes, which kvm_irqfd_msi_remove turns into no-ops. */
}

/* ---- GSI routing table ---------------------------------------------------------------- */

int kvm_gsi_table_init(struct kvm_gsi_table *t, unsigned limit)
{
    /* The slots grow with use: all of KVM's 4096 up front were 96 KiB of memory calloc()
     * cleared, resident in every run. */
    memset(t, 0, sizeof(*t));
    t->limit = limit;
    return 0;
}

void kvm_gsi_table_destroy(struct kvm_gsi_table *t)
{
    free(t->msi);
    memset(t, 0, sizeof(*t));
}

static struct kvm_msi_route *msi_slot(struct kvm_gsi_table *t, int gsi)
{
    if (gsi < KVM_MSI_GSI_BASE || (unsigned)(gsi - KVM_MSI_GSI_BASE) >= t->cap)
        return NULL;
    struct kvm_msi_route *m = &t->msi[gsi - KVM_MSI_GSI_BASE];
    return m->used ? m : NULL;
}

int kvm_gsi_table_alloc(struct kvm_gsi_table *t, uint64_t addr, uint32_t data)
{
    /* KVM bounds the number of entries as well as the GSI numbers. */
    if (t->limit <= KVM_MSI_GSI_BASE || X86_PC_GSI_ROUTES + t->nr_msi + 1 > t->limit)
        return -1;
    unsigned i = 0;
    while (i < t->cap && t->msi[i].used)
        i++;
    if (i == t->cap) {
        unsigned max = t->limit - KVM_MSI_GSI_BASE;
        if (t->cap == max)
            return -1;
        unsigned cap = t->cap ? t->cap * 2 : 64;
        cap = cap < max ? cap : max;
        struct kvm_msi_route *m = realloc(t->msi, cap * sizeof(*m));
        if (!m)
            return -1;
        memset(m + t->cap, 0, (cap - t->cap) * sizeof(*m));
        t->msi = m;
        t->cap = cap;
    }
    t->msi[i] = (struct kvm_msi_route){.used = true, .addr = addr, .data = data};
    t->nr_msi++;
    return (int)(i + KVM_MSI_GSI_BASE);
}

int kvm_gsi_table_set(struct kvm_gsi_table *t, int gsi, uint64_t addr, uint32_t data)
{
    struct kvm_msi_route *m = msi_slot(t, gsi);
    if (!m)
        return -1;
    m->addr = addr;
    m->data = data;
    return 0;
}

void kvm_gsi_table_free(struct kvm_gsi_table *t, int gsi)
{
    struct kvm_msi_route *m = msi_slot(t, gsi);
    if (!m)
        return;
    m->used = false;
    t->nr_msi--;
}

unsigned kvm_gsi_table_entries(const struct kvm_gsi_table *t, struct kvm_irq_routing_entry *out,
                               unsigned max)
{
    if (max < X86_PC_GSI_ROUTES + t->nr_msi)
        return 0;
    unsigned n = x86_pc_gsi_routing(out, max);
    for (unsigned i = 0; i < t->cap; i++) {
        const struct kvm_msi_route *m = &t->msi[i];
        if (!m->used)
            continue;
        memset(&out[n], 0, sizeof(out[n]));
        out[n].gsi = i + KVM_MSI_GSI_BASE;
        out[n].type = KVM_IRQ_ROUTING_MSI;
        out[n].u.msi.address_lo = (uint32_t)m->addr;
        out[n].u.msi.address_hi = (uint32_t)(m->addr >> 32);
        out[n].u.msi.data = m->data;
        n++;
    }
    return n;
}

/* Hand the whole table to KVM (route_lock held). 0, or -1 with errno. */
static int commit_routes(struct kvm *kvm)
{
    unsigned max = X86_PC_GSI_ROUTES + kvm->routes.nr_msi;
    struct kvm_irq_routing *rt = calloc(1, sizeof(*rt) + max * sizeof(rt->entries[0]));
    if (!rt) {
        errno = ENOMEM;
        return -1;
    }
    rt->nr = kvm_gsi_table_entries(&kvm->routes, rt->entries, max);
    int r = ioctl(kvm->vm_fd, KVM_SET_GSI_ROUTING, rt);
    int e = errno;
    free(rt);
    errno = e;
    return r < 0 ? -1 : 0;
}

static int irqfd(struct kvm *kvm, int fd, int gsi, bool assign)
{
    struct kvm_irqfd f = {
        .fd = (uint32_t)fd, .gsi = (uint32_t)gsi, .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN};
    return ioctl(kvm->vm_fd, KVM_IRQFD, &f);
}

int kvm_irqfd_msi_add(struct kvm *kvm, int fd, uint64_t addr, uint32_t data)
{
    if (!kvm->irqfd)
        return -1;
    pthread_mutex_lock(&kvm->route_lock);
    int gsi = kvm->vm_fd < 0 ? -1 : kvm_gsi_table_alloc(&kvm->routes, addr, data);
    if (gsi >= 0 && (commit_routes(kvm) < 0 || irqfd(kvm, fd, gsi, true) < 0)) {
        int e = errno;
        kvm_gsi_table_free(&kvm->routes, gsi);
        (void)commit_routes(kvm);
        if (kvm->trace_irq)
            fprintf(stderr, "kemu: irqfd: cannot route GSI %d: %s\n", gsi, strerror(e));
        gsi = -1;
    }
    if (kvm->trace_irq)
        fprintf(stderr, "kemu: irqfd: add gsi %d addr 0x%llx data 0x%x (%u MSI routes)\n", gsi,
                (unsigned long long)addr, data, kvm->routes.nr_msi);
    pthread_mutex_unlock(&kvm->route_lock);
    return gsi;
}

int kvm_irqfd_msi_update(struct kvm *kvm, int gsi, uint64_t addr, uint32_t data)
{
    pthread_mutex_lock(&kvm->route_lock);
    int r = -1;
    struct kvm_msi_route *m = kvm->vm_fd < 0 ? NULL : msi_slot(&kvm->routes, gsi);
    if (m) {
        struct kvm_msi_route old = *m;
        kvm_gsi_table_set(&kvm->routes, gsi, addr, data);
        r = commit_routes(kvm);
        if (r < 0)
            *m = old;
    }
    if (kvm->trace_irq)
        fprintf(stderr, "kemu: irqfd: update gsi %d addr 0x%llx data 0x%x: %s\n", gsi,
                (unsigned long long)addr, data, r < 0 ? "failed" : "ok");
    pthread_mutex_unlock(&kvm->route_lock);
    return r;
}

void kvm_irqfd_msi_remove(struct kvm *kvm, int gsi, int fd)
{
    pthread_mutex_lock(&kvm->route_lock);
    if (kvm->vm_fd >= 0 && msi_slot(&kvm->routes, gsi)) {
        (void)irqfd(kvm, fd, gsi, false);
        kvm_gsi_table_free(&kvm->routes, gsi);
        /* A stale route would be harmless (no irqfd uses it) but would count against the
         * limit in KVM's copy only; keep KVM's table equal to ours. */
        (void)commit_routes(kvm);
        if (kvm->trace_irq)
            fprintf(stderr, "kemu: irqfd: remove gsi %d (%u MSI routes)\n", gsi,
                    kvm->routes.nr_msi);
    }
    pthread_mutex_unlock(&kvm->route_lock);
}

int kvm_create_vm(struct kvm *kvm, struct error *err)
{
    int fd;
    do {
        fd = ioctl(kvm->sys_fd, KVM_CREATE_VM, 0);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return error_setf_errno(err, errno, "KVM_CREATE_VM");
    kvm->vm_fd = fd;
    if (ioctl(fd, KVM_SET_TSS_ADDR, X86_KVM_TSS_ADDR) < 0)
        goto fail;
    uint64_t idmap = X86_KVM_IDENTITY_MAP_ADDR;
    if (ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        goto fail;
    if (ioctl(fd, KVM_CREATE_IRQCHIP, 0) < 0)
        goto fail;
    /* KVM's default routing puts GSI 0 on IOAPIC pin 0; a PC (and our MADT) has the PIT on
     * pin 2. Route as a PC does, or the guest gets no timer ticks through the IOAPIC. A new VM
     * (also after a reset) starts with no MSI routes. */
    pthread_mutex_lock(&kvm->route_lock);
    kvm_gsi_table_destroy(&kvm->routes);
    int r = kvm_gsi_table_init(&kvm->routes, kvm->max_routes);
    if (r == 0)
        r = commit_routes(kvm);
    else
        errno = ENOMEM;
    pthread_mutex_unlock(&kvm->route_lock);
    if (r < 0)
        goto fail;
    /* The PIT is a kemu device (hw/pit.c says why) unless kernel-irqchip=on asks for KVM's,
     * whose speaker-port dummy keeps port 0x61 reads (PIT calibration) in the kernel. */
    if (kvm->pit) {
        struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
        if (ioctl(fd, KVM_CREATE_PIT2, &pit) < 0)
            goto fail;
    }
    return 0;
fail:;
    int e = errno;
    kvm_destroy_vm(kvm);
    return error_setf_errno(err, e, "cannot set up the KVM virtual machine");
}

void kvm_destroy_vm(struct kvm *kvm)
{
    /* The VM's irqfds and routes go with its fd. */
    pthread_mutex_lock(&kvm->route_lock);
    if (kvm->vm_fd >= 0)
        close(kvm->vm_fd);
    kvm->vm_fd = -1;
    kvm_gsi_table_destroy(&kvm->routes);
    pthread_mutex_unlock(&kvm->route_lock);
}

int kvm_set_memory(struct kvm *kvm, uint32_t slot, uint64_t gpa, uint64_t size, void *hva,
                   struct error *err)
{
    struct kvm_userspace_memory_region r = {
        .slot = slot,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uintptr_t)hva,
    };
    if (ioctl(kvm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        return error_setf_errno(err, errno, "KVM_SET_USER_MEMORY_REGION(0x%llx+0x%llx)",
                                (unsigned long long)gpa, (unsigned long long)size);
    return 0;
}

int kvm_irq_line(struct kvm *kvm, unsigned gsi, int level)
{
    struct kvm_irq_level l = {.irq = gsi, .level = level};
    return ioctl(kvm->vm_fd, KVM_IRQ_LINE, &l);
}

int kvm_get_clock(struct kvm *kvm, uint64_t *ns)
{
    struct kvm_clock_data c = {0};
    if (ioctl(kvm->vm_fd, KVM_GET_CLOCK, &c) < 0)
        return -1;
    *ns = c.clock;
    return 0;
}

int kvm_set_clock(struct kvm *kvm, uint64_t ns)
{
    struct kvm_clock_data c = {.clock = ns};
    return ioctl(kvm->vm_fd, KVM_SET_CLOCK, &c);
}

void kvm_vcpu_clock_paused(int vcpu_fd)
{
    (void)ioctl(vcpu_fd, KVM_KVMCLOCK_CTRL, 0); /* EINVAL when the guest has no kvmclock */
}

int kvm_signal_msi(struct kvm *kvm, uint64_t addr, uint32_t data)
{
    struct kvm_msi m = {
        .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32), .data = data};
    if (kvm->trace_irq)
        fprintf(stderr, "kemu: irq: KVM_SIGNAL_MSI addr 0x%llx data 0x%x\n",
                (unsigned long long)addr, data);
    return ioctl(kvm->vm_fd, KVM_SIGNAL_MSI, &m);
}

int kvm_ioeventfd(struct kvm *kvm, uint64_t addr, unsigned len, int fd, bool assign)
{
    struct kvm_ioeventfd e = {
        .addr = addr, .len = len, .fd = fd, .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN};
    return ioctl(kvm->vm_fd, KVM_IOEVENTFD, &e);
}

int kvm_ioeventfd_datamatch(struct kvm *kvm, uint64_t addr, unsigned len, uint64_t datamatch,
                            int fd, bool assign)
{
    struct kvm_ioeventfd e = {.datamatch = datamatch,
                              .addr = addr,
                              .len = len,
                              .fd = fd,
                              .flags = KVM_IOEVENTFD_FLAG_DATAMATCH |
                                       (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN)};
    return ioctl(kvm->vm_fd, KVM_IOEVENTFD, &e);
}

int kvm_create_vcpu(struct kvm *kvm, unsigned long id, struct kvm_vcpu_fd *v, struct error *err)
{
    v->fd = ioctl(kvm->vm_fd, KVM_CREATE_VCPU, id);
    if (v->fd < 0)
        return error_setf_errno(err, errno, "KVM_CREATE_VCPU(%lu)", id);
    v->run = mmap(NULL, kvm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        int e = errno;
        close(v->fd);
        v->fd = -1;
        v->run = NULL;
        return error_setf_errno(err, e, "mmap of vCPU %lu", id);
    }
    return 0;
}

void kvm_destroy_vcpu(struct kvm *kvm, struct kvm_vcpu_fd *v)
{
    if (v->run)
        munmap(v->run, kvm->run_size);
    if (v->fd >= 0)
        close(v->fd);
    v->run = NULL;
    v->fd = -1;
}
