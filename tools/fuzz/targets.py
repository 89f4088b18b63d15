"""The fuzz targets (issue 13 item 6), each a ``TestOneInput(data)`` for atheris
(coverage-guided, libFuzzer) that raises only on a real defect:

* ``decode``: :func:`~dmscproto.codec.pdu.decode` of any octets either raises
  :class:`DecodeError` or gives a message that re-encodes to the same octets
  (Section 4.4; build(parse(x)) == x);
* ``values``: every TLV value codec (the CBOR values of Section 7, the COSE records of
  Section 7.2.1, advertisements, ids, ...): the first octet picks the TLV type, the
  rest is the value; again DecodeError or an exact round trip;
* ``node``: a gateway node (real SQLite store, the default record check) fed a
  sequence of PDUs from three agents and two peer gateways (:func:`corpus.node_input`
  format), with its timers fired as time passes: it never raises, and everything it
  sends encodes.
"""

from __future__ import annotations

import shutil
import struct
import sys
import tempfile
from pathlib import Path

from dmscproto.codec.errors import DecodeError
from dmscproto.codec.pdu import decode, encode
from dmscproto.codec.registry import TlvType
from dmscproto.codec.wire import VALUE_CODECS
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.node import GatewayNode
from dmscproto.gateway.store import RegistryStore

#: The TLV types whose value codec the ``values`` target's first octet picks.
VALUE_TYPES: tuple[TlvType, ...] = tuple(sorted(VALUE_CODECS))
#: The associations of a node input: three agents, then two peer gateways.
SOURCES = ("agent-1", "agent-2", "agent-3", "gw-b", "gw-c")
T0 = 1_750_000_000.0


def decode_target(data: bytes) -> None:
    try:
        msg = decode(data)
    except DecodeError:
        return
    again = encode(msg)
    if again != data:
        raise AssertionError(f"re-encoding differs: {data.hex()} -> {again.hex()}")


def values_target(data: bytes) -> None:
    if not data:
        return
    codec = VALUE_CODECS[VALUE_TYPES[data[0] % len(VALUE_TYPES)]]
    try:
        value = codec.parse(data[1:])
    except DecodeError:
        return
    again = codec.build(value)
    if again != data[1:]:
        raise AssertionError(f"re-encoding differs: {data[1:].hex()} -> {again.hex()}")


class NodeTarget:
    """One gateway node per input, its store in a scratch directory (tmpfs if any)."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        self.dir = Path(tempfile.mkdtemp(prefix="dmsc-fuzz-",
                                         dir=shm if shm.is_dir() else None))
        self.n = 0

    def __call__(self, data: bytes) -> None:
        self.n += 1
        path = self.dir / f"{self.n % 2}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        store = RegistryStore(path)
        try:
            node = GatewayNode(GatewayCore(bytes(range(16)), "a.example", store), name="gw-a")
            now, at = T0, 0
            while at + 3 <= len(data):
                src, length = struct.unpack_from("!BH", data, at)
                pdu = data[at + 3:at + 3 + length]
                at += 3 + length
                now += (src >> 3) * 7.5  # the high bits of the source octet: time passes
                handle = SOURCES[(src & 7) % len(SOURCES)]
                timer = node.get_timer()
                if timer is not None and timer <= now:
                    node.handle_timer(now)
                try:
                    msg = decode(pdu)
                except DecodeError:
                    continue
                if handle.startswith("gw") and handle not in node.sessions and src & 0x80:
                    node.connect(handle, now)
                node.receive(handle, msg, now)
                for _dest, out in node.messages_to_send():
                    encode(out)
                while node.next_event() is not None:
                    pass
        finally:
            store.close()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def main(name: str) -> None:
    """Run target ``name`` under atheris with the command line's libFuzzer options
    (e.g. ``-runs=N``, ``-max_total_time=S``, corpus directories); the caller imported
    this module under ``atheris.instrument_imports``."""
    import atheris

    target = {"decode": decode_target, "values": values_target}.get(name) or NodeTarget()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
