/* The transport-independent part of a virtio device: status, features, config space, kicks. */
#include "virtio/device.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/os.h"

/* What every kemu virtio device offers whatever its kind: a modern device with indirect
 * descriptors and event index. */
#define VIRTIO_COMMON_FEATURES                                                                     \
    (VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC) |                    \
     VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX))

int virtio_device_init(struct virtio_device *vdev, const char *name,
                       const struct virtio_device_ops *ops, void *opaque, struct guest_mem *mem,
                       unsigned device_id, uint64_t device_features, unsigned nqueues,
                       unsigned queue_size, unsigned config_len, struct error *err)
{
    memset(vdev, 0, sizeof(*vdev));
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        vdev->kick_fd[i] = -1;
    if (nqueues == 0 || nqueues > VIRTIO_MAX_QUEUES)
        return error_setf(err, "%s: %u queues (1..%u)", name, nqueues, VIRTIO_MAX_QUEUES);
    vdev->name = name;
    vdev->ops = ops;
    vdev->opaque = opaque;
    vdev->mem = mem;
    vdev->device_id = device_id;
    vdev->device_features = device_features | VIRTIO_COMMON_FEATURES;
    vdev->nqueues = nqueues;
    vdev->config_len = config_len;
    if (config_len) {
        vdev->config = calloc(1, config_len);
        if (!vdev->config)
            return error_setf(err, "%s: out of memory", name);
    }
    for (unsigned i = 0; i < nqueues; i++) {
        if (vq_init(&vdev->vq[i], mem, i, queue_size, err) < 0)
            goto fail;
        vdev->kick_fd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (vdev->kick_fd[i] < 0) {
            error_setf_errno(err, errno, "%s: eventfd", name);
            goto fail;
        }
    }
    pthread_mutex_init(&vdev->lock, NULL);
    return 0;
fail:
    for (unsigned i = 0; i < nqueues; i++)
        if (vdev->kick_fd[i] >= 0)
            close(vdev->kick_fd[i]);
    free(vdev->config);
    vdev->config = NULL;
    return -1;
}

static void stop_backend(struct virtio_device *vdev)
{
    if (vdev->started) {
        vdev->started = false;
        if (vdev->ops->stop)
            vdev->ops->stop(vdev);
    }
}

void virtio_device_destroy(struct virtio_device *vdev)
{
    if (!vdev->nqueues)
        return;
    pthread_mutex_lock(&vdev->lock);
    stop_backend(vdev);
    pthread_mutex_unlock(&vdev->lock);
    for (unsigned i = 0; i < vdev->nqueues; i++)
        if (vdev->kick_fd[i] >= 0)
            close(vdev->kick_fd[i]);
    free(vdev->config);
    pthread_mutex_destroy(&vdev->lock);
    vdev->config = NULL;
    vdev->nqueues = 0;
}

void virtio_reset(struct virtio_device *vdev)
{
    stop_backend(vdev);
    if (vdev->ops->reset)
        vdev->ops->reset(vdev);
    for (unsigned i = 0; i < vdev->nqueues; i++) {
        vq_reset(&vdev->vq[i]);
        os_event_drain(vdev->kick_fd[i]);
    }
    __atomic_store_n(&vdev->status, 0, __ATOMIC_SEQ_CST);
    vdev->driver_features = 0;
    vdev->features = 0;
}

static bool features_acceptable(struct virtio_device *vdev)
{
    uint64_t f = vdev->driver_features;
    if (f & ~vdev->device_features)
        return false; /* the driver may only accept what was offered */
    if (!(f & VIRTIO_BIT(VIRTIO_F_VERSION_1)))
        return false; /* modern transport: a legacy driver cannot use this device */
    return !vdev->ops->features_ok || vdev->ops->features_ok(vdev, f) == 0;
}

void virtio_set_status(struct virtio_device *vdev, uint8_t status)
{
    if (status == 0) {
        virtio_reset(vdev);
        return;
    }
    uint8_t old = __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
    /* Only a reset (0) clears bits: a driver that drops FEATURES_OK and sets it again must not
     * renegotiate under a running backend. DEVICE_NEEDS_RESET belongs to the device. */
    status = (uint8_t)((status & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET) | old);
    if ((status & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
        if (features_acceptable(vdev)) {
            vdev->features = vdev->driver_features;
            for (unsigned i = 0; i < vdev->nqueues; i++)
                vq_set_features(&vdev->vq[i], vdev->features);
        } else {
            /* The driver reads the status back and sees FEATURES_OK unset (spec 3.1.1). */
            status &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
        }
    }
    /* OR, not store: a backend thread may set DEVICE_NEEDS_RESET concurrently. */
    status = (uint8_t)(__atomic_or_fetch(&vdev->status, status, __ATOMIC_SEQ_CST));
    if ((status & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) &&
        (status & VIRTIO_STATUS_FEATURES_OK) && !(status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) &&
        !vdev->started) {
        if (vdev->ops->start && vdev->ops->start(vdev) < 0) {
            virtio_set_needs_reset(vdev, "the device could not start");
            return;
        }
        vdev->started = true;
        /* Buffers made available before DRIVER_OK were notified into the kick fds already and
         * stay there; nothing is lost. */
    }
}

void virtio_set_driver_features(struct virtio_device *vdev, unsigned select, uint32_t bits)
{
    if (select > 1 || (vdev->status & VIRTIO_STATUS_FEATURES_OK))
        return;
    unsigned shift = select * 32;
    vdev->driver_features =
        (vdev->driver_features & ~(0xffffffffULL << shift)) | ((uint64_t)bits << shift);
}

uint32_t virtio_get_device_features(const struct virtio_device *vdev, unsigned select)
{
    return select > 1 ? 0 : (uint32_t)(vdev->device_features >> (select * 32));
}

uint32_t virtio_read_config(struct virtio_device *vdev, unsigned offset, unsigned size)
{
    if (size > 4 || offset >= vdev->config_len || size > vdev->config_len - offset)
        return 0;
    if (vdev->ops->config_read)
        vdev->ops->config_read(vdev, offset, size);
    uint32_t v = 0;
    for (unsigned i = 0; i < size; i++)
        v |= (uint32_t)vdev->config[offset + i] << (8 * i);
    return v;
}

void virtio_write_config(struct virtio_device *vdev, unsigned offset, unsigned size, uint32_t val)
{
    if (!vdev->ops->config_write || size > 4 || offset >= vdev->config_len ||
        size > vdev->config_len - offset)
        return;
    for (unsigned i = 0; i < size; i++)
        vdev->config[offset + i] = (uint8_t)(val >> (8 * i));
    vdev->ops->config_write(vdev, offset, size);
}

void virtio_kick(struct virtio_device *vdev, unsigned q)
{
    if (q >= vdev->nqueues)
        return;
    os_event_signal(vdev->kick_fd[q]);
}

bool virtio_notify_queue(struct virtio_device *vdev, unsigned q)
{
    if (q >= vdev->nqueues || !vq_should_notify(&vdev->vq[q]))
        return false;
    if (!vdev->transport || !vdev->transport->notify_queue)
        return false;
    vdev->transport->notify_queue(vdev, q);
    return true;
}

void virtio_config_changed(struct virtio_device *vdev)
{
    __atomic_fetch_add(&vdev->config_generation, 1, __ATOMIC_SEQ_CST);
    if (!(__atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST) & VIRTIO_STATUS_DRIVER_OK))
        return;
    if (vdev->transport && vdev->transport->notify_config)
        vdev->transport->notify_config(vdev);
}

void virtio_set_needs_reset(struct virtio_device *vdev, const char *msg)
{
    uint8_t old =
        __atomic_fetch_or(&vdev->status, VIRTIO_STATUS_DEVICE_NEEDS_RESET, __ATOMIC_SEQ_CST);
    if (old & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
        return;
    fprintf(stderr, "kemu: %s: %s; the device needs a reset\n", vdev->name, msg);
    if ((old & VIRTIO_STATUS_DRIVER_OK) && vdev->transport && vdev->transport->notify_config)
        vdev->transport->notify_config(vdev);
}
