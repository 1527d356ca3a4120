"""``station sim ambient``: run a Modbus RTU temperature/humidity sensor until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from drivers.sim.cli import _host_port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--link", metavar="PATH",
                       help="keep a symlink at PATH pointing at the pty, like /dev/serial/by-id")
    where.add_argument("--tcp", metavar="HOST:PORT", type=_host_port,
                       help="RTU over TCP instead of a pty (port 0 picks a free port)")
    parser.add_argument("--control", metavar="HOST:PORT", type=_host_port, default=("127.0.0.1", 0),
                        help="control interface address (default 127.0.0.1:0)")
    parser.add_argument("--map", default="ambient-sht20", metavar="NAME|FILE",
                        help="register map (default ambient-sht20)")
    parser.add_argument("--unit-id", type=int, default=1, help="Modbus unit id (default 1)")
    parser.add_argument("--temp", type=float, default=21.5, help="temperature in °C (default 21.5)")
    parser.add_argument("--humidity", type=float, default=45.0, help="relative humidity in %% (default 45)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line {"port": ..., "control": "host:port", "serial": ...}')


def run(args: argparse.Namespace) -> int:
    from drivers.sim.ambient import AmbientSimulator, _tenths

    stop, sim = threading.Event(), None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim = AmbientSimulator(args.map, unit_id=args.unit_id, link_path=args.link, tcp=args.tcp,
                                   temperature_dc=_tenths(f"{args.temp:.1f}"),
                                   humidity_dpct=_tenths(f"{args.humidity:.1f}"))
            sim.start()
            host, port = sim.start_control(*args.control)
        except OSError as e:
            print(f"error: cannot start the simulator: {e}. Fix: choose another --link path "
                  "or --tcp/--control address", file=sys.stderr)
            return 1
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps({"port": sim.port, "control": f"{host}:{port}", "serial": sim.serial}))
        else:
            print(f"ambient sensor simulator ({sim.map.name}, unit {args.unit_id}) on {sim.port}; "
                  f"control on {host}:{port}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        if sim is not None:
            sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
