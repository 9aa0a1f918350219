"""System tests: boot real Debian kernels under kemu and assert what the guest prints.

Guests run where KVM can run Linux: on this machine if /dev/kvm has VMX/SVM, otherwise inside the
test host (tests/testhost). Each test builds a kemu command line, runs it through guestrun.py
and gets back the exit status and the console output.
"""
import base64
import json
import os
import shlex
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "testhost"))

import testhost  # noqa: E402

KEMU = os.environ.get("KEMU") or os.path.join(ROOT, "build", "kemu")
GUESTRUN = os.path.join(ROOT, "tests", "system", "guestrun.py")
INIT_MARKER = "KEMU-GUEST-INIT"


def pytest_report_header(config):
    ok, why = testhost.kvm_can_run_linux()
    where = "directly on this machine" if ok else "inside the test host"
    return f"kemu system tests: guests run {where} ({why}); kemu = {KEMU}"


# Retries of this session, listed at the end of the run: a retried test passes, and pytest
# shows a passing test's output to nobody.
RETRIES = []


def announce_retry(text):
    """Print a retry ("RETRY: why...") and list its first line in the run's summary."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    RETRIES.append(f"{test}: {text.splitlines()[0]}")
    print(text)


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    tr.write_sep("=", f"retries announced: {len(RETRIES)}")
    for line in RETRIES:
        tr.write_line(line)


def asset(name):
    path = os.path.join(testhost.assets_dir(), name)
    if not os.path.isfile(path):
        pytest.skip(f"guest asset {path} is missing: run scripts/guest-assets.sh")
    return path


class Result:
    def __init__(self, d):
        self.status = d["status"]
        self.output = d["output"]
        self.seconds = d["seconds"]
        self.killed = d["killed"]
        self.timed_out = d["timed_out"]
        self.threads = d.get("threads", "")

    def __repr__(self):
        threads = f"\n--- VMM threads at the timeout ---\n{self.threads}" if self.threads else ""
        return (f"<status={self.status} killed={self.killed} timed_out={self.timed_out} "
                f"{self.seconds}s>\n--- output tail ---\n{self.output[-3000:]}{threads}")


def run_guest(args, kernel="cloud", run=None, append="", timeout=300, guestrun_opts=(),
              prefix="", suffix=""):
    """Boot kemu with the Debian kernel and our initramfs; `run` is a shell command the guest's
    init executes before rebooting (-no-reboot then ends kemu). `prefix` and `suffix` are shell
    commands run where kemu runs, before and after it; what they print is in result.host_output."""
    if not os.access(KEMU, os.X_OK):
        pytest.fail(f"{KEMU} is not built")
    cmdline = "console=ttyS0 panic=-1 quiet " + append
    if run is not None:
        cmdline += " kemu.run=" + base64.b64encode(run.encode()).decode()
    argv = [KEMU, "-enable-kvm", "-kernel", asset(f"vmlinuz-{kernel}"),
            "-initrd", asset(f"initrd-{kernel}.gz"), "-append", cmdline.strip()] + list(args)
    # KEMU_TRACE=reset: kemu says on stderr why a guest reset or stopped (triple fault...).
    cmd = (prefix + "KEMU_TRACE=reset " + " ".join(shlex.quote(a) for a in
                                                 [sys.executable, GUESTRUN, "--timeout",
                                                  str(timeout), *guestrun_opts, "--", *argv]))
    if suffix:
        cmd = f"{{ {cmd}; }}; {suffix}"
    for attempt in (1, 2):
        try:
            status, out = testhost.run_on_kvm(cmd, timeout=timeout + 120, cwd=ROOT)
        except testhost.TestHostLost as e:
            # The test host itself stopped answering or died (its kernel panicked; it is booted
            # again on the next call): once, announced; a second time fails the test.
            if attempt == 2:
                raise
            announce_retry(f"RETRY: the test host {e.how}: {str(e)[-2000:]}")
            continue
        res = None
        for line in out.splitlines():
            if line.startswith("GUESTRUN-RESULT "):
                res = Result(json.loads(line[len("GUESTRUN-RESULT "):]))
                res.host_output = out
        if res is None:
            pytest.fail(f"guestrun did not report (status {status}):\n{out[-3000:]}")
        # The nested test host (KVM on QEMU's emulated SVM) now and then triple-faults a guest,
        # under QEMU too (earlier sessions), mostly in early boot. One retry,
        # announced with the vCPU's registers, keeps that from failing unrelated tests; a guest
        # that triple-faults twice fails the test.
        if attempt == 1 and "triple fault" in res.output:
            when = "after" if INIT_MARKER in res.output else "before"
            announce_retry(f"RETRY: guest triple-faulted {when} init; first output:\n"
                           f"{res.output[-4000:]}")
            continue
        # A guest that stalls past its timeout: the nested test host (KVM on QEMU's software
        # emulation) sometimes locks up a vCPU under load. Retried once, announced.
        if attempt == 1 and res.timed_out:
            threads = f"\nVMM threads:\n{res.threads[:6000]}" if res.threads else ""
            announce_retry(f"RETRY: the guest timed out; first output:\n{res.output[-2000:]}"
                           f"{threads}")
            # On a fresh test host: a stuck process would keep this one slow.
            testhost._stop_shared()
            continue
        # Shown by pytest only when the test fails: the whole tail, where an assertion's message
        # may be shortened (a vCPU's register dump after a triple fault is one long line).
        print(f"--- guest output (attempt {attempt}) ---\n{res.output[-8000:]}")
        return res
    return res


def run_output(res):
    """The text between the init marker and the run-exit marker."""
    out = res.output
    i = out.find(INIT_MARKER)
    return out[i:] if i >= 0 else out


def wait_carrier(value, label, dev="eth0"):
    """Guest shell: wait (up to 20 s) for dev's carrier to read value (0 or 1), then print
    CARRIER-<label>=<what it reads>."""
    path = f"/sys/class/net/{dev}/carrier"
    return (f"for i in $(seq 100); do [ $(cat {path}) = {value} ] && break; sleep 0.2; done; "
            f"echo CARRIER-{label}=$(cat {path}); ")
