"""What the central system sends a station, and how the station reads it.

Wire protocol (docs/MQTT.md):
- ``stations/<id>/acks`` (QoS 1, not retained), JSON
  ``{"acks": [{"seq": 12, "record_id": "...", "verdict": "accepted"},
              {"seq": 13, "record_id": "...", "verdict": "rejected", "reason": "..."}]}``
- ``stations/<id>/cmd/replay`` (QoS 1), JSON ``{"from_seq": a, "to_seq": b}``

Both arrive on paho's network thread; they are parsed here (a bad message is
reported, never raised into paho) and handed to the publisher's pump thread,
which stores them in batches.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.delivery.mqtt import MqttLink
from station.delivery.outbox import Outbox
from station.delivery.outbox_states import ACCEPTED, REJECTED, AckResult, AppAck
from station.errors import OutboxError
from station.records.head import write_central_ack
from station.delivery.topics import acks_topic, cmd_topic

_log = logging.getLogger(__name__)

MAX_SEQ = (1 << 63) - 1  # SQLite INTEGER
PRUNE_EVERY = 3600.0  # s; pruning runs on the publisher's thread, also once right after start




class BadMessage(ValueError):
    """A message from the central side that does not follow the protocol."""


@dataclass(frozen=True)
class Replay:
    from_seq: int
    to_seq: int


def _seq(value: Any, name: str) -> int:
    # bool is an int in Python; a JSON true is not a seq.
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SEQ:
        raise BadMessage(f"{name} must be an integer from 1, not {value!r}")
    return value


def _json_object(payload: bytes) -> dict:
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadMessage("not a JSON object")
    return doc


def parse_acks(payload: bytes) -> list[AppAck]:
    """Every entry, or BadMessage for the whole message (nothing half-applied)."""
    doc = _json_object(payload)
    entries = doc.get("acks")
    if not isinstance(entries, list) or not entries:
        raise BadMessage('"acks" must be a non-empty list')
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise BadMessage(f"acks[{i}] is not an object")
        seq = _seq(e.get("seq"), f"acks[{i}].seq")
        record_id, verdict, reason = e.get("record_id"), e.get("verdict"), e.get("reason", "")
        if not isinstance(record_id, str) or not record_id:
            raise BadMessage(f"acks[{i}].record_id must be a non-empty string")
        if verdict not in (ACCEPTED, REJECTED):
            raise BadMessage(f"acks[{i}].verdict must be {ACCEPTED!r} or {REJECTED!r}, not {verdict!r}")
        if not isinstance(reason, str):
            raise BadMessage(f"acks[{i}].reason must be a string")
        if verdict == REJECTED and not reason:
            reason = "(no reason given)"
        out.append(AppAck(seq, record_id, verdict, reason))
    return out


def parse_replay(payload: bytes) -> Replay:
    doc = _json_object(payload)
    lo, hi = _seq(doc.get("from_seq"), "from_seq"), _seq(doc.get("to_seq"), "to_seq")
    if lo > hi:
        raise BadMessage(f"from_seq {lo} is after to_seq {hi}")
    return Replay(lo, hi)


class Inbox:
    """Subscribes the publisher's own link to its acks and commands (on every
    connect: a broker without persistence forgets subscriptions) and queues what
    arrives (on paho's thread) for the pump thread to ``take``."""

    def __init__(self, link: MqttLink, station_id: str, *, wake: Callable[[], None],
                 emit: Callable[[str], None]) -> None:
        self._link = link
        self.acks_topic = acks_topic(station_id)
        self.cmd_topic = cmd_topic(station_id)
        self._wake, self._emit = wake, emit
        self._lock = threading.Lock()
        self._acks: list[AppAck] = []
        self._replays: list[Replay] = []
        # The one place the station reads from the broker; paho's message callback
        # is set through the link's escape hatch, as delivery/subscriber.py does.
        link.client.on_message = self._handle

    def subscribe(self) -> None:
        self._link.subscribe(self.acks_topic, qos=1)
        self._link.subscribe(self.cmd_topic + "/#", qos=1)

    def take(self) -> tuple[list[AppAck], list[Replay]]:
        with self._lock:
            acks, self._acks = self._acks, []
            replays, self._replays = self._replays, []
        return acks, replays

    def requeue(self, acks: list[AppAck]) -> None:
        """Acks whose commit failed: kept for the next try."""
        with self._lock:
            self._acks[:0] = acks

    def _handle(self, client: Any, userdata: Any, msg: Any) -> None:
        topic, payload = str(msg.topic), bytes(msg.payload)
        try:
            if topic == self.acks_topic:
                acks = parse_acks(payload)
                with self._lock:
                    self._acks.extend(acks)
            elif topic == self.cmd_topic + "/replay":
                replay = parse_replay(payload)
                with self._lock:
                    self._replays.append(replay)
            else:
                raise BadMessage("unknown command")
        except BadMessage as exc:
            _log.warning("ignored a message on %s: %s", topic, exc)
            self._emit(f"ignored a message on {topic}: {exc}")
            return
        self._wake()


class AckKeeper:
    """The pump thread's side of the central system's messages: reports what a
    batch of verdicts changed, keeps central-ack.json, and serves replays."""

    def __init__(self, state_dir: Path | None, *, retention_s: float | None,
                 on_rejected: Callable[[AppAck], None] | None,
                 emit: Callable[[str], None], set_error: Callable[[str], object]) -> None:
        self.state_dir = state_dir
        self.retention = retention_s
        self._pruned_at = -PRUNE_EVERY
        self._on_rejected, self._emit, self._set_error = on_rejected, emit, set_error
        self._acked_head = 0  # highest seq written to central-ack.json
        self._replay: list[tuple[int, int]] = []  # ranges still to re-publish, in order
        self.last_replay: dict | None = None

    def handle(self, ob: Outbox, acks: list[AppAck], replays: list[Replay],
               requeue: Callable[[list[AppAck]], None]) -> None:
        if acks:
            try:
                res = ob.apply_acks(acks)  # one transaction for the whole batch
            except OutboxError:
                requeue(acks)
                raise
            self.report(ob, res)
        for replay in replays:
            self.request_replay(ob, replay)

    def status_extra(self) -> dict:
        return {"last_replay": self.last_replay} if self.last_replay else {}

    def prune_due(self, ob: Outbox, now: float) -> None:
        if self.retention is None or now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        pruned = ob.prune(time.time() - self.retention)
        if pruned:
            _log.info("pruned %d acknowledged record(s) past the retention window", pruned)

    def report(self, ob: Outbox, res: AckResult) -> None:
        for ack in res.rejected:
            # Never silent: the log, the operator's console (on_rejected puts a typed
            # event on the station's bus) and the status, which lists rejections.
            _log.error("the central system REJECTED record seq %d (%s): %s; it stays in the outbox",
                       ack.seq, ack.record_id, ack.reason)
            if self._on_rejected is not None:
                self._on_rejected(ack)
            else:
                self._emit(f"record seq {ack.seq} rejected by the central system: {ack.reason}")
        for ack, ours in res.mismatched:
            _log.warning("ignored an ack for seq %d: it names record %s, this station stored %s there",
                         ack.seq, ack.record_id, ours)
        last = ob.next_seq - 1
        beyond = [a.seq for a in res.unknown if a.seq > last]
        if beyond:
            self._set_error(f"the central system acknowledged seq {max(beyond)}, but this outbox ends at seq "
                            f"{last}: records were lost or the outbox was restored from an old backup; fix: stop "
                            "the station; at its next start it refuses to measure and says how to recover")
            if self.state_dir is not None:
                # Remembered beside the outbox: the next start sees the outbox is behind.
                top = max((a for a in res.unknown if a.seq > last), key=lambda a: a.seq)
                self._write_ack(top.seq, top.record_id, bytes(32))
        if res.highest is not None and res.highest[0] > self._acked_head and self.state_dir is not None:
            self._write_ack(*res.highest)

    def _write_ack(self, seq: int, record_id: str, sha256: bytes) -> None:
        assert self.state_dir is not None
        try:
            write_central_ack(self.state_dir, seq, record_id, sha256)
            self._acked_head = max(self._acked_head, seq)
        except OSError as exc:
            _log.warning("could not write the central system's last ack beside the outbox: %s", exc)

    def request_replay(self, ob: Outbox, replay: Replay) -> None:
        missing = ob.missing_ranges(replay.from_seq, replay.to_seq)
        self._replay.append((replay.from_seq, replay.to_seq))
        self.last_replay = {"from_seq": replay.from_seq, "to_seq": replay.to_seq,
                            "not_held": [[a, b] for a, b in missing]}
        gone = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in missing)
        msg = f"replay of seq {replay.from_seq}..{replay.to_seq} requested by the central system"
        _log.info("%s; not held: %s", msg, gone or "none")
        self._emit(msg + (f"; no longer held here: {gone}" if missing else ""))

    def replay_batch(self, ob: Outbox, room: int) -> list[tuple[int, str, bytes]]:
        while self._replay:
            lo, hi = self._replay[0]
            rows = ob.held(lo, hi, room)
            if rows:
                self._replay[0] = (rows[-1][0] + 1, hi)
                return rows
            self._replay.pop(0)
        return []
