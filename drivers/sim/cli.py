"""``station sim scale``: run a scale simulator until SIGINT/SIGTERM.

It prints where the scale is (the port a driver opens) and where its
control interface listens, then blocks; tests and the demo read that line.
"""

from __future__ import annotations

import argparse

from drivers.sim.serve import cannot_start, host_port, serve

PROTOCOLS = ("mtsics", "sbi", "modbus-rtu", "modbus-tcp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, default="mtsics",
                        help="wire protocol to simulate (default: mtsics)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--link", metavar="PATH",
                       help="keep a symlink at PATH pointing at the pty, like /dev/serial/by-id")
    where.add_argument("--tcp", metavar="HOST:PORT", type=host_port,
                       help="listen on TCP instead of a pty (port 0 picks a free port)")
    parser.add_argument("--control", metavar="HOST:PORT", type=host_port,
                        default=("127.0.0.1", 0),
                        help="control interface address (default 127.0.0.1:0)")
    parser.add_argument("--settle", metavar="S", type=float, default=0.5,
                        help="seconds a new load stays dynamic (default 0.5)")
    parser.add_argument("--noise", metavar="UG", type=int, default=0,
                        help="noise on stable readings in µg (default 0)")
    parser.add_argument("--serial", help="serial number to report (default SIM0000001; sbi 0034309393)")
    parser.add_argument("--unit", default="g", help="mtsics/sbi: weighing unit set on the balance (default g)")
    parser.add_argument("--long-format", action="store_true",
                        help="sbi: print 22-character lines (6-character ID code first)")
    parser.add_argument("--map", default="generic-float32", metavar="NAME|FILE",
                        help="modbus: register map laumas, flintec, generic-float32 or a .toml file")
    parser.add_argument("--unit-id", type=int, default=1, help="modbus: unit id (default 1)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line {"port": ..., "control": "host:port"}')


def run(args: argparse.Namespace) -> int:
    return serve(lambda: _make_sim(args), args.control, as_json=args.json,
                 describe=lambda sim: _describe(sim, args), refuse=_refuse)


def _refuse(e: Exception) -> tuple[str, int]:
    if isinstance(e, ValueError):  # a bad register map, unit or option
        return f"error: {e}. Fix: check --protocol, --unit and --map (see --help)", 2
    return cannot_start(e)


def _make_sim(args: argparse.Namespace):
    common = dict(settle_s=args.settle, noise_ug=args.noise, link_path=args.link, tcp=args.tcp)
    if args.serial:
        common["serial"] = args.serial
    if args.protocol == "mtsics":
        from drivers.sim.mtsics import MtSicsSimulator

        return MtSicsSimulator(unit=args.unit, **common)
    if args.protocol == "sbi":
        from drivers.sim.sbi import SbiSimulator

        return SbiSimulator(long_format=args.long_format, unit=args.unit, **common)
    from drivers.sim.modbus_scale import ModbusScaleSimulator

    framing = "tcp" if args.protocol == "modbus-tcp" else "rtu"
    if framing == "tcp" and args.link:
        raise ValueError("Modbus TCP has no serial port: drop --link, or use --tcp HOST:PORT")
    common["tcp"] = args.tcp or (("127.0.0.1", 0) if framing == "tcp" else None)
    common.setdefault("serial", "SIM0000001")
    return ModbusScaleSimulator(regmap=args.map, framing=framing, unit_id=args.unit_id, **common)


def _describe(sim, args: argparse.Namespace) -> str:
    if args.protocol == "mtsics":
        return f"MT-SICS balance simulator (serial {sim.serial})"
    if args.protocol == "sbi":
        return f"Sartorius SBI balance simulator ({sim.framing.describe()}, serial {sim.serial})"
    return f"{args.protocol} scale simulator ({sim.map.name}, unit {args.unit_id}, serial {sim.serial})"
