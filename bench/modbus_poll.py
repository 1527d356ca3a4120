"""Weight polls per second: the Modbus scale driver against a raw pymodbus loop.

One run, one simulator per transport (``station sim scale --protocol
modbus-rtu|modbus-tcp`` in its own process: a real pymodbus server behind a pty
for RTU, a TCP listener for Modbus TCP, so it does not share the bench's GIL),
and rounds of alternating short slices (so load changes hit both sides alike) of:
  1. driver: ``ModbusScale.weigh_now()`` (lock, gap check, request, transcript,
     exact decoding into µg, flags -> refusals, a ``Weight`` with raw registers);
  2. raw: a bare pymodbus client, same registers, same framing and settings,
     ``read_holding_registers`` in a loop and nothing else.
The ratio is median driver rate / median raw rate; the target is >= 0.8.

Usage: .venv/bin/python bench/modbus_poll.py [--seconds 2] [--rounds 5] [--baud 9600]
This file imports pymodbus directly on purpose: it is the baseline being measured.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymodbus import __version__ as PYMODBUS_VERSION
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.framer import FramerType

from drivers.modbus_link import ModbusLink
from drivers.modbus_scale import ModbusScale
from drivers.regmap import load_map
from drivers.sim.control import SimControl

TARGET_RATIO = 0.8


def timed(poll, seconds: float) -> tuple[int, float]:
    """(polls, seconds spent polling) for one slice."""
    n, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        poll()
        n += 1
        now = time.perf_counter()
        if now >= end:
            return n, now - start


@contextmanager
def simulator(args, *where: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", "station.cli", "sim", "scale", "--protocol", args.protocol_now,
         "--map", args.map, "--settle", "0.01", "--json", *where],
        stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        if not ready:
            raise RuntimeError("the simulator did not start")
        info = json.loads(proc.stdout.readline())
        with SimControl(*info["control"].rsplit(":", 1)) as ctl:
            yield info["port"], ctl
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def bench(name: str, port: str, ctl: SimControl, args) -> float:
    regmap = load_map(args.map)
    (table, address, count), = regmap.reads()
    assert table == "holding"
    scale = ModbusScale(ModbusLink(port, timeout=1.0, baudrate=args.baud), regmap)
    if port.startswith("tcp://"):
        host, tcp_port = port[len("tcp://"):].rsplit(":", 1)
        raw = ModbusTcpClient(host, port=int(tcp_port), timeout=1.0, retries=0)
    else:
        raw = ModbusSerialClient(port, framer=FramerType.RTU, baudrate=args.baud, timeout=1.0, retries=0)

    def raw_poll() -> None:
        rr = raw.read_holding_registers(address, count=count, device_id=1)
        if rr.isError():
            raise RuntimeError(rr)

    ctl.place(99_800)
    time.sleep(0.05)
    drv, base = [], []
    # Each round alternates short slices of both sides, so a change in the
    # machine's load hits both alike. Each side opens the port for its slice
    # only: a serial port is opened exclusively, and the simulator serves one
    # TCP client at a time.
    for _ in range(args.rounds):
        totals = {"driver": [0, 0.0], "raw": [0, 0.0]}
        for _ in range(args.slices):
            scale.identify()
            n, t = timed(scale.weigh_now, args.seconds / args.slices)
            scale.close()
            totals["driver"][0] += n
            totals["driver"][1] += t
            assert raw.connect()
            n, t = timed(raw_poll, args.seconds / args.slices)
            raw.close()
            totals["raw"][0] += n
            totals["raw"][1] += t
        drv.append(totals["driver"][0] / totals["driver"][1])
        base.append(totals["raw"][0] / totals["raw"][1])
    scale.identify()
    assert scale.weigh_now().value_ug == 99_800
    scale.close()
    d, b = statistics.median(drv), statistics.median(base)
    print(f"{name:<22} driver {d:8.0f} polls/s (rounds {min(drv):.0f}-{max(drv):.0f})   "
          f"raw {b:8.0f} polls/s (rounds {min(base):.0f}-{max(base):.0f})   ratio {d / b:.2f}")
    return d / b


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per round and side (default 3)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--slices", type=int, default=10,
                   help="alternating driver/raw slices per round (default 10)")
    p.add_argument("--baud", type=int, default=9600, help="RTU baud rate on both sides (default 9600)")
    p.add_argument("--map", default="laumas", help="register map (default laumas: 5 registers per poll)")
    args = p.parse_args()
    print(f"Python {sys.version.split()[0]}, pymodbus {PYMODBUS_VERSION}, map {args.map}, "
          f"{args.rounds} rounds x {args.seconds:g} s per side in {args.slices} slices, RTU at {args.baud} baud")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        args.protocol_now = "modbus-rtu"
        with simulator(args, "--link", f"{tmp}/rs485") as (port, ctl):
            ratios.append(bench("Modbus RTU on a pty", port, ctl, args))
        args.protocol_now = "modbus-tcp"
        with simulator(args) as (port, ctl):
            ratios.append(bench("Modbus TCP", port, ctl, args))
    worst = min(ratios)
    print(f"worst ratio {worst:.2f} (target >= {TARGET_RATIO})")
    return 0 if worst >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
