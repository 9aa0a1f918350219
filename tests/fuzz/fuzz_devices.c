/*
 * A hostile guest's register accesses: the input is a sequence of port accesses (port selector,
 * offset, size, direction, value) replayed against every platform device through a port bus,
 * with host input fed to the UART in between. Nothing may crash, hang or touch memory it should
 * not; callbacks only count.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "chardev/chardev.h"
#include "core/bus.h"
#include "hw/acpi_pm.h"
#include "hw/debugexit.h"
#include "hw/i8042.h"
#include "hw/pit.h"
#include "hw/rtc.h"
#include "hw/serial.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned events;

static ssize_t sink_write(struct chardev *c, const uint8_t *buf, size_t len)
{
    return (ssize_t)len;
}

static const struct chardev_ops sink_ops = {.write = sink_write};

static void irq_set(void *opaque, unsigned gsi, int level) {}

static void on_reset(void *opaque)
{
    events++;
}

static void on_exit_status(void *opaque, int status)
{
    events++;
}

static const struct acpi_pm_ops pm_ops = {.poweroff = on_reset, .reset = on_reset};

static const uint16_t ports[] = {0x3f8, 0x60, 0x64, 0x70, 0x600, 0xcf9, 0x501, 0x40, 0x61};

/* The PIT reads time on every access: the harness's clock, so runs replay exactly. */
static int64_t now;

static int64_t fuzz_clock(void *opaque)
{
    return now;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct chardev chr = {.ops = &sink_ops};
    struct irq_line irq = {.set = irq_set};
    struct rtc_config rc = {.ram_below_4g = 256 << 20, .nr_cpus = 1};
    struct serial *ser = serial_create(&chr, irq);
    struct i8042 *kbc = i8042_create(on_reset, NULL, irq, irq);
    struct rtc *rtc = rtc_create(&rc, irq);
    struct acpi_pm *pm = acpi_pm_create(&pm_ops, NULL, irq);
    struct debugexit *dbg = debugexit_create(on_exit_status, NULL);
    struct timed_hooks pit_hooks = {.clock = fuzz_clock};
    struct pit *pit = pit_create(&pit_hooks, irq);
    struct bus bus;
    bus_init(&bus, "pio");
    bus_register(&bus, 0x3f8, SERIAL_IO_LEN, &serial_bus_ops, ser, "serial", NULL);
    bus_register(&bus, 0x60, 1, &i8042_data_ops, kbc, "kbd-data", NULL);
    bus_register(&bus, 0x64, 1, &i8042_cmd_ops, kbc, "kbd-cmd", NULL);
    bus_register(&bus, 0x70, RTC_IO_LEN, &rtc_bus_ops, rtc, "rtc", NULL);
    bus_register(&bus, ACPI_PM_BASE, ACPI_PM_LEN, &acpi_pm_bus_ops, pm, "pm", NULL);
    bus_register(&bus, ACPI_RESET_PORT, 1, &acpi_reset_bus_ops, pm, "cf9", NULL);
    bus_register(&bus, 0x501, 2, &debugexit_bus_ops, dbg, "debug-exit", NULL);
    bus_register(&bus, PIT_IO_BASE, PIT_IO_LEN, &pit_bus_ops, pit, "pit", NULL);
    bus_register(&bus, PIT_SPEAKER_IO, 1, &pit_speaker_ops, pit, "pcspk", NULL);

    now = 0;
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint8_t sel = data[i], off = data[i + 1], op = data[i + 2], val = data[i + 3];
        uint16_t port = (uint16_t)(ports[sel % (sizeof(ports) / sizeof(ports[0]))] + (off & 0x3f));
        unsigned sz = 1u << (op & 3);
        if (sz == 8)
            sz = 4;
        if (op & 0x80) {
            uint64_t v;
            bus_read(&bus, port, sz, &v);
        } else if (op & 0x40) {
            /* Host side: typed input for the UART, or time passing for the RTC and PIT. */
            if (chr.has_fe && chr.fe.can_receive(chr.fe.opaque) > 0)
                chr.fe.receive(chr.fe.opaque, &val, 1);
            now += (int64_t)val * 1000000;
            rtc_tick(rtc, now);
            (void)rtc_next_deadline_ns(rtc);
            pit_tick(pit, now);
            (void)pit_next_deadline_ns(pit);
        } else {
            bus_write(&bus, port, sz, (uint64_t)val * 0x01010101u);
        }
    }
    serial_reset(ser);
    i8042_reset(kbc);
    rtc_reset(rtc);
    acpi_pm_reset(pm);
    pit_reset(pit);
    bus_destroy(&bus);
    serial_destroy(ser);
    i8042_destroy(kbc);
    rtc_destroy(rtc);
    acpi_pm_destroy(pm);
    debugexit_destroy(dbg);
    pit_destroy(pit);
    return 0;
}
