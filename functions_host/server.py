"""The local Functions host's HTTP surface on 127.0.0.1, mirroring the Azure Functions host:

- HTTP triggers at `/<routePrefix>/<route>` (route parameters, methods and auth levels from the decorators);
- the Event Grid webhook `POST /runtime/webhooks/eventgrid?functionName=<name>` (system key);
- the Durable Functions HTTP API under `/runtime/webhooks/durabletask/` (system key), and the same API
  under the extension's RPC base URL (`/durabletask/<token>/`), which the Durable SDK client calls.

`HostRouter` is the pure request -> response part; `HostHTTPServer` is the thin stdlib threaded server,
hardened for a hostile local caller: socket timeouts for idle and slow clients, a bounded number of
worker threads, a listen backlog for bursts, 400 for malformed framing and JSON nested too deeply, and
echoed values truncated.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from functions_host.durable import (
    FunctionNotFoundError,
    InstanceExistsError,
    InstanceGone,
    InstanceNotFound,
    InstanceStillRunning,
)
from functions_host.functions import (
    EVENT_GRID_TRIGGER,
    HTTP_TRIGGER,
    BindingDecodeError,
    FunctionIndex,
    HttpRequestData,
    HttpResult,
    IndexedFunction,
)
from functions_host.keys import DURABLE_EXTENSION, EVENTGRID_EXTENSION, HostKeys

log = logging.getLogger("functions_host.server")

DURABLE_WEBHOOK_PATH = "/runtime/webhooks/durabletask"
EVENTGRID_WEBHOOK_PATH = "/runtime/webhooks/eventgrid"
_TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit
MAX_JSON_DEPTH = 64  # System.Text.Json's default MaxDepth, which the .NET host and extensions apply
MAX_EVENTS_PER_BATCH = 5000  # Event Grid delivers at most 5,000 events per batch
MAX_ECHO_CHARS = 120  # a value quoted back in an error message is cut to this
# A worker is held by a connection until it sends its request, so these bound what slow clients cost:
# with 300 connections that never finish, a normal request waited ~120 s at 30 s / 64 threads, ~20 s
# at 10 s / 128 threads (measured; local callers send their request at once).
SOCKET_TIMEOUT_S = 10.0  # an idle or stalled client is dropped after this long without a byte
BODY_DEADLINE_S = 60.0  # the whole body must arrive within this, however slowly it trickles
MAX_WORKER_THREADS = 128  # connections served at once; more wait in the listen backlog
LISTEN_BACKLOG = 512


class DurableBackend(Protocol):
    def start_new(
        self, name: str, instance_id: str | None, input_json: str | None, version: str | None = None
    ) -> str: ...
    def raise_event(self, instance_id: str, event_name: str, data_json: str | None) -> None: ...
    def terminate(self, instance_id: str, reason: str | None) -> None: ...
    def suspend(self, instance_id: str, reason: str | None) -> None: ...
    def resume(self, instance_id: str, reason: str | None) -> None: ...
    def purge(self, instance_id: str) -> int: ...
    def get_status(
        self,
        instance_id: str,
        *,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = True,
    ) -> dict | None: ...
    def list_instances(
        self,
        runtime_status: list[str] | None = None,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[dict]: ...
    def purge_matching(
        self,
        created_from: datetime,
        created_to: datetime | None = None,
        runtime_status: list[str] | None = None,
    ) -> int: ...


# --------------------------------------------------------------------------------------------------------
# Requests, responses


@dataclass
class Request:
    method: str
    path: str  # percent-encoded path, without the query
    query: dict[str, str]  # first value of each parameter
    headers: Mapping[str, str]  # case-insensitive lookups via `header()`
    body: bytes
    origin: str  # scheme://host:port the client addressed

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lname), default)

    @property
    def url(self) -> str:
        qs = urllib.parse.urlencode(self.query)
        return f"{self.origin}{self.path}" + (f"?{qs}" if qs else "")


def _json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> HttpResult:
    body = json.dumps(payload).encode()
    return HttpResult(status, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])], body)


def _text(status: int, message: str) -> HttpResult:
    return HttpResult(status, [("Content-Type", "text/plain; charset=utf-8")], message.encode())


def _error(status: int, message: str, exception_message: str | None = None) -> HttpResult:
    # the shape of ASP.NET's CreateErrorResponse, which the Durable SDK reads (`ExceptionMessage`)
    return _json_response(status, {"Message": message, "ExceptionMessage": exception_message or message})


def shown(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)` cut to `limit` characters: error messages never echo a huge value back."""
    text = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_nesting_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays/objects deeper than `limit` (brackets inside strings don't count).
    Checked before parsing: Python's parser would raise RecursionError (a 500) on deep input. Runs at C
    speed (count, regex, translate, accumulate), so a large body costs little."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > limit


def _too_deep(request: Request) -> HttpResult | None:
    """A 400 for a body nested too deeply, checked only once the caller's key was accepted (the check
    reads the whole body)."""
    if json_nesting_exceeds(request.body):
        return _text(
            400,
            f"Bad Request: the JSON body nests deeper than {MAX_JSON_DEPTH} levels; send a flatter document",
        )
    return None


# --------------------------------------------------------------------------------------------------------
# Route templates (ASP.NET style, as the Functions host uses)

_CONSTRAINTS: dict[str, str] = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "float": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?",
}
_PARAM = re.compile(r"^\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)((?::[^{}?=]+)*)(\?)?(?:=([^{}]*))?\}$")


class RouteError(ValueError):
    pass


@dataclass
class RouteTemplate:
    template: str
    regex: re.Pattern[str]
    checks: dict[str, list[Callable[[str], bool]]]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if not m:
            return None
        params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items() if v is not None}
        for name, checks in self.checks.items():
            if name in params and not all(check(params[name]) for check in checks):
                return None
        return params


def _constraint(spec: str, template: str) -> tuple[str | None, Callable[[str], bool] | None]:
    name, _, arg = spec.partition("(")
    arg = arg[:-1] if arg.endswith(")") else arg
    if name in _CONSTRAINTS:
        return _CONSTRAINTS[name], None
    if name in ("min", "max", "range"):
        nums = [int(a) for a in arg.split(",")]
        lo, hi = (
            (nums[0], None) if name == "min" else (None, nums[0]) if name == "max" else (nums[0], nums[1])
        )
        return r"-?\d+", lambda v: (lo is None or int(v) >= lo) and (hi is None or int(v) <= hi)
    if name in ("minlength", "maxlength", "length"):
        nums = [int(a) for a in arg.split(",")]
        if name == "minlength":
            return None, lambda v: len(v) >= nums[0]
        if name == "maxlength":
            return None, lambda v: len(v) <= nums[0]
        return None, (lambda v: nums[0] <= len(v) <= nums[1]) if len(nums) == 2 else (
            lambda v: len(v) == nums[0]
        )
    if name == "regex":
        pattern = re.compile(arg)
        return None, lambda v: pattern.search(v) is not None
    raise RouteError(
        f"route {template!r}: unknown constraint {name!r} (use int, long, bool, alpha, guid, float, "
        f"double, decimal, datetime, min, max, range, minlength, maxlength, length or regex)"
    )


def compile_route(template: str, prefix: str = "api") -> RouteTemplate:
    """Compile `/<prefix>/<template>`: `{x}`, `{x?}`, `{x:int}`, `{x:int?}`, `{x=default}`, `{*rest}`."""
    segments = [s for s in f"{prefix.strip('/')}/{template.strip('/')}".split("/") if s]
    pattern = ""
    checks: dict[str, list[Callable[[str], bool]]] = {}
    precedence: list[int] = []
    for index, seg in enumerate(segments):
        m = _PARAM.match(seg)
        if not m:
            if "{" in seg or "}" in seg:
                raise RouteError(
                    f"route {template!r}: segment {seg!r} mixes text and parameters; "
                    "use whole-segment parameters like {name}"
                )
            pattern += "/" + re.escape(urllib.parse.quote(seg, safe="!$&'()*+,;=:@-._~"))
            precedence.append(0)
            continue
        catch_all, name, constraints, optional, default = m.groups()
        value_re = "[^/]+"
        name_checks: list[Callable[[str], bool]] = []
        for spec in filter(None, constraints.split(":")):
            regex, check = _constraint(spec, template)
            value_re = regex or value_re
            if check:
                name_checks.append(check)
        if name_checks:
            checks[name] = name_checks
        if catch_all:
            if index != len(segments) - 1:
                raise RouteError(f"route {template!r}: a catch-all parameter must be the last segment")
            pattern += f"(?:/(?P<{name}>.*))?"
            precedence.append(4)
        elif optional or default is not None:
            if index != len(segments) - 1 and not all(
                _PARAM.match(s) and ("?" in s or "=" in s) for s in segments[index + 1 :]
            ):
                raise RouteError(
                    f"route {template!r}: an optional parameter can only be followed by optional ones"
                )
            pattern += f"(?:/(?P<{name}>{value_re}))?"
            precedence.append(3)
        else:
            pattern += f"/(?P<{name}>{value_re})"
            precedence.append(1 if name_checks or constraints else 2)
    return RouteTemplate(template, re.compile(f"^{pattern}/?$", re.IGNORECASE), checks, tuple(precedence))


# --------------------------------------------------------------------------------------------------------
# The durable client binding and the management URLs


@dataclass(frozen=True)
class DurableUrls:
    base_url: str  # http://127.0.0.1:<port>, the host's own configured address
    system_key: str  # the Durable extension's system key: it opens the Durable HTTP API only
    rpc_token: str
    hub_name: str = "TestHubName"
    connection: str = "Storage"

    @property
    def webhook_base(self) -> str:
        return f"{self.base_url}{DURABLE_WEBHOOK_PATH}"

    @property
    def rpc_base(self) -> str:
        return f"{self.base_url}/durabletask/{self.rpc_token}/"

    def _suffix(self) -> str:
        return urllib.parse.urlencode(
            {"taskHub": self.hub_name, "connection": self.connection, "code": self.system_key}
        )

    def management_payload(self, instance_id: str) -> dict[str, str]:
        """The extension's HttpManagementPayload (what create_check_status_response returns), built from
        the host's configured address (never a request's Host header) with the Durable extension's key."""
        base = f"{self.base_url}{DURABLE_WEBHOOK_PATH}"
        prefix = f"{base}/instances/{urllib.parse.quote(instance_id, safe='')}"
        q = self._suffix()
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{q}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{q}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{q}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{q}",
            "purgeHistoryDeleteUri": f"{prefix}?{q}",
            "restartPostUri": f"{prefix}/restart?{q}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{q}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{q}",
        }

    def client_binding_json(self, task_hub: str | None = None) -> str:
        """The JSON the Durable extension hands a `durable_client_input` parameter."""
        prefix = f"{self.webhook_base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        q = self._suffix()
        urls = self if not task_hub else DurableUrls(self.base_url, self.system_key, self.rpc_token, task_hub)
        return json.dumps(
            {
                "taskHubName": urls.hub_name,
                "creationUrls": {
                    "createNewInstancePostUri": f"{prefix}?{q}",
                    "createAndWaitOnNewInstancePostUri": f"{prefix}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{q}",
                },
                "managementUrls": urls.management_payload("INSTANCEID"),
                "baseUrl": self.webhook_base,
                "requiredQueryStringParameters": urllib.parse.urlencode({"code": self.system_key}),
                "rpcBaseUrl": self.rpc_base,
                "httpBaseUrl": f"{self.webhook_base}/",
                "maxGrpcMessageSizeInBytes": 0,
                "grpcHttpClientTimeout": "00:01:40",
            }
        )


# --------------------------------------------------------------------------------------------------------
# The router


@dataclass
class HttpRoute:
    function: IndexedFunction
    template: RouteTemplate


def _bool_param(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    return value.strip().lower() == "true" if value.strip().lower() in ("true", "false") else default


def _as_input_json(body: bytes) -> str | None:
    """Request body -> the JSON text the orchestrator will see (the SDK client double-encodes its JSON)."""
    if not body.strip():
        return None
    value = json.loads(body)
    if isinstance(value, str):
        try:
            json.loads(value)
            return value  # the SDK client's JSON text, wrapped once more by aiohttp
        except ValueError:
            return json.dumps(value)
    return json.dumps(value)


class HostRouter:
    def __init__(
        self,
        index: FunctionIndex,
        keys: HostKeys,
        urls: DurableUrls,
        engine: DurableBackend | None,
        route_prefix: str = "api",
    ) -> None:
        self.index = index
        self.keys = keys
        self.urls = urls
        self.engine = engine
        self.route_prefix = route_prefix
        routes = [HttpRoute(f, compile_route(f.route, route_prefix)) for f in index.by_trigger(HTTP_TRIGGER)]
        self.routes = sorted(routes, key=lambda r: r.template.precedence)

    # -- entry ------------------------------------------------------------------------------------
    def handle(self, request: Request) -> HttpResult:
        path = request.path
        try:
            if path == EVENTGRID_WEBHOOK_PATH or path.startswith(EVENTGRID_WEBHOOK_PATH + "/"):
                return self._event_grid(request)
            if path == DURABLE_WEBHOOK_PATH or path.startswith(DURABLE_WEBHOOK_PATH + "/"):
                if not self._authorized_extension(request, DURABLE_EXTENSION):
                    return _text(
                        401,
                        "Unauthorized: the Durable Task webhook needs the durabletask_extension system key "
                        "or the master key (x-functions-key header or code query parameter)",
                    )
                return _too_deep(request) or self._durable(request, path[len(DURABLE_WEBHOOK_PATH) :])
            rpc_prefix = f"/durabletask/{self.urls.rpc_token}"
            if path == rpc_prefix or path.startswith(rpc_prefix + "/"):
                return _too_deep(request) or self._durable(request, path[len(rpc_prefix) :])
            if path in ("", "/"):
                return _text(200, "The local Functions host is running.")
            return self._http_trigger(request)
        except RecursionError:
            return _text(400, "Bad Request: the input nests too deeply; send a flatter document")
        except Exception as exc:  # noqa: BLE001 - the host answers 500, never drops the connection
            log.error("unhandled error on %s %s\n%s", request.method, shown(path), traceback.format_exc())
            return _text(500, f"Internal Server Error: {type(exc).__name__}: {shown(str(exc), 300)}")

    @staticmethod
    def _provided_key(request: Request) -> str | None:
        return request.header("x-functions-key") or request.query.get("code")

    def _authorized(self, request: Request, level: str) -> bool:
        return self.keys.allows(self._provided_key(request), level)

    def _authorized_extension(self, request: Request, extension: str) -> bool:
        return self.keys.allows_extension(self._provided_key(request), extension)

    # -- HTTP triggers ----------------------------------------------------------------------------
    def _http_trigger(self, request: Request) -> HttpResult:
        matched = [(r, p) for r in self.routes if (p := r.template.match(request.path)) is not None]
        allowed = [(r, p) for r, p in matched if request.method in (r.function.methods or ALL_METHODS)]
        if not allowed:
            # Azure's routing answers 404 for a known route with another method (azure-functions-host#10098)
            return _text(404, f"Not Found: no function at {request.method} {shown(request.path)}")
        route, params = allowed[0]
        level = route.function.auth_level
        if not self._authorized(request, "admin" if level in ("admin", "system") else level):
            return _text(
                401,
                f"Unauthorized: function {route.function.name!r} needs a "
                f"{'system' if level in ('admin', 'system') else 'function'} key "
                "(x-functions-key header or code query parameter)",
            )
        if (too_deep := _too_deep(request)) is not None:
            return too_deep
        data = HttpRequestData(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            query=dict(request.query),
            route_params=params,
            body=request.body,
        )
        try:
            return self.index.invoke_http(route.function.name, data)
        except Exception as exc:  # noqa: BLE001 - a failing function is a 500, as in Azure
            log.error("Executed 'Functions.%s' (Failed)\n%s", route.function.name, traceback.format_exc())
            return _text(
                500,
                f"Exception while executing function: Functions.{route.function.name} -> "
                f"{type(exc).__name__}: {shown(str(exc), 300)}",
            )

    # -- Event Grid -------------------------------------------------------------------------------
    def _event_grid(self, request: Request) -> HttpResult:
        if request.method == "OPTIONS":  # CloudEvents webhook abuse-protection handshake
            if not self._authorized_extension(request, EVENTGRID_EXTENSION):
                return _text(
                    401, "Unauthorized: the Event Grid webhook needs the eventgrid_extension system key"
                )
            origin = request.header("WebHook-Request-Origin") or "*"
            return HttpResult(
                200,
                [
                    ("WebHook-Allowed-Origin", origin),
                    ("WebHook-Allowed-Rate", "*"),
                    ("Allow", "POST, OPTIONS"),
                ],
            )
        if request.method != "POST":
            return HttpResult(405, [("Allow", "POST, OPTIONS")], b"the Event Grid webhook takes POST")
        if not self._authorized_extension(request, EVENTGRID_EXTENSION):
            return _text(
                401,
                "Unauthorized: the Event Grid webhook needs the eventgrid_extension system key or the "
                "master key (code query parameter or x-functions-key header)",
            )
        if (too_deep := _too_deep(request)) is not None:
            return too_deep
        name = request.query.get("functionName", "")
        fn = self.index.functions.get(name)
        if fn is None or fn.trigger_type != EVENT_GRID_TRIGGER:
            known = ", ".join(f.name for f in self.index.by_trigger(EVENT_GRID_TRIGGER)) or "none"
            return _text(404, f"cannot find function: {shown(name)} (Event Grid trigger functions: {known})")
        event_type = (request.header("aeg-event-type") or "").strip()
        binary_ce = request.header("ce-specversion") is not None
        if event_type.lower() == "subscriptionvalidation":
            return self._validation_handshake(request.body)
        if event_type.lower() == "unsubscribe":
            return HttpResult(202)
        if event_type and event_type.lower() != "notification":
            return _text(
                400,
                f"aeg-event-type {shown(event_type)} is not supported; send SubscriptionValidation, "
                "Notification or Unsubscribe",
            )
        try:
            events = _binary_cloud_event(request) if binary_ce else _parse_events(request.body)
        except ValueError as exc:
            return _text(400, f"Bad Request: {exc}")
        if not event_type and not binary_ce and not all("specversion" in e for e in events):
            return _text(
                400,
                "missing header aeg-event-type: send 'aeg-event-type: Notification' with Event Grid "
                "events (CloudEvents may come without it)",
            )
        if len(events) > MAX_EVENTS_PER_BATCH:
            return _text(
                413,
                f"Payload Too Large: {len(events)} events in one batch; Event Grid sends at most "
                f"{MAX_EVENTS_PER_BATCH}: split the batch",
            )
        for position, event in enumerate(events):
            try:
                self.index.invoke_event_grid(name, event)
            except BindingDecodeError as exc:
                # A malformed event never gets better: acknowledge it (a 5xx would make Event Grid retry
                # it for a day) and say so in the log.
                log.warning(
                    "Functions.%s: acknowledged and skipped malformed event %d (id %s): %s",
                    name,
                    position,
                    shown(event.get("id")),
                    shown(str(exc), 300),
                )
            except Exception as exc:  # noqa: BLE001 - Event Grid retries on a 5xx
                log.error("Executed 'Functions.%s' (Failed)\n%s", name, traceback.format_exc())
                return _text(
                    500,
                    f"Exception while executing function: Functions.{name} -> {type(exc).__name__}: "
                    f"{shown(str(exc), 300)}",
                )
        return HttpResult(202)

    @staticmethod
    def _validation_handshake(body: bytes) -> HttpResult:
        try:
            events = json.loads(body)
            first = events[0] if isinstance(events, list) else events
            code = first["data"]["validationCode"]
            if not isinstance(code, str):
                raise TypeError("validationCode is not a string")
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            return _text(
                400,
                f"Bad Request: a SubscriptionValidation body is a JSON array whose first event has "
                f"data.validationCode ({exc})",
            )
        return _json_response(200, {"validationResponse": code})

    # -- Durable Functions HTTP API -------------------------------------------------------------
    def _durable(self, request: Request, rest: str) -> HttpResult:
        if self.engine is None:
            return _text(503, "the durable engine is not running")
        parts = [urllib.parse.unquote(p) for p in rest.strip("/").split("/")] if rest.strip("/") else []
        method = request.method
        if parts[:1] == ["orchestrators"] and len(parts) in (2, 3):
            if method != "POST":
                return _text(404, "Not Found: start an orchestration with POST")
            return self._start(request, parts[1], parts[2] if len(parts) == 3 else None)
        if parts[:1] != ["instances"]:
            return _text(404, f"Not Found: {shown(request.path)}")
        if len(parts) == 1:
            if method not in ("GET", "DELETE"):
                return _text(404, "Not Found")
            statuses = [s for s in request.query.get("runtimeStatus", "").split(",") if s] or None
            try:
                created_from = _time_param(request.query, "createdTimeFrom")
                created_to = _time_param(request.query, "createdTimeTo")
                if method == "DELETE":
                    return self._purge_matching(created_from, created_to, statuses)
                instances = self.engine.list_instances(
                    statuses, created_from=created_from, created_to=created_to
                )
            except ValueError as exc:
                return _error(400, str(exc))
            prefix = request.query.get("instanceIdPrefix", "")
            return _json_response(200, [i for i in instances if i["instanceId"].startswith(prefix)])
        instance_id = parts[1]
        if len(parts) == 2:
            if method == "GET":
                return self._status(request, instance_id)
            if method == "DELETE":
                return self._purge(instance_id)
            return _text(404, "Not Found")
        if method != "POST":
            return _text(404, "Not Found")
        operation = parts[2].lower()
        if operation == "raiseevent" and len(parts) == 4:
            return self._raise_event(request, instance_id, parts[3])
        if operation == "terminate" and len(parts) == 3:
            return self._terminate(request, instance_id)
        if operation in ("suspend", "resume") and len(parts) == 3:
            return self._suspend_or_resume(request, instance_id, operation)
        if operation in ("rewind", "restart") and len(parts) == 3:
            return _text(
                501,
                f"{parts[2]} is not supported by the local host; supported: status, raiseEvent, terminate, "
                "suspend, resume, purge (DELETE)",
            )
        return _text(404, "Not Found")

    def _start(self, request: Request, name: str, instance_id: str | None) -> HttpResult:
        assert self.engine is not None
        if not self.index.has_function("orchestrator", name):
            known = ", ".join(sorted(self.index.orchestrators)) or "none"
            return _error(
                400,
                "One or more of the arguments submitted is incorrect",
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function. "
                f"Known orchestrator functions: {known}.",
            )
        if instance_id is not None and (
            not instance_id
            or len(instance_id) > 256
            or any(c in instance_id for c in "/\\#?")
            or not instance_id.isprintable()
        ):
            return _error(
                400,
                f"Invalid instance id {shown(instance_id)}: use up to 256 printable characters "
                "without / \\ # ?",
            )
        try:
            input_json = _as_input_json(request.body)
        except ValueError as exc:
            return _error(400, "Invalid JSON content", str(exc))
        try:
            # `version` is how the SDK's start_new(..., version=) sends it; absent: host.json's defaultVersion
            new_id = self.engine.start_new(name, instance_id, input_json, request.query.get("version"))
        except InstanceExistsError as exc:
            return _error(409, str(exc) or f"An instance with ID '{instance_id}' already exists.")
        except (FunctionNotFoundError, ValueError) as exc:
            return _error(400, "One or more of the arguments submitted is incorrect", str(exc))
        payload = self.urls.management_payload(new_id)
        return _json_response(
            202, payload, [("Location", payload["statusQueryGetUri"]), ("Retry-After", "10")]
        )

    def _status(self, request: Request, instance_id: str) -> HttpResult:
        assert self.engine is not None
        q = request.query
        status = self.engine.get_status(
            instance_id,
            show_history=_bool_param(q, "showHistory", False),
            show_history_output=_bool_param(q, "showHistoryOutput", False),
            show_input=_bool_param(q, "showInput", True),
        )
        if status is None:
            # The extension answers an unknown id with an empty 404, which the SDK's get_status reads as
            # "not found"; a text body would make it fail to parse.
            return HttpResult(404, [], b"")
        runtime = status.get("runtimeStatus")
        if runtime in ("Running", "Pending", "ContinuedAsNew", "Suspended"):
            return _json_response(202, status, [("Location", request.url), ("Retry-After", "5")])
        if runtime == "Failed" and _bool_param(q, "returnInternalServerErrorOnFailure", False):
            return _json_response(500, status)
        return _json_response(200, status)

    def _raise_event(self, request: Request, instance_id: str, event_name: str) -> HttpResult:
        assert self.engine is not None
        status = self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return _text(404, f"No instance with ID {shown(instance_id)} found.")
        if status.get("runtimeStatus") in _TERMINAL:
            return _text(
                410, f"Instance with ID {shown(instance_id)} is gone: it is {status.get('runtimeStatus')}"
            )
        media = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            return _error(400, "Only application/json request content is supported")
        try:
            data_json = _as_input_json(request.body)
        except ValueError as exc:
            return _error(400, "Invalid JSON content", str(exc))
        try:
            self.engine.raise_event(instance_id, event_name, data_json)
        except InstanceNotFound:
            return _text(404, f"No instance with ID {shown(instance_id)} found.")
        except ValueError as exc:
            return _error(400, str(exc))
        return HttpResult(202)

    def _terminate(self, request: Request, instance_id: str) -> HttpResult:
        assert self.engine is not None
        status = self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return _text(404, f"No instance with ID {shown(instance_id)} found.")
        if status.get("runtimeStatus") in _TERMINAL:
            return _text(
                410, f"Instance with ID {shown(instance_id)} is already {status.get('runtimeStatus')}"
            )
        try:
            self.engine.terminate(instance_id, request.query.get("reason"))
        except InstanceNotFound:
            return _text(404, f"No instance with ID {shown(instance_id)} found.")
        return HttpResult(202)

    def _suspend_or_resume(self, request: Request, instance_id: str, operation: str) -> HttpResult:
        assert self.engine is not None
        act = self.engine.suspend if operation == "suspend" else self.engine.resume
        try:
            act(instance_id, request.query.get("reason"))
        except InstanceNotFound:
            return _text(404, f"No instance with ID '{instance_id}' found.")
        except InstanceGone as exc:  # the SDK's suspend/resume accept 410 for a finished instance
            return _text(410, str(exc))
        return HttpResult(202)

    def _purge_matching(
        self, created_from: datetime | None, created_to: datetime | None, statuses: list[str] | None
    ) -> HttpResult:
        assert self.engine is not None
        if created_from is None:  # the extension's answer (HandleDeleteHistoryWithFiltersRequestAsync)
            return _json_response(400, "Please provide value for 'createdTimeFrom' parameter.")
        deleted = self.engine.purge_matching(created_from, created_to, statuses)
        if not deleted:  # read by the SDK's purge_instance_history_by as "0 instances deleted"
            return HttpResult(404, [], b"")
        return _json_response(200, {"instancesDeleted": deleted})

    def _purge(self, instance_id: str) -> HttpResult:
        assert self.engine is not None
        try:
            deleted = self.engine.purge(instance_id)
        except InstanceStillRunning as exc:  # the extension answers 412 with the message as a JSON string
            return _json_response(412, str(exc))
        if not deleted:  # the SDK's purge_instance_history reads 404 as "0 instances deleted"
            return HttpResult(404, [], b"")
        return _json_response(200, {"instancesDeleted": deleted})


def _time_param(query: Mapping[str, str], name: str) -> datetime | None:
    """createdTimeFrom/To: ISO 8601 as the SDK sends them ("%Y-%m-%dT%H:%M:%S.%fZ"); naive means UTC."""
    value = query.get(name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{name} {value!r} is not a date and time: send ISO 8601, e.g. 2024-05-01T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_events(body: bytes) -> list[dict]:
    """An Event Grid notification body: an array (Event Grid schema, or a CloudEvents batch) or one CloudEvent."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"the body is not JSON ({exc}); send a JSON array of Event Grid events or a CloudEvent"
        ) from None
    events = payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else None
    if not events or not all(isinstance(e, dict) for e in events):
        raise ValueError(
            "send a non-empty JSON array of event objects (Event Grid schema) or a CloudEvents 1.0 "
            "object/batch"
        )
    for i, event in enumerate(events):
        required = (
            ("specversion", "id", "source", "type")
            if "specversion" in event
            else ("id", "subject", "eventType", "eventTime", "data")
        )
        missing = [k for k in required if k not in event]
        if missing:
            schema = "CloudEvents 1.0" if "specversion" in event else "Event Grid"
            raise ValueError(f"event {i} lacks {', '.join(missing)} (required by the {schema} schema)")
    return events


def _binary_cloud_event(request: Request) -> list[dict]:
    """A CloudEvent in binary content mode: attributes in `ce-*` headers, the body is the data."""
    event: dict[str, Any] = {}
    for key, value in request.headers.items():
        if key.lower().startswith("ce-"):
            event[key[3:].lower()] = value
    missing = [k for k in ("specversion", "id", "source", "type") if k not in event]
    if missing:
        raise ValueError(f"binary-mode CloudEvent lacks header(s) {', '.join('ce-' + k for k in missing)}")
    content_type = request.header("Content-Type") or ""
    if content_type:
        event["datacontenttype"] = content_type
    if request.body:
        try:
            event["data"] = json.loads(request.body) if "json" in content_type else request.body.decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"the CloudEvent data is not valid {content_type or 'text'} ({exc})") from None
    return [event]


# --------------------------------------------------------------------------------------------------------
# The stdlib server


class _BadFraming(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: HostHTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: nothing outlives stop()
    timeout = SOCKET_TIMEOUT_S  # StreamRequestHandler sets it on the socket: idle/stalled clients go

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise _BadFraming(411, "Length Required: send the body with a Content-Length header")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        if len(set(values)) > 1:
            raise _BadFraming(400, "Bad Request: conflicting Content-Length headers; send one")
        raw = values[0].strip()
        if not raw.isdigit() or len(raw) > 15:
            raise _BadFraming(
                400, f"Bad Request: Content-Length {shown(raw)} is not a byte count; send a whole number"
            )
        length = int(raw)
        if length > MAX_BODY_BYTES:
            raise _BadFraming(
                413, f"Payload Too Large: {length} bytes; the host takes at most {MAX_BODY_BYTES} bytes"
            )
        return length

    def _read_body(self, length: int) -> bytes:
        """Exactly `length` bytes within BODY_DEADLINE_S (a trickling client cannot pin a thread)."""
        deadline = time.monotonic() + BODY_DEADLINE_S
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError("the body did not arrive in time")
            chunk = self.rfile.read1(min(remaining, 1 << 16)) if hasattr(self.rfile, "read1") else b""
            if not chunk:
                raise ConnectionError("the client closed the connection before sending the whole body")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _dispatch(self) -> None:
        try:
            length = self._content_length()
        except _BadFraming as exc:
            self.close_connection = True
            self._send(_text(exc.status, str(exc)))
            return
        try:
            body = self._read_body(length) if length else b""
        except (TimeoutError, OSError):
            self.close_connection = True  # a slow or vanished client: nothing to answer
            return
        parsed = urllib.parse.urlsplit(self.path)
        request = Request(
            method=self.command.upper(),
            path=parsed.path or "/",
            query=dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)),
            headers={k: v for k, v in self.headers.items()},
            body=body,
            origin=self.server.base_url,  # the host's own address, never the request's Host header
        )
        self._send(self.server.router.handle(request))

    def _send(self, result: HttpResult) -> None:
        self.send_response(result.status)
        names = {k.lower() for k, _ in result.headers}
        for key, value in result.headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        if "content-type" not in names and result.body:
            self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(result.body)))
        self.end_headers()
        if self.command != "HEAD" and result.body:
            self.wfile.write(result.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's framing errors (request line too long, bad version, too many headers) echo the
        # raw request line back; answer without it.
        super().send_error(code, message and shown(message, 200), explain and shown(explain, 200))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), shown(format % args, 300))


class HostHTTPServer(ThreadingHTTPServer):
    """The threaded stdlib server with a bound on worker threads: a connection waits in the listen
    backlog (LISTEN_BACKLOG) until one of MAX_WORKER_THREADS is free, and every socket times out."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        host: str,
        port: int,
        router: HostRouter | None = None,
        max_threads: int = MAX_WORKER_THREADS,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.router: HostRouter = router  # type: ignore[assignment] - set before serving
        self.base_url = f"http://{host}:{self.port}"
        self._slots = threading.BoundedSemaphore(max_threads)
        self._closing = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        # Wait for a free worker (the accept loop pauses; new connections queue in the backlog).
        while not self._slots.acquire(timeout=0.2):
            if self._closing.is_set():
                self.shutdown_request(request)
                return
        try:
            if isinstance(request, socket.socket):
                request.settimeout(SOCKET_TIMEOUT_S)
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        self._closing.set()
        super().shutdown()
