"""Signed unlock commands end to end: real Mosquitto, the real agent, mock pins."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from smartlocker.protocol import REPLAY_WINDOW, Channel, generate_private_key
from tests.edge.conftest import DOOR_PINS, lock_pulses, lock_rises


def open_door(factory, compartment: str) -> None:
    factory.pin(DOOR_PINS[compartment]).drive_high()


def close_door(factory, compartment: str) -> None:
    factory.pin(DOOR_PINS[compartment]).drive_low()


@pytest.fixture
def rig(mqtt_broker, make_config, agents, make_cloud, mock_factory):
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agent = agents(make_config(mqtt_broker.url))
    cloud.wait_event("boot")
    cloud.wait(lambda: any(s.online for s, _ in cloud.statuses), what="birth")
    return cloud, agent, mock_factory


def test_unlock_pulses_once_and_acks_opened(rig) -> None:
    cloud, _agent, factory = rig
    command = cloud.unlock_command("a1")
    cloud.send(command)
    (unlocked,) = cloud.wait_event("unlocked", command_id=command.id)
    assert unlocked.source == "command"
    assert unlocked.pulse_ms == 40
    deadline = time.monotonic() + 5
    while lock_rises(factory, "a1") < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    open_door(factory, "a1")
    (ack,) = cloud.wait_ack(command.id)
    assert ack.outcome == "opened"
    (opened,) = cloud.wait_event("door_opened", compartment="a1")
    assert opened.granted is True
    close_door(factory, "a1")
    cloud.wait_event("door_closed", compartment="a1")
    assert lock_rises(factory, "a1") == 1
    assert all(d <= 0.060 + 0.25 for d in lock_pulses(factory, "a1"))


def test_unlock_not_opened_in_time_is_reported(rig) -> None:
    cloud, _agent, factory = rig
    command = cloud.unlock_command("a2")
    cloud.send(command)
    (ack,) = cloud.wait_ack(command.id, timeout=10)
    assert ack.outcome == "not_opened"
    (alarm,) = cloud.wait_event("alarm", kind="unlock_failed", compartment="a2")
    assert alarm.active is True
    assert lock_rises(factory, "a2") == 1


def test_duplicate_delivery_pulses_once_and_repeats_the_stored_ack(rig) -> None:
    cloud, _agent, factory = rig
    command = cloud.unlock_command("a1")
    cloud.send(command)
    cloud.wait_event("unlocked", command_id=command.id)
    open_door(factory, "a1")
    cloud.wait_ack(command.id)
    cloud.send(command)
    acks = cloud.wait_ack(command.id, count=2)
    assert [a.outcome for a in acks] == ["opened", "opened"]
    assert acks[0].id == acks[1].id  # the stored ack itself, not a new one
    assert lock_rises(factory, "a1") == 1


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("forged", "bad_signature"),
        ("tampered", "bad_signature"),
        ("wrong_cabinet", "wrong_cabinet"),
        ("expired", "expired"),
        ("future", "expired"),
        ("retained", "retained"),
        ("unknown_compartment", "unknown_compartment"),
    ],
)
def test_bad_commands_never_pulse(rig, variant, reason, caplog) -> None:
    cloud, _agent, factory = rig
    caplog.set_level(logging.WARNING, logger="smartlocker.edge_agent")
    now = datetime.now(UTC)
    retain = False
    if variant == "forged":
        command = cloud.unlock_command("a1", key=generate_private_key())
    elif variant == "tampered":
        signed = cloud.unlock_command("a1")
        command = signed.model_copy(update={"compartment": "a2"})
    elif variant == "wrong_cabinet":
        command = cloud.unlock_command("a1", cabinet="cab-b")
    elif variant == "expired":
        command = cloud.unlock_command("a1", ts=now - timedelta(minutes=5), expires_in=60)
    elif variant == "future":
        command = cloud.unlock_command("a1", ts=now + timedelta(hours=1), expires_in=60)
    elif variant == "retained":
        command = cloud.unlock_command("a1")
        retain = True
    else:
        command = cloud.unlock_command("zz9")
    cloud.send(command, retain=retain)
    (ack,) = cloud.wait_ack(command.id)
    if retain:  # clear it from the broker again
        cloud.publish(Channel.COMMANDS, b"", retain=True)
    assert ack.outcome == "rejected"
    assert ack.reason == reason
    assert any(reason in r.getMessage() for r in caplog.records)
    # A valid command afterwards still works: the agent is alive and nothing pulsed before.
    assert sum(lock_rises(factory, c) for c in ("a1", "a2", "a3")) == 0
    good = cloud.unlock_command("a3")
    cloud.send(good)
    cloud.wait_event("unlocked", command_id=good.id)
    assert lock_rises(factory, "a1") == 0
    assert lock_rises(factory, "a2") == 0


def _opens(cloud, factory, command) -> None:
    """An accepted command: one more pulse, the door opens (ack ``opened``) and closes."""
    compartment = command.compartment
    closed = sum(e.compartment == compartment for e in cloud.events_of("door_closed"))
    cloud.wait_event("unlocked", command_id=command.id)
    rises = sum(e.compartment == compartment for e in cloud.events_of("unlocked"))
    cloud.wait(lambda: lock_rises(factory, compartment) >= rises, what=f"{compartment} pulse")
    open_door(factory, compartment)
    (ack,) = cloud.wait_ack(command.id)
    assert (ack.outcome, ack.reason) == ("opened", None)
    close_door(factory, compartment)
    cloud.wait_event("door_closed", count=closed + 1, compartment=compartment)


def _refused(cloud, command, reason: str = "replayed") -> None:
    cloud.send(command)
    (ack,) = cloud.wait_ack(command.id)
    assert (ack.outcome, ack.reason) == ("rejected", reason), command.counter


def test_counters_out_of_order_within_the_window_are_each_accepted_once(rig) -> None:
    """Concurrent API requests publish counters out of order: each counter inside the
    window is accepted once; the same counter under another id, or one at or below the
    high-water mark minus the window, is a replay."""
    cloud, _agent, factory = rig
    top = REPLAY_WINDOW + 100
    accepted = [(top, "a1"), (top - 2, "a2"), (top - REPLAY_WINDOW + 1, "a3"), (top - 1, "a1")]
    for counter, compartment in accepted:
        command = cloud.unlock_command(compartment, counter=counter)
        cloud.send(command)
        _opens(cloud, factory, command)
    for counter, compartment in accepted:  # signed anew: another id, the same counter
        _refused(cloud, cloud.unlock_command(compartment, counter=counter))
    _refused(cloud, cloud.unlock_command("a2", counter=top - REPLAY_WINDOW))
    _refused(cloud, cloud.unlock_command("a2", counter=1))
    later = cloud.unlock_command("a2", counter=top + 1)
    cloud.send(later)
    _opens(cloud, factory, later)
    _refused(cloud, cloud.unlock_command("a3", counter=top - REPLAY_WINDOW + 1))  # now below
    assert [lock_rises(factory, c) for c in ("a1", "a2", "a3")] == [2, 2, 1]
    assert len(cloud.events_of("unlocked")) == 5


def test_seen_counters_are_refused_also_after_restart(
    mqtt_broker, make_config, agents, make_cloud, mock_factory
) -> None:
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    config = make_config(mqtt_broker.url)
    agent = agents(config)
    cloud.wait_event("boot")
    top = REPLAY_WINDOW + 10
    first = cloud.unlock_command("a1", counter=top)
    cloud.send(first)
    _opens(cloud, mock_factory, first)
    behind = cloud.unlock_command("a2", counter=top - 5)
    cloud.send(behind)
    _opens(cloud, mock_factory, behind)
    _refused(cloud, cloud.unlock_command("a2", counter=top - 5))
    agent.stop("restart")
    agents(config)
    cloud.wait_event("boot", count=2)
    # Accepted before the restart, sent again with a new id after it: refused.
    _refused(cloud, cloud.unlock_command("a3", counter=top - 5))
    _refused(cloud, cloud.unlock_command("a3", counter=top))
    _refused(cloud, cloud.unlock_command("a3", counter=top - REPLAY_WINDOW))
    # A counter of the window never seen still passes, once.
    late = cloud.unlock_command("a3", counter=top - 3)
    cloud.send(late)
    _opens(cloud, mock_factory, late)
    _refused(cloud, cloud.unlock_command("a1", counter=top - 3))
    # The executed one delivered again after the restart: its stored ack, no pulse.
    cloud.send(first)
    acks = cloud.wait_ack(first.id, count=2)
    assert acks[-1].outcome == acks[0].outcome
    assert [lock_rises(mock_factory, c) for c in ("a1", "a2", "a3")] == [1, 1, 1]


MALFORMED = [
    b"",
    b"null",
    b"{",
    b"[]",
    b'{"v": 2}',
    b"\xff\xfe\x00",
    b'{"v":1,"id":"x1","type":"unlock","cabinet":"cab-a","compartment":"a1"}',
    b'{"v":1,"id":"r1","type":"receipt","cabinet":"cab-a","upto_seq":-1,"ts":"2020"}',
    b'{"v":1,"id":"d1","type":"desired","cabinet":"cab-a","version":"1"}',
    b"9" * 5000,
    b'{"a":' * 5000,
    b'{"v":1,"id":"r2","type":"receipt","cabinet":"cab-b","upto_seq":99999,'
    b'"ts":"2024-01-01T00:00:00Z"}',
]


def test_malformed_payloads_on_every_subscribed_topic_never_crash(rig) -> None:
    cloud, agent, factory = rig
    for channel in (Channel.COMMANDS, Channel.DESIRED, Channel.RECEIPTS):
        for payload in MALFORMED:
            cloud.publish(channel, payload)
    # The readable id of a malformed command gets a rejected ack.
    (ack,) = cloud.wait_ack("x1")
    assert (ack.outcome, ack.reason) == ("rejected", "malformed")
    good = cloud.unlock_command("a1")
    cloud.send(good)
    cloud.wait_event("unlocked", command_id=good.id)
    assert agent._worker is not None
    assert agent._worker.is_alive()
    # `unlocked` is published before the pulse (by design): give the pulse its moment.
    deadline = time.monotonic() + 5
    while lock_rises(factory, "a1") < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert lock_rises(factory, "a1") == 1
    # A foreign receipt with a huge seq dropped nothing: the outbox still has its events.
    assert cloud.gaps == []


def test_a_retained_command_waiting_on_the_broker_is_refused_at_start(
    fresh_broker, make_config, agents, make_cloud, mock_factory
) -> None:
    cloud = make_cloud(fresh_broker.host, fresh_broker.port)
    command = cloud.unlock_command("a1")
    cloud.send(command, retain=True)
    agents(make_config(fresh_broker.url))
    (ack,) = cloud.wait_ack(command.id)
    assert (ack.outcome, ack.reason) == ("rejected", "retained")
    cloud.wait_event("boot")
    assert lock_rises(mock_factory, "a1") == 0


def test_door_changes_refresh_the_reported_snapshot_at_most_once_per_interval(
    mqtt_broker, make_config, agents, make_cloud, mock_factory
) -> None:
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agents(make_config(mqtt_broker.url, reported_interval_s=1.0))
    cloud.wait(lambda: cloud.reported, what="the first snapshot")
    time.sleep(1.2)  # the first snapshot's interval is over
    before = len(cloud.reported)

    def seen(kind: str) -> int:
        return sum(1 for e in list(cloud.events) if e.type == kind)

    for i in range(1, 4):  # three openings within well under a second
        # Wait for that kind of event by its count: a forced opening also raises an
        # alarm event, which may come before or after the door's.
        open_door(mock_factory, "a1")
        cloud.wait(lambda i=i: seen("door_opened") >= i, what=f"door_opened #{i}")
        close_door(mock_factory, "a1")
        cloud.wait(lambda i=i: seen("door_closed") >= i, what=f"door_closed #{i}")
    opened = [e for e in cloud.events if e.type == "door_opened"]
    closed = [e for e in cloud.events if e.type == "door_closed"]
    assert len(opened) == 3
    assert len(closed) == 3
    # every change is an event; the snapshot went once at the first change, and the
    # last state (closed) follows within one interval
    cloud.wait(
        lambda: (
            len(cloud.reported) >= before + 2
            and cloud.reported[-1].compartments[0].door == "closed"
        ),
        timeout=3,
        what="the trailing snapshot",
    )
    time.sleep(0.3)
    assert len(cloud.reported) == before + 2


def test_a_door_edge_is_recorded_by_the_worker_and_its_ack_leaves_before_unlocked(
    mqtt_broker, make_config, agents, make_cloud, mock_factory, monkeypatch
) -> None:
    """gpiozero's thread only queues a door edge for the worker, stamped with its time;
    an edge queued while the worker handles the command that pulsed the lock is recorded
    before the worker publishes: the ack of a door that opens at once leaves before the
    `unlocked` event, not after it."""
    import json
    import threading

    from gpiozero.pins.mock import MockPin

    import smartlocker.edge_agent.agent as agent_module
    from smartlocker.edge_agent.cabinet import Cabinet
    from smartlocker.edge_agent.link import Link
    from tests.edge.conftest import LOCK_PINS

    # No tick meanwhile: its poll of the sensors would record the opening, too.
    monkeypatch.setattr(agent_module, "TICK_S", 30.0)
    door = mock_factory.pin(DOOR_PINS["a1"])
    queued = threading.Event()
    recorded_on: list[str] = []

    class OpeningLock(MockPin):
        """Energised: another thread opens the door; the pulse returns once that
        thread has queued the edge (the worker is still handling the command)."""

        agent = None

        def _change_state(self, value):
            changed = super()._change_state(value)
            if changed and value and self.agent is not None:
                sink = self.agent.cabinet.door_edges

                def queue(compartment: str, is_open: bool, at: float) -> None:
                    sink(compartment, is_open, at)
                    queued.set()

                self.agent.cabinet.door_edges = queue
                threading.Thread(target=door.drive_high, daemon=True).start()
                queued.wait(5)
            return changed

    mock_factory.pin(LOCK_PINS["a1"], pin_class=OpeningLock)
    published: list[tuple[str, dict]] = []
    original_publish = Link._publish
    original_record = Cabinet.record_door

    def recording(self, channel, payload):
        published.append((channel.value, json.loads(payload)))
        return original_publish(self, channel, payload)

    def record_door(self, compartment, is_open, at):
        recorded_on.append(threading.current_thread().name)
        return original_record(self, compartment, is_open, at)

    monkeypatch.setattr(Link, "_publish", recording)
    monkeypatch.setattr(Cabinet, "record_door", record_door)
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agent = agents(make_config(mqtt_broker.url))
    OpeningLock.agent = agent
    cloud.wait_event("boot")
    cloud.wait(lambda: any(s.online for s, _ in cloud.statuses), what="birth")
    command = cloud.unlock_command("a1")
    cloud.send(command)
    (ack,) = cloud.wait_ack(command.id)
    assert queued.is_set()
    assert ack.outcome == "opened"
    (opened,) = cloud.wait_event("door_opened", compartment="a1")
    assert opened.granted is True
    assert recorded_on == ["agent-worker"]
    assert not [e for e in cloud.events_of("alarm") if e.kind == "forced_open"]
    order = [
        channel
        for channel, body in published
        if body.get("command_id") == command.id and channel in ("acks", "events")
    ]
    assert order == ["acks", "events"]  # the ack, then the `unlocked` event
    close_door(mock_factory, "a1")


def test_the_worker_applies_a_bounded_burst_and_a_failing_delivery_costs_no_other(
    make_config, caplog
) -> None:
    """What waits in the inbox is applied before publishing, at most ``BURST`` more
    than the first; a delivery that fails is logged and the next ones still apply."""
    import logging

    from smartlocker.edge_agent import Agent
    from smartlocker.edge_agent.agent import BURST

    agent = Agent(make_config("mqtt://127.0.0.1:1"))  # never started: no link
    applied: list[int] = []

    def handle(item):
        if item[1] == 3:
            raise RuntimeError("a bug in one delivery")
        applied.append(item[1])

    agent._handle = handle  # type: ignore[method-assign]
    for n in range(1, BURST + 10):
        agent._inbox.put(("message", n))
    with caplog.at_level(logging.ERROR, logger="smartlocker.edge_agent.agent"):
        agent._handle_burst(("message", 0))
    assert applied == [n for n in range(BURST + 1) if n != 3]
    assert "'message' failed" in caplog.text
    assert "a bug in one delivery" in caplog.text
    left = []
    while (item := agent._take()) is not None:
        left.append(item[1])
    assert left == list(range(BURST + 1, BURST + 10))
