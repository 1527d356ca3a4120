"""`station verify`: the reference consumer, from .cose files or a broker."""

from __future__ import annotations

import argparse
import heapq
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from station import config
from station.app import console
from station.central.trust import PRODUCTION, SIMULATION, TrustStore, from_jwk_files, load_trust_file
from station.central.verify import DEFAULT_WINDOW, ChainChecker
from station.errors import KeyFileError, StationError
from station.records.keys import load_private_key
from station.delivery.topics import records_topic


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help=".cose files or directories of them")
    p.add_argument("--trust", metavar="FILE",
                   help="trust store (TOML): each station's production and simulation keys (docs/RECORDS.md)")
    p.add_argument("--key", action="append", default=[], metavar="JWK",
                   help="trusted public key (JSON from `station keys public --jwk`); repeatable. Bound on first use: "
                   "the first record it verifies fixes its station ID and kind (simulated or not) for this run. "
                   "Default: the keys named in the config, bound to its station ID")
    p.add_argument("--from-seq", type=int, default=1, metavar="N",
                   help="records before seq N are not expected (default 1: the whole chain)")
    p.add_argument("--table", action="store_true", help="print a row for every record (default: summary and problems)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                   help=f"compare a repeated seq with its first copy if it comes within N records (default {DEFAULT_WINDOW})")
    p.add_argument("--subscribe", action="store_true", help="read records from the broker instead of files")
    p.add_argument("--host", help="broker host (default: mqtt.host from the config)")
    p.add_argument("--port", type=int, help="broker port (default: mqtt.port from the config)")
    p.add_argument("--station", default="+", help="station ID to follow (default: all)")
    p.add_argument("--client-id", metavar="ID",
                   help="MQTT client id; the broker keeps this consumer's session (and the records "
                   "published while it is away) under it. Default: station-verify-<station>-<host>")
    p.add_argument("--count", type=int, metavar="N", help="with --subscribe: stop after N distinct records")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="with --subscribe: give up S seconds after starting (connecting included) "
                   "without reaching --count (default 60)")


def trust_store(args) -> TrustStore:
    if args.trust and args.key:
        raise StationError("--trust and --key together", "put every key in the trust store, or use only --key")
    if args.trust:
        return load_trust_file(Path(args.trust))
    if args.key:
        return from_jwk_files([Path(k) for k in args.key])
    cfg = config.load(config.resolve_path(args.config))
    store = TrustStore()
    for path, kind in ((cfg.station.key_file, PRODUCTION), (cfg.station.sim_key_file, SIMULATION)):
        if path is not None and path.exists():
            store.add(load_private_key(path).public_key(), cfg.station.id, kind, f"{cfg.source}: {path}")
    if not len(store):
        raise KeyFileError(f"no key to verify with: none of the keys in {cfg.source} exist",
                           "pass --trust FILE, or --key FILE with the station's public JWK")
    return store


def _seq_of(name: str) -> int | None:
    stem = name[:-5]
    return int(stem) if stem.isdigit() and str(int(stem)) == stem else None


def files(paths: list[str]) -> Iterator[str]:
    """Every .cose file, `<seq>.cose` in seq order across all directories (so copies of
    one seq meet), then other names in name order. Only names are held: ~40 bytes a file."""
    dirs: list[tuple[str, list[int]]] = []
    others: list[str] = []
    for raw in paths:
        if os.path.isdir(raw):
            seqs = []
            with os.scandir(raw) as it:
                for entry in it:
                    if entry.name.endswith(".cose"):
                        seq = _seq_of(entry.name)
                        if seq is None:
                            others.append(os.path.join(raw, entry.name))
                        else:
                            seqs.append(seq)
            seqs.sort()
            dirs.append((raw, seqs))
        elif os.path.isfile(raw):
            others.append(raw)
        else:
            raise StationError(f"{raw} does not exist", "give .cose files or a directory from `station records export`")
    if not others and not any(seqs for _, seqs in dirs):
        raise StationError("no .cose files found", "give files or a directory from `station records export`")
    streams = [_tagged(seqs, i) for i, (_, seqs) in enumerate(dirs)]
    for seq, i in heapq.merge(*streams):
        yield os.path.join(dirs[i][0], f"{seq}.cose")
    others.sort(key=lambda f: (_seq_of(os.path.basename(f)) or 0, f))
    yield from others


def _tagged(seqs: list[int], i: int) -> Iterator[tuple[int, int]]:
    for seq in seqs:
        yield seq, i


_CHUNK = 1 << 16


def _read(path: str) -> bytes:
    # os.read on a bare descriptor: a buffered file object costs more than the read itself.
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def verify_files(checker: ChainChecker, paths: list[str], on_record=None) -> None:
    for f in files(paths):
        item = checker.add(_read(f), f)
        if on_record is not None:
            on_record(item)


def _table_printer():
    started = False

    def row(item) -> None:
        nonlocal started
        if not started:  # on the first record, so an error about the input is not preceded by a header
            console.table_header()
            started = True
        console.table_row(item)

    return row


def run(args) -> int:
    if args.window < 1:
        raise StationError(f"--window {args.window} is below 1", "give how many recent records to compare repeats with")
    checker = ChainChecker(trust_store(args), first_seq=args.from_seq, window=args.window)
    on_record = _table_printer() if args.table else None
    if args.subscribe:
        _subscribe(args, checker, on_record)
    else:
        verify_files(checker, args.paths, on_record)
    report = checker.report()
    console.print_report(report)
    return 0 if report.ok else 1


def _subscribe(args, checker: ChainChecker, on_record) -> None:
    from station.delivery.mqtt import MqttSubscriber

    started = time.monotonic()
    deadline = started + args.timeout
    cfg = None
    if args.host is None or args.port is None:
        cfg = config.load(config.resolve_path(args.config))
    host = args.host or cfg.mqtt.host
    port = args.port or cfg.mqtt.port
    lock, enough = threading.Lock(), threading.Event()

    def on_message(payload: bytes, properties=None) -> None:
        with lock:
            item = checker.add(payload, f"mqtt {properties.topic}" if properties is not None else "mqtt")
            if on_record is not None:
                on_record(item)
                sys.stdout.flush()  # a live consumer: each row when its record arrives
            if args.count and checker.count >= args.count:
                enough.set()

    topic = records_topic(args.station)
    client_id = args.client_id or f"station-verify-{args.station.replace('+', 'all')}-{socket.gethostname()}"
    sub = MqttSubscriber(host=host, port=port, topic=topic, client_id=client_id, on_message=on_message)
    # Connecting is part of --timeout, so the time named in any message is the one the user gave.
    sub.start(timeout=max(0.1, deadline - time.monotonic()))
    console.say("info", f"Listening on {host}:{port} for {topic} ...")
    try:
        while not enough.is_set() and time.monotonic() < deadline:
            enough.wait(min(0.2, max(0.0, deadline - time.monotonic())))
    finally:
        sub.stop()
    with lock:
        if args.count and checker.count < args.count:
            # Part of the report, so its verdict can never say ALL VERIFIED over missing records.
            checker.problem(f"only {checker.count} of the {args.count} record(s) asked for with --count verified "
                            f"before --timeout {args.timeout:g} s ran out ({checker.bad} bad). Fix: check that the "
                            f"station is running and connected to {host}:{port}, or raise --timeout")
