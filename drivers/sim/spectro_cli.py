"""``station sim spectrometer``: run a spectrometer simulator until SIGINT/SIGTERM.

``--protocol serial`` puts the RS-232 command set on a pty (``--link`` keeps a
by-id style symlink) or a TCP port; ``modbus-tcp`` / ``modbus-rtu`` serve the
front-end's register map over TCP (RTU frames with CRC for ``modbus-rtu``), or
for ``modbus-rtu --link PATH`` on a pty, like an RS-485 adapter.
It prints where the device is and where its control port listens, then blocks.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from drivers.sim.cli import _host_port

PROTOCOLS = ("serial", "modbus-rtu", "modbus-tcp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, default="serial",
                        help="serial (RS-232 command set), modbus-rtu or modbus-tcp (default: serial)")
    parser.add_argument("--link", metavar="PATH",
                        help="serial or modbus-rtu: sit on a pty and keep a symlink at PATH pointing at it, "
                             "like /dev/serial/by-id")
    parser.add_argument("--tcp", metavar="HOST:PORT", type=_host_port,
                        help="listen on TCP (serial: instead of a pty; Modbus: default 127.0.0.1:0)")
    parser.add_argument("--control", metavar="HOST:PORT", type=_host_port, default=("127.0.0.1", 0),
                        help="control interface address (default 127.0.0.1:0)")
    parser.add_argument("--serial", help="serial number to report (default SPX0000001 / SPM0000001)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="run integration waits this many times faster than real time (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line {"port": ..., "control": "host:port", "serial": ...}')


def _make(args: argparse.Namespace):
    extra = {"serial": args.serial} if args.serial else {}
    if args.protocol == "serial":
        from drivers.sim.spectrometer import SerialSpectrometerSimulator

        return SerialSpectrometerSimulator(link_path=args.link, tcp=args.tcp, speed=args.speed,
                                           seed=args.seed, **extra)
    if args.link and args.protocol != "modbus-rtu":
        raise ValueError("--link is for --protocol serial or modbus-rtu; a Modbus TCP front-end listens on --tcp")
    if args.link and args.tcp:
        raise ValueError("give --link (a pty) or --tcp, not both")
    from drivers.sim.spectro_modbus import ModbusSpectrometerSimulator

    host, port = args.tcp or ("127.0.0.1", 0)
    return ModbusSpectrometerSimulator(framing=args.protocol.removeprefix("modbus-"), host=host, port=port,
                                       link_path=args.link, speed=args.speed, seed=args.seed, **extra)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sim = None
    try:
        try:
            sim = _make(args)
            sim.start()
            host, port = sim.start_control(*args.control)
        except (OSError, ValueError) as e:
            print(f"error: cannot start the spectrometer simulator: {e}. Fix: choose another --link path "
                  "or --tcp/--control address", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps({"port": sim.port, "control": f"{host}:{port}", "serial": sim.serial,
                              "protocol": args.protocol}))
        else:
            print(f"spectrometer simulator ({args.protocol}, serial {sim.serial}) on {sim.port}; "
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
