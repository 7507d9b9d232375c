"""Load and validate settings: the only module that imports dynaconf.

Layers, later wins:

1. the packaged defaults (the project's ``settings.toml``),
2. the files named by ``load_settings(files=...)``, the CLI's ``--settings FILE`` or
   ``ORDERFLOW_SETTINGS_FILES`` (comma separated),
3. ``ORDERFLOW_``-prefixed environment variables, ``__`` for nesting
   (``ORDERFLOW_REPORTING__SLOW_HOOK_MS=20``), values parsed as TOML.

Each file has a ``[default]`` table and optional ``[development]``, ``[testing]`` and
``[production]`` tables; ``ORDERFLOW_ENV`` picks one (``development`` unless set).
Tables merge key by key; any other value, lists included, replaces the earlier one.
Every rule (:mod:`.rules`) is checked with dynaconf's ``validate_all()`` and every error is reported at once.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dynaconf import Dynaconf, ValidationError, Validator

from .errors import SettingsError
from .rules import MOVED, RULES

__all__ = ["ENVIRONMENTS", "Settings", "SettingsError", "default_settings_file", "load_settings"]

ENVIRONMENTS = ("development", "testing", "production")
ENV_PREFIX = "ORDERFLOW"
# Keys dynaconf or our own loader consume; they are not settings.
_NOT_SETTINGS = {"LOAD_DOTENV", "ENV", "SETTINGS_FILES"}
# Tables whose keys belong to third-party plugins; their unknown keys are not typos.
_OPEN_TABLES = ("hooks",)


class Settings(Mapping[str, Any]):
    """Validated, read-only settings: ``settings.reporting.slow_hook_ms`` or ``settings["reporting"]``."""

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
        hint = f" (it moved to {MOVED[key]})" if key in MOVED else f" (did you mean {close[0]}?)" if close else ""
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
