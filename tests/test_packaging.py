"""What a pip-installed user gets: the wheel built from this checkout, installed into a fresh venv, run elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR

# Building the wheel takes about a second; installing it with its dependencies a few more (longer when pip
# has to download them); the demo plays the whole tape in about two.
pytestmark = pytest.mark.timeout(180 * TIMEOUT_FACTOR)

BUNDLED = {
    "diagnostics": "orderflow_plugin.bundled.diagnostics:Diagnostics",
    "whale_alert": "orderflow_plugin.bundled.whale_alert:WhaleAlert",
    "recorder": "orderflow_plugin.bundled.recorder:Recorder",
    "prometheus": "orderflow_plugin.bundled.prometheus:PrometheusExport",
}


def clean_environment() -> dict[str, str]:
    """This environment without anything that would put the checkout or the test venv on sys.path."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    return {key: value for key, value in os.environ.items()
            if key not in dropped and not key.startswith("ORDERFLOW_")}


def run(*args: str | Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=clean_environment(), capture_output=True, text=True,
                            timeout=timeout * TIMEOUT_FACTOR)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, as `pip wheel` builds it."""
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", dist, ROOT,
        cwd=dist, timeout=60)
    (built,) = dist.glob("orderflow_plugin-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no access to the checkout or the test venv) with the wheel and its dependencies installed."""
    folder = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", folder, cwd=folder, timeout=60)
    python = folder / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel, cwd=folder, timeout=150)
    return folder


def test_wheel_holds_the_bundled_plugins_and_their_entry_points(wheel: Path) -> None:
    """The wheel ships orderflow_plugin/bundled/ and registers each plugin in the orderflow_plugin entry point group."""
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        (entry_points,) = [name for name in files if name.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    for target in BUNDLED.values():
        assert f"{target.split(':')[0].replace('.', '/')}.py" in files
    section = text.split("[orderflow_plugin]\n", 1)[1].split("\n\n", 1)[0]
    assert dict(line.split(" = ") for line in section.strip().splitlines()) == BUNDLED
    assert "orderflow_plugin/settings.toml" in files


def test_installed_wheel_demo_runs_the_bundled_plugins_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    """`orderflow demo` from the wheel, in an empty folder, lists the bundled plugins as active and runs them."""
    where = run(venv / "bin" / "python", "-c", "import orderflow_plugin, sys; print(orderflow_plugin.__file__); "
                "print(sys.path)", cwd=tmp_path, timeout=30).stdout.splitlines()
    assert Path(where[0]).is_relative_to(venv)
    assert str(ROOT) not in where[1]
    result = run(venv / "bin" / "orderflow", "demo", "--speed", "1000", "--duration", "30", cwd=tmp_path, timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0].endswith("; plugins: diagnostics, whale_alert (disabled: prometheus, recorder)"), lines[0]
    summary = json.loads(lines[-1])
    assert summary["trades"] == 5000 and summary["plugin_errors"] == 0
    assert "starting: symbols BTCUSDT" in result.stderr  # diagnostics ran
    assert "whale BTCUSDT" in result.stderr  # whale_alert ran
    assert "ERROR" not in result.stderr, result.stderr  # no plugin failed to load, no hooks folder is missing
    assert list(tmp_path.iterdir()) == []  # nothing written where the user stands (the recorder is off)
