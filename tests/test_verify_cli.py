"""`station verify`, `station keys public --trust-entry` and `station records export`, as a user runs them."""

from __future__ import annotations

import json
import os

import pytest

from station import cli
from station.app.service import outbox_path
from station import config
from station.central.trust import load_trust_file
from station.delivery.outbox import Outbox
from station.errors import KeyFileError
from station.instruments.reading import DeviceIdentity, mass_reading
from station.records.chain import RecordWriter
from station.records.cose import Signer
from station.records.keys import init_key, load_private_key
from station.records.payload import RecordInput

CONFIG = """\
[station]
id = "{station}"
state_dir = "state"
key_file = "keys/station.key"
sim_key_file = "keys/simulation.key"

[session]
operator = "op"
lot = "L1"

[devices.scale]
kind = "scale"
driver = "mtsics"
port = "/dev/null"
simulate = {simulate}

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
"""
ITEM = RecordInput("op", "L1", [mass_reading("balance", "mtsics", DeviceIdentity("M", "SN"), 99_800, True, ("> S",), "t")])


def _station_dir(tmp_path, station="S1", simulate=False, records=3, mqtt_port=1):
    d = tmp_path / station
    d.mkdir()
    cfg = d / "station.toml"
    cfg.write_text(CONFIG.format(station=station, simulate="true" if simulate else "false", mqtt_port=mqtt_port))
    init_key(d / "keys" / "station.key")
    init_key(d / "keys" / "simulation.key")
    c = config.load(cfg)
    writer = RecordWriter(Outbox(outbox_path(c)), Signer(load_private_key(c.signing_key_file)),
                          station_id=station, simulated=simulate)
    for _ in range(records):
        writer.write(ITEM)
    writer.outbox.close()
    return cfg


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _export(capsys, cfg, out, *extra):
    return _run(capsys, "records", "export", "--config", str(cfg), str(out), *extra)


def test_default_output_is_the_summary_and_table_is_on_request(tmp_path, capsys):
    cfg = _station_dir(tmp_path, records=3)
    assert _export(capsys, cfg, tmp_path / "x")[0] == 0
    code, out, _ = _run(capsys, "verify", "--config", str(cfg), str(tmp_path / "x"))
    assert code == 0 and out.strip().splitlines() == ["ALL VERIFIED: 3 good, 0 bad, 0 gap(s)"]
    code, out, _ = _run(capsys, "verify", "--table", "--config", str(cfg), str(tmp_path / "x"))
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:2] == ["seq", "time"] and len(lines) == 5
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"] and "0.50" in lines[1]


def test_files_are_verified_in_seq_order_and_problems_are_named(tmp_path, capsys):
    cfg = _station_dir(tmp_path, records=12)
    export = tmp_path / "x"
    _export(capsys, cfg, export)
    (export / "11.cose").unlink()
    data = bytearray((export / "12.cose").read_bytes())
    data[-3] ^= 0x01
    (export / "12.cose").write_bytes(bytes(data))
    code, out, _ = _run(capsys, "verify", "--config", str(cfg), str(export))
    assert code == 1
    assert f"BAD {export / '12.cose'}: signature does not match" in out
    assert "GAP S1: seq 11 missing" not in out  # 12 is bad, so nothing valid follows 10: no gap can be seen
    assert "VERIFICATION FAILED: 10 good, 1 bad, 0 gap(s)" in out


def test_trust_entries_from_two_stations_make_a_trust_store(tmp_path, capsys):
    cfgs = [_station_dir(tmp_path, "S1"), _station_dir(tmp_path, "S2", simulate=True)]
    entries = []
    for cfg in cfgs:
        code, out, _ = _run(capsys, "keys", "public", "--trust-entry", "--config", str(cfg))
        assert code == 0
        entries.append(out)
    assert entries[0].startswith('[stations."S1"]\nproduction = [{ kty = "OKP", crv = "Ed25519", x = ')
    trust = tmp_path / "trust.toml"
    trust.write_text("\n".join(entries))
    assert len(load_trust_file(trust)) == 4
    for cfg, name in zip(cfgs, ("a", "b")):
        _export(capsys, cfg, tmp_path / "both" / name)
    code, out, _ = _run(capsys, "verify", "--trust", str(trust), str(tmp_path / "both" / "a"), str(tmp_path / "both" / "b"))
    assert code == 0, out
    assert "ALL VERIFIED: 6 good, 0 bad, 0 gap(s) (3 of the good simulated)" in out


def test_a_trust_store_with_jwk_files_and_its_refusals(tmp_path, capsys):
    cfg = _station_dir(tmp_path)
    jwk = json.loads(_run(capsys, "keys", "public", "--jwk", "--config", str(cfg))[1])
    (tmp_path / "s1.jwk").write_text(json.dumps(jwk))
    trust = tmp_path / "trust.toml"
    trust.write_text('[stations.S1]\nproduction = ["s1.jwk"]\n')
    _export(capsys, cfg, tmp_path / "x")
    assert _run(capsys, "verify", "--trust", str(trust), str(tmp_path / "x"))[0] == 0
    # The same key now claimed by S1 as simulation and by S2: a store like this is refused whole.
    trust.write_text('[stations.S1]\nsimulation = ["s1.jwk"]\n[stations.S2]\nproduction = ["s1.jwk"]\n')
    with pytest.raises(KeyFileError, match="bound twice: station S1, simulation .* and station S2, production"):
        load_trust_file(trust)
    for empty in ("", "stations = 1\n", "[stations]\n"):
        trust.write_text(empty)
        with pytest.raises(KeyFileError, match=r"has no \[stations.<id>\] table"):
            load_trust_file(trust)
    trust.write_text(f'[stations.S1]\nproduction = [{{ kty = "OKP", crv = "Ed25519", x = "{jwk["x"]}", kid = "nope" }}]\n')
    with pytest.raises(KeyFileError, match="not the thumbprint"):
        load_trust_file(trust)
    trust.write_text('[stations.S1]\nprod = []\n')
    code, _, err = _run(capsys, "verify", "--trust", str(trust), str(tmp_path / "x"))
    assert code == 1 and "unknown key(s) prod" in err and "Traceback" not in err


def test_the_config_default_binds_the_sim_key_as_simulation(tmp_path, capsys):
    cfg = _station_dir(tmp_path, simulate=True)
    _export(capsys, cfg, tmp_path / "x")
    assert _run(capsys, "verify", "--config", str(cfg), str(tmp_path / "x"))[0] == 0
    # The same records checked against a config that names another station: refused, not ignored.
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text().replace('id = "S1"', 'id = "S7"').replace('"state"', f'"{cfg.parent}/state"')
                     .replace('"keys/', f'"{cfg.parent}/keys/'))
    code, out, _ = _run(capsys, "verify", "--config", str(other), str(tmp_path / "x"))
    assert code == 1 and "signed with station S7's key" in out and "claims station_id 'S1'" in out


def test_export_takes_a_seq_range_and_refuses_to_overwrite(tmp_path, capsys):
    cfg = _station_dir(tmp_path, records=6)
    out = tmp_path / "x"
    code, text, _ = _export(capsys, cfg, out, "--from-seq", "2", "--to-seq", "4")
    assert code == 0 and "Exported 3 record(s)" in text
    assert sorted(os.listdir(out)) == ["2.cose", "3.cose", "4.cose"]
    before = (out / "4.cose").read_bytes()
    (out / "4.cose").write_bytes(b"edited")
    code, _, err = _export(capsys, cfg, out, "--from-seq", "4")
    assert code == 1 and "already holds 4.cose; nothing was exported" in err and "--force" in err
    assert sorted(os.listdir(out)) == ["2.cose", "3.cose", "4.cose"] and (out / "4.cose").read_bytes() == b"edited"
    assert _export(capsys, cfg, out, "--from-seq", "5")[0] == 0  # 5 and 6 are new files: nothing to overwrite
    code, text, _ = _export(capsys, cfg, out, "--force")
    assert code == 0 and "Exported 6 record(s)" in text and (out / "4.cose").read_bytes() == before
    code, _, err = _export(capsys, cfg, tmp_path / "y", "--from-seq", "5", "--to-seq", "4")
    assert code == 1 and "--from-seq 5 is after --to-seq 4" in err
    assert _export(capsys, cfg, tmp_path / "z", "--from-seq", "6", "--to-seq", "6")[1].startswith("Exported 1 record(s)")


def test_subscribe_that_times_out_fails_and_names_the_timeout_given(tmp_path, capsys, mosquitto):
    cfg = _station_dir(tmp_path, records=0, mqtt_port=mosquitto.port)
    code, out, err = _run(capsys, "verify", "--subscribe", "--config", str(cfg), "--count", "2", "--timeout", "1.5",
                          "--client-id", "verify-timeout-test")
    assert code == 1
    assert "ALL VERIFIED" not in out
    assert "only 0 of the 2 record(s) asked for with --count verified before --timeout 1.5 s ran out" in out
    assert "VERIFICATION FAILED: 0 good, 0 bad, 0 gap(s)" in out
