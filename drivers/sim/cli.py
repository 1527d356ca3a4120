"""``station sim scale``: run a balance simulator until SIGINT/SIGTERM.

It prints where the balance is (the port a driver opens) and where its
control interface listens, then blocks; tests and the demo read that line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from drivers.sim.mtsics import MtSicsSimulator
from drivers.sim.sbi import SbiSimulator


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=["mtsics", "sbi"], default="mtsics",
                        help="wire protocol to simulate (default: mtsics)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--link", metavar="PATH",
                       help="keep a symlink at PATH pointing at the pty, like /dev/serial/by-id")
    where.add_argument("--tcp", metavar="HOST:PORT", type=_host_port,
                       help="listen on TCP instead of a pty (port 0 picks a free port)")
    parser.add_argument("--control", metavar="HOST:PORT", type=_host_port,
                        default=("127.0.0.1", 0),
                        help="control interface address (default 127.0.0.1:0)")
    parser.add_argument("--settle", metavar="S", type=float, default=0.5,
                        help="seconds a new load stays dynamic (default 0.5)")
    parser.add_argument("--noise", metavar="UG", type=int, default=0,
                        help="noise on stable readings in µg (default 0)")
    parser.add_argument("--serial", help="serial number to report (default SIM0000001; sbi 0034309393)")
    parser.add_argument("--unit", default="g", help="weighing unit set on the balance (default g)")
    parser.add_argument("--long-format", action="store_true",
                        help="sbi: print 22-character lines (6-character ID code first)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line {"port": ..., "control": "host:port"}')


def run(args: argparse.Namespace) -> int:
    common = dict(settle_s=args.settle, noise_ug=args.noise, link_path=args.link, tcp=args.tcp,
                  unit=args.unit)
    if args.serial:
        common["serial"] = args.serial
    if args.protocol == "sbi":
        try:
            sim = SbiSimulator(long_format=args.long_format, **common)
        except ValueError as e:
            print(f"error: {e}. Fix: choose another --unit", file=sys.stderr)
            return 2
        name = f"Sartorius SBI balance simulator ({sim.framing.describe()})"
    else:
        sim = MtSicsSimulator(**common)
        name = "MT-SICS balance simulator"
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim.start()
            host, port = sim.start_control(*args.control)
        except OSError as e:
            print(f"error: cannot start the simulator: {e}. Fix: choose another --link path "
                  "or --tcp/--control address", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps({"port": sim.port, "control": f"{host}:{port}",
                              "serial": sim.serial}))
        else:
            print(f"{name} (serial {sim.serial}) on {sim.port}; "
                  f"control on {host}:{port}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
