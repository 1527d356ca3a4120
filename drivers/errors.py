"""The driver layer's errors, all ``DeviceError`` so callers catch one type."""

from station.errors import DeviceError


class LinkError(DeviceError):
    """The transport failed: port missing, unplugged, timed out."""


class ProtocolError(DeviceError):
    """The device sent bytes we cannot parse, or a reply that does not fit."""


class DeviceRefused(DeviceError):
    """The device understood us and answered with an error status (ES/ET/EL, I, +, -)."""
