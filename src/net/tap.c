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

#define VNET_HDR_LEN 12 /* struct virtio_net_hdr_v1: modern virtio always has num_buffers */
#define RX_BATCH     64 /* frames read per wake-up, so TX kicks are not starved */

static uint32_t fd_events(struct netdev *nd)
{
    struct nd_fd_backend *b = nd->be;
    return (nd->rx_enabled ? EPOLLIN : 0) | (b->tx_blocked ? EPOLLOUT : 0);
}

/* A send found the queue full: the frame stays with the frontend until the fd is writable. */
static void fd_tx_unblock(struct netdev *nd)
{
    struct nd_fd_backend *b = nd->be;
    struct pollfd p = {.fd = b->fd, .events = POLLOUT};
    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLOUT | POLLERR | POLLHUP)))
        return;
    b->tx_blocked = false;
    netdev_modify_fd(nd, b->fd, fd_events(nd));
    if (nd->fe && nd->fe->writable)
        nd->fe->writable(nd->fe_opaque);
}

static void fd_rx(void *opaque)
{
    struct netdev *nd = opaque;
    struct nd_fd_backend *b = nd->be;
    if (b->tx_blocked)
        fd_tx_unblock(nd);
    for (int i = 0; i < RX_BATCH && nd->rx_enabled; i++) {
        ssize_t n = read(b->fd, b->buf, NETDEV_MAX_FRAME);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR && !b->read_error_logged) {
                b->read_error_logged = true;
                fprintf(stderr, "kemu: netdev '%s': read: %s\n", nd->id, strerror(errno));
            }
            return;
        }
        if (n == 0) {
            /* The peer of a socket went away: stop watching, or we would spin. */
            netdev_modify_fd(nd, b->fd, 0);
            return;
        }
        if ((size_t)n <= nd->vnet_hdr_len)
            continue; /* a header alone is no frame */
        netdev_deliver(nd, b->buf, (size_t)n);
    }
}

static int fd_send(struct netdev *nd, const struct iovec *iov, int iovcnt)
{
    struct nd_fd_backend *b = nd->be;
    ssize_t n;
    do {
        n = writev(b->fd, iov, iovcnt);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        /* Dropping here would cost the guest's TCP a retransmit timeout: hold the frame. */
        b->tx_blocked = true;
        netdev_modify_fd(nd, b->fd, fd_events(nd));
        return NETDEV_BUSY;
    }
    /* Any other error: the frame is lost, as on a wire. */
    return n < 0 ? -1 : 0;
}

static void fd_set_rx_enabled(struct netdev *nd, bool on)
{
    (void)on; /* nd->rx_enabled already says it */
    netdev_modify_fd(nd, ((struct nd_fd_backend *)nd->be)->fd, fd_events(nd));
}

static int tap_set_offloads(struct netdev *nd, unsigned offloads, struct error *err)
{
    struct nd_fd_backend *b = nd->be;
    if (!b->is_tap)
        return 0; /* a socket carries whatever header it is given */
    unsigned f = 0;
    if (offloads & NETDEV_OFFLOAD_CSUM)
        f |= TUN_F_CSUM;
    if (offloads & NETDEV_OFFLOAD_TSO4)
        f |= TUN_F_TSO4;
    if (offloads & NETDEV_OFFLOAD_TSO6)
        f |= TUN_F_TSO6;
    if (offloads & NETDEV_OFFLOAD_ECN)
        f |= TUN_F_TSO_ECN;
    if (ioctl(b->fd, TUNSETOFFLOAD, (unsigned long)f) < 0)
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
    if (b->fd >= 0)
        close(b->fd);
    free(b->downscript);
    free(b->buf);
    free(b);
    nd->be = NULL;
}

static const struct netdev_backend_ops fd_ops = {
    .send = fd_send,
    .set_rx_enabled = fd_set_rx_enabled,
    .set_offloads = tap_set_offloads,
    .destroy = fd_destroy,
};

int nd_fd_backend_init(struct netdev *nd, int fd, bool vnet_hdr, bool is_tap, struct error *err)
{
    struct nd_fd_backend *b = calloc(1, sizeof(*b));
    if (!b) {
        close(fd);
        return error_setf(err, "out of memory");
    }
    b->fd = fd;
    b->is_tap = is_tap;
    nd->be = b;
    nd->ops = &fd_ops;
    b->buf = malloc(NETDEV_MAX_FRAME);
    if (!b->buf)
        return error_setf(err, "out of memory");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return error_setf_errno(err, errno, "netdev '%s': fd %d", nd->id, fd);
    if (vnet_hdr) {
        nd->vnet_hdr_len = VNET_HDR_LEN;
        nd->caps =
            NETDEV_OFFLOAD_CSUM | NETDEV_OFFLOAD_TSO4 | NETDEV_OFFLOAD_TSO6 | NETDEV_OFFLOAD_ECN;
    }
    return netdev_add_internal_fd(nd, fd, EPOLLIN, fd_rx, nd, err);
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

int net_tap_init(struct netdev *nd, const struct net_tap_cfg *c, struct error *err)
{
    int fd = c->fd;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    bool vnet = c->vnet_hdr;
    if (fd >= 0) {
        /* An inherited tap: take its mode as it is. */
        if (ioctl(fd, TUNGETIFF, &ifr) < 0)
            return error_setf_errno(err, errno, "fd=%d is not a tap device", fd);
        if (!(ifr.ifr_flags & IFF_TAP))
            return error_setf(err, "fd=%d is a tun device, not a tap device", fd);
        bool has = (ifr.ifr_flags & IFF_VNET_HDR) != 0;
        if (c->vnet_hdr_given && c->vnet_hdr && !has)
            return error_setf(err, "vnet_hdr=on but fd=%d was opened without IFF_VNET_HDR", fd);
        vnet = has;
        int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dup < 0)
            return error_setf_errno(err, errno, "fd=%d", fd);
        close(fd); /* the netdev owns the descriptor from now on, as with QEMU */
        fd = dup;
    } else {
        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return error_setf_errno(err, errno, "cannot open /dev/net/tun");
        unsigned features = 0;
        if (ioctl(fd, TUNGETFEATURES, &features) < 0)
            features = 0;
        if (vnet && !(features & IFF_VNET_HDR)) {
            if (c->vnet_hdr_given) {
                close(fd);
                return error_setf(err, "vnet_hdr=on but the kernel's tap lacks IFF_VNET_HDR");
            }
            vnet = false;
        }
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
        if (c->ifname)
            snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", c->ifname);
        else
            snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "tap%%d");
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
            int e = errno;
            close(fd);
            return error_setf_errno(err, e, "could not configure tap '%s' (TUNSETIFF)",
                                    c->ifname ? c->ifname : "tap%d");
        }
    }
    unsigned caps = 0;
    if (vnet) {
        int sz = VNET_HDR_LEN;
        if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
            int e = errno;
            close(fd);
            return error_setf_errno(err, e, "tap %s: TUNSETVNETHDRSZ", ifr.ifr_name);
        }
        caps = probe_offloads(fd);
    }
    /* The kernel's default send buffer (wmem_default) fills with a few 64 KiB GSO frames;
     * like QEMU, lift the limit unless sndbuf= sets one. */
    int sndbuf = c->sndbuf ? c->sndbuf : INT_MAX;
    if (ioctl(fd, TUNSETSNDBUF, &sndbuf) < 0 && c->sndbuf_given) {
        int e = errno;
        close(fd);
        return error_setf_errno(err, e, "tap %s: cannot set sndbuf=%d", ifr.ifr_name, c->sndbuf);
    }
    if (nd_fd_backend_init(nd, fd, vnet, true, err) < 0)
        return -1;
    struct nd_fd_backend *b = nd->be;
    nd->caps = caps;
    snprintf(b->ifname, sizeof(b->ifname), "%s", ifr.ifr_name);
    if (c->script && run_script(c->script, b->ifname, err) < 0)
        return -1;
    if (c->downscript && !(b->downscript = strdup(c->downscript)))
        return error_setf(err, "out of memory");
    return 0;
}
