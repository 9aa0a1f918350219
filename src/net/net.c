/* The netdev core: option parsing for -netdev, the per-netdev I/O thread, the frontend hooks. */
#include "net/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cli/opts.h"
#include "core/os.h"
#include "kemu-config.h"
#include "net/netdev_int.h"

/* ---- option tables ---- */

static const struct opt_desc user_desc[] = {
    {"type", OPT_STRING, NULL, "backend type: user"},
    {"id", OPT_STRING, NULL, "netdev identifier"},
    {"net", OPT_STRING, "10.0.2.0/24", "guest network: addr/prefix or addr/mask"},
    {"host", OPT_STRING, NULL, "host (gateway) address, default net + 2"},
    {"dhcpstart", OPT_STRING, NULL, "first DHCP address, default net + 15"},
    {"dns", OPT_STRING, NULL, "DNS server address, default net + 3"},
    {"hostname", OPT_STRING, NULL, "hostname given by DHCP"},
    {"domainname", OPT_STRING, NULL, "domain name given by DHCP"},
    {"tftp", OPT_STRING, NULL, "TFTP root directory"},
    {"bootfile", OPT_STRING, NULL, "BOOTP file name"},
    {"hostfwd", OPT_STRING, NULL,
     "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport (repeatable)"},
    {"guestfwd", OPT_STRING, NULL,
     "tcp:[server]:port-cmd:COMMAND|tcp:HOST:PORT|unix:PATH (repeatable)"},
    {"restrict", OPT_BOOL, "off", "isolate the guest from the host network"},
    {"ipv4", OPT_BOOL, "on", "IPv4"},
    {"ipv6", OPT_BOOL, "on", "IPv6"},
    {"ipv6-net", OPT_STRING, "fec0::/64", "guest IPv6 network: addr[/prefixlen]"},
    {"ipv6-prefix", OPT_STRING, NULL, "guest IPv6 network address (with ipv6-prefixlen=)"},
    {"ipv6-prefixlen", OPT_NUMBER, NULL, "guest IPv6 prefix length (default 64)"},
    {"ipv6-host", OPT_STRING, NULL, "host IPv6 address, default prefix + 2"},
    {"ipv6-dns", OPT_STRING, NULL, "IPv6 DNS server address, default prefix + 3"},
    {"dnssearch", OPT_STRING, NULL, "DNS search domain given by DHCP (repeatable)"},
    {"tftp-server-name", OPT_STRING, NULL, "TFTP server name given by DHCP (option 66)"},
    {"smb", OPT_STRING, NULL, "SMB share (not supported: kemu runs no smbd)"},
    {"smbserver", OPT_STRING, NULL, "SMB server address (not supported)"},
    {NULL, 0, NULL, NULL},
};

static const struct opts_group user_group = {
    .name = "netdev user", .implied = "type", .desc = user_desc};

static const struct opt_desc tap_desc[] = {
    {"type", OPT_STRING, NULL, "backend type: tap"},
    {"id", OPT_STRING, NULL, "netdev identifier"},
    {"ifname", OPT_STRING, NULL, "interface name (default: the kernel picks tapN)"},
    {"script", OPT_STRING, "/etc/qemu-ifup", "run with the interface name after creation; no"},
    {"downscript", OPT_STRING, "/etc/qemu-ifdown", "run with the interface name at exit; no"},
    {"fd", OPT_NUMBER, NULL, "an already open tap file descriptor"},
    {"fds", OPT_STRING, NULL, "already open queues of one multiqueue tap: fd:fd:..."},
    {"queues", OPT_NUMBER, NULL, "queues to open (IFF_MULTI_QUEUE when more than 1)"},
    {"vnet_hdr", OPT_BOOL, NULL, "use the virtio-net header (offloads); default on if possible"},
    {"sndbuf", OPT_SIZE, "0", "send buffer limit in bytes (0: unlimited)"},
    {"vhost", OPT_BOOL, "off", "vhost-net datapath"},
    {"vhostfd", OPT_NUMBER, NULL, "an already open /dev/vhost-net descriptor (implies vhost)"},
    {"vhostfds", OPT_STRING, NULL, "one open /dev/vhost-net descriptor per fds= queue: fd:fd:..."},
    {NULL, 0, NULL, NULL},
};

static const struct opts_group tap_group = {
    .name = "netdev tap", .implied = "type", .desc = tap_desc};

void netdev_print_help(FILE *f)
{
    fprintf(f, "Available netdev backend types:\n");
#ifdef CONFIG_SLIRP
    fprintf(f, "user\n");
#endif
    fprintf(f, "tap\n\n");
    opts_print_help(&user_group, f);
    opts_print_help(&tap_group, f);
}

/* ---- repeated keys ---- */

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Every value of `key` in text, in order, with ",," unescaped (opts keeps only the last). */
static int collect_values(const char *text, const char *key, char ***out, size_t *n,
                          struct error *err)
{
    size_t klen = strlen(key), tlen = strlen(text);
    char *elem = malloc(tlen + 1);
    if (!elem)
        return error_setf(err, "out of memory");
    *out = NULL;
    *n = 0;
    const char *p = text;
    while (*p) {
        size_t e = 0;
        while (*p) {
            if (*p == ',') {
                if (p[1] == ',') {
                    elem[e++] = ',';
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            elem[e++] = *p++;
        }
        elem[e] = 0;
        if (strncmp(elem, key, klen) || elem[klen] != '=')
            continue;
        char **nv = realloc(*out, (*n + 1) * sizeof(*nv));
        char *v = strdup(elem + klen + 1);
        if (!nv || !v) {
            free(v);
            if (nv)
                *out = nv;
            free(elem);
            free_strv(*out, *n);
            *out = NULL;
            *n = 0;
            return error_setf(err, "out of memory");
        }
        *out = nv;
        nv[(*n)++] = v;
    }
    free(elem);
    return 0;
}

/* ---- address parsing ---- */

static int parse_addr(const char *s, struct in_addr *a)
{
    return inet_pton(AF_INET, s, a) == 1 ? 0 : -1;
}

static int parse_port(const char *s, int min, int *out)
{
    uint64_t v;
    if (!*s || opts_parse_number(s, &v) < 0 || v > 65535 || (int)v < min)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_net(const char *s, struct in_addr *net, struct in_addr *mask, struct error *err)
{
    char buf[64];
    if (strlen(s) >= sizeof(buf))
        return error_setf(err, "invalid net '%s'", s);
    strcpy(buf, s);
    char *slash = strchr(buf, '/');
    uint32_t m = 0xffffff00u;
    if (slash) {
        *slash++ = 0;
        struct in_addr ma;
        uint64_t len;
        if (strchr(slash, '.')) {
            if (parse_addr(slash, &ma) < 0)
                return error_setf(err, "invalid net '%s': bad netmask", s);
            m = ntohl(ma.s_addr);
            if (m & (~m >> 1))
                return error_setf(err, "invalid net '%s': netmask is not contiguous", s);
        } else {
            if (opts_parse_number(slash, &len) < 0 || len > 32)
                return error_setf(err, "invalid net '%s': prefix length must be 0..32", s);
            m = len ? 0xffffffffu << (32 - len) : 0;
        }
    }
    if (parse_addr(buf, net) < 0)
        return error_setf(err, "invalid net '%s': bad address", s);
    if (m == 0 || ~m < 3)
        return error_setf(err, "invalid net '%s': the network must have room for hosts", s);
    if (ntohl(net->s_addr) & ~m)
        return error_setf(err, "invalid net '%s': host bits are set in the network address", s);
    mask->s_addr = htonl(m);
    return 0;
}

/* An address of the guest network: given by key (else default net + def_host), inside the net
 * and neither the network nor the broadcast address. */
static int net_member(const struct opts *o, const char *key, const struct net_user_cfg *c,
                      uint32_t def_host, struct in_addr *out, struct error *err)
{
    const char *s = opts_get_str(o, key);
    uint32_t net = ntohl(c->net.s_addr), m = ntohl(c->mask.s_addr);
    if (!s) {
        /* The defaults assume a /24 or larger: a small net= must name the address. */
        out->s_addr = htonl(net + def_host);
        uint32_t a = net + def_host;
        if ((a & m) != net || (a & ~m) == ~m) {
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, out, ip, sizeof(ip));
            return error_setf(err,
                              "the default %s address %s is not a host address of the guest "
                              "network (give %s=)",
                              key, ip, key);
        }
        return 0;
    }
    if (parse_addr(s, out) < 0)
        return error_setf(err, "invalid %s address '%s'", key, s);
    uint32_t a = ntohl(out->s_addr);
    if ((a & m) != net || (a & ~m) == 0 || (a & ~m) == ~m)
        return error_setf(err, "%s address '%s' is not a host address of the guest network", key,
                          s);
    return 0;
}

/* Split off the text up to sep into buf (size len); p advances past sep. */
static int take(const char **p, char sep, char *buf, size_t len)
{
    const char *e = strchr(*p, sep);
    if (!e || (size_t)(e - *p) >= len)
        return -1;
    memcpy(buf, *p, (size_t)(e - *p));
    buf[e - *p] = 0;
    *p = e + 1;
    return 0;
}

static int parse_hostfwd(const char *rule, const struct net_user_cfg *c, struct net_hostfwd *f,
                         struct error *err)
{
    char proto[8], haddr[64], hport[16], gaddr[64];
    const char *p = rule;
    memset(f, 0, sizeof(*f));
    if (take(&p, ':', proto, sizeof(proto)) < 0 || take(&p, ':', haddr, sizeof(haddr)) < 0 ||
        take(&p, '-', hport, sizeof(hport)) < 0 || take(&p, ':', gaddr, sizeof(gaddr)) < 0)
        return error_setf(err,
                          "invalid hostfwd rule '%s': expected "
                          "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport",
                          rule);
    if (!strcmp(proto, "udp"))
        f->udp = true;
    else if (strcmp(proto, "tcp") && proto[0])
        return error_setf(err, "invalid hostfwd rule '%s': protocol '%s' (tcp or udp)", rule,
                          proto);
    f->haddr.s_addr = htonl(INADDR_ANY);
    if (haddr[0] && parse_addr(haddr, &f->haddr) < 0)
        return error_setf(err, "invalid hostfwd rule '%s': bad host address '%s'", rule, haddr);
    if (parse_port(hport, 0, &f->hport) < 0)
        return error_setf(err, "invalid hostfwd rule '%s': bad host port '%s'", rule, hport);
    f->gaddr = c->dhcp;
    if (gaddr[0] && parse_addr(gaddr, &f->gaddr) < 0)
        return error_setf(err, "invalid hostfwd rule '%s': bad guest address '%s'", rule, gaddr);
    if ((f->gaddr.s_addr & c->mask.s_addr) != c->net.s_addr)
        return error_setf(err, "invalid hostfwd rule '%s': guest address '%s' is outside net", rule,
                          gaddr);
    if (parse_port(p, 1, &f->gport) < 0)
        return error_setf(err, "invalid hostfwd rule '%s': bad guest port '%s'", rule, p);
    return 0;
}

int net_hostfwd_parse(const char *rule, bool add, const struct net_user_cfg *c,
                      struct net_hostfwd *f, struct error *err)
{
    if (add)
        return parse_hostfwd(rule, c, f, err);
    /* [tcp|udp]:[hostaddr]:hostport, with QEMU's one message for every mistake */
    char proto[8], haddr[64];
    const char *p = rule;
    memset(f, 0, sizeof(*f));
    f->haddr.s_addr = htonl(INADDR_ANY);
    if (take(&p, ':', proto, sizeof(proto)) < 0 || take(&p, ':', haddr, sizeof(haddr)) < 0 ||
        (strcmp(proto, "tcp") && strcmp(proto, "udp") && proto[0]) ||
        (haddr[0] && parse_addr(haddr, &f->haddr) < 0) || parse_port(p, 0, &f->hport) < 0)
        return error_setf(err, "invalid format");
    f->udp = !strcmp(proto, "udp");
    return 0;
}

/* The target of a guestfwd rule: cmd:COMMAND (a process per guest connection, run by slirp), or
 * tcp:HOST:PORT / unix:PATH, a stream kemu connects to at start-up and relays every guest
 * connection to (QEMU's chardev targets). */
static int parse_guestfwd_target(const char *rule, const char *t, struct net_guestfwd *f,
                                 struct error *err)
{
    if (!strncmp(t, "cmd:", 4) && t[4]) {
        f->cmd = strdup(t + 4);
    } else if (!strncmp(t, "tcp:", 4)) {
        char host[NET_GFWD_HOST_MAX], port[8];
        int pn;
        if (os_split_host_port(t + 4, host, sizeof(host), port, sizeof(port)) < 0 || !host[0] ||
            parse_port(port, 1, &pn) < 0)
            return error_setf(err, "invalid guestfwd rule '%s': expected tcp:HOST:PORT after '-'",
                              rule);
        f->dev = strdup(t);
    } else if (!strncmp(t, "unix:", 5) && t[5]) {
        if (strlen(t + 5) >= NET_GFWD_PATH_MAX)
            return error_setf(err, "invalid guestfwd rule '%s': socket path is too long", rule);
        f->dev = strdup(t);
    } else {
        return error_setf(err,
                          "invalid guestfwd rule '%s': the target must be cmd:COMMAND, "
                          "tcp:HOST:PORT or unix:PATH",
                          rule);
    }
    if (!f->cmd && !f->dev)
        return error_setf(err, "out of memory");
    return 0;
}

static int parse_guestfwd(const char *rule, const struct net_user_cfg *c, struct net_guestfwd *f,
                          struct error *err)
{
    char proto[8], server[64], port[16];
    const char *p = rule;
    memset(f, 0, sizeof(*f));
    if (take(&p, ':', proto, sizeof(proto)) < 0 || take(&p, ':', server, sizeof(server)) < 0 ||
        take(&p, '-', port, sizeof(port)) < 0)
        return error_setf(err, "invalid guestfwd rule '%s': expected tcp:[server]:port-TARGET",
                          rule);
    if (strcmp(proto, "tcp") && proto[0])
        return error_setf(err, "invalid guestfwd rule '%s': only tcp is supported", rule);
    if (server[0]) {
        if (parse_addr(server, &f->server) < 0)
            return error_setf(err, "invalid guestfwd rule '%s': bad server address '%s'", rule,
                              server);
        if ((f->server.s_addr & c->mask.s_addr) != c->net.s_addr)
            return error_setf(err, "invalid guestfwd rule '%s': server '%s' is outside net", rule,
                              server);
    }
    if (parse_port(port, 1, &f->port) < 0)
        return error_setf(err, "invalid guestfwd rule '%s': bad port '%s'", rule, port);
    return parse_guestfwd_target(rule, p, f, err);
}

/* Byte i of an IPv6 netmask of len bits. */
static uint8_t mask6_byte(uint64_t len, unsigned i)
{
    uint64_t bits = len > i * 8u ? len - i * 8u : 0;
    return (uint8_t)(0xff00 >> (bits > 8 ? 8 : bits));
}

/* ipv6-net=ADDR[/LEN] or ipv6-prefix= and ipv6-prefixlen=, then ipv6-host= and ipv6-dns= in
 * that network (defaults prefix + 2 and + 3), as QEMU checks them. */
static int parse_ipv6(const struct opts *o, struct net_user_cfg *c, struct error *err)
{
    char buf[64];
    const char *net = opts_get_str(o, "ipv6-net");
    const char *prefix = opts_get_str(o, "ipv6-prefix");
    uint64_t len = 64;
    if (opts_has(o, "ipv6-net") && (prefix || opts_has(o, "ipv6-prefixlen")))
        return error_setf(err, "ipv6-net= cannot be combined with ipv6-prefix= or ipv6-prefixlen=");
    if (!prefix) {
        if (strlen(net) >= sizeof(buf))
            return error_setf(err, "invalid ipv6-net '%s'", net);
        strcpy(buf, net);
        char *slash = strchr(buf, '/');
        if (slash) {
            *slash = 0;
            if (opts_parse_number(slash + 1, &len) < 0)
                return error_setf(err, "invalid ipv6-net '%s': bad prefix length", net);
        }
        prefix = buf;
    } else if (opts_get_number(o, "ipv6-prefixlen", &len, err) < 0) {
        return -1;
    }
    if (inet_pton(AF_INET6, prefix, &c->prefix6) != 1)
        return error_setf(err, "invalid IPv6 prefix '%s'", prefix);
    if (len > 126)
        return error_setf(err, "IPv6 prefix length %llu: must be 0..126", (unsigned long long)len);
    c->prefix6_len = (unsigned)len;
    /* The network part of the prefix, then host and DNS in it. */
    for (unsigned i = 0; i < 16; i++)
        c->prefix6.s6_addr[i] &= mask6_byte(len, i);
    static const char *const keys[] = {"ipv6-host", "ipv6-dns"};
    struct in6_addr *outs[] = {&c->host6, &c->dns6};
    for (unsigned k = 0; k < 2; k++) {
        const char *s = opts_get_str(o, keys[k]);
        *outs[k] = c->prefix6;
        outs[k]->s6_addr[15] |= (uint8_t)(2 + k);
        if (s && inet_pton(AF_INET6, s, outs[k]) != 1)
            return error_setf(err, "invalid %s address '%s'", keys[k], s);
        for (unsigned i = 0; i < 16; i++)
            if ((outs[k]->s6_addr[i] & mask6_byte(len, i)) != c->prefix6.s6_addr[i])
                return error_setf(err, "%s address '%s' is outside the IPv6 network", keys[k],
                                  s ? s : "(default)");
    }
    return 0;
}

static void user_cfg_free(struct net_user_cfg *c)
{
    free(c->fwd);
    for (size_t i = 0; i < c->ndnssearch; i++)
        free(c->dnssearch[i]);
    free(c->dnssearch);
    for (size_t i = 0; i < c->ngfwd; i++) {
        free(c->gfwd[i].cmd);
        free(c->gfwd[i].dev);
    }
    free(c->gfwd);
}

static int bool_opt(const struct opts *o, const char *key, bool *out, struct error *err)
{
    int r = opts_get_bool(o, key, out, err);
    return r < 0 ? -1 : 0;
}

static int create_user(const struct opts *o, const char *text, struct netdev *nd, struct error *err)
{
    struct net_user_cfg c;
    memset(&c, 0, sizeof(c));
    char **rules = NULL;
    size_t nrules = 0;
    int ret = -1;
    if (parse_net(opts_get_str(o, "net"), &c.net, &c.mask, err) < 0 ||
        net_member(o, "host", &c, 2, &c.host, err) < 0 ||
        net_member(o, "dhcpstart", &c, 15, &c.dhcp, err) < 0 ||
        net_member(o, "dns", &c, 3, &c.dns, err) < 0)
        goto out;
    if (bool_opt(o, "restrict", &c.restricted, err) < 0 || bool_opt(o, "ipv4", &c.ipv4, err) < 0 ||
        bool_opt(o, "ipv6", &c.ipv6, err) < 0)
        goto out;
    if (!c.ipv4 && !c.ipv6) {
        error_setf(err, "ipv4=off and ipv6=off: at least one must be enabled");
        goto out;
    }
    c.hostname = opts_get_str(o, "hostname");
    if (c.hostname && strlen(c.hostname) > 32) {
        error_setf(err, "hostname '%s' is longer than 32 characters", c.hostname);
        goto out;
    }
    c.domainname = opts_get_str(o, "domainname");
    c.tftp = opts_get_str(o, "tftp");
    c.tftp_server_name = opts_get_str(o, "tftp-server-name");
    c.bootfile = opts_get_str(o, "bootfile");
    if (opts_has(o, "smb") || opts_has(o, "smbserver")) {
        error_setf(err, "smb= is not supported: kemu runs no SMB server");
        goto out;
    }
    if (parse_ipv6(o, &c, err) < 0)
        goto out;
    /* dnssearch= repeats: slirp takes a NULL-terminated list. */
    if (collect_values(text, "dnssearch", &c.dnssearch, &c.ndnssearch, err) < 0)
        goto out;
    if (c.ndnssearch) {
        char **v = realloc(c.dnssearch, (c.ndnssearch + 1) * sizeof(*v));
        if (!v) {
            error_setf(err, "out of memory");
            goto out;
        }
        v[c.ndnssearch] = NULL;
        c.dnssearch = v;
    }

    if (collect_values(text, "hostfwd", &rules, &nrules, err) < 0)
        goto out;
    if (nrules) {
        c.fwd = calloc(nrules, sizeof(*c.fwd));
        if (!c.fwd) {
            error_setf(err, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < nrules; i++) {
        if (parse_hostfwd(rules[i], &c, &c.fwd[i], err) < 0)
            goto out;
        c.nfwd++;
    }
    free_strv(rules, nrules);
    rules = NULL;
    nrules = 0;
    if (collect_values(text, "guestfwd", &rules, &nrules, err) < 0)
        goto out;
    if (nrules) {
        c.gfwd = calloc(nrules, sizeof(*c.gfwd));
        if (!c.gfwd) {
            error_setf(err, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < nrules; i++) {
        if (parse_guestfwd(rules[i], &c, &c.gfwd[i], err) < 0)
            goto out;
        c.ngfwd++;
    }
#ifdef CONFIG_SLIRP
    ret = net_slirp_init(nd, &c, err);
    char net[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &c.net, net, sizeof(net));
    nd->type = "user";
    snprintf(nd->info, sizeof(nd->info), "net=%s,restrict=%s", net, c.restricted ? "on" : "off");
#else
    (void)nd;
    error_setf(err, "user-mode networking is not available: kemu was built without libslirp "
                    "(configure with -Dslirp=enabled)");
#endif
out:
    free_strv(rules, nrules);
    user_cfg_free(&c);
    return ret;
}

/* fds=a:b:c (and vhostfds=), as QEMU: decimal descriptors separated by colons. */
static int parse_fd_list(const char *key, const char *text, int *fds, unsigned *nfds,
                         struct error *err)
{
    const char *p = text;
    *nfds = 0;
    for (;;) {
        char num[16];
        size_t l = strcspn(p, ":");
        uint64_t v;
        if (l == 0 || l >= sizeof(num))
            return error_setf(err, "invalid %s '%s': expected fd:fd:...", key, text);
        memcpy(num, p, l);
        num[l] = 0;
        if (opts_parse_number(num, &v) < 0 || v > 0x7fffffff)
            return error_setf(err, "invalid %s '%s': '%s' is not a descriptor", key, text, num);
        if (*nfds == NETDEV_MAX_QUEUES)
            return error_setf(err, "%s= has more than %d descriptors", key, NETDEV_MAX_QUEUES);
        for (unsigned i = 0; i < *nfds; i++)
            if (fds[i] == (int)v)
                return error_setf(err, "invalid %s '%s': fd %s is given twice", key, text, num);
        fds[(*nfds)++] = (int)v;
        if (!p[l])
            return 0;
        p += l + 1;
    }
}

static int parse_fds(const char *text, struct net_tap_cfg *c, struct error *err)
{
    return parse_fd_list("fds", text, c->fds, &c->nfds, err);
}

/* vhost=, vhostfd=, vhostfds= as QEMU takes them: a vhost descriptor implies vhost=on unless
 * vhost=off says otherwise, which is then an error. Called once the queue count is known. */
static int parse_vhost(const struct opts *o, struct net_tap_cfg *c, struct error *err)
{
    bool has_fd = opts_has(o, "vhostfd"), has_fds = opts_has(o, "vhostfds");
    c->vhost = has_fd || has_fds;
    if (opts_has(o, "vhost") && bool_opt(o, "vhost", &c->vhost, err) < 0)
        return -1;
    if (!c->vhost) {
        if (has_fd || has_fds)
            return error_setf(err, "%s= is not valid without vhost",
                              has_fd ? "vhostfd" : "vhostfds");
        return 0;
    }
    if (has_fd && has_fds)
        return error_setf(err, "vhostfd= and vhostfds= cannot be combined");
    if (has_fd) {
        uint64_t v;
        if (opts_get_number(o, "vhostfd", &v, err) < 0)
            return -1;
        if (v > 0x7fffffff)
            return error_setf(err, "invalid vhostfd '%s'", opts_get_str(o, "vhostfd"));
        if (c->queues != 1)
            return error_setf(err, "vhostfd= gives one descriptor for %u queues (use vhostfds=)",
                              c->queues);
        c->vhostfds[0] = (int)v;
        c->nvhostfds = 1;
    } else if (has_fds) {
        if (!c->nfds)
            return error_setf(err, "vhostfds= needs fds=");
        if (parse_fd_list("vhostfds", opts_get_str(o, "vhostfds"), c->vhostfds, &c->nvhostfds,
                          err) < 0)
            return -1;
        if (c->nvhostfds != c->nfds)
            return error_setf(err, "vhostfds= has %u descriptors for %u fds=", c->nvhostfds,
                              c->nfds);
    } else if (access("/dev/vhost-net", F_OK) < 0) {
        return error_setf(err, "vhost-net requested but /dev/vhost-net is not available");
    }
    return 0;
}

static int create_tap(const struct opts *o, struct netdev *nd, struct error *err)
{
    struct net_tap_cfg c = {.fd = -1};
    c.ifname = opts_get_str(o, "ifname");
    if (c.ifname && (strlen(c.ifname) >= 16 || !c.ifname[0] || strchr(c.ifname, '/')))
        return error_setf(err, "invalid ifname '%s' (1..15 characters, no '/')", c.ifname);
    c.script = opts_get_str(o, "script");
    c.downscript = opts_get_str(o, "downscript");
    if (c.script && (!strcmp(c.script, "no") || !c.script[0]))
        c.script = NULL;
    if (c.downscript && (!strcmp(c.downscript, "no") || !c.downscript[0]))
        c.downscript = NULL;
    if (opts_has(o, "fd")) {
        uint64_t v;
        if (opts_get_number(o, "fd", &v, err) < 0)
            return -1;
        if (v > 0x7fffffff)
            return error_setf(err, "invalid fd '%s'", opts_get_str(o, "fd"));
        c.fd = (int)v;
        if (opts_has(o, "ifname") || opts_has(o, "script") || opts_has(o, "downscript") ||
            opts_has(o, "queues") || opts_has(o, "fds") || opts_has(o, "vhostfds"))
            return error_setf(err, "fd= cannot be combined with ifname=, script=, downscript=, "
                                   "queues=, fds= or vhostfds=");
        c.script = c.downscript = NULL;
    }
    c.queues = 1;
    if (opts_has(o, "fds")) {
        if (opts_has(o, "ifname") || opts_has(o, "script") || opts_has(o, "downscript") ||
            opts_has(o, "queues") || opts_has(o, "vnet_hdr"))
            return error_setf(err, "fds= cannot be combined with ifname=, script=, downscript=, "
                                   "vnet_hdr= or queues=");
        if (parse_fds(opts_get_str(o, "fds"), &c, err) < 0)
            return -1;
        c.queues = c.nfds;
        c.script = c.downscript = NULL;
    } else if (opts_has(o, "queues")) {
        uint64_t v;
        if (opts_get_number(o, "queues", &v, err) < 0)
            return -1;
        if (v < 1 || v > NETDEV_MAX_QUEUES)
            return error_setf(err, "queues=%s: must be 1..%d", opts_get_str(o, "queues"),
                              NETDEV_MAX_QUEUES);
        c.queues = (unsigned)v;
    }
    if (opts_has(o, "sndbuf")) {
        uint64_t v;
        if (opts_get_size(o, "sndbuf", &v, err) < 0)
            return -1;
        c.sndbuf = v > INT_MAX ? INT_MAX : (int)v; /* QEMU clamps the same way */
        c.sndbuf_given = true;
    }
    if (opts_has(o, "vnet_hdr")) {
        c.vnet_hdr_given = true;
        if (bool_opt(o, "vnet_hdr", &c.vnet_hdr, err) < 0)
            return -1;
    } else {
        c.vnet_hdr = true;
    }
    if (parse_vhost(o, &c, err) < 0)
        return -1;
    if (net_tap_init(nd, &c, err) < 0)
        return -1;
    nd->type = "tap";
    for (unsigned i = 0; i < NETDEV_MAX_QUEUES; i++)
        nd->shown_fd[i] = c.fd >= 0 ? (i ? -1 : c.fd) : i < c.nfds ? c.fds[i] : -1;
    if (c.fd < 0 && !c.nfds) {
        const struct nd_fd_backend *b = nd->be;
        snprintf(nd->info, sizeof(nd->info), "ifname=%s,script=%s,downscript=%s", b->ifname,
                 opts_get_str(o, "script"), opts_get_str(o, "downscript"));
    }
    return 0;
}

/* ---- the I/O thread ---- */

static void netdev_wake(struct netdev *nd)
{
    os_event_signal(nd->wake_fd);
}

static void wake_cb(void *opaque)
{
    struct netdev *nd = opaque;
    os_event_drain(nd->wake_fd);
    pthread_mutex_lock(&nd->lock);
    if (nd->req_pending) {
        void (*fn)(void *) = nd->req_fn;
        void *op = nd->req_opaque;
        pthread_mutex_unlock(&nd->lock);
        fn(op);
        pthread_mutex_lock(&nd->lock);
        nd->req_pending = false;
        pthread_cond_broadcast(&nd->cond);
    }
    pthread_mutex_unlock(&nd->lock);
}

static int add_handler(struct netdev *nd, int fd, uint32_t events, netdev_fd_cb cb, void *opaque,
                       unsigned first, unsigned end, struct error *err)
{
    for (unsigned i = first; i < end; i++) {
        struct nd_handler *h = &nd->h[i];
        if (h->state != ND_FREE)
            continue;
        struct epoll_event ev = {.events = events, .data.ptr = h};
        if (epoll_ctl(nd->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            return error_setf_errno(err, errno, "netdev '%s': epoll_ctl(add fd %d)", nd->id, fd);
        h->fd = fd;
        h->cb = cb;
        h->opaque = opaque;
        h->state = ND_LIVE;
        return 0;
    }
    return error_setf(err, "netdev '%s': too many watched descriptors", nd->id);
}

/* Slots [0, ND_INTERNAL_HANDLERS) are the core's and the backend's, the rest the frontend's. */
int netdev_add_internal_fd(struct netdev *nd, int fd, uint32_t events, netdev_fd_cb cb,
                           void *opaque, struct error *err)
{
    return add_handler(nd, fd, events, cb, opaque, 0, ND_INTERNAL_HANDLERS, err);
}

int netdev_add_fd(struct netdev *nd, int fd, netdev_fd_cb cb, void *opaque, struct error *err)
{
    return add_handler(nd, fd, EPOLLIN, cb, opaque, ND_INTERNAL_HANDLERS, ND_HANDLERS, err);
}

static struct nd_handler *find_handler(struct netdev *nd, int fd)
{
    for (unsigned i = 0; i < ND_HANDLERS; i++)
        if (nd->h[i].state == ND_LIVE && nd->h[i].fd == fd)
            return &nd->h[i];
    return NULL;
}

int netdev_modify_fd(struct netdev *nd, int fd, uint32_t events)
{
    struct nd_handler *h = find_handler(nd, fd);
    if (!h)
        return -1;
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(nd->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void netdev_remove_fd(struct netdev *nd, int fd)
{
    struct nd_handler *h = find_handler(nd, fd);
    if (!h)
        return;
    epoll_ctl(nd->epfd, EPOLL_CTL_DEL, fd, NULL);
    /* The slot is reused only after this round: an event collected for it is then skipped. */
    h->state = ND_DEAD;
}

int netdev_poll_add(struct netdev *nd, int fd, short events)
{
    if (nd->npfds == nd->cap_pfds) {
        int cap = nd->cap_pfds ? 2 * nd->cap_pfds : 16;
        struct pollfd *p = realloc(nd->pfds, (size_t)cap * sizeof(*p));
        if (!p)
            return -1; /* slirp treats -1 as "not polled" */
        nd->pfds = p;
        nd->cap_pfds = cap;
    }
    nd->pfds[nd->npfds] = (struct pollfd){.fd = fd, .events = events};
    return nd->npfds++;
}

void netdev_deliver_queue(struct netdev *nd, unsigned queue, const uint8_t *frame, size_t len)
{
    if (!nd->fe)
        return; /* no guest driver: drop, as a cable plugged into nothing */
    nd->received = true;
    nd->fe->receive(nd->fe_opaque, queue, frame, len);
}

void netdev_deliver(struct netdev *nd, const uint8_t *frame, size_t len)
{
    netdev_deliver_queue(nd, 0, frame, len);
}

/* One round of the I/O loop: wait (at most timeout_ms, -1 forever, lowered by the backend's
 * timers), then dispatch. */
static void netdev_round(struct netdev *nd, int timeout)
{
    struct epoll_event evs[32];
    int n = 0;
    if (nd->ops->poll_fill) {
        /* The backend's own descriptors (slirp's sockets) change every round: poll() them
         * together with our epoll set. */
        nd->npfds = 0;
        netdev_poll_add(nd, nd->epfd, POLLIN);
        int t = -1;
        nd->ops->poll_fill(nd, &t);
        if (timeout >= 0 && (t < 0 || t > timeout))
            t = timeout;
        int r = poll(nd->pfds, (nfds_t)nd->npfds, t);
        if (r < 0 && errno != EINTR)
            fprintf(stderr, "kemu: netdev '%s': poll: %s\n", nd->id, strerror(errno));
        if (nd->ops->poll_done)
            nd->ops->poll_done(nd, r < 0);
        if (r > 0 && nd->pfds[0].revents)
            n = epoll_wait(nd->epfd, evs, 32, 0);
    } else {
        /* Everything is in the epoll set (tap): one system call per wake-up. */
        n = epoll_wait(nd->epfd, evs, 32, timeout);
        if (n < 0 && errno != EINTR)
            fprintf(stderr, "kemu: netdev '%s': epoll_wait: %s\n", nd->id, strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        struct nd_handler *h = evs[i].data.ptr;
        if (h->state == ND_LIVE)
            h->cb(h->opaque);
    }
    for (unsigned i = 0; i < ND_HANDLERS; i++)
        if (nd->h[i].state == ND_DEAD)
            nd->h[i].state = ND_FREE;
    if (nd->received) {
        nd->received = false;
        if (nd->fe && nd->fe->flush)
            nd->fe->flush(nd->fe_opaque);
    }
}

static void *netdev_thread(void *arg)
{
    struct netdev *nd = arg;
    char name[16]; /* the kernel keeps 15 characters */
    snprintf(name, sizeof(name), "net %s", nd->id);
    pthread_setname_np(pthread_self(), name);
    for (;;) {
        pthread_mutex_lock(&nd->lock);
        bool quit = nd->quit;
        pthread_mutex_unlock(&nd->lock);
        if (quit)
            break;
        netdev_round(nd, -1);
    }
    return NULL;
}

void netdev_poll(struct netdev *nd, int timeout_ms)
{
    if (!nd->thread_running)
        netdev_round(nd, timeout_ms);
}

void netdev_run_sync(struct netdev *nd, void (*fn)(void *opaque), void *opaque)
{
    if (!nd->thread_running || pthread_equal(pthread_self(), nd->thread)) {
        fn(opaque);
        return;
    }
    pthread_mutex_lock(&nd->sync_lock);
    pthread_mutex_lock(&nd->lock);
    nd->req_fn = fn;
    nd->req_opaque = opaque;
    nd->req_pending = true;
    netdev_wake(nd);
    while (nd->req_pending)
        pthread_cond_wait(&nd->cond, &nd->lock);
    pthread_mutex_unlock(&nd->lock);
    pthread_mutex_unlock(&nd->sync_lock);
}

/* ---- frontend API ---- */

const char *netdev_id(const struct netdev *nd)
{
    return nd->id;
}

int netdev_claim(struct netdev *nd, struct error *err)
{
    if (__atomic_exchange_n(&nd->claimed, true, __ATOMIC_SEQ_CST))
        return error_setf(err, "netdev '%s' is already in use", nd->id);
    return 0;
}

void netdev_release(struct netdev *nd)
{
    __atomic_store_n(&nd->claimed, false, __ATOMIC_SEQ_CST);
}

unsigned netdev_vnet_hdr_len(const struct netdev *nd)
{
    return nd->vnet_hdr_len;
}

unsigned netdev_offload_caps(const struct netdev *nd)
{
    return nd->caps;
}

unsigned netdev_queues(const struct netdev *nd)
{
    return nd->nqueues;
}

int netdev_hostfwd(struct netdev *nd, bool add, const char *rule, struct error *err)
{
    if (!nd->type || strcmp(nd->type, "user")) {
        error_setf(err, "netdev '%s' is not a user-mode network", nd->id);
        return -EINVAL;
    }
#ifdef CONFIG_SLIRP
    struct net_user_cfg c;
    struct net_hostfwd f;
    memset(&c, 0, sizeof(c));
    net_slirp_addrs(nd, &c);
    if (net_hostfwd_parse(rule, add, &c, &f, err) < 0)
        return -EINVAL;
    if (net_slirp_hostfwd(nd, add, &f) < 0)
        return add ? -EEXIST : -ENOENT;
    return 0;
#else
    error_setf(err, "kemu was built without libslirp");
    return -EINVAL;
#endif
}

char *netdev_usernet_info(struct netdev *nd)
{
#ifdef CONFIG_SLIRP
    if (nd->type && !strcmp(nd->type, "user"))
        return net_slirp_connection_info(nd);
#endif
    return NULL;
}

const char *netdev_type(const struct netdev *nd)
{
    return nd->type ? nd->type : "socket";
}

void netdev_info_str(const struct netdev *nd, unsigned queue, char *buf, size_t len)
{
    if (nd->info[0] || queue >= NETDEV_MAX_QUEUES || nd->shown_fd[queue] < 0)
        snprintf(buf, len, "%s", nd->info);
    else
        snprintf(buf, len, "fd=%d", nd->shown_fd[queue]);
}

void netdev_set_frontend(struct netdev *nd, const struct netdev_frontend *fe, void *opaque)
{
    nd->fe = fe;
    nd->fe_opaque = opaque;
    nd->received = false;
}

void netdev_set_rx_enabled(struct netdev *nd, unsigned queue, bool on)
{
    if (queue >= nd->nqueues || nd->rx_on[queue] == on)
        return;
    nd->rx_on[queue] = on;
    if (queue == 0)
        nd->rx_enabled = on;
    if (nd->ops->set_rx_enabled)
        nd->ops->set_rx_enabled(nd, queue, on);
}

int netdev_send(struct netdev *nd, unsigned queue, const struct iovec *iov, int iovcnt)
{
    if (queue >= nd->nqueues)
        return -1;
    if (nd->ops->send_queue)
        return nd->ops->send_queue(nd, queue, iov, iovcnt);
    return nd->ops->send(nd, iov, iovcnt);
}

int netdev_set_active_queues(struct netdev *nd, unsigned n, struct error *err)
{
    if (n < 1 || n > nd->nqueues)
        return error_setf(err, "netdev '%s': %u queues in use, it has %u", nd->id, n, nd->nqueues);
    if (n == nd->active_queues)
        return 0;
    if (nd->ops->set_active_queues && nd->ops->set_active_queues(nd, n, err) < 0)
        return -1;
    nd->active_queues = n;
    return 0;
}

int netdev_set_offloads(struct netdev *nd, unsigned offloads, struct error *err)
{
    if (offloads & ~nd->caps)
        return error_setf(err, "netdev '%s': offloads 0x%x not supported", nd->id,
                          offloads & ~nd->caps);
    return nd->ops->set_offloads ? nd->ops->set_offloads(nd, offloads, err) : 0;
}

/* ---- creation ---- */

static struct netdev *netdev_alloc(const char *id, struct error *err)
{
    struct netdev *nd = calloc(1, sizeof(*nd));
    if (!nd || !(nd->id = strdup(id))) {
        free(nd);
        error_setf(err, "out of memory");
        return NULL;
    }
    nd->epfd = nd->wake_fd = -1;
    for (unsigned i = 0; i < NETDEV_MAX_QUEUES; i++)
        nd->shown_fd[i] = -1;
    nd->rx_enabled = true;
    nd->nqueues = nd->active_queues = 1;
    for (unsigned i = 0; i < NETDEV_MAX_QUEUES; i++)
        nd->rx_on[i] = true;
    pthread_mutex_init(&nd->lock, NULL);
    pthread_mutex_init(&nd->sync_lock, NULL);
    pthread_cond_init(&nd->cond, NULL);
    nd->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (nd->epfd < 0) {
        error_setf_errno(err, errno, "epoll_create1");
        return nd;
    }
    nd->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (nd->wake_fd < 0) {
        error_setf_errno(err, errno, "eventfd");
        return nd;
    }
    netdev_add_internal_fd(nd, nd->wake_fd, EPOLLIN, wake_cb, nd, err);
    return nd;
}

static int netdev_start(struct netdev *nd, struct error *err)
{
    int r = pthread_create(&nd->thread, NULL, netdev_thread, nd);
    if (r)
        return error_setf_errno(err, r, "netdev '%s': cannot start its thread", nd->id);
    nd->thread_running = true;
    return 0;
}

void netdev_destroy(struct netdev *nd)
{
    if (!nd)
        return;
    if (nd->thread_running) {
        pthread_mutex_lock(&nd->lock);
        nd->quit = true;
        pthread_mutex_unlock(&nd->lock);
        netdev_wake(nd);
        pthread_join(nd->thread, NULL);
        nd->thread_running = false;
    }
    if (nd->ops && nd->ops->destroy)
        nd->ops->destroy(nd);
    if (nd->wake_fd >= 0)
        close(nd->wake_fd);
    if (nd->epfd >= 0)
        close(nd->epfd);
    pthread_mutex_destroy(&nd->lock);
    pthread_mutex_destroy(&nd->sync_lock);
    pthread_cond_destroy(&nd->cond);
    free(nd->pfds);
    free(nd->id);
    free(nd);
}

int netdev_create_fds(const char *id, const int *fds, unsigned n, bool vnet_hdr, bool own_thread,
                      struct netdev **out, struct error *err)
{
    *out = NULL;
    struct netdev *nd = n >= 1 && n <= NETDEV_MAX_QUEUES ? netdev_alloc(id, err) : NULL;
    if (!nd) {
        for (unsigned i = 0; i < n; i++)
            close(fds[i]);
        if (!err->set)
            error_setf(err, "%u queues (1..%d)", n, NETDEV_MAX_QUEUES);
        return -1;
    }
    if (err->set) {
        for (unsigned i = 0; i < n; i++)
            close(fds[i]);
        netdev_destroy(nd);
        return -1;
    }
    if (nd_fd_backend_init(nd, fds, n, vnet_hdr, false, err) < 0 ||
        (own_thread && netdev_start(nd, err) < 0)) {
        netdev_destroy(nd);
        return -1;
    }
    *out = nd;
    return 0;
}

int netdev_create_fd(const char *id, int fd, bool vnet_hdr, bool own_thread, struct netdev **out,
                     struct error *err)
{
    return netdev_create_fds(id, &fd, 1, vnet_hdr, own_thread, out, err);
}

int netdev_create(const char *text, struct netdev **out, struct error *err)
{
    *out = NULL;
    /* The type picks the key table: the first element, or a type= element. */
    char type[32] = "";
    const char *p = text;
    if (!strncmp(p, "type=", 5))
        p += 5;
    size_t tl = strcspn(p, ",");
    if (tl < sizeof(type)) {
        memcpy(type, p, tl);
        type[tl] = 0;
    }
    if (opts_is_help(type)) {
        netdev_print_help(stdout);
        return 1;
    }
    const struct opts_group *g;
    if (!strcmp(type, "user"))
        g = &user_group;
    else if (!strcmp(type, "tap"))
        g = &tap_group;
    else if (!type[0])
        return error_setf(err, "a backend type is required (user, tap)");
    else
        return error_setf(err, "unknown netdev type '%s' (user, tap)", type);
    struct opts o;
    memset(&o, 0, sizeof(o));
    if (opts_parse(&o, g, text, err) < 0) {
        opts_free(&o);
        return -1;
    }
    if (o.help) {
        opts_print_help(g, stdout);
        opts_free(&o);
        return 1;
    }
    const char *id = opts_get_str(&o, "id");
    if (!id || !*id) {
        opts_free(&o);
        return error_setf(err, "parameter 'id' is missing");
    }
    struct netdev *nd = netdev_alloc(id, err);
    int r = -1;
    if (nd && !err->set) {
        r = g == &user_group ? create_user(&o, text, nd, err) : create_tap(&o, nd, err);
        if (r == 0)
            r = netdev_start(nd, err);
    }
    opts_free(&o);
    if (r < 0) {
        netdev_destroy(nd);
        return -1;
    }
    *out = nd;
    return 0;
}
