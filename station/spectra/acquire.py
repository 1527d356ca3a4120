"""Acquisition against any spectrometer driver: dark frame, auto-integration
to about 70 % of full scale without saturation, averaging, and the operator
messages for saturation and weak signal.

A driver only has to offer the small ``SpectrometerLink`` protocol below; the
serial and Modbus drivers do, and so does the in-process simulator
(``drivers.sim.spectra.SimulatedSpectrometer``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

TARGET_FRACTION = 0.70
ACCEPT = (0.60, 0.80)          # good enough: stop adjusting
SATURATED_FRACTION = 0.99      # the ADC clips each scan before averaging, so an average near the top is a clip
LOW_SIGNAL_FRACTION = 0.05     # below this at the longest integration, the spectrum is too noisy to screen
MIN_US, MAX_US, START_US = 1_000, 10_000_000, 100_000


class SpectrometerLink(Protocol):
    max_counts: int

    def set_integration_us(self, us: int) -> None: ...
    def set_scans(self, n: int) -> None: ...
    def set_lamp(self, on: bool) -> None: ...
    def acquire(self) -> np.ndarray: ...


@dataclass
class Acquisition:
    raw: np.ndarray
    dark: np.ndarray
    integration_us: int
    scans: int
    fill: float                       # max(raw - dark) / (full scale - dark floor)
    saturated: bool = False
    low_signal: bool = False
    messages: list[str] = field(default_factory=list)
    tries: int = 0


def _fill(counts: np.ndarray, full: int) -> tuple[float, bool]:
    top = float(counts.max())
    floor = float(np.partition(counts, counts.size // 100)[counts.size // 100])  # 1st percentile: bias + dark
    return (top - floor) / max(1.0, full - floor), top >= SATURATED_FRACTION * full


def acquire(link: SpectrometerLink, *, scans: int = 4, start_us: int = START_US, min_us: int = MIN_US,
            max_us: int = MAX_US, max_tries: int = 8) -> Acquisition:
    """Find the integration time (single scans), then take ``scans`` averaged
    scans with the light on and the same with it off (the dark frame)."""
    full = int(link.max_counts)
    link.set_scans(1)
    link.set_lamp(True)
    t, tries = int(min(max(start_us, min_us), max_us)), 0
    while tries < max_tries:
        tries += 1
        link.set_integration_us(t)
        fill, sat = _fill(np.asarray(link.acquire()), full)
        if sat:
            if t == min_us:
                break
            new = max(min_us, t // 5)  # clipped: the true level is unknown, step down hard
        elif ACCEPT[0] <= fill <= ACCEPT[1]:
            break
        else:
            new = max_us if fill <= 0 else int(min(max_us, max(min_us, t * TARGET_FRACTION / fill)))
        if new == t:
            break  # at a limit
        t = new
    link.set_scans(scans)
    raw = np.asarray(link.acquire())
    link.set_lamp(False)
    try:
        dark = np.asarray(link.acquire())
    finally:
        link.set_lamp(True)  # the next stone expects the light on, even after a failed dark frame
    _, sat = _fill(raw, full)
    # judged on the dark-subtracted frame: hot pixels at long integration are not signal
    floor = float(np.partition(dark, dark.size // 100)[dark.size // 100])
    fill = float((raw.astype(np.float64) - dark).max()) / max(1.0, full - floor)
    acq = Acquisition(raw, dark, t, scans, fill, tries=tries)
    if sat:
        acq.saturated = True
        acq.messages.append(
            f"Saturated at {t / 1000:g} ms{' (the shortest integration)' if t == min_us else ''}: the stone is too "
            "bright or room light reaches the probe. Close the lid and measure again; if it persists, lower the laser power.")
    elif fill < LOW_SIGNAL_FRACTION:
        acq.low_signal = True
        acq.messages.append(
            f"Weak signal: {fill:.0%} of full scale at {t / 1e6:g} s: check the stone sits table-down on the probe "
            "window, the lid is closed and the laser is on.")
    return acq
