"""Load and validate settings: the only module that imports dynaconf.

Layers, later wins:

1. the packaged defaults (the project's ``settings.toml``),
2. the files named by ``load_settings(files=...)``, the CLI's ``--settings FILE`` or
   ``ORDERFLOW_SETTINGS_FILES`` (comma separated),
3. ``ORDERFLOW_``-prefixed environment variables, ``__`` for nesting
   (``ORDERFLOW_REPORTING__SLOW_HOOK_MS=20``), values parsed as TOML.

Each file has a ``[default]`` table and optional ``[development]``, ``[testing]`` and
``[production]`` tables; ``ORDERFLOW_ENV`` picks one (``development`` unless set). A setting
outside them is an error that says so. Tables merge key by key; any other value, lists included,
replaces the earlier one. A relative ``plugins.hooks_dirs`` folder is relative to the file that
names it. Every rule (:mod:`.rules`) is checked with dynaconf's ``validate_all()`` and every error
is reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from dynaconf import Dynaconf, DynaconfFormatError, DynaconfParseError, ValidationError, Validator

from .errors import SettingsError
from .options import GROUPS
from .rules import MOVED, RENAMED, RULES, Rule

__all__ = ["ENTRY_POINT_GROUP", "ENVIRONMENTS", "Settings", "SettingsError", "StreamFacts", "default_settings_file",
           "load_settings"]

logger = logging.getLogger("orderflow_plugin.config")

ENVIRONMENTS = ("development", "testing", "production")
# Where installed plugins are found (plugins.py loads them); here, so that settings can check
# ``hooks.<name>`` tables against them without importing plugins.py, which imports this module.
ENTRY_POINT_GROUP = "orderflow_plugin"
ENV_PREFIX = "ORDERFLOW"
# Keys dynaconf or our own loader consume; they are not settings.
_NOT_SETTINGS = {"LOAD_DOTENV", "ENV", "SETTINGS_FILES", "PURE"}  # ORDERFLOW_PURE: hotpath.py
# Tables whose keys belong to third-party plugins; their unknown keys are not typos.
_OPEN_TABLES = ("hooks",)
# Names that belong inside [default]: at the top of a file, they were meant to go in it.
_TOP_LEVEL_NAMES = {rule.key.split(".", 1)[0] for rule in RULES} | set(_OPEN_TABLES)


class StreamFacts(Protocol):
    """What settings read of a built stream (an OrderFlow) to name what it really runs."""

    symbols: tuple[str, ...]
    market: str
    ws_url: str
    rest_url: str
    reader: str
    timeouts: Any  # the option groups: one frozen dataclass each (options.py), written as their tables
    reconnect: Any
    limits: Any
    sequencing: Any
    flow: Any
    reporting: Any


class Settings(Mapping[str, Any]):
    """Validated, read-only settings: ``settings.reporting.slow_hook_ms`` or ``settings["reporting"]``.

    A missing key raises AttributeError naming its dotted path, except a plugin's table under
    ``hooks`` that no file wrote: ``settings.hooks.my_plugin`` is then an empty table, so
    ``settings.hooks.my_plugin.get("threshold", 5)`` works with or without a ``[default.hooks.my_plugin]``.
    Item access (``settings["hooks"]["my_plugin"]``, ``in``) sees only what is really there.
    """

    __slots__ = ("_data", "_path", "env", "sources")

    def __init__(
        self, data: Mapping[str, Any], env: str = "development", sources: Sequence[str] = (), *, path: str = ""
    ) -> None:
        self._data = dict(data)
        self._path = path
        self.env = env
        self.sources = tuple(sources)

    @classmethod
    def defaults_for(cls, flow: StreamFacts) -> Settings:
        """The settings of a stream built without them, for its ``on_startup``.

        The packaged defaults (their ``[default]`` tables only: no user file, no ``ORDERFLOW_``
        variable), with the stream's own symbols, market, URLs, frame reader and option groups
        written over them.
        """
        errors: list[str] = []
        path = default_settings_file()
        data = _plain(_file_tables(path, errors).get("default", {}))
        if errors:
            raise SettingsError(errors, [str(path)])
        _write_stream(data, flow)
        return cls(data, "development", [str(path), "the OrderFlow(...) arguments"])

    def as_run_by(self, flow: StreamFacts) -> Settings:
        """These settings with what ``flow`` really runs written over them: its symbols, market, URLs and groups.

        ``OrderFlow.from_settings(settings, symbols=[...])`` hands these to ``on_startup``, so a plugin (and the
        start log) names the symbols streamed, not the file's.
        """
        data = self.to_dict()
        _write_stream(data, flow)
        return Settings(data, self.env, self.sources, path=self._path)

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if isinstance(value, dict):
            return Settings(value, self.env, self.sources, path=self._dotted(key))
        return value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # never a setting; also keeps copy and pickle from recursing into _data
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            if self._path in _OPEN_TABLES or (not self._path and key in _OPEN_TABLES):
                return Settings({}, self.env, self.sources, path=self._dotted(key))
            raise AttributeError(f"no setting {self._dotted(key)!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Settings({self._data!r}, env={self.env!r})"

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain dicts and lists."""
        return _plain(self._data)

    def _dotted(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key


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
        tables = _file_tables(path, errors)
        for name in ("default", env):
            table = tables.get(name, {})
            if isinstance(table, dict):
                _merge(merged, table)

    sources = [str(p) for p in paths] + [f"environment {ENV_PREFIX}_*"]
    data = _validate(merged, errors)
    if errors:
        raise SettingsError(errors, sources)
    return Settings(data, env, sources)


def _file_tables(path: Path, errors: list[str]) -> dict[str, Any]:
    """The top-level tables of one settings file, hooks folders made absolute; append what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM, as some editors write, is fine
        tables = tomllib.loads(text)
    except OSError as exc:
        errors.append(f"settings file {path}: cannot be read ({exc.strerror or exc})")
        return {}
    except UnicodeDecodeError as exc:  # UTF-16 from a Windows editor, or a binary file
        errors.append(f"settings file {path}: not UTF-8 (byte {exc.object[exc.start]:#04x} at {exc.start}); "
                      "a settings file must be UTF-8 TOML")
        return {}
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"settings file {path}: not valid TOML: {_with_line(text, str(exc))}")
        return {}
    except RecursionError:  # a = [[[[... thousands deep
        errors.append(f"settings file {path}: not valid TOML: nested too deeply")
        return {}
    outside = [name for name, value in tables.items()
               if name not in ("default", *ENVIRONMENTS) and (name in _TOP_LEVEL_NAMES or not isinstance(value, dict))]
    if outside:
        named = ", ".join(f"[{name}]" if isinstance(tables[name], dict) else name for name in outside)
        table = next((name for name in outside if isinstance(tables[name], dict)), None)
        hint = f", and tables as [default.{table}]" if table else ""
        errors.append(f"settings file {path}: {named} {'is' if len(outside) == 1 else 'are'} outside [default]: "
                      f"a settings file puts its settings under [default] (or [{'], ['.join(ENVIRONMENTS)}]){hint}")
    for name, value in tables.items():
        if name in outside:
            continue
        if name not in ("default", *ENVIRONMENTS):
            errors.append(
                f"settings file {path}: top-level table [{name}] is not one of "
                f"[default], {', '.join(f'[{e}]' for e in ENVIRONMENTS)}"
            )
        elif isinstance(value, dict):
            _resolve_hooks_dirs(value, path.parent)
            _read_renamed(value, f"settings file {path} [{name}]")
    return tables


def _with_line(text: str, message: str) -> str:
    """tomllib's message, with the line an unclosed array, table or string starts on instead of "end of document"."""
    if not message.endswith("(at end of document)"):
        return message  # tomllib names the line and column
    lines = text.splitlines(keepends=True)
    for count in range(1, len(lines) + 1):  # the first prefix that fails ends inside what is never closed
        try:
            tomllib.loads("".join(lines[:count]))
        except tomllib.TOMLDecodeError:
            return message.replace("(at end of document)", f"(at end of document: it opens on line {count})")
    return message


def _variable(key: str) -> str:
    """The environment variable of a dotted key: ``connector.reader`` -> ``ORDERFLOW_CONNECTOR__READER``."""
    return f"{ENV_PREFIX}_{key.upper().replace('.', '__')}"


def _read_renamed(table: dict[str, Any], where: str) -> None:
    """Move a key read under its old name (:data:`.rules.RENAMED`) to its new one, and say so once."""
    for old, new in RENAMED.items():
        *parents, key = old.split(".")
        node: Any = table
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            value = node.pop(key)
            node.setdefault(new.rsplit(".", 1)[1], value)  # both written: the new name wins
            logger.warning("%s: %s is now %s; the old name is read until the next release", where, old, new)


def _resolve_hooks_dirs(table: dict[str, Any], folder: Path) -> None:
    """Make ``plugins.hooks_dirs`` entries relative to ``folder``, the settings file's, not the working directory."""
    plugins = table.get("plugins")
    dirs = plugins.get("hooks_dirs") if isinstance(plugins, dict) else None
    if isinstance(dirs, list):
        plugins["hooks_dirs"] = [os.path.abspath(folder / Path(d).expanduser()) if isinstance(d, str) else d
                                 for d in dirs]


def _setting(value: Any, default: Any) -> Any:
    """An option group's field as the settings file would write it (lists, and decimals as the default's type)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Decimal):
        if isinstance(default, str):
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    return value


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
        for old, new in RENAMED.items():  # the files' old names were moved as they were read; this is the environment's
            legacy = dyn.get(old)
            if legacy is not None:
                logger.warning("environment %s: %s is now %s; the old name is read until the next release",
                               _variable(old), old, new)
                if _variable(new) not in os.environ:  # both set: the new name wins
                    dyn.set(new, legacy)
        rule_of: dict[int, Rule] = {}
        for rule in RULES:
            allowed = rule.constraint.allowed.replace("{", "{{").replace("}", "}}")  # messages go through str.format
            validator = Validator(
                rule.key,
                must_exist=True,
                condition=rule.constraint.check,
                cast=rule.constraint.cast,
                messages={
                    "condition": f"{{name}} = {{value!r}}: must be {allowed}",
                    "must_exist_true": f"{{name}} is missing: must be {allowed}",
                },
            )
            rule_of[id(validator)] = rule
            dyn.validators.register(validator)
        failures = dyn.validators.validate_all(raise_error=False, only_current_env=True)
        data = _plain({k: v for k, v in dyn.as_dict().items() if k.upper() not in _NOT_SETTINGS})
        for old in RENAMED:
            *parents, key = old.split(".")
            node = data
            for part in parents:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(key, None)
    except ValidationError as exc:  # raised outside validate_all by dynaconf's own checks
        errors.append(str(exc))
        return {}
    except _CONVERTER_ERRORS:  # ORDERFLOW_X='@int x': a dynaconf converter refused the value
        found = _bad_converters(merged)
        if not found:
            raise  # not an environment value's fault: a bug, with its traceback
        errors.extend(found)
        return {}
    for failure in failures:
        rule = rule_of.get(id(failure.details[0][0])) if failure.details else None
        errors.append(_explained(rule, data) or str(failure).replace(" in env main", ""))
    errors.extend(_unknown_keys(data))
    return data


# What dynaconf raises for an environment value whose converter (@int, @json, @format, @get, @read_file,
# @jinja without jinja2 installed, ...) cannot make a value of it.
_CONVERTER_ERRORS = (DynaconfParseError, DynaconfFormatError, OSError, ImportError, ValueError)


def _bad_converters(merged: dict[str, Any]) -> list[str]:
    """Each ``ORDERFLOW_`` variable whose dynaconf converter fails, with why, one line each."""
    found = []
    for name, value in sorted(os.environ.items()):
        key = name.removeprefix(f"{ENV_PREFIX}_")
        if key == name or key in _NOT_SETTINGS or not value.lstrip().startswith("@"):
            continue
        # A fresh instance per variable, reading no environment: this one variable decides.
        probe = Dynaconf(envvar_prefix=None, environments=False, load_dotenv=False,
                         **{k.upper(): v for k, v in merged.items()})
        try:
            probe.set(key, value, tomlfy=True)
        except _CONVERTER_ERRORS as exc:
            found.append(f"environment {name} = {value!r}: {_one_line(exc)}")
    return found


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _explained(rule: Rule | None, data: Mapping[str, Any]) -> str | None:
    """The error naming the part of the value at fault, for a rule that can tell (``flow.windows``'s bad window)."""
    if rule is None or rule.constraint.explain is None:
        return None
    value: Any = data
    for part in rule.key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None  # missing: dynaconf's message says so
        value = value[part]
    cast = rule.constraint.cast
    reason = rule.constraint.explain(cast(value) if cast else value)
    return f"{rule.key} = {value!r}: {reason}" if reason else None


def _unknown_keys(data: Mapping[str, Any]) -> list[str]:
    """Name keys no rule knows, with the nearest known key, so typos do not pass silently."""
    known = {rule.key for rule in RULES}
    tables = {key.rsplit(".", 1)[0] for key in known if "." in key}
    found = []
    for name in sorted({key.split(".")[1] for key in _dotted_keys(data) if key.startswith("hooks.")}):
        if f"hooks.{name}" not in tables:  # another plugin's table, or a typo for one of ours
            found.extend(_misspelt_plugin(name, tables, data))
    for key in _dotted_keys(data):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if key in known or (key.startswith(_OPEN_TABLES) and parent not in tables):
            continue
        if key in tables:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (it moved to {MOVED[key]})" if key in MOVED else f" (did you mean {close[0]}?)" if close else ""
        found.append(f"{key}: unknown setting{hint}")
    return found


def _misspelt_plugin(name: str, tables: set[str], data: Mapping[str, Any]) -> list[str]:
    """``hooks.whale_alrt``: a table near a bundled plugin's name, for no plugin installed or in a hooks folder."""
    ours = sorted(table.split(".")[1] for table in tables if table.startswith("hooks."))
    close = difflib.get_close_matches(name, ours, n=1, cutoff=0.8)
    if not close:
        return []  # a third-party plugin's table: passed through untouched
    import importlib.metadata

    plugins = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    folders = data.get("plugins", {}).get("hooks_dirs", [])
    plugins.update(path.stem for folder in folders if isinstance(folder, str) for path in Path(folder).glob("*.py"))
    if name in plugins:
        return []
    return [f"hooks.{name}: no plugin of that name (did you mean hooks.{close[0]}?)"]


def _dotted_keys(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _dotted_keys(value, f"{dotted}.")
        else:
            yield dotted


def _write_stream(data: dict[str, Any], flow: StreamFacts) -> None:
    """Write ``flow``'s symbols, market, connector and option groups over the plain settings ``data``."""
    _merge(data, {"symbols": list(flow.symbols), "market": flow.market,
                  "connector": {"ws_url": flow.ws_url, "rest_url": flow.rest_url, "reader": flow.reader}})
    for name in GROUPS:
        defaults = data.get(name, {})
        data[name] = {**defaults, **{key: _setting(value, defaults.get(key))
                                     for key, value in dataclasses.asdict(getattr(flow, name)).items()}}


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
