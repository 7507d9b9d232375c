"""Settings: layering, environment overrides, and validation that lists every error."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from orderflow_plugin import OrderFlow, SettingsError, Timeouts, load_settings
from orderflow_plugin.config import default_settings_file
from orderflow_plugin.options import from_table
from orderflow_plugin.rules import RULES

from .conftest import ROOT


def write(tmp_path: Path, text: str, name: str = "user.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_load_and_testing_env_applies() -> None:
    """The shipped settings.toml validates, and [testing] overrides [default] key by key."""
    settings = load_settings()
    assert settings.env == "testing"
    assert settings.symbols == ["BTCUSDT"]
    assert settings.plugins.entry_points is False  # from [testing.plugins]
    assert settings.reporting.slow_hook_ms == 5.0  # kept from [default.reporting]


def test_production_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORDERFLOW_ENV=production selects the [production] tables."""
    monkeypatch.setenv("ORDERFLOW_ENV", "production")
    assert load_settings().reporting.slow_hook_ms == 2.0


def test_user_file_merges_tables_and_replaces_lists(tmp_path: Path) -> None:
    """A user file changes only the keys it names; a list replaces the default list."""
    user = write(tmp_path, '[default]\nsymbols = ["ethusdt", "SOLUSDT"]\n[default.reporting]\nslow_hook_ms = 20\n')
    settings = load_settings([user])
    assert settings.symbols == ["ETHUSDT", "SOLUSDT"]
    assert settings.reporting.slow_hook_ms == 20
    assert settings.reporting.report_interval == 60.0


def test_environment_overrides_with_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    """ORDERFLOW_ variables override files, with __ for nesting and TOML-parsed values."""
    monkeypatch.setenv("ORDERFLOW_REPORTING__SLOW_HOOK_MS", "12.5")
    monkeypatch.setenv("ORDERFLOW_SYMBOLS", "btcusdt,ethusdt")
    monkeypatch.setenv("ORDERFLOW_PLUGINS__DENY", '["recorder"]')
    settings = load_settings()
    assert settings.reporting.slow_hook_ms == 12.5
    assert settings.symbols == ["BTCUSDT", "ETHUSDT"]
    assert settings.plugins.deny == ["recorder"]


def test_settings_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORDERFLOW_SETTINGS_FILES layers files like --settings does."""
    user = write(tmp_path, "[default]\nmarket = \"usdm\"\n")
    monkeypatch.setenv("ORDERFLOW_SETTINGS_FILES", str(user))
    assert load_settings().market == "usdm"


def test_bad_file_lists_every_error_at_once(tmp_path: Path) -> None:
    """Several wrong values give one SettingsError naming each key and its allowed range."""
    user = write(
        tmp_path,
        "[default]\nmarket = \"margin\"\n"
        "[default.reporting]\nslow_hook_ms = -1\n[default.limits]\nasync_queue_size = 2.5\n"
        "[default.plugins]\nentry_points = \"yes\"\n"
        "[default.connector]\nreader = \"picows\"\n",
    )
    with pytest.raises(SettingsError) as info:
        load_settings([user])
    error = info.value
    assert len(error.errors) == 5
    text = str(error)
    assert "market = 'margin': must be one of spot, usdm" in text
    assert "connector.reader = 'picows': must be one of websockets, fast" in text
    assert "reporting.slow_hook_ms = -1: must be a number in (0, 60000]" in text
    assert "limits.async_queue_size = 2.5: must be a whole number in [1, 10000000]" in text
    assert "plugins.entry_points = 'yes': must be true or false" in text
    assert str(user) in text
    assert "Traceback" not in text


def test_unknown_symbol_format_rejected_with_pattern(tmp_path: Path) -> None:
    """A symbol outside ^[A-Z0-9]{2,20}$ is rejected and the message shows the pattern."""
    user = write(tmp_path, '[default]\nsymbols = ["BTC-USDT"]\n')
    with pytest.raises(SettingsError, match=re.escape("^[A-Z0-9]{2,20}$")):
        load_settings([user])


def test_typo_is_named_with_suggestion(tmp_path: Path) -> None:
    """An unknown key is an error that suggests the nearest real key."""
    user = write(tmp_path, "[default.reporting]\nslow_hook_msec = 3\n")
    with pytest.raises(SettingsError, match=r"reporting\.slow_hook_msec: unknown setting \(did you mean reporting\.slow_hook_ms\?\)"):
        load_settings([user])


def test_third_party_hook_tables_are_allowed(tmp_path: Path) -> None:
    """A table under hooks.<name> for a plugin we do not know is passed through untouched."""
    user = write(tmp_path, "[default.hooks.my_strategy]\nthreshold = 3\n")
    assert load_settings([user]).hooks.my_strategy.threshold == 3


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    """A file that is not TOML is reported with its path and the parser's line and column."""
    user = write(tmp_path, "[default]\nsymbols = [\"BTCUSDT\"\nmarket = 1\n")
    with pytest.raises(SettingsError, match=r"not valid TOML: .*line \d+"):
        load_settings([user])


def test_missing_file_and_unknown_env_reported_together(tmp_path: Path) -> None:
    """A missing settings file and an unknown environment are both listed."""
    with pytest.raises(SettingsError) as info:
        load_settings([tmp_path / "nope.toml"], env="staging")
    assert len(info.value.errors) == 2
    assert "nope.toml: cannot be read" in str(info.value)
    assert "ORDERFLOW_ENV = 'staging'" in str(info.value)


def test_unknown_top_level_table_rejected(tmp_path: Path) -> None:
    """Only [default] and the three environments are valid top-level tables."""
    user = write(tmp_path, "[staging]\nmarket = \"spot\"\n")
    with pytest.raises(SettingsError, match=r"\[staging\] is not one of"):
        load_settings([user])


def test_every_rule_has_a_default_with_a_comment() -> None:
    """Every validated key is in settings.toml's [default] tables with a comment line right above it."""
    path = default_settings_file()
    assert path == ROOT / "settings.toml"
    lines = path.read_text().splitlines()
    where: dict[str, int] = {}
    table = ""
    for index, line in enumerate(lines):
        header = re.match(r"\[([\w.]+)\]", line)
        if header:
            table = header.group(1)
        key = re.match(r"(\w+)\s*=", line)
        if key and (table == "default" or table.startswith("default.")):
            where[f"{table.removeprefix('default').lstrip('.')}.{key.group(1)}".lstrip(".")] = index
    for rule in RULES:
        assert rule.key in where, f"{rule.key} missing from settings.toml [default]"
        assert lines[where[rule.key] - 1].startswith("#"), f"{rule.key} has no comment line in settings.toml"


def test_every_default_key_has_a_rule() -> None:
    """No key in settings.toml escapes validation."""
    defaults = tomllib.loads(default_settings_file().read_text())["default"]

    def keys(node: dict, prefix: str = ""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert set(keys(defaults)) == {rule.key for rule in RULES}


# OrderFlow's option groups by keyword, which is also the name of the settings table that mirrors each.
GROUPS = {name: group for name, hint in get_type_hints(OrderFlow.__init__).items()
          for group in get_args(hint) if dataclasses.is_dataclass(group)}


def test_every_option_group_field_is_a_validated_setting_and_back() -> None:
    """Each group's fields and the validated keys of its settings table are the same names, both ways."""
    assert set(GROUPS) == {"timeouts", "reconnect", "limits", "sequencing", "flow", "reporting"}
    for table, group in GROUPS.items():
        fields = {field.name for field in dataclasses.fields(group)}
        keys = {rule.key.removeprefix(f"{table}.") for rule in RULES if rule.key.startswith(f"{table}.")}
        assert fields == keys, f"[{table}] and {group.__name__} differ: {sorted(fields ^ keys)}"


def test_default_tables_hold_the_groups_defaults() -> None:
    """settings.toml's [default] tables build each group equal to the group's own defaults."""
    settings = load_settings(env="development")
    for table, group in GROUPS.items():
        assert from_table(group, settings[table]) == group(), table


def test_from_settings_builds_the_groups_from_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_settings() reads each group from its table ([testing] and environment overrides included)."""
    monkeypatch.setenv("ORDERFLOW_REPORTING__SLOW_HOOK_MS", "7")
    settings = load_settings(env="testing")
    flow = OrderFlow.from_settings(settings)
    same = [key for key in settings if key != "connector"]  # the connector's "" URLs become the ones it uses
    assert [flow.settings[key] for key in same] == [settings[key] for key in same]
    assert flow.settings.connector.ws_url == flow.ws_url == "wss://stream.binance.com:9443"
    assert (flow.timeouts.rest, flow.timeouts.stall, flow.timeouts.tls) == (1.0, 5.0, 5.0)
    assert flow.reconnect.backoff_max == 2.0 and flow.limits.rest_retries == 1
    assert flow.reporting.slow_hook_ms == 7 and flow.sequencing.backfill is True
    assert flow.flow.windows == ("1s", "1m", "5m")
    overridden = OrderFlow.from_settings(settings, timeouts=Timeouts(stall=9.0), symbols=["ethusdt"])
    assert overridden.timeouts == Timeouts(stall=9.0) and overridden.symbols == ("ETHUSDT",)
    # on_startup gets what it runs: the start log named the file's symbols while another streamed (issue #30)
    assert overridden.settings.symbols == ["ETHUSDT"] and overridden.settings.timeouts.stall == 9.0
    assert settings.symbols == ["BTCUSDT"] and settings.timeouts.stall == 5.0


def test_settings_are_read_only() -> None:
    """Settings cannot be changed after validation."""
    settings = load_settings()
    with pytest.raises(TypeError):
        settings["market"] = "usdm"  # type: ignore[index]
    with pytest.raises(AttributeError):
        settings.no_such_setting  # noqa: B018


def test_a_key_that_moved_to_an_option_group_is_named_with_its_new_place(tmp_path: Path) -> None:
    """A part-9 settings file fails at load, each old key named with where it moved (not a near-miss guess)."""
    user = write(tmp_path, "[default.connector]\nstall_timeout = 7.0\n[default.sequence]\nrest_timeout = 2.0\n")
    with pytest.raises(SettingsError) as info:
        load_settings([user])
    text = str(info.value)
    assert "connector.stall_timeout: unknown setting (it moved to timeouts.stall)" in text
    assert "sequence.rest_timeout: unknown setting (it moved to timeouts.rest)" in text


def test_every_moved_key_points_at_a_validated_key() -> None:
    """The table of moved keys never sends a user to a key that does not exist, nor shadows a live one."""
    from orderflow_plugin.rules import MOVED, RULES

    known = {rule.key for rule in RULES}
    assert set(MOVED.values()) <= known and not set(MOVED) & known


async def test_a_stream_built_without_settings_starts_its_plugins_with_the_effective_ones() -> None:
    """on_startup gets the packaged defaults with the stream's own values, not an empty Settings (here in a replay)."""
    from orderflow_plugin import Flow, PluginManager, bundled_tape
    from orderflow_plugin.replay import replay

    class Startup:
        def on_startup(self, settings):
            self.settings = settings

    plugin = Startup()
    manager = PluginManager()
    manager.register(plugin)
    flow = OrderFlow(["btcusdt"], plugins=manager, flow=Flow(windows=("1m", "1h"), footprint_tick="0.5"),
                     timeouts=Timeouts(stall=9.0), ws_url="ws://127.0.0.1:1", rest_url="http://127.0.0.1:1")
    await replay(flow, bundled_tape())
    settings = plugin.settings
    assert settings.symbols == ["BTCUSDT"] and settings.market == "spot"
    assert settings.connector.ws_url == "ws://127.0.0.1:1" and settings.connector.rest_url == "http://127.0.0.1:1"
    assert settings.flow.windows == ["1m", "1h"] and settings.flow.footprint_tick == "0.5"
    assert settings.timeouts.stall == 9.0 and settings.timeouts.rest == 5.0
    assert settings.reporting.slow_hook_ms == 5.0 and settings.hooks.whale_alert.min_notional == 100000
    assert settings.hooks.get("big_buyers", {}).get("threshold", 50_000) == 50_000  # README's pattern
    assert from_table(Flow, settings.flow) == flow.flow  # the settings describe the stream that runs


def test_a_plugins_absent_hooks_table_is_empty_and_other_absent_keys_are_named(settings) -> None:
    """settings.hooks.<name> is an empty table when no file wrote it; any other missing key raises with its path."""
    assert settings.hooks.my_strategy == {} and settings.hooks.my_strategy.get("threshold", 3) == 3
    assert "my_strategy" not in settings.hooks  # item access and `in` still see only what is there
    with pytest.raises(AttributeError, match=r"no setting 'hooks\.whale_alert\.threshold'"):
        settings.hooks.whale_alert.threshold  # noqa: B018
    with pytest.raises(AttributeError, match=r"no setting 'reporting\.slow_hook'"):
        settings.reporting.slow_hook  # noqa: B018


def test_relative_hooks_dirs_are_relative_to_the_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hooks_dirs = ["hooks"] in a settings file is the folder beside that file, whatever the working directory."""
    from orderflow_plugin import plugins_from_settings

    folder = tmp_path / "bot"
    (folder / "hooks").mkdir(parents=True)
    (folder / "hooks" / "mine.py").write_text("def on_trade(trade):\n    pass\n")
    user = write(folder, f'[default.plugins]\nhooks_dirs = ["hooks", "{tmp_path / "abs"}"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings([Path("..") / "bot" / user.name])
    assert settings.plugins.hooks_dirs == [str(folder / "hooks"), str(tmp_path / "abs")]
    manager = plugins_from_settings(load_settings([user]))
    assert manager.has_plugin("mine")
    monkeypatch.setenv("ORDERFLOW_PLUGINS__HOOKS_DIRS", '["hooks"]')  # no file names it: the working directory's
    assert load_settings([user]).plugins.hooks_dirs == ["hooks"]


def test_packaged_defaults_name_no_hooks_folder() -> None:
    """The packaged settings load no drop-in folder: the bundled plugins are entry points, a hooks folder is opt-in."""
    assert load_settings(env="development").plugins.hooks_dirs == []


def test_readme_says_once_that_drop_in_folders_are_opt_in() -> None:
    """README's plugin section states the packaged hooks_dirs default ([]) once, and that hooks/ is only an example."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert readme.count("the packaged default is `hooks_dirs = []`") == 1
    assert "Drop-in folders are opt-in" in readme and "`hooks/`, which is an example" in readme
    assert tomllib.loads(default_settings_file().read_text())["default"]["plugins"]["hooks_dirs"] == []


def test_a_setting_outside_default_is_one_error_saying_where_it_goes(tmp_path: Path) -> None:
    """A user file written without [default] fails with one line saying settings go under [default]."""
    user = write(tmp_path, 'symbols = ["ETHUSDT"]\n[reporting]\nslow_hook_ms = 20\n')
    with pytest.raises(SettingsError) as info:
        load_settings([user])
    assert info.value.errors == [
        f"settings file {user}: symbols, [reporting] are outside [default]: a settings file puts its settings "
        "under [default] (or [development], [testing], [production]), and tables as [default.reporting]"
    ]


def test_a_bad_window_is_named(tmp_path: Path) -> None:
    """flow.windows names the window at fault: one that does not parse, or two of the same length."""
    with pytest.raises(SettingsError) as info:
        load_settings([write(tmp_path, '[default.flow]\nwindows = ["1m", "7x"]\n')])
    assert info.value.errors == [
        "flow.windows = ['1m', '7x']: window '7x' is not a number followed by s, m, h or d (e.g. 1s, 1m, 5m, 1h)"]
    with pytest.raises(SettingsError) as info:
        load_settings([write(tmp_path, '[default.flow]\nwindows = ["1m", "60s"]\n')])
    assert info.value.errors == ["flow.windows = ['1m', '60s']: windows '1m' and '60s' are the same length: each must differ"]
    with pytest.raises(SettingsError, match=r"flow\.windows = \[\]: must be a non-empty list of distinct windows"):
        load_settings([write(tmp_path, "[default.flow]\nwindows = []\n")])


@pytest.mark.parametrize("windows", ['["1m", 5]', '[["1m"]]'], ids=["number", "list"])
def test_a_window_that_is_not_a_string_is_named(tmp_path: Path, windows: str) -> None:
    """A window that is no string is one error naming it (the compiled parse_window's TypeError was a traceback)."""
    with pytest.raises(SettingsError) as info:
        load_settings([write(tmp_path, f"[default.flow]\nwindows = {windows}\nsignal_windows = {windows}\n")])
    item = "5" if windows.endswith("5]") else "['1m']"
    assert info.value.errors == [f"flow.{key} = {tomllib.loads(f'w = {windows}')['w']!r}: window {item} is not a string like \"1m\""
                                 for key in ("windows", "signal_windows")]
    with pytest.raises(SettingsError) as info:
        load_settings([write(tmp_path, "[default.flow]\nsession = 5\n")])
    assert info.value.errors == ['flow.session = 5: must be a window like "1d" or "8h"']


def test_a_settings_file_with_a_bom_loads_and_one_in_utf16_is_named(tmp_path: Path) -> None:
    """A UTF-8 file with a BOM loads; a UTF-16 one is a SettingsError naming it and saying it must be UTF-8 TOML."""
    bom = tmp_path / "bom.toml"
    bom.write_text('[default]\nsymbols = ["ethusdt"]\n', encoding="utf-8-sig")
    assert load_settings([bom]).symbols == ["ETHUSDT"]
    utf16 = tmp_path / "u16.toml"
    utf16.write_text('[default]\nsymbols = ["ethusdt"]\n', encoding="utf-16")
    with pytest.raises(SettingsError) as raised:
        load_settings([utf16])
    assert raised.value.errors == [f"settings file {utf16}: not UTF-8 (byte 0xff at 0); a settings file must be UTF-8 TOML"]


def test_each_bundled_plugins_table_comment_uses_its_name() -> None:
    """settings.toml's comment on each [default.hooks.<name>] table names the plugin as <name>, the name allow/deny take."""
    lines = default_settings_file().read_text().splitlines()
    tables = {line[len("[default.hooks."):-1]: lines[index + 1] for index, line in enumerate(lines)
              if line.startswith("[default.hooks.")}
    assert set(tables) == {"diagnostics", "whale_alert", "recorder", "prometheus", "redis"}
    for name, comment in tables.items():
        assert comment.startswith(f"# The bundled {name} plugin: "), comment


def test_an_unclosed_array_at_the_end_of_a_file_names_the_line_it_opens_on(tmp_path: Path) -> None:
    """tomllib says only "at end of document" for what is never closed; the error names the line it opens on."""
    user = write(tmp_path, '[default]\nmarket = "spot"\nsymbols = ["BTCUSDT",\n  "ETHUSDT"\n')
    with pytest.raises(SettingsError, match=r"Unclosed array \(at end of document: it opens on line 3\)"):
        load_settings([user])


def test_a_hooks_table_misspelling_a_bundled_plugin_is_an_error_with_the_near_match(tmp_path: Path) -> None:
    """[default.hooks.whale_alrt] names no plugin: reported as the settings typos are, with the bundled name."""
    user = write(tmp_path, "[default.hooks.whale_alrt]\nmin_notional = 5\n")
    with pytest.raises(SettingsError) as info:
        load_settings([user])
    assert info.value.errors == ["hooks.whale_alrt: no plugin of that name (did you mean hooks.whale_alert?)"]


def test_a_hooks_table_near_a_bundled_name_is_fine_for_a_plugin_in_a_hooks_folder(tmp_path: Path) -> None:
    """A plugin of one's own named whale_alerts.py, in a hooks folder, may have its [default.hooks.whale_alerts]."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "whale_alerts.py").write_text("def on_trade(trade):\n    pass\n")
    user = write(tmp_path, '[default.plugins]\nhooks_dirs = ["hooks"]\n[default.hooks.whale_alerts]\nmin_notional = 5\n')
    assert load_settings([user]).hooks.whale_alerts.min_notional == 5


def test_the_frame_reader_is_reader_and_its_old_name_transport_still_works_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """OrderFlow(transport=) and connector.transport (file or environment) set the reader, each with a deprecation note."""
    flow = OrderFlow(["BTCUSDT"], reader="websockets")
    assert flow.reader == "websockets" and flow.settings is None
    with pytest.warns(DeprecationWarning, match=r"OrderFlow\(transport=\.\.\.\) is now OrderFlow\(reader=\.\.\.\)"):
        old = OrderFlow(["BTCUSDT"], transport="websockets")
    assert old.reader == "websockets"
    with pytest.warns(DeprecationWarning, match=r"OrderFlow\.transport is now OrderFlow\.reader"):
        assert old.transport == "websockets"
    with pytest.raises(ValueError, match=r"reader must be one of websockets, fast, got 'picows'"):
        OrderFlow(["BTCUSDT"], reader="picows")
    user = write(tmp_path, '[default.connector]\ntransport = "websockets"\n')
    with caplog.at_level("WARNING", logger="orderflow_plugin.config"):
        settings = load_settings([user])
    assert settings.connector.reader == "websockets" and "transport" not in settings.connector
    assert f"settings file {user} [default]: connector.transport is now connector.reader" in caplog.text
    assert OrderFlow.from_settings(settings, plugins=[]).reader == "websockets"
    caplog.clear()
    monkeypatch.setenv("ORDERFLOW_CONNECTOR__TRANSPORT", "websockets")
    with caplog.at_level("WARNING", logger="orderflow_plugin.config"):
        settings = load_settings()
    assert settings.connector.reader == "websockets" and "transport" not in settings.connector
    assert "environment ORDERFLOW_CONNECTOR__TRANSPORT: connector.transport is now connector.reader" in caplog.text
    monkeypatch.setenv("ORDERFLOW_CONNECTOR__READER", "fast")  # both: the new name wins
    assert load_settings().connector.reader == "fast"


def test_the_redis_feed_is_feed_and_its_old_name_source_still_works_with_a_warning() -> None:
    """OrderFlow(feed=) takes a Redis feed; OrderFlow(source=) and flow.source still do, with a DeprecationWarning."""
    from orderflow_plugin.redisbus.source import RedisSource

    url = "redis://127.0.0.1:1/0"  # never connected: the stream is only built
    flow = OrderFlow(["BTCUSDT"], feed=url)
    assert isinstance(flow.feed, RedisSource) and flow.backfiller is None
    with pytest.warns(DeprecationWarning, match=r"OrderFlow\(source=\.\.\.\) is now OrderFlow\(feed=\.\.\.\)"):
        old = OrderFlow(["BTCUSDT"], source=url)
    assert isinstance(old.feed, RedisSource)
    with pytest.warns(DeprecationWarning, match=r"OrderFlow\.source is now OrderFlow\.feed"):
        assert old.source is old.feed
