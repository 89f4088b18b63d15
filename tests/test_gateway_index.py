"""Capability index: IAIP filter semantics, exact scores, ordering, policy and limit."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmscproto.codec.registry import ConstraintOp as Op
from dmscproto.codec.values import (
    AttrValue,
    CapabilityRecord,
    Constraint,
    ConstraintValue,
    DiscoveryQuery,
    Skill,
)
from dmscproto.gateway.index import (
    CapabilityIndex,
    IndexTerms,
    Match,
    constraint_holds,
    words,
)
from dmscproto.testing.examples import weather_record


def aid(n: int) -> bytes:
    return bytes([n]) * 16


def record(n: int, skills: tuple[Skill, ...] = (Skill("s", "S", ("t",)),),
           domain: str = "a.example", **attributes: AttrValue) -> CapabilityRecord:
    return replace(weather_record(), agent_id=aid(n), agent_uri=f"dmsc://{domain}/a{n}",
                   domain=domain, skills=skills, attributes=attributes,
                   default_input_modes=("text/plain",),
                   default_output_modes=("application/json",))


def ids(matches: list[Match]) -> list[int]:
    return [m.agent_id[0] for m in matches]


@pytest.fixture
def attr_index() -> CapabilityIndex:
    idx = CapabilityIndex()
    idx.add(record(1, region="eu", latency=40, gpu=True, level="b"))
    idx.add(record(2, region="us", latency=100, level="a"))
    idx.add(record(3, region="eu", latency=250, gpu=False))
    idx.add(record(4, latency=True, level=1))  # bool and int never mix with text/int
    return idx


@pytest.mark.parametrize(("op", "attr", "value", "expected"), [
    (Op.EQ, "region", "eu", [1, 3]),
    (Op.EQ, "gpu", True, [1]),
    (Op.EQ, "latency", 1, []),            # 1 is not true
    (Op.EQ, "level", 1, [4]),
    (Op.NE, "region", "eu", [2, 4]),      # absent satisfies NE
    (Op.NE, "gpu", True, [2, 3, 4]),
    (Op.LT, "latency", 100, [1]),
    (Op.LE, "latency", 100, [1, 2]),
    (Op.GT, "latency", 100, [3]),
    (Op.GE, "latency", 100, [2, 3]),
    (Op.GE, "latency", 0, [1, 2, 3]),     # record 4's latency is a boolean
    (Op.LT, "level", "b", [2]),           # text by code point; 1 is not comparable
    (Op.GE, "level", "a", [1, 2]),
    (Op.GT, "region", 5, []),             # text vs integer never compares
    (Op.IN, "region", ("eu", "jp"), [1, 3]),
    (Op.IN, "level", (1, "a"), [2, 4]),
    (Op.IN, "gpu", (1,), []),
    (Op.EXISTS, "gpu", True, [1, 3]),
    (Op.EXISTS, "gpu", False, [2, 4]),
    (Op.EXISTS, "nothing", True, []),
])
def test_every_constraint_op(attr_index: CapabilityIndex, op: Op, attr: str,
                             value: ConstraintValue, expected: list[int]) -> None:
    c = Constraint(attr, op, value)
    got = attr_index.match(DiscoveryQuery(skills=("s",), constraints=(c,)), 10)
    assert sorted(ids(got)) == expected
    # the posting-set path and the per-record predicate agree
    recs = {n: record(n, **attrs) for n, attrs in (
        (1, {"region": "eu", "latency": 40, "gpu": True, "level": "b"}),
        (2, {"region": "us", "latency": 100, "level": "a"}),
        (3, {"region": "eu", "latency": 250, "gpu": False}),
        (4, {"latency": True, "level": 1}))}
    assert sorted(n for n, r in recs.items() if constraint_holds(c, r.attributes)) == expected


def test_mandatory_terms() -> None:
    idx = CapabilityIndex()
    idx.add(record(1, skills=(Skill("a", "A", ()), Skill("b", "B", (),
                                                             input_modes=("image/png",)))))
    idx.add(record(2, skills=(Skill("a", "A", ()),)))
    idx.add(record(3, skills=(Skill("b", "B", (), output_modes=("audio/wav",)),),
                   domain="b.example"))
    assert ids(idx.match(DiscoveryQuery(skills=("a",)), 10)) == [2, 1]
    assert ids(idx.match(DiscoveryQuery(skills=("a", "b")), 10)) == [1]
    assert ids(idx.match(DiscoveryQuery(skills=("a", "zzz")), 10)) == []
    assert ids(idx.match(DiscoveryQuery(input_modes=("image/png",)), 10)) == [1]
    assert ids(idx.match(DiscoveryQuery(input_modes=("text/plain",)), 10)) == [2, 3, 1]
    assert ids(idx.match(DiscoveryQuery(output_modes=("audio/wav",)), 10)) == [3]
    assert ids(idx.match(DiscoveryQuery(skills=("b",), domain="b.example"), 10)) == [3]
    assert ids(idx.match(DiscoveryQuery(domain="c.example"), 10)) == []


def test_score_formula_exact() -> None:
    idx = CapabilityIndex()
    skills = (Skill("forecast", "Weather forecast", ("Weather", "sky")),
              Skill("alerts", "Storm alerts", ("storm",), description="Severe events"))
    idx.add(record(1, skills=skills))
    q = DiscoveryQuery(skills=("forecast",), tags=("weather", "rain"),
                       intent="severe weather in Paris")
    # t = 1/2 (weather, case-folded), i = 2/4 (severe, weather), s = 1/(1+2-1) = 1/2
    assert idx.match(q, 5) == [Match(aid(1), 1000 * 5 // 2 + 1000 * 3 // 2 + 1000)]
    # floor of an exact rational: t = 1/3, i = 1, s = 1 -> 1666.66.. + 3000 + 2000
    q2 = DiscoveryQuery(tags=("sky", "x", "y"))
    idx2 = CapabilityIndex()
    idx2.add(record(2, skills=(Skill("z", "Z", ("sky",)),)))
    assert idx2.match(replace(q2, skills=("z",)), 5) == [Match(aid(2), 6666)]
    # a perfect match scores 10000
    assert idx2.match(DiscoveryQuery(skills=("z",), tags=("SKY",), intent="z"), 5) \
        == [Match(aid(2), 10000)]


def test_ranking_ties_limit_and_policy() -> None:
    idx = CapabilityIndex()
    one = (Skill("s", "S", ("t",)),)
    two = (Skill("s", "S", ("t",)), Skill("o", "Other", ()))
    for n in (9, 3, 7):
        idx.add(record(n, skills=one))
    idx.add(record(1, skills=two))  # less specific: lower score despite the lowest id
    q = DiscoveryQuery(skills=("s",), tags=("t",))
    ranked = idx.match(q, 10)
    assert ids(ranked) == [3, 7, 9, 1]
    assert [m.score for m in ranked] == [10000, 10000, 10000, 9000]
    assert ids(idx.match(q, 2)) == [3, 7]
    assert idx.match(q, 0) == []
    # policy runs after scoring and before the limit: the limit is filled from allowed
    assert ids(idx.match(q, 2, allow=lambda a: a != aid(3))) == [7, 9]
    assert ids(idx.match(q, 10, allow=lambda a: False)) == []


def test_queries_without_mandatory_terms() -> None:
    idx = CapabilityIndex()
    idx.add(record(1, skills=(Skill("x", "Translate text", ("language",)),)))
    idx.add(record(2, skills=(Skill("y", "Forecast", ("weather",)),)))
    assert ids(idx.match(DiscoveryQuery(tags=("weather",)), 10)) == [2]
    assert ids(idx.match(DiscoveryQuery(intent="please translate this"), 10)) == [1]
    assert ids(idx.match(DiscoveryQuery(tags=("none",)), 10)) == []
    assert sorted(ids(idx.match(DiscoveryQuery(), 10))) == [1, 2]
    only_ne = DiscoveryQuery(constraints=(Constraint("region", Op.NE, "eu"),))
    assert sorted(ids(idx.match(only_ne, 10))) == [1, 2]


def test_replace_and_remove_update_postings() -> None:
    idx = CapabilityIndex()
    idx.add(record(1, skills=(Skill("old", "Old", ("t",)),), region="eu"))
    idx.add(record(1, skills=(Skill("new", "New", ("u",)),), region="us"))
    assert len(idx) == 1
    assert idx.match(DiscoveryQuery(skills=("old",)), 10) == []
    assert idx.match(DiscoveryQuery(tags=("t",)), 10) == []
    eu = Constraint("region", Op.EQ, "eu")
    assert idx.match(DiscoveryQuery(constraints=(eu,)), 10) == []
    assert ids(idx.match(DiscoveryQuery(skills=("new",)), 10)) == [1]
    assert idx.remove(aid(1)) and not idx.remove(aid(1))
    assert idx.match(DiscoveryQuery(), 10) == []
    assert aid(1) not in idx


def test_terms_roundtrip() -> None:
    terms = IndexTerms.of(record(1, region="eu", latency=3, gpu=True))
    assert IndexTerms.decode(terms.encode()) == terms
    assert terms.encode() == IndexTerms.of(record(1, region="eu", latency=3, gpu=True)).encode()
    with pytest.raises(ValueError):
        IndexTerms.decode(b"\x80")


def test_large_index_intersects_rare_terms() -> None:
    """A query's cost follows its rarest term: 5000 records, 2 carry the skill."""
    idx = CapabilityIndex()
    for n in range(5000):
        sid = "rare" if n in (17, 4242) else f"common{n % 5}"
        idx.add(replace(record(0, skills=(Skill(sid, sid, ("t",)),), rank=n % 7),
                        agent_id=n.to_bytes(16, "big")))

    class Counting(dict[bytes, object]):
        reads = 0

        def __getitem__(self, key: bytes) -> object:
            Counting.reads += 1
            return super().__getitem__(key)

    idx._entries = Counting(idx._entries)  # type: ignore[assignment]
    lt = Constraint("rank", Op.LT, 5)  # residual check: only on the records walked
    got = idx.match(DiscoveryQuery(skills=("rare",), tags=("t",), intent="rare thing",
                                   constraints=(lt,)), 10)
    assert [int.from_bytes(m.agent_id, "big") for m in got] == [17, 4242]
    assert Counting.reads <= 4  # never a pass over the 5000 records


# --- the optimised matcher against the module doc's rules, written naively ----------------
def reference(records: list[CapabilityRecord], q: DiscoveryQuery, limit: int,
              allow: Callable[[bytes], bool]) -> list[Match]:
    """Filter, score (exact rationals), sort, policy, limit: straight from the doc."""
    tags_q = {t.casefold() for t in q.tags}
    words_q = words(q.intent) if q.intent else set()
    req = set(q.skills)
    posting = bool(req or q.input_modes or q.output_modes or q.domain is not None
                   or any(c.op not in (Op.NE, Op.EXISTS) or (c.op is Op.EXISTS and c.value)
                          for c in q.constraints))
    out = []
    for r in records:
        t = IndexTerms.of(r)
        if not (req <= t.skills and set(q.input_modes) <= t.in_modes
                and set(q.output_modes) <= t.out_modes
                and q.domain in (None, r.domain)
                and all(constraint_holds(c, r.attributes) for c in q.constraints)):
            continue
        if not posting and (tags_q or words_q) and not (tags_q & t.tags or words_q & t.words):
            continue
        tf = Fraction(len(tags_q & t.tags), len(tags_q)) if tags_q else Fraction(1)
        wf = Fraction(len(words_q & t.words), len(words_q)) if words_q else Fraction(1)
        sf = Fraction(1, 1 + len(t.skills) - len(req))
        out.append(Match(r.agent_id, math.floor(1000 * (5 * tf + 3 * wf + 2 * sf))))
    out.sort(key=lambda m: (-m.score, m.agent_id))
    return [m for m in out if allow(m.agent_id)][:limit]


SKILL_IDS = ["a", "b", "c"]
TAG_POOL = ["x", "Y", "z", "w"]
small = st.sampled_from


@st.composite
def records(draw: st.DrawFn) -> list[CapabilityRecord]:
    out = []
    for n in range(draw(st.integers(0, 12))):
        skills = tuple(Skill(sid, draw(small(["Alpha beta", "gamma", "beta x"])),
                             tuple(draw(st.lists(small(TAG_POOL), max_size=2, unique=True))),
                             input_modes=tuple(draw(st.lists(small(["i1", "i2"]), max_size=1))))
                       for sid in draw(st.lists(small(SKILL_IDS), min_size=1, max_size=3,
                                                unique=True)))
        attrs = draw(st.dictionaries(small(["k", "m"]),
                                     st.one_of(st.integers(0, 3), st.booleans(),
                                               small(["p", "q"])), max_size=2))
        out.append(record(n, skills=skills, domain=draw(small(["a.example", "b.example"])),
                          **dict(sorted(attrs.items()))))
    return out


value = st.one_of(st.integers(0, 3), st.booleans(), small(["p", "q"]))
constraints = st.one_of(
    st.builds(Constraint, small(["k", "m"]), small([op for op in Op if op is not Op.IN]),
              value),
    st.builds(Constraint, small(["k", "m"]), st.just(Op.IN),
              st.lists(value, max_size=3).map(tuple)))
queries = st.builds(
    DiscoveryQuery,
    skills=st.lists(small(SKILL_IDS), max_size=2).map(tuple),
    tags=st.lists(small(["x", "y", "Z", "v"]), max_size=2).map(tuple),
    intent=st.one_of(st.none(), small(["beta", "alpha x", "nothing here", "GAMMA beta"])),
    constraints=st.lists(constraints, max_size=2).map(tuple),
    input_modes=st.lists(small(["i1", "text/plain"]), max_size=1).map(tuple),
    domain=st.one_of(st.none(), small(["a.example", "b.example"])),
)


@settings(max_examples=200, deadline=None)
@given(records(), queries, st.integers(1, 5), st.integers(0, 255),
       st.one_of(st.none(), st.sets(st.integers(0, 12))))
def test_match_agrees_with_the_reference(recs: list[CapabilityRecord], q: DiscoveryQuery,
                                         limit: int, deny: int, within: set[int] | None
                                         ) -> None:
    idx = CapabilityIndex()
    for r in recs:
        idx.add(r)
    allow = (lambda a: a[0] % 3 != deny % 3) if deny % 2 else (lambda a: True)
    if within is None:
        assert idx.match(q, limit, allow) == reference(recs, q, limit, allow)
    else:
        ids = {aid(n) for n in within}  # one more mandatory term
        expected = [m for m in reference(recs, q, len(recs), allow) if m.agent_id in ids]
        assert idx.match(q, limit, allow, ids) == expected[:limit]
