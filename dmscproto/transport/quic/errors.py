"""How a DMSC-over-QUIC connection ended (draft-dmsc-protocol-00, Section 9.1): QUIC
application error codes (STOP_SENDING, CONNECTION_CLOSE) are DMSC error codes."""

from __future__ import annotations

from contextlib import suppress

from ...codec.registry import ErrorCode
from ..errors import TransportError
from ..tls import code_for_quic_error


class ConnectionClosed(TransportError):
    """The QUIC connection is closed.  ``quic_error`` is the code it was closed with:
    a DMSC error code for an application close, 0x100 + a TLS alert for a refused
    handshake (``code`` then names the certificate error), else a QUIC transport error."""

    def __init__(self, quic_error: int, reason: str, code: ErrorCode) -> None:
        super().__init__(code, f"connection closed (0x{quic_error:x}) {reason}".rstrip())
        self.quic_error = quic_error

    @classmethod
    def of(cls, quic_error: int, application: bool, reason: str,
           refusal: ErrorCode | None = None) -> ConnectionClosed:
        """From a CONNECTION_CLOSE; ``refusal`` is this end's own certificate verdict."""
        code = ErrorCode.CEASE
        if refusal is not None:
            code = refusal
        elif not application:
            code = code_for_quic_error(quic_error)
        elif quic_error != ErrorCode.SUCCESS:
            with suppress(ValueError):
                code = ErrorCode(quic_error)
        return cls(quic_error, reason, code)

