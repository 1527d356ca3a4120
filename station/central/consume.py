"""`station consume`: the reference central consumer.

Records arrive on paho's network thread and wait in a queue; one worker takes
them in batches: verify, store in one transaction, commit, then (only then)
the MQTT PUBACK and the application ack to `stations/<id>/acks`. A crash at
any point before the commit leaves the messages unacknowledged in the broker's
persistent session, so they come again; after it, they are already stored
and the repeat is a duplicate. Nothing is lost and nothing is stored twice.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from station import config
from station.app import console
from station.central.gaps import GapWatch
from station.central.ingest import Incoming, Ingestor, Outcome
from station.central.store import Store, db_errors, open_store
from station.central.trust import TrustStore
from station.errors import StationError
from station.delivery.topics import acks_topic, cmd_topic

DEFAULT_DB = "consumer.sqlite"
BATCH_MAX = 500
GAP_CHECK_EVERY = 0.2  # seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help=f"postgresql://USER@HOST:PORT/DB, or a SQLite file (default ./{DEFAULT_DB})")
    p.add_argument("--trust", metavar="FILE", help="trust store (TOML): each station's production and simulation keys")
    p.add_argument("--key", action="append", default=[], metavar="JWK",
                   help="trusted public key (bound on first use); default: the keys in the config")
    p.add_argument("--host", help="broker host (default: mqtt.host from the config)")
    p.add_argument("--port", type=int, help="broker port (default: mqtt.port from the config)")
    p.add_argument("--group", metavar="NAME",
                   help="share the records with the other consumers of group NAME ($share/NAME/stations/+/records)")
    p.add_argument("--client-id", metavar="ID",
                   help="MQTT client id; keep it across restarts so the broker keeps what arrives meanwhile "
                   "(default station-consume[-GROUP]-<hostname>; give each consumer of a group its own)")
    p.add_argument("--tls-ca", metavar="PEM", help="CA file for mutual TLS (with --tls-cert and --tls-key)")
    p.add_argument("--tls-cert", metavar="PEM", help="this consumer's certificate (CN consumer:<name>)")
    p.add_argument("--tls-key", metavar="PEM", help="this consumer's private key (mode 0600)")
    p.add_argument("--replay-grace", type=float, default=1.0, metavar="S",
                   help="a hole in a station's seqs open this long is a gap: ask for a replay (default 1)")
    p.add_argument("--replay-interval", type=float, default=5.0, metavar="S",
                   help="at most one replay request per station every S seconds (default 5)")
    p.add_argument("--replay-max", type=int, default=1000, metavar="N",
                   help="ask for at most N seqs in one replay request (default 1000)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="give up at start if the broker has not accepted the subscription within S seconds (default 10)")
    p.add_argument("--count", type=int, metavar="N", help="stop after storing N new records (tests, benchmarks)")
    p.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")


class Consumer:
    """The worker: batches from ``inbox`` into ``store``; ``send`` publishes, ``ack`` PUBACKs."""

    def __init__(self, trust: TrustStore, store: Store, send: Callable[[str, bytes], None],
                 ack: Callable[[object], None], gaps: GapWatch, log: Callable[[str, str], None]) -> None:
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self.ingestor = Ingestor(trust, store)
        self.store, self.send, self.ack, self.gaps, self.log = store, send, ack, gaps, log
        self.stored = self.duplicates = self.rejected = 0
        self.stop = threading.Event()
        self._db_errors = db_errors()
        self._touched: set[str] = set()  # stations with new rows since the last gap check
        self._touched_lock = threading.Lock()
        self.failure: str | None = None

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a bug: stop unacknowledged (the broker redelivers) and say so
            self.failure = f"{type(exc).__name__}: {exc}"

    def _loop(self) -> None:
        while not self.stop.is_set():
            batch = self._take(0.2)
            if batch:
                outcome = self._commit(batch)
                if outcome is None:
                    continue  # database down: the batch was put back
                self._publish(batch, outcome)

    def gap_loop(self) -> None:
        """On its own thread and connection, so a check never delays a record's ack."""
        while not self.stop.wait(GAP_CHECK_EVERY):
            try:
                self._gap_check()
            except Exception as exc:  # a bug here must not pass silently either
                self.failure = f"{type(exc).__name__}: {exc}"
                self.stop.set()

    def _take(self, wait: float) -> list[Incoming]:
        try:
            batch = [self.inbox.get(timeout=wait)]
        except queue.Empty:
            return []
        while len(batch) < BATCH_MAX:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[Incoming]) -> Outcome | None:
        try:
            self.store.begin()
            outcome = self.ingestor.run(batch)
            self.store.commit()
            return outcome
        except self._db_errors as exc:
            self._rollback()
            self.log("fault", f"database {self.store.where} failed ({' '.join(str(exc).split())}); "
                     f"{len(batch)} record(s) not acknowledged, retrying in 1 s")
            self.stop.wait(1.0)
            self._reconnect()
            for msg in batch:  # the same order: acks stay in the order the broker sent
                self.inbox.put(msg)
            return None

    def _rollback(self) -> None:
        try:
            self.store.rollback()
        except Exception:  # the connection is gone; _reconnect replaces it
            pass

    def _reconnect(self) -> None:
        reopen = getattr(self.store, "reopen", None)
        if reopen is not None:
            try:
                reopen()
            except StationError as exc:
                self.log("fault", str(exc))

    def _publish(self, batch: list[Incoming], outcome: Outcome) -> None:
        # The application acks go out BEFORE the PUBACKs, on the same connection:
        # if the broker got a PUBACK it got the acks before it. The other order
        # lost the acks of a batch when the consumer died between the two (the
        # broker, PUBACK in hand, never redelivers them to be acked again).
        for station, entries in outcome.acks.items():
            self.send(acks_topic(station), json.dumps({"acks": entries}, separators=(",", ":")).encode())
        for msg in batch:
            if msg.token is not None:
                self.ack(msg.token)
        for alarm in outcome.alarms:
            self.log("fault", alarm)
        self.stored += outcome.stored
        self.duplicates += outcome.duplicates
        self.rejected += outcome.rejected
        with self._touched_lock:
            self._touched |= outcome.touched

    def _gap_check(self) -> None:
        with self._touched_lock:
            touched, self._touched = self._touched, set()
        gap_store = self.gaps.store
        try:
            asks = self.gaps.check(touched)
            gap_store.commit()  # ends PostgreSQL's implicit read transaction
        except self._db_errors:
            with self._touched_lock:
                self._touched |= touched
            try:
                gap_store.rollback()
            except Exception:  # the connection is gone: open a new one
                reopen = getattr(gap_store, "reopen", None)
                if reopen is not None:
                    try:
                        reopen()
                    except StationError:
                        pass
            return
        for station, lo, hi in asks:
            self.log("warn", f"{station}: seq {lo}..{hi} missing; asking the station to replay them")
            self.send(cmd_topic(station) + "/replay", json.dumps({"from_seq": lo, "to_seq": hi}).encode())


def _trust(args) -> TrustStore:
    from station.central import verify_cli

    return verify_cli.trust_store(args)


def _tls(args):
    given = [args.tls_ca, args.tls_cert, args.tls_key]
    if not any(given):
        return None
    if not all(given):
        raise StationError("--tls-ca, --tls-cert and --tls-key go together", "give all three, or none")
    from station.delivery.tls import load_client_tls

    return load_client_tls(Path(args.tls_ca), Path(args.tls_cert), Path(args.tls_key), station_id=None)


def run(args) -> int:
    from station.delivery.subscriber import MqttSubscriber

    trust = _trust(args)
    tls = _tls(args)
    host, port = args.host, args.port
    if host is None or port is None:
        cfg = config.load(config.resolve_path(args.config))
        host, port = host or cfg.mqtt.host, port or cfg.mqtt.port
    store = open_store(args.db, Path(DEFAULT_DB))
    gaps = GapWatch(open_store(args.db, Path(DEFAULT_DB)), grace=args.replay_grace, interval=args.replay_interval, max_span=args.replay_max)
    topic = f"$share/{args.group}/stations/+/records" if args.group else "stations/+/records"
    client_id = args.client_id or "-".join(["station-consume", *([args.group] if args.group else []),
                                            socket.gethostname()])
    sub_box: list[MqttSubscriber] = []

    def send(t: str, payload: bytes) -> None:
        sub_box[0].publish(t, payload, qos=1)

    consumer = Consumer(trust, store, send, lambda mid: sub_box[0].ack(mid), gaps, console.say)

    def on_message(payload: bytes, props) -> None:
        consumer.inbox.put(Incoming(payload, props.topic, props.mid))

    def on_problem(what: str, fix: str) -> None:
        console.say("fault", f"broker: {what}. Fix: {fix}")

    sub = MqttSubscriber(host, port, topic, client_id, on_message, tls=tls, manual_ack=True, on_problem=on_problem)
    sub_box.append(sub)
    try:
        sub.start(timeout=args.connect_timeout)
    except StationError:
        store.close()
        gaps.store.close()
        raise
    console.say("info", f"consuming {topic} from {host}:{port} as {client_id} into {store.kind} {store.where}")
    worker = threading.Thread(target=consumer.run, name="consume", daemon=True)
    worker.start()
    gap_thread = threading.Thread(target=consumer.gap_loop, name="gaps", daemon=True)
    gap_thread.start()
    # systemd stops with SIGTERM: finish the batch in hand and report, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop.set())
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while worker.is_alive() and not consumer.stop.is_set():
            if args.count and consumer.stored >= args.count:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            worker.join(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.stop.set()
        worker.join(5.0)
        gap_thread.join(5.0)
        sub.stop()
        store.close()
        gaps.store.close()
    console.say("ok" if not consumer.rejected else "warn",
                f"stored {consumer.stored} new record(s), {consumer.duplicates} duplicate(s), "
                f"{consumer.rejected} rejected")
    if consumer.failure:
        raise StationError(f"the consumer stopped on an internal error ({consumer.failure}); records not yet "
                           f"acknowledged stay in the broker session", "report it, then restart the consumer")
    return 0
