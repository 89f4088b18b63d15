"""In-memory capability index: matching and ranking (draft-dmsc-protocol-00, 5.2, 7.3).

Discovery follows IAIP's order: **filter** on the mandatory terms, **score** what is
left, apply **policy**, then the **limit**.

Filter.  A record matches a query when all of the following hold:

* every skill in ``query.skills`` equals the ``id`` of one of the record's skills;
* every mode in ``query.input_modes`` (``output_modes``) is among the record's default
  input (output) modes or a skill's input (output) modes;
* ``query.domain``, when present, equals ``record.domain``;
* every constraint holds on ``record.attributes`` (``a`` is the attribute's value,
  ``v`` the constraint's; values compare only within one CBOR type, so ``1`` never
  equals ``true`` and ``1 < "2"`` is false):

  - ``EQ``: ``a`` is present and equal to ``v``; ``NE``: not ``EQ`` (an absent
    attribute satisfies ``NE``);
  - ``LT LE GT GE``: ``a`` is present, ``a`` and ``v`` are both integers (not booleans)
    or both text strings (compared by Unicode code point), and ``a < v`` (``<=``,
    ``>``, ``>=``);
  - ``IN``: ``a`` is present and equal to one element of ``v``;
  - ``EXISTS``: ``a`` is present if ``v`` is true, absent if ``v`` is false.

Every term except ``NE`` and ``EXISTS false`` has a posting set (the records that can
satisfy it); the candidates are the intersection of those sets, smallest first, so a
skill query costs the size of its rarest term, never a scan of all records.  A query
with no posting term matches the records sharing at least one tag or intent word with
it (below), or every record when it has neither tags nor intent.

Score.  An integer in 0..10000.  With ``T`` the set of the query's tags, ``W`` of its
intent words, ``S`` of its required skill ids, ``tags(r)`` the union of the record's
skill tags, ``words(r)`` the words of its skills' ids, names, descriptions and tags,
and ``n(r)`` its number of distinct skill ids (words are the maximal runs of Unicode
letters and digits after Unicode case folding; tags compare after case folding)::

    t = |T ∩ tags(r)| / |T|        (t = 1 when T is empty)
    i = |W ∩ words(r)| / |W|       (i = 1 when W is empty)
    s = 1 / (1 + n(r) - |S|)       (specificity: 1 for a record offering exactly S)
    score = floor(1000 * (5t + 3i + 2s))

computed exactly in integers.  Results are ordered by score, highest first, then by
agent id (bytewise ascending), so equal inputs always give the same answer.

Policy and limit.  ``allow`` is asked about records in that order, and the first
``limit`` records it accepts are returned.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Set
from dataclasses import dataclass
from typing import Any

import cbor2

from ..codec import cbor
from ..codec.registry import ConstraintOp
from ..codec.values import AttrValue, CapabilityRecord, Constraint, DiscoveryQuery
from ..protocol.terms import RecordTerms, TermCounts, skill_words, words
from .postings import Bits, Ordinals, Postings, bits, count, difference, intersection, union
from .shards import ShardedDict

_ValueKey = tuple[bool, AttrValue]


def _vkey(v: AttrValue) -> _ValueKey:
    """A hashable key under which ``True`` and ``1`` differ (CBOR types differ)."""
    return (type(v) is bool, v)


def _ordered(a: AttrValue, v: AttrValue) -> bool:
    """Whether ``a`` and ``v`` are comparable by LT/LE/GT/GE (both int, or both str)."""
    ta, tv = type(a), type(v)
    return ta is tv and ta is not bool


def constraint_holds(c: Constraint, attributes: dict[str, AttrValue]) -> bool:
    """Whether constraint ``c`` holds on ``attributes`` (semantics in the module doc)."""
    op, v = c.op, c.value
    present = c.attribute in attributes
    if op is ConstraintOp.EXISTS:
        return present is bool(v)
    if op is ConstraintOp.NE:
        return not present or isinstance(v, tuple) or _vkey(attributes[c.attribute]) != _vkey(v)
    if not present:
        return False
    a = attributes[c.attribute]
    if op is ConstraintOp.IN:
        values = v if isinstance(v, tuple) else (v,)
        return _vkey(a) in {_vkey(x) for x in values}
    if isinstance(v, tuple):
        return False
    if op is ConstraintOp.EQ:
        return _vkey(a) == _vkey(v)
    if not _ordered(a, v):
        return False
    if op is ConstraintOp.LT:
        return a < v  # type: ignore[operator]
    if op is ConstraintOp.LE:
        return a <= v  # type: ignore[operator]
    if op is ConstraintOp.GT:
        return a > v  # type: ignore[operator]
    return a >= v  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Match:
    """One ranked answer: an agent and its score (0..10000)."""

    agent_id: bytes
    score: int


@dataclass(frozen=True, slots=True)
class IndexTerms:
    """What the index knows about one record: its searchable terms.

    Derived from a :class:`CapabilityRecord` by :meth:`of`; the registry store keeps
    the :meth:`encode`-d form next to the signed record so a restart rebuilds the
    index without decoding every COSE envelope.
    """

    skills: frozenset[str]
    tags: frozenset[str]
    words: frozenset[str]
    in_modes: frozenset[str]
    out_modes: frozenset[str]
    domain: str
    attributes: dict[str, AttrValue]

    @classmethod
    def of(cls, r: CapabilityRecord) -> IndexTerms:
        return cls(
            skills=frozenset(s.id for s in r.skills),
            tags=frozenset(t.casefold() for s in r.skills for t in s.tags),
            words=frozenset(skill_words(r)),
            in_modes=frozenset(r.default_input_modes).union(
                *(s.input_modes for s in r.skills)),
            out_modes=frozenset(r.default_output_modes).union(
                *(s.output_modes for s in r.skills)),
            domain=r.domain,
            attributes=dict(r.attributes),
        )

    def encode(self) -> bytes:
        """A CBOR array (sorted sets, canonical maps: equal terms give equal octets)."""
        return cbor.dumps([sorted(self.skills), sorted(self.tags), sorted(self.words),
                           sorted(self.in_modes), sorted(self.out_modes), self.domain,
                           self.attributes])

    @classmethod
    def decode(cls, data: bytes) -> IndexTerms:
        """Inverse of :meth:`encode` (raises ValueError on anything else)."""
        sk, tg, ws, im, om, domain, attrs = _parse(data)
        return cls(frozenset(sk), frozenset(tg), frozenset(ws), frozenset(im),
                   frozenset(om), domain, attrs)


_Parsed = tuple[list[str], list[str], list[str], list[str], list[str], str,
                dict[str, AttrValue]]


def _parse(data: bytes) -> _Parsed:
    """The seven parts of an encoded :class:`IndexTerms`, as plain lists."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types, all mean "not CBOR"
        raise ValueError(f"not an encoded IndexTerms: {exc}") from None
    if type(obj) is not list or len(obj) != 7 \
            or [type(x) for x in obj] != [list, list, list, list, list, str, dict]:
        raise ValueError("not an encoded IndexTerms")
    return tuple(obj)


class _Entry:
    """What the index keeps per record: its ordinal in the posting bitmaps
    (:mod:`.postings`), the attributes for the residual constraint checks, and the
    encoded terms to find the postings again on removal (compact: no per-record sets;
    scoring works on the postings)."""

    __slots__ = ("attributes", "encoded", "ordinal")

    def __init__(self, ordinal: int, attributes: dict[str, AttrValue], encoded: bytes) -> None:
        self.ordinal, self.attributes, self.encoded = ordinal, attributes, encoded


class CapabilityIndex:
    """Inverted indexes over capability records, for :meth:`match` (module doc).

    For the records of ``domain`` (the gateway's own) it also keeps, on write, their
    capability summary terms (``domain_terms``, Section 6.9) and which of them changed
    since :meth:`take_changes` was last called.

    Adding or removing a record costs time bounded by its own terms, whatever the
    number of records (:mod:`.postings`, :mod:`.shards`)."""

    def __init__(self, domain: str | None = None) -> None:
        self.domain = domain
        self.domain_terms = TermCounts()
        self._changed: ShardedDict[bytes, None] = ShardedDict()
        self._entries: ShardedDict[bytes, _Entry] = ShardedDict()
        self._ordinals = Ordinals()
        self._all = Postings[None]()                     # every record
        self._skills = Postings[str]()
        self._tags = Postings[str]()
        self._words = Postings[str]()
        self._in_modes = Postings[str]()
        self._out_modes = Postings[str]()
        self._domains = Postings[str]()
        self._attr_present = Postings[str]()            # attribute name
        self._attr_values = Postings[tuple[str, _ValueKey]](per_record=True)
        self._n_skills = Postings[int]()                # number of distinct skill ids

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._entries

    def _postings(self, p: _Parsed) -> Iterable[tuple[Postings[Any], Iterable[Any]]]:
        skills, tags, ws, in_modes, out_modes, domain, attrs = p
        return ((self._all, (None,)), (self._skills, skills), (self._tags, tags), (self._words, ws),
                (self._in_modes, in_modes), (self._out_modes, out_modes),
                (self._domains, (domain,)), (self._attr_present, attrs),
                (self._attr_values, [(k, _vkey(v)) for k, v in attrs.items()]),
                (self._n_skills, (len(skills),)))

    def add(self, record: CapabilityRecord) -> None:
        """Index ``record``, replacing any record with the same agent id."""
        self.add_encoded(record.agent_id, IndexTerms.of(record).encode())

    def add_encoded(self, agent_id: bytes, encoded: bytes) -> None:
        """Index a record by its encoded :class:`IndexTerms` (the restart path)."""
        parsed = _parse(encoded)
        self.remove(agent_id)
        ordinal = self._ordinals.add(agent_id)
        self._entries[agent_id] = _Entry(ordinal, parsed[6], encoded)
        for postings, items in self._postings(parsed):
            postings.add(items, ordinal)
        if parsed[5] == self.domain:
            self._changed[agent_id] = None
            self.domain_terms.add((parsed[0], parsed[1], parsed[2]))

    def remove(self, agent_id: bytes) -> bool:
        e = self._entries.pop(agent_id, None)
        if e is None:
            return False
        parsed = _parse(e.encoded)
        self._ordinals.remove(e.ordinal)
        for postings, items in self._postings(parsed):
            postings.remove(items, e.ordinal)
        if parsed[5] == self.domain:
            self._changed[agent_id] = None
            self.domain_terms.remove((parsed[0], parsed[1], parsed[2]))
        return True

    # --- the domain's summary terms (Section 6.9) ---------------------------------------
    def summary_terms(self, agent_id: bytes) -> RecordTerms | None:
        """The summary terms of a record of ``domain`` (None: no such record)."""
        e = self._entries.get(agent_id)
        if e is None:
            return None
        parsed = _parse(e.encoded)
        return (parsed[0], parsed[1], parsed[2]) if parsed[5] == self.domain else None

    def domain_ids(self) -> list[bytes]:
        """The records of ``domain``, a snapshot."""
        return [] if self.domain is None \
            else self._ordinals.agent_ids(self._domains.get(self.domain))

    def take_changes(self) -> Collection[bytes]:
        """The records of ``domain`` added, replaced or removed since the last call (the
        journal itself, handed over: no copy of what may be every record)."""
        out, self._changed = self._changed, ShardedDict()
        return out.keys()

    # --- matching -------------------------------------------------------------------------
    def _candidates(self, q: DiscoveryQuery, residual: list[Constraint],
                    tags: set[str], intent: set[str],
                    within: Set[bytes] | None) -> Bits:
        """Intersect the posting sets of the mandatory terms, smallest first.  A term
        is a union of posting sets (several for IN); constraints without a complete
        posting set are appended to ``residual`` for a per-record check."""
        terms: list[list[Bits]] = []
        terms += ([self._skills.get(s)] for s in q.skills)
        terms += ([self._in_modes.get(m)] for m in q.input_modes)
        terms += ([self._out_modes.get(m)] for m in q.output_modes)
        if q.domain is not None:
            terms.append([self._domains.get(q.domain)])
        for c in q.constraints:
            op, v = c.op, c.value
            if op is ConstraintOp.EQ and not isinstance(v, tuple):
                terms.append([self._attr_values.get((c.attribute, _vkey(v)))])
            elif op is ConstraintOp.IN:
                values = v if isinstance(v, tuple) else (v,)
                terms.append([self._attr_values.get((c.attribute, _vkey(x))) for x in values])
            elif op is ConstraintOp.EXISTS and v:
                terms.append([self._attr_present.get(c.attribute)])
            elif op in (ConstraintOp.NE, ConstraintOp.EXISTS):
                residual.append(c)
            else:  # EQ with an array value (never true), LT, LE, GT, GE
                terms.append([self._attr_present.get(c.attribute)])
                residual.append(c)
        if not terms and (tags or intent):
            terms.append([*(self._tags.get(t) for t in tags),
                          *(self._words.get(w) for w in intent)])
        if within is not None:
            entries = self._entries
            terms.append([bits(entries[a].ordinal for a in within if a in entries)])
        if not terms:
            return self._all.get(None)
        terms.sort(key=lambda sets: sum(map(count, sets)))
        result = union(terms[0])
        for sets in terms[1:]:
            if not result:
                break
            result = intersection(result, sets[0] if len(sets) == 1 else union(sets))
        return result

    @staticmethod
    def _refine(classes: dict[tuple[int, int], Bits], postings: Postings[str],
                terms: set[str], axis: int,
                spend: Callable[[], None]) -> dict[tuple[int, int], Bits]:
        """Split every class by membership of each term's posting set, counting the
        hits on ``axis`` (0: tags, 1: intent words).  Set operations only."""
        for t in terms:
            spend()
            post = postings.get(t)
            out: dict[tuple[int, int], list[Bits]] = {}
            for key, members in classes.items():
                inside = intersection(members, post)
                parts = ((key, difference(members, inside) if inside else members),
                         ((key[0] + 1, key[1]) if axis == 0 else (key[0], key[1] + 1), inside))
                for k, part in parts:
                    if part:
                        out.setdefault(k, []).append(part)
            classes = {k: union(parts_k) for k, parts_k in out.items()}
        return classes

    def match(self, query: DiscoveryQuery, limit: int,
              allow: Callable[[bytes], bool] | None = None,
              within: Set[bytes] | None = None,
              spend: Callable[[], None] = lambda: None) -> list[Match]:
        """Filter, score, apply ``allow`` (asked with an agent id), then keep ``limit``
        (see the module doc).  ``within``, when given, is one more mandatory term: only
        those agent ids can match (e.g. a gateway's own registrations).  ``spend`` is
        called before each scoring term and every 256 records walked: it raises to stop
        an evaluation that exceeds its budget (:class:`~.limits.Budget`).

        Scoring has no per-record loop: the candidates are partitioned by set
        operations into classes of equal (tag hits, word hits, skill count), and one
        class has one score.  Classes are then walked best first, each in agent id
        order, and the per-record checks (residual constraints, then ``allow``) run only
        on the records walked until ``limit`` are accepted.  Checking a filter lazily in
        ranked order selects the same records as filtering first.
        """
        if limit <= 0:
            return []
        tags = {t.casefold() for t in query.tags}
        intent = words(query.intent) if query.intent else set()
        residual: list[Constraint] = []
        candidates = self._candidates(query, residual, tags, intent, within)
        if not candidates:
            return []
        n_req = len(set(query.skills))
        nt, ni = len(tags) or 1, len(intent) or 1
        no_tag, no_word = (0 if tags else 1), (0 if intent else 1)
        classes: dict[tuple[int, int], Bits] = {(no_tag, no_word): candidates}
        classes = self._refine(classes, self._tags, tags, 0, spend)
        classes = self._refine(classes, self._words, intent, 1, spend)
        groups: dict[int, list[Bits]] = {}
        for (ht, hi), members in classes.items():
            for n_skills, post in self._n_skills.sets.items():
                same = intersection(members, post)
                if same:
                    ns = 1 + n_skills - n_req
                    score = (5000 * ht * ni * ns + 3000 * hi * nt * ns + 2000 * nt * ni) \
                        // (nt * ni * ns)
                    groups.setdefault(score, []).append(same)
        out: list[Match] = []
        entries = self._entries
        walked = 0
        for score in sorted(groups, reverse=True):
            for aid in sorted(self._ordinals.agent_ids(union(groups[score]))):
                walked += 1
                if walked % 256 == 0:
                    spend()
                if residual and not all(constraint_holds(c, entries[aid].attributes)
                                        for c in residual):
                    continue
                if allow is not None and not allow(aid):
                    continue
                out.append(Match(aid, score))
                if len(out) == limit:
                    return out
        return out
