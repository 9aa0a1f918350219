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

#endif
