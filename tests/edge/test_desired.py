"""Desired state: signed, versioned, retained; applied, persisted, reported."""

from __future__ import annotations

from smartlocker.protocol import Channel, encode, generate_code, generate_private_key, sign
from tests.edge.conftest import lock_rises
from tests.edge.test_kiosk import grant, post_code


def test_desired_state_applied_persisted_and_older_versions_refused(
    fresh_broker, make_config, agents, make_cloud, mock_factory
) -> None:
    cloud = make_cloud(fresh_broker.host, fresh_broker.port)
    config = make_config(fresh_broker.url)
    agent = agents(config)
    cloud.wait_event("boot")
    code = generate_code()
    v2 = cloud.desired_state(2, compartments={"a1": True, "a2": False}, codes=[grant(code, "a1")])
    cloud.send(v2, retain=True)
    cloud.wait(lambda: any(r.desired_version == 2 for r in cloud.reported), what="v2 reported")
    report = next(r for r in cloud.reported if r.desired_version == 2)
    assert {c.id: c.enabled for c in report.compartments} == {"a1": True, "a2": False, "a3": True}
    assert {c.door for c in report.compartments} == {"closed"}
    # Older, forged and other-cabinet states change nothing.
    cloud.send(cloud.desired_state(1, compartments={"a1": False}))
    forged = sign(cloud.desired_state(9, compartments={"a1": False}), generate_private_key())
    cloud.publish(Channel.DESIRED, encode(forged))
    other = cloud.desired_state(10, compartments={"a1": False}).model_copy(
        update={"cabinet": "cab-b"}
    )
    cloud.publish(Channel.DESIRED, encode(sign(other, cloud.key)))
    # A disabled compartment refuses commands.
    command = cloud.unlock_command("a2")
    cloud.send(command)
    (ack,) = cloud.wait_ack(command.id)
    assert (ack.outcome, ack.reason) == ("rejected", "disabled")
    assert agent.cabinet is not None
    assert agent.cabinet.desired.version == 2
    # After a restart (and with the broker's retained copy gone) the state is still there.
    cloud.publish(Channel.DESIRED, b"", retain=True)
    agent.stop("restart")
    agent = agents(config)
    assert agent.cabinet is not None
    assert agent.cabinet.desired.version == 2
    assert agent.kiosk is not None
    status, body = post_code(agent.kiosk.url, code)
    assert (status, body["compartment"]) == (200, "a1")
    assert lock_rises(mock_factory, "a2") == 0
    # Revoking the code with a newer version makes it unknown.
    other_code = generate_code()
    cloud.send(cloud.desired_state(3, codes=[grant(other_code, "a3")]))
    cloud.wait(lambda: any(r.desired_version == 3 for r in cloud.reported), what="v3 reported")
    status, body = post_code(agent.kiosk.url, other_code)
    assert (status, body["compartment"]) == (200, "a3")
    cloud.send(cloud.desired_state(4, codes=[]))
    cloud.wait(lambda: any(r.desired_version == 4 for r in cloud.reported), what="v4 reported")
    code3 = generate_code()
    status, body = post_code(agent.kiosk.url, code3)
    assert body["reason"] == "unknown"
