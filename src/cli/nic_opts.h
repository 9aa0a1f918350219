/*
 * The texts of -nic and -net nic: the NIC's own keys taken apart from the backend's, as QEMU's
 * net_client_init does. Pure parsing (no devices are made here), so it is unit tested and fuzzed.
 */
#ifndef KEMU_CLI_NIC_OPTS_H
#define KEMU_CLI_NIC_OPTS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

struct nic_opts {
    /* What is left once the NIC keys are out, elements in their order: the backend's text for
     * -nic ("user,hostfwd=..."), "nic,addr=...,id=..." for -net nic. */
    char *netdev_text;
    char *model, *mac, *netdev_ref, *name; /* NULL when not given; the last one given wins */
};

/* Split "type,key=val,..." (",," is an escaped comma and stays one). 0, or -1 with err set. */
int nic_opts_split(const char *text, struct nic_opts *out, struct error *err);
void nic_opts_free(struct nic_opts *o);
/* model=: the virtio-net spellings QEMU accepts (NULL: the default), else an error naming it. */
int nic_model_check(const char *model, struct error *err);

/* The other keys of "-net nic" (nic_opts_split's rest, "nic[,...]"): addr= places the NIC on
 * the PCI bus (have_pci false: an error, microvm has none), vectors= is checked and taken as
 * QEMU takes it, id= names the NIC; anything else is QEMU's "Invalid parameter 'k'". */
struct nic_legacy_keys {
    int slot, func; /* -1, 0 without addr= */
    char id[64];    /* "" without id= */
};
int nic_legacy_keys(const char *rest, bool have_pci, struct nic_legacy_keys *out,
                    struct error *err);

/* "TYPE,..." as "TYPE,id=ID,..." (malloc'd; NULL when out of memory). */
char *nic_netdev_text_with_id(const char *text, const char *id);
/* Whether the option text has an element "key=..." (not inside another key's value, where an
 * escaped ",," may precede it). */
bool nic_text_has_key(const char *text, const char *key);

#endif
