/* QMP request checking, argument validation and the commands, with QEMU's error wording. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kemu-config.h"
#include "monitor/hmp.h"
#include "monitor/qmp_int.h"

#define CLS_GENERIC    "GenericError"
#define CLS_NOT_FOUND  "CommandNotFound"
#define CLS_NO_DEVICE  "DeviceNotFound"
#define CLS_NOT_ACTIVE "DeviceNotActive"

enum arg_type { ARG_STR, ARG_BOOL, ARG_INT, ARG_STR_LIST };

struct qmp_arg {
    const char *name;
    enum arg_type type;
    bool optional;
};

struct qmp_cmd {
    const char *name;
    /* Returns the "return" value (new reference), or NULL with e set. */
    json_t *(*fn)(struct qmp_client *c, json_t *args, struct qmp_err *e);
    const struct qmp_arg *args; /* NULL-name terminated; NULL: no arguments */
};

json_t *qmp_jstr(const char *s)
{
    if (!s)
        s = "";
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static json_t *empty_return(void)
{
    return json_object();
}

/* ---- list queries: the callbacks follow snprintf (count returned, at most max filled) ---- */

#define MAX_RECORDS 4096

#define DEFINE_FETCH(fname, type, member)                                                          \
    static type *fname(struct qmp_server *s, size_t *n)                                            \
    {                                                                                              \
        *n = 0;                                                                                    \
        if (!s->ops.member)                                                                        \
            return NULL;                                                                           \
        size_t want = s->ops.member(s->ops.opaque, NULL, 0);                                       \
        if (want == 0)                                                                             \
            return NULL;                                                                           \
        if (want > MAX_RECORDS)                                                                    \
            want = MAX_RECORDS;                                                                    \
        type *v = calloc(want, sizeof(*v));                                                        \
        if (!v)                                                                                    \
            return NULL;                                                                           \
        size_t got = s->ops.member(s->ops.opaque, v, want);                                        \
        *n = got < want ? got : want;                                                              \
        return v;                                                                                  \
    }

DEFINE_FETCH(fetch_cpus, struct qmp_cpu_info, query_cpus)
DEFINE_FETCH(fetch_chardevs, struct qmp_chardev_info, query_chardevs)
DEFINE_FETCH(fetch_pci, struct qmp_pci_info, query_pci)
DEFINE_FETCH(fetch_block, struct qmp_block_info, query_block)

/* ---- VM state ---- */

static const char *vm_status(struct qmp_server *s, bool *running)
{
    *running = true;
    if (!s->ops.status)
        return "running";
    const char *st = s->ops.status(s->ops.opaque, running);
    return st ? st : (*running ? "running" : "paused");
}

typedef int (*action_fn)(void *opaque, struct error *err);

static int run_action(struct qmp_server *s, action_fn fn, const char *what, struct qmp_err *e)
{
    if (!fn)
        return qmp_err_set(e, CLS_GENERIC, "%s is not supported by this machine", what);
    struct error err = {0};
    if (fn(s->ops.opaque, &err) < 0)
        return qmp_err_set(e, CLS_GENERIC, "%s", err.set ? err.msg : "failed");
    return 0;
}

/* ---- commands ---- */

static json_t *version_info(void)
{
    return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", QMP_VERSION_MICRO, "minor",
                     QMP_VERSION_MINOR, "major", QMP_VERSION_MAJOR, "package",
                     "kemu-" KEMU_VERSION);
}

json_t *qmp_greeting(void)
{
    /* No out-of-band execution: the capability list is empty. */
    return json_pack("{s:{s:o,s:[]}}", "QMP", "version", version_info(), "capabilities");
}

static json_t *cmd_capabilities(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    if (c->negotiated) {
        qmp_err_set(e, CLS_NOT_FOUND,
                    "Capabilities negotiation is already complete, command "
                    "ignored");
        return NULL;
    }
    json_t *enable = json_object_get(args, "enable");
    size_t i;
    json_t *cap;
    json_array_foreach(enable, i, cap)
    {
        const char *name = json_string_value(cap);
        if (!strcmp(name, "oob"))
            qmp_err_set(e, CLS_GENERIC, "Capability 'oob' not available");
        else
            qmp_err_set(e, CLS_GENERIC, "Parameter 'enable' does not accept value '%s'", name);
        return NULL;
    }
    c->negotiated = true;
    return empty_return();
}

static json_t *cmd_query_version(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    return version_info();
}

static json_t *cmd_query_commands(struct qmp_client *c, json_t *args, struct qmp_err *e);

static json_t *cmd_query_status(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    bool running;
    const char *st = vm_status(c->s, &running);
    return json_pack("{s:o,s:b,s:b}", "status", qmp_jstr(st), "singlestep", 0, "running", running);
}

static json_t *cmd_query_name(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    json_t *r = json_object();
    if (r && c->s->ops.name)
        json_object_set_new(r, "name", qmp_jstr(c->s->ops.name));
    return r;
}

static json_t *cmd_query_kvm(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    return json_pack("{s:b,s:b}", "enabled", 1, "present", 1);
}

static json_t *cmd_query_cpus_fast(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    size_t n;
    struct qmp_cpu_info *v = fetch_cpus(c->s, &n);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        char path[64];
        if (!v[i].qom_path)
            snprintf(path, sizeof(path), "/machine/unattached/device[%u]", v[i].index);
        json_array_append_new(list, json_pack("{s:i,s:{s:i,s:i,s:i},s:o,s:i,s:s}", "thread-id",
                                              v[i].thread_id, "props", "core-id", v[i].core_id,
                                              "thread-id", v[i].thread_in_core, "socket-id",
                                              v[i].socket_id, "qom-path",
                                              qmp_jstr(v[i].qom_path ? v[i].qom_path : path),
                                              "cpu-index", (int)v[i].index, "target", "x86_64"));
    }
    free(v);
    return list;
}

static json_t *cmd_query_chardev(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    size_t n;
    struct qmp_chardev_info *v = fetch_chardevs(c->s, &n);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(list, json_pack("{s:b,s:o,s:o}", "frontend-open", v[i].frontend_open,
                                              "filename", qmp_jstr(v[i].filename), "label",
                                              qmp_jstr(v[i].label)));
    free(v);
    return list;
}

static json_t *pci_device(const struct qmp_pci_info *d)
{
    json_t *regions = json_array();
    for (unsigned r = 0; regions && r < d->nr_regions && r < 7; r++) {
        const struct qmp_pci_region *g = &d->regions[r];
        json_t *j = g->io
                        ? json_pack("{s:i,s:s,s:I,s:I}", "bar", g->bar, "type", "io", "address",
                                    (json_int_t)g->address, "size", (json_int_t)g->size)
                        : json_pack("{s:i,s:s,s:I,s:I,s:b,s:b}", "bar", g->bar, "type", "memory",
                                    "address", (json_int_t)g->address, "size", (json_int_t)g->size,
                                    "prefetch", g->prefetch, "mem_type_64", g->mem64);
        json_array_append_new(regions, j);
    }
    json_t *class_info = json_pack("{s:i}", "class", d->class_code);
    if (class_info && d->desc)
        json_object_set_new(class_info, "desc", qmp_jstr(d->desc));
    json_t *dev = json_pack("{s:i,s:i,s:i,s:o,s:{s:i,s:i,s:i,s:i},s:i,s:o,s:o}", "bus", d->bus,
                            "slot", d->slot, "function", d->function, "class_info", class_info,
                            "id", "device", d->device, "vendor", d->vendor, "subsystem", d->subsys,
                            "subsystem-vendor", d->subsys_vendor, "irq_pin", d->irq_pin, "qdev_id",
                            qmp_jstr(d->qdev_id), "regions", regions);
    if (dev && d->irq_pin && d->irq >= 0)
        json_object_set_new(dev, "irq", json_integer(d->irq));
    return dev;
}

static json_t *cmd_query_pci(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    size_t n;
    struct qmp_pci_info *v = fetch_pci(c->s, &n);
    json_t *buses = json_array();
    /* One entry per bus, in the order buses first appear. */
    for (size_t i = 0; buses && i < n; i++) {
        json_t *devices = NULL;
        size_t b;
        json_t *bus;
        json_array_foreach(buses, b, bus)
        {
            if (json_integer_value(json_object_get(bus, "bus")) == (json_int_t)v[i].bus) {
                devices = json_object_get(bus, "devices");
                break;
            }
        }
        if (!devices) {
            devices = json_array();
            json_array_append_new(buses,
                                  json_pack("{s:i,s:o}", "bus", v[i].bus, "devices", devices));
        }
        json_array_append_new(devices, pci_device(&v[i]));
    }
    free(v);
    return buses;
}

static json_t *block_inserted(const struct qmp_block_info *b)
{
    return json_pack("{s:o,s:o,s:b,s:o,s:b,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:{s:I,s:o,s:o},"
                     "s:{s:b,s:b,s:b},s:i,s:i}",
                     "file", qmp_jstr(b->file), "node-name", qmp_jstr(b->node_name), "ro",
                     b->read_only, "drv", qmp_jstr(b->format), "encrypted", 0, "detect_zeroes",
                     "off", "bps", 0, "bps_rd", 0, "bps_wr", 0, "iops", 0, "iops_rd", 0, "iops_wr",
                     0, "image", "virtual-size", (json_int_t)b->virtual_size, "filename",
                     qmp_jstr(b->file), "format", qmp_jstr(b->format), "cache", "writeback",
                     b->writeback, "direct", b->direct, "no-flush", b->no_flush, "write_threshold",
                     0, "backing_file_depth", 0);
}

static json_t *cmd_query_block(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    size_t n;
    struct qmp_block_info *v = fetch_block(c->s, &n);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        /* io-status first, where QEMU prints it; left out when NULL */
        json_t *j = json_pack("{s:s*,s:o,s:b,s:b,s:s}", "io-status", v[i].io_status, "device",
                              qmp_jstr(v[i].device), "locked", 0, "removable", v[i].removable,
                              "type", "unknown");
        if (j && v[i].qdev)
            json_object_set_new(j, "qdev", qmp_jstr(v[i].qdev));
        if (j && v[i].inserted)
            json_object_set_new(j, "inserted", block_inserted(&v[i]));
        json_array_append_new(list, j);
    }
    free(v);
    return list;
}

static json_t *cmd_stop(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    if (run_action(c->s, c->s->ops.stop, "stop", e) < 0)
        return NULL;
    return empty_return();
}

static json_t *cmd_cont(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    if (run_action(c->s, c->s->ops.cont, "cont", e) < 0)
        return NULL;
    return empty_return();
}

static json_t *cmd_system_reset(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    if (run_action(c->s, c->s->ops.system_reset, "system_reset", e) < 0)
        return NULL;
    return empty_return();
}

static json_t *cmd_system_powerdown(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    if (run_action(c->s, c->s->ops.system_powerdown, "system_powerdown", e) < 0)
        return NULL;
    return empty_return();
}

static json_t *cmd_quit(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    /* ops.quit runs once the reply is queued, so the client sees it before we go away. */
    c->s->quit_pending = true;
    return empty_return();
}

/* QEMU's set_link: a NIC or netdev name; an unknown one is DeviceNotFound. */
static json_t *cmd_set_link(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    const char *name = json_string_value(json_object_get(args, "name"));
    struct error err = {0};
    int r = -ENODEV;
    if (c->s->ops.set_link)
        r = c->s->ops.set_link(c->s->ops.opaque, name, json_is_true(json_object_get(args, "up")),
                               &err);
    else
        error_setf(&err, "Device '%s' not found", name);
    if (r == 0)
        return empty_return();
    qmp_err_set(e, r == -ENODEV ? CLS_NO_DEVICE : CLS_GENERIC, "%s", err.set ? err.msg : "failed");
    return NULL;
}

/* QEMU's balloon and query-balloon; without a balloon device, DeviceNotActive. */
static json_t *balloon_error(struct qmp_err *e, int r, struct error *err)
{
    qmp_err_set(e, r == -ENODEV ? CLS_NOT_ACTIVE : CLS_GENERIC, "%s",
                err->set ? err->msg : "No balloon device has been activated");
    return NULL;
}

static json_t *cmd_balloon(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    struct error err = {0};
    int64_t v = (int64_t)json_integer_value(json_object_get(args, "value"));
    int r = c->s->ops.balloon ? c->s->ops.balloon(c->s->ops.opaque, v, &err) : -ENODEV;
    return r == 0 ? empty_return() : balloon_error(e, r, &err);
}

static json_t *cmd_query_balloon(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    struct error err = {0};
    uint64_t actual = 0;
    int r = c->s->ops.query_balloon ? c->s->ops.query_balloon(c->s->ops.opaque, &actual, &err)
                                    : -ENODEV;
    if (r < 0)
        return balloon_error(e, r, &err);
    return json_pack("{s:I}", "actual", (json_int_t)actual);
}

/* QEMU's query-memdev; kemu binds no backend to host NUMA nodes (policy default). */
static json_t *cmd_query_memdev(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    struct qmp_memdev_info v[8];
    size_t n = c->s->ops.query_memdev ? c->s->ops.query_memdev(c->s->ops.opaque, v, 8) : 0;
    json_t *list = json_array();
    for (size_t i = 0; list && i < n && i < 8; i++)
        json_array_append_new(list, json_pack("{s:s, s:I, s:b, s:b, s:b, s:b, s:b, s:[], s:s}",
                                              "id", v[i].id, "size", (json_int_t)v[i].size, "merge",
                                              v[i].merge, "dump", v[i].dump, "prealloc",
                                              v[i].prealloc, "share", v[i].share, "reserve",
                                              v[i].reserve, "host-nodes", "policy", "default"));
    return list;
}

/* ---- human-monitor-command: the same HMP as the interactive monitor ---- */

static json_t *cmd_hmp(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    const char *line = json_string_value(json_object_get(args, "command-line"));
    struct qmp_server *s = c->s;
    bool quit = false;
    char *out = hmp_run(&s->ops, line, &quit);
    if (quit)
        s->quit_pending = true; /* ops.quit once the reply is out, as for QMP's quit */
    if (!out) {
        qmp_err_set(e, CLS_GENERIC, "out of memory");
        return NULL;
    }
    json_t *r = qmp_jstr(out);
    free(out);
    return r;
}

static const struct qmp_arg capabilities_args[] = {
    {"enable", ARG_STR_LIST, true},
    {NULL, ARG_STR, false},
};

static const struct qmp_arg hmp_args[] = {
    {"command-line", ARG_STR, false},
    {"cpu-index", ARG_INT, true},
    {NULL, ARG_STR, false},
};

static const struct qmp_arg set_link_args[] = {
    {"name", ARG_STR, false},
    {"up", ARG_BOOL, false},
    {NULL, ARG_STR, false},
};

static const struct qmp_arg balloon_args[] = {
    {"value", ARG_INT, false},
    {NULL, ARG_STR, false},
};

static const struct qmp_cmd commands[] = {
    {"qmp_capabilities", cmd_capabilities, capabilities_args},
    {"query-version", cmd_query_version, NULL},
    {"query-commands", cmd_query_commands, NULL},
    {"query-status", cmd_query_status, NULL},
    {"query-name", cmd_query_name, NULL},
    {"query-kvm", cmd_query_kvm, NULL},
    {"query-cpus-fast", cmd_query_cpus_fast, NULL},
    {"query-chardev", cmd_query_chardev, NULL},
    {"query-pci", cmd_query_pci, NULL},
    {"query-block", cmd_query_block, NULL},
    {"stop", cmd_stop, NULL},
    {"cont", cmd_cont, NULL},
    {"system_reset", cmd_system_reset, NULL},
    {"system_powerdown", cmd_system_powerdown, NULL},
    {"quit", cmd_quit, NULL},
    {"set_link", cmd_set_link, set_link_args},
    {"balloon", cmd_balloon, balloon_args},
    {"query-balloon", cmd_query_balloon, NULL},
    {"query-memdev", cmd_query_memdev, NULL},
    {"human-monitor-command", cmd_hmp, hmp_args},
};

#define NR_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static json_t *cmd_query_commands(struct qmp_client *c, json_t *args, struct qmp_err *e)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < NR_COMMANDS; i++)
        json_array_append_new(list, json_pack("{s:s}", "name", commands[i].name));
    return list;
}

static const struct qmp_cmd *find_command(const char *name)
{
    for (size_t i = 0; i < NR_COMMANDS; i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static const char *const type_names[] = {
    [ARG_STR] = "string",
    [ARG_BOOL] = "boolean",
    [ARG_INT] = "integer",
    [ARG_STR_LIST] = "array",
};

static bool type_ok(json_t *v, enum arg_type t)
{
    switch (t) {
    case ARG_STR:
        return json_is_string(v);
    case ARG_BOOL:
        return json_is_boolean(v);
    case ARG_INT:
        return json_is_integer(v);
    case ARG_STR_LIST:
        return json_is_array(v);
    }
    return false;
}

/* QEMU's visitor order: declared members first (missing, wrong type), then leftovers. */
static int check_args(const struct qmp_cmd *cmd, json_t *args, struct qmp_err *e)
{
    for (const struct qmp_arg *a = cmd->args; a && a->name; a++) {
        json_t *v = json_object_get(args, a->name);
        if (!v) {
            if (!a->optional)
                return qmp_err_set(e, CLS_GENERIC, "Parameter '%s' is missing", a->name);
            continue;
        }
        if (!type_ok(v, a->type))
            return qmp_err_set(e, CLS_GENERIC, "Invalid parameter type for '%s', expected: %s",
                               a->name, type_names[a->type]);
        if (a->type == ARG_STR_LIST) {
            size_t i;
            json_t *el;
            json_array_foreach(v, i, el)
            {
                if (!json_is_string(el))
                    return qmp_err_set(e, CLS_GENERIC,
                                       "Invalid parameter type for '%s[%zu]', expected: string",
                                       a->name, i);
            }
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v)
    {
        const struct qmp_arg *a = cmd->args;
        while (a && a->name && strcmp(a->name, key))
            a++;
        if (!a || !a->name)
            return qmp_err_set(e, CLS_GENERIC, "Parameter '%s' is unexpected", key);
    }
    return 0;
}

/* The request's own members, as QEMU's qmp_dispatch_check_obj (no out-of-band support). */
static const char *check_request(json_t *req, struct qmp_err *e)
{
    if (!json_is_object(req)) {
        qmp_err_set(e, CLS_GENERIC, "QMP input must be a JSON object");
        return NULL;
    }
    const char *key, *exec = NULL;
    json_t *v;
    json_object_foreach(req, key, v)
    {
        if (!strcmp(key, "execute")) {
            if (!json_is_string(v)) {
                qmp_err_set(e, CLS_GENERIC, "QMP input member 'execute' must be a string");
                return NULL;
            }
            exec = json_string_value(v);
        } else if (!strcmp(key, "arguments")) {
            if (!json_is_object(v)) {
                qmp_err_set(e, CLS_GENERIC, "QMP input member 'arguments' must be an object");
                return NULL;
            }
        } else if (strcmp(key, "id") != 0) {
            qmp_err_set(e, CLS_GENERIC, "QMP input member '%s' is unexpected", key);
            return NULL;
        }
    }
    if (!exec)
        qmp_err_set(e, CLS_GENERIC, "QMP input lacks member 'execute'");
    return exec;
}

void qmp_dispatch(struct qmp_client *c, json_t *req)
{
    struct qmp_err e = {0};
    json_t *ret = NULL;
    const char *name = check_request(req, &e);
    if (name) {
        const struct qmp_cmd *cmd = find_command(name);
        if (!c->negotiated && (!cmd || cmd->fn != cmd_capabilities)) {
            qmp_err_set(&e, CLS_NOT_FOUND,
                        "Expecting capabilities negotiation with 'qmp_capabilities'");
        } else if (!cmd) {
            qmp_err_set(&e, CLS_NOT_FOUND, "The command %s has not been found", name);
        } else {
            json_t *args = json_object_get(req, "arguments");
            json_t *none = NULL;
            if (!args)
                args = none = json_object();
            if (args && check_args(cmd, args, &e) == 0) {
                ret = cmd->fn(c, args, &e);
                if (!ret && !e.set)
                    qmp_err_set(&e, CLS_GENERIC, "out of memory");
            }
            json_decref(none);
        }
    }
    json_t *rsp =
        e.set ? json_pack("{s:{s:s,s:o}}", "error", "class", e.cls, "desc", qmp_jstr(e.desc))
              : json_pack("{s:o}", "return", ret);
    /* id is echoed whatever its type, as QEMU does, even when the request was refused. */
    json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
    if (rsp && id)
        json_object_set(rsp, "id", id);
    if (rsp)
        qmp_client_send(c, rsp);
    json_decref(rsp);
}
