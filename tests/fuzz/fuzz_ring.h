/* For the device harnesses that play a hostile driver on one queue: the fuzzer's bytes laid
 * over guest memory with the harness's own avail ring, then one kick and a wait until the device
 * used every entry or asked for a reset. */
#ifndef KEMU_FUZZ_RING_H
#define KEMU_FUZZ_RING_H

#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/bytes.h"
#include "virtio/device.h"

/* ram gets image (the rest zeroed); the avail ring at `avail` gets n heads (each mod qsize) and
 * idx 0, the used ring at `used` zeros. */
static inline void fuzz_ring_layout(uint8_t *ram, size_t ram_size, const uint8_t *image,
                                    size_t image_len, const uint8_t *heads, unsigned n,
                                    unsigned qsize, uint64_t avail, uint64_t used)
{
    memset(ram, 0, ram_size);
    memcpy(ram, image, image_len < ram_size ? image_len : ram_size);
    memset(ram + avail, 0, 6 + 2 * (size_t)qsize);
    for (unsigned i = 0; i < n; i++)
        le_put16(ram + avail + 4 + 2 * i, (uint16_t)(le_get16(heads + 2 * i) % qsize));
    memset(ram + used, 0, 6 + 8 * (size_t)qsize);
}

/* Make the n entries available on queue q (started), kick, and wait until all are used or the
 * device needs a reset; a wait of more than limit_s seconds traps (the device lost a buffer).
 * Then reset the device, which drains what it still does. */
static inline void fuzz_ring_run(struct virtio_device *v, uint8_t *ram, unsigned q, unsigned n,
                                 uint64_t avail, uint64_t used, long limit_s)
{
    __atomic_store_n((uint16_t *)(void *)(ram + avail + 2), (uint16_t)n, __ATOMIC_RELEASE);
    virtio_kick(v, q);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        uint16_t u = __atomic_load_n((uint16_t *)(void *)(ram + used + 2), __ATOMIC_ACQUIRE);
        if (u == n ||
            (__atomic_load_n(&v->status, __ATOMIC_SEQ_CST) & VIRTIO_STATUS_DEVICE_NEEDS_RESET))
            break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > limit_s)
            __builtin_trap();
        usleep(50);
    }
    pthread_mutex_lock(&v->lock);
    virtio_reset(v);
    pthread_mutex_unlock(&v->lock);
}

#endif
