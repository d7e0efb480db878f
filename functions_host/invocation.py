"""Invoke indexed functions the way the Azure Functions Python worker does.

Inputs are turned into `azure.functions.meta.Datum`s shaped as the host sends them and decoded by the
converters registered in `azure.functions` (HttpRequestConverter, EventGridEventInConverter,
TimerRequestConverter, OrchestrationTriggerConverter, ActivityTriggerConverter, ...); results are encoded
by the same converters (HttpResponseConverter, the activity JSON codec). Sync functions run in the calling
thread; coroutines run on one long-lived event loop, as in the worker (the Durable SDK's aiohttp session is
bound to that loop).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import meta

from functions_host.indexing import (
    DURABLE_CLIENT,
    EVENT_GRID_TRIGGER,
    BindingDecodeError,
    BindingInfo,
    IndexedFunction,
    ParamType,
    UnknownFunctionError,
    _converter,
)

log = logging.getLogger("functions_host.invocation")


@dataclass
class HttpRequestData:
    method: str
    url: str  # absolute, with the query string
    headers: Mapping[str, str]
    query: Mapping[str, str]
    route_params: Mapping[str, str]
    body: bytes = b""


@dataclass
class HttpResult:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


# --------------------------------------------------------------------------------------------------------
# The worker's small helpers: Out, Context, the generic converter, the event loop


class _Out(func.Out):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _Context(func.Context):
    def __init__(self, function_name: str, directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._directory = directory
        self._tls = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class _LoopThread:
    """One process-wide event loop for async functions, as the worker has one loop per process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="functions-async-loop", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def run(cls, coro: Any, timeout: float | None = None) -> Any:
        loop = cls.loop()
        if threading.current_thread().name == "functions-async-loop":
            raise RuntimeError("cannot block the functions event loop on itself")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def close_durable_client_sessions() -> None:
    """Close the Durable SDK's shared aiohttp session (bound to our loop) so no connection outlives a host."""
    try:
        from azure.durable_functions.models.utils import http_utils
    except ImportError:  # pragma: no cover - the SDK is a dependency of every app we run
        return
    if getattr(http_utils, "_client_session", None) is not None and _LoopThread._loop is not None:
        try:
            _LoopThread.run(http_utils._close_session(), timeout=10)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            log.debug("closing the durable client session failed", exc_info=True)


# --------------------------------------------------------------------------------------------------------
# Invocation


class FunctionInvoker:
    """How `FunctionIndex` invokes each function through the worker's converters."""

    app_dir: Path
    functions: dict[str, IndexedFunction]
    orchestrators: dict[str, IndexedFunction]
    activities: dict[str, IndexedFunction]
    _client_binding: Callable[[BindingInfo], str] | None

    # -- the engine's entry points ------------------------------------------------------------------
    def run_orchestrator(self, name: str, context_json: str) -> str:
        """One orchestrator episode: the extension's context JSON in, the SDK's OrchestratorState JSON out."""
        fn = self._get(self.orchestrators, name, "orchestrator")
        ret, _ = self._invoke(fn, meta.Datum(type="string", value=context_json))
        if ret is None:
            raise RuntimeError(f"orchestrator {name!r} returned nothing; it must be an orchestration_trigger")
        return ret.value if isinstance(ret.value, str) else json.dumps(ret.value)

    def run_activity(self, name: str, input_json: str | None) -> str:
        """Run an activity: its JSON input in, its JSON output out; its exception propagates unchanged."""
        fn = self._get(self.activities, name, "activity")
        ret, _ = self._invoke(
            fn, meta.Datum(type="json", value=input_json if input_json is not None else "null")
        )
        return "null" if ret is None or ret.value is None else ret.value

    # -- triggers -----------------------------------------------------------------------------------
    def invoke_http(self, name: str, request: HttpRequestData) -> HttpResult:
        fn = self._get(self.functions, name, "function")
        datum = meta.Datum(
            type="http",
            value={
                "method": meta.Datum(type="string", value=request.method),
                "url": meta.Datum(type="string", value=request.url),
                "headers": {
                    k.lower(): meta.Datum(type="string", value=v) for k, v in request.headers.items()
                },
                "query": {k: meta.Datum(type="string", value=v) for k, v in request.query.items()},
                "params": {k: meta.Datum(type="string", value=v) for k, v in request.route_params.items()},
                "body": meta.Datum(type="bytes", value=request.body or b""),
            },
        )
        ret, outputs = self._invoke(fn, datum)
        response = ret if fn.return_type is not None and fn.return_type.binding == "http" else None
        if response is None:
            http_out = next((b.name for b in fn.bindings if b.type == "http" and b.direction == "out"), None)
            response = outputs.get(http_out) if http_out else None
        return _http_result(response)

    def invoke_event_grid(self, name: str, event: Mapping[str, Any]) -> None:
        fn = self._get(self.functions, name, "function")
        if fn.trigger_type != EVENT_GRID_TRIGGER:
            raise UnknownFunctionError(f"function {name!r} is not an Event Grid trigger")
        self._invoke(fn, meta.Datum(type="json", value=json.dumps(event)))

    def invoke_timer(self, name: str, *, past_due: bool, schedule_status: Mapping[str, str] | None) -> None:
        fn = self._get(self.functions, name, "function")
        payload = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": dict(schedule_status or {}) or None,
            "IsPastDue": past_due,
        }
        self._invoke(fn, meta.Datum(type="json", value=json.dumps(payload)))

    # -- the worker's invocation --------------------------------------------------------------------
    def _get(self, table: Mapping[str, IndexedFunction], name: str, kind: str) -> IndexedFunction:
        try:
            return table[name]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise UnknownFunctionError(
                f"no {kind} named {name!r} in {self.app_dir} (known: {known})"
            ) from None

    def _input_datum(self, fn: IndexedFunction, pname: str) -> meta.Datum | None:
        binding = next(b for b in fn.bindings if b.name == pname)
        if binding.type == DURABLE_CLIENT:
            if self._client_binding is None:
                raise RuntimeError(f"function {fn.name!r} needs a durable client: run it in a LocalHost")
            return meta.Datum(type="string", value=self._client_binding(binding))
        raise UnknownFunctionError(
            f"function {fn.name!r}: input binding type {binding.type!r} is not supported by the local host"
        )

    def _invoke(
        self, fn: IndexedFunction, trigger_datum: meta.Datum
    ) -> tuple[meta.Datum | None, dict[str, Any]]:
        args: dict[str, Any] = {}
        for pname, ptype in fn.input_types.items():
            is_trigger = pname == fn.trigger.name
            datum = trigger_datum if is_trigger else self._input_datum(fn, pname)
            try:
                args[pname] = _converter(ptype.binding).decode(datum, trigger_metadata={})
            except (ValueError, TypeError, KeyError) as exc:
                if not is_trigger:
                    raise
                raise BindingDecodeError(
                    f"function {fn.name!r}: its {ptype.binding} input cannot be decoded: "
                    f"{type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
        if fn.requires_context:
            args["context"] = _Context(fn.name, fn.directory)
        outs = {pname: _Out() for pname in fn.output_types}
        args.update(outs)

        if fn.is_async:
            result = _LoopThread.run(fn.func(**args))
        else:
            result = fn.func(**args)
            if inspect.isawaitable(result):  # a sync wrapper handing back a coroutine
                result = _LoopThread.run(result)

        if result is not None and fn.return_type is None:
            raise RuntimeError(f"function {fn.name!r} without a $return binding returned a non-None value")
        outputs = {
            pname: _encode(fn.output_types[pname], out.get())
            for pname, out in outs.items()
            if out.get() is not None
        }
        ret = None
        if fn.return_type is not None and (result is not None or fn.return_type.binding != "http"):
            ret = _encode(fn.return_type, result)
        return ret, outputs


def _encode(ptype: ParamType, obj: Any) -> meta.Datum:
    conv = _converter(ptype.binding)
    try:
        return conv.encode(obj, expected_type=ptype.pytype)
    except NotImplementedError:
        raise TypeError(
            f"unable to encode outgoing TypedData: unsupported type {ptype.binding!r} for Python type "
            f"{type(obj).__name__!r}"
        ) from None


def _http_result(datum: Any) -> HttpResult:
    """The host's rendering of an HTTP output binding value."""
    if datum is None:
        return HttpResult(status=204)
    if datum.type == "string":
        return HttpResult(200, [("Content-Type", "text/plain; charset=utf-8")], str(datum.value).encode())
    if datum.type == "bytes":
        return HttpResult(200, [("Content-Type", "application/octet-stream")], bytes(datum.value))
    if datum.type != "http":
        raise TypeError(f"unexpected HTTP output of type {datum.type!r}")
    value = datum.value
    headers = [(k, str(v.value)) for k, v in value["headers"].items()]
    for cookie in value.get("cookies") or []:
        for morsel in (
            SimpleCookie(cookie).values() if not isinstance(cookie, SimpleCookie) else cookie.values()
        ):
            headers.append(("Set-Cookie", morsel.OutputString()))
    body = value["body"].value if value.get("body") is not None else b""
    if isinstance(body, str):
        body = body.encode()
    return HttpResult(int(value["status_code"].value), headers, bytes(body or b""))
