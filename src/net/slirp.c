/*
 * -netdev user: user-mode networking through libslirp, driven by the netdev thread. libslirp is
 * opened when the first one starts (os_lib_open): linked, it and glib cost every run 1.4 MiB.
 */
#include "kemu-config.h"

#ifdef CONFIG_SLIRP

#include <errno.h>
#include <slirp/libslirp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/os.h"
#include "net/netdev_int.h"

/* The libslirp functions kemu calls, typed by the library's own header. */
static struct {
    __typeof__(slirp_new) *new_;
    __typeof__(slirp_cleanup) *cleanup;
    __typeof__(slirp_input) *input;
    __typeof__(slirp_pollfds_fill) *pollfds_fill;
    __typeof__(slirp_pollfds_poll) *pollfds_poll;
    __typeof__(slirp_add_hostfwd) *add_hostfwd;
    __typeof__(slirp_add_exec) *add_exec;
} sl;

static const struct os_lib_fn sl_fns[] = {
    {"slirp_new", (void **)&sl.new_},
    {"slirp_cleanup", (void **)&sl.cleanup},
    {"slirp_input", (void **)&sl.input},
    {"slirp_pollfds_fill", (void **)&sl.pollfds_fill},
    {"slirp_pollfds_poll", (void **)&sl.pollfds_poll},
    {"slirp_add_hostfwd", (void **)&sl.add_hostfwd},
    {"slirp_add_exec", (void **)&sl.add_exec},
};

static struct os_lib libslirp = {
    .soname = SLIRP_SONAME,
    .what = "user-mode networking (-netdev user)",
    .fns = sl_fns,
    .nfns = sizeof(sl_fns) / sizeof(sl_fns[0]),
};

struct slirp_timer {
    SlirpTimerCb cb;
    void *cb_opaque;
    int64_t expire_ms; /* -1: not armed */
    struct slirp_timer *next;
};

struct nd_slirp {
    Slirp *slirp;
    struct slirp_timer *timers;
    uint8_t *buf; /* linear copy of a multi-segment frame */
};

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    netdev_deliver(opaque, buf, len);
    return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
    struct netdev *nd = opaque;
    /* The guest controls how often this happens: a few lines, then silence. */
    static unsigned printed;
    if (printed < 10)
        fprintf(stderr, "kemu: netdev '%s': guest error: %s%s\n", nd->id, msg,
                ++printed == 10 ? " (further guest errors not shown)" : "");
}

static int64_t cb_clock_get_ns(void *opaque)
{
    return clock_ns(CLOCK_MONOTONIC);
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
    struct netdev *nd = opaque;
    struct nd_slirp *s = nd->be;
    struct slirp_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cb = cb;
    t->cb_opaque = cb_opaque;
    t->expire_ms = -1;
    t->next = s->timers;
    s->timers = t;
    return t;
}

static void cb_timer_free(void *timer, void *opaque)
{
    struct netdev *nd = opaque;
    struct nd_slirp *s = nd->be;
    for (struct slirp_timer **pp = &s->timers; *pp; pp = &(*pp)->next) {
        if (*pp == timer) {
            *pp = ((struct slirp_timer *)timer)->next;
            free(timer);
            return;
        }
    }
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    if (timer)
        ((struct slirp_timer *)timer)->expire_ms = expire_ms;
}

static void cb_register_poll_fd(int fd, void *opaque)
{
    /* Nothing: the fd set is rebuilt by slirp_pollfds_fill() on every round. */
}

static void cb_notify(void *opaque)
{
    struct netdev *nd = opaque;
    uint64_t one = 1;
    ssize_t r = write(nd->wake_fd, &one, sizeof(one));
    (void)r;
}

static const SlirpCb slirp_cbs = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_new = cb_timer_new,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_register_poll_fd,
    .unregister_poll_fd = cb_register_poll_fd,
    .notify = cb_notify,
};

static int slirp_send(struct netdev *nd, const struct iovec *iov, int iovcnt)
{
    struct nd_slirp *s = nd->be;
    if (iovcnt == 1) {
        if (iov[0].iov_len > NETDEV_MAX_FRAME)
            return -1;
        sl.input(s->slirp, iov[0].iov_base, (int)iov[0].iov_len);
        return 0;
    }
    /* slirp takes one contiguous frame. */
    size_t off = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > NETDEV_MAX_FRAME - off)
            return -1;
        memcpy(s->buf + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    sl.input(s->slirp, s->buf, (int)off);
    return 0;
}

static int add_poll(int fd, int events, void *opaque)
{
    struct netdev *nd = opaque;
    short ev = 0;
    /* With the guest's receive side full, leave slirp's sockets unread (flow control). */
    if ((events & SLIRP_POLL_IN) && nd->rx_enabled)
        ev |= POLLIN;
    if (events & SLIRP_POLL_OUT)
        ev |= POLLOUT;
    if (events & SLIRP_POLL_PRI)
        ev |= POLLPRI;
    return netdev_poll_add(nd, fd, ev);
}

static int get_revents(int idx, void *opaque)
{
    struct netdev *nd = opaque;
    if (idx < 0 || idx >= nd->npfds)
        return 0;
    short r = nd->pfds[idx].revents;
    int ev = 0;
    if (r & POLLIN)
        ev |= SLIRP_POLL_IN;
    if (r & POLLOUT)
        ev |= SLIRP_POLL_OUT;
    if (r & POLLPRI)
        ev |= SLIRP_POLL_PRI;
    if (r & POLLERR)
        ev |= SLIRP_POLL_ERR;
    if (r & POLLHUP)
        ev |= SLIRP_POLL_HUP;
    return ev;
}

static void slirp_poll_fill(struct netdev *nd, int *timeout_ms)
{
    struct nd_slirp *s = nd->be;
    uint32_t t = UINT32_MAX;
    int64_t now = clock_ns(CLOCK_MONOTONIC) / 1000000;
    for (struct slirp_timer *tm = s->timers; tm; tm = tm->next) {
        if (tm->expire_ms < 0)
            continue;
        int64_t d = tm->expire_ms - now;
        d = d < 0 ? 0 : d;
        if ((uint64_t)d < t)
            t = (uint32_t)d;
    }
    sl.pollfds_fill(s->slirp, &t, add_poll, nd);
    *timeout_ms = t == UINT32_MAX ? -1 : (t > 1000000 ? 1000000 : (int)t);
}

static void slirp_poll_done(struct netdev *nd, bool poll_error)
{
    struct nd_slirp *s = nd->be;
    sl.pollfds_poll(s->slirp, poll_error, get_revents, nd);
    /* Expired timers; a callback may re-arm or free timers, so look again from the start after
     * each one (bounded, in case one re-arms itself in the past). */
    for (int round = 0; round < 64; round++) {
        int64_t now = clock_ns(CLOCK_MONOTONIC) / 1000000;
        struct slirp_timer *tm = s->timers;
        while (tm && (tm->expire_ms < 0 || tm->expire_ms > now))
            tm = tm->next;
        if (!tm)
            break;
        tm->expire_ms = -1;
        tm->cb(tm->cb_opaque);
    }
}

static void slirp_destroy(struct netdev *nd)
{
    struct nd_slirp *s = nd->be;
    if (!s)
        return;
    if (s->slirp)
        sl.cleanup(s->slirp);
    while (s->timers) {
        struct slirp_timer *t = s->timers;
        s->timers = t->next;
        free(t);
    }
    free(s->buf);
    free(s);
    nd->be = NULL;
}

static const struct netdev_backend_ops slirp_ops = {
    .send = slirp_send,
    .poll_fill = slirp_poll_fill,
    .poll_done = slirp_poll_done,
    .destroy = slirp_destroy,
};

int net_slirp_init(struct netdev *nd, const struct net_user_cfg *c, struct error *err)
{
    if (os_lib_open(&libslirp, err) < 0)
        return -1;
    struct nd_slirp *s = calloc(1, sizeof(*s));
    if (!s)
        return error_setf(err, "out of memory");
    nd->be = s;
    nd->ops = &slirp_ops;
    s->buf = malloc(NETDEV_MAX_FRAME);
    if (!s->buf)
        return error_setf(err, "out of memory");

    SlirpConfig cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.version = 4;
    cfg.restricted = c->restricted;
    cfg.in_enabled = c->ipv4;
    cfg.vnetwork = c->net;
    cfg.vnetmask = c->mask;
    cfg.vhost = c->host;
    cfg.in6_enabled = c->ipv6;
    /* QEMU's IPv6 defaults: fec0::/64, host fec0::2, DNS fec0::3. */
    inet_pton(AF_INET6, "fec0::", &cfg.vprefix_addr6);
    cfg.vprefix_len = 64;
    inet_pton(AF_INET6, "fec0::2", &cfg.vhost6);
    inet_pton(AF_INET6, "fec0::3", &cfg.vnameserver6);
    cfg.vhostname = c->hostname;
    cfg.tftp_server_name = NULL;
    cfg.tftp_path = c->tftp;
    cfg.bootfile = c->bootfile;
    cfg.vdhcp_start = c->dhcp;
    cfg.vnameserver = c->dns;
    cfg.vdomainname = c->domainname;
    s->slirp = sl.new_(&cfg, &slirp_cbs, nd);
    if (!s->slirp)
        return error_setf(err, "libslirp refused the configuration");

    for (size_t i = 0; i < c->nfwd; i++) {
        const struct net_hostfwd *f = &c->fwd[i];
        if (sl.add_hostfwd(s->slirp, f->udp, f->haddr, f->hport, f->gaddr, f->gport) < 0) {
            char ha[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &f->haddr, ha, sizeof(ha));
            return error_setf(err, "could not set up host forwarding rule %s:%s:%d",
                              f->udp ? "udp" : "tcp", ha, f->hport);
        }
    }
    for (size_t i = 0; i < c->ngfwd; i++) {
        struct in_addr server = c->gfwd[i].server;
        if (sl.add_exec(s->slirp, c->gfwd[i].cmd, &server, c->gfwd[i].port) < 0)
            return error_setf(err, "could not set up guest forwarding rule for port %d",
                              c->gfwd[i].port);
    }
    return 0;
}

#endif
