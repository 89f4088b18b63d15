"""dmsc authority: run a domain authority (draft-dmsc-protocol-00, Section 10).

A directory holds one authority: its CA key and certificate, the certificates it
issued, its revocations and its CRL.

  dmsc authority init DIR --domain a.example
  dmsc authority issue DIR gw1 --kind gateway
  dmsc authority issue DIR alice --kind operator   (for dmsc status --gateway)
  dmsc authority issue DIR weather --scope "register discover route:forecast"
  dmsc authority revoke DIR weather            (every certificate issued to weather)
  dmsc authority revoke DIR --serial 5c58ce2e...
  dmsc authority crl DIR                       (re-sign the CRL now)
  dmsc authority serve DIR --port 8443         (POST /token, GET /crl, GET /jwks)
  dmsc authority token https://127.0.0.1:8443/token --cert weather.pem \\
        --key weather.key --ca ca.pem --scope route

Exit status: 0 on success, 1 on failure, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from . import EXIT_FAILURE, EXIT_OK, Subparsers, UsageError

REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
           "superseded", "cessationOfOperation", "certificateHold", "privilegeWithdrawn",
           "aACompromise")


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "authority", help="run a domain authority: certificates, revocation, tokens",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("init", help="create a new authority in DIR")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--domain", required=True, help="the domain name, e.g. a.example")
    p.add_argument("--validity-days", type=int, default=3650,
                   help="lifetime of the CA certificate (default 3650)")
    p.add_argument("--crl-validity-hours", type=float, default=24,
                   help="time from one CRL to its nextUpdate (default 24)")

    p = actions.add_parser("issue", help="issue a certificate (and key) for NAME")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--kind", choices=("agent", "gateway", "operator"), default="agent",
                   help="operator: for a gateway's management interface (dmsc status "
                   "--gateway)")
    p.add_argument("--validity-days", type=float, default=365,
                   help="certificate lifetime (default 365)")
    p.add_argument("--scope", help="scopes its holder may get tokens for (default: "
                   "'register discover route' for agents, none for gateways)")
    p.add_argument("--dns", action="append", metavar="NAME",
                   help="DNS name for TLS (repeatable; gateways default to localhost, NAME)")
    p.add_argument("--ip", action="append", default=[], metavar="ADDR",
                   help="IP address for TLS (repeatable)")
    p.add_argument("--out", metavar="DIR", help="also write the certificate and key here")

    p = actions.add_parser("revoke", help="revoke NAME's certificates or one serial")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--serial", help="the serial number to revoke, hex")
    p.add_argument("--reason", choices=REASONS, help="CRL reason code")

    p = actions.add_parser("crl", help="sign a new CRL now")
    p.add_argument("dir", metavar="DIR")

    p = actions.add_parser("serve", help="serve the token endpoint, CRL and JWKS over HTTPS")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443, help="0 for any free port")
    p.add_argument("--token-lifetime", type=int, default=3600, help="seconds (default 3600)")
    p.add_argument("--dns", action="append", metavar="NAME",
                   help="DNS name of the endpoint's certificate (repeatable; default "
                   "localhost and the IP address 127.0.0.1)")

    p = actions.add_parser("token", help="get an access token from a token endpoint")
    p.add_argument("url", metavar="URL")
    p.add_argument("--cert", required=True, help="client certificate (PEM)")
    p.add_argument("--key", required=True, help="client private key (PEM)")
    p.add_argument("--ca", required=True, help="the authority's certificate (PEM)")
    p.add_argument("--scope")
    p.add_argument("--resource", action="append", default=[],
                   help="audience: a gateway URI of the domain (RFC 8707, repeatable)")
    p.add_argument("--assertion", action="store_true",
                   help="authenticate with an RFC 7523 client assertion, not mTLS")
    return parser


def _days(value: float) -> dt.timedelta:
    if value <= 0:
        raise UsageError("validity must be positive")
    return dt.timedelta(days=value)


def run(args: argparse.Namespace) -> int:
    from cryptography import x509

    from ..security.authority_store import AuthorityStore
    from ..security.ca import Kind
    from ..security.tokens import ScopeSet

    action: str = args.action
    if action == "token":
        return _token(args)
    try:
        if action == "init":
            store = AuthorityStore.init(
                args.dir, args.domain, validity=_days(args.validity_days),
                crl_validity=dt.timedelta(hours=args.crl_validity_hours))
            print(f"authority of {store.domain} in {args.dir}: ca.pem, ca.key, crl.pem")
            return EXIT_OK
        store = AuthorityStore.open(args.dir)
    except FileNotFoundError as exc:
        raise UsageError(f"{args.dir} holds no authority ({exc.filename} missing)") from None
    except (FileExistsError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if action == "issue":
        try:
            scope = None if args.scope is None else ScopeSet.parse(args.scope)
            cred = store.issue(args.name, Kind(args.kind), validity=_days(args.validity_days),
                               scope=scope, dns_names=args.dns, ip_addresses=args.ip)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        paths = cred.save(args.out) if args.out else \
            (Path(args.dir) / "issued" / f"{args.name}.pem",
             Path(args.dir) / "issued" / f"{args.name}.key")
        print(f"{cred.identity.uri} serial {cred.certificate.serial_number:x} "
              f"until {cred.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
        print(f"certificate {paths[0]}\nkey {paths[1]}")
        return EXIT_OK
    if action == "revoke":
        if (args.name is None) == (args.serial is None):
            raise UsageError("give either NAME or --serial")
        try:
            serials = [int(args.serial, 16)] if args.serial else \
                [i.serial for i in store.issued(args.name)]
        except ValueError:
            raise UsageError(f"not a hex serial number: {args.serial}") from None
        if not serials:
            raise UsageError(f"no certificate was issued to {args.name}")
        reason = x509.ReasonFlags(args.reason) if args.reason else None
        try:
            new = store.revoke(serials, reason=reason)
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
        for serial in new:
            print(f"revoked {serial:x}")
        print(f"crl.pem number {store.state.crl_number}, {len(store.state.revoked)} revoked")
        return EXIT_OK
    if action == "crl":
        crl = store.write_crl()
        print(f"crl.pem number {store.state.crl_number}, next update "
              f"{crl.next_update_utc:%Y-%m-%d %H:%M}Z")
        return EXIT_OK
    from ..security.token_server import serve

    try:
        httpd = serve(store, args.host, args.port, lifetime=args.token_lifetime,
                      dns_names=args.dns)
    except OSError as exc:
        print(f"dmsc authority serve: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"token endpoint {httpd.endpoint.url}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return EXIT_OK


def _token(args: argparse.Namespace) -> int:
    from ..security.ca import Credential
    from ..security.token_server import TokenRequestError, request_token

    try:
        cred = Credential.load(args.cert, args.key)
        anchors = Path(args.ca).read_bytes()
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    try:
        response = request_token(args.url, cred, anchors, scope=args.scope,
                                 resources=args.resource, use_assertion=args.assertion)
    except TokenRequestError as exc:
        print(f"dmsc authority token: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"dmsc authority token: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(response.access_token)
    print(f"scope {response.scope!r}, expires in {response.expires_in} s", file=sys.stderr)
    return EXIT_OK
