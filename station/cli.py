"""The `station` command. Every command reads --config FILE, else $STATION_CONFIG,
else /etc/station/station.toml. Expected errors print one line (cause and fix)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from station import __version__, config
from station.app import console
from station.errors import StationError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except StationError as exc:
        console.error_line(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an unexpected bug still gets one line, unless --debug
        if args.debug:
            raise
        console.error_line(f"internal error {type(exc).__name__}: {exc}. Fix: rerun with --debug and report it")
        return 70


def _config(args) -> config.Config:
    return config.load(config.resolve_path(args.config))


# --- config -----------------------------------------------------------------

def cmd_config_check(args) -> int:
    path = Path(args.file) if args.file else config.resolve_path(args.config)
    try:
        cfg = config.load(path)
    except config.ConfigError as exc:
        # Every problem in the file, not just the first: a technician fixes them in one go.
        for file, what, fix in exc.problems or [(None, exc.what, exc.fix)]:
            console.error_line(f"{file}: {what}. Fix: {fix}" if file else f"{what}. Fix: {fix}")
        return 1
    devices = ", ".join(f"{name}: {'SIMULATED ' if d.simulate else ''}{d.kind} {d.driver}"
                        f"{' on ' + d.port if getattr(d, 'port', None) else ''}" for name, d in cfg.devices.items())
    console.out.print(f"{path}: OK (station {cfg.station.id}; {devices}; broker {cfg.mqtt.host}:{cfg.mqtt.port})")
    return 0


# --- keys -------------------------------------------------------------------

def cmd_keys_init(args) -> int:
    from station.records.keys import init_key, kid_for

    cfg = _config(args)
    path = cfg.signing_key_file
    key = init_key(path)
    which = "simulation" if cfg.simulated else "station"
    console.out.print(f"Created {which} key {path} (mode 0600), kid {kid_for(key.public_key())}")
    return 0


def cmd_keys_public(args) -> int:
    from station.records.cose import Signer
    from station.records.keys import load_private_key

    cfg = _config(args)
    if args.trust_entry:
        from station.central.trust import PRODUCTION, SIMULATION, trust_entry

        keys = {kind: [load_private_key(path).public_key()] for path, kind in
                ((cfg.station.key_file, PRODUCTION), (cfg.station.sim_key_file, SIMULATION))
                if path is not None and path.exists()}
        if not keys:
            raise StationError(f"none of the keys in {cfg.source} exist", "create one with `station keys init`")
        print(trust_entry(cfg.station.id, keys), end="")
        return 0
    signer = Signer(load_private_key(cfg.signing_key_file))
    print(json.dumps(signer.jwk(), indent=2) if args.jwk else signer.kid)
    return 0


# --- certs (mutual TLS with the broker) -----------------------------------------

def cmd_certs_request(args) -> int:
    from station.delivery import certs

    cfg = _config(args)
    key = Path(args.key) if args.key else cfg.mqtt.key_file
    if key is None:
        raise StationError("no key path: mqtt.key_file is not set", f"set mqtt.key_file in {cfg.source} or pass --key")
    csr = Path(args.csr) if args.csr else key.with_suffix(".csr")
    certs.request(cfg.station.id, key, csr, force=args.force)
    console.out.print(f"Wrote the TLS key {key} (mode 0600) and the request {csr} (CN={cfg.station.id}). "
                      "Send the .csr (never the key) to the central CA; install the signed certificate "
                      "as mqtt.cert_file and the CA's certificate as mqtt.ca_file.")
    return 0


def cmd_certs_check(args) -> int:
    from station.delivery.tls import from_config

    cfg = _config(args)
    if not cfg.mqtt.tls:
        raise StationError(f"{cfg.source}: mutual TLS is not configured",
                           "set mqtt.ca_file, mqtt.cert_file and mqtt.key_file")
    tls, _ = from_config(cfg.mqtt, cfg.station.id)
    assert tls is not None
    console.out.print(f"{tls.cert_file}: OK for station {cfg.station.id} (CN {tls.identity!r}), "
                      f"valid until {tls.not_after:%Y-%m-%d %H:%M} UTC")
    return 0


# --- run --------------------------------------------------------------------

def cmd_run(args) -> int:
    from station.app.service import Session, Station

    cfg = _config(args)
    operator = args.operator or cfg.session.operator
    lot = args.lot or cfg.session.lot
    if not operator or not lot:
        missing = "operator" if not operator else "lot"
        raise config.ConfigError(f"no {missing} ID given", f"pass --{missing} ID or set session.{missing} in {cfg.source}")
    from station.session.events import EventBus

    bus = EventBus()
    bus.subscribe(console.show_event)
    station = Station(cfg, Session(operator=operator, lot=lot), bus)
    station.install_signal_handlers()
    return station.run(max_stones=args.max_stones, drain_timeout=args.drain_timeout)


# --- records ----------------------------------------------------------------

def cmd_records_export(args) -> int:
    from station.delivery.outbox import Outbox
    from station.app.service import outbox_path

    cfg = _config(args)
    path = outbox_path(cfg)
    if not path.exists():
        raise StationError(f"no outbox at {path}", "check station.state_dir; the station creates it on first run")
    if args.from_seq is not None and args.to_seq is not None and args.from_seq > args.to_seq:
        raise StationError(f"--from-seq {args.from_seq} is after --to-seq {args.to_seq}", "swap them")
    box = Outbox(path)
    try:
        n = box.export(Path(args.dir), from_seq=args.from_seq, to_seq=args.to_seq, force=args.force)
        depth = box.depth()
    finally:
        box.close()
    console.out.print(f"Exported {n} record(s) to {args.dir} ({depth} not yet delivered to the broker)")
    return 0


def cmd_consume(args) -> int:
    from station.central import consume

    return consume.run(args)


def cmd_records_reset_chain(args) -> int:
    from station.app.service import outbox_path
    from station.records.reset import reset_chain

    cfg = _config(args)
    operator = args.operator or cfg.session.operator
    if not operator:
        raise StationError("reset-chain needs the person responsible", "pass --operator NAME")
    done = reset_chain(cfg, outbox_path(cfg), operator=operator, lot=args.lot or cfg.session.lot or "chain-reset")
    console.out.print(f"Chain reset: seqs {done.lost_from}..{done.lost_to} are not in this outbox; signed record "
                      f"#{done.record.seq} ({done.record.record_id}) says so and continues the chain. "
                      "It is delivered when the station next runs.")
    return 0


def cmd_records_status(args) -> int:
    from station.app.service import outbox_path
    from station.delivery.outbox import Outbox
    from station.records.head import known_head

    cfg = _config(args)
    path = outbox_path(cfg)
    if not path.exists():
        raise StationError(f"no outbox at {path}", "check station.state_dir; the station creates it on first run")
    with Outbox(path) as box:
        c = box.counts()
        rejected = box.rejections()
    head = known_head(cfg.station.state_dir)
    console.out.print(f"{path}: last seq {c.last_seq}; stored {c.stored}, published {c.published}, "
                      f"acked {c.acked}, rejected {c.rejected}; recorded head: "
                      f"{f'seq {head.seq} ({head.source})' if head else 'none'}")
    for seq, record_id, reason in rejected:
        console.out.print(f"  rejected #{seq} {record_id}: {reason}")
    return 0


# --- verify -----------------------------------------------------------------

def cmd_verify(args) -> int:
    from station.central import verify_cli

    return verify_cli.run(args)


# --- sim / demo -------------------------------------------------------------

def cmd_sim(args) -> int:
    from drivers.sim import cli as sim_cli

    return sim_cli.run(args)


def cmd_sim_spectrometer(args) -> int:
    from drivers.sim import spectro_cli

    return spectro_cli.run(args)


def cmd_sim_control(args) -> int:
    from drivers.sim.control import SimControl

    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        raise StationError(f"{args.address!r} is not HOST:PORT", "give the control address `station sim scale` printed")
    try:
        with SimControl(host, int(port)) as ctl:
            reply = ctl.send(" ".join(args.command))
    except OSError as exc:
        raise StationError(f"cannot reach the simulator's control port {args.address}: {exc}",
                           "start it with `station sim scale` and use the control address it printed") from exc
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def cmd_sim_broker(args) -> int:
    import signal
    import threading

    from station.app.broker import Mosquitto

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Mosquitto(Path(args.dir) if args.dir else None, port=args.port) as broker:
        console.say("info", f"MQTT broker on {broker.host}:{broker.port} (mosquitto pid {broker.pid}); "
                    "stop it with Ctrl-C")
        while not stop.wait(0.5):
            if broker.pid is None:
                break
    return 0


def cmd_demo(args) -> int:
    from station.app import demo

    return demo.run(stones=args.stones, keep=Path(args.keep) if args.keep else None)


def _stone_count(text: str) -> int:
    """--max-stones / demo --stones: a whole number of stones, 1 or more (0 or -1
    would never stop or stop at once, and a typo must not run an unattended
    station forever)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of stones, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"must be 1 or more, got {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="station", description="Diamond scanner station controller.")
    p.add_argument("--version", action="version", version=f"station {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help=f"config file (default: ${config.ENV_VAR}, "
                        f"else {config.DEFAULT_PATH})")
    common.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    p.set_defaults(debug=False, config=None)
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    c = sub.add_parser("config", help="check a config file").add_subparsers(metavar="ACTION")
    s = c.add_parser("check", parents=[common], help="validate a config file")
    s.add_argument("file", nargs="?", help="file to check (default: the --config resolution)")
    s.set_defaults(func=cmd_config_check)

    k = sub.add_parser("keys", help="signing keys").add_subparsers(metavar="ACTION")
    s = k.add_parser("init", parents=[common], help="create the signing key the config uses (mode 0600)")
    s.set_defaults(func=cmd_keys_init)
    s = k.add_parser("public", parents=[common], help="print the public key (kid, or --jwk)")
    s.add_argument("--jwk", action="store_true", help="print an OKP JWK")
    s.add_argument("--trust-entry", action="store_true",
                   help="print this station's entry for a consumer's trust store (TOML: production and simulation keys)")
    s.set_defaults(func=cmd_keys_public)

    t = sub.add_parser("certs", help="TLS certificate for the broker").add_subparsers(metavar="ACTION")
    s = t.add_parser("request", parents=[common], help="write a TLS key (0600) and a CSR for the central CA")
    s.add_argument("--key", metavar="FILE", help="where to write the key (default: mqtt.key_file)")
    s.add_argument("--csr", metavar="FILE", help="where to write the CSR (default: the key's path with .csr)")
    s.add_argument("--force", action="store_true", help="replace an existing key and CSR")
    s.set_defaults(func=cmd_certs_request)
    s = t.add_parser("check", parents=[common], help="check the configured CA, certificate and key")
    s.set_defaults(func=cmd_certs_check)

    s = sub.add_parser("run", parents=[common], help="run the station")
    s.add_argument("--operator", help="operator ID (else session.operator)")
    s.add_argument("--lot", help="lot/parcel ID (else session.lot)")
    s.add_argument("--max-stones", type=_stone_count, metavar="N",
                   help="stop after N recorded stones (N >= 1; default: run until stopped)")
    s.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="on exit, wait up to S seconds for the broker to take every record")
    s.set_defaults(func=cmd_run)

    r = sub.add_parser("records", help="the outbox of signed records").add_subparsers(metavar="ACTION")
    s = r.add_parser("export", parents=[common], help="write records as DIR/<seq>.cose")
    s.add_argument("dir")
    s.add_argument("--from-seq", type=int, metavar="N", help="first seq to export (default: the first stored)")
    s.add_argument("--to-seq", type=int, metavar="N", help="last seq to export, inclusive (default: the last stored)")
    s.add_argument("--force", action="store_true", help="overwrite files that already exist in DIR")
    s.set_defaults(func=cmd_records_export)
    s = r.add_parser("reset-chain", parents=[common],
                     help="after a refused start for a lost outbox: write a signed record of the loss and "
                          "continue the chain after it")
    s.add_argument("--operator", help="who decided the reset (default: session.operator)")
    s.add_argument("--lot", help="lot to put in the reset record (default: session.lot)")
    s.set_defaults(func=cmd_records_reset_chain)
    s = r.add_parser("status", parents=[common], help="records by state, rejections, and the recorded head")
    s.set_defaults(func=cmd_records_status)

    s = sub.add_parser("verify", parents=[common], help="verify records: signatures, chain, gaps")
    from station.central import verify_cli

    verify_cli.add_arguments(s)
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("consume", parents=[common],
                       help="the central consumer: verify, store (PostgreSQL or SQLite), ack, ask for replays")
    from station.central import consume as consume_cli

    consume_cli.add_arguments(s)
    s.set_defaults(func=cmd_consume)

    sim = sub.add_parser("sim", help="device simulators").add_subparsers(metavar="DEVICE")
    s = sim.add_parser("scale", parents=[common], help="a simulated balance on a pty or TCP port")
    from drivers.sim import cli as sim_cli

    sim_cli.add_arguments(s)
    s.set_defaults(func=cmd_sim)
    s = sim.add_parser("spectrometer", parents=[common], help="a simulated spectrometer: serial, Modbus RTU or TCP")
    from drivers.sim import spectro_cli

    spectro_cli.add_arguments(s)
    s.set_defaults(func=cmd_sim_spectrometer)
    s = sim.add_parser("ambient", parents=[common], help="a simulated Modbus RTU temperature/humidity sensor")
    from drivers.sim import ambient_cli

    ambient_cli.add_arguments(s)
    s.set_defaults(func=ambient_cli.run)
    s = sim.add_parser("broker", help="a private MQTT broker (mosquitto) for trying the station by hand")
    s.add_argument("--port", type=int, default=18830, help="port on 127.0.0.1 (default 18830, the sim config's)")
    s.add_argument("--dir", metavar="DIR", help="keep its config, log and persistence here (default: a temp dir)")
    s.set_defaults(func=cmd_sim_broker)
    s = sim.add_parser("control", help="send a command to a running simulator, e.g. `place 99800`")
    s.add_argument("address", metavar="HOST:PORT", help="the control address `station sim scale` printed")
    s.add_argument("command", nargs="+", help="place UG | remove | noise UG | drift UG_PER_S | "
                   "fault garbage|partial | fault timeout S | unplug | replug | clear | status; Modbus: "
                   "fault crc|noreply|exception|loadcell; ambient: temp C | humidity RH | fault stale; "
                   "spectrometer: stone ID KIND | lamp hgar|halogen|off | dark | light | saturate")
    s.set_defaults(func=cmd_sim_control)

    from station.spectra import cli as spectra_cli  # registers `fingerprint` and `screen`; imports numpy lazily

    spectra_cli.add_commands(sub, common)
    from station.spectra import calibrate_cli

    calibrate_cli.add_commands(sub, common)

    s = sub.add_parser("demo", parents=[common], help="run the whole station on simulated devices")
    s.add_argument("--stones", type=_stone_count, default=5, help="how many stones (default 5)")
    s.add_argument("--keep", metavar="DIR", help="run in DIR, new or empty (default: a new temporary directory); "
                   "the demo's config, keys, certificates, outbox and consumer database stay there")
    s.set_defaults(func=cmd_demo)
    return p


if __name__ == "__main__":
    sys.exit(main())
