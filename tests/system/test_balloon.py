"""virtio-balloon, checked from inside a Debian guest and from kemu's own memory: QMP's balloon
shrinks the memory the guest itself reports (MemTotal: Linux's driver takes inflated pages off
its managed memory) and gives it back; query-balloon, info balloon and BALLOON_CHANGE follow what
the guest's driver says; the pages the guest gives away leave kemu's resident memory, inflated
or (free-page-reporting=on) reported free.

The QMP client runs where kemu runs (test_acpi's qmp_script.py; its rss step reads kemu's VmRSS
through -pidfile); the guest tells it where it is on its second serial port, a file the script
watches.
"""
import json

from conftest import INIT_MARKER, run_guest
from test_acpi import QMP_SUFFIX, READY, SOCK, qmp_prefix, qmp_steps
from test_virtio import field

MIB = 1 << 20
PIDFILE = "/tmp/kemu-balloon.pid"
BASE = ["-M", "pc", "-nographic", "-m", "512M", "-nodefaults", "-no-reboot", "-serial", "stdio",
        "-serial", f"file:{READY}", "-qmp", f"unix:{SOCK},server=on,wait=off",
        "-pidfile", PIDFILE]

MEMTOTAL = "$(awk '/MemTotal/{print $2}' /proc/meminfo)"


def wait_mem(cond, name):
    """Wait (90 s at most) until `cond` on $t (MemTotal, KiB) holds, then print it as NAME."""
    return (f"for i in $(seq 900); do t={MEMTOTAL}; [ {cond} ] && break; sleep 0.1; done; "
            f"echo {name}=$t; ")


# 200 MiB the guest writes and frees: kemu has those pages resident until they are given back.
TOUCH = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=200 status=none; rm /dev/shm/fill; "

GUEST = ("t0=" + MEMTOTAL + "; echo MEM0=$t0; "
         "echo BOUND=$(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio); "
         + TOUCH + "echo GUEST-READY > /dev/ttyS1; "
         # the whole 384 MiB, then a moment for the driver's last `actual` write
         + wait_mem("$t -le $((t0 - 384 * 1024))", "MEM1")
         + "sleep 1; echo GUEST-INFLATED > /dev/ttyS1; "
         + wait_mem("$t -ge $t0", "MEM2")
         + "sleep 1; echo GUEST-DEFLATED > /dev/ttyS1; sleep 200")


def query_replies(host_output, step):
    """The return values of every run of `step`, in order (qmp_steps keeps only the last)."""
    return [json.loads(line[5:])["reply"].get("return") for line in host_output.splitlines()
            if line.startswith("QMPS ") and json.loads(line[5:])["step"] == step]


def test_balloon_inflate_and_deflate():
    steps = [f"wait-file:{READY}:GUEST-READY:1", f"rss:{PIDFILE}:before", "cmd:query-balloon",
             f'cmd:balloon:{{"value": {128 * MIB}}}', "event:BALLOON_CHANGE",
             f"wait-file:{READY}:GUEST-INFLATED:1", f"rss:{PIDFILE}:inflated",
             "cmd:query-balloon", "hmp:info balloon",
             f'cmd:balloon:{{"value": {512 * MIB}}}', f"wait-file:{READY}:GUEST-DEFLATED:1",
             "cmd:query-balloon", "cmd:quit"]
    r = run_guest(BASE + ["-device", "virtio-balloon-pci,id=balloon0"], run=GUEST,
                  prefix=qmp_prefix(*steps), suffix=QMP_SUFFIX)
    assert r.status == 0, r
    assert field(r.output, "BOUND") == "1", r
    mem0, mem1, mem2 = (int(field(r.output, k)) for k in ("MEM0", "MEM1", "MEM2"))
    # the balloon holds 384 MiB: MemTotal falls by exactly that, then comes back
    assert mem0 - mem1 == 384 * 1024, (mem0, mem1, r)
    assert mem2 == mem0, (mem0, mem2, r)
    s = qmp_steps(r.host_output)
    assert query_replies(r.host_output, "cmd:query-balloon") == [
        {"actual": 512 * MIB}, {"actual": 128 * MIB}, {"actual": 512 * MIB}], r.host_output
    assert s["hmp:info balloon"]["reply"]["return"] == "balloon: actual=128\r\n", s
    ev = s["event:BALLOON_CHANGE"]["event"]
    assert 128 * MIB <= ev["data"]["actual"] < 512 * MIB, ev
    # most of the 200 MiB the guest touched went into the balloon and out of kemu's memory
    before = s[f"rss:{PIDFILE}:before"]["rss_kib"]
    inflated = s[f"rss:{PIDFILE}:inflated"]["rss_kib"]
    assert inflated < before - 120 * 1024, (before, inflated)
    assert s["cmd:quit"]["reply"].get("return") == {}, s
    assert r.output.count(INIT_MARKER) == 1, r


def test_free_page_reporting_returns_memory():
    # The guest fills 200 MiB and holds it 4 s, then frees it; Linux reports free 2 MiB blocks a
    # couple of seconds later, and kemu drops them. Without reporting they stay resident.
    guest = ("echo BOUND=$(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio); "
             "sleep 1; echo GUEST-READY > /dev/ttyS1; sleep 1; "
             "dd if=/dev/zero of=/dev/shm/fill bs=1M count=200 status=none; "
             "echo GUEST-FILLED > /dev/ttyS1; sleep 4; rm /dev/shm/fill; "
             "echo GUEST-FREED > /dev/ttyS1; sleep 200")
    later = [f"rss:{PIDFILE}:later{i}" for i in range(15)]
    steps = [f"wait-file:{READY}:GUEST-READY:1", f"rss:{PIDFILE}:before",
             f"wait-file:{READY}:GUEST-FILLED:1", f"rss:{PIDFILE}:filled",
             f"wait-file:{READY}:GUEST-FREED:1"]
    for i, step in enumerate(later):
        steps += [f"sleep:1:{i}", step]
    steps += ["hmp:info balloon", "cmd:quit"]
    r = run_guest(BASE + ["-device", "virtio-balloon-pci,free-page-reporting=on"], run=guest,
                  prefix=qmp_prefix(*steps), suffix=QMP_SUFFIX)
    assert r.status == 0, r
    assert field(r.output, "BOUND") == "1", r
    s = qmp_steps(r.host_output)
    before = s[f"rss:{PIDFILE}:before"]["rss_kib"]
    filled = s[f"rss:{PIDFILE}:filled"]["rss_kib"]
    lowest = min(s[step]["rss_kib"] for step in later)
    # the 200 MiB came in (some of those pages the guest had touched before), and most of it
    # went out again once the guest reported it free; without reporting it stays
    assert filled > before + 120 * 1024, (before, filled)
    assert lowest < filled - 100 * 1024, (before, filled, lowest)
    # reporting is not ballooning: the guest keeps all its memory
    assert s["hmp:info balloon"]["reply"]["return"] == "balloon: actual=512\r\n", s
