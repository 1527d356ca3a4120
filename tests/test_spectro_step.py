"""The spectrometer step in process: the station's Instrument (worker thread, the
serial driver) against the serial simulator on a real pty, the physics model
behind it. Also the wire simulators' physics source and the calibration file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drivers.sim.spectra import Instrument as ModelInstrument
from drivers.sim.spectro_core import Scene, Stone
from drivers.sim.spectro_physics import PhysicsSource
from drivers.sim.spectrometer import SerialSpectrometerSimulator
from station.errors import MeasurementAborted
from station.instruments.devices import open_instrument
from station.instruments.plugins.spectro import SpectroSerialConfig
from station.instruments.spectro_step import NOT_CALIBRATED, SpectrometerStep
from station.records.artifacts import ArtifactStore
from station.spectra import calstore
from station.spectra.acquire import acquire
from station.spectra.analyse import calibration_from_lamps
from station.spectra.errors import CalibrationError

SERIAL = "SPX0000099"


# -- the physics source ---------------------------------------------------------

def test_source_is_the_model_instrument_of_that_serial_with_its_drifted_stored_coefficients():
    src = PhysicsSource(Scene(), pixel_count=2048, max_counts=65535, serial=SERIAL)
    model = ModelInstrument(SERIAL)
    assert src.coefficients == model.wavelength_coeffs
    true_first = model.params["true_poly"].coef[0]
    assert 0.5 <= abs(src.coefficients[0] - true_first) <= 1.5  # drifted, as the model's docs say
    other = PhysicsSource(Scene(), pixel_count=2048, max_counts=65535, serial="SPX0000100")
    assert other.coefficients != src.coefficients


def test_light_off_is_dark_and_each_placement_collects_the_light_differently():
    scene = Scene()
    src = PhysicsSource(scene, pixel_count=2048, max_counts=65535, seed=1, serial=SERIAL)
    scene.update(stone=Stone("S1", "natural"))
    on = src(200_000, 4, True).astype(float)
    off = src(200_000, 4, False).astype(float)
    assert on.max() - off.max() > 1000 and off.max() < 2500
    same_placement = src(200_000, 4, True).astype(float)
    scene.update(stone=Stone("S1", "natural"))  # lifted and put down again: equal stone, new placement
    replaced = src(200_000, 4, True).astype(float)
    signal = on - off
    # within a placement only noise differs; a new placement changes the overall collection (~15 %)
    assert abs((same_placement - off).sum() / signal.sum() - 1) < 0.01
    assert abs((replaced - off).sum() / signal.sum() - 1) > abs((same_placement - off).sum() / signal.sum() - 1)
    assert np.corrcoef(signal, replaced - off)[0, 1] > 0.99  # still the same stone


def test_integration_and_scans_are_clipped_to_the_models_limits():
    scene = Scene()
    src = PhysicsSource(scene, pixel_count=2048, max_counts=65535, serial=SERIAL)
    scene.update(target="halogen")
    assert src(10, 1, True).shape == (2048,)            # 10 µs -> 1 ms
    assert src(65_000_000, 5000, False).max() < 65535   # 65 s x 5000 -> 10 s x 1000, a dark frame


# -- the calibration file --------------------------------------------------------

@pytest.fixture(scope="module")
def calibration():
    from drivers.sim.spectra import HalogenLamp, HgArLamp, SimulatedSpectrometer

    dev = SimulatedSpectrometer(ModelInstrument(SERIAL), rng=np.random.default_rng(3))
    dev.place(HgArLamp(), jitter=False)
    hg = acquire(dev, scans=10)
    dev.place(HalogenLamp(), jitter=False)
    hal = acquire(dev, scans=20)
    return calibration_from_lamps(hg, hal, dev.wavelength_coeffs)


def test_calibration_file_round_trip(tmp_path, calibration):
    path, cal_id = calstore.save(tmp_path, calibration, serial=SERIAL, model="M", created="2026-11-28T00:00:00Z")
    assert path == tmp_path / "calibration" / f"spectrometer-{SERIAL}.json"
    back = calstore.load(tmp_path, SERIAL)
    assert back.id == cal_id and back.lines_used == len(calibration.wavelength_fit.lines_used)
    assert back.calibration.wavelength_coeffs == calibration.wavelength_coeffs
    assert np.array_equal(back.calibration.response, calibration.response)
    assert calstore.load(tmp_path, "SPX-OTHER") is None  # another unit has none


def test_an_edited_calibration_file_is_refused(tmp_path, calibration):
    path, _ = calstore.save(tmp_path, calibration, serial=SERIAL, model="M", created="2026-11-28T00:00:00Z")
    doc = json.loads(path.read_text())
    doc["wavelength_coeffs"][0] += 0.5
    path.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError, match="not usable"):
        calstore.load(tmp_path, SERIAL)
    path.write_text("{")
    with pytest.raises(CalibrationError, match="cannot read"):
        calstore.load(tmp_path, SERIAL)


# -- the step against the simulator on a pty ----------------------------------------

@pytest.fixture
def rig(tmp_path, calibration):
    with SerialSpectrometerSimulator(link_path=str(tmp_path / "usb-spectro"), serial=SERIAL, speed=100.0) as sim:
        cfg = SpectroSerialConfig(kind="spectrometer", driver="spectro-serial", port=sim.port, simulate=True)
        inst = open_instrument("spectro", cfg)
        inst.connect()
        step = SpectrometerStep(inst, ArtifactStore(tmp_path / "artifacts"), tmp_path)
        yield sim, step
        inst.close()


def calibrate_rig(sim, step):
    """The calibration the command would write, made on this simulated unit."""
    inst = step.instrument
    sim.set_target("hgar")
    hg = inst.call(lambda: acquire(inst.driver, scans=10), 60)
    sim.set_target("halogen")
    hal = inst.call(lambda: acquire(inst.driver, scans=20), 60)
    sim.set_target("off")
    cal = calibration_from_lamps(hg, hal, inst.call(inst.driver.wavelength_coefficients))
    calstore.save(step.state_dir, cal, serial=SERIAL, model="M", created="2026-11-28T00:00:00Z")


def test_without_a_calibration_file_the_stone_is_refused(rig):
    sim, step = rig
    sim.set_stone("S1", "natural")
    with pytest.raises(MeasurementAborted) as err:
        step.run(None)
    assert err.value.what == NOT_CALIBRATED and err.value.device == "spectro"
    assert sim.acquisitions == 0  # refused before any light


def test_saturation_aborts_the_stone_with_the_operator_message(rig):
    sim, step = rig
    calibrate_rig(sim, step)
    sim.set_stone("S1", "natural")
    sim.set_saturate()
    with pytest.raises(MeasurementAborted, match=r"Saturated at 1 ms \(the shortest integration\)"):
        step.run(None)


def test_weak_signal_aborts_the_stone_with_the_operator_message(rig):
    sim, step = rig
    calibrate_rig(sim, step)
    sim.close_shutter()
    with pytest.raises(MeasurementAborted, match="Weak signal"):
        step.run(None)


def test_a_stone_gives_three_artifact_readings_and_a_verdict(rig):
    sim, step = rig
    calibrate_rig(sim, step)
    sim.set_stone("C1", "cvd")
    raw, dark, processed = step.run(None)
    assert (raw.quantity, dark.quantity, processed.quantity) == ("spectrum-raw", "spectrum-dark", "spectrum-processed")
    assert raw.details is None and raw.note == "" and processed.details["screening"]["verdict"] == "REFER"
    assert processed.note.startswith("screening REFER: ") and "SiV 736.8 nm present" in processed.note
    for r in (raw, dark, processed):
        assert step.artifacts.read(r.artifact)  # stored and matching its SHA-256


def test_each_device_call_is_a_sign_of_life_and_a_frame_fits_the_budget(rig):
    sim, step = rig
    calibrate_rig(sim, step)
    ticks = []
    step.keepalive = lambda: ticks.append(1)
    sim.set_stone("N1", "natural")
    step.run(None)
    assert len(ticks) >= 6  # settings, the tries, the stone frame, the dark frame
    assert step.max_us * step.scans / 1e6 <= 40.0
