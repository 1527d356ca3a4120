"""The retained status message on ``stations/<id>/status`` (JSON).

Built from two sources: the station's own state (measuring, device fault,
refusing and why; per-device state; the session counter), merged in through
``Publisher.set_status``, and the outbox counts, which the publisher reads
itself whenever they may have changed, so the depth never goes stale. The last
will replaces it with ``{"state": "offline"}``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from station.delivery.mqtt import Ack, MqttLink
from station.delivery.outbox import Outbox
from station.delivery.outbox_states import Counts
from station.errors import PublishError

OFFLINE = {"state": "offline"}
_SHOWN_REJECTIONS = 5
# Outbox counts are re-read at most this often (a few COUNTs each): a burst of
# acks makes one status, not hundreds.
COUNT_EVERY = 0.2


def utc_stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rejection_alarm(rejections: list[tuple[int, str, str]]) -> str:
    seq, _, reason = rejections[-1]
    return (f"{len(rejections)} record(s) rejected by the central system, kept in the outbox "
            f"(last: seq {seq}: {reason})")


def build(*, version: str, station: dict, counts: Counts, rejections: list[tuple[int, str, str]],
          extra: dict, now: float) -> dict:
    """``station``: fields from set_status (state, reason, devices, alarms, session ...);
    ``extra``: the publisher's own (last replay)."""
    alarms = list(station.get("alarms", []))
    if rejections:
        alarms.append(rejection_alarm(rejections))
    age = None if counts.oldest_unacked_at is None else round(max(0.0, now - counts.oldest_unacked_at), 3)
    out = {
        "state": "online",  # until the station says measuring, device fault or refusing
        **station,
        "version": version,
        "time": utc_stamp(now),
        "outbox": {"stored": counts.stored, "published": counts.published, "acked": counts.acked,
                   "rejected": counts.rejected},
        "outbox_depth": counts.unacked,  # not yet accepted by the central system
        "oldest_unacked_age_s": age,
        "last_seq": counts.last_seq,
        "alarms": alarms,
        **extra,
    }
    if rejections:
        out["rejected"] = [{"seq": s, "record_id": r, "reason": why} for s, r, why in rejections[-_SHOWN_REJECTIONS:]]
    return out


def content(status: dict) -> dict:
    """The fields whose change must be published now (the heartbeat's time and
    the age of the oldest unacked record change by themselves)."""
    return {k: v for k, v in status.items() if k not in ("time", "oldest_unacked_age_s")}


class Beacon:
    """Publishes the retained status (QoS 1) on the publisher's link: on every
    connect, whenever its content changed, and every ``heartbeat_s``.

    ``set`` and ``touch`` may be called from any thread; ``publish_due`` only
    from the publisher's pump thread (it reads the outbox on that connection).
    A status in flight takes one of the broker's Receive Maximum slots: the
    publisher subtracts ``pending`` from its window."""

    def __init__(self, link: MqttLink, topic: str, version: str, heartbeat_s: float, *,
                 set_error: Callable[[str], object], wake: Callable[[], None]) -> None:
        self._link, self.topic, self.version, self.heartbeat = link, topic, version, heartbeat_s
        self._set_error, self._wake = set_error, wake
        self._lock = threading.Lock()
        self._fields: dict = {}  # the station's own part
        self._dirty = True  # fields or outbox counts may have changed
        self.pending = False  # a status waits for its PUBACK
        self._last: dict | None = None
        self._sent_at = 0.0  # monotonic
        self._counted_at = -COUNT_EVERY

    def set(self, fields: dict) -> bool:
        with self._lock:
            if all(self._fields.get(k) == v for k, v in fields.items()):
                return False
            self._fields.update(fields)
            self._dirty = True
        return True

    def touch(self) -> None:
        with self._lock:
            self._dirty = True

    def reset(self) -> None:
        """A new connection: nothing of ours is in flight any more."""
        with self._lock:
            self.pending = False

    def sleep_time(self, now: float) -> float:
        with self._lock:
            t = self._counted_at + COUNT_EVERY - now if self._dirty else float("inf")
            if self._sent_at and not self.pending:
                t = min(t, self._sent_at + self.heartbeat - now)
        return t

    def publish_due(self, ob: Outbox, extra: dict, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            if self.pending:
                return  # its PUBACK wakes the pump again
            heartbeat = now - self._sent_at >= self.heartbeat
            if not (force or heartbeat or (self._dirty and now - self._counted_at >= COUNT_EVERY)):
                return
            self._dirty = False
            station = dict(self._fields)
        self._counted_at = now
        status = build(version=self.version, station=station, counts=ob.counts(), rejections=ob.rejections(),
                       extra=extra, now=time.time())
        if force or heartbeat or self._last is None or content(status) != content(self._last):
            self._send(status)

    def _send(self, status: dict) -> None:
        with self._lock:
            self.pending = True
        self._last, self._sent_at = status, time.monotonic()
        try:
            self._link.publish(self.topic, json.dumps(status, separators=(",", ":")).encode(), qos=1, retain=True,
                               content_type="application/json", on_ack=self._ack)
        except PublishError as exc:
            self._last = None
            with self._lock:
                self.pending = False
            self._set_error(str(exc))

    def _ack(self, ack: Ack) -> None:
        with self._lock:
            self.pending = False
        self._wake()
        if not ack.ok:
            self._set_error(f"broker refused the status message on {self.topic} ({ack.reason_code} {ack.reason}); "
                            "fix: grant write on it to this station")
