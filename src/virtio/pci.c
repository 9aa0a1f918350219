/*
 * virtio-pci, modern interface (VIRTIO 1.x, 4.1): the PCI function, its capabilities, the BAR4
 * register regions, the PCI_CFG window, notifications and interrupts. See virtio/pci.h.
 */
#include "virtio/pci.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"

/* The transport's view of one queue: what the driver wrote, applied to the virtqueue only when
 * it writes queue_enable = 1 (the 64-bit addresses arrive in halves). Under vdev->lock, except
 * msix_vector, which the interrupt path reads from any thread (atomic accesses). */
struct vp_queue {
    uint16_t size;
    uint16_t msix_vector;
    uint64_t desc, driver, device;
    /* watch_queue_irq (under the PCI device lock): whom to tell about watched_vector. */
    void (*irq_set)(void *opaque, int fd);
    void *irq_opaque;
    uint16_t watched_vector;
};

struct virtio_pci {
    struct pci_device pci;
    struct virtio_device *vdev;
    char *name;       /* "virtio-rng-pci" */
    char *id;         /* the user's id=, or NULL */
    unsigned cfg_cap; /* config offset of the VIRTIO_PCI_CAP_PCI_CFG capability */

    /* Common configuration: under vdev->lock. */
    uint32_t dfselect, gfselect;
    uint16_t queue_select;
    uint16_t msix_config; /* atomic: read by the interrupt path */
    struct vp_queue q[VIRTIO_MAX_QUEUES];

    /* Under the PCI device lock. */
    uint8_t isr;
    bool ioeventfd[VIRTIO_MAX_QUEUES]; /* registered for queue q at the current BAR4 address */
};

static bool overlaps(uint64_t off, unsigned size, uint64_t start, uint64_t len)
{
    return off < start + len && start < off + size;
}

/* ---- interrupts (any thread) ----------------------------------------------------------------- */

static void vp_interrupt(struct virtio_pci *vp, uint16_t vector, uint8_t isr_bit)
{
    struct pci_device *dev = &vp->pci;
    pthread_mutex_lock(&dev->lock);
    if (pci_msix_enabled(dev)) {
        /* The configuration bit is set even with MSI-X (spec 4.1.4.5.1); the queue bit not. */
        if (isr_bit == VIRTIO_PCI_ISR_CONFIG)
            vp->isr |= isr_bit;
        if (vector != VIRTIO_MSI_NO_VECTOR)
            pci_msix_notify(dev, vector);
    } else {
        vp->isr |= isr_bit;
        pci_set_irq(dev, 1);
    }
    pthread_mutex_unlock(&dev->lock);
}

static void vp_notify_queue(struct virtio_device *vdev, unsigned q)
{
    struct virtio_pci *vp = vdev->transport_opaque;
    if (q < vdev->nqueues)
        vp_interrupt(vp, __atomic_load_n(&vp->q[q].msix_vector, __ATOMIC_RELAXED),
                     VIRTIO_PCI_ISR_QUEUE);
}

static void vp_notify_config(struct virtio_device *vdev)
{
    struct virtio_pci *vp = vdev->transport_opaque;
    vp_interrupt(vp, __atomic_load_n(&vp->msix_config, __ATOMIC_RELAXED), VIRTIO_PCI_ISR_CONFIG);
}

/* Point queue q's watcher at the vector the queue uses now (PCI device lock not held). */
static void vp_watch_queue_irq(struct virtio_device *vdev, unsigned q, void (*set)(void *, int),
                               void *opaque)
{
    struct virtio_pci *vp = vdev->transport_opaque;
    if (q >= vdev->nqueues)
        return;
    struct vp_queue *vq = &vp->q[q];
    pthread_mutex_lock(&vp->pci.lock);
    uint16_t old = vq->irq_set ? vq->watched_vector : VIRTIO_MSI_NO_VECTOR;
    uint16_t vec = set ? __atomic_load_n(&vq->msix_vector, __ATOMIC_RELAXED) : VIRTIO_MSI_NO_VECTOR;
    vq->irq_set = set;
    vq->irq_opaque = opaque;
    vq->watched_vector = vec;
    pthread_mutex_unlock(&vp->pci.lock);
    if (old != VIRTIO_MSI_NO_VECTOR)
        pci_msix_watch(&vp->pci, old, false);
    if (vec != VIRTIO_MSI_NO_VECTOR)
        pci_msix_watch(&vp->pci, vec, true); /* reports the vector's state to set() */
    else if (set)
        set(opaque, -1);
}

static const struct virtio_transport_ops vp_transport_ops = {
    .notify_queue = vp_notify_queue,
    .notify_config = vp_notify_config,
    .watch_queue_irq = vp_watch_queue_irq,
};

/* The ISR: a read returns the bits and clears them, and INTx goes down (spec 4.1.4.5). A peek
 * (the PCI_CFG window setting up a read, see cfg_window) leaves them. */
static uint8_t isr_read(struct virtio_pci *vp, bool peek)
{
    struct pci_device *dev = &vp->pci;
    pthread_mutex_lock(&dev->lock);
    uint8_t v = vp->isr;
    if (!peek) {
        vp->isr = 0;
        pci_set_irq(dev, 0);
    }
    pthread_mutex_unlock(&dev->lock);
    return v;
}

/* ---- common configuration (vdev->lock held) -------------------------------------------------- */

/* The transport's registers after a device reset. */
static void transport_reset(struct virtio_pci *vp)
{
    struct virtio_device *vdev = vp->vdev;
    vp->dfselect = vp->gfselect = 0;
    vp->queue_select = 0;
    __atomic_store_n(&vp->msix_config, VIRTIO_MSI_NO_VECTOR, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
        struct vp_queue *q = &vp->q[i];
        q->size = i < vdev->nqueues ? (uint16_t)vdev->vq[i].max_size : 0;
        __atomic_store_n(&q->msix_vector, VIRTIO_MSI_NO_VECTOR, __ATOMIC_RELAXED);
        q->desc = q->driver = q->device = 0;
    }
    pthread_mutex_lock(&vp->pci.lock);
    vp->isr = 0;
    pci_set_irq(&vp->pci, 0);
    pthread_mutex_unlock(&vp->pci.lock);
}

/* The sizes the spec allows at each field: the natural one, and for the 64-bit queue
 * addresses a whole 64-bit access or two 32-bit halves. */
static bool common_access_ok(uint64_t off, unsigned size)
{
    switch (off) {
    case VIRTIO_PCI_COMMON_DFSELECT:
    case VIRTIO_PCI_COMMON_DF:
    case VIRTIO_PCI_COMMON_GFSELECT:
    case VIRTIO_PCI_COMMON_GF:
    case VIRTIO_PCI_COMMON_Q_DESCHI:
    case VIRTIO_PCI_COMMON_Q_AVAILHI:
    case VIRTIO_PCI_COMMON_Q_USEDHI:
        return size == 4;
    case VIRTIO_PCI_COMMON_MSIX:
    case VIRTIO_PCI_COMMON_NUMQ:
    case VIRTIO_PCI_COMMON_Q_SELECT:
    case VIRTIO_PCI_COMMON_Q_SIZE:
    case VIRTIO_PCI_COMMON_Q_MSIX:
    case VIRTIO_PCI_COMMON_Q_ENABLE:
    case VIRTIO_PCI_COMMON_Q_NOFF:
        return size == 2;
    case VIRTIO_PCI_COMMON_STATUS:
    case VIRTIO_PCI_COMMON_CFGGENERATION:
        return size == 1;
    case VIRTIO_PCI_COMMON_Q_DESCLO:
    case VIRTIO_PCI_COMMON_Q_AVAILLO:
    case VIRTIO_PCI_COMMON_Q_USEDLO:
        return size == 4 || size == 8;
    default:
        return false;
    }
}

/* The selected queue, or NULL when queue_select names none. */
static struct vp_queue *selected(struct virtio_pci *vp)
{
    return vp->queue_select < vp->vdev->nqueues ? &vp->q[vp->queue_select] : NULL;
}

/* Read a 64-bit register's half (off & 4) or the whole of it (size 8). */
static uint64_t addr_part(uint64_t v, uint64_t off, unsigned size)
{
    if (size == 8)
        return v;
    return (uint32_t)(off & 4 ? v >> 32 : v);
}

static uint64_t common_read(struct virtio_pci *vp, uint64_t off, unsigned size)
{
    struct virtio_device *vdev = vp->vdev;
    struct vp_queue *q = selected(vp);
    if (!common_access_ok(off, size))
        return 0;
    switch (off) {
    case VIRTIO_PCI_COMMON_DFSELECT:
        return vp->dfselect;
    case VIRTIO_PCI_COMMON_DF:
        return virtio_get_device_features(vdev, vp->dfselect);
    case VIRTIO_PCI_COMMON_GFSELECT:
        return vp->gfselect;
    case VIRTIO_PCI_COMMON_GF:
        return vp->gfselect > 1 ? 0 : (uint32_t)(vdev->driver_features >> (32 * vp->gfselect));
    case VIRTIO_PCI_COMMON_MSIX:
        return __atomic_load_n(&vp->msix_config, __ATOMIC_RELAXED);
    case VIRTIO_PCI_COMMON_NUMQ:
        return vdev->nqueues;
    case VIRTIO_PCI_COMMON_STATUS:
        return __atomic_load_n(&vdev->status, __ATOMIC_SEQ_CST);
    case VIRTIO_PCI_COMMON_CFGGENERATION:
        return (uint8_t)__atomic_load_n(&vdev->config_generation, __ATOMIC_SEQ_CST);
    case VIRTIO_PCI_COMMON_Q_SELECT:
        return vp->queue_select;
    case VIRTIO_PCI_COMMON_Q_MSIX:
        return q ? __atomic_load_n(&q->msix_vector, __ATOMIC_RELAXED) : VIRTIO_MSI_NO_VECTOR;
    default:
        break;
    }
    if (!q)
        return 0; /* queue_size 0: no such queue */
    switch (off) {
    case VIRTIO_PCI_COMMON_Q_SIZE:
        return q->size;
    case VIRTIO_PCI_COMMON_Q_ENABLE:
        return vq_is_enabled(&vdev->vq[vp->queue_select]);
    case VIRTIO_PCI_COMMON_Q_NOFF:
        return vp->queue_select; /* notify address = 0x3000 + queue_notify_off * 4 */
    case VIRTIO_PCI_COMMON_Q_DESCLO:
    case VIRTIO_PCI_COMMON_Q_DESCHI:
        return addr_part(q->desc, off, size);
    case VIRTIO_PCI_COMMON_Q_AVAILLO:
    case VIRTIO_PCI_COMMON_Q_AVAILHI:
        return addr_part(q->driver, off, size);
    case VIRTIO_PCI_COMMON_Q_USEDLO:
    case VIRTIO_PCI_COMMON_Q_USEDHI:
        return addr_part(q->device, off, size);
    default:
        return 0;
    }
}

/* An MSI-X vector the driver asks for: a vector the device does not have reads back as
 * VIRTIO_MSI_NO_VECTOR, which tells the driver it was refused (spec 4.1.5.1.2). */
static uint16_t checked_vector(struct virtio_pci *vp, uint64_t v)
{
    return v < vp->pci.msix.nvec ? (uint16_t)v : VIRTIO_MSI_NO_VECTOR;
}

static void set_addr_part(uint64_t *reg, uint64_t off, unsigned size, uint64_t val)
{
    if (size == 8)
        *reg = val;
    else if (off & 4)
        *reg = (*reg & 0xffffffffULL) | (uint64_t)(uint32_t)val << 32;
    else
        *reg = (*reg & ~0xffffffffULL) | (uint32_t)val;
}

static void enable_queue(struct virtio_pci *vp, unsigned index)
{
    struct virtio_device *vdev = vp->vdev;
    struct virtqueue *vq = &vdev->vq[index];
    struct vp_queue *q = &vp->q[index];
    struct error err = {0};
    if (vdev->started) {
        /* The backend is servicing the queues and must not see one change under it; the spec
         * has the driver enable its queues before DRIVER_OK (3.1.1). */
        char msg[64];
        snprintf(msg, sizeof(msg), "queue %u enabled after DRIVER_OK", index);
        virtio_set_needs_reset(vdev, msg);
        return;
    }
    if (vq_set_size(vq, q->size, &err) < 0 ||
        vq_set_addresses(vq, q->desc, q->driver, q->device, &err) < 0 || vq_enable(vq, &err) < 0)
        virtio_set_needs_reset(vdev, err.msg);
}

static void common_write(struct virtio_pci *vp, uint64_t off, unsigned size, uint64_t val)
{
    struct virtio_device *vdev = vp->vdev;
    struct vp_queue *q = selected(vp);
    if (!common_access_ok(off, size))
        return;
    switch (off) {
    case VIRTIO_PCI_COMMON_DFSELECT:
        vp->dfselect = (uint32_t)val;
        return;
    case VIRTIO_PCI_COMMON_GFSELECT:
        vp->gfselect = (uint32_t)val;
        return;
    case VIRTIO_PCI_COMMON_GF:
        virtio_set_driver_features(vdev, vp->gfselect, (uint32_t)val);
        return;
    case VIRTIO_PCI_COMMON_MSIX:
        __atomic_store_n(&vp->msix_config, checked_vector(vp, val), __ATOMIC_RELAXED);
        return;
    case VIRTIO_PCI_COMMON_STATUS:
        virtio_set_status(vdev, (uint8_t)val);
        if ((uint8_t)val == 0)
            transport_reset(vp);
        return;
    case VIRTIO_PCI_COMMON_Q_SELECT:
        vp->queue_select = (uint16_t)val; /* out of range: the queue registers read 0 */
        return;
    case VIRTIO_PCI_COMMON_Q_MSIX:
        if (q) {
            __atomic_store_n(&q->msix_vector, checked_vector(vp, val), __ATOMIC_RELAXED);
            pthread_mutex_lock(&vp->pci.lock);
            void (*set)(void *, int) = q->irq_set;
            void *opaque = q->irq_opaque;
            pthread_mutex_unlock(&vp->pci.lock);
            if (set) /* a vector moved under a running source: follow it */
                vp_watch_queue_irq(vdev, vp->queue_select, set, opaque);
        }
        return;
    case VIRTIO_PCI_COMMON_Q_ENABLE:
        /* Writing 0 is not allowed to the driver (without RING_RESET): ignored. */
        if (q && val == 1 && !vq_is_enabled(&vdev->vq[vp->queue_select]))
            enable_queue(vp, vp->queue_select);
        return;
    default:
        break;
    }
    /* The queue's configuration: only while it is disabled (spec 4.1.4.3.2). */
    if (!q || vq_is_enabled(&vdev->vq[vp->queue_select]))
        return;
    switch (off) {
    case VIRTIO_PCI_COMMON_Q_SIZE:
        q->size = (uint16_t)val; /* checked when the queue is enabled */
        return;
    case VIRTIO_PCI_COMMON_Q_DESCLO:
    case VIRTIO_PCI_COMMON_Q_DESCHI:
        set_addr_part(&q->desc, off, size, val);
        return;
    case VIRTIO_PCI_COMMON_Q_AVAILLO:
    case VIRTIO_PCI_COMMON_Q_AVAILHI:
        set_addr_part(&q->driver, off, size, val);
        return;
    case VIRTIO_PCI_COMMON_Q_USEDLO:
    case VIRTIO_PCI_COMMON_Q_USEDHI:
        set_addr_part(&q->device, off, size, val);
        return;
    default:
        return; /* read-only: device_feature, num_queues, config_generation, queue_notify_off */
    }
}

/* ---- BAR4: the virtio structures ------------------------------------------------------------- */

static uint64_t device_cfg_read(struct virtio_device *vdev, uint64_t off, unsigned size)
{
    if (size == 8)
        return virtio_read_config(vdev, (unsigned)off, 4) |
               (uint64_t)virtio_read_config(vdev, (unsigned)off + 4, 4) << 32;
    return virtio_read_config(vdev, (unsigned)off, size);
}

static void device_cfg_write(struct virtio_device *vdev, uint64_t off, unsigned size, uint64_t v)
{
    if (size == 8) {
        virtio_write_config(vdev, (unsigned)off, 4, (uint32_t)v);
        virtio_write_config(vdev, (unsigned)off + 4, 4, (uint32_t)(v >> 32));
        return;
    }
    virtio_write_config(vdev, (unsigned)off, size, (uint32_t)v);
}

/* The region and the offset inside it, or false for an access that is not wholly inside one. */
static bool bar_region(uint64_t off, unsigned size, uint64_t *region, uint64_t *rel)
{
    if ((size != 1 && size != 2 && size != 4 && size != 8) || off >= VIRTIO_PCI_BAR_SIZE ||
        size > VIRTIO_PCI_BAR_SIZE - off)
        return false;
    *region = off & ~(uint64_t)(VIRTIO_PCI_REGION_SIZE - 1);
    *rel = off & (VIRTIO_PCI_REGION_SIZE - 1);
    return *rel + size <= VIRTIO_PCI_REGION_SIZE;
}

static uint64_t vp_bar_access_read(struct virtio_pci *vp, uint64_t off, unsigned size, bool peek)
{
    struct virtio_device *vdev = vp->vdev;
    uint64_t region, rel, v = 0;
    if (!bar_region(off, size, &region, &rel))
        return 0;
    switch (region) {
    case VIRTIO_PCI_COMMON_OFF:
        pthread_mutex_lock(&vdev->lock);
        v = common_read(vp, rel, size);
        pthread_mutex_unlock(&vdev->lock);
        break;
    case VIRTIO_PCI_ISR_OFF:
        if (rel == 0 && size == 1)
            v = isr_read(vp, peek);
        break;
    case VIRTIO_PCI_DEVICE_OFF:
        pthread_mutex_lock(&vdev->lock);
        v = device_cfg_read(vdev, rel, size);
        pthread_mutex_unlock(&vdev->lock);
        break;
    default:
        break; /* notifications are write-only */
    }
    return v;
}

static void vp_bar_access_write(struct virtio_pci *vp, uint64_t off, unsigned size, uint64_t val)
{
    struct virtio_device *vdev = vp->vdev;
    uint64_t region, rel;
    if (!bar_region(off, size, &region, &rel))
        return;
    switch (region) {
    case VIRTIO_PCI_COMMON_OFF:
        pthread_mutex_lock(&vdev->lock);
        common_write(vp, rel, size, val);
        pthread_mutex_unlock(&vdev->lock);
        break;
    case VIRTIO_PCI_DEVICE_OFF:
        pthread_mutex_lock(&vdev->lock);
        device_cfg_write(vdev, rel, size, val);
        pthread_mutex_unlock(&vdev->lock);
        break;
    case VIRTIO_PCI_NOTIFY_OFF:
        /* Reached only without an ioeventfd for the queue (or with an unusual size). The value
         * is the queue index (spec 4.1.5.2); if it names no queue, the address does. */
        if ((size == 2 || size == 4) && rel < (uint64_t)vdev->nqueues * VIRTIO_PCI_NOTIFY_MULT) {
            unsigned q = (unsigned)(val & 0xffff);
            virtio_kick(vdev, q < vdev->nqueues ? q : (unsigned)(rel / VIRTIO_PCI_NOTIFY_MULT));
        }
        break;
    default:
        break; /* the ISR is read-only */
    }
}

static uint64_t vp_bar_read(void *opaque, uint64_t off, unsigned size)
{
    return vp_bar_access_read(opaque, off, size, false);
}

static void vp_bar_write(void *opaque, uint64_t off, unsigned size, uint64_t val)
{
    vp_bar_access_write(opaque, off, size, val);
}

static const struct bus_ops vp_bar_ops = {.read = vp_bar_read, .write = vp_bar_write};

/* ---- BAR1: MSI-X table and PBA --------------------------------------------------------------- */

static uint64_t msix_bar_read(void *opaque, uint64_t off, unsigned size)
{
    struct virtio_pci *vp = opaque;
    uint64_t v = 0;
    if (!pci_msix_bar_read(&vp->pci, VIRTIO_PCI_MSIX_BAR, off, size, &v))
        return 0;
    return v;
}

static void msix_bar_write(void *opaque, uint64_t off, unsigned size, uint64_t val)
{
    struct virtio_pci *vp = opaque;
    pci_msix_bar_write(&vp->pci, VIRTIO_PCI_MSIX_BAR, off, size, val);
}

static const struct bus_ops msix_bar_ops = {.read = msix_bar_read, .write = msix_bar_write};

/* ---- the PCI_CFG window (spec 4.1.4.9) ------------------------------------------------------- */

/*
 * The driver picks a BAR, an offset and a length (1, 2 or 4) in the capability, then reads or
 * writes pci_cfg_data, and the device does that access on the BAR, mapped or not. The PCI core
 * has no hook for config reads: a read is done when the driver sets the access up, and its
 * result waits in pci_cfg_data. That read is a peek (no side effect) except when the driver
 * writes cap.length, which drivers do last (SeaBIOS, iPXE): so a read of the ISR through the
 * window clears it once, as a direct read would.
 */
static bool cfg_window_ok(uint8_t bar, uint32_t offset, uint32_t length)
{
    uint64_t size;
    if (bar == VIRTIO_PCI_MSIX_BAR)
        size = VIRTIO_PCI_MSIX_BAR_SIZE;
    else if (bar == VIRTIO_PCI_BAR)
        size = VIRTIO_PCI_BAR_SIZE;
    else
        return false;
    return (length == 1 || length == 2 || length == 4) && offset % length == 0 &&
           (uint64_t)offset + length <= size;
}

/* config_write hook: PCI device lock held (once, by pci_config_write). */
static void cfg_window(struct virtio_pci *vp, unsigned off, unsigned size)
{
    struct pci_device *dev = &vp->pci;
    unsigned c = vp->cfg_cap;
    bool data = overlaps(off, size, c + VIRTIO_PCI_CFG_CAP_DATA, 4);
    bool setup =
        overlaps(off, size, c + VIRTIO_PCI_CAP_BAR, VIRTIO_PCI_CFG_CAP_DATA - VIRTIO_PCI_CAP_BAR);
    if (!data && !setup)
        return;
    bool peek = !overlaps(off, size, c + VIRTIO_PCI_CAP_LENGTH, 4);
    uint8_t bar = dev->config[c + VIRTIO_PCI_CAP_BAR];
    uint32_t offset = le_get32(dev->config + c + VIRTIO_PCI_CAP_OFFSET);
    uint32_t length = le_get32(dev->config + c + VIRTIO_PCI_CAP_LENGTH);
    uint32_t val = le_get32(dev->config + c + VIRTIO_PCI_CFG_CAP_DATA);
    if (!cfg_window_ok(bar, offset, length))
        return; /* nothing happens; pci_cfg_data keeps what it holds */
    if (length < 4)
        val &= (1u << (8 * length)) - 1;

    /* See the lock order in virtio/pci.h: vdev->lock first. */
    pthread_mutex_unlock(&dev->lock);
    uint64_t v = 0;
    if (bar == VIRTIO_PCI_MSIX_BAR) {
        if (data)
            msix_bar_write(vp, offset, length, val);
        else
            v = msix_bar_read(vp, offset, length);
    } else {
        if (data)
            vp_bar_access_write(vp, offset, length, val);
        else
            v = vp_bar_access_read(vp, offset, length, peek);
    }
    pthread_mutex_lock(&dev->lock);
    if (!data)
        le_put32(dev->config + c + VIRTIO_PCI_CFG_CAP_DATA, (uint32_t)v);
}

/* ---- struct pci_device_ops ------------------------------------------------------------------- */

static void vp_config_write(struct pci_device *dev, unsigned off, unsigned size, uint32_t val)
{
    cfg_window(dev->opaque, off, size);
}

/* BAR4 mapped or unmapped (PCI device lock held): one ioeventfd per queue's notify address. */
static void vp_bar_map(struct pci_device *dev, unsigned bar, uint64_t addr, bool enabled)
{
    struct virtio_pci *vp = dev->opaque;
    struct virtio_device *vdev = vp->vdev;
    const struct pci_bus_io *io = dev->bus ? dev->bus->io : NULL;
    if (bar != VIRTIO_PCI_BAR)
        return;
    for (unsigned q = 0; q < vdev->nqueues; q++) {
        uint64_t a = addr + VIRTIO_PCI_NOTIFY_OFF + (uint64_t)q * VIRTIO_PCI_NOTIFY_MULT;
        if (enabled) {
            vp->ioeventfd[q] =
                io && io->ioeventfd && io->ioeventfd(io->ctx, a, 2, vdev->kick_fd[q], true) == 0;
        } else if (vp->ioeventfd[q]) {
            if (io && io->ioeventfd)
                io->ioeventfd(io->ctx, a, 2, vdev->kick_fd[q], false);
            vp->ioeventfd[q] = false;
        }
    }
}

/* Machine reset: the PCI core reset the config space and unmapped the BARs already (PCI device
 * lock held once, by pci_device_reset). */
static void vp_reset(struct pci_device *dev)
{
    struct virtio_pci *vp = dev->opaque;
    struct virtio_device *vdev = vp->vdev;
    memset(dev->config + vp->cfg_cap + VIRTIO_PCI_CAP_BAR, 0,
           VIRTIO_PCI_CFG_CAP_LEN - VIRTIO_PCI_CAP_BAR); /* the PCI_CFG window's registers */
    pthread_mutex_unlock(&dev->lock);                    /* see the lock order in virtio/pci.h */
    pthread_mutex_lock(&vdev->lock);
    virtio_reset(vdev);
    transport_reset(vp);
    pthread_mutex_unlock(&vdev->lock);
    pthread_mutex_lock(&dev->lock);
}

/* A watched vector's direct fd changed (PCI device lock held): tell the queues on it. */
static void vp_msix_direct(struct pci_device *dev, unsigned vector, int fd)
{
    struct virtio_pci *vp = dev->opaque;
    for (unsigned i = 0; i < vp->vdev->nqueues; i++) {
        const struct vp_queue *q = &vp->q[i];
        if (q->irq_set && q->watched_vector == vector)
            q->irq_set(q->irq_opaque, fd);
    }
}

static const struct pci_device_ops vp_pci_ops = {
    .config_write = vp_config_write,
    .bar_map = vp_bar_map,
    .reset = vp_reset,
    .msix_direct = vp_msix_direct,
};

/* ---- set-up ---------------------------------------------------------------------------------- */

static uint32_t class_code(unsigned device_id)
{
    switch (device_id) {
    case VIRTIO_ID_NET:
        return 0x020000; /* network controller, Ethernet */
    case VIRTIO_ID_BLOCK:
        return 0x010000; /* mass storage, SCSI (what QEMU uses) */
    case VIRTIO_ID_CONSOLE:
        return 0x078000; /* communication controller, other */
    case VIRTIO_ID_RNG:
    case VIRTIO_ID_BALLOON:
        return 0x00ff00; /* unclassified, as QEMU */
    default:
        return 0xff0000; /* other */
    }
}

/* A vendor capability describing length bytes at offset in bar; its config offset or -1. */
static int add_virtio_cap(struct pci_device *dev, uint8_t type, unsigned len, uint8_t bar,
                          uint32_t offset, uint32_t length)
{
    int c = pci_add_capability(dev, PCI_CAP_ID_VNDR, len);
    if (c < 0)
        return -1;
    dev->config[c + 2] = (uint8_t)len; /* cap_len */
    dev->config[c + VIRTIO_PCI_CAP_CFG_TYPE] = type;
    dev->config[c + VIRTIO_PCI_CAP_BAR] = bar;
    le_put32(dev->config + c + VIRTIO_PCI_CAP_OFFSET, offset);
    le_put32(dev->config + c + VIRTIO_PCI_CAP_LENGTH, length);
    return c;
}

static int add_caps(struct virtio_pci *vp, struct error *err)
{
    struct pci_device *dev = &vp->pci;
    struct virtio_device *vdev = vp->vdev;
    int notify;
    if (add_virtio_cap(dev, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_LEN, VIRTIO_PCI_BAR,
                       VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_COMMON_CFG_LEN) < 0 ||
        add_virtio_cap(dev, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_LEN, VIRTIO_PCI_BAR,
                       VIRTIO_PCI_ISR_OFF, 1) < 0 ||
        (vdev->config_len &&
         add_virtio_cap(dev, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_LEN, VIRTIO_PCI_BAR,
                        VIRTIO_PCI_DEVICE_OFF, vdev->config_len) < 0) ||
        (notify = add_virtio_cap(dev, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_CAP_LEN,
                                 VIRTIO_PCI_BAR, VIRTIO_PCI_NOTIFY_OFF,
                                 vdev->nqueues * VIRTIO_PCI_NOTIFY_MULT)) < 0)
        return error_setf(err, "%s: no config space left for the virtio capabilities", vp->name);
    le_put32(dev->config + notify + VIRTIO_PCI_NOTIFY_CAP_MULT, VIRTIO_PCI_NOTIFY_MULT);

    int c = add_virtio_cap(dev, VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_CFG_CAP_LEN, 0, 0, 0);
    if (c < 0)
        return error_setf(err, "%s: no config space left for the virtio capabilities", vp->name);
    vp->cfg_cap = (unsigned)c;
    /* bar, offset, length and pci_cfg_data are the driver's. */
    dev->wmask[c + VIRTIO_PCI_CAP_BAR] = 0xff;
    memset(dev->wmask + c + VIRTIO_PCI_CAP_OFFSET, 0xff, 12);
    return 0;
}

/* QEMU's name for the PCI function: "virtio-rng" becomes "virtio-rng-pci". */
static char *pci_name(const char *name)
{
    size_t n = strlen(name);
    if (n >= 4 && !strcmp(name + n - 4, "-pci"))
        return strdup(name);
    char *s = malloc(n + 5);
    if (s)
        snprintf(s, n + 5, "%s-pci", name);
    return s;
}

int virtio_pci_create(struct pci_bus *bus, int slot, int func, struct virtio_device *vdev,
                      const char *id, struct virtio_pci **out, struct error *err)
{
    if (vdev->transport)
        return error_setf(err, "%s: already has a transport", vdev->name);
    if (vdev->config_len > VIRTIO_PCI_REGION_SIZE)
        return error_setf(err, "%s: %u bytes of config space do not fit the BAR", vdev->name,
                          vdev->config_len);
    struct virtio_pci *vp = calloc(1, sizeof(*vp));
    if (!vp)
        return error_setf(err, "%s: out of memory", vdev->name);
    vp->vdev = vdev;
    vp->name = pci_name(vdev->name);
    vp->id = id ? strdup(id) : NULL;
    if (!vp->name || (id && !vp->id)) {
        free(vp->name);
        free(vp->id);
        free(vp);
        return error_setf(err, "%s: out of memory", vdev->name);
    }

    struct pci_device *dev = &vp->pci;
    pci_device_init(dev, vp->name, &vp_pci_ops, vp, VIRTIO_PCI_VENDOR_ID,
                    (uint16_t)(VIRTIO_PCI_DEVICE_ID_BASE + vdev->device_id),
                    class_code(vdev->device_id), VIRTIO_PCI_REVISION, 1 /* INTA# */);
    pci_device_set_subsystem(dev, VIRTIO_PCI_VENDOR_ID, VIRTIO_PCI_SUBSYS_ID);
    dev->id = vp->id;
    if (pci_bar_init(dev, VIRTIO_PCI_MSIX_BAR, PCI_BAR_TYPE_MEM32, false, VIRTIO_PCI_MSIX_BAR_SIZE,
                     &msix_bar_ops, vp, err) < 0 ||
        pci_bar_init(dev, VIRTIO_PCI_BAR, PCI_BAR_TYPE_MEM64, true, VIRTIO_PCI_BAR_SIZE,
                     &vp_bar_ops, vp, err) < 0 ||
        pci_msix_init(dev, vdev->nqueues + 1, VIRTIO_PCI_MSIX_BAR, VIRTIO_PCI_MSIX_TABLE,
                      VIRTIO_PCI_MSIX_PBA, err) < 0 ||
        add_caps(vp, err) < 0 || pci_bus_add(bus, dev, slot, func, err) < 0)
        goto fail;

    pthread_mutex_lock(&vdev->lock);
    transport_reset(vp);
    vdev->transport = &vp_transport_ops;
    vdev->transport_opaque = vp;
    pthread_mutex_unlock(&vdev->lock);
    *out = vp;
    return 0;
fail:
    pci_device_destroy(dev);
    free(vp->name);
    free(vp->id);
    free(vp);
    return -1;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
    if (!vp)
        return;
    struct virtio_device *vdev = vp->vdev;
    struct pci_device *dev = &vp->pci;
    /* Off the bus first (pci.c has no removal), so that neither the bus keeps a pointer to
     * freed memory nor the interrupts of the stopping backend reach the board. */
    pthread_mutex_lock(&dev->lock);
    struct pci_bus *bus = dev->bus;
    if (bus && dev->slot < PCI_SLOTS && dev->func < PCI_FUNCS &&
        bus->dev[dev->slot][dev->func] == dev)
        bus->dev[dev->slot][dev->func] = NULL;
    dev->bus = NULL;
    pthread_mutex_unlock(&dev->lock);
    pthread_mutex_lock(&vdev->lock);
    virtio_reset(vdev); /* the backend stops: no interrupt can come in any more */
    vdev->transport = NULL;
    vdev->transport_opaque = NULL;
    pthread_mutex_unlock(&vdev->lock);
    pci_device_destroy(dev);
    free(vp->name);
    free(vp->id);
    free(vp);
}

struct pci_device *virtio_pci_pci_device(struct virtio_pci *vp)
{
    return &vp->pci;
}
