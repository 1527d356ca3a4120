"""`station demo --keep DIR` end to end, then the ordinary commands on what it left."""

from __future__ import annotations

import stat

from stationproc import station


def test_demo_keeps_an_inspectable_station(tmp_path):
    keep = tmp_path / "demo"
    res = station("demo", "--stones", "4", "--keep", str(keep), timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert "ALL VERIFIED: 4 good, 0 bad, 0 gap(s)" in res.stdout
    assert "0.499" in res.stdout and "0.999" in res.stdout
    assert "Calibrated spectrometer (serial SPX-DEMO-01): wavelength residual RMS" in res.stdout
    # the closing table: weight, verdict and fingerprint match for each stone
    rows = {line.split("│")[1].strip(): line for line in res.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip().isdigit()
            and line.split("│")[2].strip().startswith("DEMO-")}  # the "placed" column: not verify's table
    assert sorted(rows) == ["1", "2", "3", "4"]
    assert "DEMO-N1, natural" in rows["1"] and "PASS" in rows["1"] and "(first stone)" in rows["1"]
    assert "DEMO-C1, cvd" in rows["2"] and "REFER: N3 415.2 nm absent" in rows["2"] and "no match" in rows["2"]
    assert "DEMO-H1, hpht" in rows["3"] and "REFER" in rows["3"] and "no match" in rows["3"]
    assert "DEMO-N1, natural" in rows["4"] and "#1 score 0.99" in rows["4"] and "MATCH: same stone" in rows["4"]

    cfg = keep / "station.toml"
    assert station("config", "check", str(cfg)).returncode == 0
    key = keep / "keys" / "simulation.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not (keep / "keys" / "station.key").exists()  # the demo never touches a production key

    export = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(export)).returncode == 0
    assert sorted(p.name for p in export.iterdir()) == ["1.cose", "2.cose", "3.cose", "4.cose"]
    verified = station("verify", "--table", "--config", str(cfg), str(export))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("SIMULATED") == 4
    assert (keep / "state" / "calibration" / "spectrometer-SPX-DEMO-01.json").exists()


def test_demo_refuses_a_non_empty_keep_dir(tmp_path):
    (tmp_path / "something").write_text("x")
    res = station("demo", "--keep", str(tmp_path))
    assert res.returncode == 1 and "not empty" in res.stderr and "Traceback" not in res.stderr
