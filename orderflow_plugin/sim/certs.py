"""Throwaway certificates for the simulator's TLS: a private CA and a server certificate signed by it.

::

    certs = SimCertificates(tmp_path)                      # writes tmp_path / "ca.pem"
    async with Simulator(host="localhost", ssl_context=certs.server_context()) as sim:
        flow = OrderFlow(["BTCUSDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, ca_file=certs.ca_file)

Clients trust the CA file explicitly (``ca_file=``, ``connector.ca_file``, ``--ca-file``); nothing
here turns verification off. The keys live in memory and the CA is new each time, so a
certificate can never outlive the test or session that made it. Needs ``trustme``
(``pip install 'orderflow-plugin[tls]'``), imported only when certificates are made.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SimCertificates"]

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def _trustme() -> Any:
    try:
        import trustme
    except ImportError:
        raise ImportError("the simulator's TLS needs trustme: pip install 'orderflow-plugin[tls]'") from None
    return trustme


class SimCertificates:
    """A new CA and a certificate for ``hosts``; the CA's PEM is written to ``directory/ca.pem``."""

    def __init__(self, directory: str | Path, hosts: Sequence[str] = DEFAULT_HOSTS, *,
                 valid_for: datetime.timedelta = datetime.timedelta(days=30)) -> None:
        trustme = _trustme()
        self.hosts = tuple(dict.fromkeys(hosts))
        if not self.hosts:
            raise ValueError("at least one host name or address is needed")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="orderflow simulator CA")
        now = datetime.datetime.now(datetime.UTC)
        # A common name besides the subjectAltNames, so tools that print the subject show the host.
        self._leaf = self._ca.issue_cert(*self.hosts, common_name=self.hosts[0],
                                         organization_name="orderflow simulator",
                                         not_before=now - datetime.timedelta(hours=1), not_after=now + valid_for)
        self._ca_file = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self._ca_file))

    @property
    def ca_file(self) -> str:
        """Path of the CA certificate (PEM) clients must trust: ``ca_file=`` / ``connector.ca_file``."""
        return str(self._ca_file)

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting the certificate, for ``Simulator(ssl_context=...)``."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaf.configure_cert(context)
        return context

    def __repr__(self) -> str:
        return f"SimCertificates(ca_file={self.ca_file!r}, hosts={self.hosts!r})"
