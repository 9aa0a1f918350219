"""vhost-net (-netdev tap,vhost=on): the kernel moves the frames between the guest's rings and the
tap, kemu only sets it up, hands it the MSI-X vectors' irqfds (or relays its interrupts) and takes
the rings back on a reset.

Each test checks that vhost really carried the traffic: the test host has a `vhost-<kemu pid>`
worker while the guest runs, and kemu's own virtio-net RX/TX path (KEMU_NET_STATS=1 prints its
counters when kemu exits) handled no frame at all, while the guest fetched and sent data both
ways over the tap."""
import re

from conftest import run_guest, wait_carrier
from test_acpi import QMP_SUFFIX, READY, SOCK, qmp_prefix, qmp_steps
from test_net_mq import HOST_LOG, field, irq_total, netns_prefix

COMMON = ["-M", "pc", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults", "-serial", "stdio"]
STATS = "export KEMU_NET_STATS=1; "

# Host side, once the guest's httpd answers: the vhost workers of kemu, then fetches. Results go
# to /tmp/vh.out, which each test's prefix removes first.
FIND_KEMU = ("KPID=; for d in /proc/[0-9]*; do [ \"$(cat $d/comm 2>/dev/null)\" = kemu ] && "
             "KPID=${d#/proc/}; done; ")
# Kernel 6.1 runs a vhost worker as a kernel thread, newer kernels as a thread of kemu: both
# show up among all tasks' names.
COUNT_WORKERS = ("echo VHOST-WORKERS=$(cat /proc/[0-9]*/task/*/comm 2>/dev/null | "
                 "grep -c \"^vhost-$KPID$\") >> /tmp/vh.out; "
                 "echo KPID=$KPID ALL-VHOST=$(cat /proc/[0-9]*/task/*/comm 2>/dev/null | "
                 "grep '^vhost-' | tr '\\n' ' ') >> /tmp/vh.out; ")


def cgi(*names):
    """Guest: CGI scripts the host fetches to say it finished a phase (/www/flag-<name> appears):
    the guest waits for that instead of sleeping a fixed time (the test host is often slow)."""
    return "mkdir -p /www/cgi-bin; " + "".join(
        f"printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho ok\\n"
        f"touch /www/flag-{n}\\n' > /www/cgi-bin/{n}; chmod +x /www/cgi-bin/{n}; " for n in names)


def guest_wait(name, seconds=150):
    return (f"for i in $(seq {2 * seconds}); do [ -e /www/flag-{name} ] && break; sleep 0.5; "
            f"done; echo {name.upper()}=$([ -e /www/flag-{name} ] && echo seen || echo missing); ")


def host_signal(ip, name):
    return f"nsenter -t $NSPID -n wget -T 10 -qO- http://{ip}/cgi-bin/{name} >/dev/null 2>&1; "


def wait_httpd(ip):
    return (f"for i in $(seq 160); do nsenter -t $NSPID -n wget -T 2 -qO- "
            f"http://{ip}/g.txt >/dev/null 2>&1 && break; sleep 0.25; done; ")


def stats(text):
    m = re.search(r"userspace rx (\d+) tx (\d+) frames; vhost-net pair starts (\d+), "
                  r"relayed interrupts (\d+), irqfd switches (\d+)", text)
    assert m, f"no KEMU_NET_STATS line in:\n{text[-3000:]}"
    return tuple(int(g) for g in m.groups())


def ping_after_link_up(ip):
    """Guest commands: wait for a first reply from ip (the tries are printed), then three pings in
    a row must pass. Now and then (once in ~8 runs of one test, once in a CI run of another) the
    first pings after link-up got no reply while all later traffic passed."""
    return (f"t=0; while [ $t -lt 15 ]; do t=$((t+1)); ping -c 1 -W 1 {ip} >/dev/null && break; "
            f"done; echo PING-TRIES=$t; ping -c 3 -W 5 {ip}; echo PING-EXIT=$?; ")


def test_vhost_single_queue_both_ways_and_rebind():
    # Phase 1: the host fetches a 2 MiB file from the guest's httpd (guest TX) while the guest
    # pings with large, fragmented echoes (both ways). Phase 2: the guest unbinds and rebinds
    # its driver (device reset: vhost stops and gives the rings back, then starts again at
    # DRIVER_OK), pings again and the host fetches a second file the guest made only then.
    then = (wait_httpd("192.168.80.2") + FIND_KEMU + COUNT_WORKERS +
            "echo HOST-MD5=$(nsenter -t $NSPID -n wget -T 20 -qO- http://192.168.80.2/big | "
            "md5sum | cut -d' ' -f1) >> /tmp/vh.out; " + host_signal("192.168.80.2", "done1") +
            "for i in $(seq 240); do nsenter -t $NSPID -n wget -T 20 -qO /tmp/vh.big2 "
            "http://192.168.80.2/big2 2>/dev/null && break; sleep 0.25; done; "
            "echo HOST-MD5-2=$(md5sum /tmp/vh.big2 | cut -d' ' -f1) >> /tmp/vh.out; " +
            host_signal("192.168.80.2", "done2"))
    r = run_guest(COMMON + ["-netdev", "tap,id=t0,ifname=kemuvh0,script=no,downscript=no,vhost=on",
                            "-device", "virtio-net-pci,netdev=t0"],
                  run="ip addr add 192.168.80.2/24 dev eth0; ip link set eth0 up; "
                      "mkdir -p /www; echo vh-guest > /www/g.txt; " + cgi("done1", "done2") +
                      "dd if=/dev/urandom of=/www/big bs=64k count=32 2>/dev/null; "
                      "echo GUEST-MD5=$(md5sum /www/big | cut -d' ' -f1); httpd -p 80 -h /www; "
                      "ping -c 3 -W 5 192.168.80.1; echo PING-EXIT=$?; "
                      "ping -c 3 -W 5 -s 20000 192.168.80.1; echo BIGPING-EXIT=$?; " +
                      guest_wait("done1") +
                      "D=$(basename $(readlink /sys/class/net/eth0/device)); echo DEV=$D; "
                      "echo $D > /sys/bus/virtio/drivers/virtio_net/unbind; sleep 1; "
                      "echo $D > /sys/bus/virtio/drivers/virtio_net/bind; sleep 1; "
                      "ip addr add 192.168.80.2/24 dev eth0; ip link set eth0 up; "
                      "ping -c 3 -W 5 192.168.80.1; echo PING2-EXIT=$?; "
                      "ping -c 3 -W 5 -s 20000 192.168.80.1; echo BIGPING2-EXIT=$?; "
                      # Written aside and renamed: the host polls for big2 and must never
                      # fetch it half written.
                      "dd if=/dev/urandom of=/www/.big2 bs=64k count=32 2>/dev/null; "
                      "mv /www/.big2 /www/big2; "
                      "echo GUEST-MD5-2=$(md5sum /www/big2 | cut -d' ' -f1); " + guest_wait("done2") +
                      "grep virtio /proc/interrupts",
                  prefix=STATS + "rm -f /tmp/vh.out /tmp/vh.big2; " +
                  netns_prefix("kemuvh0", "192.168.80.1", then),
                  suffix=HOST_LOG + "cat /tmp/vh.out; kill $NSPID")
    assert r.status == 0, r
    host = r.host_output
    assert field(r.output, "PING-EXIT") == "0", r
    assert field(r.output, "BIGPING-EXIT") == "0", r
    assert field(r.output, "DONE1") == "seen" and field(r.output, "DONE2") == "seen", r
    assert field(r.output, "GUEST-MD5") == field(host, "HOST-MD5"), (r, host[-3000:])
    assert int(field(host, "VHOST-WORKERS")) >= 1, host[-3000:]
    # After the driver rebound: traffic again, both ways.
    assert field(r.output, "PING2-EXIT") == "0", r
    assert field(r.output, "BIGPING2-EXIT") == "0", r
    assert field(r.output, "GUEST-MD5-2") == field(host, "HOST-MD5-2"), (r, host[-3000:])
    assert irq_total(r.output, "input.0") > 0, r
    rx, tx, starts, calls, switches = stats(r.output)
    # Not one frame through kemu's userspace datapath; vhost started at each DRIVER_OK.
    assert (rx, tx) == (0, 0), r
    assert starts == 2, r
    # With the vectors unmasked, vhost signals their irqfds itself (both rings at each start):
    # the guest counted its interrupts, kemu relayed next to none of them.
    assert switches >= 4, r
    guest_irqs = irq_total(r.output, "input.0") + irq_total(r.output, "output.0")
    assert calls * 4 < guest_irqs, (calls, guest_irqs, r)


def test_vhost_two_queue_pairs():
    # As test_net_mq's test: many connections spread over both tap queues, so both receive
    # queues interrupt; one vhost worker per queue pair.
    then = (wait_httpd("192.168.81.2") + FIND_KEMU + COUNT_WORKERS +
            "ok=0; for i in $(seq 24); do nsenter -t $NSPID -n wget -T 3 -qO- "
            "http://192.168.81.2/g.txt 2>/dev/null | grep -q mq-guest && ok=$((ok+1)); done; "
            "echo MQ-OK=$ok >> /tmp/vh.out; " + host_signal("192.168.81.2", "done"))
    r = run_guest(COMMON + ["-smp", "2",
                            "-netdev", "tap,id=t0,ifname=kemuvh1,queues=2,script=no,downscript=no,"
                                       "vhost=on",
                            "-device", "virtio-net-pci,netdev=t0,mq=on,vectors=6"],
                  run="ip addr add 192.168.81.2/24 dev eth0; ip link set eth0 up; "
                      "mkdir -p /www; echo mq-guest > /www/g.txt; " + cgi("done") +
                      "httpd -p 80 -h /www; " + ping_after_link_up("192.168.81.1") +
                      guest_wait("done") + "grep virtio /proc/interrupts",
                  prefix=STATS + "rm -f /tmp/vh.out; " +
                  netns_prefix("kemuvh1", "192.168.81.1", then),
                  suffix=HOST_LOG + "cat /tmp/vh.out; kill $NSPID")
    assert r.status == 0, r
    host = r.host_output
    assert field(r.output, "PING-EXIT") == "0", r
    assert field(r.output, "DONE") == "seen", r
    assert field(host, "MQ-OK") == "24", (r, host[-3000:])
    assert int(field(host, "VHOST-WORKERS")) >= 2, host[-3000:]
    assert irq_total(r.output, "input.0") > 0, r
    assert irq_total(r.output, "input.1") > 0, r
    rx, tx, starts, calls, switches = stats(r.output)
    assert (rx, tx) == (0, 0), r
    assert starts == 2, r  # both pairs, once
    assert switches >= 4, r  # each ring on its vector's irqfd


def test_vhost_microvm_virtio_mmio():
    then = (wait_httpd("192.168.82.2") + FIND_KEMU + COUNT_WORKERS +
            "echo HOST-GET=$(nsenter -t $NSPID -n wget -T 5 -qO- http://192.168.82.2/g.txt) "
            ">> /tmp/vh.out; " + host_signal("192.168.82.2", "done"))
    r = run_guest(["-M", "microvm", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults",
                   "-serial", "stdio",
                   "-netdev", "tap,id=t0,ifname=kemuvh2,script=no,downscript=no,vhost=on",
                   "-device", "virtio-net-device,netdev=t0"],
                  run="ip addr add 192.168.82.2/24 dev eth0; ip link set eth0 up; "
                      "mkdir -p /www; echo mmio-guest > /www/g.txt; " + cgi("done") +
                      "httpd -p 80 -h /www; " + ping_after_link_up("192.168.82.1") +
                      guest_wait("done"),
                  prefix=STATS + "rm -f /tmp/vh.out; " +
                  netns_prefix("kemuvh2", "192.168.82.1", then),
                  suffix=HOST_LOG + "cat /tmp/vh.out; kill $NSPID")
    assert r.status == 0, r
    host = r.host_output
    assert field(r.output, "PING-EXIT") == "0", r
    assert field(r.output, "DONE") == "seen", r
    assert field(host, "HOST-GET") == "mmio-guest", (r, host[-3000:])
    assert int(field(host, "VHOST-WORKERS")) >= 1, host[-3000:]
    rx, tx, starts, calls, switches = stats(r.output)
    # virtio-mmio has no MSI-X: every interrupt goes through kemu (the line and its status).
    assert (rx, tx) == (0, 0) and starts == 1 and calls > 0 and switches == 0, r


def test_vhost_set_link_off_and_on():
    # set_link off takes the rings back from vhost-net (its frames would flow on) and drops
    # traffic in kemu; on again, vhost-net takes them once more.
    r = run_guest(COMMON + ["-serial", f"file:{READY}", "-qmp", f"unix:{SOCK},server=on,wait=off",
                            "-netdev", "tap,id=t0,ifname=kemuvh4,script=no,downscript=no,vhost=on",
                            "-device", "virtio-net-pci,netdev=t0,id=nic0"],
                  run="ip addr add 192.168.84.2/24 dev eth0; ip link set eth0 up; " +
                      ping_after_link_up("192.168.84.1") +
                      "echo LINK-OFF > /dev/ttyS1; " + wait_carrier(0, "OFF") +
                      "ping -c 2 -W 2 192.168.84.1; echo PING-OFF-EXIT=$?; "
                      "echo LINK-ON > /dev/ttyS1; " + wait_carrier(1, "ON") +
                      ping_after_link_up("192.168.84.1").replace("PING-", "PING-ON-"),
                  prefix=STATS + netns_prefix("kemuvh4", "192.168.84.1", "true") +
                         qmp_prefix(f"wait-file:{READY}:LINK-OFF:1", "hmp:set_link nic0 off",
                                    f"wait-file:{READY}:LINK-ON:1", "hmp:set_link t0 on"),
                  suffix=QMP_SUFFIX + "; " + HOST_LOG + "kill $NSPID")
    assert r.status == 0, r
    steps = qmp_steps(r.host_output)
    assert steps["hmp:set_link nic0 off"]["reply"]["return"] == "", steps
    assert steps["hmp:set_link t0 on"]["reply"]["return"] == "", steps
    assert field(r.output, "PING-EXIT") == "0", r
    assert field(r.output, "CARRIER-OFF") == "0", r
    assert field(r.output, "PING-OFF-EXIT") != "0", r
    assert field(r.output, "CARRIER-ON") == "1", r
    assert field(r.output, "PING-ON-EXIT") == "0", r
    rx, tx, starts, calls, switches = stats(r.output)
    # No frame passed kemu's datapath (with the link down they were dropped there); vhost-net
    # started at DRIVER_OK and again when the link came back.
    assert (rx, tx) == (0, 0), r
    assert starts == 2, r


def test_vhost_bad_options_one_line():
    for args, want in [
            (["-netdev", "tap,id=t0,ifname=kemuvh3,script=no,downscript=no,vhostfd=77"],
             "vhostfd=77"),
            # stdin is no vhost-net descriptor
            (["-netdev", "tap,id=t0,ifname=kemuvh3,script=no,downscript=no,vhostfd=0"],
             "vhostfd=0: not a vhost-net descriptor"),
            (["-netdev", "tap,id=t0,vhost=off,vhostfd=3"], "vhostfd= is not valid without vhost"),
            (["-netdev", "tap,id=t0,queues=2,vhostfd=3"], "vhostfds="),
            (["-netdev", "tap,id=t0,vhostfds=3:4"], "vhostfds= needs fds=")]:
        r = run_guest(["-M", "pc", "-nographic"] + args, run="true", timeout=60)
        assert r.status == 1, (args, r)
        lines = [line for line in r.output.splitlines() if line.startswith("kemu:")]
        assert len(lines) == 1 and want in lines[0], (args, r.output)


def test_vhost_survives_vm_reset():
    # system_reset while vhost runs: the device is reset (vhost stops and gives the rings back),
    # the guest boots again and its driver starts vhost afresh; traffic works on both boots.
    r = run_guest(COMMON + ["-serial", f"file:{READY}", "-qmp", f"unix:{SOCK},server=on,wait=off",
                            "-netdev", "tap,id=t0,ifname=kemuvh4,script=no,downscript=no,vhost=on",
                            "-device", "virtio-net-pci,netdev=t0"],
                  run="ip addr add 192.168.84.2/24 dev eth0; ip link set eth0 up; "
                      "ping -c 3 -W 5 -s 8000 192.168.84.1; echo PING-EXIT=$?; "
                      "echo GUEST-READY > /dev/ttyS1; sleep 200",
                  prefix=STATS + netns_prefix("kemuvh4", "192.168.84.1", "true") +
                  qmp_prefix(f"wait-file:{READY}:GUEST-READY:1", "cmd:system_reset",
                             "event:RESET", f"wait-file:{READY}:GUEST-READY:2", "cmd:quit",
                             timeout=400),
                  suffix=QMP_SUFFIX + "; kill $NSPID", timeout=400)
    assert r.status == 0, r
    assert re.findall(r"^PING-EXIT=(\d+)", r.output, re.M) == ["0", "0"], r
    steps = qmp_steps(r.host_output)
    assert steps["cmd:quit"]["reply"].get("return") == {}, steps
    rx, tx, starts, calls, switches = stats(r.output)
    assert (rx, tx) == (0, 0) and starts == 2 and switches >= 4, r
