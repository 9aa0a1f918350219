/* Constructors of the chardev backends; chardev/chardev.c builds them from -chardev/-serial. */
#ifndef KEMU_CHARDEV_BACKENDS_H
#define KEMU_CHARDEV_BACKENDS_H

#include "chardev/chardev.h"
#include "core/eventloop.h"

/* Host-side events a console can raise (Ctrl-A x on a mux, a socket peer closing...). */
struct chardev_host_ops {
    void (*quit)(void *opaque); /* the user asked to end the emulator */
    void *opaque;
};

struct chardev_stdio_opts {
    bool mux;    /* QEMU's Ctrl-A escapes (-nographic, mon:stdio, mux=on) */
    bool signal; /* Ctrl-C etc. reach kemu as signals; off: they go to the guest */
};

struct chardev *chardev_stdio_new(struct eventloop *loop, const struct chardev_stdio_opts *o,
                                  const struct chardev_host_ops *host, struct error *err);
struct chardev *chardev_file_new(const char *path, bool append, struct error *err);
struct chardev *chardev_null_new(struct error *err);
/* A UNIX socket: server=true listens (and, if wait, blocks until a client connects). */
struct chardev *chardev_socket_new(struct eventloop *loop, const char *path, bool server, bool wait,
                                   struct error *err);
/* The same over TCP; host "" listens on every address. */
struct chardev *chardev_socket_tcp_new(struct eventloop *loop, const char *host, const char *port,
                                       bool server, bool wait, struct error *err);
void chardev_free(struct chardev *c);

/* Put the terminal back the way kemu found it; safe to call more than once and from signals. */
void chardev_stdio_restore_terminal(void);

#endif
