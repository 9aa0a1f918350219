/* The command line: whole argv examples and every error path (one line each). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cli/cmdline.h"
#include "kemu-config.h"

#define MAXARGS 24

/* Parse "kemu" + the NULL-terminated list in args. */
static int parse_list(struct kemu_config *cfg, struct error *err, const char *const *args)
{
    char *argv[MAXARGS + 2];
    int argc = 0;
    argv[argc++] = (char *)"kemu";
    for (; *args && argc <= MAXARGS; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    memset(err, 0, sizeof(*err));
    return cmdline_parse(argc, argv, cfg, err);
}

#define PARSE(cfg, err, ...) parse_list(cfg, err, (const char *const[]){__VA_ARGS__, NULL})

static void test_full_example(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-enable-kvm", "-m", "2G", "-smp",
                           "2,sockets=1,cores=2,threads=1", "-kernel", "k", "-append", "a b",
                           "-nographic"),
                     0);
    assert_false(err.set);
    assert_int_equal(cfg.action, KEMU_ACTION_RUN);
    assert_true(cfg.accel_kvm);
    assert_int_equal(cfg.machine, KEMU_MACHINE_PC);
    assert_string_equal(cfg.machine_name, "pc");
    assert_int_equal(cfg.ram_size, 2ULL << 30);
    assert_int_equal(cfg.smp.cpus, 2);
    assert_int_equal(cfg.smp.maxcpus, 2);
    assert_int_equal(cfg.smp.sockets, 1);
    assert_int_equal(cfg.smp.dies, 1);
    assert_int_equal(cfg.smp.cores, 2);
    assert_int_equal(cfg.smp.threads, 1);
    assert_string_equal(cfg.kernel, "k");
    assert_string_equal(cfg.append, "a b");
    assert_null(cfg.initrd);
    assert_true(cfg.nographic);
    /* -nographic without -serial: ttyS0 on stdio, muxed with the monitor */
    assert_int_equal(cfg.nserials, 1);
    assert_true(cfg.serial_default);
    assert_int_equal(cfg.serials[0].kind, KEMU_SERIAL_STDIO);
    assert_true(cfg.serials[0].mux);
    kemu_config_free(&cfg);
}

static void test_defaults(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-kernel", "bzImage"), 0);
    assert_false(cfg.accel_kvm);
    assert_int_equal(cfg.ram_size, 128ULL << 20);
    assert_int_equal(cfg.ram_maxmem, 128ULL << 20);
    assert_int_equal(cfg.ram_slots, 0);
    assert_int_equal(cfg.smp.cpus, 1);
    assert_int_equal(cfg.smp.maxcpus, 1);
    assert_string_equal(cfg.cpu_model, "host");
    assert_int_equal(cfg.ncpu_props, 0);
    assert_true(cfg.dump_guest_core);
    assert_true(cfg.mem_merge);
    assert_int_equal(cfg.rtc_base, KEMU_RTC_BASE_UTC);
    assert_int_equal(cfg.rtc_clock, KEMU_RTC_CLOCK_HOST);
    assert_false(cfg.start_paused);
    /* no -serial, no -nographic: default stdio serial, not muxed */
    assert_int_equal(cfg.nserials, 1);
    assert_true(cfg.serial_default);
    assert_int_equal(cfg.serials[0].kind, KEMU_SERIAL_STDIO);
    assert_false(cfg.serials[0].mux);
    kemu_config_free(&cfg);

    /* -nodefaults: no default serial, even with -nographic */
    assert_int_equal(PARSE(&cfg, &err, "-nodefaults", "-nographic"), 0);
    assert_int_equal(cfg.nserials, 0);
    assert_false(cfg.serial_default);
    kemu_config_free(&cfg);
}

static void test_openstack_style(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-name", "guest=instance-0001,debug-threads=on", "-S",
                           "-machine", "pc-i440fx-trusty,accel=kvm,usb=off,dump-guest-core=off",
                           "-cpu", "host,+avx2,-x2apic,pmu=off,kvm", "-m", "2048", "-rtc",
                           "base=utc,driftfix=slew", "-no-shutdown", "-no-reboot", "-nodefaults",
                           "-display", "none", "-pidfile", "/run/k.pid", "-daemonize"),
                     0);
    assert_int_equal(cfg.machine, KEMU_MACHINE_PC);
    assert_string_equal(cfg.machine_name, "pc-i440fx-trusty");
    assert_true(cfg.accel_kvm);
    assert_false(cfg.dump_guest_core);
    assert_true(cfg.mem_merge);
    assert_int_equal(cfg.ram_size, 2048ULL << 20);
    assert_string_equal(cfg.name, "instance-0001");
    assert_true(cfg.debug_threads);
    assert_true(cfg.start_paused);
    assert_true(cfg.no_shutdown);
    assert_true(cfg.no_reboot);
    assert_true(cfg.daemonize);
    assert_string_equal(cfg.pidfile, "/run/k.pid");
    assert_true(cfg.rtc_driftfix_slew);
    assert_int_equal(cfg.nserials, 0);
    assert_string_equal(cfg.cpu_model, "host");
    assert_int_equal(cfg.ncpu_props, 4);
    assert_string_equal(cfg.cpu_props[0].name, "avx2");
    assert_string_equal(cfg.cpu_props[0].value, "on");
    assert_string_equal(cfg.cpu_props[1].name, "x2apic");
    assert_string_equal(cfg.cpu_props[1].value, "off");
    assert_string_equal(cfg.cpu_props[2].name, "pmu");
    assert_string_equal(cfg.cpu_props[2].value, "off");
    assert_string_equal(cfg.cpu_props[3].name, "kvm");
    assert_string_equal(cfg.cpu_props[3].value, "on");
    kemu_config_free(&cfg);

    /* double-dash spelling, -M alias, -accel, microvm */
    assert_int_equal(PARSE(&cfg, &err, "--accel", "kvm", "--M", "microvm", "--m", "1.5G", "-cpu",
                           "max,-avx2,+avx2"),
                     0);
    assert_true(cfg.accel_kvm);
    assert_int_equal(cfg.machine, KEMU_MACHINE_MICROVM);
    assert_int_equal(cfg.ram_size, 3ULL << 29);
    assert_string_equal(cfg.cpu_model, "max");
    assert_int_equal(cfg.ncpu_props, 1); /* last one wins */
    assert_string_equal(cfg.cpu_props[0].value, "on");
    kemu_config_free(&cfg);

    /* pc-i440fx-<version>, kvm in an accelerator list */
    assert_int_equal(PARSE(&cfg, &err, "-machine", "type=pc-i440fx-7.2,accel=kvm:tcg"), 0);
    assert_int_equal(cfg.machine, KEMU_MACHINE_PC);
    assert_true(cfg.accel_kvm);
    kemu_config_free(&cfg);
}

static void test_memory(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-m", "size=1G,slots=4,maxmem=8G"), 0);
    assert_int_equal(cfg.ram_size, 1ULL << 30);
    assert_int_equal(cfg.ram_slots, 4);
    assert_int_equal(cfg.ram_maxmem, 8ULL << 30);
    kemu_config_free(&cfg);
    /* merged like QEMU; sizes round up to 4 KiB */
    assert_int_equal(PARSE(&cfg, &err, "-m", "512", "-m", "1025k"), 0);
    assert_int_equal(cfg.ram_size, 1028ULL << 10);
    kemu_config_free(&cfg);
    assert_int_equal(PARSE(&cfg, &err, "-m", "1M"), 0);
    assert_int_equal(cfg.ram_size, 1ULL << 20);
    kemu_config_free(&cfg);
    /* -mem-path, -mem-prealloc */
    assert_int_equal(PARSE(&cfg, &err, "-mem-path", "/dev/hugepages", "-mem-prealloc"), 0);
    assert_string_equal(cfg.mem_path, "/dev/hugepages");
    assert_true(cfg.mem_prealloc);
    assert_null(cfg.ram_backend);
    kemu_config_free(&cfg);
    /* A memory backend sets the RAM size when -m does not (libvirt's pc.ram); an -m that
     * agrees is fine. */
    assert_int_equal(PARSE(&cfg, &err, "-object", "memory-backend-ram,id=pc.ram,size=3G",
                           "-machine", "pc,memory-backend=pc.ram"),
                     0);
    assert_int_equal(cfg.ram_size, 3ULL << 30);
    assert_int_equal(cfg.ram_maxmem, 3ULL << 30);
    assert_non_null(cfg.ram_backend);
    assert_string_equal(opts_get_str(cfg.ram_backend, "id"), "pc.ram");
    kemu_config_free(&cfg);
    assert_int_equal(PARSE(&cfg, &err, "-m", "512M", "-object",
                           "memory-backend-memfd,id=m,size=512M,hugetlb=on,hugetlbsize=2M,seal=off",
                           "-machine", "memory-backend=m"),
                     0);
    assert_int_equal(cfg.ram_size, 512ULL << 20);
    kemu_config_free(&cfg);
}

static void test_smp_merge_and_machine(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-smp", "8", "-smp", "sockets=2"), 0);
    assert_int_equal(cfg.smp.cpus, 8);
    assert_int_equal(cfg.smp.sockets, 2);
    assert_int_equal(cfg.smp.cores, 4);
    kemu_config_free(&cfg);
    /* kernel-irqchip=on: KVM's PIT as well; unset, kemu's */
    assert_int_equal(PARSE(&cfg, &err, "-M", "pc"), 0);
    assert_false(cfg.kernel_pit);
    kemu_config_free(&cfg);
    assert_int_equal(PARSE(&cfg, &err, "-M", "microvm,kernel-irqchip=on"), 0);
    assert_true(cfg.kernel_pit);
    kemu_config_free(&cfg);
    assert_int_equal(PARSE(&cfg, &err, "-machine", "pc,kernel-irqchip=on"), 0);
    assert_true(cfg.kernel_pit);
    kemu_config_free(&cfg);
    /* -smp may come before -machine: the topology is resolved at the end */
    assert_int_equal(PARSE(&cfg, &err, "-smp", "4,dies=2", "-M", "pc"), 0);
    assert_int_equal(cfg.smp.dies, 2);
    assert_int_equal(cfg.smp.cores, 2);
    kemu_config_free(&cfg);
}

static void test_serial_chardev(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(
        PARSE(&cfg, &err, "-chardev", "socket,id=c0,path=/tmp/s,server=on,wait=off", "-chardev",
              "file,id=log,path=/tmp/a,,b,append=on", "-chardev", "stdio,id=con,signal=off,mux=on",
              "-chardev", "socket,id=tcp,host=127.0.0.1,port=4444", "-serial", "chardev:c0",
              "-serial", "mon:stdio", "-serial", "file:/tmp/x", "-serial", "chardev:log"),
        0);
    assert_false(cfg.serial_default);
    assert_int_equal(cfg.nserials, 4);
    assert_int_equal(cfg.serials[0].kind, KEMU_SERIAL_CHARDEV);
    assert_string_equal(cfg.serials[0].chardev_id, "c0");
    assert_int_equal(cfg.serials[0].chardev, 0);
    assert_int_equal(cfg.serials[1].kind, KEMU_SERIAL_STDIO);
    assert_true(cfg.serials[1].mux);
    assert_int_equal(cfg.serials[2].kind, KEMU_SERIAL_FILE);
    assert_string_equal(cfg.serials[2].path, "/tmp/x");
    assert_int_equal(cfg.serials[3].kind, KEMU_SERIAL_CHARDEV);
    assert_int_equal(cfg.serials[3].chardev, 1);

    assert_int_equal(cfg.nchardevs, 4);
    const struct kemu_chardev_spec *c = &cfg.chardevs[0];
    assert_string_equal(c->id, "c0");
    assert_int_equal(c->backend, KEMU_CHARDEV_SOCKET);
    assert_string_equal(c->path, "/tmp/s");
    assert_null(c->host);
    assert_true(c->server);
    assert_false(c->wait);
    c = &cfg.chardevs[1];
    assert_int_equal(c->backend, KEMU_CHARDEV_FILE);
    assert_string_equal(c->path, "/tmp/a,b");
    assert_true(c->append);
    assert_string_equal(opts_get_str(&c->opts, "id"), "log");
    c = &cfg.chardevs[2];
    assert_int_equal(c->backend, KEMU_CHARDEV_STDIO);
    assert_false(c->signal);
    assert_true(c->mux);
    c = &cfg.chardevs[3];
    assert_string_equal(c->host, "127.0.0.1");
    assert_int_equal(c->port, 4444);
    assert_false(c->server);
    assert_true(c->wait);
    kemu_config_free(&cfg);

    /* none/null, and a mux chardev shared by two ports */
    assert_int_equal(PARSE(&cfg, &err, "-serial", "none", "-serial", "null", "-chardev",
                           "null,id=n,mux=on", "-serial", "chardev:n", "-serial", "chardev:n"),
                     0);
    assert_int_equal(cfg.nserials, 4);
    assert_int_equal(cfg.serials[0].kind, KEMU_SERIAL_NONE);
    assert_int_equal(cfg.serials[1].kind, KEMU_SERIAL_NULL);
    assert_int_equal(cfg.chardevs[0].backend, KEMU_CHARDEV_NULL);
    kemu_config_free(&cfg);
}

static void test_devices(void **state)
{
    struct kemu_config cfg;
    struct error err;
    uint64_t v = 0;
    assert_int_equal(PARSE(&cfg, &err, "-device", "isa-debug-exit", "-device",
                           "driver=isa-debug-exit,iobase=0xf4,iosize=0x04,id=dbg"),
                     0);
    assert_int_equal(cfg.ndevices, 2);
    assert_string_equal(opts_get_str(&cfg.devices[0], "driver"), "isa-debug-exit");
    assert_int_equal(opts_get_number(&cfg.devices[0], "iobase", &v, &err), 1);
    assert_int_equal(v, 0x501); /* default from the driver's table */
    assert_int_equal(opts_get_number(&cfg.devices[0], "iosize", &v, &err), 1);
    assert_int_equal(v, 2);
    assert_int_equal(opts_get_number(&cfg.devices[1], "iobase", &v, &err), 1);
    assert_int_equal(v, 0xf4);
    assert_int_equal(opts_get_number(&cfg.devices[1], "iosize", &v, &err), 1);
    assert_int_equal(v, 4);
    assert_string_equal(opts_get_str(&cfg.devices[1], "id"), "dbg");
    kemu_config_free(&cfg);
}

static void test_backends_kept(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-drive", "file=a.img,if=virtio", "-netdev", "user,id=n0",
                           "-nic", "user,model=virtio", "-net", "nic", "-net", "user", "-object",
                           "rng-random,id=rng0,filename=/dev/urandom", "-device",
                           "virtio-rng-pci,rng=rng0,addr=0x5", "-device",
                           "virtio-blk,drive=d,scsi=off,bootindex=1"),
                     0);
    assert_int_equal(cfg.drives.n, 1);
    assert_string_equal(cfg.drives.v[0], "file=a.img,if=virtio");
    assert_int_equal(cfg.netdevs.n, 1);
    assert_int_equal(cfg.nics.n, 1);
    assert_int_equal(cfg.nets.n, 2);
    assert_int_equal(cfg.nobjects, 1);
    assert_string_equal(opts_get_str(&cfg.objects[0], "filename"), "/dev/urandom");
    assert_int_equal(cfg.ndevices, 2);
    assert_string_equal(opts_get_str(&cfg.devices[0], "addr"), "0x5");
    assert_string_equal(opts_get_str(&cfg.devices[1], "bus"), "pci.0"); /* default */
    kemu_config_free(&cfg);
}

static void test_rtc(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-rtc", "base=2006-06-17T16:01:21,clock=vm"), 0);
    assert_int_equal(cfg.rtc_base, KEMU_RTC_BASE_DATE);
    assert_int_equal(cfg.rtc_base_time, 1150560081);
    assert_int_equal(cfg.rtc_clock, KEMU_RTC_CLOCK_VM);
    kemu_config_free(&cfg);
    assert_int_equal(PARSE(&cfg, &err, "-rtc", "base=2000-02-29"), 0);
    assert_int_equal(cfg.rtc_base_time, 951782400);
    kemu_config_free(&cfg);
    assert_int_equal(PARSE(&cfg, &err, "-rtc", "base=localtime,clock=rt"), 0);
    assert_int_equal(cfg.rtc_base, KEMU_RTC_BASE_LOCALTIME);
    assert_int_equal(cfg.rtc_clock, KEMU_RTC_CLOCK_RT);
    kemu_config_free(&cfg);
}

static char *print_to_string(const struct kemu_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(cmdline_print_action(cfg, f), 0); /* exit status */
    fclose(f);
    return buf;
}

static void expect_output(const char *const *args, enum kemu_action action, const char *needle)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(parse_list(&cfg, &err, args), 0);
    assert_int_equal(cfg.action, action);
    char *out = print_to_string(&cfg);
    if (!strstr(out, needle))
        print_error("output of %s %s lacks '%s':\n%s", args[0], args[1] ? args[1] : "", needle,
                    out);
    assert_non_null(strstr(out, needle));
    free(out);
    kemu_config_free(&cfg);
}

#define EXPECT_OUTPUT(action, needle, ...)                                                         \
    expect_output((const char *const[]){__VA_ARGS__, NULL}, action, needle)

static void test_actions(void **state)
{
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_VERSION, "kemu version " KEMU_VERSION, "-version");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_VERSION, "(QEMU-compatible)\n", "--version");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_HELP, "usage: kemu [options]", "-h");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_HELP, "-smp [cpus=]<num>[,sockets=<num>]", "-help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_HELP, "-kernel FILE", "--help");
    /* parsing stops at the first help or version request */
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_HELP, "-enable-kvm", "-help", "-foo");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "microvm", "-M", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "pc-i440fx-*", "-machine", "?");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "usb=on|off", "-machine", "pc,help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "maxcpus=<num>", "-smp", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "maxmem=<size>", "-m", "?");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "host", "-cpu", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "name \"isa-debug-exit\"", "-device", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "iobase=<num>", "-device", "isa-debug-exit,help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "name \"virtio-rng-pci\"", "-device",
                  "nosuch,help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "server=on|off", "-chardev", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "debug-threads", "-name", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "driftfix", "-rtc", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "kvm", "-accel", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP, "type=<str>", "-display", "help");

    /* "help" is an ordinary value where the option takes a file or a command line */
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-kernel", "help", "-append", "?"), 0);
    assert_int_equal(cfg.action, KEMU_ACTION_RUN);
    assert_int_equal(cmdline_print_action(&cfg, stdout), -1); /* RUN: nothing printed */
    assert_string_equal(cfg.append, "?");
    kemu_config_free(&cfg);
}

/* The output of args starts with the lines in want (QEMU's form), and the exit status is 0. */
static void expect_start(const char *const *args, const char *want)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(parse_list(&cfg, &err, args), 0);
    assert_int_equal(cfg.action, KEMU_ACTION_PRINT_OPTION_HELP);
    char *out = print_to_string(&cfg);
    if (strncmp(out, want, strlen(want)))
        print_error("output of %s %s does not start with:\n%s\ngot:\n%s", args[0], args[1], want,
                    out);
    assert_int_equal(strncmp(out, want, strlen(want)), 0);
    free(out);
    kemu_config_free(&cfg);
}

#define EXPECT_START(want, ...) expect_start((const char *const[]){__VA_ARGS__, NULL}, want)

/* "-X help" in QEMU's form: its first line (what scripts and users look for), then kemu's rows. */
static void test_help_lists_qemu_form(void **state)
{
    EXPECT_START("Available chardev backend types: \n  null\n  stdio\n  file\n  socket\n\n"
                 "chardev options:\n",
                 "-chardev", "help");
    EXPECT_START("Available chardev backend types: \n", "-chardev", "?");
    EXPECT_START("Available chardev backend types: \n", "-chardev", "help,id=c0");
    EXPECT_START("chardev options:\n  backend=<str>", "-chardev", "socket,help");
    EXPECT_START("Storage devices:\n"
                 "name \"virtio-blk-device\", bus virtio-bus, desc \"virtio block device "
                 "(microvm)\"\n"
                 "name \"virtio-blk-pci\", bus PCI, alias \"virtio-blk\", desc \"virtio block "
                 "device\"\n\nNetwork devices:\n",
                 "-device", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP,
                  "\n\nMisc devices:\nname \"isa-debug-exit\", bus ISA, desc ", "-device", "help");
    EXPECT_OUTPUT(KEMU_ACTION_PRINT_OPTION_HELP,
                  "name \"virtio-rng-pci\", bus PCI, alias \"virtio-rng\", desc ", "-device",
                  "help");
    EXPECT_START("Supported machines are:\npc ", "-machine", "help");
    EXPECT_START("Supported machines are:\n", "-M", "?");
    EXPECT_START("Available CPUs:\nx86 host                  ", "-cpu", "help");
    EXPECT_START("Accelerators supported in QEMU binary:\nkvm\n", "-accel", "help");

    /* An alias is listed on its model's line only, not on a line of its own. */
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-device", "help"), 0);
    char *out = print_to_string(&cfg);
    assert_null(strstr(out, "name \"virtio-blk\""));
    free(out);
    kemu_config_free(&cfg);

    /* QEMU has no "-serial help": 'help' is an invalid char driver there, exit 1 (test_errors). */
    assert_int_equal(PARSE(&cfg, &err, "-serial", "help"), -1);
    assert_string_equal(err.msg, "-serial help: 'help' is not a valid char driver");
    kemu_config_free(&cfg);
}

struct error_case {
    const char *args[12];
    const char *msg;
};

static const struct error_case error_cases[] = {
    {{"-foo"}, "-foo: invalid option"},
    {{"--foo"}, "--foo: invalid option"},
    {{"-"}, "-: invalid option"},
    {{"--"}, "--: invalid option"},
    {{"disk.img"}, "disk.img: disk images without an option are not supported yet, use -drive"},
    {{"-M", "pc,kernel-irqchip=split"},
     "-M pc,kernel-irqchip=split: kernel-irqchip=split is not supported (on, or leave it unset)"},
    {{"-machine", "kernel-irqchip=off"},
     "-machine kernel-irqchip=off: kernel-irqchip=off is not supported (on, or leave it unset)"},
    {{"-M", "microvm,kernel-irqchip=2"},
     "-M microvm,kernel-irqchip=2: Parameter 'kernel-irqchip' does not accept value '2'"},
    {{"-kernel"}, "-kernel: option requires an argument"},
    {{"-m", "1G", "-smp"}, "-smp: option requires an argument"},
    /* -smp */
    {{"-smp", "2,socket=2"},
     "-smp 2,socket=2: unknown parameter 'socket' (did you mean 'sockets'?)"},
    {{"-smp", "4,cores=3"},
     "-smp 4,cores=3: Invalid CPU topology: product of the hierarchy must match maxcpus: "
     "sockets (1) * dies (1) * cores (3) * threads (1) != maxcpus (4)"},
    {{"-smp", "6,sockets=2,cores=2"},
     "-smp 6,sockets=2,cores=2: Invalid CPU topology: product of the hierarchy must match "
     "maxcpus: sockets (2) * dies (1) * cores (2) * threads (1) != maxcpus (6)"},
    {{"-smp", "4,maxcpus=2"},
     "-smp 4,maxcpus=2: Invalid CPU topology: maxcpus must be equal to or greater than smp: "
     "sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)"},
    {{"-smp", "cpus=0"},
     "-smp cpus=0: Invalid CPU topology: CPU topology parameters must be greater than zero"},
    {{"-smp", "300"},
     "-smp 300: Invalid SMP CPUs 300. The max CPUs supported by machine 'pc' is 255"},
    {{"-M", "microvm", "-smp", "2,dies=2"},
     "-smp 2,dies=2: dies not supported by this machine's CPU topology"},
    {{"-smp", "2,cpus="}, "-smp 2,cpus=: parameter 'cpus' requires a value"},
    {{"-smp", "x"}, "-smp x: invalid number 'x'"},
    {{"-smp", "99999999999999999999"},
     "-smp 99999999999999999999: number '99999999999999999999' is out of range"},
    {{"-smp", "-1"}, "-smp -1: invalid number '-1'"},
    /* -m */
    {{"-m", "12Q"}, "-m 12Q: invalid size '12Q'"},
    {{"-m", "0"}, "-m 0: RAM size '0' is too small (minimum 1M)"},
    {{"-m", "1023k"}, "-m 1023k: RAM size '1023k' is too small (minimum 1M)"},
    {{"-m", "2T"}, "-m 2T: RAM size '2T' is too large (maximum 1T)"},
    {{"-m", "17592186044416"},
     "-m 17592186044416: RAM size '17592186044416' is too large (maximum 1T)"},
    {{"-m", "16E"}, "-m 16E: size '16E' is too large"},
    {{"-m", "1.5"}, "-m 1.5: invalid size '1.5'"},
    {{"-m", ""}, NULL}, /* QEMU: the default size */
    {{"-m", "size="}, "-m size=: parameter 'size' requires a value"},
    {{"-m", "1G,slots=2"}, "-m 1G,slots=2: slots specified but no maxmem"},
    {{"-m", "1G,maxmem=2G"},
     "-m 1G,maxmem=2G: maxmem was specified, but no hotplug slots were specified"},
    {{"-m", "1G,maxmem=512M,slots=1"},
     "-m 1G,maxmem=512M,slots=1: maxmem (536870912) must be at least the RAM size (1073741824)"},
    {{"-m", "1G,maxmem=2T,slots=1"},
     "-m 1G,maxmem=2T,slots=1: maxmem '2T' is too large (maximum 1T)"},
    {{"-m", "1G,maxmem=2G,slots=300"}, "-m 1G,maxmem=2G,slots=300: slots must be at most 256"},
    {{"-m", "1G,sizes=2"}, "-m 1G,sizes=2: unknown parameter 'sizes' (did you mean 'size'?)"},
    /* machine and accelerator */
    {{"-accel", "tcg"}, "-accel tcg: accelerator not supported (only kvm)"},
    {{"-accel", "kvm,thread=single"}, "-accel kvm,thread=single: unknown parameter 'thread'"},
    {{"-machine", "q35"},
     "-machine q35: unsupported machine type 'q35' (-machine help lists them)"},
    {{"-M", "pc-q35-7.2"},
     "-M pc-q35-7.2: unsupported machine type 'pc-q35-7.2' (-machine help lists them)"},
    {{"-M", "pc-i440fx-"},
     "-M pc-i440fx-: unsupported machine type 'pc-i440fx-' (-machine help lists them)"},
    {{"-machine", "pc,accel=tcg"}, "-machine pc,accel=tcg: accelerator not supported (only kvm)"},
    {{"-machine", "pc,usb=on"}, "-machine pc,usb=on: USB is not supported (usb=on)"},
    {{"-machine", "pc,usb=maybe"},
     "-machine pc,usb=maybe: invalid boolean 'maybe' for 'usb' (use on/off)"},
    {{"-machine", "pc,mem-merge"}, NULL}, /* bare bool: fine */
    /* cpu */
    {{"-cpu", "qemu64"}, "-cpu qemu64: unknown CPU model 'qemu64' (supported: host, max)"},
    {{"-cpu", "host,+"}, "-cpu host,+: invalid CPU property '+'"},
    {{"-cpu", "host,=on"}, "-cpu host,=on: invalid CPU property '=on'"},
    {{"-cpu", "host,+a=b"}, "-cpu host,+a=b: invalid CPU property '+a=b'"},
    /* boot */
    {{"-append", "x"}, "-append: only allowed with -kernel"},
    {{"-initrd", "x"}, "-initrd: only allowed with -kernel"},
    {{"-pidfile", ""}, "-pidfile : empty path"},
    /* name, display, rtc */
    {{"-name", "a,debug-threads=maybe"},
     "-name a,debug-threads=maybe: invalid boolean 'maybe' for 'debug-threads' (use on/off)"},
    {{"-display", "gtk"}, "-display gtk: display 'gtk' not supported (only none)"},
    {{"-display", "none,gl=on"}, "-display none,gl=on: display none takes no parameters"},
    {{"-display", "gl=on"}, "-display gl=on: display type not specified"},
    {{"-rtc", "base=2020-13-01"},
     "-rtc base=2020-13-01: invalid rtc base '2020-13-01' (utc, localtime, YYYY-MM-DD or "
     "YYYY-MM-DDTHH:MM:SS)"},
    {{"-rtc", "base=2021-02-29"},
     "-rtc base=2021-02-29: invalid rtc base '2021-02-29' (utc, localtime, YYYY-MM-DD or "
     "YYYY-MM-DDTHH:MM:SS)"},
    {{"-rtc", "base=2020-01-01T24:00:00"},
     "-rtc base=2020-01-01T24:00:00: invalid rtc base '2020-01-01T24:00:00' (utc, localtime, "
     "YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"},
    {{"-rtc", "clock=wall"}, "-rtc clock=wall: invalid rtc clock 'wall' (host, rt or vm)"},
    {{"-rtc", "driftfix=fast"}, "-rtc driftfix=fast: invalid rtc driftfix 'fast' (none or slew)"},
    {{"-rtc", "utc"}, "-rtc utc: unknown parameter 'utc'"},
    /* serial */
    {{"-serial", "pty"}, "-serial pty: 'pty' is not supported yet"},
    {{"-serial", "tcp::4444,server"},
     "-serial tcp::4444,server: 'tcp::4444,server' is not supported yet"},
    {{"-serial", "unix:/tmp/s"}, "-serial unix:/tmp/s: 'unix:/tmp/s' is not supported yet"},
    {{"-serial", "mon:unix:/tmp/s"},
     "-serial mon:unix:/tmp/s: 'mon:unix:/tmp/s' is not supported yet"},
    {{"-serial", "bogus"}, "-serial bogus: 'bogus' is not a valid char driver"},
    {{"-serial", "file:"}, "-serial file:: file: needs a path"},
    {{"-serial", "chardev:"}, "-serial chardev:: chardev: needs an id"},
    {{"-serial", "chardev:nope"}, "-serial chardev:nope: chardev 'nope' not found"},
    {{"-serial", "null", "-serial", "null", "-serial", "null", "-serial", "null", "-serial",
      "null"},
     "-serial null: too many serial ports (at most 4)"},
    {{"-chardev", "null,id=a", "-serial", "chardev:a", "-serial", "chardev:a"},
     "-serial chardev:a: chardev 'a' is already in use (use mux=on to share it)"},
    /* chardev */
    {{"-chardev", "null"}, "-chardev null: chardev id is required (id=...)"},
    {{"-chardev", "id=x"}, "-chardev id=x: backend not specified"},
    {{"-chardev", "null,id=1x"},
     "-chardev null,id=1x: invalid id '1x' (a letter, then letters, digits, '-', '.' or '_')"},
    {{"-chardev", "null,id=a", "-chardev", "stdio,id=a"},
     "-chardev stdio,id=a: duplicate chardev id 'a'"},
    {{"-chardev", "foo,id=a"}, "-chardev foo,id=a: 'foo' is not a valid char driver name"},
    {{"-chardev", "pty,id=a"}, "-chardev pty,id=a: chardev backend 'pty' is not supported yet"},
    {{"-chardev", "file,id=a"}, "-chardev file,id=a: file backend needs path="},
    {{"-chardev", "file,id=a,path="}, "-chardev file,id=a,path=: empty path"},
    {{"-chardev", "null,id=a,path=/x"},
     "-chardev null,id=a,path=/x: parameter 'path' is not valid for backend 'null'"},
    {{"-chardev", "socket,id=a"},
     "-chardev socket,id=a: socket backend needs path= or host= and port="},
    {{"-chardev", "socket,id=a,host=h"},
     "-chardev socket,id=a,host=h: socket backend needs path= or host= and port="},
    {{"-chardev", "socket,id=a,path=/s,port=1"},
     "-chardev socket,id=a,path=/s,port=1: socket backend takes either path= or host=,port="},
    {{"-chardev", "socket,id=a,host=h,port=65536"},
     "-chardev socket,id=a,host=h,port=65536: port 65536 is out of range"},
    {{"-chardev", "socket,id=a,path=/s,wait=off"},
     "-chardev socket,id=a,path=/s,wait=off: 'wait' is only valid with server=on"},
    {{"-chardev", "stdio,id=a,signal=x"},
     "-chardev stdio,id=a,signal=x: invalid boolean 'x' for 'signal' (use on/off)"},
    {{"-chardev", "stdio,id=a,sever=on"},
     "-chardev stdio,id=a,sever=on: unknown parameter 'sever' (did you mean 'server'?)"},
    /* control characters never break the one-line message */
    {{"-smp", "2,so\ncket=2"},
     "-smp 2,so?cket=2: unknown parameter 'so?cket' (did you mean 'sockets'?)"},
    {{"-\tx"}, "-?x: invalid option"},
    /* device */
    {{"-device", "foo"}, "-device foo: 'foo' is not a valid device model name"},
    {{"-device", "iobase=1"}, "-device iobase=1: driver not specified"},
    {{"-device", "isa-debug-exit,iobase=zz"},
     "-device isa-debug-exit,iobase=zz: invalid number 'zz' for 'iobase'"},
    {{"-device", "isa-debug-exit,iobas=1"},
     "-device isa-debug-exit,iobas=1: unknown parameter 'iobas' (did you mean 'iobase'?)"},
    {{"-device", "isa-debug-exit,id=d", "-device", "isa-debug-exit,id=d,iobase=0xf4"},
     "-device isa-debug-exit,id=d,iobase=0xf4: duplicate device id 'd'"},
    {{"-device", "isa-debug-exit,id=-d"},
     "-device isa-debug-exit,id=-d: invalid id '-d' (a letter, then letters, digits, '-', '.' or "
     "'_')"},
    {{"-device", "virtio-blk-pci,drive=d0,scsy=off"},
     "-device virtio-blk-pci,drive=d0,scsy=off: unknown parameter 'scsy' (did you mean 'scsi'?)"},
    {{"-device", "virtio-net-pci,mq=maybe"},
     "-device virtio-net-pci,mq=maybe: invalid boolean 'maybe' for 'mq' (use on/off)"},
    /* disks and objects */
    {{"-hda", "disk.img"},
     "-hda disk.img: IDE and floppy disks are not supported yet; use -drive "
     "file=disk.img,if=virtio"},
    {{"-object", "rng-egd,id=r"},
     "-object rng-egd,id=r: object type 'rng-egd' is not supported (rng-random, rng-builtin, "
     "memory-backend-ram, memory-backend-file, memory-backend-memfd)"},
    {{"-object", "rng-random"}, "-object rng-random: parameter 'id' is missing"},
    {{"-object", "rng-builtin,id=r,filename=/dev/random"},
     "-object rng-builtin,id=r,filename=/dev/random: Invalid parameter 'filename'"},
    /* memory backends, as QEMU words it */
    {{"-object", "memory-backend-ram,id=m"},
     "-object memory-backend-ram,id=m: Parameter 'size' is missing"},
    {{"-object", "memory-backend-ram,id=m,size=0"},
     "-object memory-backend-ram,id=m,size=0: can't create backend with size 0"},
    {{"-object", "memory-backend-file,id=m,size=1G"},
     "-object memory-backend-file,id=m,size=1G: Parameter 'mem-path' is missing"},
    {{"-object", "memory-backend-ram,id=m,size=1G,mem-path=/dev/shm"},
     "-object memory-backend-ram,id=m,size=1G,mem-path=/dev/shm: Invalid parameter 'mem-path'"},
    {{"-object", "memory-backend-ram,id=m,size=1G,share=maybe"},
     "-object memory-backend-ram,id=m,size=1G,share=maybe: invalid boolean 'maybe' for 'share' "
     "(use on/off)"},
    {{"-object", "memory-backend-memfd,id=m,size=1G,hugetlbsize=2M"},
     "-object memory-backend-memfd,id=m,size=1G,hugetlbsize=2M: hugetlbsize needs hugetlb=on"},
    {{"-object", "memory-backend-memfd,id=m,size=1G,hugetlb=on,hugetlbsize=3M"},
     "-object memory-backend-memfd,id=m,size=1G,hugetlb=on,hugetlbsize=3M: hugetlbsize must be a "
     "power of two"},
    {{"-object", "memory-backend-ram,id=m,size=1G,prealloc-threads=0"},
     "-object memory-backend-ram,id=m,size=1G,prealloc-threads=0: prealloc-threads must be at "
     "least 1"},
    {{"-machine", "memory-backend=m"}, "Memory backend 'm' not found"},
    {{"-object", "rng-random,id=m", "-machine", "memory-backend=m"},
     "Memory backend 'm' not found"},
    {{"-m", "2G", "-object", "memory-backend-ram,id=m,size=1G", "-machine", "memory-backend=m"},
     "Machine memory size does not match the size of the memory backend"},
    {{"-mem-path", "/dev/hugepages", "-object", "memory-backend-ram,id=m,size=1G", "-machine",
      "memory-backend=m"},
     "'-mem-path' can't be used together with '-machine memory-backend'"},
    {{"-mem-path", ""}, "-mem-path : empty path"},
    {{"-object", "rng-random,id=r", "-object", "rng-builtin,id=r"},
     "-object rng-builtin,id=r: duplicate object id 'r'"},
};

static void test_errors(void **state)
{
    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        const struct error_case *c = &error_cases[i];
        struct kemu_config cfg;
        struct error err;
        int r = parse_list(&cfg, &err, c->args);
        if (!c->msg) {
            assert_int_equal(r, 0);
            kemu_config_free(&cfg);
            continue;
        }
        if (r != -1 || strcmp(err.msg, c->msg))
            print_error("case %zu (%s %s): got %d '%s'\n", i, c->args[0],
                        c->args[1] ? c->args[1] : "", r, err.msg);
        assert_int_equal(r, -1);
        assert_true(err.set);
        assert_string_equal(err.msg, c->msg);
        assert_null(strchr(err.msg, '\n')); /* one line */
        kemu_config_free(&cfg);
    }
}

static void test_free_twice_and_null(void **state)
{
    struct kemu_config cfg;
    struct error err;
    assert_int_equal(PARSE(&cfg, &err, "-chardev", "null,id=a", "-device", "isa-debug-exit"), 0);
    kemu_config_free(&cfg);
    kemu_config_free(&cfg); /* zeroed by the first call */
    kemu_config_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_openstack_style),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_smp_merge_and_machine),
        cmocka_unit_test(test_serial_chardev),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_backends_kept),
        cmocka_unit_test(test_rtc),
        cmocka_unit_test(test_actions),
        cmocka_unit_test(test_help_lists_qemu_form),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_free_twice_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
