"""The option groups check themselves, with the same constraints the settings file is checked by."""

from __future__ import annotations

import dataclasses
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from orderflow_plugin import OptionError, OrderFlowError, SettingsError, load_settings
from orderflow_plugin.config import default_settings_file
from orderflow_plugin.options import (
    GROUPS,
    Flow,
    Limits,
    Reconnect,
    Reporting,
    Sequencing,
    Timeouts,
    constraint_of,
    from_table,
)
from orderflow_plugin.rules import RULES


def _kind(value: object) -> str:
    """What TOML can tell apart: a bool is not a number, an int may stand for a float, a tuple is a list."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "list" if isinstance(value, (list, tuple)) else type(value).__name__


FIELDS = [(table, spec.name) for table, group in GROUPS.items() for spec in dataclasses.fields(group)]
FIELD_IDS = [f"{table}.{name}" for table, name in FIELDS]


def test_timeouts_refuse_a_negative_rest_in_one_line() -> None:
    """Timeouts(rest=-1) raises at construction, naming the group, field, value and what is allowed."""
    with pytest.raises(OptionError) as info:
        Timeouts(rest=-1)
    assert str(info.value) == "Timeouts.rest = -1: must be a number in (0, 300]"
    assert isinstance(info.value, ValueError) and isinstance(info.value, OrderFlowError)


@pytest.mark.parametrize(("group", "changes", "message"), [
    (Timeouts, {"stall": "30"}, "Timeouts.stall = '30': must be a number in (0, 86400]"),
    (Timeouts, {"ping_interval": True}, "Timeouts.ping_interval = True: must be a number in [0, 3600]"),
    (Timeouts, {"first_message": float("nan")}, "Timeouts.first_message = nan: must be a number in (0, 3600]"),
    (Reconnect, {"backoff_factor": 0.5}, "Reconnect.backoff_factor = 0.5: must be a number in [1, 100]"),
    (Reconnect, {"max_attempts": 2.0}, "Reconnect.max_attempts = 2.0: must be a whole number in [0, 1000000]"),
    (Limits, {"max_size": 10}, "Limits.max_size = 10: must be a whole number in [1024, 1073741824]"),
    (Sequencing, {"since": "yesterday"}, "Sequencing.since = 'yesterday': must be a UTC day or time such as "
                                         '"2025-11-01" or "2025-11-01T00:00Z", or "" to start live'),
    (Sequencing, {"archive_url": "ftp://x"}, 'Sequencing.archive_url = \'ftp://x\': must be a URL starting with '
                                             'http://... or https://... or ""'),
    (Flow, {"windows": ("1m", "7x")}, "Flow.windows = ('1m', '7x'): window '7x' is not a number followed by "
                                      "s, m, h or d (e.g. 1s, 1m, 5m, 1h)"),
    (Flow, {"windows": ["1m", "60s"]}, "Flow.windows = ['1m', '60s']: windows '1m' and '60s' are the same length: "
                                      "each must differ"),
    (Flow, {"footprint_tick": 0.1}, 'Flow.footprint_tick = 0.1: must be a positive decimal as a string, e.g. "10" '
                                    'or "0.5", or ""'),
    (Flow, {"whale_notional": Decimal("-1")}, "Flow.whale_notional = Decimal('-1'): must be a number in [0, 1e+15]"),
    (Reporting, {"stage_warning": 2}, "Reporting.stage_warning = 2: must be a number in [0, 1]"),
], ids=["stall-text", "ping-bool", "first-message-nan", "backoff-factor", "attempts-float", "max-size",
        "since", "archive-url", "bad-window", "same-windows", "tick-float", "whale-negative", "stage-warning"])
def test_a_group_refuses_a_bad_value_naming_it(group: type, changes: dict, message: str) -> None:
    """Each group refuses a wrong type, a value out of range, NaN or a bad window, with one line saying what is allowed."""
    with pytest.raises(OptionError) as info:
        group(**changes)
    assert str(info.value) == message


def test_replace_checks_too() -> None:
    """dataclasses.replace builds a new group, so it is checked like the constructor."""
    with pytest.raises(OptionError, match=r"^Reporting\.slow_hook_ms = 0: must be a number in \(0, 60000\]$"):
        dataclasses.replace(Reporting(), slow_hook_ms=0)


def test_values_in_code_may_be_exact_decimals_and_paths(tmp_path: Path) -> None:
    """What the fields' types allow passes: Decimal ticks and amounts, a decimal-string whale, a Path checkpoint."""
    flow = Flow(footprint_tick=Decimal("0.5"), whale_notional="250000.5", imbalance_min_volume=Decimal(0),
                windows=["1s", "1h"])
    assert flow.windows == ("1s", "1h") and flow.whale_notional == "250000.5"
    assert Sequencing(checkpoint_path=tmp_path / "c.json").checkpoint_path == str(tmp_path / "c.json")
    assert Flow(footprint_tick="", whale_notional=0, whale_percentile=0).footprint_tick == ""


@pytest.mark.parametrize(("table", "name"), FIELDS, ids=FIELD_IDS)
def test_every_field_is_refused_alike_in_code_and_in_settings(tmp_path: Path, table: str, name: str) -> None:
    """-1 is out of range for every field: the group and the settings loader refuse it with the same words."""
    group = GROUPS[table]
    with pytest.raises(OptionError) as info:
        group(**{name: -1})
    in_code = str(info.value)
    assert in_code.startswith(f"{group.__name__}.{name} = -1: ") and "\n" not in in_code
    user = tmp_path / "bad.toml"
    user.write_text(f"[default.{table}]\n{name} = -1\n")
    with pytest.raises(SettingsError) as settings_info:
        load_settings([user])
    assert settings_info.value.errors == [f"{table}.{name} = -1: {in_code.split(': ', 1)[1]}"]


@pytest.mark.parametrize(("table", "name"), FIELDS, ids=FIELD_IDS)
def test_settings_toml_the_groups_and_the_rules_agree(table: str, name: str) -> None:
    """settings.toml's [default.<group>] value is the field's default, and the rule for it is the field's constraint."""
    group = GROUPS[table]
    written = tomllib.loads(default_settings_file().read_text())["default"][table]
    spec = next(spec for spec in dataclasses.fields(group) if spec.name == name)
    assert name in written, f"{table}.{name} is missing from settings.toml"
    value = written[name]
    assert getattr(group(**{name: value}), name) == spec.default, f"{table}.{name}: {value!r} != {spec.default!r}"
    assert _kind(value) == _kind(spec.default), f"{table}.{name}: {value!r} is not written as {spec.default!r} is"
    rules = {rule.key: rule.constraint for rule in RULES}
    assert rules[f"{table}.{name}"] is constraint_of(group, name)


def test_settings_tables_name_only_the_groups_fields() -> None:
    """No [default.<group>] key in settings.toml is missing from its group, and no rule for a group key is extra."""
    written = tomllib.loads(default_settings_file().read_text())["default"]
    for table, group in GROUPS.items():
        names = {spec.name for spec in dataclasses.fields(group)}
        assert set(written[table]) == names, table
        assert {rule.key for rule in RULES if rule.key.startswith(f"{table}.")} == {f"{table}.{n}" for n in names}


def test_every_environment_table_builds_its_groups() -> None:
    """The [testing] and [production] overrides in settings.toml build valid groups too."""
    for env in ("development", "testing", "production"):
        settings = load_settings(env=env)
        for table, group in GROUPS.items():
            assert isinstance(from_table(group, settings[table]), group)
