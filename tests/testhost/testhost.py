#!/usr/bin/env python3
"""Run commands where KVM can run an unmodified Linux guest.

On machines whose /dev/kvm is PVM (no hardware VMX/SVM), real guests run inside a *test host*:
Debian's QEMU under TCG (which exposes AMD SVM), booting Debian's generic kernel with the
initramfs built by scripts/guest-assets.sh. That initramfs loads kvm-amd, mounts this machine's /
read-only over 9p, a scratch ext4 disk as the writable /tmp, and serves commands on the serial
console: each runs in `chroot /host` and comes back framed by random markers.

A command travels as a shell script in a spool directory on this machine's / (the test host reads
it through the share); the console carries only "<marker> <base64 path>". A request that gets no
BEGIN within begin_timeout is sent again; the agent runs a marker at most once.

Public API:
    kvm_can_run_linux() -> (bool, str)
    assets_dir() -> str;  missing_assets(names=...) -> list[str]
    TestHost(...).start() / .run(cmd, timeout=..., cwd=None, env=None) -> (int, str) / .stop()
    run_on_kvm(cmd, timeout=..., cwd=None, env=None) -> (int, str)
CLI:
    testhost.py run [--timeout N] [--testhost] -- CMD...
    testhost.py shell
"""

import atexit
import base64
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

__all__ = [
    "TestHostError", "TestHostLost", "TestHostTimeout", "TestHostDied", "TestHost",
    "kvm_can_run_linux", "assets_dir", "missing_assets", "run_on_kvm",
]

TESTHOST_ASSETS = ("vmlinuz-generic", "testhost-initrd.gz")
# The request protocol of the agent in testhost-initrd.gz (scripts/guest-assets.sh) that this
# runner speaks: its READY line says "KTH-PROTO:<n>"; an initrd without it predates request files.
PROTO = 2
# The test host mounts its own file systems over these, so files there are invisible to it.
_HIDDEN_INSIDE = ("/tmp", "/run", "/dev", "/proc", "/sys")
GUEST_ASSETS = ("vmlinuz-cloud", "initrd-cloud.gz", "vmlinuz-generic", "initrd-generic.gz")

# SeaBIOS and the kernel's early console leave terminal control sequences on the first lines.
_ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][0-9A-Za-z]|[c78=>])")


def _clean(data: bytes) -> str:
    return _ESCAPES.sub(b"", data).replace(b"\r", b"").decode("utf-8", "replace")


def _short(cmd: str, limit=300) -> str:
    """cmd for an error message: long commands (64 KiB...) would bury the console tail."""
    return repr(cmd) if len(cmd) <= limit else f"{cmd[:limit]!r}... ({len(cmd)} chars)"


def _ready_pattern(nonce: str) -> re.Pattern:
    return re.compile(rb"(?:KTH-PROTO:(\d+) )?" + re.escape(f"KTH-READY:{nonce}".encode())
                      + rb"\r?\n")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def request_script(cmd: str, cwd: str, env: dict = None) -> bytes:
    """The shell script the agent runs (with /bin/sh, in chroot /host) for one command."""
    q = shlex.quote
    lines = ["# kemu test host request (tests/testhost/testhost.py)",
             f"cd {q(cwd)} 2>/dev/null || "
             f"{{ echo {q(f'testhost: {cwd} is not visible inside, running in /tmp')} >&2; "
             "cd /tmp; }"]
    for k, v in (env or {}).items():
        v = str(v)
        if not _ENV_NAME.fullmatch(k):
            raise ValueError(f"invalid environment variable name {k!r}")
        if "\0" in v:
            raise ValueError(f"environment variable {k} contains a NUL byte")
        lines.append(f"export {k}={q(v)}")
    if "\0" in cmd:
        raise ValueError("command contains a NUL byte")
    # eval: the command is parsed as a whole, as it was when it came as an argument.
    lines.append(f"eval {q(cmd)}")
    # surrogateescape: undecodable bytes from os.environ or file names go through unchanged.
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def assets_dir() -> str:
    """Where scripts/guest-assets.sh puts kernels and initramfs images."""
    return os.environ.get("KEMU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kemu")


def missing_assets(names=TESTHOST_ASSETS + GUEST_ASSETS) -> list:
    d = assets_dir()
    return [n for n in dict.fromkeys(names) if not os.path.isfile(os.path.join(d, n))]


def kvm_can_run_linux():
    """(True, reason) where /dev/kvm has real VMX/SVM behind it; (False, reason) otherwise."""
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    if os.path.isdir("/sys/module/kvm_pvm"):
        return False, "/dev/kvm is PVM (kvm_pvm), which cannot run unmodified Linux guests"
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError as e:
        return False, f"cannot read /proc/cpuinfo: {e}"
    if "vmx" in flags or "svm" in flags:
        return True, "/dev/kvm with hardware " + ("VMX" if "vmx" in flags else "SVM")
    return False, "no vmx/svm in /proc/cpuinfo flags"


class TestHostError(RuntimeError):
    """The test host failed; the message ends with the tail of its console log."""


class TestHostLost(TestHostError):
    """The test host went away under a command (the next command boots a fresh one): worth one
    announced retry. `how` says how, in words."""
    how = "went away"


class TestHostTimeout(TestHostLost):
    """The test host stopped answering (it is stopped)."""
    how = "stopped answering"


class TestHostDied(TestHostLost):
    """The test host's QEMU exited under a command: its kernel panicked (the nested SVM of
    QEMU's software emulation now and then overflows a kernel stack under KVM_RUN) or QEMU
    crashed."""
    how = "died"


class TestHost:
    """A TCG QEMU VM with working /dev/kvm that runs shell commands in a chroot of this machine."""

    # pytest must not mistake this class for a test class.
    __test__ = False

    def __init__(self, memory="4G", smp=2, scratch_gib=2, boot_timeout=300,
                 qemu="qemu-system-x86_64", cache_dir=None, extra_qemu_args=(),
                 begin_timeout=60, spool_dir=None):
        self.memory = memory
        self.smp = smp
        self.scratch_gib = scratch_gib
        self.boot_timeout = boot_timeout
        self.qemu = qemu
        self.cache_dir = cache_dir or assets_dir()
        self.extra_qemu_args = list(extra_qemu_args)
        # A request without BEGIN after this long is sent again (generous: TCG is slow).
        self.begin_timeout = begin_timeout
        # Where request files go: anywhere on this machine's / that the test host sees.
        self.spool_dir = (spool_dir or os.environ.get("KEMU_TESTHOST_SPOOL")
                          or os.path.join(self.cache_dir, "testhost-spool"))
        self.resends = 0              # requests sent again for want of a BEGIN
        self.proto = PROTO            # what the booted agent speaks (its READY line)
        self.boot_seconds = None      # measured by start()
        self._proc = None
        self._tmpdir = None
        self._spool = None            # this host's directory in spool_dir
        self._reader = None
        self._cond = threading.Condition()
        self._buf = bytearray()       # unconsumed console output
        self._log = bytearray()       # bounded tail of everything, for error messages
        self._eof = False
        self._lock = threading.Lock()  # one command at a time

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self):
        if self.running:
            return
        missing = [n for n in TESTHOST_ASSETS
                   if not os.path.isfile(os.path.join(self.cache_dir, n))]
        if missing:
            raise TestHostError(f"missing test host assets in {self.cache_dir}: "
                                f"{', '.join(missing)} (run scripts/guest-assets.sh)")
        self._check_spool()
        t0 = time.monotonic()
        self._open_spool()
        self._tmpdir = tempfile.mkdtemp(prefix="kemu-testhost-")
        scratch = os.path.join(self._tmpdir, "scratch.img")
        self._make_scratch(scratch)

        nonce = secrets.token_hex(8)
        cmd = self._qemu_argv(scratch, f"kth.nonce={nonce}", ["-nographic", "-serial", "stdio"])
        self._buf.clear()
        self._log.clear()
        self._eof = False
        # Own session: the caller's terminal signals (^C) must not hit QEMU before stop() does.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read_console, name="testhost-console",
                                        daemon=True)
        self._reader.start()
        try:
            m = self._wait_for(_ready_pattern(nonce), self.boot_timeout, "boot", boot=True)
        except BaseException:
            self.stop()
            raise
        self.proto = int(m.group(1) or 1)
        initrd = os.path.join(self.cache_dir, "testhost-initrd.gz")
        if self.proto not in (1, PROTO):
            self.stop()
            raise TestHostError(f"{initrd} serves request protocol {self.proto}, this runner "
                                f"speaks {PROTO}: rebuild it with scripts/guest-assets.sh")
        if self.proto == 1:
            # A cache shared with checkouts that have not rebuilt yet must keep working.
            print(f"testhost: {initrd} predates request files: commands go over the console "
                  "as one line, never re-sent; run scripts/guest-assets.sh", file=sys.stderr)
        with self._cond:
            self._buf.clear()
        self.boot_seconds = time.monotonic() - t0

    def _qemu_argv(self, scratch, extra_append, console_args):
        append = "console=ttyS0 loglevel=4 panic=-1 mitigations=off nokaslr " + extra_append
        return [
            self.qemu, "-accel", "tcg,thread=multi", "-cpu", "max",
            "-smp", str(self.smp), "-m", self.memory,
            "-no-reboot", "-nodefaults", *console_args,
            "-kernel", os.path.join(self.cache_dir, "vmlinuz-generic"),
            "-initrd", os.path.join(self.cache_dir, "testhost-initrd.gz"),
            "-append", append,
            "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,"
                       "multidevs=remap",
            # Scratch data only: no need to flush anything to the image file.
            "-drive", f"file={scratch},format=raw,if=virtio,cache=unsafe",
        ] + self.extra_qemu_args

    def console(self, cmd: str, cwd: str = None) -> int:
        """Boot a test host whose console is this terminal and run one interactive command on
        it (the demo). Every key, Ctrl-A and Ctrl-C included, reaches the command."""
        self._tmpdir = tempfile.mkdtemp(prefix="kemu-testhost-")
        try:
            scratch = os.path.join(self._tmpdir, "scratch.img")
            self._make_scratch(scratch)
            b64 = lambda t: base64.b64encode(t.encode()).decode()
            argv = self._qemu_argv(
                scratch, f"quiet kth.cwd={b64(cwd or os.getcwd())} kth.cmd={b64(cmd)}",
                ["-display", "none", "-chardev", "stdio,id=con,signal=off",
                 "-serial", "chardev:con"])
            return subprocess.call(argv)
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _check_spool(self):
        base = os.path.realpath(self.spool_dir)
        for hidden in _HIDDEN_INSIDE:
            if base == hidden or base.startswith(hidden + "/"):
                raise TestHostError(f"test host spool {base} is under {hidden}, which the test "
                                    "host does not see: set KEMU_TESTHOST_SPOOL elsewhere")

    def _open_spool(self):
        """Make this host's request directory; remove ones that crashed runs left behind."""
        base = os.path.realpath(self.spool_dir)
        os.makedirs(base, exist_ok=True)
        now = time.time()
        for name in os.listdir(base):
            path = os.path.join(base, name)
            try:
                # A day without a request: no live host of any process keeps it that long idle.
                if name.startswith("host-") and now - os.stat(path).st_mtime > 86400:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass
        self._spool = tempfile.mkdtemp(prefix="host-", dir=base)

    def stop(self):
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

    def _make_scratch(self, path):
        with open(path, "wb") as f:
            f.truncate(self.scratch_gib << 30)
        mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
        # No journal and lazy init: the image is thrown away after the run.
        r = subprocess.run([mkfs, "-q", "-F", "-O", "^has_journal",
                            "-E", "lazy_itable_init=1,lazy_journal_init=1", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise TestHostError(f"mkfs.ext4 failed: {r.stdout.decode(errors='replace')}")

    # -- console ----------------------------------------------------------------------------

    def _read_console(self):
        fd = self._proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            self._feed(data)
            if not data:
                return

    def _feed(self, data: bytes):
        """Console output arrived (b"": the console closed)."""
        with self._cond:
            if not data:
                self._eof = True
            else:
                self._buf += data
                self._log += data
                if len(self._log) > 256 * 1024:
                    del self._log[:-128 * 1024]
            self._cond.notify_all()

    def _send(self, data: bytes):
        """Write to the console (the agent's input)."""
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (OSError, ValueError):
            raise self._fail("cannot write to the console")

    def log_tail(self, lines=60) -> str:
        with self._cond:
            text = _clean(bytes(self._log))
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, what, exc=TestHostError):
        tail = self.log_tail()
        self.stop()
        return exc(f"test host: {what}\n--- console tail ---\n{tail}")

    def _await(self, pattern: re.Pattern, deadline, what, boot=False):
        """The match of pattern in the console buffer, or None once deadline (monotonic) has
        passed. Stops the host and raises if QEMU exits (or, booting, init fails)."""
        exc = TestHostError
        with self._cond:
            while True:
                m = pattern.search(self._buf)
                if m:
                    return m
                if boot and b"KTH-FAIL:" in self._buf:
                    err = f"{what}: init failed"
                    break
                if self._eof:
                    err = f"{what}: QEMU exited"
                    if not boot:
                        exc = TestHostDied
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 1.0))
        # Outside the lock: stop() waits for the reader thread, which needs it.
        raise self._fail(err, exc)

    def _wait_for(self, pattern: re.Pattern, timeout, what, boot=False):
        """Wait until pattern matches in the console buffer; return the match."""
        m = self._await(pattern, time.monotonic() + timeout, what, boot)
        if m is None:
            raise self._fail(f"{what}: timed out after {timeout} s", TestHostTimeout)
        return m

    # -- commands ---------------------------------------------------------------------------

    def run(self, cmd: str, timeout: float = 600, cwd: str = None, env: dict = None):
        """Run a shell command in the test host's chroot; return (status, combined output).

        cwd defaults to the caller's cwd (the same path exists inside: / is shared). On a
        timeout the host is stopped (its state is unknown) and TestHostTimeout is raised.
        ValueError: a NUL byte in cmd or env, or an env name that is not a shell variable.
        """
        if not self.running:
            raise TestHostError("test host is not running (call start())")
        cwd = cwd or os.getcwd()
        script = request_script(cmd, cwd, env)
        marker = "KTH-" + secrets.token_hex(12)
        b64 = lambda t: base64.b64encode(t.encode("utf-8", "surrogateescape")).decode()
        with self._lock:
            if self.proto == 1:
                # The old agent's one-line request; it does not deduplicate, so no resends.
                envs = "".join(f"export {k}={shlex.quote(str(v))}\n"
                               for k, v in (env or {}).items())
                line = f"{marker} {b64(cwd)} {b64(cmd) or 'Cg=='} {b64(envs or ':')}\n"
                return self._exchange(marker, line.encode(), cmd, timeout, resend=False)
            # Written and closed before the request line goes out; the 9p mount inside has no
            # cache, so the agent finds it.
            path = os.path.join(self._spool, marker)
            with open(path, "wb") as f:
                f.write(script)
            # The leading newline ends any partial line the agent may hold.
            line = f"\n{marker} {b64(path)}\n".encode()
            try:
                return self._exchange(marker, line, cmd, timeout)
            finally:
                try:
                    os.unlink(path)
                except OSError:
                    pass    # stop() removed the whole spool

    def _exchange(self, marker, line, cmd, timeout, resend=True):
        """Send the request line until a BEGIN comes; return (status, output) at its END."""
        what = f"command {_short(cmd)}"
        begin = f"{marker}:BEGIN\n".encode()
        end = re.compile(re.escape(f"{marker}:END:".encode()) + rb"(\d+)\r?\n")
        deadline = time.monotonic() + timeout
        sent = 0
        while True:
            self._send(line)
            sent += 1
            wait_until = (min(deadline, time.monotonic() + self.begin_timeout) if resend
                          else deadline)
            if self._await(re.compile(re.escape(begin)), wait_until, what):
                break
            if time.monotonic() >= deadline:
                raise self._fail(f"{what}: timed out after {timeout} s (no BEGIN; request "
                                 f"sent {sent} times)", TestHostTimeout)
            # Lost or just slow: the agent runs a marker once and answers a copy with DUP.
            self.resends += 1
            print(f"testhost: no BEGIN for {marker} after {self.begin_timeout} s; sending the "
                  "request again", file=sys.stderr)
        m = self._await(end, deadline, what)
        if m is None:
            raise self._fail(f"{what}: timed out after {timeout} s", TestHostTimeout)
        with self._cond:
            # The reader only appends, so the match's offsets still hold.
            status = int(m.group(1))
            b = self._buf.rfind(begin, 0, m.start())
            out = self._buf[b + len(begin):m.start()] if b >= 0 else self._buf[:m.start()]
            del self._buf[:m.end()]
        # The agent puts a newline before the END marker so it starts a line: drop it.
        if out.endswith(b"\n"):
            out = out[:-1]
        return status, _clean(bytes(out))

    def interact(self):
        """Pass this terminal's lines to the host as commands until EOF (a simple shell)."""
        cwd = os.getcwd()
        while True:
            try:
                line = input(f"testhost:{cwd}# ")
            except EOFError:
                print()
                return
            if not line.strip():
                continue
            # cd must persist across lines: report $PWD after the command and track it here.
            st, out = self.run(f"{line}\nkth_st=$?; printf '\\nKTH-CWD=%s' \"$PWD\"; "
                               "exit $kth_st", timeout=24 * 3600, cwd=cwd)
            out, sep, newcwd = out.rpartition("\nKTH-CWD=")
            if sep:
                cwd = newcwd.strip() or cwd
            sys.stdout.write(out)
            if st:
                print(f"[exit {st}]")


_shared_host = None
_shared_lock = threading.Lock()


def _stop_shared():
    global _shared_host
    if _shared_host is not None:
        _shared_host.stop()
        _shared_host = None


def shared_testhost() -> TestHost:
    """The module's test host, booted on first use and reused until exit."""
    global _shared_host
    with _shared_lock:
        if _shared_host is None:
            _shared_host = TestHost()
            atexit.register(_stop_shared)
        if not _shared_host.running:
            _shared_host.start()
        return _shared_host


def run_on_kvm(cmd: str, timeout: float = 600, cwd: str = None, env: dict = None,
               force_testhost: bool = False):
    """Run cmd where KVM runs real guests: here if /dev/kvm can, else in the shared test host."""
    if not force_testhost and kvm_can_run_linux()[0]:
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in (env or {}).items()})
        try:
            r = subprocess.run(cmd, shell=True, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise TestHostTimeout(f"command {cmd!r} timed out after {timeout} s\n"
                                  f"{_clean(e.output or b'')[-4000:]}")
        return r.returncode, _clean(r.stdout)
    return shared_testhost().run(cmd, timeout=timeout, cwd=cwd, env=env)


def _main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run a shell command (CMD... joined; one word is used as is)")
    r.add_argument("--timeout", type=float, default=3600)
    r.add_argument("--testhost", action="store_true",
                   help="use the test host even where /dev/kvm could run guests")
    r.add_argument("cmd", nargs="+")
    sub.add_parser("shell", help="interactive command loop inside the test host")
    c = sub.add_parser("console", help="run one interactive command with this terminal as its "
                                       "console, here if /dev/kvm can run Linux, else in a "
                                       "test host")
    c.add_argument("cmd", nargs="+")
    sub.add_parser("can-run-linux", help="exit 0 if /dev/kvm here can run Linux guests")
    a = ap.parse_args(argv)

    if a.action == "can-run-linux":
        ok, why = kvm_can_run_linux()
        print(why)
        return 0 if ok else 1
    if a.action == "console":
        cmd = a.cmd[0] if len(a.cmd) == 1 else shlex.join(a.cmd)
        if kvm_can_run_linux()[0]:
            return subprocess.call(cmd, shell=True)
        return TestHost().console(cmd)

    if a.action == "run":
        cmd = a.cmd[0] if len(a.cmd) == 1 else shlex.join(a.cmd)
        try:
            st, out = run_on_kvm(cmd, timeout=a.timeout, force_testhost=a.testhost)
        except TestHostError as e:
            print(f"testhost: {e}", file=sys.stderr)
            return 125
        sys.stdout.write(out + ("\n" if out and not out.endswith("\n") else ""))
        return st
    with TestHost() as h:
        print(f"test host up in {h.boot_seconds:.1f} s; commands run in chroot /host; ^D quits",
              file=sys.stderr)
        h.interact()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
