#include "core/eventloop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

int eventloop_init(struct eventloop *loop, struct error *err)
{
    memset(loop, 0, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        return error_setf_errno(err, errno, "epoll_create1");
    return 0;
}

static void reap(struct eventloop *loop)
{
    struct eventloop_handler **pp = &loop->handlers;
    while (*pp) {
        struct eventloop_handler *h = *pp;
        if (h->dead) {
            *pp = h->next;
            free(h);
        } else {
            pp = &h->next;
        }
    }
}

void eventloop_destroy(struct eventloop *loop)
{
    for (struct eventloop_handler *h = loop->handlers; h; h = h->next)
        h->dead = true;
    reap(loop);
    if (loop->epfd >= 0)
        close(loop->epfd);
    loop->epfd = -1;
}

int eventloop_add(struct eventloop *loop, int fd, uint32_t events, eventloop_cb cb, void *opaque,
                  struct error *err)
{
    struct eventloop_handler *h = calloc(1, sizeof(*h));
    if (!h)
        return error_setf(err, "out of memory");
    h->fd = fd;
    h->cb = cb;
    h->opaque = opaque;
    struct epoll_event ev = {.events = events, .data.ptr = h};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = errno;
        free(h);
        return error_setf_errno(err, e, "epoll_ctl(add fd %d)", fd);
    }
    h->next = loop->handlers;
    loop->handlers = h;
    return 0;
}

static struct eventloop_handler *find(struct eventloop *loop, int fd)
{
    for (struct eventloop_handler *h = loop->handlers; h; h = h->next)
        if (h->fd == fd && !h->dead)
            return h;
    return NULL;
}

int eventloop_modify(struct eventloop *loop, int fd, uint32_t events)
{
    struct eventloop_handler *h = find(loop, fd);
    if (!h)
        return -1;
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void eventloop_remove(struct eventloop *loop, int fd)
{
    struct eventloop_handler *h = find(loop, fd);
    if (!h)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    h->dead = true; /* freed after the current dispatch round, events may still point at it */
}

void eventloop_run(struct eventloop *loop)
{
    struct epoll_event evs[32];
    while (!loop->quit) {
        int n = epoll_wait(loop->epfd, evs, 32, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < n && !loop->quit; i++) {
            struct eventloop_handler *h = evs[i].data.ptr;
            if (!h->dead)
                h->cb(h->opaque, evs[i].events);
        }
        reap(loop);
    }
}

void eventloop_quit(struct eventloop *loop)
{
    loop->quit = true;
}
