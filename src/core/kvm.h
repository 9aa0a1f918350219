/*
 * The KVM API, and nothing else: every ioctl on /dev/kvm, the VM and the vCPUs lives here so the
 * rest of kemu does not depend on how the hypervisor is reached.
 */
#ifndef KEMU_CORE_KVM_H
#define KEMU_CORE_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

struct kvm {
    int sys_fd;   /* /dev/kvm */
    int vm_fd;    /* -1 when no VM exists */
    int run_size; /* size of each vCPU's shared kvm_run area */
    int max_vcpus;
    int max_vcpu_id;
    bool tsc_deadline; /* the LAPIC's TSC-deadline timer can be offered to the guest */
    struct kvm_cpuid2 *supported_cpuid;
};

/* Open /dev/kvm and check the API version and the capabilities kemu relies on. */
int kvm_open(struct kvm *kvm, const char *path, struct error *err);
void kvm_close(struct kvm *kvm);

/*
 * Create a VM with the in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT. Called again after
 * kvm_destroy_vm() to reset the machine.
 */
int kvm_create_vm(struct kvm *kvm, struct error *err);
void kvm_destroy_vm(struct kvm *kvm);
int kvm_set_memory(struct kvm *kvm, uint32_t slot, uint64_t gpa, uint64_t size, void *hva,
                   struct error *err);
int kvm_irq_line(struct kvm *kvm, unsigned gsi, int level);
/* The guest's kvmclock: read at pause and written back at resume, so a paused guest's clock
 * stands still (QEMU's stop/cont behaviour). */
int kvm_get_clock(struct kvm *kvm, uint64_t *ns);
int kvm_set_clock(struct kvm *kvm, uint64_t ns);
/* Tell the guest's kvmclock it was paused (avoids soft-lockup warnings); errors ignored. */
void kvm_vcpu_clock_paused(int vcpu_fd);
/* Inject an MSI (address/data as a device would write them). Safe from any thread. */
int kvm_signal_msi(struct kvm *kvm, uint64_t addr, uint32_t data);
/* Signal eventfd fd when the guest writes len bytes at MMIO addr (assign) or stop (!assign). */
int kvm_ioeventfd(struct kvm *kvm, uint64_t addr, unsigned len, int fd, bool assign);

struct kvm_vcpu_fd {
    int fd;
    struct kvm_run *run;
};
int kvm_create_vcpu(struct kvm *kvm, unsigned long id, struct kvm_vcpu_fd *v, struct error *err);
void kvm_destroy_vcpu(struct kvm *kvm, struct kvm_vcpu_fd *v);

#endif
