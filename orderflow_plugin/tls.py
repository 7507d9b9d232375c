"""The one TLS client context every connection uses: the system trust store, plus an optional CA file.

Certificates and host names are always verified; there is no switch to turn that off.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["client_context"]


def client_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A verifying client context trusting the system store and ``ca_file`` (PEM), if given.

    Raises ValueError naming the file when it does not exist or holds no PEM certificate.
    """
    context = ssl.create_default_context()
    if ca_file:
        path = Path(ca_file)
        if not path.is_file():
            raise ValueError(f"ca_file {str(path)!r} does not exist or is not a file")
        try:
            context.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"ca_file {str(path)!r} is not a PEM CA bundle: {exc}") from exc
    return context
