/* -netdev tap and the packet fd datapath it shares with netdev_create_fd(). */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/netdev_int.h"
#include "net/vhost_net.h"

#define VNET_HDR_LEN 12 /* struct virtio_net_hdr_v1: modern virtio always has num_buffers */
#define RX_BATCH     64 /* frames read per wake-up, so TX kicks are not starved */

static uint32_t fd_events(struct nd_fd_queue *q)
{
    return (q->nd->rx_on[q->index] ? EPOLLIN : 0) | (q->tx_blocked ? EPOLLOUT : 0);
}

/* A send found the queue full: the frame stays with the frontend until the fd is writable. */
static void fd_tx_unblock(struct nd_fd_queue *q)
{
    struct netdev *nd = q->nd;
    struct pollfd p = {.fd = q->fd, .events = POLLOUT};
    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLOUT | POLLERR | POLLHUP)))
        return;
    q->tx_blocked = false;
    netdev_modify_fd(nd, q->fd, fd_events(q));
    if (nd->fe && nd->fe->writable)
        nd->fe->writable(nd->fe_opaque, q->index);
}

static void fd_rx(void *opaque)
{
    struct nd_fd_queue *q = opaque;
    struct netdev *nd = q->nd;
    struct nd_fd_backend *b = nd->be;
    if (q->tx_blocked)
        fd_tx_unblock(q);
    for (int i = 0; i < RX_BATCH && nd->rx_on[q->index]; i++) {
        ssize_t n = read(q->fd, b->buf, NETDEV_MAX_FRAME);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR && !b->read_error_logged) {
                b->read_error_logged = true;
                fprintf(stderr, "kemu: netdev '%s': read: %s\n", nd->id, strerror(errno));
            }
            return;
        }
        if (n == 0) {
            /* The peer of a socket went away: stop watching, or we would spin. */
            netdev_modify_fd(nd, q->fd, 0);
            return;
        }
        if ((size_t)n <= nd->vnet_hdr_len)
            continue; /* a header alone is no frame */
        netdev_deliver_queue(nd, q->index, b->buf, (size_t)n);
    }
}

static int fd_send_queue(struct netdev *nd, unsigned queue, const struct iovec *iov, int iovcnt)
{
    struct nd_fd_backend *b = nd->be;
    struct nd_fd_queue *q = &b->q[queue];
    ssize_t n;
    do {
        n = writev(q->fd, iov, iovcnt);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && q->watched) {
        /* Dropping here would cost the guest's TCP a retransmit timeout: hold the frame. */
        q->tx_blocked = true;
        netdev_modify_fd(nd, q->fd, fd_events(q));
        return NETDEV_BUSY;
    }
    /* Any other error: the frame is lost, as on a wire. */
    return n < 0 ? -1 : 0;
}

static int fd_send(struct netdev *nd, const struct iovec *iov, int iovcnt)
{
    return fd_send_queue(nd, 0, iov, iovcnt);
}

static void fd_set_rx_enabled(struct netdev *nd, unsigned queue, bool on)
{
    (void)on; /* nd->rx_on[] already says it */
    struct nd_fd_queue *q = &((struct nd_fd_backend *)nd->be)->q[queue];
    if (q->watched)
        netdev_modify_fd(nd, q->fd, fd_events(q));
}

/* Watch the queue's fd exactly while it is active and vhost does not own it. */
static int fd_sync_watch(struct netdev *nd, struct nd_fd_queue *q, struct error *err)
{
    bool want = q->active && !q->vhost;
    if (want == q->watched)
        return 0;
    if (want) {
        if (netdev_add_internal_fd(nd, q->fd, fd_events(q), fd_rx, q, err) < 0)
            return -1;
    } else {
        netdev_remove_fd(nd, q->fd);
        q->tx_blocked = false; /* its frames are dropped from now on */
    }
    q->watched = want;
    return 0;
}

/* Queues [0, n) are read and, for a multiqueue tap, attached; the others are detached (the
 * kernel then steers every flow to the attached ones) and out of the epoll set (a socket
 * backend's frames wait in the socket until the queue is used again). A queue vhost owns is
 * attached or detached the same way but never read here. */
static int fd_set_active_queues(struct netdev *nd, unsigned n, struct error *err)
{
    struct nd_fd_backend *b = nd->be;
    for (unsigned i = 0; i < b->nqueues; i++) {
        struct nd_fd_queue *q = &b->q[i];
        bool want = i < n;
        if (want != q->active && b->is_tap && b->nqueues > 1) {
            struct ifreq ifr;
            memset(&ifr, 0, sizeof(ifr));
            ifr.ifr_flags = want ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
            if (ioctl(q->fd, TUNSETQUEUE, &ifr) < 0)
                return error_setf_errno(err, errno, "netdev '%s': TUNSETQUEUE (queue %u)", nd->id,
                                        i);
        }
        q->active = want;
        if (fd_sync_watch(nd, q, err) < 0)
            return -1;
    }
    return 0;
}

static int tap_set_offloads(struct netdev *nd, unsigned offloads, struct error *err)
{
    struct nd_fd_backend *b = nd->be;
    if (!b->is_tap)
        return 0; /* a socket carries whatever header it is given */
    /* The offloads belong to the tap device, whichever queue sets them. */
    unsigned f = 0;
    if (offloads & NETDEV_OFFLOAD_CSUM)
        f |= TUN_F_CSUM;
    if (offloads & NETDEV_OFFLOAD_TSO4)
        f |= TUN_F_TSO4;
    if (offloads & NETDEV_OFFLOAD_TSO6)
        f |= TUN_F_TSO6;
    if (offloads & NETDEV_OFFLOAD_ECN)
        f |= TUN_F_TSO_ECN;
    if (ioctl(b->q[0].fd, TUNSETOFFLOAD, (unsigned long)f) < 0)
        return error_setf_errno(err, errno, "netdev '%s': TUNSETOFFLOAD", nd->id);
    return 0;
}

static int run_script(const char *script, const char *ifname, struct error *err)
{
    pid_t pid = fork();
    if (pid < 0)
        return error_setf_errno(err, errno, "fork for network script %s", script);
    if (pid == 0) {
        /* Only stdio stays open for the script, as QEMU does. */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execl(script, script, ifname, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return error_setf_errno(err, errno, "waitpid for network script %s", script);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFEXITED(st) && WEXITSTATUS(st) == 127 && access(script, X_OK) < 0)
            return error_setf_errno(err, errno, "network script %s cannot be run", script);
        return error_setf(err, "network script %s failed with status %d", script, st);
    }
    return 0;
}

static void fd_destroy(struct netdev *nd)
{
    struct nd_fd_backend *b = nd->be;
    if (!b)
        return;
    if (b->downscript) {
        struct error e = {0};
        if (run_script(b->downscript, b->ifname, &e) < 0)
            fprintf(stderr, "kemu: netdev '%s': %s\n", nd->id, e.msg);
    }
    for (unsigned i = 0; i < b->nqueues; i++) {
        if (b->q[i].fd >= 0)
            close(b->q[i].fd);
        if (b->q[i].vhost_fd >= 0)
            close(b->q[i].vhost_fd);
    }
    free(b->downscript);
    free(b->buf);
    free(b);
    nd->be = NULL;
}

static const struct netdev_backend_ops fd_ops = {
    .send = fd_send,
    .send_queue = fd_send_queue,
    .set_rx_enabled = fd_set_rx_enabled,
    .set_active_queues = fd_set_active_queues,
    .set_offloads = tap_set_offloads,
    .destroy = fd_destroy,
};

int nd_fd_backend_init(struct netdev *nd, const int *fds, unsigned n, bool vnet_hdr, bool is_tap,
                       struct error *err)
{
    struct nd_fd_backend *b = n >= 1 && n <= NETDEV_MAX_QUEUES ? calloc(1, sizeof(*b)) : NULL;
    if (!b) {
        for (unsigned i = 0; i < n; i++)
            close(fds[i]);
        return error_setf(err, n >= 1 && n <= NETDEV_MAX_QUEUES ? "out of memory"
                                                                : "bad number of queues");
    }
    b->is_tap = is_tap;
    b->nqueues = n;
    for (unsigned i = 0; i < n; i++)
        b->q[i] = (struct nd_fd_queue){.nd = nd, .index = i, .fd = fds[i], .vhost_fd = -1};
    nd->be = b;
    nd->ops = &fd_ops;
    nd->nqueues = nd->active_queues = n;
    b->buf = malloc(NETDEV_MAX_FRAME);
    if (!b->buf)
        return error_setf(err, "out of memory");
    if (vnet_hdr) {
        nd->vnet_hdr_len = VNET_HDR_LEN;
        nd->caps =
            NETDEV_OFFLOAD_CSUM | NETDEV_OFFLOAD_TSO4 | NETDEV_OFFLOAD_TSO6 | NETDEV_OFFLOAD_ECN;
    }
    for (unsigned i = 0; i < n; i++) {
        struct nd_fd_queue *q = &b->q[i];
        int fl = fcntl(q->fd, F_GETFL);
        if (fl < 0 || fcntl(q->fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return error_setf_errno(err, errno, "netdev '%s': fd %d", nd->id, q->fd);
        if (netdev_add_internal_fd(nd, q->fd, EPOLLIN, fd_rx, q, err) < 0)
            return -1;
        q->watched = q->active = true;
    }
    return 0;
}

/* Which offloads this tap accepts (old kernels lack some): try them, then clear them again. */
static unsigned probe_offloads(int fd)
{
    unsigned caps = 0;
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)TUN_F_CSUM) == 0)
        caps |= NETDEV_OFFLOAD_CSUM;
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) == 0)
        caps |= NETDEV_OFFLOAD_TSO4 | NETDEV_OFFLOAD_TSO6;
    if (ioctl(fd, TUNSETOFFLOAD,
              (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)) == 0)
        caps |= NETDEV_OFFLOAD_ECN;
    ioctl(fd, TUNSETOFFLOAD, 0ul);
    return caps;
}

/* An inherited tap fd: take its mode as it is; *vnet says whether it has a vnet header. The fd
 * is replaced by a close-on-exec duplicate (the netdev owns it from now on, as with QEMU). */
static int take_tap_fd(int *fd, const struct net_tap_cfg *c, bool *vnet, char *ifname,
                       struct error *err)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (ioctl(*fd, TUNGETIFF, &ifr) < 0)
        return error_setf_errno(err, errno, "fd=%d is not a tap device", *fd);
    if (!(ifr.ifr_flags & IFF_TAP))
        return error_setf(err, "fd=%d is a tun device, not a tap device", *fd);
    bool has = (ifr.ifr_flags & IFF_VNET_HDR) != 0;
    if (c->vnet_hdr_given && c->vnet_hdr && !has)
        return error_setf(err, "vnet_hdr=on but fd=%d was opened without IFF_VNET_HDR", *fd);
    *vnet = has;
    snprintf(ifname, IFNAMSIZ, "%s", ifr.ifr_name);
    int dup = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (dup < 0)
        return error_setf_errno(err, errno, "fd=%d", *fd);
    close(*fd);
    *fd = dup;
    return 0;
}

/* Open queue `i` of the tap: the first names (or creates) the interface, the others attach to
 * the name the kernel gave it. */
static int open_tap_queue(const struct net_tap_cfg *c, unsigned i, bool *vnet, char *ifname,
                          struct error *err)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return error_setf_errno(err, errno, "cannot open /dev/net/tun");
    unsigned features = 0;
    if (ioctl(fd, TUNGETFEATURES, &features) < 0)
        features = 0;
    if (i == 0 && *vnet && !(features & IFF_VNET_HDR)) {
        if (c->vnet_hdr_given) {
            close(fd);
            return error_setf(err, "vnet_hdr=on but the kernel's tap lacks IFF_VNET_HDR");
        }
        *vnet = false;
    }
    if (c->queues > 1 && !(features & IFF_MULTI_QUEUE)) {
        close(fd);
        return error_setf(err, "queues=%u but the kernel's tap lacks IFF_MULTI_QUEUE", c->queues);
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI | (*vnet ? IFF_VNET_HDR : 0) |
                            (c->queues > 1 ? IFF_MULTI_QUEUE : 0));
    const char *name = i > 0 ? ifname : c->ifname ? c->ifname : "tap%d";
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        if (i > 0)
            return error_setf_errno(err, e, "could not open queue %u of tap '%s' (TUNSETIFF)", i,
                                    name);
        return error_setf_errno(err, e, "could not configure tap '%s' (TUNSETIFF)", name);
    }
    snprintf(ifname, IFNAMSIZ, "%s", ifr.ifr_name);
    return fd;
}

/* Per queue: vnet header size and send buffer. */
static int setup_tap_fd(int fd, const struct net_tap_cfg *c, bool vnet, const char *ifname,
                        struct error *err)
{
    if (vnet) {
        int sz = VNET_HDR_LEN;
        if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0)
            return error_setf_errno(err, errno, "tap %s: TUNSETVNETHDRSZ", ifname);
    }
    /* The kernel's default send buffer (wmem_default) fills with a few 64 KiB GSO frames;
     * like QEMU, lift the limit unless sndbuf= sets one. */
    int sndbuf = c->sndbuf ? c->sndbuf : INT_MAX;
    if (ioctl(fd, TUNSETSNDBUF, &sndbuf) < 0 && c->sndbuf_given)
        return error_setf_errno(err, errno, "tap %s: cannot set sndbuf=%d", ifname, c->sndbuf);
    return 0;
}

/* One vhost-net descriptor per queue: the given ones (vhostfd=/vhostfds=, owned once they
 * proved to be vhost-net descriptors) or freshly opened; each checked with VHOST_GET_FEATURES. */
static int open_vhost(struct nd_fd_backend *b, const struct net_tap_cfg *c, struct error *err)
{
    const char *key = c->nvhostfds > 1 ? "vhostfds" : "vhostfd";
    for (unsigned i = 0; i < b->nqueues; i++) {
        int fd = c->nvhostfds ? c->vhostfds[i] : open("/dev/vhost-net", O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return error_setf_errno(err, errno,
                                    "vhost-net requested but /dev/vhost-net cannot be opened");
        uint64_t f;
        if (vhost_net_probe(fd, &f, err) < 0) {
            if (c->nvhostfds)
                error_prefix(err, "%s=%d: ", key, fd);
            else
                close(fd);
            return -1;
        }
        if (!(f & (1ULL << VHOST_NET_BIT_VERSION_1))) {
            if (!c->nvhostfds)
                close(fd);
            return error_setf(err, "vhost-net of this kernel lacks VIRTIO_F_VERSION_1");
        }
        if (c->nvhostfds) {
            /* Ours from now on, close-on-exec like every descriptor kemu owns. */
            int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
            if (dup < 0)
                return error_setf_errno(err, errno, "%s=%d", key, fd);
            close(fd);
            fd = dup;
        }
        b->q[i].vhost_fd = fd; /* closed by fd_destroy */
        b->vhost_features = f;
        /* As QEMU, at creation, on the main thread of the process that runs the guest (after
         * -daemonize forked): the kernel's worker uses this process's memory and is named
         * vhost-<pid> after the calling thread. */
        if (ioctl(fd, VHOST_SET_OWNER) < 0) {
            if (c->nvhostfds)
                return error_setf_errno(err, errno, "%s=%d: VHOST_SET_OWNER", key, c->vhostfds[i]);
            return error_setf_errno(err, errno, "vhost-net: VHOST_SET_OWNER");
        }
    }
    return 0;
}

int net_tap_init(struct netdev *nd, const struct net_tap_cfg *c, struct error *err)
{
    int fds[NETDEV_MAX_QUEUES];
    unsigned n = 0;
    char ifname[IFNAMSIZ] = "";
    bool vnet = c->vnet_hdr;
    int ret = -1;
    if (c->fd >= 0 || c->nfds) {
        unsigned want = c->fd >= 0 ? 1 : c->nfds;
        for (; n < want; n++) {
            fds[n] = c->fd >= 0 ? c->fd : c->fds[n];
            bool v = false;
            char name[IFNAMSIZ];
            if (take_tap_fd(&fds[n], c, &v, name, err) < 0)
                goto fail;
            if (n == 0) {
                vnet = v;
                snprintf(ifname, sizeof(ifname), "%s", name);
            } else if (v != vnet || strcmp(name, ifname)) {
                n++;
                error_setf(err, "fds= are not queues of one tap with the same vnet_hdr mode");
                goto fail;
            }
        }
    } else {
        for (; n < c->queues; n++) {
            int fd = open_tap_queue(c, n, &vnet, ifname, err);
            if (fd < 0)
                goto fail;
            fds[n] = fd;
        }
    }
    for (unsigned i = 0; i < n; i++)
        if (setup_tap_fd(fds[i], c, vnet, ifname, err) < 0)
            goto fail;
    unsigned caps = vnet ? probe_offloads(fds[0]) : 0;
    ret = nd_fd_backend_init(nd, fds, n, vnet, true, err);
    n = 0; /* the backend owns them now, also on failure */
    if (ret < 0)
        return -1;
    struct nd_fd_backend *b = nd->be;
    nd->caps = caps;
    snprintf(b->ifname, sizeof(b->ifname), "%s", ifname);
    if (c->vhost && open_vhost(b, c, err) < 0)
        return -1;
    if (c->script && run_script(c->script, b->ifname, err) < 0)
        return -1;
    if (c->downscript && !(b->downscript = strdup(c->downscript)))
        return error_setf(err, "out of memory");
    return 0;
fail:
    for (unsigned i = 0; i < n; i++)
        close(fds[i]);
    return -1;
}

/* ---- vhost-net ---- */

static struct nd_fd_backend *vhost_backend(const struct netdev *nd)
{
    struct nd_fd_backend *b = nd->ops == &fd_ops ? nd->be : NULL;
    return b && b->q[0].vhost_fd >= 0 ? b : NULL;
}

bool netdev_has_vhost(const struct netdev *nd)
{
    return vhost_backend(nd) != NULL;
}

uint64_t netdev_vhost_features(const struct netdev *nd)
{
    const struct nd_fd_backend *b = vhost_backend(nd);
    return b ? b->vhost_features : 0;
}

int netdev_vhost_start(struct netdev *nd, unsigned queue, const struct guest_mem *mem,
                       uint64_t guest_features, const struct vhost_net_ring r[2], struct error *err)
{
    struct nd_fd_backend *b = vhost_backend(nd);
    if (!b || queue >= b->nqueues)
        return error_setf(err, "netdev '%s': no vhost-net for queue %u", nd->id, queue);
    struct nd_fd_queue *q = &b->q[queue];
    if (q->vhost)
        return error_setf(err, "netdev '%s': vhost-net already runs queue %u", nd->id, queue);
    uint64_t f;
    if (vhost_net_ack_features(guest_features, b->vhost_features, nd->vnet_hdr_len != 0, &f, err) <
        0)
        return -1;
    if (vhost_net_start(q->vhost_fd, q->fd, mem, f, r, err) < 0)
        return -1;
    q->vhost = true;
    struct error e = {0};
    fd_sync_watch(nd, q, &e); /* removing a watch cannot fail */
    return 0;
}

int netdev_vhost_set_call(struct netdev *nd, unsigned queue, unsigned ring, int fd)
{
    /* The vhost descriptors live as long as the netdev; the caller knows the queue runs. */
    struct nd_fd_backend *b = vhost_backend(nd);
    if (!b || queue >= b->nqueues || ring > 1)
        return -1;
    return vhost_net_set_call(b->q[queue].vhost_fd, ring, fd);
}

void netdev_vhost_stop(struct netdev *nd, unsigned queue, uint16_t last_avail[2])
{
    struct nd_fd_backend *b = vhost_backend(nd);
    if (!b || queue >= b->nqueues || !b->q[queue].vhost)
        return;
    struct nd_fd_queue *q = &b->q[queue];
    vhost_net_stop(q->vhost_fd, last_avail);
    q->vhost = false;
    struct error e = {0};
    if (fd_sync_watch(nd, q, &e) < 0)
        fprintf(stderr, "kemu: %s\n", e.msg);
}
