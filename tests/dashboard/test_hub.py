"""The live feed's fan-out without a database: notes, scoping, bounded queues, streams."""

from __future__ import annotations

import json

import pytest

from smartlocker.cloud.dashboard.hub import RESYNC, Hub, HubFull, Note, parse_note
from smartlocker.cloud.dashboard.stream import format_event, run_stream


def note(site: str, kind: str = "compartment", cabinet: str = "c-1") -> Note:
    parsed = parse_note(json.dumps({"kind": kind, "site": site, "cabinet": cabinet}))
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[1, 2]",
        '{"kind": "compartment"}',
        '{"kind": "nope", "site": "a"}',
        '{"kind": "alert", "site": ""}',
        '{"kind": "alert", "site": 5}',
        '{"kind": "alert", "site": "a", "cabinet": 7}',
        json.dumps({"kind": "alert", "site": "a", "pad": "x" * 9000}),
    ],
)
def test_a_bad_note_is_refused_and_logged(payload: str, caplog: pytest.LogCaptureFixture) -> None:
    assert parse_note(payload) is None
    assert "dashboard note refused" in caplog.text


def test_each_note_goes_only_to_the_keys_of_its_site() -> None:
    hub = Hub()
    everything = hub.subscribe(None)
    only_a = hub.subscribe(frozenset({"a"}))
    a_and_b = hub.subscribe(frozenset({"a", "b"}))
    assert hub.publish(note("b")) == 2
    assert hub.publish(note("a")) == 3
    assert hub.publish(note("c")) == 1
    got = {name: [] for name in ("all", "a", "ab")}
    for name, sub in (("all", everything), ("a", only_a), ("ab", a_and_b)):
        while (n := sub.get(timeout=0)) is not None:
            got[name].append(n.site)
    assert got == {"all": ["b", "a", "c"], "a": ["a"], "ab": ["b", "a"]}
    hub.resync_all()  # a resync is for everyone
    assert only_a.get(timeout=0) is RESYNC
    assert everything.get(timeout=0) is RESYNC


def test_a_slow_reader_loses_its_backlog_for_one_resync_and_others_lose_nothing() -> None:
    hub = Hub(max_queue=4)
    slow = hub.subscribe(None)
    fast = hub.subscribe(None)
    for i in range(10):
        hub.publish(note("a", cabinet=f"c-{i}"))
        assert fast.get(timeout=0) is not None
    received = []
    while (n := slow.get(timeout=0)) is not None:
        received.append(n)
    assert RESYNC in received
    assert len(received) <= 4
    assert slow.dropped >= 6


def test_the_number_of_streams_is_bounded_and_a_closed_one_frees_its_place() -> None:
    hub = Hub(max_subscribers=2)
    first = hub.subscribe(None)
    hub.subscribe(None)
    with pytest.raises(HubFull):
        hub.subscribe(None)
    hub.unsubscribe(first)
    hub.subscribe(None)
    assert hub.subscribers == 2


def test_a_stream_says_hello_sends_notes_beats_and_ends_then_unsubscribes() -> None:
    hub = Hub()
    sub = hub.subscribe(frozenset({"a"}))
    now = [0.0]

    def clock() -> float:
        return now[0]

    stream = run_stream(hub, sub, {"role": "viewer"}, heartbeat=0.01, lifetime=10.0, clock=clock)
    first = next(stream)
    assert first.startswith(b"retry: 2000\n\n")
    assert first.endswith(format_event("hello", '{"role": "viewer"}'))
    hub.publish(note("b"))
    hub.publish(note("a", kind="alert"))
    assert next(stream) == format_event("alert", '{"kind":"alert","site":"a","cabinet":"c-1"}')
    assert next(stream) == b": ping\n\n"  # nothing for a heartbeat: a comment line
    now[0] = 11.0
    assert next(stream) == format_event("bye", "{}")
    with pytest.raises(StopIteration):
        next(stream)
    assert hub.subscribers == 0


def test_a_client_that_goes_away_releases_its_subscription() -> None:
    hub = Hub()
    sub = hub.subscribe(None)
    stream = run_stream(hub, sub, {}, heartbeat=0.01)
    next(stream)
    assert hub.subscribers == 1
    stream.close()  # what the server does when the write to a closed socket fails
    assert hub.subscribers == 0


def test_closing_the_hub_ends_every_stream_at_once_and_refuses_new_ones() -> None:
    """What a gunicorn worker does on SIGTERM: no stream holds its shutdown."""
    hub = Hub(max_queue=2)
    site_a = run_stream(hub, hub.subscribe(frozenset({"a"})), {}, heartbeat=60.0)
    slow = hub.subscribe(None)
    everything = run_stream(hub, slow, {}, heartbeat=60.0)
    next(site_a)
    next(everything)
    for _ in range(2):
        hub.publish(note("b"))  # fills the queue of the stream for every site
    hub.close()
    assert next(site_a) == format_event("bye", "{}")  # at once, not after 60 s
    assert next(everything) == format_event("bye", "{}")  # a full queue still takes the closing
    for stream in (site_a, everything):
        with pytest.raises(StopIteration):
            next(stream)
    assert hub.subscribers == 0
    with pytest.raises(HubFull, match="shutting down"):
        hub.subscribe(None)


def test_an_event_with_newlines_stays_one_event() -> None:
    assert format_event("x", "a\nb") == b"event: x\ndata: a\ndata: b\n\n"
