"""Throughput and latency of the whole record pipeline against raw paho.

One run, one private mosquitto (station.broker.Mosquitto):
  1. pipeline: build payload -> deterministic CBOR -> Ed25519 COSE_Sign1 ->
     durable group commit (RecordWriter/Outbox) -> Publisher -> PUBACK ->
     batched delivered-mark; timed until all N records are marked delivered;
  2. raw paho QoS 1 at the same payload size and the same in-flight window;
  3. the ratio, and per-record latency (build start -> PUBACK and its stored
     delivered-mark), under load and for one stone at a time.

Usage: make bench   (or .venv/bin/python bench/pipeline.py --records 5000)
This file imports paho directly on purpose: it is the baseline being measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as paho  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from station.broker import Mosquitto  # noqa: E402
from station.chain import RecordWriter  # noqa: E402
from station.cose import Signer  # noqa: E402
from station.outbox import Outbox  # noqa: E402
from station.publisher import Publisher  # noqa: E402
from station.reading import DeviceIdentity, MassReading  # noqa: E402
from station.record import RecordInput, utc_now  # noqa: E402

TARGET_RATIO = 0.25


def stone(i: int) -> RecordInput:
    reading = MassReading(
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
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


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

    def _handle_ack(self, seq, epoch, ack):  # type: ignore[no-untyped-def]
        if ack.ok:
            self.acked_at.setdefault(seq, time.perf_counter())
        super()._handle_ack(seq, epoch, ack)


def bench_pipeline(broker: Mosquitto, workdir: Path, n: int, window: int, batch: int, backlog: int) -> dict:
    outbox_path = workdir / "outbox.db"
    box = Outbox(outbox_path)
    writer = RecordWriter(box, Signer(Ed25519PrivateKey.generate()), station_id="bench", simulated=True)
    delivered = Delivered()
    pub = TimedPublisher(
        outbox_path=outbox_path, station_id="bench", host=broker.host, port=broker.port,
        version="bench", window=window, on_delivered=delivered,
    )
    pub.acked_at = {}
    pub.start()
    deadline = time.monotonic() + 10
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    items = [stone(i) for i in range(n)]
    started: dict[int, float] = {}
    sizes: list[int] = []
    # The station never runs far ahead of the broker in practice; bounding the
    # backlog keeps the latency figures about the pipeline, not about a queue.
    t0 = time.perf_counter()
    i = 0
    while i < n:
        while i - len(pub.acked_at) >= backlog:
            time.sleep(0.0005)
        room = backlog - (i - len(pub.acked_at))
        k = max(1, min(batch, room, n - i))
        t_build = time.perf_counter()
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
    single: list[float] = []
    for j in range(50):
        t = time.perf_counter()
        rec = writer.write(stone(j))
        pub.notify()
        with delivered.cond:
            delivered.cond.wait_for(lambda: rec.seq in delivered.at, 10)
        single.append((pub.acked_at[rec.seq] - t) * 1000)
    pub.stop()
    box.close()
    return {
        "rate": n / elapsed,
        "elapsed": elapsed,
        "size": int(statistics.mean(sizes)),
        "p50": statistics.median(loaded),
        "p99": pct(loaded, 99),
        "marked_p50": statistics.median(loaded_marked),
        "marked_p99": pct(loaded_marked, 99),
        "single_p50": statistics.median(single),
        "single_p99": pct(single, 99),
    }


def sample_record(workdir: Path) -> bytes:
    with Outbox(workdir / "sample.db") as box:
        writer = RecordWriter(box, Signer(Ed25519PrivateKey.generate()), station_id="bench", simulated=True)
        return writer.write(stone(0)).data


def bench_raw_paho(broker: Mosquitto, n: int, window: int, size: int) -> float:
    """The same QoS 1 traffic with nothing but paho: no signing, no disk."""
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
            cond.wait_for(lambda: sent - acked < window, 30)
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
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "paho": paho.__version__ if hasattr(paho, "__version__") else "?",
        "mosquitto": mosq[0] if mosq else "?",
        "kernel": platform.release(),
        "disk": disk_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--window", type=int, default=20, help="QoS 1 messages in flight (both runs)")
    ap.add_argument("--batch", type=int, default=20, help="max records per group commit")
    ap.add_argument("--backlog", type=int, default=40, help="max records stored but not yet delivered")
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval (s)")
    ap.add_argument("--dir", type=Path, default=None, help="where the outbox goes (default: a temp dir on /var/tmp)")
    args = ap.parse_args()

    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    base = args.dir or Path(tempfile.mkdtemp(prefix="station-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    m = machine(base)
    print(f"machine: {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, {m['mosquitto']}, disk {m['disk']}")
    with Mosquitto(base / "broker") as broker:
        # The baseline is measured before and after, and the faster run counts:
        # noise on a shared machine must not flatter the ratio.
        size = len(sample_record(base))
        raw = bench_raw_paho(broker, args.records, args.window, size)
        p = bench_pipeline(broker, base, args.records, args.window, args.batch, args.backlog)
        raw = max(raw, bench_raw_paho(broker, args.records, args.window, p["size"]))
    ratio = p["rate"] / raw
    print(f"records:            {args.records}, {p['size']} bytes each, window {args.window}, "
          f"group commit <= {args.batch}")
    print(f"pipeline:           {p['rate']:8.0f} records/s  (build, sign, commit, publish, PUBACK, mark)")
    print(f"raw paho QoS 1:     {raw:8.0f} messages/s")
    print(f"ratio:              {ratio:8.2f}   (target >= {TARGET_RATIO})")
    print(f"latency under load: median {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms  (build start -> PUBACK)")
    print(f"  ... to stored mark: median {p['marked_p50']:.1f} ms, p99 {p['marked_p99']:.1f} ms")
    print(f"latency one stone:  median {p['single_p50']:.1f} ms, p99 {p['single_p99']:.1f} ms")
    if not args.dir:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
