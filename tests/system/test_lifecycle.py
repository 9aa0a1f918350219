"""QMP stop/cont against a real Debian guest: the guest visibly stops making progress while
paused, runs again after cont, and its clock does not jump by the time it spent paused.

The guest writes "TICK n uptime" to its second serial port every 0.1 s (a file where kemu runs).
This file is also the QMP driver: run as a script beside kemu (started in the background before
it, like qmp_script.py), it watches that file, stops and resumes the VM, and prints one
'LIFE <json>' line with what it saw, which the test reads back.
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOCK = "/tmp/kemu-life-qmp.sock"
TICKS = "/tmp/kemu-life-ticks.log"
OUT = "/tmp/kemu-life-driver.out"
PAUSE = 2.5  # seconds the VM stays stopped

# busybox sh; /proc/uptime is the guest's boot-time clock (CLOCK_MONOTONIC plus suspend time,
# and a VM never suspends here).
# The last field is the CMOS RTC's time (the rtc_cmos driver reads the chip on each read).
GUEST_LOOP = ("echo CLOCKSOURCE=$(cat /sys/devices/system/clocksource/clocksource0/"
              "current_clocksource); i=0; while :; do "
              "echo \"TICK $i $(cut -d' ' -f1 /proc/uptime) "
              "$(cat /sys/class/rtc/rtc0/since_epoch)\" > /dev/ttyS1; "
              "i=$((i+1)); sleep 0.1; done")


def read_ticks():
    """[(n, guest uptime, guest RTC seconds)] of the complete lines in TICKS."""
    try:
        with open(TICKS, "rb") as f:
            data = f.read().decode(errors="replace").replace("\r", "")
    except OSError:
        return []
    ticks = []
    for line in data.split("\n")[:-1]:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "TICK":
            try:
                ticks.append((int(parts[1]), float(parts[2]), int(parts[3])))
            except ValueError:
                pass
    return ticks


def wait_ticks(n, timeout, arrivals, walls=None):
    """Poll TICKS until it has n lines; arrivals[i] gets the host's monotonic time line i was
    first seen (walls[i] its wall-clock time). Returns the ticks, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        ticks = read_ticks()
        now = time.monotonic()
        while len(arrivals) < len(ticks):
            arrivals.append(now)
            if walls is not None:
                walls.append(time.time())
        if len(ticks) >= n:
            return ticks
        if now > deadline:
            return None
        time.sleep(0.02)


def drive(timeout, pause=PAUSE):
    sys.path.insert(0, HERE)
    from qmp import QMP
    res = {}
    arrivals, walls = [], []
    q = QMP(SOCK, timeout=timeout)
    q.negotiate()
    if wait_ticks(20, timeout, arrivals, walls) is None:
        res["error"] = "the guest never ticked 20 times"
        return res
    q.cmd("stop")
    q.wait_event("STOP")
    t_stop = time.monotonic()
    wait_ticks(0, 0, arrivals, walls)  # the lines written before stop arrived by now
    res["status_paused"] = q.cmd("query-status")["status"]
    # A line the vCPU wrote just before it stopped is in the file at once; give it 0.5 s.
    time.sleep(0.5)
    before = wait_ticks(0, 0, arrivals, walls)
    time.sleep(pause - 0.5)
    during = wait_ticks(0, 0, arrivals, walls)
    q.cmd("cont")
    q.wait_event("RESUME")
    t_cont = time.monotonic()
    res["status_running"] = q.cmd("query-status")["status"]
    after = wait_ticks(len(during) + 20, 60, arrivals, walls)
    res.update(paused_for=t_cont - t_stop, lines_at_stop=len(before),
               lines_before_cont=len(during), lines_after=len(after) if after else None)
    if after:
        i = len(during) - 1  # the last tick complete before cont
        res.update(
            # From that tick to the last one: the guest's clock, and the host's time between
            # their arrivals (which includes the pause).
            guest_span=after[-1][1] - after[i][1],
            host_span=arrivals[len(after) - 1] - arrivals[i],
            # The first tick after cont: the host saw the pause before it.
            host_gap=arrivals[i + 1] - arrivals[i],
            numbers_ok=[t[0] for t in after] == list(range(len(after))),
            # How far the guest's RTC is behind the host's wall clock, on average over the
            # ticks before the stop and over those after cont (whole seconds blur each one).
            rtc_lag_before=sum(walls[k] - after[k][2] for k in range(i + 1)) / (i + 1),
            rtc_lag_after=sum(walls[k] - after[k][2] for k in range(i + 1, len(after))) /
            (len(after) - i - 1))
    q.cmd("quit")
    return res


def qmp_prefix(timeout, pause=PAUSE):
    return (f"rm -f {SOCK} {TICKS} {OUT}; (python3 {os.path.abspath(__file__)} --drive "
            f"{timeout} {pause} > {OUT} 2>&1) & ")


def run_life(extra=(), pause=PAUSE):
    from conftest import run_guest
    r = run_guest(["-M", "pc", "-nographic", "-m", "512M", "-nodefaults", "-no-reboot",
                   "-serial", "stdio", "-serial", f"file:{TICKS}",
                   "-qmp", f"unix:{SOCK},server=on,wait=off", *extra],
                  run=GUEST_LOOP, prefix=qmp_prefix(240, pause), suffix=f"sleep 1; cat {OUT}")
    lines = [ln for ln in r.host_output.splitlines() if ln.startswith("LIFE ")]
    assert lines, r.host_output[-3000:]
    life = json.loads(lines[-1][5:])
    print("LIFE", life)
    assert "error" not in life, life
    assert r.status == 0, r
    return life


def test_stop_cont_pauses_guest_and_its_clock():
    life = run_life()
    assert life["status_paused"] == "paused" and life["status_running"] == "running", life
    # Nothing arrives while paused (0.5 s after stop to cont)...
    assert life["lines_before_cont"] == life["lines_at_stop"], life
    assert life["paused_for"] >= PAUSE, life
    # ...and it runs on after cont, ticks in order.
    assert life["lines_after"] >= life["lines_before_cont"] + 20, life
    assert life["numbers_ok"], life
    assert life["host_gap"] >= PAUSE - 0.5, life
    # The guest's clock counted the time it ran, not the time it was paused: the host's span
    # less the pause, within what the tick lines' delivery blurs. A clock that jumped by the
    # pause would be PAUSE s ahead.
    ran = life["host_span"] - life["paused_for"]
    assert ran > 1.0, life
    assert abs(life["guest_span"] - ran) < 0.8, life


def test_rtc_clock_vm_stops_with_the_vm():
    """-rtc clock=vm: the CMOS RTC stands still while the VM is stopped, so after cont it is
    the pause behind the host's wall clock; with the default clock=host it is not."""
    pause = 4.0
    vm = run_life(["-rtc", "base=utc,clock=vm"], pause)
    assert vm["rtc_lag_after"] - vm["rtc_lag_before"] > pause - 1.0, vm
    host = run_life(["-rtc", "base=utc,clock=host"], pause)
    assert abs(host["rtc_lag_after"] - host["rtc_lag_before"]) < 1.0, host


if __name__ == "__main__" and sys.argv[1:2] == ["--drive"]:
    try:
        out = drive(float(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else PAUSE)
    except Exception as e:  # reported to the test, which fails on it
        out = {"error": f"{type(e).__name__}: {e}"}
    print("LIFE " + json.dumps(out), flush=True)
