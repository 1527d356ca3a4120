"""Everything a person reads: operator messages and the verified-stones table."""

from __future__ import annotations

import sys
from datetime import datetime

from rich.console import Console
from rich.table import Table

from station.records.carat import format_carats, format_raw_carats
from station.central.verify import Report

# soft_wrap: a message is one line in a pipe or the journal, whatever the width.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
# A pipe has no width; rich would assume 80 columns and squeeze the table.
_table_out = out if out.is_terminal else Console(highlight=False, width=160)

_STYLE = {"ok": "bold green", "info": "", "warn": "yellow", "fault": "bold red", "mqtt": "cyan"}


def say(level: str, message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    out.print(f"[dim]{stamp}[/] [{_STYLE.get(level, '')}]{_escape(message)}[/]" if _STYLE.get(level) else
              f"[dim]{stamp}[/] {_escape(message)}")
    sys.stdout.flush()


def show_event(e) -> None:
    """Event-bus subscriber: every station event the operator should read."""
    say("mqtt" if type(e).__name__ == "Delivery" else e.level, e.message)


def error_line(message: str) -> None:
    err.print(f"[bold red]station: error:[/] {_escape(message)}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def stones_table(report: Report, title: str = "Verified records") -> Table:
    table = Table(title=title, title_justify="left")
    for col, justify in [("seq", "right"), ("time (UTC)", "left"), ("station", "left"), ("operator", "left"),
                         ("lot", "left"), ("mass µg", "right"), ("carat", "right"), ("raw ct", "right"),
                         ("screening", "left"), ("flags", "left"), ("check", "left")]:
        table.add_column(col, justify=justify)
    for rec in report.records:
        p = rec.payload or {}
        reading = (p.get("readings") or [{}])[0] if isinstance(p.get("readings"), list) else {}
        mass = reading.get("value") if isinstance(reading, dict) else None
        is_mass = isinstance(mass, int) and mass >= 0
        flags = list(p.get("flags") or []) + (["SIMULATED"] if p.get("simulated") else [])
        table.add_row(
            str(rec.seq if rec.seq is not None else "?"),
            str(p.get("time", "")),
            str(p.get("station_id", rec.source)),
            str(p.get("operator", "")),
            str(p.get("lot", "")),
            str(mass) if is_mass else "",
            format_carats(mass) if is_mass else "",
            format_raw_carats(mass) if is_mass else "",
            _escape(_screening(p)),
            _escape(", ".join(flags)),
            "[green]ok[/]" if rec.ok else f"[red]BAD: {_escape('; '.join(rec.problems))}[/]",
        )
    return table


def _screening(payload: dict) -> str:
    """The spectrometer's verdict (details of a spectrum-processed reading), or "" without one."""
    readings = payload.get("readings")
    for r in readings if isinstance(readings, list) else []:
        details = r.get("details") if isinstance(r, dict) else None
        screening = details.get("screening") if isinstance(details, dict) else None
        verdict = screening.get("verdict") if isinstance(screening, dict) else None
        if isinstance(verdict, str):
            return verdict
    return ""


def print_report(report: Report, title: str = "Verified records") -> None:
    _table_out.print(stones_table(report, title))
    for station, first, last in report.gaps:
        out.print(f"[bold red]GAP[/] {station}: seq {first}" + (f"–{last}" if last != first else "") + " missing")
    for problem in report.problems:
        out.print(f"[bold red]PROBLEM[/] {_escape(problem)}")
    good = sum(1 for r in report.records if r.ok)
    bad = len(report.records) - good
    verdict = "[bold green]ALL VERIFIED[/]" if report.ok else "[bold red]VERIFICATION FAILED[/]"
    out.print(f"{verdict}: {good} good, {bad} bad, {len(report.gaps)} gap(s)")
