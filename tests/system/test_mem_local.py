"""Guest RAM backing on this machine's own /dev/kvm with tiny guests: -mem-path (a file, a
directory, hugetlbfs), -mem-prealloc, and their errors. What is checked is the host side: kemu's
resident memory, its mappings, the files it leaves, the host's huge page pool."""
import os
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import KEMU, ROOT

sys.path.insert(0, os.path.join(ROOT, "tests", "guests"))
import mkbzimage  # noqa: E402

DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=4"
needs_kvm = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                               reason="no usable /dev/kvm on this machine")


@pytest.fixture
def tiny(tmp_path):
    """A guest that writes `value` to isa-debug-exit at 0xf4 (kemu exits (value << 1) | 1)."""
    def make(value):
        p = tmp_path / f"tiny-{value:x}.bzImage"
        p.write_bytes(mkbzimage.build(0xF4, value))
        return str(p)
    return make


def kemu(*args, timeout=60):
    return subprocess.run([KEMU, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Paused:
    """kemu started with -S (the machine built, its vCPUs not started) until the block ends."""

    def __init__(self, kernel, *args):
        # -S wants a monitor that could continue the machine.
        self.sock = tempfile.mktemp(prefix="kemu-mem-test-", suffix=".qmp")
        self.p = subprocess.Popen([KEMU, "-enable-kvm", "-display", "none", "-nodefaults", "-S",
                                   "-qmp", f"unix:{self.sock},server=on,wait=off",
                                   "-kernel", kernel, *args], stdin=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)

    def __enter__(self):
        return self

    def wait_for(self, cond, what, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                pytest.fail(f"kemu exited ({self.p.returncode}): {self.p.stderr.read()}")
            if cond():
                return
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}")

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait(timeout=10)
        if os.path.exists(self.sock):
            os.unlink(self.sock)


@needs_kvm
def test_mem_prealloc_makes_all_ram_resident(tiny):
    # QEMU's -mem-prealloc: the host commits the guest's RAM before it runs.
    with Paused(tiny(0), "-m", "192M", "-mem-prealloc") as vm:
        vm.wait_for(lambda: status_kib(vm.p.pid, "VmRSS") >= 192 * 1024, "192 MiB resident")
    # Without it only what is touched: a paused guest has touched nothing but its boot data.
    with Paused(tiny(0), "-m", "192M") as vm:
        time.sleep(1.0)
        assert vm.p.poll() is None, vm.p.stderr.read()
        assert status_kib(vm.p.pid, "VmRSS") < 64 * 1024


@needs_kvm
def test_mem_path_directory_leaves_no_file(tiny, tmp_path):
    d = tmp_path / "ram"
    d.mkdir()
    with Paused(tiny(0), "-m", "64M", "-mem-path", str(d), "-mem-prealloc") as vm:
        vm.wait_for(lambda: status_kib(vm.p.pid, "VmRSS") >= 64 * 1024, "64 MiB resident")
        with open(f"/proc/{vm.p.pid}/maps") as f:
            maps = f.read()
        # The guest RAM is a private mapping of the file, which is already unlinked.
        line = next(x for x in maps.splitlines() if "kemu_back_mem" in x)
        assert " rw-p " in line and line.endswith("(deleted)"), line
        assert list(d.iterdir()) == []


@needs_kvm
def test_mem_path_file_runs_the_guest_and_keeps_the_file(tiny, tmp_path):
    ram = tmp_path / "guest.ram"
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-nodefaults",
             "-mem-path", str(ram), "-device", DEBUG_EXIT, "-kernel", tiny(7))
    assert r.returncode == (7 << 1) | 1, r
    # Created at the RAM's size; the guest's writes stayed private (the file is all zeros).
    assert ram.stat().st_size == 64 << 20
    with open(ram, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


@needs_kvm
def test_memory_backend_file_shared_holds_what_kemu_loaded(tiny, tmp_path):
    # share=on: RAM is the file; kemu's writes into guest RAM (the boot parameters, the kernel
    # at 1 MiB) are in it after kemu exits. libvirt's form: no -m, the backend sets the size.
    ram = tmp_path / "shared.ram"
    r = kemu("-enable-kvm", "-display", "none", "-nodefaults", "-object",
             f"memory-backend-file,id=pc.ram,size=64M,mem-path={ram},share=on",
             "-machine", "pc,memory-backend=pc.ram", "-device", DEBUG_EXIT, "-kernel", tiny(3))
    assert r.returncode == (3 << 1) | 1, r
    data = ram.read_bytes()
    assert len(data) == 64 << 20
    assert any(data[1 << 20:(1 << 20) + 4096]), "the kernel is not at 1 MiB in the file"


@needs_kvm
def test_memory_backend_ram_prealloc_sets_the_size(tiny):
    with Paused(tiny(0), "-object", "memory-backend-ram,id=m,size=160M,prealloc=on",
                "-machine", "memory-backend=m") as vm:
        vm.wait_for(lambda: status_kib(vm.p.pid, "VmRSS") >= 160 * 1024, "160 MiB resident")


BAD = [
    (["-mem-path", "/nonexistent/dir/ram"],
     "-mem-path: cannot open '/nonexistent/dir/ram': No such file or directory"),
    (["-mem-path", "/dev/null"], "-mem-path: '/dev/null' is not a regular file or a directory"),
    (["-mem-path", ""], "-mem-path : empty path"),
    (["-machine", "memory-backend=nope"], "Memory backend 'nope' not found"),
    (["-object", "memory-backend-ram,id=m,size=128M", "-machine", "memory-backend=m"],
     "Machine memory size does not match the size of the memory backend"),
    (["-object", "memory-backend-file,id=m,size=64M,mem-path=/nonexistent/ram", "-machine",
      "memory-backend=m"],
     "memory backend 'm': cannot open '/nonexistent/ram': No such file or directory"),
]


@needs_kvm
@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_mem_path_one_line_exit_1(tiny, args, needle):
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-nodefaults", *args,
             "-kernel", tiny(0))
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert lines == [f"kemu: {needle}"], r.stderr


def test_small_existing_file_refused_and_kept(tiny, tmp_path):
    ram = tmp_path / "small.ram"
    ram.write_bytes(b"\x5a" * 4096)
    r = kemu("-m", "64M", "-display", "none", "-nodefaults", "-mem-path", str(ram),
             "-kernel", tiny(0))
    assert r.returncode == 1, r
    assert "holds 4096 bytes, less than" in r.stderr, r.stderr
    assert ram.read_bytes() == b"\x5a" * 4096


@pytest.fixture
def hugetlbfs(tmp_path):
    """A hugetlbfs mount with 48 free 2 MiB pages added to the host's pool (root only); the pool
    and the mount are put back afterwards."""
    if os.geteuid() != 0:
        pytest.skip("hugetlbfs needs root here (mount, /proc/sys/vm/nr_hugepages)")
    if meminfo("Hugepagesize") != 2048:
        pytest.skip(f"the default huge page size is {meminfo('Hugepagesize')} KiB, not 2 MiB")
    path = "/proc/sys/vm/nr_hugepages"
    with open(path) as f:
        before = int(f.read())
    with open(path, "w") as f:
        f.write(str(before + 48))
    mnt = tmp_path / "huge"
    mnt.mkdir()
    try:
        if meminfo("HugePages_Free") < 48:
            pytest.skip(f"the host gave only {meminfo('HugePages_Free')} of 48 huge pages")
        r = subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount hugetlbfs: {r.stderr.strip()}")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        with open(path, "w") as f:
            f.write(str(before))


@needs_kvm
def test_hugetlbfs_backs_the_guest(tiny, hugetlbfs):
    free = meminfo("HugePages_Free")
    with Paused(tiny(0), "-m", "64M", "-mem-path", str(hugetlbfs), "-mem-prealloc") as vm:
        vm.wait_for(lambda: meminfo("HugePages_Free") <= free - 32, "32 huge pages taken")
        # 64 MiB of RAM: 32 huge pages taken from the pool, none left in the directory.
        assert meminfo("HugePages_Free") == free - 32
        assert list(hugetlbfs.iterdir()) == []
    # KVM runs a guest from huge pages.
    r = kemu("-enable-kvm", "-m", "64M", "-display", "none", "-nodefaults", "-mem-path",
             str(hugetlbfs), "-device", DEBUG_EXIT, "-kernel", tiny(5))
    assert r.returncode == (5 << 1) | 1, r
    assert meminfo("HugePages_Free") == free
    # More RAM than the pool holds: refused at start, in one line, the pool untouched.
    r = kemu("-enable-kvm", "-m", "256M", "-display", "none", "-nodefaults", "-mem-path",
             str(hugetlbfs), "-kernel", tiny(0))
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kemu: -mem-path: cannot map 256 MiB"), r.stderr
    assert "Cannot allocate memory" in lines[0], lines[0]
    assert meminfo("HugePages_Free") == free
    # A memfd on huge pages (memory-backend-memfd,hugetlb=on) takes them from the same pool.
    with Paused(tiny(0), "-object", "memory-backend-memfd,id=m,size=32M,hugetlb=on,"
                "hugetlbsize=2M,prealloc=on", "-machine", "memory-backend=m") as vm:
        vm.wait_for(lambda: meminfo("HugePages_Free") <= free - 16, "16 huge pages taken")
        assert meminfo("HugePages_Free") == free - 16
    assert meminfo("HugePages_Free") == free
