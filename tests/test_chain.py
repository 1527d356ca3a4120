"""Sealing records into the chain: seq and prev survive restarts; one chain, one key."""

from __future__ import annotations

import pytest

from station.records.chain import RecordWriter
from station.records.cose import Signer
from station.errors import RecordError
from station.records.keys import init_key
from station.delivery.outbox import Outbox
from station.instruments.reading import DeviceIdentity
from station.instruments.reading import mass_reading
from station.records.payload import RecordInput
from station.central.verify import ChainChecker

READING = mass_reading("balance", "mtsics", DeviceIdentity("M", "SN"), 99_800, True, ("> S", "< S S     0.0998 g"), "t")
ITEM = RecordInput(operator="op", lot="lot", readings=[READING])


def _writer(path, signer):
    return RecordWriter(Outbox(path), signer, station_id="S1", simulated=False)


def test_seq_and_chain_continue_across_restarts(tmp_path):
    signer = Signer(init_key(tmp_path / "k.key"))
    w = _writer(tmp_path / "o.db", signer)
    first = [w.write(ITEM), *w.write_batch([ITEM, ITEM])]
    w.outbox.close()
    w = _writer(tmp_path / "o.db", signer)  # a restart: the head comes from disk
    later = w.write(ITEM)
    assert [r.seq for r in first] + [later.seq] == [1, 2, 3, 4]
    checker = ChainChecker({signer.kid: signer.public_key})
    for rec in w.outbox.records():
        checker.add(rec.data, str(rec.seq))
    report = checker.report()
    assert report.ok and report.good == 4


def test_an_outbox_belongs_to_one_key(tmp_path):
    _writer(tmp_path / "o.db", Signer(init_key(tmp_path / "a.key"))).write(ITEM)
    with pytest.raises(RecordError) as exc:
        _writer(tmp_path / "o.db", Signer(init_key(tmp_path / "b.key")))
    assert "separate station.state_dir" in str(exc.value)
