"""Certificates of origin assertions, kept per peer session (draft-dmsc-protocol-00,
Section 6.10).

An origin assertion names the origin gateway's certificate by its SHA-256 thumbprint
(``x5t#S256``) instead of carrying it; a gateway sends the certificate once per peer
session with CERTIFICATE, and the receiver keeps it for that session only.
:class:`SessionCertificates` is that store, shared by the peer sessions that fill it
(after the gateway's check, ``accept_certificate``) and the security layer that reads it
when it checks or forwards an assertion.  The thumbprint is always computed by the
receiver, never taken from the sender.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

from ..codec.registry import limit
from .machine import Handle, Refusal

#: The gateway's check of a received CERTIFICATE (the ``accept_certificate`` hook):
#: given the association, the DER certificate and ``now``, a refusal or None to keep it.
CertificateCheck = Callable[[Handle, bytes, float], Refusal | None]


def thumbprint(der: bytes) -> bytes:
    """A certificate's x5t#S256: SHA-256 of its DER encoding (Section 6.10)."""
    return hashlib.sha256(der).digest()


class SessionCertificates:
    """The certificates each peer session received, by thumbprint: at most
    ``per_session`` a session, the least recently used forgotten first; all of a
    session's when it closes (:meth:`drop`).  ``own`` is the thumbprint of this
    gateway's certificate, which every peer holds from the handshake (None: it signs
    no origin assertion)."""

    def __init__(self, per_session: int = int(limit("SESSION_MAX_CERTIFICATES")),
                 own: bytes | None = None) -> None:
        self.per_session = per_session
        self.own = own
        self._held: dict[Handle, OrderedDict[bytes, bytes]] = {}

    def keep(self, handle: Handle, der: bytes) -> bytes:
        """Keep ``der`` for the session over ``handle``; returns its thumbprint."""
        held = self._held.setdefault(handle, OrderedDict())
        key = thumbprint(der)
        held[key] = der
        held.move_to_end(key)
        while len(held) > self.per_session:
            held.popitem(last=False)
        return key

    def get(self, handle: Handle, key: bytes) -> bytes | None:
        """The certificate of thumbprint ``key`` the session over ``handle`` holds."""
        held = self._held.get(handle)
        der = None if held is None else held.get(key)
        if der is not None:
            assert held is not None
            held.move_to_end(key)
        return der

    def drop(self, handle: Handle) -> None:
        """The session over ``handle`` closed: forget its certificates."""
        self._held.pop(handle, None)
