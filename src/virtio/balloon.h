/*
 * virtio-balloon (VIRTIO 1.x, 5.5, device ID 5): QEMU's virtio-balloon-pci. The host asks the
 * guest to give back memory by raising the target (num_pages, in 4 KiB pages); the guest's
 * driver takes that many pages from its allocator, hands their frame numbers over on the
 * inflate queue, and reports how many it holds in `actual`. The pages it inflates are dropped
 * from the host (MADV_DONTNEED: RSS falls, and they read as zeros if touched); the deflate
 * queue gives pages back (nothing to do: they fault in again on use).
 *
 * Features, as QEMU's defaults plus its two options: PAGE_POISON (the driver says which value
 * its free pages hold), DEFLATE_ON_OOM (deflate-on-oom=on: the guest may deflate under memory
 * pressure), PAGE_REPORTING (free-page-reporting=on: the guest reports free page ranges on a
 * third queue and the host drops them too, unless their poison value is not zero). No stats
 * queue: kemu has no qom-get to read the statistics with.
 *
 * A worker thread services the queues from DRIVER_OK to reset. Every frame number and range
 * the guest gives is checked against guest RAM; one outside is skipped.
 */
#ifndef KEMU_VIRTIO_BALLOON_H
#define KEMU_VIRTIO_BALLOON_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/memory.h"
#include "virtio/device.h"

#define VIRTIO_BALLOON_QUEUE_SIZE 128

#define VIRTIO_BALLOON_F_MUST_TELL_HOST 0
#define VIRTIO_BALLOON_F_STATS_VQ       1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2
#define VIRTIO_BALLOON_F_FREE_PAGE_HINT 3
#define VIRTIO_BALLOON_F_PAGE_POISON    4
#define VIRTIO_BALLOON_F_REPORTING      5

/* The balloon's page: frame numbers on the queues count 4 KiB, whatever the guest's page. */
#define VIRTIO_BALLOON_PFN_SHIFT 12

struct virtio_balloon;

struct virtio_balloon_opts {
    bool deflate_on_oom;      /* deflate-on-oom=on */
    bool free_page_reporting; /* free-page-reporting=on */
};

/*
 * The guest changed `actual` (bytes: RAM size minus what the balloon holds). Called on the vCPU
 * thread of the config write with the device lock held: hand it on, do not wait there.
 */
typedef void virtio_balloon_change_fn(void *opaque, uint64_t actual);

int virtio_balloon_create(struct guest_mem *mem, const struct virtio_balloon_opts *o,
                          struct virtio_balloon **out, struct error *err);
struct virtio_device *virtio_balloon_vdev(struct virtio_balloon *b);
void virtio_balloon_set_change_handler(struct virtio_balloon *b, virtio_balloon_change_fn *fn,
                                       void *opaque);
/* QMP balloon: ask the guest to have `target` bytes of RAM (at most the RAM size; QEMU's
 * rounding: down to a page). The device tells the driver with a configuration interrupt. */
void virtio_balloon_set_target(struct virtio_balloon *b, uint64_t target);
/* query-balloon: the RAM size minus the pages the driver says it holds, in bytes. */
uint64_t virtio_balloon_actual(struct virtio_balloon *b);
/* Stops the worker; destroy the transport first. NULL is ignored. */
void virtio_balloon_destroy(struct virtio_balloon *b);

/* Pages dropped from the host so far (inflated and reported), for tests and diagnostics. */
uint64_t virtio_balloon_discarded_pages(struct virtio_balloon *b);

#endif
