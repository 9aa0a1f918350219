#include "core/vm.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/os.h"

#define SIG_VCPU_KICK SIGUSR1

/*
 * Debugging aids from the environment: KEMU_TRACE=1 logs every port and MMIO exit and every
 * reset to stderr; KEMU_TRACE=reset logs only resets and power-offs with their cause (a triple
 * fault with the registers), which the system tests turn on.
 */
static bool trace_exits, trace_resets;

static void kick_handler(int sig)
{
    (void)sig; /* only there to make KVM_RUN return EINTR */
}

int vm_init(struct vm *vm, struct eventloop *loop, unsigned nr_vcpus, const uint32_t *apic_ids,
            struct error *err)
{
    memset(vm, 0, sizeof(*vm));
    vm->loop = loop;
    vm->kvm.sys_fd = vm->kvm.vm_fd = -1;
    vm->wake_fd = -1;
    bus_init(&vm->pio, "port I/O");
    bus_init(&vm->mmio, "MMIO");
    vm->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->wake_fd < 0)
        return error_setf_errno(err, errno, "eventfd");
    vm->vcpus = calloc(nr_vcpus, sizeof(*vm->vcpus));
    if (!vm->vcpus)
        return error_setf(err, "out of memory");
    vm->nr_vcpus = nr_vcpus;
    pthread_mutex_init(&vm->vcpu_lock, NULL);
    pthread_cond_init(&vm->vcpu_cond, NULL);
    for (unsigned i = 0; i < nr_vcpus; i++) {
        vm->vcpus[i] = (struct vcpu){.vm = vm, .index = i, .apic_id = apic_ids[i]};
        vm->vcpus[i].kfd.fd = -1;
    }
    const char *trace = getenv("KEMU_TRACE");
    trace_resets = trace && *trace && strcmp(trace, "0") != 0;
    trace_exits = trace_resets && strcmp(trace, "reset") != 0;
    struct sigaction sa = {.sa_handler = kick_handler};
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_VCPU_KICK, &sa, NULL);
    return 0;
}

/* Take every vCPU out of KVM_RUN and wait until all are parked: then no thread touches a vCPU
 * fd or its kvm_run until start_vcpus. */
static void stop_vcpus(struct vm *vm)
{
    atomic_store(&vm->stopping, true);
    pthread_mutex_lock(&vm->vcpu_lock);
    vm->vcpus_go = false;
    pthread_mutex_unlock(&vm->vcpu_lock);
    unsigned threads = 0;
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->thread_started)
            continue;
        threads++;
        /* Shared with the vCPU thread by design (KVM's API): atomic for the sanitizers. */
        if (v->kfd.run)
            __atomic_store_n(&v->kfd.run->immediate_exit, 1, __ATOMIC_RELAXED);
        pthread_kill(v->thread, SIG_VCPU_KICK);
    }
    pthread_mutex_lock(&vm->vcpu_lock);
    while (vm->vcpus_parked < threads)
        pthread_cond_wait(&vm->vcpu_cond, &vm->vcpu_lock);
    pthread_mutex_unlock(&vm->vcpu_lock);
}

/* Stop, then end the threads (the VM is going away). */
static void join_vcpus(struct vm *vm)
{
    stop_vcpus(vm);
    pthread_mutex_lock(&vm->vcpu_lock);
    vm->vcpus_quit = true;
    pthread_cond_broadcast(&vm->vcpu_cond);
    pthread_mutex_unlock(&vm->vcpu_lock);
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->thread_started)
            continue;
        pthread_join(v->thread, NULL);
        v->thread_started = false;
    }
}

static void destroy_kvm_vm(struct vm *vm)
{
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if (vm->vcpus[i].kfd.fd >= 0)
            kvm_destroy_vcpu(&vm->kvm, &vm->vcpus[i].kfd);
    kvm_destroy_vm(&vm->kvm);
}

void vm_destroy(struct vm *vm)
{
    if (vm->vcpus) {
        join_vcpus(vm);
        destroy_kvm_vm(vm);
        free(vm->vcpus);
        vm->vcpus = NULL;
        pthread_mutex_destroy(&vm->vcpu_lock);
        pthread_cond_destroy(&vm->vcpu_cond);
    }
    kvm_close(&vm->kvm);
    guest_mem_destroy(&vm->mem);
    bus_destroy(&vm->pio);
    bus_destroy(&vm->mmio);
    if (vm->wake_fd >= 0)
        close(vm->wake_fd);
    vm->wake_fd = -1;
}

void vm_request(struct vm *vm, enum vm_request req, int exit_status)
{
    /* The first request wins, except that anything ending the VM overrides a pending reset. */
    if (trace_resets && req != VM_REQ_NONE)
        fprintf(stderr,
                "kemu-trace: request %d (1 reset, 2 shutdown, 3 power-off, 4 quit, 5 error)\n",
                (int)req);
    int expected = VM_REQ_NONE;
    bool posted = atomic_compare_exchange_strong(&vm->request, &expected, (int)req);
    if (!posted && expected == VM_REQ_RESET && req != VM_REQ_RESET)
        posted = atomic_compare_exchange_strong(&vm->request, &expected, (int)req);
    if (posted) {
        vm->exit_status = exit_status;
        os_event_signal(vm->wake_fd);
    }
    /* Whatever was asked, no vCPU should keep running guest code past this point. */
    atomic_store(&vm->stopping, true);
}

int64_t vm_clock_ns(const struct vm *vm)
{
    int64_t at = __atomic_load_n(&vm->clock_stopped_at, __ATOMIC_ACQUIRE);
    int64_t total = __atomic_load_n(&vm->clock_stopped_total, __ATOMIC_ACQUIRE);
    return (at ? at : clock_ns(CLOCK_MONOTONIC)) - total;
}

int64_t vm_clock_to_monotonic(const struct vm *vm, int64_t vm_ns)
{
    if (vm_ns == INT64_MAX || __atomic_load_n(&vm->clock_stopped_at, __ATOMIC_ACQUIRE))
        return INT64_MAX;
    int64_t total = __atomic_load_n(&vm->clock_stopped_total, __ATOMIC_ACQUIRE);
    return vm_ns > INT64_MAX - total ? INT64_MAX : vm_ns + total;
}

static void clock_stop(struct vm *vm)
{
    if (!vm->clock_stopped_at)
        __atomic_store_n(&vm->clock_stopped_at, clock_ns(CLOCK_MONOTONIC), __ATOMIC_RELEASE);
}

static void clock_start(struct vm *vm)
{
    int64_t at = vm->clock_stopped_at;
    if (!at)
        return;
    /* the total first: a reader between the stores sees the clock frozen a moment longer */
    __atomic_store_n(&vm->clock_stopped_total,
                     vm->clock_stopped_total + clock_ns(CLOCK_MONOTONIC) - at, __ATOMIC_RELEASE);
    __atomic_store_n(&vm->clock_stopped_at, 0, __ATOMIC_RELEASE);
}

static void irq_set(void *opaque, unsigned gsi, int level)
{
    struct vm *vm = opaque;
    kvm_irq_line(&vm->kvm, gsi, level);
}

struct irq_line vm_irq_line(struct vm *vm, unsigned gsi)
{
    return (struct irq_line){.set = irq_set, .opaque = vm, .gsi = gsi};
}

/* QEMU-style register dump, so a failing guest can be diagnosed from the log. */
static void dump_registers(struct vcpu *v)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    if (ioctl(v->kfd.fd, KVM_GET_REGS, &r) < 0 || ioctl(v->kfd.fd, KVM_GET_SREGS, &s) < 0) {
        fprintf(stderr, "kemu: cannot read the registers of CPU %u\n", v->index);
        return;
    }
    fprintf(stderr,
            "CPU#%u\n"
            "RAX=%016llx RBX=%016llx RCX=%016llx RDX=%016llx\n"
            "RSI=%016llx RDI=%016llx RBP=%016llx RSP=%016llx\n"
            "R8 =%016llx R9 =%016llx R10=%016llx R11=%016llx\n"
            "R12=%016llx R13=%016llx R14=%016llx R15=%016llx\n"
            "RIP=%016llx RFL=%08llx\n",
            v->index, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10,
            r.r11, r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags);
    const struct {
        const char *name;
        struct kvm_segment *seg;
    } segs[] = {{"ES", &s.es}, {"CS", &s.cs}, {"SS", &s.ss},   {"DS", &s.ds},
                {"FS", &s.fs}, {"GS", &s.gs}, {"LDT", &s.ldt}, {"TR", &s.tr}};
    for (size_t i = 0; i < sizeof(segs) / sizeof(segs[0]); i++)
        fprintf(stderr, "%-3s=%04x %016llx %08x type=%x dpl=%u l=%u db=%u\n", segs[i].name,
                segs[i].seg->selector, segs[i].seg->base, segs[i].seg->limit, segs[i].seg->type,
                segs[i].seg->dpl, segs[i].seg->l, segs[i].seg->db);
    fprintf(stderr,
            "GDT=     %016llx %08x\nIDT=     %016llx %08x\n"
            "CR0=%08llx CR2=%016llx CR3=%016llx CR4=%08llx\nEFER=%016llx APIC_BASE=%016llx\n",
            s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit, s.cr0, s.cr2, s.cr3, s.cr4, s.efer,
            s.apic_base);
}

static void handle_io(struct vcpu *v)
{
    struct kvm_run *run = v->kfd.run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    unsigned size = run->io.size;
    /* data_offset and count come from the kernel, but stay inside the shared page regardless. */
    if (size == 0 || size > 4 ||
        run->io.data_offset + (uint64_t)size * run->io.count > (uint64_t)v->vm->kvm.run_size)
        return;
    for (uint32_t i = 0; i < run->io.count; i++, data += size) {
        if (run->io.direction == KVM_EXIT_IO_OUT) {
            uint64_t val = 0;
            memcpy(&val, data, size);
            if (trace_exits)
                fprintf(stderr, "kemu-trace: cpu%u out 0x%x/%u = 0x%llx\n", v->index, run->io.port,
                        size, (unsigned long long)val);
            bus_write(&v->vm->pio, run->io.port, size, val);
        } else {
            uint64_t val;
            bus_read(&v->vm->pio, run->io.port, size, &val);
            if (trace_exits)
                fprintf(stderr, "kemu-trace: cpu%u in 0x%x/%u -> 0x%llx\n", v->index, run->io.port,
                        size, (unsigned long long)val);
            memcpy(data, &val, size);
        }
    }
}

static void handle_mmio(struct vcpu *v)
{
    struct kvm_run *run = v->kfd.run;
    unsigned len = run->mmio.len;
    if (len == 0 || len > 8)
        return;
    if (trace_exits)
        fprintf(stderr, "kemu-trace: cpu%u mmio %s 0x%llx/%u\n", v->index,
                run->mmio.is_write ? "write" : "read", (unsigned long long)run->mmio.phys_addr,
                len);
    if (run->mmio.is_write) {
        uint64_t val = 0;
        memcpy(&val, run->mmio.data, len);
        bus_write(&v->vm->mmio, run->mmio.phys_addr, len, val);
    } else {
        uint64_t val;
        bus_read(&v->vm->mmio, run->mmio.phys_addr, len, &val);
        memcpy(run->mmio.data, &val, len);
    }
}

static void vcpu_fatal(struct vcpu *v, const char *fmt, unsigned long long a, unsigned long long b)
{
    fprintf(stderr, "kemu: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    dump_registers(v);
    vm_request(v->vm, VM_REQ_ERROR, 1);
}

/* KVM_RUN until the VM stops. The vCPU fd and kvm_run are read afresh: a reset replaces them
 * while the thread is parked. */
static void run_vcpu(struct vcpu *v)
{
    struct vm *vm = v->vm;
    struct kvm_run *run = v->kfd.run;
    while (!atomic_load(&vm->stopping)) {
        if (ioctl(v->kfd.fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
                continue;
            }
            fprintf(stderr, "kemu: KVM_RUN on CPU %u: %s\n", v->index, strerror(errno));
            dump_registers(v);
            vm_request(vm, VM_REQ_ERROR, 1);
            break;
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            handle_io(v);
            break;
        case KVM_EXIT_MMIO:
            handle_mmio(v);
            break;
        case KVM_EXIT_INTR:
            break;
        case KVM_EXIT_HLT:
            /* Only without an in-kernel LAPIC; a halted CPU with nothing to wake it. */
            vm_request(vm, VM_REQ_SHUTDOWN, 0);
            break;
        case KVM_EXIT_SHUTDOWN:
            /* Triple fault: a PC resets. */
            if (trace_resets) {
                fprintf(stderr, "kemu-trace: cpu%u triple fault, resetting\n", v->index);
                dump_registers(v);
            }
            vm_request(vm, VM_REQ_RESET, 0);
            break;
        case KVM_EXIT_SYSTEM_EVENT:
            if (trace_resets)
                fprintf(stderr, "kemu-trace: cpu%u system event %u\n", v->index,
                        run->system_event.type);
            if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
                vm_request(vm, VM_REQ_RESET, 0);
            else
                vm_request(vm, VM_REQ_POWEROFF, 0);
            break;
        case KVM_EXIT_INTERNAL_ERROR:
            vcpu_fatal(v, "KVM internal error. Suberror: %llu (CPU %llu)", run->internal.suberror,
                       v->index);
            break;
        case KVM_EXIT_FAIL_ENTRY:
            vcpu_fatal(v, "KVM entry failed, hardware error 0x%llx (CPU %llu)",
                       run->fail_entry.hardware_entry_failure_reason, v->index);
            break;
        default:
            vcpu_fatal(v, "unexpected KVM exit reason %llu (CPU %llu)", run->exit_reason, v->index);
            break;
        }
    }
}

static void *vcpu_thread(void *opaque)
{
    struct vcpu *v = opaque;
    struct vm *vm = v->vm;
    char name[16];
    snprintf(name, sizeof(name), "CPU %u/KVM", v->index);
    pthread_setname_np(pthread_self(), name);
    __atomic_store_n(&v->tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);

    pthread_mutex_lock(&vm->vcpu_lock);
    for (;;) {
        vm->vcpus_parked++;
        pthread_cond_broadcast(&vm->vcpu_cond);
        /* A pending request (stopping without a stop) parks too, not spins, until the main
         * loop acts on it: start_vcpus clears stopping before it lets them go. */
        while ((!vm->vcpus_go || atomic_load(&vm->stopping)) && !vm->vcpus_quit)
            pthread_cond_wait(&vm->vcpu_cond, &vm->vcpu_lock);
        vm->vcpus_parked--;
        if (vm->vcpus_quit)
            break;
        pthread_mutex_unlock(&vm->vcpu_lock);
        run_vcpu(v);
        pthread_mutex_lock(&vm->vcpu_lock);
    }
    pthread_mutex_unlock(&vm->vcpu_lock);
    return NULL;
}

/* Create the threads, parked, the first time (also under -S: QEMU's threads exist before the
 * monitor serves, and management tools read their ids from query-cpus-fast). */
static int create_vcpu_threads(struct vm *vm, struct error *err)
{
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (v->thread_started)
            continue;
        int e = pthread_create(&v->thread, NULL, vcpu_thread, v);
        if (e)
            return error_setf_errno(err, e, "cannot start the thread of CPU %u", i);
        v->thread_started = true;
    }
    /* Every thread has its id before the monitor can ask; it is their first step. */
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        while (!__atomic_load_n(&vm->vcpus[i].tid, __ATOMIC_ACQUIRE))
            sched_yield();
    return 0;
}

static int start_vcpus(struct vm *vm, struct error *err)
{
    if (create_vcpu_threads(vm, err) < 0)
        return -1;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if (vm->vcpus[i].kfd.run)
            __atomic_store_n(&vm->vcpus[i].kfd.run->immediate_exit, 0, __ATOMIC_RELAXED);
    atomic_store(&vm->stopping, false);
    pthread_mutex_lock(&vm->vcpu_lock);
    vm->vcpus_go = true;
    pthread_cond_broadcast(&vm->vcpu_cond);
    pthread_mutex_unlock(&vm->vcpu_lock);
    return 0;
}

static int start_kvm_vm(struct vm *vm, struct error *err)
{
    if (kvm_create_vm(&vm->kvm, err) < 0)
        return -1;
    for (unsigned i = 0; i < vm->mem.nr; i++) {
        const struct guest_region *r = &vm->mem.regions[i];
        if (kvm_set_memory(&vm->kvm, i, r->gpa, r->size, r->hva, err) < 0)
            return -1;
    }
    if (vm->board->load(vm, err) < 0)
        return -1;
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (kvm_create_vcpu(&vm->kvm, v->apic_id, &v->kfd, err) < 0)
            return -1;
        if (vm->board->setup_vcpu(vm, v, err) < 0)
            return -1;
    }
    atomic_store(&vm->request, VM_REQ_NONE);
    if (vm->runstate != VM_RUNSTATE_RUNNING) /* -S, or a reset while stopped: cont runs them */
        return create_vcpu_threads(vm, err);
    return start_vcpus(vm, err);
}

int vm_start(struct vm *vm, struct error *err)
{
    vm->runstate = vm->start_paused ? VM_RUNSTATE_PRELAUNCH : VM_RUNSTATE_RUNNING;
    if (vm->start_paused)
        clock_stop(vm);
    return start_kvm_vm(vm, err);
}

const char *vm_runstate_name(enum vm_runstate s)
{
    switch (s) {
    case VM_RUNSTATE_PRELAUNCH:
        return "prelaunch";
    case VM_RUNSTATE_RUNNING:
        return "running";
    case VM_RUNSTATE_PAUSED:
        return "paused";
    case VM_RUNSTATE_SHUTDOWN:
        return "shutdown";
    case VM_RUNSTATE_INTERNAL_ERROR:
        return "internal-error";
    case VM_RUNSTATE_IO_ERROR:
        return "io-error";
    }
    return "unknown";
}

static void pause_as(struct vm *vm, enum vm_runstate state)
{
    if (vm->runstate != VM_RUNSTATE_RUNNING)
        return; /* already still */
    stop_vcpus(vm);
    clock_stop(vm);
    vm->have_paused_clock = kvm_get_clock(&vm->kvm, &vm->paused_clock) == 0;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if (vm->vcpus[i].kfd.fd >= 0)
            kvm_vcpu_clock_paused(vm->vcpus[i].kfd.fd);
    vm->runstate = state;
    if (vm->events.stop)
        vm->events.stop(vm->events.opaque);
}

int vm_pause(struct vm *vm, struct error *err)
{
    (void)err;
    pause_as(vm, VM_RUNSTATE_PAUSED);
    return 0;
}

void vm_pause_io_error(struct vm *vm)
{
    pause_as(vm, VM_RUNSTATE_IO_ERROR);
}

int vm_resume(struct vm *vm, struct error *err)
{
    switch (vm->runstate) {
    case VM_RUNSTATE_RUNNING:
        return 0;
    case VM_RUNSTATE_SHUTDOWN:
    case VM_RUNSTATE_INTERNAL_ERROR:
        return error_setf(err, "Resetting the Virtual Machine is required");
    case VM_RUNSTATE_PAUSED:
    case VM_RUNSTATE_IO_ERROR:
        if (vm->have_paused_clock)
            kvm_set_clock(&vm->kvm, vm->paused_clock);
        break;
    case VM_RUNSTATE_PRELAUNCH:
        break;
    }
    vm->have_paused_clock = false;
    vm->runstate = VM_RUNSTATE_RUNNING;
    clock_start(vm);
    if (vm->board->clock_resumed)
        vm->board->clock_resumed(vm);
    if (start_vcpus(vm, err) < 0) {
        vm->runstate = VM_RUNSTATE_INTERNAL_ERROR;
        return -1;
    }
    if (vm->events.resume)
        vm->events.resume(vm->events.opaque);
    return 0;
}

int vm_vcpu_get_state(struct vm *vm, unsigned index, struct kvm_regs *regs, struct kvm_sregs *sregs,
                      struct kvm_mp_state *mp, struct error *err)
{
    if (index >= vm->nr_vcpus || vm->vcpus[index].kfd.fd < 0)
        return error_setf(err, "CPU %u does not exist", index);
    struct vcpu *v = &vm->vcpus[index];
    pthread_mutex_lock(&vm->vcpu_lock);
    bool was_running = vm->vcpus_go;
    pthread_mutex_unlock(&vm->vcpu_lock);
    if (was_running)
        stop_vcpus(vm);
    int r = 0;
    if (ioctl(v->kfd.fd, KVM_GET_REGS, regs) < 0 || ioctl(v->kfd.fd, KVM_GET_SREGS, sregs) < 0 ||
        (mp && ioctl(v->kfd.fd, KVM_GET_MP_STATE, mp) < 0))
        r = error_setf_errno(err, errno, "cannot read the registers of CPU %u", index);
    /* A request posted meanwhile (quit, reset...) is the main loop's to act on: it would stop
     * the vCPUs again anyway. */
    if (was_running && atomic_load(&vm->request) == VM_REQ_NONE && start_vcpus(vm, err) < 0) {
        vm->runstate = VM_RUNSTATE_INTERNAL_ERROR;
        return -1;
    }
    return r;
}

/* A reset rebuilds the KVM side from scratch: simpler and more thorough than undoing state. */
static int reset_vm(struct vm *vm, struct error *err)
{
    stop_vcpus(vm);
    /* Devices first, while the old VM still exists: their backends may still be signalling it
     * until they are stopped, and their ioeventfds are removed from it. */
    vm->board->reset_devices(vm);
    destroy_kvm_vm(vm);
    guest_mem_reset(&vm->mem);
    vm->resets++;
    vm->have_paused_clock = false;
    /* After a power-off the machine waits for cont, as QEMU's does after system_reset. */
    if (vm->runstate == VM_RUNSTATE_SHUTDOWN || vm->runstate == VM_RUNSTATE_INTERNAL_ERROR)
        vm->runstate = VM_RUNSTATE_PAUSED;
    /* The devices dropped their failed requests: nothing is left for a cont to retry. */
    if (vm->runstate == VM_RUNSTATE_IO_ERROR)
        vm->runstate = VM_RUNSTATE_PAUSED;
    return start_kvm_vm(vm, err);
}

int vm_reset(struct vm *vm, struct error *err)
{
    if (reset_vm(vm, err) < 0)
        return -1;
    if (vm->events.reset)
        vm->events.reset(vm->events.opaque, false);
    return 0;
}

static void on_wake(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    os_event_drain(vm->wake_fd);
    int req = atomic_load(&vm->request);
    switch (req) {
    case VM_REQ_NONE:
        return;
    case VM_REQ_RESET:
        if (vm->no_reboot) {
            vm->exit_status = 0;
            if (vm->events.shutdown)
                vm->events.shutdown(vm->events.opaque, true, "guest-reset");
            break;
        } else {
            struct error err = {0};
            if (vm->events.reset)
                vm->events.reset(vm->events.opaque, true);
            if (reset_vm(vm, &err) < 0) {
                fprintf(stderr, "kemu: reset failed: %s\n", err.msg);
                vm->exit_status = 1;
                break;
            }
            return;
        }
    case VM_REQ_POWEROFF:
        vm->exit_status = 0;
        if (vm->events.shutdown)
            vm->events.shutdown(vm->events.opaque, true, "guest-shutdown");
        if (vm->no_shutdown) {
            /* QEMU's -no-shutdown: the guest is off but kemu stays until asked to quit. */
            stop_vcpus(vm);
            clock_stop(vm);
            vm->runstate = VM_RUNSTATE_SHUTDOWN;
            if (vm->events.stop)
                vm->events.stop(vm->events.opaque);
            fprintf(stderr, "kemu: guest powered off; -no-shutdown keeps kemu running\n");
            atomic_store(&vm->request, VM_REQ_NONE);
            return;
        }
        break;
    default:
        break;
    }
    eventloop_quit(vm->loop);
}

int vm_run(struct vm *vm)
{
    struct error err = {0};
    if (eventloop_add(vm->loop, vm->wake_fd, EPOLLIN, on_wake, vm, &err) < 0) {
        fprintf(stderr, "kemu: %s\n", err.msg);
        return 1;
    }
    /* A request may have been posted before the loop started. */
    if (atomic_load(&vm->request) != VM_REQ_NONE)
        on_wake(vm, EPOLLIN);
    eventloop_run(vm->loop);
    eventloop_remove(vm->loop, vm->wake_fd);
    join_vcpus(vm);
    return vm->exit_status;
}
