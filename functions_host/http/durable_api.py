"""The Durable Functions HTTP API of the local Functions host, as the Durable extension serves it under
`/runtime/webhooks/durabletask/` (system key) and under its RPC base URL (`/durabletask/<token>/`, which
the Durable SDK client calls): start, status, list, raise event, terminate, suspend, resume, purge; and
the client binding and management URLs (`DurableUrls`) that `create_check_status_response` hands out."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from functions_host.durable import (
    DurableStoreUnavailable,
    FunctionNotFoundError,
    InstanceExistsError,
    InstanceGone,
    InstanceNotFound,
    InstanceStillRunning,
)
from functions_host.functions import FunctionIndex, HttpResult
from functions_host.http.messages import Request, error_response, json_response, shown, text_response

DURABLE_WEBHOOK_PATH = "/runtime/webhooks/durabletask"
_TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}


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


class DurableHttpApi:
    """The Durable HTTP API over a durable backend (`engine`; None until the durable engine runs: 503)."""

    def __init__(self, index: FunctionIndex, urls: DurableUrls, engine: DurableBackend | None) -> None:
        self.index = index
        self.urls = urls
        self.engine = engine

    def handle(self, request: Request, rest: str) -> HttpResult:
        if self.engine is None:
            return text_response(503, "the durable engine is not running")
        try:
            return self._handle(request, rest)
        except DurableStoreUnavailable as exc:  # the operator must act on the file; the caller may retry
            return error_response(503, "The durable store is unavailable", str(exc))

    def _handle(self, request: Request, rest: str) -> HttpResult:
        assert self.engine is not None
        parts = [urllib.parse.unquote(p) for p in rest.strip("/").split("/")] if rest.strip("/") else []
        method = request.method
        if parts[:1] == ["orchestrators"] and len(parts) in (2, 3):
            if method != "POST":
                return text_response(404, "Not Found: start an orchestration with POST")
            return self._start(request, parts[1], parts[2] if len(parts) == 3 else None)
        if parts[:1] != ["instances"]:
            return text_response(404, f"Not Found: {shown(request.path)}")
        if len(parts) == 1:
            if method not in ("GET", "DELETE"):
                return text_response(404, "Not Found")
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
                return error_response(400, str(exc))
            prefix = request.query.get("instanceIdPrefix", "")
            return json_response(200, [i for i in instances if i["instanceId"].startswith(prefix)])
        instance_id = parts[1]
        if len(parts) == 2:
            if method == "GET":
                return self._status(request, instance_id)
            if method == "DELETE":
                return self._purge(instance_id)
            return text_response(404, "Not Found")
        if method != "POST":
            return text_response(404, "Not Found")
        operation = parts[2].lower()
        if operation == "raiseevent" and len(parts) == 4:
            return self._raise_event(request, instance_id, parts[3])
        if operation == "terminate" and len(parts) == 3:
            return self._terminate(request, instance_id)
        if operation in ("suspend", "resume") and len(parts) == 3:
            return self._suspend_or_resume(request, instance_id, operation)
        if operation in ("rewind", "restart") and len(parts) == 3:
            return text_response(
                501,
                f"{parts[2]} is not supported by the local host; supported: status, raiseEvent, terminate, "
                "suspend, resume, purge (DELETE)",
            )
        return text_response(404, "Not Found")

    def _start(self, request: Request, name: str, instance_id: str | None) -> HttpResult:
        assert self.engine is not None
        if not self.index.has_function("orchestrator", name):
            known = ", ".join(sorted(self.index.orchestrators)) or "none"
            return error_response(
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
            return error_response(
                400,
                f"Invalid instance id {shown(instance_id)}: use up to 256 printable characters "
                "without / \\ # ?",
            )
        try:
            input_json = _as_input_json(request.body)
        except ValueError as exc:
            return error_response(400, "Invalid JSON content", str(exc))
        try:
            # `version` is how the SDK's start_new(..., version=) sends it; absent: host.json's defaultVersion
            new_id = self.engine.start_new(name, instance_id, input_json, request.query.get("version"))
        except InstanceExistsError as exc:
            return error_response(409, str(exc) or f"An instance with ID '{instance_id}' already exists.")
        except (FunctionNotFoundError, ValueError) as exc:
            return error_response(400, "One or more of the arguments submitted is incorrect", str(exc))
        payload = self.urls.management_payload(new_id)
        return json_response(
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
            return json_response(202, status, [("Location", request.url), ("Retry-After", "5")])
        if runtime == "Failed" and _bool_param(q, "returnInternalServerErrorOnFailure", False):
            return json_response(500, status)
        return json_response(200, status)

    def _raise_event(self, request: Request, instance_id: str, event_name: str) -> HttpResult:
        assert self.engine is not None
        status = self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return text_response(404, f"No instance with ID {shown(instance_id)} found.")
        if status.get("runtimeStatus") in _TERMINAL:
            return text_response(
                410, f"Instance with ID {shown(instance_id)} is gone: it is {status.get('runtimeStatus')}"
            )
        media = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            return error_response(400, "Only application/json request content is supported")
        try:
            data_json = _as_input_json(request.body)
        except ValueError as exc:
            return error_response(400, "Invalid JSON content", str(exc))
        try:
            self.engine.raise_event(instance_id, event_name, data_json)
        except InstanceNotFound:
            return text_response(404, f"No instance with ID {shown(instance_id)} found.")
        except ValueError as exc:
            return error_response(400, str(exc))
        return HttpResult(202)

    def _terminate(self, request: Request, instance_id: str) -> HttpResult:
        assert self.engine is not None
        status = self.engine.get_status(instance_id, show_input=False)
        if status is None:
            return text_response(404, f"No instance with ID {shown(instance_id)} found.")
        if status.get("runtimeStatus") in _TERMINAL:
            return text_response(
                410, f"Instance with ID {shown(instance_id)} is already {status.get('runtimeStatus')}"
            )
        try:
            self.engine.terminate(instance_id, request.query.get("reason"))
        except InstanceNotFound:
            return text_response(404, f"No instance with ID {shown(instance_id)} found.")
        return HttpResult(202)

    def _suspend_or_resume(self, request: Request, instance_id: str, operation: str) -> HttpResult:
        assert self.engine is not None
        act = self.engine.suspend if operation == "suspend" else self.engine.resume
        try:
            act(instance_id, request.query.get("reason"))
        except InstanceNotFound:
            return text_response(404, f"No instance with ID '{instance_id}' found.")
        except InstanceGone as exc:  # the SDK's suspend/resume accept 410 for a finished instance
            return text_response(410, str(exc))
        return HttpResult(202)

    def _purge_matching(
        self, created_from: datetime | None, created_to: datetime | None, statuses: list[str] | None
    ) -> HttpResult:
        assert self.engine is not None
        if created_from is None:  # the extension's answer (HandleDeleteHistoryWithFiltersRequestAsync)
            return json_response(400, "Please provide value for 'createdTimeFrom' parameter.")
        deleted = self.engine.purge_matching(created_from, created_to, statuses)
        if not deleted:  # read by the SDK's purge_instance_history_by as "0 instances deleted"
            return HttpResult(404, [], b"")
        return json_response(200, {"instancesDeleted": deleted})

    def _purge(self, instance_id: str) -> HttpResult:
        assert self.engine is not None
        try:
            deleted = self.engine.purge(instance_id)
        except InstanceStillRunning as exc:  # the extension answers 412 with the message as a JSON string
            return json_response(412, str(exc))
        if not deleted:  # the SDK's purge_instance_history reads 404 as "0 instances deleted"
            return HttpResult(404, [], b"")
        return json_response(200, {"instancesDeleted": deleted})
