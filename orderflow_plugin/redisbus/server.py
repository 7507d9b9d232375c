"""A real, throwaway redis-server for tests, benchmarks and trying the Redis bus on one machine.

::

    from orderflow_plugin.redisbus.server import RedisServer

    with RedisServer() as server:  # 127.0.0.1, a free port, a temporary folder, removed after
        ...  # connect to server.url; server.kill() then server.restart() keeps what was written

The server binds 127.0.0.1 only, never saves RDB snapshots and logs every write to its append-only file
(``appendfsync always`` by default), so :meth:`RedisServer.restart` after a SIGKILL finds every acknowledged
write. The binary is ``path=``, else ``$ORDERFLOW_REDIS_SERVER``, else ``redis-server`` on the PATH, else
``/usr/bin/redis-server``; on Debian ``apt-get install redis-server`` (``make test`` does it). Only the standard
library is used here: redis-py is not needed to run a server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RedisClusterServers", "RedisSentinel", "RedisServer", "RedisServerError", "find_redis_server"]

_ENV = "ORDERFLOW_REDIS_SERVER"
_FALLBACK = "/usr/bin/redis-server"
_PORT_ATTEMPTS = 5  # a free port can be taken between choosing it and redis-server binding it


class RedisServerError(RuntimeError):
    """redis-server is missing, would not start, or did not answer PING in time (one line, naming the cause)."""


def find_redis_server(path: str | os.PathLike[str] | None = None) -> str:
    """The redis-server to run: ``path``, else ``$ORDERFLOW_REDIS_SERVER``, else the PATH, else /usr/bin."""
    chosen = path if path is not None else os.environ.get(_ENV) or shutil.which("redis-server") or _FALLBACK
    chosen = os.fspath(chosen)
    if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
        return chosen
    origin = "path=" if path is not None else _ENV if os.environ.get(_ENV) else "the PATH and /usr/bin"
    raise RedisServerError(
        f"redis-server not found ({origin}: {chosen}): install it with `apt-get install redis-server` "
        f"(`make test` does), or pass path=/path/to/redis-server or set {_ENV}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command(*words: bytes) -> bytes:
    """One RESP command, so readiness needs no client library."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(word), word) for word in words)


class RedisServer:
    """A redis-server process on 127.0.0.1 in a folder of its own; :meth:`start` it or use ``with``.

    ``port`` None picks a free one (kept across :meth:`restart`). ``directory`` None makes a temporary folder
    that :meth:`stop` removes (a failed start keeps it: the error names it, for ``redis.log``); a given
    ``directory`` is kept. ``requirepass`` is for auth tests: it is passed on the
    command line, where other local users can read it. ``appendonly=False`` keeps nothing across a restart.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        port: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        requirepass: str | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        replicaof: int | None = None,
        options: tuple[str, ...] = (),
        # Timeouts
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._path = path
        self._fixed_port = port is not None
        self.port = port or 0
        self.password = requirepass
        self._dir = Path(directory) if directory is not None else None
        self._own_dir = directory is None
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self.replicaof = replicaof  # a port on 127.0.0.1: start as its replica (also after restart())
        self.options = tuple(options)  # more redis-server arguments, e.g. ("--cluster-enabled", "yes")
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, without the password (add ``:password@`` yourself)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def directory(self) -> Path:
        """The folder holding the append-only file and the server's log (``redis.log``)."""
        if self._dir is None:
            raise RedisServerError("RedisServer: not started yet, it has no folder")
        return self._dir

    @property
    def running(self) -> bool:
        """Whether the process is alive (it may still be loading its data)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start the server and return once it answers PING; RedisServerError says why it did not."""
        if self.running:
            return self
        binary = find_redis_server(self._path)
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="orderflow-redis-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1 if self._fixed_port else _PORT_ATTEMPTS):
            if not self._fixed_port:
                self.port = _free_port()
            try:
                self._launch(binary)
                self._fixed_port = True  # a restart comes back where clients look
                return self
            except RedisServerError:
                if self._fixed_port or attempt == _PORT_ATTEMPTS - 1 or "Address already in use" not in self._log():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _argv(self, binary: str) -> list[str]:
        argv = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--save", "",  # no RDB snapshots: the append-only file alone is the data
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", self._appendfsync,
            "--logfile", "redis.log",  # relative to --dir
        ]  # fmt: skip
        if self.password is not None:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replicaof is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        return argv + list(self.options)

    def _launch(self, binary: str) -> None:
        argv = self._argv(binary)
        # The log is truncated per launch so a failure quotes this launch's reason, not an earlier one.
        (self.directory / "redis.log").write_bytes(b"")
        try:
            self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, cwd=self._dir)
        except OSError as exc:
            raise RedisServerError(f"redis-server could not run ({binary}): {exc.strerror or exc}") from exc
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll PING until +PONG (not -LOADING while the append-only file is replayed), with a deadline."""
        assert self._process is not None
        probe, replies = _command(b"PING"), 1
        if self.password is not None:
            probe, replies = _command(b"AUTH", self.password.encode()) + probe, 2
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                self._fail(f"exited with code {self._process.returncode}: {self._exit_reason()}")
            with contextlib.suppress(OSError):
                if self._ping(probe, replies, deadline).endswith(b"+PONG\r\n"):
                    return
            if time.monotonic() >= deadline:
                self._fail(f"did not answer PING within {self.start_timeout:g}s")
            time.sleep(0.01)

    def _ping(self, probe: bytes, replies: int, deadline: float) -> bytes:
        """Send ``probe`` and return its ``replies`` one-line replies (fewer if the server hangs up)."""
        # A short wait per try: whatever else listens on the port must not hold us past the server's exit.
        timeout = min(0.5, max(0.05, deadline - time.monotonic()))
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(probe)
            received = b""
            while received.count(b"\r\n") < replies:
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
            return received

    def _log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def _exit_reason(self) -> str:
        """Why the server exited: a config error's last line (stderr), else the log's last warning or line."""
        assert self._process is not None and self._process.stderr is not None
        stderr = [line.strip() for line in self._process.stderr.read().decode(errors="replace").splitlines()]
        logged = [line.strip() for line in self._log().splitlines()]
        # Redis marks warnings and errors with '#' after its "pid:role date time" prefix, dropped here.
        warnings = [line.split(" # ", 1)[1] for line in logged if " # " in line]
        return ([line for line in stderr if line] or warnings or [line for line in logged if line] or ["no log"])[-1]

    def _fail(self, what: str) -> None:
        self._terminate(signal.SIGKILL)
        raise RedisServerError(f"redis-server on 127.0.0.1:{self.port} {what} (log: {self.directory})")

    def _terminate(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; its folder stays for :meth:`restart`."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        """Stop the server if it runs (SIGTERM) and start it again on the same port and folder, data kept."""
        if self._dir is None or not self._dir.is_dir():
            raise RedisServerError("RedisServer.restart: never started, or stopped for good by stop()")
        self._terminate(signal.SIGTERM)
        self.start()

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``stop_timeout``) and remove its temporary folder."""
        self._terminate(signal.SIGTERM)
        if self._own_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None  # a later start() makes a fresh folder

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} {'running' if self.running else 'stopped'}>"


class RedisSentinel(RedisServer):
    """A Redis Sentinel (``redis-server FILE --sentinel``) on 127.0.0.1 watching one primary, for failover drills.

    ``primary`` is the primary's port on 127.0.0.1, ``service`` the name clients ask for; ``quorum``,
    ``down_after`` (ms of silence before the primary counts as down) and ``failover_timeout`` (ms) are
    Sentinel's own settings. :attr:`url` is the ``redis+sentinel://`` URL of the service.
    """

    def __init__(self, primary: int, *, service: str = "orderflow", quorum: int = 1, down_after: int = 1000,
                 failover_timeout: int = 5000, **kwargs: object) -> None:
        super().__init__(appendonly=False, **kwargs)  # type: ignore[arg-type]
        self.primary, self.service = primary, service
        self.quorum, self.down_after, self.failover_timeout = quorum, down_after, failover_timeout

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:PORT/SERVICE/0``."""
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    def _argv(self, binary: str) -> list[str]:
        # Sentinel rewrites its file as it learns the replicas and failovers: one per folder, kept across
        # restarts so that a restarted Sentinel remembers the current primary.
        config = self.directory / "sentinel.conf"
        if not config.exists():
            auth = [f"sentinel auth-pass {self.service} {self.password}"] if self.password is not None else []
            config.write_text("\n".join([
                f"port {self.port}",
                "bind 127.0.0.1",
                f"dir {self.directory}",
                "logfile redis.log",
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary} {self.quorum}",
                f"sentinel down-after-milliseconds {self.service} {self.down_after}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout}",
                f"sentinel parallel-syncs {self.service} 1",
                *auth, "",
            ]))
        return [binary, str(config), "--sentinel", "--port", str(self.port)]

    def _wait_ready(self) -> None:
        password, self.password = self.password, None  # the password is the data nodes'; a Sentinel takes none
        try:
            super()._wait_ready()
        finally:
            self.password = password


class RedisClusterServers:
    """A Redis Cluster of ``primaries`` redis-servers on 127.0.0.1 (no replicas), made with ``redis-cli --cluster
    create``; ``with`` it, or :meth:`start` and :meth:`stop`. :attr:`url` is its ``redis+cluster://`` URL."""

    def __init__(self, primaries: int = 3, *, directory: str | os.PathLike[str] | None = None,
                 start_timeout: float = 30.0) -> None:
        self._own_dir = directory is None
        self._dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="orderflow-cluster-"))
        self.start_timeout = start_timeout
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
        # Each node also listens on a cluster bus port, port + 10000 unless given: given here, from the free ones.
        self.servers = [RedisServer(directory=self._dir / f"node{n}", port=_free_port(),
                                    options=(*options, "--cluster-port", str(_free_port())))
                        for n in range(primaries)]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...``."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{server.port}" for server in self.servers)

    def start(self) -> RedisClusterServers:
        """Start the servers, join them into one cluster with every slot served, and wait for ``cluster_state:ok``."""
        for server in self.servers:
            server.start()
        cli = Path(find_redis_server(None)).with_name("redis-cli")
        if not cli.exists():
            cli = Path(shutil.which("redis-cli") or "redis-cli")
        argv = [str(cli), "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.servers),
                "--cluster-replicas", "0", "--cluster-yes"]
        try:
            made = subprocess.run(argv, capture_output=True, text=True, timeout=self.start_timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.stop()
            raise RedisServerError(f"redis-cli --cluster create failed: {exc}") from exc
        if made.returncode != 0:
            self.stop()
            last = (made.stderr or made.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RedisServerError(f"redis-cli --cluster create failed: {last[0]}")
        deadline = time.monotonic() + self.start_timeout
        probe = _command(b"CLUSTER", b"INFO")
        for server in self.servers:
            while b"cluster_state:ok" not in self._ask(server, probe):
                if time.monotonic() >= deadline:
                    self.stop()
                    raise RedisServerError(f"the cluster was not ok within {self.start_timeout:g}s")
                time.sleep(0.05)
        return self

    @staticmethod
    def _ask(server: RedisServer, probe: bytes) -> bytes:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1) as s:
            s.sendall(probe)
            return s.recv(65536)
        return b""

    def stop(self) -> None:
        """Stop every server and remove the folder (if it was made here)."""
        for server in self.servers:
            server.stop()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

