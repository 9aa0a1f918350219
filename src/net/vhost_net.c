/* vhost-net: feature mapping, memory table, ring checks and the kernel's ioctl sequence. */
#include "net/vhost_net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

uint64_t vhost_net_missing_features(uint64_t vhost_features)
{
    return VHOST_NET_KERNEL_FEATURES & ~vhost_features;
}

int vhost_net_ack_features(uint64_t guest_features, uint64_t vhost_features, bool tap_vnet_hdr,
                           uint64_t *out, struct error *err)
{
    uint64_t f = guest_features & VHOST_NET_KERNEL_FEATURES;
    if (!(f & (1ULL << VHOST_NET_BIT_VERSION_1)))
        return error_setf(err, "vhost-net needs VIRTIO_F_VERSION_1");
    if (!tap_vnet_hdr)
        f |= 1ULL << VHOST_NET_F_VIRTIO_NET_HDR;
    if (f & ~vhost_features)
        return error_setf(err, "vhost-net lacks features 0x%llx",
                          (unsigned long long)(f & ~vhost_features));
    *out = f;
    return 0;
}

struct vhost_memory *vhost_net_mem_table(const struct guest_mem *mem, struct error *err)
{
    if (mem->nr == 0 || mem->nr > GUEST_MEM_MAX_REGIONS) {
        error_setf(err, "vhost-net: %u guest RAM regions", mem->nr);
        return NULL;
    }
    struct vhost_memory *m = calloc(1, sizeof(*m) + mem->nr * sizeof(struct vhost_memory_region));
    if (!m) {
        error_setf(err, "out of memory");
        return NULL;
    }
    for (unsigned i = 0; i < mem->nr; i++) {
        const struct guest_region *g = &mem->regions[i];
        if (!g->size || !g->hva || g->gpa + g->size < g->gpa) {
            free(m);
            error_setf(err, "vhost-net: guest RAM region %u is empty or wraps", i);
            return NULL;
        }
        m->regions[i] = (struct vhost_memory_region){
            .guest_phys_addr = g->gpa,
            .memory_size = g->size,
            .userspace_addr = (uint64_t)(uintptr_t)g->hva,
        };
    }
    m->nregions = mem->nr;
    return m;
}

/* Host address of [gpa, gpa+len) if it lies in one RAM region. */
static int ring_hva(const struct guest_mem *mem, const char *what, unsigned index, uint64_t gpa,
                    uint64_t len, __u64 *out, struct error *err)
{
    void *p = guest_mem_ptr(mem, gpa, len);
    if (!p)
        return error_setf(err,
                          "vhost-net: vring %u's %s ring (0x%llx, %llu bytes) is not inside one "
                          "guest RAM region",
                          index, what, (unsigned long long)gpa, (unsigned long long)len);
    *out = (uint64_t)(uintptr_t)p;
    return 0;
}

int vhost_net_ring_addr(const struct guest_mem *mem, unsigned index, const struct vhost_net_ring *r,
                        struct vhost_vring_addr *out, struct error *err)
{
    unsigned n = r->size;
    if (n == 0 || n > VHOST_NET_MAX_QUEUE_SIZE || (n & (n - 1)))
        return error_setf(err, "vhost-net: vring %u has size %u", index, n);
    /* The split ring's alignments (spec 2.7): descriptors 16, avail 2, used 4. */
    if ((r->desc_gpa & 15) || (r->avail_gpa & 1) || (r->used_gpa & 3))
        return error_setf(err, "vhost-net: vring %u's rings are misaligned", index);
    memset(out, 0, sizeof(*out));
    out->index = index;
    /* Event index fields included: the kernel reads used_event and writes avail_event. */
    if (ring_hva(mem, "descriptor", index, r->desc_gpa, 16ULL * n, &out->desc_user_addr, err) < 0 ||
        ring_hva(mem, "available", index, r->avail_gpa, 6ULL + 2ULL * n, &out->avail_user_addr,
                 err) < 0 ||
        ring_hva(mem, "used", index, r->used_gpa, 6ULL + 8ULL * n, &out->used_user_addr, err) < 0)
        return -1;
    return 0;
}

int vhost_net_probe(int fd, uint64_t *features, struct error *err)
{
    if (ioctl(fd, VHOST_GET_FEATURES, features) < 0)
        return error_setf_errno(err, errno, "not a vhost-net descriptor (VHOST_GET_FEATURES)");
    return 0;
}

static int vioctl(int fd, unsigned long req, void *arg, const char *what, struct error *err)
{
    if (ioctl(fd, req, arg) < 0)
        return error_setf_errno(err, errno, "vhost-net: %s", what);
    return 0;
}

int vhost_net_start(int vfd, int tapfd, const struct guest_mem *mem, uint64_t features,
                    const struct vhost_net_ring r[2], struct error *err)
{
    struct vhost_vring_addr addr[2];
    /* Everything the guest controls is checked before the first ioctl. */
    for (unsigned i = 0; i < 2; i++)
        if (vhost_net_ring_addr(mem, i, &r[i], &addr[i], err) < 0)
            return -1;
    struct vhost_memory *m = vhost_net_mem_table(mem, err);
    if (!m)
        return -1;
    int ret = vioctl(vfd, VHOST_SET_FEATURES, &features, "VHOST_SET_FEATURES", err);
    if (ret == 0)
        ret = vioctl(vfd, VHOST_SET_MEM_TABLE, m, "VHOST_SET_MEM_TABLE", err);
    free(m);
    for (unsigned i = 0; i < 2 && ret == 0; i++) {
        struct vhost_vring_state num = {.index = i, .num = r[i].size};
        struct vhost_vring_state base = {.index = i, .num = r[i].last_avail};
        struct vhost_vring_file kick = {.index = i, .fd = r[i].kick_fd};
        struct vhost_vring_file call = {.index = i, .fd = r[i].call_fd};
        if (vioctl(vfd, VHOST_SET_VRING_NUM, &num, "VHOST_SET_VRING_NUM", err) < 0 ||
            vioctl(vfd, VHOST_SET_VRING_BASE, &base, "VHOST_SET_VRING_BASE", err) < 0 ||
            vioctl(vfd, VHOST_SET_VRING_ADDR, &addr[i], "VHOST_SET_VRING_ADDR", err) < 0 ||
            vioctl(vfd, VHOST_SET_VRING_KICK, &kick, "VHOST_SET_VRING_KICK", err) < 0 ||
            vioctl(vfd, VHOST_SET_VRING_CALL, &call, "VHOST_SET_VRING_CALL", err) < 0)
            ret = -1;
    }
    for (unsigned i = 0; i < 2 && ret == 0; i++) {
        struct vhost_vring_file be = {.index = i, .fd = tapfd};
        ret = vioctl(vfd, VHOST_NET_SET_BACKEND, &be, "VHOST_NET_SET_BACKEND", err);
    }
    if (ret < 0) {
        uint16_t last[2] = {r[0].last_avail, r[1].last_avail};
        vhost_net_stop(vfd, last);
    }
    return ret;
}

int vhost_net_set_call(int vfd, unsigned index, int fd)
{
    struct vhost_vring_file call = {.index = index, .fd = fd};
    return ioctl(vfd, VHOST_SET_VRING_CALL, &call) < 0 ? -1 : 0;
}

void vhost_net_stop(int vfd, uint16_t last_avail[2])
{
    /* Errors are ignored: each step is undone as far as the kernel got. */
    for (unsigned i = 0; i < 2; i++) {
        struct vhost_vring_file be = {.index = i, .fd = -1};
        ioctl(vfd, VHOST_NET_SET_BACKEND, &be);
    }
    for (unsigned i = 0; i < 2; i++) {
        struct vhost_vring_state st = {.index = i};
        if (ioctl(vfd, VHOST_GET_VRING_BASE, &st) == 0)
            last_avail[i] = (uint16_t)st.num;
        struct vhost_vring_file f = {.index = i, .fd = VHOST_FILE_UNBIND};
        ioctl(vfd, VHOST_SET_VRING_KICK, &f);
        ioctl(vfd, VHOST_SET_VRING_CALL, &f);
    }
}
