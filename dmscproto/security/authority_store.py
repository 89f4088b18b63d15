"""A domain authority's directory (draft-dmsc-protocol-00, Section 10): what
``dmsc authority init|issue|revoke|serve`` read and write.

Layout::

    ca.pem, ca.key        the CA certificate and key (DomainAuthority.save)
    .lock                 serializes changes to state.json between processes
    state.json            every certificate issued (serial, name, kind, notAfter, the
                          scope its holder may get tokens for), the revocations and
                          the last CRL number
    crl.pem               the current CRL, re-signed on every revocation and by the
                          token server before it goes stale
    issued/<name>.pem     the certificates issued (and .key when the authority made it)

Files are replaced atomically (write and rename), so a running token server reading
them never sees a half-written one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from ..codec.signing import PublicKey
from .ca import CA_VALIDITY, LEAF_VALIDITY, Credential, DomainAuthority, Kind
from .revocation import CRL_VALIDITY, Revocation, issue_crl, load_crl, pem
from .tokens import DEFAULT_SCOPE, ScopeSet

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
CRL_FILE = "crl.pem"
ISSUED_DIR = "issued"
#: Names an authority never issues to agents or gateways (its own identities).
RESERVED_NAMES = frozenset({"authority"})


@dataclass(slots=True)
class Issued:
    serial: int
    name: str
    kind: str
    not_after: str
    scope: str


@dataclass(slots=True)
class Revoked:
    serial: int
    revoked_at: str
    reason: str | None = None


@dataclass(slots=True)
class State:
    crl_number: int = 0
    crl_validity_s: int = int(CRL_VALIDITY.total_seconds())
    issued: list[Issued] = field(default_factory=list)
    revoked: list[Revoked] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> State:
        return cls(obj["crl_number"], obj["crl_validity_s"],
                   [Issued(**i) for i in obj["issued"]], [Revoked(**r) for r in obj["revoked"]])


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuthorityStore:
    """The authority's directory (module docstring)."""

    def __init__(self, directory: Path, authority: DomainAuthority, state: State) -> None:
        self.directory = directory
        self.authority = authority
        self.state = state
        self._state_mtime = self._mtime()

    @classmethod
    def init(cls, directory: str | Path, domain: str, *,
             validity: dt.timedelta = CA_VALIDITY,
             crl_validity: dt.timedelta = CRL_VALIDITY) -> AuthorityStore:
        """Create a new authority for ``domain`` in ``directory`` (which must not hold
        one already) with an empty CRL."""
        directory = Path(directory)
        if (directory / STATE_FILE).exists():
            raise FileExistsError(f"{directory} already holds an authority")
        authority = DomainAuthority.create(domain, validity=validity)
        authority.save(directory)
        store = cls(directory, authority,
                    State(crl_validity_s=int(crl_validity.total_seconds())))
        store.write_crl()
        return store

    @classmethod
    def open(cls, directory: str | Path) -> AuthorityStore:
        directory = Path(directory)
        state = State.from_json(json.loads((directory / STATE_FILE).read_text()))
        return cls(directory, DomainAuthority.load(directory), state)

    @property
    def domain(self) -> str:
        return self.authority.domain

    def _mtime(self) -> int:
        try:
            return (self.directory / STATE_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def reload(self) -> None:
        """Re-read state.json if another process (the CLI) changed it."""
        mtime = self._mtime()
        if mtime and mtime != self._state_mtime:
            self.state = State.from_json(
                json.loads((self.directory / STATE_FILE).read_text()))
            self._state_mtime = mtime

    @contextmanager
    def _transaction(self) -> Iterator[State]:
        """Read-modify-write of state.json under an exclusive lock on ``.lock``, so the
        CLI and a running token server never lose each other's changes."""
        with open(self.directory / LOCK_FILE, "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._state_mtime = -1
            self.reload()
            yield self.state
            self._save()

    def _save(self) -> None:
        data = json.dumps(asdict(self.state), indent=1, sort_keys=True).encode()
        _atomic_write(self.directory / STATE_FILE, data)
        self._state_mtime = self._mtime()

    def issue(self, name: str, kind: Kind, *, validity: dt.timedelta = LEAF_VALIDITY,
              scope: ScopeSet | None = None, public_key: PublicKey | None = None,
              dns_names: Sequence[str] | None = None,
              ip_addresses: Sequence[str] = ()) -> Credential:
        """Issue and record a certificate; write it (and a generated key) to issued/.
        ``scope`` is what its holder may get tokens for: by default all operations for
        agents and none for gateways."""
        if name in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved for the authority itself")
        cred = self.authority.issue(name, kind, public_key=public_key, validity=validity,
                                    dns_names=dns_names, ip_addresses=ip_addresses)
        cred.save(self.directory / ISSUED_DIR)
        if scope is None:
            scope = DEFAULT_SCOPE if kind is Kind.AGENT else ScopeSet({})
        with self._transaction() as state:
            state.issued.append(Issued(cred.certificate.serial_number, name, kind.value,
                                       cred.certificate.not_valid_after_utc.isoformat(),
                                       str(scope)))
        return cred

    def authority_credential(self, *, validity: dt.timedelta = LEAF_VALIDITY,
                             dns_names: Sequence[str] = ("localhost",),
                             ip_addresses: Sequence[str] = ("127.0.0.1",)) -> Credential:
        """A TLS server certificate for the token endpoint, ``dmsc://<domain>/authority``
        (not recorded: it is the authority's own)."""
        return self.authority.issue("authority", Kind.GATEWAY, validity=validity,
                                    dns_names=dns_names, ip_addresses=ip_addresses)

    def issued(self, name: str) -> list[Issued]:
        self.reload()
        return [i for i in self.state.issued if i.name == name]

    def scope_for(self, cert: x509.Certificate) -> ScopeSet:
        """The scope recorded when ``cert`` was issued (empty for unknown serials)."""
        self.reload()
        for entry in self.state.issued:
            if entry.serial == cert.serial_number:
                return ScopeSet.parse(entry.scope)
        return ScopeSet({})

    def revoke(self, serials: Sequence[int], *, reason: x509.ReasonFlags | None = None,
               now: dt.datetime | None = None) -> list[int]:
        """Revoke ``serials`` (those not revoked yet) and re-sign the CRL; returns the
        serials newly revoked.  KeyError for a serial this authority never issued."""
        now = now or _now()
        with self._transaction() as state:
            known = {i.serial for i in state.issued}
            unknown = [s for s in serials if s not in known]
            if unknown:
                raise KeyError(f"not issued here: {', '.join(f'{s:x}' for s in unknown)}")
            done = {r.serial for r in state.revoked}
            new = [s for s in dict.fromkeys(serials) if s not in done]
            state.revoked += [Revoked(s, now.isoformat(), reason.value if reason else None)
                              for s in new]
            self._sign_crl(state, now)
        return new

    def write_crl(self, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """Sign a CRL with the next CRL number and write crl.pem (and state.json)."""
        with self._transaction() as state:
            return self._sign_crl(state, now)

    def _sign_crl(self, state: State, now: dt.datetime | None
                  ) -> x509.CertificateRevocationList:
        state.crl_number += 1
        revoked = [Revocation(r.serial, dt.datetime.fromisoformat(r.revoked_at),
                              x509.ReasonFlags(r.reason) if r.reason else None)
                   for r in state.revoked]
        crl = issue_crl(self.authority, revoked, number=state.crl_number, now=now,
                        validity=dt.timedelta(seconds=state.crl_validity_s))
        _atomic_write(self.directory / CRL_FILE, pem(crl))
        return crl

    def crl(self, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """The current CRL, re-signed first when less than half its validity is left."""
        now = now or _now()
        crl = load_crl((self.directory / CRL_FILE).read_bytes())
        next_update = crl.next_update_utc
        half = dt.timedelta(seconds=self.state.crl_validity_s / 2)
        if next_update is None or next_update - now < half:
            crl = self.write_crl(now)
        return crl
