/*
 * The user's devices: -drive, -netdev, -net, -nic, -object and the PCI -device models, turned
 * into backends (block, net, rng, chardevs) and virtio devices on the pc board's PCI bus, plus
 * the defaults QEMU adds (a user-mode NIC unless networking was configured or -nodefaults).
 */
#ifndef KEMU_BOARD_DEVICES_H
#define KEMU_BOARD_DEVICES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "board/pc.h"
#include "chardev/chardev.h"
#include "cli/config.h"
#include "core/error.h"

struct machine_devices;

/* chardevs: one per cfg->chardevs entry, same order. Errors name the option they come from. */
int machine_devices_create(const struct kemu_config *cfg, struct pc *pc, struct chardev **chardevs,
                           struct machine_devices **out, struct error *err);
struct qmp_block_info;
struct qmp_net_client;
/* HMP hostfwd_add / hostfwd_remove on the user netdev named netdev (NULL: the first one):
 * netdev_hostfwd's results, or -ENODEV with err set (no such user netdev). */
int machine_devices_hostfwd(struct machine_devices *md, const char *netdev, bool add,
                            const char *rule, struct error *err);
/* set_link NAME on|off: name is a NIC (its info network name: id= or "virtio-net-pci.N") or a
 * netdev (its NIC's link changes, as QEMU does for a NIC peer). 0, or -ENODEV with err set to
 * QEMU's "Device 'NAME' not found". */
int machine_devices_set_link(struct machine_devices *md, const char *name, bool up,
                             struct error *err);
/* HMP info usernet: each user netdev's connection table, malloc'd text ("\n" lines). */
char *machine_devices_usernet_info(struct machine_devices *md);
/* info network's lines (snprintf-like: at most max filled, the total returned). */
size_t machine_devices_net_info(struct machine_devices *md, struct qmp_net_client *out, size_t max);
/* query-block: one entry per -drive; returns the count (fills at most max). */
size_t machine_devices_block_info(struct machine_devices *md, struct qmp_block_info *out,
                                  size_t max);
/* HMP commit: the drive with that id, or "all" (each drive with a backing file or under
 * snapshot=on). 0, -ENODEV for an unknown id, or block_backend_commit()'s -errno with err set. */
int machine_devices_commit(struct machine_devices *md, const char *device, struct error *err);
/* A disk request failed (werror=/rerror=), as the main loop hears of it: for BLOCK_IO_ERROR,
 * and to pause the VM when action is stop. Strings live as long as the devices. */
struct machine_block_error {
    const char *device, *node_name; /* drive id, "#blockNNN" */
    bool is_read;
    const char *action; /* "report", "ignore", "stop" */
    bool stop;
    bool nospace;
    const char *reason; /* strerror text */
};
typedef void machine_block_error_fn(void *opaque, const struct machine_block_error *e);
/* Who hears of failed disk requests, on the main thread, in the order they failed. */
void machine_devices_set_error_handler(struct machine_devices *md, machine_block_error_fn *fn,
                                       void *opaque);
/* The VM runs again (cont): the disks resubmit the requests their stop actions held. */
void machine_devices_resume(struct machine_devices *md);
/* QMP balloon (target: the guest's RAM in bytes) and query-balloon (actual: its RAM less what
 * the balloon holds): 0, or -EINVAL (target <= 0) or -ENODEV ("No balloon device has been
 * activated") with err set as QEMU words them. */
int machine_devices_balloon(struct machine_devices *md, int64_t target, struct error *err);
int machine_devices_query_balloon(struct machine_devices *md, uint64_t *actual, struct error *err);
/* The guest's balloon changed size (BALLOON_CHANGE): actual bytes, on the main thread. */
typedef void machine_balloon_fn(void *opaque, uint64_t actual);
void machine_devices_set_balloon_handler(struct machine_devices *md, machine_balloon_fn *fn,
                                         void *opaque);
/* After the vCPUs stopped and before the board is destroyed. NULL is ignored. */
void machine_devices_destroy(struct machine_devices *md);

#endif
