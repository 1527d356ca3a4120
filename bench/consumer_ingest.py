"""Ingest rate of `station consume` into PostgreSQL, against raw paho receive.

One run, one private mosquitto, one private PostgreSQL (fsync on), interleaved
rounds of three drains of the same backlog of N real signed records:
  1. raw: a plain paho QoS 1 subscriber in its own process that only counts
     messages (paho acks each one as it arrives): the strongest receiver;
  2. one `station consume` (verify, store, commit, PUBACK, application ack);
  3. two `station consume` in one shared-subscription group.
Each receiver is started, subscribed, then frozen (SIGSTOP) while the backlog
is published; the clock runs from SIGCONT until the last record is counted
(raw) or acked as accepted (consumers). Ratios use the medians of the rounds.
Then the application-ack round trip: one record at a time, publish -> ack.

Usage: .venv/bin/python bench/consumer_ingest.py [--records 3000 --rounds 3]
This file imports paho directly on purpose: the raw receiver is the baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import paho.mqtt.client as paho

from station.app.broker import Mosquitto
from station.app.postgres import Postgres

ROOT = Path(__file__).resolve().parents[1]


def raw_child(port: int, n: int, client_id: str) -> None:
    """Counts N messages; prints 'ready' once subscribed and 'done' after the last."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got = 0
    done = threading.Event()

    def on_message(client, userdata, msg):
        nonlocal got
        got += 1
        if got >= n:
            done.set()

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe("stations/+/records", qos=1)

    def on_subscribe(client, userdata, mid, rcs, props):
        print("ready", flush=True)

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_message, c.on_connect, c.on_subscribe = on_message, on_connect, on_subscribe
    c.on_socket_open = lambda cl, u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    done.wait()
    print("done", flush=True)
    c.loop_stop()


class Child:
    live: list["Child"] = []  # stopped in main()'s finally, even when a round fails

    def __init__(self, args: list[str], ready: str) -> None:
        Child.live.append(self)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(ready)

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip())
                self.cond.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: any(text in line for line in self.lines), timeout):
                raise RuntimeError(f"{text!r} not seen: {self.lines[-5:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen child cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(15)


class AckCounter:
    def __init__(self, port: int) -> None:
        from station.delivery.subscriber import MqttSubscriber

        self.accepted: set[tuple[str, int]] = set()
        self.times: dict[int, float] = {}
        self.cond = threading.Condition()
        self.sub = MqttSubscriber("127.0.0.1", port, "stations/+/acks", f"bench-acks-{time.time_ns()}", self._on)
        self.sub.start()

    def _on(self, payload: bytes, props) -> None:
        now = time.perf_counter()
        station = props.topic.split("/")[1]
        with self.cond:
            for a in json.loads(payload)["acks"]:
                if a["verdict"] == "accepted":
                    self.accepted.add((station, a["seq"]))
                    self.times.setdefault(a["seq"], now)
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 300) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.accepted) >= n, timeout):
                raise RuntimeError(f"only {len(self.accepted)} of {n} acks")


def publish_all(port: int, records: list[bytes], station: str) -> None:
    from consumerkit import Publisher

    pub = Publisher(port, f"bench-pub-{time.time_ns()}")
    for i in range(0, len(records), 1000):
        pub.send(records[i:i + 1000], station=station)
    pub.close()


def make_records(n: int, workdir: Path, station: str):
    from consumerkit import chain, make_keys, write_trust

    keys = make_keys(workdir)
    return chain(keys["a"], n, station=station), write_trust(workdir, keys)


def drain_raw(broker: Mosquitto, records: list[bytes], station: str) -> float:
    child = Child([sys.executable, __file__, "--raw-child", str(broker.port), str(len(records)),
                   f"raw-{time.time_ns()}"], "ready")
    os.kill(child.proc.pid, signal.SIGSTOP)
    publish_all(broker.port, records, station)
    t0 = time.perf_counter()
    os.kill(child.proc.pid, signal.SIGCONT)
    child.wait_for("done", 300)
    elapsed = time.perf_counter() - t0
    child.stop()
    return len(records) / elapsed


def drain_consumers(broker: Mosquitto, pg: Postgres, records: list[bytes], station: str, trust: Path,
                    consumers: int, db: str) -> float:
    acks = AckCounter(broker.port)
    group = ["--group", f"g{time.time_ns()}"] if consumers > 1 else []
    kids = [Child([sys.executable, "-m", "station.cli", "consume", "--host", "127.0.0.1", "--port", str(broker.port),
                   "--trust", str(trust), "--db", db, "--client-id", f"c{i}-{time.time_ns()}", *group],
                  "consuming") for i in range(consumers)]
    for k in kids:
        os.kill(k.proc.pid, signal.SIGSTOP)
    publish_all(broker.port, records, station)
    t0 = time.perf_counter()
    for k in kids:
        os.kill(k.proc.pid, signal.SIGCONT)
    acks.wait(len(records))
    elapsed = time.perf_counter() - t0
    for k in kids:
        k.stop()
    acks.sub.stop()
    return len(records) / elapsed


def ack_round_trip(broker: Mosquitto, records: list[bytes], station: str, trust: Path, db: str) -> list[float]:
    from consumerkit import Publisher

    acks = AckCounter(broker.port)
    kid = Child([sys.executable, "-m", "station.cli", "consume", "--host", "127.0.0.1", "--port", str(broker.port),
                 "--trust", str(trust), "--db", db, "--client-id", f"rtt-{time.time_ns()}"], "consuming")
    pub = Publisher(broker.port, f"bench-rtt-{time.time_ns()}")
    out = []
    for seq, data in enumerate(records, 1):
        t0 = time.perf_counter()
        pub.link.publish(f"stations/{station}/records", data)
        acks.wait(seq, 10)
        out.append((acks.times[seq] - t0) * 1000)
    pub.close()
    kid.stop()
    acks.sub.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rtt", type=int, default=500, help="records for the ack round trip")
    ap.add_argument("--raw-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.raw_child:
        raw_child(int(a.raw_child[0]), int(a.raw_child[1]), a.raw_child[2])
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-consume-"))
    pg = Postgres(fsync=True).start()
    rates: dict[str, list[float]] = {"raw": [], "one": [], "two": []}
    try:
        with Mosquitto(work / "broker") as broker:
            for r in range(a.rounds):
                station = "S1"  # the station the trust file binds the keys to
                records, trust = make_records(a.records, work / f"k{r}", station)
                size = statistics.mean(len(x) for x in records)
                rates["raw"].append(drain_raw(broker, records, station))
                rates["one"].append(drain_consumers(broker, pg, records, station, trust, 1, pg.create_db(f"one{r}")))
                rates["two"].append(drain_consumers(broker, pg, records, station, trust, 2, pg.create_db(f"two{r}")))
                print(f"round {r + 1}: raw {rates['raw'][-1]:,.0f}/s  one consumer {rates['one'][-1]:,.0f}/s  "
                      f"two consumers {rates['two'][-1]:,.0f}/s  ({a.records} records of {size:.0f} B)", flush=True)
            records, trust = make_records(a.rtt, work / "rtt", "S1")
            rtt = ack_round_trip(broker, records, "S1", trust, pg.create_db("rtt"))
    finally:
        for child in Child.live:
            child.stop()
        pg.stop()
    raw = statistics.median(rates["raw"])
    for name in ("one", "two"):
        med = statistics.median(rates[name])
        print(f"{name} consumer(s): {med:,.0f} records/s = {med / raw:.2f} x raw paho receive ({raw:,.0f}/s)")
    q = statistics.quantiles(rtt, n=100, method="inclusive")  # never above the max
    print(f"application-ack round trip over {len(rtt)} records: p50 {statistics.median(rtt):.2f} ms, "
          f"p99 {q[98]:.2f} ms, max {max(rtt):.2f} ms (target p99 <= 5 ms)")
    print(f"machine: nproc {os.cpu_count()}, python {sys.version.split()[0]}, PostgreSQL {pg.bin.parent.name} (fsync on)")
    return 0 if q[98] <= 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
