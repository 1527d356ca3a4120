"""`station verify`: the reference consumer, from .cose files or a broker."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station import config
from station.app import console
from station.errors import KeyFileError, StationError
from station.records.keys import kid_for, load_private_key, load_public_jwk_file
from station.central.verify import ChainChecker


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help=".cose files or directories of them")
    p.add_argument("--key", action="append", default=[], metavar="JWK",
                   help="trusted public key (JSON from `station keys public --jwk`); repeatable. "
                   "Default: the keys named in the config")
    p.add_argument("--from-seq", type=int, default=1, metavar="N",
                   help="records before seq N are not expected (default 1: the whole chain)")
    p.add_argument("--subscribe", action="store_true", help="read records from the broker instead of files")
    p.add_argument("--host", help="broker host (default: mqtt.host from the config)")
    p.add_argument("--port", type=int, help="broker port (default: mqtt.port from the config)")
    p.add_argument("--station", default="+", help="station ID to follow (default: all)")
    p.add_argument("--client-id", metavar="ID",
                   help="MQTT client id; the broker keeps this consumer's session (and the records "
                   "published while it is away) under it. Default: station-verify-<station>-<host>")
    p.add_argument("--count", type=int, metavar="N", help="with --subscribe: stop after N distinct records")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="with --subscribe: give up after S seconds without reaching --count (default 60)")


def _trusted_keys(args) -> dict[str, Ed25519PublicKey]:
    keys: list[Ed25519PublicKey] = [load_public_jwk_file(Path(k)) for k in args.key]
    if not keys:
        cfg = config.load(config.resolve_path(args.config))
        for path in (cfg.station.key_file, cfg.station.sim_key_file):
            if path is not None and path.exists():
                keys.append(load_private_key(path).public_key())
        if not keys:
            raise KeyFileError(f"no key to verify with: none of the keys in {cfg.source} exist",
                               "pass --key FILE with the station's public JWK")
    return {kid_for(k): k for k in keys}


def _files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(p.glob("*.cose"), key=lambda f: (len(f.name), f.name)))
        elif p.is_file():
            found.append(p)
        else:
            raise StationError(f"{p} does not exist", "give .cose files or a directory from `station records export`")
    if not found:
        raise StationError("no .cose files found", "give files or a directory from `station records export`")
    return found


def run(args) -> int:
    checker = ChainChecker(_trusted_keys(args), first_seq=args.from_seq)
    if args.subscribe:
        complete = _subscribe(args, checker)
    else:
        for f in _files(args.paths):
            checker.add(f.read_bytes(), str(f))
        complete = True
    report = checker.report()
    console.print_report(report)
    if not complete:
        console.error_line(f"only {checker.count} of {args.count} record(s) arrived within {args.timeout:g} s. "
                           "Fix: check that the station is running and connected to the same broker")
    return 0 if report.ok and complete else 1


def _subscribe(args, checker: ChainChecker) -> bool:
    from station.delivery.mqtt import MqttSubscriber

    cfg = None
    if args.host is None or args.port is None:
        cfg = config.load(config.resolve_path(args.config))
    host = args.host or cfg.mqtt.host
    port = args.port or cfg.mqtt.port
    lock, enough = threading.Lock(), threading.Event()

    def on_message(payload: bytes, properties=None) -> None:
        with lock:
            checker.add(payload, "mqtt")
            if args.count and checker.count >= args.count:
                enough.set()

    sub = MqttSubscriber(host=host, port=port, topic=f"stations/{args.station}/records",
                         client_id=args.client_id or f"station-verify-{args.station.replace('+', 'all')}-{socket.gethostname()}", on_message=on_message)
    sub.start()
    console.say("info", f"Listening on {host}:{port} for stations/{args.station}/records ...")
    try:
        deadline = time.monotonic() + args.timeout
        while not enough.is_set() and time.monotonic() < deadline:
            enough.wait(0.2)
    finally:
        sub.stop()
    return enough.is_set() or not args.count
