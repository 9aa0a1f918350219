/*
 * Split virtqueue, device side. Layout (all little-endian):
 *   descriptor table  16 * size   { le64 addr; le32 len; le16 flags; le16 next; }
 *   avail ring        6 + 2*size  { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }
 *   used ring         6 + 8*size  { le16 flags; le16 idx; {le32 id; le32 len} ring[size];
 *                                   le16 avail_event; }
 * The indices are free-running 16-bit counters; the ring slot is index & (size - 1).
 *
 * The 16-bit ring fields the driver and the device share are accessed with __atomic loads and
 * stores (their alignment is checked at enable); descriptors and used elements are copied with
 * guest_mem_read/guest_mem_write, ordered by the acquire load of avail->idx and the release
 * store of used->idx.
 */
#include "virtio/virtqueue.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/bytes.h"

#define AVAIL_IDX_OFF  2
#define AVAIL_RING_OFF 4
#define USED_FLAGS_OFF 0
#define USED_IDX_OFF   2
#define USED_RING_OFF  4

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

static uint16_t le16_to_host(uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap16(v);
#else
    return v;
#endif
}

static bool is_pow2(unsigned v)
{
    return v && !(v & (v - 1));
}

/* Mark the queue broken and report "virtqueue N: <reason>". Returns -1. */
static int vq_fail(struct virtqueue *vq, struct error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int vq_fail(struct virtqueue *vq, struct error *err, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vq->broken = true;
    return error_setf(err, "virtqueue %u: %s", vq->index, msg);
}

/* 16-bit shared ring fields. The address was checked (in RAM, aligned) at enable and is checked
 * for RAM again here; false only if guest RAM changed under the queue. */
static bool load16(const struct virtqueue *vq, uint64_t gpa, bool acquire, uint16_t *v)
{
    uint16_t *p = guest_mem_ptr(vq->mem, gpa, 2);
    if (!p)
        return false;
    *v = le16_to_host(acquire ? __atomic_load_n(p, __ATOMIC_ACQUIRE)
                              : __atomic_load_n(p, __ATOMIC_RELAXED));
    return true;
}

static void store16(const struct virtqueue *vq, uint64_t gpa, uint16_t v, bool release)
{
    uint16_t *p = guest_mem_ptr(vq->mem, gpa, 2);
    if (!p)
        return;
    v = le16_to_host(v);
    if (release)
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    else
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static uint64_t used_event_gpa(const struct virtqueue *vq)
{
    return vq->avail_gpa + AVAIL_RING_OFF + 2 * (uint64_t)vq->size;
}

static uint64_t avail_event_gpa(const struct virtqueue *vq)
{
    return vq->used_gpa + USED_RING_OFF + VIRTQ_USED_ELEM_SIZE * (uint64_t)vq->size;
}

int vq_init(struct virtqueue *vq, struct guest_mem *mem, unsigned index, unsigned max_size,
            struct error *err)
{
    memset(vq, 0, sizeof(*vq));
    if (!is_pow2(max_size) || max_size > VIRTQ_MAX_SIZE)
        return error_setf(err, "virtqueue %u: maximum size %u is not a power of two in 1..%u",
                          index, max_size, VIRTQ_MAX_SIZE);
    vq->mem = mem;
    vq->index = index;
    vq->max_size = max_size;
    vq_reset(vq);
    return 0;
}

void vq_reset(struct virtqueue *vq)
{
    vq->size = vq->max_size;
    vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
    vq->event_idx = vq->indirect = false;
    vq->enabled = false;
    vq->broken = false;
    vq->notify_enabled = true;
    vq->last_avail_idx = vq->shadow_avail_idx = 0;
    vq->used_idx = vq->signalled_used = 0;
    vq->inflight = 0;
}

int vq_set_size(struct virtqueue *vq, unsigned size, struct error *err)
{
    if (vq->enabled)
        return error_setf(err, "virtqueue %u: size changed while the queue is enabled", vq->index);
    if (!is_pow2(size) || size > vq->max_size)
        return error_setf(err, "virtqueue %u: size %u is not a power of two in 1..%u", vq->index,
                          size, vq->max_size);
    vq->size = size;
    return 0;
}

static int check_alignment(const struct virtqueue *vq, uint64_t desc, uint64_t avail, uint64_t used,
                           struct error *err)
{
    if (desc % VIRTQ_DESC_ALIGN)
        return error_setf(err, "virtqueue %u: descriptor table 0x%llx is not %u-byte aligned",
                          vq->index, (unsigned long long)desc, VIRTQ_DESC_ALIGN);
    if (avail % VIRTQ_AVAIL_ALIGN)
        return error_setf(err, "virtqueue %u: available ring 0x%llx is not %u-byte aligned",
                          vq->index, (unsigned long long)avail, VIRTQ_AVAIL_ALIGN);
    if (used % VIRTQ_USED_ALIGN)
        return error_setf(err, "virtqueue %u: used ring 0x%llx is not %u-byte aligned", vq->index,
                          (unsigned long long)used, VIRTQ_USED_ALIGN);
    return 0;
}

int vq_set_addresses(struct virtqueue *vq, uint64_t desc, uint64_t avail, uint64_t used,
                     struct error *err)
{
    if (vq->enabled)
        return error_setf(err, "virtqueue %u: addresses changed while the queue is enabled",
                          vq->index);
    if (check_alignment(vq, desc, avail, used, err) < 0)
        return -1;
    vq->desc_gpa = desc;
    vq->avail_gpa = avail;
    vq->used_gpa = used;
    return 0;
}

void vq_set_features(struct virtqueue *vq, uint64_t features)
{
    vq->event_idx = features & VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
    vq->indirect = features & VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC);
}

/* The ring [gpa, gpa+len) must be inside guest RAM, and its host address aligned like its
 * guest address so that the atomic 16-bit accesses are naturally aligned. */
static int check_ring(const struct virtqueue *vq, const char *what, uint64_t gpa, uint64_t len,
                      unsigned align, struct error *err)
{
    void *p = guest_mem_ptr(vq->mem, gpa, len);
    if (!p)
        return error_setf(err, "virtqueue %u: %s at 0x%llx (%llu bytes) is not inside guest RAM",
                          vq->index, what, (unsigned long long)gpa, (unsigned long long)len);
    if ((uintptr_t)p % align)
        return error_setf(err, "virtqueue %u: %s at 0x%llx has a misaligned host address",
                          vq->index, what, (unsigned long long)gpa);
    return 0;
}

int vq_enable(struct virtqueue *vq, struct error *err)
{
    if (!is_pow2(vq->size) || vq->size > vq->max_size)
        return error_setf(err, "virtqueue %u: size %u is not a power of two in 1..%u", vq->index,
                          vq->size, vq->max_size);
    if (check_alignment(vq, vq->desc_gpa, vq->avail_gpa, vq->used_gpa, err) < 0 ||
        check_ring(vq, "descriptor table", vq->desc_gpa, VIRTQ_DESC_TABLE_SIZE(vq->size),
                   VIRTQ_DESC_ALIGN, err) < 0 ||
        check_ring(vq, "available ring", vq->avail_gpa, VIRTQ_AVAIL_RING_SIZE(vq->size),
                   VIRTQ_AVAIL_ALIGN, err) < 0 ||
        check_ring(vq, "used ring", vq->used_gpa, VIRTQ_USED_RING_SIZE(vq->size), VIRTQ_USED_ALIGN,
                   err) < 0)
        return -1;
    vq->broken = false;
    vq->notify_enabled = true;
    vq->last_avail_idx = vq->shadow_avail_idx = 0;
    vq->used_idx = vq->signalled_used = 0;
    vq->inflight = 0;
    vq->enabled = true;
    return 0;
}

bool vq_is_enabled(const struct virtqueue *vq)
{
    return vq->enabled;
}

/* ---- popping ---- */

/* Read avail->idx (acquire: the ring entries and descriptors the driver wrote before it are
 * visible after it) and check how far it moved. */
static int fetch_avail_idx(struct virtqueue *vq, struct error *err)
{
    uint16_t idx;
    if (!load16(vq, vq->avail_gpa + AVAIL_IDX_OFF, true, &idx))
        return vq_fail(vq, err, "available ring at 0x%llx is not inside guest RAM",
                       (unsigned long long)vq->avail_gpa);
    if ((uint16_t)(idx - vq->last_avail_idx) > vq->size)
        return vq_fail(vq, err, "available index moved from %u to %u, more than the queue size %u",
                       vq->last_avail_idx, idx, vq->size);
    vq->shadow_avail_idx = idx;
    return 0;
}

static void parse_desc(const uint8_t *raw, struct desc *d)
{
    d->addr = le_get64(raw);
    d->len = le_get32(raw + 8);
    d->flags = le_get16(raw + 12);
    d->next = le_get16(raw + 14);
}

/* Where a descriptor sits, for messages: "descriptor 5" or "indirect descriptor 2 (head 5)". */
struct where {
    uint16_t head;
    unsigned idx;
    bool indirect;
};

static const char *where_str(const struct where *w, char *buf, size_t size)
{
    if (w->indirect)
        snprintf(buf, size, "indirect descriptor %u (head %u)", w->idx, w->head);
    else
        snprintf(buf, size, "descriptor %u (head %u)", w->idx, w->head);
    return buf;
}

static int add_segment(struct virtqueue *vq, struct vq_chain *c, const struct desc *d,
                       const struct where *w, struct error *err)
{
    char wb[64];
    bool writes = d->flags & VIRTQ_DESC_F_WRITE;
    if (!writes && c->nr_segs > c->nr_readable)
        return vq_fail(vq, err, "%s: readable buffer after a writable one",
                       where_str(w, wb, sizeof(wb)));
    if (c->nr_segs >= VQ_CHAIN_MAX_SEGS)
        return vq_fail(vq, err, "%s: chain has more than %u buffers", where_str(w, wb, sizeof(wb)),
                       VQ_CHAIN_MAX_SEGS);
    if (d->len && !guest_mem_ptr(vq->mem, d->addr, d->len))
        return vq_fail(vq, err, "%s: buffer at 0x%llx (%u bytes) is not inside guest RAM",
                       where_str(w, wb, sizeof(wb)), (unsigned long long)d->addr, d->len);
    /* readable_len + writable_len stays below 2^32: the used ring's len is 32 bits. */
    uint32_t total = c->readable_len + c->writable_len;
    if (d->len > UINT32_MAX - total)
        return vq_fail(vq, err, "%s: chain length exceeds 4 GiB", where_str(w, wb, sizeof(wb)));
    c->seg[c->nr_segs++] = (struct vq_segment){d->addr, d->len, writes};
    if (writes) {
        c->writable_len += d->len;
    } else {
        c->nr_readable++;
        c->readable_len += d->len;
    }
    return 0;
}

/* The table an INDIRECT descriptor points to: entries chained from entry 0, none of them
 * INDIRECT, every next inside the table, at most one visit per entry. */
static int walk_indirect(struct virtqueue *vq, struct vq_chain *c, const struct desc *ind,
                         const struct where *at, struct error *err)
{
    char wb[64];
    if (ind->len == 0 || ind->len % VIRTQ_DESC_SIZE)
        return vq_fail(vq, err, "%s: indirect table length %u is not a non-zero multiple of %u",
                       where_str(at, wb, sizeof(wb)), ind->len, VIRTQ_DESC_SIZE);
    unsigned n = ind->len / VIRTQ_DESC_SIZE;
    if (n > VQ_CHAIN_MAX_SEGS)
        return vq_fail(vq, err, "%s: indirect table of %u entries exceeds the limit of %u",
                       where_str(at, wb, sizeof(wb)), n, VQ_CHAIN_MAX_SEGS);
    if (!guest_mem_ptr(vq->mem, ind->addr, ind->len))
        return vq_fail(vq, err, "%s: indirect table at 0x%llx (%u bytes) is not inside guest RAM",
                       where_str(at, wb, sizeof(wb)), (unsigned long long)ind->addr, ind->len);
    struct where w = {at->head, 0, true};
    for (unsigned visited = 1;; visited++) {
        if (visited > n)
            return vq_fail(vq, err, "%s: chain in indirect table is longer than its %u entries",
                           where_str(at, wb, sizeof(wb)), n);
        uint8_t raw[VIRTQ_DESC_SIZE];
        struct desc d;
        if (guest_mem_read(vq->mem, ind->addr + (uint64_t)w.idx * VIRTQ_DESC_SIZE, raw,
                           sizeof(raw)) < 0)
            return vq_fail(vq, err, "%s: not inside guest RAM", where_str(&w, wb, sizeof(wb)));
        parse_desc(raw, &d);
        if (d.flags & VIRTQ_DESC_F_INDIRECT)
            return vq_fail(vq, err, "%s: INDIRECT inside an indirect table",
                           where_str(&w, wb, sizeof(wb)));
        if (add_segment(vq, c, &d, &w, err) < 0)
            return -1;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        if (d.next >= n)
            return vq_fail(vq, err, "%s: next %u is outside the indirect table of %u entries",
                           where_str(&w, wb, sizeof(wb)), d.next, n);
        w.idx = d.next;
    }
}

/* A chain: direct descriptors from the head, optionally ending with one INDIRECT descriptor
 * (spec: the device handles zero or more chained descriptors followed by an indirect one). */
static int walk_chain(struct virtqueue *vq, uint16_t head, struct vq_chain *c, struct error *err)
{
    char wb[64];
    c->head = head;
    c->nr_segs = c->nr_readable = 0;
    c->readable_len = c->writable_len = 0;
    struct where w = {head, head, false};
    for (unsigned visited = 1;; visited++) {
        if (visited > vq->size)
            return vq_fail(vq, err, "chain at head %u is longer than the queue size %u (a loop)",
                           head, vq->size);
        uint8_t raw[VIRTQ_DESC_SIZE];
        struct desc d;
        if (guest_mem_read(vq->mem, vq->desc_gpa + (uint64_t)w.idx * VIRTQ_DESC_SIZE, raw,
                           sizeof(raw)) < 0)
            return vq_fail(vq, err, "%s: descriptor table is not inside guest RAM",
                           where_str(&w, wb, sizeof(wb)));
        parse_desc(raw, &d);
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (!vq->indirect)
                return vq_fail(vq, err, "%s: INDIRECT without VIRTIO_F_RING_INDIRECT_DESC",
                               where_str(&w, wb, sizeof(wb)));
            if (d.flags & VIRTQ_DESC_F_NEXT)
                return vq_fail(vq, err, "%s: INDIRECT together with NEXT",
                               where_str(&w, wb, sizeof(wb)));
            /* The WRITE flag of the descriptor that points to the table is ignored. */
            return walk_indirect(vq, c, &d, &w, err);
        }
        if (add_segment(vq, c, &d, &w, err) < 0)
            return -1;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        if (d.next >= vq->size)
            return vq_fail(vq, err, "%s: next %u is not below the queue size %u",
                           where_str(&w, wb, sizeof(wb)), d.next, vq->size);
        w.idx = d.next;
    }
}

int vq_pop(struct virtqueue *vq, struct vq_chain *out, struct error *err)
{
    if (!vq->enabled)
        return 0;
    if (vq->broken)
        return error_setf(err, "virtqueue %u: stopped after an earlier error until reset",
                          vq->index);
    if (vq->last_avail_idx == vq->shadow_avail_idx) {
        if (fetch_avail_idx(vq, err) < 0)
            return -1;
        if (vq->last_avail_idx == vq->shadow_avail_idx) {
            if (!vq->event_idx || !vq->notify_enabled)
                return 0;
            /* Empty: ask to be notified of the next buffer, then look again, so that a buffer
             * added while avail_event was stale is not missed (store, full barrier, load). */
            store16(vq, avail_event_gpa(vq), vq->last_avail_idx, false);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (fetch_avail_idx(vq, err) < 0)
                return -1;
            if (vq->last_avail_idx == vq->shadow_avail_idx)
                return 0;
        }
    }
    if (vq->inflight >= vq->size)
        return vq_fail(vq, err,
                       "more than %u chains in flight: the driver reused descriptors the "
                       "device still owns",
                       vq->size);
    unsigned slot = vq->last_avail_idx & (vq->size - 1);
    uint16_t head;
    if (!load16(vq, vq->avail_gpa + AVAIL_RING_OFF + 2 * (uint64_t)slot, false, &head))
        return vq_fail(vq, err, "available ring at 0x%llx is not inside guest RAM",
                       (unsigned long long)vq->avail_gpa);
    if (head >= vq->size)
        return vq_fail(vq, err, "available ring entry %u: head %u is not below the queue size %u",
                       vq->last_avail_idx, head, vq->size);
    if (walk_chain(vq, head, out, err) < 0)
        return -1;
    vq->last_avail_idx++;
    vq->inflight++;
    return 1;
}

/* ---- used ring and notifications ---- */

void vq_push(struct virtqueue *vq, uint16_t head, uint32_t written)
{
    if (!vq->enabled || head >= vq->size)
        return;
    uint8_t elem[VIRTQ_USED_ELEM_SIZE];
    le_put32(elem, head);
    le_put32(elem + 4, written);
    uint64_t slot = vq->used_idx & (vq->size - 1);
    if (guest_mem_write(vq->mem, vq->used_gpa + USED_RING_OFF + slot * VIRTQ_USED_ELEM_SIZE, elem,
                        sizeof(elem)) < 0)
        return;
    vq->used_idx++;
    /* Release: the element is visible before the index that covers it. */
    store16(vq, vq->used_gpa + USED_IDX_OFF, vq->used_idx, true);
    if (vq->inflight)
        vq->inflight--;
}

/* True if the driver's event index lies in (old, new]: the spec's vring_need_event. */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

bool vq_should_notify(struct virtqueue *vq)
{
    if (!vq->enabled)
        return false;
    uint16_t old_idx = vq->signalled_used, new_idx = vq->used_idx;
    if (old_idx == new_idx)
        return false;
    vq->signalled_used = new_idx;
    /* The used->idx store must be globally visible before we read the driver's suppression
     * field, which the driver writes before re-reading used->idx. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t v;
    if (vq->event_idx) {
        if (!load16(vq, used_event_gpa(vq), false, &v))
            return true;
        return need_event(v, new_idx, old_idx);
    }
    if (!load16(vq, vq->avail_gpa, false, &v))
        return true;
    return !(v & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void vq_disable_notification(struct virtqueue *vq)
{
    if (!vq->enabled)
        return;
    vq->notify_enabled = false;
    if (!vq->event_idx)
        store16(vq, vq->used_gpa + USED_FLAGS_OFF, VIRTQ_USED_F_NO_NOTIFY, false);
}

bool vq_enable_notification(struct virtqueue *vq)
{
    if (!vq->enabled)
        return false;
    vq->notify_enabled = true;
    if (vq->event_idx)
        store16(vq, avail_event_gpa(vq), vq->last_avail_idx, false);
    else
        store16(vq, vq->used_gpa + USED_FLAGS_OFF, 0, false);
    /* Store the request, then look at avail->idx: a buffer the driver added before seeing the
     * request is found here, one added after it comes with a notification. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t idx;
    if (!load16(vq, vq->avail_gpa + AVAIL_IDX_OFF, true, &idx))
        return false;
    return idx != vq->last_avail_idx;
}

/* ---- chain buffers ---- */

/* Copy between host memory and the readable part (into `to`) or the writable part (from
 * `from`) of a chain; the range is checked against the part's total length first. */
static int chain_copy(const struct virtqueue *vq, const struct vq_chain *c, uint32_t offset,
                      uint8_t *to, const uint8_t *from, size_t len)
{
    bool writable = from != NULL;
    uint32_t total = writable ? c->writable_len : c->readable_len;
    if (len > total || offset > total - len)
        return -1;
    unsigned i = writable ? c->nr_readable : 0;
    unsigned end = writable ? c->nr_segs : c->nr_readable;
    if (end > VQ_CHAIN_MAX_SEGS)
        return -1;
    for (; i < end && len; i++) {
        const struct vq_segment *s = &c->seg[i];
        if (offset >= s->len) {
            offset -= s->len;
            continue;
        }
        size_t n = s->len - offset;
        if (n > len)
            n = len;
        if (writable) {
            if (guest_mem_write(vq->mem, s->gpa + offset, from, n) < 0)
                return -1;
            from += n;
        } else {
            if (guest_mem_read(vq->mem, s->gpa + offset, to, n) < 0)
                return -1;
            to += n;
        }
        len -= n;
        offset = 0;
    }
    return len ? -1 : 0;
}

int vq_chain_read(const struct virtqueue *vq, const struct vq_chain *c, uint32_t offset, void *buf,
                  size_t len)
{
    return chain_copy(vq, c, offset, buf, NULL, len);
}

int vq_chain_write(const struct virtqueue *vq, const struct vq_chain *c, uint32_t offset,
                   const void *buf, size_t len)
{
    static const uint8_t none;
    return chain_copy(vq, c, offset, NULL, buf ? buf : &none, len);
}

void *vq_segment_ptr(const struct virtqueue *vq, const struct vq_segment *s)
{
    return guest_mem_ptr(vq->mem, s->gpa, s->len);
}

void vq_unpop(struct virtqueue *vq, unsigned n)
{
    if (n > vq->inflight)
        n = vq->inflight;
    vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - n);
    vq->inflight -= n;
}
