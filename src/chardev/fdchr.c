#include "chardev/fdchr.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/os.h"

static void watch(struct fdchr *f, bool on)
{
    if (f->in_fd < 0 || f->reading == on)
        return;
    eventloop_modify(f->loop, f->in_fd, on ? EPOLLIN : 0);
    f->reading = on;
}

/* Hand buffered input to the frontend; pause reading while it has no room. */
static void deliver(struct fdchr *f)
{
    for (;;) {
        /* Input goes to whoever has the focus: the guest's port, or the monitor after C-a c. */
        const struct chardev_frontend *fe = f->mon_focus ? &f->mon : &f->base.fe;
        if (f->pend_len == 0 || (!f->mon_focus && !f->base.has_fe))
            break;
        size_t room = fe->can_receive(fe->opaque);
        if (room == 0)
            break;
        size_t n = room < f->pend_len ? room : f->pend_len;
        fe->receive(fe->opaque, f->pending + f->pend_off, n);
        f->pend_off += n;
        f->pend_len -= n;
    }
    if (f->pend_len == 0) {
        f->pend_off = 0;
        watch(f, true);
    } else {
        watch(f, false);
    }
}

static void write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            /* A socket peer reading slower than a long monitor reply: give it a moment, then
             * drop, so a peer that never reads cannot hold kemu. */
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 500) == 1 && !(p.revents & (POLLERR | POLLHUP)))
                continue;
        }
        if (n <= 0)
            return; /* the reader went away or would block: console output is dropped */
        p += n;
        len -= (size_t)n;
    }
}

static void handle_mux(struct fdchr *f, enum mux_event ev)
{
    switch (ev) {
    case MUX_QUIT:
        write_all(f->out_fd, "kemu: terminated\r\n", 18);
        if (f->host.quit)
            f->host.quit(f->host.opaque);
        break;
    case MUX_HELP:
        write_all(f->out_fd, mux_help_text, strlen(mux_help_text));
        break;
    case MUX_SWITCH:
        if (!f->has_mon) {
            write_all(f->out_fd, "\r\nkemu: no monitor on this console\r\n", 37);
            break;
        }
        f->mon_focus = !f->mon_focus;
        if (f->mon_focus && f->mon.opened)
            f->mon.opened(f->mon.opaque);
        break;
    default:
        break; /* break, timestamps and sync have nothing to act on yet */
    }
}

static void on_input(void *opaque, uint32_t events)
{
    struct fdchr *f = opaque;
    uint8_t raw[sizeof(f->pending)];
    size_t room = sizeof(f->pending) - f->pend_off - f->pend_len;
    if (room == 0)
        return;
    ssize_t n = read(f->in_fd, raw, room);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        eventloop_remove(f->loop, f->in_fd);
        f->reading = false;
        int fd = f->in_fd;
        f->in_fd = -1;
        if (f->on_eof)
            f->on_eof(f);
        (void)fd;
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        /* Bytes before a focus switch go to the old owner, the rest to the new one. */
        uint8_t *dst = f->pending + f->pend_off + f->pend_len;
        if (!f->mux) {
            *dst = raw[i];
            f->pend_len++;
            continue;
        }
        uint8_t c;
        enum mux_event ev = mux_input(&f->mux_state, raw[i], &c);
        if (ev == MUX_DELIVER) {
            *dst = c;
            f->pend_len++;
        } else if (ev == MUX_SWITCH) {
            /* Input typed before the switch belongs to the old owner: what it cannot take now
             * is dropped (as a UART overrun) rather than run as monitor commands. */
            deliver(f);
            f->pend_off = f->pend_len = 0;
            handle_mux(f, ev);
        } else if (ev != MUX_SWALLOW) {
            handle_mux(f, ev);
        }
    }
    deliver(f);
}

static void on_kick(void *opaque, uint32_t events)
{
    struct fdchr *f = opaque;
    os_event_drain(f->kick_fd);
    deliver(f);
}

int fdchr_init(struct fdchr *f, const struct chardev_ops *ops, struct eventloop *loop, int in_fd,
               int out_fd, struct error *err)
{
    f->base.ops = ops;
    f->loop = loop;
    f->in_fd = -1;
    f->out_fd = out_fd;
    f->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (f->kick_fd < 0)
        return error_setf_errno(err, errno, "eventfd");
    if (eventloop_add(loop, f->kick_fd, EPOLLIN, on_kick, f, err) < 0)
        return -1;
    if (in_fd >= 0) {
        struct error e = {0};
        if (eventloop_add(loop, in_fd, EPOLLIN, on_input, f, &e) == 0) {
            f->in_fd = in_fd;
            f->reading = true;
        }
        /* Otherwise the input cannot be polled (a regular file, /dev/null): run without input,
         * as QEMU does. */
    }
    return 0;
}

void fdchr_set_input(struct fdchr *f, int in_fd)
{
    if (f->in_fd >= 0)
        eventloop_remove(f->loop, f->in_fd);
    f->in_fd = -1;
    f->reading = false;
    if (in_fd >= 0 && eventloop_add(f->loop, in_fd, EPOLLIN, on_input, f, NULL) == 0) {
        f->in_fd = in_fd;
        f->reading = true;
        deliver(f);
    }
}

void fdchr_fini(struct fdchr *f)
{
    if (f->in_fd >= 0)
        eventloop_remove(f->loop, f->in_fd);
    if (f->kick_fd >= 0) {
        eventloop_remove(f->loop, f->kick_fd);
        close(f->kick_fd);
    }
    f->in_fd = f->kick_fd = -1;
}

ssize_t fdchr_write(struct chardev *c, const uint8_t *buf, size_t len)
{
    struct fdchr *f = (struct fdchr *)c;
    if (f->out_fd >= 0)
        write_all(f->out_fd, buf, len);
    return (ssize_t)len;
}

void fdchr_accept_input(struct chardev *c)
{
    struct fdchr *f = (struct fdchr *)c;
    os_event_signal(f->kick_fd);
}

void fdchr_set_monitor(struct chardev *c, const struct chardev_frontend *fe)
{
    struct fdchr *f = (struct fdchr *)c;
    f->mon = *fe;
    f->has_mon = true;
}
