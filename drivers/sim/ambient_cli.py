"""``station sim ambient``: run a Modbus RTU temperature/humidity sensor until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from drivers.sim.serve import cannot_start, host_port, serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--link", metavar="PATH",
                       help="keep a symlink at PATH pointing at the pty, like /dev/serial/by-id")
    where.add_argument("--tcp", metavar="HOST:PORT", type=host_port,
                       help="RTU over TCP instead of a pty (port 0 picks a free port)")
    parser.add_argument("--control", metavar="HOST:PORT", type=host_port, default=("127.0.0.1", 0),
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

    def make() -> AmbientSimulator:
        return AmbientSimulator(args.map, unit_id=args.unit_id, link_path=args.link, tcp=args.tcp,
                                temperature_dc=_tenths(f"{args.temp:.1f}"),
                                humidity_dpct=_tenths(f"{args.humidity:.1f}"))

    return serve(make, args.control, as_json=args.json, refuse=_refuse,
                 describe=lambda sim: f"ambient sensor simulator ({sim.map.name}, unit {args.unit_id})")


def _refuse(e: Exception) -> tuple[str, int]:
    return (f"error: {e}", 1) if isinstance(e, ValueError) else cannot_start(e)
