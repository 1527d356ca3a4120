"""The fingerprint: a compact vector from a processed spectrum.

The grid (410-995 nm, 1171 points) is integrated into D = 256 contiguous
bands of about 2.3 nm. Integrating (not sampling) keeps a line's area, which
does not depend on the instrument's resolution, where its height does. The
square root stabilises the variance (photon noise grows as the square root
of the signal) and keeps strong broad bands from drowning the narrow lines;
subtracting the mean and scaling to unit length make the score a Pearson
correlation, independent of brightness. Scores are dot products (cosine).
"""

from __future__ import annotations

import numpy as np

from station.spectra.process import GRID

D = 256
_EDGES = np.linspace(0, GRID.size, D + 1).round().astype(int)
_WIDTHS = np.diff(_EDGES).astype(float)
BAND_CENTRES_NM = np.array([GRID[a:b].mean() for a, b in zip(_EDGES[:-1], _EDGES[1:])])


def fingerprint(values: np.ndarray) -> np.ndarray:
    """float32[D], unit length; ``values`` is a processed spectrum on GRID."""
    bands = np.add.reduceat(values, _EDGES[:-1]) / _WIDTHS
    f = np.sqrt(np.maximum(bands, 0.0))
    f -= f.mean()
    n = np.linalg.norm(f)
    if n == 0 or not np.isfinite(n):
        return np.zeros(D, dtype=np.float32)
    return (f / n).astype(np.float32)


def fingerprints(values: np.ndarray) -> np.ndarray:
    """Many spectra at once: float32[N, D] from [N, GRID.size]."""
    bands = np.add.reduceat(values, _EDGES[:-1], axis=1) / _WIDTHS
    f = np.sqrt(np.maximum(bands, 0.0))
    f -= f.mean(axis=1, keepdims=True)
    n = np.linalg.norm(f, axis=1, keepdims=True)
    return np.divide(f, n, out=np.zeros_like(f), where=n > 0).astype(np.float32)
