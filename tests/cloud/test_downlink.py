"""Cloud → cabinet over a real Mosquitto: signed commands and the retained desired state."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from smartlocker.cloud.downlink import (
    build_desired_state,
    create_unlock_command,
    prune_desired_states,
    publish_desired,
    publish_effects,
    send_command,
)
from smartlocker.cloud.errors import ConfigError, Conflict
from smartlocker.cloud.keys import CloudKeys, code_secret_from, load_keys
from smartlocker.cloud.mqtt_publisher import MqttPublishError, PahoPublisher
from smartlocker.cloud.reactions import Effects
from smartlocker.cloud.rules import cancel_parcel, reserve_parcel
from smartlocker.cloud.rules.fleet import set_compartment
from smartlocker.cloud.settings import Settings
from smartlocker.embedded import MosquittoBroker
from smartlocker.embedded.mosquitto import free_port
from smartlocker.protocol import (
    Channel,
    DesiredState,
    TopicScheme,
    UnlockCommand,
    decode_verified,
    hash_code,
    private_key_pem,
)
from tests.cloud.conftest import T0
from tests.support.mqtt import connected

Conn = psycopg.Connection[tuple[object, ...]]
TOPICS = TopicScheme()


@pytest.fixture
def publisher(mqtt_broker: MosquittoBroker) -> Iterator[PahoPublisher]:
    with PahoPublisher.from_url(mqtt_broker.url) as pub:
        yield pub


def test_desired_state_is_signed_retained_and_versioned_by_change(
    conn: Conn, keys: CloudKeys, publisher: PahoPublisher, mqtt_broker: MosquittoBroker
) -> None:
    public = keys.signing_key.public_key()
    topic = str(TOPICS.topic("cab-1", Channel.DESIRED))
    first = publish_desired(conn, publisher, keys.signing_key, "cab-1", now=T0)
    assert first.version == 1
    assert [c.id for c in first.compartments] == ["A1", "A2", "B1", "C1", "K1"]
    assert first.codes == []
    # nothing changed: the same version, byte for byte
    assert publish_desired(conn, publisher, keys.signing_key, "cab-1") == first

    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="t", now=T0)
    second = publish_desired(conn, publisher, keys.signing_key, "cab-1", now=T0)
    assert second.version == 2
    (grant,) = second.codes
    assert (grant.kind, grant.parcel, grant.compartment) == ("deposit", r.parcel, "A1")
    assert grant.hash == hash_code(keys.code_key("cab-1"), r.deposit_code)

    assert set_compartment(conn, "cab-1", "B1", actor="op", now=T0, enabled=False)
    cancel_parcel(conn, r.parcel, now=T0, actor="t")
    # one Effects, or a list of them as ingest collects them (None from no-op rules)
    assert publish_effects(conn, publisher, keys.signing_key, [None, Effects()]) == []
    (third,) = publish_effects(
        conn, publisher, keys.signing_key, [Effects(desired_changed={"cab-1"}), None]
    )
    assert publish_effects(conn, publisher, keys.signing_key, Effects({"cab-1"})) == [third]
    assert third.version == 3
    assert third.codes == []
    assert {c.id: c.enabled for c in third.compartments}["B1"] is False

    # a cabinet connecting later gets the latest version, retained, and it verifies
    with connected(mqtt_broker.host, mqtt_broker.port) as cabinet:
        cabinet.subscribe(topic)
        msg = cabinet.expect()
    assert msg.retain
    state = decode_verified(Channel.DESIRED, msg.payload, public)
    assert isinstance(state, DesiredState)
    assert state.version == 3
    assert conn.execute("SELECT desired_version FROM cabinets").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM desired_states").fetchone() == (3,)


def test_old_desired_versions_are_pruned(conn: Conn) -> None:
    for n in range(5):
        set_compartment(conn, "cab-1", "A1", actor="op", now=T0, enabled=n % 2 == 1)
        build_desired_state(conn, "cab-1", now=T0)
    assert prune_desired_states(conn, keep=2) == 3
    versions = conn.execute("SELECT version FROM desired_states ORDER BY version").fetchall()
    assert versions == [(4,), (5,)]
    # the numbering goes on from the cabinet's version
    set_compartment(conn, "cab-1", "A1", actor="op", now=T0, enabled=True)
    assert build_desired_state(conn, "cab-1", now=T0).version == 6


def test_build_desired_state_refuses_unknown_cabinets(conn: Conn) -> None:
    from smartlocker.cloud.errors import NotFound

    with pytest.raises(NotFound):
        build_desired_state(conn, "nope")


def test_publish_desired_needs_the_transaction_committed(
    core_url: str, keys: CloudKeys, publisher: PahoPublisher
) -> None:
    with psycopg.connect(core_url) as c:
        c.execute("SELECT 1")
        with pytest.raises(RuntimeError, match="no transaction open"):
            publish_desired(c, publisher, keys.signing_key, "cab-1")


def test_commands_are_signed_never_retained_and_marked_sent(
    conn: Conn, keys: CloudKeys, publisher: PahoPublisher, mqtt_broker: MosquittoBroker
) -> None:
    public = keys.signing_key.public_key()
    topic = str(TOPICS.topic("cab-1", Channel.COMMANDS))
    with connected(mqtt_broker.host, mqtt_broker.port) as cabinet:
        cabinet.subscribe(topic)
        cmd = create_unlock_command(conn, "cab-1", "A2", "stuck door", "op-1", now=T0)
        assert cmd.status == "created"
        assert cmd.expires_at == T0 + timedelta(seconds=30)
        sent = send_command(conn, publisher, keys.signing_key, cmd.id, now=T0)
        msg = cabinet.expect()
    assert not msg.retain
    received = decode_verified(Channel.COMMANDS, msg.payload, public)
    assert isinstance(received, UnlockCommand)
    assert received == sent
    assert (received.compartment, received.counter, received.reason) == ("A2", 1, "stuck door")
    assert received.expires == T0 + timedelta(seconds=30)
    row = conn.execute("SELECT status, sent_at FROM commands WHERE id = %s", (cmd.id,)).fetchone()
    assert row == ("sent", T0)
    # never retained: a cabinet subscribing later gets nothing
    with connected(mqtt_broker.host, mqtt_broker.port) as late:
        late.subscribe(topic)
        with pytest.raises(queue.Empty):
            late.messages.get(timeout=0.5)


def test_expired_or_final_commands_are_not_sent(
    conn: Conn, keys: CloudKeys, publisher: PahoPublisher
) -> None:
    cmd = create_unlock_command(conn, "cab-1", "A1", None, "op", now=T0)
    with pytest.raises(Conflict, match="expired"):
        send_command(conn, publisher, keys.signing_key, cmd.id, now=T0 + timedelta(minutes=1))
    row = conn.execute("SELECT status FROM commands WHERE id = %s", (cmd.id,)).fetchone()
    assert row == ("timed_out",)
    with pytest.raises(Conflict, match="timed_out"):
        send_command(conn, publisher, keys.signing_key, cmd.id, now=T0)


def test_publisher_reports_an_unreachable_broker() -> None:
    with pytest.raises(MqttPublishError), PahoPublisher("127.0.0.1", free_port(), timeout=2):
        pass
    with pytest.raises(ConfigError):
        PahoPublisher.from_url("http://example.org")


def test_one_key_file_configures_signing_and_codes(
    tmp_path: Path, keys: CloudKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = tmp_path / "cloud.pem"
    pem.write_bytes(private_key_pem(keys.signing_key))
    loaded = load_keys(pem)
    assert loaded.code_secret == keys.code_secret == code_secret_from(keys.signing_key)
    assert len(keys.code_secret) == 32
    assert loaded.code_key("cab-1") != loaded.code_key("cab-2")
    monkeypatch.setenv("SMARTLOCKER_SIGNING_KEY", str(pem))
    assert load_keys().code_secret == keys.code_secret
    monkeypatch.delenv("SMARTLOCKER_SIGNING_KEY")
    with pytest.raises(ConfigError, match="not set"):
        load_keys()
    with pytest.raises(ConfigError, match="cannot read"):
        load_keys(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ConfigError, match="SMARTLOCKER_SIGNING_KEY"):
        load_keys(tmp_path / "junk.pem")


def test_settings_from_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("x")
    env = {
        "SMARTLOCKER_DATABASE_URL": "postgresql://u@db/x",
        "SMARTLOCKER_MQTT_URL": "mqtts://cloud:pw@broker:8883",
        "SMARTLOCKER_SIGNING_KEY": str(key),
        "SMARTLOCKER_API_BIND": "0.0.0.0:9000",
    }
    s = Settings.from_env(env)
    assert (s.mqtt_url, s.signing_key, s.api_bind) == (
        env["SMARTLOCKER_MQTT_URL"],
        key,
        "0.0.0.0:9000",
    )
    assert Settings.from_env(env, api_bind="127.0.0.1:1").api_bind == "127.0.0.1:1"
    for name, bad in [
        ("SMARTLOCKER_DATABASE_URL", "mysql://x"),
        ("SMARTLOCKER_MQTT_URL", "http://broker"),
        ("SMARTLOCKER_MQTT_URL", "mqtt://broker:99999"),
        ("SMARTLOCKER_SIGNING_KEY", str(tmp_path / "missing")),
        ("SMARTLOCKER_API_BIND", "nonsense"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**env, name: bad})
    with pytest.raises(ConfigError, match="not set"):
        Settings.from_env({})
