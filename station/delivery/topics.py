"""The MQTT topics, in one place for the station, the consumer and the verifier (docs/MQTT.md)."""

from __future__ import annotations


def records_topic(station_id: str) -> str:
    return f"stations/{station_id}/records"


def status_topic(station_id: str) -> str:
    return f"stations/{station_id}/status"


def acks_topic(station_id: str) -> str:
    return f"stations/{station_id}/acks"


def cmd_topic(station_id: str) -> str:
    return f"stations/{station_id}/cmd"
