"""virtio devices on the pc machine's PCI bus, checked from inside the Debian cloud guest.

Images live in /tmp where kemu runs (the test host's scratch ext4 disk, which takes O_DIRECT).
"""
import os
import re
import shlex

import pytest

from conftest import run_guest, wait_carrier
from test_acpi import QMP_SUFFIX, READY, SOCK, qmp_prefix, qmp_steps

COMMON = ["-M", "pc", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults", "-serial", "stdio"]
IMG = "/tmp/kemu-blk-test.img"

# Each cache mode with each aio engine QEMU allows with it (aio=native needs O_DIRECT).
CACHE_AIO = [(c, a) for c in ("none", "writeback", "writethrough", "directsync", "unsafe")
             for a in ("threads", "native", "io_uring")
             if a != "native" or c in ("none", "directsync")]
# Octal open(2) flags as /proc/PID/fdinfo prints them.
O_DSYNC, O_DIRECT = 0o10000, 0o40000
PROMISED = {"none": O_DIRECT, "writeback": 0, "writethrough": O_DSYNC,
            "directsync": O_DIRECT | O_DSYNC, "unsafe": 0}

# Host side: 8 MiB of random data, the md5 of its first 4 MiB; after kemu: the md5 of 4..6 MiB,
# and, while kemu runs, the open flags of the image's descriptor.
MAKE_IMG = (f"rm -f {IMG}; dd if=/dev/urandom of={IMG} bs=1M count=8 2>/dev/null; "
            f"echo HOST-HEAD=$(dd if={IMG} bs=1M count=4 2>/dev/null | md5sum | cut -c1-32); ")
WATCH_FLAGS = (f"(for i in $(seq 100); do sleep 0.1; for p in $(pidof kemu); do "
               f"for f in /proc/$p/fd/*; do [ \"$(readlink $f)\" = {IMG} ] && "
               f"grep '^flags' /proc/$p/fdinfo/${{f##*/}} > /tmp/kemu-flags && exit 0; "
               f"done; done; done) & ")
TAIL_MD5 = (f"echo HOST-TAIL=$(dd if={IMG} bs=1M skip=4 count=2 2>/dev/null | md5sum | "
            f"cut -c1-32); echo HOST-FLAGS=$(cat /tmp/kemu-flags 2>/dev/null); ")
GUEST_IO = ("echo GUEST-HEAD=$(dd if=/dev/vda bs=1M count=4 2>/dev/null | md5sum | cut -c1-32); "
            "dd if=/dev/urandom of=/tmp/p bs=1M count=2 2>/dev/null; "
            "echo GUEST-TAIL=$(md5sum < /tmp/p | cut -c1-32); "
            "dd if=/tmp/p of=/dev/vda bs=1M seek=4 conv=fsync 2>/dev/null; echo DD-EXIT=$?; "
            "sleep 1")


def field(text, name):
    m = re.search(rf"^{name}=(\S*)", text, re.M)
    assert m, f"{name} missing in:\n{text[-3000:]}"
    return m.group(1)


@pytest.mark.parametrize("cache,aio", CACHE_AIO, ids=[f"{c}-{a}" for c, a in CACHE_AIO])
def test_blk_data_both_ways(cache, aio):
    r = run_guest(COMMON + ["-drive", f"file={IMG},if=virtio,format=raw,cache={cache},aio={aio}"],
                  run=GUEST_IO, prefix=MAKE_IMG + WATCH_FLAGS, suffix=TAIL_MD5)
    assert r.status == 0, r
    assert field(r.output, "DD-EXIT") == "0", r
    assert field(r.output, "GUEST-HEAD") == field(r.host_output, "HOST-HEAD"), r
    assert field(r.output, "GUEST-TAIL") == field(r.host_output, "HOST-TAIL"), r
    m = re.search(r"HOST-FLAGS=flags:\s*(\d+)", r.host_output)
    assert m, f"the image's open flags were not seen:\n{r.host_output[-2000:]}"
    flags = int(m.group(1), 8)
    assert flags & (O_DIRECT | O_DSYNC) == PROMISED[cache], oct(flags)


# Host side, while kemu runs: the names of its threads once the virtio-blk worker is up.
THREADS = ("rm -f /tmp/kemu-threads; (for i in $(seq 300); do sleep 0.1; for p in $(pidof kemu); do "
           "grep -qx virtio-blk /proc/$p/task/*/comm 2>/dev/null && "
           "cat /proc/$p/task/*/comm > /tmp/kemu-threads && exit 0; done; done) & ")


def test_blk_drive_and_device_pair():
    """QEMU's long form: if=none + -device virtio-blk-pci at a chosen address, serial visible.
    kemu's threads carry their names: the vCPUs "CPU n/KVM", the disk's worker (started by a vCPU
    thread at DRIVER_OK) its own."""
    r = run_guest(COMMON + ["-smp", "2", "-drive", f"file={IMG},if=none,id=drive-virtio-disk0,format=raw,"
                                      "cache=none,aio=native",
                            "-device", "virtio-blk-pci,scsi=off,bus=pci.0,addr=0x4,"
                                       "drive=drive-virtio-disk0,id=virtio-disk0,bootindex=1,"
                                       "serial=KEMU-SERIAL-42"],
                  run="ls /sys/bus/pci/devices; cat /sys/block/vda/serial; echo; " + GUEST_IO,
                  prefix=MAKE_IMG + THREADS,
                  suffix=TAIL_MD5 + "echo HOST-THREADS=$(tr ' \\n' '_,' < /tmp/kemu-threads)")
    assert r.status == 0, r
    threads = field(r.host_output, "HOST-THREADS").strip(",").split(",")
    assert sorted(t for t in threads if t.startswith("CPU")) == ["CPU_0/KVM", "CPU_1/KVM"], threads
    assert threads.count("virtio-blk") == 1, threads
    assert "0000:00:04.0" in r.output, r
    assert "KEMU-SERIAL-42" in r.output, r
    assert field(r.output, "GUEST-HEAD") == field(r.host_output, "HOST-HEAD"), r
    assert field(r.output, "GUEST-TAIL") == field(r.host_output, "HOST-TAIL"), r


def test_blk_readonly_refuses_writes():
    r = run_guest(COMMON + ["-drive", f"file={IMG},if=virtio,format=raw,readonly=on"],
                  run="cat /sys/block/vda/ro; dd if=/dev/zero of=/dev/vda bs=4k count=1 "
                      "conv=fsync; echo DD-EXIT=$?",
                  prefix=MAKE_IMG,
                  suffix=f"echo HOST-HEAD2=$(dd if={IMG} bs=1M count=4 2>/dev/null | md5sum | "
                         "cut -c1-32)")
    assert r.status == 0, r
    assert field(r.output, "DD-EXIT") != "0", r
    assert field(r.host_output, "HOST-HEAD") == field(r.host_output, "HOST-HEAD2"), r


def test_blk_discard_punches_holes():
    r = run_guest(COMMON + ["-drive", f"file={IMG},if=virtio,format=raw,discard=unmap"],
                  run="blkdiscard /dev/vda; echo DISCARD-EXIT=$?",
                  prefix=MAKE_IMG + f"echo BLOCKS-BEFORE=$(stat -c %b {IMG}); ",
                  suffix=f"echo BLOCKS-AFTER=$(stat -c %b {IMG}); "
                         f"echo SIZE-AFTER=$(stat -c %s {IMG})")
    assert r.status == 0, r
    assert field(r.output, "DISCARD-EXIT") == "0", r
    before = int(field(r.host_output, "BLOCKS-BEFORE"))
    after = int(field(r.host_output, "BLOCKS-AFTER"))
    assert before >= 8 * 2048 and after < before // 4, (before, after)
    assert field(r.host_output, "SIZE-AFTER") == str(8 << 20)


def test_blk_bad_options_one_line():
    for opt, want in [("file=/nonexistent.img,if=virtio,format=raw", "/nonexistent.img"),
                      (f"file={IMG},if=virtio,cache=writeback,aio=native", "cache.direct=on"),
                      (f"file={IMG},if=ide", "if=ide is not supported")]:
        r = run_guest(["-M", "pc", "-nographic", "-drive", opt], run="true",
                      prefix=MAKE_IMG, timeout=60)
        assert r.status == 1, (opt, r)
        lines = [line for line in r.output.splitlines() if line.startswith("kemu:")]
        assert len(lines) == 1 and want in lines[0] and "-drive" in lines[0], (opt, r.output)


DHCP_SCRIPT = (r"""printf '#!/bin/sh\n[ "$1" = bound ] && ip addr add $ip/$mask dev $interface """
               r"""&& ip route add default via $router\n' > /tmp/s; chmod +x /tmp/s; """
               "ip link set eth0 up; udhcpc -i eth0 -n -q -s /tmp/s -t 10; ")


def test_net_user_dhcp_and_host_server():
    # Also QEMU's DHCP search domains (udhcpc exports them as $search) and IPv6 network: the
    # guest's SLAAC address is in ipv6-net.
    r = run_guest(COMMON + ["-netdev", "user,id=n0,dnssearch=kemu.example,dnssearch=b.example,"
                                       "ipv6-net=fd00:4b::/64",
                            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:99"],
                  run="cat /sys/class/net/eth0/address; " +
                      DHCP_SCRIPT.replace("[ \"$1\" = bound ] && ",
                                          "[ \"$1\" = bound ] && echo SEARCH=$search && ") +
                      "ip -4 addr show eth0; wget -qO- http://10.0.2.2:18080/hello.txt; "
                      "for i in $(seq 20); do ip -6 addr show eth0 | grep -q fd00:4b: && break; "
                      "sleep 0.5; done; ip -6 addr show eth0",
                  prefix="mkdir -p /tmp/www; echo served-by-the-host > /tmp/www/hello.txt; "
                         "(cd /tmp/www && exec python3 -m http.server --bind 127.0.0.1 18080 "
                         ">/dev/null 2>&1 &); sleep 1; ",
                  suffix="pkill -f 'http.server --bind 127.0.0.1 18080'")
    assert r.status == 0, r
    assert "52:54:00:12:34:99" in r.output, r
    assert "lease of 10.0.2.15 obtained" in r.output, r
    assert "inet 10.0.2.15/24" in r.output, r
    assert "served-by-the-host" in r.output, r
    assert "SEARCH=kemu.example b.example" in r.output, r
    assert re.search(r"inet6 fd00:4b::[0-9a-f:]+/64 scope global", r.output), r


def test_net_hostfwd_reaches_guest_server():
    # The host polls the forwarded port until the guest's httpd answers.
    r = run_guest(COMMON + ["-nic", "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:12222-:80"],
                  run=DHCP_SCRIPT + "mkdir -p /www; echo served-by-the-guest > /www/g.txt; "
                      "httpd -p 80 -h /www; sleep 6",
                  prefix="rm -f /tmp/fwd.out; (for i in $(seq 120); do "
                         "wget -T 2 -qO- http://127.0.0.1:12222/g.txt > /tmp/fwd.out 2>/dev/null "
                         "&& break; sleep 0.25; done) & ",
                  suffix="echo FWD=$(cat /tmp/fwd.out)")
    assert r.status == 0, r
    assert "FWD=served-by-the-guest" in r.host_output, r


# A one-connection line server on the host: it records the first line it gets and answers. It
# says when it listens (/tmp/gf-ready): kemu connects to it at start-up, and a python3 in the
# test host may take more than a second to get there.
LINE_SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', 18123)); s.listen(1); open('/tmp/gf-ready', 'w').close()\n"
    "c, _ = s.accept(); b = b''\n"
    "while b'\\n' not in b:\n"
    "    d = c.recv(100)\n"
    "    if not d: break\n"
    "    b += d\n"
    "open('/tmp/gf-host', 'wb').write(b); c.sendall(b'from-host\\n'); c.recv(100)\n")


def test_net_guestfwd_stream_and_cmd():
    # guestfwd to a host stream (kemu connects at start-up, the guest's connection is relayed
    # both ways) and to a command (slirp runs cat per connection: an echo).
    r = run_guest(COMMON + ["-netdev", "user,id=n0,guestfwd=tcp:10.0.2.100:1234-tcp:127.0.0.1:18123,"
                                       "guestfwd=tcp:10.0.2.101:7-cmd:cat",
                            "-device", "virtio-net-pci,netdev=n0"],
                  run=DHCP_SCRIPT +
                      "(echo from-guest; sleep 4) | nc 10.0.2.100 1234 > /tmp/gf & "
                      "(echo echoed-by-cat; sleep 4) | nc 10.0.2.101 7 > /tmp/gc & "
                      "sleep 6; echo GF=$(cat /tmp/gf); echo GC=$(cat /tmp/gc)",
                  prefix="rm -f /tmp/gf-host /tmp/gf-ready; (timeout 120 python3 -c " +
                         shlex.quote(LINE_SERVER) + " &); for i in $(seq 300); do "
                         "[ -e /tmp/gf-ready ] && break; sleep 0.1; done; ",
                  suffix="echo GF-HOST=$(cat /tmp/gf-host)")
    assert r.status == 0, r
    assert "GF-HOST=from-guest" in r.host_output, r
    assert field(r.output, "GF") == "from-host", r
    assert field(r.output, "GC") == "echoed-by-cat", r


def test_net_set_link_off_and_on():
    # QEMU's set_link, once by QMP on the NIC's id, once by HMP on the netdev's: the guest sees
    # its carrier go and come back, and its traffic stops and flows again.
    fetch = "timeout 5 wget -qO- http://10.0.2.2:18080/hello.txt; echo WGET-{0}=$?; "
    r = run_guest(COMMON + ["-serial", f"file:{READY}", "-qmp", f"unix:{SOCK},server=on,wait=off",
                            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,id=nic0"],
                  run=DHCP_SCRIPT + fetch.format("UP") +
                      "echo LINK-OFF > /dev/ttyS1; " + wait_carrier(0, "OFF") +
                      fetch.format("OFF") +
                      "echo LINK-ON > /dev/ttyS1; " + wait_carrier(1, "ON") +
                      "sleep 1; " + fetch.format("AGAIN"),
                  prefix="mkdir -p /tmp/www; echo served-by-the-host > /tmp/www/hello.txt; "
                         "(cd /tmp/www && exec python3 -m http.server --bind 127.0.0.1 18080 "
                         ">/dev/null 2>&1 &); sleep 1; " +
                         qmp_prefix(f"wait-file:{READY}:LINK-OFF:1",
                                    'cmd:set_link:{"name": "nic0", "up": false}',
                                    'cmd:set_link:{"name": "nope", "up": true}',
                                    f"wait-file:{READY}:LINK-ON:1", "hmp:set_link n0 on"),
                  suffix=QMP_SUFFIX)
    assert r.status == 0, r
    steps = qmp_steps(r.host_output)
    assert steps['cmd:set_link:{"name": "nic0", "up": false}']["reply"]["return"] == {}, steps
    err = steps['cmd:set_link:{"name": "nope", "up": true}']["reply"]["error"]
    assert err == {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}, steps
    assert steps["hmp:set_link n0 on"]["reply"]["return"] == "", steps
    assert field(r.output, "WGET-UP") == "0", r
    assert field(r.output, "CARRIER-OFF") == "0", r
    assert field(r.output, "WGET-OFF") != "0", r
    assert field(r.output, "CARRIER-ON") == "1", r
    assert field(r.output, "WGET-AGAIN") == "0", r
    assert r.output.count("served-by-the-host") == 2, r


def test_net_tap_in_namespace_both_ways():
    # kemu creates the tap; the test moves it into a fresh network namespace (the open tap fd
    # keeps working) and talks to the guest from there: ping out, HTTP in.
    ns = ("unshare -n sleep 60 & NSPID=$!; (for i in $(seq 100); do "
          "ip link show kemutap0 >/dev/null 2>&1 && ip link set kemutap0 netns $NSPID && "
          "nsenter -t $NSPID -n ip addr add 192.168.76.1/24 dev kemutap0 && "
          "nsenter -t $NSPID -n ip link set kemutap0 up && break; sleep 0.1; done; "
          "for i in $(seq 120); do nsenter -t $NSPID -n wget -T 2 -qO- http://192.168.76.2/g.txt "
          "> /tmp/tap.out 2>/dev/null && break; sleep 0.25; done) & ")
    r = run_guest(COMMON + ["-netdev", "tap,id=t0,ifname=kemutap0,script=no,downscript=no",
                            "-device", "virtio-net-pci,netdev=t0"],
                  run="ip addr add 192.168.76.2/24 dev eth0; ip link set eth0 up; "
                      "mkdir -p /www; echo tap-guest > /www/g.txt; httpd -p 80 -h /www; "
                      "ping -c 3 -W 5 192.168.76.1; echo PING-EXIT=$?; sleep 4",
                  prefix="rm -f /tmp/tap.out; " + ns,
                  suffix="echo TAP=$(cat /tmp/tap.out); kill $NSPID")
    assert r.status == 0, r
    assert field(r.output, "PING-EXIT") == "0", r
    assert "TAP=tap-guest" in r.host_output, r


def test_net_bad_options_one_line():
    for args, want in [(["-netdev", "user,id=n0,hostfwd=tcp:bad"], "hostfwd"),
                       (["-netdev", "tap,id=t0,vhost=off,vhostfd=3"], "vhostfd"),
                       (["-device", "virtio-net-pci,netdev=nope"], "nope"),
                       (["-nic", "user,model=e1000"], "e1000")]:
        r = run_guest(["-M", "pc", "-nographic"] + args, run="true", timeout=60)
        assert r.status == 1, (args, r)
        lines = [line for line in r.output.splitlines() if line.startswith("kemu:")]
        assert len(lines) == 1 and want in lines[0], (args, r.output)


def test_virtconsole_carries_a_shell():
    # The guest runs a shell on hvc0; the host types into the unix socket behind it and reads
    # the answer (input waits in the socket until the guest opens the port).
    client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sock_client.py")
    r = run_guest(COMMON + ["-chardev", "socket,id=c0,path=/tmp/kemu-hvc.sock,server=on,wait=off",
                            "-device", "virtio-serial-pci",
                            "-device", "virtconsole,chardev=c0"],
                  run="ls -l /dev/hvc0; setsid sh -c 'exec sh -i </dev/hvc0 >/dev/hvc0 2>&1' & "
                      "sleep 10",
                  prefix="rm -f /tmp/kemu-hvc.sock /tmp/hvc.out; "
                         f"(python3 {client} /tmp/kemu-hvc.sock 'echo hvc-$((6*7))\\n' hvc-42 30 "
                         "> /tmp/hvc.out 2>&1) & ",
                  suffix="echo HVC=$(cat /tmp/hvc.out)")
    assert r.status == 0, r
    assert "hvc-42" in r.host_output, r


def test_virtio_rng_feeds_hwrng():
    r = run_guest(COMMON + ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                            "-device", "virtio-rng-pci,rng=rng0"],
                  run="cat /sys/class/misc/hw_random/rng_current; "
                      "echo RNG-BYTES=$(head -c 4096 /dev/hwrng | wc -c)")
    assert r.status == 0, r
    assert "virtio_rng" in r.output, r
    assert field(r.output, "RNG-BYTES") == "4096", r
