/*
 * kemu's entry point: parse the command line, build the chardevs and the machine, run the main
 * loop, and turn every error into one line "kemu: <option or file>: <reason>" and exit status 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>

#include "block/drive.h"
#include "board/devices.h"
#include "board/pc.h"
#include "chardev/backends.h"
#include "cli/cmdline.h"
#include "core/os.h"
#include "net/net.h"

struct app {
    struct kemu_config cfg;
    struct eventloop loop;
    struct os_signals sig;
    struct chardev **chardevs;                 /* one per -chardev, same order */
    struct chardev *serial_own[PC_MAX_SERIAL]; /* created for -serial stdio/file/null */
    struct pc *pc;
    struct machine_devices *devices;
};

static void host_quit(void *opaque)
{
    struct app *app = opaque;
    if (app->pc)
        vm_request(pc_vm(app->pc), VM_REQ_QUIT, 0);
    else
        eventloop_quit(&app->loop);
}

static void on_signal(void *opaque, uint32_t events)
{
    struct app *app = opaque;
    int pid = 0, sig = os_signals_read(&app->sig, &pid);
    if (sig < 0)
        return;
    fprintf(stderr, "kemu: terminating on signal %d from pid %d\n", sig, pid);
    host_quit(app);
}

static struct chardev *open_stdio(struct app *app, bool mux, bool signal, struct error *err)
{
    struct chardev_stdio_opts o = {.mux = mux, .signal = signal};
    struct chardev_host_ops host = {.quit = host_quit, .opaque = app};
    return chardev_stdio_new(&app->loop, &o, &host, err);
}

static int open_chardevs(struct app *app, struct error *err)
{
    const struct kemu_config *cfg = &app->cfg;
    app->chardevs = calloc(cfg->nchardevs + 1, sizeof(*app->chardevs));
    if (!app->chardevs)
        return error_setf(err, "out of memory");
    for (size_t i = 0; i < cfg->nchardevs; i++) {
        const struct kemu_chardev_spec *s = &cfg->chardevs[i];
        struct chardev *c = NULL;
        switch (s->backend) {
        case KEMU_CHARDEV_NULL:
            c = chardev_null_new(err);
            break;
        case KEMU_CHARDEV_STDIO:
            c = open_stdio(app, s->mux, s->signal, err);
            break;
        case KEMU_CHARDEV_FILE:
            c = chardev_file_new(s->path, s->append, err);
            break;
        case KEMU_CHARDEV_SOCKET:
            if (!s->path) {
                error_setf(err, "TCP sockets are not supported yet, use path=");
                break;
            }
            c = chardev_socket_new(&app->loop, s->path, s->server, s->wait, err);
            break;
        }
        if (!c) {
            error_prefix(err, "-chardev %s: ", s->id);
            return -1;
        }
        snprintf(c->id, sizeof(c->id), "%s", s->id);
        app->chardevs[i] = c;
    }
    return 0;
}

static int serial_chardev(struct app *app, size_t i, struct chardev **out, struct error *err)
{
    const struct kemu_serial *s = &app->cfg.serials[i];
    struct chardev *c = NULL;
    *out = NULL;
    switch (s->kind) {
    case KEMU_SERIAL_NONE:
        return 0;
    case KEMU_SERIAL_NULL:
        c = chardev_null_new(err);
        break;
    case KEMU_SERIAL_STDIO:
        /* A multiplexed console passes Ctrl-C to the guest, as QEMU's mon:stdio does. */
        c = open_stdio(app, s->mux, !s->mux, err);
        break;
    case KEMU_SERIAL_FILE:
        c = chardev_file_new(s->path, false, err);
        break;
    case KEMU_SERIAL_CHARDEV:
        *out = app->chardevs[s->chardev];
        return 0;
    }
    if (!c) {
        error_prefix(err, "-serial: ");
        return -1;
    }
    app->serial_own[i] = c;
    *out = c;
    return 0;
}

/* True if one element of "a,b,help" is "help" or "?". */
static bool wants_help(const char *text)
{
    for (const char *p = text; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if ((n == 4 && !strncmp(p, "help", 4)) || (n == 1 && *p == '?'))
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

/* "-drive help", "-netdev user,help": print the keys and exit 0 before any machine exists. */
static bool print_backend_help(const struct kemu_config *cfg)
{
    for (size_t i = 0; i < cfg->drives.n; i++) {
        if (wants_help(cfg->drives.v[i])) {
            struct drive_opts o = {0};
            struct error err = {0};
            if (drive_parse(cfg->drives.v[i], 0, &o, &err) == 0)
                drive_opts_free(&o);
            return true;
        }
    }
    for (size_t i = 0; i < cfg->netdevs.n; i++) {
        if (wants_help(cfg->netdevs.v[i])) {
            struct netdev *nd = NULL;
            struct error err = {0};
            if (netdev_create(cfg->netdevs.v[i], &nd, &err) == 0)
                netdev_destroy(nd);
            return true;
        }
    }
    return false;
}

static int build_machine(struct app *app, struct error *err)
{
    const struct kemu_config *cfg = &app->cfg;
    struct pc_params p = {
        .loop = &app->loop,
        .microvm = cfg->machine == KEMU_MACHINE_MICROVM,
        .ram_size = cfg->ram_size,
        .cpus = cfg->smp.cpus,
        .maxcpus = cfg->smp.maxcpus,
        .topo = {cfg->smp.sockets, cfg->smp.dies, cfg->smp.cores, cfg->smp.threads},
        .kernel = cfg->kernel,
        .initrd = cfg->initrd,
        .append = cfg->append,
        .no_reboot = cfg->no_reboot,
        .no_shutdown = cfg->no_shutdown,
        .rtc_base = cfg->rtc_base == KEMU_RTC_BASE_LOCALTIME ? RTC_BASE_LOCALTIME
                    : cfg->rtc_base == KEMU_RTC_BASE_DATE    ? RTC_BASE_FIXED
                                                             : RTC_BASE_UTC,
        .rtc_fixed_epoch = cfg->rtc_base_time,
    };
    if (open_chardevs(app, err) < 0)
        return -1;
    for (size_t i = 0; i < cfg->nserials && i < PC_MAX_SERIAL; i++)
        if (serial_chardev(app, i, &p.serial[i], err) < 0)
            return -1;
    for (size_t i = 0; i < cfg->ndevices; i++) {
        const struct opts *d = &cfg->devices[i];
        const char *driver = opts_get_str(d, "driver");
        if (driver && strcmp(driver, "isa-debug-exit") == 0) {
            uint64_t base = 0, size = 0;
            if (opts_get_number(d, "iobase", &base, err) < 0 ||
                opts_get_number(d, "iosize", &size, err) < 0)
                return -1;
            if (base > 0xffff || size == 0 || size > 4 || base + size > 0x10000)
                return error_setf(err,
                                  "-device isa-debug-exit: iobase 0x%llx/iosize %llu out "
                                  "of the I/O port range",
                                  (unsigned long long)base, (unsigned long long)size);
            p.debug_exit = true;
            p.debug_exit_base = (uint16_t)base;
            p.debug_exit_size = (uint16_t)size;
        }
    }
    if (pc_create(&p, &app->pc, err) < 0)
        return -1;
    return machine_devices_create(cfg, app->pc, app->chardevs, &app->devices, err);
}

static void cleanup(struct app *app)
{
    /* The vCPUs have stopped (vm_run returned or never started): devices go before the board,
     * whose guest memory their backends use. */
    machine_devices_destroy(app->devices);
    app->devices = NULL;
    pc_destroy(app->pc);
    app->pc = NULL;
    for (size_t i = 0; i < PC_MAX_SERIAL; i++)
        chardev_free(app->serial_own[i]);
    if (app->chardevs)
        for (size_t i = 0; i < app->cfg.nchardevs; i++)
            chardev_free(app->chardevs[i]);
    free(app->chardevs);
    eventloop_destroy(&app->loop);
    os_pidfile_remove();
    kemu_config_free(&app->cfg);
}

int main(int argc, char **argv)
{
    static struct app app;
    struct error err = {0};

    if (cmdline_parse(argc, argv, &app.cfg, &err) < 0) {
        fprintf(stderr, "kemu: %s\n", err.msg);
        kemu_config_free(&app.cfg);
        return 1;
    }
    if (app.cfg.action != KEMU_ACTION_RUN) {
        int r = cmdline_print_action(&app.cfg, stdout);
        kemu_config_free(&app.cfg);
        return r;
    }
    if (print_backend_help(&app.cfg)) {
        kemu_config_free(&app.cfg);
        return 0;
    }
    if (app.cfg.start_paused) {
        /* Nothing could resume the guest yet: refuse rather than hang. */
        fprintf(stderr, "kemu: -S: starting paused needs a monitor (-qmp/-monitor), "
                        "which kemu does not have yet\n");
        kemu_config_free(&app.cfg);
        return 1;
    }
    if (app.cfg.daemonize) {
        for (size_t i = 0; i < app.cfg.nserials; i++)
            if (app.cfg.serials[i].kind == KEMU_SERIAL_STDIO) {
                fprintf(stderr, "kemu: -daemonize: %s\n",
                        app.cfg.nographic ? "-nographic cannot be used with -daemonize"
                                          : "stdio is not available with -daemonize");
                kemu_config_free(&app.cfg);
                return 1;
            }
        int parent_status;
        int r = os_daemonize_start(&parent_status, &err);
        if (r < 0) {
            fprintf(stderr, "kemu: %s\n", err.msg);
            kemu_config_free(&app.cfg);
            return 1;
        }
        if (r > 0) {
            kemu_config_free(&app.cfg);
            return parent_status;
        }
    }
    os_install_crash_handlers();
    if (app.cfg.process_name)
        prctl(PR_SET_NAME, app.cfg.process_name); /* -name ...,process=NAME, as QEMU */

    int status = 1;
    if (eventloop_init(&app.loop, &err) < 0 || os_signals_init(&app.sig, &err) < 0 ||
        eventloop_add(&app.loop, app.sig.fd, EPOLLIN, on_signal, &app, &err) < 0 ||
        (app.cfg.pidfile && os_pidfile_create(app.cfg.pidfile, &err) < 0) ||
        build_machine(&app, &err) < 0 || vm_start(pc_vm(app.pc), &err) < 0) {
        fprintf(stderr, "kemu: %s\n", err.msg);
        os_daemonize_finish(1);
        cleanup(&app);
        return 1;
    }
    os_daemonize_finish(0);
    status = vm_run(pc_vm(app.pc));
    cleanup(&app);
    return status;
}
