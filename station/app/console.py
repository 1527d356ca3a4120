"""Everything a person reads: operator messages and the verified-records report."""

from __future__ import annotations

import sys
from datetime import datetime

from rich.console import Console

from station.records.carat import format_carats, format_raw_carats
from station.central.verify import Checked, Report

# soft_wrap: a message is one line in a pipe or the journal, whatever the width.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
# A pipe has no width; rich would assume 80 columns and squeeze a table.
_table_out = out if out.is_terminal else Console(highlight=False, width=160)

_STYLE = {"ok": "bold green", "info": "", "warn": "yellow", "fault": "bold red", "mqtt": "cyan"}


def say(level: str, message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    out.print(f"[dim]{stamp}[/] [{_STYLE.get(level, '')}]{_escape(message)}[/]" if _STYLE.get(level) else
              f"[dim]{stamp}[/] {_escape(message)}")
    sys.stdout.flush()


def print_table(table) -> None:
    """A rich table, full width even in a pipe or the journal."""
    _table_out.print(table)


def show_event(e) -> None:
    """Event-bus subscriber: every station event the operator should read."""
    say("mqtt" if type(e).__name__ == "Delivery" else e.level, e.message)


def error_line(message: str) -> None:
    err.print(f"[bold red]station: error:[/] {_escape(message)}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


_COLUMNS = [("seq", 7, ">"), ("time (UTC)", 24, "<"), ("station", 14, "<"), ("operator", 14, "<"), ("lot", 14, "<"),
            ("mass µg", 10, ">"), ("carat", 6, ">"), ("raw ct", 7, ">"), ("screening", 9, "<"), ("flags", 20, "<"),
            ("check", 0, "<")]


def _row(cells: list[str]) -> str:
    return "  ".join(f"{c:{align}{width}}" if width else c for c, (_, width, align) in zip(cells, _COLUMNS)).rstrip()


def table_header() -> None:
    """The per-record table is printed as records arrive (plain text: a million rows
    must not be held in memory or laid out by rich)."""
    sys.stdout.write(_row([name for name, _, _ in _COLUMNS]) + "\n")
    sys.stdout.flush()


def table_row(rec: Checked) -> None:
    p = rec.payload or {}
    readings = p.get("readings")
    reading = readings[0] if isinstance(readings, list) and readings else {}
    mass = reading.get("value") if isinstance(reading, dict) else None
    is_mass = isinstance(mass, int) and not isinstance(mass, bool) and mass >= 0
    flags = p.get("flags") if isinstance(p.get("flags"), list) else []
    flags = [str(f) for f in flags] + (["SIMULATED"] if p.get("simulated") is True else [])
    if rec.problems:
        check = "BAD: " + "; ".join(rec.problems)
    elif rec.duplicate:
        check = "ok (duplicate)"
    elif rec.notes:
        check = "CHAIN: " + "; ".join(rec.notes)
    else:
        check = "ok"
    seq = p.get("seq")
    sys.stdout.write(_row([
        str(seq) if isinstance(seq, int) else "?", str(p.get("time", "")), str(p.get("station_id", rec.source)),
        str(p.get("operator", "")), str(p.get("lot", "")), str(mass) if is_mass else "",
        format_carats(mass) if is_mass else "", format_raw_carats(mass) if is_mass else "", _screening(p),
        ", ".join(flags), check,
    ]) + "\n")


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


def print_report(report: Report) -> None:
    """The summary and only the problems: an archive's good records are one number."""
    for source, problems in report.bad_records:
        out.print(f"[bold red]BAD[/] {_escape(source)}: {_escape('; '.join(problems))}")
    for station, first, last in report.gaps:
        out.print(f"[bold red]GAP[/] {station}: seq {first}" + (f"–{last}" if last != first else "") + " missing")
    for problem in report.problems:
        out.print(f"[bold red]PROBLEM[/] {_escape(problem)}")
    if report.unlisted:
        out.print(f"[bold red]... and {report.unlisted} more problem(s) not listed[/]")
    verdict = "[bold green]ALL VERIFIED[/]" if report.ok else "[bold red]VERIFICATION FAILED[/]"
    extra = "".join([f", {report.duplicates} duplicate(s)" if report.duplicates else "",
                     f" ({report.simulated} of the good simulated)" if report.simulated else ""])
    out.print(f"{verdict}: {report.good} good, {report.bad} bad, {len(report.gaps)} gap(s){extra}")
