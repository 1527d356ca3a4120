"""The publisher's in-flight bookkeeping: when a PUBACK wakes the pump, when the
collected PUBACKs are stored, and what a new connection forgets. Pure state, no
I/O: the publisher tests drive the same code over a real broker."""

from __future__ import annotations

import time

from station.delivery.inflight import MARK_BATCH, MARK_DELAY, InFlight
from station.delivery.mqtt import Ack

OK = Ack(1, 0, "Success")
REFUSED = Ack(1, 135, "Not authorized")


def connected(window: int = 20, ahead: int = 100) -> InFlight:
    f = InFlight(window)
    f.connected(window, ahead)
    assert f.take_news() == (True, [])
    return f


def test_capacity_is_the_window_plus_what_paho_holds_beyond_it() -> None:
    f = connected(20, 100)
    assert f.room(reserved=1) == (119, 1)
    tokens = f.add(1, 119)
    assert tokens is not None and len(tokens) == 119
    assert f.room(reserved=1) == (0, 1)
    assert f.refill_at == 30
    g = connected(20, 0)  # paho cannot keep to the window: no more than the window
    assert g.room(reserved=0) == (20, 1) and g.refill_at == 5


def test_a_burst_of_pubacks_wakes_the_pump_once_per_step() -> None:
    f = connected(20, 100)
    tokens = f.add(1, 120)
    assert tokens is not None
    assert f.on_ack(1, tokens[0], 1, OK)  # the first starts the mark timer
    # Not yet a chunk to refill (120 - 30): no wake for the next 28.
    assert not any(f.on_ack(i + 1, tokens[i], 1, OK) for i in range(1, 29))
    assert not f.on_ack(30, tokens[29], 1, OK)  # 90 in flight: a refill is due, but the pump was asked
    f.take_news()  # the pump's next step begins
    assert f.on_ack(31, tokens[30], 1, OK)  # still due: asked again, once
    assert not f.on_ack(32, tokens[31], 1, OK)
    f.take_news()
    assert f.on_ack(1, tokens[32], 1, REFUSED)  # a refusal always wakes it
    assert f.take_news() == (False, [(1, REFUSED)])


def test_marks_wait_for_a_batch_a_delay_or_an_empty_window() -> None:
    f = connected(20, 0)
    tokens = f.add(1, 20)
    assert tokens is not None
    f.on_ack(1, tokens[0], 1, OK)
    assert f.take_marks(eager=False, stopping=False) == []  # more in flight, just collected
    assert f.take_marks(eager=False, stopping=True) == [1]  # stopping: store now
    f.on_ack(2, tokens[1], 1, OK)
    assert f.mark_due_in(time.monotonic()) <= MARK_DELAY
    time.sleep(MARK_DELAY)
    assert f.take_marks(eager=False, stopping=False) == [2]  # the delay has passed
    assert f.mark_due_in(time.monotonic()) == float("inf")  # nothing collected
    for i in range(2, 20):
        f.on_ack(i + 1, tokens[i], 1, OK)
    assert f.empty
    assert f.take_marks(eager=False, stopping=False) == list(range(3, 21))  # nothing left in flight


def test_a_full_batch_of_marks_is_stored_at_once_not_one_earlier() -> None:
    f = connected(20, MARK_BATCH)
    tokens = f.add(1, MARK_BATCH + 1)
    assert tokens is not None
    for i in range(MARK_BATCH - 1):
        f.on_ack(i + 1, tokens[i], 1, OK)
    assert f.take_marks(eager=False, stopping=False) == []  # one short, still in flight
    f.on_ack(MARK_BATCH, tokens[MARK_BATCH - 1], 1, OK)
    assert f.take_marks(eager=False, stopping=False) == list(range(1, MARK_BATCH + 1))
    f.restore_marks([7, 8])  # a failed commit keeps them for the next try
    assert f.take_marks(eager=True, stopping=False) == [7, 8]


def test_a_new_connection_forgets_what_was_in_flight_but_old_acks_still_count() -> None:
    f = connected(20, 0)
    old = f.add(1, 3)
    assert old is not None
    f.connected(20, 0)  # epoch 2
    assert f.room(reserved=0) is None  # the pump re-sends from the start first
    assert f.take_news() == (True, [])
    assert f.add(1, 1) is None  # a batch read under the old connection is not sent
    new = f.add(2, 1)
    assert new is not None and f.room(reserved=0) == (19, 2)
    f.on_ack(5, old[0], 1, OK)  # an ack of the old connection: delivered, frees nothing now
    assert f.room(reserved=0) == (19, 2)
    assert f.take_marks(eager=True, stopping=False) == [5]
    f.discard(new)
    assert f.empty


def test_no_room_until_the_connect_is_handled_nor_after_a_disconnect() -> None:
    # The link reports "connected" just before its callback reaches connected():
    # records sent in that moment went out again after the connect's re-send.
    f = InFlight(20)
    assert f.room(reserved=0) is None
    f.connected(20, 0)
    assert f.take_news() == (True, [])
    assert f.room(reserved=0) == (20, 1)
    f.disconnected()
    assert f.room(reserved=0) is None
    f.connected(20, 0)
    f.take_news()
    assert f.room(reserved=0) == (20, 2)
