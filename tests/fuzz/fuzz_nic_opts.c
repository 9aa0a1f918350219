/*
 * libFuzzer harness for the -nic / -net nic texts (cli/nic_opts.c): the input is one option
 * argument. The split must be a partition (the rest and the taken values fit in the input, no
 * NIC key is left at an element's start), the legacy keys must stay in range, every refusal a
 * one-line message.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/nic_opts.h"
#include "fuzz_option.h"

static bool starts_nic_key(const char *p)
{
    static const char *const keys[] = {"model=", "mac=", "macaddr=", "netdev=", "name="};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!strncmp(p, keys[i], strlen(keys[i])))
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_option_text(data, size);
    if (!text)
        return 0;
    size_t len = strlen(text);
    struct nic_opts o;
    struct error err = {0};
    if (nic_opts_split(text, &o, &err) < 0) {
        fuzz_check_error(&err);
        free(text);
        return 0;
    }
    size_t taken = 0;
    const char *vals[] = {o.model, o.mac, o.netdev_ref, o.name};
    for (size_t i = 0; i < 4; i++)
        taken += vals[i] ? strlen(vals[i]) : 0;
    if (strlen(o.netdev_text) > len || taken > len)
        abort();
    /* The rest's elements: none is a NIC key (an escaped ",," is not an element boundary). */
    for (const char *p = o.netdev_text; *p;) {
        if (starts_nic_key(p))
            abort();
        while (*p && !(*p == ',' && p[1] != ','))
            p += (*p == ',' && p[1] == ',') ? 2 : 1;
        if (*p)
            p++;
    }
    if (nic_model_check(o.model, &err) < 0)
        fuzz_check_error(&err);
    err = (struct error){0};
    struct nic_legacy_keys k;
    if (nic_legacy_keys(o.netdev_text, size & 1, &k, &err) == 0) {
        if (k.slot < -1 || k.slot > 31 || k.func < 0 || k.func > 7 ||
            !memchr(k.id, '\0', sizeof(k.id)))
            abort();
    } else {
        fuzz_check_error(&err);
    }
    char *with = nic_netdev_text_with_id(o.netdev_text, "__nic0");
    if (!with || !nic_text_has_key(with, "id"))
        abort();
    free(with);
    nic_opts_free(&o);
    free(text);
    return 0;
}
