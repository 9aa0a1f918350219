/*
 * i8042 (8042-compatible PS/2) keyboard controller with nothing plugged into either port.
 *
 * The controller itself is complete enough for Linux's i8042 driver: self test (0xAA -> 0x55),
 * interface tests (0xAB/0xA9 -> 0), the command byte (CTR) and the rest of its 32 bytes of RAM
 * (0x20-0x3F read, 0x60-0x7F write), port enable/disable, the output port (0xD0/0xD1), and
 * 0xD2/0xD3 which place a byte in the output buffer as if it came from the keyboard/aux port;
 * 0xD3 is the "AUX loopback" Linux uses to detect the aux port and to check that IRQ 12 is
 * delivered, so its byte carries the AUXDATA status bit and raises IRQ 12 when CTR enables it.
 *
 * No keyboard or mouse is attached. A byte sent to one (a plain write to port 0x60, or 0xD4 then
 * a byte) times out on real hardware; the controller then reports status bit 6 (timeout) with
 * 0xFE in the output buffer (plus status bit 5 for the aux port). Linux ends up quickly: atkbd
 * takes 0xFE as a NAK (one retry, then the command fails with no 200 ms wait) and psmouse
 * aborts the command as soon as it sees the timeout flag, so both decide "no device" at once.
 *
 * Output buffer: real hardware has one byte; a short queue stands in for the device FIFO so
 * back-to-back command replies are not lost. The head byte is what port 0x60 returns and its
 * source/error flags show in the status register. IRQ 1 (kbd) / IRQ 12 (aux) are high while a
 * byte from that source sits in the output buffer and CTR enables that interrupt; reading port
 * 0x60 lowers it (and raises it again if another byte follows). Reading with an empty buffer
 * returns the last byte again, as hardware does. IBF is never set: writes are handled at once.
 *
 * Reset: the output port bit 0 drives the CPU reset line (active low). Pulse commands 0xF0-0xFF
 * pulse the lines whose bit is 0 in the command's low nibble (0xFE: reset only), 0xD1 with bit 0
 * clear holds reset. Both call the reset callback after dropping the device lock. The A20 gate
 * (output port bit 1) is stored but has no effect: KVM guests always see A20 enabled.
 *
 * Power-on state is what a PC BIOS leaves behind (kemu boots kernels without one): CTR =
 * XLATE | AUXDIS | SYS | KBDINT (0x65), status SYS flag set, keyboard not inhibited.
 */
#include "hw/i8042.h"

#include <pthread.h>
#include <stdlib.h>

#define STR_OBF     0x01
#define STR_IBF     0x02
#define STR_SYS     0x04
#define STR_CMDDAT  0x08
#define STR_KEYLOCK 0x10 /* 1 = keyboard not inhibited */
#define STR_AUXDATA 0x20
#define STR_TIMEOUT 0x40
#define STR_PARITY  0x80

#define CTR_KBDINT 0x01
#define CTR_AUXINT 0x02
#define CTR_SYS    0x04
#define CTR_KBDDIS 0x10
#define CTR_AUXDIS 0x20
#define CTR_XLATE  0x40

#define CTR_POWER_ON (CTR_XLATE | CTR_AUXDIS | CTR_SYS | CTR_KBDINT)

#define OUTPORT_RESET    0x01 /* active low: 0 asserts CPU reset */
#define OUTPORT_A20      0x02
#define OUTPORT_KBD_OBF  0x10
#define OUTPORT_AUX_OBF  0x20
#define OUTPORT_POWER_ON 0xcf /* reset deasserted, A20 on, clock/data lines high */

/* Reply of a port with nothing attached. */
#define NO_DEVICE_REPLY 0xfe

#define QUEUE_LEN 16

struct i8042 {
    pthread_mutex_t lock;
    void (*reset)(void *opaque);
    void *opaque;
    struct irq_line kbd_irq, aux_irq;

    uint8_t ram[32]; /* ram[0] is the command byte (CTR) */
    uint8_t outport;
    uint8_t status;  /* STR_SYS and STR_CMDDAT; the rest is computed */
    uint8_t pending; /* command waiting for its data byte, 0 if none */
    uint8_t last;

    struct {
        uint8_t data;
        uint8_t flags; /* STR_AUXDATA | STR_TIMEOUT | STR_PARITY */
    } queue[QUEUE_LEN];
    unsigned head, count;

    bool kbd_level, aux_level;
};

static void update_irq(struct i8042 *k)
{
    bool kbd = false, aux = false;
    if (k->count) {
        if (k->queue[k->head].flags & STR_AUXDATA)
            aux = k->ram[0] & CTR_AUXINT;
        else
            kbd = k->ram[0] & CTR_KBDINT;
    }
    if (kbd != k->kbd_level) {
        k->kbd_level = kbd;
        irq_set_level(&k->kbd_irq, kbd);
    }
    if (aux != k->aux_level) {
        k->aux_level = aux;
        irq_set_level(&k->aux_irq, aux);
    }
}

static void lower_irqs(struct i8042 *k)
{
    if (k->kbd_level) {
        k->kbd_level = false;
        irq_set_level(&k->kbd_irq, 0);
    }
    if (k->aux_level) {
        k->aux_level = false;
        irq_set_level(&k->aux_irq, 0);
    }
}

static void enqueue(struct i8042 *k, uint8_t data, uint8_t flags)
{
    if (k->count == QUEUE_LEN)
        return;
    unsigned tail = (k->head + k->count) % QUEUE_LEN;
    k->queue[tail].data = data;
    k->queue[tail].flags = flags;
    k->count++;
}

static uint8_t read_status(const struct i8042 *k)
{
    uint8_t v = k->status | STR_KEYLOCK;
    if (k->count)
        v |= STR_OBF | k->queue[k->head].flags;
    return v;
}

static uint8_t read_outport(const struct i8042 *k)
{
    uint8_t v = k->outport & ~(OUTPORT_KBD_OBF | OUTPORT_AUX_OBF);
    if (k->count)
        v |= (k->queue[k->head].flags & STR_AUXDATA) ? OUTPORT_AUX_OBF : OUTPORT_KBD_OBF;
    return v;
}

static void write_ctr(struct i8042 *k, uint8_t v)
{
    k->ram[0] = v;
    /* The status register's system flag mirrors CTR bit 2. */
    if (v & CTR_SYS)
        k->status |= STR_SYS;
    else
        k->status &= ~STR_SYS;
}

static void reset_locked(struct i8042 *k)
{
    for (unsigned i = 0; i < sizeof(k->ram); i++)
        k->ram[i] = 0;
    k->outport = OUTPORT_POWER_ON;
    k->status = STR_CMDDAT;
    write_ctr(k, CTR_POWER_ON);
    k->pending = 0;
    k->last = 0;
    k->head = k->count = 0;
    update_irq(k);
}

/* Returns true when the CPU reset line was asserted. */
static bool write_command(struct i8042 *k, uint8_t cmd)
{
    k->status |= STR_CMDDAT;
    k->pending = 0;

    if (cmd >= 0x20 && cmd <= 0x3f) {
        enqueue(k, k->ram[cmd - 0x20], 0);
        return false;
    }
    if (cmd >= 0x60 && cmd <= 0x7f) {
        k->pending = cmd;
        return false;
    }
    if (cmd >= 0xf0) /* pulse output port bits 3:0 that are 0 in the command */
        return !(cmd & OUTPORT_RESET);

    switch (cmd) {
    case 0xa7: /* disable aux interface */
        k->ram[0] |= CTR_AUXDIS;
        break;
    case 0xa8: /* enable aux interface */
        k->ram[0] &= ~CTR_AUXDIS;
        break;
    case 0xa9: /* aux interface test: 0 = no error */
    case 0xab: /* keyboard interface test */
        enqueue(k, 0x00, 0);
        break;
    case 0xaa: /* controller self test */
        k->status |= STR_SYS;
        enqueue(k, 0x55, 0);
        break;
    case 0xad: /* disable keyboard interface */
        k->ram[0] |= CTR_KBDDIS;
        break;
    case 0xae: /* enable keyboard interface */
        k->ram[0] &= ~CTR_KBDDIS;
        break;
    case 0xc0: /* read input port: keyboard not inhibited */
        enqueue(k, 0x80, 0);
        break;
    case 0xd0: /* read output port */
        enqueue(k, read_outport(k), 0);
        break;
    case 0xd1: /* write output port */
    case 0xd2: /* write keyboard output buffer */
    case 0xd3: /* write aux output buffer */
    case 0xd4: /* write to aux device */
        k->pending = cmd;
        break;
    case 0xe0: /* read test inputs */
        enqueue(k, 0x00, 0);
        break;
    default:
        break; /* unknown commands are ignored */
    }
    return false;
}

static bool write_data(struct i8042 *k, uint8_t v)
{
    uint8_t cmd = k->pending;
    k->status &= ~STR_CMDDAT;
    k->pending = 0;

    if (cmd >= 0x60 && cmd <= 0x7f) {
        if (cmd == 0x60)
            write_ctr(k, v);
        else
            k->ram[cmd - 0x60] = v;
        return false;
    }
    switch (cmd) {
    case 0xd1:
        k->outport = v;
        return !(v & OUTPORT_RESET);
    case 0xd2:
        enqueue(k, v, 0);
        break;
    case 0xd3:
        enqueue(k, v, STR_AUXDATA);
        break;
    case 0xd4:
        /* Sending to the aux device enables its interface; nothing answers. */
        k->ram[0] &= ~CTR_AUXDIS;
        enqueue(k, NO_DEVICE_REPLY, STR_AUXDATA | STR_TIMEOUT);
        break;
    default:
        k->ram[0] &= ~CTR_KBDDIS;
        enqueue(k, NO_DEVICE_REPLY, STR_TIMEOUT);
        break;
    }
    return false;
}

static uint64_t i8042_data_read(void *opaque, uint64_t offset, unsigned size)
{
    struct i8042 *k = opaque;
    pthread_mutex_lock(&k->lock);
    if (k->count) {
        k->last = k->queue[k->head].data;
        k->head = (k->head + 1) % QUEUE_LEN;
        k->count--;
        /*
         * OBF drops when the byte is read and rises again as the next one is loaded: lower the
         * line first so an edge-triggered IRQ fires again (Linux reads one byte per interrupt).
         */
        lower_irqs(k);
        update_irq(k);
    }
    uint8_t v = k->last;
    pthread_mutex_unlock(&k->lock);
    return v;
}

static void i8042_data_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct i8042 *k = opaque;
    pthread_mutex_lock(&k->lock);
    bool reset = write_data(k, (uint8_t)value);
    update_irq(k);
    pthread_mutex_unlock(&k->lock);
    if (reset && k->reset)
        k->reset(k->opaque);
}

static uint64_t i8042_cmd_read(void *opaque, uint64_t offset, unsigned size)
{
    struct i8042 *k = opaque;
    pthread_mutex_lock(&k->lock);
    uint8_t v = read_status(k);
    pthread_mutex_unlock(&k->lock);
    return v;
}

static void i8042_cmd_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct i8042 *k = opaque;
    pthread_mutex_lock(&k->lock);
    bool reset = write_command(k, (uint8_t)value);
    update_irq(k);
    pthread_mutex_unlock(&k->lock);
    if (reset && k->reset)
        k->reset(k->opaque);
}

const struct bus_ops i8042_data_ops = {
    .read = i8042_data_read,
    .write = i8042_data_write,
};

const struct bus_ops i8042_cmd_ops = {
    .read = i8042_cmd_read,
    .write = i8042_cmd_write,
};

struct i8042 *i8042_create(void (*reset)(void *opaque), void *opaque, struct irq_line kbd_irq,
                           struct irq_line aux_irq)
{
    struct i8042 *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    pthread_mutex_init(&k->lock, NULL);
    k->reset = reset;
    k->opaque = opaque;
    k->kbd_irq = kbd_irq;
    k->aux_irq = aux_irq;
    reset_locked(k);
    return k;
}

void i8042_reset(struct i8042 *k)
{
    pthread_mutex_lock(&k->lock);
    reset_locked(k);
    pthread_mutex_unlock(&k->lock);
}

void i8042_destroy(struct i8042 *k)
{
    if (!k)
        return;
    pthread_mutex_destroy(&k->lock);
    free(k);
}
