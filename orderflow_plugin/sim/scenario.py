"""Scripted faults: which WebSocket connection (1, 2, 3, ...) or REST request gets which fault.

A scenario comes from Python (``Scenario(connections=[[Fault("reset_after", after=500)], []])``)
or from a JSON or TOML file::

    [[connection]]                 # connection 1
    faults = [{kind = "reset_after", after = 500}]
    [[connection]]                 # connection 2: normal
    faults = []
    [every]                        # every connection
    faults = [{kind = "max_age", seconds = 30}]
    [[rest]]                       # the first two REST requests answer 500
    kind = "rest_status"
    status = 500
    count = 2
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["BUNDLED_SCENARIOS", "CONNECTION_FAULTS", "REST_FAULTS", "Fault", "Scenario"]

# Scenarios shipped in the package, given by name: ``--scenario faults`` is scenarios/faults.toml.
BUNDLED_SCENARIOS = Path(__file__).with_name("scenarios")

# kind -> what it does, for errors and documentation
CONNECTION_FAULTS: dict[str, str] = {
    "hang_before_handshake": "accept TCP, read the HTTP request, never answer",
    "slow_handshake": "answer the upgrade after `seconds`",
    "http_status": "answer the upgrade with `status` (429/418 with Retry-After `retry_after`, 503, ...)",
    "hang_after_handshake": "complete the upgrade, never send data, still answer pings",
    "blackhole_after": "after `after` messages send nothing and stop answering pings; TCP stays open",
    "mute_after": "after `after` messages send no more trades; still answer pings (a stream gone silent)",
    "reset_after": "abort the TCP connection (RST) after `after` messages",
    "close_after": "send a close frame with `code` after `after` messages",
    "server_shutdown_after": "send serverShutdown after `after` messages, close with 1001 `seconds` later",
    "skip_ids": "after `after` messages omit the next `count` trades (REST still has them)",
    "duplicate_ids": "after `after` messages send the last `count` trades again",
    "out_of_order": "after `after` messages send the next `count` trades in reverse order",
    "malformed_after": "after `after` messages send one bad frame (`variant`: truncated, not_json, wrong_types)",
    "oversized_frame": "after `after` messages send one frame of `size` bytes",
    "slow_drip": "write every frame `size` bytes at a time, `seconds` apart",
    "max_age": "close the connection with 1001 `seconds` after the upgrade",
}
REST_FAULTS: dict[str, str] = {
    "rest_hang": "read the request, never answer (`count` requests)",
    "rest_status": "answer `status` with Retry-After `retry_after` (`count` requests)",
    "rest_short_page": "answer aggTrades with only the first `after` rows of the page (`count` requests)",
    "rest_empty": "answer aggTrades with no rows, like a REST trailing the live stream (`count` requests)",
    "rest_slow_body": "answer, writing the response `size` bytes at a time, `seconds` apart (`count` requests)",
}
MALFORMED_VARIANTS = ("truncated", "not_json", "wrong_types")


@dataclass(frozen=True)
class Fault:
    """One fault and its parameters; only those its kind uses matter."""

    kind: str
    after: int = 0
    count: int = 1
    seconds: float = 0.0
    status: int = 503
    retry_after: int | None = None
    code: int = 1001
    reason: str = ""
    variant: str = "truncated"
    size: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.kind not in CONNECTION_FAULTS and self.kind not in REST_FAULTS:
            known = ", ".join(sorted([*CONNECTION_FAULTS, *REST_FAULTS]))
            raise ValueError(f"unknown fault {self.kind!r}; known faults: {known}")
        if self.after < 0 or self.count < 1 or self.seconds < 0 or self.size < 1:
            raise ValueError(f"fault {self.kind}: after >= 0, count >= 1, seconds >= 0 and size >= 1 are required")
        if self.kind == "malformed_after" and self.variant not in MALFORMED_VARIANTS:
            raise ValueError(f"fault malformed_after: variant must be one of {', '.join(MALFORMED_VARIANTS)}")
        if self.kind in ("slow_drip", "rest_slow_body") and self.seconds <= 0:
            raise ValueError(f"fault {self.kind} needs seconds > 0 between chunks")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from a mapping, naming any unknown parameter."""
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"fault {data.get('kind')!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class Scenario:
    """Faults per WebSocket connection (in order of upgrade requests), for every connection, and for REST."""

    connections: Sequence[Sequence[Fault]] = ()
    every: Sequence[Fault] = ()
    rest: Sequence[Fault] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for fault in [*self.every, *(f for faults in self.connections for f in faults)]:
            if fault.kind not in CONNECTION_FAULTS:
                raise ValueError(f"{fault.kind} is a REST fault; put it under rest")
        for fault in self.rest:
            if fault.kind not in REST_FAULTS:
                raise ValueError(f"{fault.kind} is a connection fault; put it under a connection")

    def for_connection(self, number: int) -> tuple[Fault, ...]:
        """The faults of WebSocket connection ``number`` (1-based), plus those for every connection."""
        own = self.connections[number - 1] if 0 < number <= len(self.connections) else ()
        return (*own, *self.every)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build from ``{"connection": [{"faults": [...]}, ...], "every": {"faults": [...]}, "rest": [...]}``."""
        unknown = set(data) - {"connection", "every", "rest"}
        if unknown:
            raise ValueError(f"scenario: unknown key(s) {', '.join(sorted(unknown))}; use connection, every, rest")
        connections = [
            tuple(Fault.from_dict(f) for f in entry.get("faults", ())) for entry in data.get("connection", ())
        ]
        every = tuple(Fault.from_dict(f) for f in data.get("every", {}).get("faults", ()))
        rest = tuple(Fault.from_dict(f) for f in data.get("rest", ()))
        return cls(connections, every, rest)

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Read a ``.json`` or ``.toml`` scenario file, or a bundled one by name (``"faults"``); errors name it."""
        path = Path(path)
        if path.suffix not in (".toml", ".json") and len(path.parts) == 1:  # a name, not a file
            bundled = BUNDLED_SCENARIOS / f"{path}.toml"
            if not bundled.is_file():
                names = ", ".join(sorted(p.stem for p in BUNDLED_SCENARIOS.glob("*.toml")))
                raise ValueError(f"scenario {str(path)!r}: not a .toml or .json file, nor a bundled scenario "
                                 f"(bundled: {names})")
            path = bundled
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
            return cls.from_dict(data)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"scenario {path}: {exc}") from exc
