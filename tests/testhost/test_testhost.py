"""Tests of the test-host runner, with Debian's QEMU as the VMM inside the host.

Needs the assets of scripts/guest-assets.sh; skips (with the reason) without them.
Timings are printed (pytest -s) and recorded as test properties (--junitxml).
"""

import base64
import os
import shutil
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhost  # noqa: E402


def _skip(reason):
    # Say it on stderr too: a skip must never pass unnoticed.
    print(f"SKIP: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def host():
    missing = testhost.missing_assets()
    if missing:
        _skip(f"guest assets missing in {testhost.assets_dir()}: {', '.join(missing)} "
              "(run scripts/guest-assets.sh)")
    if not shutil.which("qemu-system-x86_64"):
        _skip("qemu-system-x86_64 not installed (run scripts/deps.sh)")
    h = testhost.TestHost()
    h.start()
    print(f"\nTIMING test host boot: {h.boot_seconds:.1f} s", file=sys.stderr)
    yield h
    h.stop()


def test_kvm_can_run_linux_answers():
    ok, reason = testhost.kvm_can_run_linux()
    assert isinstance(ok, bool) and reason
    if os.path.isdir("/sys/module/kvm_pvm"):
        assert not ok and "PVM" in reason


def test_status_and_output(host, record_property):
    record_property("testhost_boot_s", round(host.boot_seconds, 1))
    st, out = host.run("echo hi; exit 3", timeout=60)
    assert st == 3
    assert out.strip() == "hi"


def test_environment(host):
    # Same cwd as the caller, writable /tmp on ext4 (O_DIRECT works), KVM present.
    st, out = host.run("pwd; test -c /dev/kvm && echo KVM-OK; "
                       "dd if=/dev/zero of=/tmp/direct bs=4096 count=4 oflag=direct 2>&1 "
                       "&& echo DIRECT-OK; rm -f /tmp/direct; printf 'no newline'",
                       timeout=60)
    assert st == 0, out
    lines = out.splitlines()
    assert lines[0] == os.getcwd()
    assert "KVM-OK" in lines and "DIRECT-OK" in lines
    assert out.endswith("no newline")


def test_many_commands_reuse_host(host):
    for i in range(5):
        assert host.run(f"echo {i}", timeout=60) == (0, f"{i}\n")


def test_nested_guest_boots(host, record_property):
    cache = testhost.assets_dir()
    guest_cmd = "cat /proc/cpuinfo | grep -c processor"
    b64 = base64.b64encode(guest_cmd.encode()).decode()
    qemu = (f"qemu-system-x86_64 -enable-kvm -M microvm -m 256M -nodefaults -no-reboot "
            f"-nographic -serial stdio -kernel {cache}/vmlinuz-cloud "
            f"-initrd {cache}/initrd-cloud.gz "
            f"-append 'console=ttyS0 panic=-1 reboot=t kemu.run={b64}'")
    # reboot=t: QEMU's microvm guest sometimes hangs in the kernel's default reboot chain when
    # nested under software emulation; a triple fault always ends it.
    # Stamp the time the guest's init speaks, as seen inside the test host.
    cmd = (f"t0=$(date +%s%N); {{ {qemu}; echo QEMU-STATUS=$?; }} 2>&1 | "
           "while IFS= read -r l; do case $l in *KEMU-GUEST-INIT*) "
           "echo \"T-INIT-MS=$(( ($(date +%s%N) - t0) / 1000000 ))\";; esac; "
           "printf '%s\\n' \"$l\"; done")
    t0 = time.monotonic()
    st, out = host.run(cmd, timeout=600)
    total = time.monotonic() - t0
    assert st == 0, out
    assert "KEMU-GUEST-INIT" in out, out
    assert "KEMU-RUN-EXIT=0" in out, out
    assert "QEMU-STATUS=0" in out, out
    lines = out.splitlines()
    # The command's own output: the number of processors (1 vCPU) right before the exit marker.
    i = next(n for n, l in enumerate(lines) if "KEMU-RUN-EXIT=0" in l)
    assert lines[i - 1].strip().endswith("1"), out
    init_ms = next(int(l.split("=")[1]) for l in lines if l.startswith("T-INIT-MS="))
    print(f"\nTIMING nested microvm guest: /init after {init_ms / 1000:.1f} s, "
          f"whole run {total:.1f} s", file=sys.stderr)
    record_property("guest_init_s", round(init_ms / 1000, 1))
    record_property("guest_total_s", round(total, 1))
