"""Shared parts of the I/O benchmarks (bench/blk, bench/net).

Each measurement boots one VMM (kemu or Debian's qemu-system-x86_64, the same options) with the
Debian cloud kernel and initrd-bench.gz (scripts/bench-assets.sh: the test initramfs plus fio and
iperf3), where KVM can run Linux: on this machine if /dev/kvm has VMX/SVM, otherwise inside the
test host (tests/testhost). The guest's init runs the benchmark command (kemu.run=<base64>),
which prints one 'BENCH <key> <value>' line per figure; the VMM's console comes back through
tests/system/guestrun.py.
"""
import base64
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "testhost"))
import testhost  # noqa: E402

KEMU = os.environ.get("KEMU") or os.path.join(ROOT, "build", "kemu")
QEMU = os.environ.get("QEMU") or "qemu-system-x86_64"
GUESTRUN = os.path.join(ROOT, "tests", "system", "guestrun.py")
# Inside the test host, commands run in a chroot of this machine, where this is Debian's Python.
PYTHON = "/usr/bin/python3"
INIT_MARKER = "KEMU-GUEST-INIT"
# A guest line 'BENCH-MARK <key> <numbers...>' makes guestrun record what the VMM has cost the
# host so far (tests/system/guestrun.py --mark-stats); two such lines bracket one job.
MARK = "BENCH-MARK"
# KVM's counters are in the test host's debugfs.
DEBUGFS = ("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug "
           "2>/dev/null; ")


def uncached(path):
    """Shell: drop the page cache's copy of an image (GNU dd's documented way), so that every
    run starts from the same state: with cache=none a VMM's O_DIRECT writes must invalidate the
    cached pages they cover, and whichever VMM wrote first after the image was made paid for it
    (round 1 always starts with kemu)."""
    return f"dd if={path} iflag=nocache count=0 status=none; "


def q(argv):
    return " ".join(shlex.quote(a) for a in argv)


def assets():
    """(kernel, initrd) or exit with what to run."""
    d = testhost.assets_dir()
    k, i = os.path.join(d, "vmlinuz-cloud"), os.path.join(d, "initrd-bench.gz")
    missing = [p for p in (k, i) if not os.path.isfile(p)]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run scripts/guest-assets.sh, then "
                 "scripts/bench-assets.sh")
    if not os.access(KEMU, os.X_OK):
        sys.exit(f"{KEMU} is not built (ninja -C build)")
    return k, i


def where():
    ok, why = testhost.kvm_can_run_linux()
    return ("directly on this machine" if ok else "inside the test host") + f" ({why})"


def vmm_argv(vmm, kernel, initrd, guest_cmd, extra, memory="1G", smp=2):
    """The full command line: the same options for both VMMs."""
    append = ("console=ttyS0 panic=-1 quiet kemu.run=" +
              base64.b64encode(guest_cmd.encode()).decode())
    # Linux on x86 keeps at most 2047 bytes of it; QEMU passes a longer one on silently.
    assert len(append) < 2048, f"guest command too long for the kernel command line: {append}"
    # -cpu host for both: it is kemu's default, while QEMU's is qemu64, and the guest kernel and
    # its programs take other code paths on each (copies with rep movsb under ERMS, XSAVE, PCID):
    # one CPU model, or the figures compare CPU models, not VMMs.
    return [KEMU if vmm == "kemu" else QEMU,
            "-enable-kvm", "-M", "pc", "-cpu", "host", "-m", memory, "-smp", str(smp),
            "-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, "-append", append] + list(extra)


def shown_argv(argv):
    """The command line as printed: the base64 guest command shortened."""
    out = []
    for a in argv:
        if "kemu.run=" in a:
            a = a[:a.index("kemu.run=")] + "kemu.run=<guest command, base64>"
        out.append(a)
    return q(out)


def run_vmm(argv, timeout, prefix="", suffix="", costs=None):
    """Run one VMM where KVM runs Linux. Returns (ok, figures, text): figures from the guest's
    'BENCH key value' lines; text is the guest console (and host output) for failures.
    `prefix`/`suffix`: shell commands run there before and after the VMM. `costs`: a function
    from the run's marks (see MARK) to more figures, merged in."""
    marks = ["--mark-stats", MARK] if costs else []
    cmd = (DEBUGFS if costs else "") + prefix + "KEMU_TRACE=reset " + q(
        [PYTHON, GUESTRUN, "--timeout", str(timeout), *marks, "--", *argv])
    if suffix:
        cmd = f"{{ {cmd}; }}; {suffix}"
    for attempt in (1, 2):
        try:
            status, out = testhost.run_on_kvm(cmd, timeout=timeout + 180, cwd=ROOT)
        except testhost.TestHostError as e:
            return False, {}, f"test host failed: {e}"
        res = None
        for line in out.splitlines():
            if line.startswith("GUESTRUN-RESULT "):
                res = json.loads(line[len("GUESTRUN-RESULT "):])
        if res is None:
            return False, {}, f"guestrun did not report (status {status}):\n{out}"
        text = res["output"]
        # As in the system tests: the nested test host now and then triple-faults a guest in
        # early boot; one announced retry. A guest that reached our init is never retried.
        if attempt == 1 and INIT_MARKER not in text and "triple fault" in text:
            print(f"    RETRY: guest triple-faulted before init:\n{tail(text, 15)}", flush=True)
            continue
        break
    figures = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and f[0] == "BENCH":
            try:
                figures[f[1]] = float(f[2])
            except ValueError:
                pass
    if costs:
        figures.update(costs(res.get("marks") or []))
    host = out[:out.find("GUESTRUN-RESULT ")].strip()
    ok = (res["status"] == 0 and not res["timed_out"] and "KEMU-RUN-EXIT=0" in text)
    why = (f"VMM exit status {res['status']}" + (", timed out" if res["timed_out"] else "") +
           f", {res['seconds']} s")
    full = f"[{why}]\n{text}" + (f"\n--- host side ---\n{host}" if host else "")
    if res.get("threads"):
        full += f"\n--- VMM threads at the timeout ---\n{res['threads']}"
    if not ok:
        # The tail printed by the benchmarks may miss the start of a failure (a guest warning
        # before a stall): the whole console is kept.
        fd, path = tempfile.mkstemp(prefix=f"kemu-bench-{os.path.basename(argv[0])}-",
                                    suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(full + "\n")
        full += f"\n(whole output: {path})"
    return ok, figures, full


def warm_up(kernel, initrd, extra, clock, prefix=""):
    """One untimed boot of each VMM (the benchmark's devices, a guest that only exits) before
    round 1: the first guest after the test host boots runs slower (its page cache and
    allocators cold, its own start-up work still going), and round 1 always starts with kemu."""
    for v in ("kemu", "qemu"):
        print(f"[{clock}] warm-up {v:4s} ...", end=" ", flush=True)
        ok, _, text = run_vmm(vmm_argv(v, kernel, initrd, "exit 0", extra), 300, prefix=prefix)
        print("done" if ok else f"failed (not counted):\n{tail(text, 10)}", flush=True)


def tail(text, n=40):
    return "\n".join("      | " + l for l in text.rstrip().splitlines()[-n:])


def alternate(rounds):
    """kemu and QEMU in turn; who goes first alternates by round (kemu, qemu, qemu, kemu...)."""
    for r in range(rounds):
        yield r, ("kemu", "qemu") if r % 2 == 0 else ("qemu", "kemu")


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then 1.96).
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def paired_summary(ratios):
    """The geometric mean of per-round ratios and its 95% interval (t on the logs), or None with
    fewer than 2. Rounds pair runs a few minutes apart, so the test host's drift through a run
    cancels in each ratio; what is left is its noise, which the interval shows."""
    if len(ratios) < 2 or min(ratios) <= 0:
        return None
    logs = [math.log(x) for x in ratios]
    m, sd = statistics.mean(logs), statistics.stdev(logs)
    t = _T95[len(logs) - 2] if len(logs) - 1 <= len(_T95) else 1.96
    h = t * sd / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - h), math.exp(m + h)


def table(metrics, results, rounds):
    """metrics: [(key, label, unit)]; results: {vmm: {key: {round: value}}}. Prints medians and
    their ratio, the ratio round by round where both VMMs have a figure (the test host slows
    down through a run, so the rounds compare like with like and the medians may not), and the
    geometric mean of those paired ratios with its 95% interval."""
    print()
    print(f"  {'median (runs with a figure)':32s} {'kemu':>14s} {'QEMU':>14s} {'kemu/QEMU':>10s}"
          f"  {'paired: geomean [95% interval]':32s} per round")
    for key, label, unit in metrics:
        cells, meds, runs = [], {}, {}
        for vmm in ("kemu", "qemu"):
            runs[vmm] = results[vmm].get(key, {})
            v = list(runs[vmm].values())
            meds[vmm] = statistics.median(v) if v else None
            cells.append(f"{meds[vmm]:9.1f} ({len(v)}/{rounds})" if v else "failed")
        ratio = (f"{meds['kemu'] / meds['qemu']:10.3f}" if meds["kemu"] and meds["qemu"]
                 else f"{'-':>10s}")
        pairs = [(r, runs["kemu"][r] / runs["qemu"][r]) for r in sorted(runs["kemu"])
                 if r in runs["qemu"] and runs["qemu"][r]]
        ps = paired_summary([x for _, x in pairs])
        summ = f"{ps[0]:.3f} [{ps[1]:.2f}, {ps[2]:.2f}] n={len(pairs)}" if ps else "-"
        paired = ", ".join(f"r{r + 1} {x:.2f}" for r, x in pairs)
        print(f"  {label + ' [' + unit + ']':32s} {cells[0]:>14s} {cells[1]:>14s} {ratio}"
              f"  {summ:32s} {paired or '-'}")
    print("  (higher is better for every figure; a ratio >= 1.0 means kemu is at least as fast;")
    print("   an interval that holds 1.0 means this run cannot tell the two apart)")


def mark_windows(marks):
    """{key: (first, last)} of the marks 'BENCH-MARK key numbers...' seen at least twice, each
    mark with its numbers as 'values': the guest's counters at the start and end of one job."""
    seen = {}
    for m in marks:
        f = m["line"].split()
        if len(f) >= 2 and f[0] == MARK:
            try:
                m = dict(m, values=[int(x) for x in f[2:]])
            except ValueError:
                continue
            seen.setdefault(f[1], []).append(m)
    return {k: (v[0], v[-1]) for k, v in seen.items() if len(v) >= 2}


def window_cost(first, last, units):
    """What `units` (requests, MiB...) of guest work cost between two marks: KVM exits, the
    VMM's own CPU milliseconds (without its guest's) and the guest's, each per unit; a figure
    is left out where its counter is missing (no debugfs, no /proc), all where nothing was
    done."""
    if units <= 0:
        return {}
    out = {}
    exits = [m["kvm"].get("exits") for m in (first, last)]
    if None not in exits:
        out["exits"] = (exits[1] - exits[0]) / units
    for k in ("vmm_cpu", "guest_cpu"):
        if k in first and k in last:
            out[k] = (last[k] - first[k]) * 1000 / units
    return out


def cost_table(metrics, results):
    """metrics: [(key, label, unit)]: figures that are costs (lower is better), as medians of
    each VMM's runs and their ratio."""
    print()
    print(f"  {'cost, median (lower is better)':40s} {'kemu':>10s} {'QEMU':>10s} {'kemu/QEMU':>10s}"
          "  per round (kemu/QEMU)")
    for key, label, unit in metrics:
        meds, runs = {}, {}
        for vmm in ("kemu", "qemu"):
            runs[vmm] = results[vmm].get(key, {})
            meds[vmm] = statistics.median(runs[vmm].values()) if runs[vmm] else None
        cells = [f"{meds[v]:10.3f}" if meds[v] is not None else f"{'-':>10s}"
                 for v in ("kemu", "qemu")]
        ratio = (f"{meds['kemu'] / meds['qemu']:10.3f}" if meds["kemu"] is not None and
                 meds["qemu"] else f"{'-':>10s}")
        pairs = ", ".join(f"r{r + 1} {runs['kemu'][r] / runs['qemu'][r]:.2f}"
                          for r in sorted(runs["kemu"]) if runs["qemu"].get(r))
        print(f"  {label + ' [' + unit + ']':40s} {cells[0]} {cells[1]} {ratio}  {pairs or '-'}")
    print("  (exits: the VM's KVM exits, every vCPU, in the test host's debugfs; CPU: the VMM's own")
    print("   threads outside guest mode, and the guest's time in guest mode, from /proc)")


class Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def __str__(self):
        return f"{time.monotonic() - self.t0:6.0f} s"
