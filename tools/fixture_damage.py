"""The damaged PDUs of ``pcap-fixtures/lab-errors.pcap`` (tools/gen_fixtures.py): one
per decoding error a receiver reports (draft-dmsc-protocol-00, Section 4.4), each checked
against the codec, and a record with a forged signature (Section 10)."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

from dmscproto.codec import (
    DecodeError,
    ErrorCode,
    Message,
    RawTlv,
    SignedRecord,
    decode,
    encode,
)
from dmscproto.codec.registry import (
    HEADER_SIZE,
    MAX_PDU_SIZE,
    VERSION,
    TlvType,
)
from dmscproto.testing.examples import examples


def _damaged(pdu: bytes, error: ErrorCode, edit: Callable[[bytearray], bytes | bytearray]
             ) -> bytes:
    """``pdu`` changed by ``edit``; checks the codec reports ``error`` for it."""
    data = bytes(edit(bytearray(pdu)))
    try:
        decode(data)
    except DecodeError as exc:
        if exc.code is not error:
            raise AssertionError(f"damaged PDU gives {exc.code.name}, not {error.name}") from None
        return data
    raise AssertionError(f"damaged PDU decodes; expected {error.name}")


def _set_length(data: bytearray, length: int) -> bytearray:
    data[4:8] = struct.pack("!I", length)
    return data


def damaged_requests() -> list[bytes]:
    """One damaged request per decoding error a receiver reports (each checked against
    the codec), as the errors capture sends them."""
    ex = examples()
    echo, refresh = ex["echo-request"], ex["refresh"]
    out: list[bytes] = [_damaged(struct.pack("!BBHIQ", VERSION, 0x66, 0, HEADER_SIZE, 16),
                                 ErrorCode.UNKNOWN_MESSAGE_TYPE, lambda d: d)]

    def bad(txid: int, request: Message, code: ErrorCode,
            edit: Callable[[bytearray], bytes | bytearray]) -> None:
        pdu = encode(dataclasses.replace(request, transaction_id=txid))
        out.append(_damaged(pdu, code, edit))

    bad(90, echo, ErrorCode.TRUNCATED, lambda d: d[:10])
    bad(91, echo, ErrorCode.TRUNCATED, lambda d: d[:-3])
    bad(92, echo, ErrorCode.TRAILING_DATA, lambda d: d + b"\0\0")
    bad(93, echo, ErrorCode.UNSUPPORTED_VERSION, lambda d: b"\x02" + d[1:])
    bad(94, echo, ErrorCode.LENGTH_MISMATCH,
        lambda d: d[:HEADER_SIZE + 2] + b"\x00\xff" + d[HEADER_SIZE + 4:])
    bad(95, echo, ErrorCode.LENGTH_MISMATCH, lambda d: _set_length(d, 12))
    bad(96, dataclasses.replace(echo, unknown_tlvs=(RawTlv(0x8042, b"\x01"),)),
        ErrorCode.UNKNOWN_CRITICAL_TLV, lambda d: d)
    bad(97, echo, ErrorCode.DUPLICATE_TLV, lambda d: _retlv(d, lambda t: [t[0], *t]))
    bad(98, echo, ErrorCode.TLV_ORDER, lambda d: _retlv(d, lambda t: [t[1], t[0], *t[2:]]))
    bad(99, refresh, ErrorCode.INVALID_TLV_LENGTH, lambda d: _retlv(d, _short_lease))
    bad(100, echo, ErrorCode.MISSING_TLV,
        lambda d: _retlv(d, lambda t: [x for x in t if x[:2] != _code(TlvType.SEQUENCE)]))
    bad(104, echo, ErrorCode.PDU_TOO_LARGE, lambda d: _set_length(d, MAX_PDU_SIZE + 1))
    bad(105, ex["discover"], ErrorCode.INVALID_TLV_VALUE,
        lambda d: _retlv(d, lambda t: [x[:4] + b"\x03" if x[:2] == _code(TlvType.SCOPE) else x
                                       for x in t]))
    bad(106, ex["open"], ErrorCode.INVALID_TLV_VALUE,
        lambda d: _retlv(d, lambda t: [x[:2] + struct.pack("!H", 11) + b"a.\xc0\xafexample"
                                       if x[:2] == _code(TlvType.DOMAIN) else x for x in t]))
    return out



def forged(record: SignedRecord) -> SignedRecord:
    """``record`` with its signature's first octet changed (BAD_SIGNATURE, Section 10)."""
    sig = record.signature
    return dataclasses.replace(record, signature=bytes([sig[0] ^ 0xFF]) + sig[1:])


def _code(tlv: TlvType) -> bytes:
    return struct.pack("!H", tlv)


def _retlv(pdu: bytearray, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """``pdu`` with its list of whole TLVs changed by ``edit`` and the length fixed."""
    tlvs, offset = [], HEADER_SIZE
    while offset < len(pdu):
        (tlen,) = struct.unpack_from("!H", pdu, offset + 2)
        tlvs.append(bytes(pdu[offset:offset + 4 + tlen]))
        offset += 4 + tlen
    body = b"".join(edit(tlvs))
    return bytes(_set_length(pdu[:HEADER_SIZE], HEADER_SIZE + len(body))) + body


def _short_lease(tlvs: list[bytes]) -> list[bytes]:
    """The LEASE TLV cut to a 3-octet value."""
    return [t[:2] + struct.pack("!H", 3) + t[4:7] if t[:2] == _code(TlvType.LEASE) else t
            for t in tlvs]
