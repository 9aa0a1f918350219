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
    bool thread_started; /* the thread exists: it lives as long as the VM, parked when stopped */
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

/* QEMU's run states, as query-status names them. */
enum vm_runstate {
    VM_RUNSTATE_PRELAUNCH, /* -S: built, vCPUs not started yet */
    VM_RUNSTATE_RUNNING,
    VM_RUNSTATE_PAUSED,         /* stop */
    VM_RUNSTATE_SHUTDOWN,       /* the guest powered off under -no-shutdown */
    VM_RUNSTATE_INTERNAL_ERROR, /* a vCPU failed */
    VM_RUNSTATE_IO_ERROR,       /* a disk request failed under werror/rerror=stop; cont retries */
};

/* Things the monitor wants to hear about (main thread). */
struct vm_events {
    void (*reset)(void *opaque, bool guest);
    void (*shutdown)(void *opaque, bool guest, const char *reason);
    void (*stop)(void *opaque);
    void (*resume)(void *opaque);
    void *opaque;
};

struct vm_board_ops {
    /* (Re)load the boot image and set up the boot vCPU's registers and each vCPU's CPUID. */
    int (*setup_vcpu)(struct vm *vm, struct vcpu *vcpu, struct error *err);
    /* Called on the main thread with all vCPUs stopped, before the VM is rebuilt for reset. */
    void (*reset_devices)(struct vm *vm);
    /* Load images into guest memory; called at start and after each reset. */
    int (*load)(struct vm *vm, struct error *err);
    /* Optional: the VM clock runs again (cont); timers on it are re-armed. Main thread. */
    void (*clock_resumed)(struct vm *vm);
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
    bool no_shutdown;     /* a guest power-off stops the vCPUs and kemu waits to be told to quit */
    atomic_int request;   /* enum vm_request, first one wins until handled */
    atomic_bool stopping; /* vCPU threads must leave KVM_RUN */
    /*
     * vCPU threads are created once, with the VM, and park between runs, so their thread ids
     * are stable across -S, stop/cont and resets, as QEMU's (management tools pin them).
     */
    pthread_mutex_t vcpu_lock;
    pthread_cond_t vcpu_cond;  /* go/quit changed, or a thread parked */
    bool vcpus_go;             /* parked threads may run (vcpu_lock) */
    bool vcpus_quit;           /* threads exit (vcpu_lock) */
    unsigned vcpus_parked;     /* threads waiting for go (vcpu_lock) */
    int exit_status;           /* process exit status for VM_REQ_SHUTDOWN / ERROR */
    int wake_fd;               /* eventfd: wakes the main loop when a request is posted */
    unsigned resets;           /* how many times the guest was reset */
    enum vm_runstate runstate; /* main thread */
    bool start_paused;         /* -S: vm_start leaves the vCPUs stopped (prelaunch) */
    uint64_t paused_clock;     /* kvmclock when stopped */
    /* The VM clock (vm_clock_ns): CLOCK_MONOTONIC ns when it stopped (0: running), and the
     * total it has been stopped. Written on the main thread, read anywhere. */
    int64_t clock_stopped_at, clock_stopped_total;
    bool have_paused_clock;
    struct vm_events events; /* optional */
};

int vm_init(struct vm *vm, struct eventloop *loop, unsigned nr_vcpus, const uint32_t *apic_ids,
            struct error *err);
void vm_destroy(struct vm *vm);

/* Create the KVM VM, map memory, load images, create vCPUs (KVM side) and start their threads. */
int vm_start(struct vm *vm, struct error *err);
/* Run the main event loop until the VM ends. Returns the process exit status. */
int vm_run(struct vm *vm);

/* Stop the vCPUs (QEMU's stop): the guest and its clock stand still. Main thread. */
int vm_pause(struct vm *vm, struct error *err);
/* The same for a failed disk request (werror/rerror=stop): runstate io-error, STOP event. Only a
 * running VM changes state (QEMU's do_vm_stop): a paused one stays paused. Main thread; devices
 * reach it through the main loop (board/devices.c). */
void vm_pause_io_error(struct vm *vm);
/* Start them again (cont, also from io-error); refused after a power-off until a reset. Main
 * thread. */
int vm_resume(struct vm *vm, struct error *err);
/* Reset now, from the host side (system_reset). Main thread. */
int vm_reset(struct vm *vm, struct error *err);
const char *vm_runstate_name(enum vm_runstate s);
/*
 * Read one vCPU's registers for the monitor (main thread). A running vCPU is taken out of
 * KVM_RUN (its thread parked, as stop does) for the read and started again, without the clock
 * hold or events of a real stop; mp may be NULL.
 */
int vm_vcpu_get_state(struct vm *vm, unsigned index, struct kvm_regs *regs, struct kvm_sregs *sregs,
                      struct kvm_mp_state *mp, struct error *err);

/*
 * QEMU's virtual clock, in ns: CLOCK_MONOTONIC less the time the VM was stopped (stop, -S,
 * io-error, a -no-shutdown power-off), so devices timed on it (the PIT, the RTC with
 * -rtc clock=vm) stand still with the guest. Any thread.
 */
int64_t vm_clock_ns(const struct vm *vm);
/* The CLOCK_MONOTONIC time at which the VM clock reads vm_ns, or INT64_MAX while it is
 * stopped (or vm_ns is INT64_MAX). */
int64_t vm_clock_to_monotonic(const struct vm *vm, int64_t vm_ns);

/* Post a request from any thread (vCPU, device, signal-safe path excluded). */
void vm_request(struct vm *vm, enum vm_request req, int exit_status);

/* An interrupt line into the in-kernel irqchip (ISA IRQs 0-15 are GSIs 0-15). */
struct irq_line vm_irq_line(struct vm *vm, unsigned gsi);

#endif
