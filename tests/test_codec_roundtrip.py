"""Every example message encodes, decodes to an equal message, and re-encodes to the
same octets."""

from __future__ import annotations

import pytest

from dmscproto.codec import MessageType, decode, encode
from dmscproto.codec.registry import LIMITS, TIMERS, limit, timer
from dmscproto.codec.signing import verify_record
from dmscproto.testing.examples import by_type, examples

EXAMPLES = examples()


def test_every_message_type_has_an_example() -> None:
    assert set(by_type()) == set(MessageType)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_round_trip(name: str) -> None:
    msg = EXAMPLES[name]
    data = encode(msg)
    again = decode(data)
    assert again == msg
    assert type(again) is type(msg)
    assert encode(again) == data


def test_signed_record_survives_round_trip() -> None:
    data = encode(EXAMPLES["register"])
    verify_record(decode(data).record)  # type: ignore[attr-defined]


def test_timers_and_limits_are_looked_up_by_unique_name() -> None:
    """:func:`timer` and :func:`limit` read dicts built from the registries: a name
    registered twice would hide one of them."""
    assert len({t.name for t in TIMERS}) == len(TIMERS)
    assert len({lim.name for lim in LIMITS}) == len(LIMITS)
    assert all(timer(t.name) == t.default_s for t in TIMERS)
    assert all(limit(lim.name) == lim.default for lim in LIMITS)
    with pytest.raises(KeyError):
        timer("NO_SUCH_TIMER")
    with pytest.raises(KeyError):
        limit("NO_SUCH_LIMIT")
