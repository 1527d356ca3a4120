"""The station's side of the central system's messages: parsing, the inbox the
pump thread drains, and what a batch of verdicts changes (reports, central-ack.json,
replays, retention). Real SQLite outbox in tmp_path; one test with a real broker."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from station.delivery import acks as acks_mod
from station.delivery.acks import PRUNE_EVERY, AckKeeper, BadMessage, Inbox, Replay, parse_acks, parse_replay
from station.delivery.mqtt import MqttLink
from station.delivery.outbox import Outbox, StoredRecord
from station.delivery.outbox_states import AckResult, AppAck
from station.errors import OutboxError
from station.records.head import CENTRAL_ACK


def recs(start: int, n: int) -> list[StoredRecord]:
    return [StoredRecord(s, f"r{s}", bytes([s % 256]) * 3) for s in range(start, start + n)]


@pytest.fixture
def ob(tmp_path: Path):
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


class Told:
    def __init__(self) -> None:
        self.emitted: list[str] = []
        self.errors: list[str] = []
        self.rejected: list[AppAck] = []


def keeper(state_dir: Path | None, told: Told, *, retention: float | None = None, on_rejected: bool = True) -> AckKeeper:
    return AckKeeper(state_dir, retention_s=retention, on_rejected=told.rejected.append if on_rejected else None,
                     emit=told.emitted.append, set_error=told.errors.append)


def central_ack(state: Path) -> dict | None:
    path = state / CENTRAL_ACK
    return json.loads(path.read_text()) if path.exists() else None


# -- parsing -----------------------------------------------------------------------

def test_an_ack_without_a_reason() -> None:
    assert parse_acks(b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "accepted"}]}')[0].reason == ""
    assert parse_acks(b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "rejected"}]}')[0].reason == \
        "(no reason given)"
    assert parse_acks(b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "rejected", "reason": ""}]}')[0].reason == \
        "(no reason given)"


@pytest.mark.parametrize("seq, ok", [(0, False), (1, True), (True, False), (1.0, False), (2**63 - 1, True),
                                     (2**63, False), ("1", False), (None, False)])
def test_seq_boundaries(seq: object, ok: bool) -> None:
    data = json.dumps({"acks": [{"seq": seq, "record_id": "r", "verdict": "accepted"}]}).encode()
    replay = json.dumps({"from_seq": seq, "to_seq": seq}).encode()
    if ok:
        assert parse_acks(data) == [AppAck(seq, "r", "accepted")]  # type: ignore[arg-type]
        assert parse_replay(replay) == Replay(seq, seq)  # type: ignore[arg-type]
    else:
        for parse, payload in ((parse_acks, data), (parse_replay, replay)):
            with pytest.raises(BadMessage):
                parse(payload)


@pytest.mark.parametrize("payload", [
    b'{"acks": {}}', b'{"acks": []}', b'{"acks": [{"seq": 1, "record_id": "", "verdict": "accepted"}]}',
    b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "maybe"}]}', b'{"acks": [{"seq": 1, "record_id": "a"}]}', b'{"acks": "x"}', b'{}', b'{"acks": [1]}', b'"acks"', b"\xff\xfe", b"{",
    b"[" * 100_000,  # nested past the recursion limit
    b'{"acks": [{"seq": 1, "record_id": 5, "verdict": "accepted"}]}',
    b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "accepted", "reason": 3}]}',
    b'{"acks": [{"seq": 1, "record_id": "a", "verdict": "accepted"}, {"seq": 0, "record_id": "b", '
    b'"verdict": "accepted"}]}',  # one bad entry: nothing of the message is used
])
def test_bad_ack_messages(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_acks(payload)


@pytest.mark.parametrize("payload, ok", [
    (b'{"from_seq": 1, "to_seq": 2}', Replay(1, 2)),
    (b'{"from_seq": 3, "to_seq": 3}', Replay(3, 3)),
    (b'{"from_seq": 4, "to_seq": 3}', "from_seq 4 is after to_seq 3"),
    (b'{"from_seq": 0, "to_seq": 3}', "from_seq must be"),
    (b'{"from_seq": 1}', "to_seq must be"),
    (b'{"to_seq": 1}', "from_seq must be"),
    (b'[]', "not a JSON object"),
])
def test_replay_messages(payload: bytes, ok: Replay | str) -> None:
    if isinstance(ok, Replay):
        assert parse_replay(payload) == ok
    else:  # the message names the field that is wrong
        with pytest.raises(BadMessage, match=f"^{ok}"):
            parse_replay(payload)


# -- the inbox, against a real broker ----------------------------------------------

def test_the_inbox_queues_acks_and_replays_in_order_and_ignores_the_rest(mosquitto, caplog) -> None:
    caplog.set_level(logging.WARNING, logger=acks_mod.__name__)
    woken = threading.Event()
    emitted: list[str] = []
    link = MqttLink(mosquitto.host, mosquitto.port, "inbox-under-test")
    inbox = Inbox(link, "st1", wake=woken.set, emit=emitted.append)
    assert (inbox.acks_topic, inbox.cmd_topic) == ("stations/st1/acks", "stations/st1/cmd")
    sender = MqttLink(mosquitto.host, mosquitto.port, "central-side")
    link.start()
    sender.start()
    try:
        assert link.wait_connected(10) and sender.wait_connected(10)
        inbox.subscribe()
        # Subscriptions are live once a message sent after them comes back.
        deadline = time.monotonic() + 10
        while not woken.is_set() and time.monotonic() < deadline:
            sender.publish("stations/st1/cmd/replay", b'{"from_seq": 9, "to_seq": 9}', qos=1)
            woken.wait(0.2)
        assert woken.is_set()
        sender.publish("stations/st1/cmd/replay", b'{"from_seq": 1, "to_seq": 2}', qos=1)
        for n in (1, 2):
            sender.publish("stations/st1/acks", json.dumps({"acks": [
                {"seq": n, "record_id": f"r{n}", "verdict": "accepted"}]}).encode(), qos=1)
        sender.publish("stations/st1/cmd/reboot", b"{}", qos=1)  # not a command the station knows
        sender.publish("stations/st1/acks", b"not json", qos=1)
        sender.publish("stations/st1/cmd/replay", b'{"from_seq": 3, "to_seq": 4}', qos=1)  # the last one
        got_acks: list[AppAck] = []
        got_replays: list[Replay] = []
        while Replay(3, 4) not in got_replays and time.monotonic() < deadline:
            woken.wait(0.2)
            woken.clear()
            a, r = inbox.take()
            got_acks += a
            got_replays += r
        assert got_acks == [AppAck(1, "r1", "accepted"), AppAck(2, "r2", "accepted")]
        assert got_replays[-2:] == [Replay(1, 2), Replay(3, 4)] and set(got_replays[:-2]) <= {Replay(9, 9)}
        assert [m.split(":")[0] for m in emitted] == ["ignored a message on stations/st1/cmd/reboot",
                                                      "ignored a message on stations/st1/acks"]
        assert logged(caplog, logging.WARNING) == [
            "ignored a message on stations/st1/cmd/reboot: unknown command",
            "ignored a message on stations/st1/acks: not JSON: Expecting value: line 1 column 1 (char 0)"]
        assert inbox.take() == ([], [])
        inbox.requeue([AppAck(5, "r5", "accepted")])
        inbox.requeue([AppAck(4, "r4", "accepted")])  # put back in front
        assert inbox.take() == ([AppAck(4, "r4", "accepted"), AppAck(5, "r5", "accepted")], [])
    finally:
        sender.stop()
        link.stop()


# -- what a batch of verdicts changes ------------------------------------------------

def test_verdicts_are_applied_reported_and_the_highest_accept_is_written(ob: Outbox, tmp_path: Path) -> None:
    ob.append(recs(1, 4))
    told = Told()
    k = keeper(tmp_path, told)
    requeued: list = []
    k.handle(ob, [AppAck(2, "r2", "accepted"), AppAck(3, "r3", "rejected", "why"), AppAck(1, "r1", "accepted")],
             [], requeued.extend)
    assert told.rejected == [AppAck(3, "r3", "rejected", "why")] and told.emitted == [] and told.errors == []
    assert central_ack(tmp_path) == {"seq": 2, "record_id": "r2", "sha256": ob.hash_at(2).hex()}
    assert requeued == [] and ob.counts().acked == 2


def logged(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == acks_mod.__name__ and r.levelno == level]


def test_rejections_and_mismatched_acks_are_logged(ob: Outbox, tmp_path: Path, caplog) -> None:
    ob.append(recs(1, 2))
    caplog.set_level(logging.INFO, logger=acks_mod.__name__)
    keeper(tmp_path, Told()).handle(ob, [AppAck(1, "r1", "rejected", "bad kid"), AppAck(2, "zz", "accepted")], [],
                                    list)
    assert logged(caplog, logging.ERROR) == [
        "the central system REJECTED record seq 1 (r1): bad kid; it stays in the outbox"]
    assert logged(caplog, logging.WARNING) == [
        "ignored an ack for seq 2: it names record zz, this station stored r2 there"]


def test_a_rejection_without_a_listener_goes_to_the_console(ob: Outbox, tmp_path: Path) -> None:
    ob.append(recs(1, 1))
    told = Told()
    keeper(None, told, on_rejected=False).handle(ob, [AppAck(1, "r1", "rejected", "why")], [], list)
    assert len(told.emitted) == 1 and "seq 1" in told.emitted[0]


def test_the_ack_file_only_moves_forward(ob: Outbox, tmp_path: Path) -> None:
    ob.append(recs(1, 4))
    k = keeper(tmp_path, Told())
    k.report(ob, AckResult(highest=(1, "r1", b"\x01" * 32)))  # the first accept is news
    assert central_ack(tmp_path)["seq"] == 1
    k.report(ob, AckResult(highest=(3, "r3", b"\x03" * 32)))
    k.report(ob, AckResult(highest=(2, "r2", b"\x02" * 32)))
    assert central_ack(tmp_path)["seq"] == 3
    (tmp_path / CENTRAL_ACK).unlink()
    k.report(ob, AckResult(highest=(3, "r3", b"\x03" * 32)))  # already written once
    assert central_ack(tmp_path) is None
    k.report(ob, AckResult(highest=(4, "r4", b"\x04" * 32)))
    assert central_ack(tmp_path) == {"seq": 4, "record_id": "r4", "sha256": "04" * 32}


def test_without_a_state_dir_nothing_is_written(ob: Outbox, tmp_path: Path) -> None:
    ob.append(recs(1, 2))
    told = Told()
    k = keeper(None, told)
    k.report(ob, AckResult(highest=(2, "r2", b"\x02" * 32), unknown=[AppAck(9, "r9", "accepted")]))
    assert len(told.errors) == 1
    assert not (tmp_path / CENTRAL_ACK).exists()


def test_an_unwritable_ack_file_is_a_warning_and_is_tried_again(ob: Outbox, tmp_path: Path, caplog) -> None:
    ob.append(recs(1, 2))
    state = tmp_path / "gone"
    k = keeper(state, Told())
    with caplog.at_level(logging.WARNING, logger=acks_mod.__name__):
        k.report(ob, AckResult(highest=(2, "r2", b"\x02" * 32)))
    (line,) = logged(caplog, logging.WARNING)
    assert line.startswith("could not write the central system's last ack beside the outbox: [Errno 2] ")
    state.mkdir()
    k.report(ob, AckResult(highest=(2, "r2", b"\x02" * 32)))
    assert central_ack(state)["seq"] == 2


def test_an_ack_beyond_the_outbox_end_is_an_error_and_is_remembered(ob: Outbox, tmp_path: Path) -> None:
    ob.append(recs(1, 3))
    told = Told()
    k = keeper(tmp_path, told)
    k.report(ob, AckResult(unknown=[AppAck(3, "r3", "accepted")]))  # the last seq held: not beyond
    assert told.errors == [] and central_ack(tmp_path) is None
    k.report(ob, AckResult(unknown=[AppAck(5, "x5", "accepted"), AppAck(9, "x9", "accepted"),
                                    AppAck(7, "x7", "accepted"), AppAck(2, "x2", "accepted")]))
    assert len(told.errors) == 1 and "seq 9" in told.errors[0] and "seq 3" in told.errors[0]
    assert central_ack(tmp_path) == {"seq": 9, "record_id": "x9", "sha256": "00" * 32}
    k.report(ob, AckResult(highest=(3, "r3", b"\x03" * 32)))  # behind what was remembered
    assert central_ack(tmp_path)["seq"] == 9


def test_a_failed_ack_batch_is_put_back_and_raised(ob: Outbox, tmp_path: Path) -> None:
    ob.append(recs(1, 1))
    batch = [AppAck(1, "r1", "accepted")]
    requeued: list = []
    ob._db.close()  # the disk went away under the publisher
    with pytest.raises(OutboxError):
        keeper(tmp_path, Told()).handle(ob, batch, [Replay(1, 1)], requeued.extend)
    assert requeued == batch


def test_pruning_runs_at_start_then_once_per_period_and_only_with_a_retention(ob: Outbox, tmp_path: Path,
                                                                              caplog) -> None:
    ob.append(recs(1, 3))
    ob.apply_acks([AppAck(s, f"r{s}", "accepted") for s in (1, 2, 3)], now=time.time() - 100)
    keeper(tmp_path, Told()).prune_due(ob, 0.0)
    assert len(list(ob.records())) == 3  # no retention: kept for ever
    k = keeper(tmp_path, Told(), retention=200.0)
    k.prune_due(ob, 0.0)
    assert len(list(ob.records())) == 3  # acked 100 s ago: inside the window
    k.retention = 50.0
    k.prune_due(ob, PRUNE_EVERY - 0.001)
    assert len(list(ob.records())) == 3  # not yet due
    caplog.set_level(logging.INFO, logger=acks_mod.__name__)
    k.prune_due(ob, PRUNE_EVERY)
    assert [r.seq for r in ob.records()] == [3]  # the newest stays
    assert logged(caplog, logging.INFO) == ["pruned 2 acknowledged record(s) past the retention window"]
    assert PRUNE_EVERY == 3600.0


def test_a_replay_serves_what_is_held_in_batches_and_says_what_is_not(ob: Outbox, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger=acks_mod.__name__)
    ob.append(recs(1, 9))
    ob.apply_acks([AppAck(s, f"r{s}", "accepted") for s in (1, 2, 5)], now=1.0)
    ob.prune(2.0)  # held: 3, 4, 6..9
    told = Told()
    k = keeper(tmp_path, told)
    assert k.status_extra() == {} and k.last_replay is None and k.replay_batch(ob, 10) == []
    k.handle(ob, [], [Replay(1, 7), Replay(9, 12)], list)
    assert told.emitted == ["replay of seq 1..7 requested by the central system; no longer held here: 1..2, 5",
                            "replay of seq 9..12 requested by the central system; no longer held here: 10..12"]
    assert k.status_extra() == {"last_replay": {"from_seq": 9, "to_seq": 12, "not_held": [[10, 12]]}}
    batches = []
    while batch := k.replay_batch(ob, 2):
        batches.append([s for s, _, _ in batch])
    assert batches == [[3, 4], [6, 7], [9]]
    k.request_replay(ob, Replay(3, 4))
    assert told.emitted[-1] == "replay of seq 3..4 requested by the central system"
    assert k.last_replay == {"from_seq": 3, "to_seq": 4, "not_held": []}
    assert logged(caplog, logging.INFO) == [
        "replay of seq 1..7 requested by the central system; not held: 1..2, 5",
        "replay of seq 9..12 requested by the central system; not held: 10..12",
        "replay of seq 3..4 requested by the central system; not held: none"]
    assert k.replay_batch(ob, 1) == [(3, "r3", bytes([3]) * 3)]
    assert k.replay_batch(ob, 5) == [(4, "r4", bytes([4]) * 3)]
