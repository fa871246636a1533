"""The MQTT link: TLS and passwords, heartbeat telemetry, resending without receipts."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from gpiozero.pins.mock import MockFactory

from smartlocker.edge_agent import Cabinet, Store, parse_config
from smartlocker.edge_agent.link import Link
from smartlocker.protocol import Channel, Receipt, TopicScheme, encode, load_public_key
from tests.edge.conftest import DOOR_PINS, config_dict


@contextlib.contextmanager
def _link_alone(tmp_path: Any, public_key_file: Any, mqtt_url: str) -> Iterator[Link]:
    """A cabinet's link on mock pins with no agent around it, driven by the test."""
    config = parse_config(config_dict(tmp_path / "data", public_key_file, mqtt_url))
    store = Store(config.database_path)
    factory = MockFactory()
    cabinet = Cabinet(
        config, store, public_key=load_public_key(public_key_file), pin_factory=factory
    )
    link = Link(config, cabinet, deliver=lambda _item: None)
    try:
        yield link
    finally:
        link.stop(timeout=0.1)
        cabinet.close()
        store.close()
        factory.reset()


def test_tls_credentials_acl_and_commands(secure_broker, make_config, agents, make_cloud):
    password = secure_broker.passwords["cab-a"]
    config = make_config(
        f"mqtts://cab-a:{password}@127.0.0.1:{secure_broker.tls_port}",
        mqtt_ca_file=str(secure_broker.ca),
        cabinet="cab-a",
    )
    cloud = make_cloud(
        secure_broker.host,
        secure_broker.port,
        cabinet="cab-a",
        username="cloud",
        password=secure_broker.passwords["cloud"],
    )
    agent = agents(config)
    cloud.wait_event("boot")
    cloud.wait(lambda: any(s.online for s, _ in cloud.statuses), what="birth")
    command = cloud.unlock_command("a1")
    cloud.send(command)
    cloud.wait_event("unlocked", command_id=command.id)
    assert agent.link is not None
    assert agent.link.connected


def test_wrong_password_keeps_retrying_and_serves_offline(
    secure_broker, make_config, agents, mock_factory
):
    config = make_config(
        f"mqtts://cab-a:wrong@127.0.0.1:{secure_broker.tls_port}",
        mqtt_ca_file=str(secure_broker.ca),
        cabinet="cab-a",
    )
    agent = agents(config)
    assert agent.link is not None
    assert not agent.link.connected
    assert agent.cabinet is not None
    # Events still go to the outbox (the worker records the edge between attempts).
    mock_factory.pin(DOOR_PINS["a1"]).drive_high()
    deadline = time.monotonic() + 5.0
    while agent.cabinet.call(agent.store.outbox_depth) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.cabinet.call(agent.store.outbox_depth) >= 3  # boot, door_opened, alarm


def test_telemetry_heartbeat(tmp_path, mqtt_broker, make_config, agents, make_cloud):
    cpu = tmp_path / "cpu_temp"
    cpu.write_text("48123\n")
    probe = tmp_path / "w1_slave"
    probe.write_text("4b 01 4b 46 7f ff 05 10 e1 : crc=e1 YES\n4b 01 4b 46 7f ff 05 10 e1 t=4500\n")
    base = make_config(mqtt_broker.url)
    compartments = [c.model_dump() for c in base.compartments]
    compartments[0]["temperature_path"] = str(probe)
    compartments[1]["temperature_path"] = str(tmp_path / "missing")
    config = make_config(
        mqtt_broker.url,
        telemetry_interval_s=0.2,
        cpu_temp_path=str(cpu),
        compartments=compartments,
    )
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agents(config)
    cloud.wait(lambda: len(cloud.telemetry) >= 2, what="two heartbeats")
    beat = cloud.telemetry[-1]
    assert beat.cpu_temp_c == 48.123
    assert beat.compartment_temps == {"a1": 4.5}
    assert beat.uptime_s > 0
    assert beat.outbox_depth >= 0


def test_unreceipted_events_are_sent_again_in_order(
    mqtt_broker, make_config, agents, make_cloud, mock_factory
):
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port, receipts=False)
    agent = agents(make_config(mqtt_broker.url, receipt_timeout_s=0.3))
    cloud.wait_event("boot")
    pin = mock_factory.pin(DOOR_PINS["a2"])
    pin.drive_high()
    pin.drive_low()
    cloud.wait_event("door_closed")
    cloud.wait(lambda: cloud.duplicates >= 8, what="resends")
    assert cloud.gaps == []
    assert agent.store is not None
    depth = agent.cabinet.call(agent.store.outbox_depth)
    assert depth == cloud.committed  # nothing dropped without a receipt


def test_persistent_session_delivers_commands_sent_while_the_agent_was_away(
    mqtt_broker, make_config, agents, make_cloud, mock_factory
):
    config = make_config(mqtt_broker.url)
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agent = agents(config)
    cloud.wait_event("boot")
    agent.stop("away")
    cloud.wait(lambda: not cloud.statuses[-1][0].online, what="offline status")
    command = cloud.unlock_command("a3")
    cloud.send(command)  # queued by the broker in the agent's session
    agents(config)
    (unlocked,) = cloud.wait_event("unlocked", command_id=command.id)
    assert unlocked.compartment == "a3"
    cloud.wait(lambda: cloud.statuses[-1][0].online, what="birth again")


def test_only_the_acks_pubacks_wake_the_worker(
    mqtt_broker, make_config, agents, make_cloud, mock_factory
):
    """Events, telemetry and status are QoS 1 too, but their PUBACKs mean nothing to
    the agent: only an ack's is handed to the worker (it marks the ack sent)."""
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agent = agents(make_config(mqtt_broker.url))
    cloud.wait_event("boot")
    assert agent.link is not None
    link = agent.link
    handed: list[tuple[object, ...]] = []
    deliver = link._deliver

    def counting(item: tuple[object, ...]) -> None:
        if item[0] == "puback":
            handed.append(item)
        deliver(item)

    link._deliver = counting
    command = cloud.unlock_command("a1")
    cloud.send(command)
    cloud.wait_event("unlocked", command_id=command.id)
    door = mock_factory.pin(DOOR_PINS["a1"])
    door.drive_high()
    cloud.wait(lambda: any(a.command_id == command.id for a in cloud.acks), what="the ack")
    cloud.wait_event("door_opened")
    door.drive_low()
    cloud.wait_event("door_closed")
    cloud.wait(lambda: agent.cabinet.call(agent.store.unsent_acks) == [], what="ack marked")
    # Three events (unlocked, door_opened, door_closed) and an ack were published.
    assert len(handed) == 1, handed


class _StrictCloud:
    """The wire of a Link without a broker: published events reach a cloud that
    commits only the next ``seq`` and publishes a receipt only for what it newly
    commits (as the SIGKILL test's cloud does); whether a receipt arrives is up to
    the test."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.committed = 0
        self.receipts: list[int] = []
        self.published: list[int] = []
        self._mid = 0

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        self._mid += 1
        if topic == self.topic:
            seq = json.loads(payload)["seq"]
            self.published.append(seq)
            if seq == self.committed + 1:
                self.committed = seq
                self.receipts.append(seq)
        return SimpleNamespace(mid=self._mid)


def test_a_receipt_timeout_reaches_past_what_a_cloud_holds_whose_receipts_were_lost(
    tmp_path, public_key_file
) -> None:
    """A broker that dies after the cloud committed a full window loses every receipt
    of it; a cloud that receipts only new commits ignores the window sent again. The
    resend after a receipt timeout goes one event past the highest ever published, so
    the cloud commits something new and its receipt covers the lost ones."""
    config = parse_config(
        config_dict(
            tmp_path / "data",
            public_key_file,
            "mqtt://127.0.0.1:1",
            cabinet="cab-a",
            send_window=4,
            receipt_timeout_s=30.0,
        )
    )
    store = Store(config.database_path)
    factory = MockFactory()
    cabinet = Cabinet(
        config, store, public_key=load_public_key(public_key_file), pin_factory=factory
    )
    link = Link(config, cabinet, deliver=lambda _item: None)
    cloud = _StrictCloud(str(TopicScheme(config.topic_prefix).topic("cab-a", Channel.EVENTS)))
    link._client = cloud  # type: ignore[assignment]
    try:
        cabinet.open()  # boot: seq 1
        for _ in range(9):
            store.append_event(lambda seq: (seq, json.dumps({"seq": seq}).encode()))
        link._generation = 1
        link.link_up(1)
        assert cloud.published == [1, 2, 3, 4]  # the window
        assert cloud.receipts == [1, 2, 3, 4]  # all lost with the broker

        def receipt_timeout() -> None:
            link.check_progress()
            link._last_progress -= config.receipt_timeout_s
            cloud.published.clear()
            cloud.receipts.clear()
            link.check_progress()

        receipt_timeout()
        assert cloud.published == [1, 2, 3, 4, 5]  # in order, one past the window
        assert cloud.receipts == [5]  # lost as well
        receipt_timeout()
        assert cloud.published == [1, 2, 3, 4, 5, 6]
        assert cloud.receipts == [6]
        cabinet.handle_receipt(encode(Receipt(cabinet="cab-a", upto_seq=6)))
        link.pump()
        assert store.first_unreceipted() == 7
        assert cloud.published[6:] == [7, 8, 9, 10]  # the window again, from the receipt
    finally:
        cabinet.close()
        store.close()
        factory.reset()


def test_a_connection_attempt_that_hangs_never_holds_up_the_worker(
    tmp_path, public_key_file
) -> None:
    """The worker drives the network (Link.step) but never waits on a connection
    attempt longer than its round: a broker whose accept queue is full drops the SYN,
    and connect() hangs (for paho's connect timeout) on the attempt's own thread."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers: list[socket.socket] = []
    for _ in range(8):  # fill the accept queue; later SYNs are dropped
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.2)
    try:
        with _link_alone(tmp_path, public_key_file, f"mqtt://127.0.0.1:{port}") as link:
            link.start()
            rounds = []
            hung = 0
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                started = time.monotonic()
                link.step(0.05)
                rounds.append(time.monotonic() - started)
                hung += link._connector is not None and link._connector.is_alive()
            assert hung >= 10  # the attempt was under way, hanging, most of the time
            assert max(rounds) < 0.5
            assert not link.connected
    finally:
        for c in fillers:
            c.close()
        server.close()


def test_wake_ends_the_workers_wait_between_connection_attempts(tmp_path, public_key_file) -> None:
    """Offline, the worker waits in :meth:`Link.step` for the next attempt; a door edge
    queued meanwhile (:meth:`Link.wake`) ends the wait at once, not after the round."""
    with _link_alone(tmp_path, public_key_file, "mqtt://127.0.0.1:1") as link:
        link._connect_at = time.monotonic() + 60.0  # the next attempt is a minute away
        started = time.monotonic()
        link.step(0.3)  # nothing wakes it: the whole round
        assert time.monotonic() - started >= 0.29
        timer = threading.Timer(0.05, link.wake)
        timer.start()
        started = time.monotonic()
        link.step(5.0)
        assert time.monotonic() - started < 2.0
        timer.join()
        started = time.monotonic()
        link.step(0.3)  # the wake-up was used up
        assert time.monotonic() - started >= 0.29
