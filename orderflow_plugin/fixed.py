"""Exact fixed-point numbers for the hot path: prices and quantities as integers of 10^-8. No I/O.

Binance sends aggTrade prices and quantities as decimal strings with at most 8 decimals, so
``price * 10**8`` and ``qty * 10**8`` are integers; a notional ``price * qty`` is an integer of
10^-16. The engine sums these integers (exact, and several times cheaper than ``Decimal``) and
makes a ``Decimal`` only where a value leaves it (a bar, a footprint level, a whale, a snapshot).

Range: a price or quantity must be below ``LIMIT`` (2^63 units of 10^-8, about 9.2e10), so it
fits a signed 64-bit integer; a notional is then below 2^126 and fits a signed 128-bit one. Sums
are Python integers here, unbounded; a compiled engine must check its 128-bit sums (it does, with
overflow-checked adds). A value with more than 8 decimals, or out of range, is a
:class:`FixedPointError`, never a rounding.
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation

__all__ = ["LIMIT", "SCALE", "FixedPointError", "decimal", "from_e8", "from_e16", "parse_e8", "to_e8", "units"]

SCALE = 10**8  # units of 10^-8 per 1
# A price or quantity in units of 10^-8 is below this (a signed 64-bit integer): 2**63, written out because
# Cython folds 2**63 into a C long, where it wraps to -2**63.
LIMIT = 9_223_372_036_854_775_808
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation])  # never the host's context, never a rounding
_DIGITS = frozenset("0123456789")
_ZERO = Decimal(0)  # a side with no volume reads 0, not 0E-8
# Prices (and many quantities) repeat trade after trade. The texts seen and their Decimal, and each such Decimal's
# units: a trade decoded from a repeated text gets the same Decimal object, whose hash Python keeps, so the engine
# finds its units with one dict lookup instead of converting (hashing a new Decimal alone costs about 1 us).
# Process-wide, bounded: both start over at _CACHED entries (a few MB at most).
_CACHED = 16384
_DECIMALS: dict[str, Decimal] = {}
_UNITS: dict[Decimal, int] = {}


class FixedPointError(ArithmeticError):
    """A decimal that is not an exact number of 10^-8 below ``LIMIT`` (too many decimals, too large, negative)."""


def parse_e8(text: str) -> int:
    """``"87648.21000000"`` -> 8764821000000: the decimal string's value in units of 10^-8, exactly."""
    whole, dot, fraction = text.partition(".")
    # Plain digits only: no sign, exponent, spaces or underscores (int() would take some of those).
    if not whole or not _DIGITS.issuperset(whole) or (dot and not _DIGITS.issuperset(fraction)):
        raise FixedPointError(f"{text!r} is not a plain non-negative decimal")
    if len(fraction) > 8:
        if fraction[8:].strip("0"):
            raise FixedPointError(f"{text!r} has more than 8 decimals")
        fraction = fraction[:8]
    # Padded, not times 10 ** (8 - len): compiled, that power of two C integers would be a double.
    value = int(whole) * SCALE + int(fraction.ljust(8, "0"))
    if value >= LIMIT:
        raise FixedPointError(f"{text!r} is out of range (at most {LIMIT - 1} units of 10^-8)")
    return value


def to_e8(value: Decimal) -> int:
    """A Decimal's value in units of 10^-8, exactly; FixedPointError if it has more decimals or is out of range."""
    try:
        scaled = _EXACT.scaleb(value, 8)
        units = int(scaled)
        if units != scaled:
            raise FixedPointError(f"{value} has more than 8 decimals")
    except (InvalidOperation, OverflowError, ValueError) as exc:  # NaN, infinity
        raise FixedPointError(f"{value} is not a finite decimal") from exc
    if not 0 <= units < LIMIT:
        raise FixedPointError(f"{value} is out of range (0 to {LIMIT - 1} units of 10^-8)")
    return units


def from_e8(units: int) -> Decimal:
    """Units of 10^-8 -> Decimal, with 8 decimals (``Decimal("87648.21000000")``, as Binance writes it); 0 is ``0``."""
    return _EXACT.scaleb(Decimal(units), -8) if units else _ZERO


def from_e16(units: int) -> Decimal:
    """Units of 10^-16 (a price times a quantity) -> Decimal, with 16 decimals; 0 is ``0``."""
    return _EXACT.scaleb(Decimal(units), -16) if units else _ZERO


def decimal(text: str) -> Decimal:
    """The Decimal of a price or quantity string, exactly as written; FixedPointError unless it fits."""
    value = _DECIMALS.get(text)
    if value is None:
        units = parse_e8(text)
        value = Decimal(text)
        if len(_DECIMALS) >= _CACHED:
            _DECIMALS.clear()
        if len(_UNITS) >= _CACHED:
            _UNITS.clear()
        _DECIMALS[text] = value
        _UNITS[value] = units
    return value


def units(value: Decimal) -> int:
    """``to_e8(value)``, remembered (a Decimal from :func:`decimal` is known already)."""
    known = _UNITS.get(value)
    if known is None:
        known = to_e8(value)
        if len(_UNITS) >= _CACHED:
            _UNITS.clear()
        _UNITS[value] = known
    return known
