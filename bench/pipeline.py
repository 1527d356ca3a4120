"""Throughput and latency of the whole record pipeline against raw paho.

One run, one private mosquitto (station.app.broker.Mosquitto):
  1. pipeline: build payload -> deterministic CBOR -> Ed25519 COSE_Sign1 ->
     durable group commit (RecordWriter/Outbox) -> Publisher -> PUBACK ->
     batched delivered-mark; timed until all N records are marked delivered;
  2. the STRONGEST raw paho QoS 1 client: real record size, TCP_NODELAY, paho
     queueing freely (no wait per message), best of several in-flight windows
     within the broker's Receive Maximum (20 for mosquitto);
  3. the pipeline with application acks (bench/acked.py: a consumer process
     verifies and acks), the drain of a backlog left by an outage, and the ack
     round trip;
  4. ratios against (2), and per-record latency.

Usage: make bench   (or .venv/bin/python bench/pipeline.py --records 5000)
This file imports paho directly on purpose: it is the baseline being measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt import __version__ as PAHO_VERSION

from station.app.broker import Mosquitto, find_mosquitto
from station.records.chain import RecordWriter
from station.records.cose import Signer
from station.delivery.outbox import Outbox
from station.delivery.publisher import Publisher
from station.instruments.reading import DeviceIdentity
from station.instruments.reading import mass_reading
from station.records.payload import RecordInput, utc_now

import acked  # noqa: E402 - bench/acked.py, beside this file

TARGET_RATIO = 0.25
TARGET_ACKED = 0.5
TARGET_DRAIN = 0.7


def stone(i: int) -> RecordInput:
    reading = mass_reading(
        device="balance",
        driver="mtsics",
        identity=DeviceIdentity("XPR205", "B123456789", ('< I4 A "B123456789"',)),
        value_ug=99_800 + i,
        stable=True,
        raw=("> S", f"< S S      0.{998 + i % 9:04d} g"),
        time=utc_now(),
    )
    return RecordInput(operator="bench", lot="LOT-1", readings=[reading], flags=())


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Delivered:
    """Collects delivery times reported by the publisher (after the mark is stored)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.cond = threading.Condition()

    def __call__(self, seqs) -> None:
        now = time.perf_counter()
        with self.cond:
            for s in seqs:
                self.at.setdefault(s, now)
            self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return len(self.at)


class TimedPublisher(Publisher):
    """Notes when each PUBACK arrives (the latency end point), before the mark."""

    acked_at: dict[int, float]
    acked: acked.Progress

    def _handle_ack(self, seq, token, epoch, ack):  # type: ignore[no-untyped-def]
        if ack.ok and seq not in self.acked_at:
            self.acked_at[seq] = time.perf_counter()
            self.acked.add()
        super()._handle_ack(seq, token, epoch, ack)


def bench_pipeline(
    broker: Mosquitto, workdir: Path, n: int, window: int, batch: int, backlog: int, single: bool
) -> dict:
    outbox_path = workdir / "outbox.db"
    box = Outbox(outbox_path)
    writer = RecordWriter(box, Signer(Ed25519PrivateKey.generate()), station_id="bench", simulated=True)
    delivered = Delivered()
    pub = TimedPublisher(
        outbox_path=outbox_path, station_id="bench", host=broker.host, port=broker.port,
        version="bench", window=window, on_delivered=delivered, client_id=f"bench-{workdir.name}",
    )
    pub.acked_at = {}
    pub.acked = acked.Progress()
    pub.start()
    deadline = time.monotonic() + 10
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    items = [stone(i) for i in range(n)]  # the driver's work, not the pipeline's
    started: dict[int, float] = {}
    sizes: list[int] = []
    # The station never runs far ahead of the broker in practice; bounding the
    # backlog keeps the latency figures about the pipeline, not about a queue.
    t0 = time.perf_counter()
    i = 0
    while i < n:
        pub.acked.wait(i - backlog + 1, 60)
        room = backlog - (i - pub.acked.n)
        k = max(1, min(batch, room, n - i))
        t_build = time.perf_counter()  # counts for every record of the batch: conservative
        recs = writer.write_batch(items[i : i + k])
        for r in recs:
            started[r.seq] = t_build
            sizes.append(len(r.data))
        pub.notify()
        i += k
    with delivered.cond:
        ok = delivered.cond.wait_for(lambda: len(delivered.at) >= n, 60)
    elapsed = time.perf_counter() - t0
    if not ok:
        raise SystemExit(f"pipeline: only {delivered.count()}/{n} delivered; last error: {pub.last_error}")
    assert box.depth() == 0
    loaded = [(pub.acked_at[s] - started[s]) * 1000 for s in started]
    loaded_marked = [(delivered.at[s] - started[s]) * 1000 for s in started]

    # One stone at a time: what an operator waits for.
    one: list[float] = []
    for j in range(50 if single else 0):
        t = time.perf_counter()
        rec = writer.write(stone(j))
        pub.notify()
        with delivered.cond:
            delivered.cond.wait_for(lambda seq=rec.seq: seq in delivered.at, 10)
        one.append((pub.acked_at[rec.seq] - t) * 1000)
    pub.stop()
    box.close()
    return {"rate": n / elapsed, "size": int(statistics.mean(sizes)), "loaded": loaded,
            "marked": loaded_marked, "one": one}


def sample_record(workdir: Path) -> bytes:
    with Outbox(workdir / "sample.db") as box:
        writer = RecordWriter(box, Signer(Ed25519PrivateKey.generate()), station_id="bench", simulated=True)
        return writer.write(stone(0)).data


RAW_WINDOWS = (5, 10, 20)  # all within mosquitto's Receive Maximum of 20


def bench_raw_best(broker: Mosquitto, n: int, size: int, cpu: list[float] | None = None) -> tuple[float, int]:
    """The strongest raw client: the best rate over RAW_WINDOWS, and its window
    (``cpu`` gets the process CPU time per message of each window)."""
    return max((bench_raw_free(broker, n, w, size, cpu), w) for w in RAW_WINDOWS)


def bench_raw_free(broker: Mosquitto, n: int, window: int, size: int, cpu: list[float] | None = None) -> float:
    """paho queueing freely: every publish() at once, paho keeps `window` in flight."""
    acked = 0
    cond = threading.Condition()

    def on_publish(client, userdata, mid, rc, props):
        nonlocal acked
        with cond:
            acked += 1
            if acked >= n:
                cond.notify_all()

    def nodelay(client, userdata, sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-free-{time.time_ns()}", protocol=paho.MQTTv5)
    c.on_publish = on_publish
    c.on_socket_open = nodelay
    c.max_inflight_messages_set(window)
    c.max_queued_messages_set(0)  # unbounded
    c.connect(broker.host, broker.port)
    c.loop_start()
    payload = os.urandom(size)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        c.publish("bench/raw", payload, qos=1)
    with cond:
        cond.wait_for(lambda: acked >= n, 120)
    elapsed = time.perf_counter() - t0
    if cpu is not None:
        cpu.append((time.process_time() - c0) / n * 1e6)
    c.disconnect()
    c.loop_stop()
    return n / elapsed


def bench_raw_paho(broker: Mosquitto, n: int, window: int, size: int) -> float:
    """The old baseline (waits on a lock for every message), kept for comparison."""
    acked = 0
    cond = threading.Condition()

    def on_publish(client, userdata, mid, rc, props):
        nonlocal acked
        with cond:
            acked += 1
            cond.notify_all()

    def nodelay(client, userdata, sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{time.time_ns()}", protocol=paho.MQTTv5)
    c.on_publish = on_publish
    c.on_socket_open = nodelay
    c.max_inflight_messages_set(window)
    c.connect(broker.host, broker.port)
    c.loop_start()
    payload = os.urandom(size)
    t0 = time.perf_counter()
    for sent in range(n):
        with cond:
            cond.wait_for(lambda sent=sent: sent - acked < window, 30)
        c.publish("bench/raw", payload, qos=1)
    with cond:
        cond.wait_for(lambda: acked >= n, 60)
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return n / elapsed


def machine(workdir: Path) -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        disk = subprocess.run(
            ["df", "--output=source,fstype", str(workdir)], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1].split()
        dev = Path(disk[0]).name
        rota = Path(f"/sys/block/{dev}/queue/rotational").read_text().strip() if dev else "?"
        disk_s = f"{disk[0]} ({disk[1]}, rotational={rota})"
    except (OSError, subprocess.CalledProcessError, IndexError):
        disk_s = "?"
    mosq = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True, check=False).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "paho": PAHO_VERSION,
        "mosquitto": mosq[0] if mosq else "?",
        "kernel": platform.release(),
        "disk": disk_s,
    }


def drain_only(broker: Mosquitto, base: Path, args: argparse.Namespace, size: int) -> int:
    backlog_items = [stone(i) for i in range(args.drain)]
    raws, drains, raw_cpu, drain_cpu = [], [], [], []
    for r in range(args.rounds):
        cpu: list[float] = []
        raws.append(bench_raw_best(broker, args.drain, size, cpu)[0])
        raw_cpu.append(min(cpu))
        (base / f"drainonly{r}").mkdir()
        res = acked.drain(broker, base / f"drainonly{r}", backlog_items, args.window, consumer=False)
        drains.append(res["published_rate"])
        drain_cpu.append(res["cpu_us"])
        print(f"round {r + 1}: raw {raws[-1]:.0f} messages/s ({raw_cpu[-1]:.0f} us CPU each), drain "
              f"{drains[-1]:.0f} records/s ({drain_cpu[-1]:.0f} us CPU each), ratio {drains[-1] / raws[-1]:.2f}",
              flush=True)
    raw, d = statistics.median(raws), statistics.median(drains)
    print(f"drain {args.drain} backlog: {d:.0f} records/s to PUBACK (rounds {min(drains):.0f}-{max(drains):.0f}); "
          f"raw {raw:.0f} messages/s (rounds {min(raws):.0f}-{max(raws):.0f}); ratio of medians {d / raw:.2f} "
          f"(target >= {TARGET_DRAIN}); CPU per message, best round: raw {min(raw_cpu):.0f} us, drain "
          f"{min(drain_cpu):.0f} us; load average {os.getloadavg()[0]:.1f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved raw/pipeline rounds; medians count")
    ap.add_argument("--window", type=int, default=20, help="QoS 1 messages in flight (both runs)")
    ap.add_argument("--batch", type=int, default=20, help="max records per group commit")
    ap.add_argument("--backlog", type=int, default=40, help="max records stored but not yet delivered")
    ap.add_argument("--dir", type=Path, default=None, help="put the outbox on this disk (default /var/tmp)")
    ap.add_argument("--drain", type=int, default=10_000, help="records in the backlog an outage leaves")
    ap.add_argument("--drain-rounds", type=int, default=2)
    ap.add_argument("--drain-only", action="store_true",
                    help="only the strongest raw client and the drain without a subscriber (publisher only, "
                         "no producer), --rounds times; for profiling the publish and PUBACK path")
    args = ap.parse_args()

    # /var/tmp, not /tmp: /tmp may be tmpfs, where an fsync costs nothing.
    parent = args.dir or Path("/var/tmp")
    parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="station-bench-", dir=parent))
    m = machine(base)
    print(f"machine: {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, paho-mqtt {m['paho']}, "
          f"{m['mosquitto']}, disk {m['disk']}")
    raws: list[float] = []
    windows: list[int] = []
    locked: list[float] = []
    runs: list[dict] = []
    acked_runs: list[dict] = []
    drains: list[dict] = []
    bare_drains: list[dict] = []
    try:
        with Mosquitto(base / "broker") as broker:
            size = len(sample_record(base))
            if args.drain_only:
                return drain_only(broker, base, args, size)
            # Interleaved rounds and the median of each side: on a shared machine a
            # noisy (or quiet) moment then cannot decide the ratio on its own.
            for r in range(args.rounds):
                best, w = bench_raw_best(broker, args.records, size)
                raws.append(best)
                windows.append(w)
                locked.append(bench_raw_paho(broker, args.records, args.window, size))
                runs.append(
                    bench_pipeline(broker, base / f"round{r}", args.records, args.window, args.batch,
                                   args.backlog, single=(r == args.rounds - 1))
                )
                (base / f"acked{r}").mkdir()
                items = [stone(i) for i in range(args.records)]
                acked_runs.append(acked.acked_pipeline(broker, base / f"acked{r}", items, args.window, args.batch,
                                                       args.backlog))
                if r < args.drain_rounds:
                    backlog_items = [stone(i) for i in range(args.drain)]
                    (base / f"drain{r}").mkdir()
                    drains.append(acked.drain(broker, base / f"drain{r}", backlog_items, args.window))
                    (base / f"drainonly{r}").mkdir()
                    bare_drains.append(acked.drain(broker, base / f"drainonly{r}", backlog_items, args.window,
                                                   consumer=False))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    raw = statistics.median(raws)
    rates = [x["rate"] for x in runs]
    rate = statistics.median(rates)
    ratio = rate / raw
    loaded = [v for x in runs for v in x["loaded"]]
    marked = [v for x in runs for v in x["marked"]]
    one = runs[-1]["one"]
    print(f"records:            {args.records} per round, {runs[0]['size']} bytes each, window {args.window}, "
          f"group commit <= {args.batch}, backlog <= {args.backlog}")
    print(f"pipeline:           {rate:8.0f} records/s  (build, sign, commit, publish, PUBACK, mark)"
          f"  rounds: {', '.join(f'{x:.0f}' for x in rates)}")
    print(f"raw paho QoS 1:     {raw:8.0f} messages/s  (strongest)  rounds: {', '.join(f'{x:.0f}' for x in raws)}")
    print(f"ratio:              {ratio:8.2f}   (medians of {args.rounds} rounds; target >= {TARGET_RATIO})")
    print(f"latency under load: median {statistics.median(loaded):.1f} ms, p99 {pct(loaded, 99):.1f} ms"
          "  (build start -> PUBACK)")
    print(f"  ... to stored mark: median {statistics.median(marked):.1f} ms, p99 {pct(marked, 99):.1f} ms")
    print(f"latency one stone:  median {statistics.median(one):.1f} ms, p99 {pct(one, 99):.1f} ms"
          f"  (write() of one record -> PUBACK, {len(one)} stones)")
    print(f"strongest raw:      best window per round: {', '.join(map(str, windows))}; the old lock-per-"
          f"message baseline: {statistics.median(locked):.0f} messages/s")
    a_rate = statistics.median(x["rate"] for x in acked_runs)
    rtt = [v for x in acked_runs for v in x["rtt"]]
    print(f"pipeline with acks: {a_rate:8.0f} records/s  ratio {a_rate / raw:.2f} (target >= {TARGET_ACKED})"
          f"  rounds: {', '.join(str(round(x['rate'])) for x in acked_runs)}")
    d_bare = statistics.median(x["published_rate"] for x in bare_drains)
    d_pub = statistics.median(x["published_rate"] for x in drains)
    d_ack = statistics.median(x["acked_rate"] for x in drains)
    print(f"drain {args.drain} backlog: {d_bare:8.0f} records/s to PUBACK, no subscriber (as raw), ratio "
          f"{d_bare / raw:.2f} (target >= {TARGET_DRAIN})")
    print(f"  with the acking consumer: {d_pub:.0f} records/s to PUBACK ({d_pub / raw:.2f}), "
          f"{d_ack:.0f} records/s to acked ({d_ack / raw:.2f})")
    print(f"ack round trip:     median {statistics.median(rtt):.2f} ms, p99 {pct(rtt, 99):.2f} ms "
          f"(publish -> application ack received, one record at a time, {len(rtt)} records; target p99 <= 5 ms)")
    if ratio < TARGET_RATIO:
        print(f"BELOW TARGET: ratio {ratio:.2f} < {TARGET_RATIO}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
