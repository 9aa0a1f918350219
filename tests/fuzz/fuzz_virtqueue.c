/*
 * A hostile driver against the split virtqueue. The input is
 *   byte 0      queue size: 1 << (b % 9), 1..256
 *   byte 1      bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 ring addresses from bytes 3..8
 *   byte 2      n, the number of operation bytes that follow the header
 *   bytes 3..8  three 16-bit ring addresses (used only with byte 1 bit 2)
 *   n bytes     operations (low 3 bits the operation, high 5 bits its argument)
 *   the rest    laid over guest memory from address 0: descriptor table at 0, avail ring at
 *               0x1000, used ring at 0x2000 (the device's), indirect tables and buffers after
 * in a 64 KiB guest. Every chain popped is read and written through the chain helpers and its
 * segments touched through their host pointers, then pushed. Nothing may crash, hang or touch
 * memory outside the guest buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/bytes.h"
#include "virtio/virtqueue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE 0x10000u
#define HDR      9

static uint8_t ram[RAM_SIZE] __attribute__((aligned(4096)));
static struct vq_chain chain;
static uint8_t scratch[4096];
static unsigned sink;

static void service(struct virtqueue *vq, const struct vq_chain *c, unsigned arg)
{
    uint32_t rlen = vq_chain_readable_len(c), wlen = vq_chain_writable_len(c);
    size_t n = rlen < sizeof(scratch) ? rlen : sizeof(scratch);
    uint32_t off = rlen > n ? (uint32_t)(arg % (rlen - n + 1)) : 0;
    if (vq_chain_read(vq, c, off, scratch, n) == 0)
        sink += n ? scratch[n - 1] : 0;
    /* Ranges past the end must be refused. */
    if (vq_chain_read(vq, c, rlen, scratch, 1) == 0)
        __builtin_trap();
    size_t w = wlen < sizeof(scratch) ? wlen : sizeof(scratch);
    w = w > arg ? arg : w;
    if (vq_chain_write(vq, c, wlen - (uint32_t)w, scratch, w) != 0)
        __builtin_trap();
    if (vq_chain_write(vq, c, wlen, scratch, 1) == 0)
        __builtin_trap();
    for (unsigned i = 0; i < c->nr_segs; i++) {
        const struct vq_segment *s = &c->seg[i];
        volatile uint8_t *p = vq_segment_ptr(vq, s);
        if (s->len && !p)
            __builtin_trap(); /* pop promised every segment is inside RAM */
        if (p && s->len)
            sink += p[0] + p[s->len - 1];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HDR)
        return 0;
    unsigned qsize = 1u << (data[0] % 9);
    uint64_t features = 0;
    if (data[1] & 1)
        features |= VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX);
    if (data[1] & 2)
        features |= VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC);
    uint64_t desc = 0, avail = 0x1000, used = 0x2000;
    if (data[1] & 4) {
        desc = le_get16(data + 3);
        avail = le_get16(data + 5);
        used = le_get16(data + 7);
    }
    size_t nops = data[2];
    const uint8_t *ops = data + HDR;
    if (nops > size - HDR)
        nops = size - HDR;
    const uint8_t *image = ops + nops;
    size_t image_len = size - HDR - nops;
    memset(ram, 0, sizeof(ram));
    memcpy(ram, image, image_len < RAM_SIZE ? image_len : RAM_SIZE);

    struct guest_mem mem;
    guest_mem_init_buffer(&mem, ram, RAM_SIZE);
    struct virtqueue vq;
    struct error err = {0};
    if (vq_init(&vq, &mem, 0, 256, &err) < 0 || vq_set_size(&vq, qsize, &err) < 0)
        __builtin_trap();
    vq_set_features(&vq, features);
    if (vq_set_addresses(&vq, desc, avail, used, &err) < 0 || vq_enable(&vq, &err) < 0)
        return 0;

    uint16_t held[256];
    unsigned nheld = 0;
    for (size_t i = 0; i <= nops; i++) {
        /* One extra round at the end: drain the queue and return everything held. */
        unsigned op = i < nops ? ops[i] & 7 : 0, arg = i < nops ? ops[i] >> 3 : 0;
        uint8_t *avail_idx = ram + avail + 2;
        switch (op) {
        case 0: /* the device drains the ring */
            for (unsigned k = 0; k < 2 * qsize + 2; k++) {
                memset(&err, 0, sizeof(err));
                int r = vq_pop(&vq, &chain, &err);
                if (r < 0 && !err.set)
                    __builtin_trap(); /* every error has a message */
                if (r <= 0)
                    break;
                service(&vq, &chain, arg);
                vq_push(&vq, chain.head, arg);
            }
            while (nheld)
                vq_push(&vq, held[--nheld], 0);
            sink += vq_should_notify(&vq);
            break;
        case 1: /* the driver publishes arg more entries (or moves idx back) */
            le_put16(avail_idx, (uint16_t)(le_get16(avail_idx) + arg - 4));
            break;
        case 2:
            vq_disable_notification(&vq);
            break;
        case 3:
            sink += vq_enable_notification(&vq);
            break;
        case 4:
            sink += vq_should_notify(&vq);
            break;
        case 5: /* the driver changes its suppression fields */
            le_put16(ram + avail, (uint16_t)(arg & 1));
            le_put16(ram + avail + 4 + 2 * (uint64_t)qsize, (uint16_t)arg);
            break;
        case 6: /* reset and enable again, perhaps with other features */
            vq_reset(&vq);
            vq_set_features(&vq, arg & 1 ? features : 0);
            if (vq_set_size(&vq, qsize, &err) < 0)
                __builtin_trap();
            if (vq_set_addresses(&vq, desc, avail, used, &err) < 0 || vq_enable(&vq, &err) < 0)
                return 0;
            nheld = 0;
            break;
        case 7: { /* pop one and hold it */
            memset(&err, 0, sizeof(err));
            int r = vq_pop(&vq, &chain, &err);
            if (r == 1) {
                if (nheld >= qsize)
                    __builtin_trap(); /* the in-flight bound must have refused it */
                held[nheld++] = chain.head;
                service(&vq, &chain, arg);
            }
            break;
        }
        }
    }
    return 0;
}
