/* A socket chardev (UNIX or TCP): as a server it serves one client at a time; as a client it
 * connects. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chardev/fdchr.h"
#include "core/os.h"

struct sockchr {
    struct fdchr f;
    int listen_fd;
    int client_fd;
    char path[128]; /* "unix:PATH" or "tcp:HOST:PORT" for messages */
    bool unlink_path;
};

static void drop_client(struct sockchr *s)
{
    if (s->client_fd >= 0) {
        if (s->f.in_fd == s->client_fd)
            fdchr_set_input(&s->f, -1);
        close(s->client_fd);
    }
    s->client_fd = -1;
    s->f.out_fd = -1;
}

static void adopt_client(struct sockchr *s, int fd)
{
    drop_client(s);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    s->client_fd = fd;
    s->f.out_fd = fd;
    fdchr_set_input(&s->f, fd);
    if (s->f.base.has_fe && s->f.base.fe.opened)
        s->f.base.fe.opened(s->f.base.fe.opaque);
}

static void on_accept(void *opaque, uint32_t events)
{
    struct sockchr *s = opaque;
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (s->client_fd >= 0) {
        close(fd); /* one client at a time, as QEMU */
        return;
    }
    adopt_client(s, fd);
}

static void sock_eof(struct fdchr *f)
{
    struct sockchr *s = (struct sockchr *)f;
    /* fdchr already stopped watching the descriptor. */
    if (s->client_fd >= 0)
        close(s->client_fd);
    s->client_fd = -1;
    s->f.out_fd = -1;
}

static void sock_close(struct chardev *c)
{
    struct sockchr *s = (struct sockchr *)c;
    drop_client(s);
    fdchr_fini(&s->f);
    if (s->listen_fd >= 0) {
        eventloop_remove(s->f.loop, s->listen_fd);
        close(s->listen_fd);
        if (s->unlink_path)
            unlink(s->path + 5);
    }
    free(s);
}

static const struct chardev_ops sock_ops = {
    .write = fdchr_write,
    .accept_input = fdchr_accept_input,
    .close = sock_close,
};

static struct chardev *socket_finish(struct sockchr *s, struct eventloop *loop, int fd, bool wait,
                                     struct error *err);

struct chardev *chardev_socket_new(struct eventloop *loop, const char *path, bool server, bool wait,
                                   struct error *err)
{
    struct sockchr *s = calloc(1, sizeof(*s));
    if (!s) {
        error_setf(err, "out of memory");
        return NULL;
    }
    s->listen_fd = s->client_fd = -1;
    if (fdchr_init(&s->f, &sock_ops, loop, -1, -1, err) < 0)
        goto fail;
    s->f.on_eof = sock_eof;
    int fd = os_unix_socket(path, server, err);
    if (fd < 0)
        goto fail;
    if (!server) {
        adopt_client(s, fd);
        return &s->f.base;
    }
    snprintf(s->path, sizeof(s->path), "unix:%s", path);
    s->unlink_path = true;
    return socket_finish(s, loop, fd, wait, err);
fail:
    sock_close(&s->f.base);
    return NULL;
}

/* Listening socket fd is bound: wait for the first client if asked, then accept in the loop. */
static struct chardev *socket_finish(struct sockchr *s, struct eventloop *loop, int fd, bool wait,
                                     struct error *err)
{
    const char *path = s->path;
    s->listen_fd = fd;
    if (wait) {
        fprintf(stderr, "kemu: waiting for connection on: disconnected:%s,server=on\n", path);
        int c;
        do {
            c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        } while (c < 0 && errno == EINTR);
        if (c < 0) {
            error_setf_errno(err, errno, "accept on %s", path);
            goto fail;
        }
        adopt_client(s, c);
    }
    if (eventloop_add(loop, fd, EPOLLIN, on_accept, s, err) < 0)
        goto fail;
    return &s->f.base;
fail:
    sock_close(&s->f.base);
    return NULL;
}

struct chardev *chardev_socket_tcp_new(struct eventloop *loop, const char *host, const char *port,
                                       bool server, bool wait, struct error *err)
{
    struct sockchr *s = calloc(1, sizeof(*s));
    if (!s) {
        error_setf(err, "out of memory");
        return NULL;
    }
    s->listen_fd = s->client_fd = -1;
    snprintf(s->path, sizeof(s->path), "tcp:%s:%s", host, port);
    if (fdchr_init(&s->f, &sock_ops, loop, -1, -1, err) < 0)
        goto fail;
    s->f.on_eof = sock_eof;
    int fd = os_tcp_socket(host, port, server, AF_UNSPEC, false, err);
    if (fd < 0)
        goto fail;
    if (!server) {
        adopt_client(s, fd);
        return &s->f.base;
    }
    return socket_finish(s, loop, fd, wait, err);
fail:
    sock_close(&s->f.base);
    return NULL;
}
