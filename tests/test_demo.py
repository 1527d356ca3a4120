"""`station demo` end to end over mutual TLS with application acks, then the
ordinary commands on what it left; a second demo after it in the same place."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from station.delivery.outbox import Outbox
from stationproc import station


def _running_with(path: Path) -> list[str]:
    """Command lines of live processes that name ``path``: the demo's broker (its
    conf), station (its config) and consumer (its database) all do."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(path) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def _rows(stdout: str) -> dict[str, str]:
    """The closing table's rows by record number (the "placed" column starts with DEMO-)."""
    return {line.split("│")[1].strip(): line for line in stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip().isdigit()
            and line.split("│")[2].strip().startswith("DEMO-")}


def test_demo_runs_over_mutual_tls_until_central_acked_every_record(tmp_path):
    keep = tmp_path / "demo"
    res = station("demo", "--stones", "4", "--keep", str(keep), timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    out = res.stdout
    assert "0.499" in out and "0.999" in out
    assert "Calibrated spectrometer (serial SPX-DEMO-01): wavelength residual RMS" in out
    assert "mutual TLS (require_certificate, identity = certificate CN) and the shipped ACL" in out
    assert "OK for station DEMO-DESK-01 (CN 'DEMO-DESK-01')" in out  # `station certs check` on the signed CSR
    assert "central │" in out and "stored 4 new record(s), 0 duplicate(s), 0 rejected" in out
    # the closing table: weight, verdict, fingerprint match and the central ack for each stone
    rows = _rows(out)
    assert sorted(rows) == ["1", "2", "3", "4"]
    assert "DEMO-N1, natural" in rows["1"] and "PASS" in rows["1"] and "(first stone)" in rows["1"]
    assert "DEMO-C1, cvd" in rows["2"] and "REFER: N3 415.2 nm absent" in rows["2"] and "no match" in rows["2"]
    assert "DEMO-H1, hpht" in rows["3"] and "REFER" in rows["3"] and "no match" in rows["3"]
    assert "DEMO-N1, natural" in rows["4"] and "#1 score 0.99" in rows["4"] and "MATCH: same stone" in rows["4"]
    assert "0.50" in rows["1"] and "99800" in rows["1"] and "1.00" in rows["2"] and "199800" in rows["2"]
    assert all("acked by central" in r for r in rows.values())
    # the delivery table: who came in by certificate, the outbox by state, where the central records are
    broker_line = next(line for line in out.splitlines() if "Broker: " in line)
    assert "mutual TLS" in broker_line and "DEMO-DESK-01" in broker_line and "consumer:central-1" in broker_line
    assert "4 acked by central, 0 rejected, 0 published without an ack, 0 not yet published" in out
    db = keep / "central" / "consumer.sqlite"
    assert f"database (SQLite) {db}: 4 record(s) of DEMO-DESK-01 (seq 1..4), 0 rejected" in out
    assert "Demo complete: 4 stone(s)" in out and "acked" in out.splitlines()[-1]

    # nothing left running: broker, station and consumer were all stopped
    assert _running_with(keep) == []
    # the broker really ran the shipped mutual-TLS config, and let both in by their certificates
    conf = (keep / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    assert "allow_anonymous false" in conf and "acl_file" in conf
    log = (keep / "broker" / "mosquitto.log").read_text()
    assert "u'DEMO-DESK-01'" in log and "u'consumer:central-1'" in log

    # the station's outbox: every record acked, none waiting
    with Outbox(keep / "state" / "outbox.sqlite3") as ob:
        c = ob.counts()
        assert (c.acked, c.rejected, c.published, c.stored, c.last_seq) == (4, 0, 0, 0, 4)
        held = {r.seq: r.data for r in ob.records()}
    # the consumer's database: every record once, with the exact bytes the station signed
    with sqlite3.connect(db) as conn:
        central = conn.execute("SELECT station_id, seq, cose FROM records ORDER BY seq").fetchall()
        assert conn.execute("SELECT count(*) FROM rejected").fetchone()[0] == 0
    assert [(s, q) for s, q, _ in central] == [("DEMO-DESK-01", q) for q in (1, 2, 3, 4)]
    assert {q: bytes(d) for _, q, d in central} == held

    cfg = keep / "station.toml"
    assert station("config", "check", str(cfg)).returncode == 0
    assert station("certs", "check", "--config", str(cfg)).returncode == 0
    for key in (keep / "keys" / "simulation.key", keep / "tls" / "station.key", keep / "pki" / "consumer_central-1.key",
                keep / "pki" / "broker.key", keep / "pki" / "station-demo-ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert not (keep / "keys" / "station.key").exists()  # the demo never touches a production key

    export = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(export)).returncode == 0
    assert sorted(p.name for p in export.iterdir()) == ["1.cose", "2.cose", "3.cose", "4.cose"]
    verified = station("verify", "--table", "--config", str(cfg), str(export))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("SIMULATED") == 4
    assert (keep / "state" / "calibration" / "spectrometer-SPX-DEMO-01.json").exists()

    # A second demo in the same place (as `make demo` twice): a fresh work directory
    # (TMPDIR here keeps it inside the test's own), new ports, nothing left running.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    again = station("demo", "--stones", "1", env=env, timeout=120)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    fresh = [p for p in tmp_path.iterdir() if p.name.startswith("station-demo-")]
    assert len(fresh) == 1 and f"Everything is in {fresh[0]}" in again.stdout
    assert "1 acked by central, 0 rejected" in again.stdout
    assert _running_with(fresh[0]) == []


def test_demo_refuses_a_non_empty_keep_dir(tmp_path):
    (tmp_path / "something").write_text("x")
    res = station("demo", "--keep", str(tmp_path))
    assert res.returncode == 1 and "not empty" in res.stderr and "Traceback" not in res.stderr
