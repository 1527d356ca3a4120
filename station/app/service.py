"""`station run`: wires the one-way flow together and keeps it going.

device → driver → reading → cycle → record → signature → outbox → publisher → broker
(drivers/)      (devices) (cycle) (record) (cose)   (outbox)  (publisher)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from station import __version__
from station.records.carat import format_carats, format_raw_carats
from station.records.chain import RecordWriter
from station.config import Config
from station.records.cose import Signer
from station.session.cycle import Event, Measurement, MeasurementCycle, State
from station.instruments.scale import BalanceDevice
from station.errors import DeviceError, OutboxError, StationError
from station.records.keys import load_private_key
from station.app.notify import Watchdog
from station.delivery.outbox import Outbox, check_free_space
from station.delivery.publisher import Publisher
from station.delivery.tls import from_config as client_credentials
from station.records.payload import RecordInput

OUTBOX_FILE = "outbox.sqlite3"


@dataclass(frozen=True)
class Session:
    operator: str
    lot: str


def outbox_path(cfg: Config) -> Path:
    return cfg.station.state_dir / OUTBOX_FILE


class Station:
    def __init__(self, cfg: Config, session: Session, say: Callable[[str, str], None]) -> None:
        self.cfg, self.session, self.say = cfg, session, say
        self.stop_requested = threading.Event()
        self.recorded = 0
        self._min_free = cfg.station.min_free_mb * 1024 * 1024
        self._storage_problem: str | None = None
        self._storage_checked = 0.0
        self.watchdog = Watchdog()
        # Refuse to start without a working key and a writable, non-full state dir.
        self.signer = Signer(load_private_key(cfg.signing_key_file))
        check_free_space(cfg.station.state_dir, self._min_free)
        self.outbox = Outbox(outbox_path(cfg))
        self.writer = RecordWriter(
            self.outbox, self.signer, station_id=cfg.station.id, simulated=cfg.simulated
        )
        # Refuse to start with TLS credentials that cannot work (see delivery/tls.py).
        tls, credentials = client_credentials(cfg.mqtt, cfg.station.id)
        self.publisher = Publisher(
            outbox_path=outbox_path(cfg),
            station_id=cfg.station.id,
            host=cfg.mqtt.host,
            port=cfg.mqtt.port,
            version=__version__,
            client_id=cfg.mqtt.client_id,
            window=cfg.mqtt.window,
            keepalive=cfg.mqtt.keepalive_s,
            tls=tls,
            credentials=credentials,
            on_event=lambda msg: self.say("mqtt", msg),
        )
        self.balance = BalanceDevice(cfg.devices.balance)
        self.cycle = MeasurementCycle(self.balance, cfg.cycle, on_event=self._on_cycle_event)

    def run(self, max_stones: int | None = None, drain_timeout: float = 30.0) -> int:
        self.publisher.start()
        self._connect_balance()
        sim = " SIMULATED —" if self.cfg.simulated else ""
        self.say("info", f"Station {self.cfg.station.id}{sim} operator {self.session.operator}, lot {self.session.lot}; "
                 f"next record #{self.outbox.next_seq}, {self.outbox.depth()} waiting to publish.")
        self.watchdog.ready(f"measuring, next record #{self.outbox.next_seq}")
        try:
            while not self.stop_requested.is_set():
                self.watchdog.ping()
                if self._storage_ok():
                    measurement = self.cycle.step()
                    if measurement is not None:
                        self._seal(measurement)
                        if max_stones is not None and self.recorded >= max_stones:
                            break
                self.stop_requested.wait(self.cfg.cycle.poll_interval_s)
        finally:
            self.watchdog.stopping()
            drained = self.publisher.wait_drained(drain_timeout)
            if not drained:
                self.say("warn", f"{self.outbox.depth()} record(s) not yet delivered; they stay in the outbox "
                         "and go out on the next start.")
            self.publisher.stop()
            self.balance.close()
            self.outbox.close()
        return 0

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_requested.set())

    def _connect_balance(self) -> None:
        try:
            ident = self.balance.connect()
            self.say("info", f"Balance {ident.model} serial {ident.serial} on {self.cfg.devices.balance.port}.")
        except DeviceError as exc:
            # Not fatal: the cycle's fault state keeps retrying and tells the operator.
            self.cycle.state, self.cycle.fault = State.FAULT, exc.what
            self.say("fault", f"Balance not reachable yet: {exc}")

    def _storage_ok(self) -> bool:
        now = time.monotonic()
        if now - self._storage_checked < 1.0:
            return self._storage_problem is None
        self._storage_checked = now
        try:
            check_free_space(self.cfg.station.state_dir, self._min_free)
            problem = None
        except OutboxError as exc:
            problem = str(exc)
        if problem != self._storage_problem:
            self._storage_problem = problem
            if problem:
                self.say("fault", f"Refusing to measure: {problem}")
            else:
                self.say("info", "Storage is fine again; measuring resumes.")
        return problem is None

    def _seal(self, m: Measurement) -> None:
        item = RecordInput(operator=self.session.operator, lot=self.session.lot, readings=m.readings, flags=m.flags)
        try:
            stored = self.writer.write(item)
        except StationError as exc:
            self._storage_checked = 0.0
            self.cycle.start_awaiting_removal(f"NOT RECORDED: {exc}. Remove the stone and measure it again later.")
            return
        self.recorded += 1
        self.publisher.notify()
        r = m.readings[0]
        flags = f" — {', '.join(m.flags)}: weigh again on a second balance" if m.flags else ""
        self.cycle.start_awaiting_removal(
            f"Recorded #{stored.seq}: {_carat(r.value_ug)}, {r.value_ug} µg{flags}. Remove the stone."
        )

    def _on_cycle_event(self, e: Event) -> None:
        level = {"fault": "fault", "aborted": "warn", "measured": "ok"}.get(e.kind, "info")
        self.say(level, e.message)


def _carat(value_ug: int) -> str:
    return f"{format_carats(value_ug)} ct ({format_raw_carats(value_ug)} ct raw)"
