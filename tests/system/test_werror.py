"""-drive werror=/rerror=: a disk whose host file system fills up, seen from a Debian guest.

The raw image lives on a small tmpfs where kemu runs (the test host), so the guest's writes fail
with ENOSPC once it is full. With the default werror=enospc kemu pauses the VM (io-error) and
emits BLOCK_IO_ERROR; the QMP driver below (this file run as a script, beside kemu) then grows the
tmpfs and sends cont, and the held writes go through: the guest never sees an error. With
werror=report the guest's dd fails and kemu keeps running.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MNT = "/tmp/kemu-werror-mnt"
IMG = f"{MNT}/disk.img"
SOCK = "/tmp/kemu-werror-qmp.sock"
QOUT = "/tmp/kemu-werror-qmp.out"
COMMON = ["-M", "pc", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults", "-serial", "stdio",
          "-qmp", f"unix:{SOCK},server=on,wait=off"]

# Host side: a 4 MiB tmpfs holding a sparse 32 MiB raw image.
MAKE_IMG = (f"umount {MNT} 2>/dev/null; mkdir -p {MNT} && "
            f"mount -t tmpfs -o size=4M kemu-werror {MNT} && truncate -s 32M {IMG} && "
            f"echo HOST-MOUNTED; ")
# After kemu: what reached the image's first 16 MiB; the tmpfs goes away.
AFTER = (f"echo HOST-MD5=$(head -c 16777216 {IMG} | md5sum | cut -c1-32); sleep 1; "
         f"cat {QOUT}; umount {MNT}; rm -f {SOCK}")
# Guest side: 16 MiB of random data, its md5, written to the disk with a final fsync.
GUEST_WRITE = ("dd if=/dev/urandom of=/tmp/w bs=1M count=16 2>/dev/null; "
               "echo GUEST-MD5=$(md5sum < /tmp/w | cut -c1-32); "
               "dd if=/tmp/w of=/dev/vda bs=1M conv=fsync; echo DD-EXIT=$?; sleep 1")


def driver_prefix(mode, timeout=400):
    return (f"rm -f {SOCK} {QOUT}; (python3 {os.path.join(HERE, 'test_werror.py')} "
            f"--driver {mode} {timeout} > {QOUT} 2>&1) & ")


def driver_lines(host_output):
    assert "WERR-DONE" in host_output, host_output[-3000:]
    return [json.loads(line[5:]) for line in host_output.splitlines()
            if line.startswith("WERR ")]


def field(text, name):
    import re
    m = re.search(rf"^{name}=(\S*)", text, re.M)
    assert m, f"{name} missing in:\n{text[-3000:]}"
    return m.group(1)


def test_enospc_pauses_then_cont_completes():
    from conftest import run_guest
    r = run_guest(COMMON + ["-drive", f"file={IMG},if=virtio,format=raw"],
                  run=GUEST_WRITE, prefix=MAKE_IMG + driver_prefix("enospc"), suffix=AFTER,
                  timeout=400)
    assert "HOST-MOUNTED" in r.host_output, r.host_output[-3000:]
    assert r.status == 0, r
    steps = driver_lines(r.host_output)
    ev = next(s["event"] for s in steps if s["step"] == "io-error")
    d = ev["data"]
    assert d["device"] == "virtio0" and d["operation"] == "write", ev
    assert d["action"] == "stop" and d["nospace"] is True, ev
    assert d["reason"] == "No space left on device", ev
    assert d["node-name"].startswith("#block"), ev
    st = next(s["reply"] for s in steps if s["step"] == "status")
    assert st["status"] == "io-error" and st["running"] is False, st
    info = next(s["reply"] for s in steps if s["step"] == "info-status")
    assert "VM status: paused (io-error)" in info, info
    qb = next(s["reply"] for s in steps if s["step"] == "query-block")
    assert qb[0]["io-status"] == "nospace", qb
    ib = next(s["reply"] for s in steps if s["step"] == "info-block")
    assert "    I/O status:       nospace" in ib, ib
    # cont cleared it: a query after cont says nospace only if a late failure stopped the VM
    # again, which the driver then sees as another STOP.
    names = [s["step"] for s in steps]
    after = [i for i, n in enumerate(names) if n == "query-block-after-cont"]
    assert after, steps
    for i in after:
        status = steps[i]["reply"][0]["io-status"]
        assert status == "ok" or "stopped-again" in names[i:], (status, names)
    assert any(s["step"] == "stop-event" for s in steps), steps
    cont = next(s["reply"] for s in steps if s["step"] == "cont")
    assert cont.get("return") == {}, cont
    assert any(s["step"] == "resume-event" for s in steps), steps
    assert steps[-1]["step"] == "exited", steps
    # The guest never saw an error and the disk holds what it wrote.
    assert field(r.output, "DD-EXIT") == "0", r
    assert "I/O error" not in r.output, r
    assert field(r.output, "GUEST-MD5") == field(r.host_output, "HOST-MD5"), r


def test_werror_report_fails_guest_write():
    from conftest import run_guest
    r = run_guest(COMMON + ["-drive", f"file={IMG},if=virtio,format=raw,werror=report"],
                  run=GUEST_WRITE + "; echo GUEST-STILL-RUNNING",
                  prefix=MAKE_IMG + driver_prefix("report"), suffix=AFTER, timeout=400)
    assert "HOST-MOUNTED" in r.host_output, r.host_output[-3000:]
    assert r.status == 0, r
    assert field(r.output, "DD-EXIT") != "0", r
    assert "Input/output error" in r.output or "I/O error" in r.output, r
    assert "GUEST-STILL-RUNNING" in r.output, r
    steps = driver_lines(r.host_output)
    ev = next(s["event"] for s in steps if s["step"] == "io-error")
    assert ev["data"]["action"] == "report" and ev["data"]["nospace"] is True, ev
    st = next(s["reply"] for s in steps if s["step"] == "status")
    assert st["status"] == "running", st
    qb = next(s["reply"] for s in steps if s["step"] == "query-block")
    assert "io-status" not in qb[0], qb  # werror=report keeps none, as QEMU


# ---- the QMP driver, run where kemu runs (python3 test_werror.py --driver MODE TIMEOUT) ----

def report(step, **kw):
    print("WERR " + json.dumps(dict(step=step, **kw)), flush=True)


def drive(mode, timeout):
    sys.path.insert(0, HERE)
    from qmp import QMP
    q = QMP(SOCK, timeout=timeout)
    q.negotiate()
    report("io-error", event=q.wait_event("BLOCK_IO_ERROR", timeout=timeout))
    if mode == "report":
        report("status", reply=q.cmd("query-status"))
        report("query-block", reply=q.cmd("query-block"))
        return
    report("stop-event", event=q.wait_event("STOP", timeout=60))
    report("status", reply=q.cmd("query-status"))
    report("info-status",
           reply=q.cmd("human-monitor-command", {"command-line": "info status"}))
    report("query-block", reply=q.cmd("query-block"))
    report("info-block", reply=q.cmd("human-monitor-command", {"command-line": "info block"}))
    r = subprocess.run(["mount", "-o", "remount,size=64M", MNT], capture_output=True, text=True)
    report("remount", status=r.returncode, out=r.stdout + r.stderr)
    # A failure reported after the cont (a request in flight when the VM stopped) may stop the
    # VM once more: cont again, until kemu ends with the guest's reboot (-no-reboot).
    for _ in range(5):
        report("cont", reply=q.cmd_raw("cont"))
        report("resume-event", event=q.wait_event("RESUME", timeout=60))
        # cont clears the io-status; the guest may still be running now, or about to exit.
        try:
            report("query-block-after-cont", reply=q.cmd("query-block"))
        except (EOFError, ConnectionError):
            report("exited")
            break
        try:
            q.wait_event("STOP", timeout=timeout)
        except (EOFError, ConnectionError):
            report("exited")
            break
        report("stopped-again", reply=q.cmd("query-status"))


def driver_main(argv):
    mode, timeout = argv[0], float(argv[1])
    try:
        drive(mode, timeout)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        print(f"WERR-FAIL {type(e).__name__}: {e}", flush=True)
        return 1
    print("WERR-DONE", flush=True)
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--driver":
    sys.exit(driver_main(sys.argv[2:]))
