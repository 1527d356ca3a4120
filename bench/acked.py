"""The pipeline with application acks, the backlog drain after an outage, and the
ack round trip; used by bench/pipeline.py (one broker, one run).

The central side here is a minimal in-bench consumer (the reference consumer,
`station consume`, has its own bench): it verifies each record's Ed25519
signature and acks on stations/<id>/acks at once, batching whatever arrived meanwhile, as the protocol says
(docs/MQTT.md). It runs in its own process, as a central system would, so its
CPU is not taken from the station's GIL.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from station.app.broker import Mosquitto
from station.delivery.mqtt import MessageProperties, MqttLink, MqttSubscriber
from station.delivery.outbox import Outbox
from station.delivery.publisher import Publisher
from station.records.chain import RecordWriter
from station.errors import RecordError
from station.records.cose import Signer, verify

STATION = "bench-acks"
ACK_IDLE_S = 0.05  # the ack thread's longest sleep; a record wakes it at once


def _consumer(host: str, port: int, key_bytes: bytes, ready, stop) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    import cbor2

    pub = Ed25519PublicKey.from_public_bytes(key_bytes)
    from station.records.keys import kid_for

    keys = {kid_for(pub): pub}
    me = f"bench-central-{os.getpid()}"  # its own session: nothing queued for an earlier run
    out = MqttLink(host, port, me + "-out", session_expiry=0)
    out.start()
    out.wait_connected(10)
    held: list[dict] = []
    cond = threading.Condition()

    skip = bool(os.environ.get("BENCH_CONSUMER_NO_VERIFY"))  # diagnosis: is the consumer the limit?

    def on_record(data: bytes, props: MessageProperties) -> None:
        try:
            p = cbor2.loads(cbor2.loads(data).value[2] if skip else verify(data, keys).payload)
        except RecordError:
            return  # another run's record (another key): not ours to ack
        with cond:
            held.append({"seq": p["seq"], "record_id": p["record_id"], "verdict": "accepted"})
            cond.notify()

    sub = MqttSubscriber(host, port, f"stations/{STATION}/records", me + "-in", on_record, session_expiry=0)
    sub.start()
    ready.set()
    while not stop.is_set():
        # Acks go out as soon as there are any; under load, whatever arrived
        # meanwhile goes in the same message (the batching is free).
        with cond:
            cond.wait_for(lambda: bool(held), ACK_IDLE_S)
            batch, held[:] = list(held), []
        if batch:
            out.publish(f"stations/{STATION}/acks", json.dumps({"acks": batch}).encode(), qos=1)
    sub.stop()
    out.stop()


class Central:
    def __init__(self, broker: Mosquitto, signer_key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization

        raw = signer_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ctx = mp.get_context("spawn")
        self.ready, self.stop_ev = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=_consumer, args=(broker.host, broker.port, raw, self.ready, self.stop_ev),
                                daemon=True)

    def __enter__(self) -> "Central":
        self.proc.start()
        if not self.ready.wait(20):
            raise SystemExit("bench consumer did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_ev.set()
        self.proc.join(10)


class Progress:
    """A count that grows on one thread while another waits for it to reach a
    value. The waiter is woken once, when its value is reached: a bench that polled
    (a sleep of 0.2-10 ms in a loop) took the GIL from the publisher it measured
    hundreds of times a second, which a station's own threads never do."""

    def __init__(self) -> None:
        self.n = 0
        self._want: int | None = None
        self._cv = threading.Condition()

    def add(self, k: int = 1) -> None:
        with self._cv:
            self.n += k
            if self._want is not None and self.n >= self._want:
                self._want = None
                self._cv.notify_all()

    def wait(self, want: int, timeout: float) -> bool:
        with self._cv:
            if self.n < want:
                self._want = want
                self._cv.wait_for(lambda: self.n >= want, timeout)
            return self.n >= want


class TimedPublisher(Publisher):
    """Notes when each record is handed to paho and when its application ack arrives."""

    def __init__(self, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kw)
        self.sent_at: dict[int, float] = {}
        self.app_acked_at: dict[int, float] = {}
        self.app_acked = Progress()
        inner = self._inbox._handle

        def handle(client, userdata, msg):  # type: ignore[no-untyped-def]
            now = time.perf_counter()
            inner(client, userdata, msg)
            if msg.topic.endswith("/acks"):
                new = 0
                for a in json.loads(msg.payload)["acks"]:
                    if a["seq"] not in self.app_acked_at:
                        self.app_acked_at[a["seq"]] = now
                        new += 1
                self.app_acked.add(new)

        self._link.client.on_message = handle

    def _next_batch(self, ob, room):  # type: ignore[no-untyped-def]
        rows = super()._next_batch(ob, room)
        now = time.perf_counter()
        for seq, _, _ in rows:
            self.sent_at.setdefault(seq, now)
        return rows


def _wait_acked(pub: TimedPublisher, db: Path, n: int, timeout: float) -> bool:
    """All n acks arrived (woken once), then stored: the pump commits them right after."""
    deadline = time.monotonic() + timeout
    if not pub.app_acked.wait(n, timeout):
        return False
    with Outbox(db) as box:
        while box.waiting(acked=True):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
    return True


def _publisher(broker: Mosquitto, db: Path, window: int, name: str, on_delivered=None) -> TimedPublisher:  # type: ignore[no-untyped-def]
    pub = TimedPublisher(outbox_path=db, station_id=STATION, host=broker.host, port=broker.port, version="bench",
                         window=window, client_id=f"bench-{name}", ack_timeout_s=60.0, on_delivered=on_delivered)
    pub.start()
    deadline = time.monotonic() + 10
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    return pub


def acked_pipeline(broker: Mosquitto, workdir: Path, items: list, window: int, batch: int, backlog: int) -> dict:
    """Build, sign, durable commit, publish, consumer verify + ack, acked mark."""
    key = Ed25519PrivateKey.generate()
    db = workdir / "acked.db"
    box = Outbox(db)
    writer = RecordWriter(box, Signer(key), station_id=STATION, simulated=True)
    with Central(broker, key):
        pub = _publisher(broker, db, window, f"acked-{workdir.name}")
        n, i = len(items), 0
        t0 = time.perf_counter()
        while i < n:
            pub.app_acked.wait(i - backlog + 1, 60)
            k = max(1, min(batch, backlog - (i - pub.app_acked.n), n - i))
            writer.write_batch(items[i:i + k])
            pub.notify()
            i += k
        if not _wait_acked(pub, db, n, 120):
            raise SystemExit(f"acked pipeline: not all acked; {pub.last_error}")
        elapsed = time.perf_counter() - t0
        # One record at a time, idle pipeline: the ack round trip an operator's record sees.
        rtt: list[float] = []
        for j in range(200):
            before = pub.app_acked.n
            rec = writer.write(items[j % n])
            pub.notify()
            pub.app_acked.wait(before + 1, 10)
            rtt.append((pub.app_acked_at[rec.seq] - pub.sent_at[rec.seq]) * 1000)
        pub.stop()
    box.close()
    return {"rate": n / elapsed, "rtt": rtt}


def drain(broker: Mosquitto, workdir: Path, items: list, window: int, consumer: bool = True) -> dict:
    """An outage left len(items) records stored; time from the publisher's start
    until all are published (PUBACK) and, with a consumer, until all are acked.
    Without one the broker has no subscriber to forward to, as in the raw run."""
    key = Ed25519PrivateKey.generate()
    db = workdir / "drain.db"
    with Outbox(db) as box:
        writer = RecordWriter(box, Signer(key), station_id=STATION, simulated=True)
        for i in range(0, len(items), 500):
            writer.write_batch(items[i:i + 500])
    central = Central(broker, key) if consumer else None
    if central is not None:
        central.__enter__()
    delivered: set[int] = set()
    progress = Progress()

    def on_delivered(seqs) -> None:  # type: ignore[no-untyped-def]
        # On the pump thread, after the marks are stored: what wait_drained polls for.
        before = len(delivered)
        delivered.update(seqs)
        progress.add(len(delivered) - before)

    try:
        t0, c0 = time.perf_counter(), time.process_time()
        pub = _publisher(broker, db, window, f"drain-{workdir.name}", on_delivered)
        published = progress.wait(len(items), 120)
        t_pub, cpu = time.perf_counter() - t0, time.process_time() - c0
        acked = _wait_acked(pub, db, len(items), 120) if central is not None else True
        t_ack = time.perf_counter() - t0
        pub.stop()
    finally:
        if central is not None:
            central.__exit__()
    if not (published and acked):
        raise SystemExit("drain: backlog not delivered")
    return {"published_rate": len(items) / t_pub, "acked_rate": len(items) / t_ack if central else None,
            "cpu_us": cpu / len(items) * 1e6}
