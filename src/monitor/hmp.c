/*
 * HMP: the command table, the commands, x/xp and `info registers` formatting, and the
 * interactive monitor on a chardev. Output follows QEMU 7.2's wording where scripts parse it.
 */
#include "monitor/hmp.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>

#include "kemu-config.h"
#include "core/vm.h"
#include "monitor/disas.h"
#include "monitor/qmp_int.h"

/* ---- the command table ---- */

struct hmp_ctx {
    const struct qmp_vm_ops *ops;
    FILE *f;
    bool quit;
    unsigned *cpu; /* the monitor's current CPU (`cpu N`), for info registers and x */
    char **argv;   /* info: the subcommand's arguments, argv[0] its name */
    int argc;
};

struct hmp_cmd {
    const char *name; /* "cont|c": the name and its aliases */
    const char *args; /* synopsis for help */
    const char *help;
    void (*fn)(struct hmp_ctx *c, char **argv, int argc);
};

static void cmd_help(struct hmp_ctx *c, char **argv, int argc);
static void cmd_info(struct hmp_ctx *c, char **argv, int argc);
static void cmd_stop(struct hmp_ctx *c, char **argv, int argc);
static void cmd_cont(struct hmp_ctx *c, char **argv, int argc);
static void cmd_commit(struct hmp_ctx *c, char **argv, int argc);
static void cmd_hostfwd_add(struct hmp_ctx *c, char **argv, int argc);
static void cmd_hostfwd_remove(struct hmp_ctx *c, char **argv, int argc);
static void cmd_set_link(struct hmp_ctx *c, char **argv, int argc);
static void cmd_reset(struct hmp_ctx *c, char **argv, int argc);
static void cmd_powerdown(struct hmp_ctx *c, char **argv, int argc);
static void cmd_quit(struct hmp_ctx *c, char **argv, int argc);
static void cmd_cpu(struct hmp_ctx *c, char **argv, int argc);
static void cmd_x(struct hmp_ctx *c, char **argv, int argc);
static void cmd_xp(struct hmp_ctx *c, char **argv, int argc);
static void cmd_balloon(struct hmp_ctx *c, char **argv, int argc);

static const struct hmp_cmd commands[] = {
    {"balloon", "target", "request VM to change its memory allocation (in MB)", cmd_balloon},
    {"commit", "device|all",
     "commit changes to the disk images (if -snapshot is used) or backing files", cmd_commit},
    {"cont|c", "", "resume emulation", cmd_cont},
    {"cpu", "index", "set the default CPU", cmd_cpu},
    {"help|?", "[cmd]", "show the help", cmd_help},
    {"hostfwd_add", "[netdev_id] [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport",
     "redirect TCP or UDP connections from host to guest (requires -net user)", cmd_hostfwd_add},
    {"hostfwd_remove", "[netdev_id] [tcp|udp]:[hostaddr]:hostport",
     "remove host-to-guest TCP or UDP redirection", cmd_hostfwd_remove},
    {"info", "[subcommand]", "show various information about the system state", cmd_info},
    {"quit|q", "", "quit the emulator", cmd_quit},
    {"set_link", "name on|off", "change the link status of a network adapter", cmd_set_link},
    {"stop|s", "", "stop emulation", cmd_stop},
    {"system_powerdown", "", "send system power down event", cmd_powerdown},
    {"system_reset", "", "reset the system", cmd_reset},
    {"x", "/fmt addr", "virtual memory dump starting at 'addr'", cmd_x},
    {"xp", "/fmt addr", "physical memory dump starting at 'addr'", cmd_xp},
};

static void info_status(struct hmp_ctx *c);
static void info_cpus(struct hmp_ctx *c);
static void info_block(struct hmp_ctx *c);
static void info_chardev(struct hmp_ctx *c);
static void info_pci(struct hmp_ctx *c);
static void info_registers(struct hmp_ctx *c);
static void info_mtree(struct hmp_ctx *c);
static void info_qtree(struct hmp_ctx *c);
static void info_version(struct hmp_ctx *c);
static void info_kvm(struct hmp_ctx *c);
static void info_name(struct hmp_ctx *c);
static void info_network(struct hmp_ctx *c);
static void info_memdev(struct hmp_ctx *c);
static void info_usernet(struct hmp_ctx *c);
static void info_balloon(struct hmp_ctx *c);

struct hmp_info {
    const char *name;
    const char *help;
    void (*fn)(struct hmp_ctx *c);
};

static const struct hmp_info infos[] = {
    {"balloon", "show balloon information", info_balloon},
    {"block", "show the block devices", info_block},
    {"chardev", "show the character devices", info_chardev},
    {"cpus", "show infos for each CPU", info_cpus},
    {"kvm", "show KVM information", info_kvm},
    {"mtree", "show memory tree", info_mtree},
    {"name", "show the current VM name", info_name},
    {"memdev", "show memory backends", info_memdev},
    {"network", "show the network state", info_network},
    {"pci", "show PCI info", info_pci},
    {"qtree", "show device tree", info_qtree},
    {"registers", "show the cpu registers", info_registers},
    {"status", "show the current VM status (running|paused)", info_status},
    {"usernet", "show user network stack connection states", info_usernet},
    {"version", "show the version of QEMU", info_version},
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Does name match one of the '|'-separated names in list? */
static bool name_matches(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

static void print_cmd_help(FILE *f, const struct hmp_cmd *cmd)
{
    fprintf(f, "%s%s%s -- %s\r\n", cmd->name, cmd->args[0] ? " " : "", cmd->args, cmd->help);
}

static void print_info_help(FILE *f)
{
    for (size_t i = 0; i < ARRAY_SIZE(infos); i++)
        fprintf(f, "info %s  -- %s\r\n", infos[i].name, infos[i].help);
}

/* Echo user text back safely: bytes a terminal would act on become '?'. */
static void put_clean(FILE *f, const char *s)
{
    for (; *s; s++)
        fputc(isprint((unsigned char)*s) ? *s : '?', f);
}

static void cmd_help(struct hmp_ctx *c, char **argv, int argc)
{
    if (argc < 2) {
        for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
            print_cmd_help(c->f, &commands[i]);
        return;
    }
    if (!strcmp(argv[1], "info")) {
        print_info_help(c->f);
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
        if (name_matches(commands[i].name, argv[1])) {
            print_cmd_help(c->f, &commands[i]);
            return;
        }
    }
    fprintf(c->f, "unknown command: '");
    put_clean(c->f, argv[1]);
    fprintf(c->f, "'\r\n");
}

static void cmd_info(struct hmp_ctx *c, char **argv, int argc)
{
    if (argc < 2) {
        print_info_help(c->f);
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(infos); i++) {
        if (!strcmp(infos[i].name, argv[1])) {
            c->argv = argv + 1;
            c->argc = argc - 1;
            infos[i].fn(c);
            return;
        }
    }
    fprintf(c->f, "unknown info item: '");
    put_clean(c->f, argv[1]);
    fprintf(c->f, "'\r\n");
}

/* ---- VM state and actions ---- */

static struct vm *ctx_vm(struct hmp_ctx *c)
{
    return c->ops->vm ? c->ops->vm(c->ops->opaque) : NULL;
}

typedef int (*action_fn)(void *opaque, struct error *err);

static void run_action(struct hmp_ctx *c, action_fn fn, const char *what)
{
    struct error err = {0};
    if (!fn)
        fprintf(c->f, "Error: %s is not supported by this machine\r\n", what);
    else if (fn(c->ops->opaque, &err) < 0)
        fprintf(c->f, "Error: %s\r\n", err.set ? err.msg : "failed");
}

static void cmd_stop(struct hmp_ctx *c, char **argv, int argc)
{
    run_action(c, c->ops->stop, "stop");
}

static void cmd_cont(struct hmp_ctx *c, char **argv, int argc)
{
    run_action(c, c->ops->cont, "cont");
}

/* hostfwd_add/hostfwd_remove [netdev_id] RULE: -1 after printing the usage, else the result of
 * the machine's hostfwd with err filled. */
static int hostfwd(struct hmp_ctx *c, char **argv, int argc, bool add, struct error *err)
{
    if (argc != 2 && argc != 3) {
        fprintf(c->f, "%s: usage: %s [netdev_id] RULE\r\n", argv[0], argv[0]);
        return -1;
    }
    if (!c->ops->hostfwd) {
        error_setf(err, "user mode network stack not in use");
        return -ENODEV;
    }
    return c->ops->hostfwd(c->ops->opaque, argc == 3 ? argv[1] : NULL, add, argv[argc - 1], err);
}

static void cmd_hostfwd_add(struct hmp_ctx *c, char **argv, int argc)
{
    struct error err = {0};
    int r = hostfwd(c, argv, argc, true, &err);
    if (r == -EEXIST) { /* QEMU's words: slirp says no more than that */
        fprintf(c->f, "Could not set up host forwarding rule '");
        put_clean(c->f, argv[argc - 1]);
        fprintf(c->f, "'\r\n");
    } else if (r < 0 && err.set) {
        put_clean(c->f, err.msg);
        fprintf(c->f, "\r\n");
    }
}

static void cmd_hostfwd_remove(struct hmp_ctx *c, char **argv, int argc)
{
    struct error err = {0};
    int r = hostfwd(c, argv, argc, false, &err);
    if (r == 0 || r == -ENOENT) {
        fprintf(c->f, "host forwarding rule for ");
        put_clean(c->f, argv[argc - 1]);
        fprintf(c->f, " %s\r\n", r ? "not found" : "removed");
    } else if (r < 0 && err.set) {
        put_clean(c->f, err.msg);
        fprintf(c->f, "\r\n");
    }
}

static void cmd_set_link(struct hmp_ctx *c, char **argv, int argc)
{
    if (argc != 3) {
        fprintf(c->f, "set_link: usage: set_link name on|off\r\n");
        return;
    }
    bool up = !strcmp(argv[2], "on");
    if (!up && strcmp(argv[2], "off")) {
        fprintf(c->f, "Expected 'on' or 'off'\r\n");
        return;
    }
    struct error err = {0};
    if (!c->ops->set_link)
        error_setf(&err, "Device '%s' not found", argv[1]);
    else if (c->ops->set_link(c->ops->opaque, argv[1], up, &err) == 0)
        return;
    fprintf(c->f, "Error: ");
    put_clean(c->f, err.set ? err.msg : "failed");
    fprintf(c->f, "\r\n");
}

/* QEMU's messages: "Device 'x' not found", "'commit' error for 'x': <strerror>". */
static void cmd_commit(struct hmp_ctx *c, char **argv, int argc)
{
    if (argc != 2) {
        fprintf(c->f, "commit: usage: commit device|all\r\n");
        return;
    }
    if (!c->ops->commit) {
        fprintf(c->f, "Error: commit is not supported by this machine\r\n");
        return;
    }
    struct error err = {0};
    int r = c->ops->commit(c->ops->opaque, argv[1], &err);
    if (r == 0)
        return;
    if (r == -ENODEV) {
        fprintf(c->f, "Device '");
        put_clean(c->f, argv[1]);
        fprintf(c->f, "' not found\r\n");
        return;
    }
    if (err.set && r != -ENOTSUP) { /* the detail QEMU's own error line would lack */
        put_clean(c->f, err.msg);
        fprintf(c->f, "\r\n");
    }
    fprintf(c->f, "'commit' error for '");
    put_clean(c->f, argv[1]);
    fprintf(c->f, "': %s\r\n", strerror(-r));
}

static void cmd_reset(struct hmp_ctx *c, char **argv, int argc)
{
    run_action(c, c->ops->system_reset, "system_reset");
}

static void cmd_powerdown(struct hmp_ctx *c, char **argv, int argc)
{
    run_action(c, c->ops->system_powerdown, "system_powerdown");
}

static void cmd_quit(struct hmp_ctx *c, char **argv, int argc)
{
    c->quit = true;
}

static void cmd_cpu(struct hmp_ctx *c, char **argv, int argc)
{
    struct vm *vm = ctx_vm(c);
    char *end = NULL;
    unsigned long idx = argc == 2 ? strtoul(argv[1], &end, 0) : 0;
    if (argc != 2 || !*argv[1] || *end || argv[1][0] == '-') {
        fprintf(c->f, "cpu: usage: cpu index\r\n");
        return;
    }
    if (!vm || idx >= vm->nr_vcpus) {
        fprintf(c->f, "invalid CPU index\r\n");
        return;
    }
    *c->cpu = (unsigned)idx;
}

static void info_status(struct hmp_ctx *c)
{
    bool running = true;
    const char *st = c->ops->status ? c->ops->status(c->ops->opaque, &running) : NULL;
    if (!st)
        st = running ? "running" : "paused";
    if (running || !strcmp(st, "paused"))
        fprintf(c->f, "VM status: %s\r\n", running ? "running" : "paused");
    else
        fprintf(c->f, "VM status: paused (%s)\r\n", st);
}

static void info_version(struct hmp_ctx *c)
{
    fprintf(c->f, "%d.%d.%d (kemu-%s)\r\n", QMP_VERSION_MAJOR, QMP_VERSION_MINOR, QMP_VERSION_MICRO,
            KEMU_VERSION);
}

static void info_kvm(struct hmp_ctx *c)
{
    fprintf(c->f, "kvm support: enabled\r\n");
}

static void info_name(struct hmp_ctx *c)
{
    if (c->ops->name)
        fprintf(c->f, "%s\r\n", c->ops->name);
}

/* The list queries follow snprintf: ask for the count, then fill. */
#define MAX_RECORDS 4096
#define FETCH(ops, member, type, nout)                                                             \
    ({                                                                                             \
        type *v_ = NULL;                                                                           \
        *(nout) = 0;                                                                               \
        size_t want_ = (ops)->member ? (ops)->member((ops)->opaque, NULL, 0) : 0;                  \
        if (want_ > MAX_RECORDS)                                                                   \
            want_ = MAX_RECORDS;                                                                   \
        if (want_ && (v_ = calloc(want_, sizeof(type)))) {                                         \
            size_t got_ = (ops)->member((ops)->opaque, v_, want_);                                 \
            *(nout) = got_ < want_ ? got_ : want_;                                                 \
        }                                                                                          \
        v_;                                                                                        \
    })

static void info_cpus(struct hmp_ctx *c)
{
    size_t n;
    struct qmp_cpu_info *v = FETCH(c->ops, query_cpus, struct qmp_cpu_info, &n);
    for (size_t i = 0; i < n; i++)
        fprintf(c->f, "%c CPU #%u: thread_id=%d\r\n", v[i].index == *c->cpu ? '*' : ' ', v[i].index,
                v[i].thread_id);
    free(v);
}

static void info_chardev(struct hmp_ctx *c)
{
    size_t n;
    struct qmp_chardev_info *v = FETCH(c->ops, query_chardevs, struct qmp_chardev_info, &n);
    for (size_t i = 0; i < n; i++)
        fprintf(c->f, "%s: filename=%s\r\n", v[i].label ? v[i].label : "",
                v[i].filename ? v[i].filename : "");
    free(v);
}

static void info_memdev(struct hmp_ctx *c)
{
    size_t n;
    struct qmp_memdev_info *v = FETCH(c->ops, query_memdev, struct qmp_memdev_info, &n);
    for (size_t i = 0; i < n; i++)
        fprintf(c->f,
                "memory backend: %s\r\n  size:  %llu\r\n  merge: %s\r\n  dump: %s\r\n"
                "  prealloc: %s\r\n  share: %s\r\n  reserve: %s\r\n  policy: default\r\n"
                "  host nodes: \r\n",
                v[i].id, (unsigned long long)v[i].size, v[i].merge ? "true" : "false",
                v[i].dump ? "true" : "false", v[i].prealloc ? "true" : "false",
                v[i].share ? "true" : "false", v[i].reserve ? "true" : "false");
    fprintf(c->f, "\r\n");
    free(v);
}

static void info_network(struct hmp_ctx *c)
{
    size_t n;
    struct qmp_net_client *v = FETCH(c->ops, query_network, struct qmp_net_client, &n);
    for (size_t i = 0; i < n; i++)
        fprintf(c->f, "%s%s: index=%u,type=%s,%s\r\n", v[i].peer ? " \\ " : "",
                v[i].name ? v[i].name : "", v[i].index, v[i].type ? v[i].type : "", v[i].info);
    free(v);
}

/* QEMU's 'M' argument: a number of MiB, bytes in *out; QEMU's messages when it is not one (0
 * is returned as a valid target, for the command to refuse). */
static bool parse_mib(struct hmp_ctx *c, const char *cmd, char **argv, int argc, int64_t *out)
{
    const char *s = argc > 1 ? argv[1] : "";
    bool neg = *s == '-';
    char *end = (char *)s + neg;
    unsigned long long v = 0;
    if (!*end) {
        fprintf(c->f, "unexpected end of expression\r\n");
    } else if (!isdigit((unsigned char)*end)) {
        fprintf(c->f, "invalid char '");
        put_clean(c->f, (char[]){*end, 0});
        fprintf(c->f, "' in expression\r\n");
    } else {
        errno = 0;
        v = strtoull(end, &end, 0);
        if (errno == ERANGE || v > (unsigned long long)INT64_MAX >> 20)
            fprintf(c->f, "number too large\r\n");
        else if (neg && v)
            fprintf(c->f, "enter a positive value\r\n");
        else if (*end || argc > 2)
            fprintf(c->f, "%s: extraneous characters at the end of line\r\n", cmd);
        else {
            *out = (int64_t)(v << 20);
            return true;
        }
    }
    fprintf(c->f, "Try \"help %s\" for more information\r\n", cmd);
    return false;
}

static void cmd_balloon(struct hmp_ctx *c, char **argv, int argc)
{
    int64_t target;
    if (!parse_mib(c, "balloon", argv, argc, &target))
        return;
    struct error err = {0};
    if (c->ops->balloon && c->ops->balloon(c->ops->opaque, target, &err) == 0)
        return;
    fprintf(c->f, "Error: ");
    put_clean(c->f, err.set ? err.msg : "No balloon device has been activated");
    fprintf(c->f, "\r\n");
}

static void info_balloon(struct hmp_ctx *c)
{
    struct error err = {0};
    uint64_t actual = 0;
    if (c->ops->query_balloon && c->ops->query_balloon(c->ops->opaque, &actual, &err) == 0) {
        fprintf(c->f, "balloon: actual=%llu\r\n", (unsigned long long)(actual >> 20));
        return;
    }
    fprintf(c->f, "Error: ");
    put_clean(c->f, err.set ? err.msg : "No balloon device has been activated");
    fprintf(c->f, "\r\n");
}

static void info_usernet(struct hmp_ctx *c)
{
    char *t = c->ops->usernet_info ? c->ops->usernet_info(c->ops->opaque) : NULL;
    for (const char *p = t; p && *p; p++) { /* the monitor's lines end in "\r\n" */
        if (*p == '\n')
            fputc('\r', c->f);
        fputc(*p, c->f);
    }
    free(t);
}

static void info_block(struct hmp_ctx *c)
{
    size_t n;
    struct qmp_block_info *v = FETCH(c->ops, query_block, struct qmp_block_info, &n);
    for (size_t i = 0; i < n; i++) {
        const struct qmp_block_info *b = &v[i];
        if (i) /* QEMU's blank line between drives */
            fprintf(c->f, "\r\n");
        if (!b->inserted) {
            fprintf(c->f, "%s: [not inserted]\r\n", b->device ? b->device : "");
            continue;
        }
        fprintf(c->f, "%s (%s): %s (%s%s)\r\n", b->device ? b->device : "",
                b->node_name ? b->node_name : "", b->file ? b->file : "",
                b->format ? b->format : "", b->read_only ? ", read-only" : "");
        if (b->qdev)
            fprintf(c->f, "    Attached to:      %s\r\n", b->qdev);
        if (b->io_status && strcmp(b->io_status, "ok")) /* as QEMU: only a failure shows */
            fprintf(c->f, "    I/O status:       %s\r\n", b->io_status);
        fprintf(c->f, "    Cache mode:       %s%s%s\r\n",
                b->writeback ? "writeback" : "writethrough", b->direct ? ", direct" : "",
                b->no_flush ? ", ignore flushes" : "");
    }
    free(v);
}

static void info_pci(struct hmp_ctx *c)
{
    size_t n;
    struct qmp_pci_info *v = FETCH(c->ops, query_pci, struct qmp_pci_info, &n);
    for (size_t i = 0; i < n; i++) {
        const struct qmp_pci_info *d = &v[i];
        fprintf(c->f, "  Bus %2u, device %3u, function %u:\r\n", d->bus, d->slot, d->function);
        if (d->desc)
            fprintf(c->f, "    %s: PCI device %04x:%04x\r\n", d->desc, d->vendor, d->device);
        else /* in decimal, as QEMU prints it ("Class 0255" for 0x00ff) */
            fprintf(c->f, "    Class %04u: PCI device %04x:%04x\r\n", d->class_code, d->vendor,
                    d->device);
        fprintf(c->f, "      PCI subsystem %04x:%04x\r\n", d->subsys_vendor, d->subsys);
        if (d->irq_pin)
            fprintf(c->f, "      IRQ %d, pin %c\r\n", d->irq, 'A' + d->irq_pin - 1);
        for (unsigned r = 0; r < d->nr_regions && r < 7; r++) {
            const struct qmp_pci_region *g = &d->regions[r];
            if (g->io)
                fprintf(c->f, "      BAR%d: I/O at 0x%04" PRIx64 " [0x%04" PRIx64 "].\r\n", g->bar,
                        g->address, g->address + g->size - 1);
            else
                fprintf(c->f,
                        "      BAR%d: %d bit%s memory at 0x%08" PRIx64 " [0x%08" PRIx64 "].\r\n",
                        g->bar, g->mem64 ? 64 : 32, g->prefetch ? " prefetchable" : "", g->address,
                        g->address + g->size - 1);
        }
        fprintf(c->f, "      id \"%s\"\r\n", d->qdev_id ? d->qdev_id : "");
    }
    free(v);
}

/* ---- registers ---- */

static void seg_from_kvm(struct hmp_segment *o, const struct kvm_segment *s)
{
    *o = (struct hmp_segment){.selector = s->selector,
                              .base = s->base,
                              .limit = s->limit,
                              .type = s->type,
                              .present = s->present,
                              .dpl = s->dpl,
                              .db = s->db,
                              .s = s->s,
                              .l = s->l,
                              .g = s->g,
                              .avl = s->avl};
}

static int read_cpu_state(struct vm *vm, unsigned idx, struct hmp_cpu_state *st, struct error *err)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    struct kvm_mp_state mp = {0};
    if (vm_vcpu_get_state(vm, idx, &r, &s, &mp, err) < 0)
        return -1;
    uint64_t g[16] = {r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp,
                      r.r8,  r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15};
    memcpy(st->gpr, g, sizeof(g));
    st->rip = r.rip;
    st->rflags = r.rflags;
    seg_from_kvm(&st->es, &s.es);
    seg_from_kvm(&st->cs, &s.cs);
    seg_from_kvm(&st->ss, &s.ss);
    seg_from_kvm(&st->ds, &s.ds);
    seg_from_kvm(&st->fs, &s.fs);
    seg_from_kvm(&st->gs, &s.gs);
    seg_from_kvm(&st->ldt, &s.ldt);
    seg_from_kvm(&st->tr, &s.tr);
    st->gdt_base = s.gdt.base;
    st->gdt_limit = s.gdt.limit;
    st->idt_base = s.idt.base;
    st->idt_limit = s.idt.limit;
    st->cr0 = s.cr0;
    st->cr2 = s.cr2;
    st->cr3 = s.cr3;
    st->cr4 = s.cr4;
    st->cr8 = s.cr8;
    st->efer = s.efer;
    st->apic_base = s.apic_base;
    st->halted = mp.mp_state == KVM_MP_STATE_HALTED;
    return 0;
}

/* QEMU's segment flags word: type in 8-11, S 12, DPL 13-14, P 15, AVL 20, L 21, DB 22, G 23. */
static uint32_t seg_flags(const struct hmp_segment *s)
{
    return (uint32_t)s->type << 8 | (uint32_t)s->s << 12 | (uint32_t)s->dpl << 13 |
           (uint32_t)s->present << 15 | (uint32_t)s->avl << 20 | (uint32_t)s->l << 21 |
           (uint32_t)s->db << 22 | (uint32_t)s->g << 23;
}

static void print_seg(FILE *f, const char *name, const struct hmp_segment *s)
{
    fprintf(f, "%-3s=%04x %016" PRIx64 " %08x %08x\r\n", name, s->selector, s->base, s->limit,
            seg_flags(s));
}

void hmp_print_registers(FILE *f, unsigned cpu, const struct hmp_cpu_state *st)
{
    static const char *const names[16] = {"RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP",
                                          "R8 ", "R9 ", "R10", "R11", "R12", "R13", "R14", "R15"};
    if (cpu)
        fprintf(f, "CPU#%u\r\n", cpu);
    for (int i = 0; i < 16; i++)
        fprintf(f, "%s=%016" PRIx64 "%s", names[i], st->gpr[i], i % 4 == 3 ? "\r\n" : " ");
    uint64_t fl = st->rflags;
    /* QEMU's flag letters: D O S Z A P C, '-' when clear. */
    fprintf(f,
            "RIP=%016" PRIx64 " RFL=%08" PRIx64
            " [%c%c%c%c%c%c%c] CPL=%u II=0 A20=1 SMM=0 HLT=%d\r\n",
            st->rip, fl, fl & 0x400 ? 'D' : '-', fl & 0x800 ? 'O' : '-', fl & 0x80 ? 'S' : '-',
            fl & 0x40 ? 'Z' : '-', fl & 0x10 ? 'A' : '-', fl & 0x4 ? 'P' : '-',
            fl & 0x1 ? 'C' : '-', st->cs.selector & 3, st->halted ? 1 : 0);
    print_seg(f, "ES", &st->es);
    print_seg(f, "CS", &st->cs);
    print_seg(f, "SS", &st->ss);
    print_seg(f, "DS", &st->ds);
    print_seg(f, "FS", &st->fs);
    print_seg(f, "GS", &st->gs);
    print_seg(f, "LDT", &st->ldt);
    print_seg(f, "TR", &st->tr);
    fprintf(f, "GDT=     %016" PRIx64 " %08x\r\n", st->gdt_base, st->gdt_limit);
    fprintf(f, "IDT=     %016" PRIx64 " %08x\r\n", st->idt_base, st->idt_limit);
    fprintf(f, "CR0=%08" PRIx64 " CR2=%016" PRIx64 " CR3=%016" PRIx64 " CR4=%08" PRIx64 "\r\n",
            st->cr0, st->cr2, st->cr3, st->cr4);
    fprintf(f, "CR8=%016" PRIx64 "\r\n", st->cr8);
    fprintf(f, "EFER=%016" PRIx64 " APIC_BASE=%016" PRIx64 "\r\n", st->efer, st->apic_base);
}

static void info_registers(struct hmp_ctx *c)
{
    struct vm *vm = ctx_vm(c);
    bool all = c->argc == 2 && !strcmp(c->argv[1], "-a");
    if (c->argc > 2 || (c->argc == 2 && !all)) {
        fprintf(c->f, "info registers: usage: info registers [-a]\r\n");
        return;
    }
    if (!vm || !vm->nr_vcpus) {
        fprintf(c->f, "Error: no CPU to show\r\n");
        return;
    }
    unsigned first = all ? 0 : (*c->cpu < vm->nr_vcpus ? *c->cpu : 0);
    unsigned last = all ? vm->nr_vcpus - 1 : first;
    for (unsigned i = first; i <= last; i++) {
        struct hmp_cpu_state st = {0};
        struct error err = {0};
        if (read_cpu_state(vm, i, &st, &err) < 0) {
            fprintf(c->f, "Error: CPU#%u: %s\r\n", i, err.msg);
            continue;
        }
        /* With -a every CPU gets its "CPU#n" head, CPU 0 included, as in QEMU. */
        if (all && i == 0)
            fprintf(c->f, "CPU#0\r\n");
        hmp_print_registers(c->f, i, &st);
    }
}

/* ---- x / xp ---- */

/*
 * "/fmt" with the format and size to use when it gives none. Returns 0; -1 with msg one of
 * kemu's own limits; -2 with msg QEMU's line for a format it cannot parse (the caller adds
 * QEMU's "Try help" line). *have_size tells whether a size letter was given.
 */
static int parse_xfmt(const char *s, struct hmp_xfmt *f, char *msg, size_t msg_size, char dformat,
                      unsigned dsize, bool *have_size_out)
{
    *f = (struct hmp_xfmt){.count = 1, .format = dformat, .size = dsize};
    *have_size_out = false;
    if (!*s)
        return 0;
    if (*s != '/') {
        snprintf(msg, msg_size, "invalid format '%.32s': it starts with '/'", s);
        return -1;
    }
    s++;
    if (isdigit((unsigned char)*s)) {
        uint64_t n = 0;
        while (isdigit((unsigned char)*s)) {
            n = n * 10 + (uint64_t)(*s++ - '0');
            if (n > HMP_MAX_DUMP) {
                snprintf(msg, msg_size, "count too large (at most %u bytes per dump)",
                         HMP_MAX_DUMP);
                return -1;
            }
        }
        f->count = n;
    }
    bool have_size = false;
    for (; *s; s++) {
        switch (*s) {
        case 'x':
        case 'd':
        case 'u':
        case 'o':
        case 't':
        case 'c':
        case 'i':
            f->format = *s;
            break;
        case 'b':
            f->size = 1;
            have_size = true;
            break;
        case 'h':
            f->size = 2;
            have_size = true;
            break;
        case 'w':
            f->size = 4;
            have_size = true;
            break;
        case 'g':
            f->size = 8;
            have_size = true;
            break;
        default:
            /* QEMU's wording; a control byte shows as '?' so it cannot reach the terminal. */
            snprintf(msg, msg_size, "invalid char in format: '%c'",
                     isprint((unsigned char)*s) ? *s : '?');
            return -2;
        }
    }
    if (f->format == 'i') {
        /* The size letter means nothing to disassembly; the count bounds the output. */
        f->size = 1;
        if (f->count > HMP_MAX_INSNS) {
            snprintf(msg, msg_size, "count too large (at most %u instructions)", HMP_MAX_INSNS);
            return -1;
        }
    }
    *have_size_out = have_size;
    if (f->count * f->size > HMP_MAX_DUMP) {
        snprintf(msg, msg_size, "count too large (at most %u bytes per dump)", HMP_MAX_DUMP);
        return -1;
    }
    return 0;
}

int hmp_parse_xfmt(const char *s, struct hmp_xfmt *f, char *msg, size_t msg_size)
{
    bool have_size;
    int r = parse_xfmt(s, f, msg, msg_size, 'x', 4, &have_size);
    if (r < 0)
        return -1;
    if (f->format == 'c' && !have_size)
        f->size = 1;
    return 0;
}

#define PTE_P    1ULL
#define PTE_PS   (1ULL << 7)
#define PTE_ADDR 0x000ffffffffff000ULL

int hmp_translate(hmp_read_phys_fn read, void *opaque, uint64_t cr3, uint64_t va, uint64_t *gpa,
                  int *level)
{
    uint64_t table = cr3 & PTE_ADDR;
    for (int lvl = 4; lvl >= 1; lvl--) {
        unsigned shift = 12 + 9 * (unsigned)(lvl - 1);
        uint64_t idx = (va >> shift) & 511, e;
        if (read(opaque, table + idx * 8, &e, 8) < 0) {
            *level = lvl;
            return -2;
        }
        if (!(e & PTE_P)) {
            *level = lvl;
            return -1;
        }
        if (lvl == 1 || ((lvl == 2 || lvl == 3) && (e & PTE_PS))) {
            uint64_t mask = (1ULL << shift) - 1;
            *gpa = ((e & PTE_ADDR) & ~mask) | (va & mask);
            return 0;
        }
        table = e & PTE_ADDR;
    }
    return -1; /* not reached */
}

static void print_value(FILE *f, char format, unsigned size, uint64_t v)
{
    unsigned bits = size * 8;
    switch (format) {
    case 'x':
        fprintf(f, " 0x%0*" PRIx64, (int)(bits + 3) / 4, v);
        break;
    case 'o':
        fprintf(f, " %#*" PRIo64, (int)(bits + 2) / 3, v);
        break;
    case 'u':
        fprintf(f, " %*" PRIu64, (int)(bits * 10 + 32) / 33, v);
        break;
    case 'd': {
        int64_t sv = bits == 64 ? (int64_t)v : (int64_t)(v << (64 - bits)) >> (64 - bits);
        fprintf(f, " %*" PRId64, (int)(bits * 10 + 32) / 33, sv);
        break;
    }
    case 't':
        fputc(' ', f);
        for (int b = (int)bits - 1; b >= 0; b--)
            fputc(v >> b & 1 ? '1' : '0', f);
        break;
    case 'c':
        if (v >= 0x20 && v < 0x7f && v != '\'' && v != '\\')
            fprintf(f, " '%c'", (int)v);
        else if (v == '\n')
            fprintf(f, " '\\n'");
        else
            fprintf(f, " '\\x%02" PRIx64 "'", v & 0xff);
        break;
    }
}

void hmp_dump(FILE *f, const struct hmp_xfmt *fmt, uint64_t addr, bool virt, uint64_t cr3,
              hmp_read_phys_fn read, void *opaque)
{
    uint64_t len = fmt->count * fmt->size;
    unsigned line = fmt->size == 1 ? 8 : 16; /* bytes per line, as QEMU */
    while (len > 0) {
        unsigned l = len < line ? (unsigned)len : line;
        uint8_t buf[16];
        fprintf(f, "%016" PRIx64 ":", addr);
        /* Byte by byte through the translation, so a dump may cross a page boundary; what was
         * read before a failure is still shown. */
        char why[96] = "";
        unsigned got = 0;
        for (; got < l; got++) {
            uint64_t gpa = addr + got;
            int level = 0;
            if (virt) {
                int r = hmp_translate(read, opaque, cr3, addr + got, &gpa, &level);
                if (r < 0) {
                    snprintf(why, sizeof(why), "%s at 0x%" PRIx64,
                             r == -1 ? "page not present" : "page table outside RAM", addr + got);
                    break;
                }
            }
            if (read(opaque, gpa, &buf[got], 1) < 0) {
                snprintf(why, sizeof(why), "0x%" PRIx64 " is outside guest RAM", gpa);
                break;
            }
        }
        /* As QEMU: /c shows each of the count * size bytes as a character. */
        unsigned unit = fmt->format == 'c' ? 1 : fmt->size;
        for (unsigned i = 0; i + unit <= got; i += unit) {
            uint64_t v = 0;
            for (unsigned b = 0; b < unit; b++)
                v |= (uint64_t)buf[i + b] << (8 * b);
            print_value(f, fmt->format, unit, v);
        }
        if (why[0]) {
            fprintf(f, " Cannot access memory: %s\r\n", why);
            return;
        }
        fprintf(f, "\r\n");
        addr += l;
        len -= l;
    }
}

static int vm_read_phys(void *opaque, uint64_t gpa, void *buf, size_t len)
{
    struct vm *vm = opaque;
    return guest_mem_read(&vm->mem, gpa, buf, len) < 0 ? -1 : 0;
}

/* The monitor CPU's registers, read once per command when an address or x /i needs them. */
struct lazy_state {
    struct hmp_ctx *c;
    bool have;
    struct hmp_cpu_state st;
};

static const struct hmp_cpu_state *lazy_get(struct lazy_state *ls)
{
    if (ls->have)
        return &ls->st;
    struct vm *vm = ctx_vm(ls->c);
    if (!vm || !vm->nr_vcpus) {
        fprintf(ls->c->f, "Error: no machine\r\n");
        return NULL;
    }
    struct error err = {0};
    unsigned cpu = *ls->c->cpu < vm->nr_vcpus ? *ls->c->cpu : 0;
    if (read_cpu_state(vm, cpu, &ls->st, &err) < 0) {
        fprintf(ls->c->f, "Error: %s\r\n", err.msg);
        return NULL;
    }
    ls->have = true;
    return &ls->st;
}

/* QEMU's x86 monitor registers ($name, target/i386/monitor.c): full 64-bit values. Returns 0,
 * or -1 for an unknown name. */
static int reg_value(const struct hmp_cpu_state *st, const char *name, uint64_t *v)
{
    /* st->gpr is in RAX RBX RCX RDX RSI RDI RBP RSP order. */
    static const struct {
        const char *names;
        int gpr;
    } gprs[] = {{"eax", 0},    {"ebx", 1},    {"ecx", 2},  {"edx", 3}, {"esi", 4},  {"edi", 5},
                {"ebp|fp", 6}, {"esp|sp", 7}, {"r8", 8},   {"r9", 9},  {"r10", 10}, {"r11", 11},
                {"r12", 12},   {"r13", 13},   {"r14", 14}, {"r15", 15}};
    for (size_t i = 0; i < ARRAY_SIZE(gprs); i++) {
        if (name_matches(gprs[i].names, name)) {
            *v = st->gpr[gprs[i].gpr];
            return 0;
        }
    }
    if (!strcmp(name, "eip")) {
        *v = st->rip;
        return 0;
    }
    if (!strcmp(name, "eflags")) {
        *v = st->rflags;
        return 0;
    }
    if (!strcmp(name, "pc")) { /* linear: CS base + EIP */
        *v = st->cs.base + st->rip;
        return 0;
    }
    static const char segs[][3] = {"cs", "ds", "es", "ss", "fs", "gs"};
    const struct hmp_segment *sv[] = {&st->cs, &st->ds, &st->es, &st->ss, &st->fs, &st->gs};
    for (size_t i = 0; i < ARRAY_SIZE(segs); i++) {
        if (strncmp(name, segs[i], 2))
            continue;
        if (!name[2])
            *v = sv[i]->selector;
        else if (!strcmp(name + 2, ".base"))
            *v = sv[i]->base;
        else if (!strcmp(name + 2, ".limit"))
            *v = sv[i]->limit;
        else
            return -1;
        return 0;
    }
    return -1;
}

/*
 * An address: terms joined by '+' or '-' without blanks, each a number in C syntax (0x hex,
 * 0 octal, decimal) or a register as $name ($pc, $eip, $esp...), a subset of QEMU's
 * expressions. Returns 0, or -1 after printing why.
 */
static int parse_addr(struct hmp_ctx *c, struct lazy_state *ls, const char *s, uint64_t *out)
{
    uint64_t sum = 0;
    bool neg = false;
    if (!*s || *s == '-' || *s == '+')
        goto invalid;
    for (;;) {
        uint64_t v;
        const char *end;
        if (*s == '$') {
            char name[16];
            size_t n = strcspn(s + 1, "+-");
            if (n == 0 || n >= sizeof(name))
                goto unknown_reg;
            memcpy(name, s + 1, n);
            name[n] = '\0';
            const struct hmp_cpu_state *st = lazy_get(ls);
            if (!st)
                return -1;
            if (reg_value(st, name, &v) < 0)
                goto unknown_reg;
            end = s + 1 + n;
        } else {
            char *e;
            errno = 0;
            if (!isdigit((unsigned char)*s))
                goto invalid;
            v = strtoull(s, &e, 0);
            if (errno)
                goto invalid;
            end = e;
        }
        sum = neg ? sum - v : sum + v;
        if (!*end)
            break;
        if ((*end != '+' && *end != '-') || !end[1])
            goto invalid;
        neg = *end == '-';
        s = end + 1;
    }
    *out = sum;
    return 0;
unknown_reg:
    /* QEMU's wording, both lines. */
    fprintf(c->f, "unknown register\r\nTry \"help x\" for more information\r\n");
    return -1;
invalid:
    return -2;
}

/* x /i reads: through the page tables (virt) from cr3, or physical. */
struct disas_mem {
    struct vm *vm;
    bool virt;
    uint64_t cr3;
};

static int disas_read(void *opaque, uint64_t addr, void *buf, size_t len)
{
    struct disas_mem *d = opaque;
    uint64_t gpa = addr;
    int level;
    /* One translation: the disassembler never reads across a 1 KiB boundary. */
    if (d->virt && hmp_translate(vm_read_phys, d->vm, d->cr3, addr, &gpa, &level) < 0)
        return -1;
    return vm_read_phys(d->vm, gpa, buf, len) < 0 ? -1 : (int)len;
}

static void memory_dump(struct hmp_ctx *c, char **argv, int argc, bool virt)
{
    const char *fmt_s = "", *addr_s = NULL;
    if (argc == 3) {
        fmt_s = argv[1];
        addr_s = argv[2];
    } else if (argc == 2 && argv[1][0] != '/') {
        addr_s = argv[1];
    }
    if (!addr_s) {
        fprintf(c->f, "%s: usage: %s /fmt addr\r\n", argv[0], argv[0]);
        return;
    }
    /* As in QEMU, x and xp share the last format and size given (the count is 1 each time);
     * a format that does not parse changes neither. */
    static char last_format = 'x';
    static unsigned last_size = 4;
    struct hmp_xfmt fmt;
    char msg[128];
    bool have_size;
    int pr = parse_xfmt(fmt_s, &fmt, msg, sizeof(msg), last_format, last_size, &have_size);
    if (pr == -2) {
        fprintf(c->f, "%s\r\nTry \"help %s\" for more information\r\n", msg, argv[0]);
        return;
    }
    if (pr < 0) {
        fprintf(c->f, "%s: %s\r\n", argv[0], msg);
        return;
    }
    last_format = fmt.format;
    if (fmt.format != 'i') /* /i takes no size, and keeps the last one */
        last_size = fmt.size;
    if (fmt.format == 'i' && !disas_available()) {
        fprintf(c->f, "%s: /i needs capstone (%s)\r\n", argv[0], disas_missing());
        return;
    }
    struct lazy_state ls = {.c = c};
    uint64_t addr;
    int r = parse_addr(c, &ls, addr_s, &addr);
    if (r == -2) {
        fprintf(c->f, "%s: invalid address '", argv[0]);
        put_clean(c->f, addr_s);
        fprintf(c->f, "'\r\n");
    }
    if (r < 0)
        return;
    struct vm *vm = ctx_vm(c);
    if (!vm) {
        fprintf(c->f, "Error: no machine\r\n");
        return;
    }
    uint64_t cr3 = 0;
    if (virt || fmt.format == 'i') {
        const struct hmp_cpu_state *st = lazy_get(&ls);
        if (!st)
            return;
        /* Without paging (CR0.PG clear) a virtual address is the physical one. */
        if (!(st->cr0 & (1ULL << 31)))
            virt = false;
        else if (virt && (!(st->efer & (1ULL << 10)) || !(st->cr4 & (1ULL << 5)))) {
            fprintf(c->f, "x: only 4-level (long mode) paging is supported; use xp\r\n");
            return;
        }
        cr3 = st->cr3;
    }
    if (fmt.format == 'i') {
        struct disas_mem d = {.vm = vm, .virt = virt, .cr3 = cr3};
        disas_x86(c->f, addr, fmt.count, disas_x86_mode(ls.st.cs.db, ls.st.cs.l, ls.st.efer),
                  disas_read, &d);
        return;
    }
    hmp_dump(c->f, &fmt, addr, virt, cr3, vm_read_phys, vm);
}

static void cmd_x(struct hmp_ctx *c, char **argv, int argc)
{
    memory_dump(c, argv, argc, true);
}

static void cmd_xp(struct hmp_ctx *c, char **argv, int argc)
{
    memory_dump(c, argv, argc, false);
}

/* ---- mtree / qtree ---- */

static void print_bus(FILE *f, struct bus *b, int digits, const char *indent)
{
    pthread_rwlock_rdlock(&b->lock);
    for (unsigned i = 0; i < b->nr; i++) {
        const struct bus_range *r = &b->ranges[i];
        fprintf(f, "%s%0*" PRIx64 "-%0*" PRIx64 " (prio 1, i/o): %s\r\n", indent, digits, r->base,
                digits, r->base + r->len - 1, r->name ? r->name : "?");
    }
    pthread_rwlock_unlock(&b->lock);
}

static void info_mtree(struct hmp_ctx *c)
{
    struct vm *vm = ctx_vm(c);
    if (!vm) {
        fprintf(c->f, "Error: no machine\r\n");
        return;
    }
    fprintf(c->f, "address-space: memory\r\n");
    fprintf(c->f, "  0000000000000000-ffffffffffffffff (prio 0, i/o): system\r\n");
    for (unsigned i = 0; i < vm->mem.nr; i++) {
        const struct guest_region *r = &vm->mem.regions[i];
        fprintf(c->f, "    %016" PRIx64 "-%016" PRIx64 " (prio 0, ram): ram-%s\r\n", r->gpa,
                r->gpa + r->size - 1, r->gpa >= (1ULL << 32) ? "above-4g" : "below-4g");
    }
    /* The hole between the end of low RAM and 4 GiB is where PCI BARs and the chipset live. */
    uint64_t low_end = 0;
    for (unsigned i = 0; i < vm->mem.nr; i++) {
        const struct guest_region *r = &vm->mem.regions[i];
        if (r->gpa < (1ULL << 32) && r->gpa + r->size > low_end)
            low_end = r->gpa + r->size;
    }
    if (low_end < (1ULL << 32))
        fprintf(c->f, "    %016" PRIx64 "-%016" PRIx64 " (prio -1, i/o): pci-hole\r\n", low_end,
                (uint64_t)0xffffffff);
    print_bus(c->f, &vm->mmio, 16, "    ");
    fprintf(c->f, "\r\naddress-space: I/O\r\n");
    fprintf(c->f, "  0000-ffff (prio 0, i/o): io\r\n");
    print_bus(c->f, &vm->pio, 4, "    ");
}

static void info_qtree(struct hmp_ctx *c)
{
    struct vm *vm = ctx_vm(c);
    fprintf(c->f, "bus: main-system-bus\r\n  type System\r\n");
    if (vm) {
        /* Platform devices are what sits on the port and MMIO buses outside PCI BARs. */
        for (int b = 0; b < 2; b++) {
            struct bus *bus = b ? &vm->mmio : &vm->pio;
            pthread_rwlock_rdlock(&bus->lock);
            for (unsigned i = 0; i < bus->nr; i++) {
                const struct bus_range *r = &bus->ranges[i];
                fprintf(c->f, "  dev: %s, id \"\"\r\n", r->name ? r->name : "?");
                fprintf(c->f, "    %s = 0x%" PRIx64 "\r\n    size = %" PRIu64 "\r\n",
                        b ? "mmio" : "iobase", r->base, r->len);
            }
            pthread_rwlock_unlock(&bus->lock);
        }
    }
    size_t n;
    struct qmp_pci_info *v = FETCH(c->ops, query_pci, struct qmp_pci_info, &n);
    if (n)
        fprintf(c->f, "  bus: pci.0\r\n    type PCI\r\n");
    for (size_t i = 0; i < n; i++) {
        const struct qmp_pci_info *d = &v[i];
        fprintf(c->f, "    dev: %s, id \"%s\"\r\n", d->type ? d->type : "pci-device",
                d->qdev_id ? d->qdev_id : "");
        fprintf(c->f, "      addr = %02x.%x\r\n", d->slot, d->function);
        fprintf(c->f, "      class %04x, addr 00:%02x.%x, pci id %04x:%04x (sub %04x:%04x)\r\n",
                d->class_code, d->slot, d->function, d->vendor, d->device, d->subsys_vendor,
                d->subsys);
        for (unsigned r = 0; r < d->nr_regions && r < 7; r++)
            fprintf(c->f, "      bar %d: %s at 0x%" PRIx64 " [0x%" PRIx64 "]\r\n",
                    d->regions[r].bar, d->regions[r].io ? "i/o" : "mem", d->regions[r].address,
                    d->regions[r].address + d->regions[r].size - 1);
    }
    free(v);
}

/* ---- running a line ---- */

#define MAX_ARGS 8

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

char *hmp_run(const struct qmp_vm_ops *ops, const char *line, bool *quit)
{
    unsigned cpu = 0;
    return hmp_run_cpu(ops, &cpu, line, quit);
}

char *hmp_run_cpu(const struct qmp_vm_ops *ops, unsigned *cpu, const char *line, bool *quit)
{
    *quit = false;
    if (ops->hmp) {
        char *board = ops->hmp(ops->opaque, line);
        if (board)
            return board;
    }
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    /* A copy with room for one more byte: "x/4bx addr" is QEMU's spelling of "x /4bx addr", so
     * a blank goes in before a '/' inside the first word. */
    size_t n = strlen(line);
    char *copy = malloc(n + 2);
    if (!copy) {
        fclose(f);
        free(out);
        return NULL;
    }
    size_t o = 0, i = 0;
    while (i < n && is_blank(line[i]))
        i++;
    for (bool first = true; i < n; i++) {
        if (first && line[i] == '/' && o > 0) {
            copy[o++] = ' ';
            first = false; /* one blank at most: the copy has room for one */
        }
        if (is_blank(line[i]))
            first = false;
        copy[o++] = line[i];
    }
    copy[o] = '\0';
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    for (char *p = copy; *p;) {
        while (is_blank(*p))
            *p++ = '\0';
        if (!*p)
            break;
        if (argc == MAX_ARGS) {
            argc = -1;
            break;
        }
        argv[argc++] = p;
        while (*p && !is_blank(*p))
            p++;
    }
    if (argc < 0) {
        fprintf(f, "Error: too many arguments\r\n");
    } else if (argc > 0) {
        argv[argc] = NULL;
        struct hmp_ctx c = {.ops = ops, .f = f, .cpu = cpu};
        const struct hmp_cmd *cmd = NULL;
        for (size_t k = 0; k < ARRAY_SIZE(commands) && !cmd; k++)
            if (name_matches(commands[k].name, argv[0]))
                cmd = &commands[k];
        if (cmd) {
            cmd->fn(&c, argv, argc);
        } else {
            fprintf(f, "unknown command: '");
            put_clean(f, argv[0]);
            fprintf(f, "'\r\n");
        }
        *quit = c.quit;
    }
    free(copy);
    fclose(f);
    return out;
}

/* ---- the interactive monitor ---- */

struct hmp_monitor {
    struct chardev *chr;
    const struct qmp_vm_ops *ops;
    bool mux;
    bool greeted;  /* mux: the banner goes out on the first switch only */
    bool too_long; /* the line overflowed: drop input up to its end */
    bool last_cr;  /* CR LF counts as one end of line */
    int esc;       /* 0, or how far into an escape sequence (arrow keys): dropped */
    unsigned cpu;  /* `cpu N`: the CPU info registers and x use, per monitor as in QEMU */
    size_t len;
    char line[HMP_MAX_LINE + 1];
    /* Echo is gathered and written once per input chunk: a byte per write would overrun a
     * socket's buffer (it counts per packet) while the peer is still sending. */
    size_t echo_len;
    char echo[256];
};

static void mon_flush_echo(struct hmp_monitor *m)
{
    if (m->echo_len)
        chardev_write(m->chr, m->echo, m->echo_len);
    m->echo_len = 0;
}

static void mon_echo(struct hmp_monitor *m, char ch)
{
    if (m->echo_len == sizeof(m->echo))
        mon_flush_echo(m);
    m->echo[m->echo_len++] = ch;
}

static void mon_puts(struct hmp_monitor *m, const char *s)
{
    mon_flush_echo(m);
    chardev_write(m->chr, s, strlen(s));
}

static void mon_banner(struct hmp_monitor *m)
{
    mon_puts(m, "kemu " KEMU_VERSION " monitor - type 'help' for more information\r\n(qemu) ");
}

static void mon_opened(void *opaque)
{
    struct hmp_monitor *m = opaque;
    if (m->mux && m->greeted) {
        mon_puts(m, "\r\n(qemu) ");
        return;
    }
    m->greeted = true;
    m->len = 0;
    m->too_long = false;
    mon_banner(m);
}

static size_t mon_can_receive(void *opaque)
{
    return 4096;
}

static void mon_execute(struct hmp_monitor *m)
{
    m->line[m->len] = '\0';
    bool quit = false;
    char *out = hmp_run_cpu(m->ops, &m->cpu, m->line, &quit);
    m->len = 0;
    if (out) {
        mon_puts(m, out);
        free(out);
    } else {
        mon_puts(m, "Error: out of memory\r\n");
    }
    if (quit) {
        if (m->ops->quit)
            m->ops->quit(m->ops->opaque);
        return; /* no prompt: the emulator is going away */
    }
    mon_puts(m, "(qemu) ");
}

static void mon_byte(struct hmp_monitor *m, uint8_t ch)
{
    if (m->esc) {
        /* ESC [ params final: the final byte is a letter or '~'. */
        if (m->esc == 1 && ch != '[' && ch != 'O') {
            m->esc = 0;
        } else if (m->esc > 1 && (isalpha(ch) || ch == '~' || m->esc > 16)) {
            m->esc = 0;
        } else {
            m->esc++;
        }
        return;
    }
    if (ch == '\n' && m->last_cr) {
        m->last_cr = false;
        return;
    }
    m->last_cr = ch == '\r';
    if (ch == '\r' || ch == '\n') {
        mon_puts(m, "\r\n");
        if (m->too_long) {
            m->too_long = false;
            m->len = 0;
            char msg[96];
            snprintf(msg, sizeof(msg),
                     "Error: command line too long (at most %d bytes), ignored\r\n(qemu) ",
                     HMP_MAX_LINE);
            mon_puts(m, msg);
            return;
        }
        mon_execute(m);
        return;
    }
    if (ch == 0x1b) {
        m->esc = 1;
        return;
    }
    if (ch == 0x7f || ch == 0x08) {
        if (m->len > 0 && !m->too_long) {
            m->len--;
            mon_echo(m, '\b');
            mon_echo(m, ' ');
            mon_echo(m, '\b');
        }
        return;
    }
    if (ch == 0x03 || ch == 0x15) { /* ^C, ^U: forget the line */
        m->len = 0;
        m->too_long = false;
        mon_puts(m, "\r\n(qemu) ");
        return;
    }
    if (ch < 0x20 && ch != '\t')
        return; /* other control bytes mean nothing to a command line */
    if (m->too_long)
        return;
    if (m->len >= HMP_MAX_LINE) {
        m->too_long = true;
        return;
    }
    m->line[m->len++] = (char)ch;
    /* Echo: a raw terminal shows nothing by itself. Bytes >= 0x80 are echoed as '?'. */
    mon_echo(m, ch < 0x80 ? (char)ch : '?');
}

void hmp_monitor_input(struct hmp_monitor *m, const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        mon_byte(m, buf[i]);
    mon_flush_echo(m);
}

static void mon_receive(void *opaque, const uint8_t *buf, size_t len)
{
    hmp_monitor_input(opaque, buf, len);
}

struct hmp_monitor *hmp_monitor_new(struct chardev *chr, const struct qmp_vm_ops *ops, bool mux)
{
    struct hmp_monitor *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->chr = chr;
    m->ops = ops;
    m->mux = mux;
    struct chardev_frontend fe = {
        .can_receive = mon_can_receive, .receive = mon_receive, .opened = mon_opened, .opaque = m};
    if (mux) {
        chardev_set_monitor(chr, &fe);
    } else {
        chardev_set_frontend(chr, &fe);
        mon_opened(m); /* stdio, or a socket whose client is already there (wait=on) */
    }
    return m;
}

void hmp_monitor_free(struct hmp_monitor *m)
{
    free(m);
}
