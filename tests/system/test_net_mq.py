"""virtio-net multiqueue and the control queue, checked from inside the Debian cloud guest over a
tap moved into a private network namespace of the host (as test_virtio.py's tap test does)."""
import re

from conftest import run_guest

COMMON = ["-M", "pc", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults", "-serial", "stdio"]


def netns_prefix(tap, host_ip, then):
    """Shell run before kemu: a namespace ($NSPID) that takes the tap once kemu created it, with
    host_ip on it and IPv6 off (no neighbour discovery noise), then runs `then` in it."""
    return (f"rm -f /tmp/mq.out /tmp/mq.err; unshare -n sleep 120 & NSPID=$!; "
            f"(exec 2>/tmp/mq.err; for i in $(seq 100); do "
            f"ip link show {tap} >/dev/null 2>&1 && ip link set {tap} netns $NSPID && "
            f"nsenter -t $NSPID -n sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'; "
            f"nsenter -t $NSPID -n ip addr add {host_ip}/24 dev {tap} && "
            f"nsenter -t $NSPID -n ip link set {tap} up && break; sleep 0.1; done; "
            f"{then}) & ")


# After kemu: what went wrong on the host side, and the tap's counters.
HOST_LOG = ("echo HOST-LOG-BEGIN; cat /tmp/mq.err; nsenter -t $NSPID -n ip -s link; "
            "echo HOST-LOG-END; ")


def field(text, name):
    m = re.search(rf"^{name}=(\S*)", text, re.M)
    assert m, f"{name} missing in:\n{text[-3000:]}"
    return m.group(1)


def irq_total(text, name):
    """The guest's interrupt count of the /proc/interrupts line ending in `name`, all CPUs."""
    for line in text.splitlines():
        if line.rstrip().endswith(name):
            cols = line.split(":", 1)[1].split()
            return sum(int(c) for c in cols if c.isdigit())
    raise AssertionError(f"no interrupt line {name} in:\n{text[-3000:]}")


def test_tap_two_queue_pairs_carry_traffic():
    # The host opens many TCP connections to the guest's httpd: the tap hashes them over its two
    # queues, so the guest's second receive queue must see frames (its interrupt counts up).
    then = ("ok=0; for i in $(seq 160); do nsenter -t $NSPID -n wget -T 2 -qO- "
            "http://192.168.78.2/g.txt >/dev/null 2>&1 && break; sleep 0.25; done; "
            "for i in $(seq 24); do nsenter -t $NSPID -n wget -T 3 -qO- "
            "http://192.168.78.2/g.txt 2>/dev/null | grep -q mq-guest && ok=$((ok+1)); done; "
            "echo $ok > /tmp/mq.out")
    r = run_guest(COMMON + ["-smp", "2",
                            "-netdev", "tap,id=t0,ifname=kemumq0,queues=2,script=no,downscript=no",
                            "-device", "virtio-net-pci,netdev=t0,mq=on,vectors=6"],
                  run="ip addr add 192.168.78.2/24 dev eth0; ip link set eth0 up; "
                      "ls /sys/class/net/eth0/queues; "
                      "mkdir -p /www; echo mq-guest > /www/g.txt; httpd -p 80 -h /www; "
                      "ping -c 3 -W 5 192.168.78.1; echo PING-EXIT=$?; "
                      "sleep 25; grep virtio /proc/interrupts",
                  prefix=netns_prefix("kemumq0", "192.168.78.1", then),
                  suffix=HOST_LOG + "echo MQ-OK=$(cat /tmp/mq.out); kill $NSPID")
    assert r.status == 0, r
    for q in ("rx-0", "rx-1", "tx-0", "tx-1"):
        assert re.search(rf"\b{q}\b", r.output), (q, r)
    assert field(r.output, "PING-EXIT") == "0", r
    assert field(r.host_output, "MQ-OK") == "24", r
    assert irq_total(r.output, "input.0") > 0, r
    assert irq_total(r.output, "input.1") > 0, r


def test_guest_promisc_reaches_the_device():
    # The host sends frames to a foreign MAC (raw, from the namespace: the test host has no
    # ping). They reach the guest (its rx_packets counter) only while the guest has eth0 in
    # promiscuous mode, which the driver tells the device through the control queue.
    then = ("nsenter -t $NSPID -n python3 -c 'import socket,time; "
            "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind((\"kemutap1\",0)); "
            "f=bytes.fromhex(\"525400dead0152540000000188b5\")+bytes(50); "
            "[(s.send(f),time.sleep(0.1)) for i in range(600)]'")
    count = "cat /sys/class/net/eth0/statistics/rx_packets"
    r = run_guest(COMMON + ["-netdev", "tap,id=t0,ifname=kemutap1,script=no,downscript=no",
                            "-device", "virtio-net-pci,netdev=t0"],
                  run="ip addr add 192.168.79.2/24 dev eth0; ip link set eth0 up; sleep 4; "
                      f"a=$({count}); sleep 3; b=$({count}); echo OFF-DELTA=$((b-a)); "
                      "ip link set eth0 promisc on; sleep 1; "
                      f"a=$({count}); sleep 3; b=$({count}); echo ON-DELTA=$((b-a)); "
                      "ip link set eth0 promisc off; sleep 1; "
                      f"a=$({count}); sleep 3; b=$({count}); echo OFF2-DELTA=$((b-a))",
                  prefix=netns_prefix("kemutap1", "192.168.79.1", then),
                  suffix=HOST_LOG + "kill $NSPID")
    assert r.status == 0, r
    off, on, off2 = (int(field(r.output, n)) for n in ("OFF-DELTA", "ON-DELTA", "OFF2-DELTA"))
    # About 30 foreign frames per 3 s window: none may pass the filter without promisc.
    assert on >= 15, (off, on, off2, r, r.host_output[-3000:])
    assert off <= 2 and off2 <= 2, (off, on, off2, r, r.host_output[-3000:])


def test_mq_bad_options_one_line():
    for args, want in [(["-netdev", "tap,id=t0,queues=0"], "queues=0: must be 1..31"),
                       (["-netdev", "tap,id=t0,queues=32"], "queues=32"),
                       (["-netdev", "tap,id=t0,fd=3,queues=2"], "cannot be combined"),
                       (["-netdev", "tap,id=t0,fds=3:x"], "fds"),
                       (["-netdev", "user,id=n0,queues=2"], "queues")]:
        r = run_guest(["-M", "pc", "-nographic"] + args, run="true", timeout=60)
        assert r.status == 1, (args, r)
        lines = [line for line in r.output.splitlines() if line.startswith("kemu:")]
        assert len(lines) == 1 and want in lines[0], (args, r.output)
