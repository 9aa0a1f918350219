/*
 * What a guest driver does to a virtio device, for the unit tests and fuzz harnesses that drive
 * devices without a transport: the status and feature steps of virtio 1.x section 3.1.1.
 */
#ifndef KEMU_TESTS_VIRTIO_DRIVER_H
#define KEMU_TESTS_VIRTIO_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio/device.h"

/* ACKNOWLEDGE and DRIVER, write the 64 feature bits, then FEATURES_OK; whether the device kept
 * FEATURES_OK (it refuses combinations it cannot serve). The caller holds v->lock. */
static inline bool virtio_driver_features(struct virtio_device *v, uint64_t features)
{
    const uint8_t ad = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
    virtio_set_status(v, ad);
    virtio_set_driver_features(v, 0, (uint32_t)features);
    virtio_set_driver_features(v, 1, (uint32_t)(features >> 32));
    virtio_set_status(v, ad | VIRTIO_STATUS_FEATURES_OK);
    return (v->status & VIRTIO_STATUS_FEATURES_OK) != 0;
}

/* Reset, negotiate `features` (false if the device refused them) and start with queues
 * 0..nq-1 of qsize entries, queue q's rings at base + q * stride: descriptors, then the avail
 * ring at +0x200 and the used ring at +0x400. Takes v->lock. */
static inline bool virtio_driver_start(struct virtio_device *v, uint64_t features, unsigned nq,
                                       unsigned qsize, uint64_t base, uint64_t stride)
{
    struct error err = {0};
    bool ok = true;
    pthread_mutex_lock(&v->lock);
    virtio_set_status(v, 0);
    if (!virtio_driver_features(v, features))
        ok = false;
    for (unsigned q = 0; ok && q < nq; q++) {
        uint64_t r = base + q * stride;
        ok = vq_set_size(&v->vq[q], qsize, &err) == 0 &&
             vq_set_addresses(&v->vq[q], r, r + 0x200, r + 0x400, &err) == 0 &&
             vq_enable(&v->vq[q], &err) == 0;
    }
    if (ok)
        virtio_set_status(v, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    ok = ok && v->started;
    pthread_mutex_unlock(&v->lock);
    return ok;
}

#endif
