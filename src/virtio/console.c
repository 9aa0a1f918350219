/*
 * virtio-serial device: ports backed by chardevs, control queues (MULTIPORT), emergency write.
 *
 * Threads:
 * - the worker (from start() to stop()) waits on every kick fd: it forwards tx queues to the
 *   chardevs, handles the guest's control messages and sends ours on the control rx queue, and on
 *   an rx kick tells a paused chardev to resume input;
 * - the main thread's chardev callbacks (can_receive, receive) fill a port's rx queue;
 * - config writes (emergency write) come from a vCPU thread with vdev->lock held.
 * Every queue is touched only under its own mutex (qlock[q]). A port's `running`,
 * `guest_connected`, `rx_paused` and held rx chain live under its rx queue mutex, so stop() only
 * has to clear `running` under each of them to keep the main thread out of the queues.
 */
#include "virtio/console.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/bytes.h"
#include "core/os.h"

#define VS_QUEUE_SIZE 128 /* as QEMU */
/* Control messages waiting for a control rx buffer: a guest that never gives any buffers but
 * keeps asking (DEVICE_READY, PORT_READY) only loses its own messages beyond this. */
#define VS_CTRL_PENDING 256

struct vs_port {
    struct virtio_serial *vs;
    unsigned nr;
    struct chardev *chr;
    bool console;
    char *name;
    /* Under qlock[rx queue]. */
    bool running;         /* the device is started: the rx queue may be used */
    bool guest_connected; /* the guest opened the port (PORT_OPEN 1, or no MULTIPORT) */
    bool rx_paused;       /* can_receive said 0: call chardev_accept_input on a change */
    bool rx_have;         /* rx_chain holds a popped, not yet pushed chain */
    struct vq_chain *rx_chain;
};

struct ctrl_msg {
    uint32_t id;
    uint16_t event, value;
};

struct virtio_serial {
    struct virtio_device vdev;
    unsigned max_ports;
    struct vs_port *ports[VIRTIO_SERIAL_MAX_PORTS];
    pthread_mutex_t qlock[VIRTIO_MAX_QUEUES];

    /* Worker. */
    pthread_t thread;
    int stop_fd;
    bool multiport;        /* negotiated; set by start() before the worker runs */
    struct vq_chain chain; /* the worker's scratch chain */

    /* Under qlock[VIRTIO_CONSOLE_CTRL_RX]. */
    struct ctrl_msg pending[VS_CTRL_PENDING];
    unsigned pend_head, pend_count;
};

unsigned virtio_serial_rx_queue(unsigned nr)
{
    return nr == 0 ? 0 : 2 * (nr + 1);
}

unsigned virtio_serial_tx_queue(unsigned nr)
{
    return virtio_serial_rx_queue(nr) + 1;
}

/* The port whose data queue is q, or NULL (control queue, or no port there). */
static struct vs_port *port_of_queue(struct virtio_serial *vs, unsigned q)
{
    if (q == VIRTIO_CONSOLE_CTRL_RX || q == VIRTIO_CONSOLE_CTRL_TX)
        return NULL;
    unsigned nr = q < 2 ? 0 : q / 2 - 1;
    return nr < vs->max_ports ? vs->ports[nr] : NULL;
}

static void fill_config(struct virtio_serial *vs)
{
    uint8_t *c = vs->vdev.config;
    memset(c, 0, VIRTIO_CONSOLE_CFG_SIZE);
    le_put32(c + VIRTIO_CONSOLE_CFG_MAX_NR_PORTS, vs->max_ports);
}

/* ---- host input: main thread ---- */

/* Make sure the port holds an rx chain with room; called with the rx lock held. */
static bool rx_get_chain(struct vs_port *p)
{
    struct virtio_device *vdev = &p->vs->vdev;
    struct virtqueue *vq = &vdev->vq[virtio_serial_rx_queue(p->nr)];
    if (p->rx_have)
        return true;
    /* Bounded: a guest that only offers buffers without a writable part cannot keep us here. */
    for (unsigned i = 0; i < vq->size; i++) {
        struct error err = {0};
        int r = vq_pop(vq, p->rx_chain, &err);
        if (r < 0) {
            virtio_set_needs_reset(vdev, err.msg);
            return false;
        }
        if (r == 0)
            return false;
        if (vq_chain_writable_len(p->rx_chain) > 0) {
            p->rx_have = true;
            return true;
        }
        vq_push(vq, p->rx_chain->head, 0);
    }
    return false;
}

static size_t port_can_receive(void *opaque)
{
    struct vs_port *p = opaque;
    unsigned q = virtio_serial_rx_queue(p->nr);
    size_t room = 0;
    pthread_mutex_lock(&p->vs->qlock[q]);
    /* Not running: the queue belongs to the transport (being reset or set up). */
    if (p->running && p->guest_connected) {
        if (rx_get_chain(p))
            room = vq_chain_writable_len(p->rx_chain);
        /* Chains without room may have been pushed back. */
        virtio_notify_queue(&p->vs->vdev, q);
    }
    if (!room)
        p->rx_paused = true;
    pthread_mutex_unlock(&p->vs->qlock[q]);
    return room;
}

static void port_receive(void *opaque, const uint8_t *buf, size_t len)
{
    struct vs_port *p = opaque;
    struct virtio_device *vdev = &p->vs->vdev;
    unsigned q = virtio_serial_rx_queue(p->nr);
    struct virtqueue *vq = &vdev->vq[q];
    pthread_mutex_lock(&p->vs->qlock[q]);
    if (!p->running || !p->guest_connected) {
        pthread_mutex_unlock(&p->vs->qlock[q]);
        return; /* can_receive said 0: a chardev that ignores it loses the input */
    }
    /* A chardev that ignores can_receive loses what does not fit: never block the main loop. */
    while (len > 0 && rx_get_chain(p)) {
        uint32_t room = vq_chain_writable_len(p->rx_chain);
        uint32_t n = len < room ? (uint32_t)len : room;
        if (vq_chain_write(vq, p->rx_chain, 0, buf, n) < 0)
            n = 0; /* cannot happen: n is within the writable part */
        /* Push at once, even partly filled: the guest should see input now. */
        vq_push(vq, p->rx_chain->head, n);
        p->rx_have = false;
        buf += n;
        len -= n;
        if (n == 0)
            break;
    }
    virtio_notify_queue(vdev, q);
    pthread_mutex_unlock(&p->vs->qlock[q]);
}

/* ---- control messages: worker thread ---- */

/* Queue a message for the guest; called with the control rx lock held. */
static void ctrl_queue(struct virtio_serial *vs, uint32_t id, uint16_t event, uint16_t value)
{
    if (vs->pend_count == VS_CTRL_PENDING)
        return; /* see VS_CTRL_PENDING */
    struct ctrl_msg *m = &vs->pending[(vs->pend_head + vs->pend_count) % VS_CTRL_PENDING];
    m->id = id;
    m->event = event;
    m->value = value;
    vs->pend_count++;
}

/* Move pending messages into control rx buffers; control rx lock held. */
static void ctrl_flush(struct virtio_serial *vs)
{
    struct virtio_device *vdev = &vs->vdev;
    struct virtqueue *vq = &vdev->vq[VIRTIO_CONSOLE_CTRL_RX];
    while (vs->pend_count > 0) {
        struct error err = {0};
        int r = vq_pop(vq, &vs->chain, &err);
        if (r < 0) {
            virtio_set_needs_reset(vdev, err.msg);
            break;
        }
        if (r == 0)
            break;
        struct ctrl_msg *m = &vs->pending[vs->pend_head];
        vs->pend_head = (vs->pend_head + 1) % VS_CTRL_PENDING;
        vs->pend_count--;

        uint8_t msg[VIRTIO_CONSOLE_CTRL_SIZE + VIRTIO_SERIAL_NAME_MAX];
        size_t len = VIRTIO_CONSOLE_CTRL_SIZE;
        le_put32(msg, m->id);
        le_put16(msg + 4, m->event);
        le_put16(msg + 6, m->value);
        if (m->event == VIRTIO_CONSOLE_PORT_NAME && m->id < vs->max_ports && vs->ports[m->id] &&
            vs->ports[m->id]->name) {
            size_t n = strlen(vs->ports[m->id]->name);
            memcpy(msg + len, vs->ports[m->id]->name, n);
            len += n;
        }
        uint32_t room = vq_chain_writable_len(&vs->chain);
        uint32_t written = 0;
        /* A buffer too small for the header loses the message (the driver's fault); a name is
         * cut to what fits. */
        if (room >= VIRTIO_CONSOLE_CTRL_SIZE) {
            written = len < room ? (uint32_t)len : room;
            if (vq_chain_write(vq, &vs->chain, 0, msg, written) < 0)
                written = 0;
        }
        vq_push(vq, vs->chain.head, written);
    }
    virtio_notify_queue(vdev, VIRTIO_CONSOLE_CTRL_RX);
}

static void ctrl_send(struct virtio_serial *vs, uint32_t id, uint16_t event, uint16_t value)
{
    pthread_mutex_lock(&vs->qlock[VIRTIO_CONSOLE_CTRL_RX]);
    ctrl_queue(vs, id, event, value);
    pthread_mutex_unlock(&vs->qlock[VIRTIO_CONSOLE_CTRL_RX]);
}

static void set_guest_connected(struct vs_port *p, bool on)
{
    pthread_mutex_t *l = &p->vs->qlock[virtio_serial_rx_queue(p->nr)];
    pthread_mutex_lock(l);
    p->guest_connected = on;
    bool resume = on && p->rx_paused;
    if (resume)
        p->rx_paused = false;
    pthread_mutex_unlock(l);
    if (resume)
        chardev_accept_input(p->chr);
}

static void ctrl_handle(struct virtio_serial *vs, const uint8_t *msg)
{
    uint32_t id = le_get32(msg);
    uint16_t event = le_get16(msg + 4);
    uint16_t value = le_get16(msg + 6);

    if (event == VIRTIO_CONSOLE_DEVICE_READY) {
        /* The driver is ready for PORT_ADDs (id is not a port: Linux sends ~0). */
        if (value != 1)
            return;
        for (unsigned i = 0; i < vs->max_ports; i++)
            if (vs->ports[i])
                ctrl_send(vs, i, VIRTIO_CONSOLE_DEVICE_ADD, 1);
        return;
    }
    /* The other messages name a port we announced; anything else is ignored. */
    if (id >= vs->max_ports || !vs->ports[id])
        return;
    struct vs_port *p = vs->ports[id];
    switch (event) {
    case VIRTIO_CONSOLE_PORT_READY:
        if (value != 1)
            return; /* the driver could not set the port up */
        if (p->console)
            ctrl_send(vs, id, VIRTIO_CONSOLE_CONSOLE_PORT, 1);
        if (p->name)
            ctrl_send(vs, id, VIRTIO_CONSOLE_PORT_NAME, 1);
        /* The host side is always connected: chardevs have no connection events here. */
        ctrl_send(vs, id, VIRTIO_CONSOLE_PORT_OPEN, 1);
        break;
    case VIRTIO_CONSOLE_PORT_OPEN:
        set_guest_connected(p, value != 0);
        break;
    default:
        break; /* device-to-driver events or unknown: nothing to do */
    }
}

static void service_ctrl_tx(struct virtio_serial *vs)
{
    struct virtio_device *vdev = &vs->vdev;
    struct virtqueue *vq = &vdev->vq[VIRTIO_CONSOLE_CTRL_TX];
    pthread_mutex_lock(&vs->qlock[VIRTIO_CONSOLE_CTRL_TX]);
    for (;;) {
        struct error err = {0};
        int r = vq_pop(vq, &vs->chain, &err);
        if (r < 0) {
            virtio_set_needs_reset(vdev, err.msg);
            break;
        }
        if (r == 0)
            break;
        uint8_t msg[VIRTIO_CONSOLE_CTRL_SIZE];
        /* A short message is ignored (QEMU does the same); the copy is what gets checked. */
        bool ok = vq_chain_readable_len(&vs->chain) >= sizeof(msg) &&
                  vq_chain_read(vq, &vs->chain, 0, msg, sizeof(msg)) == 0;
        vq_push(vq, vs->chain.head, 0);
        if (ok)
            ctrl_handle(vs, msg);
    }
    virtio_notify_queue(vdev, VIRTIO_CONSOLE_CTRL_TX);
    pthread_mutex_unlock(&vs->qlock[VIRTIO_CONSOLE_CTRL_TX]);

    pthread_mutex_lock(&vs->qlock[VIRTIO_CONSOLE_CTRL_RX]);
    ctrl_flush(vs);
    pthread_mutex_unlock(&vs->qlock[VIRTIO_CONSOLE_CTRL_RX]);
}

/* ---- guest output and rx kicks: worker thread ---- */

static void service_tx(struct virtio_serial *vs, unsigned q)
{
    struct virtio_device *vdev = &vs->vdev;
    struct virtqueue *vq = &vdev->vq[q];
    struct vs_port *p = port_of_queue(vs, q);
    pthread_mutex_lock(&vs->qlock[q]);
    /* A queue's worth per wake-up, then come back through the kick fd: the other queues and
     * stop() must not wait for a guest that keeps writing. */
    for (unsigned budget = vq->size;; budget--) {
        if (budget == 0) {
            virtio_kick(vdev, q);
            break;
        }
        struct error err = {0};
        int r = vq_pop(vq, &vs->chain, &err);
        if (r < 0) {
            virtio_set_needs_reset(vdev, err.msg);
            break;
        }
        if (r == 0)
            break;
        /* Output to a port that does not exist is dropped, like output while unconnected. */
        for (unsigned i = 0; p && i < vs->chain.nr_readable; i++) {
            const struct vq_segment *s = &vs->chain.seg[i];
            const void *data = vq_segment_ptr(vq, s);
            if (data && s->len)
                chardev_write(p->chr, data, s->len);
        }
        vq_push(vq, vs->chain.head, 0);
    }
    virtio_notify_queue(vdev, q);
    pthread_mutex_unlock(&vs->qlock[q]);
}

static void service_rx_kick(struct virtio_serial *vs, unsigned q)
{
    struct vs_port *p = port_of_queue(vs, q);
    if (!p)
        return;
    pthread_mutex_lock(&vs->qlock[q]);
    bool resume = p->rx_paused && p->guest_connected;
    if (resume)
        p->rx_paused = false;
    pthread_mutex_unlock(&vs->qlock[q]);
    /* The chardev calls can_receive again on the main thread, which pops the new buffers. */
    if (resume)
        chardev_accept_input(p->chr);
}

static void service_queue(struct virtio_serial *vs, unsigned q)
{
    if (q == VIRTIO_CONSOLE_CTRL_TX) {
        if (vs->multiport)
            service_ctrl_tx(vs);
    } else if (q == VIRTIO_CONSOLE_CTRL_RX) {
        if (vs->multiport) {
            pthread_mutex_lock(&vs->qlock[q]);
            ctrl_flush(vs);
            pthread_mutex_unlock(&vs->qlock[q]);
        }
    } else if (q & 1) {
        service_tx(vs, q);
    } else {
        service_rx_kick(vs, q);
    }
}

static void *worker(void *opaque)
{
    pthread_setname_np(pthread_self(), "virtio-serial");
    struct virtio_serial *vs = opaque;
    struct virtio_device *vdev = &vs->vdev;
    struct pollfd pfd[VIRTIO_MAX_QUEUES + 1];
    unsigned n = vdev->nqueues;
    for (unsigned q = 0; q < n; q++)
        pfd[q] = (struct pollfd){.fd = vdev->kick_fd[q], .events = POLLIN};
    pfd[n] = (struct pollfd){.fd = vs->stop_fd, .events = POLLIN};
    for (;;) {
        int r = poll(pfd, n + 1, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (pfd[n].revents & POLLIN))
            break;
        for (unsigned q = 0; q < n; q++)
            if ((pfd[q].revents & POLLIN) && os_event_drain(pfd[q].fd))
                service_queue(vs, q);
    }
    return NULL;
}

/* ---- lifecycle (vdev->lock held) ---- */

static void set_running(struct virtio_serial *vs, bool on)
{
    for (unsigned i = 0; i < vs->max_ports; i++) {
        struct vs_port *p = vs->ports[i];
        if (!p)
            continue;
        pthread_mutex_t *l = &vs->qlock[virtio_serial_rx_queue(i)];
        pthread_mutex_lock(l);
        p->running = on;
        /* The held chain belongs to the queues that are about to be reset. */
        p->rx_have = false;
        pthread_mutex_unlock(l);
    }
}

static int vs_start(struct virtio_device *vdev)
{
    struct virtio_serial *vs = vdev->opaque;
    vs->multiport = virtio_has_feature(vdev, VIRTIO_CONSOLE_F_MULTIPORT);
    set_running(vs, true);
    if (!vs->multiport && vs->ports[0])
        set_guest_connected(vs->ports[0], true); /* a single-port driver uses port 0 at once */
    int e = pthread_create(&vs->thread, NULL, worker, vs);
    if (e) {
        fprintf(stderr, "kemu: %s: cannot start the worker thread: %s\n", vdev->name, strerror(e));
        set_running(vs, false);
        return -1;
    }
    return 0;
}

static void vs_stop(struct virtio_device *vdev)
{
    struct virtio_serial *vs = vdev->opaque;
    os_event_signal(vs->stop_fd);
    pthread_join(vs->thread, NULL);
    os_event_drain(vs->stop_fd);
    set_running(vs, false);
}

static void vs_reset(struct virtio_device *vdev)
{
    struct virtio_serial *vs = vdev->opaque;
    for (unsigned i = 0; i < vs->max_ports; i++) {
        struct vs_port *p = vs->ports[i];
        if (!p)
            continue;
        pthread_mutex_t *l = &vs->qlock[virtio_serial_rx_queue(i)];
        pthread_mutex_lock(l);
        p->guest_connected = false;
        pthread_mutex_unlock(l);
    }
    pthread_mutex_lock(&vs->qlock[VIRTIO_CONSOLE_CTRL_RX]);
    vs->pend_head = vs->pend_count = 0;
    pthread_mutex_unlock(&vs->qlock[VIRTIO_CONSOLE_CTRL_RX]);
    vs->multiport = false;
    fill_config(vs);
}

/* Emergency write: one character to port 0, usable before the queues (vCPU thread). */
static void vs_config_write(struct virtio_device *vdev, unsigned offset, unsigned size)
{
    struct virtio_serial *vs = vdev->opaque;
    uint8_t c = vdev->config[VIRTIO_CONSOLE_CFG_EMERG_WR];
    if (offset == VIRTIO_CONSOLE_CFG_EMERG_WR && size >= 1 && vs->ports[0])
        chardev_write(vs->ports[0]->chr, &c, 1);
    fill_config(vs); /* everything else is read-only: undo what the core stored */
}

static const struct virtio_device_ops vs_ops = {
    .reset = vs_reset,
    .start = vs_start,
    .stop = vs_stop,
    .config_write = vs_config_write,
};

/* ---- setup ---- */

int virtio_serial_create(struct guest_mem *mem, unsigned max_ports, struct virtio_serial **out,
                         struct error *err)
{
    if (max_ports < 1 || max_ports > VIRTIO_SERIAL_MAX_PORTS)
        return error_setf(err, "virtio-serial: max_ports=%u is not in 1..%u", max_ports,
                          VIRTIO_SERIAL_MAX_PORTS);
    struct virtio_serial *vs = calloc(1, sizeof(*vs));
    if (!vs)
        return error_setf(err, "virtio-serial: out of memory");
    vs->max_ports = max_ports;
    vs->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (vs->stop_fd < 0) {
        error_setf_errno(err, errno, "virtio-serial: eventfd");
        free(vs);
        return -1;
    }
    uint64_t features =
        VIRTIO_BIT(VIRTIO_CONSOLE_F_MULTIPORT) | VIRTIO_BIT(VIRTIO_CONSOLE_F_EMERG_WRITE);
    if (virtio_device_init(&vs->vdev, "virtio-serial", &vs_ops, vs, mem, VIRTIO_ID_CONSOLE,
                           features, 2 * (max_ports + 1), VS_QUEUE_SIZE, VIRTIO_CONSOLE_CFG_SIZE,
                           err) < 0) {
        close(vs->stop_fd);
        free(vs);
        return -1;
    }
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
        pthread_mutex_init(&vs->qlock[q], NULL);
    fill_config(vs);
    *out = vs;
    return 0;
}

static unsigned free_port_nr(struct virtio_serial *vs, bool console)
{
    if (console && !vs->ports[0])
        return 0;
    for (unsigned i = 1; i < vs->max_ports; i++)
        if (!vs->ports[i])
            return i;
    return vs->max_ports;
}

int virtio_serial_add_port(struct virtio_serial *vs, int nr, struct chardev *chr, bool console,
                           const char *name, struct error *err)
{
    const char *kind = console ? "virtconsole" : "virtserialport";
    if (name && !*name)
        name = NULL;
    if (nr < -1)
        return error_setf(err, "%s: nr=%d is not a port number", kind, nr);
    if (nr >= (int)vs->max_ports)
        return error_setf(err, "%s: nr=%d is not below max_ports=%u", kind, nr, vs->max_ports);
    if (nr == 0 && !console)
        return error_setf(err, "%s: port number 0 is reserved for virtconsole", kind);
    if (nr >= 0 && vs->ports[nr])
        return error_setf(err, "%s: port number %d is already in use", kind, nr);
    unsigned n = nr >= 0 ? (unsigned)nr : free_port_nr(vs, console);
    if (n >= vs->max_ports)
        return error_setf(err, "%s: no free port number (max_ports=%u)", kind, vs->max_ports);
    if (name && strlen(name) > VIRTIO_SERIAL_NAME_MAX)
        return error_setf(err, "%s: name is longer than %d characters", kind,
                          VIRTIO_SERIAL_NAME_MAX);
    for (unsigned i = 0; name && i < vs->max_ports; i++)
        if (vs->ports[i] && vs->ports[i]->name && !strcmp(vs->ports[i]->name, name))
            return error_setf(err, "%s: a port named '%s' already exists", kind, name);
    if (chr && chr->has_fe)
        return error_setf(err, "%s: chardev '%s' is already in use", kind, chr->id);

    struct vs_port *p = calloc(1, sizeof(*p));
    if (p)
        p->rx_chain = malloc(sizeof(*p->rx_chain));
    if (p && name)
        p->name = strdup(name);
    if (!p || !p->rx_chain || (name && !p->name)) {
        if (p) {
            free(p->rx_chain);
            free(p->name);
        }
        free(p);
        return error_setf(err, "%s: out of memory", kind);
    }
    p->vs = vs;
    p->nr = n;
    p->chr = chr;
    p->console = console;
    vs->ports[n] = p;
    if (chr) {
        struct chardev_frontend fe = {
            .can_receive = port_can_receive,
            .receive = port_receive,
            .opaque = p,
        };
        chardev_set_frontend(chr, &fe);
    }
    return 0;
}

struct virtio_device *virtio_serial_vdev(struct virtio_serial *vs)
{
    return &vs->vdev;
}

void virtio_serial_destroy(struct virtio_serial *vs)
{
    if (!vs)
        return;
    virtio_device_destroy(&vs->vdev);
    for (unsigned i = 0; i < vs->max_ports; i++) {
        struct vs_port *p = vs->ports[i];
        if (!p)
            continue;
        if (p->chr)
            p->chr->has_fe = false; /* no callback into freed memory */
        free(p->rx_chain);
        free(p->name);
        free(p);
    }
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
        pthread_mutex_destroy(&vs->qlock[q]);
    close(vs->stop_fd);
    free(vs);
}
