"""A lean MQTT load generator: many simulated cabinets, QoS 1, rising seq, receipts.

Raw asyncio and hand-built MQTT 3.1.1 packets (no client library per message): the
generator shares the machine with the broker, the database and the subscriber, so
it must cost little. Each cabinet behaves like the agent's outbox: it keeps at most
``window`` events not yet covered by a receipt, so the offered load follows what
the subscriber really commits (closed loop); ``rate`` caps it (open loop below it).
Publish → receipt latency is measured per event.

Run as its own process: ``python -m smartlocker.bench.loadgen --port … --out FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["LoadResult", "main"]

_CONNECT_FLAGS_CLEAN = 0x02


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    body = _string("MQTT") + bytes([4, _CONNECT_FLAGS_CLEAN]) + struct.pack("!H", keepalive)
    body += _string(client_id)
    return b"\x10" + _varint(len(body)) + body


def subscribe_packet(mid: int, topic_filter: str, qos: int) -> bytes:
    body = struct.pack("!H", mid) + _string(topic_filter) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


class Link(asyncio.Protocol):
    """One TCP connection to the broker; parses what comes back."""

    def __init__(self, on_publish: Any = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.connack = asyncio.get_event_loop().create_future()
        self.pubacks = 0
        self.on_publish = on_publish
        self.lost = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        while pos + 2 <= n:
            header = buf[pos]
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= n:
                    self.buf = buf[pos:]
                    return
                byte = buf[i]
                length += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
            end = i + length
            if end > n:
                break
            kind = header & 0xF0
            if kind == 0x40:
                self.pubacks += 1
            elif kind == 0x30:
                tlen = (buf[i] << 8) | buf[i + 1]
                topic = buf[i + 2 : i + 2 + tlen]
                start = i + 2 + tlen + (2 if header & 0x06 else 0)
                if header & 0x06 and self.transport is not None:
                    self.transport.write(b"\x40\x02" + buf[i + 2 + tlen : start])
                if self.on_publish is not None:
                    self.on_publish(topic, buf[start:end])
            elif kind == 0x20 and not self.connack.done():
                self.connack.set_result(buf[i + 1] if length > 1 else 0)
            pos = end
        self.buf = buf[pos:]


async def open_link(host: str, port: int, client_id: str, on_publish: Any = None) -> Link:
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: Link(on_publish), host, port)
    assert link.transport is not None
    sock = link.transport.get_extra_info("socket")
    if sock is not None:
        import socket

        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    link.transport.write(connect_packet(client_id))
    rc = await asyncio.wait_for(link.connack, 10)
    if rc != 0:
        raise RuntimeError(f"CONNACK {rc}")
    return link


@dataclass
class Cabinet:
    name: str
    topic_prefix: bytes
    next_seq: int = 1
    receipted: int = 0
    sent: deque[tuple[int, float]] = field(default_factory=deque)


@dataclass
class LoadResult:
    published: int = 0
    receipted: int = 0
    #: (seconds since start, published so far, receipted so far), once a second.
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    #: The generator's own CPU seconds over the measured part of the run.
    cpu_measured: float = 0.0


_EVENT = (
    '{"v":1,"id":"%s","ts":"%s","cabinet":"%s","seq":%d,'
    '"type":"door_opened","compartment":"c%02d","granted":%s}'
)


async def generate(
    host: str,
    port: int,
    *,
    cabinets: int,
    rate: float,
    duration: float,
    window: int,
    connections: int,
    prefix: str = "lockers",
    measure_from: float = 0.0,
    run_id: str = "",
) -> LoadResult:
    run_id = run_id or os.urandom(3).hex()
    cabs = [Cabinet(f"bench-{i:05d}", f"{prefix}/bench-{i:05d}/".encode()) for i in range(cabinets)]
    by_name = {c.name.encode(): c for c in cabs}
    result = LoadResult()
    measuring = False
    cpu_start = 0.0
    lat = result.latencies_ms

    def on_receipt(topic: bytes, payload: bytes) -> None:
        cab = by_name.get(topic.split(b"/")[-2])
        if cab is None:
            return
        upto = json.loads(payload)["upto_seq"]
        if upto <= cab.receipted:
            return
        now = time.perf_counter()
        done = upto - cab.receipted
        cab.receipted = upto
        result.receipted += done
        sent = cab.sent
        while sent and sent[0][0] <= upto:
            _, t = sent.popleft()
            if measuring:
                lat.append((now - t) * 1000.0)

    receiver = await open_link(host, port, f"loadgen-rx-{run_id}", on_receipt)
    assert receiver.transport is not None
    receiver.transport.write(subscribe_packet(1, f"{prefix}/+/receipts", 0))
    links = [await open_link(host, port, f"loadgen-{run_id}-{i}") for i in range(connections)]
    await asyncio.sleep(0.3)

    start = time.perf_counter()
    next_report = 1.0
    mid = 0
    tokens = 0.0
    last = start
    ready = deque(cabs)
    idle: list[Cabinet] = []
    pub_hdr = 0x32
    while True:
        now = time.perf_counter()
        elapsed = now - start
        if elapsed >= duration:
            break
        if not measuring and elapsed >= measure_from:
            measuring = True
            cpu_start = time.process_time()
        if elapsed >= next_report:
            result.timeline.append((round(elapsed, 3), result.published, result.receipted))
            next_report += 1.0
        tokens = min(tokens + (now - last) * rate, max(rate * 0.05, 50.0))
        last = now
        # Cabinets whose window reopened since the last round.
        if idle:
            still = []
            for c in idle:
                if c.next_seq - 1 - c.receipted < window:
                    ready.append(c)
                else:
                    still.append(c)
            idle = still
        budget = int(tokens)
        if budget <= 0 or not ready:
            await asyncio.sleep(0.001)
            continue
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        chunks: list[list[bytes]] = [[] for _ in links]
        sent_now = 0
        while sent_now < budget and ready:
            c = ready.popleft()
            seq = c.next_seq
            c.next_seq = seq + 1
            payload = (
                _EVENT % (f"{run_id}{c.name[6:]}x{seq:x}", ts, c.name, seq, seq % 24, "true")
            ).encode()
            topic = c.topic_prefix + b"events"
            mid = mid % 65535 + 1
            body_len = 2 + len(topic) + 2 + len(payload)
            pkt = (
                bytes([pub_hdr])
                + _varint(body_len)
                + struct.pack("!H", len(topic))
                + topic
                + struct.pack("!H", mid)
                + payload
            )
            chunks[mid % len(links)].append(pkt)
            c.sent.append((seq, time.perf_counter()))
            sent_now += 1
            if c.next_seq - 1 - c.receipted < window:
                ready.append(c)
            else:
                idle.append(c)
        for link, chunk in zip(links, chunks, strict=True):
            if chunk and link.transport is not None:
                link.transport.write(b"".join(chunk))
        result.published += sent_now
        tokens -= sent_now
        await asyncio.sleep(0)
    result.timeline.append(
        (round(time.perf_counter() - start, 3), result.published, result.receipted)
    )
    result.cpu_measured = time.process_time() - cpu_start if measuring else 0.0
    for link in [*links, receiver]:
        if link.transport is not None:
            link.transport.write(b"\xe0\x00")
            link.transport.close()
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cabinets", type=int, default=500)
    p.add_argument("--rate", type=float, default=1e9, help="events/s cap")
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--measure-from", type=float, default=0)
    p.add_argument("--window", type=int, default=64, help="unreceipted events per cabinet")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    result = asyncio.run(
        generate(
            a.host,
            a.port,
            cabinets=a.cabinets,
            rate=a.rate,
            duration=a.duration,
            window=a.window,
            connections=a.connections,
            measure_from=a.measure_from,
        )
    )
    with open(a.out, "w") as f:
        json.dump(
            {
                "published": result.published,
                "receipted": result.receipted,
                "timeline": result.timeline,
                "latencies_ms": result.latencies_ms,
                "cpu_measured": result.cpu_measured,
            },
            f,
        )


if __name__ == "__main__":
    main()
