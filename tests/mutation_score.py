"""Score a finished `mutmut run` per file, leaving out mutants that only change message text.

Run by `make mutation` after mutmut (not collected by pytest: no test_ prefix).
mutmut 3 writes each mutated file to mutants/<path> (every function once as
``x_<name>__mutmut_orig`` and once per mutant as ``x_<name>__mutmut_<n>``) and
the verdicts to mutants/<path>.meta (pytest's exit code per mutant).

A mutant is "message text only" when the only tokens it changes are string
literals that sit in an error message: inside a ``raise`` statement, in a call
whose name ends in Error/Refused/Refusal/Aborted or is ``_bad``, in a typed
event built as ``ev.<Event>(...)`` (its operator text), or in an
f-string; and the change is to another text or to ``None``. Such a mutant turns
"no reply within 1 s" into "XXno reply within 1 sXX"; tests that pinned every
message would be brittle, so these are not counted. Other string literals (command words, units, state and event names)
are code and count.

A mutant is "SQL case only" when the only tokens it changes are string
literals in an ``execute``/``executemany``/``executescript`` call, upper- or
lower-cased, with their quoted SQL literals (``'rejected'``) unchanged: SQL
keywords and unquoted names are case-insensitive, so these are equivalent
mutants (``"COMMIT"`` -> ``"commit"``) and are not counted either.

    python tests/mutation_score.py [--survivors] [--min PERCENT]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import json
import re
import sys
import textwrap
import tokenize
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
# pytest exit codes as mutmut 3 reads them (mutmut.stats.status_by_exit_code).
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          35: "suspicious", 36: "timeout", 37: "caught by type check", -24: "timeout", 24: "timeout",
          152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault", None: "not checked"}
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
# Parts of a file scored on their own: the MT-SICS parser apart from the driver
# class; the consumer's worker apart from its command line, which only the
# subprocess tests run; the SQL both databases share apart from the PostgreSQL
# connection, which needs a server. A name is a function's or a whole class's.
PARTS = {
    "drivers/mtsics.py": {"parser": ("_bad", "to_micrograms", "parse_line")},
    "station/central/consume.py": {"worker": ("Consumer",)},
    "station/central/store.py": {"SQL": ("Store", "SqliteStore", "open_store", "db_errors")},
}
_MESSAGE_CALL = re.compile(r"(Error|Refused|Refusal|Aborted)$|^_bad$")
_SQL_CALLS = {"execute", "executemany", "executescript"}
_SQL_LITERAL = re.compile(r"'[^']*'")
LEFT_OUT = ("message text only", "SQL case only")


def _functions(source: str) -> dict[str, ast.AST]:
    tree = ast.parse(source)
    return {node.name: node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _message_lines(fn: ast.AST) -> set[int]:
    """Line numbers (relative to the def) whose string literals are message text."""
    lines: set[int] = set()
    for node in ast.walk(fn):
        spans = []
        if isinstance(node, ast.Raise):
            spans.append(node)
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            # ev.StoneRemoved("Pan empty. ..."): a typed event's text is what a person reads
            on_events = isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "ev"
            if _MESSAGE_CALL.search(name) or on_events:
                spans.append(node)
        elif isinstance(node, ast.JoinedStr):
            spans.append(node)
        for span in spans:
            lines.update(range(span.lineno - fn.lineno, span.end_lineno - fn.lineno + 1))
    return lines


def _tokens(code: str) -> list[tokenize.TokenInfo]:
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    return [t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type not in skip]


def _segment(lines: list[str], fn: ast.AST) -> str:
    # ast.get_source_segment splits the whole file on every call: quadratic on
    # mutmut's files, which hold a copy of each function per mutant (megabytes).
    return "".join(lines[fn.lineno - 1:fn.end_lineno])


def message_only(lines: list[str], orig: ast.AST, mutant: ast.AST) -> bool:
    a = textwrap.dedent(_segment(lines, orig))
    b = textwrap.dedent(_segment(lines, mutant))
    ta, tb = _tokens(a), _tokens(b)
    if len(ta) != len(tb):
        return False
    allowed = _message_lines(orig)
    changed = [(x, y) for x, y in zip(ta[2:], tb[2:]) if x.string != y.string]  # past "def <name>"
    # The message replaced by another text, or by None.
    return bool(changed) and all(
        x.type == tokenize.STRING and (y.type == tokenize.STRING or y.string == "None")
        and (x.start[0] - 1) in allowed
        for x, y in changed
    )


def _sql_lines(fn: ast.AST) -> set[int]:
    """Line numbers (relative to the def) inside a call that runs SQL."""
    lines: set[int] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _SQL_CALLS:
            lines.update(range(node.lineno - fn.lineno, node.end_lineno - fn.lineno + 1))
    return lines


def sql_case_only(lines: list[str], orig: ast.AST, mutant: ast.AST) -> bool:
    """SQL text upper- or lower-cased, its quoted literals ('rejected') unchanged:
    keywords and unquoted names are case-insensitive in SQLite and PostgreSQL."""
    ta, tb = _tokens(textwrap.dedent(_segment(lines, orig))), _tokens(textwrap.dedent(_segment(lines, mutant)))
    if len(ta) != len(tb):
        return False
    allowed = _sql_lines(orig)
    changed = [(x, y) for x, y in zip(ta[2:], tb[2:]) if x.string != y.string]
    return bool(changed) and all(
        x.type == y.type == tokenize.STRING and x.string.lower() == y.string.lower()
        and _SQL_LITERAL.findall(x.string) == _SQL_LITERAL.findall(y.string)
        and (x.start[0] - 1) in allowed
        for x, y in changed
    )


def diff(lines: list[str], orig: ast.AST, mutant: ast.AST) -> str:
    a = _segment(lines, orig).splitlines()[1:]
    b = _segment(lines, mutant).splitlines()[1:]
    return "\n".join(line for line in difflib.unified_diff(a, b, lineterm="", n=0) if line[:1] in "+-"
                     and not line.startswith(("+++", "---")))


def score(path: str) -> list[tuple[str, Counter, list[tuple[str, str]]]]:
    mutated = MUTANTS / path
    meta = json.loads((MUTANTS / f"{path}.meta").read_text())["exit_code_by_key"]
    source = mutated.read_text()
    fns = _functions(source)
    lines = source.splitlines(keepends=True)
    parts = PARTS.get(path, {})
    results: dict[str, tuple[Counter, list]] = {}
    for key, code in sorted(meta.items()):
        name = key.rsplit(".", 1)[-1]
        base = name.rsplit("__mutmut_", 1)[0]
        plain = base.split("ǁ")[-1].removeprefix("x_")
        owner = base.split("ǁ")[1] if "ǁ" in base else None  # the class of a method
        part = next((p for p, names in parts.items() if plain in names or owner in names), "rest" if parts else "")
        counts, survivors = results.setdefault(part, (Counter(), []))
        status = STATUS.get(code, f"exit {code}")
        orig, mutant = fns.get(f"{base}__mutmut_orig"), fns.get(name)
        if orig is not None and mutant is not None and message_only(lines, orig, mutant):
            counts["message text only"] += 1
            continue
        if orig is not None and mutant is not None and sql_case_only(lines, orig, mutant):
            counts["SQL case only"] += 1
            continue
        counts[status] += 1
        if status not in DETECTED:
            survivors.append((name, diff(lines, orig, mutant) if orig and mutant else "?"))
    return [(part, c, s) for part, (c, s) in results.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survivors", action="store_true", help="print each surviving mutant's change")
    ap.add_argument("--min", type=float, default=None, help="exit 1 if a file scores below this percentage")
    args = ap.parse_args()
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    low = False
    print(f"{'file':38} {'killed':>7} {'survived':>8} {'score':>6}   (left out: message text only; SQL case only)")
    for path in cfg["only_mutate"]:
        if not (MUTANTS / f"{path}.meta").exists():
            print(f"{path:38} not run")
            continue
        for part, counts, survivors in score(path):
            detected = sum(counts[s] for s in DETECTED)
            missed = sum(n for s, n in counts.items() if s not in DETECTED and s not in LEFT_OUT)
            pct = 100.0 * detected / (detected + missed) if detected + missed else 100.0
            label = f"{path} ({part})" if part else path
            other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())
                              if s not in DETECTED | {"survived", *LEFT_OUT})
            sql = f"; {counts['SQL case only']} SQL case" if counts["SQL case only"] else ""
            print(f"{label:38} {detected:7} {missed:8} {pct:5.1f}%   ({counts['message text only']} left out{sql}"
                  f"{'; not detected: ' + other if other else ''})")
            low = low or (args.min is not None and pct < args.min)
            if args.survivors:
                for name, change in survivors:
                    print(f"  {name}\n" + textwrap.indent(change, "      "))
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
