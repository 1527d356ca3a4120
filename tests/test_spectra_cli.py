"""`station fingerprint compute|match` and `station screen` as subprocesses on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from drivers.sim.spectra import Stone
from spectra_helpers import calibrate, unit
from station.spectra.acquire import acquire
from station.spectra.csvio import MIN_POINTS, _parse_checked, _parse_fast, parse_spectrum_csv, write_spectrum_csv
from station.spectra.errors import SpectrumFileError
from station.spectra.process import Processor

STATION = [sys.executable, "-m", "station.cli"]


@pytest.fixture(scope="module")
def spectra(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("spectra")
    dev = unit("SPX-A-0001", 5)
    proc = Processor(calibrate(dev))
    for sid, kind in (("nat1", "natural_Ia"), ("nat2", "natural_Ia"), ("cvd1", "cvd")):
        for k in (1, 2):
            dev.place(Stone(sid, kind))
            a = acquire(dev)
            write_spectrum_csv(d / f"{sid}_{k}.csv", proc.wavelengths, proc.counts(a.raw, a.dark))
    return d


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(STATION + [str(a) for a in args], capture_output=True, text=True, timeout=60)


def test_screen_prints_one_line_per_spectrum_and_names_bad_files(spectra, tmp_path):
    bad = tmp_path / "nan.csv"
    bad.write_text("wavelength_nm,intensity\n" + "\n".join(f"{400 + i},{'nan' if i == 7 else 1}" for i in range(80)))
    files = [spectra / "nat1_1.csv", bad, spectra / "cvd1_1.csv", tmp_path / "missing.csv"]
    r = run("screen", *files)
    assert r.returncode == 1
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["file"] for x in lines] == [str(files[0]), str(files[2])]
    assert lines[0]["verdict"] == "PASS" and lines[1]["verdict"] == "REFER"
    assert "N3 415.2 nm absent (type II)" in lines[1]["reasons"]
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 2 and str(bad) in errors[0] and "line 9" in errors[0] and str(files[3]) in errors[1]
    assert "Traceback" not in r.stderr


def test_compute_then_match_finds_each_stone(spectra, tmp_path):
    refs, probes = tmp_path / "refs", tmp_path / "probes"
    assert run("fingerprint", "compute", *sorted(spectra.glob("*_1.csv")), "--out", refs).returncode == 0
    assert run("fingerprint", "compute", *sorted(spectra.glob("*_2.csv")), "--out", probes).returncode == 0
    doc = json.loads((refs / "nat1_1.json").read_text())
    assert doc["d"] == 256 and len(doc["vector"]) == 256 and doc["screening"]["verdict"] == "PASS"
    assert {p["name"] for p in doc["peaks"]} >= {"N3", "SiV", "Raman"}
    (tmp_path / "junk.json").write_text("{")
    r = run("fingerprint", "match", "--refs", refs, *sorted(probes.glob("*.json")), tmp_path / "junk.json")
    assert r.returncode == 1 and "junk.json" in r.stderr and "not JSON" in r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 3
    for o in out:
        stone = Path(o["probe"]).stem.split("_")[0]
        assert o["match"] and o["best"] == f"{stone}_1" and len(o["top"]) == 3
        assert o["top"][0]["score"] >= o["threshold"] > o["top"][1]["score"]


def test_wrong_columns_and_too_few_points_are_one_line_each(tmp_path):
    a = tmp_path / "cols.csv"
    a.write_text("nm,counts,extra\n1,2,3\n")
    b = tmp_path / "short.csv"
    b.write_text("wavelength_nm,intensity\n500,1\n501,2\n")
    c = tmp_path / "order.csv"
    c.write_text("\n".join(f"{500 - i},{i}" for i in range(60)))
    r = run("screen", a, b, c)
    assert r.returncode == 1 and r.stdout == ""
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 3
    assert "cols.csv: line 1 has 3 columns" in errs[0]
    assert f"only 2 data points, need at least {MIN_POINTS}" in errs[1]
    assert "not increasing" in errs[2]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_csv_reader_on_arbitrary_bytes_returns_arrays_or_a_named_error(data):
    try:
        wl, y = parse_spectrum_csv(data, "x.csv")
    except SpectrumFileError as exc:
        assert exc.path == "x.csv" and exc.fix
        return
    assert wl.size >= MIN_POINTS and np.all(np.diff(wl) > 0) and np.all(np.isfinite(y))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=MIN_POINTS, max_size=120), st.booleans())
def test_csv_reader_round_trips_what_it_is_given(values, header):
    text = ("wavelength_nm,intensity\n" if header else "# exported\n") + "\n".join(
        f"{400 + i * 0.5!r},{v!r}" for i, v in enumerate(values))
    wl, y = parse_spectrum_csv(text.encode())
    assert wl.size == len(values) and np.array_equal(y, np.array(values))


def test_windows_line_ends_take_the_fast_path():
    text = "wavelength_nm,intensity\r\n" + "\r\n".join(f"{400 + i},{i}" for i in range(60)) + "\r\n"
    fast = _parse_fast(text)
    assert fast is not None and np.array_equal(fast[1], np.arange(60.0))
    assert np.array_equal(_parse_checked(text, "w.csv")[0], fast[0])


def test_fast_path_never_accepts_what_the_checked_path_splits_differently():
    text = "\n".join(f"{400 + i}\x0c,{i}" for i in range(60))
    assert _parse_fast(text) is None
    with pytest.raises(SpectrumFileError):
        parse_spectrum_csv(text.encode(), "ff.csv")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["400", " 401.5", "402e0", "4_03", "nan", "x", "", "-1", "405.25 ", "1e309"]),
                          st.sampled_from(["1", "2.5", " -3", "nan", "", "7,8", "inf", "1e3"])), min_size=0, max_size=70),
       st.booleans())
def test_fast_and_checked_csv_paths_agree(rows, header):
    # distinct increasing wavelengths would be rare from a small alphabet: prefix the row number
    text = ("wavelength_nm,intensity\n" if header else "") + "\n".join(
        f"{i}{w},{v}" if w and w[0].isdigit() else f"{w},{v}" for i, (w, v) in enumerate(rows, 1))
    fast = _parse_fast(text)
    try:
        checked = _parse_checked(text, "f.csv")
    except SpectrumFileError:
        assert fast is None
        return
    if fast is not None:
        assert np.array_equal(fast[0], checked[0]) and np.array_equal(fast[1], checked[1])


def test_a_flat_zero_spectrum_and_a_short_range_are_named(tmp_path):
    zero = tmp_path / "zero.csv"
    zero.write_text("\n".join(f"{400 + i},0" for i in range(700)))
    short = tmp_path / "short_range.csv"
    short.write_text("\n".join(f"{500 + i},1" for i in range(100)))
    r = run("fingerprint", "compute", zero, short, "--out", tmp_path / "out")
    assert r.returncode == 1
    errs = r.stderr.strip().splitlines()
    assert "zero.csv: the spectrum has no positive signal" in errs[0]
    assert "short_range.csv: covers 500-599 nm" in errs[1]
    assert not list((tmp_path / "out").glob("*.json"))
