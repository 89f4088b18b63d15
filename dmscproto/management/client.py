"""The operator's side of the management listener (draft-dmsc-yang-00, Section 5):
GET a resource over HTTPS with an operator certificate, the gateway authenticated as a
gateway of the authority's domain.  Standard library only (``dmsc status --gateway``
needs no extra)."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from ..errors import DmscError
from ..security.ca import CertificateError, Kind, anchor_domains, identity_of

#: The media type of RFC 7951 JSON in RESTCONF (RFC 8040, Section 11.3.2).
YANG_JSON = "application/yang-data+json"


class ManagementError(DmscError):
    """The management listener could not be reached or refused the request."""

    named = False


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator certificate and key, and the domain authority's certificate."""

    certificate: Path
    key: Path
    authority: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.authority))
        ctx.check_hostname = False  # the gateway's identity is checked by get() instead
        ctx.load_cert_chain(self.certificate, self.key)
        return ctx

    @property
    def domain(self) -> str:
        anchor = x509.load_pem_x509_certificate(self.authority.read_bytes())
        domains = anchor_domains(anchor)
        if len(domains) != 1:
            raise ManagementError(f"{self.authority} is not one domain's authority")
        return next(iter(domains))

    def get(self, host: str, port: int, path: str, timeout: float = 10.0) -> bytes:
        """The body of ``GET path``; ManagementError for anything but 200."""
        return self.request(host, port, "GET", path, timeout=timeout)

    def request(self, host: str, port: int, method: str, path: str,
                body: dict[str, Any] | None = None, timeout: float = 10.0) -> bytes:
        """The body of the answer to ``method path`` (with ``body`` as JSON);
        ManagementError for anything but 200."""
        conn = http.client.HTTPSConnection(host, port, context=self.context(),
                                           timeout=timeout)
        headers = {"Accept": YANG_JSON}
        if body is not None:
            headers["Content-Type"] = YANG_JSON
        try:
            conn.connect()
            assert isinstance(conn.sock, ssl.SSLSocket)
            self._check_gateway(conn.sock.getpeercert(binary_form=True))
            conn.request(method, path, headers=headers,
                         body=None if body is None else json.dumps(body))
            answer = conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ManagementError(f"{host}:{port}: {exc}") from None
        finally:
            conn.close()
        if answer.status != 200:
            raise ManagementError(f"{host}:{port}{path}: {answer.status} {answer.reason}: "
                                  f"{_error_message(data)}")
        return data

    def _check_gateway(self, der: bytes | None) -> None:
        """The server is a gateway of the authority's domain (the chain was verified in
        the handshake)."""
        try:
            identity = identity_of(x509.load_der_x509_certificate(der or b""))
        except (CertificateError, ValueError) as exc:
            raise ManagementError(f"the server's certificate: {exc}") from None
        if identity.kind is not Kind.GATEWAY or identity.domain != self.domain:
            raise ManagementError(f"the server is {identity.uri}, not a gateway of "
                                  f"{self.domain}")

    def state(self, host: str, port: int, resource: str = "ietf-dmsc:dmsc"
              ) -> dict[str, Any]:
        """The RFC 7951 document of a data resource."""
        document: dict[str, Any] = json.loads(self.get(host, port,
                                                       f"/restconf/data/{resource}"))
        return document


def _error_message(body: bytes) -> str:
    """The error-message of an RFC 8040 errors document, else the body."""
    try:
        errors = json.loads(body)["ietf-restconf:errors"]["error"]
        return "; ".join(str(e.get("error-message", e.get("error-tag"))) for e in errors)
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", errors="replace")[:200]
