"""Fingerprint and screening evaluation on a simulated population.

    .venv/bin/python bench/fingerprint_eval.py [--stones 2400] [--seed 1]

Every stone is measured twice on instrument A and once on instrument B (a
differently built unit), each after calibrating the unit (Hg-Ar wavelength
fit + halogen response). Same-instrument genuine pairs: A1-A2; cross-instrument:
A1-B. Impostors: every A1 reference against every other stone's probe.
Prints FRR at FAR 0.01 %, the EER, the matching threshold's FAR/FRR, and
natural / synthetic referral rates (from every measurement).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from drivers.sim.spectra import HalogenLamp, HgArLamp, Instrument, SimulatedSpectrometer, Simulant, population
from station.spectra.acquire import acquire
from station.spectra.analyse import analyse, calibration_from_lamps
from station.spectra.calibration import Calibration
from station.spectra.matching import MATCH_THRESHOLD
from station.spectra.process import Processor


def calibrated(dev: SimulatedSpectrometer) -> Calibration:
    dev.place(HgArLamp(), jitter=False)
    hg = acquire(dev, scans=10)
    dev.place(HalogenLamp(), jitter=False)
    hal = acquire(dev, scans=20)
    return calibration_from_lamps(hg, hal, dev.wavelength_coeffs, nonlinearity=dev.nonlinearity_coeffs)


def uncalibrated(dev: SimulatedSpectrometer) -> Calibration:
    return Calibration(dev.instrument.n_pixels, dev.wavelength_coeffs, None, dev.nonlinearity_coeffs)


def measure(dev, proc, cal, stones):
    fps, verdicts, n3 = [], [], []
    res = cal.wavelength_fit.resolution_nm if cal.wavelength_fit else 1.2
    for s in stones:
        dev.place(s)
        acq = acquire(dev)
        a = analyse(proc.process(acq.raw, acq.dark), dev.instrument.laser_nm, res)
        fps.append(a.fingerprint)
        verdicts.append(a.verdict)
        n3.append(next(p.snr for p in a.peaks if p.name == "N3"))
    measure.n3_snr.append(np.array(n3))
    return np.stack(fps), verdicts


measure.n3_snr = []  # per run, N3 SNR of every stone: how close synthetics come to the PASS gate


def rates(genuine: np.ndarray, impostor: np.ndarray, far_target: float = 1e-4) -> dict:
    imp = np.sort(impostor)
    # the threshold that lets at most far_target of impostors through
    k = int(np.floor(far_target * imp.size))
    thr = np.nextafter(imp[imp.size - 1 - k], np.inf) if k < imp.size else -np.inf
    frr = float(np.mean(genuine < thr))
    far = float(np.mean(impostor >= thr))
    ts = np.linspace(min(genuine.min(), imp[-1]) - 1e-6, 1.0, 4001)
    frr_t = np.searchsorted(np.sort(genuine), ts, side="left") / genuine.size
    far_t = 1.0 - np.searchsorted(imp, ts, side="left") / imp.size
    i = np.argmin(np.abs(frr_t - far_t))
    return {"thr_at_far": float(thr), "frr_at_far": frr, "far": far, "eer": float((frr_t[i] + far_t[i]) / 2),
            "frr_at_match": float(np.mean(genuine < MATCH_THRESHOLD)),
            "far_at_match": float(np.mean(impostor >= MATCH_THRESHOLD)),
            "genuine_min": float(genuine.min()), "impostor_max": float(imp[-1])}


def pair_scores(refs: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = refs @ probes.T  # one matrix product for every pair
    genuine = np.diag(s).copy()
    impostor = s[~np.eye(s.shape[0], dtype=bool)]
    return genuine, impostor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stones", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--serial-a", default="SPX-A-0001")
    ap.add_argument("--serial-b", default="SPX-B-0002")
    ap.add_argument("--simulants", type=int, default=400, help="ASSURE adds 200 simulants per 1,200 stones")
    ap.add_argument("--uncalibrated", action="store_true", help="also measure B with its stored calibration only")
    args = ap.parse_args()
    t0 = time.perf_counter()
    stones = population(args.stones, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    A = SimulatedSpectrometer(Instrument(args.serial_a), rng=rng)
    B = SimulatedSpectrometer(Instrument(args.serial_b), rng=np.random.default_rng(args.seed + 1))
    cal_a, cal_b = calibrated(A), calibrated(B)
    for name, cal in (("A", cal_a), ("B", cal_b)):
        f = cal.wavelength_fit
        print(f"instrument {name}: Hg-Ar fit {len(f.lines_used)} lines, RMS {f.rms_nm:.4f} nm, "
              f"rejected {list(f.lines_rejected)}, resolution {f.resolution_nm:.2f} nm")
    pa, pb = Processor(cal_a), Processor(cal_b)
    a1, v1 = measure(A, pa, cal_a, stones)
    a2, v2 = measure(A, pa, cal_a, stones)
    b1, v3 = measure(B, pb, cal_b, stones)
    print(f"{len(stones)} stones x 3 measurements in {time.perf_counter() - t0:.0f} s")
    out = {}
    for label, probes in (("same instrument (A-A)", a2), ("across instruments (A-B)", b1)):
        g, i = pair_scores(a1, probes)
        r = rates(g, i)
        out[label] = r
        print(f"{label}: {g.size} genuine, {i.size} impostor pairs; FRR at FAR {r['far']:.4%} = {r['frr_at_far']:.3%} "
              f"(threshold {r['thr_at_far']:.4f}); EER {r['eer']:.3%}; genuine min {r['genuine_min']:.4f}, "
              f"impostor max {r['impostor_max']:.4f}; at MATCH_THRESHOLD {MATCH_THRESHOLD}: "
              f"FRR {r['frr_at_match']:.3%}, FAR {r['far_at_match']:.5%}")
    if args.uncalibrated:
        ub = Processor(uncalibrated(B))
        u1, _ = measure(B, ub, uncalibrated(B), stones)
        g, i = pair_scores(a1, u1)
        r = rates(g, i)
        print(f"across instruments, B uncalibrated: FRR at FAR {r['far']:.4%} = {r['frr_at_far']:.3%}; EER {r['eer']:.3%}; "
              f"at MATCH_THRESHOLD: FRR {r['frr_at_match']:.3%}")
    natural = np.array([s.natural for s in stones])
    refer = np.array([[v.verdict == "REFER" for v in vs] for vs in (v1, v2, v3)])
    nat = refer[:, natural].mean()
    syn = refer[:, ~natural].mean()
    print(f"natural referral {nat:.2%} ({refer[:, natural].sum()} of {refer[:, natural].size} measurements); "
          f"synthetic referral {syn:.2%} ({refer[:, ~natural].sum()} of {refer[:, ~natural].size})")
    kinds = np.array([s.kind for s in stones])
    for k in np.unique(kinds):
        print(f"  {k}: {int((kinds == k).sum())} stones, referral {refer[:, kinds == k].mean():.2%}")
    sims = [Simulant(f"SIM-{i:05d}", ("moissanite", "cubic_zirconia")[i % 2]) for i in range(args.simulants)]
    if sims:
        _, vs = measure(A, pa, cal_a, sims)
        print(f"simulant referral {np.mean([v.verdict == 'REFER' for v in vs]):.2%} of {len(sims)} "
              "(moissanite and cubic zirconia, once on A)")
    n3 = np.stack(measure.n3_snr[:3])
    syn_n3 = n3[:, ~natural]
    print(f"  N3 SNR in synthetics (no N3 in the model): max {syn_n3.max():.1f}, >= 5 in {(syn_n3 >= 5).sum()}, "
          f">= 8 in {(syn_n3 >= 8).sum()} of {syn_n3.size} measurements")
    reasons: dict[str, int] = {}
    for vs in (v1, v2, v3):
        for s, v in zip(stones, vs):
            if s.natural:
                for r in v.reasons:
                    key = r.split(" (")[0].split(":")[0]
                    reasons[key] = reasons.get(key, 0) + 1
    print("  natural referral reasons:", reasons)
    same, cross = out["same instrument (A-A)"], out["across instruments (A-B)"]
    checks = {"FRR <= 0.1 % at FAR <= 0.01 %, same instrument": same["frr_at_far"] <= 0.001,
              "FRR <= 1 % at FAR <= 0.01 %, across instruments": cross["frr_at_far"] <= 0.01,
              "synthetic referral 100 %": syn == 1.0, "natural referral <= 2 %": nat <= 0.02}
    for what, ok in checks.items():
        print(f"target {what}: {'OK' if ok else 'MISSED'}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
