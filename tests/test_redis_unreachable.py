"""A Redis consumer that cannot reach Redis says so: an error event, retries with backoff, a summary that says it
never connected, and (on the command line) exit 1 (issue #30)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from orderflow_plugin import OrderFlow, PluginManager
from orderflow_plugin.redisbus.source import RedisSource
from orderflow_plugin.redisbus.url import RedisFeedError

from .flowhelpers import TIMEOUT_FACTOR, Events
from .test_cli_stream import parse, start


def closed_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_stream_from_a_closed_port_says_it_never_connected() -> None:
    """`stream --from redis://<closed port> --json`: startup, then an error naming the refusal, retries, a summary
    with connects 0, and exit 1 with one line saying it never connected."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    process = await start("stream", "--from", url, "--json", "--duration", "2")
    async with asyncio.timeout(30 * TIMEOUT_FACTOR):
        out, err = await process.communicate()
    assert process.returncode == 1, err.decode()
    events = parse(out)
    assert [e["event"] for e in events] == ["startup", "error", "summary"]  # no "disconnected" from nothing
    error = events[1]
    assert error["where"] == "redis" and error["error"]["type"] == "RedisFeedError"
    assert error["error"]["message"].startswith(f"cannot connect to Redis {url}: ConnectionError: ")
    source = events[-1]["source"]
    assert source["connects"] == 0 and source["failed_tries"] >= 3 and "ConnectionError" in source["last_error"]
    assert err.decode().strip().splitlines()[-1].startswith(f"orderflow stream: never connected to {url} in ")


async def test_a_source_retries_until_redis_comes_up(orderflow_redis_factory: Any) -> None:
    """OrderFlow on an unreachable Redis: on_startup, then one on_error (not on_disconnected); it keeps trying and
    reads once a server listens there."""
    port = closed_port()
    events = Events()
    manager = PluginManager()
    manager.register(events, name="events")
    flow = OrderFlow(["BTCUSDT"], feed=RedisSource(f"redis://127.0.0.1:{port}/0", timeout=1.0), plugins=manager)
    async with flow:
        await events.until(lambda e: e.of("on_error"), timeout=10)
        assert [name for _, name, _ in events.calls] == ["on_startup", "on_error"]
        assert isinstance(events.of("on_error")[0]["error"], RedisFeedError)
        assert flow.summary()["source"]["connects"] == 0
        await asyncio.to_thread(orderflow_redis_factory, port=port)
        await events.until(lambda e: e.of("on_connected"), timeout=20)
        assert flow.summary()["source"]["connects"] == 1 and flow.health()["connections"][0]["state"] == "reading"
    assert events.of("on_disconnected") == []
