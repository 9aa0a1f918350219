/* -nic / -net nic texts: NIC keys apart from the backend's, the legacy NIC's own keys. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cli/nic_opts.h"

static void test_split(void **state)
{
    (void)state;
    struct nic_opts o;
    struct error err = {0};
    assert_int_equal(nic_opts_split("user,model=virtio,hostfwd=tcp::2222-:22,mac=52:54:00:12:34:60,"
                                    "id=u0",
                                    &o, &err),
                     0);
    assert_string_equal(o.netdev_text, "user,hostfwd=tcp::2222-:22,id=u0");
    assert_string_equal(o.model, "virtio");
    assert_string_equal(o.mac, "52:54:00:12:34:60");
    assert_null(o.netdev_ref);
    assert_null(o.name);
    nic_opts_free(&o);

    /* macaddr= is mac=; the last one wins; ",," stays inside its element. */
    assert_int_equal(nic_opts_split("nic,macaddr=52:54:00:00:00:01,netdev=n0,name=a,,b,"
                                    "macaddr=52:54:00:00:00:02,addr=5",
                                    &o, &err),
                     0);
    assert_string_equal(o.netdev_text, "nic,addr=5");
    assert_string_equal(o.mac, "52:54:00:00:00:02");
    assert_string_equal(o.netdev_ref, "n0");
    assert_string_equal(o.name, "a,,b");
    nic_opts_free(&o);

    /* A key inside another key's value is not taken out. */
    assert_int_equal(nic_opts_split("user,hostfwd=tcp::1-:2,,model=x", &o, &err), 0);
    assert_string_equal(o.netdev_text, "user,hostfwd=tcp::1-:2,,model=x");
    assert_null(o.model);
    nic_opts_free(&o);

    assert_int_equal(nic_opts_split("", &o, &err), 0);
    assert_string_equal(o.netdev_text, "");
    nic_opts_free(&o);
}

static void test_model(void **state)
{
    (void)state;
    struct error err = {0};
    const char *ok[] = {NULL, "virtio", "virtio-net-pci", "virtio-net", "virtio-net-device"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_int_equal(nic_model_check(ok[i], &err), 0);
    assert_int_equal(nic_model_check("e1000", &err), -1);
    assert_string_equal(err.msg,
                        "model 'e1000' is not supported (kemu has virtio-net-pci: model=virtio)");
}

static void test_legacy_keys(void **state)
{
    (void)state;
    struct nic_legacy_keys k;
    struct error err = {0};
    assert_int_equal(nic_legacy_keys("nic", true, &k, &err), 0);
    assert_int_equal(k.slot, -1);
    assert_int_equal(k.func, 0);
    assert_string_equal(k.id, "");
    assert_int_equal(nic_legacy_keys("nic,addr=0x5.2,vectors=3,id=net-0", true, &k, &err), 0);
    assert_int_equal(k.slot, 5);
    assert_int_equal(k.func, 2);
    assert_string_equal(k.id, "net-0");

    static const struct {
        const char *text;
        bool pci;
        const char *msg;
    } bad[] = {
        {"nic,vlan=1", true, "Invalid parameter 'vlan'"},
        {"nic,addr", true, "Invalid parameter 'addr'"},
        {"nic,addr=4", false, "addr=: the microvm machine has no PCI bus (use -M pc)"},
        {"nic,vectors=many", true, "vectors=many: not a number of MSI-X vectors"},
        {"nic,vectors=4294967296", true, "vectors=4294967296: not a number of MSI-X vectors"},
        {"nic,id=0x", true, "invalid id '0x' (a letter, then letters, digits, '-', '.' or '_')"},
        {"nic,id=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true,
         "id=: value too long"},
        {"nicx", true, "not a -net nic option"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = (struct error){0};
        assert_int_equal(nic_legacy_keys(bad[i].text, bad[i].pci, &k, &err), -1);
        assert_string_equal(err.msg, bad[i].msg);
    }
    err = (struct error){0};
    assert_int_equal(nic_legacy_keys("nic,addr=40", true, &k, &err), -1);
    assert_true(err.set);
}

static void test_with_id(void **state)
{
    (void)state;
    char *s = nic_netdev_text_with_id("user,hostfwd=tcp::1-:2", "__nic0");
    assert_string_equal(s, "user,id=__nic0,hostfwd=tcp::1-:2");
    free(s);
    s = nic_netdev_text_with_id("tap", "t");
    assert_string_equal(s, "tap,id=t");
    free(s);
    assert_true(nic_text_has_key("user,id=x", "id"));
    assert_true(nic_text_has_key("id=x", "id"));
    assert_false(nic_text_has_key("user,ifname=id", "id"));
    assert_false(nic_text_has_key("user,hostfwd=a,,id=x", "id"));
    assert_false(nic_text_has_key("user,idx=1", "id"));
    assert_false(nic_text_has_key("user,id=x", ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_legacy_keys),
        cmocka_unit_test(test_with_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
