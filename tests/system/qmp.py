"""A small QMP client for the tests, after the QMP specification: greeting, qmp_capabilities,
commands with ids, events kept aside until asked for."""
import json
import socket
import time


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.events = []
        self.next_id = 0
        self.greeting = self._read()

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def read_reply(self):
        """The next message that is not an event."""
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    def cmd_raw(self, execute, arguments=None, id_=None):
        req = {"execute": execute}
        if arguments is not None:
            req["arguments"] = arguments
        if id_ is None:
            self.next_id += 1
            id_ = f"t{self.next_id}"
        req["id"] = id_
        self.send_raw(json.dumps(req).encode() + b"\n")
        reply = self.read_reply()
        assert reply.get("id") == id_, reply
        return reply

    def cmd(self, execute, arguments=None):
        reply = self.cmd_raw(execute, arguments)
        if "error" in reply:
            raise QMPError(reply["error"])
        return reply["return"]

    def negotiate(self):
        return self.cmd("qmp_capabilities")

    def wait_event(self, name, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event; got {self.events}")
            self.sock.settimeout(left)
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)

    def close(self):
        self.sock.close()
