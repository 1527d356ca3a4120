"""The reference consumer: every check `station verify` makes, each shown to fire."""

import hashlib
import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

from station.central.chainstate import RecentDigests, StationChain
from station.central.trust import PRODUCTION, SIMULATION, TrustStore
from station.central.verify import ChainChecker
from station.instruments.reading import DeviceIdentity
from station.instruments.reading import mass_reading
from station.records.cose import Signer, dumps
from station.records.keys import init_key
from station.records.payload import RecordInput, build_payload

READING = mass_reading("balance", "mtsics", DeviceIdentity("M", "SN"), 123_400, True, ("> S",), "t")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {name: Signer(init_key(d / f"{name}.key")) for name in ("a", "a_sim", "b")}


@pytest.fixture
def signer(keys):
    return keys["a"]


def _chain(signer, n, station="S1", lot="lot", simulated=False, first_prev=bytes(32)):
    out, prev = [], first_prev
    for seq in range(1, n + 1):
        payload = build_payload(RecordInput("op", lot, [READING]), record_id=f"r{seq}", station_id=station,
                                seq=seq, prev=prev, simulated=simulated)
        data = signer.sign(payload)
        out.append(data)
        prev = hashlib.sha256(data).digest()
    return out


def _store(keys, *, a_sim=True, b=True):
    store = TrustStore()
    store.add(keys["a"].public_key, "S1", PRODUCTION, "test")
    if a_sim:
        store.add(keys["a_sim"].public_key, "S1", SIMULATION, "test")
    if b:
        store.add(keys["b"].public_key, "S2", PRODUCTION, "test")
    return store


def _check(trust, records, sources=None, **kw):
    checker = ChainChecker(trust, **kw)
    for i, data in enumerate(records):
        checker.add(data, sources[i] if sources else f"r{i}")
    return checker.report()


def _bad_sources(report):
    return [source for source, _ in report.bad_records]


def test_intact_chain_in_any_order_with_duplicates(keys):
    recs = _chain(keys["a"], 5)
    report = _check(_store(keys), [recs[3], recs[0], recs[4], recs[1], recs[2], recs[1]])
    assert report.ok
    assert (report.good, report.bad, report.duplicates) == (5, 0, 1)


def test_gap_is_reported(signer):
    recs = _chain(signer, 5)
    report = _check({signer.kid: signer.public_key}, recs[:2] + recs[3:])
    assert not report.ok
    assert report.gaps == [("S1", 3, 3)]


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [0, 2, 1]])
def test_broken_link_is_reported_whatever_the_order(signer, order):
    a = _chain(signer, 3)
    b = _chain(signer, 3, lot="other")  # same seqs, different content, so a different chain
    recs = [a[0], b[1], a[2]]
    report = _check({signer.kid: signer.public_key}, [recs[i] for i in order], [f"r{i + 1}" for i in order])
    assert not report.ok and report.good == 3
    assert len(report.problems) == 2  # 1→2 and 2→3 both broken
    assert sorted(report.problems) == [
        "S1: hash chain broken between seq 1 (r1) and seq 2 (r2): prev of 2 is not the SHA-256 of 1",
        "S1: hash chain broken between seq 2 (r2) and seq 3 (r3): prev of 3 is not the SHA-256 of 2"]


def test_the_conflicting_record_itself_is_named(signer):
    a, b = _chain(signer, 2), _chain(signer, 2, lot="other")
    report = _check({signer.kid: signer.public_key}, [a[0], a[1], b[1]], ["genuine-1", "genuine-2", "forked-2"])
    assert not report.ok and report.good == 2 and report.bad == 1
    assert _bad_sources(report) == ["forked-2"]
    assert "forked-2 conflicts with genuine-2" in report.bad_records[0][1][0]


def test_flipped_bit_makes_the_report_fail(signer):
    recs = _chain(signer, 3)
    bad = bytearray(recs[1])
    bad[-5] ^= 0x10
    report = _check({signer.kid: signer.public_key}, [recs[0], bytes(bad), recs[2]])
    assert not report.ok and _bad_sources(report) == ["r1"]
    assert report.gaps == [("S1", 2, 2)]


def test_a_bad_last_record_is_in_the_report(signer):
    recs = _chain(signer, 4)
    bad = bytearray(recs[3])
    bad[-1] ^= 0x01
    report = _check({signer.kid: signer.public_key}, recs[:3] + [bytes(bad)], ["1", "2", "3", "4"])
    assert not report.ok and report.bad == 1 and report.good == 3
    assert _bad_sources(report) == ["4"]
    assert "signature does not match" in report.bad_records[0][1][0]


def test_missing_start_of_chain_is_a_gap_unless_joined_late(signer):
    recs = _chain(signer, 3)
    assert _check({signer.kid: signer.public_key}, recs[1:]).gaps == [("S1", 1, 1)]
    assert _check({signer.kid: signer.public_key}, recs[1:], first_seq=2).ok


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_seq_1_with_a_non_zero_prev_is_reported(signer, order):
    recs = _chain(signer, 2, first_prev=b"\x01" * 32)
    report = _check({signer.kid: signer.public_key}, [recs[i] for i in order])
    assert not report.ok
    assert report.problems == ["S1 seq 1 (r%d): the first record of a chain must have prev = 32 zero bytes"
                               % order.index(0)]


def _payload(**changes):
    fields = cbor2.loads(build_payload(RecordInput("op", "lot", [READING]), record_id="r1", station_id="S1",
                                       seq=1, prev=bytes(32), simulated=False))
    for k, v in changes.items():
        if v is KeyError:
            del fields[k]
        else:
            fields[k] = v
    return dumps(fields)


@pytest.mark.parametrize("payload, problem", [
    (_payload(seq=KeyError), "'seq' missing or not int"),
    (_payload(seq=True), "'seq' missing or not int"),
    (_payload(seq=0), "'seq' is 0"),
    (_payload(prev=bytes(31)), "'prev' is not a SHA-256"),
    (_payload(prev="00" * 32), "'prev' missing or not bytes"),
    (_payload(simulated=0), "'simulated' missing or not bool"),
    (_payload(ambient=KeyError), "'ambient' missing or not dict or NoneType"),
    (_payload(v=3), "v=3 is not one this verifier knows"),
    (_payload(v=True), "v=True is not one"),
    (b"\xff\x00not cbor", "signed payload is not CBOR"),
    (dumps([1, 2, 3]), "signed payload is not a map"),
])  # fmt: skip
def test_correctly_signed_but_malformed_payloads_are_flagged(signer, payload, problem):
    report = _check({signer.kid: signer.public_key}, [signer.sign(payload)], ["the-record"])
    assert not report.ok and report.good == 0 and report.bad == 1
    assert _bad_sources(report) == ["the-record"]
    assert any(problem in p for p in report.bad_records[0][1]), report.bad_records


@pytest.mark.parametrize("ambient", [None, {"status": "ok", "temperature_dc": 215, "humidity_dpct": 412}])
def test_version_2_records_are_accepted(signer, ambient):
    report = _check({signer.kid: signer.public_key}, [signer.sign(_payload(v=2, ambient=ambient))])
    assert report.ok and report.good == 1


def test_version_1_records_without_ambient_are_accepted(signer):
    report = _check({signer.kid: signer.public_key}, [signer.sign(_payload(v=1, ambient=KeyError))])
    assert report.ok and report.good == 1


# --- keys bound to stations --------------------------------------------------


def test_a_record_signed_by_another_stations_key_is_rejected(keys):
    s1, s2 = _chain(keys["a"], 2, station="S1"), _chain(keys["b"], 2, station="S2")
    forged = _chain(keys["b"], 3, station="S1", lot="forged")[2]  # B's key, A's station_id, next seq
    report = _check(_store(keys), [s1[0], forged, s1[1], s2[0], s2[1]], ["S1/1", "forged", "S1/2", "S2/1", "S2/2"])
    assert report.good == 4 and report.bad == 1 and not report.gaps
    assert _bad_sources(report) == ["forged"]
    assert "signed with station S2's key" in report.bad_records[0][1][0] and "claims station_id 'S1'" in report.bad_records[0][1][0]


def test_a_simulation_key_record_claiming_to_be_real_is_rejected(keys):
    real = _chain(keys["a"], 2)
    fake = _chain(keys["a_sim"], 3, lot="fake")[2]  # simulated=False, seq 3, signed with the sim key
    report = _check(_store(keys), real + [fake], ["1", "2", "fake"])
    assert report.good == 2 and _bad_sources(report) == ["fake"]
    assert "simulation key" in report.bad_records[0][1][0] and "not marked simulated: true" in report.bad_records[0][1][0]
    assert _check(_store(keys), _chain(keys["a_sim"], 2, simulated=True)).ok  # what the sim key is for


def test_a_production_key_record_marked_simulated_is_rejected(keys):
    report = _check(_store(keys), _chain(keys["a"], 1, simulated=True), ["sim-by-prod"])
    assert _bad_sources(report) == ["sim-by-prod"]
    assert "production key" in report.bad_records[0][1][0]


def _reencoded(data, unprotected):
    tag = cbor2.loads(data)
    tag.value[1] = unprotected
    return cbor2.dumps(tag)


@pytest.mark.parametrize("first", ["copy", "genuine"])
def test_a_reencoded_copy_with_an_unprotected_header_is_rejected_and_cannot_shadow(keys, first):
    recs = _chain(keys["a"], 3)
    copy = _reencoded(recs[1], {4: b"someone else"})
    order = [recs[0], copy, recs[1], recs[2]] if first == "copy" else [recs[0], recs[1], copy, recs[2]]
    names = ["1", "copy", "2", "3"] if first == "copy" else ["1", "2", "copy", "3"]
    report = _check(_store(keys), order, names)
    assert report.good == 3 and report.bad == 1 and not report.gaps and not report.problems
    assert _bad_sources(report) == ["copy"] and "unprotected header is not empty" in report.bad_records[0][1][0]


def test_a_non_canonical_copy_of_the_signed_content_is_the_same_record(signer):
    recs = _chain(signer, 2)
    tag = cbor2.loads(recs[1])
    protected, _, payload, sig = tag.value
    # The payload's byte string with a needlessly long (4-byte) length: same content, other bytes.
    longer = b"\xd2\x84" + cbor2.dumps(protected) + b"\xa0" + b"\x5a" + len(payload).to_bytes(4, "big") + payload \
        + cbor2.dumps(sig)
    assert longer != recs[1] and cbor2.loads(longer).value == tag.value
    report = _check({signer.kid: signer.public_key}, [recs[0], longer, recs[1]])
    assert report.ok and report.good == 2 and report.duplicates == 1


def test_a_bare_key_is_bound_to_the_first_station_it_signs_for(keys):
    s1 = _chain(keys["a"], 1, station="S1")
    other = _chain(keys["a"], 1, station="S9", lot="x")
    report = _check({keys["a"].kid: keys["a"].public_key}, s1 + other, ["S1/1", "S9/1"])
    assert _bad_sources(report) == ["S9/1"] and "station S1's key" in report.bad_records[0][1][0]


def test_an_unknown_key_is_rejected(keys):
    report = _check(_store(keys, b=False), _chain(keys["b"], 1, station="S2"), ["b"])
    assert _bad_sources(report) == ["b"] and "unknown key" in report.bad_records[0][1][0]


# --- streaming, bounded state -------------------------------------------------


# A fixed key, so the property test's records are the same in every run.
_FIXED = Signer(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
_FIXED_CHAIN = _chain(_FIXED, 12)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_order_any_duplicates_any_missing_gives_exactly_the_gaps(data):
    signer, recs = _FIXED, _FIXED_CHAIN
    n = len(recs)
    keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    present = [i for i in range(n) if keep[i]]
    dups = data.draw(st.lists(st.sampled_from(present), max_size=5)) if present else []
    order = data.draw(st.permutations(present + dups))
    report = _check({signer.kid: signer.public_key}, [recs[i] for i in order], [str(i + 1) for i in order])
    expected_gaps, i = [], 0
    while i < n:
        if not keep[i]:
            j = i
            while j + 1 < n and not keep[j + 1]:
                j += 1
            if j + 1 < n:  # missing records after the last one received are not a gap anyone can see
                expected_gaps.append(("S1", i + 1, j + 1))
            i = j + 1
        else:
            i += 1
    assert report.gaps == expected_gaps
    assert report.good == len(present) and report.duplicates == len(dups)
    assert report.bad == 0 and not report.problems


def test_state_for_an_in_order_archive_is_one_run(signer):
    checker = ChainChecker({signer.kid: signer.public_key}, window=8)
    for i, data in enumerate(_chain(signer, 50)):
        checker.add(data, str(i))
    assert len(checker._chains["S1"].runs) == 1 and len(checker._recent._d) == 8
    assert checker.report().ok


def test_a_repeat_older_than_the_window_is_reported_not_waved_through(signer):
    recs = _chain(signer, 6)
    report = _check({signer.kid: signer.public_key}, recs + [recs[2]], window=2)
    assert not report.ok and report.bad == 1
    assert "too late to compare" in report.bad_records[0][1][0]
    # The ends of a run are always comparable, whatever the window.
    assert _check({signer.kid: signer.public_key}, recs + [recs[0], recs[5]], window=1).ok


def test_a_repeat_at_the_window_edge_is_still_compared(signer):
    recs = _chain(signer, 6)
    # window=4 holds seqs 3..6 after six records: seq 3 is the oldest still compared
    assert _check({signer.kid: signer.public_key}, recs + [recs[2]], window=4).duplicates == 1
    assert _check({signer.kid: signer.public_key}, recs + [recs[1]], window=4).bad == 1


def test_filling_a_hole_merges_runs_and_checks_both_links():
    chain = StationChain("S", RecentDigests(4))
    h = [bytes([i]) * 32 for i in range(6)]
    chain.add(1, bytes(32), h[1], "1")
    chain.add(3, h[2], h[3], "3")
    chain.add(5, h[4], h[5], "5")
    assert [(r.lo, r.hi) for r in chain.runs] == [(1, 1), (3, 3), (5, 5)]
    assert chain.gaps(1) == [(2, 2), (4, 4)]
    assert chain.add(4, h[3], h[4], "4") == ("new", [])
    assert chain.add(2, h[1], b"x" * 32, "2")[1] == [
        "S: hash chain broken between seq 2 (2) and seq 3 (3): prev of 3 is not the SHA-256 of 2"]
    assert [(r.lo, r.hi, r.hi_source) for r in chain.runs] == [(1, 5, "5")] and chain.gaps(1) == []


@pytest.mark.parametrize("payload", [_payload() + b"\x00", b"\xff"])
def test_a_payload_that_is_not_exactly_one_cbor_item_is_flagged(signer, payload):
    report = _check({signer.kid: signer.public_key}, [signer.sign(payload)], ["p"])
    assert _bad_sources(report) == ["p"] and "not CBOR" in report.bad_records[0][1][0]


def test_trailing_bytes_after_the_envelope_are_rejected_and_cannot_shadow(signer):
    recs = _chain(signer, 2)
    report = _check({signer.kid: signer.public_key}, [recs[0], recs[1] + b"\x00", recs[1]], ["1", "tail", "2"])
    assert report.good == 2 and _bad_sources(report) == ["tail"]


def test_a_bare_key_is_bound_to_the_kind_of_its_first_record(keys):
    sim = _chain(keys["a_sim"], 2, simulated=True)
    claims_real = _chain(keys["a_sim"], 3, lot="x")[2]
    report = _check({keys["a_sim"].kid: keys["a_sim"].public_key}, sim + [claims_real], ["1", "2", "3"])
    assert report.good == 2 and _bad_sources(report) == ["3"]
    assert "simulation key" in report.bad_records[0][1][0]


def test_both_ends_of_an_older_run_are_compared_outside_the_window(signer):
    recs, fork = _chain(signer, 6), _chain(signer, 6, lot="fork")
    first = [recs[3], recs[4], recs[5], recs[0]]  # runs 1..1 and 4..6; the window (1) holds only seq 1
    report = _check({signer.kid: signer.public_key}, first + [recs[3], recs[5]], window=1)
    assert report.duplicates == 2 and report.bad == 0
    for forked in (fork[3], fork[5]):
        report = _check({signer.kid: signer.public_key}, first + [forked], ["4", "5", "6", "1", "forked"], window=1)
        assert _bad_sources(report) == ["forked"] and "two different signed records" in report.bad_records[0][1][0]


def test_the_listing_is_bounded_and_the_rest_is_counted(signer, monkeypatch):
    from station.central import verify

    monkeypatch.setattr(verify, "MAX_LISTED", 3)
    recs, fork = _chain(signer, 5), _chain(signer, 5, lot="fork")
    checker = ChainChecker({signer.kid: signer.public_key})
    assert checker.add(recs[0], "1").ok
    bad = [checker.add(b"junk", f"junk{i}") for i in range(2)]
    assert not any(item.ok for item in bad)
    checker.add(fork[1], "fork2")  # a chain problem, the third thing listed
    report = checker.report()
    assert [s for s, _ in report.bad_records] == ["junk0", "junk1"] and len(report.problems) == 1
    assert report.unlisted == 0
    checker.add(b"junk", "junk2")  # the fourth: counted, not listed
    checker.add(recs[2], "3")  # genuine 3 does not link to the forked 2: a chain problem, counted
    report = checker.report()
    assert len(report.bad_records) + len(report.problems) == 3 and report.unlisted == 2
    assert report.bad == 3 and not report.ok


def test_the_documented_limits_are_the_real_ones():
    from station.central import verify

    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "RECORDS.md")).read()
    assert f"(default {verify.DEFAULT_WINDOW}," in text
    assert f"the first {verify.MAX_LISTED:,} problems" in text
