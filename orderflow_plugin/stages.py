"""The connect stages, in order: each has a deadline, the :class:`~.options.Timeouts` field of the same name.

A module of its own so that the connection (:mod:`.wsconnection`), the staged connect (:mod:`.connect`)
and those who report stages (shards, doctor) share the names without importing one another.
"""

from __future__ import annotations

__all__ = ["STAGES"]

STAGES = ("resolve", "tcp_connect", "tls", "http_upgrade", "subscribed", "first_message")
