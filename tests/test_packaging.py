"""What a pip-installed user gets: the wheel built from this checkout, installed into a fresh venv, run elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from orderflow_plugin.hotpath import COMPILED

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR

# Building the wheel takes about a second, installing it without its dependencies another, the demo about two.
# Nothing is downloaded: the dependencies are the test venv's, so the test runs offline.
# Compiling the hot modules with Cython adds about 20 s of CPU to the build (hatch_build.py).
pytestmark = pytest.mark.timeout(400 * TIMEOUT_FACTOR)

BUNDLED = {
    "diagnostics": "orderflow_plugin.bundled.diagnostics:Diagnostics",
    "whale_alert": "orderflow_plugin.bundled.whale_alert:WhaleAlert",
    "recorder": "orderflow_plugin.bundled.recorder:Recorder",
    "prometheus": "orderflow_plugin.bundled.prometheus:PrometheusExport",
    "redis": "orderflow_plugin.bundled.redis_streams:RedisPublisher",
}


def clean_environment() -> dict[str, str]:
    """This environment without anything that would put the checkout or the test venv on sys.path."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    kept = {key: value for key, value in os.environ.items() if key not in dropped and not key.startswith("ORDERFLOW_")}
    return {**kept, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # pip asks no index for anything


def site_packages(python: str | Path) -> Path:
    """The site-packages folder of the environment ``python`` runs in."""
    return Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=Path.cwd(),
                    timeout=30).stdout.strip())


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
        cwd=dist, timeout=300)
    (built,) = dist.glob("orderflow_plugin-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed alone; the dependencies are the test venv's, through a .pth line.

    Python does not read the .pth files of a folder that a .pth line added, so the test venv's editable install
    (its own .pth naming the checkout) stays out: orderflow_plugin is imported from the wheel.
    """
    folder = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", folder, cwd=folder, timeout=60)
    python = folder / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=folder,
        timeout=60)
    (site_packages(python) / "deps.pth").write_text(f"{site_packages(sys.executable)}\n")
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
    where = run(venv / "bin" / "python", "-c", "import json, orderflow_plugin, sys; print(orderflow_plugin.__file__); "
                "print(json.dumps(sys.path))", cwd=tmp_path, timeout=30).stdout.splitlines()
    assert Path(where[0]).is_relative_to(venv), where[0]  # the wheel's copy, not the checkout's
    assert not Path(where[0]).is_relative_to(ROOT), where[0]
    assert str(site_packages(sys.executable)) in json.loads(where[1])  # the dependencies, from deps.pth
    assert not {str(ROOT), str(ROOT.resolve())} & set(json.loads(where[1]))  # the editable install's .pth was not read
    result = run(venv / "bin" / "orderflow", "demo", "--speed", "1000", "--duration", "30", cwd=tmp_path, timeout=60)
    lines = result.stdout.splitlines()
    assert lines[0].endswith("; plugins: diagnostics, whale_alert (disabled: prometheus, recorder, redis)"), lines[0]
    summary = json.loads(lines[-1])
    assert summary["trades"] == 5000 and summary["plugin_errors"] == 0
    assert "starting: symbols BTCUSDT" in result.stderr  # diagnostics ran
    assert "whale BTCUSDT" in result.stderr  # whale_alert ran
    assert "ERROR" not in result.stderr, result.stderr  # no plugin failed to load, no hooks folder is missing
    assert list(tmp_path.iterdir()) == []  # nothing written where the user stands (the recorder is off)


def test_installed_wheel_demo_runs_the_bundled_faults_scenario_by_name(venv: Path, tmp_path: Path) -> None:
    """`orderflow demo --scenario faults` from the wheel, in an empty folder, plays the packaged scenario."""
    result = run(venv / "bin" / "orderflow", "demo", "--speed", "500", "--duration", "30", "--scenario", "faults",
                 "--json", cwd=tmp_path, timeout=60)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["trades"] == 5000 and summary["reconnects"] == 1 and summary["gaps"] == 2, summary
    assert list(tmp_path.iterdir()) == []


def test_wheel_is_compiled_for_this_platform_and_runs_compiled(wheel: Path, venv: Path, tmp_path: Path) -> None:
    """The wheel carries each hot module compiled (a platform tag, the manifest) and the installed copy runs them."""
    assert not wheel.name.endswith("-none-any.whl"), wheel.name  # a platform wheel: it holds compiled code
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
    for module in COMPILED:
        assert any(name.startswith(f"orderflow_plugin/{module}.") and name.endswith(".so") for name in files), module
        assert f"orderflow_plugin/{module}.py" in files  # the pure path, for ORDERFLOW_PURE=1
    assert "orderflow_plugin/_compiled.txt" in files
    code = "from orderflow_plugin import hotpath; print(hotpath.hot_path()); print(hotpath.loaded()[3].__file__)"
    path, engine = run(venv / "bin" / "python", "-c", code, cwd=tmp_path, timeout=30).stdout.splitlines()
    assert path.startswith("compiled") and engine.endswith(".so") and Path(engine).is_relative_to(venv), (path, engine)


def test_pip_builds_the_sdist_compiled(tmp_path: Path) -> None:
    """The sdist carries the build hook and the .pxd types, and pip builds a compiled wheel from it."""
    run(sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", tmp_path / "sdist", cwd=ROOT, timeout=120)
    (sdist,) = (tmp_path / "sdist").glob("orderflow_plugin-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert "hatch_build.py" in names
    assert {f"orderflow_plugin/{p.name}" for p in (ROOT / "orderflow_plugin").glob("*.pxd")} <= names
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
        sdist, cwd=tmp_path, timeout=300)
    (built,) = (tmp_path / "dist").glob("orderflow_plugin-*.whl")
    assert not built.name.endswith("-none-any.whl"), built.name
    with zipfile.ZipFile(built) as archive:
        files = set(archive.namelist())
    for module in COMPILED:
        assert any(name.startswith(f"orderflow_plugin/{module}.") and name.endswith(".so") for name in files), module
    assert "orderflow_plugin/_compiled.txt" in files
