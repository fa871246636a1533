"""A burst of QoS 1 publishes beyond the broker's Receive Maximum all arrive, in order."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as paho
from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50

from smartlocker.embedded import MosquittoBroker
from smartlocker.gmqtt_flow import FlowControl

BURST = 300  # Mosquitto grants 20 unacknowledged QoS 1 publishes by default


def test_a_burst_past_the_receive_maximum_waits_for_room_and_loses_nothing(
    mqtt_broker: MosquittoBroker,
) -> None:
    received: list[bytes] = []
    listener = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="flow-listener")

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        received.append(bytes(msg.payload))

    listener.on_message = on_message
    listener.connect(mqtt_broker.host, mqtt_broker.port)
    listener.subscribe("flow/test", qos=1)
    listener.loop_start()

    async def burst() -> tuple[int, int]:
        client = MqttClient("flow-sender")
        await client.connect(mqtt_broker.host, mqtt_broker.port, version=MQTTv50)
        flow = FlowControl(client)
        for n in range(BURST):  # no await between them: no PUBACK can come back meanwhile
            flow.publish("flow/test", b"%d" % n, 1)
        kept_back = flow.waiting
        for _ in range(500):
            if len(received) >= BURST:
                break
            await asyncio.sleep(0.01)
        left = flow.waiting
        await client.disconnect()
        return kept_back, left

    try:
        kept_back, left = asyncio.run(burst())
    finally:
        listener.loop_stop()
        listener.disconnect()
    assert kept_back > 0  # the broker's grant was reached: some had to wait
    assert left == 0
    assert received == [b"%d" % n for n in range(BURST)]


def test_without_it_gmqtt_refuses_past_the_grant(mqtt_broker: MosquittoBroker) -> None:
    """What FlowControl is for (if gmqtt ever queues by itself, it can go)."""

    async def burst() -> int:
        client = MqttClient("flow-raw")
        await client.connect(mqtt_broker.host, mqtt_broker.port, version=MQTTv50)
        sent = 0
        for n in range(BURST):
            try:
                client.publish("flow/raw", b"%d" % n, qos=1)
            except OverflowError:
                break
            sent += 1
        await client.disconnect()
        return sent

    assert asyncio.run(burst()) < BURST
