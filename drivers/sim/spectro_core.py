"""What every simulated spectrometer shares, whatever its wire protocol.

* :class:`Scene`: what is in front of the slit (a stone, the Hg-Ar lamp, a
  closed shutter) and the ``saturate`` switch; set from the control port.
* A *spectrum source*: any callable ``(integration_us, scans, lamp_on) ->
  numpy uint16 array of pixel_count``. :class:`PlaceholderSource` is a simple
  built-in one (Gaussian lines, dark offset, seeded noise, clipping at the ADC
  maximum). The physics model (``drivers/sim/spectra/``) plugs in either per
  simulator (``source=``) or for all of them by changing ``SOURCE_FACTORY``
  (called as ``SOURCE_FACTORY(scene, pixel_count=, max_counts=, coefficients=,
  seed=, serial=)``); it is the physics model by default. A source with a ``coefficients`` attribute (the maker's stored
  wavelength calibration of that simulated instrument) has those reported by
  the device instead of the simulator's defaults.
* :class:`SpectroSimulator`: identity, settings, exposure and the control-port
  plumbing; protocol simulators (serial, Modbus) subclass it.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drivers.sim import control
from drivers.sim.spectro_physics import PhysicsSource

SpectrumSource = Callable[[int, int, bool], np.ndarray]

# Hg-Ar lamp lines (nm, air) visible through glass: a calibration target.
HG_AR_NM = (404.656, 407.783, 435.833, 546.074, 576.960, 579.066, 696.543, 706.722, 714.704,
            727.294, 738.393, 750.387, 763.511, 772.376, 794.818, 800.616, 811.531, 826.452,
            842.465, 852.144, 866.794, 912.297, 922.450)
# A few diamond photoluminescence centres (nm); the placeholder gives each stone
# its own stable mix of them (the default source is the physics model instead).
PL_LINES_NM = (415.2, 503.2, 575.0, 637.0, 736.6, 741.1, 882.9)
STONE_KINDS = ("natural", "type-iia", "cvd", "hpht", "natural_Ia", "natural_IIa")


@dataclass(frozen=True)
class Stone:
    id: str
    kind: str


class Scene:
    """Thread-safe: the control port writes, the wire thread reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stone: Stone | None = None
        self.target = "stone"  # "stone", or "hgar" / "halogen" for the calibration lamps
        self.shutter_closed = False
        self.saturate = False

    def snapshot(self) -> tuple[Stone | None, str, bool, bool]:
        with self._lock:
            return self.stone, self.target, self.shutter_closed, self.saturate

    def update(self, **changes: object) -> None:
        with self._lock:
            for key, value in changes.items():
                if not hasattr(self, key):
                    raise AttributeError(key)
                setattr(self, key, value)


class PlaceholderSource:
    """Gaussian lines on a dark offset, seeded noise, clipping at the ADC maximum.

    Deterministic for a given seed and call sequence. Counts grow linearly
    with integration time; averaging ``scans`` shrinks the noise by √scans.
    """

    def __init__(self, scene: Scene, *, pixel_count: int, max_counts: int,
                 coefficients: tuple[float, ...], seed: int = 0, serial: str = "",
                 dark_offset: int = 1000, dark_per_s: float = 200.0, read_noise: float = 8.0,
                 peak_per_s: float = 40_000.0) -> None:
        self.scene, self.max_counts = scene, max_counts
        px = np.arange(pixel_count, dtype=np.float64)
        self.wavelength_nm = sum(c * px**i for i, c in enumerate(coefficients))
        self.dark_offset, self.dark_per_s = dark_offset, dark_per_s
        self.read_noise, self.peak_per_s = read_noise, peak_per_s
        self._rng = np.random.default_rng(seed)

    def _lines(self, centres: tuple[float, ...], heights: np.ndarray, fwhm_nm: float) -> np.ndarray:
        sigma = fwhm_nm / 2.3548
        d = self.wavelength_nm[:, None] - np.asarray(centres)[None, :]
        return np.exp(-0.5 * (d / sigma) ** 2) @ heights

    def shape(self, lamp_on: bool) -> np.ndarray:
        """Signal per second of integration, before dark, noise and clipping."""
        stone, target, shutter_closed, saturate = self.scene.snapshot()
        n = self.wavelength_nm.size
        if shutter_closed:
            return np.zeros(n)
        if target in ("hgar", "halogen"):
            heights = np.linspace(1.0, 0.3, len(HG_AR_NM))
            rate = self._lines(HG_AR_NM, heights, 1.0) * self.peak_per_s
        elif stone is not None and lamp_on:
            mix = np.random.default_rng(zlib.crc32(f"{stone.id}/{stone.kind}".encode()))
            heights = mix.uniform(0.05, 1.0, len(PL_LINES_NM))
            broad = 0.15 * np.exp(-0.5 * ((self.wavelength_nm - 600.0) / 90.0) ** 2)
            rate = (self._lines(PL_LINES_NM, heights, 3.0) + broad) * self.peak_per_s
        else:
            rate = np.zeros(n)
        return rate * (1000.0 if saturate else 1.0)

    def __call__(self, integration_us: int, scans: int, lamp_on: bool) -> np.ndarray:
        t = integration_us / 1e6
        mean = self.dark_offset + (self.dark_per_s + self.shape(lamp_on)) * t
        shot = np.sqrt(np.maximum(mean - self.dark_offset, 0.0))
        sigma = np.sqrt(shot**2 + self.read_noise**2) / np.sqrt(max(scans, 1))
        counts = mean + self._rng.standard_normal(mean.size) * sigma
        return np.clip(np.rint(counts), 0, self.max_counts).astype(np.uint16)


DEFAULT_COEFFS = (380.0, 0.32, -1.2e-5, 1.0e-10)
# The physics model, one instrument per serial number (drivers/sim/spectro_physics.py).
SOURCE_FACTORY: Callable[..., SpectrumSource] = PhysicsSource


class SpectroSimulator:
    """Identity, settings and exposure of a simulated spectrometer.

    Subclasses own ``self._wire`` (a SimPort or a Modbus server) and call
    :meth:`expose` to get one averaged spectrum and its saturation flag.
    ``speed`` divides every integration wait, so tests run fast.
    """

    CONTROL_EXTRA = {
        "stone": ("set_stone", (str, str)),
        "lamp": ("set_target", (str,)),
        "dark": ("close_shutter", ()),
        "light": ("open_shutter", ()),
        "saturate": ("set_saturate", ()),
    }

    def _init_device(self, *, model: str, serial: str, pixel_count: int, max_counts: int,
                     coefficients: tuple[float, ...], source: SpectrumSource | None,
                     seed: int, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.model, self.serial = model, serial
        self.pixel_count, self.max_counts = pixel_count, max_counts
        self.speed = speed
        self.scene = Scene()
        self.source: SpectrumSource = source or SOURCE_FACTORY(
            self.scene, pixel_count=pixel_count, max_counts=max_counts,
            coefficients=tuple(coefficients), seed=seed, serial=serial)
        stored = getattr(self.source, "coefficients", None) or coefficients
        self.coefficients = tuple(float(c) for c in stored)
        self.integration_us, self.scans, self.lamp_on = 100_000, 1, False
        self.acquisitions = 0
        self._control: control.ControlServer | None = None

    def exposure_s(self) -> float:
        """The real wait for one acquisition, scaled by ``speed``."""
        return self.integration_us * self.scans / 1e6 / self.speed

    def expose(self) -> tuple[np.ndarray, bool]:
        counts = np.asarray(self.source(self.integration_us, self.scans, self.lamp_on))
        if counts.shape != (self.pixel_count,):
            raise ValueError(f"spectrum source gave shape {counts.shape}, expected ({self.pixel_count},)")
        counts = np.clip(counts, 0, self.max_counts).astype(np.uint16)
        self.acquisitions += 1
        return counts, bool((counts >= self.max_counts).any())

    # -- control (any thread) -----------------------------------------------------

    def set_stone(self, stone_id: str, kind: str) -> None:
        if kind not in STONE_KINDS:
            raise ValueError(f"unknown stone kind {kind!r}; use one of {', '.join(STONE_KINDS)}")
        self.scene.update(stone=Stone(stone_id, kind), target="stone")

    def remove(self) -> None:
        self.scene.update(stone=None)

    def set_target(self, target: str) -> None:
        names = {"hgar": "hgar", "halogen": "halogen", "off": "stone", "stone": "stone"}
        if target not in names:
            raise ValueError("lamp takes hgar (wavelength lamp), halogen (response lamp) or off")
        self.scene.update(target=names[target])

    def close_shutter(self) -> None:
        self.scene.update(shutter_closed=True)

    def open_shutter(self) -> None:
        self.scene.update(shutter_closed=False)

    def set_saturate(self) -> None:
        self.scene.update(saturate=True)

    def clear_scene_faults(self) -> None:
        self.scene.update(saturate=False, shutter_closed=False)

    def status(self) -> dict:
        stone, target, shutter_closed, saturate = self.scene.snapshot()
        return {
            "port": self.port, "serial": self.serial, "model": self.model, "plugged": self.plugged,
            "stone": None if stone is None else {"id": stone.id, "kind": stone.kind},
            "target": target, "shutter_closed": shutter_closed, "saturate": saturate,
            "integration_us": self.integration_us, "scans": self.scans, "lamp_on": self.lamp_on,
            "acquisitions": self.acquisitions,
        }

    @property
    def port(self) -> str:  # overridden by protocol simulators
        raise NotImplementedError

    @property
    def plugged(self) -> bool:
        raise NotImplementedError

    def control(self, line: str) -> dict:
        return control.run_command(self, line)

    def start_control(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._control = control.ControlServer(self, host, port)
        return self._control.address

    def stop_control(self) -> None:
        server, self._control = self._control, None
        if server is not None:
            server.stop()
