"""Datagram reliability layer benchmark: transactions per CPU second (Section 9.3).

    python tools/bench/reliability.py [--transactions N] [--repeat R]

Two sans-I/O :class:`~dmscproto.transport.reliability.Reliability` endpoints in this
process, no sockets: the requester sends an ECHO_REQUEST (64-octet payload), the
responder receives it, hands it up, answers it and keeps the answer in its duplicate
cache, the requester receives the answer; ``now`` advances 1 ms per transaction and the
timers run every 1,000 (so the duplicate cache expires and is evicted as in a running
node).  Measured in CPU time of this process:

* ``transactions_per_cpu_s``: the whole round trip above, through both endpoints;
* baseline ``codec_per_cpu_s``: encoding and decoding the same request and answer and
  nothing else (what any implementation pays); ``reliability_ratio`` is the first over
  the baseline (the share of the round trip spent in the codec: the layer's own cost
  is the rest).

Each rate is the best of ``--repeat`` runs.  The script also runs against a tree from
before the layer had its tables (the class was then in ``transport/datagram.py``).  The
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from dmscproto.codec import decode, encode
from dmscproto.codec.messages import EchoReply, EchoRequest

try:
    from dmscproto.transport.reliability import Reliability
except ImportError:  # before the tables (f39d311)
    from dmscproto.transport.datagram import Reliability  # type: ignore[attr-defined]

PAYLOAD = bytes(range(64))


def _request(txid: int) -> EchoRequest:
    return EchoRequest(transaction_id=txid, sequence=txid, timestamp=0, payload=PAYLOAD)


def _reply(txid: int) -> EchoReply:
    return EchoReply(transaction_id=txid, sequence=txid, timestamp=0,
                     gateway_id=bytes(16), payload=PAYLOAD)


def transactions(n: int) -> None:
    """``n`` request/answer round trips between two endpoints (module doc)."""
    near, far = Reliability(), Reliability()
    now = 1000.0
    for txid in range(1, n + 1):
        near.send_request("far", _request(txid), now)
        for data, _peer in near.datagrams_to_send():
            far.receive("near", data, now)
        event = far.next_event()
        far.respond("near", event.message, _reply(txid), now)  # type: ignore[union-attr]
        for data, _peer in far.datagrams_to_send():
            near.receive("far", data, now)
        near.next_event()
        near.get_timer()
        far.get_timer()
        now += 0.001
        if txid % 1000 == 0:
            near.handle_timer(now)
            far.handle_timer(now)


def codec_only(n: int) -> None:
    """The baseline: the same PDUs encoded and decoded, nothing else."""
    for txid in range(1, n + 1):
        decode(encode(_request(txid)))
        decode(encode(_reply(txid)))


def rate(fn: Callable[[int], None], n: int, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        started = time.process_time()
        fn(n)
        best = max(best, n / (time.process_time() - started))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    out: dict[str, Any] = {
        "transactions_per_cpu_s": round(rate(transactions, args.transactions, args.repeat)),
        "codec_per_cpu_s": round(rate(codec_only, args.transactions, args.repeat)),
    }
    out["reliability_ratio"] = round(out["transactions_per_cpu_s"] / out["codec_per_cpu_s"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
