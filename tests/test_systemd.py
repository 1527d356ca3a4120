import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "station.service"


def _installed_copy(tmp_path: Path) -> Path:
    """The unit as installed: ExecStart must name an executable that exists, so point it at this venv."""
    station = Path(sys.executable).parent / "station"
    assert station.exists(), "the package's console script is not installed"
    text = UNIT.read_text().replace("/opt/station/.venv/bin/station", str(station))
    copy = tmp_path / "station.service"
    copy.write_text(text)
    return copy


def test_systemd_analyze_verify_passes(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs the systemd package"
    res = subprocess.run([analyze, "verify", str(_installed_copy(tmp_path))], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "station.service" not in res.stderr, res.stderr  # no warnings about our unit


def test_unit_has_the_required_settings():
    lines = {line.strip() for line in UNIT.read_text().splitlines()}
    for required in ("Type=notify", "Restart=on-failure", "User=station", "StateDirectory=station",
                     "NotifyAccess=main"):
        assert required in lines, required
    assert any(line.startswith("WatchdogSec=") for line in lines)
    assert "PrivateDevices=yes" not in lines  # it would hide the serial ports


def test_security_exposure_stays_bounded(tmp_path):
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=70",
                          str(_installed_copy(tmp_path))], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:]
