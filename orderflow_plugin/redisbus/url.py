"""Redis URLs without redis-py: checked when a feed is built, and never logged with their password."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import OrderFlowError

__all__ = ["RedisFeedError", "check_url", "redacted"]


class RedisFeedError(OrderFlowError):
    """Redis can't be used as configured: a bad URL, a refused password, a missing permission."""


def redacted(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=f"{user}{host}{port}").geturl()


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL (``redis://``, ``rediss://``, ``unix://``); else RedisFeedError, one line."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise RedisFeedError(f"bad Redis URL {redacted(url)!r}: {exc}") from exc
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise RedisFeedError(f"a Redis URL starts with redis://, rediss:// or unix://, got {redacted(url)!r}")
    return url
