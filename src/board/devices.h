/*
 * The user's devices: -drive, -netdev, -net, -nic, -object and the PCI -device models, turned
 * into backends (block, net, rng, chardevs) and virtio devices on the pc board's PCI bus, plus
 * the defaults QEMU adds (a user-mode NIC unless networking was configured or -nodefaults).
 */
#ifndef KEMU_BOARD_DEVICES_H
#define KEMU_BOARD_DEVICES_H

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
/* query-block: one entry per -drive; returns the count (fills at most max). */
size_t machine_devices_block_info(struct machine_devices *md, struct qmp_block_info *out,
                                  size_t max);
/* After the vCPUs stopped and before the board is destroyed. NULL is ignored. */
void machine_devices_destroy(struct machine_devices *md);

#endif
