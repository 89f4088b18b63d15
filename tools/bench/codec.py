"""Codec benchmark: encode and decode rates of three PDUs (issue 2 item 6).

    python tools/bench/codec.py [--repeat R] [--seconds S]

Measured, all in this one process:

* ``register``: the example REGISTER (draft-dmsc-protocol-00, Section 5.1) with its
  signed ~300-octet capability record (COSE_Sign1, Section 7.2.1).  Decoding checks the
  COSE structure, deterministic CBOR and the record schema; it does not verify the
  signature (that is :func:`dmscproto.codec.signing.verify_record`, not the codec).
* ``discover``: the example DISCOVER (Section 5.2) with its CBOR discovery query.
* ``route_request``: the example ROUTE-REQUEST (Section 5.3) with a 1 KiB payload.
* baseline ``header_struct``: a hand-written ``struct`` decoder and encoder of the same
  16-octet common header (Section 4.1) and nothing else: the floor any Python codec
  pays per PDU.  ``*_ratio_vs_struct`` is each rate divided by the baseline's.
* floor ``register_payload_cbor``: ``cbor2`` alone decoding the REGISTER's record
  payload and re-encoding it for the determinism check (reused encoder and decoder, no
  schema, no envelope): the part of a REGISTER decode no Python code around ``cbor2``
  can avoid.  ``register_decode_ratio_vs_cbor_floor`` compares the full decode with it.
* ``register_decode_vs_cbor`` (issue 18's target, at least 0.5): the full REGISTER
  decode rate over the rate of ``cbor2.loads`` of its record payload alone (the C
  decoder, no determinism check, no schema, no envelope, no PDU).

Each rate is the best of ``--repeat`` timed runs of about ``--seconds`` each (the
median is reported beside it as ``*_median_per_s``).  The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import cbor2

from dmscproto.codec import Register, RouteRequest, decode, encode
from dmscproto.testing.examples import examples

#: The common header written by hand (version, type, flags, length, transaction id).
HAND_HEADER = struct.Struct(">BBHIQ")


def hand_decode(data: bytes) -> tuple[int, int, int, int, int]:
    """Baseline decoder: unpack the header and check the length, as a minimal codec must."""
    version, mtype, flags, length, txid = HAND_HEADER.unpack_from(data)
    if version != 1 or length != len(data):
        raise ValueError("bad header")
    return version, mtype, flags, length, txid


def hand_encode(mtype: int, flags: int, txid: int) -> bytes:
    """Baseline encoder: pack a header-only PDU."""
    return HAND_HEADER.pack(1, mtype, flags, HAND_HEADER.size, txid)


def rate(fn: Callable[[], Any], seconds: float, repeat: int) -> tuple[float, float]:
    """(best, median) calls per second of ``fn`` over ``repeat`` runs of ~``seconds``."""
    n = 1
    while True:  # calibrate a batch size that takes ~seconds/10
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > seconds / 10:
            break
        n *= 2
    number = max(1, int(n * seconds / dt))
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rates.append(number / (time.perf_counter() - t0))
    return max(rates), statistics.median(rates)


def workloads() -> dict[str, tuple[Any, bytes]]:
    """The three benchmarked messages and their encodings."""
    ex = examples()
    route = ex["route-request"]
    assert isinstance(route, RouteRequest)
    big = replace(route, payload=bytes(i * 7 % 251 for i in range(1024)))
    msgs = {"register": ex["register"], "discover": ex["discover"], "route_request": big}
    return {name: (msg, encode(msg)) for name, msg in msgs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per rate (default 5)")
    ap.add_argument("--seconds", type=float, default=0.4, help="length of one run (default 0.4)")
    args = ap.parse_args(argv)

    out: dict[str, Any] = {}
    header_pdu = hand_encode(0x31, 0, 9)
    best, med = rate(lambda: hand_decode(header_pdu), args.seconds, args.repeat)
    out["header_struct_decode_per_s"], out["header_struct_decode_median_per_s"] = best, med
    best, med = rate(lambda: hand_encode(0x31, 0, 9), args.seconds, args.repeat)
    out["header_struct_encode_per_s"], out["header_struct_encode_median_per_s"] = best, med

    loads = workloads()
    register = loads["register"][0]
    assert isinstance(register, Register)
    payload, buf = register.record.payload, io.BytesIO()
    decoder, encoder = cbor2.CBORDecoder(io.BytesIO()), cbor2.CBOREncoder(buf)

    def cbor_floor() -> bool:
        value = decoder.decode_from_bytes(payload)
        buf.seek(0)
        buf.truncate()
        encoder.encode(value)
        return buf.getvalue() == payload

    assert cbor_floor()
    out["register_payload_cbor_per_s"], _ = rate(cbor_floor, args.seconds, args.repeat)
    out["register_payload_cbor2_loads_per_s"], _ = rate(lambda: cbor2.loads(payload),
                                                        args.seconds, args.repeat)

    for name, (msg, data) in loads.items():
        assert decode(data) == msg and encode(msg) == data
        for op, fn in (("decode", lambda d=data: decode(d)), ("encode", lambda m=msg: encode(m))):
            best, med = rate(fn, args.seconds, args.repeat)
            out[f"{name}_{op}_per_s"] = best
            out[f"{name}_{op}_median_per_s"] = med
            out[f"{name}_{op}_ratio_vs_struct"] = best / out[f"header_struct_{op}_per_s"]
            print(f"{name:14} {op}: {best:>10,.0f}/s (median {med:,.0f}/s, "
                  f"{len(data)} octets)", file=sys.stderr)
        out[f"{name}_pdu_octets"] = len(data)
    out["register_decode_ratio_vs_cbor_floor"] = (out["register_decode_per_s"]
                                                  / out["register_payload_cbor_per_s"])
    out["register_decode_vs_cbor"] = (out["register_decode_per_s"]
                                      / out["register_payload_cbor2_loads_per_s"])
    print(f"cbor2 floor    payload decode + re-encode: {out['register_payload_cbor_per_s']:,.0f}/s",
          file=sys.stderr)
    print(f"header struct  decode: {out['header_struct_decode_per_s']:>10,.0f}/s, "
          f"encode: {out['header_struct_encode_per_s']:,.0f}/s", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) and v < 1 else
                      (round(v) if isinstance(v, float) else v) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
