/*
 * The main event loop: one epoll set on the main thread for every host-side file descriptor
 * (terminal input, sockets, timers, wake-ups from vCPU threads). Callbacks run on the main thread.
 */
#ifndef KEMU_CORE_EVENTLOOP_H
#define KEMU_CORE_EVENTLOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

typedef void (*eventloop_cb)(void *opaque, uint32_t events);

struct eventloop_handler {
    int fd;
    eventloop_cb cb;
    void *opaque;
    struct eventloop_handler *next;
    bool dead;
};

struct eventloop {
    int epfd;
    struct eventloop_handler *handlers;
    volatile bool quit;
};

int eventloop_init(struct eventloop *loop, struct error *err);
void eventloop_destroy(struct eventloop *loop);
/* events: EPOLLIN/EPOLLOUT... Returns 0 or -1 (err set). */
int eventloop_add(struct eventloop *loop, int fd, uint32_t events, eventloop_cb cb, void *opaque,
                  struct error *err);
int eventloop_modify(struct eventloop *loop, int fd, uint32_t events);
void eventloop_remove(struct eventloop *loop, int fd);
/* Dispatch events until eventloop_quit(); timeout_ms < 0 waits forever per round. */
void eventloop_run(struct eventloop *loop);
void eventloop_quit(struct eventloop *loop);

#endif
