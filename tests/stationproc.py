"""Run `station` commands as real subprocesses and watch their output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from drivers.sim.control import SimControl


def station_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "station.cli", *args]


def station(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(station_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)


class Proc:
    """A long-running child whose merged output is collected by a thread."""

    live: list["Proc"] = []  # stopped by the conftest fixture even when a test fails

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        Proc.live.append(self)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        with self._cond:
            return sum(1 for line in self.lines if re.search(pattern, line))

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for line in self.lines if re.search(pattern, line)) < n:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._cond.wait(0.2)):
                    raise AssertionError(f"{pattern!r} x{n} not seen in output:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SimProcess(Proc):
    """`station sim scale` as a subprocess, controlled over its TCP control port."""

    def __init__(self, link: Path, serial: str = "SIM0000001", protocol: str = "mtsics",
                 extra: tuple[str, ...] = (), kind: str = "scale") -> None:
        where = ("--link", str(link)) if link is not None else ()
        settle = ("--settle", "0.3") if kind == "scale" else ()
        ident = ("--serial", serial) if kind != "ambient" else ()  # cheap ambient sensors have no serial
        super().__init__(station_cmd("sim", kind, *(("--protocol", protocol) if protocol else ()), "--json",
                                     *where, *ident, *settle, *extra))
        self.wait_for(r"^\{", timeout=15)
        info = json.loads(next(line for line in self.lines if line.startswith("{")))
        self.port = info["port"]
        self.control_address = info["control"]
        host, port = info["control"].rsplit(":", 1)
        self.control = SimControl(host, int(port))


CONFIG = """\
[station]
id = "TEST-DESK-01"
state_dir = "state"
key_file = "keys/station.key"
sim_key_file = "keys/simulation.key"
{station_extra}

[session]
operator = "op-test"
lot = "LOT-T1"

{devices}

[cycle]
poll_interval_s = 0.05
settle_timeout_s = 8.0

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
"""


MTSICS = """\
[devices.scale]
kind = "scale"
driver = "mtsics"
port = "{port}"
simulate = true
serial = "SIM0000001"
reply_timeout_s = 1.0
"""


def write_config(directory: Path, port: str, mqtt_port: int, station_extra: str = "",
                 devices: str | None = None) -> Path:
    """A station config for tests; ``devices`` replaces the MT-SICS scale table."""
    path = directory / "station.toml"
    table = devices if devices is not None else MTSICS.format(port=port)
    path.write_text(CONFIG.format(devices=table, mqtt_port=mqtt_port, station_extra=station_extra))
    return path


def child_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("STATION_CONFIG", None)
    env.update(extra)
    return env
