"""Tests of the test-host runner, with Debian's QEMU as the VMM inside the host.

Needs the assets of scripts/guest-assets.sh; skips (with the reason) without them.
Timings are printed (pytest -s) and recorded as test properties (--junitxml).
"""

import base64
import hashlib
import os
import queue
import random
import re
import shutil
import string
import subprocess
import sys
import threading
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


# Environment values a command must get byte for byte (keys: what the runner accepts).
ODD_ENV = {
    "QUOTES": "it's \"quoted\" `and` $(not run) ${HOME} \\ back\\slash",
    "NEWLINES": "line 1\nline 2\n\n",
    "GLOB": "* ? [a-z] ~ ; | & < > #",
    "UNICODE": "caf\u00e9 \u65e5\u672c \u2713",
    "EMPTY": "",
    "SPACES": "  leading and trailing  ",
    "_x1": "-n -e",
}
# Prints each variable NUL-terminated, so the test can split them back exactly.
ODD_ENV_CMD = "for v in " + " ".join(ODD_ENV) + "; do eval \"printf '%s\\0' \\\"\\$$v\\\"\"; done"


def _payload(n, seed):
    """n characters of printable text without quotes (a long, exact-to-check command body)."""
    rnd = random.Random(seed)
    return "".join(rnd.choice(string.ascii_letters + string.digits + " .,:-_/+=") for _ in range(n))


def _long_command(n, seed=1):
    payload = _payload(n, seed)
    return f"printf %s '{payload}' | md5sum", hashlib.md5(payload.encode()).hexdigest()


# -- the runner's request/resend logic against a fake console (no test host needed) ----------

class FakeHost(testhost.TestHost):
    """A TestHost whose console is a fake agent thread: it runs request files with this
    machine's /bin/sh and can lose requests, answer late, or not at all."""
    running = True

    def __init__(self, tmp_path, lose=0, begin_delay=0.0, answer=True, begin_timeout=0.3,
                 die=False):
        super().__init__(spool_dir=str(tmp_path / "spool"), begin_timeout=begin_timeout)
        self.lose, self.begin_delay, self.answer, self.die = lose, begin_delay, answer, die
        self.sent = []      # every line the runner wrote
        self.runs = []      # markers the agent ran, in order
        self._seen = set()
        self._q = queue.Queue()
        self._open_spool()
        threading.Thread(target=self._agent, daemon=True).start()

    def _send(self, data):
        self.sent.append(data)
        self._q.put(data)

    def _agent(self):
        pending = b""
        while True:
            pending += self._q.get()
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                fields = line.split()
                if len(fields) != 2:
                    continue
                if self.lose:
                    self.lose -= 1
                    continue
                marker = fields[0].decode()
                if marker in self._seen:
                    self._feed(f"\n{marker}:DUP\n".encode())
                    continue
                self._seen.add(marker)
                if not self.answer:
                    continue
                time.sleep(self.begin_delay)
                self._feed(f"\n{marker}:BEGIN\n".encode())
                if self.die:  # the kernel panics under the command; QEMU exits
                    self._feed(b"Kernel panic - not syncing: corrupted stack end\n")
                    self._feed(b"")
                    return
                path = base64.b64decode(fields[1]).decode()
                r = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", path],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
                self.runs.append(marker)
                self._feed(r.stdout + f"\n{marker}:END:{r.returncode}\n".encode())


def test_fake_status_output_and_request_file_removed(tmp_path):
    h = FakeHost(tmp_path)
    assert h.run("echo hi; printf 'no newline'; exit 3", cwd="/", timeout=30) == \
        (3, "hi\nno newline")
    assert h.run("pwd", cwd=str(tmp_path), timeout=30) == (0, f"{tmp_path}\n")
    st, out = h.run("pwd", cwd="/nonexistent-kth", timeout=30)
    assert (st, out.splitlines()[-1]) == (0, "/tmp") and "not visible inside" in out
    assert os.listdir(h._spool) == []
    # The console carried only short lines, each starting a fresh line.
    assert all(len(line) < 400 and line.startswith(b"\n") for line in h.sent)
    assert h.resends == 0


def test_fake_long_command_and_odd_env(tmp_path):
    h = FakeHost(tmp_path)
    for n in (64 << 10, 200 << 10):    # 200 KiB: past the kernel's 128 KiB argument limit
        cmd, md5 = _long_command(n, seed=n)
        st, out = h.run(cmd, cwd="/", timeout=30)
        assert (st, out.split()[0]) == (0, md5)
    st, out = h.run(ODD_ENV_CMD, cwd="/", env=ODD_ENV, timeout=30)
    assert st == 0, out
    assert out.split("\0")[:-1] == list(ODD_ENV.values())


def test_fake_rejects_what_a_shell_cannot_carry(tmp_path):
    h = FakeHost(tmp_path)
    for env in ({"1BAD": "x"}, {"A-B": "x"}, {"A": "nul\0"}):
        with pytest.raises(ValueError):
            h.run("true", cwd="/", env=env)
    with pytest.raises(ValueError):
        h.run("echo a\0b", cwd="/")
    assert h.sent == []


def test_fake_lost_request_is_sent_again(tmp_path):
    h = FakeHost(tmp_path, lose=2)
    assert h.run("echo once", cwd="/", timeout=30) == (0, "once\n")
    assert h.resends == 2 and len(h.runs) == 1
    assert len(set(h.sent)) == 1     # the very same request line each time


def test_fake_slow_agent_runs_a_command_once(tmp_path):
    # BEGIN comes only after several resends: the copies must get DUP, not a second run.
    h = FakeHost(tmp_path, begin_delay=1.2)
    assert h.run("echo slow", cwd="/", timeout=30) == (0, "slow\n")
    assert h.resends >= 2
    deadline = time.monotonic() + 10
    while h.log_tail().count(":DUP") < h.resends and time.monotonic() < deadline:
        time.sleep(0.1)
    assert h.log_tail().count(":DUP") == h.resends
    h.begin_delay = 0
    # Late DUP lines must not leak into the next command's output.
    assert h.run("echo next", cwd="/", timeout=30) == (0, "next\n")
    assert len(h.runs) == 2


def test_fake_silent_agent_times_out(tmp_path):
    h = FakeHost(tmp_path, answer=False)
    t0 = time.monotonic()
    with pytest.raises(testhost.TestHostTimeout) as e:
        h.run("echo never", cwd="/", timeout=1.5)
    assert time.monotonic() - t0 < 5
    n = int(re.search(r"sent (\d+) times", str(e.value)).group(1))
    assert n >= 4 and n == len(h.sent)


def test_fake_host_that_dies_under_a_command(tmp_path):
    # Not a timeout and not a plain error: callers retry once on a fresh test host.
    h = FakeHost(tmp_path, die=True)
    t0 = time.monotonic()
    with pytest.raises(testhost.TestHostDied) as e:
        h.run("echo never", cwd="/", timeout=30)
    assert time.monotonic() - t0 < 10
    assert "QEMU exited" in str(e.value) and "Kernel panic" in str(e.value)
    assert not isinstance(e.value, testhost.TestHostTimeout)
    assert isinstance(e.value, testhost.TestHostLost) and e.value.how == "died"


def test_ready_line_carries_the_protocol():
    pat = testhost._ready_pattern("abc")
    m = pat.search(b"\x1b[2J junk KTH-PROTO:2 KTH-READY:abc\r\n")
    assert m and m.group(1) == b"2"
    m = pat.search(b"KTH-READY:abc\n")    # an initrd from before request files
    assert m and m.group(1) is None
    assert not pat.search(b"KTH-READY:abcd\n")


def test_spool_must_be_visible_inside(tmp_path):
    with pytest.raises(testhost.TestHostError, match="does not see"):
        testhost.TestHost(spool_dir="/tmp/kth-spool-test")._check_spool()


# -- the real test host -----------------------------------------------------------------------

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


def test_agent_is_not_pid1(host):
    # Orphans are reparented to PID 1; their SIGCHLD must not reach the agent's `read`.
    st, out = host.run("echo $PPID", timeout=60)
    assert st == 0 and out.strip() not in ("", "1"), out


@pytest.mark.parametrize("kib", [64, 200])
def test_long_command(host, kib):
    cmd, md5 = _long_command(kib << 10, seed=kib)
    t0 = time.monotonic()
    st, out = host.run(cmd, timeout=120)
    print(f"\nTIMING {kib} KiB command: {time.monotonic() - t0:.2f} s", file=sys.stderr)
    assert (st, out.split()[0]) == (0, md5), out


def test_env_odd_characters(host):
    st, out = host.run(ODD_ENV_CMD, env=ODD_ENV, timeout=60)
    assert st == 0, out
    assert out.split("\0")[:-1] == list(ODD_ENV.values())


def test_many_commands_back_to_back(host):
    resends = host.resends
    t0 = time.monotonic()
    for i in range(40):
        cmd, md5 = _long_command(256 + 200 * i, seed=i)
        st, out = host.run(f"echo {i}; {cmd}", timeout=60)
        assert (st, out.split()[:2]) == (0, [str(i), md5]), out
    print(f"\nTIMING 40 commands back to back: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    assert host.resends == resends


def test_orphan_exit_while_request_arrives(host, monkeypatch):
    # The cause of requests lost without a reply: an orphan exiting while the agent waited for
    # the rest of a request line. Stretch the line over 2 s with an orphan exiting meanwhile.
    resends = host.resends
    send = host._send

    def split_send(data):
        send(data[:len(data) // 2])
        time.sleep(2)
        send(data[len(data) // 2:])

    for i in range(2):
        assert host.run("(sleep 1 &); echo orphan", timeout=60) == (0, "orphan\n")
        monkeypatch.setattr(host, "_send", split_send)
        assert host.run(f"echo after {i}", timeout=120) == (0, f"after {i}\n")
        monkeypatch.setattr(host, "_send", send)
    assert host.resends == resends    # answered at once, not rescued by a resend


def test_lost_request_is_sent_again(host, monkeypatch):
    send = host._send
    dropped = []

    def lossy_send(data):
        if not dropped:
            dropped.append(data)    # the first copy never reaches the test host
        else:
            send(data)

    resends = host.resends
    monkeypatch.setattr(host, "begin_timeout", 5)
    monkeypatch.setattr(host, "_send", lossy_send)
    assert host.run("echo rescued", timeout=120) == (0, "rescued\n")
    assert host.resends == resends + 1


def test_duplicate_request_runs_once(host, monkeypatch):
    send = host._send
    monkeypatch.setattr(host, "_send", lambda data: (send(data), send(data)))
    assert host.run("echo ran >> /tmp/kth-dup-count; echo first", timeout=60) == \
        (0, "first\n")
    monkeypatch.setattr(host, "_send", send)
    # The copy is answered (DUP) before the agent reads the next request.
    assert host.run("wc -l < /tmp/kth-dup-count", timeout=60) == (0, "1\n")
    assert ":DUP" in host.log_tail()
