/*
 * The KVM API, and nothing else: every ioctl on /dev/kvm, the VM and the vCPUs lives here so the
 * rest of kemu does not depend on how the hypervisor is reached.
 */
#ifndef KEMU_CORE_KVM_H
#define KEMU_CORE_KVM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

/*
 * The VM's GSI routing table: the fixed irqchip routes of a PC (arch/x86/gsi.h: PIC and IOAPIC,
 * GSIs 0-23) plus MSI routes that irqfds use, allocated from GSI KVM_MSI_GSI_BASE upward.
 * KVM_SET_GSI_ROUTING replaces the whole table, so every commit sends both parts.
 * Pure bookkeeping (no ioctls, no locking) so it can be tested without KVM.
 */
#define KVM_MSI_GSI_BASE 24 /* first GSI past the IOAPIC's pins */

struct kvm_msi_route {
    bool used;
    uint64_t addr;
    uint32_t data;
};

struct kvm_gsi_table {
    unsigned limit;            /* max routes (and GSIs) KVM takes: KVM_MAX_IRQ_ROUTES */
    unsigned nr_msi;           /* MSI routes in use */
    unsigned cap;              /* slots in msi, grown on demand up to limit - KVM_MSI_GSI_BASE */
    struct kvm_msi_route *msi; /* one slot per GSI from KVM_MSI_GSI_BASE on */
};

/* limit: what KVM_CHECK_EXTENSION(KVM_CAP_IRQ_ROUTING) returned. Returns 0 or -1 (memory). */
int kvm_gsi_table_init(struct kvm_gsi_table *t, unsigned limit);
void kvm_gsi_table_destroy(struct kvm_gsi_table *t);
/* A free GSI now routed to addr/data, or -1 when the table (or KVM's limit) is full. */
int kvm_gsi_table_alloc(struct kvm_gsi_table *t, uint64_t addr, uint32_t data);
/* Re-point an allocated GSI; -1 when gsi is not an allocated MSI route. */
int kvm_gsi_table_set(struct kvm_gsi_table *t, int gsi, uint64_t addr, uint32_t data);
void kvm_gsi_table_free(struct kvm_gsi_table *t, int gsi);
/* The full table for KVM_SET_GSI_ROUTING in out (room for max): count, or 0 if max is short. */
unsigned kvm_gsi_table_entries(const struct kvm_gsi_table *t, struct kvm_irq_routing_entry *out,
                               unsigned max);

struct kvm {
    int sys_fd;   /* /dev/kvm */
    int vm_fd;    /* -1 when no VM exists */
    int run_size; /* size of each vCPU's shared kvm_run area */
    int max_vcpus;
    int max_vcpu_id;
    bool tsc_deadline; /* the LAPIC's TSC-deadline timer can be offered to the guest */
    bool pit;          /* set before kvm_create_vm: KVM's PIT too (kernel-irqchip=on) */
    struct kvm_cpuid2 *supported_cpuid;
    /* MSIs through irqfds (KVM_CAP_IRQ_ROUTING and KVM_CAP_IRQFD), decided at kvm_open; else
     * every MSI is a KVM_SIGNAL_MSI ioctl. */
    bool irqfd;
    bool trace_irq;             /* KEMU_TRACE_IRQ=1: log MSI routes and MSI ioctls */
    unsigned max_routes;        /* KVM_MAX_IRQ_ROUTES as KVM reports it */
    pthread_mutex_t route_lock; /* guards routes: vCPU threads change them, devices fire */
    struct kvm_gsi_table routes;
};

/* Open /dev/kvm and check the API version and the capabilities kemu relies on. */
int kvm_open(struct kvm *kvm, const char *path, struct error *err);
void kvm_close(struct kvm *kvm);

/*
 * Create a VM with the in-kernel irqchip (PIC, IOAPIC, LAPICs), and KVM's PIT if kvm->pit.
 * Called again after kvm_destroy_vm() to reset the machine.
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
/*
 * MSI through an irqfd: route a new GSI to addr/data and have KVM inject it whenever eventfd fd
 * is written, without kemu. Returns the GSI, or -1 (no irqfd support, routes exhausted, ioctl
 * failure): the caller then keeps using kvm_signal_msi. Safe from any thread.
 */
int kvm_irqfd_msi_add(struct kvm *kvm, int fd, uint64_t addr, uint32_t data);
/* Re-point the route of gsi at a new message: 0, or -1 (the route is unchanged). */
int kvm_irqfd_msi_update(struct kvm *kvm, int gsi, uint64_t addr, uint32_t data);
/* Detach fd from gsi and free the route. */
void kvm_irqfd_msi_remove(struct kvm *kvm, int gsi, int fd);
/* Signal eventfd fd when the guest writes len bytes at MMIO addr (assign) or stop (!assign). */
int kvm_ioeventfd(struct kvm *kvm, uint64_t addr, unsigned len, int fd, bool assign);
/* The same for writes of the value datamatch only (KVM_IOEVENTFD_FLAG_DATAMATCH): several
 * eventfds can share one address, as virtio-mmio's QueueNotify (one per queue index). Removal
 * names the same addr, len and datamatch. */
int kvm_ioeventfd_datamatch(struct kvm *kvm, uint64_t addr, unsigned len, uint64_t datamatch,
                            int fd, bool assign);

struct kvm_vcpu_fd {
    int fd;
    struct kvm_run *run;
};
int kvm_create_vcpu(struct kvm *kvm, unsigned long id, struct kvm_vcpu_fd *v, struct error *err);
void kvm_destroy_vcpu(struct kvm *kvm, struct kvm_vcpu_fd *v);

#endif
