"""The Modbus spectrometer front-end: driver vs simulator over Modbus TCP, RTU
framing on a TCP socket and RTU on a pty, the wire's faults, an independent
master (Debian's mbpoll), and the register map's boundaries."""

import re
import shutil
import socket
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import spectro_modbus as m
from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.kinds import Spectrometer
from drivers.modbus_codes import ModbusBusy, ModbusExceptionReply
from drivers.modbus_link import ModbusLink
from drivers.sim.spectro_modbus import ModbusSpectrometerSimulator
from drivers.spectro_modbus import ModbusSpectrometer

SERIAL = "SPM0000001"


def make_driver(sim, **kw) -> ModbusSpectrometer:
    return ModbusSpectrometer(ModbusLink(sim.port, timeout=0.5), reply_timeout=0.5, **kw)


@pytest.fixture(params=["tcp", "rtu"])
def sim(request):
    with ModbusSpectrometerSimulator(framing=request.param, speed=20, seed=5) as s:
        yield s


U = 1  # the front-end's unit id


@pytest.fixture
def spec(sim):
    d = make_driver(sim)
    d.identify()
    yield d
    d.close()


# -- register map --------------------------------------------------------------


def test_2048_pixels_take_17_reads_of_at_most_125_registers():
    reads = m.spectrum_reads(2048)
    assert len(reads) == 17 and all(count <= m.MAX_READ for _, count in reads)
    assert reads[0] == (100, 125) and reads[-1] == (100 + 16 * 125, 50)  # 2048 + 2 sequence registers
    assert sum(c for _, c in reads) == 2050


@pytest.mark.parametrize("pixels,reads", [(1, 1), (123, 1), (124, 2), (248, 2), (249, 3)])
def test_read_count_boundaries(pixels, reads):
    assert len(m.spectrum_reads(pixels)) == reads


def test_text_and_float_registers_roundtrip():
    assert m.regs_to_text(m.text_to_regs("SPM0000001")) == "SPM0000001"
    assert m.text_to_regs("AB") == [0x4142] + [0] * 7
    assert m.regs_to_floats(m.floats_to_regs((380.5, -1.25))) == (380.5, -1.25)
    assert m.floats_to_regs((1.0,)) == [0x3F80, 0x0000]  # IEEE-754, high word first


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
def test_arbitrary_text_registers_give_text_or_a_protocol_error(regs):
    try:
        text = m.regs_to_text(regs)
    except ProtocolError:
        return
    assert text.isascii() and len(text) <= 16


# -- driver vs simulator (TCP and RTU) ------------------------------------------------


def test_identify_and_coefficients(sim, spec):
    assert isinstance(spec, Spectrometer)
    assert (spec.identity.serial, spec.identity.model) == (SERIAL, "SIM-CCD2048 MB")
    assert (spec.pixel_count, spec.max_counts) == (2048, 65535)
    want = struct.unpack(">4f", struct.pack(">4f", *sim.coefficients))  # stored as float32
    assert spec.wavelength_coefficients() == want


def test_acquire_counts_flags_and_settings(sim, spec):
    sim.set_stone("S1", "cvd")
    spec.set_integration_us(200_000)
    spec.set_scans(3)
    spec.set_lamp(True)
    counts = spec.acquire()
    assert counts.dtype == np.uint16 and counts.shape == (2048,)
    h = spec.last_frame.header
    assert (h.integration_us, h.scans, h.lamp_on, h.saturated) == (200_000, 3, True, False)
    assert counts.max() > 2000
    assert (sim.integration_us, sim.scans, sim.lamp_on) == (200_000, 3, True)


def test_saturation_sets_the_status_bit(sim, spec):
    sim.set_stone("S1", "hpht")
    spec.set_lamp(True)
    sim.set_saturate()
    assert spec.acquire().max() == 65535 and spec.last_frame.saturated
    sim.clear_faults()
    spec.acquire()
    assert not spec.last_frame.saturated


def test_out_of_range_settings_are_modbus_exceptions(sim, spec):
    for setter, bad, good in ((spec.set_integration_us, 9, 10), (spec.set_integration_us, 65_000_001, 65_000_000),
                              (spec.set_scans, 0, 1), (spec.set_scans, 5001, 5000)):
        with pytest.raises(DeviceRefused, match=r"refused .*\(Modbus exception 3, illegal data value\)") as e:
            setter(bad)
        assert "< exception 3 (illegal data value)" in e.value.transcript
        setter(good)


def test_identity_registers_are_read_only(sim, spec):
    with pytest.raises(ModbusExceptionReply, match=r"exception 2 \(illegal data address\)") as e:
        spec.link.write_register(U, m.REG_PIXELS, 1)
    assert e.value.code == 2
    with pytest.raises(ModbusExceptionReply, match=r"exception 2 \(illegal data address\)"):
        spec.link.write_registers(U, m.REG_COMMAND, [1, 0])  # runs past the settings


def test_half_an_integration_time_is_refused(sim, spec):
    with pytest.raises(ModbusExceptionReply, match=r"exception 1 \(illegal function\)"):
        spec.link.write_register(U, m.REG_INTEGRATION + 1, 5000)


def test_a_trigger_while_busy_is_refused(sim, spec):
    spec.set_integration_us(60_000_000)  # 3 s at speed 20: still busy at the second write
    spec.link.write_register(U, m.REG_COMMAND, m.CMD_ACQUIRE)
    with pytest.raises(ModbusBusy, match=r"exception 6 \(slave device busy\)") as e:
        spec.link.write_register(U, m.REG_COMMAND, m.CMD_ACQUIRE)
    assert isinstance(e.value, DeviceRefused)
    status, _ = spec.status()
    assert status & m.ST_BUSY and not status & m.ST_READY


def test_unplug_replug_reidentifies_and_restores_settings(sim, spec):
    spec.set_scans(7)
    sim.unplug()
    with pytest.raises(LinkError):
        spec.acquire()
    with pytest.raises(LinkError):
        spec.recover()
    sim.replug()
    assert spec.recover().serial == SERIAL
    assert sim.scans == 7
    assert spec.acquire().shape == (2048,)


def test_a_different_front_end_is_refused():
    with ModbusSpectrometerSimulator(speed=20) as first:
        spec = make_driver(first)
        spec.identify()
        spec.close()
        port = first.address[1]
    with ModbusSpectrometerSimulator(port=port, serial="SPM0000002", speed=20):
        with pytest.raises(LinkError, match="SPM0000002"):
            spec.recover()


def test_silence_is_a_reply_timeout_then_recovery():
    with ModbusSpectrometerSimulator(speed=20) as sim:
        spec = make_driver(sim)
        spec.identify()
        sim.inject("timeout", 30)
        with pytest.raises(ReplyTimeout):
            spec.acquire()
        sim.clear_faults()
        assert spec.acquire().shape == (2048,)
        spec.close()


def _crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_rtu_simulator_speaks_rtu_frames_with_crc():
    """An RTU request built by hand (no pymodbus) gets an RTU reply with a valid CRC."""
    with ModbusSpectrometerSimulator(framing="rtu") as sim:
        req = bytes([1, 4, 0, 0, 0, 2])
        req += struct.pack("<H", _crc16_modbus(req))
        with socket.create_connection(sim.address, timeout=2) as s:
            s.sendall(req)
            reply = b""
            while len(reply) < 9:
                reply += s.recv(9 - len(reply))
    assert reply[:3] == bytes([1, 4, 4])
    assert struct.unpack(">HH", reply[3:7]) == (m.MAGIC, m.MAP_VERSION)
    assert struct.unpack("<H", reply[7:9])[0] == _crc16_modbus(reply[:7])


# -- an independent master ---------------------------------------------------------------


def _mbpoll(port: int, *args: str, write: tuple[str, ...] = ()) -> str:
    assert shutil.which("mbpoll"), "mbpoll is missing: run `make system-deps`"
    out = subprocess.run(["mbpoll", "-m", "tcp", "-a", "1", "-0", "-1", "-p", str(port), *args, "127.0.0.1",
                          *write],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _values(text: str) -> dict[int, str]:
    return {int(a): v for a, v in re.findall(r"^\[(\d+)\]:\s+(\S+)", text, re.M)}


def test_mbpoll_reads_identity_coefficients_and_a_triggered_spectrum():
    with ModbusSpectrometerSimulator(speed=50) as sim:
        port = sim.address[1]
        ident = _values(_mbpoll(port, "-t", "3", "-r", "0", "-c", "6"))
        assert ident[0] == str(m.MAGIC) and ident[1] == "1" and ident[4] == "2048" and ident[5] == "65535"
        coeffs = _values(_mbpoll(port, "-t", "3:float", "-B", "-r", "22", "-c", "4"))
        assert float(coeffs[22]) == pytest.approx(sim.coefficients[0])
        assert float(coeffs[24]) == pytest.approx(sim.coefficients[1])
        sim.set_target("hgar")
        _mbpoll(port, "-t", "4", "-r", "44", write=("1",))  # trigger, as any master may
        spec = make_driver(sim)
        spec.identify()
        deadline_status = None
        for _ in range(200):
            status, seq = spec.status()
            if seq == 1 and not status & m.ST_BUSY:
                deadline_status = status
                break
            spec.link.read_input(U, m.REG_STATUS, 1)  # a bounded busy-wait on the device itself
        assert deadline_status is not None and deadline_status & m.ST_READY
        counts, seq = spec.read_spectrum()
        spec.close()
        first = _values(_mbpoll(port, "-t", "3", "-r", "100", "-c", "125"))
        assert int(first[100]) == seq == 1
        assert [int(first[101 + i]) for i in range(124)] == counts[:124].tolist()


# -- the simulated wire's faults, RTU on a pty, a bus shared with a scale ----------


@pytest.mark.parametrize("framing", ["tcp", "rtu"])
def test_wire_faults_then_the_next_request_succeeds(framing):
    with ModbusSpectrometerSimulator(framing=framing, speed=20) as sim:
        spec = make_driver(sim)
        spec.identify()
        sim.inject("crc")
        with pytest.raises(ProtocolError, match="unreadable Modbus reply") as e:
            spec.status()
        assert e.value.transcript[-1].startswith("< bad frame")
        assert spec.status()[0] & m.ST_READY == 0  # nothing acquired yet; the link is fine
        sim.inject("noreply")
        with pytest.raises(ReplyTimeout, match="no reply from unit 1"):
            spec.status()
        sim.inject("exception")
        with pytest.raises(DeviceRefused, match=r"exception 4 \(slave device failure\)"):
            spec.status()
        assert spec.acquire().shape == (2048,)
        spec.close()


def test_an_unknown_fault_is_refused():
    sim = ModbusSpectrometerSimulator()
    with pytest.raises(ValueError, match="crc, noreply, exception or timeout S"):
        sim.inject("garbage")
    with pytest.raises(ValueError, match="RTU framing only"):
        ModbusSpectrometerSimulator(framing="tcp", link_path="/tmp/x")


def test_rtu_on_a_pty_behind_a_by_id_link(tmp_path):
    path = str(tmp_path / "usb-FTDI_USB_RS485-if00-port0")
    with ModbusSpectrometerSimulator(framing="rtu", link_path=path, speed=20) as sim:
        assert sim.port == path
        spec = ModbusSpectrometer(ModbusLink(path, baudrate=115200, timeout=1.0), reply_timeout=1.0)
        assert spec.identify().serial == SERIAL
        spec.set_scans(2)
        assert spec.acquire().shape == (2048,) and spec.last_frame.header.scans == 2
        sim.unplug()
        with pytest.raises(LinkError):
            spec.recover()
        sim.replug()
        assert spec.recover().serial == SERIAL and sim.scans == 2
        spec.close()


def test_spectrometer_and_scale_share_one_rs485_bus(tmp_path):
    from drivers.modbus_link import shared_link
    from drivers.modbus_scale import ModbusScale
    from drivers.sim.modbus_scale import ModbusScaleSimulator

    front_end = ModbusSpectrometerSimulator(speed=20)  # its own wire stays unused
    path = str(tmp_path / "usb-RS485")
    with ModbusScaleSimulator(link_path=path, settle_s=0.05, seed=1,
                              extra_units={2: front_end.bank()}) as bus:
        link = shared_link(path, baudrate=115200, timeout=1.0)
        scale = ModbusScale(link, bus.map, unit_id=1, stable_timeout=2, poll_s=0.02)
        spec = ModbusSpectrometer(link, unit_id=2, reply_timeout=1.0)
        scale.identify()
        assert spec.identify().serial == SERIAL
        bus.place(99_800)
        assert scale.weigh_stable().value_ug == 99_800
        assert spec.acquire().shape == (2048,)
        assert any(line.startswith("> FC04 @2 ") for line in link.transcript())
        spec.close()
        assert link.is_open  # the scale still uses the bus
        assert scale.weigh_now().value_ug == 99_800
        scale.close()
        assert not link.is_open
    front_end.stop()
