"""HMP commit on a running guest (through QMP's human-monitor-command): what the guest wrote to a
qcow2 image lands in its backing file, and under snapshot=on in the image itself; the guest's
view of its disk does not change; qemu-img checks the result where kemu ran.

The guest writes 1 MiB of random data with conv=fsync, tells the QMP script on ttyS1, waits
while the script commits, then reads its disk back.
"""
import re

import pytest

from conftest import run_guest
from test_acpi import QMP_SUFFIX, READY, SOCK, qmp_prefix, qmp_steps

IMG = "/tmp/kemu-commit.qcow2"
BASE = "/tmp/kemu-commit-base.raw"
ARGS = ["-M", "pc", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults", "-serial", "stdio",
        "-serial", f"file:{READY}", "-qmp", f"unix:{SOCK},server=on,wait=off"]

MAKE = ("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && echo HAVE-QEMU-IMG=1; "
        f"rm -f {IMG} {BASE}; dd if=/dev/urandom of={BASE} bs=1M count=4 2>/dev/null; "
        f"qemu-img create -q -f qcow2 -b {BASE} -F raw {IMG} 4M; ")
GUEST = ("dd if=/dev/urandom of=/tmp/p bs=1M count=1 2>/dev/null; "
         "echo GUEST-P=$(md5sum < /tmp/p | cut -c1-32); "
         "dd if=/tmp/p of=/dev/vda bs=1M seek=1 conv=fsync 2>/dev/null; echo DD-EXIT=$?; "
         "echo GUEST-READY > /dev/ttyS1; sleep 6; "
         "echo GUEST-AFTER=$(dd if=/dev/vda bs=1M skip=1 count=1 iflag=direct 2>/dev/null "
         "| md5sum | cut -c1-32)")
# Where kemu ran, after it: the base's second MiB, the qcow2 image's allocation and check.
AFTER = (f"echo BASE-P=$(dd if={BASE} bs=1M skip=1 count=1 2>/dev/null | md5sum | cut -c1-32); "
         f"[ -e {IMG} ] && qemu-io -f qcow2 -c 'alloc 0 4M' {IMG}; "
         f"[ -e {IMG} ] && qemu-img check -q {IMG}; echo CHECK-EXIT=$?; ")


def field(text, name):
    m = re.search(rf"^{name}=(\S*)", text, re.M)
    assert m, f"{name} missing in:\n{text[-3000:]}"
    return m.group(1)


def run_commit(drive, command):
    r = run_guest(ARGS + ["-drive", drive], run=GUEST,
                  prefix=MAKE + qmp_prefix(f"wait-file:{READY}:GUEST-READY:1", f"hmp:{command}"),
                  suffix=QMP_SUFFIX + "; " + AFTER)
    if "HAVE-QEMU-IMG=1" not in r.host_output:
        pytest.skip("qemu-img/qemu-io missing where kemu runs")
    assert r.status == 0, r
    assert field(r.output, "DD-EXIT") == "0", r
    steps = qmp_steps(r.host_output)
    reply = steps[f"hmp:{command}"]["reply"]
    assert reply.get("return") == "", reply  # HMP commit prints nothing when it works
    # the guest's disk reads the same after the commit, and the base now holds the data
    assert field(r.output, "GUEST-AFTER") == field(r.output, "GUEST-P"), r
    assert field(r.host_output, "BASE-P") == field(r.output, "GUEST-P"), r.host_output[-3000:]
    assert field(r.host_output, "CHECK-EXIT") == "0", r.host_output[-3000:]
    return r


def test_commit_qcow2_into_backing_file():
    r = run_commit(f"file={IMG},if=virtio,format=qcow2", "commit virtio0")
    # the top image gave everything to its backing file
    assert re.search(r"^0/4194304 bytes allocated", r.host_output, re.M), r.host_output[-3000:]


def test_commit_all_under_snapshot_on():
    run_commit(f"file={BASE},if=virtio,format=raw,snapshot=on", "commit all")


def test_commit_errors():
    """A raw drive has nothing to commit into; an unknown device is named."""
    r = run_guest(ARGS + ["-drive", f"file={BASE},if=virtio,format=raw"],
                  run="echo GUEST-READY > /dev/ttyS1; sleep 4",
                  prefix=MAKE + qmp_prefix(f"wait-file:{READY}:GUEST-READY:1", "hmp:commit virtio0",
                                           "hmp:commit nosuch"),
                  suffix=QMP_SUFFIX)
    assert r.status == 0, r
    steps = qmp_steps(r.host_output)
    assert "'commit' error for 'virtio0'" in steps["hmp:commit virtio0"]["reply"]["return"], steps
    assert "Device 'nosuch' not found" in steps["hmp:commit nosuch"]["reply"]["return"], steps
