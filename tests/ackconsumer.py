"""A tiny acking consumer for station-side tests and the bench: it takes every
record on stations/<id>/records and answers on stations/<id>/acks, as the
central consumer does (without verifying: the verdict comes from the test)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import cbor2

from station.delivery.mqtt import MessageProperties, MqttLink, MqttSubscriber


def record_id_of(data: bytes) -> str:
    """The record_id inside a signed record (COSE_Sign1: [protected, {}, payload, sig]);
    test payloads that are not COSE give ""."""
    try:
        return str(cbor2.loads(cbor2.loads(data).value[2])["record_id"])
    except Exception:  # noqa: BLE001 - the publisher tests send opaque bytes
        return ""


class AckingConsumer:
    def __init__(self, host: str, port: int, station_id: str, *, name: str = "acker",
                 verdict: Callable[[int], tuple[str, str]] | None = None,
                 record_id: Callable[[int, bytes], str] | None = None, batch: int = 1) -> None:
        self.station_id = station_id
        self.acking = threading.Event()
        self.acking.set()
        self.seqs: list[int] = []  # every arrival, duplicates included
        self.acked: list[int] = []
        self._verdict = verdict or (lambda seq: ("accepted", ""))
        self._record_id = record_id or (lambda seq, data: record_id_of(data) or f"rec-{seq}")
        self._batch = batch
        self._held: list[dict] = []
        self._cond = threading.Condition()
        self.out = MqttLink(host, port, f"{name}-out")
        self.sub = MqttSubscriber(host, port, f"stations/{station_id}/records", f"{name}-in", self._on_record)

    def start(self) -> "AckingConsumer":
        self.out.start()
        assert self.out.wait_connected(10)
        self.sub.start()
        return self

    def stop(self) -> None:
        self.sub.stop()
        self.out.stop()

    def _on_record(self, data: bytes, props: MessageProperties) -> None:
        seq = int(props.user_properties["seq"])
        with self._cond:
            self.seqs.append(seq)
            self._cond.notify_all()
        if not self.acking.is_set():
            return
        verdict, reason = self._verdict(seq)
        entry = {"seq": seq, "record_id": self._record_id(seq, data), "verdict": verdict}
        if reason:
            entry["reason"] = reason
        self._held.append(entry)
        if len(self._held) >= self._batch:
            self.send(self._held)
            self._held = []
        with self._cond:
            self.acked.append(seq)
            self._cond.notify_all()

    def send(self, entries: list[dict]) -> None:
        self.out.publish(f"stations/{self.station_id}/acks", json.dumps({"acks": entries}).encode(), qos=1)

    def send_raw(self, topic_tail: str, payload: bytes) -> None:
        self.out.publish(f"stations/{self.station_id}/{topic_tail}", payload, qos=1)

    def wait(self, pred: Callable[[], bool], timeout: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(pred, timeout)
