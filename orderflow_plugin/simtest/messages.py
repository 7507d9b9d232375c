"""What the simulated transport raises, worded as ``connect.py`` and ``transport.py`` word it."""

from __future__ import annotations

from ..errors import ConnectFailed, ConnectionLost, HandshakeRejected, StageTimeout, Stalled, StreamError

__all__ = ["ENDPOINT", "MALFORMED", "REFUSED", "SUBSCRIBED", "URL", "closed", "refused", "rejected", "reset", "rotated",
           "stage_failed", "stage_timeout", "stalled"]

ENDPOINT = "stream.sim:9443"
URL = f"wss://{ENDPOINT}/stream"
SUBSCRIBED = b'{"result":null,"id":1}'
REFUSED = b'{"result":null,"error":{"code":2,"msg":"Invalid request: too many streams"},"id":1}'
MALFORMED = (b'{"stream":"x@aggTrade","data":{"e":"aggTrade","E":1', b'{"stream":"btcusdt@aggTrade","data":'
             b'{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"p":1.5,"q":"1","f":1,"l":1,"T":1,"m":true}}',
             b"\xff\xfe not json", b'{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1}}')
_WORDS = {"resolve": "resolving stream.sim got no answer", "tcp_connect": f"TCP connect to {ENDPOINT} did not complete",
          "tls": f"TLS handshake with {ENDPOINT} did not complete",
          "http_upgrade": f"handshake with {ENDPOINT} got no HTTP response",
          "subscribed": f"subscription on {ENDPOINT} was not confirmed",
          "first_message": f"no trade from {ENDPOINT} after subscribing"}
_FAILURES = {"resolve": "resolving stream.sim failed: Temporary failure in name resolution",
             "tcp_connect": f"TCP connect to {ENDPOINT} failed: connection refused",
             "tls": f"TLS handshake with {ENDPOINT} failed: TLS error: unexpected eof while reading",
             "http_upgrade": f"handshake with {ENDPOINT} failed: ConnectionResetError"}


def stage_timeout(stage: str, deadline: float) -> StageTimeout:
    """``stage`` passed its deadline."""
    return StageTimeout(f"{_WORDS[stage]} within {deadline:.1f} s", url=URL, stage=stage, deadline=deadline)


def stage_failed(stage: str, failing: str | None = None) -> ConnectFailed:
    """``stage`` raised (``failing``: the message of another stage, as when DNS is down)."""
    return ConnectFailed(_FAILURES[failing or stage], url=URL, stage=stage)


def rejected(status: int, retry_after: float) -> HandshakeRejected:
    """The upgrade was answered ``status`` with a Retry-After."""
    return HandshakeRejected(f"handshake with {ENDPOINT} answered HTTP {status}, Retry-After {retry_after:g} s",
                             url=URL, status=status, retry_after=retry_after)


def refused(error: object) -> StreamError:
    """The SUBSCRIBE was answered with ``error``."""
    return StreamError(f"{ENDPOINT} refused the subscription: {error}", url=URL, stage="subscribed")


def reset() -> ConnectionLost:
    """The socket dropped without a close frame."""
    return ConnectionLost(f"connection to {ENDPOINT} dropped without a close frame: [Errno 104] Connection reset "
                          "by peer", url=URL, code=None, reason="connection reset")


def closed(code: int, reason: str) -> ConnectionLost:
    """The server closed the connection."""
    return ConnectionLost(f"{ENDPOINT} closed the connection: code {code} {reason!r}", url=URL, code=code,
                          reason=reason)


def rotated() -> ConnectionLost:
    """Our close of a retired connection completed."""
    return closed(1000, "rotated")


def stalled(silent: float, timeout: float) -> Stalled:
    """The keepalive's ping went unanswered."""
    return Stalled(f"{ENDPOINT} sent nothing for {silent:.1f} s and did not answer a ping within {timeout:.1f} s",
                   url=URL, stage="ping", silent_for=silent)
