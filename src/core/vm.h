/*
 * A virtual machine: owns KVM, guest memory, the address buses, the vCPU threads and the
 * lifecycle. A board (arch/x86/pc.c) fills it with devices; devices reach the VM only through the
 * bus ranges they register, the irq lines they are given and the request functions below.
 */
#ifndef KEMU_CORE_VM_H
#define KEMU_CORE_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/error.h"
#include "core/eventloop.h"
#include "core/irq.h"
#include "core/kvm.h"
#include "core/memory.h"

struct vm;

struct vcpu {
    struct vm *vm;
    unsigned index;   /* 0..nr_vcpus-1; 0 is the boot processor */
    uint32_t apic_id; /* also the KVM vCPU id */
    struct kvm_vcpu_fd kfd;
    pthread_t thread;
    bool thread_started;
    int tid;
};

/* What a vCPU thread or a device asks the main loop to do. */
enum vm_request {
    VM_REQ_NONE = 0,
    VM_REQ_RESET,    /* guest reboot: keyboard controller, triple fault */
    VM_REQ_SHUTDOWN, /* debug-exit: exit with vm->exit_status */
    VM_REQ_POWEROFF, /* guest power-off (ACPI S5): exit 0, or stop under -no-shutdown */
    VM_REQ_QUIT,     /* host side asked to quit (Ctrl-A x, signal) */
    VM_REQ_ERROR,    /* fatal vCPU error already reported */
};

struct vm_board_ops {
    /* (Re)load the boot image and set up the boot vCPU's registers and each vCPU's CPUID. */
    int (*setup_vcpu)(struct vm *vm, struct vcpu *vcpu, struct error *err);
    /* Called on the main thread with all vCPUs stopped, before the VM is rebuilt for reset. */
    void (*reset_devices)(struct vm *vm);
    /* Load images into guest memory; called at start and after each reset. */
    int (*load)(struct vm *vm, struct error *err);
};

struct vm {
    struct kvm kvm;
    struct guest_mem mem;
    struct bus pio, mmio;
    struct eventloop *loop; /* the main loop, owned by the caller */

    struct vcpu *vcpus;
    unsigned nr_vcpus;

    const struct vm_board_ops *board;
    void *board_data;

    bool no_reboot;
    bool no_shutdown; /* a guest power-off stops the vCPUs and kemu waits to be told to quit */
    atomic_int request;   /* enum vm_request, first one wins until handled */
    atomic_bool stopping; /* vCPU threads must leave KVM_RUN */
    int exit_status;      /* process exit status for VM_REQ_SHUTDOWN / ERROR */
    int wake_fd;          /* eventfd: wakes the main loop when a request is posted */
    unsigned resets;      /* how many times the guest was reset */
};

int vm_init(struct vm *vm, struct eventloop *loop, unsigned nr_vcpus, const uint32_t *apic_ids,
            struct error *err);
void vm_destroy(struct vm *vm);

/* Create the KVM VM, map memory, load images, create vCPUs (KVM side) and start their threads. */
int vm_start(struct vm *vm, struct error *err);
/* Run the main event loop until the VM ends. Returns the process exit status. */
int vm_run(struct vm *vm);

/* Post a request from any thread (vCPU, device, signal-safe path excluded). */
void vm_request(struct vm *vm, enum vm_request req, int exit_status);

/* An interrupt line into the in-kernel irqchip (ISA IRQs 0-15 are GSIs 0-15). */
struct irq_line vm_irq_line(struct vm *vm, unsigned gsi);

#endif
