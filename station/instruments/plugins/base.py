"""Config fields every device table shares, and the serial framing block."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
Seconds = Annotated[float, Field(gt=0, le=300)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DeviceConfig(Strict):
    """``kind`` and ``driver`` pick the plug-in; ``simulate`` must be said
    explicitly, and makes every record of this station say simulated."""

    kind: str
    driver: str
    simulate: bool = False
    serial: str | None = None  # the instrument's serial number; a different one is refused
    reply_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0


class SerialFraming(Strict):
    port: Annotated[str, Field(min_length=1)]
    baudrate: PositiveInt = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    xonxoff: bool = False
    rtscts: bool = False


def serial_link(name: str, cfg: SerialFraming, timeout: float):
    from drivers.serial_link import SerialLink

    return SerialLink(
        cfg.port, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity, stopbits=cfg.stopbits,
        xonxoff=cfg.xonxoff, rtscts=cfg.rtscts, timeout=timeout, setting=f"devices.{name}.port in the config",
    )
