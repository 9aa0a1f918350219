/* The terminal as a console: raw mode while kemu runs, restored on every way out. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "chardev/fdchr.h"

/* Process-wide by nature: there is one terminal, and signal handlers must reach it. */
static struct termios saved_tio;
static volatile sig_atomic_t tio_saved;

void chardev_stdio_restore_terminal(void)
{
    if (tio_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
        tio_saved = 0;
    }
}

static void stdio_close(struct chardev *c)
{
    struct fdchr *f = (struct fdchr *)c;
    fdchr_fini(f);
    chardev_stdio_restore_terminal();
    free(f);
}

static const struct chardev_ops stdio_ops = {
    .write = fdchr_write,
    .accept_input = fdchr_accept_input,
    .close = stdio_close,
};

/* Only a multiplexed console can share itself with a monitor. */
static const struct chardev_ops stdio_mux_ops = {
    .write = fdchr_write,
    .accept_input = fdchr_accept_input,
    .close = stdio_close,
    .set_monitor = fdchr_set_monitor,
};

static void stdio_eof(struct fdchr *f)
{
    /* Input ended (a pipe closed): the guest keeps running with no more input, as in QEMU. */
}

struct chardev *chardev_stdio_new(struct eventloop *loop, const struct chardev_stdio_opts *o,
                                  const struct chardev_host_ops *host, struct error *err)
{
    static bool in_use;
    if (in_use) {
        error_setf(err, "cannot use stdio by multiple character devices");
        return NULL;
    }
    struct fdchr *f = calloc(1, sizeof(*f));
    if (!f) {
        error_setf(err, "out of memory");
        return NULL;
    }
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
        struct termios t = saved_tio;
        /* Raw input, but keep output post-processing so the host's newlines stay sane. */
        t.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
        t.c_oflag |= OPOST;
        t.c_lflag &= ~(ECHO | ECHONL | ICANON | IEXTEN);
        if (!o->signal)
            t.c_lflag &= ~ISIG;
        t.c_cflag &= ~(CSIZE | PARENB);
        t.c_cflag |= CS8;
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        tio_saved = 1;
        atexit(chardev_stdio_restore_terminal);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    if (fdchr_init(f, o->mux ? &stdio_mux_ops : &stdio_ops, loop, STDIN_FILENO, STDOUT_FILENO,
                   err) < 0) {
        fdchr_fini(f);
        free(f);
        chardev_stdio_restore_terminal();
        return NULL;
    }
    f->mux = o->mux;
    if (host)
        f->host = *host;
    f->on_eof = stdio_eof;
    in_use = true;
    return &f->base;
}
