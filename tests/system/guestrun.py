#!/usr/bin/env python3
"""Run one VMM command line, feed it input, watch its console, and report as JSON.

The system tests run this where KVM can run Linux: directly on a host with VMX/SVM, or inside the
test host (tests/testhost). Everything the test asserts comes from what the guest printed.

  guestrun.py [--timeout S] [--input-after MARKER TEXT]... [--kill-after-count MARKER N]
              [--stdin-tty] [--mark-stats MARKER] -- CMD ARGS...

Output: one line 'GUESTRUN-RESULT <json>' with status, seconds, output and whether it was killed;
with --mark-stats, also 'marks': for each console line starting with MARKER, what the VMM had
cost the host up to then (its CPU time, and its VM's KVM exit counters from debugfs).
"""
import argparse
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def thread_dump(pid):
    """Each thread of a VMM that timed out: name, state, wait channel and kernel stack, to tell
    a vCPU halted in KVM from one stuck in the VMM (the stack needs root; left out without)."""
    lines = []
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError:
        return ""
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        stat = read_text(f"{base}/stat")
        state = stat[stat.rfind(")") + 2:].split(" ", 1)[0] if ")" in stat else "?"
        lines.append(f"thread {tid} {read_text(f'{base}/comm')} state {state} "
                     f"wchan {read_text(f'{base}/wchan') or '-'}")
        lines += ["    " + l for l in read_text(f"{base}/stack").splitlines()[:12]]
    if shutil.which("gdb"):  # and where in the VMM each thread is
        try:
            bt = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx",
                                 "-ex", "thread apply all bt 12"], capture_output=True,
                                text=True, timeout=90).stdout
            lines += [l[:160] for l in bt.splitlines() if l.startswith(("Thread ", "#"))]
        except (OSError, subprocess.TimeoutExpired):
            lines.append("gdb did not answer")
    return "\n".join(lines)


# KVM's per-VM counters (vCPU ones summed) under /sys/kernel/debug/kvm/<pid>-<fd>/.
KVM_STATS = ("exits", "halt_exits", "io_exits", "mmio_exits", "irq_exits", "irq_injections",
             "halt_wakeup", "signal_exits")


def cost_snapshot(pid):
    """What the VMM has cost so far: CPU seconds (its own, and its guest's, which Linux counts
    in utime as well) and its VMs' KVM exit counters (empty where debugfs is not mounted)."""
    stat = read_text(f"/proc/{pid}/stat")
    f = stat[stat.rfind(")") + 2:].split() if ")" in stat else []
    hz = os.sysconf("SC_CLK_TCK")
    snap = {"t": time.monotonic()}
    if len(f) > 41:  # fields 14, 15 and 43 of proc(5), counted from field 3 here
        user, system, guest = int(f[11]), int(f[12]), int(f[40])
        snap.update(vmm_cpu=(user + system - guest) / hz, guest_cpu=guest / hz)
    kvm = {}
    try:
        dirs = [d for d in os.listdir("/sys/kernel/debug/kvm") if d.startswith(f"{pid}-")]
    except OSError:
        dirs = []
    for d in dirs:
        for name in KVM_STATS:
            v = read_text(f"/sys/kernel/debug/kvm/{d}/{name}")
            if v.isdigit():
                kvm[name] = kvm.get(name, 0) + int(v)
    snap["kvm"] = kvm
    return snap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--input-after", nargs=2, action="append", default=[],
                    metavar=("MARKER", "TEXT"), help="send TEXT once MARKER was printed")
    ap.add_argument("--kill-after-count", nargs=2, metavar=("MARKER", "N"),
                    help="kill the VMM once MARKER was printed N times")
    ap.add_argument("--stdin-tty", action="store_true", help="give the VMM a pty as terminal")
    ap.add_argument("--mark-stats", metavar="MARKER",
                    help="record the VMM's costs at each console line starting with MARKER")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd

    start = time.monotonic()
    if a.stdin_tty:
        master, slave = pty.openpty()
        p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.STDOUT,
                             start_new_session=True)
        os.close(slave)
        out_fd = in_fd = master
    else:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        out_fd, in_fd = p.stdout.fileno(), p.stdin.fileno()

    buf = b""
    pending = [(m.encode(), t.encode().decode("unicode_escape").encode()) for m, t in a.input_after]
    killed = timed_out = exited = False
    marks, scanned = [], 0  # scanned: how much of the console the marker search has seen
    while True:
        left = a.timeout - (time.monotonic() - start)
        if left <= 0:
            timed_out = True
            break
        # Once the VMM has exited, only what is still in the pipe: it may have written its last
        # words after the previous select() gave up waiting (a VMM failing at start-up says
        # only that).
        r, _, _ = select.select([out_fd], [], [], 0 if exited else min(left, 1.0))
        if r:
            try:
                chunk = os.read(out_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            text = buf.replace(b"\r", b"")
            while pending and pending[0][0] in text:
                os.write(in_fd, pending.pop(0)[1])
            if a.mark_stats:
                end = text.rfind(b"\n") + 1
                for line in text[scanned:end].splitlines():
                    if line.startswith(a.mark_stats.encode()):
                        marks.append(dict(cost_snapshot(p.pid),
                                          line=line.decode("utf-8", "replace")))
                scanned = max(scanned, end)
            if a.kill_after_count:
                m, n = a.kill_after_count
                if text.count(m.encode()) >= int(n):
                    killed = True
                    break
        elif exited:
            break
        else:
            exited = p.poll() is not None
    threads = thread_dump(p.pid) if timed_out and p.poll() is None else ""
    if killed or timed_out:
        p.send_signal(signal.SIGKILL)
    try:
        status = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        status = p.wait()
    result = {
        "status": status,
        "seconds": round(time.monotonic() - start, 3),
        "killed": killed,
        "timed_out": timed_out,
        "output": buf.decode("utf-8", "replace").replace("\r", ""),
        "threads": threads,
        "marks": marks,
    }
    sys.stdout.write("GUESTRUN-RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
