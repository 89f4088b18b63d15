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

and one operation (POST): ``/restconf/operations/ietf-dmsc:ping`` sends ECHO_REQUESTs
over a peer's session (draft-dmsc-protocol-00, Section 6.8.1) and answers each one's
responder, round-trip time and status.  Errors are RFC 8040 ``ietf-restconf:errors``
documents.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..codec.messages import EchoReply, EchoRequest, Message
from ..codec.registry import ErrorCode
from ..host.logs import facts
from ..host.pump import Association
from ..protocol.machine import timestamp_ms
from ..protocol.peering import PeerState
from ..security.ca import CertificateError, Identity, Kind
from . import prometheus
from .client import YANG_JSON
from .state import (
    LIST_KEYS,
    MODULE,
    ManagedGateway,
    PeerEntry,
    StateDocument,
    dmsc_id,
    error_code,
    peer_entries,
)

log = logging.getLogger("dmsc.management")

HOST_META = ("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
             "  <Link rel='restconf' href='/restconf'/>\n</XRD>\n")


def restconf_error(status: int, tag: str, message: str, *,
                   error_type: str = "protocol") -> web.Response:
    """An RFC 8040 error answer (Section 7.1)."""
    body = {"ietf-restconf:errors": {"error": [{"error-type": error_type, "error-tag": tag,
                                                "error-message": message}]}}
    return web.json_response(body, status=status, content_type=YANG_JSON)


class ManagementServer:
    """The management listener of one :class:`~.state.ManagedGateway` (module docstring)."""

    def __init__(self, rt: ManagedGateway) -> None:
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
        app.router.add_post(f"/restconf/operations/{MODULE}:ping", self._ping)
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
        found = await self.resolve(request.match_info.get("path", ""))
        if isinstance(found, web.Response):
            return found
        return web.json_response(found, content_type=YANG_JSON)

    async def _ping(self, request: web.Request) -> web.Response:
        try:
            args = (await request.json())[f"{MODULE}:input"]
            name, count = str(args["peer"]), int(args.get("count", 1))
        except (ValueError, KeyError, TypeError):
            return restconf_error(400, "malformed-message", f"expected {{\"{MODULE}:input\": "
                                  "{\"peer\": NAME, \"count\": N}}")
        if not 1 <= count <= 100:
            return restconf_error(400, "invalid-value", "count must be 1..100")
        entry = next((e for e in peer_entries(self.rt) if e.name == name), None)
        if entry is None:
            return restconf_error(400, "invalid-value", f"no peer {name}")
        replies = [await self._echo(entry, seq) for seq in range(1, count + 1)]
        return web.json_response({f"{MODULE}:output": {"reply": replies}},
                                 content_type=YANG_JSON)

    async def _echo(self, entry: PeerEntry, sequence: int) -> dict[str, Any]:
        """One ECHO_REQUEST over the peer's session, and what came of it."""
        handle, session, node = entry.handle, entry.session, self.rt.node
        if session is None or PeerState(session.state) is not PeerState.ESTABLISHED \
                or not isinstance(handle, Association) or node is None:
            return {"sequence": sequence, "status": error_code(ErrorCode.TARGET_UNREACHABLE)}
        msg = EchoRequest(transaction_id=node.txids(), sequence=sequence,
                          timestamp=timestamp_ms(time.time()))
        metrics = self.rt.metrics
        if metrics is not None:
            metrics.sent(handle, msg)
        started = time.perf_counter()
        try:
            answer: Message = await handle.link.request(msg)
        except TimeoutError:
            return {"sequence": sequence, "status": error_code(ErrorCode.TRANSACTION_TIMEOUT)}
        except ConnectionError as exc:
            code = getattr(exc, "code", ErrorCode.TARGET_UNREACHABLE)
            return {"sequence": sequence, "status": error_code(code)}
        rtt = time.perf_counter() - started
        if metrics is not None:
            metrics.received(handle, answer)
        if isinstance(answer, EchoReply):
            return {"sequence": sequence, "responder": dmsc_id(answer.gateway_id),
                    "round-trip-time": round(rtt * 1e6), "status": "success"}
        return {"sequence": sequence,
                "status": error_code(getattr(answer, "status", ErrorCode.INTERNAL_ERROR))}

    async def resolve(self, path: str) -> dict[str, Any] | web.Response:
        """The RFC 7951 answer for a data resource path below ``/restconf/data/``
        (RFC 8040, Section 3.5.3), or the error answer."""
        segments = [s for s in path.split("/") if s]
        top = f"{MODULE}:dmsc"
        if not segments:
            return await self.state.document()
        if segments[0] != top:
            return restconf_error(404, "invalid-value", f"no data resource {segments[0]}")
        if len(segments) == 1:
            return await self.state.document()
        child = _unprefixed(segments[1])
        build = self.state.children.get(child)
        if build is None:
            return restconf_error(404, "invalid-value", f"{top} has no child {child}")
        node: Any = await build()
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
