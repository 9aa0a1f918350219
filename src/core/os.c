#include "core/os.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "chardev/backends.h"

static char *pidfile_path;
static int pidfile_fd = -1;
static int daemon_pipe = -1;

int os_pidfile_create(const char *path, struct error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return error_setf_errno(err, errno, "-pidfile %s: cannot open pid file", path);
    struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &lk) < 0) {
        int e = errno;
        close(fd);
        if (e == EAGAIN || e == EACCES)
            return error_setf(err, "-pidfile %s: already locked by another process", path);
        return error_setf_errno(err, e, "-pidfile %s: cannot lock pid file", path);
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || write(fd, buf, n) != n) {
        int e = errno;
        close(fd);
        return error_setf_errno(err, e, "-pidfile %s: cannot write pid file", path);
    }
    pidfile_fd = fd;
    pidfile_path = realpath(path, NULL);
    return 0;
}

void os_pidfile_remove(void)
{
    if (pidfile_fd < 0)
        return;
    if (pidfile_path)
        unlink(pidfile_path);
    close(pidfile_fd);
    free(pidfile_path);
    pidfile_path = NULL;
    pidfile_fd = -1;
}

int os_daemonize_start(int *parent_status, struct error *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return error_setf_errno(err, errno, "-daemonize: pipe");
    pid_t pid = fork();
    if (pid < 0)
        return error_setf_errno(err, errno, "-daemonize: fork");
    if (pid > 0) {
        close(fds[1]);
        unsigned char status = 1;
        ssize_t n;
        do {
            n = read(fds[0], &status, 1);
        } while (n < 0 && errno == EINTR);
        close(fds[0]);
        /* No byte: the child died before finishing start-up; it printed why. */
        *parent_status = n == 1 ? status : 1;
        return 1;
    }
    close(fds[0]);
    daemon_pipe = fds[1];
    setsid();
    /* A second fork so the daemon can never reacquire a controlling terminal. */
    pid = fork();
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    umask(027);
    return 0;
}

void os_daemonize_finish(int status)
{
    if (daemon_pipe < 0)
        return;
    if (status == 0) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, STDIN_FILENO);
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            if (fd > STDERR_FILENO)
                close(fd);
        }
        if (chdir("/") < 0) {
            /* Nothing to report to: stderr is gone. Staying where we are is harmless. */
        }
    }
    unsigned char b = (unsigned char)status;
    ssize_t r = write(daemon_pipe, &b, 1);
    (void)r;
    close(daemon_pipe);
    daemon_pipe = -1;
}

int os_signals_init(struct os_signals *s, struct error *err)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return error_setf(err, "cannot block signals");
    s->fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s->fd < 0)
        return error_setf_errno(err, errno, "signalfd");
    signal(SIGPIPE, SIG_IGN); /* a closed console socket must not kill the VM */
    return 0;
}

int os_signals_read(struct os_signals *s, int *pid)
{
    struct signalfd_siginfo si;
    if (read(s->fd, &si, sizeof(si)) != sizeof(si))
        return -1;
    *pid = (int)si.ssi_pid;
    return (int)si.ssi_signo;
}

static void crash_handler(int sig)
{
    chardev_stdio_restore_terminal();
    signal(sig, SIG_DFL);
    raise(sig);
}

void os_install_crash_handlers(void)
{
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], crash_handler);
}

int os_split_host_port(const char *s, char *host, size_t hostsz, char *port, size_t portsz)
{
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1])
        return -EINVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= hostsz || strlen(colon + 1) >= portsz)
        return -ENAMETOOLONG;
    memcpy(host, h, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

int os_tcp_socket(const char *host, const char *port, bool server, int family, bool nodelay,
                  struct error *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_family = family,
                             .ai_flags = AI_ADDRCONFIG | (server ? AI_PASSIVE : 0)};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc)
        return error_setf(err, "address resolution failed for %s:%s: %s", host, port,
                          gai_strerror(rc));
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        if (server) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
                break;
        } else if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            if (nodelay)
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            break;
        }
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return error_setf_errno(err, e, "Failed to %s %s:%s", server ? "listen on" : "connect to",
                                host, port);
    return fd;
}

int os_unix_socket(const char *path, bool server, struct error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return error_setf(err, "UNIX socket path '%s' is too long", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return error_setf_errno(err, errno, "socket");
    if (server) {
        unlink(path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
            int e = errno;
            close(fd);
            return error_setf_errno(err, e, "Failed to bind socket to %s", path);
        }
    } else if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return error_setf_errno(err, e, "Failed to connect to '%s'", path);
    }
    return fd;
}

int os_lib_open(struct os_lib *lib, struct error *err)
{
    /* Open already: no lock (qcow2 asks at every compressed cluster, from several workers). The
     * release store below publishes the resolved pointers with the state. */
    if (atomic_load_explicit(&lib->state, memory_order_acquire) > 0)
        return 0;
    /* One lock for every library: opening happens a few times per run at most. */
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    if (!atomic_load_explicit(&lib->state, memory_order_relaxed)) {
        atomic_store_explicit(&lib->state, -1, memory_order_relaxed);
        /* RTLD_NOW: a missing function shows here, not as a crash at its first call. */
        void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            /* dlerror() starts with the name already ("libslirp.so.0: cannot open ..."). */
            const char *why = dlerror();
            size_t n = strlen(lib->soname);
            if (why && !strncmp(why, lib->soname, n) && !strncmp(why + n, ": ", 2))
                why += n + 2;
            snprintf(lib->error, sizeof(lib->error), "%s needs %s: %s", lib->what, lib->soname,
                     why ? why : "cannot open it");
        } else {
            size_t i = 0;
            for (; i < lib->nfns; i++) {
                *lib->fns[i].addr = dlsym(h, lib->fns[i].name);
                if (!*lib->fns[i].addr)
                    break;
            }
            if (i < lib->nfns) {
                snprintf(lib->error, sizeof(lib->error), "%s needs %s: it has no function %s",
                         lib->what, lib->soname, lib->fns[i].name);
                for (size_t j = 0; j < lib->nfns; j++)
                    *lib->fns[j].addr = NULL;
                dlclose(h);
            } else {
                /* open for the rest of the run: its functions are in use */
                atomic_store_explicit(&lib->state, 1, memory_order_release);
            }
        }
    }
    int r = atomic_load_explicit(&lib->state, memory_order_relaxed) > 0
                ? 0
                : error_setf(err, "%s", lib->error);
    pthread_mutex_unlock(&lock);
    return r;
}

_Noreturn void os_lib_unopened(const struct os_lib *lib, const char *fn)
{
    fprintf(stderr, "kemu: internal error: %s called before %s was opened\n", fn, lib->soname);
    abort();
}

void os_event_signal(int fd)
{
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof(one));
    (void)r;
}

uint64_t os_event_drain(int fd)
{
    uint64_t n;
    return read(fd, &n, sizeof(n)) == (ssize_t)sizeof(n) ? n : 0;
}
