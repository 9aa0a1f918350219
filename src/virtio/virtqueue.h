/*
 * The split virtqueue (VIRTIO 1.x, 2.7), device side, independent of the transport.
 *
 * Who calls what:
 * - The transport (virtio-pci, virtio-mmio) owns the configuration: vq_init() once, then on the
 *   driver's register writes vq_set_size(), vq_set_addresses(), vq_set_features() (the negotiated
 *   feature bits, before enabling) and vq_enable() when the driver sets queue_enable/QueueReady;
 *   vq_reset() on a device reset or a queue reset. When vq_pop() returns -1 the transport sets
 *   DEVICE_NEEDS_RESET and raises a configuration interrupt; the queue then refuses to pop until
 *   it is reset and enabled again.
 * - The device backend services the queue: on a notification, vq_pop() until it returns 0, read
 *   the request with vq_chain_read(), write the reply with vq_chain_write(), vq_push() the head
 *   with the number of bytes written, and after the batch ask vq_should_notify() whether to
 *   interrupt the driver (the transport delivers the interrupt). A backend that polls can
 *   vq_disable_notification() while busy and vq_enable_notification() when idle; the latter
 *   returns true if buffers arrived in between, and then the backend must pop again.
 *
 * Threads: a queue is serviced by one thread at a time. The configuration calls must not run
 * while the backend services the queue (the transport quiesces the backend first); pop, push,
 * should_notify and the notification calls must not run concurrently with each other. The guest
 * runs concurrently on other CPUs: vq_pop() reads avail->idx with acquire semantics before the
 * ring entry and the descriptors, vq_push() publishes used->idx with release semantics, and the
 * notification decisions put a full barrier between the device's store and its load of the
 * driver's field. Every guest field is read once into host memory before it is checked.
 *
 * Every guest access goes through guest_mem_ptr()/guest_mem_read()/guest_mem_write(): the rings
 * are checked to lie inside guest RAM at vq_enable() and each access is checked again; every
 * buffer of a popped chain is checked to lie inside guest RAM, and the chain helpers check again.
 */
#ifndef KEMU_VIRTIO_VIRTQUEUE_H
#define KEMU_VIRTIO_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"
#include "virtio/virtio.h"

/*
 * The most buffers (segments) one chain may have, direct and indirect together, and the most
 * entries an indirect table may have: a fixed bound, whatever the queue size. A chain with more
 * is refused as an error (QEMU has the same limit; Linux drivers stay far below it).
 */
#define VQ_CHAIN_MAX_SEGS 1024

/* One guest buffer of a chain. */
struct vq_segment {
    uint64_t gpa;
    uint32_t len;
    bool device_writes; /* VIRTQ_DESC_F_WRITE: the device writes it, else it reads it */
};

/*
 * A popped descriptor chain: the readable segments come first (the spec forbids a readable
 * descriptor after a writable one), seg[0, nr_readable) readable, seg[nr_readable, nr_segs)
 * writable. About 16 KiB: keep one per in-flight request only if needed, or copy what you need.
 */
struct vq_chain {
    uint16_t head;         /* what to give vq_push() */
    unsigned nr_segs;      /* segments in seg[] */
    unsigned nr_readable;  /* the first nr_readable of them are readable */
    uint32_t readable_len; /* sum of the readable lengths */
    uint32_t writable_len; /* sum of the writable lengths; readable + writable < 4 GiB */
    struct vq_segment seg[VQ_CHAIN_MAX_SEGS];
};

struct virtqueue {
    /* Configuration (transport). */
    struct guest_mem *mem;
    unsigned index;    /* queue number, for messages */
    unsigned max_size; /* the device's maximum, what queue_size reads after a reset */
    unsigned size;     /* power of two, 1..max_size */
    uint64_t desc_gpa, avail_gpa, used_gpa;
    bool event_idx; /* VIRTIO_F_RING_EVENT_IDX negotiated */
    bool indirect;  /* VIRTIO_F_RING_INDIRECT_DESC negotiated */
    bool enabled;

    /* Run-time state (backend). */
    bool broken;               /* the guest broke the rules: no pops until a reset */
    bool notify_enabled;       /* the backend wants notifications */
    uint16_t last_avail_idx;   /* next avail ring entry to pop */
    uint16_t shadow_avail_idx; /* avail->idx as last read */
    uint16_t used_idx;         /* next used ring entry to fill; published in used->idx */
    uint16_t signalled_used;   /* used_idx at the last vq_should_notify() */
    unsigned inflight;         /* chains popped and not yet pushed */
};

/* Set up a disabled queue of at most max_size entries (a power of two, 1..32768). */
int vq_init(struct virtqueue *vq, struct guest_mem *mem, unsigned index, unsigned max_size,
            struct error *err);
/* Back to the state after vq_init(): disabled, size = max_size, addresses 0, no features.
 * Chains still held by the backend must be dropped without being pushed. */
void vq_reset(struct virtqueue *vq);
/* The driver's queue size: a power of two, 1..max_size. Only while disabled. */
int vq_set_size(struct virtqueue *vq, unsigned size, struct error *err);
/* Descriptor table, driver area (avail ring), device area (used ring). Checks the alignments
 * (16, 2, 4); only while disabled. */
int vq_set_addresses(struct virtqueue *vq, uint64_t desc, uint64_t avail, uint64_t used,
                     struct error *err);
/* The negotiated feature bits (VIRTIO_BIT(...) mask); takes EVENT_IDX and INDIRECT_DESC. */
void vq_set_features(struct virtqueue *vq, uint64_t features);
/* Check the size, alignments and that the three rings lie entirely inside guest RAM; then start
 * with all indices at 0 and notifications enabled. Nothing is written to guest memory. */
int vq_enable(struct virtqueue *vq, struct error *err);
bool vq_is_enabled(const struct virtqueue *vq);

/*
 * Take the next available chain: 1 with *out filled, 0 if the ring is empty (or the queue is
 * disabled), -1 with a message if the driver broke the rules (the queue is then broken until
 * reset; the transport should set DEVICE_NEEDS_RESET; *out is then meaningless). Never loops
 * more than the bounds above and never allocates.
 */
int vq_pop(struct virtqueue *vq, struct vq_chain *out, struct error *err);
/* Give back the last n popped, not yet pushed chains: the next pops return them again (a
 * receive path that popped buffers for a frame that then did not fit). */
void vq_unpop(struct virtqueue *vq, unsigned n);
/* Return a popped chain to the driver with `written` bytes written into its writable part, and
 * publish it (used->idx, release). */
void vq_push(struct virtqueue *vq, uint16_t head, uint32_t written);
/* After pushing a batch: must the driver be interrupted? Honours VIRTQ_AVAIL_F_NO_INTERRUPT or,
 * with EVENT_IDX, used_event. False if nothing was pushed since the previous call. Call it at
 * least once per queue-size pushes. */
bool vq_should_notify(struct virtqueue *vq);
/* Ask the driver not to notify (VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX avail_event is simply
 * no longer advanced, so at most one more notification comes). */
void vq_disable_notification(struct virtqueue *vq);
/* Ask the driver to notify again; returns true if buffers are already available (pop them: no
 * notification will come for those). */
bool vq_enable_notification(struct virtqueue *vq);

/* Copy len bytes at `offset` in the chain's readable part into buf. -1 (nothing guaranteed
 * copied) if the range is not inside the readable part. The guest may change the buffer
 * concurrently: validate the copy, never re-read. */
int vq_chain_read(const struct virtqueue *vq, const struct vq_chain *c, uint32_t offset, void *buf,
                  size_t len);
/* Copy len bytes from buf to `offset` in the chain's writable part. -1 (nothing written) if the
 * range is not inside the writable part. */
int vq_chain_write(const struct virtqueue *vq, const struct vq_chain *c, uint32_t offset,
                   const void *buf, size_t len);
/* Host pointer to a whole segment (for readv/writev into guest buffers), or NULL (a zero-length
 * segment may have any address). */
void *vq_segment_ptr(const struct virtqueue *vq, const struct vq_segment *s);

static inline uint32_t vq_chain_readable_len(const struct vq_chain *c)
{
    return c->readable_len;
}

static inline uint32_t vq_chain_writable_len(const struct vq_chain *c)
{
    return c->writable_len;
}

#endif
