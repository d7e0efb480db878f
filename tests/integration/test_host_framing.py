"""The local Functions host's HTTP framing against a hostile caller, on 127.0.0.1 with raw sockets: malformed
Content-Length, echoed values cut short, idle and trickling clients dropped with the worker threads
bounded, and the JSON nesting check."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from functions_host.host import LocalHost
from tests.helpers import http_app_env, running_http_app

TIMEOUT = 10
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHost]:
    http_app_env(tmp_path, monkeypatch)
    with running_http_app(tmp_path) as local:
        yield local


def fkey(host: LocalHost) -> dict[str, str]:
    return {"x-functions-key": host.function_key}


def raw_request(host: LocalHost, data: bytes, read_timeout: float = TIMEOUT) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", host.port), timeout=read_timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("length", "status"),
    [("abc", b"400"), ("-1", b"400"), ("1e3", b"400"), ("999999999999", b"413")],
)
def test_malformed_framing_gets_an_answer(host: LocalHost, length: str, status: bytes) -> None:
    answer = raw_request(
        host,
        f"POST /api/echo HTTP/1.1\r\nHost: x\r\nx-functions-key: {host.function_key}\r\n"
        f"Content-Length: {length}\r\n\r\n".encode(),
    )
    assert answer.split(b" ", 2)[1] == status, answer[:200]


def test_echoed_values_are_truncated(host: LocalHost) -> None:
    long_path = "/api/" + "x" * 60_000
    answer = requests.get(f"{host.url}{long_path}", headers=fkey(host), timeout=TIMEOUT)
    assert answer.status_code == 404 and len(answer.content) < 1000
    long_id = "i" * 50_000
    answer = requests.get(
        f"{host.url}/runtime/webhooks/durabletask/instances/{long_id}/x",
        params={"code": host.durable_key},
        timeout=TIMEOUT,
    )
    assert answer.status_code in (404, 405) and len(answer.content) < 1000


def test_idle_and_slow_clients_time_out_and_threads_stay_bounded(
    host: LocalHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import threading

    from functions_host.http import server as server_module

    monkeypatch.setattr(server_module._Handler, "timeout", 1.0)
    monkeypatch.setattr(server_module, "BODY_DEADLINE_S", 2.0)
    before = threading.active_count()
    stalled = []
    for _ in range(150):  # each promises a body it never sends
        conn = socket.create_connection(("127.0.0.1", host.port), timeout=30)
        conn.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
        stalled.append(conn)
    try:
        time.sleep(0.5)
        assert threading.active_count() - before <= server_module.MAX_WORKER_THREADS + 2
        # every stalled connection is closed by the host (recv sees EOF) well before the test's timeout
        for conn in stalled:
            assert conn.recv(100) == b""
        # a trickling client (one byte a second, under the socket timeout) is cut at the body deadline
        trickle = socket.create_connection(("127.0.0.1", host.port), timeout=30)
        trickle.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        closed = False
        for _ in range(20):  # 20 bytes at 0.7 s: without the 2 s body deadline it would never be cut
            try:
                trickle.sendall(b"a")
            except OSError:
                closed = True
                break
            trickle.settimeout(0.7)
            try:
                if trickle.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        trickle.close()
        assert closed  # cut by the deadline, not by a wall-clock bound the test would guess under load
        assert requests.get(f"{host.url}/api/plain", timeout=TIMEOUT).status_code == 200
    finally:
        for conn in stalled:
            conn.close()


def test_json_nesting_check_counts_brackets_outside_strings_only(host: LocalHost) -> None:
    from functions_host.http import json_nesting_exceeds

    assert json_nesting_exceeds(b"[" * 65 + b"]" * 65) and not json_nesting_exceeds(b"[" * 64 + b"]" * 64)
    assert not json_nesting_exceeds(json.dumps({"t": "[" * 10_000, "u": [[1]]}).encode())
    assert not json_nesting_exceeds(json.dumps({"t": 'a"b\\[[[', "u": [[1]]}).encode(), 3)
    assert json_nesting_exceeds(b'{"a": "x\\\\", "b": [[[[1]]]]}', 4)  # an escaped backslash ends the string
    # without a key the body is not even looked at
    assert requests.post(f"{host.url}/api/echo", data=DEEP_JSON, timeout=TIMEOUT).status_code == 401
