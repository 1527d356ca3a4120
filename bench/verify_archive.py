"""`station verify` on an archive of exported records, against the strongest raw baseline.

    .venv/bin/python bench/verify_archive.py                  # 100,000 records, 3 rounds
    .venv/bin/python bench/verify_archive.py --records 20000 --rounds 2

1. Builds a station's records with the real payload builder, signer, hash chain
   and outbox (`RecordWriter`), and exports them with `Outbox.export` as
   DIR/<seq>.cose, exactly what `station records export` writes.
2. Times, each in a fresh child process, interleaved over several rounds:
   * verify: `station verify --trust FILE DIR` (`station.cli.main`, the same code
     path as the command, its summary printed to /dev/null);
   * baseline: a bare loop of Ed25519 verifications over the same records, with
     the public key loaded and every Sig_structure built before the clock starts
     (files read, split and concatenated beforehand): nothing but the
     cryptography the verifier cannot avoid.
3. Prints the ratio of the best times (target <= 1.5) and the verifier's peak
   RSS from `resource.getrusage` in its own child (target <= 100 MB).

Files go to /var/tmp (a disk, not tmpfs) unless --dir is given. Exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO, TARGET_RSS_MB = 1.5, 100.0


def _stone(i: int):
    from station.instruments.reading import DeviceIdentity, mass_reading
    from station.records.payload import RecordInput, utc_now

    reading = mass_reading(
        device="balance", driver="mtsics",
        identity=DeviceIdentity("XPR205", "B123456789", ("> I2", '< I2 A "XPR205DR Excellence 220 g"',
                                                         "> I4", '< I4 A "B123456789"')),
        value_ug=99_800 + i, stable=True, raw=("> S", f"< S S      0.{998 + i % 9:04d} g"), time=utc_now(),
    )
    return RecordInput(operator="op-0042", lot="LOT-2026-11-28-A", readings=[reading],
                       flags=("reweigh:0.50ct",) if i % 7 == 0 else ())


def build_archive(work: Path, n: int) -> tuple[Path, Path, int]:
    from station.central.trust import PRODUCTION, trust_entry
    from station.delivery.outbox import Outbox
    from station.records.chain import RecordWriter
    from station.records.cose import Signer
    from station.records.keys import init_key

    key = init_key(work / "keys" / "station.key")
    writer = RecordWriter(Outbox(work / "outbox.db"), Signer(key), station_id="BENCH-01", simulated=False)
    batch = 500
    for start in range(0, n, batch):
        writer.write_batch([_stone(i) for i in range(start, min(n, start + batch))])
    export = work / "export"
    writer.outbox.export(export)
    writer.outbox.close()
    trust = work / "trust.toml"
    trust.write_text(trust_entry("BENCH-01", {PRODUCTION: [key.public_key()]}))
    size = sum(e.stat().st_size for e in os.scandir(export))
    return export, trust, size


def child_verify(export: str, trust: str, out: str) -> None:
    from station import cli

    t0, c0 = time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as devnull:
        saved, sys.stdout = sys.stdout, devnull
        try:
            code = cli.main(["verify", "--trust", trust, export])
        finally:
            sys.stdout = saved
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    Path(out).write_text(json.dumps({"seconds": elapsed, "cpu": cpu, "rss_mb": rss_kb / 1024, "exit": code}))


def child_baseline(export: str, trust: str, out: str) -> None:
    import cbor2

    from station.central.trust import load_trust_file
    from station.records.cose import sig_structure

    store = load_trust_file(Path(trust))
    key = next(iter(store._by_kid.values())).key
    work = []
    for name in sorted(os.listdir(export), key=lambda f: int(f[:-5])):
        protected, _, payload, signature = cbor2.loads(Path(export, name).read_bytes()).value
        work.append((signature, sig_structure(protected, payload)))
    verify = key.verify
    t0, c0 = time.perf_counter(), time.process_time()
    for signature, message in work:
        verify(signature, message)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    Path(out).write_text(json.dumps({"seconds": elapsed, "cpu": cpu}))


def _run_child(kind: str, export: Path, trust: Path, work: Path) -> dict:
    out = work / f"{kind}.json"
    subprocess.run([sys.executable, __file__, "--child", kind, str(export), str(trust), str(out)], check=True)
    return json.loads(out.read_text())


def _drop_page_cache_note() -> str:
    return "warm page cache (the files were just written)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", help="work directory (default: a new one in /var/tmp)")
    p.add_argument("--child", nargs=4, metavar=("KIND", "EXPORT", "TRUST", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, export, trust, out = args.child
        (child_verify if kind == "verify" else child_baseline)(export, trust, out)
        return 0

    work = Path(tempfile.mkdtemp(prefix="verify-bench-", dir=args.dir or "/var/tmp"))
    try:
        t0 = time.perf_counter()
        export, trust, size = build_archive(work, args.records)
        print(f"built {args.records} records ({size / args.records:.0f} bytes each on average) "
              f"in {time.perf_counter() - t0:.1f} s")
        verify, baseline = [], []
        for r in range(args.rounds):
            v = _run_child("verify", export, trust, work)
            if v["exit"] != 0:
                print("station verify did not verify the archive", file=sys.stderr)
                return 1
            b = _run_child("baseline", export, trust, work)
            verify.append(v)
            baseline.append(b)
            print(f"round {r + 1}: verify {v['seconds']:.2f} s wall, {v['cpu']:.2f} s CPU, peak RSS {v['rss_mb']:.1f} MB; "
                  f"bare Ed25519 loop {b['seconds']:.2f} s wall, {b['cpu']:.2f} s CPU")
        n = args.records
        best = {k: (min(x[k] for x in verify), min(x[k] for x in baseline)) for k in ("seconds", "cpu")}
        ratio, cpu_ratio = (best[k][0] / best[k][1] for k in ("seconds", "cpu"))
        rss = max(x["rss_mb"] for x in verify)
        load = os.getloadavg()[0]
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"load average {load:.1f}, {_drop_page_cache_note()}")
        for label, k in (("wall", "seconds"), ("CPU", "cpu")):
            print(f"{label:>4}: station verify {best[k][0]:.2f} s = {best[k][0] / n * 1e6:.1f} µs/record, "
                  f"bare Ed25519 {best[k][1]:.2f} s = {best[k][1] / n * 1e6:.1f} µs/record (best of {args.rounds})")
        print(f"ratio: {ratio:.2f} wall, {cpu_ratio:.2f} CPU (target <= {TARGET_RATIO})   "
              f"peak RSS: {rss:.1f} MB (target <= {TARGET_RSS_MB:.0f})")
        return 0 if ratio <= TARGET_RATIO and rss <= TARGET_RSS_MB else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
