/* For the virtio transport harnesses: guest memory seeded from the input, and a device backend that
 * services its queues when told to, on the fuzzing thread (deterministic), echoing what it reads
 * into what it may write. */
#ifndef KEMU_FUZZ_VIRTIO_BE_H
#define KEMU_FUZZ_VIRTIO_BE_H

#include <stdlib.h>
#include <string.h>

#include "core/memory.h"
#include "virtio/device.h"

#define RAM_SIZE 0x10000

/* The first half of the input (up to RAM_SIZE bytes) seeds guest memory, rings and buffers;
 * *data and *size are left with the rest, the register accesses. */
static void seed_guest_mem(struct guest_mem *mem, const uint8_t **data, size_t *size)
{
    static uint8_t *ram;
    if (!ram && !(ram = malloc(RAM_SIZE)))
        abort();
    size_t seed = *size / 2 < RAM_SIZE ? *size / 2 : RAM_SIZE;
    memset(ram, 0, RAM_SIZE);
    memcpy(ram, *data, seed);
    *data += seed;
    *size -= seed;
    guest_mem_init_buffer(mem, ram, RAM_SIZE);
}

static int be_start(struct virtio_device *vdev)
{
    return 0;
}

static void be_stop(struct virtio_device *vdev) {}

static void be_config_write(struct virtio_device *vdev, unsigned offset, unsigned size) {}

static const struct virtio_device_ops be_ops = {
    .start = be_start, .stop = be_stop, .config_write = be_config_write};

static void service(struct virtio_device *vdev)
{
    if (!vdev->started)
        return;
    static struct vq_chain chain;
    for (unsigned q = 0; q < vdev->nqueues; q++) {
        struct virtqueue *vq = &vdev->vq[q];
        struct error err = {0};
        for (unsigned n = 0; n < 64; n++) {
            int r = vq_pop(vq, &chain, &err);
            if (r < 0) {
                virtio_set_needs_reset(vdev, "fuzz");
                return;
            }
            if (r == 0)
                break;
            uint8_t buf[64] = {0};
            uint32_t w = chain.writable_len < sizeof(buf) ? chain.writable_len : sizeof(buf);
            vq_chain_read(vq, &chain, 0, buf,
                          chain.readable_len < sizeof(buf) ? chain.readable_len : sizeof(buf));
            vq_chain_write(vq, &chain, 0, buf, w);
            vq_push(vq, chain.head, w);
        }
        virtio_notify_queue(vdev, q);
    }
}

#endif
