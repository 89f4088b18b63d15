"""Security over real QUIC handshakes on loopback (draft Sections 9.1, 10.2, 10.3).

A gateway-shaped handler (RequestVerifier + GatewayCore behind dmscproto.transport's
QUIC server) checks REGISTERs with the TLS peer's certificate; refused handshakes and
refused registrations each end in their registered code, store nothing, and the next
good agent is served.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from security_support import Domain, core_for, handle_register, register, signed_of

from dmscproto.codec.messages import Message, Notify, Open, Register, RegisterAck
from dmscproto.codec.registry import ErrorCode, GatewayCaps
from dmscproto.codec.values import ExportPolicy
from dmscproto.gateway.core import GatewayCore
from dmscproto.security.ca import DomainAuthority, Kind
from dmscproto.security.errors import SecurityError
from dmscproto.security.federation import Federation, ImportPolicy, PeerDomain
from dmscproto.security.proof import RequestVerifier
from dmscproto.security.revocation import Revocation, RevocationTrustStore, issue_crl
from dmscproto.security.tokens import ScopeSet, TokenIssuer, TokenVerifier
from dmscproto.transport import ConnectionClosed, PeerInfo, QuicServer, TlsIdentity, connect, serve

pytestmark = pytest.mark.security
LOOPBACK = "127.0.0.1"


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


@dataclass
class Site:
    a: Domain
    gateway: TlsIdentity
    trust: RevocationTrustStore
    verifier: RequestVerifier
    core: GatewayCore
    issuer: TokenIssuer

    def agent(self, name: str, *, age: float = 0, validity: dt.timedelta = dt.timedelta(days=1)
              ) -> TlsIdentity:
        return TlsIdentity(self.a.issue(name, now=time.time() - age, validity=validity),
                           self.trust)

    async def handle(self, msg: Message, peer: PeerInfo) -> Message | None:
        assert isinstance(msg, Register)
        return handle_register(self.verifier, self.core, msg, peer.certificate, time.time())


@pytest.fixture
def site(tmp_path: Path) -> Site:
    now = time.time()
    a = Domain.create("a.example", now)
    trust = RevocationTrustStore([a.authority.certificate])
    trust.revocation.update(issue_crl(a.authority, [], number=1))
    gw = TlsIdentity(a.issue("gw1", Kind.GATEWAY, now=now), trust)
    verifier = RequestVerifier(trust, tokens=TokenVerifier(a.authority.certificate))
    return Site(a, gw, trust, verifier, core_for(tmp_path, "a.example", gw.credential),
                TokenIssuer(a.authority))


@asynccontextmanager
async def gateway(site: Site) -> AsyncIterator[QuicServer]:
    srv = await serve(LOOPBACK, 0, site.gateway, site.handle)
    try:
        yield srv
    finally:
        srv.close()


async def register_over_quic(srv: QuicServer, agent: TlsIdentity, site: Site,
                             **kw: Any) -> RegisterAck:
    conn = await connect(LOOPBACK, srv.address[1], agent, timeout=3)
    try:
        cred = agent.credential
        token = kw.pop("token", None) or site.issuer.issue(
            cred.certificate, cred.identity.uri, ScopeSet.parse("register"),
            now=time.time()).encode()
        msg = kw.pop("msg", None) or register(signed_of(cred), now=time.time(), token=token)
        ack = await conn.request(msg)
        assert isinstance(ack, RegisterAck)
        return ack
    finally:
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 2)


async def still_serving(srv: QuicServer, site: Site, name: str = "good") -> None:
    ack = await register_over_quic(srv, site.agent(name), site)
    assert ack.status is ErrorCode.SUCCESS, ack.diagnostic
    assert any(r for r in site.core.agent_ids())


async def handshake_refused(srv: QuicServer, agent: TlsIdentity, code: ErrorCode) -> None:
    with pytest.raises(ConnectionClosed) as info:
        await connect(LOOPBACK, srv.address[1], agent, timeout=3)
    assert info.value.code is code


def test_untrusted_ca_refused_at_handshake(site: Site) -> None:
    impostor = DomainAuthority.create("a.example")  # same domain name, not trusted

    async def main() -> None:
        async with gateway(site) as srv:
            await handshake_refused(srv, TlsIdentity(impostor.issue("weather", Kind.AGENT),
                                                     site.trust),
                                    ErrorCode.UNTRUSTED_CERTIFICATE)
            assert len(site.core) == 0 and not srv.peers
            await still_serving(srv, site)
    run(main())


def test_expired_certificate_refused_at_handshake(site: Site) -> None:
    old = site.agent("old", age=10 * 86400, validity=dt.timedelta(days=1))

    async def main() -> None:
        async with gateway(site) as srv:
            await handshake_refused(srv, old, ErrorCode.CERTIFICATE_EXPIRED)
            assert len(site.core) == 0
            await still_serving(srv, site)
    run(main())


def test_revoked_certificate_refused_at_handshake_and_on_a_live_association(
        site: Site) -> None:
    fired, later = site.agent("fired"), site.agent("later")

    async def main() -> None:
        async with gateway(site) as srv:
            conn = await connect(LOOPBACK, srv.address[1], later, timeout=3)  # before
            crl = issue_crl(site.a.authority, [
                Revocation(fired.credential.certificate.serial_number, dt.datetime.now(dt.UTC)),
                Revocation(later.credential.certificate.serial_number, dt.datetime.now(dt.UTC))],
                number=2)
            assert site.trust.revocation.update(crl)
            await handshake_refused(srv, fired, ErrorCode.CERTIFICATE_REVOKED)
            token = site.issuer.issue(later.credential.certificate, later.identity.uri,
                                      ScopeSet.parse("register"), now=time.time()).encode()
            ack = await conn.request(register(signed_of(later.credential), now=time.time(),
                                              token=token))
            assert isinstance(ack, RegisterAck)
            assert ack.status is ErrorCode.CERTIFICATE_REVOKED  # re-checked at REGISTER
            conn.close()
            assert len(site.core) == 0
            await still_serving(srv, site)
    run(main())


def test_forged_record_over_quic(site: Site) -> None:
    agent = site.agent("weather")

    async def main() -> None:
        async with gateway(site) as srv:
            signed = signed_of(agent.credential)
            forged = replace(signed, signature=bytes(64))
            ack = await register_over_quic(srv, agent, site, msg=register(
                forged, now=time.time(), token=site.issuer.issue(
                    agent.credential.certificate, agent.identity.uri,
                    ScopeSet.parse("register"), now=time.time()).encode()))
            assert ack.status is ErrorCode.BAD_SIGNATURE and len(site.core) == 0
            await still_serving(srv, site)
    run(main())


def test_stolen_token_useless_on_another_association(site: Site) -> None:
    victim, thief = site.agent("victim"), site.agent("thief")
    stolen = site.issuer.issue(victim.credential.certificate, victim.identity.uri,
                               ScopeSet.parse("register"), now=time.time()).encode()

    async def main() -> None:
        async with gateway(site) as srv:
            ack = await register_over_quic(srv, thief, site, token=stolen)
            assert ack.status is ErrorCode.TOKEN_KEY_MISMATCH and len(site.core) == 0
            await still_serving(srv, site)
    run(main())


# --- peer sessions: a gateway presenting another domain's certificate --------------------
def test_gateway_with_another_domains_certificate_is_refused() -> None:
    """A's gateway expects b.example's gateway at an address; a gateway of c.example
    (a federated domain, so its certificate is trusted) answers there instead.  The
    handshake fails with IDENTITY_MISMATCH; an OPEN claiming b.example over a c.example
    association fails the same way; the real b.example gateway is accepted."""
    now = time.time()
    a, b, c = (Domain.create(d, now) for d in ("a.example", "b.example", "c.example"))
    nothing = ExportPolicy(peer_domains=())

    def peer(d: Domain) -> PeerDomain:
        return PeerDomain(d.name, d.authority.certificate, nothing, ImportPolicy((d.name,)))

    fed = Federation("a.example", a.authority.certificate, [peer(b), peer(c)])
    gw_a = TlsIdentity(a.issue("gw-a", Kind.GATEWAY, now=now), fed.trust_store())
    gw_b = TlsIdentity(b.issue("gw-b", Kind.GATEWAY, now=now), fed.trust_store())
    gw_c = TlsIdentity(c.issue("gw-c", Kind.GATEWAY, now=now), fed.trust_store())
    answers: list[str] = []

    async def on_open(msg: Message, peer_info: PeerInfo) -> Message | None:
        assert isinstance(msg, Open)
        try:
            fed.check_open(msg, peer_info.identity)
        except SecurityError as exc:
            return Notify(transaction_id=msg.transaction_id, status=exc.code,
                          diagnostic=exc.reason)
        return msg

    def open_as(domain: str, gateway_id: bytes) -> Open:
        return Open(transaction_id=7, gateway_id=gateway_id, domain=domain, hold_time=90,
                    capabilities=int(GatewayCaps.ROUTING))

    async def main() -> None:
        mitm = await serve(LOOPBACK, 0, gw_c, on_open)
        try:
            with pytest.raises(ConnectionClosed) as info:
                await connect(LOOPBACK, mitm.address[1], gw_a, expect_domain="b.example",
                              timeout=3)
            assert info.value.code is ErrorCode.IDENTITY_MISMATCH
        finally:
            mitm.close()
        srv = await serve(LOOPBACK, 0, gw_a, on_open)
        try:
            for tls, claim in ((gw_c, gw_b.identity), (gw_b, gw_b.identity)):
                conn = await connect(LOOPBACK, srv.address[1], tls, expect_domain="a.example",
                                     timeout=3)
                reply = await conn.request(open_as(claim.domain, claim.entity_id))
                answers.append(reply.status.name if isinstance(reply, Notify) else
                               reply.domain if isinstance(reply, Open) else "?")
                conn.close()
        finally:
            srv.close()
        assert answers == ["IDENTITY_MISMATCH", "b.example"]
    run(main())
