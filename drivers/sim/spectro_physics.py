"""The physics model (``drivers/sim/spectra/``) as the wire simulators' spectrum source.

``PhysicsSource`` is what ``spectro_core.SOURCE_FACTORY`` builds: one model
``Instrument`` seeded by the simulator's serial number, looking at whatever the
control port put in front of the probe:

    stone ID KIND   a diamond (natural / natural_Ia, type-iia / natural_IIa, cvd, hpht)
    lamp hgar       the Hg-Ar calibration lamp
    lamp halogen    the tungsten-halogen reference lamp (2856 K)
    lamp off        back to the stone
    dark            the shutter closed

The device's light output (serial ``J``, Modbus lamp register) switches the
source: off is a dark frame whatever sits on the probe. Each placement of a
stone collects the light a little differently (the model's placement jitter);
the exposures that follow share it, so re-measuring gives a similar but noisy
spectrum. The wire protocols accept integration times and scan counts the
model does not (10 µs .. 65 s, up to 5000 scans); those are clipped to the
model's 1 ms .. 10 s and 1000 scans, as a detector's own limits would.
"""

from __future__ import annotations

import numpy as np

from drivers.sim.spectra import Dark, HalogenLamp, HgArLamp, Instrument, Stone
from drivers.sim.spectra.device import MAX_INTEGRATION_US, MIN_INTEGRATION_US
from drivers.sim.spectra.lines import seed_of

MAX_SCANS = 1000
# The control port's kinds -> the model's kinds.
KIND_ALIASES = {"natural": "natural_Ia", "type-iia": "natural_IIa", "natural_Ia": "natural_Ia",
                "natural_IIa": "natural_IIa", "cvd": "cvd", "hpht": "hpht"}
SATURATE_GAIN = 1.0e5  # room light on the probe: clips even at the shortest integration
TEMPERATURE_C = 25.0


class PhysicsSource:
    def __init__(self, scene, *, pixel_count: int, max_counts: int, coefficients: tuple[float, ...] = (),
                 seed: int = 0, serial: str = "SPX0000001") -> None:
        self.scene, self.max_counts = scene, max_counts
        self.instrument = Instrument(serial, n_pixels=pixel_count)
        self.rng = np.random.default_rng(seed_of("wire-sim", serial, seed))
        self._dark = self.instrument.rate(Dark().emission())
        self._placed: tuple[object, str] | None = None  # (stone object, target) the cached rate is for
        self._rate = self._dark

    @property
    def coefficients(self) -> tuple[float, ...]:
        """The unit's stored (factory, drifted) wavelength coefficients."""
        return self.instrument.wavelength_coeffs

    def _scene_rate(self) -> np.ndarray:
        stone, target, shutter_closed, saturate = self.scene.snapshot()
        if shutter_closed:
            return self._dark
        key = (stone, target)
        # `is`, not ==: the same stone placed again is a new placement
        if self._placed is None or self._placed[0] is not stone or self._placed[1] != target:
            laser = self.instrument.laser_nm
            if target == "hgar":
                em = HgArLamp().emission(laser)
            elif target == "halogen":
                em = HalogenLamp().emission(laser)
            elif stone is not None:
                em = Stone(stone.id, KIND_ALIASES[stone.kind]).emission(laser, self.rng)
            else:
                em = Dark().emission(laser)
            self._rate, self._placed = self.instrument.rate(em), key
        return self._rate * (SATURATE_GAIN if saturate else 1.0)

    def __call__(self, integration_us: int, scans: int, lamp_on: bool) -> np.ndarray:
        rate = self._scene_rate() if lamp_on else self._dark
        t = int(min(max(integration_us, MIN_INTEGRATION_US), MAX_INTEGRATION_US))
        n = int(min(max(scans, 1), MAX_SCANS))
        counts = self.instrument.expose_rate(rate, t, n, TEMPERATURE_C, self.rng)
        return np.minimum(counts, self.max_counts).astype(np.uint16)
