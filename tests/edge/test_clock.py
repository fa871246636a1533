"""The agent's injected clock stamps everything it sends; a connection's last will and
its birth share one ``ts`` (so the cloud never takes the will for a stale status); a
clock far behind refuses remote openings as ``expired``."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

from smartlocker.simulators.clock import SkewedClock


def _near(ts: datetime, expected: datetime, within: float = 5.0) -> bool:
    return abs((ts - expected).total_seconds()) < within


def test_everything_the_agent_sends_follows_its_clock(
    mqtt_broker, make_config, agents, make_cloud
) -> None:
    clock = SkewedClock(-600)
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agents(make_config(mqtt_broker.url, telemetry_interval_s=0.2), clock=clock)
    (boot,) = cloud.wait_event("boot")
    cloud.wait(lambda: len(cloud.telemetry) >= 1 and cloud.reported, what="beat, reported")
    slow = datetime.now(UTC) - timedelta(seconds=600)
    assert _near(boot.ts, slow)
    assert _near(cloud.telemetry[-1].ts, slow)
    assert _near(cloud.reported[-1].ts, slow)
    births = [s for s, _ in cloud.statuses if s.online]
    assert births
    assert _near(births[-1].ts, slow)
    # Behind by more than clock_skew_s (30 s): a fresh command looks issued in the future.
    command = cloud.unlock_command("a1")
    cloud.send(command)
    (ack,) = cloud.wait_ack(command.id)
    assert (ack.outcome, ack.reason) == ("rejected", "expired")
    assert _near(ack.ts, slow)
    # Put right: stamps follow at once, and commands work again.
    clock.set_offset(0)
    good = cloud.unlock_command("a2")
    cloud.send(good)
    cloud.wait_event("unlocked", command_id=good.id)
    cloud.wait(lambda: _near(cloud.telemetry[-1].ts, datetime.now(UTC)), what="a right beat")


def test_a_will_is_as_new_as_the_birth_of_its_connection(
    mqtt_broker, make_config, agents, make_cloud
) -> None:
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agent = agents(make_config(mqtt_broker.url, reconnect_min_s=0.1, reconnect_max_s=0.2))
    cloud.wait(lambda: any(s.online for s, _ in cloud.statuses), what="birth")
    (first,) = [s for s, _ in cloud.statuses if s.online]
    # The connection dies without a DISCONNECT: the broker publishes the will.
    assert agent.link is not None
    sock = agent.link._client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    cloud.wait(lambda: sum(s.online for s, _ in cloud.statuses) >= 2, what="birth again")
    statuses = [s for s, _ in cloud.statuses]
    will = next(s for s in statuses if not s.online)
    second = [s for s in statuses if s.online][1]
    assert will.ts == first.ts  # the will of the first connection, stamped with it
    assert second.ts > will.ts  # the next connection's birth is newer
