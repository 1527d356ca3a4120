"""The spectrometer step of the stone session, after the stable weight.

Auto-integration, the averaged stone spectrum and its dark frame
(station/spectra/acquire.py), each device operation on the instrument's worker
with its own timeout (a frame's exposure plus the wire). Then processing with the unit's stored calibration, the peak table,
fingerprint and screening verdict (station/spectra/analyse.py), and the raw,
dark and processed spectra stored as artifacts before the step returns.

Readings, in order (docs/RECORDS.md, "Spectrum readings"):

    spectrum-raw        artifact: raw counts on the unit's calibrated pixel wavelengths
    spectrum-dark       artifact: the dark frame, same axis
    spectrum-processed  artifact: the processed spectrum on the fixed grid;
                        details = fingerprint, peak table, screening verdict,
                        Raman wavelength check, calibration id, acquisition settings;
                        note = "screening PASS" / "screening REFER: <reasons>"

A unit without a calibration file refuses the stone (nothing recorded) with
the operator message to run ``station spectrometer calibrate``: a spectrum
processed with the factory's drifted coefficients would give a fingerprint
that matches nothing measured elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from station.errors import DeviceError, MeasurementAborted
from station.instruments.devices import Instrument
from station.instruments.reading import Reading, utc_now
from station.records.artifacts import ArtifactStore
from station.spectra import calstore
from station.spectra.acquire import MAX_US, START_US, Acquisition, acquire
from station.spectra.analyse import acquisition_artifacts, analyse
from station.spectra.errors import SpectrumError
from station.spectra.lines import raman_nm
from station.spectra.peaks import RAMAN_NAME
from station.spectra.process import Processor

MEDIA_TYPE = "application/cbor; format=station-spectrum/1"
SUFFIX = ".spectrum.cbor"
NOT_CALIBRATED = "spectrometer is not calibrated: run `station spectrometer calibrate`"
_MAX_TRIES = 8
# The longest one averaged frame may take (integration x scans), well inside the
# station's 60 s liveness window: more scans shorten the longest integration.
FRAME_BUDGET_S = 40.0


class _Link:
    """The driver as acquire() sees it: each operation a separate call on the
    instrument's worker, bounded by its own timeout, and a sign of life to the
    station before each (a whole auto-integration can outlast the watchdog's
    liveness window; one frame cannot, see FRAME_BUDGET_S). Keeps each frame's
    raw exchange."""

    def __init__(self, instrument: Instrument, keepalive: Callable[[], None]) -> None:
        self.instrument, self.keepalive, self.frames = instrument, keepalive, []
        self.driver = instrument.driver
        self.max_counts = self.driver.max_counts
        self._t_us, self._scans = START_US, 1

    def _call(self, fn, timeout: float):
        self.keepalive()
        return self.instrument.call(fn, timeout)

    def set_integration_us(self, us: int) -> None:
        self._call(lambda: self.driver.set_integration_us(us), self._short())
        self._t_us = us

    def set_scans(self, n: int) -> None:
        self._call(lambda: self.driver.set_scans(n), self._short())
        self._scans = n

    def set_lamp(self, on: bool) -> None:
        self._call(lambda: self.driver.set_lamp(on), self._short())

    def acquire(self) -> np.ndarray:
        exposure = self._t_us * self._scans / 1e6
        counts = self._call(self.driver.acquire, exposure * 1.25 + self._short() + 5.0)
        frame = getattr(self.driver, "last_frame", None)
        self.frames.append(tuple(frame.raw) if frame is not None else ())
        return counts

    def _short(self) -> float:
        return self.instrument.cfg.reply_timeout_s * 3


class SpectrometerStep:
    def __init__(self, instrument: Instrument, artifacts: ArtifactStore, state_dir: Path,
                 keepalive: Callable[[], None] = lambda: None) -> None:
        self.instrument, self.artifacts, self.state_dir = instrument, artifacts, Path(state_dir)
        self.name = instrument.name
        self.laser_nm = float(getattr(instrument.cfg, "laser_nm", 405.0))
        self.scans = int(getattr(instrument.cfg, "scans", 4))
        self.max_us = int(min(MAX_US, FRAME_BUDGET_S * 1e6 / self.scans))
        # The station's liveness tick (app/service.py), called before each device call: a
        # long auto-integration must not look like a hung session to the watchdog.
        self.keepalive = keepalive
        self._processor: tuple[str, Processor] | None = None
        self._lost = False  # the last stone's call failed: reconnect first

    def run(self, mass: Reading) -> list[Reading]:
        inst = self.instrument
        try:
            if self._lost or inst.identity is None:
                inst.recover()
            self._lost = False
            stored = calstore.load(self.state_dir, inst.identity.serial)
            if stored is None:
                raise MeasurementAborted(NOT_CALIBRATED, f"put the Hg-Ar and halogen lamps on the probe when the "
                                         f"command asks (calibration file: {calstore.path_for(self.state_dir, inst.identity.serial)})",
                                         device=self.name)
            link = _Link(inst, self.keepalive)
            acq = acquire(link, scans=self.scans, max_us=self.max_us, max_tries=_MAX_TRIES)
        except DeviceError:
            self._lost = True
            raise
        if acq.messages:  # saturation or weak signal: the message already says what to do
            raise MeasurementAborted(acq.messages[0].rstrip("."), "then place the stone again", device=self.name)
        return self._readings(acq, stored, link.frames)

    def _processor_for(self, stored: calstore.StoredCalibration) -> Processor:
        if self._processor is None or self._processor[0] != stored.id:
            self._processor = (stored.id, Processor(stored.calibration))
        return self._processor[1]

    def _readings(self, acq: Acquisition, stored: calstore.StoredCalibration, frames: list) -> list[Reading]:
        proc = self._processor_for(stored)
        try:
            spectrum = proc.process(acq.raw, acq.dark)
        except SpectrumError as exc:
            raise MeasurementAborted(exc.what, exc.fix, device=self.name) from exc
        analysis = analyse(spectrum, self.laser_nm, stored.resolution_nm)
        ident = self.instrument.identity
        meta = {"serial": ident.serial, "calibration": stored.id, "laser_nm": self.laser_nm}
        blobs = acquisition_artifacts(acq, proc, spectrum, meta)
        when = utc_now()
        details = {**analysis.to_cbor(), "raman_check": _raman_check(analysis.peaks, self.laser_nm),
                   "calibration": {"id": stored.id, "created": stored.created, "rms_nm": round(stored.rms_nm, 4),
                                   "lines_used": stored.lines_used},
                   "acquisition": {"integration_us": int(acq.integration_us), "scans": int(acq.scans),
                                   "fill": round(float(acq.fill), 4)}}
        v = analysis.verdict
        note = f"screening {v.verdict}" + (f": {'; '.join(v.reasons)}" if v.reasons else "")
        raws = {"raw": frames[-2] if len(frames) >= 2 else (), "dark": frames[-1] if frames else ()}
        out = []
        for part, unit in (("raw", "counts"), ("dark", "counts"), ("processed", "relative")):
            ref = self.artifacts.put(blobs[part], MEDIA_TYPE, SUFFIX)
            last = part == "processed"
            out.append(Reading(device=self.name, kind="spectrometer", driver=self.instrument.driver_name,
                               identity=ident, quantity=f"spectrum-{part}", unit=unit, time=when,
                               raw=tuple(raws.get(part, ())), artifact=ref,
                               details=details if last else None, note=note if last else ""))
        return out


def _raman_check(peaks, laser_nm: float) -> dict:
    """The diamond Raman line's measured position against where the laser puts it:
    an in-sample check of the wavelength calibration."""
    expected = raman_nm(laser_nm)
    p = next((p for p in peaks if p.name == RAMAN_NAME), None)
    measured = None if p is None or not math.isfinite(p.position_nm) else round(p.position_nm, 4)
    return {"expected_nm": round(expected, 4), "measured_nm": measured,
            "offset_nm": None if measured is None else round(measured - expected, 4),
            "snr": None if p is None or not math.isfinite(p.snr) else round(p.snr, 2)}


def build(instrument: Instrument, artifacts: ArtifactStore, keepalive: Callable[[], None]) -> SpectrometerStep:
    # the artifact store lives in <state_dir>/artifacts; the calibration sits beside it
    return SpectrometerStep(instrument, artifacts, artifacts.directory.parent, keepalive)
