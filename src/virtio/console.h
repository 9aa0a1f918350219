/*
 * virtio-serial (VIRTIO 1.x, 5.3, device ID 3): QEMU's virtio-serial-pci with its virtconsole and
 * virtserialport children. Each port is backed by a chardev; the Linux guest sees the first
 * virtconsole as /dev/hvc0 and the serial ports as /dev/vportNpM (name in
 * /sys/class/virtio-ports/.../name).
 *
 * Queues (MULTIPORT layout): port 0 rx/tx, control rx/tx, port 1 rx/tx, ... so the device has
 * 2 * (max_ports + 1) queues. Guest output (tx queues) is serviced by one worker thread that
 * waits on the kick fds; host input is copied into the port's rx queue from the chardev's
 * receive callback on the main thread. Each queue has its own mutex.
 */
#ifndef KEMU_VIRTIO_CONSOLE_H
#define KEMU_VIRTIO_CONSOLE_H

#include <stdbool.h>

#include "chardev/chardev.h"
#include "core/error.h"
#include "core/memory.h"
#include "virtio/device.h"

/* Feature bits (spec 5.3.3). */
#define VIRTIO_CONSOLE_F_SIZE        0
#define VIRTIO_CONSOLE_F_MULTIPORT   1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

/* Control message events (spec 5.3.6.2); le32 id, le16 event, le16 value. */
#define VIRTIO_CONSOLE_DEVICE_READY  0
#define VIRTIO_CONSOLE_DEVICE_ADD    1
#define VIRTIO_CONSOLE_DEVICE_REMOVE 2
#define VIRTIO_CONSOLE_PORT_READY    3
#define VIRTIO_CONSOLE_CONSOLE_PORT  4
#define VIRTIO_CONSOLE_RESIZE        5
#define VIRTIO_CONSOLE_PORT_OPEN     6
#define VIRTIO_CONSOLE_PORT_NAME     7
#define VIRTIO_CONSOLE_CTRL_SIZE     8

/* Config space: le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr. */
#define VIRTIO_CONSOLE_CFG_MAX_NR_PORTS 4
#define VIRTIO_CONSOLE_CFG_EMERG_WR     8
#define VIRTIO_CONSOLE_CFG_SIZE         12

/* Queue numbers of the layout above. */
#define VIRTIO_CONSOLE_CTRL_RX 2
#define VIRTIO_CONSOLE_CTRL_TX 3

#define VIRTIO_SERIAL_MAX_PORTS     31 /* 2 * (31 + 1) queues = VIRTIO_MAX_QUEUES */
#define VIRTIO_SERIAL_DEFAULT_PORTS 31 /* QEMU's max_ports default */
#define VIRTIO_SERIAL_NAME_MAX      255

struct virtio_serial;

/* max_ports: 1..VIRTIO_SERIAL_MAX_PORTS. */
int virtio_serial_create(struct guest_mem *mem, unsigned max_ports, struct virtio_serial **out,
                         struct error *err);
/*
 * Add a port before the guest runs. nr -1: the next free number (port 0 is reserved for the
 * first virtconsole, as in QEMU). chr may be NULL (output discarded, no input); otherwise the
 * port becomes chr's frontend. name may be NULL.
 */
int virtio_serial_add_port(struct virtio_serial *vs, int nr, struct chardev *chr, bool console,
                           const char *name, struct error *err);
/* Queue numbers of a port (for tests and the transport's messages). */
unsigned virtio_serial_rx_queue(unsigned nr);
unsigned virtio_serial_tx_queue(unsigned nr);
struct virtio_device *virtio_serial_vdev(struct virtio_serial *vs);
/* Stops the device and detaches from the chardevs; call after the event loop stopped. */
void virtio_serial_destroy(struct virtio_serial *vs);

#endif
