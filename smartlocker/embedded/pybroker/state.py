"""Sessions, subscriptions, retained messages and routing (pure: no sockets).

The server attaches a :class:`Sender` to a session while its client is connected;
everything else (queueing QoS 1 messages for absent clients, the client's Receive
Maximum, redelivery with DUP, ``$share`` round robin, retained messages, Message
Expiry) is decided here and can be tested with a list as the "socket". Time comes in
as arguments or from the injected monotonic ``clock`` (a fake one in tests).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from .codec import (
    encode,
)
from .packets import (
    Prop,
    Properties,
    Publish,
    Subscription,
)
from .topics import matches, split_shared

__all__ = [
    "BrokerState",
    "Message",
    "Sender",
    "Session",
]

logger = logging.getLogger(__name__)

#: Like Mosquitto's ``max_queued_messages`` in our config: a slow or absent
#: persistent client may fall this far behind before messages to it are dropped.
MAX_QUEUED = 100_000

#: Sends one PUBLISH to the connected client (the server encodes and writes it).
Sender = Callable[[Publish], None]
#: May ``username`` read ``topic``? (the ACL; delivery checks it per message).
ReadCheck = Callable[[str | None, str, str], bool]
#: Monotonic seconds.
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Message:
    """An application message as published, before per-subscriber options apply."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = field(default_factory=dict)
    sender_id: str = ""
    #: Monotonic deadline from the publisher's Message Expiry Interval (set on routing).
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Queued:
    """A QoS 1 message waiting for its turn, with its expiry deadline if it has one."""

    publish: Publish
    expires_at: float | None


@dataclass(eq=False)
class Session:
    """What the broker keeps for one client id, connected or not."""

    client_id: str
    username: str | None = None
    expiry_interval: int = 0
    #: Full filter (``$share/g/f`` included) → options and subscription identifier.
    subscriptions: dict[str, tuple[Subscription, int | None]] = field(default_factory=dict)
    receive_maximum: int = 65535
    max_packet_size: int | None = None
    sender: Sender | None = None
    disconnected_at: float | None = None
    queue: deque[_Queued] = field(default_factory=deque)
    inflight: dict[int, Publish] = field(default_factory=dict)
    dropped: int = 0
    #: Messages whose Message Expiry Interval passed before delivery began (§3.3.2.3.3).
    expired_messages: int = 0
    clock: Clock = time.monotonic
    _next_id: int = 1

    @property
    def online(self) -> bool:
        return self.sender is not None

    def expired(self, now: float) -> bool:
        """Whether an absent session has outlived its Session Expiry Interval."""
        return (
            self.disconnected_at is not None
            and self.expiry_interval != 0xFFFFFFFF
            and now - self.disconnected_at >= self.expiry_interval
        )

    def enqueue(self, publish: Publish) -> None:
        """Send now (QoS 0 online), queue (QoS 1), or drop (QoS 0 offline, or full).

        A Message Expiry Interval on ``publish`` is the time it has left from now: it
        becomes the deadline after which the message is dropped instead of sent, and
        what is sent carries the time left then (MQTT 5 §3.3.2.3.3).
        """
        if (
            self.max_packet_size is not None
            and len(encode(replace(publish, packet_id=1))) > self.max_packet_size
        ):
            logger.info("message on %s too large for client %s: dropped", publish.topic, self)
            return
        if publish.qos == 0:
            if self.sender is not None:
                self.sender(publish)
            return
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("queue of %s full: %d messages dropped", self, self.dropped)
            return
        interval = publish.properties.get(Prop.MESSAGE_EXPIRY_INTERVAL)
        expires_at = None if interval is None else self.clock() + int(interval)
        self.queue.append(_Queued(publish, expires_at))
        self.pump()

    def pump(self) -> None:
        """Send queued QoS 1 messages while the client's Receive Maximum allows."""
        while self.sender is not None and self.queue and len(self.inflight) < self.receive_maximum:
            queued = self.queue.popleft()
            publish = queued.publish
            if queued.expires_at is not None:
                left = queued.expires_at - self.clock()
                if left <= 0:
                    self.expired_messages += 1
                    logger.info("message on %s for %s expired undelivered", publish.topic, self)
                    continue
                props = dict(publish.properties)
                props[Prop.MESSAGE_EXPIRY_INTERVAL] = math.ceil(left)
                publish = replace(publish, properties=props)
            packet_id = self._allocate_id()
            publish = replace(publish, packet_id=packet_id)
            self.inflight[packet_id] = publish
            self.sender(publish)

    def acknowledge(self, packet_id: int) -> bool:
        """A PUBACK arrived: free the slot, send more. False if the id was not in flight."""
        if self.inflight.pop(packet_id, None) is None:
            return False
        self.pump()
        return True

    def attach(self, sender: Sender, receive_maximum: int, max_packet_size: int | None) -> None:
        """The client is (back) online: redeliver what is in flight with DUP, then more."""
        self.sender = sender
        self.receive_maximum = receive_maximum
        self.max_packet_size = max_packet_size
        self.disconnected_at = None
        for publish in list(self.inflight.values()):
            sender(replace(publish, dup=True))
        self.pump()

    def detach(self, now: float) -> None:
        self.sender = None
        self.disconnected_at = now

    def _allocate_id(self) -> int:
        for _ in range(65535):
            packet_id = self._next_id
            self._next_id = packet_id % 65535 + 1
            if packet_id not in self.inflight:
                return packet_id
        raise RuntimeError("no free packet identifier")  # receive maximum ≤ 65535 prevents it

    def __str__(self) -> str:
        return self.client_id


@dataclass(eq=False)
class _Group:
    """The members of one ``$share/group/filter``, served round robin."""

    members: list[Session] = field(default_factory=list)
    turn: int = 0

    def pick(self) -> Session | None:
        """The next member, preferring connected ones with room in flight."""
        n = len(self.members)
        for ready in (True, False):
            for step in range(n):
                member = self.members[(self.turn + step) % n]
                if not ready or (member.online and len(member.inflight) < member.receive_maximum):
                    self.turn = (self.turn + step + 1) % n
                    return member
        return None


class BrokerState:
    """Every session, subscription and retained message of one broker."""

    def __init__(
        self, read_allowed: ReadCheck | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.sessions: dict[str, Session] = {}
        self.clock = clock
        self.retained: dict[str, Message] = {}
        #: Non-shared subscriptions: plain filters in a dict (exact topics are most of
        #: them), wildcard filters in a list scanned per message.
        self._exact: dict[str, set[Session]] = {}
        self._wild: dict[str, set[Session]] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._read_allowed = read_allowed or (lambda _u, _c, _t: True)

    # -- sessions ---------------------------------------------------------------------

    def open_session(
        self, client_id: str, *, clean_start: bool, now: float, username: str | None = None
    ) -> tuple[Session, bool]:
        """The session for a CONNECT: ``(session, session_present)``.

        A session is resumed only by the user who owns it: what it queued passed the
        read ACL of that user, not of whoever else might use the same client id.
        """
        old = self.sessions.get(client_id)
        if old is not None and (clean_start or old.expired(now) or old.username != username):
            self.discard(old)
            old = None
        if old is not None:
            return old, True
        session = Session(client_id, username, clock=self.clock)
        self.sessions[client_id] = session
        return session, False

    def discard(self, session: Session) -> None:
        """Forget a session and its subscriptions (clean start or expiry)."""
        for full in list(session.subscriptions):
            self.unsubscribe(session, full)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def expire(self, now: float) -> list[str]:
        """Drop absent sessions whose expiry interval has passed; their client ids."""
        gone = [s for s in self.sessions.values() if not s.online and s.expired(now)]
        for session in gone:
            self.discard(session)
        return [s.client_id for s in gone]

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(
        self, session: Session, sub: Subscription, identifier: int | None = None
    ) -> list[Publish]:
        """Add or replace one subscription; returns the retained messages to send now."""
        group, topic_filter = split_shared(sub.topic_filter)
        existed = sub.topic_filter in session.subscriptions
        session.subscriptions[sub.topic_filter] = (sub, identifier)
        if group is not None:
            members = self._groups.setdefault((group, topic_filter), _Group()).members
            if session not in members:
                members.append(session)
            return []  # no retained messages for shared subscriptions (§4.8.2)
        index = self._wild if "+" in topic_filter or "#" in topic_filter else self._exact
        index.setdefault(topic_filter, set()).add(session)
        if sub.retain_handling == 2 or (sub.retain_handling == 1 and existed):
            return []
        out = []
        for topic, message in self._retained_matching(topic_filter):
            if self._read_allowed(session.username, session.client_id, topic):
                publish = _deliverable(message, self.clock(), sub.qos, True, identifier)
                out.append(publish)
        return out

    def unsubscribe(self, session: Session, full_filter: str) -> bool:
        """Remove one subscription; False if the session did not have it."""
        if session.subscriptions.pop(full_filter, None) is None:
            return False
        group, topic_filter = split_shared(full_filter)
        if group is not None:
            key = (group, topic_filter)
            members = self._groups[key].members
            members.remove(session)
            if not members:
                del self._groups[key]
            return True
        index = self._wild if "+" in topic_filter or "#" in topic_filter else self._exact
        holders = index[topic_filter]
        holders.discard(session)
        if not holders:
            del index[topic_filter]
        return True

    # -- publishing ---------------------------------------------------------------------

    def publish(self, message: Message) -> int:
        """Store (if retained) and route one message; returns how many sessions matched."""
        now = self.clock()
        interval = message.properties.get(Prop.MESSAGE_EXPIRY_INTERVAL)
        if interval is not None and message.expires_at is None:
            message = replace(message, expires_at=now + int(interval))
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message
            else:
                self.retained.pop(message.topic, None)
        # One copy per session: the highest QoS and every identifier of its matches.
        plan: dict[Session, tuple[int, bool, list[int]]] = {}
        topic = message.topic
        for topic_filter, holders in self._matching_plain(topic):
            for session in holders:
                sub, identifier = session.subscriptions[topic_filter]
                if sub.no_local and session.client_id == message.sender_id:
                    continue
                qos, rap, ids = plan.get(session, (0, False, []))
                if identifier is not None:
                    ids.append(identifier)
                plan[session] = (max(qos, sub.qos), rap or sub.retain_as_published, ids)
        for (group, topic_filter), members in self._groups.items():
            if matches(topic_filter, topic):
                member = members.pick()
                if member is None:
                    continue
                sub, identifier = member.subscriptions[f"$share/{group}/{topic_filter}"]
                qos, rap, ids = plan.get(member, (0, False, []))
                if identifier is not None:
                    ids.append(identifier)
                plan[member] = (max(qos, sub.qos), rap or sub.retain_as_published, ids)
        for session, (qos, rap, ids) in plan.items():
            # As Mosquitto: a subscriber the read ACL filters out still counted as a
            # match (PUBACK "success", not "no matching subscribers").
            if self._read_allowed(session.username, session.client_id, topic):
                session.enqueue(_deliverable(message, now, qos, rap and message.retain, *ids))
        return len(plan)

    def _matching_plain(self, topic: str) -> Iterator[tuple[str, set[Session]]]:
        holders = self._exact.get(topic)
        if holders:
            yield topic, holders
        for topic_filter, wild_holders in self._wild.items():
            if matches(topic_filter, topic):
                yield topic_filter, wild_holders

    def _retained_matching(self, topic_filter: str) -> Iterator[tuple[str, Message]]:
        """Retained messages for a new subscription; an expired one is forgotten instead."""
        if "+" not in topic_filter and "#" not in topic_filter:
            candidates = [topic_filter] if topic_filter in self.retained else []
        else:
            candidates = [t for t in self.retained if matches(topic_filter, t)]
        now = self.clock()
        for topic in candidates:
            message = self.retained[topic]
            if message.expires_at is not None and message.expires_at <= now:
                del self.retained[topic]
                continue
            yield topic, message


def _deliverable(
    message: Message, now: float, qos: int, retain: bool, *identifiers: int | None
) -> Publish:
    """The PUBLISH one subscriber gets; its Message Expiry Interval is the time left."""
    props = dict(message.properties)
    if message.expires_at is not None:
        props[Prop.MESSAGE_EXPIRY_INTERVAL] = max(0, math.ceil(message.expires_at - now))
    ids = tuple(i for i in identifiers if i is not None)
    if ids:
        props[Prop.SUBSCRIPTION_IDENTIFIER] = ids
    return Publish(
        topic=message.topic,
        payload=message.payload,
        qos=min(qos, message.qos),
        retain=retain,
        properties=props,
    )
