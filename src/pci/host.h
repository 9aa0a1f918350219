/*
 * The pc machine's PCI host bridge (i440FX, 00:00.0) and configuration mechanism #1.
 *
 * CONFIG_ADDRESS is the dword at 0xCF8: only 32-bit accesses there reach it. Byte and word
 * accesses to 0xCF8..0xCFB are ordinary I/O that the bridge does not claim; 0xCF9 in particular
 * is the reset control register (hw/acpi_pm.c). CONFIG_DATA is 0xCFC..0xCFF, any size, the
 * port's low two bits selecting the byte within the addressed dword.
 *
 * Port registration (src/core/bus.c dispatches an access to the range containing its first
 * port, whatever its size), done by pci_host_register_ports:
 *   0xCF8 len 1  pci_host_addr_ops      (a dword access at 0xCF8 arrives here as offset 0, size 4)
 *   0xCFA len 2  pci_host_unclaimed_ops (reads all-ones, writes dropped: not CONFIG_ADDRESS)
 *   0xCFC len 4  pci_host_data_ops
 * 0xCF9 stays with the reset control register, which then only ever sees accesses that start
 * at 0xCF9.
 */
#ifndef KEMU_PCI_HOST_H
#define KEMU_PCI_HOST_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "core/bus.h"
#include "core/error.h"
#include "pci/pci.h"

#define PCI_HOST_ADDR_PORT 0xcf8
#define PCI_HOST_DATA_PORT 0xcfc
#define PCI_HOST_DATA_LEN  4

#define PCI_HOST_VENDOR 0x8086 /* Intel */
#define PCI_HOST_DEVICE 0x1237 /* 440FX */
#define PCI_HOST_CLASS  0x060000

#define PCI_CONFIG_ENABLE 0x80000000u

struct pci_host {
    struct pci_bus *bus;
    struct pci_device dev; /* 00:00.0 */
    uint32_t config_addr;  /* CONFIG_ADDRESS as last written */
    pthread_mutex_t lock;  /* CONFIG_ADDRESS + the data access that uses it */
};

/* Set up the bridge and plug it in at 00:00.0 (which must be free). */
int pci_host_init(struct pci_host *h, struct pci_bus *bus, struct error *err);
void pci_host_destroy(struct pci_host *h);
/* The three registrations listed above on the port I/O bus. */
int pci_host_register_ports(struct pci_host *h, struct bus *pio, struct error *err);

/* opaque: the struct pci_host, except pci_host_unclaimed_ops which ignores it. */
extern const struct bus_ops pci_host_addr_ops;
extern const struct bus_ops pci_host_data_ops;
extern const struct bus_ops pci_host_unclaimed_ops;

/* `info pci`: every function on bus 0 with class, IDs, BARs and IRQ. */
void pci_host_info(struct pci_bus *bus, FILE *out);

#endif
