"""Every file in examples/ runs as its docstring says, and every code block of the docs that quote them is theirs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .flowhelpers import TIMEOUT_FACTOR

EXAMPLES = ROOT / "examples"
# Documents whose code blocks must be excerpts of the examples (each block's first line names its file).
QUOTING_DOCS = ("docs/embedding.md", "docs/testing.md", "docs/frameworks.md", "docs/scale-out.md")
# Each example and the test that runs it; restart_safe_bot.py is killed 20 times by tests/test_checkpoint.py.
RUN_BY = {
    "delta_alert.py": "test_example_tests_pass_in_a_folder_of_their_own",
    "test_delta_alert.py": "test_example_tests_pass_in_a_folder_of_their_own",
    "test_fixtures.py": "test_example_tests_pass_in_a_folder_of_their_own",
    "host_bot.py": "test_host_bot_streams_alerts_and_reports",
    "sync_bot.py": "test_sync_bot_reads_the_stream_from_its_own_thread",
    "restart_safe_bot.py": "tests/test_checkpoint.py",
    "vnpy_bot.py": "tests/test_adapter_vnpy.py",
    "nautilus_bot.py": "tests/nautilus/test_adapter_nautilus.py",  # in .venv-nautilus (Python 3.12)
    "redis_bot.py": "test_redis_bot_resumes_from_its_checkpoint",
}


def user_environment() -> dict[str, str]:
    """The environment of a user's shell: no ORDERFLOW_ variable, the project not on sys.path."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ORDERFLOW_", "PYTEST_", "PYTHONPATH"))}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def test_every_example_is_run_by_a_test() -> None:
    """A file added to examples/ without a test that runs it fails here, so no example can rot unseen."""
    present = {path.name for path in EXAMPLES.iterdir() if path.is_file()}
    assert present == set(RUN_BY)
    here = Path(__file__).read_text()
    for runner in set(RUN_BY.values()):
        assert f"def {runner}(" in here or (ROOT / runner).is_file(), runner


@pytest.mark.parametrize("config", ["none", "docs/testing.md"])
def test_example_tests_pass_in_a_folder_of_their_own(tmp_path: Path, config: str) -> None:
    """The example plugin's tests pass with the shipped fixtures, with no pytest config and with the one docs suggest."""
    for name in ("delta_alert.py", "test_delta_alert.py", "test_fixtures.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    if config != "none":
        blocks = [body for language, body in code_blocks((ROOT / config).read_text()) if language == "toml"]
        assert len(blocks) == 1 and "[tool.pytest.ini_options]" in blocks[0]
        (tmp_path / "pyproject.toml").write_text(blocks[0])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=user_environment(), capture_output=True, text=True, timeout=60 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    if config != "none":  # the suggested config leaves pytest-asyncio nothing to warn about
        assert "asyncio_default_fixture_loop_scope" not in result.stdout + result.stderr


def test_host_bot_streams_alerts_and_reports(tmp_path: Path) -> None:
    """examples/host_bot.py streams from its own simulator, prints health and latest each second, and alerts."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "host_bot.py"), "--duration", "3", "--speed", "100"],
        cwd=tmp_path, env=user_environment(), capture_output=True, text=True, timeout=30 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(line.startswith("running (streaming), ") for line in lines[:3]), lines
    assert re.fullmatch(r"done: \d+ trades, delta alerts [12], whales \d+", lines[3]), lines[3]  # 2 on a slow stop
    assert "WARNING delta_alert: BTCUSDT 1m delta +5.83961000: taker buying" in result.stderr
    assert "plugin_errors 0" in result.stderr


def test_host_bot_stops_on_ctrl_c_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) on examples/host_bot.py stops it in one quiet exit 130, not a KeyboardInterrupt traceback."""
    # Python keeps SIGINT ignored when its parent ignored it (as pytest-xdist workers do): a shell would not.
    start = ("import os, runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0])); "
             "runpy.run_path(sys.argv[0], run_name='__main__')")
    process = subprocess.Popen(
        [sys.executable, "-c", start, str(EXAMPLES / "host_bot.py"), "--duration", "60", "--speed", "100"],
        cwd=tmp_path, env=user_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("running (streaming), ")  # it streams: now the user presses Ctrl-C
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20 * TIMEOUT_FACTOR)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


def run_redis_bot(*options: str) -> str:
    """examples/redis_bot.py's last line, after it ran with ``options``."""
    result = subprocess.run([sys.executable, str(EXAMPLES / "redis_bot.py"), *options], env=user_environment(),
                            capture_output=True, text=True, timeout=60 * TIMEOUT_FACTOR)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


async def test_redis_bot_resumes_from_its_checkpoint(orderflow_redis, tmp_path: Path) -> None:
    """examples/redis_bot.py reads what collectors wrote; run again with its checkpoint, it gets only what is new."""
    from orderflow_plugin.redisbus.writer import StreamWriter
    from orderflow_plugin.tape import bundled_tape

    trades = [row.to_trade("BTCUSDT") for row in bundled_tape().rows]
    writer = StreamWriter(orderflow_redis.url, "spot")
    for trade in trades[:3000]:
        writer.add_trade(trade)
    assert await writer.drain(10)
    options = ("--from", orderflow_redis.url, "--checkpoint", str(tmp_path / "bot.ckpt"), "--duration", "2")
    first = await asyncio.to_thread(run_redis_bot, *options)
    assert first.startswith("bot: 3000 trades from Redis, gaps [], ") and first.endswith(f"last id {trades[2999].id}"), first
    for trade in trades[3000:]:
        writer.add_trade(trade)
    assert await writer.drain(10)
    await writer.aclose()
    second = await asyncio.to_thread(run_redis_bot, *options)
    assert second.startswith("bot: 2000 trades from Redis, gaps [], "), second
    assert second.endswith(f"last id {trades[-1].id}"), second


def test_redis_bot_runs_offline_with_its_own_collector() -> None:
    """Without --from, examples/redis_bot.py starts redis-server, the simulator and a collector, and reads them."""
    line = run_redis_bot("--duration", "3")
    assert re.fullmatch(r"bot: [1-9]\d* trades from Redis, gaps \[\], delta alerts \d+, last id \d+", line), line


async def test_sync_bot_reads_the_stream_from_its_own_thread(orderflow_sim) -> None:
    """examples/sync_bot.py runs OrderFlow with run_in_thread() and reads health() and latest() from its main thread."""
    bot = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "sync_bot.py"), "--duration", "2",
        "--ws-url", orderflow_sim.ws_url, "--rest-url", orderflow_sim.rest_url,
        env=user_environment(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        out, err = await bot.communicate()
    assert bot.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"running: \d+ trades, last price \d+\.\d+", line) for line in lines)
    assert int(lines[-1].split()[1]) > 0


def test_faults_scenario_makes_the_demo_reconnect_and_backfill() -> None:
    """`orderflow demo --scenario faults`, as README says, reconnects, backfills, and loses nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "orderflow_plugin", "demo", "--speed", "500", "--duration", "30",
         "--scenario", "faults"],
        cwd=ROOT, env={**user_environment(), "ORDERFLOW_ENV": "testing"}, capture_output=True, text=True,
        timeout=60 * TIMEOUT_FACTOR,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trades"] == 5000 and summary["reconnects"] == 1 and summary["gaps"] == 2
    assert summary["backfilled"] >= 300
    assert "--scenario faults" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("doc", QUOTING_DOCS)
def test_doc_code_blocks_are_excerpts_of_the_examples(doc: str) -> None:
    """Each python block of the doc names an examples/ file on its first line and is a verbatim excerpt of it."""
    blocks = [body for language, body in code_blocks((ROOT / doc).read_text()) if language == "python"]
    assert blocks
    for body in blocks:
        header, _, excerpt = body.partition("\n")
        match = re.fullmatch(r"# (examples/[\w.]+)", header)
        assert match, f"{doc}: a python block starts with {header!r}, not the examples/ file it quotes"
        assert excerpt.strip() and excerpt in (ROOT / match.group(1)).read_text(), \
            f"{doc}: a block is not in {match.group(1)}:\n{excerpt}"


def quoted_blocks(doc: str) -> list[tuple[str, str, str]]:
    """(examples/ file, excerpt, the doc's text since the previous block) of each python block of ``doc``."""
    text = (ROOT / doc).read_text()
    found = []
    for match in re.finditer(r"^```python\n# (examples/[\w.]+)\n(.*?)^```", text, re.S | re.M):
        found.append((match.group(1), match.group(2), text[:match.start()].rpartition("```")[2]))
    return found


@pytest.mark.parametrize("doc", QUOTING_DOCS)
def test_each_doc_excerpt_links_its_whole_file(doc: str) -> None:
    """The prose before each excerpt links the complete example it comes from, so a reader can open the rest."""
    for name, _, before in quoted_blocks(doc):
        assert f"](../{name})" in before, f"{doc}: no link to ../{name} before its excerpt"


@pytest.mark.parametrize("doc", QUOTING_DOCS)
def test_doc_excerpts_miss_no_import_nor_helper_of_their_file(doc: str) -> None:
    """Every import, class and function of an example that the doc's excerpts use is quoted in the doc too."""
    import ast

    blocks = quoted_blocks(doc)
    quoted = "".join(excerpt for _, excerpt, _ in blocks)
    code = re.sub(r'""".*?"""|"[^"\n]*"|\'[^\'\n]*\'|#[^\n]*', "", quoted, flags=re.S)  # no docstring nor comment
    used = set(re.findall(r"(?<![.\w])\w+", code))  # names, not attributes (asyncio.run is no use of run)
    missing = []
    for name in sorted({name for name, _, _ in blocks}):
        source = (ROOT / name).read_text()
        lines = source.splitlines()
        for node in ast.parse(source).body:
            if isinstance(node, ast.Import | ast.ImportFrom):  # quoted whole
                bound = {(alias.asname or alias.name).split(".")[0] for alias in node.names}
                text = "\n".join(lines[node.lineno - 1:node.end_lineno])
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):  # by its first line
                bound, text = {node.name}, lines[node.lineno - 1]
            else:
                continue
            if bound & used and text not in quoted:
                missing.append(f"{name}: {text}")
    assert not missing, f"{doc}: its excerpts use these and do not quote them:\n" + "\n".join(missing)
