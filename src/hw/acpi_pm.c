/*
 * ACPI PM1a event/control registers, PM timer, GPE0 block and the 0xCF9 reset control register.
 *
 * The PM timer counts at 3.579545 MHz from CLOCK_MONOTONIC at creation and wraps at 32 bits
 * (the FADT sets TMR_VAL_EXT). TMR_STS (bit 31 of the count changed) is computed lazily at each
 * register access; no host timer fires for TMR_EN, which Linux never sets (it polls the counter
 * as a clocksource).
 *
 * Sleep: writing PM1a_CNT with SLP_EN set and SLP_TYP = ACPI_PM_SLP_TYP_S5 calls ops->poweroff;
 * other sleep types are ignored, the guest simply carries on. SLP_EN itself always reads 0.
 *
 * 0xCF9 (reset control register): bits 1 (SYS_RST, hard reset) and 3 (FULL_RST) are kept and
 * read back; a write with bit 2 (RST_CPU) set asks for a reset. Every reset type is the same VM
 * reset here.
 *
 * Registers are decoded a byte at a time so any access width works; a multi-byte read takes one
 * timer sample so the 32-bit count is consistent.
 */
#include "hw/acpi_pm.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"

#define NS_PER_SEC 1000000000LL

#define PM1_STS_MASK                                                                               \
    (ACPI_PM1_TMR_STS | ACPI_PM1_BM_STS | ACPI_PM1_GBL_STS | ACPI_PM1_PWRBTN_STS |                 \
     ACPI_PM1_SLPBTN_STS | ACPI_PM1_RTC_STS | ACPI_PM1_WAK_STS)
#define PM1_EN_MASK                                                                                \
    (ACPI_PM1_TMR_EN | ACPI_PM1_GBL_EN | ACPI_PM1_PWRBTN_EN | ACPI_PM1_SLPBTN_EN | ACPI_PM1_RTC_EN)
/* Status bits that raise the SCI when their enable bit is set (same positions in PM1_EN). */
#define PM1_SCI_MASK PM1_EN_MASK
/* Control bits that are plain read/write storage (SLP_TYP and the bus-master/global bits). */
#define PM1_CNT_RW_MASK (ACPI_PM1_CNT_BM_RLD | ACPI_PM1_CNT_GBL_RLS | ACPI_PM1_CNT_SLP_TYP(7))

#define CF9_KEEP_MASK 0x0a /* SYS_RST | FULL_RST */
#define CF9_RST_CPU   0x04

struct acpi_pm {
    pthread_mutex_t lock;
    struct acpi_pm_ops ops;
    void *opaque;
    struct irq_line sci;
    bool sci_level;

    int64_t start_ns;     /* the timer counts from here */
    uint64_t timer_epoch; /* count >> 31 at the last TMR_STS update */

    uint16_t pm1_sts, pm1_en, pm1_cnt;
    uint16_t gpe0_sts, gpe0_en;
    uint8_t cf9;
};

/* Timer ticks since creation, not wrapped (split so the product cannot overflow). */
static uint64_t timer_ticks(const struct acpi_pm *pm)
{
    int64_t d = clock_ns(CLOCK_MONOTONIC) - pm->start_ns;
    if (d < 0)
        d = 0;
    uint64_t sec = (uint64_t)d / NS_PER_SEC, ns = (uint64_t)d % NS_PER_SEC;
    return sec * ACPI_PM_TIMER_HZ + ns * ACPI_PM_TIMER_HZ / NS_PER_SEC;
}

static void update_timer_status(struct acpi_pm *pm, uint64_t ticks)
{
    uint64_t epoch = ticks >> 31;
    if (epoch != pm->timer_epoch) {
        pm->timer_epoch = epoch;
        pm->pm1_sts |= ACPI_PM1_TMR_STS;
    }
}

static void update_sci(struct acpi_pm *pm)
{
    bool level = (pm->pm1_sts & pm->pm1_en & PM1_SCI_MASK) || (pm->gpe0_sts & pm->gpe0_en);
    if (level != pm->sci_level) {
        pm->sci_level = level;
        irq_set_level(&pm->sci, level);
    }
}

static uint8_t read_byte(const struct acpi_pm *pm, uint64_t off, uint32_t timer)
{
    switch (off) {
    case 0x00:
    case 0x01:
        return (uint8_t)(pm->pm1_sts >> (8 * (off & 1)));
    case 0x02:
    case 0x03:
        return (uint8_t)(pm->pm1_en >> (8 * (off & 1)));
    case 0x04:
    case 0x05:
        return (uint8_t)((pm->pm1_cnt | ACPI_PM1_CNT_SCI_EN) >> (8 * (off & 1)));
    case 0x08:
    case 0x09:
    case 0x0a:
    case 0x0b:
        return (uint8_t)(timer >> (8 * (off - 0x08)));
    case 0x10:
    case 0x11:
        return (uint8_t)(pm->gpe0_sts >> (8 * (off & 1)));
    case 0x12:
    case 0x13:
        return (uint8_t)(pm->gpe0_en >> (8 * (off & 1)));
    }
    return 0;
}

/* Returns true when the write asked for S5. */
static bool write_byte(struct acpi_pm *pm, uint64_t off, uint8_t b)
{
    unsigned shift = 8 * (off & 1);
    uint16_t v = (uint16_t)(b << shift), byte_mask = (uint16_t)(0xff << shift);
    switch (off) {
    case 0x00:
    case 0x01:
        pm->pm1_sts &= (uint16_t) ~(v & PM1_STS_MASK);
        break;
    case 0x02:
    case 0x03:
        pm->pm1_en = (uint16_t)((pm->pm1_en & ~byte_mask) | (v & PM1_EN_MASK));
        break;
    case 0x04:
    case 0x05:
        pm->pm1_cnt = (uint16_t)((pm->pm1_cnt & ~byte_mask) | (v & PM1_CNT_RW_MASK));
        if (v & ACPI_PM1_CNT_SLP_EN) {
            unsigned typ = (v >> 10) & 7;
            return typ == ACPI_PM_SLP_TYP_S5;
        }
        break;
    case 0x10:
    case 0x11:
        pm->gpe0_sts &= (uint16_t)~v;
        break;
    case 0x12:
    case 0x13:
        pm->gpe0_en = (uint16_t)((pm->gpe0_en & ~byte_mask) | v);
        break;
    }
    return false;
}

static uint64_t pm_read(void *opaque, uint64_t offset, unsigned size)
{
    struct acpi_pm *pm = opaque;
    uint64_t value = 0;

    pthread_mutex_lock(&pm->lock);
    uint64_t ticks = timer_ticks(pm);
    update_timer_status(pm, ticks);
    update_sci(pm);
    for (unsigned i = 0; i < size && i < 8; i++)
        value |= (uint64_t)read_byte(pm, offset + i, (uint32_t)ticks) << (8 * i);
    pthread_mutex_unlock(&pm->lock);
    return value;
}

static void pm_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct acpi_pm *pm = opaque;
    bool poweroff = false;

    pthread_mutex_lock(&pm->lock);
    update_timer_status(pm, timer_ticks(pm));
    for (unsigned i = 0; i < size && i < 8; i++)
        poweroff |= write_byte(pm, offset + i, (uint8_t)(value >> (8 * i)));
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
    if (poweroff && pm->ops.poweroff)
        pm->ops.poweroff(pm->opaque);
}

const struct bus_ops acpi_pm_bus_ops = {
    .read = pm_read,
    .write = pm_write,
};

static uint64_t reset_read(void *opaque, uint64_t offset, unsigned size)
{
    struct acpi_pm *pm = opaque;
    pthread_mutex_lock(&pm->lock);
    uint64_t v = offset == 0 ? pm->cf9 : 0;
    pthread_mutex_unlock(&pm->lock);
    return v;
}

static void reset_write(void *opaque, uint64_t offset, unsigned size, uint64_t value)
{
    struct acpi_pm *pm = opaque;
    if (offset != 0)
        return;
    uint8_t b = (uint8_t)value;
    pthread_mutex_lock(&pm->lock);
    pm->cf9 = b & CF9_KEEP_MASK;
    pthread_mutex_unlock(&pm->lock);
    if ((b & CF9_RST_CPU) && pm->ops.reset)
        pm->ops.reset(pm->opaque);
}

const struct bus_ops acpi_reset_bus_ops = {
    .read = reset_read,
    .write = reset_write,
};

static void reset_locked(struct acpi_pm *pm)
{
    pm->pm1_sts = 0;
    pm->pm1_en = 0;
    pm->pm1_cnt = ACPI_PM1_CNT_SCI_EN;
    pm->gpe0_sts = 0;
    pm->gpe0_en = 0;
    pm->cf9 = 0;
    pm->timer_epoch = timer_ticks(pm) >> 31;
    update_sci(pm);
}

struct acpi_pm *acpi_pm_create(const struct acpi_pm_ops *ops, void *opaque, struct irq_line sci)
{
    struct acpi_pm *pm = calloc(1, sizeof(*pm));
    if (!pm)
        return NULL;
    pthread_mutex_init(&pm->lock, NULL);
    if (ops)
        pm->ops = *ops;
    pm->opaque = opaque;
    pm->sci = sci;
    pm->start_ns = clock_ns(CLOCK_MONOTONIC);
    reset_locked(pm);
    return pm;
}

void acpi_pm_power_button(struct acpi_pm *pm)
{
    pthread_mutex_lock(&pm->lock);
    pm->pm1_sts |= ACPI_PM1_PWRBTN_STS;
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_gpe_raise(struct acpi_pm *pm, unsigned bit)
{
    if (bit >= 16)
        return;
    pthread_mutex_lock(&pm->lock);
    pm->gpe0_sts |= (uint16_t)(1u << bit);
    update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_reset(struct acpi_pm *pm)
{
    pthread_mutex_lock(&pm->lock);
    reset_locked(pm);
    pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_destroy(struct acpi_pm *pm)
{
    if (!pm)
        return;
    pthread_mutex_destroy(&pm->lock);
    free(pm);
}
