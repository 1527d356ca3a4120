"""A consumer's side of the link: one subscription in a persistent session.

It uses paho only through ``MqttLink.client`` (callbacks and packet fields),
so station/delivery/mqtt.py stays the one module that imports paho.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from station.delivery.mqtt import DEFAULT_SESSION_EXPIRY, MessageProperties, MqttLink, _reason
from station.delivery.tls import ClientTls, Credentials
from station.errors import PublishError


class MqttSubscriber:
    """A consumer with a persistent session: a broker restart (with persistence)
    keeps the subscription and the QoS 1 messages queued meanwhile.

    ``on_message(payload, properties)`` runs on the network thread; paho sends the
    PUBACK after it returns, so a crash inside it means redelivery, not loss.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        client_id: str,
        on_message: Callable[[bytes, MessageProperties], None],
        *,
        qos: int = 1,
        session_expiry: int = DEFAULT_SESSION_EXPIRY,
        tls: ClientTls | None = None,
        credentials: Credentials | None = None,
        manual_ack: bool = False,
        on_problem: Callable[[str, str], None] | None = None,
    ) -> None:
        self.topic, self.qos = topic, qos
        self._on_message = on_message
        self._subscribed = threading.Event()
        self._link = MqttLink(host, port, client_id, session_expiry=session_expiry, tls=tls, credentials=credentials,
                              on_connect=self._connected, on_problem=on_problem)
        c = self._link.client
        if manual_ack:
            # PUBACK only when the caller says the message is safe (e.g. committed to a
            # database): a crash before that means redelivery from the session, not loss.
            c.manual_ack_set(True)
        c.on_message = self._handle_message
        c.on_subscribe = self._handle_subscribe

    @property
    def connected(self) -> bool:
        return self._link.connected

    def start(self, timeout: float = 10.0) -> None:
        """Blocks until the subscription is in place, so nothing published after
        start() returns can be missed."""
        self._link.start()
        if not self._subscribed.wait(timeout):
            self._link.stop()
            raise PublishError(
                f"could not subscribe to {self.topic} on {self._link.host}:{self._link.port} "
                f"within {timeout:.0f} s ({self._link.last_error or 'no answer'})",
                "check that the broker runs and its ACL grants read on that topic",
            )

    def stop(self) -> None:
        self._link.stop()

    @property
    def last_error(self) -> str | None:
        return self._link.last_error

    def ack(self, mid: int) -> None:
        """With ``manual_ack``: send the PUBACK for a message received earlier."""
        self._link.client.ack(mid, self.qos)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, on_ack=None) -> int:
        """Publish on the same connection (a consumer's acks and replay requests)."""
        return self._link.publish(topic, payload, qos=qos, on_ack=on_ack)

    def _connected(self, session_present: bool) -> None:
        if session_present:
            self._subscribed.set()  # the broker kept our subscription
        else:
            self._link.subscribe(self.topic, self.qos)

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, properties: Any) -> None:
        codes = [_reason(rc) for rc in rcs]
        bad = [name for code, name in codes if code >= 0x80]
        if bad:
            self._link.last_error = f"subscription to {self.topic} refused: {', '.join(bad)}"
        else:
            self._subscribed.set()

    def _handle_message(self, client: Any, userdata: Any, msg: Any) -> None:
        props = msg.properties
        ups = dict(getattr(props, "UserProperty", []) or []) if props is not None else {}
        ctype = getattr(props, "ContentType", None) if props is not None else None
        self._on_message(
            bytes(msg.payload),
            MessageProperties(msg.topic, msg.qos, bool(msg.retain), bool(msg.dup), ctype, ups, msg.mid),
        )
