"""The capability terms of records (draft-dmsc-protocol-00, Sections 5.2.1 and 6.9).

Discovery matches a query's intent against the *words* of a record's skills (the maximal
runs of Unicode letters and digits of their ids, names, descriptions and tags, after
case folding); a capability summary holds the *terms* of a domain's records: ``s:`` +
each skill id, ``t:`` + each tag case-folded, ``w:`` + each word.  :class:`TermCounts`
keeps the terms of a changing set of records with how many records hold each, so a
summary is kept on write, at the cost of the terms of the records that change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..codec.values import CapabilityRecord

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> set[str]:
    """The words of ``text``: maximal runs of letters and digits, case-folded."""
    return set(_WORD.findall(text.casefold()))


def skill_words(record: CapabilityRecord) -> set[str]:
    """The words of a record's skills: their ids, names, descriptions and tags."""
    ws: set[str] = set()
    for s in record.skills:
        ws |= words(" ".join((s.id, s.name, s.description or "", *s.tags)))
    return ws


#: A record's distinct skill ids, case-folded tags and words.
RecordTerms = tuple[Sequence[str], Sequence[str], Sequence[str]]
_PREFIXES = ("s:", "t:", "w:")


def summary_terms(skills: Iterable[str], tags: Iterable[str],
                  ws: Iterable[str]) -> list[str]:
    """The summary terms of a record with these skill ids, case-folded tags and words."""
    return [p + t for p, ts in zip(_PREFIXES, (skills, tags, ws), strict=True) for t in ts]


class TermCounts:
    """The summary terms of a set of records, with how many records hold each (module
    doc).  ``version`` changes whenever a term appears or disappears (the filter built
    from the terms changes only then); ``records`` counts the records."""

    __slots__ = ("_counts", "records", "version")

    def __init__(self) -> None:
        self._counts: tuple[dict[str, int], ...] = ({}, {}, {})
        self.records = 0
        self.version = 0

    def add(self, terms: RecordTerms) -> None:
        """A record with these (distinct) terms joins the set."""
        self.records += 1
        for counts, ts in zip(self._counts, terms, strict=True):
            for t in ts:
                c = counts.get(t, 0)
                counts[t] = c + 1
                if not c:
                    self.version += 1

    def remove(self, terms: RecordTerms) -> None:
        """A record with these terms, added before, leaves the set."""
        self.records -= 1
        for counts, ts in zip(self._counts, terms, strict=True):
            for t in ts:
                c = counts[t] - 1
                if c:
                    counts[t] = c
                else:
                    del counts[t]
                    self.version += 1

    def terms(self) -> list[str]:
        """The distinct summary terms held."""
        return summary_terms(*self._counts)

    def __len__(self) -> int:
        """How many distinct terms are held."""
        return sum(map(len, self._counts))

    def snapshot(self) -> list[tuple[str, list[str]]]:
        """The distinct terms held, by prefix and without it (copies, for a filter built
        in steps while the counts change)."""
        return [(p, list(c)) for p, c in zip(_PREFIXES, self._counts, strict=True)]
