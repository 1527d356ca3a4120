"""Shared fixtures. Every broker is private: 127.0.0.1, a free port, files in
tmp_path, stopped by its own PID. A missing mosquitto fails the tests: the
publisher is only tested against a real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from station.app.broker import Mosquitto
from station.app.postgres import Postgres
from stationproc import Proc, SimProcess


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    started: list[Mosquitto] = []

    def make(acl: str | None = None, name: str = "broker") -> Mosquitto:
        broker = Mosquitto(tmp_path / f"{name}{len(started)}", acl=acl)
        started.append(broker)
        return broker.start()

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto(make_mosquitto: Callable[..., Mosquitto]) -> Mosquitto:
    return make_mosquitto()


@pytest.fixture(autouse=True)
def _stop_children() -> Iterator[None]:
    """Every `station` subprocess a test started is stopped by its PID, pass or fail."""
    yield
    while Proc.live:
        Proc.live.pop().stop()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    """`station sim scale` as a subprocess, with a by-id style symlink in tmp_path."""
    proc = SimProcess(tmp_path / "balance")
    yield proc
    proc.control.close()
    proc.stop()


@pytest.fixture
def ambient(tmp_path: Path) -> Iterator[SimProcess]:
    """`station sim ambient` (Modbus RTU) on a pty: 21.5 °C, 45.3 %RH."""
    proc = SimProcess(tmp_path / "ambient", protocol="", kind="ambient", extra=("--temp", "21.5", "--humidity", "45.3"))
    yield proc
    proc.control.close()
    proc.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL server per test module; each test makes its own database."""
    pg = Postgres().start()
    yield pg
    pg.stop()
