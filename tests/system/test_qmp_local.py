"""QMP against kemu on this machine's /dev/kvm, with a tiny guest that halts forever: the
protocol, the lifecycle commands and their events, several clients, malformed input."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import KEMU, ROOT
from qmp import QMP, QMPError

sys.path.insert(0, os.path.join(ROOT, "tests", "guests"))
import mkbzimage  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="no usable /dev/kvm on this machine")


@pytest.fixture
def vm(tmp_path):
    """Start kemu with a QMP socket; yields (process, socket path, start(extra args))."""
    kernel = tmp_path / "halt.bzImage"
    kernel.write_bytes(mkbzimage.build_halt())
    sock = str(tmp_path / "qmp.sock")
    procs = []

    def start(*extra, smp="2"):
        p = subprocess.Popen([KEMU, "-enable-kvm", "-m", "64M", "-smp", smp, "-nodefaults",
                              "-display", "none", "-kernel", str(kernel),
                              "-qmp", f"unix:{sock},server=on,wait=off", *extra],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        procs.append(p)
        return p, QMP(sock)

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def test_greeting_and_negotiation(vm):
    p, q = vm()
    assert "QMP" in q.greeting and "version" in q.greeting["QMP"], q.greeting
    assert q.greeting["QMP"]["capabilities"] == []
    r = q.cmd_raw("query-status")
    assert r["error"]["class"] == "CommandNotFound", r
    assert q.negotiate() == {}
    cmds = {c["name"] for c in q.cmd("query-commands")}
    assert {"query-status", "stop", "cont", "quit", "system_reset",
            "system_powerdown", "query-cpus-fast", "query-pci"} <= cmds
    assert q.cmd("query-kvm") == {"enabled": True, "present": True}


def test_stop_cont_and_events(vm):
    p, q = vm()
    q.negotiate()
    assert q.cmd("query-status")["status"] == "running"
    q.cmd("stop")
    ev = q.wait_event("STOP")
    assert "timestamp" in ev and {"seconds", "microseconds"} <= set(ev["timestamp"])
    st = q.cmd("query-status")
    assert st["status"] == "paused" and st["running"] is False
    q.cmd("cont")
    q.wait_event("RESUME")
    assert q.cmd("query-status")["running"] is True
    q.cmd("system_reset")
    ev = q.wait_event("RESET")
    assert ev["data"]["guest"] is False, ev
    assert q.cmd("query-status")["status"] == "running"
    q.cmd("quit")
    ev = q.wait_event("SHUTDOWN")
    assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}, ev
    assert p.wait(timeout=10) == 0


def test_start_paused_until_cont(vm):
    p, q = vm("-S")
    q.negotiate()
    assert q.cmd("query-status")["status"] == "prelaunch"
    q.cmd("cont")
    q.wait_event("RESUME")
    assert q.cmd("query-status")["status"] == "running"
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_cpus_match_smp(vm):
    p, q = vm(smp="4,sockets=2,cores=2,threads=1")
    q.negotiate()
    cpus = q.cmd("query-cpus-fast")
    assert len(cpus) == 4
    assert all(c["thread-id"] > 0 for c in cpus), cpus
    assert sorted((c["props"]["socket-id"], c["props"]["core-id"]) for c in cpus) == [
        (0, 0), (0, 1), (1, 0), (1, 1)], cpus
    pci = q.cmd("query-pci")
    assert pci[0]["devices"][0]["id"]["vendor"] == 0x8086  # the host bridge


def test_cpu_threads_stable(vm):
    """As QEMU's: the vCPU threads exist under -S, and their ids (which management tools pin)
    stay the same across cont, stop and system_reset."""
    p, q = vm("-S", smp="2")
    q.negotiate()

    def tids():
        ids = [c["thread-id"] for c in q.cmd("query-cpus-fast")]
        for i, t in enumerate(ids):
            with open(f"/proc/{p.pid}/task/{t}/comm") as f:
                assert f.read().strip() == f"CPU {i}/KVM", (i, t)
        return ids

    first = tids()
    assert len(set(first)) == 2 and p.pid not in first, first
    q.cmd("cont")
    q.wait_event("RESUME")
    assert tids() == first
    q.cmd("stop")
    q.wait_event("STOP")
    assert tids() == first
    q.cmd("cont")
    q.wait_event("RESUME")
    q.cmd("system_reset")
    q.wait_event("RESET")
    assert q.cmd("query-status")["status"] == "running"
    assert tids() == first
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_two_clients_and_garbage(vm):
    p, q = vm()
    q.negotiate()
    q2 = QMP(q.sock.getpeername())
    q2.negotiate()
    q2.send_raw(b'{"execute": "query-status", "id": 1, \n')  # unfinished: waits for more
    q2.send_raw(b'"bogus": 1}\n')
    r = q2.read_reply()
    assert r["error"]["class"] == "GenericError" and r["id"] == 1, r
    q2.send_raw(b"{\"execute\": ]}\n")  # complete but not JSON
    q2.send_raw(b'{"execute": "query-name", "id": "after"}\n')
    errors = []
    while True:
        r = q2.read_reply()
        if r.get("id") == "after":
            break
        errors.append(r)
    assert errors and all(e["error"]["class"] == "GenericError" for e in errors), errors
    assert "return" in r, r
    r = q2.cmd_raw("no-such-command")
    assert r["error"]["class"] == "CommandNotFound", r
    # A huge object that never ends: that client is dropped, the other is still served.
    try:
        q2.send_raw(b'{"execute": "' + b"x" * (2 << 20))
        q2.read_reply()
    except (OSError, EOFError, json.JSONDecodeError):
        pass
    q.cmd("stop")
    assert q.cmd("query-status")["status"] == "paused"
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_powerdown_without_acpi_guest(vm):
    # The tiny guest has no ACPI driver: the button press is reported, nothing powers off.
    p, q = vm()
    q.negotiate()
    q.cmd("system_powerdown")
    q.wait_event("POWERDOWN")
    time.sleep(0.2)
    assert p.poll() is None
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_hmp_over_qmp(vm):
    p, q = vm()
    q.negotiate()
    out = q.cmd("human-monitor-command", {"command-line": "info status"})
    assert "running" in out, out
    with pytest.raises(QMPError):
        q.cmd("human-monitor-command", {"bad-arg": 1})
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_balloon_commands(vm):
    """QEMU's balloon, query-balloon and info balloon: DeviceNotActive without a balloon device
    (whatever the value); with one (the tiny guest has no driver) the target is taken and actual
    stays at the RAM size until a driver inflates."""
    p, q = vm()
    q.negotiate()
    for cmd, args in (("query-balloon", None), ("balloon", {"value": 32 << 20}),
                      ("balloon", {"value": 0})):
        r = q.cmd_raw(cmd, args)
        assert r["error"] == {"class": "DeviceNotActive",
                              "desc": "No balloon device has been activated"}, r
    out = q.cmd("human-monitor-command", {"command-line": "info balloon"})
    assert out == "Error: No balloon device has been activated\r\n", out
    q.cmd("quit")
    assert p.wait(timeout=10) == 0

    p, q = vm("-device", "virtio-balloon-pci,id=b0,deflate-on-oom=on")
    q.negotiate()
    assert q.cmd("query-balloon") == {"actual": 64 << 20}
    assert q.cmd("balloon", {"value": 32 << 20}) == {}
    r = q.cmd_raw("balloon", {"value": -1})
    assert r["error"] == {"class": "GenericError", "desc": "Parameter 'target' expects a size"}, r
    r = q.cmd_raw("balloon", {"value": "1G"})
    assert r["error"]["class"] == "GenericError", r
    for line, want in (("balloon 48", ""), ("info balloon", "balloon: actual=64\r\n")):
        out = q.cmd("human-monitor-command", {"command-line": line})
        assert out == want, (line, out)
    devs = [d for bus in q.cmd("query-pci") for d in bus["devices"] if d["qdev_id"] == "b0"]
    assert [(d["id"]["vendor"], d["id"]["device"]) for d in devs] == [(0x1af4, 0x1045)], devs
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_query_memdev(vm, tmp_path):
    """QEMU's query-memdev and info memdev: the guest RAM as pc.ram, or as the memory backend
    object -machine memory-backend names, with what backs it."""
    p, q = vm("-machine", "mem-merge=off", "-mem-prealloc")
    q.negotiate()
    assert q.cmd("query-memdev") == [{
        "id": "pc.ram", "size": 64 << 20, "merge": False, "dump": True, "prealloc": True,
        "share": False, "reserve": False, "host-nodes": [], "policy": "default"}]
    q.cmd("quit")
    assert p.wait(timeout=10) == 0

    p, q = vm("-object", f"memory-backend-file,id=ram0,size=64M,mem-path={tmp_path},share=on,"
              "dump=off", "-machine", "memory-backend=ram0")
    q.negotiate()
    assert q.cmd("query-memdev") == [{
        "id": "ram0", "size": 64 << 20, "merge": True, "dump": False, "prealloc": False,
        "share": True, "reserve": True, "host-nodes": [], "policy": "default"}]
    out = q.cmd("human-monitor-command", {"command-line": "info memdev"})
    assert out == ("memory backend: ram0\r\n  size:  67108864\r\n  merge: true\r\n"
                   "  dump: false\r\n  prealloc: false\r\n  share: true\r\n"
                   "  reserve: true\r\n  policy: default\r\n  host nodes: \r\n\r\n"), out
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_query_block_io_status(vm, tmp_path):
    """io-status as QEMU shows it: on a virtio-blk drive whose werror/rerror can stop the VM
    (werror=enospc is the default), "ok" until a failure stops it; absent otherwise."""
    img = tmp_path / "d.raw"
    img.write_bytes(bytes(1 << 20))
    drives = [("d0", "if=virtio"), ("d1", "if=virtio,werror=report"),
              ("d2", "if=virtio,werror=report,rerror=stop"), ("d3", "if=none")]
    args = []
    for name, extra in drives:
        args += ["-drive", f"file={img},format=raw,id={name},file.locking=off,{extra}"]
    p, q = vm(*args)
    q.negotiate()
    blocks = {b["device"]: b for b in q.cmd("query-block")}
    assert blocks["d0"].get("io-status") == "ok" and list(blocks["d0"])[0] == "io-status"
    assert "io-status" not in blocks["d1"]
    assert blocks["d2"].get("io-status") == "ok"
    assert "io-status" not in blocks["d3"]
    out = q.cmd("human-monitor-command", {"command-line": "info block"})
    assert "I/O status" not in out and "\r\n\r\nd1 (" in out, out
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_query_chardev_lists_monitor_sockets(vm, tmp_path):
    """As QEMU 7.2: each -qmp socket is a chardev compat_monitorN, numbered after the -monitor
    ones; a -mon mode=control chardev keeps its id; filenames are QEMU's, "disconnected:" in
    front while no client is on the socket."""
    sock = str(tmp_path / "qmp.sock")  # the fixture's -qmp (given last on the command line)
    hsock, csock = str(tmp_path / "h.sock"), str(tmp_path / "c.sock")
    p, q = vm("-monitor", f"unix:{hsock},server=on,wait=off",
              "-chardev", f"socket,id=qc,path={csock},server=on,wait=off",
              "-mon", "chardev=qc,mode=control")
    q.negotiate()
    devs = {c["label"]: c for c in q.cmd("query-chardev")}
    # The fixture's -qmp comes after -monitor: compat_monitor1. One QMP server serves both
    # sockets in kemu, so a client on either makes both connected.
    assert devs["compat_monitor1"] == {"label": "compat_monitor1", "frontend-open": True,
                                       "filename": f"unix:{sock},server=on"}, devs
    assert devs["qc"] == {"label": "qc", "frontend-open": True,
                          "filename": f"unix:{csock},server=on"}, devs
    assert devs["compat_monitor0"]["label"] == "compat_monitor0", devs  # the -monitor
    assert len(devs) == 3, devs
    # Over the other QMP socket: the same list.
    q2 = QMP(csock)
    q2.negotiate()
    assert {c["label"]: c for c in q2.cmd("query-chardev")} == devs
    q.cmd("quit")
    assert p.wait(timeout=10) == 0


def test_query_chardev_qmp_disconnected(tmp_path):
    """With no QMP client, HMP's info chardev shows the -qmp socket as QEMU does; a TCP one
    too."""
    import socket as so
    probe = so.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    kernel = tmp_path / "halt.bzImage"
    kernel.write_bytes(mkbzimage.build_halt())
    qsock = str(tmp_path / "q.sock")
    p = subprocess.Popen([KEMU, "-enable-kvm", "-m", "64M", "-nodefaults", "-display", "none",
                          "-kernel", str(kernel), "-monitor", "stdio",
                          "-qmp", f"unix:{qsock},server=on,wait=off",
                          "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out, err = p.communicate("info chardev\nquit\n", timeout=20)
    assert p.returncode == 0, err
    assert f"compat_monitor1: filename=disconnected:unix:{qsock},server=on\n" in out, out
    assert f"compat_monitor2: filename=disconnected:tcp:127.0.0.1:{port},server=on\n" \
        in out, out
