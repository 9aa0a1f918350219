/*
 * A virtio device, independent of its transport (virtio-pci now, virtio-mmio later).
 *
 * Three parties:
 * - the device kind (blk, net, rng, console) fills a struct virtio_device_ops and owns its
 *   backend threads;
 * - the transport (virtio/pci.c) turns the guest's register accesses into calls of
 *   virtio_read/write_config(), virtio_set_status(), virtio_set_driver_features() and the
 *   vq_set_* calls, and delivers interrupts through struct virtio_transport_ops;
 * - this core keeps the common state (status, features, config generation, one kick eventfd
 *   per queue) and the rules of the specification between the two.
 *
 * Notifications: every queue has an eventfd (kick_fd). The transport gets it signalled by KVM
 * (ioeventfd) or writes it itself when the guest's notify write reaches it, so the backend only
 * ever waits on kick fds and never runs on a vCPU thread.
 *
 * Interrupts: the backend calls virtio_notify_queue() after pushing a batch; the core asks the
 * virtqueue whether the driver wants an interrupt and the transport sends it (MSI-X message or
 * ISR bit + INTx). Both are safe from any thread.
 *
 * Lifecycle and locking: vdev->lock (a mutex) guards status, features and the queue
 * configuration. The transport holds it while it changes them. When the driver sets DRIVER_OK
 * the core calls ops->start() (lock held): the backend may then service the enabled queues from
 * its own threads, without taking vdev->lock for each request. When the driver writes status 0
 * (reset) or the device is torn down, the core calls ops->stop() (lock held) which must return
 * only once no backend thread touches a queue or guest memory any more (in-flight requests
 * completed or dropped); then the queues are reset. A backend thread that needs vdev->lock (for
 * virtio_config_changed, say) must not wait for it while ops->stop() waits for that thread:
 * use virtio_config_changed() (which does not take the lock) or trylock.
 */
#ifndef KEMU_VIRTIO_DEVICE_H
#define KEMU_VIRTIO_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"
#include "virtio/virtio.h"
#include "virtio/virtqueue.h"

#define VIRTIO_MAX_QUEUES 64

struct virtio_device;

struct virtio_device_ops {
    /* Device-specific reset of the backend state; config space back to its power-on content.
     * Optional. Called with the lock held after stop() and before the queues are reset. */
    void (*reset)(struct virtio_device *vdev);
    /* The driver finished initialisation (DRIVER_OK): begin servicing the queues. Returns 0, or
     * -1 and the core sets DEVICE_NEEDS_RESET. */
    int (*start)(struct virtio_device *vdev);
    /* Stop servicing the queues; see the lifecycle note above. Called only after start(). */
    void (*stop)(struct virtio_device *vdev);
    /* The driver wrote the device-specific config space (bytes already stored in vdev->config).
     * Optional: without it the config space is read-only for the guest. */
    void (*config_write)(struct virtio_device *vdev, unsigned offset, unsigned size);
    /* Called before a driver read of the config space, to refresh vdev->config. Optional. */
    void (*config_read)(struct virtio_device *vdev, unsigned offset, unsigned size);
    /* Features accepted (FEATURES_OK): a device may refuse a combination by returning -1. */
    int (*features_ok)(struct virtio_device *vdev, uint64_t features);
};

/* What the transport provides to the core. */
struct virtio_transport_ops {
    /* Interrupt for queue q (used buffers). */
    void (*notify_queue)(struct virtio_device *vdev, unsigned q);
    /* Interrupt for a configuration change (also used for DEVICE_NEEDS_RESET). */
    void (*notify_config)(struct virtio_device *vdev);
    /* Optional, for a source that signals queue q's interrupt by writing an eventfd (vhost):
     * set(opaque, fd) now and on every change, fd being the eventfd that raises that interrupt
     * with no hop through kemu (an irqfd while its MSI-X vector is unmasked) or -1 (then use
     * notify_queue). set() runs with transport locks held and takes no lock but its own.
     * set == NULL ends it. */
    void (*watch_queue_irq)(struct virtio_device *vdev, unsigned q,
                            void (*set)(void *opaque, int fd), void *opaque);
};

struct virtio_device {
    const char *name; /* "virtio-blk-pci", for messages */
    const struct virtio_device_ops *ops;
    void *opaque; /* the device kind's own state */
    struct guest_mem *mem;
    unsigned device_id; /* VIRTIO_ID_* */

    /* Features: device_features include VIRTIO_F_VERSION_1 and the ring features. */
    uint64_t device_features;
    uint64_t driver_features; /* as written by the driver */
    uint64_t features;        /* negotiated (valid from FEATURES_OK) */

    uint8_t status;
    uint32_t config_generation;
    uint8_t *config; /* device-specific configuration space, little-endian fields */
    unsigned config_len;

    unsigned nqueues;
    struct virtqueue vq[VIRTIO_MAX_QUEUES];
    int kick_fd[VIRTIO_MAX_QUEUES]; /* eventfds, non-blocking */
    bool started;                   /* start() succeeded, stop() not yet called */

    const struct virtio_transport_ops *transport;
    void *transport_opaque;

    pthread_mutex_t lock;
};

/*
 * Set up a device with nqueues queues of at most queue_size entries each and config_len bytes of
 * config space (zeroed; the kind fills it). device_features are the kind's feature bits; the
 * core adds VERSION_1, RING_INDIRECT_DESC and RING_EVENT_IDX.
 */
int virtio_device_init(struct virtio_device *vdev, const char *name,
                       const struct virtio_device_ops *ops, void *opaque, struct guest_mem *mem,
                       unsigned device_id, uint64_t device_features, unsigned nqueues,
                       unsigned queue_size, unsigned config_len, struct error *err);
/* Stops the backend if running; closes the kick fds; frees the config space. */
void virtio_device_destroy(struct virtio_device *vdev);

/* ---- for the transport (hold vdev->lock around these) ---- */

/* The driver wrote the status register: applies the specification's rules (FEATURES_OK only if
 * the features are acceptable, DRIVER_OK starts the backend, 0 resets the device). */
void virtio_set_status(struct virtio_device *vdev, uint8_t status);
/* Driver feature bits, 32 at a time (select 0 or 1); ignored after FEATURES_OK. */
void virtio_set_driver_features(struct virtio_device *vdev, unsigned select, uint32_t bits);
uint32_t virtio_get_device_features(const struct virtio_device *vdev, unsigned select);
/* Config space access: out-of-range bytes read as 0 and are not written. */
uint32_t virtio_read_config(struct virtio_device *vdev, unsigned offset, unsigned size);
void virtio_write_config(struct virtio_device *vdev, unsigned offset, unsigned size, uint32_t val);
/* Reset the device to its power-on state (status 0). */
void virtio_reset(struct virtio_device *vdev);
/* The guest notified queue q (only when the transport has no ioeventfd for it). */
void virtio_kick(struct virtio_device *vdev, unsigned q);

/* ---- for the device kind (any thread) ---- */

/* After pushing used buffers on queue q: interrupt the driver if it wants one (true when an
 * interrupt went out). */
bool virtio_notify_queue(struct virtio_device *vdev, unsigned q);
/* The device changed its config space: bump the generation and interrupt the driver. */
void virtio_config_changed(struct virtio_device *vdev);
/* The driver broke the rules (e.g. vq_pop returned -1): set DEVICE_NEEDS_RESET, tell the
 * driver, and log msg once. The backend must stop using the device until it is reset. */
void virtio_set_needs_reset(struct virtio_device *vdev, const char *msg);
/* True when the feature was negotiated. */
static inline bool virtio_has_feature(const struct virtio_device *vdev, unsigned bit)
{
    return (vdev->features >> bit) & 1;
}

#endif
