/*
 * ACPI fixed hardware: the PM1a event and control registers, the PM timer and a GPE0 block that
 * the FADT points at, plus the PC reset control register at port 0xCF9 that the FADT names as
 * RESET_REG. Placed at 0x600 like QEMU's PIIX4 power management function.
 *
 * Register block (I/O ports ACPI_PM_BASE + offset):
 *   0x00  PM1a_STS  16-bit, write 1 to clear    (FADT PM1a_EVT_BLK, PM1_EVT_LEN = 4)
 *   0x02  PM1a_EN   16-bit
 *   0x04  PM1a_CNT  16-bit, SCI_EN reads 1      (FADT PM1a_CNT_BLK, PM1_CNT_LEN = 2)
 *   0x08  PM_TMR    32-bit, 3.579545 MHz        (FADT PM_TMR_BLK, PM_TMR_LEN = 4, TMR_VAL_EXT)
 *   0x10  GPE0_STS  16-bit, write 1 to clear    (FADT GPE0_BLK, GPE0_BLK_LEN = 4)
 *   0x12  GPE0_EN   16-bit
 * Other offsets read 0 and ignore writes. Any access size works at any offset.
 *
 * The SCI is level-triggered and active-high (the MADT's interrupt source override for it says
 * so): the line is high while any enabled status bit is set (PM1 or GPE0). SCI_EN is hardwired
 * to 1 because the FADT has SMI_CMD = 0: the platform is always in ACPI mode.
 */
#ifndef KEMU_HW_ACPI_PM_H
#define KEMU_HW_ACPI_PM_H

#include <stdint.h>

#include "core/bus.h"
#include "core/irq.h"

#define ACPI_PM_BASE 0x600
#define ACPI_PM_LEN  0x20 /* register (ACPI_PM_BASE, ACPI_PM_LEN) with acpi_pm_bus_ops */

#define ACPI_PM1_EVT_OFFSET 0x00
#define ACPI_PM1_EVT_LEN    4
#define ACPI_PM1_CNT_OFFSET 0x04
#define ACPI_PM1_CNT_LEN    2
#define ACPI_PM_TMR_OFFSET  0x08
#define ACPI_PM_TMR_LEN     4
#define ACPI_GPE0_OFFSET    0x10
#define ACPI_GPE0_LEN       4 /* 16 GPEs: 2 status bytes, 2 enable bytes */

#define ACPI_PM_TIMER_HZ 3579545

#define ACPI_RESET_PORT  0xcf9 /* register (ACPI_RESET_PORT, 1) with acpi_reset_bus_ops */
#define ACPI_RESET_VALUE 0x06  /* the FADT's RESET_VALUE: full reset (bit 1) + reset CPU (bit 2) */

/*
 * SLP_TYP value that means S5 (soft off); the DSDT's \_S5 package carries it. 0, as QEMU's
 * PIIX4 and ICH9 use. Writing SLP_EN with any other SLP_TYP is ignored (no S1-S4 support).
 */
#define ACPI_PM_SLP_TYP_S5 0

/* PM1 status / enable bits. */
#define ACPI_PM1_TMR_STS    0x0001
#define ACPI_PM1_BM_STS     0x0010
#define ACPI_PM1_GBL_STS    0x0020
#define ACPI_PM1_PWRBTN_STS 0x0100
#define ACPI_PM1_SLPBTN_STS 0x0200
#define ACPI_PM1_RTC_STS    0x0400
#define ACPI_PM1_WAK_STS    0x8000
#define ACPI_PM1_TMR_EN     0x0001
#define ACPI_PM1_GBL_EN     0x0020
#define ACPI_PM1_PWRBTN_EN  0x0100
#define ACPI_PM1_SLPBTN_EN  0x0200
#define ACPI_PM1_RTC_EN     0x0400

/* PM1 control bits. */
#define ACPI_PM1_CNT_SCI_EN     0x0001
#define ACPI_PM1_CNT_BM_RLD     0x0002
#define ACPI_PM1_CNT_GBL_RLS    0x0004
#define ACPI_PM1_CNT_SLP_TYP(v) (((v)&7) << 10)
#define ACPI_PM1_CNT_SLP_EN     0x2000

struct acpi_pm_ops {
    /* The guest entered S5. Called on the vCPU thread, without the device lock. */
    void (*poweroff)(void *opaque);
    /* The guest wrote a reset value to 0xCF9. Called on the vCPU thread, without the lock. */
    void (*reset)(void *opaque);
};

struct acpi_pm;

/* ops may be NULL (or have NULL members). Returns NULL when out of memory. */
struct acpi_pm *acpi_pm_create(const struct acpi_pm_ops *ops, void *opaque, struct irq_line sci);
/* The power button was pressed: sets PWRBTN_STS, raises the SCI if PWRBTN_EN. */
void acpi_pm_power_button(struct acpi_pm *pm);
/* Set GPE0 status bit `bit` (0-15), raising the SCI if that GPE is enabled. */
void acpi_pm_gpe_raise(struct acpi_pm *pm, unsigned bit);
/* System reset: status, enables, control and 0xCF9 return to their reset values; SCI lowered. */
void acpi_pm_reset(struct acpi_pm *pm);
void acpi_pm_destroy(struct acpi_pm *pm);

extern const struct bus_ops acpi_pm_bus_ops;    /* opaque = struct acpi_pm * */
extern const struct bus_ops acpi_reset_bus_ops; /* opaque = struct acpi_pm * */

#endif
