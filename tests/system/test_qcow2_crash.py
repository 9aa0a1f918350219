"""qcow2 crash trials: a guest writes to a qcow2 disk under kemu, kemu is SIGKILLed at random
moments; every image must pass qemu-img check (leaks allowed) and hold every record the guest
had flushed. The trials run in one test-host command (tests/system/crashtrial.py, which says how).

KEMU_CRASH_TRIALS (default 20) and KEMU_CRASH_SEED (default random, printed) reproduce a run.
The lazy refcounts variant (KEMU_CRASH_LAZY_TRIALS, default 10) needs kemu-img too ($KEMU_IMG,
default next to kemu: build/src/tools/kemu-img) for kemu's repair of the dirty images.
"""
import json
import os
import random
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import KEMU, RETRIES, ROOT, announce_retry, asset, testhost

DRIVER = os.path.join(ROOT, "tests", "system", "crashtrial.py")
BATCH = 5  # trials per test-host command


def need_qemu_img():
    missing = [t for t in ("qemu-img", "qemu-io") if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: the verifier needs them")


def test_crash_verifier_finds_defects():
    """The verifier itself, on hand-made images: a missing flushed record, data in the wrong
    place, backing data turned to zeros and a zeroed refcount block must each be reported."""
    need_qemu_img()
    r = subprocess.run([sys.executable, DRIVER, "selftest"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0 and "SELFTEST ok" in out, out


def test_qcow2_survives_sigkill():
    run_trials(int(os.environ.get("KEMU_CRASH_TRIALS", "20")), [])


def test_qcow2_lazy_refcounts_survive_sigkill():
    """lazy_refcounts=on images: dirty after the kill, repaired by kemu and by qemu-img alike."""
    kemu_img = os.path.abspath(os.environ.get("KEMU_IMG") or
                               os.path.join(os.path.dirname(KEMU), "src", "tools", "kemu-img"))
    if not os.access(kemu_img, os.X_OK):
        pytest.fail(f"{kemu_img} is not built")
    run_trials(int(os.environ.get("KEMU_CRASH_LAZY_TRIALS", "10")),
               ["--lazy-refcounts", kemu_img])


def failed_reports(out):
    """The driver's lines for failed trials: "TRIAL n FAIL ...", its problems, how to repeat."""
    keep, lines = False, []
    for line in out.splitlines():
        if line.startswith(("TRIAL ", "CRASH-RESULT ", "crash trials: ")):
            keep = line.startswith("TRIAL ") and " FAIL " in line
        if keep:
            lines.append(line)
    return "\n".join(lines)


def run_trials(trials, extra):
    need_qemu_img()
    if not os.access(KEMU, os.X_OK):
        pytest.fail(f"{KEMU} is not built")
    seed = int(os.environ.get("KEMU_CRASH_SEED") or random.randrange(1 << 32))
    print(f"crash trials: {trials}, seed {seed} (KEMU_CRASH_SEED={seed} repeats them)")
    # Batches of trials, one test-host command each: the nested test host now and then stops
    # answering (its own kernel, not kemu's guest); a batch it loses is run again once on a
    # fresh test host, announced, instead of the whole run waiting out one long timeout.
    trials_done, outs, status = [], [], 0
    for first in range(0, trials, BATCH):
        only = [str(i) for i in range(first, min(first + BATCH, trials))]
        cmd = shlex.join(["/usr/bin/python3", DRIVER, "run", "--kemu", KEMU,
                          "--kernel", asset("vmlinuz-cloud"), "--initrd", asset("initrd-cloud.gz"),
                          "--trials", str(trials), "--seed", str(seed), *extra,
                          "--only", *only])
        for attempt in (1, 2):
            try:
                # About 20-30 s a trial nested (guest boot, writes, check, read-back); generous
                # for a loaded machine, where the test host itself runs slowly.
                st, out = testhost.run_on_kvm(cmd, timeout=300 + 90 * len(only), cwd=ROOT)
                break
            except testhost.TestHostLost as e:
                if attempt == 2:
                    raise
                announce_retry(f"RETRY: trials {only[0]}-{only[-1]}: the test host {e.how}:"
                               f"\n{str(e)[-3000:]}")
        print(out)
        for line in out.splitlines():  # the driver's own retries, inside the test host
            if line.startswith("RETRY: "):
                RETRIES.append(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}: "
                               f"{line}")
        outs.append(out)
        status = status or st
        res = [l for l in out.splitlines() if l.startswith("CRASH-RESULT ")]
        assert res, f"the driver did not report (status {st}):\n{out[-4000:]}"
        trials_done += json.loads(res[-1][len("CRASH-RESULT "):])["trials"]
    out = "\n".join(outs)
    assert len(trials_done) == trials, out[-4000:]
    bad = [t for t in trials_done if not t["ok"]]
    # The failed trials' own reports first: CI shows only part of a long message.
    assert not bad, (f"{len(bad)} trial(s) failed (seed {seed}):\n{failed_reports(out)[:6000]}"
                     f"\n--- the whole output's end ---\n{out[-3000:]}")
    assert status == 0, out[-4000:]
    # The trials must have tested something: most kills came after flushed writes.
    with_data = sum(1 for t in trials_done if t["flushed"] > 0)
    assert with_data >= trials // 2, f"only {with_data}/{trials} trials had flushed records"
