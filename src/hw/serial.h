/*
 * 8250/16550A UART as a PC sees it at COM1..COM4 (0x3f8/0x2f8/0x3e8/0x2e8, 8 ports each).
 * Guest output goes straight to the chardev (THRE never drops for long, so a console does not
 * crawl); host input fills a 16-byte receive FIFO paced by the chardev frontend's can_receive.
 */
#ifndef KEMU_HW_SERIAL_H
#define KEMU_HW_SERIAL_H

#include "chardev/chardev.h"
#include "core/bus.h"
#include "core/irq.h"

#define SERIAL_IO_LEN 8 /* register the port range as (base, SERIAL_IO_LEN) */

struct serial;

/*
 * chr may be NULL (output discarded, no input). The UART installs itself as chr's frontend.
 * The irq line is driven high while an enabled interrupt is pending and MCR.OUT2 is set.
 * Returns NULL when out of memory.
 */
struct serial *serial_create(struct chardev *chr, struct irq_line irq);
/* Power-on state (system reset). */
void serial_reset(struct serial *s);
/* Call after the event loop has stopped delivering input; detaches from the chardev. */
void serial_destroy(struct serial *s);

/* Accesses wider than a byte are split into byte accesses at consecutive offsets, as on ISA. */
extern const struct bus_ops serial_bus_ops;

#endif
