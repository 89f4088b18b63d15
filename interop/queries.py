"""Questions the pass rules (:mod:`.cases`) ask of a decoded capture (:mod:`.wire`): the
messages of a type, the answer to a request, the requests answered with a status."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from dmscproto.codec.messages import Error, Message, Register
from dmscproto.codec.registry import ANSWER_TO, ErrorCode

from .wire import Trace, WireMessage


def of(trace: Trace, cls: type[Message], *, up: bool | None = None,
       listener: str | None = None) -> list[WireMessage]:
    return [m for m in trace.messages if isinstance(m.msg, cls)
            and (up is None or m.up == up) and (listener is None or m.listener == listener)]


def answer(trace: Trace, request: WireMessage) -> WireMessage | None:
    """The first answer to ``request``: the other direction of its stream, its
    transaction id, its answer type or ERROR."""
    assert request.msg is not None
    txid = request.msg.transaction_id
    expected = ANSWER_TO.get(request.msg.TYPE)
    for m in trace.messages:
        if m.stream == request.stream and m.up != request.up and m.msg is not None \
                and m.time >= request.time and m.msg.transaction_id == txid \
                and (expected == m.msg.TYPE or isinstance(m.msg, Error)):
            return m
    return None


def answered(trace: Trace, cls: type[Message], status: ErrorCode = ErrorCode.SUCCESS, *,
             listener: str | None = None, where: Callable[[Message], bool] = lambda m: True,
             ) -> list[tuple[WireMessage, WireMessage]]:
    """Every (request, answer) of type ``cls`` sent to a gateway whose answer has
    ``status``."""
    pairs = []
    for req in of(trace, cls, up=True, listener=listener):
        assert req.msg is not None
        ans = answer(trace, req)
        if ans is not None and getattr(ans.msg, "status", None) is status and where(req.msg):
            pairs.append((req, ans))
    return pairs


def _status_of(trace: Trace, cls: type[Message]) -> str:
    seen = [f"{a.msg.TYPE.name} {getattr(a.msg, 'status', ErrorCode.SUCCESS).name}"
            if a is not None and a.msg is not None else "no answer"
            for r in of(trace, cls, up=True) for a in [answer(trace, r)]]
    return f"{cls.TYPE.name} answers seen: {seen or 'no request at all'}"


def need(found: Iterable[object], what: str, trace: Trace, cls: type[Message]) -> list[str]:
    return [] if any(True for _ in found) else [f"missing: {what} ({_status_of(trace, cls)})"]


def registered(trace: Trace, listener: str) -> set[bytes]:
    """The Agent IDs whose REGISTER a gateway accepted."""
    return {r.msg.record.record.agent_id for r, _ in answered(trace, Register, listener=listener)
            if isinstance(r.msg, Register)}
