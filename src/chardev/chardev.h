/*
 * Character devices: the host side of a serial port or console (stdio, a file, a socket, null).
 * A frontend (a UART, later a virtio console or a monitor) attaches to one chardev; the chardev
 * pushes host input to it and the frontend writes guest output through chardev_write().
 */
#ifndef KEMU_CHARDEV_CHARDEV_H
#define KEMU_CHARDEV_CHARDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/error.h"

struct chardev;

struct chardev_frontend {
    /* Bytes the frontend can take right now; 0 pauses input until chardev_accept_input(). */
    size_t (*can_receive)(void *opaque);
    void (*receive)(void *opaque, const uint8_t *buf, size_t len);
    /* A peer connected (socket) or the console switched to this frontend (mux); may be NULL. */
    void (*opened)(void *opaque);
    void *opaque;
};

struct chardev_ops {
    /* Write guest output; may be called from any thread; never blocks for long. */
    ssize_t (*write)(struct chardev *c, const uint8_t *buf, size_t len);
    /* Frontend has room again (thread-safe): resume delivering input. May be NULL. */
    void (*accept_input)(struct chardev *c);
    void (*close)(struct chardev *c);
    /* Multiplexed consoles only (else NULL): attach the monitor that Ctrl-A c switches to. */
    void (*set_monitor)(struct chardev *c, const struct chardev_frontend *fe);
};

struct chardev {
    const struct chardev_ops *ops;
    char id[64];
    struct chardev_frontend fe;
    bool has_fe;
};

static inline ssize_t chardev_write(struct chardev *c, const void *buf, size_t len)
{
    return c ? c->ops->write(c, buf, len) : (ssize_t)len;
}

static inline void chardev_accept_input(struct chardev *c)
{
    if (c && c->ops->accept_input)
        c->ops->accept_input(c);
}

static inline void chardev_set_frontend(struct chardev *c, const struct chardev_frontend *fe)
{
    if (!c)
        return;
    c->fe = *fe;
    c->has_fe = true;
}

/* Attach a monitor to a mux console; false if c does not multiplex. */
static inline bool chardev_set_monitor(struct chardev *c, const struct chardev_frontend *fe)
{
    if (!c || !c->ops->set_monitor)
        return false;
    c->ops->set_monitor(c, fe);
    return true;
}

#endif
