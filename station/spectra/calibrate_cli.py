"""``station spectrometer calibrate``: the lamps on the probe, a fitted calibration in the state dir.

    1. the Hg-Ar lamp on the probe: its lines fix pixel -> wavelength
       (starting from the unit's stored coefficients, which may have drifted);
    2. the tungsten-halogen lamp (2856 K) on the probe: the spectral response;
    3. the fit is written to <state_dir>/calibration/spectrometer-<serial>.json
       (format in station/spectra/calstore.py and docs/SPECTRA.md).

A technician puts each lamp on the probe and presses Enter. With a simulated
spectrometer, ``--sim-control HOST:PORT`` switches the simulator's source
through its control port instead of asking.
"""

from __future__ import annotations

import argparse

from station.app import console
from station.errors import StationError

HGAR_SCANS, HALOGEN_SCANS = 10, 20


def add_commands(sub, common) -> None:
    g = sub.add_parser("spectrometer", help="spectrometer maintenance").add_subparsers(metavar="ACTION")
    s = g.add_parser("calibrate", parents=[common],
                     help="wavelength (Hg-Ar lamp) and response (halogen lamp) calibration into the state dir")
    s.add_argument("--device", metavar="NAME", help="the spectrometer's name in the config (default: the only one)")
    s.add_argument("--sim-control", metavar="HOST:PORT",
                   help="a simulated spectrometer: switch its lamps through this control port instead of asking")
    s.set_defaults(func=cmd_calibrate)


def _pick(cfg, name: str | None):
    devs = cfg.devices_of("spectrometer")
    if name:
        if name not in devs:
            raise StationError(f"no spectrometer named {name!r} in the config",
                               f"use one of: {', '.join(devs) or '(none configured)'}")
        return name, devs[name]
    if len(devs) != 1:
        raise StationError(f"the config has {len(devs)} spectrometers", "name one with --device NAME"
                           if devs else "add a [devices.<name>] table with kind = \"spectrometer\"")
    return next(iter(devs.items()))


class _Lamps:
    def __init__(self, address: str | None) -> None:
        self.ctl = None
        if address:
            from drivers.sim.control import SimControl

            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise StationError(f"{address!r} is not HOST:PORT", "give the control address the simulator printed")
            try:
                self.ctl = SimControl(host, int(port))
            except OSError as exc:
                raise StationError(f"cannot reach the simulator's control port {address}: {exc}",
                                   "start it with `station sim spectrometer` and use the control address it printed")

    def put(self, word: str, text: str) -> None:
        if self.ctl is None:
            console.out.print(f"Put the {text} on the probe, switch it on, close the lid and press Enter.")
            input()
            return
        reply = self.ctl.send(f"lamp {word}")
        if not reply.get("ok"):
            raise StationError(f"the simulator refused `lamp {word}`: {reply.get('error')}", "check the simulator")

    def close(self) -> None:
        if self.ctl is not None:
            self.ctl.send("lamp off")
            self.ctl.close()
        else:
            console.out.print("Calibration done: take the lamp off the probe.")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from station import config
    from station.app.lock import StateDirLock
    from station.instruments.devices import open_instrument
    from station.instruments.reading import utc_now
    from station.spectra import calstore
    from station.spectra.acquire import acquire
    from station.spectra.analyse import calibration_from_lamps

    cfg = config.load(config.resolve_path(args.config))
    name, dcfg = _pick(cfg, args.device)
    cfg.station.state_dir.mkdir(parents=True, exist_ok=True)
    lock = StateDirLock(cfg.station.state_dir)  # not while the station measures with the same unit
    lock.acquire()
    lamps = _Lamps(args.sim_control)
    inst = open_instrument(name, dcfg)
    try:
        ident = inst.connect()
        console.out.print(f"{name}: {ident.model} serial {ident.serial}.")
        stored = inst.call(inst.driver.wavelength_coefficients)
        acqs = {}
        for word, text, scans in (("hgar", "Hg-Ar wavelength lamp", HGAR_SCANS),
                                  ("halogen", "tungsten-halogen reference lamp (2856 K)", HALOGEN_SCANS)):
            lamps.put(word, text)
            a = inst.call(lambda s=scans: acquire(inst.driver, scans=s), 300.0)
            if a.messages:
                raise StationError(f"{text}: {a.messages[0].rstrip('.')}", "fix the lamp's position and run the command again")
            acqs[word] = a
        cal = calibration_from_lamps(acqs["hgar"], acqs["halogen"], stored)
        settings = {k: {"integration_us": int(a.integration_us), "scans": int(a.scans)} for k, a in acqs.items()}
        path, cal_id = calstore.save(cfg.station.state_dir, cal, serial=ident.serial, model=ident.model,
                                     created=utc_now(), lamps=settings)
    finally:
        try:
            lamps.close()
        finally:
            inst.close()
            lock.release()
    fit = cal.wavelength_fit
    console.say("ok", f"Calibrated {name} (serial {ident.serial}): wavelength residual RMS {fit.rms_nm:.3f} nm "
                f"(max {fit.max_abs_nm:.3f} nm) over {len(fit.lines_used)} Hg-Ar lines, resolution "
                f"{fit.resolution_nm:.2f} nm; calibration {cal_id} written to {path}.")
    return 0
