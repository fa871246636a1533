"""The cabinet's TOML config: the example loads; broken files give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartlocker.edge_agent import ConfigError, load_config, parse_config
from tests.edge import toml_out
from tests.edge.conftest import config_dict

EXAMPLE = Path(__file__).parents[2] / "examples" / "cabinet.toml"


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.cabinet == "cab-0001"
    mqtt = config.mqtt()
    assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.username) == (
        "broker.example.net",
        8883,
        True,
        "cab-0001",
    )
    assert [c.id for c in config.compartments] == ["a1", "a2"]
    assert config.compartments[1].pulse_ms == 500
    assert len(config.code_key_bytes) == 32


def test_credentials_from_the_url_and_relative_paths(tmp_path, public_key_file) -> None:
    data = config_dict(Path("data"), Path("cloud.pub"), "mqtt://cab-a:s%40cret@10.0.0.1")
    config = load_config(toml_out.write(tmp_path / "c.toml", data))
    mqtt = config.mqtt()
    assert (mqtt.host, mqtt.port, mqtt.tls) == ("10.0.0.1", 1883, False)
    assert (mqtt.username, mqtt.password) == ("cab-a", "s@cret")
    assert config.data_dir == tmp_path / "data"
    assert config.cloud_public_key == tmp_path / "cloud.pub"


BROKEN = [
    ({"cabinet": "Cab A"}, "cabinet"),
    ({"mqtt_url": "http://x"}, "mqtt_url"),
    ({"mqtt_url": "mqtt://host:99999"}, "mqtt_url"),
    ({"code_key": "abcd"}, "code_key"),
    ({"kiosk_bind": "8080"}, "kiosk_bind"),
    ({"topic_prefix": "a//b"}, "topic_prefix"),
    ({"compartments": []}, "compartments"),
    ({"surprise": 1}, "surprise"),
    ({"reconnect_min_s": 10.0, "reconnect_max_s": 1.0}, "reconnect"),
]


@pytest.mark.parametrize(("change", "mentioned"), BROKEN)
def test_broken_config_names_the_problem(tmp_path, change, mentioned) -> None:
    data = config_dict(tmp_path, tmp_path / "k.pub", "mqtt://127.0.0.1:1883")
    data.update(change)
    with pytest.raises(ConfigError, match=mentioned):
        parse_config(data)


@pytest.mark.parametrize(
    ("compartment_change", "mentioned"),
    [
        ({"pulse_ms": 2000, "max_pulse_ms": 1000}, "exceeds max_pulse_ms"),
        ({"door_pull": "sideways"}, "door_pull"),
        ({"lock_pin": 17}, "used twice"),
        ({"id": "a2"}, "listed twice"),
        ({"debounce_ms": -1}, "debounce_ms"),
    ],
)
def test_broken_compartment_names_the_problem(tmp_path, compartment_change, mentioned) -> None:
    data = config_dict(tmp_path, tmp_path / "k.pub", "mqtt://127.0.0.1:1883")
    data["compartments"][0].update(compartment_change)
    with pytest.raises(ConfigError, match=mentioned):
        parse_config(data)


def test_unreadable_and_invalid_toml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("cabinet = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
