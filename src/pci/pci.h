/*
 * PCI devices and bus 0 (PCI Local Bus 3.0, type 0 headers, MSI-X).
 *
 * A device embeds a struct pci_device: a config space with a per-byte write mask and a per-byte
 * write-1-to-clear mask, up to six BARs, a capability list and optional MSI-X. The generic
 * config-space handling (read-only fields, BAR sizing, command/status, capabilities) lives here;
 * a device kind only adds a struct pci_device_ops for what is its own.
 *
 * The board stays in charge of the address buses: when the guest moves a BAR or toggles decode,
 * this code asks the board (struct pci_bus_io) to unmap and map the BAR's range, with the
 * struct bus_ops the device supplied for that BAR. Interrupts go out through the same table:
 * INTx as a GSI level (PIIX-style PIRQ swizzle), MSI-X as a message write.
 *
 * Locking: each device has its own (recursive) lock, taken by config accesses, MSI-X table/PBA
 * accesses, pci_msix_notify and pci_set_irq. Device callbacks (config_write, bar_map, reset) and
 * the board's map/unmap/msi_send run with that lock held; they may call back into this API for
 * the same device but must not take locks a vCPU holds while it accesses the device.
 */
#ifndef KEMU_PCI_PCI_H
#define KEMU_PCI_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/error.h"

#define PCI_CONFIG_SIZE     256  /* conventional config space */
#define PCI_EXT_CONFIG_SIZE 4096 /* PCI Express extended config space */
#define PCI_NUM_BARS        6
#define PCI_SLOTS           32
#define PCI_FUNCS           8

/* Type 0 header registers. */
#define PCI_VENDOR_ID      0x00
#define PCI_DEVICE_ID      0x02
#define PCI_COMMAND        0x04
#define PCI_STATUS         0x06
#define PCI_REVISION_ID    0x08
#define PCI_CLASS_PROG     0x09
#define PCI_CLASS_DEVICE   0x0a /* sub-class (0x0a) and base class (0x0b) */
#define PCI_CACHE_LINE     0x0c
#define PCI_LATENCY_TIMER  0x0d
#define PCI_HEADER_TYPE    0x0e
#define PCI_BIST           0x0f
#define PCI_BAR0           0x10
#define PCI_SUBSYS_VENDOR  0x2c
#define PCI_SUBSYS_ID      0x2e
#define PCI_ROM_ADDRESS    0x30
#define PCI_CAP_PTR        0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN  0x3d
#define PCI_MIN_GNT        0x3e
#define PCI_MAX_LAT        0x3f
#define PCI_HEADER_END     0x40 /* capabilities start here */

#define PCI_COMMAND_IO            0x0001
#define PCI_COMMAND_MEMORY        0x0002
#define PCI_COMMAND_MASTER        0x0004
#define PCI_COMMAND_PARITY        0x0040
#define PCI_COMMAND_SERR          0x0100
#define PCI_COMMAND_INTX_DISABLE  0x0400
#define PCI_STATUS_INTERRUPT      0x0008
#define PCI_STATUS_CAP_LIST       0x0010
#define PCI_STATUS_W1C            0xf900 /* parity, sig/rcv target/master abort, SERR, DPE */
#define PCI_HEADER_TYPE_MULTIFUNC 0x80

#define PCI_BAR_IO           0x01 /* bit 0 of an I/O BAR */
#define PCI_BAR_MEM_64       0x04 /* type field 10b */
#define PCI_BAR_MEM_PREFETCH 0x08

#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VNDR 0x09

#define PCI_MSIX_FLAGS              2 /* message control, relative to the capability */
#define PCI_MSIX_TABLE              4
#define PCI_MSIX_PBA                8
#define PCI_MSIX_CAP_LEN            12
#define PCI_MSIX_FLAGS_QSIZE        0x07ff
#define PCI_MSIX_FLAGS_MASKALL      0x4000
#define PCI_MSIX_FLAGS_ENABLE       0x8000
#define PCI_MSIX_ENTRY_SIZE         16
#define PCI_MSIX_ENTRY_CTRL_MASKBIT 0x1
#define PCI_MSIX_MAX_VECTORS        2048

enum pci_bar_type {
    PCI_BAR_TYPE_IO,
    PCI_BAR_TYPE_MEM32,
    PCI_BAR_TYPE_MEM64, /* takes two BAR slots: bar and bar + 1 */
};

/* "No address": an unmapped BAR. */
#define PCI_BAR_UNMAPPED UINT64_MAX

struct pci_device;

struct pci_device_ops {
    /* After the generic handling of a config write (registers already updated). Optional. */
    void (*config_write)(struct pci_device *dev, unsigned off, unsigned size, uint32_t val);
    /* The BAR was mapped at addr (enabled) or unmapped from addr (!enabled). Optional. */
    void (*bar_map)(struct pci_device *dev, unsigned bar, uint64_t addr, bool enabled);
    /* Device-specific reset, after the generic registers have been reset. Optional. */
    void (*reset)(struct pci_device *dev);
    /* A watched MSI-X vector (pci_msix_watch) changed how it can be raised: fd is the eventfd
     * whose write injects it right now without kemu (its irqfd: MSI-X on, vector and function
     * unmasked, bus mastering on), or -1 (go through pci_msix_notify, which masks and latches).
     * Called with the device lock held: take no lock that is held around a PCI call. Optional. */
    void (*msix_direct)(struct pci_device *dev, unsigned vector, int fd);
};

/* What the board provides: address-bus registration and interrupt delivery. */
struct pci_bus_io {
    /* Register [base, base+len) on the PIO (!mmio) or MMIO bus. Returns 0 or -1 (e.g. overlap). */
    int (*map)(void *ctx, bool mmio, uint64_t base, uint64_t len, const struct bus_ops *ops,
               void *opaque);
    /* Remove the range registered at base with this opaque. */
    void (*unmap)(void *ctx, bool mmio, uint64_t base, void *opaque);
    /* Deliver an MSI: a 32-bit memory write of data to addr. Optional (messages dropped). */
    void (*msi_send)(void *ctx, uint64_t addr, uint32_t data);
    /*
     * MSI through an irqfd (optional, as a set): msi_route_add routes message addr/data to a new
     * handle (a GSI) and has the hypervisor inject it whenever eventfd fd is written; it returns
     * the handle, or -1 (unsupported, routes exhausted): msi_send then carries that vector.
     * msi_route_update re-points a handle (0, or -1: unchanged); msi_route_del frees it.
     */
    int (*msi_route_add)(void *ctx, int fd, uint64_t addr, uint32_t data);
    int (*msi_route_update)(void *ctx, int handle, uint64_t addr, uint32_t data);
    void (*msi_route_del)(void *ctx, int handle, int fd);
    /* Drive a GSI (level-triggered INTx). Optional. */
    void (*set_irq)(void *ctx, unsigned gsi, int level);
    /* Have the hypervisor signal eventfd fd, without an exit to kemu, when the guest writes len
     * (1, 2, 4 or 8) bytes at MMIO address addr (KVM ioeventfd); assign=false removes it.
     * Returns 0, or -1 when unavailable: the device then signals fd from its MMIO handler. */
    int (*ioeventfd)(void *ctx, uint64_t addr, unsigned len, int fd, bool assign);
    void *ctx;
};

struct pci_bar {
    uint64_t size; /* power of two; 0: BAR not implemented */
    enum pci_bar_type type;
    bool prefetch;
    const struct bus_ops *ops; /* accesses see offsets relative to the BAR base */
    void *opaque;
    uint64_t addr; /* where it is mapped, or PCI_BAR_UNMAPPED */
};

struct pci_msix {
    unsigned nvec; /* 0: no MSI-X */
    unsigned bar;
    uint32_t table_off, pba_off; /* within the BAR */
    unsigned cap;                /* config offset of the capability */
    uint8_t *table;              /* nvec entries of 16 bytes */
    uint64_t *pba;               /* (nvec + 63) / 64 words */
    /* Per vector: the irqfd route that carries it while MSI-X is enabled and it has been
     * unmasked once, following its table entry; handle -1 means msi_send. */
    struct pci_msix_route {
        int fd;     /* eventfd, or -1 */
        int handle; /* from msi_route_add, or -1 */
        uint64_t addr;
        uint32_t data;
        unsigned watchers; /* pci_msix_watch count */
        int direct;        /* last fd given to ops->msix_direct (-2: none yet) */
    } * route;
};

struct pci_bus;

struct pci_device {
    const char *name; /* QEMU's device name: "virtio-blk-pci" */
    const char *id;   /* the user's id= (info pci, query-pci), NULL if none */
    const struct pci_device_ops *ops;
    void *opaque; /* for the device kind */

    unsigned config_size; /* PCI_CONFIG_SIZE or PCI_EXT_CONFIG_SIZE */
    uint8_t config[PCI_EXT_CONFIG_SIZE];
    uint8_t wmask[PCI_EXT_CONFIG_SIZE];   /* bits the guest may change */
    uint8_t w1cmask[PCI_EXT_CONFIG_SIZE]; /* bits a guest write of 1 clears */

    struct pci_bar bar[PCI_NUM_BARS];
    struct pci_msix msix;

    struct pci_bus *bus; /* NULL until pci_bus_add */
    unsigned slot, func;
    unsigned next_cap;  /* where the next capability goes */
    bool intx_level;    /* what the device asks for, before INTx-disable */
    bool intx_asserted; /* what is driven towards the PIRQ */

    pthread_mutex_t lock;
};

/*
 * A type 0 device: class_code is base class << 16 | sub-class << 8 | programming interface.
 * pin is 0 (no INTx) or 1..4 for INTA#..INTD#. Call before anything else on dev.
 */
void pci_device_init(struct pci_device *dev, const char *name, const struct pci_device_ops *ops,
                     void *opaque, uint16_t vendor, uint16_t device, uint32_t class_code,
                     uint8_t revision, uint8_t pin);
void pci_device_set_subsystem(struct pci_device *dev, uint16_t vendor, uint16_t id);
/* Give the device a 4 KiB (PCI Express) config space; offsets 0x100+ start all read-only. */
void pci_device_set_extended_config(struct pci_device *dev);
/* Releases what pci_msix_init allocated. The device must be off the bus or the bus discarded. */
void pci_device_destroy(struct pci_device *dev);

/*
 * Declare BAR bar: size is a power of two (I/O: 4 bytes to 64 KiB; memory: 16 bytes or more,
 * below 4 GiB for a 32-bit BAR).
 * A 64-bit BAR also uses bar + 1. ops/opaque receive the guest's accesses once it is mapped.
 */
int pci_bar_init(struct pci_device *dev, unsigned bar, enum pci_bar_type type, bool prefetch,
                 uint64_t size, const struct bus_ops *ops, void *opaque, struct error *err);
/* The address the BAR registers hold now (whether decode is enabled or not). */
uint64_t pci_bar_address(const struct pci_device *dev, unsigned bar);

/*
 * Append a capability of len bytes (including ID and next pointer) to the list: returns its
 * config offset, or -1 when it does not fit. The body starts zeroed and read-only; the device
 * fills dev->config and sets dev->wmask for its writable fields.
 */
int pci_add_capability(struct pci_device *dev, uint8_t id, unsigned len);
/* Config offset of the first capability with this ID in the list, or 0. */
unsigned pci_find_capability(const struct pci_device *dev, uint8_t id);

/* Guest config accesses: size 1, 2 or 4 within the config space; else reads all-ones/drops. */
uint32_t pci_config_read(struct pci_device *dev, unsigned off, unsigned size);
void pci_config_write(struct pci_device *dev, unsigned off, unsigned size, uint32_t val);

/* Power-on state: command 0, BARs 0 and unmapped, MSI-X disabled and masked, INTx low. */
void pci_device_reset(struct pci_device *dev);

/* Raise or lower the device's INTx pin; status bit 3 follows, the line honours INTx-disable. */
void pci_set_irq(struct pci_device *dev, int level);

/*
 * MSI-X with nvec vectors whose table and PBA live in the memory BAR bar (declared already) at
 * table_off and pba_off (8-byte aligned, inside the BAR, not overlapping).
 * The BAR's bus_ops must forward those ranges: pci_msix_bar_read/write do it for any offset and
 * return false when the offset is not the MSI-X table or PBA.
 */
int pci_msix_init(struct pci_device *dev, unsigned nvec, unsigned bar, uint32_t table_off,
                  uint32_t pba_off, struct error *err);
bool pci_msix_bar_read(struct pci_device *dev, unsigned bar, uint64_t off, unsigned size,
                       uint64_t *val);
bool pci_msix_bar_write(struct pci_device *dev, unsigned bar, uint64_t off, unsigned size,
                        uint64_t val);
/* Offsets relative to the table and to the PBA; out-of-range reads give 0, writes are dropped. */
uint64_t pci_msix_table_read(struct pci_device *dev, uint64_t off, unsigned size);
void pci_msix_table_write(struct pci_device *dev, uint64_t off, unsigned size, uint64_t val);
uint64_t pci_msix_pba_read(struct pci_device *dev, uint64_t off, unsigned size);
bool pci_msix_enabled(struct pci_device *dev);
bool pci_msix_masked(struct pci_device *dev, unsigned vector);
/*
 * Signal vector: sent at once when MSI-X is enabled, the vector and the function are unmasked
 * and bus mastering is on; latched in the PBA when masked (and sent when unmasked). Ignored
 * when MSI-X is disabled, bus mastering is off or vector is out of range. Goes out through the
 * vector's irqfd when it has one (a write to an eventfd), else through msi_send.
 */
void pci_msix_notify(struct pci_device *dev, unsigned vector);
/*
 * Follow vector's direct fd (see ops->msix_direct), for a source that can write an eventfd
 * itself (vhost): on=true reports the current state through ops->msix_direct at once and every
 * change after; watches nest. Out-of-range vectors and devices without MSI-X are ignored.
 */
void pci_msix_watch(struct pci_device *dev, unsigned vector, bool on);

struct pci_bus {
    struct pci_device *dev[PCI_SLOTS][PCI_FUNCS];
    unsigned first_auto_slot; /* where placement without a slot starts (1 unless the board says) */
    const struct pci_bus_io *io;
    uint8_t gsi_for_pirq[4];
    bool intx_routed;
    unsigned pirq_count[4]; /* asserted devices per PIRQ (lines are shared) */
    pthread_mutex_t lock;   /* guards pirq_count */
};

void pci_bus_init(struct pci_bus *bus, const struct pci_bus_io *io);
/* Forgets the devices (their owners destroy them). */
void pci_bus_destroy(struct pci_bus *bus);
/*
 * Plug dev in at slot.func; slot -1 takes the first free slot from first_auto_slot, with func
 * then 0. Fails for an invalid or taken address.
 */
int pci_bus_add(struct pci_bus *bus, struct pci_device *dev, int slot, int func, struct error *err);
struct pci_device *pci_bus_get(struct pci_bus *bus, unsigned slot, unsigned func);
void pci_bus_reset(struct pci_bus *bus);

/*
 * What firmware does before the OS boots: give every implemented BAR an address (naturally
 * aligned, largest first) from the windows [base, base + len), set the interrupt line register
 * to the routed GSI, and enable I/O and memory decode (not bus mastering). 64-bit BARs go to
 * the 64-bit window when it has len, else to the 32-bit one. Fails when a window is too small.
 */
struct pci_windows {
    uint64_t io_base, io_len;
    uint64_t mem32_base, mem32_len;
    uint64_t mem64_base, mem64_len;
};
int pci_bus_assign_bars(struct pci_bus *bus, const struct pci_windows *win, struct error *err);

/* QEMU's addr= syntax: "slot" or "slot.func", decimal or 0x-hex: "4", "0x4", "0x04.1". */
int pci_parse_addr(const char *s, int *slot, int *func, struct error *err);

/*
 * INTx routing as on PIIX: slot s, pin p (1 = INTA#) drives PIRQ (s + p - 1) mod 4, and PIRQ n
 * drives GSI gsi_for_pirq[n]. Until this is called INTx goes nowhere.
 */
void pci_bus_set_intx_routing(struct pci_bus *bus, const uint8_t gsi_for_pirq[4]);
/* PIRQ (0..3 for A..D) of slot/pin, or -1 when pin is 0. For ACPI _PRT and MP tables. */
int pci_intx_pirq(unsigned slot, unsigned pin);
/* GSI the device's pin is routed to, or -1 (no pin, not on a routed bus). */
int pci_device_gsi(const struct pci_device *dev);

/* The PCI class name of class_code (base class << 8 | subclass) as `info pci` and query-pci's
 * class_info.desc give it ("Ethernet controller"), or NULL for a class without one. */
const char *pci_class_desc(uint16_t class_code);

#endif
