"""ACPI power management, the MP table without ACPI, and microvm's virtio-mmio devices, checked
from inside Debian guests.

QMP clients run where kemu runs (the test host's filesystem holds the socket): qmp_script.py is
started in the background before kemu and prints one line per step, which the test reads back.
The guest says it is ready by writing to its second serial port, a file the script watches.
"""
import json
import os
import re

from conftest import INIT_MARKER, run_guest

HERE = os.path.dirname(os.path.abspath(__file__))
SOCK = "/tmp/kemu-acpi-qmp.sock"
READY = "/tmp/kemu-acpi-ready.log"
QOUT = "/tmp/kemu-acpi-qmp.out"
BASE = ["-M", "pc", "-nographic", "-m", "512M", "-nodefaults", "-serial", "stdio",
        "-serial", f"file:{READY}", "-qmp", f"unix:{SOCK},server=on,wait=off"]

# busybox acpid runs /etc/acpi/PWRF/00000080 on the power button's KEY_POWER (evdev, from the
# ACPI button driver); the guest then tells the QMP script it is ready on ttyS1.
ACPID = ("mkdir -p /etc/acpi/PWRF; "
         "printf '#!/bin/sh\\necho GUEST-POWER-BUTTON > /dev/console\\npoweroff -f\\n' "
         "> /etc/acpi/PWRF/00000080; chmod +x /etc/acpi/PWRF/00000080; "
         "for i in $(seq 50); do [ -e /dev/input/event0 ] && break; sleep 0.1; done; "
         "cat /sys/class/input/input*/name; acpid -d -c /etc/acpi & sleep 1; "
         "echo GUEST-READY; echo GUEST-READY > /dev/ttyS1; ")


def qmp_prefix(*steps, timeout=240):
    script = os.path.join(HERE, "qmp_script.py")
    return (f"rm -f {SOCK} {READY} {QOUT}; (python3 {script} --timeout {timeout} {SOCK} "
            + " ".join(f"'{s}'" for s in steps) + f" > {QOUT} 2>&1) & ")


QMP_SUFFIX = f"sleep 1; cat {QOUT}"


def qmp_steps(host_output):
    """{step: reply or event} from qmp_script.py's lines; asserts it finished."""
    assert "QMPS-DONE" in host_output, host_output[-3000:]
    steps = {}
    for line in host_output.splitlines():
        if line.startswith("QMPS "):
            d = json.loads(line[5:])
            steps[d.pop("step")] = d
    return steps


def test_system_powerdown_powers_guest_off():
    r = run_guest(BASE + ["-no-reboot"], run=ACPID + "sleep 200",
                  prefix=qmp_prefix(f"wait-file:{READY}:GUEST-READY:1", "cmd:system_powerdown",
                                    "event:POWERDOWN", "event:SHUTDOWN"),
                  suffix=QMP_SUFFIX)
    assert r.status == 0, r
    assert "Power Button" in r.output, r
    assert "GUEST-POWER-BUTTON" in r.output, r
    steps = qmp_steps(r.host_output)
    assert steps["cmd:system_powerdown"]["reply"].get("return") == {}, steps
    ev = steps["event:SHUTDOWN"]["event"]
    assert ev["data"] == {"guest": True, "reason": "guest-shutdown"}, ev
    assert r.output.count(INIT_MARKER) == 1, r


def test_guest_poweroff_exits_zero():
    # No -no-reboot: a reset instead of a power-off would boot again and never end.
    r = run_guest(BASE, run="poweroff -f; sleep 100",
                  prefix=qmp_prefix("event:SHUTDOWN"), suffix=QMP_SUFFIX, timeout=200)
    assert r.status == 0 and not r.timed_out, r
    ev = qmp_steps(r.host_output)["event:SHUTDOWN"]["event"]
    assert ev["data"]["reason"] == "guest-shutdown", ev
    assert r.output.count(INIT_MARKER) == 1, r


def test_no_shutdown_pauses_on_power_button():
    r = run_guest(BASE + ["-no-reboot", "-no-shutdown"], run=ACPID + "sleep 200",
                  prefix=qmp_prefix(f"wait-file:{READY}:GUEST-READY:1", "cmd:system_powerdown",
                                    "event:SHUTDOWN", "status", "cmd:quit"),
                  suffix=QMP_SUFFIX)
    assert r.status == 0, r
    assert "GUEST-POWER-BUTTON" in r.output, r
    steps = qmp_steps(r.host_output)
    st = steps["status"]["reply"]
    assert st["running"] is False and st["status"] == "shutdown", st
    assert steps["cmd:quit"]["reply"].get("return") == {}, steps


def test_system_reset_reboots_guest():
    r = run_guest(BASE + ["-no-reboot"], run=ACPID + "sleep 200",
                  prefix=qmp_prefix(f"wait-file:{READY}:GUEST-READY:1", "cmd:system_reset",
                                    "event:RESET", f"wait-file:{READY}:GUEST-READY:2",
                                    "cmd:system_powerdown", "event:SHUTDOWN", timeout=400),
                  suffix=QMP_SUFFIX, timeout=400)
    assert r.status == 0, r
    assert r.output.count(INIT_MARKER) == 2, r
    assert "GUEST-POWER-BUTTON" in r.output, r
    steps = qmp_steps(r.host_output)
    assert steps["event:RESET"]["event"]["data"]["guest"] is False, steps
    assert re.search(r"reason.: .host-qmp-system-reset", json.dumps(steps)), steps


# -machine acpi=off: the generic kernel (the cloud one is built without X86_MPPARSE) finds its
# CPUs, the IOAPIC and the PCI INTx routing in the MP table; pci=nomsi makes virtio-blk use INTx.
def test_acpi_off_mp_table_cpus_and_virtio_blk():
    from test_virtio import GUEST_IO, IMG, MAKE_IMG, TAIL_MD5, field
    r = run_guest(["-M", "pc,acpi=off", "-smp", "2", "-nographic", "-no-reboot", "-m", "512M",
                   "-nodefaults", "-serial", "stdio",
                   "-drive", f"file={IMG},if=virtio,format=raw"],
                  kernel="generic", append="pci=nomsi",
                  run="echo CPUS=$(grep -c ^processor /proc/cpuinfo); "
                      "echo ACPI-TABLES=$(ls /sys/firmware/acpi/tables 2>/dev/null | wc -l); "
                      "grep -E 'IO-APIC.*virtio' /proc/interrupts; " + GUEST_IO,
                  prefix=MAKE_IMG, suffix=TAIL_MD5)
    assert r.status == 0, r
    assert field(r.output, "CPUS") == "2", r
    assert field(r.output, "ACPI-TABLES") == "0", r
    assert re.search(r"IO-APIC\s+1[6-9]-fasteoi\s+virtio", r.output), r
    assert field(r.output, "GUEST-HEAD") == field(r.host_output, "HOST-HEAD"), r
    assert field(r.output, "GUEST-TAIL") == field(r.host_output, "HOST-TAIL"), r


# ACPI on: Linux routes PCI INTx through the DSDT's _PRT; pci=nomsi makes virtio-blk use its
# INTx pin, which must land on one of the IO-APIC pins 16-19 the _PRT names (level-triggered),
# and the disk must work through it.
def test_acpi_prt_routes_virtio_intx_to_ioapic_16_19():
    from test_virtio import GUEST_IO, IMG, MAKE_IMG, TAIL_MD5, field
    r = run_guest(["-M", "pc", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults",
                   "-serial", "stdio", "-drive", f"file={IMG},if=virtio,format=raw"],
                  append="pci=nomsi",
                  run="echo ACPI-TABLES=$(ls /sys/firmware/acpi/tables 2>/dev/null | wc -l); "
                      "dmesg | grep -i 'PCI Interrupt Link\\|_PRT\\|ACPI: PCI Root' | head -3; "
                      + GUEST_IO + "; grep -E 'virtio' /proc/interrupts",
                  prefix=MAKE_IMG, suffix=TAIL_MD5)
    assert r.status == 0, r
    assert field(r.output, "ACPI-TABLES") != "0", r
    assert re.search(r"IO-APIC\s+1[6-9]-fasteoi\s+virtio", r.output), r
    assert not re.search(r"PCI-MSI", r.output), r
    assert field(r.output, "GUEST-HEAD") == field(r.host_output, "HOST-HEAD"), r
    assert field(r.output, "GUEST-TAIL") == field(r.host_output, "HOST-TAIL"), r


# microvm: virtio-mmio devices found through the DSDT (LNRO0005), a disk and a NIC.
def test_microvm_virtio_mmio_blk_and_net():
    from test_virtio import DHCP_SCRIPT, GUEST_IO, IMG, MAKE_IMG, TAIL_MD5, field
    r = run_guest(["-M", "microvm", "-nographic", "-no-reboot", "-m", "512M", "-nodefaults",
                   "-serial", "stdio",
                   "-drive", f"file={IMG},if=none,id=d0,format=raw",
                   "-device", "virtio-blk-device,drive=d0",
                   "-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"],
                  run="ls /sys/bus/platform/drivers/virtio-mmio; " + GUEST_IO + "; " +
                      DHCP_SCRIPT,
                  prefix=MAKE_IMG, suffix=TAIL_MD5)
    assert r.status == 0, r
    assert "LNRO0005:00" in r.output, r
    assert field(r.output, "GUEST-HEAD") == field(r.host_output, "HOST-HEAD"), r
    assert field(r.output, "GUEST-TAIL") == field(r.host_output, "HOST-TAIL"), r
    assert "lease of 10.0.2.15 obtained" in r.output, r
