"""Less memory per QUIC connection (draft-dmsc-protocol-00, Section 9.1).

A gateway holds one QUIC connection per connected agent, idle most of the time.  Of what
aioquic keeps per connection, :class:`LeanQuicConnection` gives back or shares what a
connection no longer needs once its handshake is over, without touching flow control,
loss recovery or the 1-RTT keys:

* the TLS output buffers, 16 KiB for each of the three epochs, which only the handshake
  writes to (a DMSC endpoint issues no session tickets, and QUIC forbids TLS key updates
  and post-handshake authentication, RFC 9001 Sections 4.4 and 6);
* the TLS context's ephemeral key-exchange private keys and the key schedules of the
  cipher suites not chosen (also forward secrecy: the ephemeral keys are erased);
* the frozensets of packet epochs in aioquic's frame-handler table, equal in every
  connection, now shared;
* connection IDs: it issues at most QUIC_CONNECTION_IDS and advertises that many as
  ``active_connection_id_limit`` (2, RFC 9000's minimum: one in use and one spare for
  a path change) instead of aioquic's 8, each an entry in the server's routing table.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.connection import QuicConnection

#: Connection IDs an endpoint issues and accepts at once (RFC 9000, Section 5.1.1).
QUIC_CONNECTION_IDS = 2
#: What the TLS output buffers shrink to after the handshake.
_SPENT_BUFFER = 64

#: One instance of each epoch set in aioquic's frame-handler table, for every connection.
_EPOCH_SETS: dict[frozenset[tls.Epoch], frozenset[tls.Epoch]] = {}


class LeanQuicConnection(QuicConnection):
    """aioquic's sans-I/O QUIC connection, leaner once established (see module)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._local_active_connection_id_limit = QUIC_CONNECTION_IDS
        handlers: dict[int, tuple[Any, frozenset[tls.Epoch]]] = (
            self._QuicConnection__frame_handlers)  # type: ignore[attr-defined]
        for frame_type, (handler, epochs) in handlers.items():
            handlers[frame_type] = (handler, _EPOCH_SETS.setdefault(epochs, epochs))

    def _replenish_connection_ids(self) -> None:
        limit = self._remote_active_connection_id_limit
        self._remote_active_connection_id_limit = min(limit, QUIC_CONNECTION_IDS)
        try:
            super()._replenish_connection_ids()
        finally:
            self._remote_active_connection_id_limit = limit

    def release_handshake_state(self) -> None:
        """Give back what only the handshake needed; call once it is complete (the
        TLS context has written its last message)."""
        assert self.tls.state in (tls.State.CLIENT_POST_HANDSHAKE,
                                  tls.State.SERVER_POST_HANDSHAKE)
        self._crypto_buffers = {epoch: Buffer(capacity=_SPENT_BUFFER)
                                for epoch in self._crypto_buffers}
        context = self.tls
        context._ec_private_keys = []
        context._x25519_private_key = None
        context._x448_private_key = None
        context._key_schedule_psk = None
        context._key_schedule_proxy = None
