/*
 * A hostile driver against virtio-blk. The input is
 *   byte 0      n, the number of available entries (n % 17)
 *   byte 1      bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 read-only device
 *   2n bytes    the avail ring entries (heads)
 *   the rest    laid over guest memory from address 0: descriptor table at 0 (16 entries),
 *               avail ring at 0x1000 (written by the harness), used ring at 0x2000 (the
 *               device's), request headers, segments and buffers anywhere else
 * in a 64 KiB guest, over a 64 KiB raw image in /var/tmp. The harness plays the transport, makes
 * the entries available, kicks, and waits until every entry is used or the device asks for a
 * reset; then it resets the device (which drains the I/O). Nothing may crash, hang or touch
 * memory outside the guest buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "core/bytes.h"
#include "virtio/blk.h"
#include "../virtio_driver.h"
#include "fuzz_ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE  0x10000u
#define QSIZE     16
#define AVAIL     0x1000u
#define USED      0x2000u
#define DISK_SIZE 0x10000u

static uint8_t ram[RAM_SIZE] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct block_backend *bb[2];
static struct virtio_blk *blk[2];

static void no_irq(struct virtio_device *vdev, unsigned q) {}

static void no_config_irq(struct virtio_device *vdev) {}

static const struct virtio_transport_ops ops = {.notify_queue = no_irq,
                                                .notify_config = no_config_irq};

static void init_once(void)
{
    char path[] = "/var/tmp/kemu-fuzz-vblk-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, DISK_SIZE) < 0)
        abort();
    close(fd);
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    for (int i = 0; i < 2; i++) {
        struct error err = {0};
        struct block_open_opts o = {
            .file = path, .cache = BLOCK_CACHE_UNSAFE, .discard_unmap = true, .readonly = i == 1};
        struct virtio_blk_params p = {
            .serial = "fuzz", .queue_size = QSIZE, .discard = true, .write_zeroes = true};
        if (block_backend_open(&o, &bb[i], &err) < 0 ||
            virtio_blk_create(&mem, bb[i], &p, &blk[i], &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            abort();
        }
        virtio_blk_vdev(blk[i])->transport = &ops;
    }
    unlink(path); /* the open fds keep it */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!bb[0])
        init_once();
    if (size < 2)
        return 0;
    unsigned n = data[0] % 17;
    unsigned flags = data[1];
    if (size < 2 + 2 * (size_t)n)
        return 0;
    const uint8_t *heads = data + 2;
    const uint8_t *image = heads + 2 * n;
    size_t image_len = size - 2 - 2 * n;
    fuzz_ring_layout(ram, RAM_SIZE, image, image_len, heads, n, QSIZE, AVAIL, USED);

    struct virtio_device *v = virtio_blk_vdev(blk[(flags >> 2) & 1]);
    uint64_t f = v->device_features &
                 ~(VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX) | VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC));
    if (flags & 1)
        f |= VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
    if (flags & 2)
        f |= VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC);
    struct error err = {0};
    pthread_mutex_lock(&v->lock);
    virtio_driver_features(v, f);
    uint8_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    if (vq_set_size(&v->vq[0], QSIZE, &err) < 0 ||
        vq_set_addresses(&v->vq[0], 0, AVAIL, USED, &err) < 0 || vq_enable(&v->vq[0], &err) < 0)
        abort();
    virtio_set_status(v, st | VIRTIO_STATUS_DRIVER_OK);
    pthread_mutex_unlock(&v->lock);

    fuzz_ring_run(v, ram, 0, n, AVAIL, USED, 5);
    return 0;
}
