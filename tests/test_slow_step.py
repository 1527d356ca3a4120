"""A slow instrument step (5 s) holds up only the stone it belongs to: the
systemd watchdog keeps being pinged and the outbox keeps draining meanwhile.

The station runs in-process (to inject the fake step) against the real MT-SICS
simulator on a pty and a real mosquitto, which starts only once the step has
begun: records waiting in the outbox must reach it while the step still runs.
The consumer's persistent session is made before the station starts, so the
broker queues what the station publishes even before the consumer reconnects
(the station may win the race to the restarted broker).
"""

from __future__ import annotations

import socket
import threading
import time

from station import config
from station.app.broker import Mosquitto, free_port
from station.app.service import Session, Station, outbox_path
from station.delivery.mqtt import MqttSubscriber
from station.delivery.outbox import Outbox
from station.instruments.reading import DeviceIdentity, mass_reading
from station.records.chain import RecordWriter
from station.records.cose import Signer
from station.records.keys import load_private_key
from station.records.payload import RecordInput
from station.session.events import EventBus
from stationproc import station, write_config

SEEDED = 20
STEP_S = 5.0


class SlowStep:
    name = "slowcam"

    def __init__(self, broker: Mosquitto, received: list[float]) -> None:
        self.broker, self.received = broker, received
        self.started = self.ended = 0.0

    def run(self, mass):
        self.started = time.monotonic()
        self.broker.start()
        sub = _consumer(self.broker, self.received)
        sub.start()
        time.sleep(max(0.0, STEP_S - (time.monotonic() - self.started)))
        self.ended = time.monotonic()
        self.sub = sub
        return []


def _consumer(broker: Mosquitto, received: list[float]) -> MqttSubscriber:
    return MqttSubscriber(broker.host, broker.port, "stations/+/records", "slow-step-consumer",
                          lambda payload, props: received.append(time.monotonic()))


def _seed(cfg: config.Config) -> None:
    reading = mass_reading("scale", "mtsics", DeviceIdentity("M", "SN"), 99_800, True, ("> S",), "t")
    with Outbox(outbox_path(cfg)) as box:
        writer = RecordWriter(box, Signer(load_private_key(cfg.signing_key_file)),
                              station_id=cfg.station.id, simulated=True)
        writer.write_batch([RecordInput("op", "lot", [reading])] * SEEDED)


def test_slow_step_delays_neither_watchdog_nor_publishing(tmp_path, sim, monkeypatch):
    port = free_port()
    broker = Mosquitto(tmp_path / "late-broker", port=port)
    path = write_config(tmp_path, sim.port, port)
    assert station("keys", "init", "--config", str(path)).returncode == 0
    cfg = config.load(path)
    _seed(cfg)
    received: list[float] = []
    broker.start()
    session = _consumer(broker, received)
    session.start()
    session.stop()
    broker.stop()  # SIGTERM: mosquitto saves the consumer's session

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s, as systemd asks
    pings: list[float] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                if b"WATCHDOG=1" in notify.recv(4096):
                    pings.append(time.monotonic())
            except TimeoutError:
                pass

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    step = SlowStep(broker, received)
    bus = EventBus()
    seen: list[str] = []
    bus.subscribe(lambda e: seen.append(e.message))
    st = Station(cfg, Session("op", "lot"), bus)
    st.session.steps = (step,)
    runner = threading.Thread(target=st.run, kwargs={"max_stones": 1, "drain_timeout": 10}, daemon=True)
    try:
        runner.start()
        deadline = time.monotonic() + 20
        while not any("Ready." in m for m in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        sim.control.place(150_000)
        runner.join(40)
        assert not runner.is_alive()
    finally:
        done.set()
        listener.join(2)
        notify.close()
        if getattr(step, "sub", None):
            step.sub.stop()
        broker.stop()

    assert any("Recorded #21" in m for m in seen), seen
    during = [t for t in pings if step.started <= t <= step.ended]
    gaps = [b - a for a, b in zip([step.started, *during], [*during, step.ended])]
    assert max(gaps) < 1.0, f"watchdog silent for {max(gaps):.2f} s during the slow step"
    early = [t for t in received if t <= step.ended]
    assert len(early) >= SEEDED, f"only {len(early)} of {SEEDED} waiting records published during the step"
