"""Fingerprints across instruments, matching, and the artifact bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from drivers.sim.spectra import Stone
from spectra_helpers import calibrate, measure, stored_only, unit
from station.spectra.artifact import from_artifact_bytes, to_artifact_bytes
from station.spectra.fingerprint import D, fingerprint, fingerprints
from station.spectra.matching import MATCH_THRESHOLD, MatchResult, References, match, top_k
from station.spectra.process import GRID, Processor

STONES = [Stone("T-1", "natural_Ia"), Stone("T-2", "natural_Ia"), Stone("T-3", "cvd"), Stone("T-4", "hpht")]


@pytest.fixture(scope="module")
def units():
    a, b = unit("SPX-A-0001", 1), unit("SPX-B-0002", 2)
    return a, b, Processor(calibrate(a)), Processor(calibrate(b)), Processor(stored_only(b))


def test_same_stone_on_two_instruments_matches_after_calibration_and_worse_without(units):
    a, b, pa, pb, pb_raw = units
    for stone in STONES:
        ref = fingerprint(measure(a, pa, stone).values)
        calibrated = float(ref @ fingerprint(measure(b, pb, stone).values))
        uncalibrated = float(ref @ fingerprint(measure(b, pb_raw, stone).values))
        assert calibrated >= MATCH_THRESHOLD, stone
        assert 1 - uncalibrated > 3 * (1 - calibrated), (stone, calibrated, uncalibrated)


def test_different_stones_do_not_match(units):
    a, _, pa, _, _ = units
    fps = np.stack([fingerprint(measure(a, pa, s).values) for s in STONES])
    s = fps @ fps.T
    assert np.all(s[~np.eye(len(STONES), dtype=bool)] < MATCH_THRESHOLD)


def test_fingerprint_is_unit_length_and_batch_equals_single(units):
    a, _, pa, _, _ = units
    values = np.stack([measure(a, pa, s).values for s in STONES])
    batch = fingerprints(values)
    assert batch.shape == (len(STONES), D) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batch[0], fingerprint(values[0]), atol=1e-6)
    assert not fingerprint(np.zeros(GRID.size)).any()


def test_matching_equals_a_per_row_loop_and_orders_best_first():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(1000, D)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    probe = refs[417] + 0.002 * rng.normal(size=D).astype(np.float32)
    probe /= np.linalg.norm(probe)
    m = match(References(refs), probe)
    assert np.array_equal(m.indices, match(refs, probe).indices)
    loop = np.array([float(np.dot(r, probe)) for r in refs])
    assert list(m.indices) == list(np.argsort(-loop)[:5])
    assert np.allclose(m.scores, loop[m.indices], atol=1e-5)
    assert m.indices[0] == 417 and m.match
    assert list(top_k(np.array([0.1, 0.5]), 5)) == [1, 0]


@pytest.mark.parametrize("score, decided", [(MATCH_THRESHOLD, True), (np.nextafter(MATCH_THRESHOLD, 0), False)])
def test_match_threshold_boundary(score, decided):
    assert MatchResult(np.array([0]), np.array([score])).match is decided


def test_artifact_bytes_are_deterministic_and_round_trip():
    wl = GRID
    v = np.linspace(0, 1, GRID.size)
    one = to_artifact_bytes(wl, v, kind="processed", unit="relative", meta={"serial": "SPX-A-0001"})
    two = to_artifact_bytes(wl.copy(), v.copy(), kind="processed", unit="relative", meta={"serial": "SPX-A-0001"})
    assert one == two and hashlib.sha256(one).digest() == hashlib.sha256(two).digest()
    doc = from_artifact_bytes(one)
    assert doc["values"].dtype == np.dtype("<f4") and np.allclose(doc["values"], v.astype(np.float32))
    assert np.array_equal(doc["wavelength_nm"], wl.astype(np.float32))
    # tag 85 (0xd8 0x55) = RFC 8746 float32 little-endian
    assert b"\xd8\x55" in one


def test_acquisition_artifacts_hash_the_same_twice_and_read_back(units):
    from station.spectra.acquire import acquire
    from station.spectra.analyse import acquisition_artifacts
    from station.spectra.artifact import sha256

    a, _, pa, _, _ = units
    a.place(STONES[2])
    acq = acquire(a)
    spec = pa.process(acq.raw, acq.dark)
    one = acquisition_artifacts(acq, pa, spec, {"serial": a.serial})
    two = acquisition_artifacts(acq, pa, spec, {"serial": a.serial})
    assert {k: sha256(v) for k, v in one.items()} == {k: sha256(v) for k, v in two.items()}
    raw = from_artifact_bytes(one["raw"])
    assert raw["kind"] == "raw" and raw["meta"]["serial"] == a.serial and raw["meta"]["scans"] == acq.scans
    assert np.array_equal(raw["values"], acq.raw.astype(np.float32)) and raw["wavelength_nm"].size == 2048
    assert from_artifact_bytes(one["processed"])["values"].size == GRID.size


@pytest.mark.parametrize("n", [1, 4, 5, 7, 640, 5119, 5120, 100_003])
def test_top_k_equals_a_full_sort(n):
    rng = np.random.default_rng(n)
    s = rng.normal(size=n).astype(np.float32)
    s[rng.integers(0, n, size=min(n, 3))] = 9.0  # ties at the top
    expected = np.lexsort((np.arange(n), -s))[:5]
    assert list(top_k(s, 5)) == list(expected)


def test_analysis_goes_into_a_record_as_deterministic_cbor(units):
    import cbor2

    from station.spectra.analyse import analyse

    a, _, pa, _, _ = units
    an = analyse(measure(a, pa, STONES[0]), 405.0, 1.3)
    doc = an.to_cbor()
    data = cbor2.dumps(doc, canonical=True)
    assert data == cbor2.dumps(an.to_cbor(), canonical=True)
    back = cbor2.loads(data)
    assert back["fingerprint"].tag == 85
    assert np.array_equal(np.frombuffer(back["fingerprint"].value, "<f4"), an.fingerprint)
    assert back["screening"]["verdict"] == "PASS" and {p["name"] for p in back["peaks"]} >= {"N3", "Raman"}
