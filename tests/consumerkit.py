"""Helpers for the consumer tests: signed records, a plain publisher, an ack listener."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import cbor2

from station.central.trust import trust_entry
from station.delivery.mqtt import MqttLink
from station.delivery.subscriber import MqttSubscriber
from station.instruments.reading import DeviceIdentity, mass_reading
from station.records.cose import Signer
from station.records.keys import init_key
from station.records.payload import RecordInput, build_payload
from stationproc import Proc, station_cmd

READING = mass_reading("balance", "mtsics", DeviceIdentity("M", "SN"), 123_400, True, ("> S",), "t")


def make_keys(d: Path) -> dict[str, Signer]:
    return {name: Signer(init_key(d / f"{name}.key")) for name in ("a", "a_sim", "b")}


def write_trust(d: Path, keys: dict[str, Signer]) -> Path:
    path = d / "trust.toml"
    path.write_text(trust_entry("S1", {"production": [keys["a"].public_key], "simulation": [keys["a_sim"].public_key]})
                    + trust_entry("S2", {"production": [keys["b"].public_key]}))
    return path


def record(signer: Signer, seq: int, prev: bytes, station: str = "S1", simulated: bool = False,
           rid: str | None = None) -> bytes:
    payload = build_payload(RecordInput("op", "lot", [READING]), record_id=rid or f"{station}-r{seq}",
                            station_id=station, seq=seq, prev=prev, simulated=simulated)
    return signer.sign(payload)


def chain(signer: Signer, n: int, station: str = "S1") -> list[bytes]:
    out, prev = [], bytes(32)
    for seq in range(1, n + 1):
        data = record(signer, seq, prev, station)
        out.append(data)
        prev = hashlib.sha256(data).digest()
    return out


def reencoded(data: bytes) -> bytes:
    """The same signed content with a non-empty unprotected header: the signature still holds."""
    tag = cbor2.loads(data)
    protected, _, payload, sig = tag.value
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {4: b"x"}, payload, sig]))


class Publisher:
    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.link = MqttLink("127.0.0.1", port, client_id, max_inflight=20)
        self.link.start()
        assert self.link.wait_connected(10)
        self._acked = threading.Semaphore(0)

    def send(self, items: list[bytes], station: str = "S1") -> None:
        """Publishes at QoS 1 and waits for every PUBACK."""
        done = threading.Semaphore(0)
        for data in items:
            self.link.publish(f"stations/{station}/records", data, on_ack=lambda ack: done.release())
        for _ in items:
            assert done.acquire(timeout=20), "broker did not PUBACK"

    def close(self) -> None:
        self.link.stop()


class Listener:
    """Collects JSON messages on a topic filter (the station side of acks/replay)."""

    def __init__(self, port: int, topic: str, client_id: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self._cond = threading.Condition()
        self.sub = MqttSubscriber("127.0.0.1", port, topic, client_id, self._on)
        self.sub.start()

    def _on(self, payload: bytes, props) -> None:
        with self._cond:
            self.messages.append((props.topic, json.loads(payload)))
            self._cond.notify_all()

    def acks(self) -> list[dict]:
        with self._cond:
            return [a for _, m in self.messages for a in m.get("acks", [])]

    def wait(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not seen in time; got {self.messages[-5:]} ({len(self.messages)} messages)")
                self._cond.wait(min(left, 0.2))

    def close(self) -> None:
        self.sub.stop()


def consumer(port: int, trust: Path, db: str, client_id: str = "consumer-1", *extra: str) -> Proc:
    return Proc(station_cmd("consume", "--host", "127.0.0.1", "--port", str(port), "--trust", str(trust),
                            "--db", db, "--client-id", client_id, *extra))
