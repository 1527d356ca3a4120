"""The serial spectrometer driver against its simulator over a real pty and TCP."""

import os
import time

import numpy as np
import pytest

from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.kinds import Spectrometer
from drivers.serial_link import SerialLink
from drivers.sim.control import SimControl
from drivers.sim.spectrometer import SerialSpectrometerSimulator
from drivers.spectro_serial import SerialSpectrometer

SERIAL = "SPX0000001"
SPEED = 20.0  # integration waits run 20x faster than real time


def make_sim(tmp_path, **kw) -> SerialSpectrometerSimulator:
    kw.setdefault("speed", SPEED)
    kw.setdefault("seed", 7)
    if "tcp" not in kw:
        kw.setdefault("link_path", str(tmp_path / "usb-SIM_CCD2048-if00"))
    return SerialSpectrometerSimulator(**kw)


def make_driver(port: str, **kw) -> SerialSpectrometer:
    return SerialSpectrometer(SerialLink(port, baudrate=115200, timeout=0.5), reply_timeout=0.4, **kw)


@pytest.fixture
def sim(tmp_path):
    with make_sim(tmp_path) as s:
        yield s


@pytest.fixture
def spec(sim):
    d = make_driver(sim.port)
    d.identify()
    yield d
    d.close()


def test_identifies_through_the_by_id_symlink_and_is_a_spectrometer(sim, spec):
    assert os.path.islink(sim.port) and os.readlink(sim.port).startswith("/dev/pts/")
    assert isinstance(spec, Spectrometer)
    assert (spec.identity.serial, spec.pixel_count, spec.max_counts) == (SERIAL, 2048, 65535)
    assert spec.wavelength_coefficients() == sim.coefficients


def test_acquire_returns_uint16_counts_of_pixel_count(sim, spec):
    sim.set_stone("S1", "natural")
    spec.set_lamp(True)
    counts = spec.acquire()
    assert counts.dtype == np.uint16 and counts.shape == (2048,)
    assert not spec.last_frame.saturated and spec.last_frame.header.lamp_on
    assert counts.max() > counts.min() + 1000  # lines above the dark floor


def test_lamp_off_gives_a_dark_frame(sim, spec):
    sim.set_stone("S1", "natural")
    spec.set_lamp(False)
    dark = spec.acquire()
    assert dark.max() < 1200  # offset 1000 + dark current + read noise only


def test_integration_time_is_a_real_wait(sim, spec):
    spec.set_integration_us(400_000)
    spec.set_scans(5)  # 2 s of exposure, 0.1 s at SPEED 20
    t0 = time.monotonic()
    spec.acquire()
    elapsed = time.monotonic() - t0
    assert 0.1 <= elapsed < 1.5  # really waited, and scaled: unscaled it would be 2 s
    assert spec.last_frame.header.scans == 5 and spec.last_frame.header.integration_us == 400_000


def test_counts_scale_with_integration_time(sim, spec):
    sim.set_stone("S1", "cvd")
    spec.set_lamp(True)
    spec.set_integration_us(50_000)
    short = spec.acquire().astype(float) - 1000
    spec.set_integration_us(100_000)
    long = spec.acquire().astype(float) - 1000
    peak = int(np.argmax(long))
    assert long[peak] / short[peak] == pytest.approx(2.0, rel=0.1)


def test_saturation_sets_the_flag(sim, spec):
    sim.set_stone("S1", "hpht")
    spec.set_lamp(True)
    sim.set_saturate()
    counts = spec.acquire()
    assert spec.last_frame.saturated and counts.max() == 65535
    sim.clear_faults()
    spec.acquire()
    assert not spec.last_frame.saturated


def test_hgar_lamp_lines_appear(sim, spec):
    sim.set_target("hgar")
    spec.set_lamp(True)  # the device's light output powers whatever sits on the probe
    counts = spec.acquire()
    # the physics model: ~28 narrow lines, each one to three pixels above a dark floor < 1200 at 100 ms
    assert (counts > 1500).sum() > 25


def test_out_of_range_settings_are_refused_and_the_link_stays_usable(sim, spec):
    for setter, bad, good in ((spec.set_integration_us, 9, 10), (spec.set_integration_us, 65_000_001, 65_000_000),
                              (spec.set_scans, 0, 1), (spec.set_scans, 5001, 5000)):
        with pytest.raises(DeviceRefused):
            setter(bad)
        setter(good)
    assert (sim.integration_us, sim.scans) == (65_000_000, 5000)


def test_ascii_transfer_gives_the_same_kind_of_spectrum(sim, spec):
    sim.set_target("hgar")
    spec.set_ascii_transfer(True)
    counts = spec.acquire()
    assert counts.shape == (2048,) and sim.ascii_mode
    spec.set_ascii_transfer(False)
    assert not sim.ascii_mode


def test_truncated_block_is_detected_then_the_next_scan_works(sim, spec):
    sim.inject("partial")
    with pytest.raises(ProtocolError, match="expected bytes"):
        spec.acquire()
    assert spec.acquire().shape == (2048,)


def test_corrupted_block_is_detected(sim, spec):
    sim.inject("corrupt")
    with pytest.raises(ProtocolError, match="checksum"):
        spec.acquire()
    assert spec.acquire().shape == (2048,)


def test_garbage_then_recovery(sim, spec):
    sim.inject("garbage")
    with pytest.raises(ProtocolError):
        spec.set_lamp(True)
    spec.set_lamp(True)
    assert sim.lamp_on


def test_silence_is_a_timeout_then_recovery(sim, spec):
    sim.inject("timeout", 30)
    with pytest.raises(ReplyTimeout):
        spec.acquire()
    sim.clear_faults()
    assert spec.acquire().shape == (2048,)


def test_unplug_replug_reidentifies_by_serial_and_restores_settings(sim, spec):
    spec.set_integration_us(123_000)
    sim.unplug()
    with pytest.raises(LinkError):
        spec.acquire()
    with pytest.raises(LinkError):
        spec.recover()  # the by-id link is gone
    sim.replug()
    assert spec.recover().serial == SERIAL
    assert sim.integration_us == 123_000  # re-sent after the power cycle
    assert spec.acquire().shape == (2048,)


def test_a_different_spectrometer_on_the_same_path_is_refused(tmp_path):
    path = str(tmp_path / "usb-SIM_CCD2048-if00")
    with make_sim(tmp_path, link_path=path) as first:
        spec = make_driver(first.port)
        spec.identify()
        spec.close()
    with make_sim(tmp_path, link_path=path, serial="SPX0000002"):
        with pytest.raises(LinkError, match="SPX0000002"):
            spec.recover()


def test_over_tcp_and_the_control_port(tmp_path):
    with make_sim(tmp_path, tcp=("127.0.0.1", 0)) as sim:
        host, port = sim.start_control()
        with SimControl(host, port) as ctl:
            assert ctl.send("stone A7 cvd") == {"ok": True}
            assert ctl.send("stone A7 glass")["ok"] is False
            assert ctl.send("lamp hgar") == {"ok": True}
            assert "cannot run 'place 5'" in ctl.send("place 5")["error"]  # a balance's word
            status = ctl.status()
        assert status["stone"] == {"id": "A7", "kind": "cvd"} and status["target"] == "hgar"
        spec = make_driver(sim.port)
        assert spec.identify().serial == SERIAL
        assert spec.acquire().shape == (2048,)
        spec.close()


def test_same_seed_same_spectra(tmp_path):
    runs = []
    for i in range(2):
        with make_sim(tmp_path, tcp=("127.0.0.1", 0), seed=3) as sim:
            sim.set_stone("S9", "natural")
            spec = make_driver(sim.port)
            spec.identify()
            spec.set_lamp(True)
            runs.append(spec.acquire())
            spec.close()
    assert np.array_equal(runs[0], runs[1])


class FlatSource:
    """A stand-in for the physics model: its own stored calibration, a known spectrum."""

    coefficients = (400.0, 0.27, -1e-5, 2e-10)

    def __init__(self):
        self.calls = []

    def __call__(self, integration_us, scans, lamp_on):
        self.calls.append((integration_us, scans, lamp_on))
        return np.full(2048, 1234 + lamp_on, dtype=np.uint16)


def test_a_plugged_in_source_and_its_calibration_reach_the_driver(tmp_path):
    source = FlatSource()
    with make_sim(tmp_path, source=source) as sim:
        spec = make_driver(sim.port)
        spec.identify()
        assert spec.wavelength_coefficients() == FlatSource.coefficients
        spec.set_integration_us(50_000)
        spec.set_scans(2)
        spec.set_lamp(True)
        assert spec.acquire().tolist() == [1235] * 2048
        spec.close()
    assert source.calls == [(50_000, 2, True)]
