#!/usr/bin/env python3
"""Connect to a unix socket, send a line, and print what comes back until a marker or timeout.

  sock_client.py PATH TEXT MARKER [TIMEOUT]
"""
import socket
import sys
import time


def main():
    path, text, marker = sys.argv[1], sys.argv[2], sys.argv[3]
    deadline = time.monotonic() + float(sys.argv[4] if len(sys.argv) > 4 else 20)
    s = None
    while time.monotonic() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            s = None
            time.sleep(0.1)
    if s is None:
        print(f"sock_client: cannot connect to {path}")
        return 1
    s.sendall(text.encode().decode("unicode_escape").encode())
    got = b""
    s.settimeout(0.5)
    while time.monotonic() < deadline and marker.encode() not in got:
        try:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        except socket.timeout:
            pass
    print(got.decode(errors="replace"))
    return 0 if marker.encode() in got else 1


if __name__ == "__main__":
    sys.exit(main())
