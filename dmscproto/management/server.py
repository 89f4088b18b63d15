"""The management listener: RESTCONF and ``/metrics`` over HTTPS with mutual TLS
(draft-dmsc-yang-00, Sections 5 and 6; RFC 8040).

Off unless the gateway's configuration has ``[management] listen``.  An aiohttp server
on the gateway's event loop, with the gateway's certificate; the client must present an
*operator* certificate of the gateway's own domain (:class:`~dmscproto.security.ca.Kind`
``operator``, extendedKeyUsage clientAuth), checked like every certificate the gateway
accepts (chain to the domain authority, validity, revocation).  The TLS handshake asks
for a client certificate of any authority the gateway trusts; a request without one is
answered 401, one with a certificate that is not an operator's of this domain 403 (a
certificate of no trusted authority fails the handshake).

Resources (GET only):

* ``/.well-known/host-meta``: the RESTCONF root (RFC 8040, Section 3.1);
* ``/restconf/data/ietf-dmsc:dmsc`` and below it, e.g. ``.../dmsc/peers``,
  ``.../dmsc/peers/peer=NAME``, ``.../dmsc/records/record=AGENT-ID``: the live state
  as RFC 7951 JSON (``application/yang-data+json``, :mod:`.state`); no query
  parameters are supported (400);
* ``/metrics``: the Prometheus text exposition (:mod:`.prometheus`).

Errors are RFC 8040 ``ietf-restconf:errors`` documents.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..runtime.logs import facts
from ..security.ca import CertificateError, Identity, Kind
from . import prometheus
from .state import LIST_KEYS, MODULE, StateDocument

if TYPE_CHECKING:
    from ..runtime.gateway import GatewayRuntime

log = logging.getLogger("dmsc.management")

#: The media type of RFC 7951 JSON in RESTCONF (RFC 8040, Section 11.3.2).
YANG_JSON = "application/yang-data+json"
HOST_META = ("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
             "  <Link rel='restconf' href='/restconf'/>\n</XRD>\n")


def restconf_error(status: int, tag: str, message: str, *,
                   error_type: str = "protocol") -> web.Response:
    """An RFC 8040 error answer (Section 7.1)."""
    body = {"ietf-restconf:errors": {"error": [{"error-type": error_type, "error-tag": tag,
                                                "error-message": message}]}}
    return web.json_response(body, status=status, content_type=YANG_JSON)


class ManagementServer:
    """The management listener of one :class:`GatewayRuntime` (module docstring)."""

    def __init__(self, rt: GatewayRuntime) -> None:
        self.rt = rt
        self.state = StateDocument(rt)
        self.registry = prometheus.registry(rt)
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] = ("", 0)

    def ssl_context(self) -> ssl.SSLContext:
        """The gateway's certificate; client certificates of any trusted authority
        asked for (checked per request), not required (401 without one)."""
        c = self.rt.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(c.certificate, c.key)
        ctx.load_verify_locations(cadata=self.rt.tls.trust.pem().decode("ascii"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    async def start(self, host: str, port: int) -> None:
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/.well-known/host-meta", self._host_meta)
        app.router.add_get("/restconf/data", self._data)
        app.router.add_get("/restconf/data/{path:.*}", self._data)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context())
        await site.start()
        bound = self._runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- access --------------------------------------------------------------------------
    def operator(self, der: bytes | None) -> Identity | web.Response:
        """The operator a client certificate names, or the 401/403 answer."""
        if der is None:
            return restconf_error(401, "access-denied", "an operator certificate is needed")
        try:
            identity = self.rt.tls.trust.verify(x509.load_der_x509_certificate(der),
                                                usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        except (CertificateError, ValueError) as exc:
            return restconf_error(403, "access-denied", str(exc))
        if identity.kind is not Kind.OPERATOR or identity.domain != self.rt.config.domain:
            return restconf_error(403, "access-denied", f"{identity.uri} is not an operator "
                                  f"of {self.rt.config.domain}")
        return identity

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        tls = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
        who = self.operator(der)
        if isinstance(who, web.Response):
            log.info("management request refused", extra=facts(
                path=request.path, status=who.status, remote=request.remote))
            return who
        answer: web.StreamResponse = await handler(request)
        return answer

    # --- resources -----------------------------------------------------------------------
    async def _host_meta(self, _request: web.Request) -> web.Response:
        return web.Response(text=HOST_META, content_type="application/xrd+xml")

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=prometheus.exposition(self.registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; "
                                                     "charset=utf-8"})

    async def _data(self, request: web.Request) -> web.Response:
        if request.query:
            return restconf_error(400, "invalid-value", "query parameters are not "
                                  f"supported: {', '.join(request.query)}")
        found = self.resolve(request.match_info.get("path", ""))
        if isinstance(found, web.Response):
            return found
        return web.json_response(found, content_type=YANG_JSON)

    def resolve(self, path: str) -> dict[str, Any] | web.Response:
        """The RFC 7951 answer for a data resource path below ``/restconf/data/``
        (RFC 8040, Section 3.5.3), or the error answer."""
        segments = [s for s in path.split("/") if s]
        top = f"{MODULE}:dmsc"
        if not segments:
            return self.state.document()
        if segments[0] != top:
            return restconf_error(404, "invalid-value", f"no data resource {segments[0]}")
        if len(segments) == 1:
            return self.state.document()
        child = _unprefixed(segments[1])
        build = self.state.children.get(child)
        if build is None:
            return restconf_error(404, "invalid-value", f"{top} has no child {child}")
        node: Any = build()
        name = child
        for segment in segments[2:]:
            name, _, key = _unprefixed(segment).partition("=")
            node = node.get(name) if isinstance(node, dict) else None
            if key and isinstance(node, list):
                value = unquote(key)
                node = [e for e in node if str(e.get(LIST_KEYS.get(name, ""))) == value]
            if not node:
                return restconf_error(404, "invalid-value", f"no instance of {segment}")
        return {f"{MODULE}:{name}": node}


def _unprefixed(segment: str) -> str:
    return segment.removeprefix(f"{MODULE}:")
