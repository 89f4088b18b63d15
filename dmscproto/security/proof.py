"""Registration proof and request authorization at a gateway (draft-dmsc-protocol-00,
Sections 5.1 and 10).

:meth:`RequestVerifier.register` runs the checks of Section 5.1 on a REGISTER received
over an association authenticated with ``peer`` (the agent's TLS certificate), in the
draft's order, and raises :class:`~dmscproto.security.errors.SecurityError` with the
code of the first that fails:

0. the peer certificate, again at registration time (a long-lived association may
   outlive the certificate or its revocation): chain to a trust anchor, validity,
   revocation (UNTRUSTED_CERTIFICATE, CERTIFICATE_EXPIRED, CERTIFICATE_REVOKED), and an
   agent certificate, not a gateway's (IDENTITY_MISMATCH);
1. the record's COSE_Sign1 signature (BAD_SIGNATURE, Section 7.2.1);
2. the record's agent URI and public key equal the certificate's (IDENTITY_MISMATCH);
   an x5chain header, if present, must start with that same certificate;
3. TIMESTAMP within FRESHNESS_WINDOW (STALE_TIMESTAMP) and NONCE unseen (REPLAY);
4. the ACCESS_TOKEN, if the gateway requires tokens: :class:`TokenVerifier` with
   operation ``register`` for the record's skills.

The nonce is recorded only when every check passed, so refused requests cost no cache
space.  Domain, NAME_CONFLICT and record versions are :meth:`GatewayCore.register`'s
(steps 5 to 8).  REFRESH and DEREGISTER carry no record: the peer's Agent ID must be the
AGENT_ID they name, then steps 3 and 4.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..codec.cose import HDR_X5CHAIN, SignedRecord
from ..codec.messages import Deregister, Message, Refresh, Register
from ..codec.registry import ErrorCode
from ..codec.signing import SignatureError, spki, verify_record
from .ca import CertificateError, Identity, Kind, TrustStore
from .errors import SecurityError
from .replay import ReplayCache
from .tokens import AccessToken, Operation, TokenVerifier


@dataclass(frozen=True, slots=True)
class Verified:
    """Who sent an accepted request, and its token when one was checked."""

    identity: Identity
    token: AccessToken | None


def utc(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def check_certificate(trust: TrustStore, cert: x509.Certificate, now: float,
                      usage: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CLIENT_AUTH
                      ) -> Identity:
    """``trust.verify`` with its certificate errors as :class:`SecurityError`."""
    try:
        return trust.verify(cert, now=utc(now), usage=usage)
    except CertificateError as exc:
        raise SecurityError(exc.code, str(exc)) from None


def check_held_certificate(trust: TrustStore, cert: x509.Certificate, now: float,
                           usage: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CLIENT_AUTH
                           ) -> Identity:
    """:func:`check_certificate` of the certificate an association holds for its whole
    life, run on a copy parsed afresh from its DER (the same octets, the same checks):
    cryptography keeps what a check parses (extensions, names: about 6 KB) on the
    certificate object, which would then cost that much per connected peer."""
    copy = x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER))
    return check_certificate(trust, copy, now, usage)


def x5chain(signed: SignedRecord) -> list[x509.Certificate]:
    """The certificates of a record's x5chain header (RFC 9360), leaf first."""
    value = signed.unprotected.get(HDR_X5CHAIN)
    if value is None:
        return []
    items = [value] if isinstance(value, bytes) else value
    try:
        return [x509.load_der_x509_certificate(item) for item in items]
    except (TypeError, ValueError):
        raise SecurityError(ErrorCode.MALFORMED_COSE, "x5chain is not DER certificates") \
            from None


def check_signature(signed: SignedRecord) -> None:
    """A record's COSE_Sign1 signature and key-derived Agent ID (Section 7.2.1);
    BAD_SIGNATURE otherwise."""
    try:
        verify_record(signed)
    except SignatureError as exc:
        raise SecurityError(ErrorCode.BAD_SIGNATURE, str(exc)) from None


def _good_envelopes(records: Sequence[SignedRecord]) -> list[bytes]:
    """The envelopes of ``records`` whose signature checks (in a worker thread)."""
    good = []
    for signed in records:
        try:
            verify_record(signed)
        except SignatureError:
            continue
        good.append(signed.encode())
    return good


class SignaturePrecheck:
    """Record signatures checked in worker threads, ahead of the machine that needs
    them: a gateway receiving a bulk transfer checks the signatures of an UPDATE's
    ADVERTISEs while its event loop applies the previous one.  Ed25519 runs in OpenSSL
    without Python's global lock, so the check and the rest of the gateway's work
    overlap.

    :meth:`check_signature` is :func:`check_signature` for the machine: an envelope
    (its exact octets) that passed here passes at once, once; anything else is checked
    there and then (and a failure named there).  At most ``capacity`` passed envelopes
    wait to be used, the oldest forgotten first."""

    def __init__(self, workers: int = 1, capacity: int = 100_000) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dmsc-signatures")
        self._passed: OrderedDict[bytes, bool] = OrderedDict()
        self.capacity = capacity

    async def precheck(self, records: Sequence[SignedRecord]) -> None:
        """Check ``records`` in a worker thread; return once they are checked."""
        good = await asyncio.get_running_loop().run_in_executor(
            self._pool, _good_envelopes, records)
        passed = self._passed
        for envelope in good:
            passed[envelope] = True
        while len(passed) > self.capacity:
            passed.popitem(last=False)

    def check_signature(self, signed: SignedRecord) -> None:
        if not self._passed.pop(signed.encode(), False):
            check_signature(signed)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def check_record(signed: SignedRecord, identity: Identity, cert: x509.Certificate) -> None:
    """Steps 1 and 2: the signature, then the record's identity against ``cert``'s."""
    check_signature(signed)
    rec = signed.record
    if rec.agent_uri != identity.uri:
        raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                            f"record is for {rec.agent_uri}, certificate for {identity.uri}")
    if rec.public_key != spki(cert.public_key()):  # type: ignore[arg-type]
        raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                            "record public key is not the certificate's key")
    chain = x5chain(signed)
    if chain and chain[0].public_bytes(serialization.Encoding.DER) != \
            cert.public_bytes(serialization.Encoding.DER):
        raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                            "x5chain does not start with the agent's certificate")


class RequestVerifier:
    """A gateway's checks on agent requests (module docstring).

    ``tokens`` set means the gateway requires an ACCESS_TOKEN in every agent request
    (INVALID_TOKEN when absent); ``None`` means tokens are not used."""

    def __init__(self, trust: TrustStore, *, replay: ReplayCache | None = None,
                 tokens: TokenVerifier | None = None) -> None:
        self.trust = trust
        self.replay = replay or ReplayCache()
        self.tokens = tokens

    def peer(self, cert: x509.Certificate, now: float) -> Identity:
        """Step 0: the agent's certificate, checked now."""
        identity = check_held_certificate(self.trust, cert, now)
        if identity.kind is not Kind.AGENT:
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                f"{identity.uri} is a {identity.kind}, not an agent")
        return identity

    def authorize(self, token: bytes | None, cert: x509.Certificate | None, now: float,
                  operation: Operation, capabilities: Iterable[str] = ()) -> AccessToken | None:
        """Step 4, and the check for DISCOVER and ROUTE_REQUEST: the token must grant
        ``operation`` for ``capabilities`` to the holder of ``cert``."""
        if self.tokens is None:
            return None
        if token is None:
            raise SecurityError(ErrorCode.INVALID_TOKEN, "this gateway requires an access token")
        return self.tokens.verify(token, peer_certificate=cert, now=now, operation=operation,
                                  capabilities=capabilities)

    def check(self, msg: Message, cert: x509.Certificate | None, now: float) -> Verified:
        """:meth:`register`, :meth:`refresh` or :meth:`deregister` by message type: the
        hook a gateway calls before the core acts.  Without a peer certificate (a lab
        transport) every request is UNTRUSTED_CERTIFICATE."""
        if cert is None:
            raise SecurityError(ErrorCode.UNTRUSTED_CERTIFICATE,
                                "the association is not authenticated")
        if isinstance(msg, Register):
            return self.register(msg, cert, now)
        if isinstance(msg, Refresh):
            return self.refresh(msg, cert, now)
        if isinstance(msg, Deregister):
            return self.deregister(msg, cert, now)
        raise TypeError(f"not a registration request: {msg.TYPE.name}")

    def register(self, msg: Register, cert: x509.Certificate, now: float) -> Verified:
        """All checks of a REGISTER from the holder of ``cert``; records the nonce."""
        identity = self.peer(cert, now)
        check_record(msg.record, identity, cert)
        return self._fresh(identity, msg.nonce, msg.timestamp, msg.token, cert, now,
                           (s.id for s in msg.record.record.skills))

    def refresh(self, msg: Refresh, cert: x509.Certificate, now: float) -> Verified:
        return self._same_agent(msg.agent_id, msg.nonce, msg.timestamp, msg.token, cert, now)

    def deregister(self, msg: Deregister, cert: x509.Certificate, now: float) -> Verified:
        return self._same_agent(msg.agent_id, msg.nonce, msg.timestamp, msg.token, cert, now)

    def _same_agent(self, agent_id: bytes, nonce: bytes, timestamp: int, token: bytes | None,
                    cert: x509.Certificate, now: float) -> Verified:
        identity = self.peer(cert, now)
        if identity.entity_id != agent_id:
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                "AGENT_ID is not the Agent ID of the peer's certificate")
        return self._fresh(identity, nonce, timestamp, token, cert, now, ())

    def _fresh(self, identity: Identity, nonce: bytes, timestamp: int, token: bytes | None,
               cert: x509.Certificate, now: float, capabilities: Iterable[str]) -> Verified:
        now_ms = int(now * 1000)
        self.replay.check(identity.entity_id, nonce, timestamp, now_ms)
        caps = tuple(capabilities)
        access = self.authorize(token, cert, now, Operation.REGISTER, caps)
        self.replay.accept(identity.entity_id, nonce, timestamp, now_ms)
        return Verified(identity, access)
