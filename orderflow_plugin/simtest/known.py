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
}
