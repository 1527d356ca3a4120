"""`station fingerprint compute|match` and `station screen`.

Built for a central system that re-checks thousands of files per call: one
process handles many files, numpy is imported only when a command runs, a bad
file costs one line on stderr (naming it) and the others still run; the exit
status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FORMAT = "station-fingerprint/1"
DEFAULT_LASER_NM = 405.0
DEFAULT_RESOLUTION_NM = 1.2


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    fp = sub.add_parser("fingerprint", help="spectral fingerprints").add_subparsers(metavar="ACTION")
    s = fp.add_parser("compute", parents=[common], help="SPECTRUM.csv... -> DIR/<name>.json")
    s.add_argument("files", nargs="+", metavar="SPECTRUM.csv",
                   help="wavelength_nm,intensity; any grid; dark- and response-corrected")
    s.add_argument("--out", required=True, metavar="DIR", help="where to write <name>.json")
    _optics(s)
    s.set_defaults(func=run_compute)
    s = fp.add_parser("match", parents=[common], help="PROBE.json... against --refs DIR: one JSON line each")
    s.add_argument("probes", nargs="+", metavar="PROBE.json")
    s.add_argument("--refs", required=True, metavar="DIR", help="directory of reference fingerprint .json files")
    s.set_defaults(func=run_match)
    s = sub.add_parser("screen", parents=[common], help="SPECTRUM.csv... -> one PASS/REFER JSON line each")
    s.add_argument("files", nargs="+", metavar="SPECTRUM.csv")
    _optics(s)
    s.set_defaults(func=run_screen)


def _nm(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of nm") from None
    if not 0.0 < v < 2000.0:
        raise argparse.ArgumentTypeError(f"{text} nm is not a plausible wavelength or width")
    return v


def _optics(s: argparse.ArgumentParser) -> None:
    s.add_argument("--laser-nm", type=_nm, default=DEFAULT_LASER_NM,
                   help=f"excitation laser; sets where the diamond Raman line must be (default {DEFAULT_LASER_NM:g})")
    s.add_argument("--resolution-nm", type=_nm, default=DEFAULT_RESOLUTION_NM,
                   help=f"instrument FWHM resolution (default {DEFAULT_RESOLUTION_NM:g})")


def _fail(message: str) -> None:
    print(f"station: error: {message}", file=sys.stderr, flush=True)


def _analyse_csv(path: str, laser_nm: float, resolution_nm: float):
    from station.spectra.analyse import analyse
    from station.spectra.csvio import read_spectrum_csv
    from station.spectra.errors import SpectrumError, SpectrumFileError
    from station.spectra.process import GRID, finish, resample

    wl, y = read_spectrum_csv(path)
    if wl[0] > GRID[0] or wl[-1] < GRID[-1]:
        raise SpectrumFileError(path, f"covers {wl[0]:g}-{wl[-1]:g} nm, the fingerprint needs {GRID[0]:g}-{GRID[-1]:g} nm",
                                "export the whole spectrum")
    try:
        return analyse(finish(resample(wl, y)), laser_nm, resolution_nm)
    except SpectrumError as exc:
        raise SpectrumFileError(path, exc.what, exc.fix) from None


def _each(files, work) -> int:
    from station.errors import StationError

    failed = 0
    for path in files:
        try:
            work(path)
        except StationError as exc:
            failed += 1
            _fail(str(exc))
    return 1 if failed else 0


def run_compute(args) -> int:
    from station.spectra.errors import SpectrumFileError

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpectrumFileError(str(out), f"cannot create the output directory ({exc.strerror})",
                                "choose a writable --out") from None

    def work(path: str) -> None:
        a = _analyse_csv(path, args.laser_nm, args.resolution_nm)
        doc = {"format": FORMAT, "source": Path(path).name, "laser_nm": args.laser_nm,
               "resolution_nm": args.resolution_nm, "grid_nm": [410.0, 995.0, 0.5], "d": int(a.fingerprint.size),
               "vector": [round(float(v), 7) for v in a.fingerprint],
               "peaks": [p.to_json() for p in a.peaks], "screening": a.verdict.to_json()}
        target = out / (Path(path).stem + ".json")
        try:
            target.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        except OSError as exc:
            raise SpectrumFileError(str(target), f"cannot write ({exc.strerror})", "check --out") from None

    return _each(args.files, work)


def load_fingerprint(path: str | Path):
    import numpy as np

    from station.spectra.errors import SpectrumFileError

    fix = "give a file written by `station fingerprint compute`"
    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise SpectrumFileError(str(path), f"cannot read ({exc.strerror or exc})", "check the path") from None
    except ValueError:
        raise SpectrumFileError(str(path), "not JSON", fix) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SpectrumFileError(str(path), f"not a {FORMAT} file", fix)
    try:
        v = np.asarray(doc["vector"], dtype=np.float32)
    except (KeyError, TypeError, ValueError):
        raise SpectrumFileError(str(path), "no numeric 'vector'", fix) from None
    if v.ndim != 1 or v.size != doc.get("d") or not np.all(np.isfinite(v)):
        raise SpectrumFileError(str(path), "the vector's length or values are invalid", fix)
    return v


def run_match(args) -> int:
    import numpy as np

    from station.spectra.errors import SpectrumFileError
    from station.spectra.matching import MATCH_THRESHOLD, References, match

    ref_dir = Path(args.refs)
    if not ref_dir.is_dir():
        raise SpectrumFileError(str(ref_dir), "is not a directory", "give --refs a directory of fingerprint .json files")
    names, vectors, bad = [], [], 0
    for p in sorted(ref_dir.glob("*.json")):
        try:
            vectors.append(load_fingerprint(p))
            names.append(p.stem)
        except SpectrumFileError as exc:
            bad += 1
            _fail(f"reference {exc}")
    if not vectors:
        raise SpectrumFileError(str(ref_dir), "holds no usable reference fingerprints",
                                "write references with `station fingerprint compute --out DIR`")
    if len({v.size for v in vectors}) != 1:
        raise SpectrumFileError(str(ref_dir), "mixes fingerprints of different lengths", "recompute the references")
    refs = References(np.stack(vectors))

    def work(path: str) -> None:
        v = load_fingerprint(path)
        if v.size != refs.d:
            raise SpectrumFileError(path, f"has {v.size} dimensions, the references {refs.d}", "recompute it")
        m = match(refs, v)
        print(json.dumps({"probe": path, "match": m.match, "best": names[m.indices[0]] if m.match else None,
                          "threshold": MATCH_THRESHOLD,
                          "top": [{"ref": names[i], "score": round(float(s), 6)} for i, s in zip(m.indices, m.scores)]}),
              flush=False)

    rc = _each(args.probes, work)
    sys.stdout.flush()
    return 1 if (rc or bad) else 0


def run_screen(args) -> int:
    def work(path: str) -> None:
        a = _analyse_csv(path, args.laser_nm, args.resolution_nm)
        print(json.dumps({"file": path, **a.verdict.to_json()}), flush=False)

    rc = _each(args.files, work)
    sys.stdout.flush()
    return rc
