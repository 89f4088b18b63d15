"""Every row of the peer session's table, one test each (draft-dmsc-protocol-00 Sections
6.1, 6.4, 6.7, 6.10; :mod:`row_cases`): the session runs on a real gateway node and
SQLite registry and is fed PDUs through the codec."""

from __future__ import annotations

from pathlib import Path

import pytest
from peering_rig import HOLD, KEEP, T1, UNTRUSTED, Peer, peer_open, rig
from row_cases import ME, PEER, RowCases, row_tests

from dmscproto.codec.digest import ROOT, summarize
from dmscproto.codec.messages import (
    Certificate,
    CertificateAck,
    Digest,
    DigestRequest,
    EchoReply,
    EchoRequest,
    Error,
    Keepalive,
    Message,
    Notify,
    Open,
    Summary,
    SyncAck,
    SyncRequest,
    Update,
)
from dmscproto.codec.registry import ErrorCode, GatewayCaps, MessageType, timer
from dmscproto.codec.wire import Advertisement, VersionedId
from dmscproto.protocol.bloom import Bloom
from dmscproto.protocol.certificates import thumbprint
from dmscproto.protocol.events import (
    SessionEstablished,
    TableChanged,
)
from dmscproto.protocol.machine import ProtocolError, Refusal
from dmscproto.protocol.peering import PeerSession, PeerState, SessionTimers
from dmscproto.protocol.peering_inputs import PeerInput
from dmscproto.protocol.sync import PeerSync
from dmscproto.protocol.sync_in_inputs import InState
from dmscproto.testing.examples import gateway_certificate
from dmscproto.testing.harness import T0, make_record

S, In = PeerState, PeerInput
BOB = make_record(31, "bob", "b.example")
#: Six records learned from the peer, one over its limit of four.
ADS = [Advertisement(1, (PEER,), make_record(40 + i, f"agent{i}", "b.example"))
       for i in range(6)]
CASES = RowCases(PeerSession)
row = CASES.row


# --- IDLE ------------------------------------------------------------------------------------
@row(S.IDLE, In.START)
def _start(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.s.start(T1)
    [o] = p.sent()
    assert isinstance(o, Open) and (o.gateway_id, o.hold_time) == (ME, HOLD)
    assert p.s.state is S.OPEN_SENT and p.s.get_timer() == T1 + HOLD


@row((S.IDLE, S.OPEN_SENT), In.OPEN_REQUEST)
def _open_request(state: PeerState, tmp_path: Path) -> None:
    """Answered with our OPEN on its transaction (a collision in OPEN_SENT)."""
    p = rig(state, tmp_path)
    p.feed(peer_open(txid=5, hold=60))
    [o] = p.sent()
    assert isinstance(o, Open) and (o.transaction_id, o.gateway_id) == (5, ME)
    assert p.s.state is S.OPEN_CONFIRM and p.s.hold_time == 60
    assert p.s.get_timer() == T1 + 60 and p.events() == []


@row(S.IDLE, In.OPEN_REQUEST_REFUSED)
def _refuse_open(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.refuse[0] = Refusal(ErrorCode.POLICY_DENIED, "not federated", 5000)
    p.feed(peer_open(txid=5))
    assert p.sent() == [Error(transaction_id=5, status=ErrorCode.POLICY_DENIED,
                              offending_type=int(MessageType.OPEN),
                              diagnostic="not federated", retry_after=5000)]
    assert p.s.state is S.IDLE and p.s.get_timer() is None and p.events() == []


@row(S.IDLE, In.NOTIFY)
def _drop(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(Notify(transaction_id=5, status=ErrorCode.CEASE))
    assert p.sent() == [] and p.events() == [] and p.s.state is S.IDLE
    assert p.s.get_timer() is None


@row(S.IDLE, In.UNEXPECTED)
def _refuse_message(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    with pytest.raises(ProtocolError) as err:
        p.feed(Keepalive(transaction_id=5))
    assert err.value.code is ErrorCode.UNEXPECTED_MESSAGE
    [n] = p.sent()
    assert isinstance(n, Notify) and n.status is ErrorCode.UNEXPECTED_MESSAGE
    assert p.events() == [] and p.s.state is S.IDLE


# --- opening ---------------------------------------------------------------------------------
@row((S.OPEN_SENT, S.OPEN_CONFIRM), In.OPEN_ANSWER)
def _confirm(state: PeerState, tmp_path: Path) -> None:
    """The answer to our OPEN (in OPEN_CONFIRM after a collision): KEEPALIVE, established,
    sync begun (the empty table: its closing DIGEST)."""
    p = rig(state, tmp_path, collided=True)
    p.feed(peer_open(p.mine, hold=60))
    assert [type(m) for m in p.sent()] == [Keepalive, Digest]
    keepalive = SessionTimers(HOLD, KEEP).keepalive_for(60)
    assert p.events() == [SessionEstablished("peer", PEER, "b.example", 60, keepalive)]
    assert p.s.state is S.ESTABLISHED


@row(S.OPEN_SENT, In.ERROR)
def _open_error(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(Error(transaction_id=p.mine, status=ErrorCode.POLICY_DENIED,
                 offending_type=int(MessageType.OPEN)))
    assert p.sent() == []
    p.closed(ErrorCode.POLICY_DENIED, by_peer=True, peer=None)


@row((S.OPEN_SENT, S.OPEN_CONFIRM), In.OPEN_REQUEST_REFUSED)
def _refuse_and_close(state: PeerState, tmp_path: Path) -> None:
    """An OPEN request proposing a hold time under MIN_HOLD_TIME while opening: ERROR on
    its transaction, NOTIFY, closed."""
    p = rig(state, tmp_path)
    p.feed(peer_open(txid=11, hold=1))
    err, n = p.sent()
    assert isinstance(err, Error) and (err.transaction_id, err.status, err.offending_type) == \
        (11, ErrorCode.INVALID_TLV_VALUE, int(MessageType.OPEN))
    assert isinstance(n, Notify) and n.status is ErrorCode.INVALID_TLV_VALUE
    p.closed(ErrorCode.INVALID_TLV_VALUE, by_peer=False,
             peer=PEER if state is S.OPEN_CONFIRM else None)


@row((S.OPEN_SENT, S.OPEN_CONFIRM), In.OPEN_ANSWER_REFUSED)
def _refuse_answer_and_close(state: PeerState, tmp_path: Path) -> None:
    """The answer to our OPEN refused by the node's check: NOTIFY (no ERROR), closed."""
    p = rig(state, tmp_path, collided=True)
    p.refuse[0] = Refusal(ErrorCode.POLICY_DENIED, "not federated")
    p.feed(peer_open(p.mine))
    [n] = p.sent()
    assert isinstance(n, Notify) and (n.status, n.diagnostic) == (ErrorCode.POLICY_DENIED,
                                                                  "not federated")
    p.closed(ErrorCode.POLICY_DENIED, by_peer=False,
             peer=PEER if state is S.OPEN_CONFIRM else None)


@row(S.OPEN_CONFIRM, In.KEEPALIVE)
def _establish(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(Keepalive(transaction_id=12))
    assert [type(m) for m in p.sent()] == [Digest]  # sync begun; no KEEPALIVE answers it
    assert p.events() == [SessionEstablished("peer", PEER, "b.example", HOLD, KEEP)]
    assert p.s.state is S.ESTABLISHED


@row(S.OPEN_CONFIRM, In.SUMMARY)
def _establish_on_summary(state: PeerState, tmp_path: Path) -> None:
    """A SUMMARY that overtook the KEEPALIVE establishes the session."""
    p = rig(state, tmp_path)
    p.feed(Summary(gateway_id=PEER, timestamp=1, path=(PEER,), domain="b.example",
                   summary=Bloom.of([BOB.record]).value))
    assert [type(m) for m in p.sent()] == [Digest]
    assert p.events() == [SessionEstablished("peer", PEER, "b.example", HOLD, KEEP)]
    assert p.s.state is S.ESTABLISHED


def _bob_update() -> Update:
    return Update(sequence=0, advertise=(Advertisement(1, (PEER,), BOB),))


@row(S.OPEN_CONFIRM, In.SYNC)
def _establish_and_sync(state: PeerState, tmp_path: Path) -> None:
    """An UPDATE that overtook the KEEPALIVE: established, then applied."""
    p = rig(state, tmp_path)
    p.feed(_bob_update())
    aid = BOB.record.agent_id
    assert p.events() == [SessionEstablished("peer", PEER, "b.example", HOLD, KEEP),
                          TableChanged("peer", (aid,), ())]
    assert aid in p.node.core and p.s.state is S.ESTABLISHED


# --- ESTABLISHED -----------------------------------------------------------------------------
@row(S.ESTABLISHED, In.KEEPALIVE)
def _keepalive(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(Keepalive(transaction_id=12), T0 + 50)
    assert p.sent() == []
    p.hold_until(T0 + 50 + HOLD)


@row(S.ESTABLISHED, In.SUMMARY)
def _summary(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(Summary(gateway_id=PEER, timestamp=1, path=(PEER,), domain="b.example"), T0 + 50)
    assert p.sent() == [] and p.events() == []  # the node, not the session, keeps it
    p.hold_until(T0 + 50 + HOLD)


@row(S.ESTABLISHED, In.ECHO_REPLY)
def _echo_reply(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(EchoReply(transaction_id=12, sequence=1, timestamp=0, gateway_id=PEER), T0 + 50)
    assert p.sent() == []
    p.hold_until(T0 + 50 + HOLD)


@row(S.ESTABLISHED, In.SYNC)
def _sync(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(_bob_update(), T0 + 50)
    aid = BOB.record.agent_id
    assert p.events() == [TableChanged("peer", (aid,), ())] and aid in p.node.core
    p.hold_until(T0 + 50 + HOLD)


@row(S.ESTABLISHED, In.ERROR)
def _sync_error(state: PeerState, tmp_path: Path) -> None:
    """An ERROR goes to sync: here the answer to its DIGEST_REQUEST for the root of a
    peer's table unlike ours, which ends the reconciliation."""
    p = rig(state, tmp_path)
    p.feed(Digest(sequence=0, summary=summarize([VersionedId(bytes(16), 1)])), T0 + 40)
    [ask] = [m for m in p.sent() if isinstance(m, DigestRequest)]
    assert isinstance(p.s.sync, PeerSync) and p.s.sync.inc.state is InState.RECONCILING
    p.feed(Error(transaction_id=ask.transaction_id, status=ErrorCode.RATE_LIMITED,
                 offending_type=int(MessageType.DIGEST_REQUEST)), T0 + 50)
    assert p.sent() == [] and p.events() == [] and p.s.sync.inc.state is InState.READY
    p.hold_until(T0 + 50 + HOLD)


@row(S.ESTABLISHED, In.KEEPALIVE_DUE)
def _send_keepalive(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    assert p.s.get_timer() == T0 + KEEP
    p.s.handle_timer(T0 + KEEP)
    assert [type(m) for m in p.sent()] == [Keepalive]
    assert p.s.state is S.ESTABLISHED and p.s.get_timer() == T0 + 2 * KEEP


@row(S.ESTABLISHED, In.SYNC_REFUSED)
def _close_refused(state: PeerState, tmp_path: Path) -> None:
    """A slice of an UPDATE applied on the timer goes beyond the peer's record limit
    (Section 10.7): NOTIFY MAX_RECORDS_EXCEEDED, closed."""
    p = rig(state, tmp_path, max_peer_records=4)
    p.feed(Update(sequence=0, advertise=tuple(ADS)))
    assert len(p.node.core) < 4 and p.s.get_timer() == T1  # the next slice
    for _ in range(5):  # a slice takes a record or two
        if p.s.state is not S.ESTABLISHED or p.s.get_timer() != T1:
            break
        p.events()
        p.s.handle_timer(T1)
    [n] = p.sent()
    assert isinstance(n, Notify) and n.status is ErrorCode.MAX_RECORDS_EXCEEDED
    p.closed(ErrorCode.MAX_RECORDS_EXCEEDED, by_peer=False)
    assert len(p.node.core) == 4


def _probing(tmp_path: Path) -> Peer:
    """An established session with a peer announcing OAM, watched since T1."""
    p = rig(S.ESTABLISHED, tmp_path, caps=int(GatewayCaps.OAM))
    p.s.watch(T1)
    return p


IDLE_PROBE = KEEP * timer("PROBE_IDLE_FRACTION")
LOST_PROBE = KEEP * timer("PROBE_TIMEOUT_FRACTION")


@row(S.ESTABLISHED, In.WATCH)
def _start_probing(state: PeerState, tmp_path: Path) -> None:
    p = _probing(tmp_path)
    assert p.s.state is S.ESTABLISHED and p.s.get_timer() == T1 + IDLE_PROBE
    assert p.sent() == []


@row(S.ESTABLISHED, In.PROBE_DUE)
def _send_probe(state: PeerState, tmp_path: Path) -> None:
    p = _probing(tmp_path)
    p.s.handle_timer(T1 + IDLE_PROBE)
    [probe] = p.sent()
    assert isinstance(probe, EchoRequest) and probe.sequence == 1
    assert p.s.state is S.ESTABLISHED and p.s.get_timer() == T1 + IDLE_PROBE + LOST_PROBE


@row(S.ESTABLISHED, In.PROBE_IDLE)
def _stop_probing(state: PeerState, tmp_path: Path) -> None:
    p = _probing(tmp_path)
    p.waiting[0] = False
    p.s.handle_timer(T1 + IDLE_PROBE)
    assert p.sent() == [] and p.s.state is S.ESTABLISHED
    assert p.s.get_timer() == T0 + KEEP  # the keepalive timer only


@row(S.ESTABLISHED, In.PROBE_LOST)
def _probe_expire(state: PeerState, tmp_path: Path) -> None:
    p = _probing(tmp_path)
    p.s.handle_timer(T1 + IDLE_PROBE)
    p.sent()
    p.s.handle_timer(T1 + IDLE_PROBE + LOST_PROBE)
    [n] = p.sent()
    assert isinstance(n, Notify) and n.status is ErrorCode.HOLD_TIMER_EXPIRED
    assert n.diagnostic is not None and "probe" in n.diagnostic
    p.closed(ErrorCode.HOLD_TIMER_EXPIRED, by_peer=False)


@row((S.OPEN_CONFIRM, S.ESTABLISHED), In.CERTIFICATE)
def _keep_certificate(state: PeerState, tmp_path: Path) -> None:
    """Taken in OPEN_CONFIRM too: the peer may be established before us (6.10)."""
    p = rig(state, tmp_path, accept_certificate=True)
    der = gateway_certificate()
    p.feed(Certificate(transaction_id=77, certificate=der))
    assert p.sent() == [CertificateAck(transaction_id=77, status=ErrorCode.SUCCESS,
                                       thumbprint=thumbprint(der))]
    assert p.node.certificates.get("peer", thumbprint(der)) == der
    assert p.s.state is state


@row((S.OPEN_CONFIRM, S.ESTABLISHED), In.CERTIFICATE_REFUSED)
def _refuse_certificate(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    der = gateway_certificate()
    p.feed(Certificate(transaction_id=77, certificate=der))
    [ack] = p.sent()
    assert isinstance(ack, CertificateAck) and ack.transaction_id == 77
    assert (ack.status, ack.diagnostic) == (UNTRUSTED.code, UNTRUSTED.diagnostic)
    assert ack.thumbprint is None
    assert p.node.certificates.get("peer", thumbprint(der)) is None
    assert p.s.state is state


def _offered(p: Peer) -> CertificateAck:
    """An established session offered the gateway certificate: the SUCCESS it expects."""
    der = gateway_certificate()
    p.s.offer(der, T1)
    [cert] = p.sent()
    assert isinstance(cert, Certificate) and cert.certificate == der
    return CertificateAck(transaction_id=cert.transaction_id, status=ErrorCode.SUCCESS,
                          thumbprint=thumbprint(der))


@row(S.ESTABLISHED, In.OFFER)
def _send_certificate(state: PeerState, tmp_path: Path) -> None:
    """Sent once per session (a second offer sends nothing)."""
    p = rig(state, tmp_path)
    ack = _offered(p)
    p.s.offer(gateway_certificate(), T1)
    assert p.sent() == [] and p.s.awaits(ack) and p.s.state is S.ESTABLISHED


@row(S.ESTABLISHED, In.OFFER_ACCEPTED)
def _offer_held(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    ack = _offered(p)
    p.feed(ack, T1 + 5)
    assert p.sent() == [] and not p.s.awaits(ack) and p.s.offered(gateway_certificate())
    assert p.s.state is S.ESTABLISHED


@row(S.ESTABLISHED, In.OFFER_REFUSED)
def _forget_offer(state: PeerState, tmp_path: Path) -> None:
    """Forgotten: offered again by the next request that needs it."""
    p = rig(state, tmp_path)
    ack = _offered(p)
    p.feed(CertificateAck(transaction_id=ack.transaction_id,
                          status=ErrorCode.UNTRUSTED_CERTIFICATE), T1 + 5)
    assert p.sent() == [] and not p.s.offered(gateway_certificate())
    assert p.s.state is S.ESTABLISHED
    _offered(p)


# --- every state of a session ----------------------------------------------------------------
ACTIVE = (S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED)


def _opened_by(state: PeerState) -> bytes | None:
    """The peer's gateway id as the session knows it in ``state``."""
    return None if state is S.OPEN_SENT else PEER


@row(ACTIVE, In.NOTIFY)
def _peer_closed(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.feed(Notify(transaction_id=5, status=ErrorCode.CEASE))
    assert p.sent() == []
    p.closed(ErrorCode.CEASE, by_peer=True, peer=_opened_by(state))


@row(ACTIVE, In.HOLD_EXPIRED)
def _expire(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.s.handle_timer(T0 + HOLD)
    n = p.sent()[-1]
    assert isinstance(n, Notify) and n.status is ErrorCode.HOLD_TIMER_EXPIRED
    assert n.diagnostic == f"nothing received for {HOLD} s"
    p.closed(ErrorCode.HOLD_TIMER_EXPIRED, by_peer=False, peer=_opened_by(state))


@row(ACTIVE, In.STOP)
def _cease(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    p.s.close(T1)
    [n] = p.sent()
    assert isinstance(n, Notify) and n.status is ErrorCode.CEASE
    p.closed(ErrorCode.CEASE, by_peer=False, peer=_opened_by(state))


@row(ACTIVE, In.UNEXPECTED)
def _close_unexpected(state: PeerState, tmp_path: Path) -> None:
    p = rig(state, tmp_path)
    with pytest.raises(ProtocolError) as err:
        p.feed(EchoRequest(transaction_id=5, sequence=1, timestamp=0))
    assert (err.value.code, err.value.message_type) == (ErrorCode.UNEXPECTED_MESSAGE,
                                                        MessageType.ECHO_REQUEST)
    [n] = p.sent()
    assert isinstance(n, Notify) and n.status is ErrorCode.UNEXPECTED_MESSAGE
    p.closed(ErrorCode.UNEXPECTED_MESSAGE, by_peer=False, peer=_opened_by(state))


@pytest.mark.parametrize("msg", [
    Update(sequence=0), Digest(sequence=0, summary=summarize([])),
    SyncRequest(agent_ids=()), SyncAck(sequence=0), DigestRequest(node=ROOT),
], ids=lambda m: type(m).__name__)
def test_every_sync_message_establishes_in_open_confirm(msg: Message, tmp_path: Path) -> None:
    """Section 6.4.2: each sync message may overtake the peer's KEEPALIVE (QUIC streams
    are not ordered) and establishes the session as the KEEPALIVE would, no NOTIFY."""
    p = rig(S.OPEN_CONFIRM, tmp_path)
    p.feed(msg)
    assert p.s.state is S.ESTABLISHED
    assert not any(isinstance(m, Notify) for m in p.sent())
    assert p.events()[0] == SessionEstablished("peer", PEER, "b.example", HOLD, KEEP)


test_row, test_every_row_has_a_case = row_tests(CASES)
