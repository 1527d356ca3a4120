"""The simulator's control interface: a TCP line protocol with one JSON answer per line.

Tests and the demo use it to place stones and inject faults into a simulator
running in another process, exactly as they would by hand with ``nc``.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from typing import Any

# control word -> (simulator method, argument types); "fault" and "status" are special
_CONTROL = {
    "place": ("place", (int,)),
    "remove": ("remove", ()),
    "noise": ("set_noise", (int,)),
    "drift": ("set_drift", (float,)),
    "unit": ("set_unit", (str,)),
    "unplug": ("unplug", ()),
    "replug": ("replug", ()),
    "clear": ("clear_faults", ()),
}

_HELP = ("place UG, remove, noise UG, drift UG_PER_S, unit g|ct|oz..., fault garbage|partial, "
         "fault timeout S, unplug, replug, clear, status")


def run_command(sim: Any, line: str) -> dict:
    """Run one control command on a simulator.

    A simulator may add its own words in ``CONTROL_EXTRA`` (same shape as
    ``_CONTROL``), e.g. the spectrometer's ``stone ID KIND``.
    """
    name, *args = line.split() or [""]
    table = {**_CONTROL, **getattr(sim, "CONTROL_EXTRA", {})}
    try:
        if name == "status" and not args:
            return {"ok": True, **sim.status()}
        if name == "fault" and len(args) == (2 if args[:1] == ["timeout"] else 1):
            sim.inject(args[0], *map(float, args[1:]))
        elif name in table and len(args) == len(table[name][1]) and hasattr(sim, table[name][0]):
            method, types = table[name]
            getattr(sim, method)(*(t(a) for t, a in zip(types, args)))
        else:
            words = _HELP + "".join(f", {w}" for w in getattr(sim, "CONTROL_EXTRA", {}))
            return {"ok": False, "error": f"cannot run {line.strip()!r}; commands: {words}"}
    except (ValueError, OSError, RuntimeError) as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True}


class ControlServer:
    def __init__(self, sim: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for raw in self.rfile:
                    reply = sim.control(raw.decode("utf-8", "replace"))  # a simulator may add words
                    self.wfile.write(json.dumps(reply).encode() + b"\n")
                    self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((host, port), Handler)
        threading.Thread(target=self._server.serve_forever, name="sim-control", daemon=True).start()
        addr = self._server.server_address
        self.address: tuple[str, int] = (addr[0], addr[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class SimControl:
    """Client for the control interface: one JSON answer per command line."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rwb")

    def send(self, line: str) -> dict:
        self._file.write(line.strip().encode() + b"\n")
        self._file.flush()
        answer = self._file.readline()
        if not answer:
            raise ConnectionError("simulator control connection closed")
        return json.loads(answer)

    def place(self, ug: int) -> dict:
        return self.send(f"place {ug}")

    def remove(self) -> dict:
        return self.send("remove")

    def noise(self, ug: int) -> dict:
        return self.send(f"noise {ug}")

    def drift(self, ug_per_s: float) -> dict:
        return self.send(f"drift {ug_per_s}")

    def unit(self, unit: str) -> dict:
        return self.send(f"unit {unit}")

    def unplug(self) -> dict:
        return self.send("unplug")

    def replug(self) -> dict:
        return self.send("replug")

    def clear(self) -> dict:
        return self.send("clear")

    def status(self) -> dict:
        return self.send("status")

    def fault(self, kind: str, seconds: float | None = None) -> dict:
        return self.send(f"fault {kind}" + ("" if seconds is None else f" {seconds}"))

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> SimControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
