"""Which broker ``--broker auto`` picks, and that both fit what the stack expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartlocker.embedded import (
    EmbeddedBroker,
    MosquittoBroker,
    PythonBroker,
    make_broker,
    resolve_broker_kind,
)


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"mosquitto", "mosquitto_passwd"}, "mosquitto"),
        ({"mosquitto"}, "python"),  # cannot hash passwords without mosquitto_passwd
        (set(), "python"),
    ],
)
def test_auto_prefers_an_installed_mosquitto(present: set[str], expected: str) -> None:
    assert resolve_broker_kind("auto", installed=present.__contains__) == expected
    assert resolve_broker_kind("python", installed=present.__contains__) == "python"
    assert resolve_broker_kind("mosquitto", installed=present.__contains__) == "mosquitto"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="broker must be one of"):
        resolve_broker_kind("emqx")


def test_make_broker_builds_either(tmp_path: Path) -> None:
    users = {"cloud": "pw"}
    py: EmbeddedBroker = make_broker("python", tmp_path / "p", users=users, cloud_users=["cloud"])
    mq: EmbeddedBroker = make_broker(
        "mosquitto", tmp_path / "m", users=users, cloud_users=["cloud"]
    )
    assert isinstance(py, PythonBroker)
    assert isinstance(mq, MosquittoBroker)


def test_sighup_to_a_process_running_the_python_broker_is_harmless(tmp_path: Path) -> None:
    import os
    import signal

    with PythonBroker(tmp_path) as broker:
        assert broker.pid == os.getpid()
        os.kill(os.getpid(), signal.SIGHUP)  # what PasswordFileRegistrar would send
        assert broker.running


def test_the_apis_password_file_registrar_provisions_on_the_python_broker(tmp_path: Path) -> None:
    from smartlocker.cloud.api.broker import PasswordFileRegistrar
    from tests.support.mqtt import NOT_AUTHORIZED, MqttTestClient, connected

    with PythonBroker(tmp_path, users={"cloud": "pw"}, cloud_users=["cloud"]) as broker:
        refused = MqttTestClient(broker.host, broker.port, username="cab-new", password="s3")
        with refused:
            assert refused.connect().value == NOT_AUTHORIZED
        pid_file = tmp_path / "broker.pid"
        pid_file.write_text(str(broker.pid))
        # As the API worker does: write the hashed entry, then SIGHUP "the broker".
        PasswordFileRegistrar(broker.password_path, pid_file=pid_file).register("cab-new", "s3")
        assert broker.running
        with connected(broker.host, broker.port, username="cab-new", password="s3") as cabinet:
            assert not cabinet.publish("lockers/cab-new/events", b"e").is_failure
            assert cabinet.publish("lockers/cab-a/events", b"e").value == NOT_AUTHORIZED
        broker.restart()  # the API's entries survive the broker rewriting its own
        with connected(broker.host, broker.port, username="cab-new", password="s3"):
            pass
        with connected(broker.host, broker.port, username="cloud", password="pw"):
            pass
