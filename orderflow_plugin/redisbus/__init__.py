"""Redis Streams between collectors and bots: one collector per symbol set, many bots, exactly once.

``orderflow collect --to redis://...`` (or the bundled ``redis`` plugin) writes; ``OrderFlow(...,
feed=RedisSource(url))`` or ``orderflow stream --from redis://...`` reads. redis-py is imported
only by the modules that talk to Redis, so this package imports without it. See docs/scale-out.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_source"]


def as_source(source: Any) -> Any:
    """``source`` as a RedisSource: a redis:// URL is made one; None (read Binance) and objects pass."""
    if source is None or not isinstance(source, str):
        return source
    from .source import RedisSource

    return RedisSource(source)
