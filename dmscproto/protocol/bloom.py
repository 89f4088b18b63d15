"""Capability summary filters (draft-dmsc-protocol-00, Section 6.9).

The filter (:class:`Bloom`): the terms of a record are ``s:`` + each skill id, ``t:``
+ each tag case-folded and ``w:`` + each word of its skills (Section 5.2.1: ids,
names, descriptions and tags), as UTF-8.  For ``m`` bits and ``k`` hash functions, a
term sets the bits ``(h1 + i * h2) mod m`` for ``i`` in ``0..k-1``, where ``h1`` and
``h2`` are the first and second 8 octets of its SHA-256 as big-endian integers, ``h2``
with its lowest bit set; bit ``b`` is ``0x80 >> (b % 8)`` of octet ``b // 8``.  With
``n`` distinct terms a sender takes ``m`` the smallest power of two at least
``max(64, 10 n)``, at most 65536, and ``k = floor(m * 693 / (1000 n) + 1/2)`` within
1..16 (1 when ``n`` is 0).  A query may match a summary (:func:`may_match`) unless its
domain is another, one of its skills is absent, or, for a query matched on tags and
intent words only (Section 5.2.1, filter step), none of them is present.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache

from ..codec.registry import (
    SUMMARY_BITS_PER_ELEMENT,
    SUMMARY_MAX_BITS,
    SUMMARY_MAX_HASHES,
    SUMMARY_MIN_BITS,
    ConstraintOp,
)
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..codec.wire import CapabilitySummary
from .terms import skill_words, summary_terms, words


def record_terms(record: CapabilityRecord) -> set[str]:
    """The summary terms of one record (module doc)."""
    return set(summary_terms({s.id for s in record.skills},
                             {t.casefold() for s in record.skills for t in s.tags},
                             skill_words(record)))


@lru_cache(maxsize=1 << 16)
def _hash(term: str) -> tuple[int, int]:
    """``h1`` and ``h2`` of a term (module doc), kept for the terms in use."""
    d = hashlib.sha256(term.encode()).digest()
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big") | 1


def _indices(term: str, hashes: int, bits: int) -> Iterable[int]:
    h1, h2 = _hash(term)
    return ((h1 + i * h2) % bits for i in range(hashes))


def set_terms(out: bytearray, terms: Iterable[str], hashes: int) -> None:
    """Set the bits of ``terms`` in the filter ``out`` (of ``8 * len(out)`` bits)."""
    bits = 8 * len(out)
    for term in terms:
        for b in _indices(term, hashes, bits):
            out[b >> 3] |= 0x80 >> (b & 7)


def filter_size(n: int) -> tuple[int, int]:
    """(bits, hash functions) for ``n`` distinct terms (module doc)."""
    bits = SUMMARY_MIN_BITS
    while bits < n * SUMMARY_BITS_PER_ELEMENT and bits < SUMMARY_MAX_BITS:
        bits *= 2
    if n == 0:
        return bits, 1
    return bits, max(1, min(SUMMARY_MAX_HASHES, (bits * 693 + 500 * n) // (1000 * n)))


@dataclass(frozen=True, slots=True)
class Bloom:
    """A capability summary's filter (module doc)."""

    value: CapabilitySummary

    @classmethod
    def of(cls, records: Iterable[CapabilityRecord]) -> Bloom:
        """The filter of ``records``."""
        terms: set[str] = set()
        count = 0
        for r in records:
            terms |= record_terms(r)
            count += 1
        return cls.of_terms(terms, count)

    @classmethod
    def of_terms(cls, terms: Collection[str], records: int) -> Bloom:
        """The filter of ``records`` records whose distinct terms are ``terms``: it costs
        about ``0.7 m`` bits set, whatever the number of records."""
        bits, hashes = filter_size(len(terms))
        out = bytearray(bits // 8)
        set_terms(out, terms, hashes)
        return cls(CapabilitySummary(hashes, records, bytes(out)))

    def fold(self, octets: int) -> Bloom:
        """The filter halved (bit ``b`` of the result is bit ``b`` or ``b + m/2`` of this
        one) until it takes at most ``octets`` octets or is as small as allowed: the
        same terms test present, since ``m/2`` divides ``m``."""
        bits = self.value.bits
        while len(bits) > octets and len(bits) % 16 == 0:
            half = len(bits) // 2
            bits = bytes(a | b for a, b in zip(bits[:half], bits[half:], strict=True))
        return Bloom(replace(self.value, bits=bits))

    def __contains__(self, term: str) -> bool:
        v = self.value
        return all(v.bits[b >> 3] & (0x80 >> (b & 7))
                   for b in _indices(term, v.hashes, 8 * len(v.bits)))


def _tags_and_words_only(q: DiscoveryQuery) -> bool:
    """Whether the query has no mandatory term (Section 5.2.1, filter step)."""
    return not (q.skills or q.input_modes or q.output_modes or q.domain is not None
                or any(c.op not in (ConstraintOp.NE, ConstraintOp.EXISTS) or c.value
                       for c in q.constraints))


def may_match(query: DiscoveryQuery, domain: str, bloom: Bloom) -> bool:
    """Whether a record summarized by ``bloom`` (of ``domain``) may match ``query``."""
    if query.domain is not None and query.domain != domain:
        return False
    if not all("s:" + s in bloom for s in query.skills):
        return False
    if _tags_and_words_only(query) and (query.tags or query.intent):
        ws = words(query.intent) if query.intent else set()
        return any("t:" + t.casefold() in bloom for t in query.tags) \
            or any("w:" + w in bloom for w in ws)
    return True
