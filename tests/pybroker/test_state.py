"""Sessions, routing and retained messages, with lists standing in for sockets."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smartlocker.embedded.pybroker.packets import (
    Prop,
    Publish,
    Subscription,
)
from smartlocker.embedded.pybroker.state import BrokerState, Message


def _online(
    state: BrokerState, client_id: str, *, receive_maximum: int = 65535, clean: bool = True
):
    session, present = state.open_session(client_id, clean_start=clean, now=0.0)
    sent: list[Publish] = []
    session.attach(sent.append, receive_maximum, None)
    return session, sent, present


def test_qos1_is_queued_while_away_and_redelivered_with_dup():
    state = BrokerState()
    session, sent, _ = _online(state, "cab")
    session.expiry_interval = 3600
    state.subscribe(session, Subscription("lockers/cab/commands", 1))
    state.publish(Message("lockers/cab/commands", b"1", 1, False))
    assert [p.payload for p in sent] == [b"1"]
    session.detach(now=1.0)
    state.publish(Message("lockers/cab/commands", b"2", 1, False))
    state.publish(Message("lockers/cab/commands", b"x", 0, False))  # QoS 0: dropped while away
    again, sent2, present = _online(state, "cab", clean=False)
    assert present
    assert again is session
    assert [(p.payload, p.dup) for p in sent2] == [(b"1", True), (b"2", False)]


def test_clean_start_and_expiry_forget_the_session():
    state = BrokerState()
    session, _, _ = _online(state, "cab")
    session.expiry_interval = 10
    state.subscribe(session, Subscription("t", 1))
    session.detach(now=0.0)
    assert state.expire(now=5.0) == []
    assert state.expire(now=10.0) == ["cab"]
    assert state.publish(Message("t", b"", 1, False)) == 0
    _, _, present = _online(state, "cab", clean=False)
    assert not present


def test_another_user_with_the_same_client_id_gets_a_fresh_session():
    state = BrokerState()
    session, present = state.open_session("cab-b", clean_start=False, now=0.0, username="cab-b")
    session.expiry_interval = 3600
    state.subscribe(session, Subscription("lockers/cab-b/commands", 1))
    state.publish(Message("lockers/cab-b/commands", b"unlock", 1, False))  # queued
    intruder, present = state.open_session("cab-b", clean_start=False, now=1.0, username="cab-a")
    assert not present
    assert intruder is not session
    assert not intruder.queue
    assert not intruder.subscriptions


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_queued_message_past_its_expiry_is_dropped_not_delivered():
    clock = FakeClock()
    state = BrokerState(clock=clock)
    session, _, _ = _online(state, "cab")
    session.expiry_interval = 3600
    state.subscribe(session, Subscription("lockers/cab/commands", 1))
    session.detach(now=0.0)
    expiring = {Prop.MESSAGE_EXPIRY_INTERVAL: 10}
    state.publish(Message("lockers/cab/commands", b"late", 1, False, expiring))
    state.publish(Message("lockers/cab/commands", b"keeps", 1, False))
    state.publish(Message("lockers/cab/commands", b"in-time", 1, False, {**expiring}))
    clock.now = 10.0
    again, sent, present = _online(state, "cab", clean=False)
    assert present
    # Both expiring messages were published at 0 with 10 s to live: at 10 s both are due.
    assert [p.payload for p in sent] == [b"keeps"]
    assert again.expired_messages == 2


def test_a_delivered_message_carries_the_time_it_has_left():
    clock = FakeClock()
    state = BrokerState(clock=clock)
    session, _, _ = _online(state, "cab")
    session.expiry_interval = 3600
    state.subscribe(session, Subscription("t", 1))
    session.detach(now=0.0)
    state.publish(Message("t", b"m", 1, False, {Prop.MESSAGE_EXPIRY_INTERVAL: 30}))
    clock.now = 12.5
    _, sent, _ = _online(state, "cab", clean=False)
    assert [p.properties[Prop.MESSAGE_EXPIRY_INTERVAL] for p in sent] == [18]


def test_an_expired_retained_message_is_forgotten():
    clock = FakeClock()
    state = BrokerState(clock=clock)
    props = {Prop.MESSAGE_EXPIRY_INTERVAL: 5}
    state.publish(Message("lockers/cab/desired", b"v1", 1, True, props))
    early, _, _ = _online(state, "early")
    got = state.subscribe(early, Subscription("lockers/+/desired", 1))
    assert [(p.payload, p.properties[Prop.MESSAGE_EXPIRY_INTERVAL]) for p in got] == [(b"v1", 5)]
    clock.now = 5.0
    late, _, _ = _online(state, "late")
    assert state.subscribe(late, Subscription("lockers/+/desired", 1)) == []
    assert "lockers/cab/desired" not in state.retained


def test_receive_maximum_bounds_what_is_in_flight():
    state = BrokerState()
    session, sent, _ = _online(state, "ingest", receive_maximum=2)
    state.subscribe(session, Subscription("#", 1))
    for i in range(5):
        state.publish(Message("a", str(i).encode(), 1, False))
    assert len(sent) == 2
    assert session.acknowledge(sent[0].packet_id or 0)
    assert len(sent) == 3
    assert not session.acknowledge(999)


def test_shared_subscription_round_robin_prefers_connected_members():
    state = BrokerState()
    a, sent_a, _ = _online(state, "a")
    b, sent_b, _ = _online(state, "b")
    c, sent_c, _ = _online(state, "c")
    for s in (a, b, c):
        s.expiry_interval = 60
        state.subscribe(s, Subscription("$share/ingest/lockers/+/events", 1))
    c.detach(now=0.0)
    for i in range(6):
        assert state.publish(Message(f"lockers/cab-{i}/events", b"e", 1, False)) == 1
    assert (len(sent_a), len(sent_b), len(sent_c)) == (3, 3, 0)


def test_retained_store_delete_and_retain_handling():
    state = BrokerState()
    state.publish(Message("lockers/a/status", b"on", 1, True))
    state.publish(Message("lockers/b/status", b"on", 1, True))
    state.publish(Message("lockers/b/status", b"", 1, True))  # deletes
    session, _, _ = _online(state, "x")
    got = state.subscribe(session, Subscription("lockers/+/status", 1))
    assert [(p.topic, p.retain) for p in got] == [("lockers/a/status", True)]
    assert state.subscribe(session, Subscription("lockers/+/status", 1, retain_handling=1)) == []
    assert state.subscribe(session, Subscription("lockers/#", 1, retain_handling=2)) == []
    assert state.subscribe(session, Subscription("$share/g/lockers/#", 1)) == []


def test_one_copy_per_session_with_every_subscription_identifier_and_options():
    state = BrokerState()
    session, sent, _ = _online(state, "x")
    state.subscribe(session, Subscription("a/+", 0), identifier=1)
    state.subscribe(session, Subscription("a/#", 1, retain_as_published=True), identifier=2)
    state.publish(Message("a/b", b"m", 1, True))
    (p,) = sent
    assert (p.qos, p.retain, sorted(p.properties[Prop.SUBSCRIPTION_IDENTIFIER])) == (
        1,
        True,
        [1, 2],
    )
    state.subscribe(session, Subscription("n", 1, no_local=True))
    state.publish(Message("n", b"mine", 1, False, sender_id="x"))
    assert len(sent) == 1


def test_read_check_filters_delivery_and_retained():
    state = BrokerState(lambda user, _cid, topic: topic.startswith(f"lockers/{user}/"))
    state.publish(Message("lockers/b/desired", b"for b", 1, True))
    session, sent, _ = _online(state, "a")
    session.username = "a"
    assert state.subscribe(session, Subscription("lockers/#", 1)) == []
    assert state.publish(Message("lockers/b/commands", b"no", 1, False)) == 1  # matched, filtered
    state.publish(Message("lockers/a/commands", b"yes", 1, False))
    assert [p.payload for p in sent] == [b"yes"]


class SessionMachine(RuleBasedStateMachine):
    """A persistent QoS 1 subscriber that comes and goes: nothing lost, order kept,
    never more in flight than its Receive Maximum, in-flight redelivered with DUP."""

    def __init__(self) -> None:
        super().__init__()
        self.state = BrokerState()
        self.session, self.sent, _ = _online(self.state, "c", receive_maximum=3)
        self.session.expiry_interval = 3600
        self.state.subscribe(self.session, Subscription("t", 1))
        self.published = 0
        self.acked: list[int] = []
        self.unacked: list[Publish] = []

    def _collect(self) -> None:
        for p in self.sent:
            if p.dup:
                assert any(
                    u.packet_id == p.packet_id and u.payload == p.payload for u in self.unacked
                )
            else:
                self.unacked.append(p)
        self.sent.clear()

    @rule()
    def publish(self) -> None:
        self.state.publish(Message("t", str(self.published).encode(), 1, False))
        self.published += 1
        self._collect()

    @precondition(lambda self: self.session.online and self.unacked)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        p = self.unacked.pop(0) if data.draw(st.booleans()) else self.unacked.pop()
        assert self.session.acknowledge(p.packet_id or 0)
        self.acked.append(int(p.payload))
        self._collect()

    @precondition(lambda self: self.session.online)
    @rule()
    def go_away(self) -> None:
        self.session.detach(now=0.0)

    @precondition(lambda self: not self.session.online)
    @rule()
    def come_back(self) -> None:
        session, present = self.state.open_session("c", clean_start=False, now=1.0)
        assert present
        assert session is self.session
        self.sent = []
        session.attach(self.sent.append, 3, None)
        self._collect()

    @invariant()
    def bounded_in_flight_and_nothing_lost(self) -> None:
        assert len(self.session.inflight) <= 3
        pending = [int(q.publish.payload) for q in self.session.queue]
        inflight = [int(p.payload) for p in self.session.inflight.values()]
        assert sorted(self.acked + inflight + pending) == list(range(self.published))
        assert pending == sorted(pending)
        if pending and inflight:
            assert max(inflight) < min(pending)


TestSessionMachine = SessionMachine.TestCase
