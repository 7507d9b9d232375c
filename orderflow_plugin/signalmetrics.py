"""The footprint signals' values: one :class:`~.models.Metric` kind per signal (docs/metrics.md).

They reach plugins like bars do, through ``on_metric`` and the ``metric`` signal; ``metric.kind``
says which. Prices and volumes are exact Decimals; a footprint level is named by its bucket's
lower price (``footprint_tick`` wide).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from .metrics import Footprint
from .models import Metric, Side

__all__ = [
    "SIGNAL_KINDS", "Absorption", "DeltaDivergence", "Exhaustion", "Imbalance", "NakedPoc", "SessionProfile",
    "StackedImbalance", "Sweep", "TapeSpeed", "UnfinishedAuction", "signal_from_json", "signal_json",
]


class Imbalance(Metric, frozen=True, kw_only=True):
    """The diagonal imbalances of one closed bar (only bars that have one are reported).

    ``buy``: (level, its buy volume, the sell volume one tick below); ``sell``: (level, its sell
    volume, the buy volume one tick above).
    """

    kind = "imbalance"
    window: str
    start: int
    percent: Decimal
    buy: tuple[tuple[Decimal, Decimal, Decimal], ...]
    sell: tuple[tuple[Decimal, Decimal, Decimal], ...]


class StackedImbalance(Metric, frozen=True, kw_only=True):
    """At least ``stack_length`` adjacent levels of one bar imbalanced on the same side."""

    kind = "stacked_imbalance"
    window: str
    start: int
    side: Side
    low: Decimal  # the lowest level of the stack
    high: Decimal  # the highest
    levels: int


class DeltaDivergence(Metric, frozen=True, kw_only=True):
    """Price made a new extreme that the delta did not confirm.

    ``scope="bar"``: the bar's high is over the previous bar's with a negative delta (``side="sell"``,
    bearish), or its low under the previous low with a positive delta (``side="buy"``).
    ``scope="lookback"``: the bar's high is over the highs of the previous ``lookback`` bars while its
    CVD at close is under the CVD at the close of the bar that held that high (mirrored for lows).
    """

    kind = "delta_divergence"
    window: str
    start: int
    side: Side  # the side the divergence points to: "sell" after a high, "buy" after a low
    scope: str  # "bar" or "lookback"
    price: Decimal  # the new high or low
    delta: Decimal  # the bar's delta (scope bar) or its CVD at close (scope lookback)
    against: Decimal  # the previous extreme's price
    against_delta: Decimal  # 0 (scope bar) or the CVD at the close of the previous extreme's bar


class _Extreme(Metric, frozen=True, kw_only=True):
    """What traded at a bar's extreme level (its highest or lowest footprint level)."""

    window: str
    start: int
    extreme: str  # "high" or "low"
    price: Decimal  # the extreme level
    buy_volume: Decimal
    sell_volume: Decimal


class Exhaustion(_Extreme, frozen=True, kw_only=True):
    """The extreme level holds at most ``exhaustion_share`` of the bar's volume: the push ran dry."""

    kind = "exhaustion"


class UnfinishedAuction(_Extreme, frozen=True, kw_only=True):
    """Both sides traded at the extreme level: the auction there is not finished, price tends to return."""

    kind = "unfinished_auction"


class Absorption(Metric, frozen=True, kw_only=True):
    """A proxy: heavy aggressive volume at a bar's extreme level that price did not pass.

    At the high: taker buys of at least ``absorption_share`` of the bar's volume at the top level
    (passive sellers held); at the low, taker sells at the bottom level. Real absorption needs the
    order book; aggTrades only show that the volume traded and price stopped.
    """

    kind = "absorption"
    window: str
    start: int
    extreme: str  # "high" or "low"
    price: Decimal
    volume: Decimal  # the aggressive volume held at that level
    bar_volume: Decimal


class NakedPoc(Metric, frozen=True, kw_only=True):
    """A bar's or session's POC: ``status="naked"`` when listed, ``"touched"`` when price came back."""

    kind = "naked_poc"
    source: str  # the bar window ("1m") or "session"
    start: int
    price: Decimal  # the POC bucket's lower price
    tick: Decimal
    status: str  # "naked" or "touched"
    touched_at: int = 0  # trade time of the touch, ms
    touched_id: int = 0


class Sweep(Metric, frozen=True, kw_only=True):
    """Consecutive aggregate ids with one millisecond and side crossing at least ``sweep_levels`` prices."""

    kind = "sweep"
    side: Side
    time: int
    first_id: int
    last_id: int
    levels: int  # distinct prices
    low: Decimal
    high: Decimal
    qty: Decimal
    notional: Decimal


class SessionProfile(Metric, frozen=True, kw_only=True):
    """Volume at price of one session (a UTC day by default), reported when it ends."""

    kind = "session_profile"
    start: int
    end: int
    trades: int
    profile: Footprint  # poc and value_area (VAL, VAH) computed when read

    @property
    def poc(self) -> Decimal | None:
        """The session's point of control."""
        return self.profile.poc

    @property
    def value_area(self) -> tuple[Decimal, Decimal] | None:
        """(VAL, VAH)."""
        return self.profile.value_area


class TapeSpeed(Metric, frozen=True, kw_only=True):
    """Aggregate trades in one second of trade time, and its z-score against the seconds before.

    ``mean`` and ``z`` are None until ``tape_baseline`` seconds were seen; ``z`` is None when the
    baseline does not vary. Empty seconds count as 0 in the baseline and are not reported.
    """

    kind = "tape_speed"
    start: int  # the second, ms
    trades: int
    mean: Decimal | None
    z: Decimal | None


# metric.kind of every footprint signal: what an adapter forwards as a signal
SIGNAL_KINDS = frozenset(cls.kind for cls in (
    Imbalance, StackedImbalance, DeltaDivergence, Exhaustion, UnfinishedAuction, Absorption, NakedPoc, Sweep,
    SessionProfile, TapeSpeed))

_TYPES: dict[str, type[Metric]] = {cls.kind: cls for cls in (
    Imbalance, StackedImbalance, DeltaDivergence, Exhaustion, UnfinishedAuction, Absorption, NakedPoc, Sweep,
    SessionProfile, TapeSpeed)}


def signal_json(signal: Metric) -> bytes:
    """``signal``'s fields as JSON, decimals as their exact strings (``kind`` is not in it: carry it beside).

    What the Redis streams and the nautilus data type carry; :func:`signal_from_json` reads it back.
    """
    return msgspec.json.encode(signal)


def signal_from_json(kind: str, data: bytes | str) -> Metric:
    """The ``kind`` signal :func:`signal_json` wrote, equal to the one it was made from (exact Decimals)."""
    try:
        cls = _TYPES[kind]
    except KeyError:
        raise ValueError(f"{kind!r} is not a footprint signal kind (one of {', '.join(sorted(_TYPES))})") from None
    return msgspec.json.decode(data, type=cls)
