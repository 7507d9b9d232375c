"""Bugs of the real code that the harness found and that are not fixed yet.

Each is named by the signature the harness recognises. By default every one of them fails its
seed like any other violation; ``--allow-known`` (``allow_known=True``) counts them instead, so
the rest of the invariants can be checked on the seeds where they show up. When one is fixed,
delete it here: ``tests/test_simtest.py`` replays the seed of each and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KNOWN_BUGS", "KnownBug"]


@dataclass(frozen=True)
class KnownBug:
    """A bug of the real code: a seed where it shows (``--seed S --allow-known`` counts it), and why."""

    seed: int
    diagnosis: str


KNOWN_BUGS: dict[str, KnownBug] = {
    "quiet-market-fails-first-message": KnownBug(132, (
        "With backfill off there is no REST to ask, so a connection whose symbols have no trade within "
        "timeouts.first_message still fails that stage and is reconnected, again and again while the market is "
        "quiet; trades published during the backoffs are reported lost when a later trade arrives. With REST "
        "(the default) it is fixed: half way through the stage and at its deadline the shell compares REST's "
        "newest ids, and an unmoved market keeps the connection.")),
}
