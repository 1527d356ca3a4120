"""End to end with a spectrometer: real `station run` against `station sim scale` and
`station sim spectrometer` (each protocol) and a private mosquitto. One record per
stone holds the mass and the spectrum readings; `station verify` accepts them; the
artifacts they name exist with their SHA-256; a CVD stone is referred and a natural
type Ia passes; an uncalibrated or unplugged spectrometer aborts the stone and names it."""

from __future__ import annotations

import hashlib
import json

import pytest
from stationproc import Proc, SimProcess, child_env, station, station_cmd, write_config
from test_e2e import independent_check

from station.spectra.artifact import from_artifact_bytes

SPEED = "50"  # integration waits 50x faster than real time
SCALE = """\
[devices.scale]
kind = "scale"
driver = "mtsics"
port = "{scale}"
simulate = true
serial = "SIM0000001"
reply_timeout_s = 1.0
"""
SPECTRO = {
    "serial": """
[devices.spectrometer]
kind = "spectrometer"
driver = "spectro-serial"
port = "{port}"
simulate = true
serial = "SPX0000042"
""",
    "modbus-tcp": """
[devices.spectrometer]
kind = "spectrometer"
driver = "spectro-modbus"
port = "{port}"
simulate = true
serial = "SPX0000042"
""",
}
# (stone id, simulator kind, expected verdict, a reason the verdict must give)
STONES = [("CVD-7", "cvd", "REFER", "SiV 736.8 nm present"), ("NAT-1", "natural", "PASS", None)]


def start_rig(tmp_path, mosquitto, protocol: str):
    scale = SimProcess(tmp_path / "balance")
    link = tmp_path / "usb-spectro" if protocol == "serial" else None
    spectro = SimProcess(link, serial="SPX0000042", protocol=protocol, kind="spectrometer",
                         extra=("--speed", SPEED))
    devices = SCALE.format(scale=scale.port) + SPECTRO[protocol].format(port=spectro.port)
    cfg = write_config(tmp_path, scale.port, mosquitto.port, devices=devices)
    assert station("keys", "init", "--config", str(cfg)).returncode == 0
    return scale, spectro, cfg


def calibrate(cfg, spectro) -> str:
    out = station("spectrometer", "calibrate", "--config", str(cfg), "--sim-control", spectro.control_address,
                  timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def stop(*procs: SimProcess) -> None:
    for p in procs:
        p.control.close()
        p.stop()


@pytest.mark.parametrize("protocol", sorted(SPECTRO))
def test_records_carry_verified_spectra_and_verdicts(tmp_path, mosquitto, protocol):
    scale, spectro, cfg = start_rig(tmp_path, mosquitto, protocol)
    try:
        cal_out = calibrate(cfg, spectro)
        assert "wavelength residual RMS" in cal_out and "Hg-Ar lines" in cal_out
        assert spectro.control.status()["target"] == "stone"  # the lamp is off the probe again
        jwk = json.loads(station("keys", "public", "--jwk", "--config", str(cfg)).stdout)
        st = Proc(station_cmd("run", "--config", str(cfg), "--max-stones", str(len(STONES))), env=child_env())
        st.wait_for(r"Ready\. Place the first stone", timeout=30)
        for n, (sid, kind, verdict, _) in enumerate(STONES, 1):
            assert spectro.control.send(f"stone {sid} {kind}") == {"ok": True}
            scale.control.place(150_000 + n * 1000)
            st.wait_for(r"Recorded #", n=n, timeout=60)
            assert f"screening {verdict}" in [ln for ln in st.lines if "Recorded #" in ln][-1]
            scale.control.remove()
            if n < len(STONES):
                st.wait_for(r"Pan empty", n=n)
        assert st.wait() == 0, st.output
    finally:
        stop(scale, spectro)
    out = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(out)).returncode == 0
    verified = station("verify", "--config", str(cfg), str(out))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    payloads = independent_check([(out / f"{i}.cose").read_bytes() for i in range(1, len(STONES) + 1)], jwk)
    artifacts = tmp_path / "state" / "artifacts"
    for payload, (sid, kind, verdict, reason) in zip(payloads, STONES):
        readings = payload["readings"]
        assert [r["quantity"] for r in readings] == ["mass", "spectrum-raw", "spectrum-dark", "spectrum-processed"]
        for r in readings[1:]:
            ref = r["artifact"]
            data = (artifacts / ref["name"]).read_bytes()
            assert hashlib.sha256(data).digest() == ref["sha256"] and len(data) == ref["size"]
            assert ref["media_type"] == "application/cbor; format=station-spectrum/1"
            assert r["identity"]["serial"] == "SPX0000042"
        processed = from_artifact_bytes((artifacts / readings[3]["artifact"]["name"]).read_bytes())
        assert processed["kind"] == "processed" and processed["values"].size == processed["wavelength_nm"].size
        details = readings[3]["details"]
        assert details["screening"]["verdict"] == verdict
        assert reason is None or reason in " ".join(details["screening"]["reasons"])
        assert len(details["fingerprint"].value) == 4 * 256  # float32 x 256
        raman = details["raman_check"]
        assert raman["measured_nm"] is not None and abs(raman["offset_nm"]) < 0.1  # calibrated, not the drifted factory axis
        assert len(details["calibration"]["id"]) == 16
        assert readings[1]["raw"][0] in ("> S", "> FC06 44 <- 1")  # the frame's own exchange is kept


def test_uncalibrated_spectrometer_refuses_the_stone(tmp_path, mosquitto):
    scale, spectro, cfg = start_rig(tmp_path, mosquitto, "serial")
    try:
        assert spectro.control.send("stone NAT-1 natural") == {"ok": True}
        st = Proc(station_cmd("run", "--config", str(cfg)), env=child_env())
        st.wait_for(r"Ready\. Place the first stone", timeout=30)
        scale.control.place(150_000)
        st.wait_for(r"spectrometer is not calibrated: run `station spectrometer calibrate`", timeout=30)
        assert "Nothing was recorded" in st.output and st.count("Recorded #") == 0
        st.stop()
    finally:
        stop(scale, spectro)
    out = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(out)).returncode == 0
    assert not list(out.glob("*.cose"))


def test_unplugged_spectrometer_aborts_the_stone_and_names_it(tmp_path, mosquitto):
    scale, spectro, cfg = start_rig(tmp_path, mosquitto, "serial")
    try:
        calibrate(cfg, spectro)
        st = Proc(station_cmd("run", "--config", str(cfg), "--max-stones", "1"), env=child_env())
        st.wait_for(r"Ready\. Place the first stone", timeout=30)
        assert spectro.control.send("stone NAT-1 natural") == {"ok": True}
        assert spectro.control.unplug() == {"ok": True}
        scale.control.place(150_000)
        st.wait_for(r"spectrometer: .*Nothing was recorded for this stone", timeout=30)
        assert st.count("Recorded #") == 0
        # back: the next placement of the stone is measured and recorded
        assert spectro.control.replug() == {"ok": True}
        scale.control.remove()
        st.wait_for(r"Pan empty", timeout=30)
        scale.control.place(150_000)
        st.wait_for(r"Recorded #1: .*screening PASS", timeout=60)
        scale.control.remove()
        assert st.wait() == 0, st.output
    finally:
        stop(scale, spectro)


def test_calibrate_without_a_spectrometer_in_the_config_says_so(tmp_path, mosquitto):
    cfg = write_config(tmp_path, "/dev/null", mosquitto.port)  # a scale only
    out = station("spectrometer", "calibrate", "--config", str(cfg))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "the config has 0 spectrometers" in out.stderr and 'kind = "spectrometer"' in out.stderr
