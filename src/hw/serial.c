/*
 * 8250/16550A UART.
 *
 * Modelled as Linux's 8250 driver probes and drives it: the scratch register and the IER
 * read-back pass the "is something there" test, IIR bits 7:6 read 11 once FCR enables the
 * FIFOs so the port is detected as a 16550A (bit 5 stays 0, so it is not taken for a 16750),
 * and loopback mode routes MCR outputs to the MSR inputs and transmitted bytes to the receiver
 * so the autoconfig loopback test passes.
 *
 * Transmit is immediate: a THR write goes straight to the chardev (outside the device lock),
 * so THR/TSR are empty again at once and LSR.THRE|TEMT never drop. The THRE interrupt follows
 * the 16550: it becomes pending when IER.ETBEI goes 0->1 (THR is always empty here) and after
 * every THR write, and is cleared by reading IIR while it is the reported reason, by a THR
 * write, or by clearing ETBEI. Since the byte is gone before the vCPU continues, the write
 * clears and re-raises it in one step: the line stays high rather than pulsing, which a
 * driver that loops until IIR reports "no interrupt" (as Linux does) cannot tell apart.
 *
 * Receive: the chardev frontend's can_receive reports the free FIFO space (1 when RBR is
 * empty with FIFOs off) and receive fills the FIFO. There is no character-timeout timer: a
 * FIFO holding fewer bytes than the trigger level reports the timeout reason (IIR 0xCC) at
 * once, as if the four character times had passed. When the guest drains the FIFO after input
 * was paused, chardev_accept_input resumes the host side. In loopback mode the receiver is
 * disconnected from the chardev (input is paused) and fed by THR writes instead.
 *
 * Interrupt line: high while an enabled reason is pending, gated by MCR.OUT2 as on a PC (the
 * OUT2 pin enables the ISA IRQ driver). In loopback mode the OUT2 pin is forced inactive, so
 * the line is low there too, as on real PC hardware; IIR still reports the reason.
 */
#include "hw/serial.h"

#include <pthread.h>
#include <stdlib.h>

#define FIFO_SIZE 16

/* Register offsets */
#define REG_RBR_THR 0 /* DLL with DLAB */
#define REG_IER     1 /* DLM with DLAB */
#define REG_IIR_FCR 2
#define REG_LCR     3
#define REG_MCR     4
#define REG_LSR     5
#define REG_MSR     6
#define REG_SCR     7

#define IER_ERBFI 0x01 /* received data available */
#define IER_ETBEI 0x02 /* THR empty */
#define IER_ELSI  0x04 /* receiver line status */
#define IER_EDSSI 0x08 /* modem status */

#define IIR_NONE    0x01
#define IIR_MSI     0x00
#define IIR_THRI    0x02
#define IIR_RDI     0x04
#define IIR_RLSI    0x06
#define IIR_CTI     0x0c
#define IIR_FIFO_ON 0xc0

#define FCR_ENABLE    0x01
#define FCR_CLEAR_RX  0x02
#define FCR_CLEAR_TX  0x04
#define FCR_DMA       0x08
#define FCR_TRIG_MASK 0xc0

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR     0x01
#define LSR_OE     0x02
#define LSR_PE     0x04
#define LSR_FE     0x08
#define LSR_BI     0x10
#define LSR_THRE   0x20
#define LSR_TEMT   0x40
#define LSR_ERRORS (LSR_OE | LSR_PE | LSR_FE | LSR_BI)

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS  0x10
#define MSR_DSR  0x20
#define MSR_RI   0x40
#define MSR_DCD  0x80

/* Lines a host-side "cable" presents outside loopback: the other end is always ready. */
#define MSR_NORMAL_LINES (MSR_CTS | MSR_DSR | MSR_DCD)

struct serial {
    pthread_mutex_t lock;
    struct chardev *chr;
    struct irq_line irq;

    uint8_t ier, lcr, mcr, fcr, scr;
    uint8_t lsr_err;   /* OE/PE/FE/BI, cleared by reading LSR */
    uint8_t msr_lines; /* MSR bits 7:4 as currently seen */
    uint8_t msr_delta; /* MSR bits 3:0, cleared by reading MSR */
    uint16_t divisor;

    uint8_t rx[FIFO_SIZE];
    unsigned rx_head, rx_count;
    uint8_t rbr_last; /* what RBR returns when empty (stale data, as on hardware) */

    bool thr_ipending;
    bool irq_level;
    bool rx_paused; /* can_receive said 0: call chardev_accept_input once there is room */
};

/* Work to do once the lock is dropped: calling into the chardev under it could deadlock. */
struct serial_deferred {
    bool tx;
    uint8_t tx_byte;
    bool accept_input;
};

static unsigned rx_capacity(const struct serial *s)
{
    return (s->fcr & FCR_ENABLE) ? FIFO_SIZE : 1;
}

static unsigned rx_trigger(const struct serial *s)
{
    static const unsigned levels[4] = {1, 4, 8, 14};
    return levels[s->fcr >> 6];
}

static uint8_t iir_reason(const struct serial *s)
{
    if ((s->ier & IER_ELSI) && (s->lsr_err & LSR_ERRORS))
        return IIR_RLSI;
    if ((s->ier & IER_ERBFI) && s->rx_count) {
        if (!(s->fcr & FCR_ENABLE) || s->rx_count >= rx_trigger(s))
            return IIR_RDI;
        return IIR_CTI;
    }
    if ((s->ier & IER_ETBEI) && s->thr_ipending)
        return IIR_THRI;
    if ((s->ier & IER_EDSSI) && (s->msr_delta & 0x0f))
        return IIR_MSI;
    return IIR_NONE;
}

static void update_irq(struct serial *s)
{
    bool level = iir_reason(s) != IIR_NONE && (s->mcr & (MCR_OUT2 | MCR_LOOP)) == MCR_OUT2;
    if (level != s->irq_level) {
        s->irq_level = level;
        irq_set_level(&s->irq, level);
    }
}

/* Recompute the modem-status inputs after an MCR change and latch the delta bits. */
static void update_msr(struct serial *s)
{
    uint8_t lines = MSR_NORMAL_LINES;
    if (s->mcr & MCR_LOOP) {
        lines = 0;
        if (s->mcr & MCR_RTS)
            lines |= MSR_CTS;
        if (s->mcr & MCR_DTR)
            lines |= MSR_DSR;
        if (s->mcr & MCR_OUT1)
            lines |= MSR_RI;
        if (s->mcr & MCR_OUT2)
            lines |= MSR_DCD;
    }
    uint8_t changed = lines ^ s->msr_lines;
    if (changed & MSR_CTS)
        s->msr_delta |= MSR_DCTS;
    if (changed & MSR_DSR)
        s->msr_delta |= MSR_DDSR;
    if ((s->msr_lines & MSR_RI) && !(lines & MSR_RI)) /* trailing edge only */
        s->msr_delta |= MSR_TERI;
    if (changed & MSR_DCD)
        s->msr_delta |= MSR_DDCD;
    s->msr_lines = lines;
}

static void rx_clear(struct serial *s, struct serial_deferred *d)
{
    s->rx_head = s->rx_count = 0;
    if (s->rx_paused && !(s->mcr & MCR_LOOP)) {
        s->rx_paused = false;
        d->accept_input = true;
    }
}

/* A character arrives from the serial line (chardev or loopback). */
static void rx_push(struct serial *s, uint8_t byte)
{
    unsigned cap = rx_capacity(s);
    if (s->rx_count == cap) {
        s->lsr_err |= LSR_OE;
        /* With FIFOs the shift register is overwritten; without, RBR itself is. */
        if (cap == 1)
            s->rx[s->rx_head] = byte;
        return;
    }
    s->rx[(s->rx_head + s->rx_count) % FIFO_SIZE] = byte;
    s->rx_count++;
}

static uint8_t rx_pop(struct serial *s, struct serial_deferred *d)
{
    if (!s->rx_count)
        return s->rbr_last;
    uint8_t byte = s->rx[s->rx_head];
    s->rx_head = (s->rx_head + 1) % FIFO_SIZE;
    s->rx_count--;
    s->rbr_last = byte;
    /* Resume the host once the FIFO is drained: larger batches, fewer interrupts. */
    if (!s->rx_count && s->rx_paused && !(s->mcr & MCR_LOOP)) {
        s->rx_paused = false;
        d->accept_input = true;
    }
    return byte;
}

static void reset_locked(struct serial *s, struct serial_deferred *d)
{
    s->ier = 0;
    s->lcr = 0;
    s->mcr = 0;
    s->fcr = 0;
    s->scr = 0;
    s->lsr_err = 0;
    s->msr_lines = MSR_NORMAL_LINES;
    s->msr_delta = 0;
    s->divisor = 12; /* 9600 baud, as QEMU */
    s->rbr_last = 0;
    s->thr_ipending = false;
    rx_clear(s, d);
    update_irq(s);
}

static void run_deferred(struct serial *s, const struct serial_deferred *d)
{
    if (d->tx)
        chardev_write(s->chr, &d->tx_byte, 1);
    if (d->accept_input)
        chardev_accept_input(s->chr);
}

static uint8_t read_reg(struct serial *s, unsigned reg, struct serial_deferred *d)
{
    uint8_t v = 0;
    switch (reg) {
    case REG_RBR_THR:
        if (s->lcr & LCR_DLAB)
            return s->divisor & 0xff;
        v = rx_pop(s, d);
        break;
    case REG_IER:
        if (s->lcr & LCR_DLAB)
            return s->divisor >> 8;
        return s->ier;
    case REG_IIR_FCR:
        v = iir_reason(s);
        if (v == IIR_THRI)
            s->thr_ipending = false;
        if (s->fcr & FCR_ENABLE)
            v |= IIR_FIFO_ON;
        break;
    case REG_LCR:
        return s->lcr;
    case REG_MCR:
        return s->mcr;
    case REG_LSR:
        v = s->lsr_err | LSR_THRE | LSR_TEMT;
        if (s->rx_count)
            v |= LSR_DR;
        s->lsr_err = 0;
        break;
    case REG_MSR:
        v = s->msr_lines | s->msr_delta;
        s->msr_delta = 0;
        break;
    case REG_SCR:
        return s->scr;
    }
    update_irq(s);
    return v;
}

static void write_reg(struct serial *s, unsigned reg, uint8_t v, struct serial_deferred *d)
{
    switch (reg) {
    case REG_RBR_THR:
        if (s->lcr & LCR_DLAB) {
            s->divisor = (s->divisor & 0xff00) | v;
            return;
        }
        if (s->mcr & MCR_LOOP) {
            rx_push(s, v);
        } else {
            d->tx = true;
            d->tx_byte = v;
        }
        /* Cleared by the write, set again as the (instant) transmission empties THR. */
        s->thr_ipending = true;
        break;
    case REG_IER:
        if (s->lcr & LCR_DLAB) {
            s->divisor = (uint16_t)((s->divisor & 0x00ff) | (v << 8));
            return;
        }
        v &= 0x0f;
        if ((v & IER_ETBEI) && !(s->ier & IER_ETBEI))
            s->thr_ipending = true; /* THR is empty: a 0->1 edge of ETBEI raises THRE */
        else if (!(v & IER_ETBEI))
            s->thr_ipending = false;
        s->ier = v;
        break;
    case REG_IIR_FCR:
        if ((v ^ s->fcr) & FCR_ENABLE)
            rx_clear(s, d); /* toggling the FIFO enable empties both FIFOs */
        if (!(v & FCR_ENABLE)) {
            s->fcr = 0; /* the other bits are only programmed with the enable bit set */
            break;
        }
        if (v & FCR_CLEAR_RX)
            rx_clear(s, d);
        /* FCR_CLEAR_TX: the transmit FIFO is always empty here. */
        s->fcr = v & (FCR_ENABLE | FCR_DMA | FCR_TRIG_MASK);
        break;
    case REG_LCR:
        s->lcr = v;
        return;
    case REG_MCR: {
        bool was_loop = s->mcr & MCR_LOOP;
        s->mcr = v & 0x1f;
        update_msr(s);
        if (was_loop && !(s->mcr & MCR_LOOP) && s->rx_paused && s->rx_count < rx_capacity(s)) {
            s->rx_paused = false;
            d->accept_input = true;
        }
        break;
    }
    case REG_LSR:
    case REG_MSR:
        return; /* factory test registers: writes ignored */
    case REG_SCR:
        s->scr = v;
        return;
    }
    update_irq(s);
}

static uint64_t serial_read(void *opaque, uint64_t offset, unsigned size)
{
    struct serial *s = opaque;
    struct serial_deferred d = {0};
    uint64_t value = 0;

    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < size && i < 8; i++) {
        uint64_t off = offset + i;
        uint8_t b = off < SERIAL_IO_LEN ? read_reg(s, (unsigned)off, &d) : 0xff;
        value |= (uint64_t)b << (8 * i);
    }
    pthread_mutex_unlock(&s->lock);
    run_deferred(s, &d);
    return value;
}

static void serial_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct serial *s = opaque;
    for (unsigned i = 0; i < size && i < 8; i++) {
        uint64_t off = offset + i;
        if (off >= SERIAL_IO_LEN)
            break;
        /* One lock round per byte so transmitted bytes leave in order. */
        struct serial_deferred d = {0};
        pthread_mutex_lock(&s->lock);
        write_reg(s, (unsigned)off, (uint8_t)(value >> (8 * i)), &d);
        pthread_mutex_unlock(&s->lock);
        run_deferred(s, &d);
    }
}

const struct bus_ops serial_bus_ops = {
    .read = serial_read,
    .write = serial_write,
};

static size_t serial_can_receive(void *opaque)
{
    struct serial *s = opaque;
    size_t room = 0;

    pthread_mutex_lock(&s->lock);
    if (!(s->mcr & MCR_LOOP))
        room = rx_capacity(s) - s->rx_count;
    if (!room)
        s->rx_paused = true;
    pthread_mutex_unlock(&s->lock);
    return room;
}

static void serial_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct serial *s = opaque;

    pthread_mutex_lock(&s->lock);
    /* In loopback mode the receiver is disconnected from the line. */
    if (!(s->mcr & MCR_LOOP)) {
        for (size_t i = 0; i < len; i++)
            rx_push(s, buf[i]);
        update_irq(s);
    }
    pthread_mutex_unlock(&s->lock);
}

struct serial *serial_create(struct chardev *chr, struct irq_line irq)
{
    struct serial *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->chr = chr;
    s->irq = irq;
    struct serial_deferred d = {0};
    reset_locked(s, &d);
    if (chr) {
        struct chardev_frontend fe = {
            .can_receive = serial_can_receive,
            .receive = serial_receive,
            .opaque = s,
        };
        chardev_set_frontend(chr, &fe);
    }
    return s;
}

void serial_reset(struct serial *s)
{
    struct serial_deferred d = {0};
    pthread_mutex_lock(&s->lock);
    reset_locked(s, &d);
    pthread_mutex_unlock(&s->lock);
    run_deferred(s, &d);
}

void serial_destroy(struct serial *s)
{
    if (!s)
        return;
    if (s->chr && s->chr->has_fe && s->chr->fe.opaque == s)
        s->chr->has_fe = false;
    pthread_mutex_destroy(&s->lock);
    free(s);
}
