/* Unit tests for the split virtqueue: the test plays the guest driver, building descriptor
 * tables and rings by hand in a 1 MiB buffer used as guest RAM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>

#include "core/bytes.h"
#include "virtio/virtqueue.h"

#define RAM_SIZE (1u << 20)
#define DESC     0x1000u  /* descriptor table: up to 2048 entries (32 KiB) */
#define AVAIL    0x9000u  /* avail ring: up to 2048 entries */
#define USED     0xb000u  /* used ring: up to 2048 entries (16 KiB) */
#define TABLES   0x10000u /* indirect tables */
#define DATA     0x20000u /* buffers */

#define FEAT_EVENT_IDX VIRTIO_BIT(VIRTIO_F_RING_EVENT_IDX)
#define FEAT_INDIRECT  VIRTIO_BIT(VIRTIO_F_RING_INDIRECT_DESC)

struct fx {
    uint8_t *ram;
    size_t ram_size;
    struct guest_mem mem;
    struct virtqueue vq;
    struct vq_chain chain;
    struct error err;
    uint16_t avail_idx; /* the driver's next avail index */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->ram_size = RAM_SIZE;
    f->ram = aligned_alloc(4096, RAM_SIZE);
    assert_non_null(f->ram);
    memset(f->ram, 0, RAM_SIZE);
    guest_mem_init_buffer(&f->mem, f->ram, RAM_SIZE);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    free(f->ram);
    free(f);
    return 0;
}

static void start(struct fx *f, unsigned size, uint64_t features)
{
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(vq_init(&f->vq, &f->mem, 0, size, &f->err), 0);
    assert_int_equal(vq_set_size(&f->vq, size, &f->err), 0);
    assert_int_equal(vq_set_addresses(&f->vq, DESC, AVAIL, USED, &f->err), 0);
    vq_set_features(&f->vq, features | VIRTIO_BIT(VIRTIO_F_VERSION_1));
    assert_int_equal(vq_enable(&f->vq, &f->err), 0);
    f->avail_idx = 0;
}

static uint16_t get16(struct fx *f, uint64_t gpa)
{
    return le_get16(f->ram + gpa);
}

static void put16(struct fx *f, uint64_t gpa, uint16_t v)
{
    le_put16(f->ram + gpa, v);
}

static void desc_at(struct fx *f, uint64_t table, unsigned i, uint64_t addr, uint32_t len,
                    uint16_t flags, uint16_t next)
{
    uint8_t *p = f->ram + table + 16 * (uint64_t)i;
    le_put64(p, addr);
    le_put32(p + 8, len);
    le_put16(p + 12, flags);
    le_put16(p + 14, next);
}

static void desc(struct fx *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                 uint16_t next)
{
    desc_at(f, DESC, i, addr, len, flags, next);
}

/* Make `head` available and publish the new avail->idx. */
static void publish(struct fx *f, uint16_t head)
{
    put16(f, AVAIL + 4 + 2 * (f->avail_idx & (f->vq.size - 1)), head);
    f->avail_idx++;
    put16(f, AVAIL + 2, f->avail_idx);
}

static void used_elem(struct fx *f, unsigned i, uint32_t *id, uint32_t *len)
{
    const uint8_t *p = f->ram + USED + 4 + 8 * (i & (f->vq.size - 1));
    *id = le_get32(p);
    *len = le_get32(p + 4);
}

static uint16_t used_event_off(struct fx *f)
{
    return (uint16_t)(4 + 2 * f->vq.size);
}

/* Pop must fail with a message containing `what`. */
static void expect_error(struct fx *f, const char *what)
{
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), -1);
    assert_true(f->err.set);
    if (!strstr(f->err.msg, what))
        fail_msg("message \"%s\" lacks \"%s\"", f->err.msg, what);
    /* The queue stays broken until reset. */
    struct error e2 = {0};
    assert_int_equal(vq_pop(&f->vq, &f->chain, &e2), -1);
    assert_non_null(strstr(e2.msg, "earlier error"));
}

/* ---- configuration ---- */

static void test_config(void **state)
{
    struct fx *f = *state;
    struct error err = {0};
    assert_int_equal(vq_init(&f->vq, &f->mem, 3, 0, &err), -1);
    assert_non_null(strstr(err.msg, "virtqueue 3: maximum size 0"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_init(&f->vq, &f->mem, 0, 24, &err), -1);
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_init(&f->vq, &f->mem, 0, 65536, &err), -1);
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_init(&f->vq, &f->mem, 0, 32768, &err), 0);
    assert_int_equal(vq_init(&f->vq, &f->mem, 0, 256, &err), 0);
    assert_int_equal(f->vq.size, 256);
    assert_false(vq_is_enabled(&f->vq));
    assert_int_equal(vq_pop(&f->vq, &f->chain, &err), 0); /* disabled: nothing */

    assert_int_equal(vq_set_size(&f->vq, 0, &err), -1);
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_size(&f->vq, 100, &err), -1);
    assert_non_null(strstr(err.msg, "size 100 is not a power of two"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_size(&f->vq, 512, &err), -1);
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_size(&f->vq, 1, &err), 0);
    assert_int_equal(vq_set_size(&f->vq, 64, &err), 0);

    assert_int_equal(vq_set_addresses(&f->vq, DESC + 8, AVAIL, USED, &err), -1);
    assert_non_null(strstr(err.msg, "descriptor table 0x1008 is not 16-byte aligned"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_addresses(&f->vq, DESC, AVAIL + 1, USED, &err), -1);
    assert_non_null(strstr(err.msg, "available ring 0x9001 is not 2-byte aligned"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_addresses(&f->vq, DESC, AVAIL, USED + 2, &err), -1);
    assert_non_null(strstr(err.msg, "used ring 0xb002 is not 4-byte aligned"));
    memset(&err, 0, sizeof(err));

    /* Rings must lie entirely inside RAM. */
    assert_int_equal(vq_set_addresses(&f->vq, RAM_SIZE - 16 * 32, AVAIL, USED, &err), 0);
    assert_int_equal(vq_enable(&f->vq, &err), -1);
    assert_non_null(strstr(err.msg, "descriptor table at 0xffe00 (1024 bytes) is not inside"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_addresses(&f->vq, DESC, RAM_SIZE - 132, USED, &err), 0);
    assert_int_equal(vq_enable(&f->vq, &err), -1);
    assert_non_null(strstr(err.msg, "available ring"));
    memset(&err, 0, sizeof(err));
    /* 6 + 8 * 64 = 518 bytes: 516 is one avail_event too short. */
    assert_int_equal(vq_set_addresses(&f->vq, DESC, AVAIL, RAM_SIZE - 516, &err), 0);
    assert_int_equal(vq_enable(&f->vq, &err), -1);
    assert_non_null(strstr(err.msg, "used ring"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_addresses(&f->vq, DESC, AVAIL, RAM_SIZE - 520, &err), 0);
    assert_int_equal(vq_enable(&f->vq, &err), 0);
    assert_true(vq_is_enabled(&f->vq));

    /* No reconfiguration while enabled. */
    assert_int_equal(vq_set_size(&f->vq, 32, &err), -1);
    memset(&err, 0, sizeof(err));
    assert_int_equal(vq_set_addresses(&f->vq, DESC, AVAIL, USED, &err), -1);
    memset(&err, 0, sizeof(err));

    vq_reset(&f->vq);
    assert_false(vq_is_enabled(&f->vq));
    assert_int_equal(f->vq.size, 256);
    assert_int_equal(f->vq.desc_gpa, 0);
    assert_false(f->vq.event_idx);

    vq_set_features(&f->vq, FEAT_EVENT_IDX | FEAT_INDIRECT);
    assert_true(f->vq.event_idx);
    assert_true(f->vq.indirect);
    vq_set_features(&f->vq, VIRTIO_BIT(VIRTIO_F_VERSION_1));
    assert_false(f->vq.event_idx);
    assert_false(f->vq.indirect);
}

/* ---- well-formed chains ---- */

static void test_simple_chain(void **state)
{
    struct fx *f = *state;
    start(f, 16, 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);

    memcpy(f->ram + DATA, "hello", 5);
    desc(f, 3, DATA, 5, VIRTQ_DESC_F_NEXT, 7);
    desc(f, 7, DATA + 0x100, 64, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 3);

    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    struct vq_chain *c = &f->chain;
    assert_int_equal(c->head, 3);
    assert_int_equal(c->nr_segs, 2);
    assert_int_equal(c->nr_readable, 1);
    assert_int_equal(vq_chain_readable_len(c), 5);
    assert_int_equal(vq_chain_writable_len(c), 64);
    assert_int_equal(c->seg[0].gpa, DATA);
    assert_false(c->seg[0].device_writes);
    assert_int_equal(c->seg[1].gpa, DATA + 0x100);
    assert_int_equal(c->seg[1].len, 64);
    assert_true(c->seg[1].device_writes);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);

    char buf[8] = {0};
    assert_int_equal(vq_chain_read(&f->vq, c, 0, buf, 5), 0);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(vq_chain_read(&f->vq, c, 1, buf, 5), -1);
    assert_int_equal(vq_chain_write(&f->vq, c, 0, "world", 5), 0);
    assert_memory_equal(f->ram + DATA + 0x100, "world", 5);
    assert_int_equal(vq_chain_write(&f->vq, c, 60, "world", 5), -1);
    assert_memory_equal(f->ram + DATA + 0x100 + 60, "\0\0\0\0", 4); /* nothing written */

    assert_ptr_equal(vq_segment_ptr(&f->vq, &c->seg[1]), f->ram + DATA + 0x100);

    vq_push(&f->vq, 3, 5);
    assert_int_equal(get16(f, USED + 2), 1);
    uint32_t id, len;
    used_elem(f, 0, &id, &len);
    assert_int_equal(id, 3);
    assert_int_equal(len, 5);
    assert_true(vq_should_notify(&f->vq));
    assert_false(vq_should_notify(&f->vq)); /* nothing new */
    assert_int_equal(f->vq.inflight, 0);
}

static void test_multiple_chains(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    /* Chain A: 0 (readable); chain B: 1 -> 2 (writable); chain C: 5 -> 4 -> 6. */
    desc(f, 0, DATA, 16, 0, 0);
    desc(f, 1, DATA + 0x100, 16, VIRTQ_DESC_F_NEXT, 2);
    desc(f, 2, DATA + 0x200, 32, VIRTQ_DESC_F_WRITE, 0);
    desc(f, 5, DATA + 0x300, 1, VIRTQ_DESC_F_NEXT, 4);
    desc(f, 4, DATA + 0x400, 2, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 6);
    desc(f, 6, DATA + 0x500, 3, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0);
    publish(f, 1);
    publish(f, 5);

    uint16_t heads[3];
    unsigned segs[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
        heads[i] = f->chain.head;
        segs[i] = f->chain.nr_segs;
    }
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);
    assert_int_equal(heads[0], 0);
    assert_int_equal(heads[1], 1);
    assert_int_equal(heads[2], 5);
    assert_int_equal(segs[0], 1);
    assert_int_equal(segs[1], 2);
    assert_int_equal(segs[2], 3);
    assert_int_equal(f->vq.inflight, 3);

    /* Completed out of order. */
    vq_push(&f->vq, 5, 5);
    vq_push(&f->vq, 0, 0);
    vq_push(&f->vq, 1, 32);
    assert_int_equal(get16(f, USED + 2), 3);
    uint32_t id, len;
    used_elem(f, 0, &id, &len);
    assert_int_equal(id, 5);
    assert_int_equal(len, 5);
    used_elem(f, 1, &id, &len);
    assert_int_equal(id, 0);
    assert_int_equal(len, 0);
    used_elem(f, 2, &id, &len);
    assert_int_equal(id, 1);
    assert_int_equal(len, 32);
    assert_int_equal(f->vq.inflight, 0);

    /* A push of a head beyond the queue is ignored. */
    vq_push(&f->vq, 8, 1);
    assert_int_equal(get16(f, USED + 2), 3);
}

/* 16-bit avail and used indices wrap around: run more than 65536 requests through a 4-entry
 * queue, in batches of 3 so the slots do not line up with the wrap. */
static void test_wraparound(void **state)
{
    struct fx *f = *state;
    start(f, 4, 0);
    for (unsigned i = 0; i < 4; i++)
        desc(f, i, DATA + 0x100 * i, 8, VIRTQ_DESC_F_WRITE, 0);
    unsigned done = 0;
    while (done < 70000) {
        for (unsigned k = 0; k < 3; k++)
            publish(f, (uint16_t)((done + k) % 4));
        for (unsigned k = 0; k < 3; k++) {
            assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
            assert_int_equal(f->chain.head, (done + k) % 4);
            vq_push(&f->vq, f->chain.head, (uint32_t)(done + k));
        }
        assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);
        for (unsigned k = 0; k < 3; k++) {
            uint32_t id, len;
            used_elem(f, (uint16_t)(done + k), &id, &len);
            assert_int_equal(id, (done + k) % 4);
            assert_int_equal(len, done + k);
        }
        done += 3;
        assert_int_equal(get16(f, USED + 2), (uint16_t)done);
    }
    assert_int_equal(f->vq.last_avail_idx, (uint16_t)done);
    assert_true(done > 65536);
}

static void test_indirect(void **state)
{
    struct fx *f = *state;
    start(f, 16, FEAT_INDIRECT);
    /* Table of 4 entries chained 0 -> 2 -> 1; entry 3 unused. The WRITE flag of the
     * descriptor pointing to the table is ignored. */
    desc_at(f, TABLES, 0, DATA, 4, VIRTQ_DESC_F_NEXT, 2);
    desc_at(f, TABLES, 2, DATA + 0x10, 4, VIRTQ_DESC_F_NEXT, 1);
    desc_at(f, TABLES, 1, DATA + 0x20, 100, VIRTQ_DESC_F_WRITE, 0);
    desc_at(f, TABLES, 3, 0xdead0000, 4, VIRTQ_DESC_F_INDIRECT, 99);
    desc(f, 9, TABLES, 64, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    publish(f, 9);
    memcpy(f->ram + DATA, "abcd", 4);
    memcpy(f->ram + DATA + 0x10, "efgh", 4);

    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    struct vq_chain *c = &f->chain;
    assert_int_equal(c->head, 9);
    assert_int_equal(c->nr_segs, 3);
    assert_int_equal(c->nr_readable, 2);
    assert_int_equal(c->readable_len, 8);
    assert_int_equal(c->writable_len, 100);
    char buf[8];
    assert_int_equal(vq_chain_read(&f->vq, c, 0, buf, 8), 0);
    assert_memory_equal(buf, "abcdefgh", 8);
    vq_push(&f->vq, c->head, 0);

    /* Direct descriptors followed by one indirect descriptor. */
    desc_at(f, TABLES + 0x100, 0, DATA + 0x40, 8, VIRTQ_DESC_F_WRITE, 0);
    desc(f, 1, DATA, 2, VIRTQ_DESC_F_NEXT, 2);
    desc(f, 2, TABLES + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 1);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    assert_int_equal(c->head, 1);
    assert_int_equal(c->nr_segs, 2);
    assert_int_equal(c->readable_len, 2);
    assert_int_equal(c->writable_len, 8);
    assert_int_equal(c->seg[1].gpa, DATA + 0x40);

    /* The full-size table: 1024 entries. */
    for (unsigned i = 0; i < VQ_CHAIN_MAX_SEGS; i++)
        desc_at(f, TABLES, i, DATA + i, 1, i + 1 < VQ_CHAIN_MAX_SEGS ? VIRTQ_DESC_F_NEXT : 0,
                (uint16_t)(i + 1));
    desc(f, 4, TABLES, 16 * VQ_CHAIN_MAX_SEGS, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 4);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    assert_int_equal(c->nr_segs, VQ_CHAIN_MAX_SEGS);
    assert_int_equal(c->readable_len, VQ_CHAIN_MAX_SEGS);
}

static void test_chain_read_write_segments(void **state)
{
    struct fx *f = *state;
    start(f, 16, 0);
    /* Readable 3 + 5 + 7 bytes, then writable 4 + 0 + 4 bytes. */
    desc(f, 0, DATA, 3, VIRTQ_DESC_F_NEXT, 1);
    desc(f, 1, DATA + 0x100, 5, VIRTQ_DESC_F_NEXT, 2);
    desc(f, 2, DATA + 0x200, 7, VIRTQ_DESC_F_NEXT, 3);
    desc(f, 3, DATA + 0x300, 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 4);
    desc(f, 4, 0xffffffffffff0000ull, 0, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 5);
    desc(f, 5, DATA + 0x400, 4, VIRTQ_DESC_F_WRITE, 0);
    memcpy(f->ram + DATA, "012", 3);
    memcpy(f->ram + DATA + 0x100, "34567", 5);
    memcpy(f->ram + DATA + 0x200, "89abcde", 7);
    publish(f, 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    struct vq_chain *c = &f->chain;
    assert_int_equal(c->nr_segs, 6);
    assert_int_equal(c->nr_readable, 3);
    assert_int_equal(c->readable_len, 15);
    assert_int_equal(c->writable_len, 8);
    assert_null(vq_segment_ptr(&f->vq, &c->seg[4])); /* zero-length, not in RAM */

    const char *all = "0123456789abcde";
    char buf[16];
    for (uint32_t off = 0; off <= 15; off++) {
        for (size_t len = 0; off + len <= 15; len++) {
            memset(buf, 'x', sizeof(buf));
            assert_int_equal(vq_chain_read(&f->vq, c, off, buf, len), 0);
            assert_memory_equal(buf, all + off, len);
        }
        assert_int_equal(vq_chain_read(&f->vq, c, off, buf, 16 - off), -1);
    }
    assert_int_equal(vq_chain_read(&f->vq, c, UINT32_MAX, buf, 2), -1);
    assert_int_equal(vq_chain_read(&f->vq, c, 1, buf, SIZE_MAX), -1);

    assert_int_equal(vq_chain_write(&f->vq, c, 2, "WXYZ", 4), 0);
    assert_memory_equal(f->ram + DATA + 0x300, "\0\0WX", 4);
    assert_memory_equal(f->ram + DATA + 0x400, "YZ\0\0", 4);
    assert_int_equal(vq_chain_write(&f->vq, c, 0, "abcdefgh", 8), 0);
    assert_memory_equal(f->ram + DATA + 0x300, "abcd", 4);
    assert_memory_equal(f->ram + DATA + 0x400, "efgh", 4);
    assert_int_equal(vq_chain_write(&f->vq, c, 5, "abcd", 4), -1);
    assert_int_equal(vq_chain_write(&f->vq, c, UINT32_MAX, "ab", 2), -1);
    /* Readable buffers are never written. */
    assert_memory_equal(f->ram + DATA, "012", 3);
}

/* ---- notifications ---- */

static void test_notify_flags(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    desc(f, 0, DATA, 8, VIRTQ_DESC_F_WRITE, 0);
    desc(f, 1, DATA + 8, 8, VIRTQ_DESC_F_WRITE, 0);

    assert_false(vq_should_notify(&f->vq)); /* nothing pushed yet */
    publish(f, 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 0, 8);
    assert_true(vq_should_notify(&f->vq));

    put16(f, AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    publish(f, 1);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 1, 8);
    assert_false(vq_should_notify(&f->vq));
    put16(f, AVAIL, 0);
    assert_false(vq_should_notify(&f->vq)); /* already decided for that push */

    /* Device side: NO_NOTIFY in used->flags. */
    vq_disable_notification(&f->vq);
    assert_int_equal(get16(f, USED), VIRTQ_USED_F_NO_NOTIFY);
    assert_false(vq_enable_notification(&f->vq));
    assert_int_equal(get16(f, USED), 0);
    vq_disable_notification(&f->vq);
    publish(f, 0);
    assert_true(vq_enable_notification(&f->vq)); /* arrived while disabled: pop it */
    assert_int_equal(get16(f, USED), 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    /* Without EVENT_IDX, avail_event is never written. */
    assert_int_equal(get16(f, USED + 4 + 8 * 8), 0);
}

static void test_notify_event_idx(void **state)
{
    struct fx *f = *state;
    start(f, 8, FEAT_EVENT_IDX);
    uint64_t used_event = AVAIL + used_event_off(f);
    uint64_t avail_event = USED + 4 + 8 * 8;
    for (unsigned i = 0; i < 8; i++)
        desc(f, i, DATA + 8 * i, 8, VIRTQ_DESC_F_WRITE, 0);

    /* used_event = 0: interrupt when used->idx passes 0. */
    put16(f, used_event, 0);
    publish(f, 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 0, 1);
    assert_true(vq_should_notify(&f->vq)); /* 0 -> 1 crosses 0 */

    publish(f, 1);
    publish(f, 2);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 1, 1);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 2, 1);
    assert_false(vq_should_notify(&f->vq)); /* 1 -> 3 does not cross 0 */

    put16(f, used_event, 4); /* the driver wants an interrupt after the 5th */
    publish(f, 3);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 3, 1);
    assert_false(vq_should_notify(&f->vq)); /* 3 -> 4 */
    publish(f, 4);
    publish(f, 5);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 4, 1);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 5, 1);
    assert_true(vq_should_notify(&f->vq)); /* 4 -> 6 crosses 4 */
    /* NO_INTERRUPT is ignored with EVENT_IDX. */
    put16(f, AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    put16(f, used_event, 6);
    publish(f, 6);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    vq_push(&f->vq, 6, 1);
    assert_true(vq_should_notify(&f->vq));

    /* Device side: an empty pop arms avail_event at the next index. */
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);
    assert_int_equal(get16(f, avail_event), 7);
    /* Disabled: avail_event stays where it was. */
    vq_disable_notification(&f->vq);
    assert_int_equal(get16(f, USED), 0); /* no NO_NOTIFY flag with EVENT_IDX */
    publish(f, 7);
    publish(f, 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);
    assert_int_equal(get16(f, avail_event), 7);
    publish(f, 1);
    assert_true(vq_enable_notification(&f->vq));
    assert_int_equal(get16(f, avail_event), 9);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);
    assert_int_equal(get16(f, avail_event), 10);
    assert_false(vq_enable_notification(&f->vq));
}

/* ---- illegal driver behaviour ---- */

static void test_err_avail_jump(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    put16(f, AVAIL + 2, 9);
    expect_error(f, "virtqueue 0: available index moved from 0 to 9, more than the queue size 8");
    /* A reset and re-enable recover. */
    vq_reset(&f->vq);
    start(f, 8, 0);
    put16(f, AVAIL + 2, 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 0);
    /* Exactly the queue size is legal; going backwards is a jump of 65535. */
    desc(f, 0, DATA, 1, 0, 0);
    for (unsigned i = 0; i < 8; i++)
        publish(f, 0);
    for (unsigned i = 0; i < 8; i++) {
        assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
        vq_push(&f->vq, 0, 0);
    }
    put16(f, AVAIL + 2, 7);
    expect_error(f, "available index moved from 8 to 7");
}

static void test_err_head(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    publish(f, 8);
    expect_error(f, "available ring entry 0: head 8 is not below the queue size 8");
}

static void test_err_next(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    desc(f, 2, DATA, 1, VIRTQ_DESC_F_NEXT, 200);
    publish(f, 2);
    expect_error(f, "descriptor 2 (head 2): next 200 is not below the queue size 8");
}

static void test_err_loop(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    desc(f, 0, DATA, 1, VIRTQ_DESC_F_NEXT, 1);
    desc(f, 1, DATA, 1, VIRTQ_DESC_F_NEXT, 0);
    publish(f, 0);
    expect_error(f, "chain at head 0 is longer than the queue size 8");
}

static void test_err_self_loop_full_queue(void **state)
{
    struct fx *f = *state;
    /* The biggest queue, a descriptor pointing to itself: bounded by the chain limit. */
    start(f, 2048, 0);
    desc(f, 5, DATA, 1, VIRTQ_DESC_F_NEXT, 5);
    publish(f, 5);
    expect_error(f, "chain has more than 1024 buffers");
}

static void test_err_readable_after_writable(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    desc(f, 0, DATA, 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    desc(f, 1, DATA, 4, 0, 0);
    publish(f, 0);
    expect_error(f, "descriptor 1 (head 0): readable buffer after a writable one");
}

static void test_err_readable_after_writable_indirect(void **state)
{
    struct fx *f = *state;
    start(f, 8, FEAT_INDIRECT);
    desc(f, 0, DATA, 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
    desc(f, 1, TABLES, 16, VIRTQ_DESC_F_INDIRECT, 0);
    desc_at(f, TABLES, 0, DATA, 4, 0, 0);
    publish(f, 0);
    expect_error(f, "indirect descriptor 0 (head 0): readable buffer after a writable one");
}

static void test_err_indirect_next_outside(void **state)
{
    struct fx *f = *state;
    start(f, 8, FEAT_INDIRECT);
    desc(f, 3, TABLES, 32, VIRTQ_DESC_F_INDIRECT, 0);
    desc_at(f, TABLES, 0, DATA, 4, VIRTQ_DESC_F_NEXT, 1);
    desc_at(f, TABLES, 1, DATA, 4, VIRTQ_DESC_F_NEXT, 2);
    desc_at(f, TABLES, 2, DATA, 4, 0, 0); /* exists in memory, not in the table */
    publish(f, 3);
    expect_error(f, "indirect descriptor 1 (head 3): next 2 is outside the indirect table of "
                    "2 entries");
}

static void test_err_indirect_loop(void **state)
{
    struct fx *f = *state;
    start(f, 8, FEAT_INDIRECT);
    desc(f, 3, TABLES, 48, VIRTQ_DESC_F_INDIRECT, 0);
    desc_at(f, TABLES, 0, DATA, 4, VIRTQ_DESC_F_NEXT, 1);
    desc_at(f, TABLES, 1, DATA, 4, VIRTQ_DESC_F_NEXT, 2);
    desc_at(f, TABLES, 2, DATA, 4, VIRTQ_DESC_F_NEXT, 1);
    publish(f, 3);
    expect_error(f, "descriptor 3 (head 3): chain in indirect table is longer than its 3 entries");
}

static void test_err_nested_indirect(void **state)
{
    struct fx *f = *state;
    start(f, 8, FEAT_INDIRECT);
    desc(f, 3, TABLES, 32, VIRTQ_DESC_F_INDIRECT, 0);
    desc_at(f, TABLES, 0, DATA, 4, VIRTQ_DESC_F_NEXT, 1);
    desc_at(f, TABLES, 1, TABLES + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 3);
    expect_error(f, "indirect descriptor 1 (head 3): INDIRECT inside an indirect table");
}

static void test_err_indirect_len(void **state)
{
    struct fx *f = *state;
    start(f, 8, FEAT_INDIRECT);
    desc(f, 0, TABLES, 24, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 0);
    expect_error(f, "descriptor 0 (head 0): indirect table length 24 is not a non-zero multiple "
                    "of 16");
    vq_reset(&f->vq);
    start(f, 8, FEAT_INDIRECT);
    desc(f, 0, TABLES, 0, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 0);
    expect_error(f, "indirect table length 0 is not a non-zero multiple of 16");
    vq_reset(&f->vq);
    start(f, 8, FEAT_INDIRECT);
    desc(f, 0, TABLES, 16 * (VQ_CHAIN_MAX_SEGS + 1), VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 0);
    expect_error(f, "indirect table of 1025 entries exceeds the limit of 1024");
    vq_reset(&f->vq);
    start(f, 8, FEAT_INDIRECT);
    desc(f, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 0);
    expect_error(f, "indirect table at 0xffff0 (32 bytes) is not inside guest RAM");
}

static void test_err_indirect_flags(void **state)
{
    struct fx *f = *state;
    start(f, 8, FEAT_INDIRECT);
    desc_at(f, TABLES, 0, DATA, 4, 0, 0);
    desc(f, 0, TABLES, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
    desc(f, 1, DATA, 4, 0, 0);
    publish(f, 0);
    expect_error(f, "descriptor 0 (head 0): INDIRECT together with NEXT");

    vq_reset(&f->vq);
    start(f, 8, 0); /* not negotiated */
    desc(f, 0, TABLES, 16, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 0);
    expect_error(f, "descriptor 0 (head 0): INDIRECT without VIRTIO_F_RING_INDIRECT_DESC");
}

static void test_err_outside_ram(void **state)
{
    struct fx *f = *state;
    start(f, 8, 0);
    desc(f, 0, RAM_SIZE - 4, 8, 0, 0);
    publish(f, 0);
    expect_error(f, "descriptor 0 (head 0): buffer at 0xffffc (8 bytes) is not inside guest RAM");
    vq_reset(&f->vq);
    start(f, 8, 0);
    desc(f, 0, 0xfffffffffffffff0ull, 0x20, VIRTQ_DESC_F_WRITE, 0); /* addr + len wraps */
    publish(f, 0);
    expect_error(f, "buffer at 0xfffffffffffffff0 (32 bytes) is not inside guest RAM");
    vq_reset(&f->vq);
    start(f, 8, FEAT_INDIRECT);
    desc(f, 0, TABLES, 16, VIRTQ_DESC_F_INDIRECT, 0);
    desc_at(f, TABLES, 0, RAM_SIZE, 1, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0);
    expect_error(f, "indirect descriptor 0 (head 0): buffer at 0x100000 (1 bytes)");
}

static void test_err_inflight(void **state)
{
    struct fx *f = *state;
    start(f, 4, 0);
    desc(f, 0, DATA, 1, 0, 0);
    for (unsigned i = 0; i < 4; i++)
        publish(f, 0);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    publish(f, 0); /* a fifth chain while the device holds all four */
    expect_error(f, "more than 4 chains in flight");
}

/* Lengths summing past 32 bits: 1024 indirect entries of 4 MiB each over an 8 MiB RAM. */
static void test_err_length_overflow(void **state)
{
    (void)state;
    size_t size = 8u << 20;
    uint8_t *ram = aligned_alloc(4096, size);
    assert_non_null(ram);
    memset(ram, 0, 0x20000);
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->ram = ram;
    guest_mem_init_buffer(&f->mem, ram, size);
    start(f, 8, FEAT_INDIRECT);
    for (unsigned i = 0; i < VQ_CHAIN_MAX_SEGS; i++)
        desc_at(f, TABLES, i, 0x400000, 0x400000,
                VIRTQ_DESC_F_WRITE | (i + 1 < VQ_CHAIN_MAX_SEGS ? VIRTQ_DESC_F_NEXT : 0),
                (uint16_t)(i + 1));
    desc(f, 0, TABLES, 16 * VQ_CHAIN_MAX_SEGS, VIRTQ_DESC_F_INDIRECT, 0);
    publish(f, 0);
    expect_error(f, "indirect descriptor 1023 (head 0): chain length exceeds 4 GiB");

    /* One byte less in the last entry: exactly 4 GiB - 1 is fine. */
    vq_reset(&f->vq);
    start(f, 8, FEAT_INDIRECT);
    desc_at(f, TABLES, VQ_CHAIN_MAX_SEGS - 1, 0x400000, 0x3fffff, VIRTQ_DESC_F_WRITE, 0);
    publish(f, 0);
    assert_int_equal(vq_pop(&f->vq, &f->chain, &f->err), 1);
    assert_int_equal(f->chain.writable_len, UINT32_MAX);
    free(ram);
    free(f);
}

/* ---- a driver on another thread ---- */

#define STRESS_SIZE   32
#define STRESS_SLOTS  (STRESS_SIZE / 2) /* each request: readable desc 2k, writable 2k+1 */
#define STRESS_ROUNDS 200000u

struct stress {
    struct fx *f;
    int done;     /* set by the driver when all requests completed */
    int failures; /* device-side surprises */
};

static uint16_t shared_load16(struct fx *f, uint64_t gpa)
{
    return __atomic_load_n((uint16_t *)(f->ram + gpa), __ATOMIC_ACQUIRE); /* x86: LE host */
}

static void shared_store16(struct fx *f, uint64_t gpa, uint16_t v)
{
    __atomic_store_n((uint16_t *)(f->ram + gpa), v, __ATOMIC_RELEASE);
}

static void *stress_device(void *opaque)
{
    struct stress *st = opaque;
    struct fx *f = st->f;
    static struct vq_chain c;
    while (!__atomic_load_n(&st->done, __ATOMIC_ACQUIRE)) {
        struct error err = {0};
        int r = vq_pop(&f->vq, &c, &err);
        if (r < 0) {
            st->failures++;
            break;
        }
        if (r == 0) {
            sched_yield();
            continue;
        }
        uint32_t seq;
        if (c.nr_segs != 2 || vq_chain_read(&f->vq, &c, 0, &seq, 4) < 0) {
            st->failures++;
            break;
        }
        seq = ~seq;
        if (vq_chain_write(&f->vq, &c, 0, &seq, 4) < 0) {
            st->failures++;
            break;
        }
        vq_push(&f->vq, c.head, 4);
        (void)vq_should_notify(&f->vq);
    }
    return NULL;
}

/* The test thread is the driver: it recycles STRESS_SLOTS two-descriptor requests through the
 * rings with acquire/release accesses, while the device pops and pushes on its own thread;
 * every reply must match its request and come back in order. */
static void stress(struct fx *f, uint64_t features)
{
    start(f, STRESS_SIZE, features);
    for (unsigned k = 0; k < STRESS_SLOTS; k++) {
        desc(f, 2 * k, DATA + 16 * k, 4, VIRTQ_DESC_F_NEXT, (uint16_t)(2 * k + 1));
        desc(f, 2 * k + 1, DATA + 16 * k + 8, 4, VIRTQ_DESC_F_WRITE, 0);
    }
    struct stress st = {f, 0, 0};
    pthread_t dev;
    assert_int_equal(pthread_create(&dev, NULL, stress_device, &st), 0);
    uint32_t next_seq = 0, completed = 0;
    uint16_t avail = 0, last_used = 0;
    unsigned free_slots[STRESS_SLOTS], nfree = STRESS_SLOTS;
    for (unsigned k = 0; k < STRESS_SLOTS; k++)
        free_slots[k] = k;
    while (completed < STRESS_ROUNDS) {
        while (nfree && next_seq < STRESS_ROUNDS) {
            unsigned k = free_slots[--nfree];
            memcpy(f->ram + DATA + 16 * k, &next_seq, 4);
            put16(f, AVAIL + 4 + 2 * (avail % STRESS_SIZE), (uint16_t)(2 * k));
            avail++;
            shared_store16(f, AVAIL + 2, avail); /* release: ring entry and buffer first */
            next_seq++;
        }
        uint16_t used = shared_load16(f, USED + 2);
        if (used == last_used) {
            sched_yield();
            continue;
        }
        for (; last_used != used; last_used++) {
            uint32_t id, len, reply, req;
            used_elem(f, last_used, &id, &len);
            assert_int_equal(len, 4);
            assert_true(id % 2 == 0 && id / 2 < STRESS_SLOTS);
            unsigned k = id / 2;
            memcpy(&req, f->ram + DATA + 16 * k, 4);
            memcpy(&reply, f->ram + DATA + 16 * k + 8, 4);
            assert_int_equal(req, completed); /* in order */
            assert_int_equal(reply, ~req);
            completed++;
            free_slots[nfree++] = k;
        }
    }
    __atomic_store_n(&st.done, 1, __ATOMIC_RELEASE);
    pthread_join(dev, NULL);
    assert_int_equal(st.failures, 0);
    assert_int_equal(f->vq.inflight, 0);
}

static void test_stress_threads(void **state)
{
    stress(*state, 0);
}

static void test_stress_threads_event_idx(void **state)
{
    stress(*state, FEAT_EVENT_IDX | FEAT_INDIRECT);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_config),
        T(test_simple_chain),
        T(test_multiple_chains),
        T(test_wraparound),
        T(test_indirect),
        T(test_chain_read_write_segments),
        T(test_notify_flags),
        T(test_notify_event_idx),
        T(test_err_avail_jump),
        T(test_err_head),
        T(test_err_next),
        T(test_err_loop),
        T(test_err_self_loop_full_queue),
        T(test_err_readable_after_writable),
        T(test_err_readable_after_writable_indirect),
        T(test_err_indirect_next_outside),
        T(test_err_indirect_loop),
        T(test_err_nested_indirect),
        T(test_err_indirect_len),
        T(test_err_indirect_flags),
        T(test_err_outside_ram),
        T(test_err_inflight),
        cmocka_unit_test(test_err_length_overflow),
        T(test_stress_threads),
        T(test_stress_threads_event_idx),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
