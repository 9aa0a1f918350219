/* Process-level services: pid file, daemonizing, termination signals, TCP sockets, shared
 * libraries opened at first use. */
#ifndef KEMU_CORE_OS_H
#define KEMU_CORE_OS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/error.h"
#include "core/eventloop.h"

/* A TCP socket listening on (server) or connected to host:port ("" host: any address), the
 * first address that works; family AF_UNSPEC, AF_INET or AF_INET6. Returns the fd or -1. */
int os_tcp_socket(const char *host, const char *port, bool server, int family, bool nodelay,
                  struct error *err);

/* Split "HOST:PORT" at its last ':' into host (without the brackets of "[v6addr]") and port.
 * 0, -EINVAL without a ':' or with an empty port, -ENAMETOOLONG if a part does not fit. */
int os_split_host_port(const char *s, char *host, size_t hostsz, char *port, size_t portsz);

/* A UNIX stream socket at path: bound and listening when server (a stale socket file from an
 * earlier run is removed first, as QEMU does), connected otherwise. -1 with err set on failure. */
int os_unix_socket(const char *path, bool server, struct error *err);

/* Create and lock the pid file; it stays locked until os_pidfile_remove(). */
int os_pidfile_create(const char *path, struct error *err);
void os_pidfile_remove(void);

/*
 * -daemonize: fork. In the parent this waits for the child's verdict and returns 1 with
 * *parent_status set (the caller exits with it); in the child it returns 0.
 */
int os_daemonize_start(int *parent_status, struct error *err);
/* Child: start-up succeeded (or failed); detach from the terminal and release the parent. */
void os_daemonize_finish(int status);

struct os_signals {
    int fd; /* signalfd for SIGTERM, SIGINT, SIGHUP */
};
/* Block the termination signals (before threads start) and route them to a signalfd. */
int os_signals_init(struct os_signals *s, struct error *err);
/* Read one pending signal; returns its number and the sender's pid, or -1. */
int os_signals_read(struct os_signals *s, int *pid);
/* Restore the terminal before dying from a crash signal. */
void os_install_crash_handlers(void);

/* Counter descriptors (eventfd, timerfd) that only say "look again". Signalling adds one; it
 * fails only when the counter is saturated, and then the fd is readable anyway, so it returns
 * nothing. Draining reads and resets the count: 0 when nothing was pending (a non-blocking fd). */
void os_event_signal(int fd);
uint64_t os_event_drain(int fd);

/*
 * A shared library opened with dlopen() when a feature first needs it, rather than linked: a
 * linked library is mapped, relocated and initialised at every start, and its pages count in
 * the resident memory of runs that never use it (libslirp brings glib with it: 1.4 MiB).
 */
struct os_lib_fn {
    const char *name;
    void **addr; /* where the function's address goes: (void **)&table.fn, as POSIX's dlsym */
};
struct os_lib {
    const char *soname; /* "libslirp.so.0" */
    const char *what;   /* the feature, for the error: "user-mode networking (-netdev user)" */
    const struct os_lib_fn *fns;
    size_t nfns;
    atomic_int state; /* private: 0 not tried yet, 1 open, -1 failed */
    char error[256];  /* private: the failure, repeated to later callers */
};
/* Open the library and fill every fn, once per struct os_lib (thread-safe); later calls return
 * the first outcome. 0, or -1 with "WHAT needs SONAME: <dlerror>". The library stays open. */
int os_lib_open(struct os_lib *lib, struct error *err);
/* A library function reached before os_lib_open() succeeded: a bug in kemu; says so, aborts. */
_Noreturn void os_lib_unopened(const struct os_lib *lib, const char *fn);
/* ptr, a resolved function of lib, or os_lib_unopened() when it is not: a trampoline's
 * FN(n) passes table.p_##n and #n, pasted there so that n, often a macro, is not expanded. */
#define OS_LIB_FN(lib, ptr, name) ((ptr) ? (ptr) : (os_lib_unopened(&(lib), name), (ptr)))

#endif
