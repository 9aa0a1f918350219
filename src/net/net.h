/*
 * Network backends (-netdev): user-mode networking through libslirp, a Linux tap device, and a
 * raw packet fd (for tests and embedding).
 *
 * Threads: every netdev owns one I/O thread (epoll) that drives its backend: the tap fd, or
 * slirp's sockets and timers. The frontend (virtio-net) runs on that same thread, so the RX and
 * TX paths of one queue pair are single-threaded and need no locks:
 *
 *   1. At creation the frontend claims the netdev (netdev_claim(), one frontend per netdev).
 *   2. To start, it calls netdev_run_sync(nd, fn, opaque): fn runs on the netdev thread and the
 *      caller waits for it. There fn registers its kick eventfds with netdev_add_fd() (their
 *      callbacks then run on the netdev thread), installs its receive hook with
 *      netdev_set_frontend() and, for a vnet-header backend, chooses the offloads the guest can
 *      take with netdev_set_offloads().
 *   3. Frames for the guest arrive in frontend->receive() on the netdev thread. When the guest
 *      has no buffer the frontend keeps the frame in a bounded queue of its own and calls
 *      netdev_set_rx_enabled(nd, q, false): that queue's fd is then no longer read (the
 *      kernel queues), slirp stops reading its sockets. After a batch of receive() calls,
 * frontend->flush() runs once (one interrupt per batch, not per frame).
 *   4. The TX path (a kick callback on the thread) hands frames to netdev_send(), which takes an
 *      iovec pointing straight into guest memory: tap writes it with one writev(), slirp copies
 *      it once into its own buffers.
 *   5. To stop, netdev_run_sync() again: netdev_remove_fd() the kicks, netdev_set_frontend(nd,
 *      NULL, NULL). When it returns no frontend code runs on the netdev thread any more.
 *
 * Queues: a tap opened with queues=N (or fds=a:b:...) has N queues, one fd each (IFF_MULTI_QUEUE);
 * every other backend has one. Frames arrive with the index of the queue they came from and are
 * sent on the queue the frontend names; netdev_set_active_queues() limits the backend to the
 * first n (a tap detaches the others, so the kernel steers nothing to them). All queues are
 * served by the netdev's one I/O thread.
 *
 * Frame format: with netdev_vnet_hdr_len(nd) == 12 (a tap opened with IFF_VNET_HDR) every frame
 * in both directions begins with a 12-byte struct virtio_net_hdr_v1 (the tap carries checksum
 * and segmentation offloads); otherwise frames are plain Ethernet with complete checksums.
 */
#ifndef KEMU_NET_NET_H
#define KEMU_NET_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "core/error.h"
#include "core/memory.h"
#include "net/vhost_net.h"

struct netdev;

/* Offloads a vnet-header backend can carry (netdev_offload_caps) and the guest accepts
 * (netdev_set_offloads: what frames towards the guest may need). */
#define NETDEV_OFFLOAD_CSUM 1u /* partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM) */
#define NETDEV_OFFLOAD_TSO4 2u
#define NETDEV_OFFLOAD_TSO6 4u
#define NETDEV_OFFLOAD_ECN  8u

/* The most bytes of one frame, vnet header included (64 KiB GSO frame + header). */
#define NETDEV_MAX_FRAME (65536 + 12 + 14 + 4)

/* The most queues of one backend: a virtio-net device has at most 31 queue pairs (63 queues
 * with the control queue, under VIRTIO_MAX_QUEUES). */
#define NETDEV_MAX_QUEUES 31

/*
 * Create a backend from the argument of -netdev: "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22",
 * "tap,id=t0,ifname=tap0,script=no,downscript=no". Starts its I/O thread. Returns 0 with *out
 * set; 1 when a "help" element was given (the keys were printed to stdout, *out is NULL; the
 * caller exits successfully); -1 with err set to a one-line reason (the caller prefixes it).
 */
int netdev_create(const char *text, struct netdev **out, struct error *err);
/* A backend over fd, a packet-preserving socket (SOCK_SEQPACKET/SOCK_DGRAM) or a tap fd: one
 * read/write per frame; with vnet_hdr, frames carry the 12-byte header and every offload is
 * allowed. Takes ownership of fd. For tests and embedding. Without own_thread no I/O thread is
 * started: the caller drives the netdev with netdev_poll() (and netdev_run_sync() runs its
 * function directly), which makes fuzzing deterministic. */
int netdev_create_fd(const char *id, int fd, bool vnet_hdr, bool own_thread, struct netdev **out,
                     struct error *err);
/* The same with n (1..NETDEV_MAX_QUEUES) fds, one per queue; takes ownership of all of them. */
int netdev_create_fds(const char *id, const int *fds, unsigned n, bool vnet_hdr, bool own_thread,
                      struct netdev **out, struct error *err);
/* One round of the I/O loop on the calling thread, waiting at most timeout_ms (0: no wait):
 * only for a netdev without its own thread; does nothing otherwise. */
void netdev_poll(struct netdev *nd, int timeout_ms);
const char *netdev_id(const struct netdev *nd);
/* Stops the thread, runs the tap downscript, frees. The frontend must have stopped. */
void netdev_destroy(struct netdev *nd);
/* "help" output for -netdev: the backend types and their keys. */
void netdev_print_help(FILE *f);

/* ---- for the frontend ---- */

/* Claim the netdev for one frontend: -1 ("netdev 'n0' is already in use") if taken. */
int netdev_claim(struct netdev *nd, struct error *err);
void netdev_release(struct netdev *nd);

/* 0 or 12: whether frames carry a struct virtio_net_hdr_v1 (fixed at creation). */
unsigned netdev_vnet_hdr_len(const struct netdev *nd);
/* NETDEV_OFFLOAD_* the backend handles (0 without a vnet header). */
unsigned netdev_offload_caps(const struct netdev *nd);
/* Number of queues (fixed at creation): 1, or N for a multiqueue tap. */
unsigned netdev_queues(const struct netdev *nd);
/* For info network: the backend type ("user", "tap", "socket") and, in buf, what QEMU shows of
 * queue `queue` ("net=10.0.2.0,restrict=off", "ifname=tap0,script=no,downscript=no", "fd=5"). */
const char *netdev_type(const struct netdev *nd);
void netdev_info_str(const struct netdev *nd, unsigned queue, char *buf, size_t len);
/*
 * HMP's hostfwd_add / hostfwd_remove on a user netdev: add "[tcp|udp]:[hostaddr]:hostport-
 * [guestaddr]:guestport", or remove "[tcp|udp]:[hostaddr]:hostport". 0; -EINVAL with err set
 * (a bad rule, or not a user netdev); -EEXIST (slirp refused the rule: the port is taken...);
 * -ENOENT (no such rule to remove).
 */
int netdev_hostfwd(struct netdev *nd, bool add, const char *rule, struct error *err);
/* HMP info usernet: a user netdev's connection table (malloc'd), NULL for other netdevs. */
char *netdev_usernet_info(struct netdev *nd);

/* Run fn(opaque) on the netdev thread and wait for it (directly if already on it). */
void netdev_run_sync(struct netdev *nd, void (*fn)(void *opaque), void *opaque);

/* The functions below run on the netdev thread only (callbacks, netdev_run_sync). */

struct netdev_frontend {
    /* A frame for the guest from backend queue `queue` (len bytes, vnet header included if the
     * backend has one). The memory is the backend's: copy what must outlive the call. */
    void (*receive)(void *opaque, unsigned queue, const uint8_t *frame, size_t len);
    /* Optional: a batch of receive() calls ended. */
    void (*flush)(void *opaque);
    /* Optional: queue `queue` can take frames again after netdev_send() returned NETDEV_BUSY. */
    void (*writable)(void *opaque, unsigned queue);
};

typedef void (*netdev_fd_cb)(void *opaque);

void netdev_set_frontend(struct netdev *nd, const struct netdev_frontend *fe, void *opaque);
/* Watch fd (readable) on the netdev thread: cb(opaque) runs when it is. At most
 * NETDEV_MAX_FDS frontend fds (a kick per queue of the largest virtio-net device). */
#define NETDEV_MAX_FDS (2 * NETDEV_MAX_QUEUES + 1)
int netdev_add_fd(struct netdev *nd, int fd, netdev_fd_cb cb, void *opaque, struct error *err);
/* After it returns, cb does not run again (even for an event already collected this round). */
void netdev_remove_fd(struct netdev *nd, int fd);
/* Flow control towards the guest, per queue: false stops reading that queue of the backend
 * (frames wait in the kernel or in slirp's sockets); true resumes. */
void netdev_set_rx_enabled(struct netdev *nd, unsigned queue, bool on);
/* Send one frame from the guest on `queue` (vnet header first if the backend has one). Returns
 * 0 (sent), -1 (dropped: the backend refused it, or no such queue), or NETDEV_BUSY: the queue is
 * full and the frame was not taken; the frontend keeps it and the writable() hook says when to
 * retry. */
#define NETDEV_BUSY 1
int netdev_send(struct netdev *nd, unsigned queue, const struct iovec *iov, int iovcnt);
/* Use queues [0, n) only (1 <= n <= netdev_queues()): the others are neither read nor, for a
 * tap, attached (TUNSETQUEUE), so the kernel steers no frames to them. All are active at
 * creation. */
int netdev_set_active_queues(struct netdev *nd, unsigned n, struct error *err);
/* Offloads the guest accepts in received frames (subset of netdev_offload_caps()). */
int netdev_set_offloads(struct netdev *nd, unsigned offloads, struct error *err);

/*
 * vhost-net (a tap with vhost=on): the kernel moves the frames of a queue pair between the
 * guest's rings and tap queue `queue` (see net/vhost_net.h). While it does, the netdev neither
 * reads that queue's fd nor should the frontend send on it; netdev_set_active_queues() still
 * attaches and detaches it. MAC and RX-mode filtering of the frontend cannot apply to those
 * frames (QEMU has the same limit).
 */
bool netdev_has_vhost(const struct netdev *nd);
/* VHOST_GET_FEATURES of the kernel's vhost-net (0 without vhost). */
uint64_t netdev_vhost_features(const struct netdev *nd);
/* Netdev thread. guest_features: the negotiated ones; r[0] RX, r[1] TX. -1 with err (nothing
 * left running) if the rings are not usable or an ioctl failed: use the userspace path then. */
int netdev_vhost_start(struct netdev *nd, unsigned queue, const struct guest_mem *mem,
                       uint64_t guest_features, const struct vhost_net_ring r[2],
                       struct error *err);
/* Any thread, while queue `queue` runs on vhost: vring `ring` (0 RX, 1 TX) signals eventfd fd
 * from now on. 0, or -1 when there is no such vhost queue or the kernel refused. */
int netdev_vhost_set_call(struct netdev *nd, unsigned queue, unsigned ring, int fd);
/* Netdev thread. Stop queue `queue` (no-op if vhost does not run it); last_avail[] holds the
 * values given at start and gets the rings' next available indices. */
void netdev_vhost_stop(struct netdev *nd, unsigned queue, uint16_t last_avail[2]);

#endif
