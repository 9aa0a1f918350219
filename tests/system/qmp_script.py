#!/usr/bin/env python3
"""Drive a running kemu over QMP from where it runs (inside the test host, beside guestrun.py),
step by step, and print what happened, one 'QMPS <json>' line per step.

  qmp_script.py SOCKET STEP...

Steps:
  wait-file:PATH:TEXT:N   wait until PATH holds TEXT at least N times (a guest serial port
                          written to a file tells the driver the guest got somewhere)
  cmd:NAME[:JSON]         run a command (JSON: its arguments); prints its return value or error
  hmp:COMMAND LINE        human-monitor-command; prints its output (the reply)
  event:NAME              wait for an event; prints it
  status                  query-status
  rss:PIDFILE:LABEL       the resident memory (VmRSS, KiB) of the process PIDFILE names
  sleep:SECONDS           wait that long
Every wait gives up after --timeout seconds; a failed step prints QMPS-FAIL and stops.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, QMPError  # noqa: E402


def report(step, **kw):
    print("QMPS " + json.dumps(dict(step=step, **kw)), flush=True)


def wait_file(path, text, n, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                if f.read().replace(b"\r", b"").count(text.encode()) >= n:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def rss_kib(pidfile):
    with open(pidfile) as f:
        pid = int(f.read().split()[0])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("socket")
    ap.add_argument("steps", nargs="+")
    a = ap.parse_args()
    q = QMP(a.socket, timeout=a.timeout)
    q.negotiate()
    for step in a.steps:
        kind, _, arg = step.partition(":")
        try:
            if kind == "wait-file":
                path, text, n = arg.rsplit(":", 2)
                if not wait_file(path, text, int(n), a.timeout):
                    raise TimeoutError(f"{text!r} x{n} never appeared in {path}")
                report(step)
            elif kind == "cmd":
                name, _, args = arg.partition(":")
                report(step, reply=q.cmd_raw(name, json.loads(args) if args else None))
            elif kind == "hmp":
                report(step, reply=q.cmd_raw("human-monitor-command", {"command-line": arg}))
            elif kind == "event":
                report(step, event=q.wait_event(arg, timeout=a.timeout))
            elif kind == "status":
                report(step, reply=q.cmd("query-status"))
            elif kind == "rss":
                report(step, rss_kib=rss_kib(arg.rsplit(":", 1)[0]))
            elif kind == "sleep":
                time.sleep(float(arg.split(":")[0]))
            else:
                raise ValueError(f"unknown step {step}")
        except (OSError, EOFError, TimeoutError, QMPError, ValueError) as e:
            print(f"QMPS-FAIL {step}: {e}", flush=True)
            return 1
    print("QMPS-DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
