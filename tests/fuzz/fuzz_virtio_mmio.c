/*
 * A hostile guest against the virtio-mmio transport: the input is a sequence of 8-byte records
 * replayed as reads and writes of any width anywhere in the device's window (and a little past
 * it), backend service rounds, configuration changes and machine resets, against a device with
 * three queues and config space. Guest memory is 64 KiB whose content also comes from the input.
 * Nothing may crash, leak or touch memory outside that buffer; the interrupt line must be the
 * one the board gave.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus.h"
#include "core/memory.h"
#include "virtio/device.h"
#include "virtio/mmio.h"

#include "fuzz_virtio_be.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BASE 0xfeb00000u
#define GSI  16

static void fz_irq(void *opaque, unsigned gsi, int level)
{
    (void)opaque;
    (void)level;
    if (gsi != GSI)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 16)
        return 0;
    struct guest_mem mem;
    seed_guest_mem(&mem, &data, &size);
    struct bus mmio;
    bus_init(&mmio, "mmio");
    struct virtio_device vdev;
    struct error err = {0};
    struct virtio_mmio *vm = NULL;
    struct irq_line irq = {.set = fz_irq, .opaque = NULL, .gsi = GSI};
    if (virtio_device_init(&vdev, "virtio-fuzz", &be_ops, NULL, &mem, VIRTIO_ID_RNG, 0x5, 3, 16, 24,
                           &err) < 0 ||
        virtio_mmio_create(&vdev, irq, &vm, &err) < 0 ||
        bus_register(&mmio, BASE, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, vm, "virtio-mmio", NULL) <
            0)
        __builtin_trap();

    static const unsigned sizes[4] = {1, 2, 4, 8};
    for (; size >= 8; data += 8, size -= 8) {
        unsigned op = data[0] % 6;
        unsigned sz = sizes[data[1] & 3];
        uint32_t off = ((uint32_t)data[2] | (uint32_t)data[3] << 8) % (VIRTIO_MMIO_SIZE + 0x40);
        uint32_t val = (uint32_t)data[4] | (uint32_t)data[5] << 8 | (uint32_t)data[6] << 16 |
                       (uint32_t)data[7] << 24;
        uint64_t v;
        switch (op) {
        case 0:
        case 1: /* writes are twice as likely: they drive the state machine */
            bus_write(&mmio, BASE + off, sz, val | (uint64_t)val << 32);
            break;
        case 2:
            bus_read(&mmio, BASE + off, sz, &v);
            break;
        case 3:
            service(&vdev);
            break;
        case 4:
            if (val & 1)
                virtio_config_changed(&vdev);
            break;
        case 5:
            if ((val & 0xff) == 0)
                virtio_mmio_reset(vm);
            break;
        }
    }
    service(&vdev);
    bus_destroy(&mmio);
    virtio_mmio_destroy(vm);
    virtio_device_destroy(&vdev);
    return 0;
}
