/*
 * From the command line to devices: backends first (-drive, -netdev, -object), then the
 * -device models in command-line order, then what QEMU adds by itself (a virtio-blk-pci for each
 * if=virtio drive, the default NIC). Every error names the option it comes from.
 */
#include "board/devices.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "block/drive.h"
#include "cli/nic_opts.h"
#include "core/os.h"
#include "kemu-config.h"
#include "monitor/qmp.h"
#include "net/net.h"
#include "pci/pci.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/console.h"
#include "virtio/mmio.h"
#include "virtio/net.h"
#include "virtio/pci.h"
#include "virtio/rng.h"

#define MAX_DEVICES 64

enum kind { KIND_BLK, KIND_NET, KIND_SERIAL, KIND_RNG, KIND_BALLOON };

struct dev {
    enum kind kind;
    char *id;
    char *net_name;    /* a NIC's name in info network: its id or "virtio-net-pci.N" */
    char net_info[64]; /* a NIC's "model=...,macaddr=..." in info network */
    struct netdev *nd; /* a NIC's backend */
    struct virtio_pci *vp;
    struct virtio_mmio *mmio; /* microvm */
    union {
        struct virtio_blk *blk;
        struct virtio_net *net;
        struct virtio_serial *serial;
        struct virtio_rng *rng;
        struct virtio_balloon *balloon;
    } u;
};

/* QEMU's BlockDeviceIoStatus: what the first failure that stopped the VM since the last cont
 * was. Kept for a drive whose device supports it (virtio-blk) and whose werror/rerror can stop. */
enum io_status { IO_STATUS_OK, IO_STATUS_FAILED, IO_STATUS_NOSPACE };

struct drive {
    struct drive_opts o;
    struct block_backend *bb;
    const char *text;
    bool used; /* by a virtio-blk device */
    enum io_status io_status;
    char node_name[32]; /* QEMU names a -drive's node "#blockNNN" */
    const char *qdev;   /* QEMU's path of the device it is attached to, NULL if none */
    struct machine_devices *md;
};

/* A failed disk request on its way from a device worker to the main loop. */
struct blk_error_ev {
    struct blk_error_ev *next;
    struct drive *dr;
    struct virtio_blk_error e;
};

struct netdev_slot {
    struct netdev *nd;
    const char *what; /* "-netdev ARG", "-nic ARG", "-net ARG": for messages */
    bool used;
};

struct machine_devices {
    struct pc *pc;
    struct guest_mem *mem;
    struct pci_bus *bus;
    struct drive *drives;
    size_t ndrives;
    struct netdev_slot *netdevs;
    size_t nnetdevs;
    struct dev devs[MAX_DEVICES];
    size_t ndevs;
    unsigned nics;      /* for NIC names */
    bool mac_used[256]; /* 52:54:00:12:34:XX addresses taken, for default ones */
    /* QEMU's /machine/peripheral-anon/device[N]: -device devices without id= and if=virtio
     * disks, numbered in creation order (query-block's "qdev" names them). */
    unsigned anon_devices;
    char **owned; /* strings built here (netdev texts of -nic/-net) */
    size_t nowned;

    /* Failed disk requests: workers queue them and signal err_fd, the main loop reports them
     * (QMP events and the VM's pause are main-thread business). */
    struct eventloop *loop;
    int err_fd;
    pthread_mutex_t err_lock;
    struct blk_error_ev *err_head, **err_tail;
    struct blk_error_ev lost; /* one failure kept when out of memory, a stop preferred */
    bool lost_set;
    machine_block_error_fn *on_error;
    void *error_opaque;

    /* The balloon (at most one, as in QEMU). Its size changes come from the vCPU thread that
     * wrote the config space: the latest is kept in balloon_actual and balloon_fd tells the
     * main loop, which reports it (BALLOON_CHANGE). */
    struct virtio_balloon *balloon;
    int balloon_fd;
    uint64_t balloon_actual; /* atomic */
    machine_balloon_fn *on_balloon;
    void *balloon_opaque;
    /* QEMU sends BALLOON_CHANGE at most once a second: the first at once, the latest of those
     * that come within the second when it ends. */
    int balloon_timer_fd;
    bool balloon_throttled; /* the timer runs */
    bool balloon_pending;   /* a change came while it ran */
    bool balloon_watched;   /* both fds are on the loop */
};

static char *keep(struct machine_devices *md, char *s)
{
    if (!s)
        return NULL;
    char **v = realloc(md->owned, (md->nowned + 1) * sizeof(*v));
    if (!v) {
        free(s);
        return NULL;
    }
    md->owned = v;
    v[md->nowned++] = s;
    return s;
}

static struct dev *new_dev(struct machine_devices *md, enum kind kind, const char *id,
                           struct error *err)
{
    if (md->ndevs == MAX_DEVICES) {
        error_setf(err, "too many devices (at most %d)", MAX_DEVICES);
        return NULL;
    }
    /* -device ids are checked as they are parsed; this catches "-net nic,id=" against them. */
    for (size_t i = 0; id && i < md->ndevs; i++)
        if (md->devs[i].id && !strcmp(md->devs[i].id, id)) {
            error_setf(err, "duplicate device id '%s'", id);
            return NULL;
        }
    struct dev *d = &md->devs[md->ndevs++];
    memset(d, 0, sizeof(*d));
    d->kind = kind;
    if (id && !(d->id = strdup(id))) {
        md->ndevs--;
        error_setf(err, "out of memory");
        return NULL;
    }
    return d;
}

static struct virtio_device *dev_vdev(struct dev *d)
{
    switch (d->kind) {
    case KIND_BLK:
        return d->u.blk ? virtio_blk_vdev(d->u.blk) : NULL;
    case KIND_NET:
        return d->u.net ? virtio_net_vdev(d->u.net) : NULL;
    case KIND_SERIAL:
        return d->u.serial ? virtio_serial_vdev(d->u.serial) : NULL;
    case KIND_RNG:
        return d->u.rng ? virtio_rng_vdev(d->u.rng) : NULL;
    case KIND_BALLOON:
        return d->u.balloon ? virtio_balloon_vdev(d->u.balloon) : NULL;
    }
    return NULL;
}

/* bus= and addr= of a PCI device: only pci.0; slot[.func] or the next free slot. */
static int pci_place(struct machine_devices *md, const struct opts *o, int *slot, int *func,
                     struct error *err)
{
    *slot = -1;
    *func = 0;
    if (!md->bus)
        return error_setf(err, "the microvm machine has no PCI bus (use -M pc)");
    const char *bus = opts_get_str(o, "bus");
    if (bus && strcmp(bus, "pci.0") && strcmp(bus, "pci"))
        return error_setf(err, "Bus '%s' not found (the pc machine has pci.0)", bus);
    const char *addr = opts_get_str(o, "addr");
    if (addr && pci_parse_addr(addr, slot, func, err) < 0)
        return -1;
    bool off = false;
    if (opts_get_bool(o, "disable-modern", &off, err) < 0)
        return -1;
    if (off)
        return error_setf(err, "disable-modern=on: kemu's virtio devices are modern only");
    return 0;
}

/* QEMU's virtio-mmio model names end in "-device" (virtio-blk-device). */
static bool is_mmio_model(const char *driver)
{
    size_t n = strlen(driver);
    return n > 7 && !strcmp(driver + n - 7, "-device");
}

static int mmio_place(struct machine_devices *md, struct error *err)
{
    if (!pc_has_virtio_mmio(md->pc))
        return error_setf(err, "virtio-mmio devices need -M microvm (use the -pci model)");
    return 0;
}

/* On microvm every virtio device is a virtio-mmio one, on pc a PCI function. */
static int plug(struct machine_devices *md, struct dev *d, int slot, int func, struct error *err)
{
    if (pc_has_virtio_mmio(md->pc))
        return pc_add_virtio_mmio(md->pc, dev_vdev(d), &d->mmio, err);
    return virtio_pci_create(md->bus, slot, func, dev_vdev(d), d->id, &d->vp, err);
}

/* ---- block ---- */

/* On a device's worker thread. */
static void blk_on_error(void *opaque, const struct virtio_blk_error *e)
{
    struct drive *dr = opaque;
    struct machine_devices *md = dr->md;
    struct blk_error_ev *ev = malloc(sizeof(*ev));
    pthread_mutex_lock(&md->err_lock);
    if (ev) {
        *ev = (struct blk_error_ev){.dr = dr, .e = *e};
        *md->err_tail = ev;
        md->err_tail = &ev->next;
    } else if (!md->lost_set || e->action == DRIVE_ERROR_TAKEN_STOP) {
        /* The VM must still stop, or the held request would wait for a cont nobody gives. */
        md->lost = (struct blk_error_ev){.dr = dr, .e = *e};
        md->lost_set = true;
    }
    pthread_mutex_unlock(&md->err_lock);
    os_event_signal(md->err_fd);
}

static void report_error(struct machine_devices *md, const struct blk_error_ev *ev)
{
    /* Before the event and the pause, as QEMU's blk_error_action, so that a query-block after
     * BLOCK_IO_ERROR sees it; the first failure wins until cont. */
    if (ev->e.action == DRIVE_ERROR_TAKEN_STOP && ev->dr->io_status == IO_STATUS_OK)
        ev->dr->io_status = drive_error_nospace(ev->e.error) ? IO_STATUS_NOSPACE : IO_STATUS_FAILED;
    if (!md->on_error)
        return;
    struct machine_block_error me = {
        .device = ev->dr->o.id,
        .node_name = ev->dr->node_name,
        .is_read = ev->e.is_read,
        .action = drive_error_taken_name(ev->e.action),
        .stop = ev->e.action == DRIVE_ERROR_TAKEN_STOP,
        .nospace = drive_error_nospace(ev->e.error),
        .reason = strerror(ev->e.error),
    };
    md->on_error(md->error_opaque, &me);
}

/* Main loop. */
static void on_blk_errors(void *opaque, uint32_t events)
{
    struct machine_devices *md = opaque;
    os_event_drain(md->err_fd);
    pthread_mutex_lock(&md->err_lock);
    struct blk_error_ev *list = md->err_head, lost = md->lost;
    bool lost_set = md->lost_set;
    md->err_head = NULL;
    md->err_tail = &md->err_head;
    md->lost_set = false;
    pthread_mutex_unlock(&md->err_lock);
    while (list) {
        struct blk_error_ev *next = list->next;
        report_error(md, list);
        free(list);
        list = next;
    }
    if (lost_set)
        report_error(md, &lost);
}

void machine_devices_set_error_handler(struct machine_devices *md, machine_block_error_fn *fn,
                                       void *opaque)
{
    md->on_error = fn;
    md->error_opaque = opaque;
}

void machine_devices_resume(struct machine_devices *md)
{
    if (!md)
        return;
    /* cont clears the io-status (QEMU's qmp_cont), before the held requests fail again */
    for (size_t i = 0; i < md->ndrives; i++)
        md->drives[i].io_status = IO_STATUS_OK;
    for (size_t i = 0; i < md->ndevs; i++)
        if (md->devs[i].kind == KIND_BLK && md->devs[i].u.blk)
            virtio_blk_retry(md->devs[i].u.blk);
}

static struct drive *find_drive(struct machine_devices *md, const char *id)
{
    for (size_t i = 0; i < md->ndrives; i++)
        if (!strcmp(md->drives[i].o.id, id))
            return &md->drives[i];
    return NULL;
}

static int add_blk(struct machine_devices *md, struct drive *dr, const struct opts *o, int slot,
                   int func, struct error *err)
{
    if (dr->used)
        return error_setf(err, "Drive '%s' is already in use", dr->o.id);
    dr->used = true;
    struct virtio_blk_params p = {.serial = dr->o.serial, .readonly = dr->o.readonly};
    p.discard = dr->o.discard_unmap;
    p.write_zeroes = true;
    p.werror = dr->o.werror;
    p.rerror = dr->o.rerror;
    p.on_error = blk_on_error;
    p.error_opaque = dr;
    /* QEMU 7.2's num-queues default: one queue per vCPU on PCI (the vCPU that submits also
     * takes the completion), one on virtio-mmio. */
    unsigned ncpu = pc_vm(md->pc)->nr_vcpus;
    uint64_t nq = pc_has_virtio_mmio(md->pc) ? 1
                  : ncpu < VIRTIO_MAX_QUEUES ? ncpu
                                             : VIRTIO_MAX_QUEUES;
    p.num_queues = (unsigned)nq;
    const char *id = NULL;
    if (o) {
        uint64_t qs = 256;
        bool scsi = false, discard = true, wz = true;
        if (opts_get_number(o, "num-queues", &nq, err) < 0 ||
            opts_get_number(o, "queue-size", &qs, err) < 0 ||
            opts_get_bool(o, "scsi", &scsi, err) < 0 ||
            opts_get_bool(o, "discard", &discard, err) < 0 ||
            opts_get_bool(o, "write-zeroes", &wz, err) < 0)
            return -1;
        if (scsi)
            return error_setf(err, "scsi=on: SCSI passthrough is not supported (use scsi=off)");
        if (nq < 1 || nq > VIRTIO_MAX_QUEUES)
            return error_setf(err, "num-queues=%llu: must be 1..%u", (unsigned long long)nq,
                              VIRTIO_MAX_QUEUES);
        if (qs < 4 || qs > 1024 || (qs & (qs - 1)))
            return error_setf(err, "queue-size=%llu: must be a power of two, 4..1024",
                              (unsigned long long)qs);
        p.num_queues = (unsigned)nq;
        p.queue_size = (unsigned)qs;
        p.discard = p.discard && discard;
        p.write_zeroes = wz;
        if (opts_get_str(o, "serial"))
            p.serial = opts_get_str(o, "serial");
        id = opts_get_str(o, "id");
    }
    struct dev *d = new_dev(md, KIND_BLK, id, err);
    if (!d)
        return -1;
    if (virtio_blk_create(md->mem, dr->bb, &p, &d->u.blk, err) < 0)
        return -1;
    /* What QEMU reports the drive attached to: its virtio device, which is the "virtio-backend"
     * child of a PCI proxy, or the virtio-mmio device itself (named by its id when it has one).
     * An anonymous -device was counted by add_device; an if=virtio disk is counted here. */
    bool pci = !pc_has_virtio_mmio(md->pc);
    unsigned anon = o ? md->anon_devices - 1 : md->anon_devices++;
    size_t n = 64 + (id ? strlen(id) : 0);
    char *path = keep(md, malloc(n));
    if (!path)
        return error_setf(err, "out of memory");
    if (id)
        snprintf(path, n, pci ? "/machine/peripheral/%s/virtio-backend" : "%s", id);
    else
        snprintf(path, n, "/machine/peripheral-anon/device[%u]%s", anon,
                 pci ? "/virtio-backend" : "");
    dr->qdev = path;
    return plug(md, d, slot, func, err);
}

/* Whether a drive before dr (the last one parsed) has dr's interface and bus, and unit. */
static bool unit_taken(const struct machine_devices *md, const struct drive *dr, unsigned unit)
{
    for (size_t i = 0; i + 1 < md->ndrives; i++) {
        const struct drive_opts *o = &md->drives[i].o;
        if (o->iface == dr->o.iface && o->bus == dr->o.bus && o->index == unit)
            return true;
    }
    return false;
}

static int open_drives(struct machine_devices *md, const struct kemu_config *cfg, struct error *err)
{
    md->drives = calloc(cfg->drives.n + 1, sizeof(*md->drives));
    if (!md->drives)
        return error_setf(err, "out of memory");
    for (size_t i = 0; i < cfg->drives.n; i++) {
        struct drive *dr = &md->drives[i];
        dr->text = cfg->drives.v[i];
        dr->md = md;
        snprintf(dr->node_name, sizeof(dr->node_name), "#block%03zu", i + 1);
        int r = drive_parse(dr->text, (unsigned)i, &dr->o, err);
        if (r == 0) {
            md->ndrives++;
            /* QEMU's default unit: the lowest one no earlier drive of the interface and bus
             * has. */
            unsigned unit = 0;
            while (!dr->o.unit_given && unit_taken(md, dr, unit))
                unit++;
            if (!dr->o.unit_given)
                r = drive_set_unit(&dr->o, unit, err);
            if (r == 0 && unit_taken(md, dr, dr->o.index))
                r = error_setf(err, "drive with bus=%u, unit=%u (index=%u) exists", dr->o.bus,
                               dr->o.index, dr->o.index);
            else if (r == 0 && find_drive(md, dr->o.id) != dr)
                r = error_setf(err, "duplicate drive id '%s'", dr->o.id);
            else if (r == 0)
                r = drive_open(&dr->o, &dr->bb, err);
        } else if (r > 0) {
            return error_setf(err, "-drive help was printed"); /* main exits 0 on help */
        }
        if (r < 0) {
            error_prefix(err, "-drive %s: ", dr->text);
            return -1;
        }
    }
    return 0;
}

/* ---- network ---- */

static int add_netdev(struct machine_devices *md, const char *text, const char *what,
                      struct netdev **out, struct error *err)
{
    struct netdev_slot *v = realloc(md->netdevs, (md->nnetdevs + 1) * sizeof(*v));
    if (!v)
        return error_setf(err, "out of memory");
    md->netdevs = v;
    struct netdev *nd = NULL;
    int r = netdev_create(text, &nd, err);
    if (r > 0)
        return error_setf(err, "help was printed");
    if (r < 0) {
        error_prefix(err, "%s: ", what);
        return -1;
    }
    for (size_t i = 0; i < md->nnetdevs; i++) {
        if (!strcmp(netdev_id(md->netdevs[i].nd), netdev_id(nd))) {
            error_setf(err, "%s: duplicate netdev id '%s'", what, netdev_id(nd));
            netdev_destroy(nd);
            return -1;
        }
    }
    v[md->nnetdevs++] = (struct netdev_slot){.nd = nd, .what = what};
    if (out)
        *out = nd;
    return 0;
}

static struct netdev_slot *find_netdev(struct machine_devices *md, const char *id)
{
    for (size_t i = 0; i < md->nnetdevs; i++)
        if (!strcmp(netdev_id(md->netdevs[i].nd), id))
            return &md->netdevs[i];
    return NULL;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned b[6];
    char tail;
    if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
        return -1;
    for (int i = 0; i < 6; i++) {
        if (b[i] > 0xff)
            return -1;
        mac[i] = (uint8_t)b[i];
    }
    return (mac[0] & 1) ? -1 : 0; /* a multicast address cannot be a NIC's */
}

/* mac NULL: QEMU's default, 52:54:00:12:34:XX with the lowest XX from 0x56 that no NIC before
 * it has (given or default). */
static int add_nic(struct machine_devices *md, struct netdev_slot *ns, const char *mac_text,
                   bool mq, const char *id, int slot, int func, struct error *err)
{
    static const uint8_t base[5] = {0x52, 0x54, 0x00, 0x12, 0x34};
    uint8_t mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    if (mac_text && parse_mac(mac_text, mac) < 0)
        return error_setf(err, "mac '%s': not a unicast MAC address (52:54:00:12:34:56)", mac_text);
    while (!mac_text && mac[5] < 0xff && md->mac_used[mac[5]])
        mac[5]++;
    if (!mac_text && md->mac_used[mac[5]])
        return error_setf(err, "no default MAC address left (give mac=)");
    if (ns->used)
        return error_setf(err, "netdev '%s' is already in use", netdev_id(ns->nd));
    if (!memcmp(mac, base, sizeof(base)))
        md->mac_used[mac[5]] = true;
    struct dev *d = new_dev(md, KIND_NET, id, err);
    if (!d)
        return -1;
    if (virtio_net_create(md->mem, ns->nd, mac, mq, &d->u.net, err) < 0)
        return -1;
    ns->used = true;
    /* QEMU names a NIC without id "<model>.<n>", n counting the NICs of that model before it. */
    const char *model = pc_has_virtio_mmio(md->pc) ? "virtio-net-device" : "virtio-net-pci";
    char name[32];
    snprintf(name, sizeof(name), "%s.%u", model, md->nics);
    if (!(d->net_name = strdup(id ? id : name)))
        return error_setf(err, "out of memory");
    snprintf(d->net_info, sizeof(d->net_info), "model=%s,macaddr=%02x:%02x:%02x:%02x:%02x:%02x",
             model, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    d->nd = ns->nd;
    md->nics++;
    return plug(md, d, slot, func, err);
}

/* -nic TYPE[,netdev keys][,model=][,mac=]: a backend and its NIC in one. */
static int add_nics(struct machine_devices *md, const struct kemu_config *cfg, bool *any,
                    struct error *err)
{
    for (size_t i = 0; i < cfg->nics.n; i++) {
        const char *text = cfg->nics.v[i];
        *any = true;
        if (!strcmp(text, "none"))
            continue;
        char what[256];
        snprintf(what, sizeof(what), "-nic %s", text);
        struct nic_opts s;
        if (nic_opts_split(text, &s, err) < 0)
            return -1;
        int r = nic_model_check(s.model, err);
        char *nd_text = NULL;
        if (r == 0) {
            char id[32];
            snprintf(id, sizeof(id), "__nic%zu", i);
            nd_text = nic_text_has_key(s.netdev_text, "id")
                          ? strdup(s.netdev_text)
                          : nic_netdev_text_with_id(s.netdev_text, id);
            if (!nd_text)
                r = error_setf(err, "out of memory");
        }
        struct netdev *nd = NULL;
        if (r == 0)
            r = add_netdev(md, nd_text, keep(md, strdup(what)), &nd, err);
        if (r == 0)
            r = add_nic(md, find_netdev(md, netdev_id(nd)), s.mac, false, NULL, -1, 0, err);
        free(nd_text);
        nic_opts_free(&s);
        if (r < 0) {
            if (strncmp(err->msg, "-nic", 4))
                error_prefix(err, "%s: ", what);
            return -1;
        }
    }
    return 0;
}

/*
 * Legacy -net: "nic[,model=,macaddr=,netdev=]" and backends "user|tap[,...]" on QEMU's hub 0.
 * kemu has no hub: the n-th NIC without netdev= pairs with the n-th backend.
 */
static int add_legacy_net(struct machine_devices *md, const struct kemu_config *cfg, bool *any,
                          struct error *err)
{
    size_t nback = 0, npaired = 0;
    struct netdev *backs[16];
    for (size_t i = 0; i < cfg->nets.n; i++) {
        const char *text = cfg->nets.v[i];
        *any = true;
        if (!strcmp(text, "none") || !strncmp(text, "nic", 3))
            continue;
        char *what = keep(md, malloc(strlen(text) + 8));
        if (!what)
            return error_setf(err, "out of memory");
        sprintf(what, "-net %s", text);
        if (nback == 16)
            return error_setf(err, "%s: too many -net backends", what);
        char id[32];
        snprintf(id, sizeof(id), "__net%zu", i);
        char *t = nic_text_has_key(text, "id") || nic_text_has_key(text, "name")
                      ? strdup(text)
                      : nic_netdev_text_with_id(text, id);
        if (!t)
            return error_setf(err, "out of memory");
        int r = add_netdev(md, t, what, &backs[nback], err);
        free(t);
        if (r < 0)
            return -1;
        nback++;
    }
    for (size_t i = 0; i < cfg->nets.n; i++) {
        const char *text = cfg->nets.v[i];
        if (strcmp(text, "nic") && strncmp(text, "nic,", 4))
            continue;
        struct nic_opts s;
        if (nic_opts_split(text, &s, err) < 0)
            return -1;
        struct nic_legacy_keys k;
        int r = nic_model_check(s.model, err);
        if (r == 0)
            r = nic_legacy_keys(s.netdev_text, md->bus != NULL, &k, err);
        struct netdev_slot *ns = NULL;
        if (r == 0 && s.netdev_ref) {
            if (!(ns = find_netdev(md, s.netdev_ref)))
                r = error_setf(err, "netdev '%s' not found", s.netdev_ref);
        } else if (r == 0) {
            if (npaired < nback) {
                ns = find_netdev(md, netdev_id(backs[npaired++]));
            } else {
                /* QEMU makes a NIC with nothing behind it; a user-mode backend is what users of
                 * a bare "-net nic" get once they add "-net user", so say so. */
                r = error_setf(err, "no backend for this NIC: add -net user or -net tap");
            }
        }
        if (r == 0)
            r = add_nic(md, ns, s.mac, false, k.id[0] ? k.id : NULL, k.slot, k.func, err);
        nic_opts_free(&s);
        if (r < 0) {
            error_prefix(err, "-net %s: ", text);
            return -1;
        }
    }
    for (size_t i = npaired; i < nback; i++)
        if (!find_netdev(md, netdev_id(backs[i]))->used)
            fprintf(stderr, "kemu: warning: -net backend '%s' has no NIC (add -net nic)\n",
                    netdev_id(backs[i]));
    return 0;
}

/* ---- the -device models ---- */

static struct chardev *find_chardev(const struct kemu_config *cfg, struct chardev **chardevs,
                                    const char *id)
{
    for (size_t i = 0; i < cfg->nchardevs; i++)
        if (!strcmp(cfg->chardevs[i].id, id))
            return chardevs[i];
    return NULL;
}

static const struct opts *find_object(const struct kemu_config *cfg, const char *id)
{
    for (size_t i = 0; i < cfg->nobjects; i++) {
        const char *oid = opts_get_str(&cfg->objects[i], "id");
        if (oid && !strcmp(oid, id))
            return &cfg->objects[i];
    }
    return NULL;
}

/* The virtio-serial bus a port goes on: bus=ID.0 or the last one created. */
static struct virtio_serial *serial_bus(struct machine_devices *md, const char *bus,
                                        struct error *err)
{
    for (size_t i = md->ndevs; i-- > 0;) {
        struct dev *d = &md->devs[i];
        if (d->kind != KIND_SERIAL)
            continue;
        if (!bus)
            return d->u.serial;
        char name[80];
        snprintf(name, sizeof(name), "%s.0", d->id ? d->id : "");
        if (d->id && !strcmp(name, bus))
            return d->u.serial;
    }
    if (bus)
        error_setf(err, "Bus '%s' not found", bus);
    else
        error_setf(err, "no virtio-serial bus: add -device virtio-serial-pci before it");
    return NULL;
}

/* ---- the balloon ---- */

/* On the vCPU thread that wrote the balloon's config space. */
static void balloon_changed(void *opaque, uint64_t actual)
{
    struct machine_devices *md = opaque;
    __atomic_store_n(&md->balloon_actual, actual, __ATOMIC_RELEASE);
    os_event_signal(md->balloon_fd);
}

/* Main loop: report the latest size and hold the next report back for a second. */
static void balloon_report(struct machine_devices *md)
{
    struct itimerspec one_second = {.it_value = {.tv_sec = 1}};
    md->balloon_pending = false;
    md->balloon_throttled = timerfd_settime(md->balloon_timer_fd, 0, &one_second, NULL) == 0;
    if (md->on_balloon)
        md->on_balloon(md->balloon_opaque, __atomic_load_n(&md->balloon_actual, __ATOMIC_ACQUIRE));
}

static void on_balloon_change(void *opaque, uint32_t events)
{
    struct machine_devices *md = opaque;
    os_event_drain(md->balloon_fd);
    (void)events;
    if (md->balloon_throttled)
        md->balloon_pending = true;
    else
        balloon_report(md);
}

static void on_balloon_timer(void *opaque, uint32_t events)
{
    struct machine_devices *md = opaque;
    os_event_drain(md->balloon_timer_fd);
    (void)events;
    md->balloon_throttled = false;
    if (md->balloon_pending)
        balloon_report(md);
}

static int add_balloon(struct machine_devices *md, const struct opts *o, const char *id, int slot,
                       int func, struct error *err)
{
    struct virtio_balloon_opts bo = {0};
    bool hint = false;
    if (opts_get_bool(o, "deflate-on-oom", &bo.deflate_on_oom, err) < 0 ||
        opts_get_bool(o, "free-page-reporting", &bo.free_page_reporting, err) < 0 ||
        opts_get_bool(o, "free-page-hint", &hint, err) < 0)
        return -1;
    if (hint)
        return error_setf(err, "free-page-hint=on is not supported (it serves migration, which "
                               "kemu does not have yet); free-page-reporting=on returns free "
                               "memory to the host");
    if (md->balloon)
        return error_setf(err, "Only one balloon device is supported");
    if (md->loop) {
        md->balloon_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        md->balloon_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (md->balloon_fd < 0 || md->balloon_timer_fd < 0)
            return error_setf_errno(err, errno, "virtio-balloon: cannot create its event fds");
        if (eventloop_add(md->loop, md->balloon_fd, EPOLLIN, on_balloon_change, md, err) < 0)
            return -1;
        if (eventloop_add(md->loop, md->balloon_timer_fd, EPOLLIN, on_balloon_timer, md, err) < 0) {
            eventloop_remove(md->loop, md->balloon_fd);
            return -1;
        }
        md->balloon_watched = true;
    }
    struct dev *d = new_dev(md, KIND_BALLOON, id, err);
    if (!d || virtio_balloon_create(md->mem, &bo, &d->u.balloon, err) < 0)
        return -1;
    md->balloon = d->u.balloon;
    if (md->balloon_watched)
        virtio_balloon_set_change_handler(md->balloon, balloon_changed, md);
    return plug(md, d, slot, func, err);
}

/* QEMU's have_balloon(): 0, or -ENODEV with its words. */
static int have_balloon(struct machine_devices *md, struct error *err)
{
    if (md && md->balloon)
        return 0;
    error_setf(err, "No balloon device has been activated");
    return -ENODEV;
}

int machine_devices_balloon(struct machine_devices *md, int64_t target, struct error *err)
{
    /* QEMU 7.2's order and words: the device first, then the value */
    if (have_balloon(md, err) < 0)
        return -ENODEV;
    if (target <= 0) {
        error_setf(err, "Parameter 'target' expects a size");
        return -EINVAL;
    }
    virtio_balloon_set_target(md->balloon, (uint64_t)target);
    return 0;
}

int machine_devices_query_balloon(struct machine_devices *md, uint64_t *actual, struct error *err)
{
    if (have_balloon(md, err) < 0)
        return -ENODEV;
    *actual = virtio_balloon_actual(md->balloon);
    return 0;
}

void machine_devices_set_balloon_handler(struct machine_devices *md, machine_balloon_fn *fn,
                                         void *opaque)
{
    md->on_balloon = fn;
    md->balloon_opaque = opaque;
}

/* ---- -device ---- */

static int add_device(struct machine_devices *md, const struct kemu_config *cfg,
                      struct chardev **chardevs, const struct opts *o, struct error *err)
{
    const char *driver = opts_get_str(o, "driver");
    const char *id = opts_get_str(o, "id");
    int slot, func;
    if (!id)
        md->anon_devices++;
    if (!strcmp(driver, "isa-debug-exit"))
        return 0; /* a board device: main.c passes it to pc_create */
    if (!strcmp(driver, "virtconsole") || !strcmp(driver, "virtserialport")) {
        struct virtio_serial *vs = serial_bus(md, opts_get_str(o, "bus"), err);
        if (!vs)
            return -1;
        const char *cid = opts_get_str(o, "chardev");
        struct chardev *chr = NULL;
        if (cid && !(chr = find_chardev(cfg, chardevs, cid)))
            return error_setf(err, "chardev '%s' not found", cid);
        uint64_t nr = (uint64_t)-1;
        if (opts_has(o, "nr") && opts_get_number(o, "nr", &nr, err) < 0)
            return -1;
        if (opts_has(o, "nr") && nr > 0x7fffffff)
            return error_setf(err, "nr=%llu: too large", (unsigned long long)nr);
        return virtio_serial_add_port(vs, opts_has(o, "nr") ? (int)nr : -1, chr,
                                      !strcmp(driver, "virtconsole"), opts_get_str(o, "name"), err);
    }
    slot = -1;
    func = 0;
    if (is_mmio_model(driver) ? mmio_place(md, err) < 0 : pci_place(md, o, &slot, &func, err) < 0)
        return -1;
    if (!strncmp(driver, "virtio-blk", 10)) {
        const char *drive = opts_get_str(o, "drive");
        if (!drive)
            return error_setf(err, "drive property not set");
        struct drive *dr = find_drive(md, drive);
        if (!dr)
            return error_setf(err, "Property 'drive': can't find value '%s'", drive);
        if (dr->o.iface != DRIVE_IF_NONE)
            return error_setf(err, "Drive '%s' is already in use (it is if=virtio; use if=none)",
                              drive);
        return add_blk(md, dr, o, slot, func, err);
    }
    if (!strncmp(driver, "virtio-net", 10)) {
        const char *ndid = opts_get_str(o, "netdev");
        bool mq = false;
        if (opts_get_bool(o, "mq", &mq, err) < 0)
            return -1;
        if (!ndid)
            return error_setf(err, "netdev property not set (add -netdev user,id=n0 and "
                                   "netdev=n0)");
        struct netdev_slot *ns = find_netdev(md, ndid);
        if (!ns)
            return error_setf(err, "Property 'netdev': can't find value '%s'", ndid);
        return add_nic(md, ns, opts_get_str(o, "mac"), mq, id, slot, func, err);
    }
    if (!strncmp(driver, "virtio-serial", 13)) {
        uint64_t ports = VIRTIO_SERIAL_DEFAULT_PORTS;
        if (opts_get_number(o, "max_ports", &ports, err) < 0)
            return -1;
        if (ports < 1 || ports > VIRTIO_SERIAL_MAX_PORTS)
            return error_setf(err, "max_ports=%llu: must be 1..%d", (unsigned long long)ports,
                              VIRTIO_SERIAL_MAX_PORTS);
        struct dev *d = new_dev(md, KIND_SERIAL, id, err);
        if (!d || virtio_serial_create(md->mem, (unsigned)ports, &d->u.serial, err) < 0)
            return -1;
        return plug(md, d, slot, func, err);
    }
    if (!strncmp(driver, "virtio-rng", 10)) {
        const char *file = VIRTIO_RNG_DEFAULT_SOURCE;
        const char *rng = opts_get_str(o, "rng");
        if (rng) {
            const struct opts *obj = find_object(cfg, rng);
            if (!obj)
                return error_setf(err, "Property 'rng': can't find value '%s'", rng);
            if (strncmp(opts_get_str(obj, "qom-type"), "rng-", 4))
                return error_setf(err, "Invalid parameter type for 'rng', expected: rng-backend");
            if (!strcmp(opts_get_str(obj, "qom-type"), "rng-random"))
                file = opts_get_str(obj, "filename");
        }
        uint64_t max_bytes = 0, period = 65536;
        if (opts_get_number(o, "max-bytes", &max_bytes, err) < 0 ||
            opts_get_number(o, "period", &period, err) < 0)
            return -1;
        if (period == 0)
            return error_setf(err, "period=0: must be at least 1 ms");
        struct dev *d = new_dev(md, KIND_RNG, id, err);
        if (!d || virtio_rng_create(md->mem, file, max_bytes, period, &d->u.rng, err) < 0)
            return -1;
        return plug(md, d, slot, func, err);
    }
    if (!strncmp(driver, "virtio-balloon", 14))
        return add_balloon(md, o, id, slot, func, err);
    return error_setf(err, "'%s' is not a valid device model name", driver);
}

static char *opts_text(const struct opts *o)
{
    size_t n = 1;
    for (size_t i = 0; i < o->n; i++)
        n += strlen(o->kv[i].key) + strlen(o->kv[i].value ? o->kv[i].value : "") + 2;
    char *s = calloc(1, n);
    if (!s)
        return NULL;
    for (size_t i = 0; i < o->n; i++) {
        if (i)
            strcat(s, ",");
        if (strcmp(o->kv[i].key, "driver")) {
            strcat(s, o->kv[i].key);
            strcat(s, "=");
        }
        strcat(s, o->kv[i].value ? o->kv[i].value : "");
    }
    return s;
}

int machine_devices_create(const struct kemu_config *cfg, struct pc *pc, struct chardev **chardevs,
                           struct machine_devices **out, struct error *err)
{
    struct machine_devices *md = calloc(1, sizeof(*md));
    if (!md)
        return error_setf(err, "out of memory");
    *out = md;
    md->balloon_fd = md->balloon_timer_fd = -1;
    md->pc = pc;
    md->mem = &pc_vm(pc)->mem;
    md->bus = pc_pci_bus(pc);
    md->err_tail = &md->err_head;
    pthread_mutex_init(&md->err_lock, NULL);
    md->loop = pc_vm(pc)->loop;
    md->err_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (md->err_fd < 0)
        return error_setf_errno(err, errno, "eventfd");
    if (md->loop && eventloop_add(md->loop, md->err_fd, EPOLLIN, on_blk_errors, md, err) < 0) {
        close(md->err_fd);
        md->err_fd = -1;
        return -1;
    }

    if (open_drives(md, cfg, err) < 0)
        return -1;
    for (size_t i = 0; i < cfg->netdevs.n; i++) {
        char *what = keep(md, malloc(strlen(cfg->netdevs.v[i]) + 10));
        if (!what)
            return error_setf(err, "out of memory");
        sprintf(what, "-netdev %s", cfg->netdevs.v[i]);
        if (add_netdev(md, cfg->netdevs.v[i], what, NULL, err) < 0)
            return -1;
    }
    /* QEMU's pc has its PIIX3 at slot 1 and, unless -nodefaults or -vga none, its VGA at slot 2.
     * kemu has neither but keeps their slots, and creates devices in QEMU's order (NICs, then
     * -device, then if=virtio disks), so devices land where QEMU puts them and guests name
     * them alike (the default NIC is ens3). */
    if (md->bus)
        md->bus->first_auto_slot = cfg->nodefaults || cfg->vga_none ? 2 : 3;
    bool net_given = cfg->netdevs.n > 0;
    if (add_nics(md, cfg, &net_given, err) < 0 || add_legacy_net(md, cfg, &net_given, err) < 0)
        return -1;
#ifdef CONFIG_SLIRP
    /* QEMU's default NIC, as a virtio one: user-mode networking for a guest with no options. */
    if (!net_given && !cfg->nodefaults && (md->bus || pc_has_virtio_mmio(md->pc))) {
        struct netdev *nd = NULL;
        if (add_netdev(md, "user,id=__default_net", "default NIC", &nd, err) < 0 ||
            add_nic(md, find_netdev(md, netdev_id(nd)), NULL, false, NULL, -1, 0, err) < 0)
            return -1;
    }
#endif
    for (size_t i = 0; i < cfg->ndevices; i++) {
        if (add_device(md, cfg, chardevs, &cfg->devices[i], err) < 0) {
            char *t = opts_text(&cfg->devices[i]);
            error_prefix(err, "-device %s: ", t ? t : "");
            free(t);
            return -1;
        }
    }
    /* if=virtio drives last: QEMU adds their devices after every -device. */
    for (size_t i = 0; i < md->ndrives; i++) {
        struct drive *dr = &md->drives[i];
        if (dr->o.iface != DRIVE_IF_VIRTIO)
            continue;
        if (!md->bus && !pc_has_virtio_mmio(md->pc)) {
            return error_setf(err, "-drive %s: the microvm machine has no PCI bus (use -M pc)",
                              dr->text);
        }
        if (add_blk(md, dr, NULL, -1, 0, err) < 0) {
            error_prefix(err, "-drive %s: ", dr->text);
            return -1;
        }
    }
    for (size_t i = 0; i < md->nnetdevs; i++)
        if (!md->netdevs[i].used)
            fprintf(stderr, "kemu: warning: netdev %s has no peer\n", netdev_id(md->netdevs[i].nd));
    return 0;
}

/* QEMU's blk_iostatus_is_enabled: the device keeps one (virtio-blk) and an error can stop the
 * VM (rerror=enospc cannot: QEMU leaves it out too). */
static const char *io_status_name(const struct drive *dr)
{
    static const char *const names[] = {"ok", "failed", "nospace"};
    if (!dr->used || (dr->o.werror != DRIVE_ERROR_ENOSPC && dr->o.werror != DRIVE_ERROR_STOP &&
                      dr->o.rerror != DRIVE_ERROR_STOP))
        return NULL;
    return names[dr->io_status];
}

size_t machine_devices_block_info(struct machine_devices *md, struct qmp_block_info *out,
                                  size_t max)
{
    for (size_t i = 0; i < md->ndrives && i < max; i++) {
        const struct drive *dr = &md->drives[i];
        out[i] = (struct qmp_block_info){.device = dr->o.id,
                                         .qdev = dr->qdev,
                                         .node_name = dr->node_name,
                                         .inserted = dr->bb != NULL,
                                         .file = dr->o.file,
                                         .format = dr->o.format ? dr->o.format : "raw",
                                         .read_only = dr->o.readonly,
                                         .writeback = dr->o.cache != BLOCK_CACHE_WRITETHROUGH &&
                                                      dr->o.cache != BLOCK_CACHE_DIRECTSYNC,
                                         .direct = dr->o.cache == BLOCK_CACHE_NONE ||
                                                   dr->o.cache == BLOCK_CACHE_DIRECTSYNC,
                                         .no_flush = dr->o.cache == BLOCK_CACHE_UNSAFE,
                                         .virtual_size = dr->bb ? block_backend_size(dr->bb) : 0,
                                         .io_status = io_status_name(dr)};
    }
    return md->ndrives;
}

char *machine_devices_usernet_info(struct machine_devices *md)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < md->nnetdevs; i++) {
        char *t = netdev_usernet_info(md->netdevs[i].nd);
        if (!t)
            continue;
        /* QEMU's heading; -1: not on a hub (kemu has none) */
        fprintf(f, "Hub -1 (%s):\n%s", netdev_id(md->netdevs[i].nd), t);
        free(t);
    }
    fclose(f);
    return text;
}

int machine_devices_hostfwd(struct machine_devices *md, const char *netdev, bool add,
                            const char *rule, struct error *err)
{
    struct netdev *nd = NULL;
    for (size_t i = 0; !netdev && !nd && i < md->nnetdevs; i++)
        if (!strcmp(netdev_type(md->netdevs[i].nd), "user"))
            nd = md->netdevs[i].nd;
    if (netdev) {
        struct netdev_slot *ns = find_netdev(md, netdev);
        if (!ns) {
            error_setf(err, "unrecognized netdev id '%s'", netdev);
            return -ENODEV;
        }
        nd = ns->nd;
        if (strcmp(netdev_type(nd), "user")) {
            error_setf(err, "invalid device specified");
            return -ENODEV;
        }
    } else if (!nd) {
        error_setf(err, "user mode network stack not in use");
        return -ENODEV;
    }
    return netdev_hostfwd(nd, add, rule, err);
}

int machine_devices_set_link(struct machine_devices *md, const char *name, bool up,
                             struct error *err)
{
    bool found = false;
    for (size_t i = 0; i < md->ndevs; i++) {
        struct dev *d = &md->devs[i];
        if (d->kind != KIND_NET || !d->nd ||
            (strcmp(d->net_name, name) && strcmp(netdev_id(d->nd), name)))
            continue;
        if (d->u.net)
            virtio_net_set_link(d->u.net, up);
        found = true;
    }
    /* A netdev without a NIC: QEMU keeps its flag, which nothing reads. */
    if (!found && !find_netdev(md, name)) {
        error_setf(err, "Device '%s' not found", name);
        return -ENODEV;
    }
    return 0;
}

/* QEMU's order: the backends without a NIC (created first), then each NIC queue followed by
 * its backend's queue. */
size_t machine_devices_net_info(struct machine_devices *md, struct qmp_net_client *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < md->nnetdevs; i++) {
        const struct netdev *nd = md->netdevs[i].nd;
        for (unsigned q = 0; !md->netdevs[i].used && q < netdev_queues(nd); q++, n++) {
            if (n >= max)
                continue;
            out[n] =
                (struct qmp_net_client){.name = netdev_id(nd), .index = q, .type = netdev_type(nd)};
            netdev_info_str(nd, q, out[n].info, sizeof(out[n].info));
        }
    }
    for (size_t i = 0; i < md->ndevs; i++) {
        const struct dev *d = &md->devs[i];
        for (unsigned q = 0; d->kind == KIND_NET && d->nd && q < netdev_queues(d->nd); q++) {
            if (n < max) {
                out[n] = (struct qmp_net_client){.name = d->net_name, .index = q, .type = "nic"};
                snprintf(out[n].info, sizeof(out[n].info), "%s", d->net_info);
            }
            if (++n < max) {
                out[n] = (struct qmp_net_client){
                    .name = netdev_id(d->nd), .index = q, .type = netdev_type(d->nd), .peer = true};
                netdev_info_str(d->nd, q, out[n].info, sizeof(out[n].info));
            }
            n++;
        }
    }
    return n;
}

int machine_devices_commit(struct machine_devices *md, const char *device, struct error *err)
{
    bool all = !strcmp(device, "all"), found = false;
    for (size_t i = 0; i < md->ndrives; i++) {
        struct drive *dr = &md->drives[i];
        if (!all && strcmp(dr->o.id, device))
            continue;
        found = true;
        if (!dr->bb)
            continue;
        int r = block_backend_commit(dr->bb, err);
        if (r == -ENOTSUP && all) { /* all: the drives that have something to commit into */
            *err = (struct error){0};
            continue;
        }
        if (r < 0)
            return r;
    }
    return found || all ? 0 : -ENODEV;
}

void machine_devices_destroy(struct machine_devices *md)
{
    if (!md)
        return;
    /* Transports first (a device reset stops each backend), then the kinds, then backends. */
    for (size_t i = md->ndevs; i-- > 0;) {
        virtio_pci_destroy(md->devs[i].vp);
        virtio_mmio_destroy(md->devs[i].mmio);
    }
    for (size_t i = md->ndevs; i-- > 0;) {
        struct dev *d = &md->devs[i];
        switch (d->kind) {
        case KIND_BLK:
            virtio_blk_destroy(d->u.blk);
            break;
        case KIND_NET:
            if (d->u.net)
                virtio_net_destroy(d->u.net);
            break;
        case KIND_SERIAL:
            if (d->u.serial)
                virtio_serial_destroy(d->u.serial);
            break;
        case KIND_RNG:
            virtio_rng_destroy(d->u.rng);
            break;
        case KIND_BALLOON:
            virtio_balloon_destroy(d->u.balloon);
            break;
        }
        free(d->id);
        free(d->net_name);
    }
    if (md->balloon_fd >= 0) {
        if (md->balloon_watched)
            eventloop_remove(md->loop, md->balloon_fd);
        close(md->balloon_fd);
    }
    if (md->balloon_timer_fd >= 0) {
        if (md->balloon_watched)
            eventloop_remove(md->loop, md->balloon_timer_fd);
        close(md->balloon_timer_fd);
    }
    /* The workers are gone: failures still queued go unreported. */
    if (md->err_fd >= 0) {
        if (md->loop)
            eventloop_remove(md->loop, md->err_fd);
        close(md->err_fd);
    }
    while (md->err_head) {
        struct blk_error_ev *next = md->err_head->next;
        free(md->err_head);
        md->err_head = next;
    }
    pthread_mutex_destroy(&md->err_lock);
    for (size_t i = 0; i < md->nnetdevs; i++)
        netdev_destroy(md->netdevs[i].nd);
    free(md->netdevs);
    for (size_t i = 0; i < md->ndrives; i++) {
        if (md->drives[i].bb)
            block_backend_close(md->drives[i].bb);
        drive_opts_free(&md->drives[i].o);
    }
    free(md->drives);
    for (size_t i = 0; i < md->nowned; i++)
        free(md->owned[i]);
    free(md->owned);
    free(md);
}
