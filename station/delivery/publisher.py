"""Outbox -> broker -> central system. The outbox is the only source of truth:
paho's RAM queue is lost with the process, so anything not acknowledged is
re-read from disk.

Two acknowledgements per record: the broker's PUBACK makes it *published*; the
central system's application ack (stations/<id>/acks) makes it *acked* or
*rejected*. Published records not acked within ``ack_timeout_s`` are sent again,
in seq order. ``stations/<id>/cmd/replay`` re-publishes a range still held.

Threads: paho's network thread only records PUBACKs (delivery/inflight.py), acks
and replay requests (delivery/acks.py) and connection changes; the pump thread
owns the Outbox connection (sqlite connections must not cross threads),
publishes, and stores PUBACKs and acks in batched commits.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from station.delivery import status as status_msg
from station.delivery.acks import AckKeeper, Inbox
from station.delivery.inflight import InFlight
from station.delivery.resend import RefusalRetry, ResendClock
from station.delivery import link_problems as problems
from station.delivery.mqtt import Ack, MqttLink, Will
from station.delivery.topics import records_topic, status_topic
from station.delivery.outbox import Outbox, wait_drained
from station.delivery.outbox_states import AppAck
from station.delivery.tls import ClientTls, Credentials
from station.errors import OutboxError, PublishError, StationError

_log = logging.getLogger(__name__)
CONTENT_TYPE = 'application/cose; cose-type="cose-sign1"'
_IDLE_POLL = 0.5  # also catches records appended without notify()
# Records handed to paho beyond the window (see delivery/inflight.py): on reconnect
# paho sends what it held again, so this also bounds the duplicates per reconnect.
_AHEAD = 100
_READ_AHEAD = 200  # records per outbox read


class Publisher:
    def __init__(
        self, *, outbox_path: Path, station_id: str, host: str, port: int, version: str,
        client_id: str | None = None, window: int = 20, keepalive: int = 30,
        tls: ClientTls | None = None, credentials: Credentials | None = None,
        on_event: Callable[[str], None] | None = None,
        on_delivered: Callable[[Sequence[int]], None] | None = None,
        ack_timeout_s: float = 30.0, heartbeat_s: float = 30.0, retention_s: float | None = None,
        state_dir: Path | None = None, on_rejected: Callable[[AppAck], None] | None = None,
    ) -> None:
        """``retention_s``: acked records older than this are pruned (None keeps
        them); ``state_dir``: where central-ack.json is kept (records/head.py);
        ``on_rejected``: told once per record the central system rejects."""
        if not station_id or any(c in station_id for c in "+#/"):
            raise PublishError(f"station id {station_id!r} cannot be used in a topic", "use letters, digits, - and _")
        self.outbox_path = Path(outbox_path)
        self.station_id = station_id
        self.version = version
        self.configured_window = max(1, window)
        # The window is lowered to the broker's Receive Maximum on connect (see _handle_connect).
        self._flight = InFlight(self.configured_window)
        self._window_told = False
        self.records_topic = records_topic(station_id)
        self.status_topic = status_topic(station_id)
        self._on_event = on_event
        self._on_delivered = on_delivered
        self._resend = ResendClock(ack_timeout_s)  # the wait grows while no acks arrive
        self._keeper = AckKeeper(None if state_dir is None else Path(state_dir), retention_s=retention_s,
                                 on_rejected=on_rejected, emit=self._emit, set_error=self._set_error)

        self._wake = threading.Event()
        self._draining = threading.Event()  # stop() called: publish nothing new
        self._stopping = threading.Event()
        self._error_lock = threading.Lock()
        self._error: str | None = None  # written by both threads (birth acks arrive on paho's)
        # Pump-thread only:
        self._cursor = 0  # highest seq read for publishing on this connection
        self._unsent: deque[tuple[int, str, bytes]] = deque()  # read up to the cursor, not yet published
        self._retry = RefusalRetry()  # after a refusal: when to re-send from the oldest

        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._link = MqttLink(
            host, port, client_id or f"station-{station_id}", keepalive=keepalive, tls=tls, credentials=credentials,
            will=Will(self.status_topic, json.dumps(status_msg.OFFLINE).encode(), retain=True),
            max_inflight=self.configured_window, on_connect=self._handle_connect, on_disconnect=self._handle_disconnect,
            on_problem=self._handle_link_problem,
        )
        self._beacon = status_msg.Beacon(self._link, self.status_topic, version, heartbeat_s,
                                         set_error=self._set_error, wake=self._wake.set)
        self._inbox = Inbox(self._link, station_id, wake=self._wake.set, emit=self._emit)

    # -- public --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def window(self) -> int:
        """Records in flight at most: the configured window, lowered to the broker's Receive Maximum."""
        return self._flight.window

    @property
    def last_error(self) -> str | None:
        with self._error_lock:
            error = self._error
        return error or self._link.last_error

    def start(self) -> None:
        """Returns once the outbox is open; a broker that is down is retried in the
        background. A Publisher is started once; after stop() make a new one."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"publisher-{self.station_id}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        self._link.start()

    def notify(self) -> None:
        """New records were appended (the status's counts change too)."""
        self._beacon.touch()
        self._wake.set()

    def set_status(self, **fields: object) -> None:
        """Merge the station's fields (state, reason, devices, ...) into the retained
        status and republish it (from the pump thread, once connected)."""
        if self._beacon.set(fields):
            self._wake.set()

    def wait_drained(self, timeout: float, acked: bool = False) -> bool:
        """Wait until every record is published (``acked``: accepted or rejected
        by the central system)."""
        return wait_drained(self.outbox_path, timeout, acked)

    def stop(self, timeout: float = 5.0) -> None:
        """Let in-flight acks arrive (bounded), store the delivered-marks, then
        disconnect so that the broker publishes the 'offline' will."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        self._draining.set()
        while time.monotonic() < deadline and self._link.connected and not self._flight.empty:
            time.sleep(0.01)
        self._stopping.set()
        self._wake.set()
        self._thread.join(max(0.1, deadline - time.monotonic()))
        self._thread = None
        self._link.stop(send_will=True)

    # -- network thread ------------------------------------------------------------

    def _handle_connect(self, session_present: bool) -> None:
        window = self._link.window
        self._beacon.reset()
        self._flight.connected(window, _AHEAD if self._link.queues_beyond_window else 0)
        self._inbox.subscribe()  # every connect: a broker without persistence forgets them
        self._emit(f"connected to {self._link.host}:{self._link.port}")
        if window < self.configured_window and not self._window_told:
            self._window_told = True
            self._emit(
                f"mqtt.window {self.configured_window} is above the broker's Receive Maximum "
                f"{self._link.receive_maximum}: sending at most {window} records at a time"
            )
        self._wake.set()

    def _handle_disconnect(self, reason: str) -> None:
        self._flight.disconnected()
        self._emit(f"disconnected from {self._link.host}:{self._link.port} ({reason})")
        self._wake.set()

    def _handle_link_problem(self, what: str, fix: str) -> None:
        self._emit(f"{what}; records are kept in the outbox and sent when the link is back. Fix: {fix}")

    def _handle_ack(self, seq: int, token: int, epoch: int, ack: Ack) -> None:
        if self._flight.on_ack(seq, token, epoch, ack):
            self._wake.set()

    # -- pump thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            ob = Outbox(self.outbox_path, synchronous="NORMAL")  # marks and acks only: see Outbox
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                self._wake.wait(self._sleep_time())
                self._wake.clear()
                stopping = self._stopping.is_set()
                try:
                    self._step(ob)
                except StationError as exc:
                    # A sick disk or a refusing broker: expected, told in one line; the
                    # records stay in the outbox and the next step retries.
                    self._set_error(str(exc))
                    self._stopping.wait(1.0)
                except Exception as exc:  # noqa: BLE001
                    # A bug or a library surprise must not kill the publisher either,
                    # but whoever fixes it needs the traceback, once per distinct error
                    # (the step is retried every second).
                    if self._set_error(f"publisher error: {exc!r}"):
                        _log.exception("unexpected error in the publisher; retrying in 1 s")
                    self._stopping.wait(1.0)
                if stopping:
                    return
        finally:
            ob.close()

    def _sleep_time(self) -> float:
        now, t = time.monotonic(), _IDLE_POLL
        if self._retry.at is not None:
            t = min(t, self._retry.at - now)
        t = min(t, self._flight.mark_due_in(now))
        t = min(t, self._beacon.sleep_time(now))
        return max(0.0, t)

    def _step(self, ob: Outbox) -> None:
        fresh, refused = self._flight.take_news()
        if refused:
            self._note_refusals(refused)
        acks_in, replays = self._inbox.take()
        if acks_in:
            self._resend.answered()  # the central side answers again
        if acks_in or replays:
            self._beacon.touch()
            self._keeper.handle(ob, acks_in, replays, requeue=self._inbox.requeue)
        if fresh:
            # Store marks first so that the re-send below skips what is already acked.
            self._flush_acks(ob)
            self._rewind()
            self._beacon.publish_due(ob, self._keeper.status_extra(), force=True)  # the birth: before the backlog
        now = time.monotonic()
        if self._retry.due(now):
            if self._flight.empty:  # wait for the window to empty, so the re-send keeps seq order
                self._flush_acks(ob)
                self._retry.done()
                self._rewind()
        elif not self._retry.pending and self._resend.time_to_check(now):
            self._resend_overdue(ob)
        if not self._draining.is_set():
            self._fill(ob)
        self._flush_acks(ob, eager=False)
        if self._link.connected:
            self._beacon.publish_due(ob, self._keeper.status_extra(), force=False)
        self._keeper.prune_due(ob, now)

    def _resend_overdue(self, ob: Outbox) -> None:
        """Published but not acked in time: go back to the start, once the window
        is empty, so the overdue records go out again in seq order."""
        if not self._resend.overdue(ob.oldest_unacked_publish(), time.time()):
            return
        if self._flight.quiet and self._cursor > 0:
            _log.info("records published more than %.0f s ago are not acknowledged yet; sending them again",
                      self._resend.wait)
            self._rewind()
            self._resend.back_off()

    def _next_batch(self, ob: Outbox, room: int) -> list[tuple[int, str, bytes]]:
        """A replay first (the central side is waiting for it), then records not yet
        published or overdue for an ack, in seq order."""
        rows = self._keeper.replay_batch(ob, room)
        if rows:
            return rows
        if not self._unsent:
            rows = ob.pending_rows(after_seq=self._cursor, limit=max(room, _READ_AHEAD),
                                   resend_before=self._resend.resend_before(time.time()))
            if rows:
                self._cursor = rows[-1][0]
                self._unsent.extend(rows)
        take = self._unsent
        return [take.popleft() for _ in range(min(room, len(take)))]

    def _rewind(self) -> None:
        """Publish again from the oldest record not yet delivered (or overdue)."""
        self._cursor = 0
        self._unsent.clear()

    def _fill(self, ob: Outbox) -> None:
        while not self._retry.pending and self._link.connected:
            free = self._flight.room(reserved=self._beacon.pending)
            if free is None:
                return  # reconnected meanwhile; the next step re-sends from the start
            room, epoch = free
            # Refill in chunks, not one slot per ack: each refill costs a query.
            if room < self._flight.refill_at and room < self._flight.capacity:
                return
            batch = self._next_batch(ob, room)
            if not batch:
                return
            tokens = self._flight.add(epoch, len(batch))
            if tokens is None:
                return
            publish, topic, on_ack = self._link.publish, self.records_topic, self._handle_ack
            for i, (seq, _, data) in enumerate(batch):
                try:
                    publish(topic, data, qos=1, content_type=CONTENT_TYPE, user_properties=[("seq", str(seq))],
                            on_ack=partial(on_ack, seq, tokens[i], epoch))
                except PublishError:
                    self._flight.discard(tokens[i:])
                    self._unsent.extendleft(reversed(batch[i:]))  # the next step tries them again
                    raise

    def _flush_acks(self, ob: Outbox, eager: bool = True) -> None:
        acked = self._flight.take_marks(eager, self._stopping.is_set())
        if not acked:
            return
        try:
            ob.mark_delivered(acked)
        except OutboxError:
            self._flight.restore_marks(acked)  # a later step retries the mark
            raise
        self._retry.delivered()
        self._beacon.touch()
        if not self._retry.pending:
            with self._error_lock:
                recovered, self._error = self._error is not None, None
            if recovered:
                self._emit("records are being delivered again")
        if self._on_delivered is not None:
            try:
                self._on_delivered(acked)
            except Exception:  # noqa: BLE001 - an observer must not stop delivery
                _log.exception("on_delivered callback failed")

    def _note_refusals(self, refused: list[tuple[int, Ack]]) -> None:
        seq, ack = min(refused, key=lambda r: r[0])
        why = problems.publish_refused(self.records_topic, seq, ack.reason_code, ack.reason)
        delay = self._retry.refused(time.monotonic())
        self._set_error(f"{why}; the records stay in the outbox, next try in {delay:.1f} s")

    def _set_error(self, msg: str) -> bool:
        """Record the current problem; tell it only when it changed. Returns whether it did.

        Called from the pump thread and from paho's network thread (a refused birth)."""
        with self._error_lock:
            changed = msg != self._error
            self._error = msg
        if changed:  # outside the lock: an observer may call back into the publisher
            self._emit(msg)
        return changed

    def _emit(self, msg: str) -> None:
        if self._on_event is not None:
            try:
                self._on_event(msg)
            except Exception:  # noqa: BLE001 - an observer must not stop delivery
                _log.exception("on_event callback failed")
