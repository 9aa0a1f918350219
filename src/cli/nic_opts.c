/* -nic and -net nic option texts (see nic_opts.h). */
#include "cli/nic_opts.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/opts.h"
#include "pci/pci.h"

static char *dup_range(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, s, n);
        r[n] = 0;
    }
    return r;
}

/* The end of the option element at p: the next single comma (",," is an escaped one), or the
 * string's end. */
static const char *elem_end(const char *p)
{
    while (*p && !(*p == ',' && p[1] != ','))
        p += (*p == ',' && p[1] == ',') ? 2 : 1;
    return p;
}

int nic_opts_split(const char *text, struct nic_opts *out, struct error *err)
{
    memset(out, 0, sizeof(*out));
    size_t len = strlen(text);
    char *rest = calloc(1, len + 1);
    if (!rest)
        return error_setf(err, "out of memory");
    size_t rl = 0;
    const char *p = text;
    while (*p) {
        const char *e = elem_end(p);
        size_t n = (size_t)(e - p);
        char **dst = NULL;
        size_t klen = 0;
        static const struct {
            const char *key;
            size_t off;
        } keys[] = {{"model=", offsetof(struct nic_opts, model)},
                    {"mac=", offsetof(struct nic_opts, mac)},
                    {"macaddr=", offsetof(struct nic_opts, mac)},
                    {"netdev=", offsetof(struct nic_opts, netdev_ref)},
                    {"name=", offsetof(struct nic_opts, name)}};
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            size_t kl = strlen(keys[k].key);
            if (n >= kl && !strncmp(p, keys[k].key, kl)) {
                dst = (char **)((char *)out + keys[k].off);
                klen = kl;
                break;
            }
        }
        if (dst) {
            free(*dst);
            if (!(*dst = dup_range(p + klen, n - klen))) {
                out->netdev_text = rest;
                nic_opts_free(out);
                return error_setf(err, "out of memory");
            }
        } else {
            if (rl)
                rest[rl++] = ',';
            memcpy(rest + rl, p, n);
            rl += n;
        }
        p = *e ? e + 1 : e;
    }
    out->netdev_text = rest;
    return 0;
}

void nic_opts_free(struct nic_opts *o)
{
    free(o->netdev_text);
    free(o->model);
    free(o->mac);
    free(o->netdev_ref);
    free(o->name);
    memset(o, 0, sizeof(*o));
}

int nic_model_check(const char *model, struct error *err)
{
    if (!model || !strcmp(model, "virtio") || !strcmp(model, "virtio-net-pci") ||
        !strcmp(model, "virtio-net") || !strcmp(model, "virtio-net-device"))
        return 0;
    return error_setf(err, "model '%s' is not supported (kemu has virtio-net-pci: model=virtio)",
                      model);
}

int nic_legacy_keys(const char *rest, bool have_pci, struct nic_legacy_keys *out, struct error *err)
{
    *out = (struct nic_legacy_keys){.slot = -1};
    if (strncmp(rest, "nic", 3) || (rest[3] && rest[3] != ','))
        return error_setf(err, "not a -net nic option");
    const char *p = rest + 3;
    while (*p == ',') {
        p++;
        const char *e = elem_end(p);
        const char *eq = memchr(p, '=', (size_t)(e - p));
        int kl = (int)((eq ? eq : e) - p);
        char val[64];
        if (eq && (size_t)(e - eq - 1) >= sizeof(val))
            return error_setf(err, "%.*s=: value too long", kl, p);
        snprintf(val, sizeof(val), "%.*s", eq ? (int)(e - eq - 1) : 0, eq ? eq + 1 : "");
        if (eq && kl == 4 && !strncmp(p, "addr", 4)) {
            if (!have_pci)
                return error_setf(err, "addr=: the microvm machine has no PCI bus (use -M pc)");
            if (pci_parse_addr(val, &out->slot, &out->func, err) < 0)
                return -1;
        } else if (eq && kl == 7 && !strncmp(p, "vectors", 7)) {
            uint64_t v;
            if (opts_parse_number(val, &v) < 0 || v > 0xffffffffULL)
                return error_setf(err, "vectors=%s: not a number of MSI-X vectors", val);
        } else if (eq && kl == 2 && !strncmp(p, "id", 2)) {
            snprintf(out->id, sizeof(out->id), "%s", val);
            if (!opts_id_wellformed(out->id))
                return error_setf(err,
                                  "invalid id '%s' (a letter, then letters, digits, '-', "
                                  "'.' or '_')",
                                  out->id);
        } else {
            return error_setf(err, "Invalid parameter '%.*s'", kl, p);
        }
        p = e;
    }
    return 0;
}

char *nic_netdev_text_with_id(const char *text, const char *id)
{
    const char *comma = strchr(text, ',');
    size_t tl = comma ? (size_t)(comma - text) : strlen(text);
    size_t n = strlen(text) + strlen(id) + 8;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%.*s,id=%s%s", (int)tl, text, id, comma ? comma : "");
    return s;
}

bool nic_text_has_key(const char *text, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = text; kl && *p;) {
        const char *e = elem_end(p);
        if ((size_t)(e - p) > kl && !strncmp(p, key, kl) && p[kl] == '=')
            return true;
        p = *e ? e + 1 : e;
    }
    return false;
}
