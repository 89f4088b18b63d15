"""Seed corpora of the fuzz targets (issue 13 item 6): the PDUs of the draft's test
vectors (Appendix A), of the lab-mode pcap fixtures (``pcap-fixtures/``) and of the
codec's named examples; the TLV values they carry (CBOR values, COSE records ...); and,
for the node target, each fixture capture's conversation as one input
(:func:`node_input`).

    python tools/fuzz/corpus.py DIR     # writes DIR/decode, DIR/values, DIR/node
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

from draft_vectors import DRAFT, vectors  # noqa: E402

from dmscproto.analysis.pcap import read_udp  # noqa: E402
from dmscproto.codec.pdu import encode  # noqa: E402
from dmscproto.codec.registry import HEADER_SIZE, TLV_HEADER_SIZE  # noqa: E402
from dmscproto.testing import examples  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import SOURCES, VALUE_TYPES  # noqa: E402

FIXTURES = ROOT / "pcap-fixtures"


def pdus() -> Iterator[bytes]:
    """Every seed PDU: draft vectors (valid and invalid), fixtures, codec examples."""
    for _name, _expect, pdu in vectors(DRAFT.read_text(encoding="utf-8")):
        yield pdu
    for capture in sorted(FIXTURES.glob("*.pcap")):
        for packet in read_udp(capture):
            yield packet.payload
    for msg in examples.examples().values():
        yield encode(msg)


def values() -> Iterator[bytes]:
    """Every TLV value of the seed PDUs, as the ``values`` target takes it: the TLV
    type's index in :data:`targets.VALUE_TYPES`, then the value."""
    index = {t: i for i, t in enumerate(VALUE_TYPES)}
    for data in pdus():
        at = HEADER_SIZE
        while at + TLV_HEADER_SIZE <= len(data):
            ttype, length = struct.unpack_from("!HH", data, at)
            value = data[at + TLV_HEADER_SIZE:at + TLV_HEADER_SIZE + length]
            at += TLV_HEADER_SIZE + length
            if ttype in index:
                yield bytes([index[ttype]]) + value  # type: ignore[index]


def node_input(steps: Iterable[tuple[int, bytes]]) -> bytes:
    """A node target input: per step the source's index (into :data:`SOURCES`), the
    PDU's length (2 octets) and the PDU."""
    return b"".join(struct.pack("!BH", src, len(pdu)) + pdu for src, pdu in steps)


def conversations() -> Iterator[bytes]:
    """Each fixture capture as one node input, the sender of each datagram mapped to a
    source (the first address seen is the first agent, and so on)."""
    for capture in sorted(FIXTURES.glob("*.pcap")):
        seen: dict[object, int] = {}
        steps = []
        for packet in read_udp(capture):
            src = seen.setdefault(packet.src, len(seen) % len(SOURCES))
            steps.append((src, packet.payload))
        yield node_input(steps)


def write(directory: Path) -> dict[str, int]:
    """Write the three corpora under ``directory``; returns how many files each got."""
    counts = {}
    for target, seeds in (("decode", pdus()), ("values", values()),
                          ("node", conversations())):
        out = directory / target
        out.mkdir(parents=True, exist_ok=True)
        n = 0
        for seed in seeds:
            (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
            n += 1
        counts[target] = n
    return counts


if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
