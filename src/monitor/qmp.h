/*
 * The QMP server (QEMU Machine Protocol): JSON commands over sockets, as QEMU 7.2 speaks it.
 * The server knows nothing of the VM: main/board hand it a table of callbacks. Everything runs on
 * the main thread (event-loop callbacks), including the callbacks and qmp_server_event().
 */
#ifndef KEMU_MONITOR_QMP_H
#define KEMU_MONITOR_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/eventloop.h"
#include "monitor/jansson_dl.h"

/* Strings in these records are borrowed: they must stay valid until the callback returns. */
struct qmp_cpu_info {
    unsigned index; /* cpu-index */
    int thread_id;  /* host thread id of the vCPU */
    int socket_id, core_id, thread_in_core;
    const char *qom_path; /* NULL: "/machine/unattached/device[index]" */
};

struct qmp_chardev_info {
    const char *label, *filename; /* "serial0", "unix:/tmp/s,server=on" */
    bool frontend_open;
};

struct qmp_pci_region {
    int bar; /* 0-5, 6 for the ROM */
    bool io;
    uint64_t address, size;
    bool prefetch, mem64; /* memory BARs only */
};

struct qmp_pci_info {
    unsigned bus, slot, function;
    uint16_t vendor, device, subsys_vendor, subsys;
    uint16_t class_code; /* base class << 8 | subclass, as QEMU's class_info.class */
    const char *desc;    /* class description, may be NULL */
    const char *type;    /* the device's model (virtio-net-pci), for info qtree */
    const char *qdev_id; /* -device id=, may be NULL */
    uint8_t irq_pin;     /* 0: none, 1-4: INTA-INTD */
    int irq;             /* routed GSI, < 0 unknown */
    unsigned nr_regions;
    struct qmp_pci_region regions[7];
};

/* One line of info network: a NIC queue (then its backend queue, peer = true) or a backend
 * without a NIC. */
struct qmp_net_client {
    const char *name; /* the id, or QEMU's "<model>.<n>" for a NIC without one */
    unsigned index;   /* queue */
    const char *type; /* "nic", "user", "tap"... */
    char info[128];   /* "model=virtio-net-pci,macaddr=...", "net=10.0.2.0,restrict=off"... */
    bool peer;        /* the backend of the NIC line before it */
};

struct qmp_block_info {
    const char *device; /* drive id ("" for -blockdev nodes) */
    const char *qdev;   /* frontend device path, may be NULL */
    bool inserted;      /* medium present: the fields below are meaningful */
    const char *file, *format, *node_name;
    bool read_only, removable, writeback, direct, no_flush;
    uint64_t virtual_size;
    /* "ok", "failed", "nospace"; NULL: the device keeps none (QEMU's io-status is only there
     * for a device that supports it with werror=enospc|stop or rerror=stop) */
    const char *io_status;
};

/* A memory backend (query-memdev, info memdev): the guest RAM's, as QEMU's pc.ram. */
struct qmp_memdev_info {
    const char *id;
    uint64_t size;
    bool merge, dump, prealloc, share, reserve;
};

/*
 * Supplied by main/board. Any callback may be NULL: a NULL action makes its command fail with a
 * GenericError, a NULL query reports an empty list. The list queries follow snprintf: fill at
 * most max records and return how many there are (the server calls again if max was too small).
 * Actions return 0 or -1 with err set; the message becomes the QMP error's desc. State-change
 * events (STOP, RESUME, RESET, POWERDOWN, SHUTDOWN) are the caller's to emit, from wherever the
 * state changes, so HMP, QMP and guest-initiated changes all report them once.
 */
struct qmp_vm_ops {
    const char *(*status)(void *opaque, bool *running); /* "running", "paused", "shutdown"... */
    int (*stop)(void *opaque, struct error *err);
    int (*cont)(void *opaque, struct error *err);
    int (*system_reset)(void *opaque, struct error *err);
    int (*system_powerdown)(void *opaque, struct error *err);
    /* Called after the reply to quit has been queued (and written if the socket took it). */
    void (*quit)(void *opaque);
    size_t (*query_cpus)(void *opaque, struct qmp_cpu_info *out, size_t max);
    size_t (*query_chardevs)(void *opaque, struct qmp_chardev_info *out, size_t max);
    size_t (*query_pci)(void *opaque, struct qmp_pci_info *out, size_t max);
    size_t (*query_block)(void *opaque, struct qmp_block_info *out, size_t max);
    size_t (*query_network)(void *opaque, struct qmp_net_client *out, size_t max);
    /* HMP hostfwd_add/hostfwd_remove [netdev] RULE (netdev NULL: the first user netdev): 0,
     * or -errno with err set (-EEXIST: the rule was refused, -ENOENT: nothing to remove). */
    int (*hostfwd)(void *opaque, const char *netdev, bool add, const char *rule, struct error *err);
    /* set_link NAME on|off: 0, or -ENODEV with err set ("Device 'NAME' not found"). */
    int (*set_link)(void *opaque, const char *name, bool up, struct error *err);
    /* balloon VALUE (the guest's RAM in bytes) and query-balloon: 0, or -errno with err set
     * (-ENODEV: no balloon device, QEMU's DeviceNotActive). */
    int (*balloon)(void *opaque, int64_t target, struct error *err);
    int (*query_balloon)(void *opaque, uint64_t *actual, struct error *err);
    size_t (*query_memdev)(void *opaque, struct qmp_memdev_info *out, size_t max);
    /* HMP info usernet: malloc'd text, lines ending in "\n"; NULL: nothing to show. */
    char *(*usernet_info)(void *opaque);
    /* HMP commit DEVICE|all: 0, or -errno (-ENODEV: no such device) with err set or not. */
    int (*commit)(void *opaque, const char *device, struct error *err);
    /*
     * human-monitor-command: return malloc'd output (lines end in "\r\n" as QEMU's), or NULL to
     * let the HMP commands (monitor/hmp.h) handle it.
     */
    char *(*hmp)(void *opaque, const char *cmdline);
    /* HMP's registers, memory and address-space views (info registers, x, xp, info mtree,
     * info qtree); NULL or returning NULL: no machine yet, those commands say so. */
    struct vm *(*vm)(void *opaque);
    const char *name; /* -name guest=..., NULL: none; must outlive the server */
    void *opaque;
};

struct qmp_server;
struct vm;

int qmp_server_new(struct eventloop *loop, const struct qmp_vm_ops *ops, struct qmp_server **out,
                   struct error *err);
/*
 * Parse a -qmp style socket spec and serve it: "unix:PATH" or "tcp:[HOST]:PORT", then options
 * server[=on|off], wait[=on|off], nowait, nodelay, ipv4, ipv6. server=on listens for any number of
 * clients (wait=on, QEMU's default, blocks until the first one connects); server=off connects out.
 * This and the first client open libjansson (monitor/jansson_dl.h), failing if it is missing.
 */
int qmp_server_listen(struct qmp_server *s, const char *spec, bool pretty, struct error *err);
/* A parsed socket spec as qmp_server_listen takes it (also used for -monitor unix:/tcp:). */
struct qmp_sock_spec {
    bool is_unix;
    char path[108]; /* sun_path */
    char host[256], port[32];
    bool server, wait, nodelay, ipv4, ipv6;
};
int qmp_parse_sock_spec(const char *spec, struct qmp_sock_spec *o, struct error *err);
/* Serve an already connected stream socket; the server owns fd from now on (even on failure). */
int qmp_server_add_client_fd(struct qmp_server *s, int fd, struct error *err);
/* Broadcast an event to every negotiated client; data (an object) is stolen and may be NULL. */
void qmp_server_event(struct qmp_server *s, const char *name, json_t *data);
/* Connected clients (negotiated or not). */
unsigned qmp_server_client_count(const struct qmp_server *s);
/* Try once more to flush output, close every socket, unlink unix paths. NULL is a no-op. Not
 * from inside one of the server's own callbacks (ops.quit: ask the main loop to end instead). */
void qmp_server_destroy(struct qmp_server *s);

/* QEMU's ShutdownCause: the reason of SHUTDOWN and RESET events. */
enum qmp_shutdown_cause {
    QMP_CAUSE_NONE,
    QMP_CAUSE_HOST_ERROR,
    QMP_CAUSE_HOST_QMP_QUIT,
    QMP_CAUSE_HOST_QMP_SYSTEM_RESET,
    QMP_CAUSE_HOST_SIGNAL,
    QMP_CAUSE_HOST_UI,
    QMP_CAUSE_GUEST_SHUTDOWN,
    QMP_CAUSE_GUEST_RESET,
    QMP_CAUSE_GUEST_PANIC,
    QMP_CAUSE_SUBSYSTEM_RESET,
};
const char *qmp_shutdown_cause_str(enum qmp_shutdown_cause cause);

/* Event helpers; s may be NULL (no monitor configured). */
void qmp_event_shutdown(struct qmp_server *s, enum qmp_shutdown_cause cause);
void qmp_event_reset(struct qmp_server *s, enum qmp_shutdown_cause cause);
/* The same with the reason as a string, as struct vm_events hands it over ("guest-reset"). */
void qmp_event_shutdown_reason(struct qmp_server *s, bool guest, const char *reason);
void qmp_event_reset_reason(struct qmp_server *s, bool guest, const char *reason);
void qmp_event_powerdown(struct qmp_server *s);
void qmp_event_stop(struct qmp_server *s);
void qmp_event_resume(struct qmp_server *s);
/* BALLOON_CHANGE: the guest's RAM less what its balloon holds, in bytes. */
void qmp_event_balloon_change(struct qmp_server *s, uint64_t actual);
/* BLOCK_IO_ERROR: device is the drive id, node_name may be NULL (left out), action "report",
 * "ignore" or "stop", reason the error's strerror text. */
void qmp_event_block_io_error(struct qmp_server *s, const char *device, const char *node_name,
                              bool is_read, const char *action, bool nospace, const char *reason);

#endif
