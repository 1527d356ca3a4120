"""A probe fingerprint against N references: one matrix-vector product.

Scores are cosine similarities of unit vectors (Pearson correlations of the
square-rooted band spectra), in [-1, 1]. See docs/SCREENING.md (Matching)
for why MATCH_THRESHOLD sits where it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATCH_THRESHOLD = 0.995
TOP = 5


@dataclass(frozen=True)
class MatchResult:
    indices: np.ndarray     # best first
    scores: np.ndarray

    @property
    def match(self) -> bool:
        return bool(self.scores.size and self.scores[0] >= MATCH_THRESHOLD)


def scores(refs: np.ndarray, probe: np.ndarray) -> np.ndarray:
    return refs @ probe


def top_k(s: np.ndarray, k: int = TOP) -> np.ndarray:
    k = min(k, s.size)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    idx = np.argpartition(s, s.size - k)[s.size - k:] if s.size > k else np.arange(s.size)
    return idx[np.argsort(-s[idx], kind="stable")]


def match(refs: np.ndarray, probe: np.ndarray, k: int = TOP) -> MatchResult:
    """``refs`` float32[N, D] (unit rows), ``probe`` float32[D]."""
    s = scores(refs, probe)
    idx = top_k(s, k)
    return MatchResult(idx, s[idx])
