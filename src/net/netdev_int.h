/* Internals shared by the netdev core (net.c) and its backends (tap.c, slirp.c). */
#ifndef KEMU_NET_NETDEV_INT_H
#define KEMU_NET_NETDEV_INT_H

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>

#include "net/net.h"

struct netdev;

struct netdev_backend_ops {
    /* Send on queue 0 (backends with one queue)... */
    int (*send)(struct netdev *nd, const struct iovec *iov, int iovcnt);
    /* ...or on any queue (multiqueue backends; used instead of send when set). */
    int (*send_queue)(struct netdev *nd, unsigned queue, const struct iovec *iov, int iovcnt);
    /* Optional: reading queue `queue` was switched (nd->rx_on[queue]). */
    void (*set_rx_enabled)(struct netdev *nd, unsigned queue, bool on);
    /* Optional: only queues [0, n) are in use from now on (nd->active_queues). */
    int (*set_active_queues)(struct netdev *nd, unsigned n, struct error *err);
    int (*set_offloads)(struct netdev *nd, unsigned offloads, struct error *err);
    /* Optional, for backends with a changing fd set (slirp): append pollfds with
     * netdev_poll_add() and lower *timeout_ms (-1 = none) before the thread sleeps... */
    void (*poll_fill)(struct netdev *nd, int *timeout_ms);
    /* ...and handle them after it woke (poll_error: poll() failed). */
    void (*poll_done)(struct netdev *nd, bool poll_error);
    /* Free the backend state; the thread has stopped. */
    void (*destroy)(struct netdev *nd);
};

enum nd_handler_state { ND_FREE, ND_LIVE, ND_DEAD };

struct nd_handler {
    enum nd_handler_state state;
    int fd;
    netdev_fd_cb cb;
    void *opaque;
};

/* The wake-up eventfd and one backend fd per queue, then the frontend handlers. */
#define ND_INTERNAL_HANDLERS (NETDEV_MAX_QUEUES + 1)
#define ND_HANDLERS          (ND_INTERNAL_HANDLERS + NETDEV_MAX_FDS)

struct netdev {
    char *id;
    /* What info network shows (QEMU's type and info_str): "user", "net=10.0.2.0,restrict=off";
     * a tap given as fd=/fds= shows "fd=N" per queue, from shown_fd. */
    const char *type;
    char info[96];
    int shown_fd[NETDEV_MAX_QUEUES];
    const struct netdev_backend_ops *ops;
    void *be; /* backend state */
    unsigned vnet_hdr_len;
    unsigned caps;
    unsigned nqueues;       /* 1, or N for a multiqueue tap */
    unsigned active_queues; /* netdev_set_active_queues() */
    bool rx_enabled;        /* queue 0's rx_on (slirp reads it) */
    bool rx_on[NETDEV_MAX_QUEUES];

    int epfd;
    int wake_fd;
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t lock; /* req_* and quit */
    pthread_cond_t cond;
    pthread_mutex_t sync_lock; /* one netdev_run_sync() caller at a time */
    void (*req_fn)(void *);
    void *req_opaque;
    bool req_pending;
    bool quit;

    struct nd_handler h[ND_HANDLERS];
    struct pollfd *pfds; /* [0] is epfd, then the backend's */
    int npfds, cap_pfds;

    const struct netdev_frontend *fe;
    void *fe_opaque;
    bool received; /* receive() called since the last flush() */
    bool claimed;
};

/* For backends: register an internal fd in the thread's epoll set (any time before the thread
 * starts, or on the thread). */
int netdev_add_internal_fd(struct netdev *nd, int fd, uint32_t events, netdev_fd_cb cb,
                           void *opaque, struct error *err);
int netdev_modify_fd(struct netdev *nd, int fd, uint32_t events);
/* poll_fill: add a pollfd, returns its index. */
int netdev_poll_add(struct netdev *nd, int fd, short events);
/* Deliver one frame to the frontend (dropped without one): from queue 0, or from `queue`. */
void netdev_deliver(struct netdev *nd, const uint8_t *frame, size_t len);
void netdev_deliver_queue(struct netdev *nd, unsigned queue, const uint8_t *frame, size_t len);

/* ---- packet fd datapath (tap and netdev_create_fd) ---- */
struct nd_fd_queue {
    struct netdev *nd;
    unsigned index;
    int fd;
    bool active;     /* in use (netdev_set_active_queues); a multiqueue tap's queue is attached */
    bool watched;    /* in the epoll set: active and not handed to vhost */
    bool tx_blocked; /* a send hit a full queue: watching for POLLOUT */
    int vhost_fd;    /* /dev/vhost-net for this queue (vhost=on), else -1 */
    bool vhost;      /* the kernel's vhost-net moves this queue's frames now */
};
struct nd_fd_backend {
    struct nd_fd_queue q[NETDEV_MAX_QUEUES];
    unsigned nqueues;
    bool is_tap;
    bool queue_error_logged;
    char ifname[16];
    char *downscript;
    uint8_t *buf; /* one read buffer: all queues are read on the one thread */
    bool read_error_logged;
    uint64_t vhost_features; /* VHOST_GET_FEATURES (vhost=on) */
};
/* Takes ownership of the n fds (also on failure). */
int nd_fd_backend_init(struct netdev *nd, const int *fds, unsigned n, bool vnet_hdr, bool is_tap,
                       struct error *err);

/* ---- -netdev user ---- */
struct net_hostfwd {
    bool udp;
    struct in_addr haddr, gaddr;
    int hport, gport;
};
#define NET_GFWD_HOST_MAX 256
#define NET_GFWD_PATH_MAX 108 /* sun_path */
struct net_guestfwd {
    struct in_addr server; /* 0: slirp picks */
    int port;
    char *cmd; /* cmd:COMMAND, or NULL */
    char *dev; /* tcp:HOST:PORT or unix:PATH, or NULL */
};
struct net_user_cfg {
    struct in_addr net, mask, host, dhcp, dns;
    struct in6_addr prefix6, host6, dns6;
    unsigned prefix6_len;
    bool restricted, ipv4, ipv6;
    const char *hostname, *domainname, *tftp, *tftp_server_name, *bootfile;
    char **dnssearch; /* NULL-terminated when ndnssearch > 0 */
    size_t ndnssearch;
    struct net_hostfwd *fwd;
    size_t nfwd;
    struct net_guestfwd *gfwd;
    size_t ngfwd;
};
/* A hostfwd rule: for hostfwd= and hostfwd_add (add) "[tcp|udp]:[hostaddr]:hostport-
 * [guestaddr]:guestport", the guest address inside c's network (default: its first DHCP
 * address); for hostfwd_remove "[tcp|udp]:[hostaddr]:hostport". 0, or -1 with err set. */
int net_hostfwd_parse(const char *rule, bool add, const struct net_user_cfg *c,
                      struct net_hostfwd *f, struct error *err);
int net_slirp_init(struct netdev *nd, const struct net_user_cfg *cfg, struct error *err);
/* The addresses rules are checked against (net, mask, dhcp of c). */
void net_slirp_addrs(const struct netdev *nd, struct net_user_cfg *c);
/* Add or remove a host forwarding rule on the running stack: 0, or -1 (slirp refused, or no
 * such rule to remove). */
int net_slirp_hostfwd(struct netdev *nd, bool add, const struct net_hostfwd *f);
/* libslirp's table of the stack's connections (info usernet), malloc'd; NULL on failure. */
char *net_slirp_connection_info(struct netdev *nd);

/* ---- -netdev tap ---- */
struct net_tap_cfg {
    const char *ifname;
    const char *script, *downscript; /* NULL: "no" */
    int fd;                          /* -1: open /dev/net/tun (or take fds) */
    int fds[NETDEV_MAX_QUEUES];      /* fds=a:b:c (nfds of them), else none */
    unsigned nfds;
    unsigned queues; /* to open: 1..NETDEV_MAX_QUEUES; >1 opens with IFF_MULTI_QUEUE */
    bool vnet_hdr;
    bool vnet_hdr_given;
    int sndbuf; /* TUNSETSNDBUF value; 0 = unlimited (QEMU's default) */
    bool sndbuf_given;
    bool vhost;                      /* vhost=on (or implied by vhostfd=/vhostfds=) */
    int vhostfds[NETDEV_MAX_QUEUES]; /* vhostfd= / vhostfds= (nvhostfds), else opened */
    unsigned nvhostfds;
};
int net_tap_init(struct netdev *nd, const struct net_tap_cfg *cfg, struct error *err);

#endif
