"""What the simulator tests share: building a simulator on a by-id style pty
link, the sim + connected-driver fixtures, and running ``station sim`` in a
subprocess (the standalone ``drivers.sim`` command line)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# `station sim scale` without the station package: drivers/sim/cli.py alone.
SIM_CLI = ("import argparse, drivers.sim.cli as c; p = argparse.ArgumentParser(); "
           "c.add_arguments(p); raise SystemExit(c.run(p.parse_args()))")


def on_pty(tmp_path: Path, link_name: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` for a simulator: on TCP if it names ``tcp``, else on a pty behind
    a by-id style symlink ``tmp_path/link_name``."""
    if "tcp" not in kw:
        kw.setdefault("link_path", str(tmp_path / link_name))
    return kw


def scale_sim(cls: type, tmp_path: Path, link_name: str, **kw: Any) -> Any:
    """A balance simulator that settles fast and gives up on stability after 1 s."""
    kw.setdefault("settle_s", 0.1)
    kw.setdefault("stable_timeout_s", 1.0)
    kw.setdefault("seed", 1)
    return cls(**on_pty(tmp_path, link_name, kw))


def sim_fixtures(make_sim: Callable[..., Any], make_driver: Callable[[str], Any], connect: str = "connect"):
    """The ``sim`` fixture (a running simulator) and a driver fixture connected
    to it; assign both in the test module: ``sim, bal = sim_fixtures(...)``."""

    @pytest.fixture
    def sim(tmp_path):
        with make_sim(tmp_path) as s:
            yield s

    @pytest.fixture
    def driver(sim):
        d = make_driver(sim.port)
        getattr(d, connect)()
        yield d
        d.close()

    return sim, driver


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "simulator CLI printed nothing"
    return proc.stdout.readline()


def start_cli(*args: str, code: str = SIM_CLI) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_cli_json(*args: str, timeout: float = 10) -> tuple[subprocess.Popen, dict]:
    """Start the simulator command with ``--json``; its first line, parsed."""
    proc = start_cli(*args, "--json")
    try:
        return proc, json.loads(read_line(proc, timeout))
    except BaseException:
        stop_cli(proc, check=False)
        raise


def stop_cli(proc: subprocess.Popen, sig: int = signal.SIGTERM, *, check: bool = True) -> str:
    """Stop the command by its PID; it must exit 0 (``check``). Returns its stderr."""
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=10)
    if check:
        assert proc.returncode == 0, err
    return err
