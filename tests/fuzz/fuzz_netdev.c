/*
 * libFuzzer harness for the -netdev option parser: the input is one -netdev argument (up to
 * the first NUL or newline), given to netdev_create(); or "hostfwd_add RULE" / "hostfwd_remove
 * RULE", the monitor's rules, given to their parser.
 *
 * netdev_create parses and then starts the backend: libslirp (which binds hostfwd ports) or a
 * tap device (which opens /dev/net/tun and runs script=). There is no parse-only entry point,
 * so this harness is linked with -Wl,--wrap for net_slirp_init and net_tap_init (see
 * meson.build): the wrappers check the parsed configuration and refuse it, so nothing touches
 * the host and every input ends in netdev_create's error path, which must free everything.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"
#include "net/netdev_int.h"
#include "fuzz_option.h"

int __wrap_net_slirp_init(struct netdev *nd, const struct net_user_cfg *c, struct error *err);
int __wrap_net_tap_init(struct netdev *nd, const struct net_tap_cfg *c, struct error *err);

#define STOP "fuzz: backend not started"

static void touch(const char *s)
{
    if (s)
        (void)strlen(s);
}

int __wrap_net_slirp_init(struct netdev *nd, const struct net_user_cfg *c, struct error *err)
{
    (void)nd;
    /* the parser's promises to libslirp: addresses inside the guest network, valid ports */
    if ((c->host.s_addr & c->mask.s_addr) != c->net.s_addr ||
        (c->dhcp.s_addr & c->mask.s_addr) != c->net.s_addr ||
        (c->dns.s_addr & c->mask.s_addr) != c->net.s_addr)
        abort();
    for (size_t i = 0; i < c->nfwd; i++)
        if (c->fwd[i].hport < 0 || c->fwd[i].hport > 65535 || c->fwd[i].gport < 1 ||
            c->fwd[i].gport > 65535 || (c->fwd[i].gaddr.s_addr & c->mask.s_addr) != c->net.s_addr)
            abort();
    for (size_t i = 0; i < c->ngfwd; i++) {
        const struct net_guestfwd *g = &c->gfwd[i];
        if (g->port < 0 || g->port > 65535 || !g->cmd == !g->dev)
            abort();
        /* a stream target the connect code can take apart without checking again */
        if (g->dev &&
            !(!strncmp(g->dev, "tcp:", 4) && strrchr(g->dev + 4, ':') > g->dev + 4 &&
              strrchr(g->dev + 4, ':') - (g->dev + 4) < NET_GFWD_HOST_MAX) &&
            !(!strncmp(g->dev, "unix:", 5) && strlen(g->dev + 5) < NET_GFWD_PATH_MAX))
            abort();
        touch(g->cmd);
        touch(g->dev);
    }
    /* IPv6: a prefix libslirp takes, host and DNS inside it; dnssearch NULL-terminated */
    if (c->prefix6_len > 126)
        abort();
    for (unsigned i = 0; i < 16; i++) {
        unsigned bits = c->prefix6_len > i * 8 ? c->prefix6_len - i * 8 : 0;
        uint8_t m = (uint8_t)(0xff00 >> (bits > 8 ? 8 : bits));
        if ((c->prefix6.s6_addr[i] & ~m) || (c->host6.s6_addr[i] & m) != c->prefix6.s6_addr[i] ||
            (c->dns6.s6_addr[i] & m) != c->prefix6.s6_addr[i])
            abort();
    }
    for (size_t i = 0; i < c->ndnssearch; i++)
        touch(c->dnssearch[i]);
    if (c->ndnssearch && c->dnssearch[c->ndnssearch])
        abort();
    touch(c->hostname);
    touch(c->domainname);
    touch(c->tftp);
    touch(c->tftp_server_name);
    touch(c->bootfile);
    return error_setf(err, STOP);
}

int __wrap_net_tap_init(struct netdev *nd, const struct net_tap_cfg *c, struct error *err)
{
    (void)nd;
    if (c->ifname && (strlen(c->ifname) >= 16 || strchr(c->ifname, '/')))
        abort();
    if (c->fd >= 0 && (c->script || c->downscript))
        abort();
    touch(c->script);
    touch(c->downscript);
    return error_setf(err, STOP);
}

/* HMP's hostfwd_add / hostfwd_remove RULE against QEMU's default network 10.0.2.0/24. */
static void hostfwd_rule(const char *rule, bool add)
{
    struct net_user_cfg c;
    memset(&c, 0, sizeof(c));
    c.net.s_addr = htonl(0x0a000200);
    c.mask.s_addr = htonl(0xffffff00);
    c.dhcp.s_addr = htonl(0x0a00020f);
    struct net_hostfwd f;
    struct error err = {0};
    if (net_hostfwd_parse(rule, add, &c, &f, &err) < 0) {
        fuzz_check_error(&err);
        return;
    }
    if (f.hport < 0 || f.hport > 65535)
        abort();
    if (add && (f.gport < 1 || f.gport > 65535 || (f.gaddr.s_addr & c.mask.s_addr) != c.net.s_addr))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_option_text(data, size);
    if (!text)
        return 0;
    if (!strncmp(text, "hostfwd_add ", 12) || !strncmp(text, "hostfwd_remove ", 15)) {
        hostfwd_rule(strchr(text, ' ') + 1, text[8] == 'a');
        free(text);
        return 0;
    }
    struct netdev *nd = NULL;
    struct error err = {0};
    int r = netdev_create(text, &nd, &err);
    /* the wrappers refuse every backend, so nothing can have been created */
    if (r == 0 || nd)
        abort();
    if (r < 0)
        fuzz_check_error(&err);
    free(text);
    return 0;
}
