/*
 * virtio-rng (VIRTIO 1.x, 5.4, device ID 4): QEMU's virtio-rng-pci with an rng-random backend.
 * One request queue; every buffer the driver offers is filled with bytes read from the entropy
 * source (a file or device, /dev/urandom by default), at most max_bytes per period_ms when a
 * limit is set (QEMU's max-bytes and period). No feature bits, no config space.
 *
 * A worker thread, from DRIVER_OK (ops->start) to reset (ops->stop), waits on the queue's kick
 * fd, a stop eventfd, the rate limit's timerfd and, when the source has nothing to give yet
 * (a FIFO, say), the source itself; it reads straight into the guest's buffers.
 */
#ifndef KEMU_VIRTIO_RNG_H
#define KEMU_VIRTIO_RNG_H

#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"
#include "virtio/device.h"

#define VIRTIO_RNG_QUEUE_SIZE     256
#define VIRTIO_RNG_DEFAULT_SOURCE "/dev/urandom"

struct virtio_rng;

/* filename: the entropy source (QEMU's rng-random filename=, default /dev/urandom); max_bytes
 * per period_ms (QEMU's virtio-rng max-bytes/period; max_bytes 0 = unlimited). */
int virtio_rng_create(struct guest_mem *mem, const char *filename, uint64_t max_bytes,
                      uint64_t period_ms, struct virtio_rng **out, struct error *err);
struct virtio_device *virtio_rng_vdev(struct virtio_rng *r);
/* Stops the worker and closes the source; destroy the transport first. NULL is ignored. */
void virtio_rng_destroy(struct virtio_rng *r);

#endif
