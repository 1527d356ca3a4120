"""`station demo`: the whole flow on simulated devices, end to end.

Starts a private mosquitto, the MT-SICS simulator, a simulated spectrometer
(RS-232 command set, physics model), a consumer (`station verify --subscribe`)
and the station (`station run`), each a real process or a real transport;
calibrates the spectrometer; places stones of different kinds (one of them
twice); prints the consumer's verified table and, for each stone, its weight,
screening verdict and fingerprint match against the earlier records; stops
all it started.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from drivers.sim.mtsics import MtSicsSimulator
from drivers.sim.spectrometer import SerialSpectrometerSimulator
from station.app import console
from station.app.broker import Mosquitto
from station.records.carat import format_carats, format_raw_carats
from station.errors import StationError

# Varied masses, including the two that trade rounding lifts over the ban thresholds.
DEMO_MASSES_UG = [99_800, 199_800, 251_400, 60_600, 412_000, 149_600, 300_200, 99_400]
# What goes on the probe, in order: (stone id, simulator kind). The fourth is the
# first stone again: its fingerprint must match its first record.
DEMO_STONES = [("DEMO-N1", "natural"), ("DEMO-C1", "cvd"), ("DEMO-H1", "hpht"), ("DEMO-N1", "natural"),
               ("DEMO-N2", "natural"), ("DEMO-I1", "type-iia")]
SPECTRO_SPEED = 50.0  # integration waits 50x faster than real time: a stone's spectra in about a second

CONFIG_TEMPLATE = """\
# Written by `station demo`. Inspect with e.g.:
#   station records export --config {dir}/station.toml {dir}/export
#   station verify --config {dir}/station.toml {dir}/export
[station]
id = "DEMO-DESK-01"
state_dir = "state"
key_file = "keys/station.key"
sim_key_file = "keys/simulation.key"

[session]
operator = "demo-operator"
lot = "DEMO-LOT-001"

[devices.scale]
kind = "scale"
driver = "mtsics"
port = "{port}"
simulate = true

[devices.spectrometer]
kind = "spectrometer"
driver = "spectro-serial"
port = "{spectro_port}"
simulate = true

[cycle]
poll_interval_s = 0.05
settle_timeout_s = 10.0

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
"""


def _plan(n: int) -> list[tuple[str, str, int]]:
    """(stone id, kind, mass µg) for each placement; a stone placed again keeps its mass."""
    plan, masses = [], {}
    for i in range(n):
        sid, kind = DEMO_STONES[i] if i < len(DEMO_STONES) else (f"DEMO-X{i + 1}", "natural")
        if sid not in masses:
            k = len(masses)
            masses[sid] = DEMO_MASSES_UG[k % len(DEMO_MASSES_UG)] + 2_000 * (k // len(DEMO_MASSES_UG))
        plan.append((sid, kind, masses[sid]))
    return plan


class _Follower(threading.Thread):
    """Echo a child's output with a prefix and signal on lines we wait for."""

    def __init__(self, proc: subprocess.Popen, prefix: str, watch: dict[str, threading.Semaphore]) -> None:
        super().__init__(daemon=True)
        self.proc, self.prefix, self.watch, self.lines = proc, prefix, watch, []

    def run(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.prefix:
                console.out.print(f"[dim]{self.prefix} │[/] {console._escape(line.rstrip())}")
            for needle, sem in self.watch.items():
                if needle in line:
                    sem.release()


def _station_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "station.cli", *args]


def run(stones: int = 5, keep: Path | None = None, timeout: float = 30.0) -> int:
    if stones < 1:
        raise StationError("--stones must be at least 1", "pass e.g. --stones 5")
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="station-demo-"))
    if keep and workdir.exists() and any(workdir.iterdir()):
        raise StationError(f"{workdir} is not empty", "give --keep a new or empty directory")
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    console.say("info", f"Demo in {workdir}: {stones} simulated stone(s).")
    try:
        with Mosquitto(workdir=workdir / "broker") as broker, \
                MtSicsSimulator(link_path=str(workdir / "balance")) as sim, \
                SerialSpectrometerSimulator(link_path=str(workdir / "spectrometer"), serial="SPX-DEMO-01",
                                            speed=SPECTRO_SPEED) as spectro:
            host, port = spectro.start_control()
            console.say("info", f"Private mosquitto on 127.0.0.1:{broker.port} (pid {broker.pid}); "
                        f"MT-SICS simulator on {sim.port}; spectrometer simulator on {spectro.port}.")
            cfg_path = workdir / "station.toml"
            cfg_path.write_text(CONFIG_TEMPLATE.format(dir=workdir, port=sim.port, mqtt_port=broker.port,
                                                       spectro_port=spectro.port))
            _check(subprocess.run(_station_cmd("keys", "init", "--config", str(cfg_path)),
                                  capture_output=True, text=True), "keys init")
            jwk = subprocess.run(_station_cmd("keys", "public", "--jwk", "--config", str(cfg_path)),
                                 capture_output=True, text=True)
            _check(jwk, "keys public")
            (workdir / "simulation.jwk").write_text(jwk.stdout)
            cal = subprocess.run(_station_cmd("spectrometer", "calibrate", "--config", str(cfg_path),
                                              "--sim-control", f"{host}:{port}"), capture_output=True, text=True)
            _check(cal, "spectrometer calibrate")
            console.out.print(cal.stdout.strip().splitlines()[-1], markup=False, highlight=False)

            listening = threading.Semaphore(0)
            consumer = subprocess.Popen(
                _station_cmd("verify", "--subscribe", "--table", "--key", str(workdir / "simulation.jwk"),
                             "--host", "127.0.0.1", "--port", str(broker.port),
                             "--count", str(stones), "--timeout", str(timeout + 10 * stones)),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(consumer)
            cons_out = _Follower(consumer, "", {"Listening": listening})
            cons_out.start()
            if not listening.acquire(timeout=timeout):
                raise StationError("the consumer did not start", "see its output above")

            ready, recorded, empty = threading.Semaphore(0), threading.Semaphore(0), threading.Semaphore(0)
            station = subprocess.Popen(
                _station_cmd("run", "--config", str(cfg_path), "--max-stones", str(stones)),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(station)
            _Follower(station, "station", {"Ready.": ready, "Recorded #": recorded, "Pan empty": empty}).start()
            if not ready.acquire(timeout=timeout):
                raise StationError("the station did not find the simulated balance", "see its output above")

            plan = _plan(stones)
            for i, (sid, kind, mass) in enumerate(plan, 1):
                again = " (again)" if any(p[0] == sid for p in plan[:i - 1]) else ""
                console.say("info", f"[demo] placing stone {i}/{stones}: {sid}{again}, {kind}, {mass} µg "
                            f"= {format_raw_carats(mass)} ct raw → {format_carats(mass)} ct trade")
                spectro.set_stone(sid, kind)
                sim.place(mass)
                if not recorded.acquire(timeout=timeout):
                    raise StationError(f"stone {i} was not recorded within {timeout:g} s", "see the station output")
                sim.remove()
                if i < stones and not empty.acquire(timeout=timeout):
                    raise StationError("the station did not see the pan empty", "see the station output")

            station_rc = station.wait(timeout=timeout + 30)
            consumer_rc = consumer.wait(timeout=timeout + 10 * stones)
            cons_out.join(timeout=5)
            console.out.print("".join(cons_out.lines), end="", markup=False, highlight=False)
            if station_rc != 0 or consumer_rc != 0:
                raise StationError(f"demo failed (station exit {station_rc}, consumer exit {consumer_rc})",
                                   "see the output above")
            _summary(cfg_path, workdir / "export", [f"{sid}, {kind}" for sid, kind, _ in plan])
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if keep:
        console.say("info", f"Kept everything in {workdir}. Try: station records export --config "
                    f"{workdir}/station.toml {workdir}/export && station verify --config {workdir}/station.toml "
                    f"{workdir}/export")
    console.say("ok", f"Demo complete: {stones} stone(s) weighed, screened, signed, stored, published and verified.")
    return 0


def _summary(cfg_path: Path, export: Path, placed: list[str]) -> None:
    from station.app.demo_summary import summarise

    _check(subprocess.run(_station_cmd("records", "export", "--config", str(cfg_path), str(export)),
                          capture_output=True, text=True), "records export")
    table, _ = summarise(export, placed)
    console.print_table(table)


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise StationError(f"`station {what}` failed: {proc.stderr.strip() or proc.stdout.strip()}", "see above")
