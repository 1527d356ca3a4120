"""`station run`: wires the one-way flow together and keeps it going.

device → driver → reading → session → record → signature → outbox → publisher → broker
(drivers/)  (instruments/)  (session/)  (records/)             (delivery/)

Threads: each instrument has its own worker (instruments/worker.py); the
session thread polls the scale, runs the stone session and seals records; the
publisher has its own; the main thread only pings the systemd watchdog (while
the session thread shows progress) and waits for a stop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from station import __version__
from station.app.lock import StateDirLock
from station.app.notify import Watchdog
from station.config import Config
from station.delivery.outbox import MIB, Outbox, check_free_space
from station.delivery.publisher import Publisher
from station.delivery.tls import from_config as client_credentials
from station.errors import DeviceError, OutboxError, StationError
from station.instruments.devices import AmbientDevice, Instrument, ScaleDevice, open_instrument
from station.instruments.steps import build_steps
from station.records.artifacts import ARTIFACTS_DIR, ArtifactStore
from station.records.chain import RecordWriter
from station.records.head import check_outbox
from station.records.cose import Signer
from station.records.keys import load_private_key
from station.records.payload import RecordInput
from station.session import events as ev
from station.session.stone import Measurement, StoneSession

_log = logging.getLogger(__name__)
OUTBOX_FILE = "outbox.sqlite3"
PAN_META = "pan_stone"  # seq of the recorded stone still on the pan ("" when none)
SESSIONS_META = "sessions"  # how many times the station has started on this outbox
# The session thread counts as alive while its last poll is this recent; a
# device call is bounded well below it (instruments/worker.py deadlines).
_LIVENESS_S = 60.0


@dataclass(frozen=True)
class Session:
    operator: str
    lot: str


def outbox_path(cfg: Config) -> Path:
    return cfg.station.state_dir / OUTBOX_FILE


class Station:
    def __init__(self, cfg: Config, session: Session, bus: ev.EventBus) -> None:
        self.cfg, self.session_info, self.bus = cfg, session, bus
        self.stop_requested = threading.Event()
        self.recorded = 0
        self.max_stones: int | None = None
        self.crashed: BaseException | None = None
        self._min_free = cfg.station.min_free_mb * MIB
        self._storage_problem: str | None = None
        self._devices: dict[str, str] = {}  # for the status: "ok" or "fault: why"
        self._refusing: str | None = None
        self._last_problem: str | None = None
        self._storage_checked = 0.0
        self._tick = time.monotonic()
        self.watchdog = Watchdog()
        self.lock = StateDirLock(cfg.station.state_dir)
        self.lock.acquire()  # before anything else touches the state dir or the devices
        try:
            self._open()
        except BaseException:
            self.lock.release()
            raise

    def _open(self) -> None:
        cfg = self.cfg
        # Refuse to start without a working key and a writable, non-full state dir.
        self.signer = Signer(load_private_key(cfg.signing_key_file))
        check_free_space(cfg.station.state_dir, self._min_free)
        self.outbox = Outbox(outbox_path(cfg), check_same_thread=False)
        try:
            # Before anything is written to it: an outbox behind its head is a refusal.
            check_outbox(cfg.station.state_dir, self.outbox.path, self.outbox.next_seq - 1, self.outbox.hash_at,
                         config_hint=f"--config {cfg.source}")
        except StationError:
            self.outbox.close()
            raise
        self.writer = RecordWriter(self.outbox, self.signer, station_id=cfg.station.id, simulated=cfg.simulated,
                                   head_dir=cfg.station.state_dir)
        self.sessions = int(self.outbox.get_meta(SESSIONS_META) or 0) + 1
        self.outbox.set_meta(SESSIONS_META, str(self.sessions))
        self._max_records = cfg.station.max_outbox_records
        self._max_bytes = cfg.station.max_outbox_mb * 1024 * 1024
        # Refuse to start with TLS credentials that cannot work (see delivery/tls.py).
        tls, credentials = client_credentials(cfg.mqtt, cfg.station.id)
        self.publisher = Publisher(
            outbox_path=outbox_path(cfg), station_id=cfg.station.id, host=cfg.mqtt.host, port=cfg.mqtt.port,
            version=__version__, client_id=cfg.mqtt.client_id, window=cfg.mqtt.window,
            keepalive=cfg.mqtt.keepalive_s, tls=tls, credentials=credentials,
            on_event=lambda msg: self.bus.publish(ev.Delivery(msg)),
            ack_timeout_s=cfg.mqtt.ack_timeout_s, heartbeat_s=cfg.mqtt.status_heartbeat_s,
            retention_s=cfg.station.retention_days * 86400, state_dir=cfg.station.state_dir,
            on_rejected=lambda a: self.bus.publish(ev.RecordRejected(
                f"Record #{a.seq} was REJECTED by the central system: {a.reason}. It stays in the outbox; "
                f"export it with `station records export DIR --from-seq {a.seq} --to-seq {a.seq}` and "
                "report it.", a.seq, a.record_id, a.reason)),
        )
        self.instruments: dict[str, Instrument] = {n: open_instrument(n, d) for n, d in cfg.devices.items()}
        scale = self.instruments[cfg.scale_name]
        assert isinstance(scale, ScaleDevice)
        ambient = next((i for i in self.instruments.values() if isinstance(i, AmbientDevice)), None)
        self.artifacts = ArtifactStore(cfg.station.state_dir / ARTIFACTS_DIR)
        steps = build_steps(list(self.instruments.values()), self.artifacts, self._keepalive)
        pan = self.outbox.get_meta(PAN_META)
        self._pan_saved = int(pan) if pan else None
        self.session = StoneSession(scale, cfg.cycle, steps=steps, ambient=ambient, emit=self.bus.publish,
                                    on_pan=self._pan_saved)
        self.bus.subscribe(self._status_from_event)
        self.publisher.set_status(state="starting", session=self.sessions, stones=0, devices={})

    # -- main thread -------------------------------------------------------

    def run(self, max_stones: int | None = None, drain_timeout: float = 30.0) -> int:
        self.max_stones = max_stones
        measuring = threading.Thread(target=self._measure_loop, name="session", daemon=True)
        try:
            self.publisher.start()
            self._connect_instruments()
            sim = " SIMULATED —" if self.cfg.simulated else ""
            self.bus.publish(ev.Event(
                f"Station {self.cfg.station.id}{sim} operator {self.session_info.operator}, lot "
                f"{self.session_info.lot}; next record #{self.outbox.next_seq}, "
                f"{self.outbox.depth()} waiting to publish."))
            self.watchdog.ready(f"measuring, next record #{self.outbox.next_seq}")
            measuring.start()
            while measuring.is_alive() and not self.stop_requested.is_set():
                if time.monotonic() - self._tick < _LIVENESS_S:
                    self.watchdog.ping()  # no ping from a stuck session: systemd restarts us
                self.stop_requested.wait(0.5)
        finally:
            self.stop_requested.set()
            self.watchdog.stopping()
            if measuring.ident is not None:
                measuring.join(_LIVENESS_S)
            self._shutdown(drain_timeout)
        if self.crashed is not None:
            raise StationError(f"the measuring loop stopped on an internal error: {self.crashed!r}",
                               "see the log for the traceback and report it; restart the station")
        return 0

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_requested.set())

    def _connect_instruments(self) -> None:
        for name, inst in self.instruments.items():
            try:
                ident = inst.connect()
                port = getattr(inst.cfg, "port", "")
                self.bus.publish(ev.DeviceRecovered(
                    f"{name}: {ident.model} serial {ident.serial}{f' on {port}' if port else ''}.", name, ident.serial))
            except DeviceError as exc:
                # Not fatal: the session's fault state keeps retrying and tells the operator.
                self.bus.publish(ev.DeviceFault(f"{name} not reachable yet: {exc}", name, exc.what))
                if inst is self.session.scale:
                    self.session.scale_unreachable(exc.what)

    def _shutdown(self, drain_timeout: float) -> None:
        drained = self.publisher.wait_drained(drain_timeout)
        if not drained:
            self.bus.publish(ev.Delivery(f"{self.outbox.depth()} record(s) not yet delivered; they stay in the "
                                         "outbox and go out on the next start."))
        self.publisher.stop()
        for inst in self.instruments.values():
            inst.close()
        self.outbox.close()
        self.lock.release()

    # -- session thread ----------------------------------------------------

    def _measure_loop(self) -> None:
        try:
            while not self.stop_requested.is_set():
                self._tick = time.monotonic()
                if self._storage_ok():
                    measurement = self.session.step()
                    if measurement is not None:
                        self._seal(measurement)
                    self._save_pan()
                    if self.max_stones is not None and self.recorded >= self.max_stones:
                        self.stop_requested.set()
                self.stop_requested.wait(self.cfg.cycle.poll_interval_s)
        except BaseException as exc:  # a bug: never silently; the main thread reports it
            _log.exception("measuring loop failed")
            self.crashed = exc
            self.stop_requested.set()

    def _keepalive(self) -> None:
        self._tick = time.monotonic()

    def _storage_ok(self) -> bool:
        now = time.monotonic()
        if now - self._storage_checked < 1.0:
            return self._storage_problem is None
        self._storage_checked = now
        try:
            check_free_space(self.cfg.station.state_dir, self._min_free)
            problem = self._outbox_full()
        except OutboxError as exc:
            problem = str(exc)
        if problem != self._storage_problem:
            self._storage_problem = problem
            if problem and problem.startswith("the outbox is full"):
                self.bus.publish(ev.OutboxFull(f"Refusing to measure: {problem}", problem))
            elif problem:
                self.bus.publish(ev.StorageRefusing(f"Refusing to measure: {problem}", problem))
            else:
                self.bus.publish(ev.StorageOk("The outbox has room again; measuring resumes."
                                              if (self._last_problem or "").startswith("the outbox is full")
                                              else "Storage is fine again; measuring resumes."))
            self._last_problem = problem or self._last_problem
        return problem is None

    def _outbox_full(self) -> str | None:
        """Full means: this many records (or bytes) not yet accepted by the central
        system. The station never overwrites or drops one to make room."""
        n, size = self.outbox.unacked_load()
        if n >= self._max_records:
            held = f"{n} records (station.max_outbox_records = {self._max_records})"
        elif size >= self._max_bytes:
            held = f"{size / 1048576:.1f} MiB (station.max_outbox_mb = {self.cfg.station.max_outbox_mb})"
        else:
            return None
        return (f"the outbox is full: it holds {held} that the central system has not accepted yet; measuring "
                "resumes by itself as acknowledgements arrive; check the link to the broker and that the "
                "central consumer runs")

    def _seal(self, m: Measurement) -> None:
        item = RecordInput(operator=self.session_info.operator, lot=self.session_info.lot, readings=m.readings,
                           flags=m.flags, ambient=m.ambient)
        try:
            # The pan marker is committed with the record: a crash can never
            # leave a recorded stone on the pan looking unrecorded.
            stored = self.writer.write(item, meta={PAN_META: "{seq}"})
        except StationError as exc:
            self._storage_checked = 0.0
            self.session.not_recorded(str(exc))
            return
        self._pan_saved = stored.seq
        self.recorded += 1
        self.publisher.notify()
        self.session.recorded(stored.seq, m)

    def _save_pan(self) -> None:
        if self.session.on_pan != self._pan_saved:
            try:
                self.outbox.set_meta(PAN_META, "" if self.session.on_pan is None else str(self.session.on_pan))
                self._pan_saved = self.session.on_pan
            except OutboxError as exc:
                _log.warning("could not store the pan state: %s", exc)

    # -- status ------------------------------------------------------------

    def _status_from_event(self, e: ev.Event) -> None:
        """The station's part of the retained status: state (refusing beats a device
        fault beats measuring) and why, and each device. The publisher adds the
        outbox counts itself whenever they change."""
        if isinstance(e, ev.DeviceFault):
            self._devices[e.device] = f"fault: {e.reason}"
        elif isinstance(e, ev.DeviceRecovered):
            self._devices[e.device] = "ok"
        elif isinstance(e, (ev.StorageRefusing, ev.OutboxFull)):
            self._refusing = e.reason
        elif isinstance(e, (ev.StorageOk, ev.Ready)):
            self._refusing = None
        elif isinstance(e, ev.StoneRecorded):
            self.publisher.notify()
        elif not isinstance(e, ev.StoneAborted):
            return
        faults = {n: s for n, s in self._devices.items() if s != "ok"}
        if self._refusing:
            state, reason = "refusing", self._refusing
        elif faults:
            state, reason = "device fault", "; ".join(f"{n}: {s[7:]}" for n, s in faults.items())
        else:
            state, reason = "measuring", ""
        alarms = [f"refusing to measure: {self._refusing}"] if self._refusing else []
        self.publisher.set_status(state=state, reason=reason, devices=dict(self._devices), alarms=alarms,
                                  stones=self.recorded)
