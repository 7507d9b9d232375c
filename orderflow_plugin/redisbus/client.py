"""The Redis connection both sides share: one way to open it, and one reading of its errors."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - the redis extra is not installed
    raise ImportError("orderflow's Redis feed needs redis-py: pip install 'orderflow-plugin[redis]'") from exc

from .url import CLUSTER_SCHEMES, SENTINEL_SCHEMES, RedisFeedError, check_url, parse_cluster, parse_sentinel, redacted

__all__ = [
    "RedisFeedError",
    "SentinelManagedRedis",
    "cancelled",
    "check",
    "connect",
    "describe",
    "is_cluster",
    "is_duplicate",
    "is_transient",
    "newest_entry",
    "redacted",
    "refuse_legacy",
]


class SentinelManagedRedis(aioredis.Redis):
    """The primary a Sentinel names, followed across failovers (redis-py's own); closing it closes the Sentinels too."""

    sentinel: Any = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            sentinel, self.sentinel = self.sentinel, None
            await sentinel.aclose()


def connect(url: str, *, timeout: float = 5.0) -> aioredis.Redis:
    """A client for ``url`` (one server, or the primary behind Sentinels); a bad URL raises RedisFeedError at once."""
    check_url(url)
    if url.partition("://")[0] in SENTINEL_SCHEMES:
        return _connect_sentinel(url, timeout)
    if url.partition("://")[0] in CLUSTER_SCHEMES:
        return _connect_cluster(url, timeout)
    try:
        return aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                       health_check_interval=30)
    except ValueError as exc:
        raise RedisFeedError(f"bad Redis URL {redacted(url)!r}: {exc}") from exc


def _connect_sentinel(url: str, timeout: float) -> aioredis.Redis:
    """redis-py's Sentinel client: it asks the Sentinels for the primary at each new connection, and a node
    that answers READONLY (a primary demoted by a failover) ends the connection, so the next one finds the
    new primary. The passwords go to redis-py as arguments, never into a log line."""
    from redis.asyncio.sentinel import Sentinel

    target = parse_sentinel(url)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(target.service, redis_class=SentinelManagedRedis, db=target.db,
                                 username=target.username, password=target.password, ssl=target.ssl,
                                 socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30)
    client.sentinel = sentinel
    return client


def _connect_cluster(url: str, timeout: float) -> Any:
    """redis-py's cluster client: it learns the slots from any node named and follows MOVED and ASK."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    target = parse_cluster(url)
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                        username=target.username, password=target.password, ssl=target.ssl,
                        socket_timeout=timeout, socket_connect_timeout=timeout)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (one command touches the keys of one slot)."""
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


# Replies that mean "not now": out of memory (maxmemory), read-only after a failover, no master, a cluster
# moving slots; and (below, by their text) busy with a script, too few replicas.
_NOT_NOW = (redis_errors.OutOfMemoryError, redis_errors.ReadOnlyError, redis_errors.MasterDownError,
            redis_errors.TryAgainError, redis_errors.ClusterDownError)


def is_transient(exc: BaseException) -> bool:
    """A fault that retrying fixes: refused, reset, timed out, loading, or not taking writes for now."""
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        return False
    if isinstance(exc, _NOT_NOW):
        return True
    if isinstance(exc, redis_errors.ResponseError):  # the codes redis-py has no class for keep them in the text
        return str(exc).startswith(("BUSY ", "NOREPLICAS"))  # not BUSYGROUP, BUSYKEY
    return isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError)


def cancelled() -> bool:
    """This task is being cancelled: redis-py turns a cancelled read into a ConnectionError, never to be retried."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def is_duplicate(exc: BaseException) -> bool:
    """Redis refused an entry id at or below the stream's newest: somebody wrote this one already."""
    return isinstance(exc, redis_errors.ResponseError) and "equal or smaller" in str(exc)


async def newest_entry(client: aioredis.Redis, key: str) -> str | None:
    """The id of the newest entry ever added to stream ``key`` (kept after trimming), or None: no stream."""
    if not await client.exists(key):
        return None
    newest = (await client.xinfo_stream(key))["last-generated-id"]
    newest = newest.decode() if isinstance(newest, bytes) else str(newest)
    return None if newest == "0-0" else newest  # made empty by XGROUP CREATE MKSTREAM (trade 0 is 0-1)


def describe(exc: BaseException) -> str:
    """One line naming the fault: its class and message."""
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"


async def refuse_legacy(client: aioredis.Redis, url: str, keys: list[str]) -> None:
    """RedisFeedError, one line, if Redis holds one of ``keys`` under its old name only (before the hash tags)."""
    from .keys import legacy_key

    for key in keys:
        old = legacy_key(key)
        if old != key and not await client.exists(key) and await client.exists(old):
            raise RedisFeedError(f"Redis {redacted(url)} holds {old}, the old name of {key}: stop the collectors and "
                                 f"bots and run `python -m orderflow_plugin.redisbus.migrate {redacted(url)}` once")


async def check(client: aioredis.Redis, url: str) -> None:
    """PING once: a refused password or permission raises RedisFeedError; a dead server is left to retries."""
    try:
        await client.ping()
    except (redis_errors.AuthenticationError, redis_errors.AuthorizationError) as exc:
        raise RedisFeedError(f"Redis {redacted(url)} refused us: {describe(exc)}") from exc
    except redis_errors.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) or "NOPERM" in str(exc):
            raise RedisFeedError(f"Redis {redacted(url)} refused us: {describe(exc)}") from exc
        raise
