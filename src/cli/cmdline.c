/* The kemu command line: one option table drives parsing, -help and error messages. */
#include "cli/cmdline.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kemu-config.h"

#define MiB (1ULL << 20)

struct parse_state {
    struct kemu_config *cfg;
    /* Last argument of merged options, to name them in errors found after all options. */
    const char *smp_arg, *mem_arg;
    const char *serial_arg[KEMU_MAX_SERIALS];
};

static int oom(struct error *err)
{
    return error_setf(err, "out of memory");
}

/* Replace *dst by a copy of src. */
static int set_str(char **dst, const char *src, struct error *err)
{
    char *s = strdup(src);
    if (!s)
        return oom(err);
    free(*dst);
    *dst = s;
    return 0;
}

static int check_id(const char *id, struct error *err)
{
    if (!opts_id_wellformed(id))
        return error_setf(err, "invalid id '%s' (a letter, then letters, digits, '-', '.' or '_')",
                          id);
    return 0;
}

/* ---------------------------------------------------------------- groups ---- */

static const struct opt_desc accel_desc[] = {
    {"accel", OPT_STRING, NULL, "accelerator: kvm"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group accel_group = {"accel", "accel", false, accel_desc};

static const struct opt_desc machine_desc[] = {
    {"type", OPT_STRING, "pc", "machine type: pc, pc-i440fx-*, microvm"},
    {"accel", OPT_STRING, NULL, "accelerator list, e.g. kvm or kvm:tcg (kvm only)"},
    {"usb", OPT_BOOL, "off", "USB controller (must be off)"},
    {"dump-guest-core", OPT_BOOL, "on", "include guest memory in a core dump"},
    {"mem-merge", OPT_BOOL, "on", "allow KSM to merge guest memory pages"},
    {"acpi", OPT_BOOL, "on", "ACPI tables (off: CPUs, IOAPIC and IRQs from the MP table)"},
    {"kernel-irqchip", OPT_STRING, NULL,
     "on: the 8254 PIT in KVM too (unset: LAPIC, IOAPIC and PIC in KVM, the PIT in kemu)"},
    {"memory-backend", OPT_STRING, NULL, "RAM from this -object memory-backend-* (its id)"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group machine_group = {"machine", "type", false, machine_desc};

static const struct opt_desc mem_desc[] = {
    {"size", OPT_SIZE, "128M", "initial RAM size (MiB without a suffix)"},
    {"slots", OPT_NUMBER, "0", "memory hotplug slots"},
    {"maxmem", OPT_SIZE, NULL, "maximum RAM size including hotplugged memory"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group mem_group = {"memory", "size", false, mem_desc};

static const struct opt_desc smp_desc[] = {
    {"cpus", OPT_NUMBER, "1", "number of vCPUs present at start"},
    {"sockets", OPT_NUMBER, NULL, "number of sockets"},
    {"dies", OPT_NUMBER, "1", "dies per socket (pc only)"},
    {"cores", OPT_NUMBER, NULL, "cores per die"},
    {"threads", OPT_NUMBER, NULL, "threads per core"},
    {"maxcpus", OPT_NUMBER, NULL, "maximum number of vCPUs (default: cpus)"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group smp_group = {"smp", "cpus", false, smp_desc};

static const struct opt_desc name_desc[] = {
    {"guest", OPT_STRING, NULL, "guest name"},
    {"process", OPT_STRING, NULL, "host process name"},
    {"debug-threads", OPT_BOOL, "off", "name the host threads after their role"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group name_group = {"name", "guest", false, name_desc};

static const struct opt_desc display_desc[] = {
    {"type", OPT_STRING, NULL, "display type: none"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group display_group = {"display", "type", true, display_desc};

static const struct opt_desc rtc_desc[] = {
    {"base", OPT_STRING, "utc", "utc, localtime, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"},
    {"clock", OPT_STRING, "host", "host, rt or vm"},
    {"driftfix", OPT_STRING, "none", "none or slew"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group rtc_group = {"rtc", NULL, false, rtc_desc};

static const struct opt_desc chardev_desc[] = {
    {"backend", OPT_STRING, NULL, "null, stdio, file or socket"},
    {"id", OPT_STRING, NULL, "unique name, used by -serial chardev:ID"},
    {"path", OPT_STRING, NULL, "file: output file; socket: unix socket path"},
    {"host", OPT_STRING, NULL, "socket: TCP host"},
    {"port", OPT_NUMBER, NULL, "socket: TCP port"},
    {"server", OPT_BOOL, "off", "socket: listen instead of connecting"},
    {"wait", OPT_BOOL, "on", "socket server: wait for a client before starting"},
    {"append", OPT_BOOL, "off", "file: append instead of truncating"},
    {"signal", OPT_BOOL, "on", "stdio: let ^C raise signals"},
    {"mux", OPT_BOOL, "off", "share between several frontends and the monitor"},
    {"logfile", OPT_STRING, NULL, "also log all output to this file"},
    {"logappend", OPT_BOOL, "off", "append to the log file"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group chardev_group = {"chardev", "backend", false, chardev_desc};

/* -device before the driver is known: any key; re-validated against the driver's group. */
static const struct opt_desc device_desc[] = {
    {"driver", OPT_STRING, NULL, "device model (-device help lists them)"},
    {"id", OPT_STRING, NULL, "unique device name"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group device_group = {"device", "driver", true, device_desc};

/* ------------------------------------------------------- device models ---- */

/* Device models -device accepts: one row (and one property group) per model. */
static const struct opt_desc isa_debug_exit_desc[] = {
    {"driver", OPT_STRING, NULL, "isa-debug-exit"},
    {"id", OPT_STRING, NULL, "unique device name"},
    {"iobase", OPT_NUMBER, "0x501", "I/O port; a write of v exits kemu with (v << 1) | 1"},
    {"iosize", OPT_NUMBER, "2", "I/O port range size (1, 2 or 4)"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group isa_debug_exit_group = {"isa-debug-exit", "driver", false,
                                                       isa_debug_exit_desc};

/*
 * Keys every PCI device takes. QEMU properties that only tune QEMU's own implementation
 * (ioeventfd, vectors, disable-legacy, romfile...) are accepted and have no effect here.
 */
#define PCI_DEVICE_KEYS                                                                            \
    {"driver", OPT_STRING, NULL, "device model"}, {"id", OPT_STRING, NULL, "unique device name"},  \
        {"bus", OPT_STRING, "pci.0", "PCI bus (only pci.0)"},                                      \
        {"addr", OPT_STRING, NULL, "slot[.function] (default: the next free slot)"},               \
        {"multifunction", OPT_BOOL, "off", "accepted for compatibility"},                          \
        {"ioeventfd", OPT_BOOL, "on", "accepted; kemu always uses ioeventfd when KVM has it"},     \
        {"vectors", OPT_NUMBER, NULL, "accepted; kemu gives one MSI-X vector per queue"},          \
        {"disable-legacy", OPT_STRING, NULL, "accepted; kemu's virtio devices are modern only"},   \
        {"disable-modern", OPT_BOOL, "off", "must stay off: kemu's virtio devices are modern"},    \
        {"romfile", OPT_STRING, NULL, "accepted; no option ROMs without firmware"},                \
        {"rombar", OPT_NUMBER, NULL, "accepted; no option ROMs without firmware"},                 \
        {"bootindex", OPT_NUMBER, NULL, "boot order (used once firmware boot exists)"},            \
        {"event_idx", OPT_BOOL, "on", "offer VIRTIO_RING_F_EVENT_IDX"},                            \
    {                                                                                              \
        "indirect_desc", OPT_BOOL, "on", "offer VIRTIO_RING_F_INDIRECT_DESC"                       \
    }

static const struct opt_desc virtio_blk_desc[] = {
    PCI_DEVICE_KEYS,
    {"drive", OPT_STRING, NULL, "the -drive id holding the disk"},
    {"serial", OPT_STRING, NULL, "disk serial number (up to 20 bytes)"},
    {"num-queues", OPT_NUMBER, NULL, "request queues (default: one per vCPU, 1 on virtio-mmio)"},
    {"queue-size", OPT_NUMBER, "256", "entries per queue (power of two, up to 1024)"},
    {"scsi", OPT_BOOL, "off", "SCSI passthrough (not supported: must be off)"},
    {"config-wce", OPT_BOOL, "on", "let the guest see and change the write cache mode"},
    {"discard", OPT_BOOL, "on", "offer DISCARD (when the drive has discard=unmap)"},
    {"write-zeroes", OPT_BOOL, "on", "offer WRITE_ZEROES"},
    {"logical_block_size", OPT_SIZE, "512", "logical block size"},
    {"physical_block_size", OPT_SIZE, "512", "physical block size"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group virtio_blk_group = {"virtio-blk-pci", "driver", false,
                                                   virtio_blk_desc};

static const struct opt_desc virtio_net_desc[] = {
    PCI_DEVICE_KEYS,
    {"netdev", OPT_STRING, NULL, "the -netdev id to connect to"},
    {"mac", OPT_STRING, NULL, "MAC address (default 52:54:00:12:34:56 + device number)"},
    {"mq", OPT_BOOL, "off", "multiqueue: a queue pair per netdev queue (VIRTIO_NET_F_MQ)"},
    {"mrg_rxbuf", OPT_BOOL, "on", "offer VIRTIO_NET_F_MRG_RXBUF"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group virtio_net_group = {"virtio-net-pci", "driver", false,
                                                   virtio_net_desc};

static const struct opt_desc virtio_serial_desc[] = {
    PCI_DEVICE_KEYS,
    {"max_ports", OPT_NUMBER, "31", "most ports the guest may use"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group virtio_serial_group = {"virtio-serial-pci", "driver", false,
                                                      virtio_serial_desc};

static const struct opt_desc virtio_port_desc[] = {
    {"driver", OPT_STRING, NULL, "virtconsole or virtserialport"},
    {"id", OPT_STRING, NULL, "unique device name"},
    {"bus", OPT_STRING, NULL, "the virtio-serial bus (ID.0; default: the first)"},
    {"chardev", OPT_STRING, NULL, "the -chardev id of the host side"},
    {"name", OPT_STRING, NULL, "port name the guest sees (/sys/class/virtio-ports/*/name)"},
    {"nr", OPT_NUMBER, NULL, "port number (default: the next free)"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group virtconsole_group = {"virtconsole", "driver", false,
                                                    virtio_port_desc};
static const struct opts_group virtserialport_group = {"virtserialport", "driver", false,
                                                       virtio_port_desc};

static const struct opt_desc virtio_rng_desc[] = {
    PCI_DEVICE_KEYS,
    {"rng", OPT_STRING, NULL, "the -object rng-random/rng-builtin id (default: /dev/urandom)"},
    {"max-bytes", OPT_NUMBER, "0", "bytes the guest may take per period (0: no limit)"},
    {"period", OPT_NUMBER, "65536", "rate-limit period in milliseconds"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group virtio_rng_group = {"virtio-rng-pci", "driver", false,
                                                   virtio_rng_desc};

static const struct opt_desc virtio_balloon_desc[] = {
    PCI_DEVICE_KEYS,
    {"deflate-on-oom", OPT_BOOL, "off", "let the guest deflate under memory pressure"},
    {"free-page-reporting", OPT_BOOL, "off", "the guest reports free memory, which the host drops"},
    {"free-page-hint", OPT_BOOL, "off", "hints for migration (not supported: must be off)"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group virtio_balloon_group = {"virtio-balloon-pci", "driver", false,
                                                       virtio_balloon_desc};

struct device_model {
    const char *name;
    const struct opts_group *props;
    const char *bus;
    const char *category; /* the heading QEMU's -device help lists it under */
    const char *desc;
    const char *alias_of; /* an alias row: the model it names; listed on that model's line */
};

/* QEMU's -device help headings, in its order (only those with a kemu model). */
static const char *const device_categories[] = {"Storage", "Network", "Input", "Misc"};

/*
 * QEMU's x86 aliases (virtio-blk = virtio-blk-pci ...) are rows of their own, same group.
 * Sorted by name within a category, as QEMU lists them.
 */
static const struct device_model device_models[] = {
    {"virtio-blk-device", &virtio_blk_group, "virtio-bus", "Storage",
     "virtio block device (microvm)", NULL},
    {"virtio-blk-pci", &virtio_blk_group, "PCI", "Storage", "virtio block device", NULL},
    {"virtio-blk", &virtio_blk_group, "PCI", "Storage", NULL, "virtio-blk-pci"},
    {"virtio-net-device", &virtio_net_group, "virtio-bus", "Network",
     "virtio network device (microvm)", NULL},
    {"virtio-net-pci", &virtio_net_group, "PCI", "Network", "virtio network device", NULL},
    {"virtio-net", &virtio_net_group, "PCI", "Network", NULL, "virtio-net-pci"},
    {"virtconsole", &virtconsole_group, "virtio-serial-bus", "Input", "virtio console port (hvc)",
     NULL},
    {"virtio-serial-device", &virtio_serial_group, "virtio-bus", "Input",
     "virtio serial bus (microvm)", NULL},
    {"virtio-serial-pci", &virtio_serial_group, "PCI", "Input",
     "virtio serial bus (virtconsole ports)", NULL},
    {"virtio-serial", &virtio_serial_group, "PCI", "Input", NULL, "virtio-serial-pci"},
    {"virtserialport", &virtserialport_group, "virtio-serial-bus", "Input", "virtio serial port",
     NULL},
    {"isa-debug-exit", &isa_debug_exit_group, "ISA", "Misc", "exit kemu from the guest (testing)",
     NULL},
    {"virtio-balloon-device", &virtio_balloon_group, "virtio-bus", "Misc",
     "virtio memory balloon (microvm)", NULL},
    {"virtio-balloon-pci", &virtio_balloon_group, "PCI", "Misc", "virtio memory balloon", NULL},
    {"virtio-balloon", &virtio_balloon_group, "PCI", "Misc", NULL, "virtio-balloon-pci"},
    {"virtio-rng-device", &virtio_rng_group, "virtio-bus", "Misc",
     "virtio entropy source (microvm)", NULL},
    {"virtio-rng-pci", &virtio_rng_group, "PCI", "Misc", "virtio entropy source", NULL},
    {"virtio-rng", &virtio_rng_group, "PCI", "Misc", NULL, "virtio-rng-pci"},
};

#define NDEVICE_MODELS (sizeof(device_models) / sizeof(device_models[0]))

static const struct device_model *find_device_model(const char *name)
{
    for (size_t i = 0; i < NDEVICE_MODELS; i++)
        if (!strcmp(device_models[i].name, name))
            return &device_models[i];
    return NULL;
}

/* -object: the backends devices refer to by id. */
static const struct opt_desc object_desc[] = {
    {"qom-type", OPT_STRING, NULL,
     "object type (rng-random, rng-builtin, memory-backend-ram, memory-backend-file, "
     "memory-backend-memfd)"},
    {"id", OPT_STRING, NULL, "unique object name"},
    {"filename", OPT_STRING, "/dev/urandom", "rng-random: the entropy source"},
    {"size", OPT_SIZE, NULL, "memory-backend-*: the memory's size"},
    {"mem-path", OPT_STRING, NULL, "memory-backend-file: the file, or a directory to make one in"},
    {"share", OPT_BOOL, NULL, "memory-backend-*: map it shared (default off; memfd: on)"},
    {"prealloc", OPT_BOOL, "off", "memory-backend-*: allocate all of it at start"},
    {"prealloc-threads", OPT_NUMBER, NULL,
     "memory-backend-*: threads that preallocate (default: one per vCPU)"},
    {"merge", OPT_BOOL, NULL, "memory-backend-*: KSM may merge it (default: -machine mem-merge)"},
    {"dump", OPT_BOOL, NULL, "memory-backend-*: in core dumps (default: -machine dump-guest-core)"},
    {"hugetlb", OPT_BOOL, "off", "memory-backend-memfd: on huge pages"},
    {"hugetlbsize", OPT_SIZE, NULL, "memory-backend-memfd: huge page size (default: the host's)"},
    {"seal", OPT_BOOL, "on", "memory-backend-memfd: seal its size"},
    {NULL, 0, NULL, NULL},
};

/* The keys each object type takes besides qom-type and id. */
static const struct object_type {
    const char *name;
    const char *keys[10];
} object_types[] = {
    {"rng-random", {"filename"}},
    {"rng-builtin", {NULL}},
    {"memory-backend-ram", {"size", "share", "prealloc", "prealloc-threads", "merge", "dump"}},
    {"memory-backend-file",
     {"size", "mem-path", "share", "prealloc", "prealloc-threads", "merge", "dump"}},
    {"memory-backend-memfd",
     {"size", "share", "prealloc", "prealloc-threads", "merge", "dump", "hugetlb", "hugetlbsize",
      "seal"}},
};
static const struct opts_group object_group = {"object", "qom-type", false, object_desc};

static const struct opt_desc mon_desc[] = {
    {"chardev", OPT_STRING, NULL, "the -chardev socket the monitor listens on"},
    {"mode", OPT_STRING, "readline", "readline (HMP) or control (QMP)"},
    {"pretty", OPT_BOOL, "off", "indent QMP replies"},
    {"id", OPT_STRING, NULL, "monitor name"},
    {NULL, 0, NULL, NULL},
};
static const struct opts_group mon_group = {"mon", "chardev", false, mon_desc};

/* --------------------------------------------------------- machines ---- */

struct machine_type {
    const char *name;
    enum kemu_machine_type type;
    bool dies_supported;
    const char *desc;
};

static const struct machine_type machine_types[] = {
    {"pc", KEMU_MACHINE_PC, true, "Standard PC (i440FX + PIIX, 1996) (alias: pc-i440fx-*)"},
    {"microvm", KEMU_MACHINE_MICROVM, false, "microvm (i386)"},
};

static const struct machine_type *find_machine(const char *name)
{
    if (!strncmp(name, "pc-i440fx-", 10) && name[10])
        return &machine_types[0];
    for (size_t i = 0; i < sizeof(machine_types) / sizeof(machine_types[0]); i++)
        if (!strcmp(machine_types[i].name, name))
            return &machine_types[i];
    return NULL;
}

static const char *const cpu_models[] = {"host", "max"};

/* --------------------------------------------------------- handlers ---- */

static int parse_accel_list(const char *list, struct error *err)
{
    /* "kvm", "kvm:tcg": kvm must be among them; kemu then uses kvm. */
    const char *p = list;
    while (1) {
        size_t n = strcspn(p, ":");
        if (n == 3 && !strncmp(p, "kvm", 3))
            return 0;
        if (!p[n])
            break;
        p += n + 1;
    }
    return error_setf(err, "accelerator not supported (only kvm)");
}

static int h_enable_kvm(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->accel_kvm = true;
    return 0;
}

static int h_accel(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    const char *a = opts_get_str(o, "accel");
    if (!a)
        return error_setf(err, "accelerator not specified");
    if (strcmp(a, "kvm"))
        return error_setf(err, "accelerator not supported (only kvm)");
    if (opts_parse(&st->cfg->accel_opts, &accel_group, arg, err) < 0)
        return -1;
    st->cfg->accel_kvm = true;
    return 0;
}

static int h_machine(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    const char *type = opts_get_str(o, "type");
    if (opts_has(o, "type")) {
        const struct machine_type *mt = find_machine(type);
        if (!mt)
            return error_setf(err, "unsupported machine type '%s' (-machine help lists them)",
                              type);
        cfg->machine = mt->type;
        if (set_str(&cfg->machine_name, type, err) < 0)
            return -1;
    }
    const char *accel = opts_get_str(o, "accel");
    if (accel) {
        if (parse_accel_list(accel, err) < 0)
            return -1;
        cfg->accel_kvm = true;
    }
    bool usb = false;
    if (opts_get_bool(o, "usb", &usb, err) < 0)
        return -1;
    if (usb)
        return error_setf(err, "USB is not supported (usb=on)");
    if (opts_has(o, "dump-guest-core") &&
        opts_get_bool(o, "dump-guest-core", &cfg->dump_guest_core, err) < 0)
        return -1;
    if (opts_has(o, "mem-merge") && opts_get_bool(o, "mem-merge", &cfg->mem_merge, err) < 0)
        return -1;
    const char *irqchip = opts_get_str(o, "kernel-irqchip");
    if (irqchip) {
        /* QEMU's values; kemu has no userspace LAPIC (off) nor IOAPIC and PIC (split) */
        if (!strcmp(irqchip, "split") || !strcmp(irqchip, "off"))
            return error_setf(err, "kernel-irqchip=%s is not supported (on, or leave it unset)",
                              irqchip);
        bool on;
        if (opts_parse_bool(irqchip, &on) < 0)
            return error_setf(err, "Parameter 'kernel-irqchip' does not accept value '%s'",
                              irqchip);
        if (!on)
            return error_setf(err, "kernel-irqchip=off is not supported (on, or leave it unset)");
        cfg->kernel_pit = true;
    }
    bool acpi = true;
    if (opts_get_bool(o, "acpi", &acpi, err) < 0) /* checked here, read from machine_opts */
        return -1;
    if (opts_has(o, "memory-backend") &&
        set_str(&cfg->memory_backend, opts_get_str(o, "memory-backend"), err) < 0)
        return -1;
    return opts_parse(&cfg->machine_opts, &machine_group, arg, err);
}

static int h_mem(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->mem_arg = arg;
    return opts_parse(&st->cfg->mem_opts, &mem_group, arg, err);
}

static int h_smp(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->smp_arg = arg;
    return opts_parse(&st->cfg->smp_opts, &smp_group, arg, err);
}

static void free_cpu_props(struct kemu_config *cfg)
{
    for (size_t i = 0; i < cfg->ncpu_props; i++) {
        free(cfg->cpu_props[i].name);
        free(cfg->cpu_props[i].value);
    }
    free(cfg->cpu_props);
    cfg->cpu_props = NULL;
    cfg->ncpu_props = 0;
}

static int add_cpu_prop(struct kemu_config *cfg, const char *name, size_t nlen, const char *value,
                        size_t vlen, struct error *err)
{
    char *n = strndup(name, nlen), *v = strndup(value, vlen);
    if (!n || !v) {
        free(n);
        free(v);
        return oom(err);
    }
    for (size_t i = 0; i < cfg->ncpu_props; i++) {
        if (!strcmp(cfg->cpu_props[i].name, n)) { /* the last one wins */
            free(n);
            free(cfg->cpu_props[i].value);
            cfg->cpu_props[i].value = v;
            return 0;
        }
    }
    struct kemu_cpu_prop *p = realloc(cfg->cpu_props, (cfg->ncpu_props + 1) * sizeof(*p));
    if (!p) {
        free(n);
        free(v);
        return oom(err);
    }
    cfg->cpu_props = p;
    p[cfg->ncpu_props].name = n;
    p[cfg->ncpu_props].value = v;
    cfg->ncpu_props++;
    return 0;
}

/* -cpu model[,+flag][,-flag][,prop=value][,flag] */
static int h_cpu(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    size_t mlen = strcspn(arg, ",");
    bool known = false;
    for (size_t i = 0; i < sizeof(cpu_models) / sizeof(cpu_models[0]); i++)
        if (strlen(cpu_models[i]) == mlen && !strncmp(cpu_models[i], arg, mlen))
            known = true;
    if (!known)
        return error_setf(err, "unknown CPU model '%.*s' (supported: host, max)", (int)mlen, arg);
    char *model = strndup(arg, mlen);
    if (!model)
        return oom(err);
    free(cfg->cpu_model);
    cfg->cpu_model = model;
    free_cpu_props(cfg);
    for (const char *p = arg + mlen; *p;) {
        p++; /* the ',' */
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        int r;
        if (!len) {
            continue; /* empty element, as QEMU skips them */
        } else if (*p == '+' || *p == '-') {
            if (len == 1 || eq)
                return error_setf(err, "invalid CPU property '%.*s'", (int)len, p);
            r = add_cpu_prop(cfg, p + 1, len - 1, *p == '+' ? "on" : "off", *p == '+' ? 2 : 3, err);
        } else if (eq) {
            if (eq == p)
                return error_setf(err, "invalid CPU property '%.*s'", (int)len, p);
            r = add_cpu_prop(cfg, p, (size_t)(eq - p), eq + 1, len - (size_t)(eq - p) - 1, err);
        } else {
            r = add_cpu_prop(cfg, p, len, "on", 2, err);
        }
        if (r < 0)
            return -1;
        p += len;
    }
    return 0;
}

static int h_kernel(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return set_str(&st->cfg->kernel, arg, err);
}

static int h_initrd(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return set_str(&st->cfg->initrd, arg, err);
}

static int h_append(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return set_str(&st->cfg->append, arg, err);
}

static int h_name(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    if (opts_has(o, "guest") && set_str(&cfg->name, opts_get_str(o, "guest"), err) < 0)
        return -1;
    if (opts_has(o, "process") && set_str(&cfg->process_name, opts_get_str(o, "process"), err) < 0)
        return -1;
    if (opts_get_bool(o, "debug-threads", &cfg->debug_threads, err) < 0)
        return -1;
    return 0;
}

static int h_nographic(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->nographic = true;
    return 0;
}

static int h_display(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    const char *type = opts_get_str(o, "type");
    if (!type)
        return error_setf(err, "display type not specified");
    if (strcmp(type, "none"))
        return error_setf(err, "display '%s' not supported (only none)", type);
    if (o->n > 1)
        return error_setf(err, "display none takes no parameters");
    return 0;
}

/* kemu has no display device; -vga none says so to QEMU too, which frees the VGA's slot. */
static int h_vga(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    if (strcmp(arg, "none"))
        return error_setf(err, "kemu has no display device (use -vga none)");
    st->cfg->vga_none = true;
    return 0;
}

static int h_nodefaults(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->nodefaults = true;
    return 0;
}

static int h_no_reboot(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->no_reboot = true;
    return 0;
}

static int h_no_shutdown(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->no_shutdown = true;
    return 0;
}

static int h_daemonize(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->daemonize = true;
    return 0;
}

static int h_start_paused(struct parse_state *st, const char *arg, struct opts *o,
                          struct error *err)
{
    st->cfg->start_paused = true;
    return 0;
}

static int h_mem_path(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    if (!*arg)
        return error_setf(err, "empty path");
    return set_str(&st->cfg->mem_path, arg, err);
}

static int h_mem_prealloc(struct parse_state *st, const char *arg, struct opts *o,
                          struct error *err)
{
    st->cfg->mem_prealloc = true;
    return 0;
}

static int h_pidfile(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    if (!*arg)
        return error_setf(err, "empty path");
    return set_str(&st->cfg->pidfile, arg, err);
}

/* Parse exactly ndigits digits (or 1..ndigits when !exact) at *p. */
static bool parse_digits(const char **p, unsigned maxdigits, int *out)
{
    int v = 0;
    unsigned n = 0;
    while (**p >= '0' && **p <= '9' && n < maxdigits) {
        v = v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    *out = v;
    return n > 0;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS", as UTC. */
static bool parse_rtc_date(const char *s, time_t *out)
{
    int y, mo, d, h = 0, mi = 0, se = 0;
    const char *p = s;
    if (!parse_digits(&p, 4, &y) || *p++ != '-' || !parse_digits(&p, 2, &mo) || *p++ != '-' ||
        !parse_digits(&p, 2, &d))
        return false;
    if (*p == 'T') {
        p++;
        if (!parse_digits(&p, 2, &h) || *p++ != ':' || !parse_digits(&p, 2, &mi) || *p++ != ':' ||
            !parse_digits(&p, 2, &se))
            return false;
    }
    /* Up to 2199: the RTC keeps the guest's time in int64 nanoseconds (hw/rtc.c). */
    if (*p || y < 1970 || y > 2199 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || se > 59)
        return false;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    *out = timegm(&tm);
    return *out != (time_t)-1;
}

static int h_rtc(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    const char *base = opts_get_str(o, "base");
    if (opts_has(o, "base")) {
        if (!strcmp(base, "utc")) {
            cfg->rtc_base = KEMU_RTC_BASE_UTC;
        } else if (!strcmp(base, "localtime")) {
            cfg->rtc_base = KEMU_RTC_BASE_LOCALTIME;
        } else if (parse_rtc_date(base, &cfg->rtc_base_time)) {
            cfg->rtc_base = KEMU_RTC_BASE_DATE;
        } else {
            return error_setf(err,
                              "invalid rtc base '%s' (utc, localtime, YYYY-MM-DD or "
                              "YYYY-MM-DDTHH:MM:SS)",
                              base);
        }
    }
    if (opts_has(o, "clock")) {
        const char *c = opts_get_str(o, "clock");
        if (!strcmp(c, "host"))
            cfg->rtc_clock = KEMU_RTC_CLOCK_HOST;
        else if (!strcmp(c, "rt"))
            cfg->rtc_clock = KEMU_RTC_CLOCK_RT;
        else if (!strcmp(c, "vm"))
            cfg->rtc_clock = KEMU_RTC_CLOCK_VM;
        else
            return error_setf(err, "invalid rtc clock '%s' (host, rt or vm)", c);
    }
    if (opts_has(o, "driftfix")) {
        const char *d = opts_get_str(o, "driftfix");
        if (!strcmp(d, "none"))
            cfg->rtc_driftfix_slew = false;
        else if (!strcmp(d, "slew"))
            cfg->rtc_driftfix_slew = true;
        else
            return error_setf(err, "invalid rtc driftfix '%s' (none or slew)", d);
    }
    return 0;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static int h_serial(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    static const char *const later[] = {"pty",     "vc",      "tcp:",  "telnet:",    "unix:",
                                        "udp:",    "pipe:",   "/dev/", "websocket:", "msmouse",
                                        "braille", "serial:", "tty:",  "mon:"};
    if (cfg->nserials == KEMU_MAX_SERIALS)
        return error_setf(err, "too many serial ports (at most %d)", KEMU_MAX_SERIALS);
    struct kemu_serial *s = &cfg->serials[cfg->nserials];
    memset(s, 0, sizeof(*s));
    if (!strcmp(arg, "stdio") || !strcmp(arg, "mon:stdio")) {
        s->kind = KEMU_SERIAL_STDIO;
        s->mux = arg[0] == 'm';
    } else if (!strcmp(arg, "null")) {
        s->kind = KEMU_SERIAL_NULL;
    } else if (!strcmp(arg, "none")) {
        s->kind = KEMU_SERIAL_NONE;
    } else if (has_prefix(arg, "file:")) {
        if (!arg[5])
            return error_setf(err, "file: needs a path");
        s->kind = KEMU_SERIAL_FILE;
        if (set_str(&s->path, arg + 5, err) < 0)
            return -1;
    } else if (has_prefix(arg, "chardev:")) {
        if (!arg[8])
            return error_setf(err, "chardev: needs an id");
        s->kind = KEMU_SERIAL_CHARDEV;
        if (set_str(&s->chardev_id, arg + 8, err) < 0)
            return -1;
    } else {
        for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++)
            if (has_prefix(arg, later[i]))
                return error_setf(err, "'%s' is not supported yet", arg);
        return error_setf(err, "'%s' is not a valid char driver", arg);
    }
    st->serial_arg[cfg->nserials] = arg;
    cfg->nserials++;
    return 0;
}

static int chardev_key_allowed(enum kemu_chardev_backend b, const char *key)
{
    static const char *const common[] = {"backend", "id", "mux", "logfile", "logappend"};
    for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
        if (!strcmp(key, common[i]))
            return 1;
    switch (b) {
    case KEMU_CHARDEV_NULL:
        return 0;
    case KEMU_CHARDEV_STDIO:
        return !strcmp(key, "signal");
    case KEMU_CHARDEV_FILE:
        return !strcmp(key, "path") || !strcmp(key, "append");
    case KEMU_CHARDEV_SOCKET:
        return !strcmp(key, "path") || !strcmp(key, "host") || !strcmp(key, "port") ||
               !strcmp(key, "server") || !strcmp(key, "wait");
    }
    return 0;
}

/* In enum kemu_chardev_backend order. */
static const char *const chardev_backends[] = {"null", "stdio", "file", "socket"};

static int fill_chardev(struct kemu_chardev_spec *c, const struct opts *o, struct error *err)
{
    static const char *const later[] = {
        "pty",      "vc",        "pipe",         "udp",     "serial",  "tty",
        "parallel", "ringbuf",   "memory",       "msmouse", "braille", "testdev",
        "spicevmc", "spiceport", "qemu-vdagent", "dbus",    "wctablet"};
    const char *backend = opts_get_str(o, "backend");
    if (!backend)
        return error_setf(err, "backend not specified");
    size_t b;
    size_t nb = sizeof(chardev_backends) / sizeof(chardev_backends[0]);
    for (b = 0; b < nb; b++)
        if (!strcmp(backend, chardev_backends[b]))
            break;
    if (b == nb) {
        for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++)
            if (!strcmp(backend, later[i]))
                return error_setf(err, "chardev backend '%s' is not supported yet", backend);
        return error_setf(err, "'%s' is not a valid char driver name", backend);
    }
    c->backend = (enum kemu_chardev_backend)b;
    for (size_t i = 0; i < o->n; i++)
        if (!chardev_key_allowed(c->backend, o->kv[i].key))
            return error_setf(err, "parameter '%s' is not valid for backend '%s'", o->kv[i].key,
                              backend);
    const char *id = opts_get_str(o, "id");
    if (!id)
        return error_setf(err, "chardev id is required (id=...)");
    if (check_id(id, err) < 0 || set_str(&c->id, id, err) < 0)
        return -1;
    if (opts_get_bool(o, "mux", &c->mux, err) < 0 ||
        opts_get_bool(o, "logappend", &c->logappend, err) < 0 ||
        opts_get_bool(o, "append", &c->append, err) < 0 ||
        opts_get_bool(o, "signal", &c->signal, err) < 0 ||
        opts_get_bool(o, "server", &c->server, err) < 0 ||
        opts_get_bool(o, "wait", &c->wait, err) < 0)
        return -1;
    const char *logfile = opts_get_str(o, "logfile");
    if (logfile && set_str(&c->logfile, logfile, err) < 0)
        return -1;
    const char *path = opts_get_str(o, "path");
    if (path && !*path)
        return error_setf(err, "empty path");
    if (path && set_str(&c->path, path, err) < 0)
        return -1;
    if (c->backend == KEMU_CHARDEV_FILE && !path)
        return error_setf(err, "file backend needs path=");
    if (c->backend == KEMU_CHARDEV_SOCKET) {
        const char *host = opts_get_str(o, "host");
        if (path && (host || opts_has(o, "port")))
            return error_setf(err, "socket backend takes either path= or host=,port=");
        if (!path) {
            uint64_t port = 0;
            if (!host || !opts_has(o, "port"))
                return error_setf(err, "socket backend needs path= or host= and port=");
            if (opts_get_number(o, "port", &port, err) < 0)
                return -1;
            if (port > 65535)
                return error_setf(err, "port %" PRIu64 " is out of range", port);
            c->port = (uint16_t)port;
            if (set_str(&c->host, host, err) < 0)
                return -1;
        }
        if (!c->server && opts_has(o, "wait"))
            return error_setf(err, "'wait' is only valid with server=on");
    }
    return 0;
}

static void free_chardev(struct kemu_chardev_spec *c)
{
    free(c->id);
    free(c->path);
    free(c->host);
    free(c->logfile);
    opts_free(&c->opts);
}

static int h_chardev(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    struct kemu_chardev_spec c = {0};
    if (fill_chardev(&c, o, err) < 0) {
        free_chardev(&c);
        return -1;
    }
    for (size_t i = 0; i < cfg->nchardevs; i++) {
        if (!strcmp(cfg->chardevs[i].id, c.id)) {
            error_setf(err, "duplicate chardev id '%s'", c.id);
            free_chardev(&c);
            return -1;
        }
    }
    struct kemu_chardev_spec *a = realloc(cfg->chardevs, (cfg->nchardevs + 1) * sizeof(*a));
    if (!a) {
        free_chardev(&c);
        return oom(err);
    }
    cfg->chardevs = a;
    c.opts = *o; /* take the parsed list */
    memset(o, 0, sizeof(*o));
    a[cfg->nchardevs++] = c;
    return 0;
}

static int h_device(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    const char *driver = opts_get_str(o, "driver");
    if (!driver)
        return error_setf(err, "driver not specified");
    const struct device_model *m = find_device_model(driver);
    if (!m)
        return error_setf(err, "'%s' is not a valid device model name", driver);
    if (opts_validate(o, m->props, err) < 0)
        return -1;
    const char *id = opts_get_str(o, "id");
    if (id && check_id(id, err) < 0)
        return -1;
    return opts_list_add(&cfg->devices, &cfg->ndevices, o, "device", err);
}

static int strlist_add(struct kemu_strlist *l, const char *arg, struct error *err)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (!v)
        return oom(err);
    l->v = v;
    if (!(v[l->n] = strdup(arg)))
        return oom(err);
    l->n++;
    return 0;
}

static void strlist_free(struct kemu_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int h_drive(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return strlist_add(&st->cfg->drives, arg, err);
}

static int h_netdev(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return strlist_add(&st->cfg->netdevs, arg, err);
}

static int h_net(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return strlist_add(&st->cfg->nets, arg, err);
}

static int h_nic(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return strlist_add(&st->cfg->nics, arg, err);
}

static int h_qmp(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return strlist_add(&st->cfg->qmp, arg, err);
}

static int h_qmp_pretty(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return strlist_add(&st->cfg->qmp_pretty, arg, err);
}

/* -monitor SPEC: an HMP monitor; main opens the chardev, only the form is checked here. */
static int h_monitor(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    static const char *const prefixes[] = {"unix:", "tcp:", "chardev:"};
    bool ok = !strcmp(arg, "stdio") || !strcmp(arg, "mon:stdio") || !strcmp(arg, "none") ||
              !strcmp(arg, "null");
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]) && !ok; i++)
        ok = has_prefix(arg, prefixes[i]) && arg[strlen(prefixes[i])];
    if (!ok)
        return error_setf(err,
                          "'%s' is not a valid monitor (stdio, unix:PATH,server=on, "
                          "tcp:HOST:PORT,server=on, chardev:ID or none)",
                          arg);
    return strlist_add(&st->cfg->monitors, arg, err);
}

/* -mon chardev=ID,mode=control: the QMP server listens on that socket chardev's path.
 * mode=readline (QEMU's default): HMP on the chardev, which is opened as any other. */
static int h_mon(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    const char *id = opts_get_str(o, "chardev");
    const char *mode = opts_get_str(o, "mode");
    bool pretty = false;
    if (!id)
        return error_setf(err, "parameter 'chardev' is missing");
    if (mode && strcmp(mode, "control") && strcmp(mode, "readline"))
        return error_setf(err, "mode=%s: expected readline or control", mode);
    if (opts_get_bool(o, "pretty", &pretty, err) < 0)
        return -1;
    const struct kemu_chardev_spec *c = NULL;
    for (size_t i = 0; i < cfg->nchardevs; i++)
        if (!strcmp(cfg->chardevs[i].id, id))
            c = &cfg->chardevs[i];
    if (!c)
        return error_setf(err, "chardev '%s' not found (define it with -chardev first)", id);
    if (!mode || !strcmp(mode, "readline")) {
        if (pretty)
            return error_setf(err, "pretty=on is only valid with mode=control");
        return strlist_add(&cfg->hmp_chardevs, id, err);
    }
    if (c->backend != KEMU_CHARDEV_SOCKET || !c->server)
        return error_setf(err,
                          "chardev '%s': a QMP monitor needs a socket chardev with "
                          "server=on",
                          id);
    char spec[512];
    if (c->path)
        snprintf(spec, sizeof(spec), "unix:%s,server=on,wait=off", c->path);
    else
        snprintf(spec, sizeof(spec), "tcp:%s:%u,server=on,wait=off", c->host ? c->host : "",
                 c->port);
    if (strlist_add(pretty ? &cfg->qmp_pretty : &cfg->qmp, spec, err) < 0)
        return -1;
    return strlist_add(&cfg->mon_chardevs, id, err);
}

/* -hda and friends are IDE (or floppy) disks, which the pc board does not have yet. */
static int h_legacy_disk(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    return error_setf(
        err, "IDE and floppy disks are not supported yet; use -drive file=%s,if=virtio", arg);
}

static int h_object(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    const char *type = opts_get_str(o, "qom-type");
    if (!type)
        return error_setf(err, "qom-type not specified");
    const struct object_type *t = NULL;
    for (size_t i = 0; i < sizeof(object_types) / sizeof(object_types[0]); i++)
        if (!strcmp(object_types[i].name, type))
            t = &object_types[i];
    if (!t)
        return error_setf(err,
                          "object type '%s' is not supported (rng-random, rng-builtin, "
                          "memory-backend-ram, memory-backend-file, memory-backend-memfd)",
                          type);
    const char *id = opts_get_str(o, "id");
    if (!id)
        return error_setf(err, "parameter 'id' is missing");
    if (check_id(id, err) < 0)
        return -1;
    /* QEMU's words for a property the type does not have. */
    for (const struct opt_desc *d = object_desc; d->name; d++) {
        if (!strcmp(d->name, "qom-type") || !strcmp(d->name, "id") || !opts_has(o, d->name))
            continue;
        bool known = false;
        for (size_t k = 0; k < sizeof(t->keys) / sizeof(t->keys[0]) && t->keys[k]; k++)
            known |= !strcmp(t->keys[k], d->name);
        if (!known)
            return error_setf(err, "Invalid parameter '%s'", d->name);
    }
    if (!strncmp(type, "memory-backend-", 15)) {
        uint64_t size = 0, n = 0;
        bool b;
        if (!opts_has(o, "size"))
            return error_setf(err, "Parameter 'size' is missing");
        if (opts_get_size(o, "size", &size, err) < 0)
            return -1;
        if (!size)
            return error_setf(err, "can't create backend with size 0");
        if (size > KEMU_MAX_RAM_SIZE)
            return error_setf(err, "size '%s' is too large (maximum 1T)", opts_get_str(o, "size"));
        if (!strcmp(type, "memory-backend-file") && !opts_has(o, "mem-path"))
            return error_setf(err, "Parameter 'mem-path' is missing");
        if (opts_has(o, "mem-path") && !*opts_get_str(o, "mem-path"))
            return error_setf(err, "mem-path is empty");
        static const char *const bools[] = {"share", "prealloc", "merge",
                                            "dump",  "hugetlb",  "seal"};
        for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++)
            if (opts_has(o, bools[i]) && opts_get_bool(o, bools[i], &b, err) < 0)
                return -1;
        if (opts_has(o, "prealloc-threads") &&
            (opts_get_number(o, "prealloc-threads", &n, err) < 0 || n < 1))
            return error_setf(err, "prealloc-threads must be at least 1");
        if (opts_has(o, "hugetlbsize")) {
            bool huge = false;
            if (opts_get_bool(o, "hugetlb", &huge, err) < 0 ||
                opts_get_size(o, "hugetlbsize", &n, err) < 0)
                return -1;
            if (!huge)
                return error_setf(err, "hugetlbsize needs hugetlb=on");
            if (!n || (n & (n - 1)))
                return error_setf(err, "hugetlbsize must be a power of two");
        }
    }
    return opts_list_add(&cfg->objects, &cfg->nobjects, o, "object", err);
}

static int h_version(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->action = KEMU_ACTION_PRINT_VERSION;
    return 0;
}

static int h_help(struct parse_state *st, const char *arg, struct opts *o, struct error *err)
{
    st->cfg->action = KEMU_ACTION_PRINT_HELP;
    return 0;
}

/* ------------------------------------------------------------ table ---- */

enum {
    ARG = 1 << 0,     /* takes an argument */
    HELP_ARG = 1 << 1 /* "help" or "?" as the argument prints option help */
};

/*
 * One row per option. To add one (-drive, -netdev, -object):
 *   1. describe its keys in an opts_group (above), with help text for each key;
 *   2. write a handler that turns the parsed opts into cfg fields; for a repeatable option
 *      kept as a list, validate and opts_list_add() it to an array + count in kemu_config,
 *      freed with opts_list_free() in kemu_config_free();
 *   3. add the row here: -help, "-X help" and error prefixes then come for free.
 * The handler's errors are prefixed with "-X ARG: " by cmdline_parse().
 */
struct cmdline_option {
    const char *name; /* without the leading '-' */
    unsigned flags;
    const char *arg_name;           /* synopsis of the argument when there is no group */
    const struct opts_group *group; /* argument is a key=value list parsed with this group */
    int (*handle)(struct parse_state *st, const char *arg, struct opts *o, struct error *err);
    const char *help;
};

static const struct cmdline_option options[] = {
    {"h", 0, NULL, NULL, h_help, "display this help and exit"},
    {"help", 0, NULL, NULL, h_help, "display this help and exit"},
    {"version", 0, NULL, NULL, h_version, "display version information and exit"},
    {"machine", ARG | HELP_ARG, NULL, &machine_group, h_machine,
     "select the machine (-machine help lists them)"},
    {"M", ARG | HELP_ARG, NULL, &machine_group, h_machine, "same as -machine"},
    {"enable-kvm", 0, NULL, NULL, h_enable_kvm, "use KVM (the only accelerator)"},
    {"accel", ARG | HELP_ARG, NULL, &accel_group, h_accel, "select the accelerator (kvm)"},
    {"cpu", ARG | HELP_ARG, "MODEL[,+FLAG|-FLAG|PROP=VALUE...]", NULL, h_cpu,
     "select the CPU model (-cpu help lists them)"},
    {"smp", ARG | HELP_ARG, NULL, &smp_group, h_smp, "set the number of vCPUs and the topology"},
    {"m", ARG | HELP_ARG, NULL, &mem_group, h_mem, "set the RAM size (default 128M)"},
    {"mem-path", ARG, "FILE|DIR", NULL, h_mem_path,
     "back guest RAM with FILE, or a new file in DIR (hugetlbfs: huge pages)"},
    {"mem-prealloc", 0, NULL, NULL, h_mem_prealloc, "allocate all guest RAM at start"},
    {"kernel", ARG, "FILE", NULL, h_kernel, "boot this Linux kernel (bzImage)"},
    {"initrd", ARG, "FILE", NULL, h_initrd, "use FILE as the initial ram disk"},
    {"append", ARG, "CMDLINE", NULL, h_append, "kernel command line"},
    {"name", ARG | HELP_ARG, NULL, &name_group, h_name, "name the guest"},
    {"nographic", 0, NULL, NULL, h_nographic, "no display; serial port and monitor on stdio"},
    {"display", ARG | HELP_ARG, NULL, &display_group, h_display, "display type (only none)"},
    {"vga", ARG, "none", NULL, h_vga, "VGA card (only none: kemu has no display device)"},
    {"nodefaults", 0, NULL, NULL, h_nodefaults, "create no default devices (serial port)"},
    {"no-reboot", 0, NULL, NULL, h_no_reboot, "exit instead of rebooting"},
    {"no-shutdown", 0, NULL, NULL, h_no_shutdown, "stop instead of exiting on guest shutdown"},
    {"S", 0, NULL, NULL, h_start_paused, "do not start the vCPUs (start from the monitor)"},
    {"rtc", ARG | HELP_ARG, NULL, &rtc_group, h_rtc, "set the RTC start time and clock"},
    {"serial", ARG, "stdio|mon:stdio|file:PATH|null|none|chardev:ID", NULL, h_serial,
     "redirect the next serial port (up to 4)"},
    {"chardev", ARG | HELP_ARG, NULL, &chardev_group, h_chardev, "define a character device"},
    {"device", ARG | HELP_ARG, NULL, &device_group, h_device,
     "add a device (-device help lists them)"},
    {"drive", ARG, "file=FILE,if=virtio|none,format=raw,cache=...,aio=...", NULL, h_drive,
     "define a disk (-drive help lists the keys)"},
    {"hda", ARG, "FILE", NULL, h_legacy_disk, "IDE disk (not supported yet: use -drive)"},
    {"hdb", ARG, "FILE", NULL, h_legacy_disk, "IDE disk (not supported yet: use -drive)"},
    {"hdc", ARG, "FILE", NULL, h_legacy_disk, "IDE disk (not supported yet: use -drive)"},
    {"hdd", ARG, "FILE", NULL, h_legacy_disk, "IDE disk (not supported yet: use -drive)"},
    {"cdrom", ARG, "FILE", NULL, h_legacy_disk, "IDE CD-ROM (not supported yet)"},
    {"fda", ARG, "FILE", NULL, h_legacy_disk, "floppy disk (not supported)"},
    {"netdev", ARG, "user|tap,id=ID[,...]", NULL, h_netdev,
     "define a network backend (-netdev help lists the keys)"},
    {"net", ARG, "nic[,model=virtio,macaddr=MAC,addr=SLOT]|user[,...]|tap[,...]|none", NULL, h_net,
     "legacy network options (paired nic and backend)"},
    {"nic", ARG, "user|tap|none[,model=virtio-net-pci,mac=MAC,...]", NULL, h_nic,
     "a network backend and its NIC in one option"},
    {"object", ARG | HELP_ARG, NULL, &object_group, h_object,
     "create a backend object (rng-random, rng-builtin)"},
    {"qmp", ARG, "unix:PATH,server=on,wait=off|tcp:HOST:PORT,server=on,wait=off", NULL, h_qmp,
     "QMP monitor on a socket"},
    {"qmp-pretty", ARG, "unix:PATH,server=on,wait=off|tcp:HOST:PORT,...", NULL, h_qmp_pretty,
     "QMP monitor with indented replies"},
    {"mon", ARG | HELP_ARG, NULL, &mon_group, h_mon,
     "monitor on a chardev: chardev=ID[,mode=readline|control][,pretty=on]"},
    {"monitor", ARG, "stdio|unix:PATH,server=on,wait=off|tcp:HOST:PORT,server=on|chardev:ID|none",
     NULL, h_monitor, "human monitor (HMP) on a character device"},
    {"pidfile", ARG, "FILE", NULL, h_pidfile, "write the process id to FILE"},
    {"daemonize", 0, NULL, NULL, h_daemonize, "detach from the terminal after start-up"},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const struct cmdline_option *find_option(const char *name)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (!strcmp(options[i].name, name))
            return &options[i];
    return NULL;
}

/* ------------------------------------------------------- finalizing ---- */

static int finish_memory(struct parse_state *st, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    const struct opts *o = &cfg->mem_opts;
    if (!st->mem_arg)
        return 0;
    if (opts_has(o, "size")) {
        const char *s = opts_get_str(o, "size");
        uint64_t size;
        int r = opts_parse_size(s, MiB, &size);
        if (r == -ERANGE)
            return error_setf(err, "RAM size '%s' is too large (maximum 1T)", s);
        if (r < 0)
            return error_setf(err, "invalid size '%s'", s);
        if (size < KEMU_MIN_RAM_SIZE)
            return error_setf(err, "RAM size '%s' is too small (minimum 1M)", s);
        if (size > KEMU_MAX_RAM_SIZE)
            return error_setf(err, "RAM size '%s' is too large (maximum 1T)", s);
        cfg->ram_size = (size + 4095) & ~4095ULL;
    }
    if (opts_get_number(o, "slots", &cfg->ram_slots, err) < 0)
        return -1;
    cfg->ram_maxmem = cfg->ram_size;
    if (opts_has(o, "maxmem")) {
        if (opts_get_size(o, "maxmem", &cfg->ram_maxmem, err) < 0)
            return -1;
        if (cfg->ram_maxmem < cfg->ram_size)
            return error_setf(err,
                              "maxmem (%" PRIu64 ") must be at least the RAM size (%" PRIu64 ")",
                              cfg->ram_maxmem, cfg->ram_size);
        if (cfg->ram_maxmem > KEMU_MAX_RAM_SIZE)
            return error_setf(err, "maxmem '%s' is too large (maximum 1T)",
                              opts_get_str(o, "maxmem"));
        if (cfg->ram_maxmem > cfg->ram_size && !cfg->ram_slots)
            return error_setf(err, "maxmem was specified, but no hotplug slots were specified");
    } else if (cfg->ram_slots) {
        return error_setf(err, "slots specified but no maxmem");
    }
    if (cfg->ram_slots > 256)
        return error_setf(err, "slots must be at most 256");
    return 0;
}

/* -machine memory-backend=ID: the RAM is that object's, and so is its size (QEMU's rules and
 * words). */
static int finish_memory_backend(struct parse_state *st, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    if (!cfg->memory_backend)
        return 0;
    if (cfg->mem_path)
        return error_setf(err, "'-mem-path' can't be used together with '-machine memory-backend'");
    const struct opts *be = NULL;
    for (size_t i = 0; i < cfg->nobjects; i++) {
        const char *id = opts_get_str(&cfg->objects[i], "id");
        const char *type = opts_get_str(&cfg->objects[i], "qom-type");
        if (id && !strcmp(id, cfg->memory_backend) && !strncmp(type, "memory-backend-", 15))
            be = &cfg->objects[i];
    }
    if (!be)
        return error_setf(err, "Memory backend '%s' not found", cfg->memory_backend);
    uint64_t size;
    if (opts_get_size(be, "size", &size, err) < 0)
        return -1;
    if (st->mem_arg && opts_has(&cfg->mem_opts, "size") && size != cfg->ram_size)
        return error_setf(err, "Machine memory size does not match the size of the memory "
                               "backend");
    if (size < KEMU_MIN_RAM_SIZE || size % 4096)
        return error_setf(err,
                          "memory backend '%s': the RAM size must be a multiple of 4 KiB "
                          "and at least 1 MiB",
                          cfg->memory_backend);
    if (!opts_has(&cfg->mem_opts, "maxmem"))
        cfg->ram_maxmem = size;
    else if (cfg->ram_maxmem < size)
        return error_setf(err, "maxmem (%" PRIu64 ") must be at least the RAM size (%" PRIu64 ")",
                          cfg->ram_maxmem, size);
    cfg->ram_size = size;
    cfg->ram_backend = be;
    return 0;
}

static int finish_smp(struct parse_state *st, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    const struct opts *o = &cfg->smp_opts;
    struct smp_request req = {0};
    static const char *const keys[] = {"cpus", "sockets", "dies", "cores", "threads", "maxcpus"};
    bool *has[] = {&req.has_cpus,  &req.has_sockets, &req.has_dies,
                   &req.has_cores, &req.has_threads, &req.has_maxcpus};
    uint64_t *val[] = {&req.cpus, &req.sockets, &req.dies, &req.cores, &req.threads, &req.maxcpus};
    for (size_t i = 0; i < 6; i++) {
        *has[i] = opts_has(o, keys[i]);
        if (*has[i] && opts_get_number(o, keys[i], val[i], err) < 0)
            return -1;
    }
    if (!st->smp_arg)
        req.has_cpus = true, req.cpus = 1;
    const struct machine_type *mt = find_machine(cfg->machine_name);
    struct smp_machine m = {cfg->machine_name, mt && mt->dies_supported, KEMU_MAX_CPUS};
    return smp_resolve(&req, &m, &cfg->smp, err);
}

static int finish_serials(struct parse_state *st, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    for (size_t i = 0; i < cfg->nserials; i++) {
        struct kemu_serial *s = &cfg->serials[i];
        if (s->kind != KEMU_SERIAL_CHARDEV)
            continue;
        size_t j;
        for (j = 0; j < cfg->nchardevs; j++)
            if (!strcmp(cfg->chardevs[j].id, s->chardev_id))
                break;
        if (j == cfg->nchardevs) {
            error_setf(err, "chardev '%s' not found", s->chardev_id);
            error_prefix(err, "-serial %s: ", st->serial_arg[i]);
            return -1;
        }
        s->chardev = j;
        for (size_t k = 0; k < i; k++) {
            if (cfg->serials[k].kind == KEMU_SERIAL_CHARDEV && cfg->serials[k].chardev == j &&
                !cfg->chardevs[j].mux) {
                error_setf(err, "chardev '%s' is already in use (use mux=on to share it)",
                           s->chardev_id);
                error_prefix(err, "-serial %s: ", st->serial_arg[i]);
                return -1;
            }
        }
    }
    /* QEMU's -nographic defaults: serial and monitor share stdio (mon:stdio) unless -monitor
     * or -serial says otherwise; then whichever was not given gets stdio alone. */
    bool mon_serial = false;
    for (size_t i = 0; i < cfg->nserials; i++)
        mon_serial =
            mon_serial || (cfg->serials[i].kind == KEMU_SERIAL_STDIO && cfg->serials[i].mux);
    bool mon_stdio = false;
    for (size_t i = 0; i < cfg->monitors.n; i++)
        mon_stdio = mon_stdio || !strcmp(cfg->monitors.v[i], "stdio");
    if (!cfg->nserials && !cfg->nodefaults) {
        /* kemu has no graphical console: its default serial port is stdio, except when
         * -monitor stdio (without -nographic) holds it; QEMU's serial then goes to a virtual
         * console nobody sees, so here to null. */
        cfg->serials[0].kind = mon_stdio && !cfg->nographic ? KEMU_SERIAL_NULL : KEMU_SERIAL_STDIO;
        cfg->serials[0].mux = cfg->nographic && !cfg->monitors.n;
        cfg->nserials = 1;
        cfg->serial_default = true;
    } else if (cfg->nographic && !cfg->nodefaults && !cfg->monitors.n && !mon_serial) {
        if (strlist_add(&cfg->monitors, "stdio", err) < 0)
            return -1;
    }
    return 0;
}

static int finish(struct parse_state *st, struct error *err)
{
    struct kemu_config *cfg = st->cfg;
    if (finish_memory(st, err) < 0) {
        error_prefix(err, "-m %s: ", st->mem_arg);
        return -1;
    }
    if (finish_memory_backend(st, err) < 0)
        return -1;
    if (finish_smp(st, err) < 0) {
        if (st->smp_arg)
            error_prefix(err, "-smp %s: ", st->smp_arg);
        return -1;
    }
    if (cfg->initrd && !cfg->kernel)
        return error_setf(err, "-initrd: only allowed with -kernel");
    if (cfg->append && !cfg->kernel)
        return error_setf(err, "-append: only allowed with -kernel");
    return finish_serials(st, err);
}

/* ------------------------------------------------------------ entry ---- */

static int defaults(struct kemu_config *cfg, struct error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->machine = KEMU_MACHINE_PC;
    cfg->dump_guest_core = true;
    cfg->mem_merge = true;
    cfg->ram_size = KEMU_DEFAULT_RAM_SIZE;
    cfg->ram_maxmem = KEMU_DEFAULT_RAM_SIZE;
    cfg->rtc_base = KEMU_RTC_BASE_UTC;
    cfg->rtc_clock = KEMU_RTC_CLOCK_HOST;
    cfg->machine_opts.group = &machine_group;
    cfg->mem_opts.group = &mem_group;
    cfg->smp_opts.group = &smp_group;
    cfg->accel_opts.group = &accel_group;
    if (set_str(&cfg->machine_name, "pc", err) < 0 || set_str(&cfg->cpu_model, "host", err) < 0)
        return -1;
    return 0;
}

static void request_option_help(struct kemu_config *cfg, const struct cmdline_option *opt,
                                const struct opts *o)
{
    cfg->action = KEMU_ACTION_PRINT_OPTION_HELP;
    cfg->help_option = opt->name;
    /* "-device DRIVER,help", "-machine TYPE,help": properties of that driver or machine. */
    const char *what = o && opt->group && opt->group->implied && opts_has(o, opt->group->implied)
                           ? opts_get_str(o, opt->group->implied)
                           : NULL;
    if (what)
        cfg->help_arg = strdup(what); /* on failure, the generic list is printed */
}

static int parse_args(int argc, char **argv, struct kemu_config *cfg, struct error *err)
{
    struct parse_state st = {.cfg = cfg};
    if (defaults(cfg, err) < 0)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *text = argv[i];
        if (text[0] != '-')
            return error_setf(err,
                              "%s: disk images without an option are not supported yet, "
                              "use -drive",
                              text);
        const char *name = text + 1;
        if (name[0] == '-' && name[1])
            name++; /* "--smp" is "-smp" */
        const struct cmdline_option *opt = find_option(name);
        if (!opt)
            return error_setf(err, "%s: invalid option", text);
        const char *arg = NULL;
        if (opt->flags & ARG) {
            if (i + 1 >= argc)
                return error_setf(err, "%s: option requires an argument", text);
            arg = argv[++i];
            if ((opt->flags & HELP_ARG) && opts_is_help(arg)) {
                request_option_help(cfg, opt, NULL);
                return 0;
            }
        }
        struct opts o = {0};
        int r = 0;
        if (opt->group) {
            r = opts_parse(&o, opt->group, arg, err);
            if (r == 0 && o.help) {
                request_option_help(cfg, opt, &o);
                opts_free(&o);
                return 0;
            }
        }
        if (r == 0)
            r = opt->handle(&st, arg, opt->group ? &o : NULL, err);
        opts_free(&o);
        if (r < 0) {
            if (arg)
                error_prefix(err, "%s %s: ", text, arg);
            else
                error_prefix(err, "%s: ", text);
            return -1;
        }
        if (cfg->action != KEMU_ACTION_RUN)
            return 0;
    }
    return finish(&st, err);
}

int cmdline_parse(int argc, char **argv, struct kemu_config *cfg, struct error *err)
{
    int r = parse_args(argc, argv, cfg, err);
    if (r < 0 && err) {
        /* One line, whatever the arguments held. */
        for (char *p = err->msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
    }
    return r;
}

void kemu_config_free(struct kemu_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->help_arg);
    free(cfg->machine_name);
    free(cfg->cpu_model);
    free_cpu_props(cfg);
    free(cfg->kernel);
    free(cfg->initrd);
    free(cfg->append);
    free(cfg->name);
    free(cfg->process_name);
    free(cfg->pidfile);
    free(cfg->mem_path);
    free(cfg->memory_backend);
    for (size_t i = 0; i < KEMU_MAX_SERIALS; i++) {
        free(cfg->serials[i].path);
        free(cfg->serials[i].chardev_id);
    }
    for (size_t i = 0; i < cfg->nchardevs; i++)
        free_chardev(&cfg->chardevs[i]);
    free(cfg->chardevs);
    opts_list_free(&cfg->devices, &cfg->ndevices);
    opts_list_free(&cfg->objects, &cfg->nobjects);
    strlist_free(&cfg->drives);
    strlist_free(&cfg->netdevs);
    strlist_free(&cfg->nets);
    strlist_free(&cfg->nics);
    strlist_free(&cfg->qmp);
    strlist_free(&cfg->qmp_pretty);
    strlist_free(&cfg->mon_chardevs);
    strlist_free(&cfg->monitors);
    strlist_free(&cfg->hmp_chardevs);
    opts_free(&cfg->machine_opts);
    opts_free(&cfg->mem_opts);
    opts_free(&cfg->smp_opts);
    opts_free(&cfg->accel_opts);
    memset(cfg, 0, sizeof(*cfg));
}

/* ----------------------------------------------------------- output ---- */

void cmdline_print_version(FILE *f)
{
    fprintf(f, "kemu version %s (QEMU-compatible)\n", KEMU_VERSION);
}

void cmdline_print_usage(FILE *f)
{
    fprintf(f, "usage: kemu [options]\n\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const struct cmdline_option *o = &options[i];
        char syn[512] = "";
        if (o->group)
            opts_synopsis(o->group, syn, sizeof(syn));
        else if (o->arg_name)
            snprintf(syn, sizeof(syn), "%s", o->arg_name);
        char left[600];
        snprintf(left, sizeof(left), "-%s%s%s", o->name, *syn ? " " : "", syn);
        if (strlen(left) <= 28)
            fprintf(f, "  %-28s %s\n", left, o->help);
        else
            fprintf(f, "  %s\n  %-28s %s\n", left, "", o->help);
    }
    fprintf(f, "\n\"-OPTION help\" lists the parameters of an option.\n");
}

/* QEMU's -device help: models under category headings, aliases on their model's line. */
static void print_device_models(FILE *f)
{
    const size_t ncat = sizeof(device_categories) / sizeof(device_categories[0]);
    for (size_t c = 0; c < ncat; c++) {
        fprintf(f, "%s%s devices:\n", c ? "\n" : "", device_categories[c]);
        for (size_t i = 0; i < NDEVICE_MODELS; i++) {
            const struct device_model *m = &device_models[i];
            if (m->alias_of || strcmp(m->category, device_categories[c]))
                continue;
            fprintf(f, "name \"%s\", bus %s", m->name, m->bus);
            for (size_t j = 0; j < NDEVICE_MODELS; j++)
                if (device_models[j].alias_of && !strcmp(device_models[j].alias_of, m->name))
                    fprintf(f, ", alias \"%s\"", device_models[j].name);
            fprintf(f, ", desc \"%s\"\n", m->desc);
        }
    }
}

void cmdline_print_option_help(const struct kemu_config *cfg, FILE *f)
{
    const char *name = cfg->help_option ? cfg->help_option : "";
    const struct cmdline_option *opt = find_option(name);
    if ((!strcmp(name, "machine") || !strcmp(name, "M")) && cfg->help_arg) {
        opts_print_help(&machine_group, f);
    } else if (!strcmp(name, "machine") || !strcmp(name, "M")) {
        fprintf(f, "Supported machines are:\n");
        for (size_t i = 0; i < sizeof(machine_types) / sizeof(machine_types[0]); i++)
            fprintf(f, "%-20s %s%s\n", machine_types[i].name, machine_types[i].desc,
                    i == 0 ? " (default)" : "");
    } else if (!strcmp(name, "cpu")) {
        /* QEMU's row form: "x86 NAME  DESCRIPTION". */
        fprintf(f, "Available CPUs:\n");
        fprintf(f, "x86 %-20s  %s\n", "host",
                "KVM processor with all supported host features (default)");
        fprintf(f, "x86 %-20s  %s\n", "max", "enables all features supported by the accelerator");
    } else if (!strcmp(name, "device")) {
        const struct device_model *m = cfg->help_arg ? find_device_model(cfg->help_arg) : NULL;
        if (m) {
            opts_print_help(m->props, f);
        } else {
            if (cfg->help_arg)
                fprintf(f, "'%s' is not a valid device model name\n", cfg->help_arg);
            print_device_models(f);
        }
    } else if (!strcmp(name, "chardev") && !cfg->help_arg) {
        /* QEMU's list (its first line ends in a space), then the keys kemu takes. */
        fprintf(f, "Available chardev backend types: \n");
        for (size_t i = 0; i < sizeof(chardev_backends) / sizeof(chardev_backends[0]); i++)
            fprintf(f, "  %s\n", chardev_backends[i]);
        fprintf(f, "\n");
        opts_print_help(&chardev_group, f);
    } else if (!strcmp(name, "accel")) {
        /* QEMU's heading word for word: scripts look for it. */
        fprintf(f, "Accelerators supported in QEMU binary:\nkvm\n");
    } else if (opt && opt->group) {
        opts_print_help(opt->group, f);
    }
}

int cmdline_print_action(const struct kemu_config *cfg, FILE *f)
{
    switch (cfg->action) {
    case KEMU_ACTION_RUN:
        return -1;
    case KEMU_ACTION_PRINT_VERSION:
        cmdline_print_version(f);
        return 0;
    case KEMU_ACTION_PRINT_HELP:
        cmdline_print_usage(f);
        return 0;
    case KEMU_ACTION_PRINT_OPTION_HELP:
        cmdline_print_option_help(cfg, f);
        return 0;
    }
    return -1;
}
