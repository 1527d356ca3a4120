"""Which seqs a station is missing, and when to ask it for them again.

A hole is only a gap once it has stayed open for `grace` seconds: consumers of
one shared group store a station's records in parallel, so seq 10 may be
committed a moment before seq 9. Requests are bounded (at most `max_span`
seqs, at most one per station every `interval` seconds), so a long outage is
replayed in steps rather than as a storm.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from station.central.store import Store


class GapWatch:
    def __init__(self, store: Store, *, grace: float = 1.0, interval: float = 5.0, max_span: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.grace, self.interval, self.max_span = grace, interval, max_span
        self.clock = clock
        self.heads: dict[str, int] = {}  # station -> every seq up to here is stored
        self.open: dict[str, tuple[int, int, float]] = {}  # station -> (first missing, last missing, seen since)
        self._asked: dict[str, float] = {}

    def check(self, stations: Iterable[str]) -> list[tuple[str, int, int]]:
        """(station, from_seq, to_seq) replays to ask for now."""
        now, out = self.clock(), []
        for station in sorted(set(stations) | set(self.open)):
            head, nxt = self.store.contiguous_head(station, self.heads.get(station, 0))
            self.heads[station] = head
            if nxt is None:
                self.open.pop(station, None)
                continue
            lo, hi = head + 1, nxt - 1
            seen = self.open.get(station)
            since = seen[2] if seen is not None and seen[0] == lo else now
            self.open[station] = (lo, hi, since)
            asked = self._asked.get(station)
            if now - since >= self.grace and (asked is None or now - asked >= self.interval):
                out.append((station, lo, min(hi, lo + self.max_span - 1)))
                self._asked[station] = now
        return out
