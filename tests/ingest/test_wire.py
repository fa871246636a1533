"""The worker's hand-built receipt payloads are valid protocol messages."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from smartlocker.cloud.ingest.worker import BrokerAddress, receipt_payload
from smartlocker.protocol import Channel, Receipt, decode

CABINET_IDS = st.from_regex(r"^[a-z0-9][a-z0-9-]{0,62}$", fullmatch=True)


@given(cabinet=CABINET_IDS, upto=st.integers(0, 2**62), counter=st.integers(0, 2**64))
def test_receipt_payload_decodes_as_a_receipt(cabinet: str, upto: int, counter: int) -> None:
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    message = decode(Channel.RECEIPTS, receipt_payload(f"abc{counter:x}", ts, cabinet, upto))
    assert isinstance(message, Receipt)
    assert (message.cabinet, message.upto_seq) == (cabinet, upto)


def test_broker_urls() -> None:
    a = BrokerAddress.parse("mqtts://cloud:p%40ss@broker.example:8884")
    assert (a.host, a.port, a.tls, a.username, a.password) == (
        "broker.example",
        8884,
        True,
        "cloud",
        "p@ss",
    )
    assert BrokerAddress.parse("mqtt://127.0.0.1").port == 1883
