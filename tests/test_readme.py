"""The README's "Try it by hand" walkthrough, typed as a newcomer would.

One bash shell runs the lines in order, from the repository root, with a
fresh HOME and no virtualenv on PATH. A `# wait for: TEXT` line waits until
TEXT has appeared in the shell's output, as a person would before typing on.
Everything the shell started is stopped through its own process group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Try it by hand", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README has no sh block under 'Try it by hand'"
    return [line for line in block.group(1).splitlines() if line.strip()]


class Shell:
    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "STATION_CONFIG")}
        venv_bin = str(ROOT / ".venv" / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
        env["HOME"] = str(home)
        self.proc = subprocess.Popen(["bash", "--norc", "--noprofile"], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.out: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.out.append(line)
                self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "".join(self.out)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while needle not in "".join(self.out):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{needle!r} never appeared. Output:\n{''.join(self.out)[-4000:]}")
                self._cond.wait(left)

    def type(self, line: str, timeout: float) -> None:
        """Run one line and wait for the prompt to come back (background jobs return at once)."""
        marker = f"__done_{time.monotonic_ns()}__"
        self.proc.stdin.write(f"{line}\necho {marker} $?\n")
        self.proc.stdin.flush()
        self.wait_for(marker, timeout)
        status = re.search(rf"{marker} (\d+)", self.text())
        assert status and status.group(1) == "0", f"`{line}` failed. Output:\n{self.text()[-4000:]}"

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own shell's group: nothing else
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def test_readme_walkthrough_works_as_written(tmp_path):
    lines = walkthrough()
    assert lines[0].startswith("make setup") and any(line.startswith("station run") for line in lines)
    shell = Shell(tmp_path)
    try:
        for line in lines:
            wait = re.match(r"#\s*wait for:\s*(.+)$", line.strip())
            if wait:
                shell.wait_for(wait.group(1).strip(), timeout=60)
            elif not line.lstrip().startswith("#"):
                shell.type(line, timeout=300)
        out = shell.text()
        assert "Traceback" not in out
        assert (tmp_path / "station-records" / "2.cose").exists()
    finally:
        shell.close()
