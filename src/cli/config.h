/*
 * struct kemu_config: everything the command line asked for, parsed and validated, with
 * defaults filled in. Produced by cmdline_parse(), released by kemu_config_free().
 * Strings are heap copies owned by the config.
 */
#ifndef KEMU_CLI_CONFIG_H
#define KEMU_CLI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cli/opts.h"
#include "cli/smp.h"

#define KEMU_MAX_SERIALS      4
#define KEMU_MAX_CPUS         255
#define KEMU_DEFAULT_RAM_SIZE (128ULL << 20)
#define KEMU_MIN_RAM_SIZE     (1ULL << 20)
#define KEMU_MAX_RAM_SIZE     (1ULL << 40)

enum kemu_action {
    KEMU_ACTION_RUN,
    KEMU_ACTION_PRINT_VERSION,     /* -version: cmdline_print_version() and exit 0 */
    KEMU_ACTION_PRINT_HELP,        /* -h/-help: cmdline_print_usage() and exit 0 */
    KEMU_ACTION_PRINT_OPTION_HELP, /* "-X help": cmdline_print_option_help() and exit 0 */
};

enum kemu_machine_type {
    KEMU_MACHINE_PC, /* "pc" and "pc-i440fx-*" */
    KEMU_MACHINE_MICROVM,
};

enum kemu_rtc_base {
    KEMU_RTC_BASE_UTC,
    KEMU_RTC_BASE_LOCALTIME,
    KEMU_RTC_BASE_DATE, /* fixed start date: rtc.base_time */
};

enum kemu_rtc_clock {
    KEMU_RTC_CLOCK_HOST,
    KEMU_RTC_CLOCK_RT,
    KEMU_RTC_CLOCK_VM,
};

enum kemu_serial_kind {
    KEMU_SERIAL_NONE,    /* "-serial none": the port is absent */
    KEMU_SERIAL_NULL,    /* output discarded, no input */
    KEMU_SERIAL_STDIO,   /* "stdio", "mon:stdio" (mux = true) */
    KEMU_SERIAL_FILE,    /* "file:PATH": path */
    KEMU_SERIAL_CHARDEV, /* "chardev:ID": chardev indexes cfg->chardevs */
};

/* One -serial, in port order: serials[0] is ttyS0 (COM1 at 0x3f8), serials[1] ttyS1, ... */
struct kemu_serial {
    enum kemu_serial_kind kind;
    bool mux;         /* shared with the monitor ("mon:stdio", -nographic default) */
    char *path;       /* KEMU_SERIAL_FILE */
    char *chardev_id; /* KEMU_SERIAL_CHARDEV */
    size_t chardev;   /* KEMU_SERIAL_CHARDEV: index into cfg->chardevs (resolved) */
};

enum kemu_chardev_backend {
    KEMU_CHARDEV_NULL,
    KEMU_CHARDEV_STDIO,
    KEMU_CHARDEV_FILE,
    KEMU_CHARDEV_SOCKET,
};

/* One -chardev BACKEND,id=ID,... (ids are unique). */
struct kemu_chardev_spec {
    char *id;
    enum kemu_chardev_backend backend;
    char *path; /* file: output file; socket: unix socket path (else NULL) */
    char *host; /* socket over TCP (path == NULL): host and port */
    uint16_t port;
    bool server;   /* socket: listen (server=on) instead of connect */
    bool wait;     /* socket server: wait for a client before starting (default on) */
    bool append;   /* file: append instead of truncate */
    bool signal;   /* stdio: ^C etc. raise signals (default on) */
    bool mux;      /* mux=on: shareable by several frontends and the monitor */
    char *logfile; /* copy of all output, or NULL */
    bool logappend;
    struct opts opts; /* everything as given, for keys added later */
};

/* Arguments of a repeatable option kept as given, parsed by the subsystem that owns it. */
struct kemu_strlist {
    char **v;
    size_t n;
};

struct kemu_cpu_prop {
    char *name;  /* "avx2", "pmu" */
    char *value; /* "+flag" -> "on", "-flag" -> "off", "key=value" -> value */
};

struct kemu_config {
    enum kemu_action action;
    const char *help_option; /* PRINT_OPTION_HELP: option name without '-': "smp", "M" */
    char *help_arg;          /* "-device DRIVER,help" / "-machine TYPE,help": DRIVER/TYPE */

    /* Machine and accelerator. */
    enum kemu_machine_type machine;
    char *machine_name;   /* as given ("pc-i440fx-trusty"), or "pc" by default */
    bool accel_kvm;       /* -enable-kvm, -accel kvm or -machine accel=kvm was given */
    bool dump_guest_core; /* default on */
    bool mem_merge;       /* default on (KSM madvise) */
    bool kernel_pit;      /* -machine kernel-irqchip=on: KVM's in-kernel PIT */

    /* Memory: -m [size=]N[,slots=n,maxmem=size]. */
    uint64_t ram_size;    /* bytes, default 128 MiB, 4 KiB aligned */
    uint64_t ram_slots;   /* hotplug slots (0: none); hotplug itself is not supported yet */
    uint64_t ram_maxmem;  /* bytes, == ram_size unless maxmem given */
    char *mem_path;       /* -mem-path: a file, or a directory (hugetlbfs) to make one in */
    bool mem_prealloc;    /* -mem-prealloc */
    char *memory_backend; /* -machine memory-backend=ID */
    const struct opts *ram_backend; /* that -object (in objects[]), once resolved */

    /* CPUs. */
    struct smp_topology smp;
    char *cpu_model; /* "host" (default) or "max" */
    struct kemu_cpu_prop *cpu_props;
    size_t ncpu_props;

    /* Boot. */
    char *kernel, *initrd, *append; /* NULL if not given */

    /* -name */
    char *name;         /* guest name or NULL */
    char *process_name; /* process= or NULL */
    bool debug_threads;

    /* Console and devices. */
    bool nographic;
    bool nodefaults;
    bool vga_none;       /* -vga none: QEMU's default VGA (slot 2 on pc) is not there */
    bool serial_default; /* serials[0] is the default stdio port, not from -serial */
    struct kemu_serial serials[KEMU_MAX_SERIALS];
    size_t nserials;
    struct kemu_chardev_spec *chardevs;
    size_t nchardevs;
    /* Every -device, validated (driver known, properties typed); o->group describes the
     * driver so opts_get_*() return its defaults. opts_get_str(&devices[i], "driver"). */
    struct opts *devices;
    size_t ndevices;
    /* -drive, -netdev, -net, -nic as given: the block and net layers parse them. */
    struct kemu_strlist drives, netdevs, nets, nics;
    /* QMP monitors: -qmp SPEC, -qmp-pretty SPEC, -mon chardev=ID,mode=control[,pretty=on]
     * (turned into the socket chardev's listen spec here). */
    struct kemu_strlist qmp, qmp_pretty;
    struct kemu_strlist mon_chardevs; /* chardev ids taken by -mon (not opened as chardevs) */
    /* HMP monitors: each -monitor as given ("stdio", "unix:PATH,...", "tcp:...", "chardev:ID",
     * "none"; -nographic may add "stdio"), and the chardevs of -mon ...,mode=readline. */
    struct kemu_strlist monitors, hmp_chardevs;
    /* Every -object, validated (qom-type known): opts_get_str(&objects[i], "qom-type"). */
    struct opts *objects;
    size_t nobjects;

    /* -rtc */
    enum kemu_rtc_base rtc_base;
    time_t rtc_base_time; /* KEMU_RTC_BASE_DATE: the date as seconds since the epoch (UTC);
                             guest offset = rtc_base_time - time(NULL) at start */
    enum kemu_rtc_clock rtc_clock;
    bool rtc_driftfix_slew;

    /* Process and run control. */
    bool start_paused; /* -S */
    bool no_reboot, no_shutdown;
    bool daemonize;
    char *pidfile;

    /* Raw merged groups, kept for diagnostics and later keys. */
    struct opts machine_opts, mem_opts, smp_opts, accel_opts;
};

#endif
