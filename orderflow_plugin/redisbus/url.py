"""Redis URLs without redis-py: checked when a feed is built, and never logged with their password.

Three forms: one server (``redis://``, ``rediss://``, ``unix://``); a Redis Cluster
(``redis+cluster://[user:password@]HOST:PORT[,HOST:PORT...]``, any nodes of it, with
``rediss+cluster://`` for TLS); or a primary found through Redis Sentinel
(``redis+sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``, with
``rediss+sentinel://`` for TLS to the data nodes). In the Sentinel form the password is the data
nodes'; a Sentinel that wants one of its own takes ``?sentinel_password=...``. Both are hidden in
every log line and error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import OrderFlowError

__all__ = ["CLUSTER_SCHEMES", "SENTINEL_SCHEMES", "ClusterTarget", "RedisFeedError", "SentinelTarget", "check_url",
           "parse_cluster", "parse_sentinel", "redacted"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)


class RedisFeedError(OrderFlowError):
    """Redis can't be used as configured: a bad URL, a refused password, a missing permission."""


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the Sentinels, the service (the primary's name) and the database."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # the data nodes' (never logged)
    sentinel_password: str | None = None  # the Sentinels' own, from ?sentinel_password= (never logged)
    ssl: bool = False


def redacted(url: str) -> str:
    """``url`` without its passwords, for logs and errors."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<a URL that does not parse>"
    netloc, query = parts.netloc, parts.query
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    if "password=" in query:  # redis://host/0?password=..., redis+sentinel://...?sentinel_password=...
        query = re.sub(r"(^|&)((?:sentinel_)?password)=[^&]*", r"\1\2=***", query)
    return parts._replace(netloc=netloc, query=query).geturl()


@dataclass(frozen=True)
class ClusterTarget:
    """What a ``redis+cluster://`` URL names: some nodes of the cluster (it finds the rest)."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None  # never logged
    ssl: bool = False


def _hosts(url: str, what: str) -> tuple[list[tuple[str, int]], str | None, str | None, str]:
    """The HOST:PORT list, user, password and path of a many-host URL; RedisFeedError, one line, if bad."""
    shown = redacted(url)
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError as exc:
        raise RedisFeedError(f"bad {what} URL {shown!r}: {exc}") from exc
    hosts: list[tuple[str, int]] = []
    for address in filter(None, parts.netloc.rpartition("@")[2].split(",")):
        host, colon, port = address.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisFeedError(f"bad {what} URL {shown!r}: {address!r} is not HOST:PORT")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise RedisFeedError(f"bad {what} URL {shown!r}: no HOST:PORT before the path")
    return (hosts, unquote(username) if username else None, unquote(password) if password else None,
            parts.path)


def parse_cluster(url: str) -> ClusterTarget:
    """The nodes a ``redis+cluster://`` URL names; RedisFeedError, one line, if bad."""
    nodes, username, password, path = _hosts(url, "Redis Cluster")
    if path.strip("/") not in ("", "0"):
        raise RedisFeedError(f"bad Redis Cluster URL {redacted(url)!r}: a cluster has database 0 only")
    if urlsplit(url).query:
        raise RedisFeedError(f"bad Redis Cluster URL {redacted(url)!r}: it takes no options")
    return ClusterTarget(nodes=tuple(nodes), username=username, password=password,
                         ssl=url.startswith("rediss+cluster://"))


def parse_sentinel(url: str) -> SentinelTarget:
    """The Sentinels, service and database a ``redis+sentinel://`` URL names; RedisFeedError, one line, if bad."""
    shown = redacted(url)
    sentinels, username, password, path_text = _hosts(url, "Redis Sentinel")
    parts = urlsplit(url)
    path = [unquote(p) for p in path_text.split("/") if p]
    if not path or len(path) > 2:
        raise RedisFeedError(f"bad Redis Sentinel URL {shown!r}: the path is /SERVICE or /SERVICE/DB "
                             "(the name Sentinel monitors the primary by)")
    if len(path) == 2 and not path[1].isdigit():
        raise RedisFeedError(f"bad Redis Sentinel URL {shown!r}: the database {path[1]!r} is not a number")
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"sentinel_password"})
    if unknown:
        raise RedisFeedError(f"bad Redis Sentinel URL {shown!r}: unknown option {unknown[0]!r} "
                             "(only sentinel_password is taken)")
    return SentinelTarget(
        sentinels=tuple(sentinels), service=path[0], db=int(path[1]) if len(path) == 2 else 0,
        username=username, password=password,
        sentinel_password=query["sentinel_password"][-1] if "sentinel_password" in query else None,
        ssl=parts.scheme == "rediss+sentinel")


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL (one server, a cluster, or Sentinel-managed); else RedisFeedError, one line."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel(url)
        return url
    if scheme in CLUSTER_SCHEMES:
        parse_cluster(url)
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise RedisFeedError(f"bad Redis URL {redacted(url)!r}: {exc}") from exc
    if parts.scheme not in _SCHEMES:
        raise RedisFeedError(f"a Redis URL starts with redis://, rediss://, unix://, redis+sentinel:// or "
                             f"redis+cluster://, got {redacted(url)!r}")
    return url
