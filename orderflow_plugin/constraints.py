"""What a value may be: a check, and the words for what is allowed.

Each field of an option group (:mod:`.options`) carries one :class:`Constraint`: the group refuses a
value that fails it at construction, and the settings rules (:mod:`.rules`) check the same object on the
same key. So a bad value is told the same way from code and from a file::

    Timeouts.stall = -1: must be a number in (0, 86400]
    timeouts.stall = -1: must be a number in (0, 86400]

A constraint may also ``explain`` which part of a value is wrong (``flow.windows``' bad window), and
``cast`` what an environment variable gives before it is checked (``"a,b"`` to a list).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .engine import parse_window

__all__ = [
    "Constraint", "boolean", "choice", "decimal", "integer", "number", "since", "string_list", "text", "url",
    "window", "windows",
]


@dataclass(frozen=True)
class Constraint:
    """A check a value must pass and the words for what is allowed (``"a number in (0, 300]"``).

    ``explain``, when given, says what is wrong with a value that fails the check (naming the part
    at fault), or returns None to fall back on ``allowed``. ``cast`` is applied to a setting's value
    before the check (never to a value given in code).
    """

    check: Callable[[Any], bool]
    allowed: str
    cast: Callable[[Any], Any] | None = None
    explain: Callable[[Any], str | None] | None = None

    def problem(self, value: Any) -> str | None:
        """None when ``value`` passes; else what is wrong with it, e.g. ``"must be a number in (0, 300]"``."""
        if self.check(value):
            return None
        reason = self.explain(value) if self.explain is not None else None
        return reason or f"must be {self.allowed}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(low: float, high: float, *, low_open: bool = False, exact: bool = False) -> Constraint:
    """An int or float in ``[low, high]`` (or ``(low, high]`` with ``low_open``); never a bool, NaN or infinity.

    With ``exact``, a Decimal or a decimal string is a number too (an amount of money in code).
    """
    bracket = "(" if low_open else "["

    def check(value: Any) -> bool:
        if exact and not _is_number(value):
            value = _as_decimal(value)
            if value is None:
                return False
        elif not _is_number(value):
            return False
        return (value > low if low_open else value >= low) and value <= high

    return Constraint(check, f"a number in {bracket}{low:g}, {high:g}]")


def integer(low: int, high: int) -> Constraint:
    """A whole number (an int, never a bool or float) in ``[low, high]``."""

    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return Constraint(check, f"a whole number in [{low}, {high}]")


def boolean() -> Constraint:
    """``True`` or ``False``."""
    return Constraint(lambda value: isinstance(value, bool), "true or false")


def choice(*values: str, cast: Callable[[Any], Any] | None = None) -> Constraint:
    """One of ``values``."""
    return Constraint(lambda value: isinstance(value, str) and value in values, f"one of {', '.join(values)}", cast)


def text(*, empty: bool = False) -> Constraint:
    """A string (non-empty unless ``empty``)."""
    return Constraint(
        lambda value: isinstance(value, str) and (empty or bool(value.strip())),
        "a string" if empty else "a non-empty string",
    )


def split_commas(value: Any) -> Any:
    """``"a, b"`` (an environment override) as ``["a", "b"]``; anything else as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def string_list() -> Constraint:
    """A list of strings (a comma-separated string is accepted in settings too)."""
    return Constraint(
        lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
        "a list of strings",
        split_commas,
    )


def url(*schemes: str, empty: bool = False) -> Constraint:
    """A URL starting with one of ``schemes`` (or "" when ``empty``)."""

    def check(value: Any) -> bool:
        return isinstance(value, str) and (value.startswith(schemes) or (empty and value == ""))

    allowed = " or ".join(f"{s}..." for s in schemes) + (' or ""' if empty else "")
    return Constraint(check, f"a URL starting with {allowed}")


def _windows_problem(value: Any) -> str | None:
    """The window at fault in a sequence of windows (by the engine's own grammar), or None."""
    if not isinstance(value, (list, tuple)):
        return None
    seen: dict[int, str] = {}
    for item in value:
        if not isinstance(item, str):  # the compiled parse_window takes only a str
            return f"window {item!r} is not a string like \"1m\""
        try:
            length = parse_window(item)
        except ValueError as exc:
            return str(exc)
        if length.ms in seen:
            return f"windows {seen[length.ms]!r} and {item!r} are the same length: each must differ"
        seen[length.ms] = item
    return None


def windows(*, empty: bool = False, allowed: str = 'a non-empty list of distinct windows like "1s", "1m", "5m", "1h"'
            ) -> Constraint:
    """A list (or tuple) of distinct bar lengths in the engine's grammar, non-empty unless ``empty``."""

    def check(value: Any) -> bool:
        return isinstance(value, (list, tuple)) and (empty or bool(value)) and _windows_problem(value) is None

    return Constraint(check, allowed, explain=_windows_problem)


def window(allowed: str = 'a window like "1d" or "8h"') -> Constraint:
    """One bar length in the engine's grammar."""

    def check(value: Any) -> bool:
        if not isinstance(value, str):  # the compiled parse_window takes only a str
            return False
        try:
            parse_window(value)
        except ValueError:
            return False
        return True

    return Constraint(check, allowed)


def _as_decimal(value: Any) -> Decimal | None:
    """A finite Decimal from a Decimal or a decimal string; None for anything else (floats included)."""
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if not isinstance(value, str):
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None


def decimal(*, zero: bool = False, empty: bool = False, allowed: str) -> Constraint:
    """An exact decimal, as a string or a Decimal: positive (or ``>= 0`` with ``zero``), or "" when ``empty``.

    A float is refused: ``0.1`` is not the decimal the user wrote down.
    """

    def check(value: Any) -> bool:
        if empty and value == "":
            return True
        parsed = _as_decimal(value)
        return parsed is not None and (parsed >= 0 if zero else parsed > 0)

    return Constraint(check, allowed)


def since() -> Constraint:
    """A UTC day or time in ISO form, or "" to start live."""

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        if not value:
            return True
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
        return True

    return Constraint(check, 'a UTC day or time such as "2025-11-01" or "2025-11-01T00:00Z", or "" to start live')
