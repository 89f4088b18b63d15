"""One PDU per QUIC stream direction (draft-dmsc-protocol-00, Section 9.1), sans-I/O.

A transaction uses one bidirectional stream: the requester writes the request PDU and
FIN, the responder writes the response PDU and FIN on the same stream.  A receiver
reassembles the octets of one stream direction across STREAM frames and uses the
header's Length field to bound what it buffers:

* data beyond the announced length is TRAILING_DATA (reported at once, nothing more
  is buffered);
* FIN before the announced length is TRUNCATED;
* a bad version, a length over the limit or under the header size is reported as
  soon as the 8 octets holding them have arrived (Section 4.4);
* FIN with no data at all means "no response" (a responder whose handler has
  nothing to say, e.g. to a notification).
"""

from __future__ import annotations

from ..codec.errors import DecodeError
from ..codec.pdu import peek_length
from ..codec.registry import HEADER_SIZE, ErrorCode
from ..codec.wire import HEADER_STRUCT


def whole(data: bytes) -> bytes:
    """The PDU of a stream direction whose octets all came at once, with FIN (the usual
    case: a PDU that fits a packet): what a new :class:`StreamAssembler` fed ``data``
    and FIN returns or raises, without its buffer."""
    length = peek_length(data)
    if len(data) != length:  # _check finds nothing wrong with a PDU of its length
        _check(len(data), length, True)
    return data


def header_of(data: bytes | bytearray) -> tuple[int, int] | None:
    """``(message type, transaction id)`` of the PDU whose first octets are ``data``, if
    its header is complete: what an ERROR answer to a malformed PDU echoes (Section 5.4)."""
    if len(data) < HEADER_SIZE:
        return None
    _version, mtype, _flags, _length, txid = HEADER_STRUCT.unpack_from(data)
    return int(mtype), int(txid)


def _check(size: int, length: int | None, end_stream: bool) -> None:
    """``size`` octets of a stream direction whose header announced ``length`` (None: not
    known yet), FIN received if ``end_stream`` (module docstring)."""
    if length is not None and size > length:
        raise DecodeError(ErrorCode.TRAILING_DATA, length,
                          f"more than the {length} octets the header announces")
    if end_stream and size and size < max(HEADER_SIZE, length or 0):
        raise DecodeError(ErrorCode.TRUNCATED, size,
                          f"stream ended after {size} of {length or HEADER_SIZE} octets")


class StreamAssembler:
    """Collects the single PDU of one stream direction."""

    __slots__ = ("_buffer", "_length")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._length: int | None = None

    def feed(self, data: bytes, end_stream: bool) -> bytes | None:
        """Add stream data.  Returns the PDU (``b""`` for an empty stream) once FIN has
        arrived, None before; raises :class:`DecodeError` for a malformed stream."""
        self._buffer += data
        size = len(self._buffer)
        if self._length is None:
            self._length = peek_length(bytes(self._buffer[:8]))
        _check(size, self._length, end_stream)
        return bytes(self._buffer) if end_stream else None

    def header(self) -> tuple[int, int] | None:
        """:func:`header_of` the octets received so far."""
        return header_of(self._buffer)
