"""An embedded HTTP(S) server for the bridge's ASGI app (uvicorn), exposing the TLS
client certificate to the app as the ASGI TLS extension's ``client_cert_chain``
(draft-dmsc-a2a-00, Section 6.3: tokens are bound to the client's certificate)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class _TlsH11(H11Protocol):
    """uvicorn's h11 protocol, adding the peer certificate (DER) to every request's
    scope under ``extensions["tls"]["client_cert_chain"]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        app: ASGIApp = self.app

        async def with_tls(scope: Scope, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {
                "client_cert_chain": [der] if der else []}
            await app(scope, receive, send)

        self.app = with_tls


def client_certificate(scope: Scope) -> x509.Certificate | None:
    """The TLS client certificate of the request (None over plain HTTP or without one)."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
    return x509.load_der_x509_certificate(chain[0]) if chain else None


@dataclass(frozen=True, slots=True)
class Listen:
    """``[a2a] listen``: ``http://HOST:PORT`` or ``https://HOST:PORT`` (port 0:
    ephemeral), with the server certificate and the client certificates' CA (the
    domain authority) for HTTPS."""

    scheme: str
    host: str
    port: int
    certificate: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None

    @classmethod
    def parse(cls, url: str, **tls: Any) -> Listen:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path not in ("", "/"):
            raise ValueError(f"{url!r} is not http://HOST:PORT or https://HOST:PORT")
        return cls(parts.scheme, parts.hostname, parts.port or 0, **tls)


class HttpServer:
    """``app`` served on ``listen``; :attr:`url` is the origin actually bound."""

    def __init__(self, app: ASGIApp, listen: Listen) -> None:
        kwargs: dict[str, Any] = {}
        if listen.scheme == "https":
            if listen.certificate is None or listen.key is None:
                raise ValueError("https needs a certificate and a key")
            kwargs = {"ssl_certfile": str(listen.certificate),
                      "ssl_keyfile": str(listen.key), "ssl_cert_reqs": ssl.CERT_NONE}
            if listen.client_ca is not None:
                kwargs.update(ssl_cert_reqs=ssl.CERT_OPTIONAL,
                              ssl_ca_certs=str(listen.client_ca))
        self.listen = listen
        self.config = uvicorn.Config(app, host=listen.host, port=listen.port, http=_TlsH11,
                                     lifespan="off", access_log=False, log_level="warning",
                                     server_header=False, date_header=False, **kwargs)
        self.server = uvicorn.Server(self.config)
        self.url = ""

    async def start(self) -> None:
        self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        await self.server.startup()
        sock = self.server.servers[0].sockets[0]
        host = self.listen.host
        self.url = f"{self.listen.scheme}://{host}:{sock.getsockname()[1]}"

    async def close(self) -> None:
        self.server.should_exit = True
        await self.server.shutdown()

