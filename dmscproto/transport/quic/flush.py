"""Per-turn transmit batching of DMSC over QUIC (draft-dmsc-protocol-00, Section 9.1):
the connections of one event loop that have something to send transmit once per loop
turn, together."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger(__name__)


class Transmitter(Protocol):
    def transmit(self) -> None: ...


class Flusher:
    """The connections of one event loop with something to send.  They transmit once
    per loop turn, together, after everything that ran in the turn queued its frames:
    the datagrams received, the handlers that answered them, the ACKs they carry."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[Transmitter, None] = {}
        self._handle: asyncio.Handle | None = None

    def add(self, conn: Transmitter) -> None:
        self._due[conn] = None
        if self._handle is None:
            self._handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._handle = None
        due, self._due = self._due, {}
        for conn in due:
            try:
                conn.transmit()
            except Exception:  # as when each had a callback of its own: log, go on
                log.exception("transmit failed on a QUIC connection")


_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flusher] = (
    weakref.WeakKeyDictionary())


def flusher(loop: asyncio.AbstractEventLoop) -> Flusher:
    """The :class:`Flusher` of ``loop``."""
    found = _FLUSHERS.get(loop)
    if found is None:
        found = _FLUSHERS[loop] = Flusher(loop)
    return found
