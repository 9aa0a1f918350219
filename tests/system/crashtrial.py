#!/usr/bin/env python3
"""qcow2 crash trials: a guest writes self-describing records to a qcow2 disk under kemu, kemu is
SIGKILLed at a random moment, then the image must pass `qemu-img check` (leaks allowed) and hold
every record the guest had flushed. Runs where KVM runs Linux (inside the test host here), all
trials in one process, so one test-host command covers them.

  crashtrial.py run --kemu K --kernel V --initrd I [--trials 20] [--seed S] [--only N...]
                    [--lazy-refcounts KEMU_IMG]
  crashtrial.py selftest      # the verifier on hand-made images: it must find every defect

Records: the disk is N slots of 8 blocks of 4 KiB. Writer w's record s is j = 3*s + w; it lands
in slot (j*A + B) mod N (A odd: a permutation, so records never overlap), k = 1..8 blocks at an
offset inside the slot (partial clusters, so COW from the backing file runs). Each 4 KiB block is
64 copies of a 64-byte line 'KCR t=<trial> w=<w> s=<s> b=<block>' padded with spaces. Writer 0
writes buffered + fsync, writer 1 O_DIRECT + fsync, writer 2 buffered without fsync (in flight
when killed); writers 0 and 1 print 'FLUSHED ...' only after fsync returned.
Every 512-byte sector of the image afterwards is either what it was before (zeros or backing
data) or a sector of the record that covers it: anything else is data from the wrong place.
With --lazy-refcounts the images have lazy_refcounts=on: a killed kemu leaves them dirty (stale
refcounts by design), so each is repaired first, by qemu-img check -r all on a copy and by kemu's
read-write open (KEMU_IMG check -r all) on the image; both must succeed and agree, and the
kemu-repaired image is then verified as above.
"""
import argparse
import base64
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

N = 1024                       # slots of 8 blocks: a 32 MiB disk
BLK = 4096
SIZE = N * 8 * BLK
A, B = 389, 77                 # A odd: j -> (j*A + B) mod N is a permutation
WRITERS = 3
BACKING_SIZE = 20 << 20        # shorter than the disk: the tail reads zeros through the chain
LINE = re.compile(rb"KCR t=(\d{3}) w=(\d) s=(\d{5}) b=(\d{8}) *\n")
FLUSHED = re.compile(r"FLUSHED t=(\d+) w=(\d) s=(\d+) b=(\d+) k=(\d+)\n")


def record(t, w, s):
    """(first block, block count) of writer w's record s in trial t; the guest's r() in shell."""
    j = s * WRITERS + w
    p = (j * A + B) % N
    k = (j * 5 + t) % 8 + 1
    return p * 8 + (j * 3 + t) % (9 - k), k


def block_bytes(t, w, s, b):
    line = f"KCR t={t:03d} w={w} s={s:05d} b={b:08d}".ljust(63).encode() + b"\n"
    return line * (BLK // len(line))


def guest_script(t):
    """The guest's shell: three writers as above. Compact: it travels base64 on the kernel
    command line."""
    return (
        f"T={t};N={N};A={A};B={B}\n"
        "r(){ j=$(($2*3+$1));p=$(((j*A+B)%N));k=$(((j*5+T)%8+1));b=$((p*8+(j*3+T)%(9-k)));}\n"
        "w(){ s=0;f=/tmp/r$1;while [ $((s*3+$1)) -lt $N ];do r $1 $s;:>$f;i=0\n"
        " while [ $i -lt $k ];do yes \"$(printf '%-63s' \"$(printf 'KCR t=%03d w=%d s=%05d b=%08d'"
        " $T $1 $s $((b+i)))\")\"|head -c 4096 >>$f;i=$((i+1));done\n"
        " case $1 in 0)o=seek_bytes c=notrunc,fsync;;1)o=seek_bytes,direct c=notrunc,fsync;;"
        "*)o=seek_bytes c=notrunc;;esac\n"
        " dd if=$f of=/dev/vda bs=$((k*4096)) seek=$((b*4096)) oflag=$o conv=$c 2>/tmp/e$1||"
        "{ echo DDFAIL w=$1 s=$s;cat /tmp/e$1;return;}\n"
        " [ $1 = 2 ]||echo \"FLUSHED t=$T w=$1 s=$s b=$b k=$k\";s=$((s+1));done;echo WRITER-DONE $1;}\n"
        "echo CRASH-WRITERS-START;w 0& w 1& w 2& wait;echo CRASH-WRITERS-END;sleep 100000\n")


# -- verification ------------------------------------------------------------------------------

def qemu_img_check(img):
    """(exit status, output) of qemu-img check: 0 clean, 3 leaks only, 2 corruption, 1 error."""
    r = subprocess.run(["qemu-img", "check", img], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    return r.returncode, r.stdout.decode(errors="replace")


def read_raw(img, workdir):
    raw = os.path.join(workdir, "readback.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", img, raw], check=True)
    with open(raw, "rb") as f:
        data = f.read()
    os.unlink(raw)
    return data


def verify(img, base, t, flushed, workdir):
    """Problems found (empty: the image is good). base: the disk's content before the trial
    (bytes of SIZE). flushed: [(w, s)] the guest reported as flushed."""
    problems = []
    st, out = qemu_img_check(img)
    if st not in (0, 3):
        problems.append(f"qemu-img check exit {st} (2 = corruption):\n{out.strip()}")
        if st == 1:
            return problems
    data = read_raw(img, workdir)
    if len(data) != SIZE:
        return problems + [f"image reads back {len(data)} bytes, not {SIZE}"]
    for w, s in flushed:
        b0, k = record(t, w, s)
        for b in range(b0, b0 + k):
            if data[b * BLK:(b + 1) * BLK] != block_bytes(t, w, s, b):
                problems.append(f"flushed record w={w} s={s} block {b} (offset {b * BLK:#x}) "
                                f"missing or damaged: {data[b * BLK:b * BLK + 64]!r}")
    # No sector holds anything but its old content or its own record.
    for b in range(SIZE // BLK):
        blk = data[b * BLK:(b + 1) * BLK]
        if blk == base[b * BLK:(b + 1) * BLK]:
            continue
        for sec in range(b * BLK, (b + 1) * BLK, 512):
            got = data[sec:sec + 512]
            if got == base[sec:sec + 512]:
                continue
            m = LINE.fullmatch(got[:64])
            ok = m and got == got[:64] * 8 and int(m.group(1)) == t and int(m.group(4)) == b
            if ok:
                b0, k = record(t, int(m.group(2)), int(m.group(3)))
                ok = b0 <= b < b0 + k
            if not ok:
                problems.append(f"sector at {sec:#x} (block {b}) holds neither its old content "
                                f"nor its record: {got[:64]!r}")
                break
        if len(problems) > 20:
            problems.append("(more not shown)")
            break
    return problems


# -- trials --------------------------------------------------------------------------------------

CACHES = [("writeback", "threads"), ("none", "native"), ("writeback", "io_uring"),
          ("none", "threads")]
CLUSTERS = [65536, 4096, 512, 2097152, 16384]
BACKINGS = [None, "raw", "qcow2"]


def lazy_repair(kemu_img, img, flushed):
    """Problems repairing a lazy refcounts image (empty: repaired twice, the same way)."""
    problems = []
    with open(img, "rb") as f:
        hdr = f.read(80)
    if flushed and not int.from_bytes(hdr[72:80], "big") & 1:
        problems.append("flushed records but no dirty bit: were the refcounts not lazy?")
    copy = img + ".qemu-repaired"
    subprocess.run(["cp", "--sparse=always", img, copy], check=True)
    for argv in (["qemu-img", "check", "-r", "all", copy], [kemu_img, "check", "-r", "all", img]):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            problems.append(f"{' '.join(argv[:4])} exit {r.returncode}:\n"
                            f"{r.stdout.decode(errors='replace').strip()[-2000:]}")
    r = subprocess.run(["qemu-img", "compare", "-q", img, copy])
    if r.returncode != 0:
        problems.append(f"kemu's and qemu-img's repairs read differently (compare exit "
                        f"{r.returncode})")
    os.unlink(copy)
    return problems


def config(i):
    cache, aio = CACHES[i % len(CACHES)]
    return {"cache": cache, "aio": aio, "cluster": CLUSTERS[(i // 2) % len(CLUSTERS)],
            "backing": BACKINGS[i % len(BACKINGS)]}


def make_backings(d):
    """A raw backing file of seeded random data and a qcow2 one holding it in every other MiB;
    and what each reads as, over the whole disk size."""
    rng = random.Random(1234)
    raw = os.path.join(d, "base.raw")
    content = rng.randbytes(BACKING_SIZE)
    with open(raw, "wb") as f:
        f.write(content)
    q = os.path.join(d, "base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", q, str(BACKING_SIZE)], check=True)
    cmds = []
    for mib in range(0, BACKING_SIZE >> 20, 2):
        cmds += ["-c", f"write -s {raw} {mib << 20} 1M"]
    # write -s takes the pattern from the file's start: each written MiB is raw's first MiB.
    subprocess.run(["qemu-io", "-f", "qcow2", *cmds, q], check=True, stdout=subprocess.DEVNULL)
    qc = bytearray(BACKING_SIZE)
    for mib in range(0, BACKING_SIZE >> 20, 2):
        qc[mib << 20:(mib + 1) << 20] = content[:1 << 20]
    pad = bytes(SIZE - BACKING_SIZE)
    return {None: (None, bytes(SIZE)), "raw": (raw, content + pad),
            "qcow2": (q, bytes(qc) + pad)}


def kemu_argv(a, img, cfg, t):
    append = ("console=ttyS0 panic=-1 quiet kemu.run=" +
              base64.b64encode(guest_script(t).encode()).decode())
    assert len(append) < 2048, len(append)
    return [a.kemu, "-enable-kvm", "-M", "pc", "-m", "256M", "-nodefaults", "-nographic",
            "-serial", "stdio", "-no-reboot", "-kernel", a.kernel, "-initrd", a.initrd,
            "-append", append,
            "-drive", f"file={img},format=qcow2,if=virtio,cache={cfg['cache']},aio={cfg['aio']}"]


def run_kemu(argv, kill_plan, boot_timeout):
    """Start kemu, wait for the writers, kill it as planned. Returns (outcome, output, flushed
    lines with arrival time, seconds from writers' start to the kill)."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    fd = p.stdout.fileno()
    buf = b""
    t0 = time.monotonic()
    started = None
    kill_at = None
    outcome = None
    while outcome is None:
        now = time.monotonic()
        if started is None and now - t0 > boot_timeout:
            outcome = "boot-timeout"
            break
        if kill_at is None and started is not None:
            mode, val = kill_plan
            if mode == "delay":
                kill_at = started + val
            else:
                n, extra = val
                text = buf.decode(errors="replace").replace("\r", "")  # the serial's CRLF
                if len(FLUSHED.findall(text)) >= n:
                    kill_at = now + extra
                elif now - started > 60:
                    kill_at = now
        if kill_at is not None and now >= kill_at:
            if p.poll() is not None:
                outcome = "exited"
                break
            p.send_signal(signal.SIGKILL)
            outcome = "killed"
            break
        wait = 0.2 if kill_at is None else max(0.0, min(0.2, kill_at - now))
        r, _, _ = select.select([fd], [], [], wait)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                outcome = "exited"
                break
            buf += chunk
            if started is None and b"CRASH-WRITERS-START" in buf:
                started = time.monotonic()
    killed_after = time.monotonic() - started if started else None
    if outcome != "killed":
        p.kill()
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        # SIGKILL did not end it in 2 minutes: stuck in the kernel. Say where, instead of
        # hanging the whole run; the trial fails.
        where = ""
        for f in ("wchan", "stack", "status"):
            try:
                with open(f"/proc/{p.pid}/{f}") as fh:
                    where += f"--- /proc/{p.pid}/{f}\n" + fh.read()[:2000] + "\n"
            except OSError as e:
                where += f"--- /proc/{p.pid}/{f}: {e}\n"
        for tid in os.listdir(f"/proc/{p.pid}/task") if os.path.isdir(f"/proc/{p.pid}/task") else []:
            try:
                with open(f"/proc/{p.pid}/task/{tid}/stack") as fh:
                    where += f"--- task {tid} stack\n" + fh.read()[:1500]
            except OSError:
                pass
        return "stuck-after-kill", where + buf.decode(errors="replace")[-2000:], killed_after
    # What kemu printed before it died is all in the pipe now.
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    p.stdout.close()
    p.stdin.close()
    text = buf.decode(errors="replace").replace("\r", "")
    if outcome == "exited" and started is None:
        outcome = "exited-before-writers"
    return outcome, text, killed_after


def trial(a, i, rng, bases, workdir):
    cfg = config(i)
    t = i % 1000
    img = os.path.join(workdir, f"trial{i}.qcow2")
    if os.path.exists(img):
        os.unlink(img)
    bpath, base = bases[cfg["backing"]]
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cfg['cluster']}"]
    if bpath:
        cmd += ["-b", bpath, "-F", "raw" if bpath.endswith(".raw") else "qcow2"]
    if a.lazy_refcounts:
        cmd += ["-o", "lazy_refcounts=on"]
    subprocess.run(cmd + [img, str(SIZE)], check=True)
    # Half the trials kill at a random time after the writers start, half right after the
    # n-th flush was acknowledged (the moment metadata written lazily would be lost).
    if rng.random() < 0.5:
        plan = ("delay", round(rng.uniform(0, a.max_delay), 3))
    else:
        plan = ("after-flush", (rng.randint(1, 12), round(rng.uniform(0, 0.05), 3)))
    desc = (f"cache={cfg['cache']},aio={cfg['aio']} cluster={cfg['cluster']} "
            f"backing={cfg['backing']}{' lazy' if a.lazy_refcounts else ''} "
            f"kill={plan[0]}:{plan[1]}")
    for attempt in (1, 2):
        outcome, text, after = run_kemu(kemu_argv(a, img, cfg, t), plan, a.boot_timeout)
        if outcome in ("boot-timeout", "exited-before-writers") and attempt == 1:
            # The nested test host now and then loses a guest in early boot: once, announced.
            print(f"RETRY: trial {i}: {outcome} before the writers started:\n{text[-1500:]}",
                  flush=True)
            continue
        if outcome == "stuck-after-kill" and attempt == 1:
            # SIGKILL left kemu in the (nested) kernel: where it hangs is printed; the image
            # is another question, asked again on a fresh one. Once, announced.
            print(f"RETRY: trial {i}: kemu did not die after SIGKILL:\n{text[-4000:]}",
                  flush=True)
            if os.path.exists(img):
                os.unlink(img)
            subprocess.run(cmd + [img, str(SIZE)], check=True)
            continue
        break
    problems = []
    if outcome != "killed":
        problems.append(f"kemu was not killed as planned ({outcome}):\n{text[-1200:]}")
    bad = [l for l in text.splitlines() if "DDFAIL" in l or "I/O error" in l]
    if bad:
        problems.append("the guest saw write errors:\n" + "\n".join(bad[:10]))
    flushed = []
    for m in FLUSHED.finditer(text):
        w, s, b, k = (int(x) for x in m.groups()[1:])
        if int(m.group(1)) != t or record(t, w, s) != (b, k):
            problems.append(f"guest and verifier disagree on a record: {m.group(0)!r}")
        flushed.append((w, s))
    if outcome == "killed" and a.lazy_refcounts:
        problems += lazy_repair(a.lazy_refcounts, img, flushed)
    if outcome == "killed":
        problems += verify(img, base, t, flushed, workdir)
    st, out = qemu_img_check(img)
    leaks = re.search(r"(\d+) leaked clusters", out)
    summary = {"trial": i, "config": desc, "outcome": outcome,
               "killed_after_s": round(after, 3) if after is not None else None,
               "flushed": len(flushed), "check": st, "leaks": int(leaks.group(1)) if leaks else 0,
               "ok": not problems}
    print(f"TRIAL {i:2d} {'ok  ' if not problems else 'FAIL'} {desc} "
          f"killed {summary['killed_after_s']} s after start, {len(flushed)} flushed records, "
          f"qemu-img check {st} ({summary['leaks']} leaked clusters)", flush=True)
    if problems:
        for pr in problems:
            print("  PROBLEM: " + pr.replace("\n", "\n    "), flush=True)
        print(f"  reproduce: {sys.argv[0]} run ... --seed {a.seed} --only {i}; image kept at "
              f"{img}", flush=True)
    else:
        os.unlink(img)
    return summary


def cmd_run(a):
    os.makedirs(a.dir, exist_ok=True)
    if a.seed is None:
        a.seed = random.randrange(1 << 32)
    print(f"crash trials: seed {a.seed}, {a.trials} trials, kemu {a.kemu}", flush=True)
    bases = make_backings(a.dir)
    rng = random.Random(a.seed)
    results = []
    for i in range(a.trials):
        # One draw per trial whether it runs or not: --only reproduces the same plan.
        trial_rng = random.Random(rng.randrange(1 << 32))
        if a.only and i not in a.only:
            continue
        results.append(trial(a, i, trial_rng, bases, a.dir))
    print("CRASH-RESULT " + json.dumps({"seed": a.seed, "trials": results}), flush=True)
    return 0 if all(r["ok"] for r in results) else 1


# -- self-test of the verifier -------------------------------------------------------------------

def selftest():
    """Build images by hand with known defects; verify() must report each one. Returns the
    list of failures of the verifier itself (empty: it works)."""
    fails = []
    with tempfile.TemporaryDirectory(prefix="kemu-crash-self-") as d:
        bases = make_backings(d)
        t = 5
        recs = [(w, s) for w in range(WRITERS) for s in range(4)]

        def build(name, backing, writes):
            img = os.path.join(d, name)
            bpath, base = bases[backing]
            cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096"]
            if bpath:
                cmd += ["-b", bpath, "-F", "raw" if bpath.endswith(".raw") else "qcow2"]
            subprocess.run(cmd + [img, str(SIZE)], check=True)
            cmds = []
            for off, data in writes:
                src = os.path.join(d, f"src{len(cmds)}")
                with open(src, "wb") as f:
                    f.write(data)
                cmds += ["-c", f"write -s {src} {off} {len(data)}"]
            subprocess.run(["qemu-io", "-f", "qcow2", *cmds, img], check=True,
                           stdout=subprocess.DEVNULL)
            return img, base

        def rec_writes(rs):
            out = []
            for w, s in rs:
                b0, k = record(t, w, s)
                out.append((b0 * BLK, b"".join(block_bytes(t, w, s, b)
                                               for b in range(b0, b0 + k))))
            return out

        for backing in (None, "raw", "qcow2"):
            img, base = build(f"good-{backing}.qcow2", backing, rec_writes(recs))
            p = verify(img, base, t, recs, d)
            if p:
                fails.append(f"good image (backing {backing}) reported: {p}")
        # A flushed record that is not there.
        img, base = build("missing.qcow2", "raw", rec_writes(recs[1:]))
        if not any("missing" in x for x in verify(img, base, t, recs, d)):
            fails.append("a missing flushed record went unnoticed")
        # A record in the wrong place, and one torn sector of backing data zeroed.
        w, s = recs[0]
        b0, k = record(t, w, s)
        wrong = [(b0 * BLK + BLK * 8 * 3, block_bytes(t, w, s, b0))]
        img, base = build("foreign.qcow2", None, rec_writes(recs) + wrong)
        if not any("neither" in x for x in verify(img, base, t, recs, d)):
            fails.append("a record in the wrong place went unnoticed")
        img, base = build("zeroed.qcow2", "raw", rec_writes(recs) + [(BLK * 8 * 7 + 512,
                                                                      bytes(512))])
        if not any("neither" in x for x in verify(img, base, t, [], d)):
            fails.append("backing data replaced by zeros went unnoticed")
        # Metadata damage: the first refcount block zeroed -> qemu-img check exit 2.
        img, base = build("corrupt.qcow2", None, rec_writes(recs))
        with open(img, "r+b") as f:
            hdr = f.read(64)
            rt = int.from_bytes(hdr[48:56], "big")
            f.seek(rt)
            rb = int.from_bytes(f.read(8), "big")
            f.seek(rb)
            f.write(bytes(4096))
        if not any("exit 2" in x for x in verify(img, base, t, recs, d)):
            fails.append("a zeroed refcount block went unnoticed")
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run")
    r.add_argument("--kemu", required=True)
    r.add_argument("--kernel", required=True)
    r.add_argument("--initrd", required=True)
    r.add_argument("--trials", type=int, default=20)
    r.add_argument("--seed", type=int)
    r.add_argument("--only", type=int, nargs="*")
    r.add_argument("--max-delay", type=float, default=4.0,
                   help="longest random wait (s) between the writers' start and the kill")
    r.add_argument("--boot-timeout", type=float, default=150)
    r.add_argument("--dir", default="/tmp/kemu-crash")
    r.add_argument("--lazy-refcounts", metavar="KEMU_IMG",
                   help="lazy_refcounts=on images, repaired with KEMU_IMG before the verification")
    sub.add_parser("selftest")
    a = ap.parse_args()
    if a.action == "selftest":
        fails = selftest()
        print("SELFTEST " + ("ok" if not fails else "FAILED:\n" + "\n".join(fails)))
        return 1 if fails else 0
    return cmd_run(a)


if __name__ == "__main__":
    sys.exit(main())
