"""`station demo --keep DIR` end to end, then the ordinary commands on what it left."""

from __future__ import annotations

import stat

from stationproc import station


def test_demo_keeps_an_inspectable_station(tmp_path):
    keep = tmp_path / "demo"
    res = station("demo", "--stones", "3", "--keep", str(keep), timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert "ALL VERIFIED: 3 good, 0 bad, 0 gap(s)" in res.stdout
    assert "0.499" in res.stdout and "0.999" in res.stdout

    cfg = keep / "station.toml"
    assert station("config", "check", str(cfg)).returncode == 0
    key = keep / "keys" / "simulation.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not (keep / "keys" / "station.key").exists()  # the demo never touches a production key

    export = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(export)).returncode == 0
    assert sorted(p.name for p in export.iterdir()) == ["1.cose", "2.cose", "3.cose"]
    verified = station("verify", "--table", "--config", str(cfg), str(export))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("SIMULATED") == 3


def test_demo_refuses_a_non_empty_keep_dir(tmp_path):
    (tmp_path / "something").write_text("x")
    res = station("demo", "--keep", str(tmp_path))
    assert res.returncode == 1 and "not empty" in res.stderr and "Traceback" not in res.stderr
