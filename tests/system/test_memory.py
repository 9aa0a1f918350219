"""Guest RAM on huge pages: a Debian guest boots from -mem-path on a hugetlbfs mount with
-mem-prealloc, sees the RAM it was given, and data it writes through its memory reads back the
same; kemu takes its RAM from the host's huge page pool, and a pool too small for it is refused
at start with one line. The pool and the mount are set up where kemu runs (the test host here)
and put back after."""
import pytest

from conftest import INIT_MARKER, run_guest
from test_virtio import field

HUGE = "/tmp/kemu-huge"
FREE = "$(awk '/HugePages_Free/{print $2}' /proc/meminfo)"
BASE = ["-M", "pc", "-nographic", "-m", "512M", "-nodefaults", "-no-reboot", "-serial", "stdio",
        "-mem-path", HUGE, "-mem-prealloc"]


def pool(pages):
    """Where kemu runs: a hugetlbfs mount and a pool of `pages` 2 MiB pages (POOL= says how many
    the host could give)."""
    return (f"mkdir -p {HUGE}; mountpoint -q {HUGE} || "
            f"mount -t hugetlbfs -o pagesize=2M none {HUGE}; "
            f"echo {pages} > /proc/sys/vm/nr_hugepages; echo POOL={FREE}; ")


RESTORE = f"echo AFTER={FREE}; echo 0 > /proc/sys/vm/nr_hugepages; umount {HUGE}"

# 128 MiB of a pattern in the guest's RAM (tmpfs), read back twice.
GUEST = ("echo MEMTOTAL=$(awk '/MemTotal/{print $2}' /proc/meminfo); "
         "dd if=/dev/urandom of=/dev/shm/a bs=1M count=16 status=none; "
         "for i in 1 2 3 4 5 6 7 8; do cat /dev/shm/a; done > /dev/shm/b; "
         "echo SUM1=$(md5sum < /dev/shm/b); "
         "echo SUM2=$(for i in 1 2 3 4 5 6 7 8; do cat /dev/shm/a; done | md5sum)")


def host_field(r, key):
    for line in r.host_output.splitlines():
        if line.startswith(key + "="):
            return int(line.split("=", 1)[1])
    return None


def test_guest_runs_from_huge_pages():
    r = run_guest(BASE, run=GUEST, prefix=pool(256), suffix=RESTORE)
    if host_field(r, "POOL") is not None and host_field(r, "POOL") < 256:
        pytest.skip(f"the host gave only {host_field(r, 'POOL')} of 256 huge pages")
    assert r.status == 0, r
    assert r.output.count(INIT_MARKER) == 1, r
    # All 512 MiB came from the pool (256 pages; prealloc needed every one of them) and went back.
    assert host_field(r, "POOL") == 256, r.host_output
    assert host_field(r, "AFTER") == 256, r.host_output
    # The guest has its 512 MiB (less what the kernel keeps), and its memory holds data.
    assert 400 * 1024 < int(field(r.output, "MEMTOTAL")) <= 512 * 1024, r
    assert field(r.output, "SUM1") and field(r.output, "SUM1") == field(r.output, "SUM2"), r


def test_too_small_pool_refused_at_start():
    r = run_guest(BASE, run="true", prefix=pool(100), suffix=RESTORE)
    assert r.status == 1, r
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith(f"kemu: -mem-path: cannot map 512 MiB of '{HUGE}'"), lines
    assert "Cannot allocate memory" in lines[0], lines
    assert host_field(r, "AFTER") == host_field(r, "POOL"), r.host_output
