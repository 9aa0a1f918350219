/*
 * i8042 keyboard controller, enough for Linux to probe it, see that no keyboard or mouse is
 * attached, and reset the machine through it (the usual "reboot=kbd" path).
 */
#ifndef KEMU_HW_I8042_H
#define KEMU_HW_I8042_H

#include "core/bus.h"
#include "core/irq.h"

#define I8042_DATA_PORT 0x60 /* register (I8042_DATA_PORT, 1) with i8042_data_ops */
#define I8042_CMD_PORT  0x64 /* register (I8042_CMD_PORT, 1) with i8042_cmd_ops */

struct i8042;

/*
 * reset(opaque) is called, on the vCPU thread and without the device lock held, when the guest
 * pulses the CPU reset line (command 0xFE or any 0xF0-0xFF with bit 0 clear, or 0xD1 writing an
 * output port value with bit 0 clear). kbd_irq is ISA IRQ 1, aux_irq ISA IRQ 12.
 * Returns NULL when out of memory.
 */
struct i8042 *i8042_create(void (*reset)(void *opaque), void *opaque, struct irq_line kbd_irq,
                           struct irq_line aux_irq);
/* Controller power-on state (system reset). */
void i8042_reset(struct i8042 *k);
void i8042_destroy(struct i8042 *k);

/* Two one-byte ranges; the offset within each is ignored. */
extern const struct bus_ops i8042_data_ops; /* port 0x60: output buffer / input data */
extern const struct bus_ops i8042_cmd_ops;  /* port 0x64: status / command */

#endif
