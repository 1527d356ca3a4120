"""Port URLs and the one-link-per-bus registry (drivers/modbus_bus.py: no pymodbus, no I/O)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import LinkError
from drivers.modbus_bus import LinkRegistry, bus_settings, parse_url


@pytest.mark.parametrize("url,want", [
    ("tcp://10.0.0.5:502", ("tcp", "10.0.0.5", 502)),
    ("socket://localhost:1", ("rtu-socket", "localhost", 1)),
    ("tcp://[::1]:65535", ("tcp", "[::1]", 65535)),
    ("/dev/serial/by-id/usb-FTDI-if00", ("rtu", "/dev/serial/by-id/usb-FTDI-if00", 0)),
])
def test_urls(url, want):
    assert parse_url(url) == want


@pytest.mark.parametrize("url", ["tcp://h:0", "tcp://h:65536", "tcp://h:", "tcp://:502", "tcp://h",
                                 "socket://h:-1", "rfc2217://h:1", "", "tcp://h:5o2"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        parse_url(url)


@given(st.text(max_size=40))
def test_arbitrary_text_is_a_url_or_a_value_error(text):
    try:
        kind, host, port = parse_url(text)
    except ValueError:
        return
    assert kind in ("tcp", "rtu-socket", "rtu") and host
    assert (0 < port < 65536) if kind != "rtu" else (port == 0 and host == text)


def test_registry_hands_out_one_link_per_url_and_checks_bus_settings():
    reg: LinkRegistry[object] = LinkRegistry()
    made = []

    def make():
        made.append(object())
        return made[-1]

    a = reg.get("/dev/x", {"baudrate": 9600, "setting": "devices.scale.port"}, make)
    assert reg.get("/dev/x", {"baudrate": 9600, "setting": "devices.spectro.port"}, make) is a
    assert reg.get("/dev/x", {}, make) is a  # no settings: take the bus as it is
    with pytest.raises(LinkError, match="different bus settings"):
        reg.get("/dev/x", {"baudrate": 19200}, make)
    reg.forget("/dev/x", object())  # not the bus's link: nothing happens
    assert reg.get("/dev/x", {}, make) is a
    reg.forget("/dev/x", a)
    b = reg.get("/dev/x", {"baudrate": 19200}, make)  # after the last close: new settings
    assert b is not a and len(made) == 2
    reg.back("/dev/x", a, {"baudrate": 9600})  # b holds the URL now
    assert reg.get("/dev/x", {}, make) is b


def test_bus_settings_ignore_the_hint_text():
    assert bus_settings({"baudrate": 9600, "setting": "x", "history": 5}) == {"baudrate": 9600}
    assert bus_settings(None) == {}
