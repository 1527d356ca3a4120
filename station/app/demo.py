"""`station demo`: the whole flow on simulated devices, end to end, over mutual TLS.

Makes a throw-away PKI (station.app.demo_pki), starts a private mosquitto with
the shipped TLS config and ACL, the MT-SICS simulator, a simulated spectrometer
(RS-232 command set, physics model), the reference central consumer
(`station consume`, SQLite) and the station (`station run`), each a real
process or a real transport. The station gets its certificate the way an
operator does (`station certs request`, the CA signs the CSR). The demo
calibrates the spectrometer, places stones of different kinds (one of them
twice), and ends only once the central consumer has acked every record in the
station's outbox; then it prints, for each stone, its weight, screening
verdict, fingerprint match and the central system's ack. Everything it started
is stopped by PID; the work directory stays for a look with the ordinary commands.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography import x509

from drivers.sim.mtsics import MtSicsSimulator
from drivers.sim.spectrometer import SerialSpectrometerSimulator
from station.app import console
from station.app.broker import BrokerTls, Mosquitto
from station.app.demo_pki import DEMO_CONSUMER_CN, make_demo_pki
from station.errors import StationError
from station.records.carat import format_carats, format_raw_carats

STATION_ID = "DEMO-DESK-01"
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
id = "{station_id}"
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
# Mutual TLS with the demo's throw-away CA (pki/); the station's key and CSR come
# from `station certs request`, the certificate's CN is station.id.
ca_file = "{ca_file}"
cert_file = "tls/station.crt"
key_file = "tls/station.key"
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
            console.out.print(f"[dim]{self.prefix} │[/] {console._escape(line.rstrip())}")
            for needle, sem in self.watch.items():
                if needle in line:
                    sem.release()


def _station_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "station.cli", *args]


def _await(sem: threading.Semaphore, proc: subprocess.Popen, timeout: float, what: str, fix: str) -> None:
    """Wait for a line from ``proc``; a child that exits instead fails at once, not after the timeout."""
    deadline = time.monotonic() + timeout
    while not sem.acquire(timeout=0.1):
        if proc.poll() is not None:
            raise StationError(f"{what}: it exited with code {proc.returncode}", fix)
        if time.monotonic() >= deadline:
            raise StationError(f"{what} within {timeout:g} s", fix)


def _stop(proc: subprocess.Popen, name: str, timeout: float = 15.0) -> int:
    """SIGTERM (both finish their batch and report), SIGKILL only if it hangs."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise StationError(f"the {name} did not stop within {timeout:g} s of SIGTERM", "see its output above") from None


def _run_ok(what: str, *args: str) -> str:
    proc = subprocess.run(_station_cmd(*args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise StationError(f"`station {what}` failed: {proc.stderr.strip() or proc.stdout.strip()}", "see above")
    return proc.stdout


def run(stones: int = 5, keep: Path | None = None, timeout: float = 30.0) -> int:
    if stones < 1:
        raise StationError("--stones must be at least 1", "pass e.g. --stones 5")
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="station-demo-"))
    if keep and workdir.exists() and any(workdir.iterdir()):
        raise StationError(f"{workdir} is not empty", "give --keep a new or empty directory")
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    console.say("info", f"Demo in {workdir}: {stones} simulated stone(s), delivered over mutual TLS and acked.")
    pki = make_demo_pki(workdir / "pki")
    try:
        with Mosquitto(workdir / "broker", tls=BrokerTls(pki.ca.cert_file, pki.server.cert_file,
                                                         pki.server.key_file)) as broker, \
                MtSicsSimulator(link_path=str(workdir / "balance")) as sim, \
                SerialSpectrometerSimulator(link_path=str(workdir / "spectrometer"), serial="SPX-DEMO-01",
                                            speed=SPECTRO_SPEED) as spectro:
            host, port = spectro.start_control()
            console.say("info", f"Private mosquitto on 127.0.0.1:{broker.port} (pid {broker.pid}) with the shipped "
                        "config: mutual TLS (require_certificate, identity = certificate CN) and the shipped ACL.")
            console.say("info", f"MT-SICS simulator on {sim.port}; spectrometer simulator on {spectro.port}.")
            cfg_path = workdir / "station.toml"
            cfg_path.write_text(CONFIG_TEMPLATE.format(dir=workdir, station_id=STATION_ID, port=sim.port,
                                                       mqtt_port=broker.port, spectro_port=spectro.port,
                                                       ca_file=pki.ca.cert_file))
            _run_ok("keys init", "keys", "init", "--config", str(cfg_path))
            _station_certificate(cfg_path, workdir, pki)
            console.say("info", f"Throw-away CA in {pki.ca.dir}: it signed the broker's certificate (127.0.0.1, "
                        f"localhost), the consumer's (CN {DEMO_CONSUMER_CN}) and, from `station certs request`, "
                        f"the station's (CN {STATION_ID}).")
            trust = workdir / "central" / "trust.toml"
            trust.parent.mkdir()
            trust.write_text(_run_ok("keys public", "keys", "public", "--trust-entry", "--config", str(cfg_path)))
            console.say("info", f"Central trust store {trust}: {STATION_ID}'s simulation key, from "
                        "`station keys public --trust-entry` (the demo's records are simulated).")
            cal = _run_ok("spectrometer calibrate", "spectrometer", "calibrate", "--config", str(cfg_path),
                          "--sim-control", f"{host}:{port}")
            console.out.print(cal.strip().splitlines()[-1], markup=False, highlight=False)

            consuming = threading.Semaphore(0)
            db = trust.parent / "consumer.sqlite"
            consumer = subprocess.Popen(
                _station_cmd("consume", "--host", "127.0.0.1", "--port", str(broker.port), "--trust", str(trust),
                             "--db", str(db), "--client-id", "demo-central-1",
                             "--tls-ca", str(pki.ca.cert_file), "--tls-cert", str(pki.consumer.cert_file),
                             "--tls-key", str(pki.consumer.key_file)),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(consumer)
            _Follower(consumer, "central", {"consuming ": consuming}).start()
            _await(consuming, consumer, timeout, "the consumer did not subscribe", "see its output above")

            ready, recorded, empty = threading.Semaphore(0), threading.Semaphore(0), threading.Semaphore(0)
            station = subprocess.Popen(_station_cmd("run", "--config", str(cfg_path)),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(station)
            _Follower(station, "station", {"Ready.": ready, "Recorded #": recorded, "Pan empty": empty}).start()
            _await(ready, station, timeout, "the station did not find the simulated balance", "see its output above")

            plan = _plan(stones)
            for i, (sid, kind, mass) in enumerate(plan, 1):
                again = " (again)" if any(p[0] == sid for p in plan[:i - 1]) else ""
                console.say("info", f"[demo] placing stone {i}/{stones}: {sid}{again}, {kind}, {mass} µg "
                            f"= {format_raw_carats(mass)} ct raw → {format_carats(mass)} ct trade")
                spectro.set_stone(sid, kind)
                sim.place(mass)
                _await(recorded, station, timeout, f"stone {i} was not recorded", "see the station output")
                sim.remove()
                _await(empty, station, timeout, "the station did not see the pan empty", "see the station output")

            outbox = _wait_acked(cfg_path, stones, timeout)
            station_rc, consumer_rc = _stop(station, "station"), _stop(consumer, "consumer")
            if station_rc != 0 or consumer_rc != 0:
                raise StationError(f"demo failed (station exit {station_rc}, consumer exit {consumer_rc})",
                                   "see the output above")
            _summary(cfg_path, workdir, [f"{sid}, {kind}" for sid, kind, _ in plan], outbox, db, broker)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    console.say("info", f"Everything is in {workdir} (remove it when done). Try: station verify --table "
                f"--config {workdir}/station.toml {workdir}/export")
    console.say("ok", f"Demo complete: {stones} stone(s) weighed, screened, signed, stored, published over mutual "
                "TLS, verified and stored by the central consumer, and acked by it.")
    return 0


def _station_certificate(cfg_path: Path, workdir: Path, pki) -> None:
    """As an operator does it: the station makes its TLS key and a CSR, the central CA signs it."""
    _run_ok("certs request", "certs", "request", "--config", str(cfg_path))
    csr = x509.load_pem_x509_csr((workdir / "tls" / "station.csr").read_bytes())
    (workdir / "tls" / "station.crt").write_bytes(pki.ca.sign_csr(csr, "station").read_bytes())
    console.out.print(_run_ok("certs check", "certs", "check", "--config", str(cfg_path)).strip(),
                      markup=False, highlight=False)


def _wait_acked(cfg_path: Path, stones: int, timeout: float) -> Path:
    """Until the central consumer's ack has reached the station's outbox for every record."""
    from station import config
    from station.app.service import outbox_path
    from station.delivery.outbox import wait_drained

    path = outbox_path(config.load(cfg_path))
    console.say("info", f"[demo] waiting until the central consumer has acked all {stones} record(s) ...")
    if not wait_drained(path, timeout, acked=True):
        raise StationError(f"the central consumer did not ack every record within {timeout:g} s",
                           "see the central and station output above")
    return path


def _summary(cfg_path: Path, workdir: Path, placed: list[str], outbox: Path, db: Path, broker: Mosquitto) -> None:
    from station.app import demo_summary

    export = workdir / "export"
    _run_ok("records export", "records", "export", "--config", str(cfg_path), str(export))
    problems = demo_summary.report(export, placed, outbox, db, STATION_ID,
                                   identities=demo_summary.tls_identities(broker.log_path),
                                   expected_identities=(STATION_ID, DEMO_CONSUMER_CN))
    if problems:
        raise StationError("the demo did not end as it should: " + "; ".join(problems), "see the summary above")
