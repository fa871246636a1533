"""The unlock bench's HTTP client reads answers straight off the socket: right or loud."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from smartlocker.bench.unlock_bench import _read_response


@contextmanager
def _pair(*segments: bytes, close: bool = False) -> Iterator[socket.socket]:
    """The client's end of a connection whose server already sent ``segments``."""
    server, client = socket.socketpair()
    with server, client:
        for segment in segments:
            server.sendall(segment)
        if close:
            server.shutdown(socket.SHUT_WR)
        client.settimeout(5)
        yield client


def test_an_answer_split_anywhere_is_read_whole_and_the_next_one_stays() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    body = b'{"a": "bc"}'
    following = b"HTTP/1.1 202 ACCEPTED\r\nContent-Length: 2\r\n\r\n{}"
    whole = head + body
    for cut in (1, 10, len(head) - 2, len(head), len(head) + 3):
        with _pair(whole[:cut], whole[cut:]) as sock:
            assert _read_response(sock) == (200, body, False)
    # in one segment, and another status
    with _pair(whole) as sock:
        assert _read_response(sock) == (200, body, False)
    with _pair(following) as sock:
        assert _read_response(sock) == (202, b"{}", False)


def test_a_closing_server_is_noticed() -> None:
    with _pair(
        b"HTTP/1.1 503 SERVICE UNAVAILABLE\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ) as sock:
        assert _read_response(sock) == (503, b"", True)
    with _pair(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") as sock:
        assert _read_response(sock)[2] is True


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed before anything
        b"HTTP/1.1 200 OK\r\nContent-Len",  # closed in the headers
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed mid-body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # no length
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
    ],
)
def test_a_broken_answer_is_a_connection_error(answer: bytes) -> None:
    with _pair(answer, close=True) as sock, pytest.raises(ConnectionError):
        _read_response(sock)
