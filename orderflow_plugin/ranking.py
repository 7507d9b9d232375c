"""The percentile whale rule's ranking of recent notionals: exact, and cheap per trade. No I/O.

The engine ranks notionals as integers of 10^-16 (``fixed``); any totally ordered values rank the same.
"""

from __future__ import annotations

import heapq
from collections import deque

__all__ = ["Ranked"]


class Ranked:
    """The ``percentile`` of the last ``size`` notionals, exact, re-ranked every tenth of ``size``.

    Values are kept in blocks of ``every``. A block that fills keeps its ``above`` largest values
    (``above``: how many of the window are at or over the threshold, 1 for 99.9 of 1000), so a
    re-rank looks at a few values per block instead of the whole window; the threshold is the
    same value a full sort of the window gives.
    """

    __slots__ = ("above", "blocks", "current", "every", "inside", "needed", "threshold")

    def __init__(self, size: int, percentile: float) -> None:
        self.every = max(1, size // 10)
        self.above = size - min(size - 1, int(size * percentile / 100.0))
        self.needed = -(-size // self.every)  # blocks that hold the window; the oldest may be partly out
        self.inside = size - self.every * (self.needed - 1)  # how many of the oldest block are in the window
        self.blocks: deque[tuple[list[int], list[int]]] = deque()  # (values, their `above` largest)
        self.current: list[int] = []
        self.threshold: int | None = None  # None until the window has filled once

    def __len__(self) -> int:
        """How many values are held (the window, rounded up to whole blocks, and the block being filled)."""
        return sum(len(values) for values, _ in self.blocks) + len(self.current)

    def add(self, value: int) -> None:
        """Take the next notional; re-rank when it completes a block and the window is full."""
        self.current.append(value)
        if len(self.current) >= self.every:
            self.rank()

    def rank(self) -> None:
        """The block being filled is full: keep it, drop the oldest if the window is past full, re-rank."""
        current = self.current
        self.current = []
        blocks = self.blocks
        blocks.append((current, heapq.nlargest(self.above, current)))
        if len(blocks) > self.needed:
            blocks.popleft()
        elif len(blocks) < self.needed:  # the window has not filled yet
            return
        inside = self.inside
        oldest, oldest_top = blocks[0]
        candidates = oldest_top if inside == self.every else heapq.nlargest(self.above, oldest[-inside:])
        for index in range(1, len(blocks)):
            candidates = candidates + blocks[index][1]
        self.threshold = heapq.nlargest(self.above, candidates)[-1]
