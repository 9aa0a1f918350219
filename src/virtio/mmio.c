/*
 * virtio-mmio, version 2 (VIRTIO 1.x, 4.2): the register block, queue set-up, notifications and
 * the interrupt line. See virtio/mmio.h.
 */
#include "virtio/mmio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the driver wrote for one queue, applied to the virtqueue when it writes QueueReady = 1
 * (the addresses arrive in 32-bit halves). Under vdev->lock. */
struct mmio_queue {
    uint32_t num;
    uint64_t desc, driver, device;
};

struct virtio_mmio {
    struct virtio_device *vdev;
    struct irq_line irq;
    char *name; /* "virtio-blk-device" */

    /* Under vdev->lock. */
    uint32_t dfsel, gfsel, queue_sel, shm_sel;
    struct mmio_queue q[VIRTIO_MAX_QUEUES];

    uint32_t int_status; /* atomic: set by any thread, cleared by InterruptACK */

    /* QueueNotify through KVM (virtio_mmio_set_ioeventfd); under vdev->lock. */
    uint64_t base;
    virtio_mmio_ioeventfd_fn ioeventfd_fn;
    void *ioeventfd_ctx;
    bool ioeventfd[VIRTIO_MAX_QUEUES]; /* registered for queue q */
};

/* ---- interrupts (any thread) ----------------------------------------------------------------- */

static void raise_interrupt(struct virtio_mmio *vm, uint32_t bit)
{
    __atomic_fetch_or(&vm->int_status, bit, __ATOMIC_SEQ_CST);
    irq_set_level(&vm->irq, 1);
    irq_set_level(&vm->irq, 0);
}

static void mmio_notify_queue(struct virtio_device *vdev, unsigned q)
{
    if (q < vdev->nqueues)
        raise_interrupt(vdev->transport_opaque, VIRTIO_MMIO_INT_VRING);
}

static void mmio_notify_config(struct virtio_device *vdev)
{
    raise_interrupt(vdev->transport_opaque, VIRTIO_MMIO_INT_CONFIG);
}

static const struct virtio_transport_ops mmio_transport_ops = {
    .notify_queue = mmio_notify_queue,
    .notify_config = mmio_notify_config,
};

/* ---- ioeventfds (vdev->lock held) ------------------------------------------------------------ */

/* Queue q's ioeventfd on or off. All queues share QueueNotify, so each matches its own index. */
static void ioeventfd_set(struct virtio_mmio *vm, unsigned q, bool on)
{
    if (!vm->ioeventfd_fn || vm->ioeventfd[q] == on)
        return;
    int r = vm->ioeventfd_fn(vm->ioeventfd_ctx, vm->base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, q,
                             vm->vdev->kick_fd[q], on);
    /* A failed registration leaves the queue on the trap path; a failed removal (the VM is
     * being torn down) leaves nothing to track. */
    vm->ioeventfd[q] = on && r == 0;
}

static void ioeventfd_clear_all(struct virtio_mmio *vm)
{
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
        ioeventfd_set(vm, q, false);
}

/* ---- registers (vdev->lock held) ------------------------------------------------------------- */

static void transport_reset(struct virtio_mmio *vm)
{
    ioeventfd_clear_all(vm);
    vm->dfsel = vm->gfsel = vm->queue_sel = vm->shm_sel = 0;
    memset(vm->q, 0, sizeof(vm->q));
    __atomic_store_n(&vm->int_status, 0, __ATOMIC_SEQ_CST);
}

/* The selected queue, or NULL when QueueSel names none (its registers then read 0). */
static struct mmio_queue *selected(struct virtio_mmio *vm)
{
    return vm->queue_sel < vm->vdev->nqueues ? &vm->q[vm->queue_sel] : NULL;
}

static void set_half(uint64_t *reg, bool high, uint32_t val)
{
    if (high)
        *reg = (*reg & 0xffffffffULL) | (uint64_t)val << 32;
    else
        *reg = (*reg & ~0xffffffffULL) | val;
}

static void queue_ready(struct virtio_mmio *vm, unsigned index, uint32_t val)
{
    struct virtio_device *vdev = vm->vdev;
    struct virtqueue *vq = &vdev->vq[index];
    struct mmio_queue *q = &vm->q[index];
    struct error err = {0};
    if (vdev->started) {
        /* The backend services the queues and must not see one change under it; the driver
         * sets its queues up before DRIVER_OK (spec 3.1.1). */
        char msg[64];
        snprintf(msg, sizeof(msg), "queue %u %s after DRIVER_OK", index,
                 val ? "enabled" : "disabled");
        virtio_set_needs_reset(vdev, msg);
        return;
    }
    if (!val) {
        ioeventfd_set(vm, index, false);
        vq_reset(vq); /* Linux writes 0 when it deletes a queue */
        if (vdev->status & VIRTIO_STATUS_FEATURES_OK)
            vq_set_features(vq, vdev->features); /* what FEATURES_OK gave every queue */
        return;
    }
    if (vq_is_enabled(vq))
        return;
    if (vq_set_size(vq, q->num, &err) < 0 ||
        vq_set_addresses(vq, q->desc, q->driver, q->device, &err) < 0 || vq_enable(vq, &err) < 0) {
        virtio_set_needs_reset(vdev, err.msg);
        return;
    }
    ioeventfd_set(vm, index, true);
}

static uint32_t reg_read(struct virtio_mmio *vm, uint64_t off)
{
    struct virtio_device *vdev = vm->vdev;
    struct mmio_queue *q = selected(vm);
    switch (off) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION:
        return VIRTIO_MMIO_VERSION_2;
    case VIRTIO_MMIO_DEVICE_ID:
        return vdev->device_id;
    case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        return virtio_get_device_features(vdev, vm->dfsel);
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return q ? vdev->vq[vm->queue_sel].max_size : 0;
    case VIRTIO_MMIO_QUEUE_NUM:
        return q ? q->num : 0;
    case VIRTIO_MMIO_QUEUE_READY:
        return q ? vq_is_enabled(&vdev->vq[vm->queue_sel]) : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        return __atomic_load_n(&vm->int_status, __ATOMIC_SEQ_CST);
    case VIRTIO_MMIO_STATUS:
        return __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        return q ? (uint32_t)(q->desc >> (off & 4 ? 32 : 0)) : 0;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        return q ? (uint32_t)(q->driver >> (off & 4 ? 32 : 0)) : 0;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
        return q ? (uint32_t)(q->device >> (off & 4 ? 32 : 0)) : 0;
    case VIRTIO_MMIO_SHM_LEN_LOW:
    case VIRTIO_MMIO_SHM_LEN_HIGH:
        return 0xffffffffu; /* length -1: no shared memory region (spec 4.2.2) */
    case VIRTIO_MMIO_CONFIG_GENERATION:
        return __atomic_load_n(&vdev->config_generation, __ATOMIC_SEQ_CST);
    default:
        return 0; /* write-only and reserved registers */
    }
}

static void reg_write(struct virtio_mmio *vm, uint64_t off, uint32_t val)
{
    struct virtio_device *vdev = vm->vdev;
    struct mmio_queue *q = selected(vm);
    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        vm->dfsel = val;
        return;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        virtio_set_driver_features(vdev, vm->gfsel, val); /* a select above 1 is ignored there */
        return;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        vm->gfsel = val;
        return;
    case VIRTIO_MMIO_QUEUE_SEL:
        vm->queue_sel = val;
        return;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        /* The value is the queue index (without VIRTIO_F_NOTIFICATION_DATA, never offered).
         * Reached for queues without an ioeventfd, and for other widths or values. */
        if (val < vdev->nqueues)
            virtio_kick(vdev, val);
        return;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        __atomic_fetch_and(&vm->int_status, ~val, __ATOMIC_SEQ_CST);
        return;
    case VIRTIO_MMIO_STATUS:
        if ((uint8_t)val == 0)
            ioeventfd_clear_all(vm); /* before the reset, so no kick lands after it */
        virtio_set_status(vdev, (uint8_t)val);
        if ((uint8_t)val == 0)
            transport_reset(vm);
        return;
    case VIRTIO_MMIO_SHM_SEL:
        vm->shm_sel = val;
        return;
    case VIRTIO_MMIO_QUEUE_READY:
        if (q)
            queue_ready(vm, vm->queue_sel, val & 1);
        return;
    default:
        break;
    }
    /* The queue's configuration: only while it is disabled (spec 4.2.2.3). */
    if (!q || vq_is_enabled(&vdev->vq[vm->queue_sel]))
        return;
    switch (off) {
    case VIRTIO_MMIO_QUEUE_NUM:
        q->num = val; /* checked when the queue is made ready */
        return;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        set_half(&q->desc, off & 4, val);
        return;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        set_half(&q->driver, off & 4, val);
        return;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
        set_half(&q->device, off & 4, val);
        return;
    default:
        return; /* read-only and reserved registers */
    }
}

/* ---- the window ------------------------------------------------------------------------------ */

static bool valid(uint64_t off, unsigned size)
{
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return false;
    if (off >= VIRTIO_MMIO_SIZE || size > VIRTIO_MMIO_SIZE - off)
        return false;
    /* Control registers: aligned 32-bit accesses only (spec 4.2.2.2). */
    return off >= VIRTIO_MMIO_CONFIG || (size == 4 && !(off & 3));
}

static uint64_t config_read(struct virtio_device *vdev, unsigned off, unsigned size)
{
    if (size == 8)
        return virtio_read_config(vdev, off, 4) | (uint64_t)virtio_read_config(vdev, off + 4, 4)
                                                      << 32;
    return virtio_read_config(vdev, off, size);
}

static void config_write(struct virtio_device *vdev, unsigned off, unsigned size, uint64_t v)
{
    if (size == 8) {
        virtio_write_config(vdev, off, 4, (uint32_t)v);
        virtio_write_config(vdev, off + 4, 4, (uint32_t)(v >> 32));
        return;
    }
    virtio_write_config(vdev, off, size, (uint32_t)v);
}

static uint64_t mmio_read(void *opaque, uint64_t off, unsigned size)
{
    struct virtio_mmio *vm = opaque;
    struct virtio_device *vdev = vm->vdev;
    uint64_t v = 0;
    if (!valid(off, size))
        return 0;
    pthread_mutex_lock(&vdev->lock);
    if (off >= VIRTIO_MMIO_CONFIG)
        v = config_read(vdev, (unsigned)(off - VIRTIO_MMIO_CONFIG), size);
    else
        v = reg_read(vm, off);
    pthread_mutex_unlock(&vdev->lock);
    return v;
}

static void mmio_write(void *opaque, uint64_t off, unsigned size, uint64_t val)
{
    struct virtio_mmio *vm = opaque;
    struct virtio_device *vdev = vm->vdev;
    if (!valid(off, size))
        return;
    pthread_mutex_lock(&vdev->lock);
    if (off >= VIRTIO_MMIO_CONFIG)
        config_write(vdev, (unsigned)(off - VIRTIO_MMIO_CONFIG), size, val);
    else
        reg_write(vm, off, (uint32_t)val);
    pthread_mutex_unlock(&vdev->lock);
}

const struct bus_ops virtio_mmio_bus_ops = {.read = mmio_read, .write = mmio_write};

/* ---- set-up ---------------------------------------------------------------------------------- */

/* QEMU's name for the device: "virtio-rng" becomes "virtio-rng-device". */
static char *mmio_name(const char *name)
{
    size_t n = strlen(name);
    if (n >= 4 && !strcmp(name + n - 4, "-pci"))
        n -= 4;
    size_t len = n + sizeof("-device");
    char *s = malloc(len);
    if (s)
        snprintf(s, len, "%.*s-device", (int)n, name);
    return s;
}

int virtio_mmio_create(struct virtio_device *vdev, struct irq_line irq, struct virtio_mmio **out,
                       struct error *err)
{
    if (vdev->transport)
        return error_setf(err, "%s: already has a transport", vdev->name);
    if (vdev->config_len > VIRTIO_MMIO_SIZE - VIRTIO_MMIO_CONFIG)
        return error_setf(err, "%s: %u bytes of config space do not fit the MMIO window",
                          vdev->name, vdev->config_len);
    struct virtio_mmio *vm = calloc(1, sizeof(*vm));
    if (!vm || !(vm->name = mmio_name(vdev->name))) {
        free(vm);
        return error_setf(err, "%s: out of memory", vdev->name);
    }
    vm->vdev = vdev;
    vm->irq = irq;
    pthread_mutex_lock(&vdev->lock);
    transport_reset(vm);
    vdev->transport = &mmio_transport_ops;
    vdev->transport_opaque = vm;
    pthread_mutex_unlock(&vdev->lock);
    *out = vm;
    return 0;
}

void virtio_mmio_set_ioeventfd(struct virtio_mmio *vm, uint64_t base, virtio_mmio_ioeventfd_fn fn,
                               void *ctx)
{
    struct virtio_device *vdev = vm->vdev;
    pthread_mutex_lock(&vdev->lock);
    ioeventfd_clear_all(vm); /* registered at the old place, if any */
    vm->base = base;
    vm->ioeventfd_fn = fn;
    vm->ioeventfd_ctx = ctx;
    for (unsigned q = 0; q < vdev->nqueues; q++)
        if (vq_is_enabled(&vdev->vq[q]))
            ioeventfd_set(vm, q, true);
    pthread_mutex_unlock(&vdev->lock);
}

void virtio_mmio_reset(struct virtio_mmio *vm)
{
    struct virtio_device *vdev = vm->vdev;
    pthread_mutex_lock(&vdev->lock);
    ioeventfd_clear_all(vm);
    virtio_reset(vdev);
    transport_reset(vm);
    pthread_mutex_unlock(&vdev->lock);
}

void virtio_mmio_destroy(struct virtio_mmio *vm)
{
    if (!vm)
        return;
    struct virtio_device *vdev = vm->vdev;
    pthread_mutex_lock(&vdev->lock);
    ioeventfd_clear_all(vm);
    virtio_reset(vdev); /* the backend stops: no interrupt can come in any more */
    vdev->transport = NULL;
    vdev->transport_opaque = NULL;
    pthread_mutex_unlock(&vdev->lock);
    free(vm->name);
    free(vm);
}

const char *virtio_mmio_name(const struct virtio_mmio *vm)
{
    return vm->name;
}
