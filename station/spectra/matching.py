"""A probe fingerprint against N references: one matrix-vector product.

Scores are cosine similarities of unit vectors (Pearson correlations of the
square-rooted band spectra), in [-1, 1]. See docs/SCREENING.md (Matching)
for why MATCH_THRESHOLD sits where it does.

``References`` keeps the N x D matrix transposed (D x N, C-contiguous): the
product then streams each dimension's N scores through memory in order,
which measured about 3x faster with OpenBLAS than the row-major product for
N = 100,000, D = 256 (bench/spectra_perf.py). The work is memory-bound: 100 MB
of float32 per probe.
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


class References:
    def __init__(self, vectors: np.ndarray) -> None:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim != 2:
            raise ValueError("references must be an N x D matrix")
        self.columns = np.ascontiguousarray(v.T)
        self.n, self.d = v.shape

    def scores(self, probe: np.ndarray) -> np.ndarray:
        return np.asarray(probe, dtype=np.float32) @ self.columns


_BLOCK = 128


def top_k(s: np.ndarray, k: int = TOP) -> np.ndarray:
    """Indices of the k largest scores, best first. For large N, the k best
    lie in the k blocks with the largest maxima: one pass of block maxima and
    a selection among k*128 candidates instead of a selection over all N
    (argpartition over 100,000 scores costs as much as a third of the product)."""
    k = min(k, s.size)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    n_full = s.size // _BLOCK * _BLOCK
    if n_full >= 8 * k * _BLOCK:
        maxima = s[:n_full].reshape(-1, _BLOCK).max(axis=1)
        blocks = np.argpartition(maxima, maxima.size - k)[maxima.size - k:]
        cand = (blocks[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
        cand = np.concatenate([cand, np.arange(n_full, s.size)])
    else:
        cand = np.arange(s.size)
    sub = s[cand]
    idx = cand[np.argpartition(sub, sub.size - k)[sub.size - k:]] if sub.size > k else cand
    return idx[np.lexsort((idx, -s[idx]))]  # best first; equal scores by index


def match(refs: References | np.ndarray, probe: np.ndarray, k: int = TOP) -> MatchResult:
    """``refs``: References, or float32[N, D] with unit rows; ``probe``: float32[D]."""
    s = refs.scores(probe) if isinstance(refs, References) else np.asarray(refs) @ probe
    idx = top_k(s, k)
    return MatchResult(idx, s[idx])
