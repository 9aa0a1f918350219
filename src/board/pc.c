#include "board/pc.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86/acpi.h"
#include "arch/x86/bootparams.h"
#include "arch/x86/cpu_init.h"
#include "arch/x86/layout.h"
#include "arch/x86/mptable.h"
#include "core/os.h"
#include "hw/acpi_pm.h"
#include "hw/debugexit.h"
#include "hw/i8042.h"
#include "hw/pit.h"
#include "hw/serial.h"
#include "pci/host.h"
#include "pci/pci.h"
#include "virtio/mmio.h"

static const struct {
    uint16_t base;
    unsigned irq;
} com_ports[PC_MAX_SERIAL] = {{0x3f8, 4}, {0x2f8, 3}, {0x3e8, 4}, {0x2e8, 3}};

/*
 * A device's timed interrupts, driven by one timerfd on the main loop: next() gives the
 * absolute deadline on the device's clock (INT64_MAX: none), tick() raises whatever is due.
 */
enum dev_clock { DEV_CLOCK_MONOTONIC, DEV_CLOCK_REALTIME, DEV_CLOCK_VM };

struct dev_timer {
    int fd;
    pthread_mutex_t lock; /* the deadline is re-armed from vCPU and main threads */
    int64_t (*next)(void *dev);
    void (*tick)(void *dev, int64_t now_ns);
    void *dev;
    enum dev_clock clock;
    const struct vm *vm; /* DEV_CLOCK_VM */
};

struct image {
    const uint8_t *data;
    size_t len;
};

struct pc {
    struct vm vm;
    struct pc_params p;
    uint32_t *apic_ids;
    struct image kernel, initrd;
    struct x86_boot_info boot;
    struct serial *serial[PC_MAX_SERIAL];
    struct i8042 *kbc;
    struct rtc *rtc;
    struct pit *pit;
    struct dev_timer rtc_timer, pit_timer;
    struct debugexit *dbg;
    struct acpi_pm *pm;
    bool has_pci; /* pc: PCI bus 0 behind an i440FX host bridge */
    struct pci_bus pci;
    struct pci_host host;
    struct pci_bus_io pci_io;
    struct virtio_mmio *mmio[PC_VIRTIO_MMIO_SLOTS]; /* microvm; owned by the caller of
                                                       pc_add_virtio_mmio */
    unsigned nmmio;
};

/* Where firmware would put PCI BARs: the hole between low RAM and the IOAPIC, and the I/O ports
 * QEMU's BIOS hands out. Virtio BARs are small, so 64-bit BARs live below 4 GiB too. */
#define PC_PCI_MEM32_BASE X86_PC_BELOW_4G_LIMIT
#define PC_PCI_MEM32_END  X86_IOAPIC_ADDR
#define PC_PCI_IO_BASE    0xc000
#define PC_PCI_IO_END     0x10000
/* INTA#..INTD# after the PIIX swizzle go to IOAPIC pins 16-19, which no ISA device uses. */
static const uint8_t pc_pci_gsi[4] = {16, 17, 18, 19};

static int map_image(const char *path, const char *what, struct image *img, struct error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_setf_errno(err, errno, "%s: could not open %s", what, path);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return error_setf(err, "%s: %s is not a regular file", what, path);
    }
    if (st.st_size == 0) {
        close(fd);
        return error_setf(err, "%s: %s is empty", what, path);
    }
    void *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return error_setf_errno(err, errno, "%s: could not map %s", what, path);
    img->data = p;
    img->len = st.st_size;
    return 0;
}

static void unmap_image(struct image *img)
{
    if (img->data)
        munmap((void *)img->data, img->len);
    img->data = NULL;
}

static int pc_load(struct vm *vm, struct error *err)
{
    struct pc *pc = vm->board_data;
    if (x86_load_linux(&vm->mem, pc->kernel.data, pc->kernel.len, pc->initrd.data, pc->initrd.len,
                       pc->p.append ? pc->p.append : "", &pc->boot, err) < 0) {
        error_prefix(err, "-kernel %s: ", pc->p.kernel);
        return -1;
    }
    if (x86_build_mptable(&vm->mem, X86_MPTABLE_ADDR, pc->apic_ids, pc->p.cpus,
                          pc->has_pci ? pc_pci_gsi : NULL, err) < 0)
        return -1;
    if (pc->has_pci) {
        /* What the BIOS does before the OS: addresses for every BAR, decode on. */
        struct pci_windows win = {.io_base = PC_PCI_IO_BASE,
                                  .io_len = PC_PCI_IO_END - PC_PCI_IO_BASE,
                                  .mem32_base = PC_PCI_MEM32_BASE,
                                  .mem32_len = PC_PCI_MEM32_END - PC_PCI_MEM32_BASE};
        if (pci_bus_assign_bars(&pc->pci, &win, err) < 0)
            return -1;
    }
    if (pc->p.no_acpi)
        return 0; /* no RSDP anywhere: Linux falls back to the MP table */
    struct x86_acpi_virtio_mmio mmio[PC_VIRTIO_MMIO_SLOTS];
    for (unsigned i = 0; i < pc->nmmio; i++)
        mmio[i] = (struct x86_acpi_virtio_mmio){.base = PC_VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE,
                                                .size = VIRTIO_MMIO_SIZE,
                                                .gsi = PC_VIRTIO_MMIO_GSI + i};
    struct x86_acpi_config ac = {.apic_ids = pc->apic_ids,
                                 .virtio_mmio = mmio,
                                 .nr_virtio_mmio = pc->nmmio,
                                 .nr_cpus = pc->p.cpus,
                                 .legacy_pc = !pc->p.microvm,
                                 .pm_base = ACPI_PM_BASE,
                                 .sci_irq = 9,
                                 .pci = pc->has_pci,
                                 .pci_mem32_base = PC_PCI_MEM32_BASE,
                                 .pci_mem32_len = PC_PCI_MEM32_END - PC_PCI_MEM32_BASE,
                                 .base = X86_ACPI_ADDR,
                                 .size = X86_ACPI_MAX_SIZE};
    memcpy(ac.pci_gsi, pc_pci_gsi, sizeof(ac.pci_gsi));
    struct x86_acpi_info ai;
    if (x86_build_acpi(&vm->mem, &ac, &ai, err) < 0)
        return -1;
    if (x86_boot_set_acpi_rsdp(&vm->mem, &pc->boot, ai.rsdp_addr, err) < 0)
        return -1;
    return 0;
}

/* LINT0 delivers the PIC's ExtINT and LINT1 NMIs, as firmware would program them. */
static int setup_lapic(struct vcpu *v, struct error *err)
{
    struct kvm_lapic_state l;
    if (ioctl(v->kfd.fd, KVM_GET_LAPIC, &l) < 0)
        return error_setf_errno(err, errno, "KVM_GET_LAPIC");
    uint32_t lint0 = 0x700, lint1 = 0x400; /* delivery modes ExtINT and NMI, unmasked */
    memcpy(&l.regs[0x350], &lint0, 4);
    memcpy(&l.regs[0x360], &lint1, 4);
    if (ioctl(v->kfd.fd, KVM_SET_LAPIC, &l) < 0)
        return error_setf_errno(err, errno, "KVM_SET_LAPIC");
    return 0;
}

static int setup_cpuid(struct pc *pc, struct vcpu *v, struct error *err)
{
    const struct kvm_cpuid2 *sup = pc->vm.kvm.supported_cpuid;
    unsigned max = sup->nent + 16;
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + max * sizeof(c->entries[0]));
    if (!c)
        return error_setf(err, "out of memory");
    memcpy(c->entries, sup->entries, sup->nent * sizeof(c->entries[0]));
    unsigned nent = sup->nent;
    int r = x86_cpuid_setup(c->entries, &nent, max, &pc->p.topo, v->index, pc->p.cpus);
    if (r < 0) {
        free(c);
        return error_setf(err, "cannot build CPUID for CPU %u", v->index);
    }
    c->nent = nent;
    /* KVM leaves the TSC-deadline timer out of its supported set; it is there when the
     * capability says so, and spares the guest calibrating the LAPIC timer. */
    for (unsigned i = 0; i < nent && pc->vm.kvm.tsc_deadline; i++)
        if (c->entries[i].function == 1)
            c->entries[i].ecx |= 1U << 24;
    r = ioctl(v->kfd.fd, KVM_SET_CPUID2, c);
    int e = errno;
    free(c);
    if (r < 0)
        return error_setf_errno(err, e, "KVM_SET_CPUID2 for CPU %u", v->index);
    return 0;
}

static int pc_setup_vcpu(struct vm *vm, struct vcpu *v, struct error *err)
{
    struct pc *pc = vm->board_data;
    if (setup_cpuid(pc, v, err) < 0 || setup_lapic(v, err) < 0)
        return -1;
    if (v->index != 0)
        return 0; /* application processors wait for the boot CPU's INIT/SIPI */
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    struct kvm_fpu fpu;
    if (ioctl(v->kfd.fd, KVM_GET_SREGS, &sregs) < 0)
        return error_setf_errno(err, errno, "KVM_GET_SREGS");
    memset(&regs, 0, sizeof(regs));
    if (x86_setup_long_mode(&vm->mem, &pc->boot, &sregs, &regs, err) < 0)
        return -1;
    x86_fpu_init(&fpu);
    if (ioctl(v->kfd.fd, KVM_SET_SREGS, &sregs) < 0)
        return error_setf_errno(err, errno, "KVM_SET_SREGS");
    if (ioctl(v->kfd.fd, KVM_SET_REGS, &regs) < 0)
        return error_setf_errno(err, errno, "KVM_SET_REGS");
    if (ioctl(v->kfd.fd, KVM_SET_FPU, &fpu) < 0)
        return error_setf_errno(err, errno, "KVM_SET_FPU");
    return 0;
}

static void pc_reset_devices(struct vm *vm)
{
    struct pc *pc = vm->board_data;
    for (unsigned i = 0; i < PC_MAX_SERIAL; i++)
        if (pc->serial[i])
            serial_reset(pc->serial[i]);
    if (pc->kbc)
        i8042_reset(pc->kbc);
    if (pc->rtc)
        rtc_reset(pc->rtc);
    if (pc->pit)
        pit_reset(pc->pit);
    if (pc->pm)
        acpi_pm_reset(pc->pm);
    if (pc->has_pci)
        pci_bus_reset(&pc->pci); /* stops virtio backends, unmaps BARs */
    for (unsigned i = 0; i < pc->nmmio; i++)
        virtio_mmio_reset(pc->mmio[i]);
}

/* Guest power-off (S5) and reset through port 0xCF9. */
static void pm_poweroff(void *opaque)
{
    vm_request(opaque, VM_REQ_POWEROFF, 0);
}

static void pm_reset(void *opaque)
{
    vm_request(opaque, VM_REQ_RESET, 0);
}

static const struct acpi_pm_ops pm_ops = {.poweroff = pm_poweroff, .reset = pm_reset};

static void dev_timer_arm(struct dev_timer *t);

/* cont: the devices timed on the VM clock get their timers back (stopped, they were off). */
static void pc_clock_resumed(struct vm *vm)
{
    struct pc *pc = vm->board_data;
    if (pc->rtc_timer.fd >= 0 && pc->rtc_timer.clock == DEV_CLOCK_VM)
        dev_timer_arm(&pc->rtc_timer);
    if (pc->pit_timer.fd >= 0)
        dev_timer_arm(&pc->pit_timer);
}

static const struct vm_board_ops pc_board_ops = {
    .setup_vcpu = pc_setup_vcpu,
    .reset_devices = pc_reset_devices,
    .load = pc_load,
    .clock_resumed = pc_clock_resumed,
};

static void request_reset(void *opaque)
{
    vm_request(opaque, VM_REQ_RESET, 0);
}

static void request_exit(void *opaque, int status)
{
    vm_request(opaque, VM_REQ_SHUTDOWN, status);
}

/* The devices' clock functions (their clock_opaque is the VM for the VM clock). */
static int64_t vm_clock(void *opaque)
{
    return vm_clock_ns(opaque);
}

static int64_t realtime_clock(void *opaque)
{
    return clock_ns(CLOCK_REALTIME);
}

static void dev_timer_arm(struct dev_timer *t)
{
    pthread_mutex_lock(&t->lock);
    int64_t deadline = t->next(t->dev);
    if (t->clock == DEV_CLOCK_VM) /* the timerfd counts CLOCK_MONOTONIC; stopped: disarmed */
        deadline = vm_clock_to_monotonic(t->vm, deadline);
    struct itimerspec its = {0}; /* all zero disarms */
    if (deadline > 0 && deadline != INT64_MAX) {
        its.it_value.tv_sec = deadline / 1000000000;
        its.it_value.tv_nsec = deadline % 1000000000;
    }
    /* A realtime deadline is dropped when the host's time is set (read fails ECANCELED), so
     * the tick below re-arms it from the new time. */
    timerfd_settime(
        t->fd, TFD_TIMER_ABSTIME | (t->clock == DEV_CLOCK_REALTIME ? TFD_TIMER_CANCEL_ON_SET : 0),
        &its, NULL);
    pthread_mutex_unlock(&t->lock);
}

/* The guest programmed the device (vCPU thread): its next interrupt may have moved. */
static void dev_timer_changed(void *opaque)
{
    struct dev_timer *t = opaque;
    if (t->fd >= 0)
        dev_timer_arm(t);
}

static void on_dev_timer(void *opaque, uint32_t events)
{
    struct dev_timer *t = opaque;
    os_event_drain(t->fd);
    t->tick(t->dev, t->clock == DEV_CLOCK_VM         ? vm_clock_ns(t->vm)
                    : t->clock == DEV_CLOCK_REALTIME ? clock_ns(CLOCK_REALTIME)
                                                     : clock_ns(CLOCK_MONOTONIC));
    dev_timer_arm(t);
}

static int dev_timer_start(struct dev_timer *t, struct vm *vm, enum dev_clock clock, void *dev,
                           int64_t (*next)(void *), void (*tick)(void *, int64_t),
                           struct error *err)
{
    struct eventloop *loop = vm->loop;
    t->dev = dev;
    t->next = next;
    t->tick = tick;
    t->clock = clock;
    t->vm = vm;
    t->fd = timerfd_create(clock == DEV_CLOCK_REALTIME ? CLOCK_REALTIME : CLOCK_MONOTONIC,
                           TFD_CLOEXEC | TFD_NONBLOCK);
    if (t->fd < 0)
        return error_setf_errno(err, errno, "timerfd_create");
    if (eventloop_add(loop, t->fd, EPOLLIN, on_dev_timer, t, err) < 0)
        return -1;
    dev_timer_arm(t);
    return 0;
}

static void dev_timer_init(struct dev_timer *t)
{
    t->fd = -1;
    pthread_mutex_init(&t->lock, NULL);
}

static void dev_timer_stop(struct dev_timer *t, struct eventloop *loop)
{
    if (t->fd >= 0 && loop)
        eventloop_remove(loop, t->fd);
}

static void dev_timer_destroy(struct dev_timer *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
    pthread_mutex_destroy(&t->lock);
}

static int64_t rtc_timer_next(void *dev)
{
    return rtc_next_deadline_ns(dev);
}

static void rtc_timer_tick(void *dev, int64_t now_ns)
{
    rtc_tick(dev, now_ns);
}

static int64_t pit_timer_next(void *dev)
{
    return pit_next_deadline_ns(dev);
}

static void pit_timer_tick(void *dev, int64_t now_ns)
{
    pit_tick(dev, now_ns);
}

/* ---- the board side of the PCI bus: address buses, interrupts, ioeventfds ---- */

static int pci_io_map(void *ctx, bool mmio, uint64_t base, uint64_t len, const struct bus_ops *ops,
                      void *opaque)
{
    struct pc *pc = ctx;
    struct error err = {0};
    if (bus_register(mmio ? &pc->vm.mmio : &pc->vm.pio, base, len, ops, opaque, "pci-bar", &err) <
        0) {
        /* A guest that moves a BAR onto another device's range: QEMU lets the later mapping
         * shadow; we refuse it and tell, and the BAR stays unreachable. */
        static unsigned printed; /* the guest controls how often: a few lines only */
        if (printed < 10)
            fprintf(stderr, "kemu: PCI BAR: %s%s\n", err.msg,
                    ++printed == 10 ? " (further BAR conflicts not shown)" : "");
        return -1;
    }
    return 0;
}

static void pci_io_unmap(void *ctx, bool mmio, uint64_t base, void *opaque)
{
    struct pc *pc = ctx;
    bus_unregister(mmio ? &pc->vm.mmio : &pc->vm.pio, base, opaque);
}

static void pci_io_msi(void *ctx, uint64_t addr, uint32_t data)
{
    struct pc *pc = ctx;
    kvm_signal_msi(&pc->vm.kvm, addr, data);
}

static int pci_io_msi_route_add(void *ctx, int fd, uint64_t addr, uint32_t data)
{
    struct pc *pc = ctx;
    return kvm_irqfd_msi_add(&pc->vm.kvm, fd, addr, data);
}

static int pci_io_msi_route_update(void *ctx, int handle, uint64_t addr, uint32_t data)
{
    struct pc *pc = ctx;
    return kvm_irqfd_msi_update(&pc->vm.kvm, handle, addr, data);
}

static void pci_io_msi_route_del(void *ctx, int handle, int fd)
{
    struct pc *pc = ctx;
    kvm_irqfd_msi_remove(&pc->vm.kvm, handle, fd);
}

static void pci_io_set_irq(void *ctx, unsigned gsi, int level)
{
    struct pc *pc = ctx;
    kvm_irq_line(&pc->vm.kvm, gsi, level);
}

static int pci_io_ioeventfd(void *ctx, uint64_t addr, unsigned len, int fd, bool assign)
{
    struct pc *pc = ctx;
    return kvm_ioeventfd(&pc->vm.kvm, addr, len, fd, assign);
}

static int add_pci(struct pc *pc, struct error *err)
{
    pc->pci_io = (struct pci_bus_io){.map = pci_io_map,
                                     .unmap = pci_io_unmap,
                                     .msi_send = pci_io_msi,
                                     .msi_route_add = pci_io_msi_route_add,
                                     .msi_route_update = pci_io_msi_route_update,
                                     .msi_route_del = pci_io_msi_route_del,
                                     .set_irq = pci_io_set_irq,
                                     .ioeventfd = pci_io_ioeventfd,
                                     .ctx = pc};
    pci_bus_init(&pc->pci, &pc->pci_io);
    pc->has_pci = true;
    pci_bus_set_intx_routing(&pc->pci, pc_pci_gsi);
    if (pci_host_init(&pc->host, &pc->pci, err) < 0)
        return -1;
    return pci_host_register_ports(&pc->host, &pc->vm.pio, err);
}

int pc_power_button(struct pc *pc, struct error *err)
{
    if (!pc->pm)
        return error_setf(err, "this machine has no ACPI power button");
    acpi_pm_power_button(pc->pm);
    return 0;
}

struct pci_bus *pc_pci_bus(struct pc *pc)
{
    return pc->has_pci ? &pc->pci : NULL;
}

bool pc_has_virtio_mmio(struct pc *pc)
{
    return pc->p.microvm;
}

/* QueueNotify of a virtio-mmio device straight to its queue's eventfd. */
static int mmio_ioeventfd(void *ctx, uint64_t addr, unsigned len, uint64_t datamatch, int fd,
                          bool assign)
{
    struct pc *pc = ctx;
    return kvm_ioeventfd_datamatch(&pc->vm.kvm, addr, len, datamatch, fd, assign);
}

int pc_add_virtio_mmio(struct pc *pc, struct virtio_device *vdev, struct virtio_mmio **out,
                       struct error *err)
{
    if (!pc->p.microvm)
        return error_setf(err, "virtio-mmio devices need -M microvm (use the -pci device)");
    if (pc->nmmio == PC_VIRTIO_MMIO_SLOTS)
        return error_setf(err, "no virtio-mmio slot left (microvm has %d)", PC_VIRTIO_MMIO_SLOTS);
    unsigned i = pc->nmmio;
    struct virtio_mmio *t;
    if (virtio_mmio_create(vdev, vm_irq_line(&pc->vm, PC_VIRTIO_MMIO_GSI + i), &t, err) < 0)
        return -1;
    if (bus_register(&pc->vm.mmio, PC_VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE, VIRTIO_MMIO_SIZE,
                     &virtio_mmio_bus_ops, t, "virtio-mmio", err) < 0) {
        virtio_mmio_destroy(t);
        return -1;
    }
    virtio_mmio_set_ioeventfd(t, PC_VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE, mmio_ioeventfd, pc);
    pc->mmio[pc->nmmio++] = t;
    *out = t;
    return 0;
}

/* kemu's 8254 and the speaker port; the PIT counts on the VM clock, as QEMU's: it stands
 * still while the VM is stopped. */
static int add_pit(struct pc *pc, struct error *err)
{
    struct vm *vm = &pc->vm;
    struct timed_hooks pit_hooks = {.clock = vm_clock,
                                    .clock_opaque = vm,
                                    .deadline_changed = dev_timer_changed,
                                    .deadline_opaque = &pc->pit_timer};
    pc->pit = pit_create(&pit_hooks, vm_irq_line(vm, 0));
    if (!pc->pit)
        return error_setf(err, "cannot create the PIT");
    if (bus_register(&vm->pio, PIT_IO_BASE, PIT_IO_LEN, &pit_bus_ops, pc->pit, "pit", err) < 0 ||
        bus_register(&vm->pio, PIT_SPEAKER_IO, 1, &pit_speaker_ops, pc->pit, "pcspk", err) < 0)
        return -1;
    if (dev_timer_start(&pc->pit_timer, vm, DEV_CLOCK_VM, pc->pit, pit_timer_next, pit_timer_tick,
                        err) < 0)
        return -1;
    return 0;
}

static int add_devices(struct pc *pc, struct error *err)
{
    struct vm *vm = &pc->vm;
    for (unsigned i = 0; i < PC_MAX_SERIAL; i++) {
        if (!pc->p.serial[i])
            continue;
        pc->serial[i] = serial_create(pc->p.serial[i], vm_irq_line(vm, com_ports[i].irq));
        if (!pc->serial[i])
            return error_setf(err, "cannot create serial port %u", i);
        if (bus_register(&vm->pio, com_ports[i].base, 8, &serial_bus_ops, pc->serial[i], "serial",
                         err) < 0)
            return -1;
    }
    if (!pc->p.microvm) {
        pc->kbc = i8042_create(request_reset, vm, vm_irq_line(vm, 1), vm_irq_line(vm, 12));
        if (!pc->kbc)
            return error_setf(err, "cannot create the keyboard controller");
        if (bus_register(&vm->pio, 0x60, 1, &i8042_data_ops, pc->kbc, "i8042-data", err) < 0 ||
            bus_register(&vm->pio, 0x64, 1, &i8042_cmd_ops, pc->kbc, "i8042-cmd", err) < 0)
            return -1;
    }
    uint64_t low = vm->mem.regions[0].size;
    struct rtc_config rc = {
        .base = pc->p.rtc_base,
        .fixed_epoch = pc->p.rtc_fixed_epoch,
        .ram_below_4g = low,
        .ram_above_4g = pc->p.ram_size - low,
        .nr_cpus = pc->p.cpus,
        .hooks = {.deadline_changed = dev_timer_changed, .deadline_opaque = &pc->rtc_timer},
        .driftfix_slew = pc->p.rtc_driftfix_slew,
    };
    /* clock=rt is the RTC's own default (CLOCK_MONOTONIC); the wall clock still sets the date */
    enum dev_clock rtc_clock = DEV_CLOCK_MONOTONIC;
    if (pc->p.rtc_clock == PC_RTC_CLOCK_HOST) {
        rc.hooks.clock = realtime_clock;
        rtc_clock = DEV_CLOCK_REALTIME;
    } else if (pc->p.rtc_clock == PC_RTC_CLOCK_VM) {
        rc.hooks.clock = vm_clock;
        rc.hooks.clock_opaque = vm;
        rtc_clock = DEV_CLOCK_VM;
    }
    pc->rtc = rtc_create(&rc, vm_irq_line(vm, 8));
    if (!pc->rtc)
        return error_setf(err, "cannot create the RTC");
    if (bus_register(&vm->pio, 0x70, 2, &rtc_bus_ops, pc->rtc, "rtc", err) < 0)
        return -1;
    pc->pm = acpi_pm_create(&pm_ops, vm, vm_irq_line(vm, 9));
    if (!pc->pm)
        return error_setf(err, "cannot create the ACPI PM block");
    if (bus_register(&vm->pio, ACPI_PM_BASE, ACPI_PM_LEN, &acpi_pm_bus_ops, pc->pm, "acpi-pm",
                     err) < 0 ||
        bus_register(&vm->pio, ACPI_RESET_PORT, 1, &acpi_reset_bus_ops, pc->pm, "acpi-reset", err) <
            0)
        return -1;
    if (dev_timer_start(&pc->rtc_timer, vm, rtc_clock, pc->rtc, rtc_timer_next, rtc_timer_tick,
                        err) < 0)
        return -1;
    /* kernel-irqchip=on: KVM emulates ports 0x40-0x43 and 0x61 (core/kvm.c) */
    if (!pc->p.kernel_pit && add_pit(pc, err) < 0)
        return -1;
    if (!pc->p.microvm && add_pci(pc, err) < 0)
        return -1;
    if (pc->p.debug_exit) {
        pc->dbg = debugexit_create(request_exit, vm);
        if (!pc->dbg)
            return error_setf(err, "cannot create isa-debug-exit");
        if (bus_register(&vm->pio, pc->p.debug_exit_base, pc->p.debug_exit_size, &debugexit_bus_ops,
                         pc->dbg, "isa-debug-exit", err) < 0)
            return -1;
    }
    return 0;
}

int pc_create(const struct pc_params *p, struct pc **out, struct error *err)
{
    struct pc *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return error_setf(err, "out of memory");
    pc->p = *p;
    dev_timer_init(&pc->rtc_timer);
    dev_timer_init(&pc->pit_timer);
    struct vm *vm = &pc->vm;
    pc->apic_ids = calloc(p->maxcpus, sizeof(uint32_t));
    if (!pc->apic_ids) {
        free(pc);
        return error_setf(err, "out of memory");
    }
    for (unsigned i = 0; i < p->maxcpus; i++)
        pc->apic_ids[i] = x86_apic_id(&p->topo, i);
    if (vm_init(vm, p->loop, p->cpus, pc->apic_ids, err) < 0)
        goto fail;
    vm->board = &pc_board_ops;
    vm->board_data = pc;
    vm->no_reboot = p->no_reboot;
    vm->no_shutdown = p->no_shutdown;
    if (kvm_open(&vm->kvm, "/dev/kvm", err) < 0)
        goto fail;
    vm->kvm.pit = p->kernel_pit;
    if (p->cpus > (unsigned)vm->kvm.max_vcpus) {
        error_setf(err, "-smp %u: exceeds the %d vCPUs KVM supports here", p->cpus,
                   vm->kvm.max_vcpus);
        goto fail;
    }
    if (pc->apic_ids[p->maxcpus - 1] >= (uint32_t)vm->kvm.max_vcpu_id) {
        error_setf(err, "-smp: the topology needs APIC ID %u, above KVM's limit %d",
                   pc->apic_ids[p->maxcpus - 1], vm->kvm.max_vcpu_id - 1);
        goto fail;
    }
    if (!p->kernel) {
        error_setf(err, "no -kernel given: kemu boots Linux directly (firmware boot comes later)");
        goto fail;
    }
    if (map_image(p->kernel, "-kernel", &pc->kernel, err) < 0)
        goto fail;
    if (p->initrd && map_image(p->initrd, "-initrd", &pc->initrd, err) < 0)
        goto fail;
    if (guest_mem_init_x86(&vm->mem, p->ram_size, X86_PC_BELOW_4G_LIMIT, &p->mem_backing, err) <
        0) {
        if (p->mem_backend_id)
            error_prefix(err, "memory backend '%s': ", p->mem_backend_id);
        else
            error_prefix(err, p->mem_backing.path ? "-mem-path: " : "-m: ");
        goto fail;
    }
    if (p->mem_prealloc &&
        guest_mem_prealloc(&vm->mem, p->mem_prealloc_threads ? p->mem_prealloc_threads : p->cpus,
                           err) < 0) {
        if (p->mem_backend_id)
            error_prefix(err, "memory backend '%s': ", p->mem_backend_id);
        else
            error_prefix(err, "-mem-prealloc: ");
        goto fail;
    }
    if (add_devices(pc, err) < 0)
        goto fail;
    *out = pc;
    return 0;
fail:
    pc_destroy(pc);
    return -1;
}

struct vm *pc_vm(struct pc *pc)
{
    return &pc->vm;
}

void pc_destroy(struct pc *pc)
{
    if (!pc)
        return;
    dev_timer_stop(&pc->rtc_timer, pc->vm.loop);
    dev_timer_stop(&pc->pit_timer, pc->vm.loop);
    /* vCPUs first: nothing may touch a device while it is freed. */
    vm_destroy(&pc->vm);
    for (unsigned i = 0; i < PC_MAX_SERIAL; i++)
        if (pc->serial[i])
            serial_destroy(pc->serial[i]);
    if (pc->kbc)
        i8042_destroy(pc->kbc);
    if (pc->rtc)
        rtc_destroy(pc->rtc);
    pit_destroy(pc->pit);
    if (pc->dbg)
        debugexit_destroy(pc->dbg);
    if (pc->pm)
        acpi_pm_destroy(pc->pm);
    if (pc->has_pci) {
        /* The bus still lists the host bridge: release it through the bus while it lives. */
        pci_bus_destroy(&pc->pci);
        pci_host_destroy(&pc->host);
    }
    dev_timer_destroy(&pc->rtc_timer);
    dev_timer_destroy(&pc->pit_timer);
    unmap_image(&pc->kernel);
    unmap_image(&pc->initrd);
    free(pc->apic_ids);
    free(pc);
}
