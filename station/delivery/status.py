"""The retained status message on ``stations/<id>/status`` (JSON).

Built from two sources: the station's own state (measuring, device fault,
refusing and why; per-device state; the session counter), merged in through
``Publisher.set_status``, and the outbox counts, which the publisher reads
itself whenever they may have changed, so the depth never goes stale. The last
will replaces it with ``{"state": "offline"}``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from station.delivery.outbox_states import Counts

OFFLINE = {"state": "offline"}
_SHOWN_REJECTIONS = 5


def utc_stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rejection_alarm(rejections: list[tuple[int, str, str]]) -> str:
    seq, _, reason = rejections[-1]
    return (f"{len(rejections)} record(s) rejected by the central system, kept in the outbox "
            f"(last: seq {seq}: {reason})")


def build(*, version: str, station: dict, counts: Counts, rejections: list[tuple[int, str, str]],
          extra: dict, now: float) -> dict:
    """``station``: fields from set_status (state, reason, devices, alarms, session ...);
    ``extra``: the publisher's own (last replay)."""
    alarms = list(station.get("alarms", []))
    if rejections:
        alarms.append(rejection_alarm(rejections))
    age = None if counts.oldest_unacked_at is None else round(max(0.0, now - counts.oldest_unacked_at), 3)
    out = {
        "state": "online",  # until the station says measuring, device fault or refusing
        **station,
        "version": version,
        "time": utc_stamp(now),
        "outbox": {"stored": counts.stored, "published": counts.published, "acked": counts.acked,
                   "rejected": counts.rejected},
        "outbox_depth": counts.unacked,  # not yet accepted by the central system
        "oldest_unacked_age_s": age,
        "last_seq": counts.last_seq,
        "alarms": alarms,
        **extra,
    }
    if rejections:
        out["rejected"] = [{"seq": s, "record_id": r, "reason": why} for s, r, why in rejections[-_SHOWN_REJECTIONS:]]
    return out


def content(status: dict) -> dict:
    """The fields whose change must be published now (the heartbeat's time and
    the age of the oldest unacked record change by themselves)."""
    return {k: v for k, v in status.items() if k not in ("time", "oldest_unacked_age_s")}
