"""The throwaway redis-server the Redis bus tests and users run: a real server, its restarts, its failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.retry import Retry

from orderflow_plugin.redisbus.server import RedisServer, RedisServerError, find_redis_server


def client(url: str, **kwargs: object) -> redis.Redis:
    """A client that fails at once: redis-py's default retries would only slow a failing call down."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=5.0, **kwargs)


def test_starts_on_loopback_and_answers_ping(orderflow_redis: RedisServer) -> None:
    """The server answers PING at .url, bound to 127.0.0.1 only, append-only and never snapshotting."""
    assert orderflow_redis.url == f"redis://127.0.0.1:{orderflow_redis.port}/0"
    with client(orderflow_redis.url) as redis_client:
        assert redis_client.ping() is True
        config = redis_client.config_get("*")
    assert (config["bind"], config["save"], config["appendonly"], config["appendfsync"]) == ("127.0.0.1", "", "yes", "always")
    assert config["dir"] == str(orderflow_redis.directory)


def test_restart_after_sigkill_keeps_an_appended_entry(orderflow_redis: RedisServer) -> None:
    """An XADD acknowledged before a SIGKILL is there after restart(), on the same port."""
    port = orderflow_redis.port
    with client(orderflow_redis.url) as redis_client:
        redis_client.xadd("orderflow:spot:BTCUSDT:trades", {"p": "65000.1"}, id="42-0")
    orderflow_redis.kill()
    orderflow_redis.restart()
    assert orderflow_redis.port == port
    with client(orderflow_redis.url) as redis_client:
        assert redis_client.xrange("orderflow:spot:BTCUSDT:trades") == [(b"42-0", {b"p": b"65000.1"})]


def test_a_graceful_restart_keeps_data_too(orderflow_redis: RedisServer) -> None:
    """restart() of a running server (SIGTERM) keeps what was written."""
    with client(orderflow_redis.url) as redis_client:
        redis_client.set("k", "v")
    orderflow_redis.restart()
    with client(orderflow_redis.url) as redis_client:
        assert redis_client.get("k") == b"v"


def test_kill_makes_a_client_call_fail_with_connection_error(orderflow_redis: RedisServer) -> None:
    """After kill() the server is gone: a call raises redis' ConnectionError."""
    with client(orderflow_redis.url) as redis_client:
        assert redis_client.ping() is True
        orderflow_redis.kill()
        assert not orderflow_redis.running
        with pytest.raises(redis.ConnectionError):
            redis_client.ping()


def test_requirepass_refuses_an_unauthenticated_call(orderflow_redis_factory) -> None:
    """With requirepass a call without the password raises AuthenticationError; with it, it succeeds."""
    server = orderflow_redis_factory(requirepass="s3cret*")
    with client(server.url) as redis_client, pytest.raises(AuthenticationError):
        redis_client.ping()
    with client(server.url, password="s3cret*") as redis_client:
        assert redis_client.ping() is True


def test_a_missing_binary_is_one_line_saying_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No redis-server (path= or $ORDERFLOW_REDIS_SERVER) is a one-line error naming apt-get and the path."""
    missing = tmp_path / "no-redis-server"
    with pytest.raises(RedisServerError) as raised:
        RedisServer(path=missing).start()
    message = str(raised.value)
    assert "\n" not in message
    assert "apt-get install redis-server" in message and str(missing) in message
    monkeypatch.setenv("ORDERFLOW_REDIS_SERVER", str(missing))
    with pytest.raises(RedisServerError, match="ORDERFLOW_REDIS_SERVER") as raised:
        find_redis_server()
    assert "\n" not in str(raised.value)


def test_a_server_that_exits_at_start_is_one_line_with_its_reason(tmp_path: Path) -> None:
    """A server refusing its settings fails start() with one line quoting redis-server's reason."""
    with pytest.raises(RedisServerError) as raised:
        RedisServer(directory=tmp_path, appendfsync="sometimes").start()
    message = str(raised.value)
    assert "\n" not in message
    assert "exited with code 1" in message and "everysec" in message


def test_stop_removes_its_temporary_folder_and_frees_the_port() -> None:
    """Leaving the with block stops the server and removes the folder it made."""
    with RedisServer() as server:
        directory, url = server.directory, server.url
        assert directory.is_dir()
    assert not directory.exists() and not server.running
    with client(url) as redis_client, pytest.raises(redis.ConnectionError):
        redis_client.ping()
