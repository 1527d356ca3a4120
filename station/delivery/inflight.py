"""The publisher's state shared between paho's network thread and its pump thread:
records handed to the broker and not answered yet, PUBACKs not yet stored as
delivered-marks, refusals, and the connection epoch. One lock guards it all.

The network thread only records what arrived (``on_ack``, ``connected``,
``disconnected``); the pump thread decides what to publish and when to store
the marks. Each delivered-mark commit costs a write to the outbox, so PUBACKs
are collected into batches; a lost mark only means a duplicate publish, never
a lost record.

Beyond the broker's window, ``ahead`` more records may be handed to paho when
paho itself keeps to the window (MqttLink.queues_beyond_window): it queues them
and sends each from its network thread as a PUBACK frees a slot, so the pump
thread wakes once per chunk instead of once per few PUBACKs. Those records are
in RAM only; the outbox still holds every one of them until its mark is stored.
"""

from __future__ import annotations

import threading
import time

from station.delivery.mqtt import Ack

# Collect PUBACKs for up to this long, or this many, before storing them.
MARK_DELAY = 0.05
MARK_BATCH = 500


class InFlight:
    def __init__(self, window: int, ahead: int = 0) -> None:
        self._lock = threading.Lock()
        self.epoch = 0  # bumped on every connect; acks of older epochs still count as delivery
        self._fresh = False  # a new connection: birth + re-send from the oldest undelivered
        # The link says "connected" a moment before its connect callback reaches
        # connected() here; publishing in that moment sent records under the old
        # epoch that the re-send after the connect sent again (duplicates at start).
        self._up = False
        self._tokens: set[int] = set()  # tokens, not seqs: a replay may repeat a seq in flight
        self._next_token = 0
        self._acked: list[int] = []
        self._acked_since = 0.0  # monotonic time of the oldest unmarked ack
        self._refused: list[tuple[int, Ack]] = []
        # The pump was woken and has not started its next step yet: a burst of
        # PUBACKs (one socket read) then wakes it once, not once per PUBACK.
        self._asked = False
        self._size(window, ahead)

    def _size(self, window: int, ahead: int) -> None:
        self.window = window
        self.capacity = window + ahead  # handed to paho and not answered, at most
        self.refill_at = max(1, self.capacity // 4)

    # -- network thread ------------------------------------------------------------

    def connected(self, window: int, ahead: int) -> None:
        with self._lock:
            self.epoch += 1
            self._tokens.clear()
            self._fresh = True
            self._up = True
            self._size(window, ahead)

    def disconnected(self) -> None:
        with self._lock:
            self._tokens.clear()  # forgotten: the outbox is re-read after reconnecting
            self._up = False

    def on_ack(self, seq: int, token: int, epoch: int, ack: Ack) -> bool:
        """Record the broker's answer; returns whether the pump should wake."""
        with self._lock:
            if epoch == self.epoch:
                self._tokens.discard(token)
            if not ack.ok:
                self._refused.append((seq, ack))
                self._asked = True
                return True
            # Wake the pump only when it has something worth doing: start the
            # mark timer, refill a chunk, or store a full batch.
            wake = not self._acked or len(self._tokens) <= self.capacity - self.refill_at
            if not self._acked:
                self._acked_since = time.monotonic()
            self._acked.append(seq)
            if self._asked or not (wake or len(self._acked) >= MARK_BATCH):
                return False
            self._asked = True
            return True

    # -- pump thread ---------------------------------------------------------------

    def take_news(self) -> tuple[bool, list[tuple[int, Ack]]]:
        """(a new connection since the last call, refusals since the last call).
        Called first in every pump step: what changes after it wakes the pump again."""
        with self._lock:
            self._asked = False
            fresh, self._fresh = self._fresh, False
            refused, self._refused = self._refused, []
        return fresh, refused

    def room(self, reserved: int) -> tuple[int, int] | None:
        """(free slots, epoch), or None when a new connection came meanwhile or
        the connect has not been handled yet."""
        with self._lock:
            if self._fresh or not self._up:
                return None
            return self.capacity - len(self._tokens) - reserved, self.epoch

    def add(self, epoch: int, n: int) -> range | None:
        """Tokens for ``n`` publishes, or None when the connection changed since ``room``."""
        with self._lock:
            if self.epoch != epoch:
                return None
            first = self._next_token
            self._next_token += n
            tokens = range(first, first + n)
            self._tokens.update(tokens)
        return tokens

    def discard(self, tokens: range) -> None:
        """Tokens whose publish failed."""
        with self._lock:
            self._tokens.difference_update(tokens)

    @property
    def empty(self) -> bool:
        """Nothing in flight."""
        with self._lock:
            return not self._tokens

    @property
    def quiet(self) -> bool:
        """Nothing in flight and no PUBACK waiting for its mark."""
        with self._lock:
            return not self._tokens and not self._acked

    def mark_due_in(self, now: float) -> float:
        """Seconds until the collected PUBACKs must be stored (inf: none collected)."""
        with self._lock:
            return self._acked_since + MARK_DELAY - now if self._acked else float("inf")

    def take_marks(self, eager: bool, stopping: bool) -> list[int]:
        """The seqs to store as delivered now; empty when the batch may still grow."""
        with self._lock:
            if not eager and not (
                len(self._acked) >= MARK_BATCH
                or not self._tokens  # nothing more is coming soon: don't make it wait
                or time.monotonic() - self._acked_since >= MARK_DELAY
                or stopping
            ):
                return []
            acked, self._acked = self._acked, []
        return acked

    def restore_marks(self, acked: list[int]) -> None:
        """Marks whose commit failed: kept for the next try."""
        with self._lock:
            self._acked[:0] = acked
