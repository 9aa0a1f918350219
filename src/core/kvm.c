#include "core/kvm.h"

#include <errno.h>
#include <fcntl.h>
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
    {KVM_CAP_IRQCHIP, "in-kernel irqchip"}, {KVM_CAP_USER_MEMORY, "user memory"},
    {KVM_CAP_SET_TSS_ADDR, "TSS address"},  {KVM_CAP_EXT_CPUID, "extended CPUID"},
    {KVM_CAP_PIT2, "in-kernel PIT"},        {KVM_CAP_IMMEDIATE_EXIT, "immediate exit"},
    {KVM_CAP_SIGNAL_MSI, "MSI injection"},  {KVM_CAP_IOEVENTFD, "ioeventfd"},
};

int kvm_open(struct kvm *kvm, const char *path, struct error *err)
{
    memset(kvm, 0, sizeof(*kvm));
    kvm->vm_fd = -1;
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
     * pin 2. Route as a PC does, or the guest gets no timer ticks through the IOAPIC. */
    struct kvm_irq_routing *rt =
        calloc(1, sizeof(*rt) + X86_PC_GSI_ROUTES * sizeof(struct kvm_irq_routing_entry));
    if (!rt) {
        errno = ENOMEM;
        goto fail;
    }
    rt->nr = x86_pc_gsi_routing(rt->entries, X86_PC_GSI_ROUTES);
    int r = ioctl(fd, KVM_SET_GSI_ROUTING, rt);
    free(rt);
    if (r < 0)
        goto fail;
    /* The speaker-port dummy lets port 0x61 reads (PIT calibration) stay in the kernel. */
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(fd, KVM_CREATE_PIT2, &pit) < 0)
        goto fail;
    return 0;
fail:;
    int e = errno;
    kvm_destroy_vm(kvm);
    return error_setf_errno(err, e, "cannot set up the KVM virtual machine");
}

void kvm_destroy_vm(struct kvm *kvm)
{
    if (kvm->vm_fd >= 0)
        close(kvm->vm_fd);
    kvm->vm_fd = -1;
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
    return ioctl(kvm->vm_fd, KVM_SIGNAL_MSI, &m);
}

int kvm_ioeventfd(struct kvm *kvm, uint64_t addr, unsigned len, int fd, bool assign)
{
    struct kvm_ioeventfd e = {
        .addr = addr, .len = len, .fd = fd, .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN};
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
