"""The keepalive: ping a connection that has gone quiet, and end it when even the ping gets no answer."""

from __future__ import annotations

import asyncio
from typing import Protocol

from .errors import Stalled, StreamError

__all__ = ["Pinged", "ping_when_quiet"]


class Pinged(Protocol):
    """What the keepalive needs of a connection (a :class:`~.wsconnection.WsConnection`, which calls it)."""

    url: str
    endpoint: str
    last_received: float  # the loop's time of the last byte read
    paused: bool  # reading paused by us: not judged

    def send_ping(self, data: bytes) -> None: ...

    def fail(self, error: StreamError) -> None: ...


async def ping_when_quiet(connection: Pinged, idle: float, timeout: float) -> None:
    """Ping once nothing has arrived for ``idle`` s; fail if still nothing arrives within ``timeout`` s.

    Any byte counts as an answer (a busy stream is never pinged), and a connection whose reading
    we paused is not judged. A dead path (packets dropped, no FIN, no RST) is found within
    ``idle + timeout`` s instead of a trade-silence timeout.
    """
    clock = asyncio.get_running_loop().time  # the loop's time: real or virtual
    step = min(0.25, timeout / 4)
    connection.last_received = max(connection.last_received, clock())
    while True:
        wait = connection.last_received + idle - clock()
        if wait > 0 or connection.paused:
            await asyncio.sleep(wait if wait > 0 else step)
            continue
        sent = clock()
        connection.send_ping(str(int(clock() * 1e9)).encode())
        deadline = sent + timeout
        while connection.last_received < sent and not connection.paused:
            before = clock()
            left = deadline - before
            if left <= 0:
                for _ in range(2):  # uvloop runs timers before reading: let bytes that waited be read first
                    await asyncio.sleep(0)
                if connection.last_received >= sent or connection.paused:
                    break
                silent = clock() - connection.last_received
                connection.fail(Stalled(f"{connection.endpoint} sent nothing for {silent:.1f} s and did not answer a "
                                        f"ping within {timeout:.1f} s", url=connection.url, stage="ping",
                                        silent_for=silent))
                return
            nap = min(step, left)
            await asyncio.sleep(nap)
            late = clock() - before - nap
            if late > step:  # the loop was blocked (by a host, a hook): that time is not the server's
                deadline += late

