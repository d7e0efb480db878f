"""The client of the Functions host's HTTP API (local host or Azure): start a retraining or monitor
cycle, follow its status, raise an event, with the keys. The CLI (`retrain run`, `retrain monitor`) and
the tests use it; nothing here knows whether the host runs in this process (see docs/architecture.md).

Standard library only: the CLI must start fast and the Function App side stays lean.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

# Durable Functions runtime statuses after which an instance changes no more.
TERMINAL_RUNTIME_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})


class HostClientError(RuntimeError):
    """The host answered something the client cannot go on with (the message says what)."""


def http_json(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 60.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One request with a JSON body (bytes are sent as they are); the status code and the answer parsed as
    JSON (the text when it is not JSON, None when empty). An HTTP error status is returned, not raised."""
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def with_code(url: str, key: str) -> str:
    """`url` with the key as the `code` query parameter, as Azure Functions accepts it."""
    return f"{url}{'&' if '?' in url else '?'}code={urllib.parse.quote(key)}"


class HostClient:
    """The host at `base_url` (e.g. http://127.0.0.1:7071), called with its function key; the Durable
    HTTP API (raising an event) needs the system key of the Durable extension."""

    def __init__(
        self, base_url: str, function_key: str, system_key: str | None = None, timeout: float = 60.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.function_key = function_key
        self.system_key = system_key
        self.timeout = timeout

    def url(self, path: str) -> str:
        """The URL of a function route (`/api/...`) with the function key."""
        return with_code(f"{self.base_url}{path}", self.function_key)

    # -- the retraining cycle ----------------------------------------------------------------------
    def start_cycle(self, body: Any = None) -> tuple[int, Any]:
        """`POST /api/retrain` with `body` (a JSON value, or bytes sent as they are; none: `{}`): 202 with the
        id and the status and terminate routes (no key in them), 409 when the ticker is busy, 400 for bad input."""
        return http_json("POST", self.url("/api/retrain"), {} if body is None else body, self.timeout)

    def cycle_status_url(self, instance_id: str) -> str:
        return self.url(f"/api/retrain/{urllib.parse.quote(instance_id, safe='')}")

    def cycle_status(self, instance_id: str) -> tuple[int, Any]:
        """`GET /api/retrain/{id}`: the readable status (404 until the instance is visible)."""
        return http_json("GET", self.cycle_status_url(instance_id), timeout=self.timeout)

    def follow_cycle(
        self,
        instance_id: str,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Poll the readable status until the orchestration ends; `on_status` sees every status read."""
        return follow_status(self.cycle_status_url(instance_id), on_status, poll_s, timeout_s)

    # -- the monitor -------------------------------------------------------------------------------
    def start_monitor(self, body: Any) -> tuple[int, Any]:
        """`POST /api/monitor`: 202 with `statusQueryGetUri` (`GET /api/monitor/{id}`, add the function key)."""
        return http_json("POST", self.url("/api/monitor"), body, self.timeout)

    # -- the Durable HTTP API ----------------------------------------------------------------------
    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> int:
        """Raise `event_name` on an instance through the Durable HTTP API (the system key); the status."""
        if not self.system_key:
            raise HostClientError("raising an event needs the durabletask_extension system key")
        url = with_code(
            f"{self.base_url}/runtime/webhooks/durabletask/instances/"
            f"{urllib.parse.quote(instance_id, safe='')}/raiseEvent/{urllib.parse.quote(event_name, safe='')}",
            self.system_key,
        )
        code, _ = http_json("POST", url, data, self.timeout)
        return code


def follow_status(
    status_url: str,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Poll a readable status URL (`runtime_status`) until the orchestration ends, and return the status."""
    started = time.monotonic()
    while True:
        code, status = http_json("GET", status_url)
        if code == 200 and isinstance(status, dict):
            if on_status is not None:
                on_status(status)
            if status.get("runtime_status") in TERMINAL_RUNTIME_STATUSES:
                return status
        elif code != 404:  # 404: not yet visible
            raise HostClientError(f"status {status_url} answered {code}: {status}")
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise HostClientError(f"gave up following {status_url} after {timeout_s:.0f}s")
        time.sleep(poll_s)
