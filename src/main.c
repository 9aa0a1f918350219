/*
 * kemu's entry point: parse the command line, build the chardevs and the machine, run the main
 * loop, and turn every error into one line "kemu: <option or file>: <reason>" and exit status 1.
 */
#include <errno.h>
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
#include "monitor/hmp.h"
#include "monitor/qmp.h"
#include "net/net.h"
#include "pci/pci.h"

struct app {
    struct kemu_config cfg;
    struct eventloop loop;
    struct os_signals sig;
    struct chardev **chardevs;                 /* one per -chardev, same order */
    struct chardev *serial_own[PC_MAX_SERIAL]; /* created for -serial stdio/file/null */
    struct pc *pc;
    struct machine_devices *devices;
    struct qmp_server *qmp;
    struct qmp_vm_ops mon_ops; /* what QMP and HMP see of the machine */
    struct hmp_monitor **hmp;  /* HMP monitors, and the chardevs opened only for them */
    struct chardev **hmp_own;
    size_t nhmp;
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
    qmp_event_shutdown(app->qmp, QMP_CAUSE_HOST_SIGNAL);
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
        bool monitor = false;
        for (size_t m = 0; m < cfg->mon_chardevs.n; m++)
            monitor = monitor || !strcmp(cfg->mon_chardevs.v[m], s->id);
        if (monitor)
            continue; /* the QMP server listens on its socket itself */
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
            if (s->path) {
                c = chardev_socket_new(&app->loop, s->path, s->server, s->wait, err);
            } else {
                char port[8];
                snprintf(port, sizeof(port), "%u", (unsigned)s->port);
                c = chardev_socket_tcp_new(&app->loop, s->host, port, s->server, s->wait, err);
            }
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

/* ---- the QMP monitor's view of the machine (main thread) ---- */

static struct vm *app_vm(struct app *app)
{
    return app->pc ? pc_vm(app->pc) : NULL;
}

static const char *qmp_status(void *opaque, bool *running)
{
    struct vm *vm = app_vm(opaque);
    *running = vm && vm->runstate == VM_RUNSTATE_RUNNING;
    return vm ? vm_runstate_name(vm->runstate) : "prelaunch";
}

static int qmp_stop(void *opaque, struct error *err)
{
    return vm_pause(app_vm(opaque), err);
}

static int qmp_cont(void *opaque, struct error *err)
{
    return vm_resume(app_vm(opaque), err);
}

static int qmp_reset(void *opaque, struct error *err)
{
    return vm_reset(app_vm(opaque), err);
}

static int qmp_powerdown(void *opaque, struct error *err)
{
    struct app *app = opaque;
    if (pc_power_button(app->pc, err) < 0)
        return -1;
    qmp_event_powerdown(app->qmp);
    return 0;
}

static void qmp_quit(void *opaque)
{
    struct app *app = opaque;
    qmp_event_shutdown(app->qmp, QMP_CAUSE_HOST_QMP_QUIT);
    host_quit(app);
}

static size_t qmp_cpus(void *opaque, struct qmp_cpu_info *out, size_t max)
{
    struct app *app = opaque;
    struct vm *vm = app_vm(app);
    const struct smp_topology *t = &app->cfg.smp;
    size_t n = vm ? vm->nr_vcpus : 0;
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned th = t->threads ? t->threads : 1, co = t->cores ? t->cores : 1;
        unsigned di = t->dies ? t->dies : 1;
        out[i] =
            (struct qmp_cpu_info){.index = (unsigned)i,
                                  .thread_id = __atomic_load_n(&vm->vcpus[i].tid, __ATOMIC_ACQUIRE),
                                  .socket_id = (int)(i / (th * co * di)),
                                  .core_id = (int)((i / th) % co),
                                  .thread_in_core = (int)(i % th)};
    }
    return n;
}

#define DISCONNECTED "disconnected:"

/* QEMU's filename of a listening socket chardev with DISCONNECTED in front (skip it while a
 * client is connected); malloc'd, NULL when out of memory. */
static char *sock_filename(bool is_unix, const char *path, const char *host, const char *port,
                           bool server)
{
    char *s = NULL;
    int r = is_unix
                ? asprintf(&s, DISCONNECTED "unix:%s%s", path, server ? ",server=on" : "")
                : asprintf(&s, DISCONNECTED "tcp:%s:%s%s", host, port, server ? ",server=on" : "");
    return r < 0 ? NULL : s;
}

/* The monitors' chardevs that QEMU lists and kemu does not open as chardevs: the socket of each
 * -mon chardev=ID,mode=control (under ID) and of each -qmp/-qmp-pretty (compat_monitorN, numbered
 * after the -monitor ones, as QEMU numbers -monitor and -qmp in command-line order). The
 * configuration never changes, so they are worked out once and kept to the end. */
struct qmp_mon_chr {
    const char *label;
    char *filename; /* with DISCONNECTED in front */
};

static size_t qmp_monitor_chardevs(const struct app *app, const struct qmp_mon_chr **out)
{
    static struct qmp_mon_chr *v;
    static size_t n;
    static bool done;
    *out = v;
    if (done)
        return n;
    done = true;
    const struct kemu_config *cfg = &app->cfg;
    size_t total = cfg->qmp.n + cfg->qmp_pretty.n, nmon = 0;
    v = calloc(total ? total : 1, sizeof(*v));
    bool *from_mon = calloc(total ? total : 1, sizeof(*from_mon));
    if (!v || !from_mon) {
        free(v);
        free(from_mon);
        v = NULL;
        return 0;
    }
    /* cmdline.c turns each -mon mode=control into a -qmp spec; find it to list it once. */
    for (size_t i = 0; i < cfg->mon_chardevs.n; i++) {
        const struct kemu_chardev_spec *c = NULL;
        for (size_t j = 0; j < cfg->nchardevs; j++)
            if (!strcmp(cfg->chardevs[j].id, cfg->mon_chardevs.v[i]))
                c = &cfg->chardevs[j];
        if (!c)
            continue;
        char spec[512], port[8];
        if (c->path)
            snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", c->path);
        else
            snprintf(spec, sizeof(spec), "tcp:%s:%u,server=on,wait=off", c->host ? c->host : "",
                     c->port);
        for (size_t k = 0; k < total; k++) {
            const char *q = k < cfg->qmp.n ? cfg->qmp.v[k] : cfg->qmp_pretty.v[k - cfg->qmp.n];
            if (from_mon[k] || strcmp(q, spec))
                continue;
            from_mon[k] = true;
            break;
        }
        snprintf(port, sizeof(port), "%u", c->port);
        v[n].label = c->id;
        v[n].filename = sock_filename(c->path != NULL, c->path, c->host ? c->host : "", port, true);
        if (v[n].filename)
            n++;
    }
    /* QEMU gives -monitor none no number; null is none to kemu. */
    for (size_t i = 0; i < cfg->monitors.n; i++)
        if (strcmp(cfg->monitors.v[i], "none") && strcmp(cfg->monitors.v[i], "null"))
            nmon++;
    for (size_t k = 0; k < total; k++) {
        const char *q = k < cfg->qmp.n ? cfg->qmp.v[k] : cfg->qmp_pretty.v[k - cfg->qmp.n];
        struct qmp_sock_spec o;
        struct error e = {0};
        char *label = NULL;
        if (from_mon[k] || qmp_parse_sock_spec(q, &o, &e) < 0)
            continue;
        if (asprintf(&label, "compat_monitor%zu", nmon++) < 0)
            continue;
        v[n].label = label;
        v[n].filename = sock_filename(o.is_unix, o.path, o.host, o.port, o.server);
        if (v[n].filename)
            n++;
        else
            free(label);
    }
    free(from_mon);
    *out = v;
    return n;
}

static size_t qmp_chardevs(void *opaque, struct qmp_chardev_info *out, size_t max)
{
    struct app *app = opaque;
    static const char *kinds[] = {"null", "stdio", "file", "socket"};
    size_t n = 0;
    for (size_t i = 0; i < app->cfg.nchardevs; i++) {
        if (!app->chardevs || !app->chardevs[i])
            continue;
        if (n < max)
            out[n] = (struct qmp_chardev_info){.label = app->cfg.chardevs[i].id,
                                               .filename = kinds[app->cfg.chardevs[i].backend],
                                               .frontend_open = app->chardevs[i]->has_fe};
        n++;
    }
    static const char *serial_labels[] = {"serial0", "serial1", "serial2", "serial3"};
    for (size_t i = 0; i < PC_MAX_SERIAL; i++) {
        if (!app->serial_own[i])
            continue;
        if (n < max)
            out[n] = (struct qmp_chardev_info){
                .label = serial_labels[i], .filename = "serial", .frontend_open = true};
        n++;
    }
    /* The QMP sockets, "disconnected:" while no client is on them. kemu serves them all from
     * one server, so with several of them one client makes them all "connected". */
    const struct qmp_mon_chr *qm;
    size_t nqm = qmp_monitor_chardevs(app, &qm);
    bool connected = app->qmp && qmp_server_client_count(app->qmp) > 0;
    for (size_t i = 0; i < nqm; i++) {
        if (n < max)
            out[n] = (struct qmp_chardev_info){.label = qm[i].label,
                                               .filename = qm[i].filename +
                                                           (connected ? strlen(DISCONNECTED) : 0),
                                               .frontend_open = true};
        n++;
    }
    /* -monitor's own chardevs, named compat_monitorN as in QEMU. start_hmp adds one monitor per
     * -monitor that is not none/null, in order, before any other, so app->hmp[k] follows them. */
    for (size_t i = 0, k = 0; i < app->cfg.monitors.n && k < app->nhmp; i++) {
        const char *spec = app->cfg.monitors.v[i];
        if (!strcmp(spec, "none") || !strcmp(spec, "null"))
            continue;
        struct chardev *c = app->hmp_own[k++];
        if (!c)
            continue;
        if (n < max)
            out[n] =
                (struct qmp_chardev_info){.label = c->id, .filename = spec, .frontend_open = true};
        n++;
    }
    return n;
}

static size_t qmp_pci(void *opaque, struct qmp_pci_info *out, size_t max)
{
    struct app *app = opaque;
    struct pci_bus *bus = app->pc ? pc_pci_bus(app->pc) : NULL;
    size_t n = 0;
    for (unsigned slot = 0; bus && slot < PCI_SLOTS; slot++) {
        for (unsigned fn = 0; fn < PCI_FUNCS; fn++) {
            struct pci_device *d = bus->dev[slot][fn];
            if (!d)
                continue;
            if (n < max) {
                struct qmp_pci_info *o = &out[n];
                const uint8_t *c = d->config;
                *o = (struct qmp_pci_info){
                    .slot = slot,
                    .function = fn,
                    .vendor = (uint16_t)(c[0] | c[1] << 8),
                    .device = (uint16_t)(c[2] | c[3] << 8),
                    .subsys_vendor = (uint16_t)(c[0x2c] | c[0x2d] << 8),
                    .subsys = (uint16_t)(c[0x2e] | c[0x2f] << 8),
                    .class_code = (uint16_t)(c[0x0b] << 8 | c[0x0a]),
                    .desc = pci_class_desc((uint16_t)(c[0x0b] << 8 | c[0x0a])),
                    .type = d->name,
                    .qdev_id = d->id,
                    .irq_pin = c[PCI_INTERRUPT_PIN],
                    .irq = pci_device_gsi(d),
                };
                for (unsigned b = 0; b < PCI_NUM_BARS; b++) {
                    if (!d->bar[b].size)
                        continue;
                    o->regions[o->nr_regions++] =
                        (struct qmp_pci_region){.bar = (int)b,
                                                .io = d->bar[b].type == PCI_BAR_TYPE_IO,
                                                .address = pci_bar_address(d, b),
                                                .size = d->bar[b].size,
                                                .prefetch = d->bar[b].prefetch,
                                                .mem64 = d->bar[b].type == PCI_BAR_TYPE_MEM64};
                }
            }
            n++;
        }
    }
    return n;
}

static int mon_hostfwd(void *opaque, const char *netdev, bool add, const char *rule,
                       struct error *err)
{
    struct app *app = opaque;
    if (!app->devices) {
        error_setf(err, "user mode network stack not in use");
        return -ENODEV;
    }
    return machine_devices_hostfwd(app->devices, netdev, add, rule, err);
}

static int mon_set_link(void *opaque, const char *name, bool up, struct error *err)
{
    struct app *app = opaque;
    if (!app->devices) {
        error_setf(err, "Device '%s' not found", name);
        return -ENODEV;
    }
    return machine_devices_set_link(app->devices, name, up, err);
}

static char *mon_usernet_info(void *opaque)
{
    struct app *app = opaque;
    return app->devices ? machine_devices_usernet_info(app->devices) : NULL;
}

static size_t qmp_network(void *opaque, struct qmp_net_client *out, size_t max)
{
    struct app *app = opaque;
    return app->devices ? machine_devices_net_info(app->devices, out, max) : 0;
}

static size_t qmp_block(void *opaque, struct qmp_block_info *out, size_t max)
{
    struct app *app = opaque;
    return app->devices ? machine_devices_block_info(app->devices, out, max) : 0;
}

static int mon_commit(void *opaque, const char *device, struct error *err)
{
    struct app *app = opaque;
    return app->devices ? machine_devices_commit(app->devices, device, err) : -ENODEV;
}

static int mon_balloon(void *opaque, int64_t target, struct error *err)
{
    return machine_devices_balloon(((struct app *)opaque)->devices, target, err);
}

static int mon_query_balloon(void *opaque, uint64_t *actual, struct error *err)
{
    return machine_devices_query_balloon(((struct app *)opaque)->devices, actual, err);
}

/* The guest RAM's backend: the -object that -machine memory-backend names, else QEMU's implicit
 * one (pc.ram, microvm.ram) with -mem-path/-mem-prealloc's settings. Other memory backend
 * objects are not allocated (nothing uses them yet), so they are not listed. */
static size_t mon_query_memdev(void *opaque, struct qmp_memdev_info *out, size_t max)
{
    struct app *app = opaque;
    const struct kemu_config *cfg = &app->cfg;
    if (!app->pc)
        return 0;
    if (max < 1)
        return 1;
    const struct guest_mem *mem = &pc_vm(app->pc)->mem;
    const struct opts *o = cfg->ram_backend;
    out[0] = (struct qmp_memdev_info){
        .id = o                                      ? opts_get_str(o, "id")
              : cfg->machine == KEMU_MACHINE_MICROVM ? "microvm.ram"
                                                     : "pc.ram",
        .size = mem->ram_size,
        .merge = mem->merge,
        .dump = mem->dump,
        .prealloc = mem->preallocated,
        .share = mem->shared,
        .reserve = mem->file_backed, /* anonymous RAM is mapped MAP_NORESERVE */
    };
    return 1;
}

static void ev_balloon_change(void *opaque, uint64_t actual)
{
    qmp_event_balloon_change(((struct app *)opaque)->qmp, actual);
}

static void ev_reset(void *opaque, bool guest)
{
    struct app *app = opaque;
    qmp_event_reset_reason(app->qmp, guest, guest ? "guest-reset" : "host-qmp-system-reset");
}

static void ev_shutdown(void *opaque, bool guest, const char *reason)
{
    struct app *app = opaque;
    qmp_event_shutdown_reason(app->qmp, guest, reason);
}

static void ev_stop(void *opaque)
{
    qmp_event_stop(((struct app *)opaque)->qmp);
}

static void ev_resume(void *opaque)
{
    struct app *app = opaque;
    qmp_event_resume(app->qmp);
    /* As QEMU's virtio_blk_dma_restart_cb: what werror/rerror=stop held is tried again. */
    machine_devices_resume(app->devices);
}

/* A disk request failed: QEMU emits BLOCK_IO_ERROR for every action, then stops for stop. */
static void ev_block_error(void *opaque, const struct machine_block_error *e)
{
    struct app *app = opaque;
    qmp_event_block_io_error(app->qmp, e->device, e->node_name, e->is_read, e->action, e->nospace,
                             e->reason);
    if (e->stop && app->pc)
        vm_pause_io_error(pc_vm(app->pc));
}

static struct vm *mon_vm(void *opaque)
{
    return app_vm(opaque);
}

/* The chardev of one -monitor SPEC (NULL with no error for none/null); *mux: shared console. */
static struct chardev *monitor_chardev(struct app *app, const char *spec, bool *mux, bool *own,
                                       struct error *err)
{
    *mux = false;
    *own = true;
    if (!strcmp(spec, "none") || !strcmp(spec, "null"))
        return NULL;
    if (!strcmp(spec, "stdio") || !strcmp(spec, "mon:stdio"))
        return open_stdio(app, false, true, err);
    if (!strncmp(spec, "chardev:", 8)) {
        *own = false;
        for (size_t i = 0; i < app->cfg.nchardevs; i++) {
            if (strcmp(app->cfg.chardevs[i].id, spec + 8))
                continue;
            struct chardev *c = app->chardevs ? app->chardevs[i] : NULL;
            if (!c) {
                error_setf(err, "chardev '%s' is already a QMP monitor", spec + 8);
                return NULL;
            }
            *mux = c->ops->set_monitor != NULL;
            if (!*mux && c->has_fe) {
                error_setf(err, "chardev '%s' is already in use (use a mux=on stdio chardev)",
                           spec + 8);
                return NULL;
            }
            return c;
        }
        error_setf(err, "chardev '%s' not found", spec + 8);
        return NULL;
    }
    struct qmp_sock_spec o;
    if (qmp_parse_sock_spec(spec, &o, err) < 0)
        return NULL;
    if (o.is_unix)
        return chardev_socket_new(&app->loop, o.path, o.server, o.wait, err);
    return chardev_socket_tcp_new(&app->loop, o.host, o.port, o.server, o.wait, err);
}

static int add_monitor(struct app *app, struct chardev *c, bool own, bool mux, struct error *err)
{
    struct hmp_monitor **m = realloc(app->hmp, (app->nhmp + 1) * sizeof(*m));
    struct chardev **o = m ? realloc(app->hmp_own, (app->nhmp + 1) * sizeof(*o)) : NULL;
    if (m)
        app->hmp = m;
    if (o)
        app->hmp_own = o;
    if (!m || !o) {
        if (own)
            chardev_free(c);
        return error_setf(err, "out of memory");
    }
    app->hmp_own[app->nhmp] = own ? c : NULL;
    app->hmp[app->nhmp] = hmp_monitor_new(c, &app->mon_ops, mux);
    app->nhmp++;
    if (!app->hmp[app->nhmp - 1])
        return error_setf(err, "out of memory");
    return 0;
}

/* HMP: -monitor, -mon mode=readline, and every mon:stdio serial (-nographic's default). */
static int start_hmp(struct app *app, struct error *err)
{
    const struct kemu_config *cfg = &app->cfg;
    for (size_t i = 0; i < cfg->monitors.n; i++) {
        bool mux, own;
        struct error e = {0};
        struct chardev *c = monitor_chardev(app, cfg->monitors.v[i], &mux, &own, &e);
        if (!c && e.set) {
            error_setf(err, "-monitor %s: %s", cfg->monitors.v[i], e.msg);
            return -1;
        }
        if (c && own)
            snprintf(c->id, sizeof(c->id), "compat_monitor%zu", i);
        if (c && add_monitor(app, c, own, mux, err) < 0)
            return -1;
    }
    for (size_t i = 0; i < cfg->hmp_chardevs.n; i++) {
        char spec[128];
        snprintf(spec, sizeof(spec), "chardev:%s", cfg->hmp_chardevs.v[i]);
        bool mux, own;
        struct chardev *c = monitor_chardev(app, spec, &mux, &own, err);
        if (!c) {
            error_prefix(err, "-mon chardev=%s: ", cfg->hmp_chardevs.v[i]);
            return -1;
        }
        if (add_monitor(app, c, false, mux, err) < 0)
            return -1;
    }
    for (size_t i = 0; i < PC_MAX_SERIAL && i < cfg->nserials; i++)
        if (cfg->serials[i].kind == KEMU_SERIAL_STDIO && cfg->serials[i].mux &&
            app->serial_own[i] && add_monitor(app, app->serial_own[i], false, true, err) < 0)
            return -1;
    return 0;
}

static int start_qmp(struct app *app, struct error *err)
{
    const struct kemu_config *cfg = &app->cfg;
    app->mon_ops = (struct qmp_vm_ops){.status = qmp_status,
                                       .stop = qmp_stop,
                                       .cont = qmp_cont,
                                       .system_reset = qmp_reset,
                                       .system_powerdown = qmp_powerdown,
                                       .quit = qmp_quit,
                                       .query_cpus = qmp_cpus,
                                       .query_chardevs = qmp_chardevs,
                                       .query_pci = qmp_pci,
                                       .query_block = qmp_block,
                                       .query_network = qmp_network,
                                       .commit = mon_commit,
                                       .hostfwd = mon_hostfwd,
                                       .set_link = mon_set_link,
                                       .usernet_info = mon_usernet_info,
                                       .balloon = mon_balloon,
                                       .query_balloon = mon_query_balloon,
                                       .query_memdev = mon_query_memdev,
                                       .vm = mon_vm,
                                       .name = cfg->name,
                                       .opaque = app};
    struct vm *vm = pc_vm(app->pc);
    vm->events = (struct vm_events){.reset = ev_reset,
                                    .shutdown = ev_shutdown,
                                    .stop = ev_stop,
                                    .resume = ev_resume,
                                    .opaque = app};
    machine_devices_set_error_handler(app->devices, ev_block_error, app);
    machine_devices_set_balloon_handler(app->devices, ev_balloon_change, app);
    if (start_hmp(app, err) < 0)
        return -1;
    if (!cfg->qmp.n && !cfg->qmp_pretty.n)
        return 0;
    if (qmp_server_new(&app->loop, &app->mon_ops, &app->qmp, err) < 0)
        return -1;
    for (int pretty = 0; pretty < 2; pretty++) {
        const struct kemu_strlist *l = pretty ? &cfg->qmp_pretty : &cfg->qmp;
        for (size_t i = 0; i < l->n; i++) {
            if (qmp_server_listen(app->qmp, l->v[i], pretty, err) < 0) {
                error_prefix(err, "-qmp %s: ", l->v[i]);
                return -1;
            }
        }
    }
    return 0;
}

/* True if one element of "a,b,help" is "help" or "?" (key "": a bare element; key "model=":
 * "model=help" or "model=?"). */
static bool wants_help_key(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = text; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n >= kl && !strncmp(p, key, kl)) {
            const char *v = p + kl;
            size_t vn = n - kl;
            if ((vn == 4 && !strncmp(v, "help", 4)) || (vn == 1 && *v == '?'))
                return true;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

static bool wants_help(const char *text)
{
    return wants_help_key(text, "");
}

/* "-net nic,model=help", "-nic user,model=?": the NIC models, as QEMU lists them; "-net help",
 * "-nic help": the backends (a NIC option names one). */
static bool print_nic_help(const struct kemu_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (wants_help_key(l->v[i], "model=")) {
            printf("Supported NIC models:\nvirtio-net-pci\n");
            return true;
        }
        if (wants_help(l->v[i])) {
            netdev_print_help(stdout);
            return true;
        }
    }
    return false;
}

/* "-drive help", "-netdev user,help": print the keys and exit 0 before any machine exists. */
static bool print_backend_help(const struct kemu_config *cfg)
{
    if (print_nic_help(&cfg->nets) || print_nic_help(&cfg->nics))
        return true;
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

/* What backs guest RAM: -mem-path and -mem-prealloc, or the -object memory-backend-* that
 * -machine memory-backend= names (its keys were checked while parsing); -machine mem-merge= and
 * dump-guest-core= are the backend's defaults, as in QEMU. */
static void ram_backing(const struct kemu_config *cfg, struct pc_params *p)
{
    p->mem_backing = (struct guest_mem_backing){
        .path = cfg->mem_path, .no_merge = !cfg->mem_merge, .no_dump = !cfg->dump_guest_core};
    p->mem_prealloc = cfg->mem_prealloc;
    const struct opts *o = cfg->ram_backend;
    if (!o)
        return;
    struct error ignored = {0};
    const char *type = opts_get_str(o, "qom-type");
    bool memfd = !strcmp(type, "memory-backend-memfd"), v;
    uint64_t n;
    p->mem_backend_id = opts_get_str(o, "id");
    p->mem_backing.path = opts_get_str(o, "mem-path");
    p->mem_backing.memfd = memfd;
    p->mem_backing.share = memfd; /* QEMU's memfd backend is shared unless told otherwise */
    if (opts_has(o, "share") && opts_get_bool(o, "share", &v, &ignored) > 0)
        p->mem_backing.share = v;
    if (opts_has(o, "merge") && opts_get_bool(o, "merge", &v, &ignored) > 0)
        p->mem_backing.no_merge = !v;
    if (opts_has(o, "dump") && opts_get_bool(o, "dump", &v, &ignored) > 0)
        p->mem_backing.no_dump = !v;
    if (memfd) {
        p->mem_backing.hugetlb = opts_get_bool(o, "hugetlb", &v, &ignored) > 0 && v;
        p->mem_backing.seal = opts_get_bool(o, "seal", &v, &ignored) > 0 && v;
        if (opts_has(o, "hugetlbsize") && opts_get_size(o, "hugetlbsize", &n, &ignored) > 0)
            p->mem_backing.hugetlbsize = n;
    }
    if (opts_get_bool(o, "prealloc", &v, &ignored) > 0 && v)
        p->mem_prealloc = true;
    if (opts_has(o, "prealloc-threads") && opts_get_number(o, "prealloc-threads", &n, &ignored) > 0)
        p->mem_prealloc_threads = n > 64 ? 64 : (unsigned)n;
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
        .rtc_clock = cfg->rtc_clock == KEMU_RTC_CLOCK_RT   ? PC_RTC_CLOCK_RT
                     : cfg->rtc_clock == KEMU_RTC_CLOCK_VM ? PC_RTC_CLOCK_VM
                                                           : PC_RTC_CLOCK_HOST,
        .rtc_driftfix_slew = cfg->rtc_driftfix_slew,
    };
    ram_backing(cfg, &p);
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
    bool acpi = true;
    if (opts_get_bool(&cfg->machine_opts, "acpi", &acpi, err) < 0)
        return -1;
    p.no_acpi = !acpi;
    p.kernel_pit = cfg->kernel_pit;
    if (pc_create(&p, &app->pc, err) < 0)
        return -1;
    pc_vm(app->pc)->start_paused = cfg->start_paused;
    if (machine_devices_create(cfg, app->pc, app->chardevs, &app->devices, err) < 0)
        return -1;
    return start_qmp(app, err);
}

static void cleanup(struct app *app)
{
    qmp_server_destroy(app->qmp);
    app->qmp = NULL;
    for (size_t i = 0; i < app->nhmp; i++) {
        hmp_monitor_free(app->hmp[i]);
        chardev_free(app->hmp_own[i]);
    }
    free(app->hmp);
    free(app->hmp_own);
    app->nhmp = 0;
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
    bool hmp = app.cfg.hmp_chardevs.n > 0;
    for (size_t i = 0; i < app.cfg.monitors.n; i++)
        hmp =
            hmp || (strcmp(app.cfg.monitors.v[i], "none") && strcmp(app.cfg.monitors.v[i], "null"));
    for (size_t i = 0; i < app.cfg.nserials; i++)
        hmp = hmp || (app.cfg.serials[i].kind == KEMU_SERIAL_STDIO && app.cfg.serials[i].mux);
    if (app.cfg.start_paused && !app.cfg.qmp.n && !app.cfg.qmp_pretty.n && !hmp) {
        /* Nothing could resume the guest yet: refuse rather than hang. */
        fprintf(stderr, "kemu: -S: starting paused needs a monitor to continue "
                        "(-qmp unix:PATH,server=on,wait=off or -monitor stdio)\n");
        kemu_config_free(&app.cfg);
        return 1;
    }
    if (app.cfg.daemonize) {
        for (size_t i = 0; i < app.cfg.monitors.n; i++)
            if (!strcmp(app.cfg.monitors.v[i], "stdio")) {
                fprintf(stderr, "kemu: -daemonize: stdio is not available with -daemonize\n");
                kemu_config_free(&app.cfg);
                return 1;
            }
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
