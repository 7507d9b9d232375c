"""Rename a Redis's orderflow keys to the hash-tagged layout, once: ``python -m orderflow_plugin.redisbus.migrate URL``.

Before the Cluster layout (docs/scale-out.md) a symbol's keys were ``orderflow:spot:BTCUSDT:trades``
and the like; now they are ``orderflow:{spot:BTCUSDT}:trades``, one Cluster slot per symbol. Stop
the collectors and bots, run this against the one server that holds the old keys, start them again.
Each ``RENAMENX`` is atomic and never overwrites a key of the new layout: such a pair is named and
left alone. Collectors and bots refuse to start, in one line pointing here, while old keys remain.
"""

from __future__ import annotations

import asyncio
import re
import sys

from .client import connect, describe, redacted
from .url import RedisFeedError

__all__ = ["legacy_keys", "migrate"]

_LEGACY = re.compile(r"^orderflow:(spot|usdm):([A-Z0-9]+):(trades|whales|gaps|bars:[0-9a-z]+)$")


def tagged(key: str) -> str | None:
    """The hash-tagged name of an old-layout key, else None."""
    match = _LEGACY.match(key)
    return f"orderflow:{{{match[1]}:{match[2]}}}:{match[3]}" if match else None


async def legacy_keys(client: object) -> list[str]:
    """The old-layout orderflow keys a server holds."""
    found = [key.decode() if isinstance(key, bytes) else key
             async for key in client.scan_iter(match="orderflow:*", count=1000)]  # type: ignore[attr-defined]
    return sorted(key for key in found if tagged(key))


async def migrate(url: str) -> tuple[int, list[str]]:
    """Rename every old-layout key at ``url``; returns how many moved and the ones left (new name taken)."""
    client = connect(url)
    moved, left = 0, []
    try:
        for key in await legacy_keys(client):
            new = tagged(key)
            assert new is not None
            if await client.renamenx(key, new):
                moved += 1
            else:
                left.append(f"{key} (both it and {new} exist)")
    finally:
        await client.aclose()
    return moved, left


def main(argv: list[str] | None = None) -> int:
    """The command: one line of result, exit 1 if a key could not move, 2 on a bad URL or a dead server."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orderflow_plugin.redisbus.migrate redis://HOST:PORT/DB", file=sys.stderr)
        return 2
    try:
        moved, left = asyncio.run(migrate(args[0]))
    except RedisFeedError as exc:
        print(f"orderflow migrate: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a dead server, a refused password: one line
        print(f"orderflow migrate: {redacted(args[0])}: {describe(exc)}", file=sys.stderr)
        return 2
    print(f"orderflow migrate: {redacted(args[0])}: {moved} keys renamed to the hash-tagged layout"
          + (f"; left alone: {', '.join(left)}" if left else ""))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
