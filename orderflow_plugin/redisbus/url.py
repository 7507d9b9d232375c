"""Redis URLs without redis-py: checked when a feed is built, and never logged with their password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..errors import OrderFlowError

__all__ = ["RedisFeedError", "check_url", "redacted"]


class RedisFeedError(OrderFlowError):
    """Redis can't be used as configured: a bad URL, a refused password, a missing permission."""


def redacted(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<a URL that does not parse>"
    netloc, query = parts.netloc, parts.query
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    if "password=" in query:  # redis://host/0?password=...
        query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", query)
    return parts._replace(netloc=netloc, query=query).geturl()


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
