"""What the MQTT link tells its owner when the connection fails, and when it
tries again. Each problem is (what, fix); no paho here (see mqtt.py)."""

from __future__ import annotations

import random

SESSION_TAKEN_OVER = 0x8E  # 142
# mosquitto 2.0.11 closes a taken-over connection without sending reason 142, so
# the two clients knock each other off right after every connect. This many
# drops in a row, each this soon after the CONNACK, are told as a likely twin.
FLAP_DROPS, FLAP_SECONDS = 3, 2.0

Problem = tuple[str, str]
_TWIN_FIX = "stop the other process using this ID, or give each station its own mqtt.client_id"


def backoff_delay(attempt: int, low: float, cap: float, rng: random.Random) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): exponential from
    ``low``, capped at ``cap``, then scaled by a factor in [0.5, 1) so that
    stations that lost the broker together do not come back together."""
    base = min(cap, low * (2 ** min(attempt, 32)))
    return base * (0.5 + 0.5 * rng.random())


def refused(where: str, code: int, name: str) -> Problem:
    if code in (0x86, 0x87):  # bad user name or password / not authorized
        return (f"the broker {where} refused the connection: {name}",
                "check mqtt.password_file and the certificate's CN against the broker's users and ACL")
    return f"the broker {where} refused the connection: {name}", "see the broker's log"


def unreachable(where: str) -> Problem:
    return f"cannot reach the MQTT broker at {where}", "check mqtt.host and mqtt.port, and the network"


def taken_over(where: str, client_id: str) -> Problem:
    return (f"the broker {where} dropped this connection because another client connected with the same "
            f"client ID {client_id!r} (session taken over)", _TWIN_FIX)


def flapping(where: str, client_id: str) -> Problem:
    return (f"the broker {where} closed this connection right after accepting it, {FLAP_DROPS} or more times "
            f"in a row: most likely another client uses the same client ID {client_id!r} and the two take the "
            "session over from each other", _TWIN_FIX + "; if none does, see the broker's log")


def lost(where: str, name: str) -> Problem:
    return f"lost the connection to {where}: {name}", "check the network and the broker"


def publish_refused(topic: str, seq: int, code: int, reason: str) -> str:
    """One line for a failed PUBACK (MQTT 5 reason codes 0x87, 0x97, 0x95, ...)."""
    if code == 0x87:
        return f"broker ACL denies {topic} (reason {code} {reason}); fix: grant write to this station"
    if code == 0x97:
        return f"broker quota exceeded for {topic}; fix: raise the broker's quota"
    if code == 0x95:
        return "record larger than the broker accepts; fix: raise message_size_limit on the broker"
    return f"broker refused record seq {seq} (reason {code} {reason}); fix: see the broker log"
