"""qcow2 disks (-drive format=qcow2, probing, snapshot=on), checked from inside the Debian cloud
guest and with qemu-img where kemu runs.

The image is made by qemu-img: 8 MiB of qcow2 over a 4 MiB raw backing file of random data, with
a cluster qemu-io wrote on top. Images live in /tmp where kemu runs.
"""
import re

import pytest

from conftest import run_guest

COMMON = ["-M", "pc", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults", "-serial", "stdio"]
IMG = "/tmp/kemu-q2-test.qcow2"
BASE = "/tmp/kemu-q2-base.raw"
RAW = "/tmp/kemu-q2-conv.raw"

NEED_QEMU_IMG = "command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && echo HAVE-QEMU-IMG=1; "
# Host side: the image and the md5 of its first 4 MiB as QEMU reads it, and of the whole file.
MAKE_IMG = (NEED_QEMU_IMG +
            f"rm -f {IMG} {BASE} {RAW}; dd if=/dev/urandom of={BASE} bs=1M count=4 2>/dev/null; "
            f"qemu-img create -q -f qcow2 -b {BASE} -F raw {IMG} 8M; "
            f"qemu-io -f qcow2 -c 'write -P 0x5a 1M 64k' {IMG} >/dev/null; "
            f"qemu-img convert -O raw {IMG} {RAW}; "
            f"echo HOST-HEAD=$(dd if={RAW} bs=1M count=4 2>/dev/null | md5sum | cut -c1-32); "
            f"echo HOST-FILE-BEFORE=$(cat {IMG} {BASE} | md5sum | cut -c1-32); ")
# After kemu: qemu-img check, the md5 of 4..6 MiB as QEMU reads it, the files' md5.
AFTER = (f"qemu-img check {IMG}; echo CHECK-EXIT=$?; rm -f {RAW}; "
         f"qemu-img convert -O raw {IMG} {RAW}; "
         f"echo HOST-TAIL=$(dd if={RAW} bs=1M skip=4 count=2 2>/dev/null | md5sum | cut -c1-32); "
         f"echo HOST-FILE-AFTER=$(cat {IMG} {BASE} | md5sum | cut -c1-32); ")
GUEST_IO = ("echo GUEST-HEAD=$(dd if=/dev/vda bs=1M count=4 2>/dev/null | md5sum | cut -c1-32); "
            "dd if=/dev/urandom of=/tmp/p bs=1M count=2 2>/dev/null; "
            "echo GUEST-TAIL=$(md5sum < /tmp/p | cut -c1-32); "
            "dd if=/tmp/p of=/dev/vda bs=1M seek=4 conv=fsync 2>/dev/null; echo DD-EXIT=$?; "
            "echo GUEST-READBACK=$(dd if=/dev/vda bs=1M skip=4 count=2 iflag=direct 2>/dev/null "
            "| md5sum | cut -c1-32); "
            "sleep 1")


def field(text, name):
    m = re.search(rf"^{name}=(\S*)", text, re.M)
    assert m, f"{name} missing in:\n{text[-3000:]}"
    return m.group(1)


def run_qcow2(drive_opts):
    r = run_guest(COMMON + ["-drive", f"file={IMG},if=virtio{drive_opts}"],
                  run=GUEST_IO, prefix="export KEMU_BLK_STATS=1; " + MAKE_IMG, suffix=AFTER)
    if "HAVE-QEMU-IMG=1" not in r.host_output:
        pytest.skip("qemu-img/qemu-io missing where kemu runs")
    assert r.status == 0, r
    assert field(r.output, "DD-EXIT") == "0", r
    assert field(r.output, "GUEST-HEAD") == field(r.host_output, "HOST-HEAD"), r
    assert field(r.output, "GUEST-READBACK") == field(r.output, "GUEST-TAIL"), r
    assert field(r.host_output, "CHECK-EXIT") == "0", r.host_output[-3000:]
    return r


MODES = [",format=qcow2", ",format=qcow2,cache=none,aio=native",
         ",format=qcow2,cache=writethrough,aio=io_uring", ""]


@pytest.mark.parametrize("opts", MODES, ids=["writeback", "none-native", "writethrough-io_uring",
                                              "probed"])
def test_qcow2_data_both_ways(opts):
    r = run_qcow2(opts)
    assert field(r.output, "GUEST-TAIL") == field(r.host_output, "HOST-TAIL"), r
    if not opts:
        assert "probing guessed raw" not in r.output + r.host_output
    # With O_DIRECT, the 2 MiB written into fresh clusters and read back (iflag=direct) go
    # straight to the aio engine, with no hand-off to a worker thread; buffered, all on workers.
    m = re.search(r"qcow2: (\d+) reads and (\d+) writes on the owner thread", r.output)
    assert m, r
    fast_reads, fast_writes = int(m.group(1)), int(m.group(2))
    if "cache=none" in opts:
        assert fast_reads > 0 and fast_writes > 0, m.group(0)
    else:
        assert fast_reads == 0 and fast_writes == 0, m.group(0)


def test_qcow2_snapshot_leaves_image_unchanged():
    r = run_qcow2(",format=qcow2,snapshot=on")
    assert field(r.host_output, "HOST-FILE-AFTER") == field(r.host_output, "HOST-FILE-BEFORE"), r
    assert field(r.output, "GUEST-TAIL") != field(r.host_output, "HOST-TAIL"), r
