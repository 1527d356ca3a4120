import hashlib

import pytest

from station.records.cose import Signer
from station.records.keys import init_key
from station.instruments.reading import DeviceIdentity
from station.instruments.reading import mass_reading as MassReading
from station.records.payload import RecordInput, build_payload
from station.central.verify import ChainChecker


@pytest.fixture
def signer(tmp_path):
    return Signer(init_key(tmp_path / "k.key"))


def _chain(signer, n, station="S1", lot="lot"):
    out, prev = [], bytes(32)
    reading = MassReading("balance", "mtsics", DeviceIdentity("M", "SN"), 123_400, True, ("> S",), "t")
    for seq in range(1, n + 1):
        payload = build_payload(RecordInput("op", lot, [reading]), record_id=f"r{seq}", station_id=station,
                                seq=seq, prev=prev, simulated=False)
        data = signer.sign(payload)
        out.append(data)
        prev = hashlib.sha256(data).digest()
    return out


def _check(signer, records):
    checker = ChainChecker({signer.kid: signer.public_key})
    for i, data in enumerate(records):
        checker.add(data, f"r{i}")
    return checker.report()


def test_intact_chain_in_any_order_with_duplicates(signer):
    recs = _chain(signer, 5)
    report = _check(signer, [recs[3], recs[0], recs[4], recs[1], recs[2], recs[1]])
    assert report.ok
    assert [r.seq for r in report.records] == [1, 2, 3, 4, 5]


def test_gap_is_reported(signer):
    recs = _chain(signer, 5)
    report = _check(signer, recs[:2] + recs[3:])
    assert not report.ok
    assert report.gaps == [("S1", 3, 3)]


def test_broken_link_is_reported(signer):
    a = _chain(signer, 3)
    b = _chain(signer, 3, lot="other")  # same seqs, different content, so a different chain
    report = _check(signer, [a[0], b[1], a[2]])
    assert not report.ok
    assert any("hash chain broken" in p for r in report.records for p in r.problems)


def test_conflicting_duplicate_is_reported(signer):
    a, b = _chain(signer, 1), _chain(signer, 1, lot="other")
    report = _check(signer, [a[0], b[0]])
    assert not report.ok and report.problems


def test_flipped_bit_makes_the_report_fail(signer):
    recs = _chain(signer, 3)
    bad = bytearray(recs[1])
    bad[-5] ^= 0x10
    report = _check(signer, [recs[0], bytes(bad), recs[2]])
    assert not report.ok
    assert report.gaps == [("S1", 2, 2)]


def test_missing_start_of_chain_is_a_gap_unless_joined_late(signer):
    recs = _chain(signer, 3)
    assert _check(signer, recs[1:]).gaps == [("S1", 1, 1)]
    checker = ChainChecker({signer.kid: signer.public_key}, first_seq=2)
    for data in recs[1:]:
        checker.add(data, "x")
    assert checker.report().ok
