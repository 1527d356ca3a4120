"""MQTT v5 in the station's own terms. The only module that imports paho.

Facts this relies on (checked against paho 2.2 / mosquitto 2.0):
- a PUBACK may carry a failure reason (135 Not authorized for an ACL denial)
  while paho still reports the message as published, so every ack is checked;
- Nagle's algorithm turns each ack round trip into 40-90 ms, hence TCP_NODELAY;
- disconnect() must come before loop_stop(), the reverse costs about 1 s;
- clean_start=False plus a Session Expiry Interval keeps subscriptions and
  queued QoS 1 messages across a broker restart (with broker persistence);
- paho refuses to change max_inflight_messages once a connection is open (it
  raises RuntimeError, on its network thread when done from on_connect, which
  kills that thread silently). The broker's Receive Maximum is only known from
  the CONNACK, so the link keeps paho's limit at the configured window and
  exposes ``window`` = min(configured, Receive Maximum) for callers to honour;
- paho's own reconnect delay doubles without jitter: a fleet that lost its
  broker at once would reconnect in lockstep. The link sets each next delay
  itself, from a capped exponential with jitter.
"""

from __future__ import annotations

import functools
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from station.delivery import link_problems as problems
from station.delivery.link_problems import backoff_delay
from station.delivery.tls import ClientTls, Credentials, explain
from station.errors import PublishError

DEFAULT_SESSION_EXPIRY = 7 * 24 * 3600  # a week: a station may be offline over a weekend
RECEIVE_MAXIMUM_DEFAULT = 65535  # MQTT 5 §3.2.2.3.3: absent from the CONNACK means 65535


@dataclass(frozen=True)
class Ack:
    """The broker's answer to one QoS 1 publish."""

    mid: int
    reason_code: int
    reason: str

    @property
    def ok(self) -> bool:
        return self.reason_code < 0x80


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


@dataclass(frozen=True)
class MessageProperties:
    """What a consumer gets besides the payload."""

    topic: str
    qos: int
    retain: bool
    dup: bool
    content_type: str | None = None
    user_properties: dict[str, str] = field(default_factory=dict)
    mid: int = 0  # for MqttSubscriber.ack() when the subscriber acknowledges by hand


AckCallback = Callable[[Ack], None]


_NAMES: dict[tuple[int, int], str] = {}  # getName() scans paho's table: 1.5 us a PUBACK


def _reason(rc: Any) -> tuple[int, str]:
    if isinstance(rc, ReasonCode):
        key = (rc.packetType, rc.value)
        return rc.value, _NAMES.get(key) or _NAMES.setdefault(key, rc.getName())
    return int(rc), str(rc)


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode("utf-8")
    return len(b).to_bytes(2, "big") + b


@functools.lru_cache(maxsize=16)
def _content_type(content_type: str) -> bytes:
    return b"\x03" + _utf8(content_type)  # 3 = Content Type


class _PublishProperties(Properties):
    """PUBLISH properties packed once, by us.

    paho's Properties scans its whole name table on every attribute set and on
    every pack(), and rebuilds its tables in __init__: about 100 us per message,
    a third of the publisher's CPU. paho only calls pack() (and str() when
    logging) on PUBLISH properties, which is all this provides.
    """

    def __init__(self, content_type: str | None, user_properties: list[tuple[str, str]]) -> None:
        buf = b"" if content_type is None else _content_type(content_type)
        for k, v in user_properties:
            buf += b"\x26" + _utf8(k) + _utf8(v)  # 38 = User Property
        d = self.__dict__  # paho's __setattr__ checks names against its table: skipped
        d["packetType"] = PacketTypes.PUBLISH
        d["_packed"] = _vbi(len(buf)) + buf
        d["_shown"] = (content_type, user_properties)  # formatted only when paho logs it

    def pack(self) -> bytes:
        return self._packed  # type: ignore[no-any-return]

    def __str__(self) -> str:
        content_type, user_properties = self._shown
        return f"[ContentType: {content_type!r}, UserProperty: {user_properties!r}]"

    __repr__ = __str__


def _ignore(ack: Ack) -> None:
    pass


def _set_nodelay(client: paho.Client, userdata: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # websocket wrappers have no setsockopt; not fatal
        pass


class MqttLink:
    """One v5 connection with a persistent session that reconnects by itself.

    Callbacks run on paho's network thread: keep them short and never block.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        keepalive: int = 30,
        session_expiry: int = DEFAULT_SESSION_EXPIRY,
        will: Will | None = None,
        max_inflight: int = 20,
        reconnect_delay: tuple[float, float] = (0.2, 10.0),
        tls: ClientTls | None = None,
        credentials: Credentials | None = None,
        rng: random.Random | None = None,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_problem: Callable[[str, str], None] | None = None,
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self._on_problem_cb = on_problem
        self.tls = tls
        self.configured_window = max(1, max_inflight)
        self.receive_maximum = RECEIVE_MAXIMUM_DEFAULT
        self._reconnect_delay = reconnect_delay
        self._attempt = 0
        self._rng = rng or random.Random()
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._lock = threading.Lock()
        self._waiting: dict[int, AckCallback] = {}
        # Acks that beat publish() back to us (paho hands the packet to its network
        # thread before returning the mid); only mids of live messages land here.
        self._early: dict[int, Ack] = {}
        self._connected = threading.Event()
        self._refused = False  # a CONNACK refusal was told; its disconnect is not news
        self._connected_at = 0.0
        self._short_drops = 0
        self._started = False
        self.last_error: str | None = None

        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self._client = c
        c.on_socket_open = _set_nodelay
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_publish = self._handle_publish
        c.on_connect_fail = self._handle_connect_fail
        # Only here, before any connect: paho raises once a connection is open.
        c.max_inflight_messages_set(self.configured_window)
        c.max_queued_messages_set(0)
        # Replaced on every failure by _next_delay.
        c.reconnect_delay_set(reconnect_delay[0], reconnect_delay[0])  # type: ignore[arg-type]
        if tls is not None:
            c.tls_set_context(tls.context)
        if credentials is not None:
            c.username_pw_set(credentials.username, credentials.password)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    @property
    def client(self) -> paho.Client:
        """Escape hatch for MqttSubscriber; other modules must not use paho directly."""
        return self._client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def window(self) -> int:
        """QoS 1 messages the caller may have in flight: the configured window,
        lowered to the broker's Receive Maximum from the last CONNACK."""
        return min(self.configured_window, self.receive_maximum)

    @property
    def queues_beyond_window(self) -> bool:
        """paho's own in-flight limit is ``window``, so messages beyond it wait in paho's
        queue and go out as PUBACKs free slots (not so below a lower Receive Maximum)."""
        return self.configured_window <= self.receive_maximum

    def _next_delay(self) -> None:
        """Called on every failure, before paho waits: set that wait (min = max,
        so paho waits exactly that), growing with each failure since the last
        successful connect."""
        d = backoff_delay(self._attempt, self._reconnect_delay[0], self._reconnect_delay[1], self._rng)
        self._attempt += 1
        self._client.reconnect_delay_set(d, d)  # type: ignore[arg-type]  # floats work

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Returns at once; a broker that is down is retried in the background."""
        if self._started:
            return
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        # clean_start False on EVERY connect, or the first one wipes a stored session.
        self._client.connect_async(
            self.host, self.port, keepalive=self.keepalive, clean_start=False, properties=props
        )
        self._client.loop_start()
        self._started = True

    def stop(self, *, send_will: bool = False) -> None:
        """Clean shutdown. With ``send_will`` the broker publishes the last will anyway
        (MQTT 5 reason 0x04), so a stopped station reads as offline."""
        if not self._started:
            return
        self._started = False
        if send_will and self.connected:
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        else:
            self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
        user_properties: Iterable[tuple[str, str]] = (),
        on_ack: AckCallback | None = None,
    ) -> int:
        """Queue one message; ``on_ack`` gets the broker's verdict (QoS 1).

        While disconnected paho keeps the message in RAM only and sends it after
        reconnecting; callers that must not lose data keep their own durable copy.
        """
        props = _PublishProperties(content_type, list(user_properties))
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        except ValueError as exc:
            raise PublishError(f"cannot publish to {topic!r}: {exc}", "use a valid topic and payload") from exc
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            raise PublishError(
                f"paho refused the publish to {topic}: {paho.error_string(info.rc)}",
                "lower the in-flight window or wait for the connection",
            )
        if qos > 0:
            # Every QoS 1 message paho holds gets a callback, so an entry in
            # _early is never stale when its mid comes round again.
            with self._lock:
                early = self._early.pop(info.mid, None)
                if early is None:
                    self._waiting[info.mid] = on_ack or _ignore
            if early is not None and on_ack is not None:
                on_ack(early)
        return info.mid

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._client.subscribe(topic, qos=qos)

    # -- paho callbacks (network thread) ------------------------------------------

    def _handle_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any) -> None:
        code, name = _reason(rc)
        if code >= 0x80:
            self._next_delay()
            self._refused = True
            self._problem(*problems.refused(self._where, code, name))
            return
        limit = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        # paho does not honour the broker's Receive Maximum and cannot be told now
        # (see the module doc); callers keep within ``window``.
        self.receive_maximum = int(limit) if limit else RECEIVE_MAXIMUM_DEFAULT
        self._attempt = 0
        if self.tls is not None:
            self.tls.clear_failure()
        self._connected_at = time.monotonic()
        self.last_error = None
        self._connected.set()
        if self._on_connect_cb:
            self._on_connect_cb(bool(getattr(flags, "session_present", False)))

    def _tls_problem(self) -> tuple[str, str] | None:
        if self.tls is None:
            return None
        found = explain(self.tls.last_failure(), self.host, self.port, self.tls)
        self.tls.clear_failure()
        return found

    def _handle_connect_fail(self, client: Any, userdata: Any) -> None:
        self._next_delay()
        self._short_drops = 0  # a broker that was down (restarting), not a twin taking over
        self._problem(*(self._tls_problem() or problems.unreachable(self._where)))

    def _problem(self, what: str, fix: str) -> None:
        """Record a connection problem; tell the owner once per distinct problem,
        not on every reconnect attempt."""
        message = f"{what}; fix: {fix}"
        changed = message != self.last_error
        self.last_error = message
        if changed and self._on_problem_cb:
            self._on_problem_cb(what, fix)

    def _handle_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        code, name = _reason(rc)
        refused, self._refused = self._refused, False
        if code != 0 and not refused:
            self._next_delay()
            short = was and time.monotonic() - self._connected_at < problems.FLAP_SECONDS
            self._short_drops = self._short_drops + 1 if short else 0
            if code == problems.SESSION_TAKEN_OVER:
                self._problem(*problems.taken_over(self._where, self.client_id))
            elif self._short_drops >= problems.FLAP_DROPS:
                self._problem(*problems.flapping(self._where, self.client_id))
            else:
                self._problem(*(self._tls_problem() or problems.lost(self._where, name)))
        if was and self._on_disconnect_cb:
            self._on_disconnect_cb(name)

    def _handle_publish(self, client: Any, userdata: Any, mid: int, rc: Any, properties: Any) -> None:
        code, name = _reason(rc)
        ack = Ack(mid, code, name)
        with self._lock:
            cb = self._waiting.pop(mid, None)
            if cb is None:
                self._early[mid] = ack
        if cb is not None:
            cb(ack)


def __getattr__(name: str) -> Any:
    """MqttSubscriber lives in subscriber.py (it builds on MqttLink) and stays
    importable from here, where consumers have always found it."""
    if name == "MqttSubscriber":
        from station.delivery.subscriber import MqttSubscriber

        return MqttSubscriber
    raise AttributeError(name)

__all__ = ["Ack", "MessageProperties", "MqttLink", "MqttSubscriber", "Will", "backoff_delay"]
