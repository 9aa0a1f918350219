/*
 * The x86 boards: `pc` (i440FX-like PC; PCI arrives with the virtio work) and `microvm`. A board
 * lays out guest memory, creates the platform devices, loads the kernel and sets up the vCPUs.
 */
#ifndef KEMU_BOARD_PC_H
#define KEMU_BOARD_PC_H

#include <stdbool.h>
#include <stdint.h>

#include "arch/x86/cpuid.h"
#include "chardev/chardev.h"
#include "core/vm.h"
#include "hw/rtc.h"

#define PC_MAX_SERIAL 4

struct pc_params {
    struct eventloop *loop;
    bool microvm;
    uint64_t ram_size;
    /* -mem-path, -machine mem-merge=, dump-guest-core=, or a memory backend object */
    struct guest_mem_backing mem_backing;
    const char *mem_backend_id;    /* -machine memory-backend=ID, for errors */
    bool mem_prealloc;             /* -mem-prealloc or prealloc=on */
    unsigned mem_prealloc_threads; /* 0: one per vCPU, as QEMU */
    unsigned cpus;                 /* present at boot */
    unsigned maxcpus;              /* topology size */
    struct x86_topology topo;
    const char *kernel, *initrd, *append;
    struct chardev *serial[PC_MAX_SERIAL]; /* NULL: port absent */
    int rtc_base;                          /* RTC_BASE_* */
    int rtc_clock;                         /* PC_RTC_CLOCK_*: -rtc clock= */
    bool rtc_driftfix_slew;                /* -rtc driftfix=slew */
    int64_t rtc_fixed_epoch;
    bool debug_exit;
    uint16_t debug_exit_base, debug_exit_size;
    bool no_reboot, no_shutdown;
    bool no_acpi;    /* -machine acpi=off: no ACPI tables, the guest goes by the MP table */
    bool kernel_pit; /* -machine kernel-irqchip=on: KVM's PIT instead of hw/pit.c */
};

/* What the RTC runs on (QEMU's -rtc clock=): the host's wall clock (host steps move it), the
 * host's monotonic clock (rt), or the VM clock, which stops while the VM is stopped (vm). */
enum { PC_RTC_CLOCK_HOST, PC_RTC_CLOCK_RT, PC_RTC_CLOCK_VM };

struct pc;
struct pci_bus;
struct virtio_device;
struct virtio_mmio;

/* microvm's virtio-mmio windows: QEMU's place and size, one IOAPIC input (edge) each. */
#define PC_VIRTIO_MMIO_BASE  0xfeb00000u
#define PC_VIRTIO_MMIO_GSI   16
#define PC_VIRTIO_MMIO_SLOTS 8 /* GSIs 16-23, the IOAPIC inputs above the ISA IRQs */

/* Build the machine; on success *out owns a ready VM (vCPUs not started yet). */
int pc_create(const struct pc_params *p, struct pc **out, struct error *err);
struct vm *pc_vm(struct pc *pc);
/* Press the ACPI power button (system_powerdown): the guest decides what to do. */
int pc_power_button(struct pc *pc, struct error *err);
/* Bus 0 of the pc machine, where -device puts PCI devices; NULL on microvm. */
struct pci_bus *pc_pci_bus(struct pc *pc);
/* True for microvm: virtio devices go on virtio-mmio (pc_add_virtio_mmio). */
bool pc_has_virtio_mmio(struct pc *pc);
/*
 * Put vdev in the next free virtio-mmio window of microvm (described in the DSDT, reset with the
 * machine). The caller owns *out and destroys it (virtio_mmio_destroy) once no vCPU runs, before
 * pc_destroy. Fails when the machine has no virtio-mmio or all PC_VIRTIO_MMIO_SLOTS are taken.
 */
int pc_add_virtio_mmio(struct pc *pc, struct virtio_device *vdev, struct virtio_mmio **out,
                       struct error *err);
void pc_destroy(struct pc *pc);

#endif
