"""Boot the Debian cloud kernel and check what the guest itself reports."""
import re

import pytest

from conftest import run_guest

COMMON = ["-M", "pc", "-nographic", "-no-reboot"]


def meminfo_kib(out, key):
    m = re.search(rf"^{key}:\s+(\d+) kB", out, re.M)
    assert m, f"{key} not in guest output"
    return int(m.group(1))


def test_smp4_online_cpus():
    r = run_guest(COMMON + ["-m", "512M", "-smp", "4"],
                  run="echo ONLINE=$(cat /sys/devices/system/cpu/online); "
                      "echo NPROC=$(grep -c ^processor /proc/cpuinfo)")
    assert r.status == 0, r
    assert "ONLINE=0-3" in r.output, r
    assert "NPROC=4" in r.output, r
    assert "KEMU-RUN-EXIT=0" in r.output, r


def test_topology_sockets_cores():
    r = run_guest(COMMON + ["-m", "512M", "-smp", "4,sockets=2,cores=2,threads=1"],
                  run="grep -E '^(processor|physical id|core id|siblings|cpu cores)' /proc/cpuinfo")
    assert r.status == 0, r
    cpus = []
    for line in r.output.splitlines():
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k == "processor":
            cpus.append({})
        elif cpus and k in ("physical id", "core id", "siblings", "cpu cores"):
            cpus[-1][k] = v
    assert len(cpus) == 4, r
    assert sorted((c["physical id"], c["core id"]) for c in cpus) == [
        ("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")], cpus
    assert all(c["siblings"] == "2" and c["cpu cores"] == "2" for c in cpus), cpus


def test_memory_1g():
    r = run_guest(COMMON + ["-m", "1G"], run="cat /proc/meminfo")
    assert r.status == 0, r
    total = meminfo_kib(r.output, "MemTotal") // 1024
    assert 900 <= total <= 1024, f"MemTotal {total} MiB"


def test_command_on_stdin():
    # No kemu.run: init starts an interactive shell on ttyS0 and we type into kemu's stdin.
    r = run_guest(COMMON + ["-m", "256M"],
                  guestrun_opts=["--input-after", "kemu guest shell",
                                 "echo typed-$((6*7))\\nreboot -f\\n"])
    assert "typed-42" in r.output, r
    assert r.status == 0, r


def test_reboot_with_no_reboot_exits_zero():
    r = run_guest(COMMON + ["-m", "256M"], run="true")
    assert r.status == 0 and not r.killed and not r.timed_out, r
    assert r.output.count("KEMU-GUEST-INIT") == 1, r


def test_reboot_without_no_reboot_boots_again():
    r = run_guest(["-M", "pc", "-nographic", "-m", "256M"], run="true",
                  guestrun_opts=["--kill-after-count", "KEMU-GUEST-INIT", "2"], timeout=400)
    assert r.killed, r
    assert r.output.count("KEMU-RUN-EXIT=0") >= 1, r


def test_serial_file_captures_console(tmp_path):
    log = tmp_path / "console.log"
    # tmp_path may not be visible where guests run; use /tmp, which is writable in both.
    r = run_guest(["-M", "pc", "-display", "none", "-no-reboot", "-m", "256M",
                   "-serial", "file:/tmp/kemu-serial-test.log"],
                  run="echo via-serial-file",
                  prefix="rm -f /tmp/kemu-serial-test.log; ")
    assert r.status == 0, r
    from conftest import testhost  # noqa
    st, out = testhost.run_on_kvm("cat /tmp/kemu-serial-test.log", timeout=60)
    assert st == 0 and "via-serial-file" in out and "KEMU-RUN-EXIT=0" in out, out
    del log


def test_generic_kernel_boots():
    r = run_guest(COMMON + ["-m", "512M", "-smp", "2"], kernel="generic",
                  run="uname -r; grep -c ^processor /proc/cpuinfo")
    assert r.status == 0, r
    assert "KEMU-RUN-EXIT=0" in r.output, r
    assert re.search(r"^\d+\.\d+\.\d+-\d+-amd64$", r.output, re.M), r


@pytest.mark.parametrize("machine", ["pc", "microvm", "pc,kernel-irqchip=on"])
def test_pit_is_the_tick(machine):
    """The PIT is kemu's (hw/pit.c), or KVM's with kernel-irqchip=on. A guest under KVM
    normally ticks with the LAPIC's TSC deadline timer and never starts the PIT; without that
    timer Linux drives its ticks from the 8254 on IRQ 0 (through IOAPIC pin 2), and
    /proc/interrupts counts them."""
    irq0 = "grep -E '^ *0:' /proc/interrupts"
    r = run_guest(["-M", machine, "-nographic", "-no-reboot", "-m", "256M"],
                  append="lapic=notscdeadline noapictimer",
                  run=f"{irq0}; sleep 1; {irq0}; dmesg | grep -iE 'MP-BIOS bug|timer doesn' || true")
    assert r.status == 0, r
    counts = [sum(int(n) for n in m.group(1).split())
              for m in re.finditer(r"^\s*0:((?:\s+\d+)+)\s+(.*)$", r.output, re.M)]
    assert len(counts) == 2, f"no IRQ 0 line in /proc/interrupts\n{r.output}"
    assert re.search(r"^\s*0:.*\btimer\b", r.output, re.M), r
    assert 0 < counts[0] < counts[1], r
    assert not re.search(r"MP-BIOS bug|timer doesn't work", r.output), r


def test_microvm_boots():
    r = run_guest(["-M", "microvm", "-nographic", "-no-reboot", "-m", "256M"],
                  run="echo microvm-ok")
    assert r.status == 0, r
    assert "microvm-ok" in r.output, r


def test_guest_poweroff_exits_zero():
    # ACPI S5 through the PM block the FADT describes.
    r = run_guest(["-M", "pc", "-nographic", "-m", "256M"],
                  run="echo powering-off; poweroff -f")
    assert r.status == 0 and not r.killed and not r.timed_out, r
    assert "powering-off" in r.output, r


def test_no_shutdown_keeps_kemu_after_poweroff():
    r = run_guest(["-M", "pc", "-nographic", "-m", "256M", "-no-shutdown"],
                  run="poweroff -f",
                  guestrun_opts=["--kill-after-count", "guest powered off", "1"])
    assert r.killed, r
    assert "-no-shutdown keeps kemu running" in r.output, r
