"""The doctor's result line, and what its stream and REST checks both need to explain a TLS failure."""

from __future__ import annotations

import ssl
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CERTIFICATE_ADVICE", "Check", "certificate_error"]

CERTIFICATE_ADVICE = ("the server's certificate did not verify: for `orderflow sim --tls` pass the CA file it "
                      "printed (--ca-file, connector.ca_file); otherwise check the system clock, the CA store "
                      "and any TLS-intercepting proxy")


@dataclass
class Check:
    """One step of the doctor."""

    name: str
    status: str  # PASS, FAIL, WARN, SKIP
    seconds: float
    detail: str
    next_step: str = ""

    def line(self) -> str:
        """The human line (and the next step under it)."""
        text = f"{self.status:<4}  {self.name:<22} {self.seconds * 1000:8.1f} ms  {self.detail}"
        return text + (f"\n      -> {self.next_step}" if self.next_step else "")

    def as_json(self) -> dict[str, Any]:
        """The machine form."""
        return asdict(self)


def certificate_error(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure somewhere in ``error``'s chain of causes, if there is one."""
    # The transport and httpx each wrap the ssl error in their own; the seen set guards against a cyclic chain.
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
