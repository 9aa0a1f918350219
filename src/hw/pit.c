/*
 * Intel 8254 PIT. Counters are not stepped: each channel remembers when it started counting
 * and every read computes the counter and output from the clock, so an idle PIT costs nothing
 * and only channel 0's interrupt edges need a timer.
 */
#include "hw/pit.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define NS_PER_SEC 1000000000LL

/* Refresh-request bit of port 0x61: toggles every 15.085 us on a PC (DRAM refresh cycle). */
#define REFRESH_NS 15085

/*
 * Shortest interval between two IRQ 0 pulses, as KVM's PIT (min_timer_period_us): a guest
 * programming a count of 1 must not make the main loop spin at 1.19 MHz.
 */
#define MIN_PULSE_NS 200000

/* Control word fields (port 0x43). */
#define CW_SC(v)    (((v) >> 6) & 3)
#define CW_RW(v)    (((v) >> 4) & 3)
#define CW_MODE(v)  (((v) >> 1) & 7)
#define CW_BCD      0x01
#define SC_READBACK 3
#define RW_LATCH    0 /* counter latch command */
#define RW_LSB      1
#define RW_MSB      2
#define RW_WORD     3 /* LSB then MSB */

/* Read-back command bits: a 0 selects the action. */
#define RB_NO_COUNT  0x20
#define RB_NO_STATUS 0x10

#define STATUS_OUT        0x80
#define STATUS_NULL_COUNT 0x40

/* Port 0x61 bits. */
#define SPK_GATE2   0x01
#define SPK_DATA    0x02
#define SPK_STORED  0x0c /* parity/IOCHK check enables: stored, read back */
#define SPK_REFRESH 0x10
#define SPK_OUT2    0x20

#define NO_EDGE UINT64_MAX

struct pit_channel {
    uint32_t count; /* initial count in clocks, 1..65536 (a programmed 0 is the maximum) */
    uint8_t mode;   /* 0-5 */
    uint8_t rw;     /* RW_LSB, RW_MSB or RW_WORD */
    bool bcd;
    bool gate;
    bool loaded;       /* an initial count was written since the control word */
    bool running;      /* counting: loaded, and triggered by the gate for modes 1 and 5 */
    int64_t start_ns;  /* when counting (re)started */
    int64_t held_ns;   /* modes 0 and 4: gate low since then (counting suspended), or -1 */
    bool write_msb;    /* RW_WORD: the next write is the MSB */
    uint8_t write_lsb; /* ... and this was the LSB */
    bool read_msb;     /* RW_WORD: the next read gives the MSB */
    bool count_latched;
    bool latch_msb; /* RW_WORD: the next latched byte is the MSB */
    uint16_t latched;
    bool status_latched;
    uint8_t status;
    uint64_t next_edge; /* channel 0: clocks from start_ns to the next undelivered rising edge */
};

struct pit {
    pthread_mutex_t lock;
    struct irq_line irq;
    struct timed_hooks hooks;
    struct pit_channel ch[3];
    uint8_t speaker; /* port 0x61 bits kept from the last write: SPK_DATA | SPK_STORED */
    int64_t last_pulse_ns;
};

static int64_t now(const struct pit *pit)
{
    return timed_now(&pit->hooks);
}

/* Whole PIT clocks in ns nanoseconds (ns >= 0). */
static uint64_t ns_to_clocks(int64_t ns)
{
    return (uint64_t)((unsigned __int128)ns * PIT_FREQ_HZ / NS_PER_SEC);
}

/* The first nanosecond at which clocks whole clocks have passed. */
static int64_t clocks_to_ns(uint64_t clocks)
{
    unsigned __int128 ns = ((unsigned __int128)clocks * NS_PER_SEC + PIT_FREQ_HZ - 1) / PIT_FREQ_HZ;
    return ns > INT64_MAX ? INT64_MAX : (int64_t)ns;
}

static uint64_t elapsed(const struct pit_channel *c, int64_t t)
{
    if (c->held_ns >= 0 && c->held_ns < t)
        t = c->held_ns;
    return t > c->start_ns ? ns_to_clocks(t - c->start_ns) : 0;
}

static uint16_t to_bcd(uint32_t v)
{
    return (uint16_t)((v % 10) | (v / 10 % 10) << 4 | (v / 100 % 10) << 8 | (v / 1000 % 10) << 12);
}

static uint32_t from_bcd(uint16_t v)
{
    /* A guest may write non-decimal nibbles: take them at face value, as arithmetic does. */
    return (v & 0xf) + ((v >> 4) & 0xf) * 10 + ((v >> 8) & 0xf) * 100 + ((v >> 12) & 0xf) * 1000;
}

/* What the counting element holds now, as the guest reads it (before BCD encoding). */
static uint32_t counter_value(const struct pit_channel *c, int64_t t)
{
    if (!c->running)
        return c->count;
    uint64_t d = elapsed(c, t);
    uint32_t wrap = c->bcd ? 10000 : 65536;
    switch (c->mode) {
    case 2:
        return c->count - (uint32_t)(d % c->count);
    case 3: /* counts down by two each clock, reloading every half period */
        return c->count - (uint32_t)((2 * (d % c->count)) % c->count);
    default: /* 0, 1, 4, 5: count down through zero and wrap, as the chip does after TC */
        return (uint32_t)((c->count + wrap - d % wrap) % wrap);
    }
}

static bool output(const struct pit_channel *c, int64_t t)
{
    if (!c->running)
        return c->mode != 0; /* mode 0's output goes low with the control word */
    uint64_t d = elapsed(c, t);
    switch (c->mode) {
    case 0:
    case 1:
        return d >= c->count;
    case 2:
        return d % c->count != c->count - 1 || c->count == 1;
    case 3:
        return d % c->count < (c->count + 1) / 2;
    default: /* 4, 5: low for the one clock at terminal count */
        return d != c->count;
    }
}

static uint8_t status_byte(const struct pit_channel *c, int64_t t)
{
    return (output(c, t) ? STATUS_OUT : 0) | (c->loaded ? 0 : STATUS_NULL_COUNT) |
           (uint8_t)(c->rw << 4) | (uint8_t)(c->mode << 1) | (c->bcd ? CW_BCD : 0);
}

/* Channel 0's first rising edge after counting (re)starts, in clocks from start_ns. */
static uint64_t first_edge(const struct pit_channel *c)
{
    if (!c->running)
        return NO_EDGE;
    return c->mode >= 4 ? (uint64_t)c->count + 1 : c->count;
}

static void start_counting(struct pit_channel *c, int64_t t)
{
    c->running = true;
    c->start_ns = t;
    c->held_ns = (c->mode == 0 || c->mode == 4) && !c->gate ? t : -1;
    c->next_edge = first_edge(c);
}

static void load_count(struct pit_channel *c, uint16_t v, int64_t t)
{
    uint32_t n = c->bcd ? from_bcd(v) : v;
    c->count = n ? n : (c->bcd ? 10000 : 65536);
    c->loaded = true;
    /* Modes 1 and 5 wait for a gate edge; modes 2 and 3 also need the gate high. */
    if (c->mode == 1 || c->mode == 5) {
        c->running = false;
        c->next_edge = NO_EDGE;
    } else if ((c->mode == 2 || c->mode == 3) && !c->gate) {
        c->running = false;
        c->next_edge = NO_EDGE;
    } else {
        start_counting(c, t);
    }
}

static void set_gate(struct pit_channel *c, bool gate, int64_t t)
{
    if (gate == c->gate)
        return;
    c->gate = gate;
    switch (c->mode) {
    case 0:
    case 4: /* the gate suspends counting */
        if (!c->running)
            break;
        if (!gate) {
            c->held_ns = t;
        } else if (c->held_ns >= 0) {
            c->start_ns += t - c->held_ns;
            c->held_ns = -1;
        }
        break;
    default: /* 1, 5: a rising edge (re)triggers; 2, 3: low stops, rising restarts */
        if (gate && c->loaded)
            start_counting(c, t);
        else if (!gate && (c->mode == 2 || c->mode == 3))
            c->running = false;
        break;
    }
}

static void latch_count(struct pit_channel *c, int64_t t)
{
    if (c->count_latched)
        return; /* a second latch before the first is read is ignored */
    uint32_t v = counter_value(c, t);
    c->latched = c->bcd ? to_bcd(v % 10000) : (uint16_t)v;
    c->count_latched = true;
    c->latch_msb = false;
}

static void write_control(struct pit *pit, uint8_t v, int64_t t)
{
    if (CW_SC(v) == SC_READBACK) {
        for (unsigned i = 0; i < 3; i++) {
            if (!(v & (2u << i)))
                continue;
            struct pit_channel *c = &pit->ch[i];
            if (!(v & RB_NO_COUNT))
                latch_count(c, t);
            if (!(v & RB_NO_STATUS) && !c->status_latched) {
                c->status = status_byte(c, t);
                c->status_latched = true;
            }
        }
        return;
    }
    struct pit_channel *c = &pit->ch[CW_SC(v)];
    if (CW_RW(v) == RW_LATCH) {
        latch_count(c, t);
        return;
    }
    unsigned mode = CW_MODE(v);
    c->mode = (uint8_t)(mode >= 6 ? mode - 4 : mode); /* 6 and 7 are 2 and 3 */
    c->rw = (uint8_t)CW_RW(v);
    c->bcd = v & CW_BCD;
    c->loaded = c->running = false;
    c->held_ns = -1;
    c->next_edge = NO_EDGE;
    c->write_msb = c->read_msb = false;
    c->count_latched = c->status_latched = false;
}

static void write_counter(struct pit_channel *c, uint8_t v, int64_t t)
{
    switch (c->rw) {
    case RW_LSB:
        load_count(c, v, t);
        break;
    case RW_MSB:
        load_count(c, (uint16_t)(v << 8), t);
        break;
    default:
        if (!c->write_msb) {
            c->write_lsb = v;
            c->write_msb = true;
            if (c->mode == 0) { /* mode 0: the first byte stops the count */
                c->running = false;
                c->next_edge = NO_EDGE;
            }
        } else {
            c->write_msb = false;
            load_count(c, (uint16_t)(c->write_lsb | v << 8), t);
        }
        break;
    }
}

static uint8_t read_counter(struct pit_channel *c, int64_t t)
{
    if (c->status_latched) {
        c->status_latched = false;
        return c->status;
    }
    if (c->count_latched) {
        bool msb = c->rw == RW_MSB || (c->rw == RW_WORD && c->latch_msb);
        uint8_t b = msb ? (uint8_t)(c->latched >> 8) : (uint8_t)c->latched;
        if (c->rw == RW_WORD && !c->latch_msb)
            c->latch_msb = true;
        else
            c->count_latched = false;
        return b;
    }
    uint32_t v = counter_value(c, t);
    uint16_t r = c->bcd ? to_bcd(v % 10000) : (uint16_t)v;
    bool msb = c->rw == RW_MSB || (c->rw == RW_WORD && c->read_msb);
    if (c->rw == RW_WORD)
        c->read_msb = !c->read_msb;
    return msb ? (uint8_t)(r >> 8) : (uint8_t)r;
}

/* --- port I/O ------------------------------------------------------------------------------- */

static uint64_t pit_read(void *opaque, uint64_t offset, unsigned size)
{
    struct pit *pit = opaque;
    uint64_t v = 0;
    pthread_mutex_lock(&pit->lock);
    int64_t t = now(pit);
    for (unsigned i = 0; i < size; i++) {
        uint64_t o = offset + i;
        /* The control port is write-only: the bus floats. */
        uint8_t b = o < 3 ? read_counter(&pit->ch[o], t) : 0xff;
        v |= (uint64_t)b << (8 * i);
    }
    pthread_mutex_unlock(&pit->lock);
    return v;
}

static void pit_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct pit *pit = opaque;
    pthread_mutex_lock(&pit->lock);
    int64_t t = now(pit);
    for (unsigned i = 0; i < size && offset + i < PIT_IO_LEN; i++) {
        uint8_t b = (uint8_t)(value >> (8 * i));
        if (offset + i == 3)
            write_control(pit, b, t);
        else
            write_counter(&pit->ch[offset + i], b, t);
    }
    pthread_mutex_unlock(&pit->lock);
    timed_deadline_changed(&pit->hooks);
}

const struct bus_ops pit_bus_ops = {
    .read = pit_read,
    .write = pit_write,
};

static uint64_t speaker_read(void *opaque, uint64_t offset, unsigned size)
{
    struct pit *pit = opaque;
    pthread_mutex_lock(&pit->lock);
    int64_t t = now(pit);
    const struct pit_channel *c2 = &pit->ch[2];
    uint8_t v =
        (uint8_t)((c2->gate ? SPK_GATE2 : 0) | pit->speaker |
                  ((t / REFRESH_NS) & 1 ? SPK_REFRESH : 0) | (output(c2, t) ? SPK_OUT2 : 0));
    pthread_mutex_unlock(&pit->lock);
    return v;
}

static void speaker_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct pit *pit = opaque;
    pthread_mutex_lock(&pit->lock);
    pit->speaker = value & (SPK_DATA | SPK_STORED);
    set_gate(&pit->ch[2], value & SPK_GATE2, now(pit));
    pthread_mutex_unlock(&pit->lock);
}

const struct bus_ops pit_speaker_ops = {
    .read = speaker_read,
    .write = speaker_write,
};

/* --- timer ---------------------------------------------------------------------------------- */

static int64_t deadline_locked(const struct pit *pit)
{
    const struct pit_channel *c = &pit->ch[0];
    if (!c->running || c->next_edge == NO_EDGE || c->held_ns >= 0)
        return INT64_MAX;
    int64_t off = clocks_to_ns(c->next_edge);
    int64_t d = off > INT64_MAX - c->start_ns ? INT64_MAX : c->start_ns + off;
    int64_t min = pit->last_pulse_ns + MIN_PULSE_NS;
    return d < min ? min : d;
}

int64_t pit_next_deadline_ns(struct pit *pit)
{
    pthread_mutex_lock(&pit->lock);
    int64_t d = deadline_locked(pit);
    pthread_mutex_unlock(&pit->lock);
    return d;
}

void pit_tick(struct pit *pit, int64_t now_ns)
{
    pthread_mutex_lock(&pit->lock);
    struct pit_channel *c = &pit->ch[0];
    if (deadline_locked(pit) <= now_ns) {
        /* An edge is due: one pulse, however many periods the loop slept through. */
        irq_set_level(&pit->irq, 1);
        irq_set_level(&pit->irq, 0);
        pit->last_pulse_ns = now_ns;
        uint64_t d = elapsed(c, now_ns);
        if (c->mode == 2 || c->mode == 3)
            c->next_edge = (d / c->count + 1) * c->count;
        else
            c->next_edge = NO_EDGE;
    }
    pthread_mutex_unlock(&pit->lock);
}

/* --- lifecycle ------------------------------------------------------------------------------ */

static void reset_locked(struct pit *pit)
{
    for (unsigned i = 0; i < 3; i++) {
        struct pit_channel *c = &pit->ch[i];
        *c = (struct pit_channel){
            .count = 65536,
            .rw = RW_WORD,
            .gate = i != 2, /* channels 0 and 1 have their gates tied high */
            .held_ns = -1,
            .next_edge = NO_EDGE,
        };
    }
    pit->speaker = 0;
    pit->last_pulse_ns = INT64_MIN / 2; /* pulses end low: the line needs no reset */
}

struct pit *pit_create(const struct timed_hooks *hooks, struct irq_line irq)
{
    struct pit *pit = calloc(1, sizeof(*pit));
    if (!pit)
        return NULL;
    pthread_mutex_init(&pit->lock, NULL);
    pit->irq = irq;
    pit->hooks = *hooks;
    reset_locked(pit);
    return pit;
}

void pit_reset(struct pit *pit)
{
    pthread_mutex_lock(&pit->lock);
    reset_locked(pit);
    pthread_mutex_unlock(&pit->lock);
    timed_deadline_changed(&pit->hooks);
}

void pit_destroy(struct pit *pit)
{
    if (!pit)
        return;
    pthread_mutex_destroy(&pit->lock);
    free(pit);
}
