"""One station's chain, checked as records arrive in any order, in bounded memory.

What is kept is not the records but the runs of consecutive seqs seen so far
(an interval set). Each run remembers only its two ends: the `prev` its first
record claims and the digest of its last record. A record that lands next to
a run is linked to it on arrival; a record that fills a hole merges two runs.
Memory is therefore proportional to the number of holes open at one time (one
run, about 200 bytes, for an archive read in seq order), never to the number
of records.

Comparing a repeated seq with the first copy needs that copy's digest: the
ends of runs keep theirs, and a window of the most recent digests (shared by
all stations, `window` entries) covers redeliveries. A repeat of an older seq
cannot be compared and is reported as such rather than waved through.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass

ZERO_HASH = bytes(32)


@dataclass(slots=True)
class Run:
    lo: int
    hi: int
    lo_prev: bytes  # what record `lo` claims as the hash of lo - 1
    lo_digest: bytes
    lo_source: str
    hi_digest: bytes
    hi_source: str


class RecentDigests:
    """(station, seq) -> (digest, source) for the last `size` records, shared by all stations."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: OrderedDict[tuple[str, int], tuple[bytes, str]] = OrderedDict()

    def get(self, station: str, seq: int) -> tuple[bytes, str] | None:
        return self._d.get((station, seq))

    def put(self, station: str, seq: int, digest: bytes, source: str) -> None:
        self._d[(station, seq)] = (digest, source)
        if len(self._d) > self.size:
            self._d.popitem(last=False)


class StationChain:
    def __init__(self, station: str, recent: RecentDigests) -> None:
        self.station = station
        self.runs: list[Run] = []  # sorted by lo, never adjacent or overlapping
        self._los: list[int] = []  # the runs' lo, for bisect
        self._recent = recent

    def add(self, seq: int, prev: bytes, digest: bytes, source: str) -> tuple[str, list[str]]:
        """Returns (outcome, problems): outcome is "new", "duplicate" or "conflict"."""
        runs, problems = self.runs, []
        i = bisect_right(self._los, seq) - 1  # the run starting at or before seq
        left = runs[i] if i >= 0 else None
        if left is not None and seq <= left.hi:
            return self._repeat(left, seq, digest, source)
        if seq == 1 and prev != ZERO_HASH:
            problems.append(f"{self.station} seq 1 ({source}): the first record of a chain must have prev = 32 zero bytes")
        joins_left = left is not None and left.hi == seq - 1
        if joins_left and prev != left.hi_digest:
            problems.append(f"{self.station}: hash chain broken between seq {seq - 1} ({left.hi_source}) and "
                            f"seq {seq} ({source}): prev of {seq} is not the SHA-256 of {seq - 1}")
        right = runs[i + 1] if i + 1 < len(runs) else None
        joins_right = right is not None and right.lo == seq + 1
        if joins_right and right.lo_prev != digest:
            problems.append(f"{self.station}: hash chain broken between seq {seq} ({source}) and "
                            f"seq {seq + 1} ({right.lo_source}): prev of {seq + 1} is not the SHA-256 of {seq}")
        if joins_left and joins_right:
            left.hi, left.hi_digest, left.hi_source = right.hi, right.hi_digest, right.hi_source
            del runs[i + 1], self._los[i + 1]
        elif joins_left:
            left.hi, left.hi_digest, left.hi_source = seq, digest, source
        elif joins_right:
            right.lo, right.lo_prev, right.lo_digest, right.lo_source = seq, prev, digest, source
            self._los[i + 1] = seq
        else:
            runs.insert(i + 1, Run(seq, seq, prev, digest, source, digest, source))
            self._los.insert(i + 1, seq)
        self._recent.put(self.station, seq, digest, source)
        return "new", problems

    def _repeat(self, run: Run, seq: int, digest: bytes, source: str) -> tuple[str, list[str]]:
        first = self._recent.get(self.station, seq)
        if first is None and seq == run.lo:
            first = (run.lo_digest, run.lo_source)
        elif first is None and seq == run.hi:
            first = (run.hi_digest, run.hi_source)
        if first is None:
            return "conflict", [f"{self.station} seq {seq} ({source}) arrived again after more than "
                                f"{self._recent.size} other records: too late to compare with the first copy "
                                f"(give the copies together, or raise --window)"]
        if first[0] == digest:
            return "duplicate", []  # at-least-once delivery: the same signed content again
        return "conflict", [f"{self.station} seq {seq}: {source} conflicts with {first[1]}: "
                            f"two different signed records for the same seq (the station's chain forked)"]

    def gaps(self, first_seq: int) -> list[tuple[int, int]]:
        out, expected = [], first_seq
        for run in self.runs:
            if run.lo > expected:
                out.append((expected, run.lo - 1))
            expected = max(expected, run.hi + 1)
        return out
