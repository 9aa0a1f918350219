"""kemu on this machine's own /dev/kvm with tiny guests that need no Linux (tests/guests/
mkbzimage.py), and command-line errors. These run even where /dev/kvm cannot run Linux (PVM)."""
import contextlib
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import time

import pytest

from conftest import KEMU, ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "guests"))
import mkbzimage  # noqa: E402

needs_kvm = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                               reason="no usable /dev/kvm on this machine")


def kemu(*args, timeout=30, **kw):
    if not os.access(KEMU, os.X_OK):
        pytest.fail(f"{KEMU} is not built")
    return subprocess.run([KEMU, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, **kw)


@pytest.fixture
def tiny(tmp_path):
    def make(port, value):
        p = tmp_path / f"tiny-{port:x}-{value:x}.bzImage"
        p.write_bytes(mkbzimage.build(port, value))
        return str(p)
    return make


@needs_kvm
@pytest.mark.parametrize("machine", ["pc", "microvm"])
def test_debug_exit_status(tiny, machine):
    r = kemu("-enable-kvm", "-M", machine, "-m", "64M", "-nographic", "-nodefaults",
             "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", tiny(0xF4, 5))
    assert r.returncode == (5 << 1) | 1, r


@needs_kvm
def test_debug_exit_default_port(tiny):
    # QEMU's default iobase is 0x501.
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-device", "isa-debug-exit",
             "-kernel", tiny(0x501, 3))
    assert r.returncode == 7, r


@needs_kvm
@pytest.mark.parametrize("port,value", [(0x64, 0xFE), (0xCF9, 0x06)], ids=["i8042", "cf9"])
def test_reset_with_no_reboot_exits_zero(tiny, port, value):
    r = kemu("-enable-kvm", "-m", "64M", "-nographic", "-no-reboot", "-kernel", tiny(port, value))
    assert r.returncode == 0, r


@needs_kvm
def test_emulation_failure_dumps_registers(tmp_path):
    k = tmp_path / "jump.bzImage"
    k.write_bytes(mkbzimage.build_jump(0xD0000000))  # inside the PCI hole: no RAM there
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-kernel", str(k))
    assert r.returncode == 1, r
    assert "KVM internal error" in r.stderr, r.stderr
    assert "RIP=00000000d0000000" in r.stderr and "CR0=" in r.stderr, r.stderr


@needs_kvm
def test_reset_without_no_reboot_restarts(tiny):
    # The guest resets at its first instruction: kemu keeps rebooting it until told to stop.
    p = subprocess.Popen([KEMU, "-enable-kvm", "-m", "64M", "-display", "none",
                          "-kernel", tiny(0x64, 0xFE)], stdin=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert p.poll() is None, "kemu exited instead of resetting the guest"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 0
    assert "terminating on signal 15" in err


@needs_kvm
def test_triple_fault_with_no_reboot_exits_zero(tmp_path):
    # QEMU: a triple fault is a reset, and -no-reboot turns a reset into exit 0.
    k = tmp_path / "ud2.bzImage"
    k.write_bytes(mkbzimage.build_ud2())
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-no-reboot", "-kernel", str(k),
             env={**os.environ, "KEMU_TRACE": "reset"})
    assert r.returncode == 0, r
    assert r.stderr.count("triple fault") == 1, r.stderr


@needs_kvm
def test_triple_fault_resets_and_keeps_running(tmp_path):
    k = tmp_path / "ud2.bzImage"
    k.write_bytes(mkbzimage.build_ud2())
    log = tmp_path / "trace.log"
    # The trace goes to a file: a pipe nobody reads would stall kemu, not show a reset loop.
    with open(log, "w") as err:
        p = subprocess.Popen([KEMU, "-enable-kvm", "-m", "64M", "-display", "none",
                              "-kernel", str(k)], stdin=subprocess.DEVNULL, stderr=err,
                             env={**os.environ, "KEMU_TRACE": "reset"})
        try:
            for _ in range(100):
                if log.read_text(errors="replace").count("triple fault") >= 3:
                    break
                time.sleep(0.05)
            seen = log.read_text(errors="replace").count("triple fault")
            time.sleep(0.5)
            assert p.poll() is None, "kemu exited on a triple fault without -no-reboot"
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
    text = log.read_text(errors="replace")
    # Each reset restarts the guest at its faulting entry: the triple faults go on repeating.
    assert seen >= 3 and text.count("triple fault") > seen, text[-2000:]
    assert p.returncode == 0, text[-2000:]


def drain(fd, until=None, timeout=5.0):
    """Read what kemu wrote to the pty (so it never blocks), up to `until` or the timeout."""
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and not (until and until in out):
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:  # EIO: the slave side is gone
                break
    return out


@contextlib.contextmanager
def kemu_on_pty(kernel):
    """kemu -nographic with a pty's slave as its terminal; yields (process, master, slave,
    termios before) once kemu has put the terminal in raw mode; kills it and closes the pty
    after."""
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    p = subprocess.Popen([KEMU, "-enable-kvm", "-m", "64M", "-nographic", "-kernel", kernel],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    try:
        for _ in range(100):
            if termios.tcgetattr(slave) != before or p.poll() is not None:
                break
            time.sleep(0.05)
        # Else "restored" below would prove nothing.
        assert termios.tcgetattr(slave) != before, "kemu did not put the terminal in raw mode"
        yield p, master, slave, before
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)


def assert_exits_restoring(p, master, slave, before, what):
    """kemu exits 0 (its output drained meanwhile) and leaves the terminal as it found it."""
    for _ in range(100):
        if p.poll() is not None:
            break
        drain(master, timeout=0.05)
    assert p.wait(timeout=5) == 0
    assert termios.tcgetattr(slave) == before, f"terminal not restored after {what}"


@needs_kvm
def test_ctrl_a_help_and_exit_restore_terminal(tmp_path):
    k = tmp_path / "halt.bzImage"
    k.write_bytes(mkbzimage.build_halt())
    with kemu_on_pty(str(k)) as (p, master, slave, before):
        os.write(master, b"\x01h")
        out = drain(master, until=b"C-a C-a")
        # QEMU's mux help, word for word.
        for line in (b"C-a h    print this help", b"C-a x    exit emulator",
                     b"C-a c    switch between console and monitor", b"C-a C-a  sends C-a"):
            assert line in out, out
        assert p.poll() is None, "Ctrl-A h ended kemu"
        os.write(master, b"\x01x")
        assert_exits_restoring(p, master, slave, before, "Ctrl-A x")


@needs_kvm
def test_sigterm_restores_terminal(tmp_path):
    k = tmp_path / "halt.bzImage"
    k.write_bytes(mkbzimage.build_halt())
    with kemu_on_pty(str(k)) as (p, master, slave, before):
        p.send_signal(signal.SIGTERM)
        assert_exits_restoring(p, master, slave, before, "SIGTERM")


def in_private_dev(script, *args):
    """Run `sh -c script` with args in a mount namespace whose /dev is an empty tmpfs; skip when
    this machine cannot make one (not root, no unshare)."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none /dev"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private /dev: {probe.stderr.strip()}")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "mount -t tmpfs none /dev && " + script, "sh", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


KVM_ARGS = ["-enable-kvm", "-m", "64M", "-display", "none", "-nodefaults"]


def test_no_dev_kvm_one_line_exit_1(tiny):
    r = in_private_dev('exec "$@"', KEMU, *KVM_ARGS, "-kernel", tiny(0xF4, 5))
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kemu: /dev/kvm: ") and "no such device" in lines[0], lines[0]


def test_dev_kvm_permission_denied_one_line_exit_1(tiny):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is not installed")
    # A root-only /dev/kvm of our own, whatever the mode of this machine's: nobody cannot open it.
    r = in_private_dev("mknod -m 600 /dev/kvm c 10 232 && exec setpriv --reuid=65534 "
                       '--regid=65534 --clear-groups "$@"', KEMU, *KVM_ARGS,
                       "-kernel", tiny(0xF4, 5))
    if "mknod" in r.stderr or "setpriv" in r.stderr:
        pytest.skip(f"cannot run as nobody with a private /dev/kvm: {r.stderr.strip()}")
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kemu: /dev/kvm: ") and "permission denied" in lines[0], lines[0]


@needs_kvm
def test_daemonize_and_pidfile(tiny, tmp_path):
    pidfile = tmp_path / "kemu.pid"
    log = tmp_path / "serial.log"
    # Port 0x80 is unassigned: the guest then halts with interrupts off, forever.
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-daemonize", "-pidfile",
             str(pidfile), "-serial", f"file:{log}", "-kernel", tiny(0x80, 0))
    assert r.returncode == 0, r
    pid = int(pidfile.read_text())
    os.kill(pid, 0)  # alive
    # A second instance cannot take the same pid file.
    r2 = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-pidfile", str(pidfile),
              "-kernel", tiny(0x80, 0))
    assert r2.returncode == 1 and "pidfile" in r2.stderr, r2
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("daemon did not exit on SIGTERM")
    assert not pidfile.exists(), "pid file left behind"


@needs_kvm
def test_serial_to_file(tiny, tmp_path):
    # The guest writes 'K' to COM1's transmit register, then halts; the byte lands in the file.
    log = tmp_path / "com1.log"
    p = subprocess.Popen([KEMU, "-enable-kvm", "-m", "64M", "-display", "none",
                          "-serial", f"file:{log}", "-kernel", tiny(0x3F8, ord("K"))],
                         stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if log.exists() and log.read_bytes() == b"K":
                break
            time.sleep(0.05)
        assert log.read_bytes() == b"K"
    finally:
        p.terminate()
        p.wait(timeout=10)


@needs_kvm
def test_serial_on_unix_socket_server_wait(tiny, tmp_path):
    import socket
    path = str(tmp_path / "com1.sock")
    p = subprocess.Popen([KEMU, "-enable-kvm", "-m", "64M", "-display", "none",
                          "-chardev", f"socket,id=s0,path={path},server=on,wait=on",
                          "-serial", "chardev:s0", "-kernel", tiny(0x3F8, ord("K"))],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(path)
        # wait=on: the guest starts only now, so its first byte reaches this client.
        assert c.recv(1) == b"K"
        c.close()
    finally:
        p.terminate()
        _, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert not os.path.exists(path), "socket file left behind"


BAD = [
    (["-smp", "2,socket=2"], "-smp 2,socket=2: unknown parameter 'socket'"),
    (["-smp", "4,sockets=2,cores=3"], "Invalid CPU topology"),
    (["-m", "12Q"], "-m"),
    (["-kernel"], "-kernel"),
    (["-frobnicate"], "-frobnicate"),
    (["-M", "vexpress"], "vexpress"),
    (["-accel", "tcg"], "tcg"),
    (["-serial", "pty"], "-serial"),
    (["-device", "nosuchdev"], "nosuchdev"),
    (["-rtc", "base=yesterday"], "-rtc"),
    (["-kernel", "/nonexistent/vmlinuz"], "/nonexistent/vmlinuz"),
    (["-kernel", "/etc/hostname"], "-kernel"),
    (["-serial", "chardev:nope"], "nope"),
    (["-chardev", "file,id=c0"], "path"),
    (["-S", "-kernel", "/etc/hostname"], "-S"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_one_line_exit_1(args, needle):
    r = kemu("-display", "none", *args)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kemu: ") and needle in lines[0], lines[0]


def test_version_and_help():
    r = kemu("-version")
    assert r.returncode == 0 and "kemu" in r.stdout
    for opt in ("-h", "-help", "--help"):
        r = kemu(opt)
        assert r.returncode == 0, r
        assert r.stdout.startswith("usage: kemu [options]") and r.stderr == "", r
        assert "-kernel FILE" in r.stdout and "-no-reboot" in r.stdout, r.stdout
    r = kemu("-smp", "help")
    assert r.returncode == 0 and "sockets" in r.stdout


# Device errors are found after the machine is built: they need a kernel that would boot.
BAD_DEVICES = [
    (["-M", "microvm", "-device", "virtio-rng-pci"], "no PCI bus"),
    (["-drive", "file=/nonexistent.img,if=virtio,format=raw"], "/nonexistent.img"),
    (["-drive", "file=/etc/hostname,if=virtio,format=qcow2"], "qcow2"),
    (["-drive", "file=/etc/hostname,if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d1"],
     "d1"),
    (["-drive", "file=/etc/hostname,if=none,id=d0,readonly=on",
      "-device", "virtio-blk-pci,drive=d0", "-device", "virtio-blk-pci,drive=d0"], "in use"),
    (["-device", "virtio-rng-pci,addr=0x4", "-device", "virtio-rng-pci,addr=4"], "4"),
    (["-drive", "file=/etc/hostname,if=virtio,format=raw,readonly=on,bus=0,unit=1",
      "-drive", "file=/etc/hostname,if=virtio,format=raw,readonly=on,unit=1"],
     "drive with bus=0, unit=1 (index=1) exists"),
    (["-device", "virtio-rng-pci,bus=pci.1"], "pci.1"),
    (["-device", "virtio-rng-pci,rng=nope"], "nope"),
    (["-object", "memory-backend-ram,id=m,size=64M", "-device", "virtio-rng-pci,rng=m"],
     "Invalid parameter type for 'rng', expected: rng-backend"),
    (["-object", "rng-random,id=r,filename=/nonexistent", "-device", "virtio-rng-pci,rng=r"],
     "/nonexistent"),
    (["-device", "virtconsole,chardev=c0"], "virtio-serial"),
    (["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac=01:00:00:00:00:01"],
     "mac"),
    (["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
      "-device", "virtio-net-pci,netdev=n0"], "in use"),
    (["-netdev", "socket,id=s0"], "socket"),
    # -net nic takes QEMU's keys (addr=, vectors=, id=) and refuses the rest, as QEMU does.
    (["-net", "nic,vlan=1", "-net", "user"], "Invalid parameter 'vlan'"),
    (["-net", "nic,addr=zz", "-net", "user"], "zz"),
    (["-net", "nic,vectors=abc", "-net", "user"], "vectors=abc"),
    (["-net", "nic,id=x y", "-net", "user"], "invalid id"),
    (["-net", "nic,id=a", "-net", "user", "-device", "virtio-rng-pci,id=a"], "duplicate device id"),
    (["-M", "microvm", "-net", "nic,addr=4", "-net", "user"], "no PCI bus"),
    (["-vga", "std"], "-vga std: kemu has no display device (use -vga none)"),
]


@pytest.mark.parametrize("args,needle", BAD_DEVICES, ids=[" ".join(a) for a, _ in BAD_DEVICES])
def test_bad_device_one_line_exit_1(tiny, args, needle):
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-nodefaults",
             "-kernel", tiny(0xF4, 5), *args)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kemu: ") and needle in lines[0], lines[0]


def test_backend_help_exits_zero():
    for opt in (["-drive", "help"], ["-netdev", "user,help"]):
        r = kemu(*opt)
        assert r.returncode == 0, r
        assert "=" in r.stdout, r.stdout
    # QEMU's NIC model list, from either NIC option; a bare "help" lists the backends.
    for opt in (["-net", "nic,model=help"], ["-nic", "user,model=?"]):
        r = kemu(*opt)
        assert r.returncode == 0 and r.stdout == "Supported NIC models:\nvirtio-net-pci\n", r
    for opt in (["-net", "help"], ["-nic", "help"]):
        r = kemu(*opt)
        assert r.returncode == 0 and r.stdout.startswith("Available netdev backend types:"), r
