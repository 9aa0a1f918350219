/*
 * Shared plumbing of the chardevs that read host input from a file descriptor (stdio, sockets):
 * input is buffered and handed to the frontend only as fast as it can take it, so typing into a
 * full UART FIFO pauses reading instead of dropping bytes.
 */
#ifndef KEMU_CHARDEV_FDCHR_H
#define KEMU_CHARDEV_FDCHR_H

#include "chardev/backends.h"
#include "chardev/mux.h"

struct fdchr {
    struct chardev base;
    struct eventloop *loop;
    int in_fd;   /* -1: no input */
    int out_fd;  /* -1: output discarded */
    int kick_fd; /* eventfd: the frontend has room again */
    bool reading;
    bool mux;
    struct mux_state mux_state;
    /* mux: the monitor sharing the console, and whether Ctrl-A c gave it the input. */
    struct chardev_frontend mon;
    bool has_mon, mon_focus;
    struct chardev_host_ops host;
    uint8_t pending[4096];
    size_t pend_off, pend_len;
    void (*on_eof)(struct fdchr *f); /* input hit EOF or an error */
};

int fdchr_init(struct fdchr *f, const struct chardev_ops *ops, struct eventloop *loop, int in_fd,
               int out_fd, struct error *err);
void fdchr_fini(struct fdchr *f);
/* Start or stop watching in_fd; switch in_fd (a socket's new client). */
void fdchr_set_input(struct fdchr *f, int in_fd);
ssize_t fdchr_write(struct chardev *c, const uint8_t *buf, size_t len);
void fdchr_accept_input(struct chardev *c);
void fdchr_set_monitor(struct chardev *c, const struct chardev_frontend *fe);

#endif
