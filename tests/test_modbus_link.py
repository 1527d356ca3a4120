"""ModbusLink against a real pymodbus server: RTU on a pty, RTU over TCP, Modbus TCP."""

import socket
import threading
import time

import pytest

from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.modbus_codes import ModbusExceptionReply
from drivers.modbus_link import ModbusLink, RegisterServer, shared_link
from drivers.sim.modbus_wire import ModbusWire, crc16, rtu_request_length


class Bank:
    """Unit u's register i reads u * 1000 + i; address 50 answers exception 2."""

    def __init__(self):
        self.times: list[float] = []
        self.writes: list[tuple[int, int, list[int]]] = []

    def __call__(self, unit, fc, address, count, registers, written):
        self.times.append(time.monotonic())
        if address == 50:
            return 2
        if written is not None:
            self.writes.append((unit, address, written))
            return None
        for i in range(count):
            registers[address + i] = unit * 1000 + address + i
        return None


@pytest.fixture(params=["rtu-pty", "rtu-socket", "tcp"])
def wire(request, tmp_path):
    bank = Bank()
    kind = request.param
    if kind == "rtu-pty":
        w = ModbusWire({1: 100, 2: 100}, bank, framing="rtu", link_path=str(tmp_path / "usb-RS485-if00"))
    else:
        w = ModbusWire({1: 100, 2: 100}, bank, framing="rtu" if kind == "rtu-socket" else "tcp",
                       tcp=("127.0.0.1", 0))
    with_start = w.start()
    with_start.bank = bank
    yield with_start
    w.stop()


def test_reads_writes_and_the_transcript(wire):
    link = ModbusLink(wire.path, timeout=1.0)
    with link:
        assert link.read_holding(1, 5, 2) == [1005, 1006]
        assert link.read_input(2, 0, 1) == [2000]
        link.write_register(1, 9, 0x86A0)
        link.write_registers(2, 10, [1, 2])
    assert wire.bank.writes == [(1, 9, [0x86A0]), (2, 10, [1, 2])]
    assert link.transcript() == [
        "> FC03 @1 addr 5 x2", "< [0x03ed, 0x03ee]",
        "> FC04 @2 addr 0 x1", "< [0x07d0]",
        "> FC06 @1 addr 9 = [0x86a0]", "< ok",
        "> FC16 @2 addr 10 = [0x0001, 0x0002]", "< ok",
    ]
    assert not link.is_open


def test_exception_reply_is_a_protocol_error_naming_the_map(wire):
    with ModbusLink(wire.path, timeout=1.0, setting="devices.scale.map") as link:
        with pytest.raises(ModbusExceptionReply) as info:
            link.read_holding(1, 50, 1)
        assert info.value.code == 2 and isinstance(info.value, ProtocolError)
        assert "exception 2 (illegal data address)" in info.value.what
        assert "devices.scale.map" in info.value.fix
        assert info.value.transcript[-2:] == ["> FC03 @1 addr 50 x1", "< exception 2 (illegal data address)"]
        with pytest.raises(ModbusExceptionReply):
            link.read_holding(1, 99, 2)  # runs past the bank
        assert link.read_holding(1, 98, 2) == [1098, 1099]  # the last two registers


@pytest.mark.parametrize("kind", ["crc", "noreply", "exception"])
def test_wire_faults_map_to_error_types(wire, kind):
    with ModbusLink(wire.path, timeout=1.0) as link:
        wire.inject(kind)
        expected = {"crc": ProtocolError, "noreply": ReplyTimeout, "exception": DeviceRefused}[kind]
        with pytest.raises(expected) as info:
            link.read_holding(1, 0, 3)
        last = info.value.transcript[-1]
        if kind == "crc":
            assert last.startswith("< bad frame ") and "CRC or framing" in info.value.what
        elif kind == "noreply":
            assert last == "< (no reply)" and "within 1 s" in info.value.what
        else:
            assert last == "< exception 4 (slave device failure)"
        assert link.read_holding(1, 0, 3) == [1000, 1001, 1002]  # one-shot: the next request works


def test_unknown_unit_gets_no_reply_on_rtu(tmp_path):
    w = ModbusWire({1: 10}, Bank(), framing="rtu", link_path=str(tmp_path / "bus")).start()
    try:
        with ModbusLink(w.path, timeout=1.0) as link:
            with pytest.raises(ReplyTimeout, match="no reply from unit 7"):
                link.read_holding(7, 0, 1)
            assert link.read_holding(1, 0, 1) == [1000]
    finally:
        w.stop()


def test_gap_between_requests(wire):
    with ModbusLink(wire.path, timeout=1.0, gap_s=0.05) as link:
        for _ in range(4):
            link.read_holding(1, 0, 1)
    t = wire.bank.times
    assert all(b - a >= 0.05 for a, b in zip(t, t[1:]))


def test_two_threads_share_one_bus_one_request_at_a_time(wire):
    link = shared_link(wire.path, timeout=1.0)
    assert shared_link(wire.path) is link
    link.open()
    link.open()  # a second device on the same bus
    errors = []

    def poll(unit):
        try:
            for i in range(25):
                assert link.read_holding(unit, i, 3) == [unit * 1000 + i + k for k in range(3)]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=poll, args=(u,)) for u in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    link.close()
    assert link.is_open  # the other device still uses it
    link.close()
    assert not link.is_open


def test_unplug_then_replug_on_a_pty(tmp_path):
    w = ModbusWire({1: 10}, Bank(), framing="rtu", link_path=str(tmp_path / "bus")).start()
    try:
        link = ModbusLink(w.path, timeout=1.0, setting="devices.scale.port")
        link.open()
        w.unplug()
        with pytest.raises(LinkError) as info:
            link.read_holding(1, 0, 1)
        assert "lost the connection" in info.value.what and "reconnects" in info.value.fix
        with pytest.raises(LinkError, match="does not exist") as info:
            link.reopen()
        assert "devices.scale.port" in info.value.fix and "by-id" in info.value.fix
        w.replug()
        link.reopen()
        assert link.read_holding(1, 0, 1) == [1000]
        link.close()
    finally:
        w.stop()


def test_bad_urls_and_refused_connections():
    with pytest.raises(LinkError, match="cannot use Modbus port") as info:
        ModbusLink("tcp://nohost", setting="devices.scale.port")
    assert "devices.scale.port" in info.value.fix
    with pytest.raises(LinkError):
        ModbusLink("bogus://x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (f"tcp://127.0.0.1:{port}", f"socket://127.0.0.1:{port}"):
        with pytest.raises(LinkError, match="cannot connect") as info:
            ModbusLink(url, timeout=1.0).open()
        assert "simulator is running" in info.value.fix
    link = ModbusLink(f"tcp://127.0.0.1:{port}")
    with pytest.raises(LinkError, match="not open"):
        link.read_holding(1, 0, 1)


def test_count_limits(wire):
    with ModbusLink(wire.path, timeout=1.0) as link:
        with pytest.raises(ValueError):
            link.read_holding(1, 0, 0)
        with pytest.raises(ValueError):
            link.read_holding(1, 0, 126)
        with pytest.raises(ValueError):
            link.write_register(1, 0, 0x10000)


def test_register_server_alone_speaks_modbus_tcp():
    srv = RegisterServer({1: 4}, Bank(), framing="tcp")
    host, port = srv.start()
    try:
        with ModbusLink(f"tcp://{host}:{port}", timeout=1.0) as link:
            assert link.read_holding(1, 1, 3) == [1001, 1002, 1003]
    finally:
        srv.stop()


def test_rtu_framing_helpers():
    frame = bytes([1, 3, 0, 0, 0, 1])
    assert crc16(frame) == bytes([0x84, 0x0A])  # the classic 01 03 00 00 00 01 84 0A
    assert rtu_request_length(b"\x01") is None
    assert rtu_request_length(frame + crc16(frame)) == 8
    assert rtu_request_length(bytes([1, 16, 0, 0, 0, 2, 4])) == 13
    assert rtu_request_length(bytes([1, 16, 0, 0, 0, 2])) is None


def test_shared_link_refuses_different_settings(tmp_path):
    url = f"tcp://127.0.0.1:{9}"  # never opened
    first = shared_link(url, timeout=1.0, gap_s=0.02)
    assert shared_link(url) is first
    assert shared_link(url, timeout=1.0, gap_s=0.02) is first
    with pytest.raises(LinkError, match="different bus settings") as info:
        shared_link(url, timeout=1.0, gap_s=0.1)
    assert "same settings" in info.value.fix


class GarbagePeer:
    """A pty peer that answers every request with the given bytes."""

    def __init__(self):
        import os
        import tty
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.reply = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import os
        import select
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if ready:
                os.read(self.master, 4096)
                if self.reply:
                    os.write(self.master, self.reply)

    def close(self):
        import os
        self.stop.set()
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture(scope="module")
def garbage_peer():
    peer = GarbagePeer()
    link = ModbusLink(peer.path, timeout=0.05, baudrate=115200)
    link.open()
    yield peer, link
    link.close()
    peer.close()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=st.one_of(
    st.binary(min_size=1, max_size=40),
    # a well-framed reply with arbitrary content: right CRC, any byte count
    st.binary(min_size=1, max_size=20).map(lambda b: bytes([1, 3, len(b)]) + b),
    st.binary(min_size=0, max_size=6).map(lambda b: bytes([1, 0x83]) + b),
).map(lambda b: b if len(b) < 3 or b[0] != 1 else b + crc16(b)))
def test_arbitrary_reply_bytes_give_only_driver_errors(garbage_peer, reply):
    peer, link = garbage_peer
    peer.reply = reply
    try:
        regs = link.read_holding(1, 0, 2)
    except (ProtocolError, ReplyTimeout, DeviceRefused) as e:
        assert e.transcript[-2] == "> FC03 @1 addr 0 x2"
        return
    finally:
        peer.reply = b""  # a late tail is harmless: pymodbus flushes input before each request
        if not link.is_open:
            link.reopen()
    assert len(regs) == 2 and all(0 <= r <= 0xFFFF for r in regs)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


VALID_RTU = bytes([1, 3, 0, 6, 0, 5]) + crc16(bytes([1, 3, 0, 6, 0, 5]))
VALID_TCP = bytes([0, 7, 0, 0, 0, 6, 1, 3, 0, 6, 0, 5])


@settings(max_examples=300, deadline=None)
@given(noise=st.binary(max_size=300), framing=st.sampled_from(["rtu", "tcp"]))
def test_noise_then_silence_never_shifts_the_next_frame(noise, framing):
    from drivers.sim.modbus_wire import RequestFramer

    clock = Clock()
    framer = RequestFramer(framing, silence_s=0.02, clock=clock)
    framer.feed(noise)  # whatever it makes of noise, it must not raise
    clock.t = 0.021  # just past the silence: the noise is dropped
    valid = VALID_RTU if framing == "rtu" else VALID_TCP
    assert framer.feed(valid) == [valid]


def test_rtu_silence_boundary():
    from drivers.sim.modbus_wire import RequestFramer

    clock = Clock()
    framer = RequestFramer("rtu", silence_s=0.02, clock=clock)
    assert framer.feed(VALID_RTU[:3]) == []
    clock.t = 0.02  # exactly the silence: still the same frame
    assert framer.feed(VALID_RTU[3:]) == [VALID_RTU]
    assert framer.feed(b"\x01") == []
    clock.t = 0.0401  # past it: the stray byte is gone
    assert framer.feed(VALID_RTU) == [VALID_RTU]


def test_tcp_framer_drops_a_stream_out_of_step():
    from drivers.sim.modbus_wire import RequestFramer

    framer = RequestFramer("tcp")
    assert framer.feed(b"\x00\x01\x00\x05") == []  # protocol id 5: not Modbus
    assert framer.feed(VALID_TCP + VALID_TCP[:5]) == [VALID_TCP]
    assert framer.feed(VALID_TCP[5:]) == [VALID_TCP]


@pytest.mark.parametrize("framing", ["rtu", "tcp"])
def test_unsupported_function_is_exception_1(tmp_path, framing):
    import socket as socketlib
    w = ModbusWire({1: 10}, Bank(), framing=framing, tcp=("127.0.0.1", 0)).start()
    try:
        host, port = w.path.split("://")[1].rsplit(":", 1)
        with socketlib.create_connection((host, int(port)), timeout=2) as s:
            if framing == "rtu":
                req = bytes([1, 17]) + crc16(bytes([1, 17]))  # report slave id
                s.sendall(req)
                want = bytes([1, 0x91, 1])
                assert s.recv(16) == want + crc16(want)
            else:
                s.sendall(bytes([0, 9, 0, 0, 0, 2, 1, 17]))
                assert s.recv(16) == bytes([0, 9, 0, 0, 0, 3, 1, 0x91, 1])
        with ModbusLink(w.path, timeout=1.0) as link:  # and the device still answers
            assert link.read_holding(1, 0, 1) == [1000]
    finally:
        w.stop()


def test_tcp_link_survives_many_timeouts_without_a_reopen():
    # pymodbus closes a TCP client after retries+3 requests without a reply;
    # the link lets it reconnect by itself once the device answers again.
    w = ModbusWire({1: 10}, Bank(), framing="tcp", tcp=("127.0.0.1", 0)).start()
    try:
        with ModbusLink(w.path, timeout=0.5) as link:
            w.inject("timeout", 60)
            for _ in range(5):  # pymodbus closes the socket on the 5th
                with pytest.raises(ReplyTimeout):
                    link.read_holding(1, 0, 1)
            w.clear_faults()
            assert link.read_holding(1, 0, 1) == [1000]
    finally:
        w.stop()
