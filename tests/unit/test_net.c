/* Unit tests for -netdev: option parsing, the user backend end to end (DHCP, ARP, hostfwd)
 * without a guest, and a tap device inside a private network namespace when permitted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kemu-config.h"
#include "net/net.h"

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/* ---- a frontend that collects frames ---- */

#define MAX_FRAMES 256

struct collector {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint8_t *frames[MAX_FRAMES];
    size_t lens[MAX_FRAMES];
    unsigned queues[MAX_FRAMES]; /* the backend queue each came from */
    unsigned n;
    unsigned flushes;
    unsigned writable;
};

static void col_receive(void *opaque, unsigned queue, const uint8_t *frame, size_t len)
{
    struct collector *c = opaque;
    pthread_mutex_lock(&c->lock);
    if (c->n < MAX_FRAMES) {
        c->queues[c->n] = queue;
        c->frames[c->n] = malloc(len);
        memcpy(c->frames[c->n], frame, len);
        c->lens[c->n++] = len;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void col_flush(void *opaque)
{
    struct collector *c = opaque;
    pthread_mutex_lock(&c->lock);
    c->flushes++;
    pthread_mutex_unlock(&c->lock);
}

static void col_writable(void *opaque, unsigned queue)
{
    (void)queue;
    struct collector *c = opaque;
    pthread_mutex_lock(&c->lock);
    c->writable++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static const struct netdev_frontend col_fe = {
    .receive = col_receive, .flush = col_flush, .writable = col_writable};

struct attach_arg {
    struct netdev *nd;
    struct collector *c;
};

static void attach_fn(void *opaque)
{
    struct attach_arg *a = opaque;
    netdev_set_frontend(a->nd, a->c ? &col_fe : NULL, a->c);
}

static void col_init(struct collector *c, struct netdev *nd)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    struct attach_arg a = {nd, c};
    netdev_run_sync(nd, attach_fn, &a);
}

static void col_fini(struct collector *c, struct netdev *nd)
{
    struct attach_arg a = {nd, NULL};
    netdev_run_sync(nd, attach_fn, &a);
    for (unsigned i = 0; i < c->n; i++)
        free(c->frames[i]);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
}

/* Wait until frame number idx arrived (or timeout): returns it, copied, or NULL. */
static uint8_t *col_wait(struct collector *c, unsigned idx, size_t *len, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    uint8_t *r = NULL;
    pthread_mutex_lock(&c->lock);
    while (c->n <= idx)
        if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT)
            break;
    if (c->n > idx) {
        *len = c->lens[idx];
        r = malloc(*len);
        memcpy(r, c->frames[idx], *len);
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

struct send_arg {
    struct netdev *nd;
    unsigned queue;
    const void *frame;
    size_t len;
    int ret;
};

static void send_fn(void *opaque)
{
    struct send_arg *a = opaque;
    /* Two segments, to exercise the gathering. */
    size_t half = a->len / 2;
    struct iovec iov[2] = {{(void *)a->frame, half}, {(uint8_t *)a->frame + half, a->len - half}};
    a->ret = netdev_send(a->nd, a->queue, iov, 2);
}

static int send_frame_q(struct netdev *nd, unsigned queue, const void *frame, size_t len)
{
    struct send_arg a = {nd, queue, frame, len, -1};
    netdev_run_sync(nd, send_fn, &a);
    return a.ret;
}

static int send_frame(struct netdev *nd, const void *frame, size_t len)
{
    return send_frame_q(nd, 0, frame, len);
}

struct active_arg {
    struct netdev *nd;
    unsigned n;
    int ret;
};

static void active_fn(void *opaque)
{
    struct active_arg *a = opaque;
    struct error err = {0};
    a->ret = netdev_set_active_queues(a->nd, a->n, &err);
}

static int set_active(struct netdev *nd, unsigned n)
{
    struct active_arg a = {nd, n, -1};
    netdev_run_sync(nd, active_fn, &a);
    return a.ret;
}

/* ---- option parsing ---- */

static void expect_create_error(const char *text, const char *what)
{
    struct netdev *nd = (struct netdev *)1;
    struct error err = {0};
    assert_int_equal(netdev_create(text, &nd, &err), -1);
    assert_null(nd);
    assert_true(err.set);
    if (!strstr(err.msg, what))
        fail_msg("'%s': message \"%s\" lacks \"%s\"", text, err.msg, what);
}

static void test_parse_errors(void **state)
{
    expect_create_error("", "type is required");
    expect_create_error("bogus,id=x", "unknown netdev type 'bogus'");
    expect_create_error("user", "'id' is missing");
    expect_create_error("tap,id=t0,nosuchkey=1", "nosuchkey");
    expect_create_error("user,id=n0,nosuchkey=1", "nosuchkey");
    expect_create_error("user,id=n0,net=10.0.2.0/33", "invalid net '10.0.2.0/33'");
    expect_create_error("user,id=n0,net=10.0.2.1/24", "host bits");
    expect_create_error("user,id=n0,net=300.0.2.0/24", "invalid net");
    expect_create_error("user,id=n0,net=10.0.2.0/255.0.255.0", "not contiguous");
    expect_create_error("user,id=n0,net=10.0.2.0/32", "room for hosts");
    expect_create_error("user,id=n0,net=10.0.0.0/29", "default dhcpstart address 10.0.0.15");
    expect_create_error("user,id=n0,net=10.0.0.0/30,dhcpstart=10.0.0.1",
                        "default dns address 10.0.0.3");
    expect_create_error("user,id=n0,net=10.0.0.0/28", "default dhcpstart");
    expect_create_error("user,id=n0,host=10.0.3.2", "host address '10.0.3.2'");
    expect_create_error("user,id=n0,dhcpstart=10.0.2.255", "dhcpstart address");
    expect_create_error("user,id=n0,dns=x", "invalid dns address 'x'");
    expect_create_error("user,id=n0,restrict=maybe", "restrict");
    expect_create_error("user,id=n0,ipv4=off,ipv6=off", "at least one");
    expect_create_error("user,id=n0,hostname=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "hostname");
    expect_create_error("user,id=n0,hostfwd=tcp:2222:22", "invalid hostfwd rule 'tcp:2222:22'");
    expect_create_error("user,id=n0,hostfwd=sctp::2222-:22", "protocol 'sctp'");
    expect_create_error("user,id=n0,hostfwd=tcp::99999-:22", "bad host port '99999'");
    expect_create_error("user,id=n0,hostfwd=tcp::2222-:0", "bad guest port '0'");
    expect_create_error("user,id=n0,hostfwd=tcp:1.2.3:2222-:22", "bad host address '1.2.3'");
    expect_create_error("user,id=n0,hostfwd=tcp::2222-10.9.9.9:22", "outside net");
    /* A bad rule among good ones is found. */
    expect_create_error("user,id=n0,hostfwd=tcp::0-:22,hostfwd=udp::0-:x", "bad guest port 'x'");
    expect_create_error("user,id=n0,guestfwd=tcp:10.0.2.100:1234-chardev0",
                        "the target must be cmd:COMMAND, tcp:HOST:PORT or unix:PATH");
    expect_create_error("user,id=n0,guestfwd=tcp:10.0.2.100:1234-tcp:4321", "tcp:HOST:PORT");
    expect_create_error("user,id=n0,guestfwd=tcp:10.0.2.100:1234-tcp:[]:4321", "tcp:HOST:PORT");
    expect_create_error("user,id=n0,guestfwd=tcp:10.0.2.100:1234-tcp:localhost:0", "tcp:HOST:PORT");
    expect_create_error("user,id=n0,guestfwd=tcp:10.0.2.100:1234-unix:/"
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                        "too long");
    expect_create_error("user,id=n0,guestfwd=udp:10.0.2.100:1234-cmd:cat", "only tcp");
    expect_create_error("user,id=n0,guestfwd=tcp:10.0.2.100-cmd:cat", "invalid guestfwd rule");
    expect_create_error("user,id=n0,guestfwd=tcp:10.0.5.100:1234-cmd:cat", "outside net");
    /* IPv6 network keys as QEMU checks them; no SMB server. */
    expect_create_error("user,id=n0,ipv6-net=fd00::/127", "prefix length 127");
    expect_create_error("user,id=n0,ipv6-net=fd00::/x", "bad prefix length");
    expect_create_error("user,id=n0,ipv6-net=10.0.0.0/8", "invalid IPv6 prefix");
    expect_create_error("user,id=n0,ipv6-net=fd00::/64,ipv6-prefixlen=64", "cannot be combined");
    expect_create_error("user,id=n0,ipv6-prefix=fd00::,ipv6-prefixlen=x", "ipv6-prefixlen");
    expect_create_error("user,id=n0,ipv6-net=fd00::/64,ipv6-host=fd01::2", "outside the IPv6");
    expect_create_error("user,id=n0,ipv6-dns=nope", "invalid ipv6-dns address 'nope'");
    expect_create_error("user,id=n0,ipv6-prefix=fd00::,ipv6-prefixlen=120,ipv6-dns=fd00::1:3",
                        "outside the IPv6");
    expect_create_error("user,id=n0,smb=/tmp", "smb= is not supported");
    expect_create_error("tap,id=t0,ifname=abcdefghijklmnopq", "invalid ifname");
    expect_create_error("tap,id=t0,fd=x", "fd");
    expect_create_error("tap,id=t0,sndbuf=lots", "sndbuf");
    expect_create_error("tap,id=t0,fd=3,ifname=x", "cannot be combined");
    /* Multiqueue: queues= 1..31, fds= a colon list, neither with fd= nor with each other. */
    expect_create_error("tap,id=t0,queues=0", "queues=0: must be 1..31");
    expect_create_error("tap,id=t0,queues=32", "queues=32: must be 1..31");
    expect_create_error("tap,id=t0,queues=two", "queues");
    expect_create_error("tap,id=t0,fd=3,queues=2", "cannot be combined");
    expect_create_error("tap,id=t0,fd=3,fds=4:5", "cannot be combined");
    expect_create_error("tap,id=t0,fds=4:5,queues=2", "fds= cannot be combined");
    expect_create_error("tap,id=t0,fds=4:5,ifname=x", "fds= cannot be combined");
    expect_create_error("tap,id=t0,fds=4::5", "invalid fds '4::5'");
    expect_create_error("tap,id=t0,fds=4:x", "'x' is not a descriptor");
    expect_create_error("tap,id=t0,fds=4:5:4", "given twice");
    expect_create_error("user,id=n0,queues=2", "queues");
    /* vhost: a descriptor implies vhost=on, so vhost=off with one is a contradiction. */
    expect_create_error("tap,id=t0,vhost=off,vhostfd=4", "vhostfd= is not valid without vhost");
    expect_create_error("tap,id=t0,vhost=off,fds=4:5,vhostfds=6:7",
                        "vhostfds= is not valid without vhost");
    expect_create_error("tap,id=t0,vhostfd=x", "vhostfd");
    expect_create_error("tap,id=t0,vhost=maybe", "vhost");
    expect_create_error("tap,id=t0,vhostfds=4:5", "vhostfds= needs fds=");
    expect_create_error("tap,id=t0,fds=4:5,vhostfds=6", "vhostfds= has 1 descriptors for 2 fds=");
    expect_create_error("tap,id=t0,fds=4:5,vhostfds=6:6", "given twice");
    expect_create_error("tap,id=t0,queues=2,vhostfd=6", "use vhostfds=");
    expect_create_error("tap,id=t0,vhostfd=6,vhostfds=7", "cannot be combined");
    expect_create_error("tap,id=t0,fd=3,vhostfds=7", "cannot be combined");
    if (access("/dev/vhost-net", F_OK) < 0)
        expect_create_error("tap,id=t0,vhost=on",
                            "vhost-net requested but /dev/vhost-net is not available");
    /* An fd that is no tap. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    char text[64];
    snprintf(text, sizeof(text), "tap,id=t0,fd=%d", p[0]);
    expect_create_error(text, "is not a tap device");
    close(p[0]);
    close(p[1]);
    /* The default script does not exist here (or fails as non-root): a clear error, or, on a
     * machine that has one and lets us, success. */
    struct netdev *nd = NULL;
    struct error err = {0};
    if (access("/etc/qemu-ifup", F_OK) < 0 && netdev_create("tap,id=t0", &nd, &err) < 0)
        assert_true(strstr(err.msg, "qemu-ifup") || strstr(err.msg, "tun") ||
                    strstr(err.msg, "tap"));
    netdev_destroy(nd);
}

static void test_help(void **state)
{
    struct netdev *nd = NULL;
    struct error err = {0};
    /* Help goes to stdout; keep the test output short. */
    fflush(stdout);
    int saved = dup(1);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    int r1 = netdev_create("help", &nd, &err);
    int r2 = netdev_create("user,help", &nd, &err);
    int r3 = netdev_create("tap,id=x,help", &nd, &err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(devnull);
    assert_int_equal(r1, 1);
    assert_int_equal(r2, 1);
    assert_int_equal(r3, 1);
    assert_null(nd);
    assert_false(err.set);
}

#ifdef CONFIG_SLIRP

/* A free TCP port on 127.0.0.1 (racy in theory, fine for a test). */
static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t l = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

static void test_user_keys(void **state)
{
    struct error err = {0};
    struct netdev *nd = NULL;
    int p1 = free_port(), p2 = free_port();
    char text[512];
    snprintf(text, sizeof(text),
             "user,id=n0,net=192.168.76.0/255.255.255.0,host=192.168.76.1,dhcpstart=192.168.76."
             "50,dns=192.168.76.4,hostname=guest,domainname=example.org,restrict=off,ipv4=on,"
             "ipv6=off,tftp=/tmp,bootfile=pxe.0,"
             "hostfwd=tcp:127.0.0.1:%d-:22,hostfwd=tcp::%d-192.168.76.60:80,"
             "guestfwd=tcp:192.168.76.100:1234-cmd:cat,,x",
             p1, p2);
    if (netdev_create(text, &nd, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(netdev_id(nd), "n0");
    assert_int_equal(netdev_vnet_hdr_len(nd), 0);
    assert_int_equal(netdev_offload_caps(nd), 0);
    /* info network's view, as QEMU's: the network address and restrict=. */
    char info[128];
    netdev_info_str(nd, 0, info, sizeof(info));
    assert_string_equal(netdev_type(nd), "user");
    assert_string_equal(info, "net=192.168.76.0,restrict=off");
    /* Both repeated hostfwd rules listen. */
    int ports[2] = {p1, p2};
    for (int i = 0; i < 2; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)ports[i]),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
            fail_msg("hostfwd port %d: %s", ports[i], strerror(errno));
        close(s);
    }
    /* One frontend only. */
    assert_int_equal(netdev_claim(nd, &err), 0);
    assert_int_equal(netdev_claim(nd, &err), -1);
    assert_non_null(strstr(err.msg, "netdev 'n0' is already in use"));
    netdev_release(nd);
    netdev_destroy(nd);
    /* The same host port twice: slirp cannot bind the second. */
    snprintf(text, sizeof(text),
             "user,id=n1,hostfwd=tcp:127.0.0.1:%d-:22,hostfwd=tcp:127.0.0.1:%d-:23", p1, p1);
    memset(&err, 0, sizeof(err));
    assert_int_equal(netdev_create(text, &nd, &err), -1);
    assert_non_null(strstr(err.msg, "host forwarding"));
}

static uint16_t ip_csum(const uint8_t *p, size_t len)
{
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < len; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static size_t build_dhcp_discover(uint8_t *f)
{
    memset(f, 0, 14 + 20 + 8 + 548);
    memset(f, 0xff, 6);
    memcpy(f + 6, guest_mac, 6);
    f[12] = 0x08;
    uint8_t *ip = f + 14, *udp = ip + 20, *bp = udp + 8;
    size_t bplen = 548;
    ip[0] = 0x45;
    uint16_t tot = (uint16_t)(20 + 8 + bplen);
    ip[2] = (uint8_t)(tot >> 8);
    ip[3] = (uint8_t)tot;
    ip[8] = 64;
    ip[9] = 17;
    memset(ip + 16, 0xff, 4);
    uint16_t cs = ip_csum(ip, 20);
    ip[10] = (uint8_t)(cs >> 8);
    ip[11] = (uint8_t)cs;
    udp[1] = 68;
    udp[3] = 67;
    uint16_t ul = (uint16_t)(8 + bplen);
    udp[4] = (uint8_t)(ul >> 8);
    udp[5] = (uint8_t)ul;
    bp[0] = 1; /* BOOTREQUEST */
    bp[1] = 1;
    bp[2] = 6;
    memcpy(bp + 4, "\x12\x34\x56\x78", 4);
    memcpy(bp + 28, guest_mac, 6);
    uint8_t *opt = bp + 236;
    memcpy(opt, "\x63\x82\x53\x63", 4);
    opt[4] = 53;
    opt[5] = 1;
    opt[6] = 1; /* DHCPDISCOVER */
    opt[7] = 255;
    return 14 + 20 + 8 + bplen;
}

static bool is_dhcp_offer(const uint8_t *f, size_t len, uint32_t *yiaddr)
{
    if (len < 14 + 20 + 8 + 240 || f[12] != 0x08 || f[13] != 0 || f[14 + 9] != 17)
        return false;
    size_t ihl = (size_t)(f[14] & 15) * 4;
    const uint8_t *udp = f + 14 + ihl, *bp = udp + 8;
    if (udp[1] != 67 || udp[3] != 68 || bp[0] != 2)
        return false;
    memcpy(yiaddr, bp + 16, 4);
    const uint8_t *o = bp + 240, *end = f + len;
    while (o + 2 <= end && o[0] != 255) {
        if (o[0] == 0) {
            o++;
            continue;
        }
        if (o[0] == 53 && o[1] == 1 && o + 3 <= end)
            return o[2] == 2; /* DHCPOFFER */
        o += 2 + o[1];
    }
    return false;
}

/* The value of DHCP option `code` in a reply frame (its length in *n), or NULL. */
static const uint8_t *dhcp_option(const uint8_t *f, size_t len, uint8_t code, size_t *n)
{
    size_t ihl = (size_t)(f[14] & 15) * 4;
    const uint8_t *o = f + 14 + ihl + 8 + 240, *end = f + len;
    while (o + 2 <= end && o[0] != 255) {
        if (o[0] == 0) {
            o++;
            continue;
        }
        if (o + 2 + o[1] > end)
            return NULL;
        if (o[0] == code) {
            *n = o[1];
            return o + 2;
        }
        o += 2 + o[1];
    }
    return NULL;
}

static void test_user_dhcp(void **state)
{
    struct error err = {0};
    struct netdev *nd;
    /* QEMU's DHCP extras reach the guest: search domains (option 119) and the TFTP server name
     * (option 66). */
    if (netdev_create("user,id=n0,dnssearch=a.example,dnssearch=b.example,"
                      "tftp-server-name=bootsrv",
                      &nd, &err) != 0)
        fail_msg("%s", err.msg);
    struct collector c;
    col_init(&c, nd);
    uint8_t f[1024];
    size_t len = build_dhcp_discover(f);
    assert_int_equal(send_frame(nd, f, len), 0);
    bool found = false;
    for (unsigned i = 0; !found; i++) {
        size_t l;
        uint8_t *r = col_wait(&c, i, &l, 3000);
        if (!r)
            break;
        uint32_t yi;
        if (is_dhcp_offer(r, l, &yi)) {
            found = true;
            struct in_addr a = {yi};
            assert_string_equal(inet_ntoa(a), "10.0.2.15");
            size_t n = 0;
            const uint8_t *v = dhcp_option(r, l, 66, &n);
            assert_non_null(v);
            assert_int_equal(n, 7);
            assert_memory_equal(v, "bootsrv", 7);
            /* RFC 1035 names: \1a\7example\0 then \1b and a pointer to "example" */
            v = dhcp_option(r, l, 119, &n);
            assert_non_null(v);
            assert_true(n >= 13 && !memcmp(v, "\001a\007example\000\001b", 13));
        }
        free(r);
    }
    assert_true(found);
    col_fini(&c, nd);
    netdev_destroy(nd);
}

static size_t build_arp(uint8_t *f, uint16_t op, const uint8_t *smac, const char *sip,
                        const uint8_t *tmac, const char *tip)
{
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    memset(f, 0, 60);
    memcpy(f, op == 1 ? bcast : tmac, 6);
    memcpy(f + 6, smac, 6);
    f[12] = 0x08;
    f[13] = 0x06;
    uint8_t *a = f + 14;
    a[1] = 1;    /* Ethernet */
    a[2] = 0x08; /* IPv4 */
    a[4] = 6;
    a[5] = 4;
    a[7] = (uint8_t)op;
    memcpy(a + 8, smac, 6);
    inet_pton(AF_INET, sip, a + 14);
    memcpy(a + 18, tmac, 6);
    inet_pton(AF_INET, tip, a + 24);
    return 60;
}

static bool is_arp(const uint8_t *f, size_t len, uint16_t op, const char *sip, const char *tip)
{
    uint8_t s[4], t[4];
    inet_pton(AF_INET, sip, s);
    inet_pton(AF_INET, tip, t);
    return len >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[14 + 7] == op &&
           !memcmp(f + 14 + 14, s, 4) && !memcmp(f + 14 + 24, t, 4);
}

/* slirp asks for the guest's MAC before it sends to it: answer as the guest would. */
static bool answer_arp(struct netdev *nd, const uint8_t *r, size_t l)
{
    if (!is_arp(r, l, 1, "10.0.2.2", "10.0.2.15"))
        return false;
    uint8_t f[64];
    size_t fl = build_arp(f, 2, guest_mac, "10.0.2.15", r + 6, "10.0.2.2");
    assert_int_equal(send_frame(nd, f, fl), 0);
    return true;
}

static bool is_tcp(const uint8_t *r, size_t l)
{
    return l >= 14 + 20 + 20 && r[12] == 0x08 && r[13] == 0 && r[14 + 9] == 6;
}

static void test_user_arp(void **state)
{
    struct error err = {0};
    struct netdev *nd;
    if (netdev_create("user,id=n0,ipv6=off", &nd, &err) != 0)
        fail_msg("%s", err.msg);
    struct collector c;
    col_init(&c, nd);
    uint8_t f[64];
    static const uint8_t zero[6] = {0};
    size_t len = build_arp(f, 1, guest_mac, "10.0.2.15", zero, "10.0.2.2");
    assert_int_equal(send_frame(nd, f, len), 0);
    bool found = false;
    for (unsigned i = 0; !found; i++) {
        size_t l;
        uint8_t *r = col_wait(&c, i, &l, 3000);
        if (!r)
            break;
        if (is_arp(r, l, 2, "10.0.2.2", "10.0.2.15")) {
            found = true;
            assert_memory_equal(r, guest_mac, 6);
            assert_memory_equal(r + 14 + 18, guest_mac, 6);
        }
        free(r);
    }
    assert_true(found);
    col_fini(&c, nd);
    netdev_destroy(nd);
}

static void test_user_hostfwd(void **state)
{
    struct error err = {0};
    struct netdev *nd;
    int port = free_port();
    char text[128];
    snprintf(text, sizeof(text), "user,id=n0,ipv6=off,hostfwd=tcp:127.0.0.1:%d-:2222", port);
    if (netdev_create(text, &nd, &err) != 0)
        fail_msg("%s", err.msg);
    struct collector c;
    col_init(&c, nd);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    bool syn = false;
    for (unsigned i = 0; !syn; i++) {
        size_t l;
        uint8_t *r = col_wait(&c, i, &l, 5000);
        if (!r)
            break;
        if (!answer_arp(nd, r, l) && is_tcp(r, l)) {
            const uint8_t *ip = r + 14, *tcp = ip + (ip[0] & 15) * 4;
            uint8_t dst[4];
            inet_pton(AF_INET, "10.0.2.15", dst);
            assert_memory_equal(ip + 16, dst, 4);
            assert_int_equal(tcp[2] << 8 | tcp[3], 2222);
            assert_true(tcp[13] & 0x02); /* SYN */
            assert_memory_equal(r, guest_mac, 6);
            syn = true;
        }
        free(r);
    }
    assert_true(syn);
    close(s);
    col_fini(&c, nd);
    netdev_destroy(nd);
}

/* A TCP segment from the guest (10.0.2.15:40000) to 10.0.2.100:1234. */
static size_t build_tcp(uint8_t *f, uint32_t seq, uint32_t ack, uint8_t flags, const char *data)
{
    static const uint8_t slirp_mac[6] = {0x52, 0x55, 0x0a, 0x00, 0x02, 0x02};
    size_t dl = data ? strlen(data) : 0, tl = 20 + dl;
    memset(f, 0, 14 + 20 + tl);
    memcpy(f, slirp_mac, 6);
    memcpy(f + 6, guest_mac, 6);
    f[12] = 0x08;
    uint8_t *ip = f + 14, *tcp = ip + 20;
    ip[0] = 0x45;
    ip[2] = (uint8_t)((20 + tl) >> 8);
    ip[3] = (uint8_t)(20 + tl);
    ip[8] = 64;
    ip[9] = 6;
    inet_pton(AF_INET, "10.0.2.15", ip + 12);
    inet_pton(AF_INET, "10.0.2.100", ip + 16);
    uint16_t cs = ip_csum(ip, 20);
    ip[10] = (uint8_t)(cs >> 8);
    ip[11] = (uint8_t)cs;
    tcp[0] = 40000 >> 8;
    tcp[1] = 40000 & 0xff;
    tcp[2] = 1234 >> 8;
    tcp[3] = 1234 & 0xff;
    for (int i = 0; i < 4; i++) {
        tcp[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
        tcp[8 + i] = (uint8_t)(ack >> (24 - 8 * i));
    }
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14] = tcp[15] = 0xff;
    memcpy(tcp + 20, data ? data : "", dl);
    /* Checksum over the pseudo header (addresses, protocol, length) and the segment. */
    uint8_t ph[12 + 20 + 64];
    assert_true(tl <= 20 + 64);
    memcpy(ph, ip + 12, 8);
    ph[8] = 0;
    ph[9] = 6;
    ph[10] = (uint8_t)(tl >> 8);
    ph[11] = (uint8_t)tl;
    memcpy(ph + 12, tcp, tl);
    if ((12 + tl) & 1)
        ph[12 + tl] = 0;
    cs = ip_csum(ph, (12 + tl + 1) & ~(size_t)1);
    tcp[16] = (uint8_t)(cs >> 8);
    tcp[17] = (uint8_t)cs;
    return 14 + 20 + tl;
}

/* The next TCP segment slirp sends the guest from 10.0.2.100:1234 (answering its ARP requests on
 * the way): its flags, sequence number and payload. */
static bool next_tcp(struct collector *c, struct netdev *nd, unsigned *idx, uint8_t *flags,
                     uint32_t *seq, char *data, size_t dlen)
{
    for (;; (*idx)++) {
        size_t l;
        uint8_t *r = col_wait(c, *idx, &l, 5000);
        if (!r)
            return false;
        if (answer_arp(nd, r, l)) {
            free(r);
            continue;
        }
        if (is_tcp(r, l)) {
            const uint8_t *ip = r + 14, *tcp = ip + (ip[0] & 15) * 4;
            size_t tot = (size_t)(ip[2] << 8 | ip[3]), hl = (size_t)(tcp[12] >> 4) * 4;
            assert_int_equal(tcp[0] << 8 | tcp[1], 1234);
            assert_int_equal(tcp[2] << 8 | tcp[3], 40000);
            *flags = tcp[13];
            *seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | (uint32_t)tcp[6] << 8 | tcp[7];
            size_t n = tot - (size_t)(tcp - ip) - hl;
            assert_true(n < dlen);
            memcpy(data, tcp + hl, n);
            data[n] = 0;
            free(r);
            (*idx)++;
            return true;
        }
        free(r);
    }
}

/* guestfwd=...-tcp:HOST:PORT: kemu connects at start-up; a guest connection to 10.0.2.100:1234
 * is relayed both ways over that stream. */
/* One guest connection relayed to the listener ls by the netdev text; then, ls closed, the
 * netdev is refused naming the target (want) and the reason. */
static void guestfwd_stream_case(int ls, const char *text, const char *want)
{
    struct error err = {0};
    struct netdev *nd;
    if (netdev_create(text, &nd, &err) != 0)
        fail_msg("%s", err.msg);
    struct pollfd p = {.fd = ls, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1); /* connected before any guest traffic */
    int conn = accept(ls, NULL, NULL);
    assert_true(conn >= 0);

    struct collector c;
    col_init(&c, nd);
    uint8_t f[128];
    size_t fl = build_tcp(f, 1000, 0, 0x02 /* SYN */, NULL);
    assert_int_equal(send_frame(nd, f, fl), 0);
    unsigned idx = 0;
    uint8_t flags;
    uint32_t seq;
    char data[128];
    assert_true(next_tcp(&c, nd, &idx, &flags, &seq, data, sizeof(data)));
    assert_int_equal(flags & 0x12, 0x12); /* SYN+ACK */
    fl = build_tcp(f, 1001, seq + 1, 0x18 /* PSH+ACK */, "from-guest");
    assert_int_equal(send_frame(nd, f, fl), 0);
    char got[32] = {0};
    p.fd = conn;
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(read(conn, got, sizeof(got) - 1), 10);
    assert_string_equal(got, "from-guest");

    assert_int_equal(write(conn, "from-host", 9), 9);
    bool seen = false;
    while (!seen && next_tcp(&c, nd, &idx, &flags, &seq, data, sizeof(data)))
        seen = !strcmp(data, "from-host");
    assert_true(seen);
    col_fini(&c, nd);
    netdev_destroy(nd);
    assert_int_equal(read(conn, got, sizeof(got)), 0); /* kemu closed its end */
    close(conn);

    /* Nobody listening: the netdev is refused with the reason. */
    close(ls);
    memset(&err, 0, sizeof(err));
    assert_int_equal(netdev_create(text, &nd, &err), -1);
    assert_non_null(strstr(err.msg, want));
    assert_non_null(strstr(err.msg, "Connection refused"));
}

static void test_user_guestfwd_stream(void **state)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls, 1), 0);
    socklen_t al = sizeof(a);
    getsockname(ls, (struct sockaddr *)&a, &al);
    char text[200];
    snprintf(text, sizeof(text),
             "user,id=n0,ipv6=off,guestfwd=tcp:10.0.2.100:1234-tcp:127.0.0.1:%d",
             ntohs(a.sin_port));
    guestfwd_stream_case(ls, text, "guestfwd target tcp:127.0.0.1:");

    /* The same over a UNIX socket target. */
    char dir[] = "/tmp/kemu-gfwd-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un u = {.sun_family = AF_UNIX};
    snprintf(u.sun_path, sizeof(u.sun_path), "%s/s", dir);
    ls = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(ls, (struct sockaddr *)&u, sizeof(u)), 0);
    assert_int_equal(listen(ls, 1), 0);
    snprintf(text, sizeof(text), "user,id=n0,ipv6=off,guestfwd=tcp:10.0.2.100:1234-unix:%s",
             u.sun_path);
    guestfwd_stream_case(ls, text, "guestfwd target unix:/tmp/kemu-gfwd-");
    unlink(u.sun_path);
    rmdir(dir);
}

#endif

/* ---- a packet fd backend (socketpair) ---- */

static void test_fd_backend(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    struct netdev *nd;
    struct error err = {0};
    assert_int_equal(netdev_create_fd("s0", sv[0], true, true, &nd, &err), 0);
    assert_int_equal(netdev_vnet_hdr_len(nd), 12);
    /* hostfwd_add is for user netdevs only. */
    assert_int_equal(netdev_hostfwd(nd, true, "tcp::1-:2", &err), -EINVAL);
    assert_string_equal(err.msg, "netdev 's0' is not a user-mode network");
    err = (struct error){0};
    assert_int_equal(netdev_offload_caps(nd) & NETDEV_OFFLOAD_CSUM, NETDEV_OFFLOAD_CSUM);
    assert_int_equal(netdev_set_offloads(nd, NETDEV_OFFLOAD_CSUM, &err), 0);
    assert_int_equal(netdev_set_offloads(nd, 0x100, &err), -1);
    struct collector c;
    col_init(&c, nd);
    uint8_t f[100];
    for (unsigned i = 0; i < sizeof(f); i++)
        f[i] = (uint8_t)i;
    assert_int_equal(send_frame(nd, f, sizeof(f)), 0);
    uint8_t got[200];
    assert_int_equal(read(sv[1], got, sizeof(got)), sizeof(f));
    assert_memory_equal(got, f, sizeof(f));
    assert_int_equal(write(sv[1], f, 60), 60);
    size_t l;
    uint8_t *r = col_wait(&c, 0, &l, 3000);
    assert_non_null(r);
    assert_int_equal(l, 60);
    assert_memory_equal(r, f, 60);
    free(r);
    col_fini(&c, nd);
    netdev_destroy(nd);
    close(sv[1]);
}

/* A full backend queue is reported (NETDEV_BUSY), not a silent drop, and the frontend hears when
 * it drained. */
static void test_fd_backpressure(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    int small = 4096;
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    struct netdev *nd;
    struct error err = {0};
    assert_int_equal(netdev_create_fd("s0", sv[0], false, true, &nd, &err), 0);
    struct collector c;
    col_init(&c, nd);
    uint8_t f[1500];
    memset(f, 0xab, sizeof(f));
    int r = 0;
    unsigned sent = 0;
    while (sent < 10000 && (r = send_frame(nd, f, sizeof(f))) == 0)
        sent++;
    assert_int_equal(r, NETDEV_BUSY);
    assert_true(sent > 0);
    pthread_mutex_lock(&c.lock);
    assert_int_equal(c.writable, 0);
    pthread_mutex_unlock(&c.lock);
    uint8_t got[2000];
    for (unsigned i = 0; i < sent; i++)
        assert_int_equal(read(sv[1], got, sizeof(got)), sizeof(f));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 3;
    pthread_mutex_lock(&c.lock);
    while (!c.writable)
        if (pthread_cond_timedwait(&c.cond, &c.lock, &ts) == ETIMEDOUT)
            break;
    unsigned w = c.writable;
    pthread_mutex_unlock(&c.lock);
    assert_int_equal(w, 1);
    assert_int_equal(send_frame(nd, f, sizeof(f)), 0);
    col_fini(&c, nd);
    netdev_destroy(nd);
    close(sv[1]);
}

/* ---- tap ---- */

/* In a child with its own network namespace: 0 passed, 77 skipped (reason on stderr), else
 * failed. The host's interfaces are never touched. */
static int tap_child(void)
{
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "skip: unshare(CLONE_NEWNET): %s\n", strerror(errno));
        return 77;
    }
    struct netdev *nd;
    struct error err = {0};
    if (netdev_create("tap,id=t0,ifname=kemutap0,script=no,downscript=no", &nd, &err) < 0) {
        fprintf(stderr, "skip: %s\n", err.msg);
        return 77;
    }
    if (netdev_vnet_hdr_len(nd) != 12)
        return 10;
    char info[128];
    netdev_info_str(nd, 0, info, sizeof(info));
    if (strcmp(netdev_type(nd), "tap") || strcmp(info, "ifname=kemutap0,script=no,downscript=no"))
        return 11;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "kemutap0");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return 11;
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return 12;
    close(s);
    int ps = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (ps < 0)
        return 13;
    struct sockaddr_ll sll = {.sll_family = AF_PACKET,
                              .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = (int)if_nametoindex("kemutap0")};
    if (bind(ps, (struct sockaddr *)&sll, sizeof(sll)) < 0)
        return 14;
    struct timeval tv = {.tv_sec = 3};
    setsockopt(ps, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    /* Guest to host: a vnet header then a frame with a private EtherType. */
    uint8_t f[12 + 64];
    memset(f, 0, sizeof(f));
    memset(f + 12, 0xff, 6);
    memcpy(f + 12 + 6, guest_mac, 6);
    f[12 + 12] = 0x88;
    f[12 + 13] = 0xb5;
    memcpy(f + 12 + 14, "kemu-tap-test", 13);
    if (send_frame(nd, f, sizeof(f)) < 0)
        return 15;
    bool seen = false;
    uint8_t buf[2048];
    for (int i = 0; i < 50 && !seen; i++) {
        ssize_t n = recv(ps, buf, sizeof(buf), 0);
        if (n < 0)
            break;
        seen = n >= 64 && !memcmp(buf, f + 12, 64);
    }
    if (!seen)
        return 16;
    /* Host to guest: written on the interface, read by the netdev with a vnet header. */
    struct collector c;
    col_init(&c, nd);
    memcpy(buf, f + 12, 64);
    memcpy(buf + 14, "kemu-tap-back", 13);
    if (send(ps, buf, 64, 0) != 64)
        return 17;
    bool back = false;
    for (unsigned i = 0; !back; i++) {
        size_t l;
        uint8_t *r = col_wait(&c, i, &l, 3000);
        if (!r)
            break;
        back = l == 12 + 64 && !memcmp(r + 12, buf, 64);
        free(r);
    }
    col_fini(&c, nd);
    netdev_destroy(nd);
    return back ? 0 : 18;
}

/* queues=2 in a private namespace: both queues carry frames out, with one queue attached every
 * frame in comes on it, and fds= takes queues opened by the caller. 0 passed, 77 skipped, else
 * failed. */
static int tap_mq_child(void)
{
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "skip: unshare(CLONE_NEWNET): %s\n", strerror(errno));
        return 77;
    }
    struct netdev *nd;
    struct error err = {0};
    if (netdev_create("tap,id=t0,ifname=kemumq0,queues=2,script=no,downscript=no", &nd, &err) < 0) {
        fprintf(stderr, "skip: %s\n", err.msg);
        return 77;
    }
    if (netdev_queues(nd) != 2)
        return 20;
    char info[128];
    netdev_info_str(nd, 1, info, sizeof(info));
    if (strcmp(info, "ifname=kemumq0,script=no,downscript=no"))
        return 21;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "kemumq0");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return 21;
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return 22;
    close(s);
    int ps = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    struct sockaddr_ll sll = {.sll_family = AF_PACKET,
                              .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = (int)if_nametoindex("kemumq0")};
    if (ps < 0 || bind(ps, (struct sockaddr *)&sll, sizeof(sll)) < 0)
        return 23;
    struct timeval tv = {.tv_sec = 3};
    setsockopt(ps, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    uint8_t f[12 + 64];
    memset(f, 0, sizeof(f));
    memset(f + 12, 0xff, 6);
    memcpy(f + 12 + 6, guest_mac, 6);
    f[12 + 12] = 0x88;
    f[12 + 13] = 0xb5;
    for (unsigned q = 0; q < 2; q++) {
        snprintf((char *)f + 12 + 14, 20, "kemu-mq-%u", q);
        if (send_frame_q(nd, q, f, sizeof(f)) != 0)
            return 24 + (int)q;
        bool seen = false;
        uint8_t buf[2048];
        for (int i = 0; i < 50 && !seen; i++) {
            ssize_t n = recv(ps, buf, sizeof(buf), 0);
            if (n < 0)
                break;
            seen = n >= 64 && !memcmp(buf, f + 12, 64);
        }
        if (!seen)
            return 26 + (int)q;
    }
    /* Queue 1 detached (the kernel still takes frames written on it, so that is not tested). */
    if (set_active(nd, 1) != 0)
        return 28;
    /* Host to guest: UDP flows (the kernel hashes them over the attached queues). With one
     * queue attached all arrive on queue 0; with both, some on queue 1. */
    for (unsigned active = 1; active <= 2; active++) {
        if (set_active(nd, active) != 0)
            return 30;
        struct collector c;
        col_init(&c, nd);
        enum { FLOWS = 16 };
        for (int k = 0; k < FLOWS; k++) {
            uint8_t h[64] = {0};
            memset(h, 0xff, 6);
            memcpy(h + 6, guest_mac, 6);
            h[12] = 0x08;
            uint8_t *ip = h + 14;
            ip[0] = 0x45;
            ip[3] = 50;
            ip[8] = 64;
            ip[9] = 17;
            ip[12] = 10, ip[15] = 1;
            ip[16] = 10, ip[19] = 2;
            uint8_t *udp = ip + 20;
            udp[0] = 0x40, udp[1] = (uint8_t)k; /* source port per flow */
            udp[3] = 9;
            udp[5] = 30;
            if (send(ps, h, sizeof(h), 0) != (ssize_t)sizeof(h))
                return 31;
        }
        unsigned on1 = 0;
        for (unsigned i = 0; i < FLOWS; i++) {
            size_t l;
            uint8_t *r = col_wait(&c, i, &l, 3000);
            if (!r)
                return 32;
            free(r);
            on1 += c.queues[i] == 1;
        }
        col_fini(&c, nd);
        if (active == 1 ? on1 != 0 : on1 == 0)
            return 33;
    }
    if (send_frame_q(nd, 1, f, sizeof(f)) != 0)
        return 34;
    if (set_active(nd, 3) == 0)
        return 35;
    netdev_destroy(nd);

    /* fds=: two queues the caller opened. */
    int fds[2];
    for (int i = 0; i < 2; i++) {
        fds[i] = open("/dev/net/tun", O_RDWR);
        memset(&ifr, 0, sizeof(ifr));
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
        strcpy(ifr.ifr_name, "kemumq1");
        if (fds[i] < 0 || ioctl(fds[i], TUNSETIFF, &ifr) < 0)
            return 36;
    }
    char text[64];
    snprintf(text, sizeof(text), "tap,id=t1,fds=%d:%d", fds[0], fds[1]);
    if (netdev_create(text, &nd, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 37;
    }
    if (netdev_queues(nd) != 2 || netdev_vnet_hdr_len(nd) != 12)
        return 38;
    /* info network shows each queue by the descriptor the user gave, as QEMU does. */
    for (unsigned q = 0; q < 2; q++) {
        char shown[32];
        netdev_info_str(nd, q, info, sizeof(info));
        snprintf(shown, sizeof(shown), "fd=%d", fds[q]);
        if (strcmp(info, shown))
            return 40;
    }
    netdev_destroy(nd);

    /* vhostfd= that is no vhost-net descriptor: refused, naming the option; the caller's
     * descriptor is left alone. */
    int p[2];
    if (pipe(p) < 0)
        return 39;
    snprintf(text, sizeof(text), "tap,id=t2,ifname=kemumq2,script=no,downscript=no,vhostfd=%d",
             p[0]);
    err = (struct error){0};
    char want[48];
    snprintf(want, sizeof(want), "vhostfd=%d: not a vhost-net descriptor", p[0]);
    if (netdev_create(text, &nd, &err) == 0 || !strstr(err.msg, want)) {
        fprintf(stderr, "vhostfd=pipe: %s\n", err.set ? err.msg : "accepted");
        return 40;
    }
    if (fcntl(p[0], F_GETFD) < 0)
        return 41;
    close(p[0]);
    close(p[1]);
    return 0;
}

static void run_child(int (*fn)(void))
{
    if (access("/dev/net/tun", R_OK | W_OK) < 0) {
        printf("skipping tap test: /dev/net/tun: %s\n", strerror(errno));
        skip();
    }
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn());
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        printf("skipping tap test (see the reason above)\n");
        skip();
    }
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_tap_mq(void **state)
{
    run_child(tap_mq_child);
}

static void test_tap(void **state)
{
    run_child(tap_child);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_help),
#ifdef CONFIG_SLIRP
        cmocka_unit_test(test_user_keys),
        cmocka_unit_test(test_user_dhcp),
        cmocka_unit_test(test_user_arp),
        cmocka_unit_test(test_user_hostfwd),
        cmocka_unit_test(test_user_guestfwd_stream),
#endif
        cmocka_unit_test(test_fd_backend),
        cmocka_unit_test(test_fd_backpressure),
        cmocka_unit_test(test_tap),
        cmocka_unit_test(test_tap_mq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
