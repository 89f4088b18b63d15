"""Security benchmark: what the checks of Section 10 cost a gateway (issue 5).

    python tools/bench/security.py [--n N] [--http H]

1. ``register_proof_per_s``: :meth:`RequestVerifier.register` on N distinct agents'
   REGISTERs (certificate chain and revocation, COSE signature, identity, freshness and
   replay cache, access token with cnf and scope), i.e. everything a gateway checks
   before the core stores the record.  Baseline in the same run: ``signature_per_s``,
   the bare COSE signature check (``verify_record``) of the same records, the one
   check without which nothing can be trusted; ``proof_vs_signature`` is the ratio.
2. ``token_verify_per_s``: :meth:`TokenVerifier.verify` on N tokens, against the bare
   Ed25519 verification of their JWS signing input (``ed25519_per_s``), showing what
   joserfc and the claim checks add.
3. ``origin_verify_per_s``: :meth:`Federation.verify_origin` on N origin assertions.
4. ``token_http_per_s`` and ``token_http_p50_ms``: H token requests to a real HTTPS
   token endpoint on loopback with mTLS, a new TLS connection each (as a client that
   keeps no connection would do).

Inputs are built before timing.  The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import threading
import time

from cryptography.hazmat.primitives.asymmetric import ed25519

from dmscproto.codec.messages import Register, RouteRequest
from dmscproto.codec.signing import sign_record, spki, verify_record
from dmscproto.codec.values import CapabilityRecord, Endpoint, ExportPolicy, Skill
from dmscproto.security.authority_store import AuthorityStore
from dmscproto.security.ca import DomainAuthority, Kind
from dmscproto.security.federation import Federation, ImportPolicy, PeerDomain
from dmscproto.security.origin import sign_origin
from dmscproto.security.proof import RequestVerifier
from dmscproto.security.replay import ReplayCache
from dmscproto.security.revocation import RevocationTrustStore, issue_crl
from dmscproto.security.token_server import request_token, serve
from dmscproto.security.tokens import ScopeSet, TokenIssuer, TokenVerifier


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="agents, tokens, assertions")
    ap.add_argument("--http", type=int, default=100, help="token requests over HTTPS")
    args = ap.parse_args()
    n = args.n
    now = time.time()

    a = DomainAuthority.create("a.example")
    trust = RevocationTrustStore([a.certificate])
    trust.revocation.update(issue_crl(a, [], number=1))
    verifier = RequestVerifier(trust, replay=ReplayCache(capacity=10 * n),
                               tokens=TokenVerifier(a.certificate))
    issuer = TokenIssuer(a)
    scope = ScopeSet.parse("register route")
    creds, msgs, tokens = [], [], []
    for i in range(n):
        cred = a.issue(f"agent{i}", Kind.AGENT)
        key = cred.private_key
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        rec = CapabilityRecord(
            agent_uri=cred.identity.uri, agent_id=cred.identity.entity_id, name=f"a{i}",
            version="1", skills=(Skill("forecast", "Forecast", ("weather",)),),
            default_input_modes=("text/plain",), default_output_modes=("text/plain",),
            endpoints=(Endpoint("quic", cred.identity.uri),), domain="a.example",
            issued_at=int(now), lease=600, record_version=1, public_key=spki(key.public_key()))
        token = issuer.issue(cred.certificate, cred.identity.uri, scope, now=now).encode()
        creds.append(cred)
        tokens.append(token)
        msgs.append(Register(record=sign_record(rec, key), lease=600, nonce=os.urandom(16),
                             timestamp=int(now * 1000), token=token))

    t0 = time.perf_counter()
    for m in msgs:
        verify_record(m.record)
    sig_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for m, c in zip(msgs, creds, strict=True):
        verifier.register(m, c.certificate, now)
    proof_s = time.perf_counter() - t0

    tv = TokenVerifier(a.certificate)
    pub = a.private_key.public_key()
    assert isinstance(pub, ed25519.Ed25519PublicKey)
    parts = [t.split(b".") for t in tokens]
    raw = [(p[0] + b"." + p[1], base64.urlsafe_b64decode(p[2] + b"==")) for p in parts]
    t0 = time.perf_counter()
    for signing_input, sig in raw:
        pub.verify(sig, signing_input)
    ed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t, c in zip(tokens, creds, strict=True):
        tv.verify(t, peer_certificate=c.certificate, now=now)
    tok_s = time.perf_counter() - t0

    b = DomainAuthority.create("b.example")
    gw = a.issue("gw-a", Kind.GATEWAY)
    target = b.issue("target", Kind.AGENT)
    target_rec = CapabilityRecord(
        agent_uri=target.identity.uri, agent_id=target.identity.entity_id, name="t",
        version="1", skills=(Skill("forecast", "Forecast", ("weather",)),),
        default_input_modes=(), default_output_modes=(), endpoints=(), domain="b.example",
        issued_at=int(now), lease=600, record_version=1,
        public_key=spki(target.certificate.public_key()))  # type: ignore[arg-type]
    fed_b = Federation("b.example", b.certificate, [PeerDomain(
        "a.example", a.certificate, ExportPolicy(("a.example",)), ImportPolicy(("a.example",)))],
        replay=ReplayCache(capacity=10 * n, per_agent=10 * n))
    calls = []
    for c in creds:
        req = RouteRequest(source_agent=c.identity.entity_id,
                           target_agent=target.identity.entity_id, hop_limit=8, path=(),
                           payload=b"x" * 256)
        calls.append((sign_origin(gw, req, source_uri=c.identity.uri,
                                  target_agent=target.identity.entity_id,
                                  target_domain="b.example", scope=scope, now=now), req))
    t0 = time.perf_counter()
    for assertion, req in calls:
        fed_b.verify_origin(assertion, req, target_rec, now, lambda _key: gw.certificate)
    origin_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        store = AuthorityStore.init(tmp, "a.example")
        client = store.issue("client", Kind.AGENT)
        server = serve(store)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        anchors = store.authority.trust_store.pem()
        lat = []
        t0 = time.perf_counter()
        for _ in range(args.http):
            t1 = time.perf_counter()
            request_token(server.endpoint.url, client, anchors, scope="route")
            lat.append(time.perf_counter() - t1)
        http_s = time.perf_counter() - t0
        server.shutdown()
        server.server_close()

    print(json.dumps({
        "n": n,
        "register_proof_per_s": rate(n, proof_s),
        "signature_per_s": rate(n, sig_s),
        "proof_vs_signature": round(sig_s / proof_s, 3),
        "token_verify_per_s": rate(n, tok_s),
        "ed25519_per_s": rate(n, ed_s),
        "token_vs_ed25519": round(ed_s / tok_s, 3),
        "origin_verify_per_s": rate(n, origin_s),
        "token_http_per_s": rate(args.http, http_s),
        "token_http_p50_ms": round(statistics.median(lat) * 1000, 2),
    }))


if __name__ == "__main__":
    main()
