"""Load and validate settings: the only module that imports dynaconf.

Layers, later wins:

1. the packaged defaults (the project's ``settings.toml``),
2. the files named by ``load_settings(files=...)``, the CLI's ``--settings FILE`` or
   ``ORDERFLOW_SETTINGS_FILES`` (comma separated),
3. ``ORDERFLOW_``-prefixed environment variables, ``__`` for nesting
   (``ORDERFLOW_PLUGINS__SLOW_HOOK_MS=20``), values parsed as TOML.

Each file has a ``[default]`` table and optional ``[development]``, ``[testing]`` and
``[production]`` tables; ``ORDERFLOW_ENV`` picks one (``development`` unless set).
Tables merge key by key; any other value, lists included, replaces the earlier one.
Every rule is checked with dynaconf's ``validate_all()`` and every error is reported at once.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from dynaconf import Dynaconf, ValidationError, Validator

from .errors import SettingsError
from .symbols import SYMBOL_PATTERN
from .tls import client_context

__all__ = ["ENVIRONMENTS", "RULES", "Rule", "Settings", "default_settings_file", "load_settings"]

ENVIRONMENTS = ("development", "testing", "production")
ENV_PREFIX = "ORDERFLOW"
# Keys dynaconf or our own loader consume; they are not settings.
_NOT_SETTINGS = {"LOAD_DOTENV", "ENV", "SETTINGS_FILES"}
# Tables whose keys belong to third-party plugins; their unknown keys are not typos.
_OPEN_TABLES = ("hooks",)


@dataclass(frozen=True)
class Rule:
    """One setting: its dotted key, the check it must pass, and the words for what is allowed."""

    key: str
    check: Callable[[Any], bool]
    allowed: str
    cast: Callable[[Any], Any] | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(key: str, low: float, high: float, *, low_open: bool = False) -> Rule:
    """A number in ``[low, high]`` (or ``(low, high]`` with ``low_open``)."""
    bracket = "(" if low_open else "["

    def check(value: Any) -> bool:
        if not _is_number(value):
            return False
        return (value > low if low_open else value >= low) and value <= high

    return Rule(key, check, f"a number in {bracket}{low:g}, {high:g}]")


def integer(key: str, low: int, high: int) -> Rule:
    """A whole number in ``[low, high]``."""

    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return Rule(key, check, f"a whole number in [{low}, {high}]")


def boolean(key: str) -> Rule:
    """``true`` or ``false``."""
    return Rule(key, lambda value: isinstance(value, bool), "true or false")


def choice(key: str, *values: str, cast: Callable[[Any], Any] | None = None) -> Rule:
    """One of ``values``."""
    return Rule(key, lambda value: value in values, f"one of {', '.join(values)}", cast)


def text(key: str, *, empty: bool = False) -> Rule:
    """A string (non-empty unless ``empty``)."""
    return Rule(
        key,
        lambda value: isinstance(value, str) and (empty or bool(value.strip())),
        "a string" if empty else "a non-empty string",
    )


def _split_commas(value: Any) -> Any:
    # Environment overrides may give "a,b" instead of a TOML list.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def string_list(key: str) -> Rule:
    """A list of strings (a comma-separated string is accepted too)."""
    return Rule(
        key,
        lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
        "a list of strings",
        _split_commas,
    )


def _upper_symbols(value: Any) -> Any:
    value = _split_commas(value)
    if isinstance(value, list):
        return [v.strip().upper() if isinstance(v, str) else v for v in value]
    return value


_SYMBOL = re.compile(SYMBOL_PATTERN)


def symbol_list(key: str) -> Rule:
    """A non-empty list of distinct symbols matching ``SYMBOL_PATTERN``, any case."""

    def check(value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) > 0
            and len(set(value)) == len(value)
            and all(isinstance(v, str) and _SYMBOL.match(v) for v in value)
        )

    return Rule(key, check, f"a non-empty list of distinct symbols matching {SYMBOL_PATTERN}", _upper_symbols)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def url(key: str, *schemes: str, empty: bool = False) -> Rule:
    """A URL starting with one of ``schemes`` (or "" when ``empty``)."""

    def check(value: Any) -> bool:
        return isinstance(value, str) and (value.startswith(schemes) or (empty and value == ""))

    allowed = " or ".join(f"{s}..." for s in schemes) + (' or ""' if empty else "")
    return Rule(key, check, f"a URL starting with {allowed}")


_WS = ("ws://", "wss://")
_HTTP = ("http://", "https://")

def _windows_ok(value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    lengths = []
    for item in value:
        match = isinstance(item, str) and re.fullmatch(r"([1-9][0-9]*)([smhd])", item)
        if not match:
            return False
        lengths.append(int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)])
    return len(set(lengths)) == len(lengths)


def _decimal_text_ok(value: Any) -> bool:
    if value == "":
        return True
    if not isinstance(value, str):
        return False
    try:
        return Decimal(value).is_finite() and Decimal(value) > 0
    except InvalidOperation:
        return False


def _ca_file_ok(value: Any) -> bool:
    if value == "":
        return True
    if not isinstance(value, str):
        return False
    try:
        client_context(value)
    except ValueError:
        return False
    return True


RULES: tuple[Rule, ...] = (
    symbol_list("symbols"),
    choice("market", "spot", "usdm"),
    url("endpoints.spot.ws_url", *_WS),
    url("endpoints.spot.rest_url", *_HTTP),
    url("endpoints.usdm.ws_url", *_WS),
    url("endpoints.usdm.rest_url", *_HTTP),
    url("connector.ws_url", *_WS, empty=True),
    url("connector.rest_url", *_HTTP, empty=True),
    Rule("connector.ca_file", _ca_file_ok, 'a readable PEM CA bundle file, or "" for the system trust store only'),
    number("connector.resolve_timeout", 0, 300, low_open=True),
    number("connector.tcp_connect_timeout", 0, 300, low_open=True),
    number("connector.tls_timeout", 0, 300, low_open=True),
    number("connector.http_upgrade_timeout", 0, 300, low_open=True),
    number("connector.subscribed_timeout", 0, 300, low_open=True),
    number("connector.first_message_timeout", 0, 3600, low_open=True),
    number("connector.ping_interval", 0, 3600),
    number("connector.ping_timeout", 0, 3600, low_open=True),
    number("connector.close_timeout", 0, 300, low_open=True),
    integer("connector.max_size", 1024, 2**30),
    choice("connector.transport", "websockets", "fast"),
    number("connector.stall_timeout", 0, 86_400, low_open=True),
    number("connector.silence_floor", 0, 3600, low_open=True),
    number("connector.backoff_initial", 0, 3600, low_open=True),
    number("connector.backoff_max", 0, 86_400, low_open=True),
    number("connector.backoff_factor", 1, 100),
    integer("connector.max_attempts", 0, 1_000_000),
    number("connector.max_connection_age", 1, 86_400),
    integer("connector.streams_per_connection", 1, 1024),
    integer("connector.connections_per_5min", 1, 300),
    number("sequence.reorder_window", 0, 60),
    boolean("sequence.backfill"),
    integer("sequence.max_buffered_trades", 1, 100_000_000),
    number("sequence.rest_timeout", 0, 300, low_open=True),
    integer("sequence.rest_retries", 0, 100),
    integer("sequence.rest_weight_per_minute", 1, 1_000_000),
    integer("sequence.history_size", 0, 100_000_000),
    number("sequence.history_age", 0, 86_400 * 30),
    integer("sequence.start_from_id", 0, 2**62),
    text("sequence.checkpoint_path", empty=True),
    number("sequence.checkpoint_interval", 0, 3600, low_open=True),
    number("diagnostics.loop_block_threshold", 0, 3600),
    number("diagnostics.stage_warning", 0, 1),
    boolean("flow.enabled"),
    Rule("flow.windows", _windows_ok, 'a non-empty list of distinct windows like "1s", "1m", "5m", "1h"'),
    Rule("flow.footprint_tick", _decimal_text_ok, 'a positive decimal as a string, e.g. "10" or "0.5", or ""'),
    number("flow.value_area", 0, 1, low_open=True),
    number("flow.whale_notional", 0, 1e15),
    number("flow.whale_percentile", 0, 100),
    integer("flow.whale_window", 10, 1_000_000),
    number("flow.bar_close_grace", 0, 3600),
    number("flow.snapshot_interval", 0, 3600, low_open=True),
    choice("logging.level", "DEBUG", "INFO", "WARNING", "ERROR", cast=_upper),
    string_list("plugins.hooks_dirs"),
    boolean("plugins.entry_points"),
    string_list("plugins.allow"),
    string_list("plugins.deny"),
    number("plugins.slow_hook_ms", 0, 60_000, low_open=True),
    number("plugins.report_interval", 0, 86_400),
    integer("plugins.async_queue_size", 1, 10_000_000),
    number("demo.speed", 0, 1_000_000, low_open=True),
    number("demo.duration", 0, 86_400),
    boolean("hooks.diagnostics.enabled"),
    boolean("hooks.whale_alert.enabled"),
    number("hooks.whale_alert.min_notional", 0, 1e15, low_open=True),
    boolean("hooks.recorder.enabled"),
    text("hooks.recorder.path"),
    integer("hooks.recorder.max_bytes", 1024, 2**40),
    integer("hooks.recorder.backups", 0, 1000),
    boolean("hooks.prometheus.enabled"),
    text("hooks.prometheus.host"),
    integer("hooks.prometheus.port", 0, 65535),
)


class Settings(Mapping[str, Any]):
    """Validated, read-only settings: ``settings.plugins.slow_hook_ms`` or ``settings["plugins"]``."""

    __slots__ = ("_data", "env", "sources")

    def __init__(self, data: Mapping[str, Any], env: str = "development", sources: Sequence[str] = ()) -> None:
        self._data = dict(data)
        self.env = env
        self.sources = tuple(sources)

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, dict):
            return Settings(value, self.env, self.sources)
        return value

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Settings({self._data!r}, env={self.env!r})"

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain dicts and lists."""
        return _plain(self._data)


def default_settings_file() -> Path:
    """The packaged defaults: inside the wheel, or the project root in a source checkout."""
    packaged = Path(__file__).with_name("settings.toml")
    return packaged if packaged.is_file() else Path(__file__).resolve().parent.parent / "settings.toml"


def load_settings(
    files: Sequence[str | os.PathLike[str]] = (),
    *,
    env: str | None = None,
) -> Settings:
    """Load the layered settings, validate them all, and raise SettingsError listing every error."""
    environ = os.environ
    env = (env or environ.get(f"{ENV_PREFIX}_ENV") or "development").lower()
    extra = environ.get(f"{ENV_PREFIX}_SETTINGS_FILES", "")
    paths = [default_settings_file(), *(Path(f) for f in files)]
    paths += [Path(p.strip()) for p in extra.split(",") if p.strip()]

    errors: list[str] = []
    if env not in ENVIRONMENTS:
        errors.append(f"ORDERFLOW_ENV = {env!r}: must be one of {', '.join(ENVIRONMENTS)}")
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            errors.append(f"settings file {path}: cannot be read ({exc.strerror or exc})")
            continue
        except tomllib.TOMLDecodeError as exc:
            errors.append(f"settings file {path}: not valid TOML: {exc}")
            continue
        for name in tables:
            if name not in ("default", *ENVIRONMENTS):
                errors.append(
                    f"settings file {path}: top-level table [{name}] is not one of "
                    f"[default], {', '.join(f'[{e}]' for e in ENVIRONMENTS)}"
                )
        for name in ("default", env):
            table = tables.get(name, {})
            if isinstance(table, dict):
                _merge(merged, table)

    sources = [str(p) for p in paths] + [f"environment {ENV_PREFIX}_*"]
    data = _validate(merged, errors)
    if errors:
        raise SettingsError(errors, sources)
    return Settings(data, env, sources)


def _validate(merged: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """Apply environment overrides through dynaconf and run every rule; append errors."""
    try:
        dyn = Dynaconf(
            envvar_prefix=ENV_PREFIX,
            environments=False,
            load_dotenv=False,
            ignore_unknown_envvars=False,
            **{key.upper(): value for key, value in merged.items()},
        )
        for rule in RULES:
            allowed = rule.allowed.replace("{", "{{").replace("}", "}}")  # messages go through str.format
            dyn.validators.register(
                Validator(
                    rule.key,
                    must_exist=True,
                    condition=rule.check,
                    cast=rule.cast,
                    messages={
                        "condition": f"{{name}} = {{value!r}}: must be {allowed}",
                        "must_exist_true": f"{{name}} is missing: must be {allowed}",
                    },
                )
            )
        failures = dyn.validators.validate_all(raise_error=False, only_current_env=True)
        data = _plain({k: v for k, v in dyn.as_dict().items() if k.upper() not in _NOT_SETTINGS})
    except ValidationError as exc:  # raised outside validate_all by dynaconf's own checks
        errors.append(str(exc))
        return {}
    errors.extend(str(failure).replace(" in env main", "") for failure in failures)
    errors.extend(_unknown_keys(data))
    return data


def _unknown_keys(data: Mapping[str, Any]) -> list[str]:
    """Name keys no rule knows, with the nearest known key, so typos do not pass silently."""
    known = {rule.key for rule in RULES}
    tables = {key.rsplit(".", 1)[0] for key in known if "." in key}
    found = []
    for key in _dotted_keys(data):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if key in known or (key.startswith(_OPEN_TABLES) and parent not in tables):
            continue
        if key in tables:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        found.append(f"{key}: unknown setting{hint}")
    return found


def _dotted_keys(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _dotted_keys(value, f"{dotted}.")
        else:
            yield dotted


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Merge tables key by key; any other value (lists too) replaces the old one."""
    for key, value in new.items():
        key = key.lower()
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = _plain(value)


def _plain(value: Any) -> Any:
    """Deep-copy into plain dicts (lower-case keys) and lists."""
    if isinstance(value, Mapping):
        return {str(k).lower(): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
