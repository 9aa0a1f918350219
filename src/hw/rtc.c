/*
 * MC146818 RTC + CMOS RAM.
 *
 * Time keeping: nothing ticks. The guest's time of day is clock() + offset_ns (clock() is
 * CLOCK_MONOTONIC unless a test injects one), and the time registers are computed from it
 * whenever they are read, in the format register B selects (BCD or binary, 12 or 24 hour).
 * A guest write to a time register while the clock runs moves the offset (keeping the phase of
 * the second), so `hwclock -w` persists for the VM's life. While B.SET is set, or the divider
 * is held in reset (A.DV = 11x), the clock is stopped: the time registers become plain bytes
 * holding a snapshot taken at the stop plus whatever the guest writes; when it restarts they
 * are read back into a new offset. The seconds keep their phase across SET (the divider chain
 * keeps running); releasing the divider reset starts the first update 500 ms later, as the
 * datasheet says. The day-of-week register is computed from the date, never stored, and the
 * daylight-saving bit (B.DSE) is ignored.
 *
 * UIP (A bit 7) reads 1 during the last 244 us of each second while the clock runs, the window
 * before an update in which the datasheet allows a carry; Linux's read loop (wait for UIP clear,
 * read, check UIP and the seconds again) terminates at once outside it.
 *
 * Flags (register C): UF at each second boundary, AF when the new time matches the alarm
 * registers (0xC0-0xFF = don't care), PF at the rate A.RS selects. They are computed lazily for
 * the interval since the last catch-up, at every read of C, write of A/B/time, and rtc_tick();
 * IRQF and IRQ 8 follow (flag & enable), and reading C clears them all and lowers the line. The
 * event loop needs a timer only for enabled interrupts: rtc_next_deadline_ns() says when.
 *
 * CMOS bytes a PC BIOS fills in are set at creation: base memory 640 KiB (0x15/0x16), extended
 * memory above 1 MiB in KiB capped at 0xFFFF (0x17/0x18 and 0x30/0x31), memory above 16 MiB
 * below 4 GiB in 64 KiB units capped at 0xFFFF (0x34/0x35), memory above 4 GiB in 64 KiB units
 * (0x5b-0x5d), CPU count - 1 (0x5f), equipment byte 0x14 = FPU present, no floppy, VGA, and the
 * standard checksum of 0x10-0x2d at 0x2e/0x2f.
 */
#include "hw/rtc.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define NS_PER_SEC      1000000000LL
#define RTC_MIN_SECONDS (-2208988800LL) /* 1900-01-01 00:00:00 UTC */
#define RTC_MAX_SECONDS 7258118399LL    /* 2199-12-31 23:59:59 UTC */
#define UIP_WINDOW_NS   244000LL
#define DIVIDER_HZ      32768

#define REG_SEC        0x00
#define REG_SEC_ALARM  0x01
#define REG_MIN        0x02
#define REG_MIN_ALARM  0x03
#define REG_HOUR       0x04
#define REG_HOUR_ALARM 0x05
#define REG_WDAY       0x06
#define REG_MDAY       0x07
#define REG_MONTH      0x08
#define REG_YEAR       0x09
#define REG_A          0x0a
#define REG_B          0x0b
#define REG_C          0x0c
#define REG_D          0x0d
#define REG_CENTURY    0x32

#define A_UIP      0x80
#define A_DV_MASK  0x70
#define A_DV_RESET 0x60 /* DV2:1 = 11: divider chain held in reset */
#define A_RS_MASK  0x0f

#define B_SET  0x80
#define B_PIE  0x40
#define B_AIE  0x20
#define B_UIE  0x10
#define B_SQWE 0x08
#define B_DM   0x04 /* 1 = binary, 0 = BCD */
#define B_24H  0x02

#define C_IRQF 0x80
#define C_PF   0x40
#define C_AF   0x20
#define C_UF   0x10

#define D_VRT 0x80

struct rtc {
    pthread_mutex_t lock;
    struct irq_line irq;
    struct timed_hooks hooks;

    uint8_t cmos[128];
    uint8_t index;
    int64_t offset_ns; /* guest time of day (ns since 1970, as UTC calendar) = clock + offset */
    int64_t last_ns;   /* flags are up to date until this clock time */
    bool irq_level;
    bool slew;           /* driftfix=slew */
    uint32_t coalesced;  /* periodic interrupts merged into an unacknowledged one, owed */
    int64_t reinject_ns; /* clock time of the next owed one (after an acknowledgement) */
};

/* At most one second's worth at the highest rate is owed: a guest that stopped acknowledging
 * for longer is not made to race through it. */
#define MAX_COALESCED 8192

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b < 0) ? q - 1 : q;
}

static int64_t floor_mod(int64_t a, int64_t b)
{
    int64_t r = a % b;
    return r < 0 ? r + b : r;
}

static int64_t now(const struct rtc *rtc)
{
    return timed_now(&rtc->hooks);
}

static bool divider_running(const struct rtc *rtc)
{
    return (rtc->cmos[REG_A] & A_DV_RESET) != A_DV_RESET;
}

static bool clock_running(const struct rtc *rtc)
{
    return divider_running(rtc) && !(rtc->cmos[REG_B] & B_SET);
}

static bool is_time_reg(unsigned reg)
{
    switch (reg) {
    case REG_SEC:
    case REG_MIN:
    case REG_HOUR:
    case REG_WDAY:
    case REG_MDAY:
    case REG_MONTH:
    case REG_YEAR:
    case REG_CENTURY:
        return true;
    }
    return false;
}

/* --- register formats ---------------------------------------------------------------------- */

static uint8_t to_reg(const struct rtc *rtc, unsigned v)
{
    if (rtc->cmos[REG_B] & B_DM)
        return (uint8_t)v;
    return (uint8_t)(((v / 10 % 10) << 4) | (v % 10));
}

static unsigned from_reg(const struct rtc *rtc, uint8_t v)
{
    if (rtc->cmos[REG_B] & B_DM)
        return v;
    return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t hour_to_reg(const struct rtc *rtc, unsigned h)
{
    if (rtc->cmos[REG_B] & B_24H)
        return to_reg(rtc, h);
    unsigned h12 = h % 12 ? h % 12 : 12;
    return to_reg(rtc, h12) | (h >= 12 ? 0x80 : 0);
}

static unsigned hour_from_reg(const struct rtc *rtc, uint8_t v)
{
    if (rtc->cmos[REG_B] & B_24H)
        return from_reg(rtc, v);
    return from_reg(rtc, v & 0x7f) % 12 + ((v & 0x80) ? 12 : 0);
}

/* Fill the time registers of regs[] with the time of day `sec` (seconds since 1970). */
static void time_to_regs(const struct rtc *rtc, int64_t sec, uint8_t *regs)
{
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    unsigned year = (unsigned)(tm.tm_year + 1900);
    regs[REG_SEC] = to_reg(rtc, (unsigned)tm.tm_sec);
    regs[REG_MIN] = to_reg(rtc, (unsigned)tm.tm_min);
    regs[REG_HOUR] = hour_to_reg(rtc, (unsigned)tm.tm_hour);
    regs[REG_WDAY] = to_reg(rtc, (unsigned)tm.tm_wday + 1);
    regs[REG_MDAY] = to_reg(rtc, (unsigned)tm.tm_mday);
    regs[REG_MONTH] = to_reg(rtc, (unsigned)tm.tm_mon + 1);
    regs[REG_YEAR] = to_reg(rtc, year % 100);
    regs[REG_CENTURY] = to_reg(rtc, year / 100);
}

static int64_t regs_to_time(const struct rtc *rtc, const uint8_t *regs)
{
    struct tm tm = {0};
    tm.tm_sec = (int)from_reg(rtc, regs[REG_SEC]);
    tm.tm_min = (int)from_reg(rtc, regs[REG_MIN]);
    tm.tm_hour = (int)hour_from_reg(rtc, regs[REG_HOUR]);
    tm.tm_mday = (int)from_reg(rtc, regs[REG_MDAY]);
    tm.tm_mon = (int)from_reg(rtc, regs[REG_MONTH]) - 1;
    tm.tm_year =
        (int)(from_reg(rtc, regs[REG_CENTURY]) * 100 + from_reg(rtc, regs[REG_YEAR])) - 1900;
    return (int64_t)timegm(&tm);
}

/* --- flags and interrupts ------------------------------------------------------------------ */

/* The century register reaches year 9999, but the guest's time is kept in int64 ns: a date
 * the guest sets stays within 1900..2199. */
static int64_t regs_time_clamped(const struct rtc *rtc, const uint8_t *regs)
{
    int64_t s = regs_to_time(rtc, regs);
    return s < RTC_MIN_SECONDS ? RTC_MIN_SECONDS : s > RTC_MAX_SECONDS ? RTC_MAX_SECONDS : s;
}

static bool alarm_field_matches(uint8_t alarm, uint8_t value)
{
    return (alarm & 0xc0) == 0xc0 || alarm == value;
}

/* First second after `sec` whose time of day matches the alarm registers, or INT64_MAX. */
static int64_t next_alarm(const struct rtc *rtc, int64_t sec)
{
    const uint8_t *c = rtc->cmos;
    int64_t day = floor_div(sec, 86400);
    int64_t sod = floor_mod(sec, 86400);
    int H = (int)(sod / 3600), M = (int)(sod / 60 % 60), S = (int)(sod % 60);

    for (int d = 0; d < 2; d++) {
        for (int h = d ? 0 : H; h < 24; h++) {
            if (!alarm_field_matches(c[REG_HOUR_ALARM], hour_to_reg(rtc, (unsigned)h)))
                continue;
            bool same_h = !d && h == H;
            for (int m = same_h ? M : 0; m < 60; m++) {
                if (!alarm_field_matches(c[REG_MIN_ALARM], to_reg(rtc, (unsigned)m)))
                    continue;
                bool same_m = same_h && m == M;
                for (int s = same_m ? S + 1 : 0; s < 60; s++) {
                    if (alarm_field_matches(c[REG_SEC_ALARM], to_reg(rtc, (unsigned)s)))
                        return (day + d) * 86400 + h * 3600 + m * 60 + s;
                }
            }
        }
    }
    return INT64_MAX;
}

static int64_t period_ticks(const struct rtc *rtc)
{
    unsigned rs = rtc->cmos[REG_A] & A_RS_MASK;
    if (!rs)
        return 0;
    /* 32.768 kHz time base: RS 1 and 2 give 256 and 128 Hz, RS n >= 3 gives 65536 >> n Hz. */
    return rs <= 2 ? 1LL << (rs + 6) : 1LL << (rs - 1);
}

/* Divider ticks (32768 Hz) at guest time g (ns). */
static int64_t ticks_at(int64_t g)
{
    return floor_div(g, NS_PER_SEC) * DIVIDER_HZ +
           floor_mod(g, NS_PER_SEC) * DIVIDER_HZ / NS_PER_SEC;
}

/* Guest time (ns) at which divider tick t starts, rounded up so ticks_at() agrees. */
static int64_t ticks_to_ns(int64_t t)
{
    int64_t rem = floor_mod(t, DIVIDER_HZ);
    return floor_div(t, DIVIDER_HZ) * NS_PER_SEC + (rem * NS_PER_SEC + DIVIDER_HZ - 1) / DIVIDER_HZ;
}

static void update_irq(struct rtc *rtc)
{
    uint8_t *c = rtc->cmos;
    if (c[REG_C] & c[REG_B] & (C_PF | C_AF | C_UF))
        c[REG_C] |= C_IRQF;
    bool level = c[REG_C] & C_IRQF;
    if (level != rtc->irq_level) {
        rtc->irq_level = level;
        irq_set_level(&rtc->irq, level);
    }
}

/* Set the flags for every event between last_ns and t, then raise IRQF as enabled. */
static void catch_up(struct rtc *rtc, int64_t t)
{
    if (t < rtc->last_ns - NS_PER_SEC) {
        /* The clock stepped back (clock=host: the host's time was set): events restart from
         * here, else none would be flagged until the clock passed last_ns again. (A tick whose
         * time was read just before a register access's is merely early: no reset for it.) */
        rtc->last_ns = t;
        if (rtc->reinject_ns > t)
            rtc->reinject_ns = t;
    }
    if (t > rtc->last_ns && divider_running(rtc)) {
        int64_t g0 = rtc->last_ns + rtc->offset_ns, g1 = t + rtc->offset_ns;
        int64_t p = period_ticks(rtc);
        int64_t n = p ? floor_div(ticks_at(g1), p) - floor_div(ticks_at(g0), p) : 0;
        if (n > 0) {
            /* every period but one is lost when the interrupt is still pending, all of them */
            if (rtc->slew && (rtc->cmos[REG_B] & B_PIE)) {
                int64_t lost = (rtc->cmos[REG_C] & C_IRQF) ? n : n - 1;
                int64_t owed = rtc->coalesced + lost;
                rtc->coalesced = owed > MAX_COALESCED ? MAX_COALESCED : (uint32_t)owed;
            }
            rtc->cmos[REG_C] |= C_PF;
        }
        if (!(rtc->cmos[REG_B] & B_SET)) {
            int64_t s0 = floor_div(g0, NS_PER_SEC), s1 = floor_div(g1, NS_PER_SEC);
            if (s1 > s0) {
                rtc->cmos[REG_C] |= C_UF;
                if (next_alarm(rtc, s0) <= s1)
                    rtc->cmos[REG_C] |= C_AF;
            }
        }
    }
    if (t > rtc->last_ns)
        rtc->last_ns = t;
    update_irq(rtc);
}

static int64_t next_deadline_locked(struct rtc *rtc, int64_t t)
{
    const uint8_t *c = rtc->cmos;
    if ((c[REG_C] & C_IRQF) || !divider_running(rtc))
        return INT64_MAX;
    int64_t g = t + rtc->offset_ns;
    int64_t best = INT64_MAX;
    int64_t p = period_ticks(rtc);
    if ((c[REG_B] & B_PIE) && p && rtc->coalesced)
        best = rtc->reinject_ns;
    if ((c[REG_B] & B_PIE) && p) {
        int64_t next = (floor_div(ticks_at(g), p) + 1) * p;
        int64_t d = ticks_to_ns(next) - rtc->offset_ns;
        if (d < best)
            best = d;
    }
    if (!(c[REG_B] & B_SET)) {
        int64_t sec = floor_div(g, NS_PER_SEC);
        if (c[REG_B] & B_UIE) {
            int64_t d = (sec + 1) * NS_PER_SEC - rtc->offset_ns;
            if (d < best)
                best = d;
        }
        if (c[REG_B] & B_AIE) {
            int64_t a = next_alarm(rtc, sec);
            if (a != INT64_MAX && a * NS_PER_SEC - rtc->offset_ns < best)
                best = a * NS_PER_SEC - rtc->offset_ns;
        }
    }
    return best;
}

/* --- register access ----------------------------------------------------------------------- */

/*
 * The guest changed A or B (given the state before): stop or restart the clock. Flags have
 * been caught up to t by the caller.
 */
static void run_state_changed(struct rtc *rtc, int64_t t, bool was_running, bool div_was_running)
{
    bool running = clock_running(rtc);
    bool div_released = !div_was_running && divider_running(rtc);

    if (was_running && !running) {
        time_to_regs(rtc, floor_div(t + rtc->offset_ns, NS_PER_SEC), rtc->cmos);
        return;
    }
    if (!was_running && (running || div_released)) {
        int64_t phase = div_released ? NS_PER_SEC / 2 : floor_mod(t + rtc->offset_ns, NS_PER_SEC);
        rtc->offset_ns = regs_time_clamped(rtc, rtc->cmos) * NS_PER_SEC + phase - t;
    }
}

static uint8_t read_data(struct rtc *rtc, bool *notify)
{
    unsigned reg = rtc->index;
    uint8_t *c = rtc->cmos;

    if (is_time_reg(reg) && clock_running(rtc)) {
        uint8_t regs[128];
        time_to_regs(rtc, floor_div(now(rtc) + rtc->offset_ns, NS_PER_SEC), regs);
        return regs[reg];
    }
    switch (reg) {
    case REG_A: {
        uint8_t v = c[REG_A] & ~A_UIP;
        if (clock_running(rtc) &&
            floor_mod(now(rtc) + rtc->offset_ns, NS_PER_SEC) >= NS_PER_SEC - UIP_WINDOW_NS)
            v |= A_UIP;
        return v;
    }
    case REG_C: {
        int64_t t = now(rtc);
        catch_up(rtc, t);
        uint8_t v = c[REG_C];
        c[REG_C] = 0;
        update_irq(rtc);
        if ((v & C_IRQF) && rtc->coalesced) /* the next owed one, half a period from now */
            rtc->reinject_ns = t + ticks_to_ns(period_ticks(rtc)) / 2;
        if ((v & C_IRQF) && (c[REG_B] & (B_PIE | B_AIE | B_UIE)))
            *notify = true; /* a deadline is needed again */
        return v;
    }
    case REG_D:
        return D_VRT;
    default:
        return c[reg];
    }
}

static void write_data(struct rtc *rtc, uint8_t v, bool *notify)
{
    unsigned reg = rtc->index;
    uint8_t *c = rtc->cmos;

    if (is_time_reg(reg)) {
        if (!clock_running(rtc)) {
            c[reg] = v;
            return;
        }
        int64_t t = now(rtc);
        catch_up(rtc, t);
        int64_t sec = floor_div(t + rtc->offset_ns, NS_PER_SEC);
        uint8_t regs[128];
        time_to_regs(rtc, sec, regs);
        regs[reg] = v;
        int64_t want = regs_time_clamped(rtc, regs);
        rtc->offset_ns = (int64_t)((__int128)rtc->offset_ns + (__int128)(want - sec) * NS_PER_SEC);
        *notify = true;
        return;
    }
    switch (reg) {
    case REG_SEC_ALARM:
    case REG_MIN_ALARM:
    case REG_HOUR_ALARM:
        catch_up(rtc, now(rtc));
        c[reg] = v;
        *notify = true;
        return;
    case REG_A:
    case REG_B: {
        int64_t t = now(rtc);
        catch_up(rtc, t);
        bool was_running = clock_running(rtc), div_was_running = divider_running(rtc);
        if (reg == REG_A) {
            c[REG_A] = v & ~A_UIP;
        } else {
            if (v & B_SET)
                v &= ~B_UIE; /* setting SET clears UIE */
            c[REG_B] = v;
            if (!(v & B_PIE))
                rtc->coalesced = 0;
        }
        run_state_changed(rtc, t, was_running, div_was_running);
        update_irq(rtc);
        *notify = true;
        return;
    }
    case REG_C:
    case REG_D:
        return; /* read-only */
    default:
        c[reg] = v;
        return;
    }
}

static uint64_t rtc_read(void *opaque, uint64_t offset, unsigned size)
{
    struct rtc *rtc = opaque;
    uint64_t value = 0;
    bool notify = false;

    pthread_mutex_lock(&rtc->lock);
    for (unsigned i = 0; i < size && i < 8; i++) {
        uint8_t b = 0xff; /* the index port is write-only */
        if (offset + i == 1)
            b = read_data(rtc, &notify);
        value |= (uint64_t)b << (8 * i);
    }
    pthread_mutex_unlock(&rtc->lock);
    if (notify)
        timed_deadline_changed(&rtc->hooks);
    return value;
}

static void rtc_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct rtc *rtc = opaque;
    bool notify = false;

    pthread_mutex_lock(&rtc->lock);
    for (unsigned i = 0; i < size && i < 8; i++) {
        uint8_t b = (uint8_t)(value >> (8 * i));
        if (offset + i == 0)
            rtc->index = b & 0x7f; /* bit 7 is the NMI mask, not part of the index */
        else if (offset + i == 1)
            write_data(rtc, b, &notify);
    }
    pthread_mutex_unlock(&rtc->lock);
    if (notify)
        timed_deadline_changed(&rtc->hooks);
}

const struct bus_ops rtc_bus_ops = {
    .read = rtc_read,
    .write = rtc_write,
};

/* --- lifecycle ----------------------------------------------------------------------------- */

static void set_memory_bytes(struct rtc *rtc, const struct rtc_config *cfg)
{
    uint8_t *c = rtc->cmos;
    const uint64_t KiB = 1024, MiB = 1024 * KiB;

    c[0x14] = 0x02; /* equipment: FPU present, no floppy, EGA/VGA display */
    c[0x15] = 640 & 0xff;
    c[0x16] = 640 >> 8;

    uint64_t ext = cfg->ram_below_4g > MiB ? (cfg->ram_below_4g - MiB) / KiB : 0;
    if (ext > 0xffff)
        ext = 0xffff;
    c[0x17] = c[0x30] = ext & 0xff;
    c[0x18] = c[0x31] = (uint8_t)(ext >> 8);

    uint64_t above16 =
        cfg->ram_below_4g > 16 * MiB ? (cfg->ram_below_4g - 16 * MiB) / (64 * KiB) : 0;
    if (above16 > 0xffff)
        above16 = 0xffff;
    c[0x34] = above16 & 0xff;
    c[0x35] = (uint8_t)(above16 >> 8);

    uint64_t above4g = cfg->ram_above_4g / (64 * KiB);
    if (above4g > 0xffffff)
        above4g = 0xffffff;
    c[0x5b] = above4g & 0xff;
    c[0x5c] = (above4g >> 8) & 0xff;
    c[0x5d] = (uint8_t)(above4g >> 16);

    c[0x5f] = cfg->nr_cpus ? (uint8_t)(cfg->nr_cpus - 1) : 0;

    unsigned sum = 0;
    for (unsigned i = 0x10; i <= 0x2d; i++)
        sum += c[i];
    c[0x2e] = (uint8_t)(sum >> 8);
    c[0x2f] = sum & 0xff;
}

static int64_t start_time_ns(const struct rtc_config *cfg)
{
    if (cfg->base == RTC_BASE_FIXED)
        return cfg->fixed_epoch * NS_PER_SEC;
    int64_t wall =
        cfg->wall_clock ? cfg->wall_clock(cfg->hooks.clock_opaque) : clock_ns(CLOCK_REALTIME);
    if (cfg->base == RTC_BASE_LOCALTIME) {
        time_t t = (time_t)floor_div(wall, NS_PER_SEC);
        struct tm tm;
        localtime_r(&t, &tm);
        wall += (int64_t)tm.tm_gmtoff * NS_PER_SEC;
    }
    return wall;
}

static void reset_locked(struct rtc *rtc)
{
    catch_up(rtc, now(rtc));
    rtc->cmos[REG_B] &= ~(B_PIE | B_AIE | B_UIE | B_SQWE);
    rtc->cmos[REG_C] = 0;
    rtc->coalesced = 0;
    update_irq(rtc);
}

struct rtc *rtc_create(const struct rtc_config *cfg, struct irq_line irq)
{
    struct rtc *rtc = calloc(1, sizeof(*rtc));
    if (!rtc)
        return NULL;
    pthread_mutex_init(&rtc->lock, NULL);
    rtc->irq = irq;
    rtc->hooks = cfg->hooks;
    rtc->slew = cfg->driftfix_slew;

    rtc->cmos[REG_A] = 0x26;  /* 32.768 kHz time base, 1024 Hz periodic rate */
    rtc->cmos[REG_B] = B_24H; /* 24 hour, BCD */
    rtc->cmos[REG_D] = D_VRT;
    set_memory_bytes(rtc, cfg);

    int64_t t = now(rtc);
    rtc->offset_ns = start_time_ns(cfg) - t;
    rtc->last_ns = t;
    return rtc;
}

void rtc_reset(struct rtc *rtc)
{
    pthread_mutex_lock(&rtc->lock);
    reset_locked(rtc);
    pthread_mutex_unlock(&rtc->lock);
}

void rtc_destroy(struct rtc *rtc)
{
    if (!rtc)
        return;
    pthread_mutex_destroy(&rtc->lock);
    free(rtc);
}

int64_t rtc_next_deadline_ns(struct rtc *rtc)
{
    pthread_mutex_lock(&rtc->lock);
    int64_t t = now(rtc);
    catch_up(rtc, t);
    int64_t d = next_deadline_locked(rtc, t);
    pthread_mutex_unlock(&rtc->lock);
    return d;
}

void rtc_tick(struct rtc *rtc, int64_t now_ns)
{
    pthread_mutex_lock(&rtc->lock);
    catch_up(rtc, now_ns);
    /* an owed periodic interrupt, due and not merged into a pending one */
    if (rtc->coalesced && (rtc->cmos[REG_B] & B_PIE) && !(rtc->cmos[REG_C] & C_IRQF) &&
        now_ns >= rtc->reinject_ns && divider_running(rtc)) {
        rtc->coalesced--;
        rtc->cmos[REG_C] |= C_PF;
        update_irq(rtc);
    }
    pthread_mutex_unlock(&rtc->lock);
}
