/*
 * A hostile driver against virtio-balloon. The input is
 *   byte 0      n, the number of available entries (n % 17)
 *   byte 1      bits 0-1 the queue (inflate, deflate, reporting; 3 is inflate), bit 2
 *               EVENT_IDX, bit 3 INDIRECT_DESC, bit 4 PAGE_POISON with a non-zero poison value,
 *               bit 5 a config write of `actual` from bytes 2-5 first
 *   bytes 2-5   that value
 *   2n bytes    the avail ring entries (heads)
 *   the rest    laid over guest memory from address 0: descriptor table at 0 (16 entries),
 *               avail ring at 0x1000 (written by the harness), used ring at 0x2000 (the
 *               device's), frame number arrays and reported ranges anywhere
 * in a 64 KiB guest. Frame numbers may name any page, the rings' own included, or none: the
 * device drops what lies in guest RAM and nothing else. The harness plays the transport, kicks,
 * waits until every entry is used or the device asks for a reset, then resets it. Nothing may
 * crash, hang or touch memory outside the guest buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/bytes.h"
#include "virtio/balloon.h"
#include "../virtio_driver.h"
#include "fuzz_ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE 0x10000u
#define QSIZE    16
#define AVAIL    0x1000u
#define USED     0x2000u

static uint8_t ram[RAM_SIZE] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct virtio_balloon *balloon;

static void no_irq(struct virtio_device *vdev, unsigned q) {}

static void no_config_irq(struct virtio_device *vdev) {}

static const struct virtio_transport_ops ops = {.notify_queue = no_irq,
                                                .notify_config = no_config_irq};

static void init_once(void)
{
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    struct error err = {0};
    struct virtio_balloon_opts o = {.deflate_on_oom = true, .free_page_reporting = true};
    if (virtio_balloon_create(&mem, &o, &balloon, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    virtio_balloon_vdev(balloon)->transport = &ops;
    virtio_balloon_set_target(balloon, RAM_SIZE / 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!balloon)
        init_once();
    if (size < 6)
        return 0;
    unsigned n = data[0] % 17;
    unsigned flags = data[1];
    unsigned q = (flags & 3) == 3 ? 0 : flags & 3;
    if (size < 6 + 2 * (size_t)n)
        return 0;
    const uint8_t *heads = data + 6;
    const uint8_t *image = heads + 2 * n;
    size_t image_len = size - 6 - 2 * n;
    fuzz_ring_layout(ram, RAM_SIZE, image, image_len, heads, n, QSIZE, AVAIL, USED);

    struct virtio_device *v = virtio_balloon_vdev(balloon);
    uint64_t f = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_BALLOON_F_REPORTING) |
                 VIRTIO_BIT(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
    if (flags & 4)
        f |= VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
    if (flags & 8)
        f |= VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC);
    if (flags & 16)
        f |= VIRTIO_BIT(VIRTIO_BALLOON_F_PAGE_POISON);
    struct error err = {0};
    pthread_mutex_lock(&v->lock);
    virtio_driver_features(v, f);
    if (flags & 16)
        virtio_write_config(v, 12, 4, 0xaaaaaaaau);
    if (flags & 32)
        virtio_write_config(v, 4, 4, le_get32(data + 2));
    uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    for (unsigned i = 0; i < v->nqueues; i++) {
        /* the queue under test at 0; the others elsewhere, empty */
        uint64_t base = i == q ? 0 : 0x8000 + 0x1000 * (uint64_t)i;
        if (vq_set_size(&v->vq[i], QSIZE, &err) < 0 ||
            vq_set_addresses(&v->vq[i], base, base + AVAIL, base + USED, &err) < 0 ||
            (i == q && vq_enable(&v->vq[i], &err) < 0))
            abort();
    }
    virtio_set_status(v, st | VIRTIO_STATUS_DRIVER_OK);
    pthread_mutex_unlock(&v->lock);

    /* Generous: one buffer may list 16M frames, each its own madvise() (the harness's RAM is
     * 64 KiB, a chain up to 1024 segments of it). */
    fuzz_ring_run(v, ram, q, n, AVAIL, USED, 60);
    return 0;
}
