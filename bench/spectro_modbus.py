"""A 2048-pixel spectrum over Modbus TCP through the driver, against raw pymodbus.

The front-end simulator runs as its own process (`station sim spectrometer
--protocol modbus-tcp`: a real pymodbus server behind the simulated wire that
the scale simulator uses too), so server and client do not share one GIL. The
simulated wire serves one TCP client at a time, like a serial line, so each
side connects for its slice only. One run, rounds of alternating slices:
  1. raw: a bare pymodbus ModbusTcpClient doing 17 back-to-back FC04 reads
     (16 x 125 + 1 x 48 = 2048 registers), nothing decoded: the strongest
     baseline, the least work that moves 2048 registers;
  2. driver: ModbusSpectrometer.read_spectrum() (the station's path: 17 reads of
     the framed block, 2050 registers, sequence check, numpy uint16 array).
Prints the median time of each and the ratio driver / raw (target <= 1.2).

Usage: .venv/bin/python bench/spectro_modbus.py [--reads 200] [--rounds 5]
This file imports pymodbus directly on purpose: it is the baseline being measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pymodbus
from pymodbus.client import ModbusTcpClient

from drivers.modbus_link import ModbusLink
from drivers.spectro_modbus import REG_SPECTRUM, ModbusSpectrometer

TARGET_RATIO = 1.2
PIXELS = 2048


def start_simulator(protocol: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "sim", "spectrometer", "--protocol", protocol,
                             "--json", "--speed", "100"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("{"):
        proc.terminate()
        raise SystemExit(f"error: the simulator did not start: {line!r}")
    return proc, json.loads(line)


def raw_reads(client: ModbusTcpClient) -> float:
    t0 = time.perf_counter()
    done = 0
    while done < PIXELS:
        n = min(125, PIXELS - done)
        rr = client.read_input_registers(REG_SPECTRUM + 1 + done, count=n, device_id=1)
        if rr.isError() or len(rr.registers) != n:
            raise SystemExit(f"error: raw read failed: {rr}")
        done += n
    return time.perf_counter() - t0


def driver_read(spec: ModbusSpectrometer) -> float:
    t0 = time.perf_counter()
    counts, _ = spec.read_spectrum()
    elapsed = time.perf_counter() - t0
    assert counts.shape == (PIXELS,)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=200, help="spectra per side per round (default 200)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--slice", type=int, default=10, help="spectra per side before switching (default 10)")
    args = ap.parse_args()

    proc, info = start_simulator("modbus-tcp")
    try:
        host, port = info["port"].removeprefix("tcp://").rsplit(":", 1)
        spec = ModbusSpectrometer(ModbusLink(info["port"], timeout=2.0))
        spec.identify()
        spec.acquire()  # fill the spectrum registers
        spec.close()
        raw = ModbusTcpClient(host, port=int(port), timeout=2.0, retries=0)

        def driver_slice(n: int) -> list[float]:
            spec.identify()
            try:
                return [driver_read(spec) for _ in range(n)]
            finally:
                spec.close()

        def raw_slice(n: int) -> list[float]:
            if not raw.connect():
                raise SystemExit("error: the raw client cannot connect")
            try:
                return [raw_reads(raw) for _ in range(n)]
            finally:
                raw.close()

        for _ in range(2):  # warm up both paths
            driver_slice(args.slice)
            raw_slice(args.slice)
        raw_all: list[float] = []
        drv_all: list[float] = []
        print(f"{'round':>5} {'raw 17 reads ms':>16} {'driver ms':>10} {'ratio':>6}")
        for r in range(args.rounds):
            # Alternate short slices of each side, so both see the same
            # moments of a shared machine's load.
            raw_t, drv_t = [], []
            for _ in range(max(1, args.reads // args.slice)):
                raw_t += raw_slice(args.slice)
                drv_t += driver_slice(args.slice)
            raw_all += raw_t
            drv_all += drv_t
            rm, dm = statistics.median(raw_t), statistics.median(drv_t)
            print(f"{r + 1:>5} {rm * 1e3:>16.3f} {dm * 1e3:>10.3f} {dm / rm:>6.3f}")
    finally:
        proc.terminate()
        proc.wait(10)

    rm, dm = statistics.median(raw_all), statistics.median(drv_all)
    ratio = dm / rm
    print(f"\nPython {platform.python_version()}, pymodbus {pymodbus.__version__}, "
          f"{args.rounds} rounds x {args.reads} spectra per side")
    print(f"raw pymodbus, 17 reads (2048 registers): median {rm * 1e3:.3f} ms")
    print(f"driver read_spectrum (2050 registers):   median {dm * 1e3:.3f} ms")
    print(f"ratio driver / raw: {ratio:.3f} (target <= {TARGET_RATIO})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
