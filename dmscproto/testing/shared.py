"""Signed records shared by the simulated gateways (:mod:`.simulator`): one object per
distinct signed octets, and each distinct signature checked once (a gateway that verified
it would come to the same answer)."""

from __future__ import annotations

from dataclasses import replace

from ..codec.cose import SignedRecord
from ..codec.messages import Message, Update
from ..protocol.machine import Handle, Refusal
from ..protocol.registration import verify_signature


class SharedRecords:
    """The shared copy of each signed record and its signature check."""

    def __init__(self) -> None:
        self._shared: dict[tuple[bytes, bytes, bytes], tuple[SignedRecord, Refusal | None]] \
            = {}

    def share(self, msg: Message, now: float) -> Message:
        """The message with every advertised record (an UPDATE's ADVERTISEs: no other
        message carries one) replaced by the shared copy of the same signed octets."""
        if not isinstance(msg, Update) or not msg.advertise:
            return msg
        return replace(msg, advertise=tuple(
            replace(ad, record=self._entry(ad.record, now)[0]) for ad in msg.advertise))

    def _entry(self, signed: SignedRecord, now: float) -> tuple[SignedRecord, Refusal | None]:
        """The shared copy of these signed octets and their signature check."""
        key = (signed.protected, signed.payload, signed.signature)
        held = self._shared.get(key)
        if held is None:
            held = self._shared[key] = (signed, verify_signature(None, signed, now))
        return held

    def verify(self, _source: Handle, signed: SignedRecord, now: float) -> Refusal | None:
        """The record check of every node: the COSE signature, once per signed octets."""
        return self._entry(signed, now)[1]
