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
  payload and re-encoding it for the determinism check (the codec's reused ``cbor2``
  decoder and encoder, no schema, no envelope): what a REGISTER decode would cost if it
  left the record to ``cbor2`` (the codec reads usual records without it,
  :mod:`dmscproto.codec.scan`).  ``register_decode_ratio_vs_cbor_floor`` compares the
  full decode with it.
* ``register_decode_vs_cbor`` (issue 18's target, at least 0.5): the full REGISTER
  decode rate over the rate of ``cbor2.loads`` of its record payload alone (the C
  decoder, no determinism check, no schema, no envelope, no PDU).

Each rate is the best of ``--repeat`` timed runs of about ``--seconds`` each (the
median is reported beside it as ``*_median_per_s``); the runs are interleaved, one of
each function per round, so that on a shared machine whose load changes every rate and
every ratio is measured under the same conditions.  The last line printed is one JSON
object; ``load_1min`` is the 1-minute load average at its end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import cbor2

from dmscproto.codec import Register, RouteRequest, cbor, decode, encode
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


def rates(fns: dict[str, Callable[[], Any]], seconds: float,
          repeat: int) -> dict[str, tuple[float, float]]:
    """(best, median) calls per second of each of ``fns``: ``repeat`` rounds, each
    timing every function in turn for about ``seconds``, so that every rate, and every
    ratio of two, is measured under the same load of the shared machine."""
    batch = {}
    for name, fn in fns.items():  # calibrate a batch size that takes ~seconds
        n = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            dt = time.perf_counter() - t0
            if dt > seconds / 10:
                break
            n *= 2
        batch[name] = max(1, int(n * seconds / dt))
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            number = batch[name]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            runs[name].append(number / (time.perf_counter() - t0))
    return {name: (max(r), statistics.median(r)) for name, r in runs.items()}


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
    ap.add_argument("--repeat", type=int, default=15,
                    help="rounds of timed runs (default 15)")
    ap.add_argument("--seconds", type=float, default=0.12,
                    help="length of one timed run (default 0.12)")
    args = ap.parse_args(argv)

    loads = workloads()
    register = loads["register"][0]
    assert isinstance(register, Register)
    payload, workers = register.record.payload, cbor._workers

    def cbor_floor() -> bool:
        return workers.plain(workers.decode(payload)) == payload

    assert cbor_floor()
    header_pdu = hand_encode(0x31, 0, 9)
    fns: dict[str, Callable[[], Any]] = {
        "header_struct_decode": lambda: hand_decode(header_pdu),
        "header_struct_encode": lambda: hand_encode(0x31, 0, 9),
        "register_payload_cbor": cbor_floor,
        "register_payload_cbor2_loads": partial(cbor2.loads, payload)}
    for name, (msg, data) in loads.items():
        assert decode(data) == msg and encode(msg) == data
        fns[f"{name}_decode"] = partial(decode, data)
        fns[f"{name}_encode"] = partial(encode, msg)
    measured = rates(fns, args.seconds, args.repeat)
    out: dict[str, Any] = {}
    for key, (best, med) in measured.items():
        out[f"{key}_per_s"], out[f"{key}_median_per_s"] = best, med
    for name, (_msg, data) in loads.items():
        for op in ("decode", "encode"):
            best, med = measured[f"{name}_{op}"]
            out[f"{name}_{op}_ratio_vs_struct"] = best / out[f"header_struct_{op}_per_s"]
            print(f"{name:14} {op}: {best:>10,.0f}/s (median {med:,.0f}/s, "
                  f"{len(data)} octets)", file=sys.stderr)
        out[f"{name}_pdu_octets"] = len(data)
    out["register_decode_ratio_vs_cbor_floor"] = (out["register_decode_per_s"]
                                                  / out["register_payload_cbor_per_s"])
    out["register_decode_vs_cbor"] = (out["register_decode_per_s"]
                                      / out["register_payload_cbor2_loads_per_s"])
    out["load_1min"] = os.getloadavg()[0]
    print(f"cbor2 floor    payload decode + re-encode: {out['register_payload_cbor_per_s']:,.0f}/s",
          file=sys.stderr)
    print(f"header struct  decode: {out['header_struct_decode_per_s']:>10,.0f}/s, "
          f"encode: {out['header_struct_encode_per_s']:,.0f}/s", file=sys.stderr)
    print(json.dumps({k: v if not isinstance(v, float) else
                      round(v) if k.endswith("_per_s") else round(v, 4)
                      for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
