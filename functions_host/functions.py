"""Index a `function_app.py` and invoke its functions the way the Azure Functions Python worker does.

Indexing: the module is imported from its directory, its one top-level `FunctionRegister` (FunctionApp /
DFApp) is asked for `get_functions()`, and each function's function.json (its trigger and bindings, as the
decorators wrote them) is read, with `%NAME%` references resolved from the app settings. Nothing here
knows the app's function names: triggers are found from the decorators.

Invocation: inputs are turned into `azure.functions.meta.Datum`s shaped as the host sends them and decoded
by the converters registered in `azure.functions` (HttpRequestConverter, EventGridEventInConverter,
TimerRequestConverter, OrchestrationTriggerConverter, ActivityTriggerConverter, ...); results are encoded
by the same converters (HttpResponseConverter, the activity JSON codec). Sync functions run in the calling
thread; coroutines run on one long-lived event loop, as in the worker (the Durable SDK's aiohttp session is
bound to that loop).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import re
import sys
import threading
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import meta

log = logging.getLogger("functions_host.functions")

HTTP_TRIGGER = "httpTrigger"
TIMER_TRIGGER = "timerTrigger"
EVENT_GRID_TRIGGER = "eventGridTrigger"
ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
ENTITY_TRIGGER = "entityTrigger"
DURABLE_CLIENT = "durableClient"
SUPPORTED_TRIGGERS = (
    HTTP_TRIGGER,
    TIMER_TRIGGER,
    EVENT_GRID_TRIGGER,
    ORCHESTRATION_TRIGGER,
    ACTIVITY_TRIGGER,
)
_GENERIC = "generic"
_SETTING_REF = re.compile(r"%([^%]+)%")


class FunctionLoadError(RuntimeError):
    """The function app cannot be indexed (the worker would refuse to load it too)."""


class BindingDecodeError(ValueError):
    """The trigger's input could not be converted to the function's parameter type (a malformed event,
    e.g. an eventTime that is not ISO 8601): the function never ran."""


class UnknownFunctionError(LookupError):
    """No function of that name and kind in the index."""


# --------------------------------------------------------------------------------------------------------
# Index model


@dataclass(frozen=True)
class BindingInfo:
    """One entry of a function's function.json `bindings`, with `%NAME%` settings resolved."""

    name: str
    type: str
    direction: str  # "in" / "out" / "inout"
    properties: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.properties.get(key, default)


@dataclass(frozen=True)
class ParamType:
    binding: str  # converter registry name ("httpTrigger", ..., or "generic" for str/bytes parameters)
    pytype: Any


@dataclass(frozen=True)
class IndexedFunction:
    name: str
    func: Callable[..., Any]
    trigger: BindingInfo
    bindings: tuple[BindingInfo, ...]
    is_async: bool
    requires_context: bool
    input_types: Mapping[str, ParamType]
    output_types: Mapping[str, ParamType]
    return_type: ParamType | None
    directory: str

    @property
    def trigger_type(self) -> str:
        return self.trigger.type

    @property
    def durable_name(self) -> str:
        """The name orchestrations/activities are called by (the decorator's override, else the function name)."""
        return self.trigger.get("orchestration") or self.trigger.get("activity") or self.name

    @property
    def auth_level(self) -> str:
        return str(self.trigger.get("authLevel") or "function").lower()

    @property
    def route(self) -> str:
        return self.trigger.get("route") or self.name

    @property
    def methods(self) -> tuple[str, ...] | None:
        methods = self.trigger.get("methods")
        return tuple(str(m).upper() for m in methods) if methods else None

    def binding_of_type(self, binding_type: str) -> BindingInfo | None:
        return next((b for b in self.bindings if b.type == binding_type and b is not self.trigger), None)


# --------------------------------------------------------------------------------------------------------
# HTTP data crossing the server <-> index boundary


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


class _GenericConverter:
    """The worker's `generic` binding (used for parameters annotated `str`/`bytes`, e.g. the durable client)."""

    @staticmethod
    def check_input_type_annotation(pytype: Any) -> bool:
        return pytype in (str, bytes)

    @staticmethod
    def check_output_type_annotation(pytype: Any) -> bool:
        return pytype in (str, bytes, bytearray)

    @staticmethod
    def decode(data: meta.Datum, *, trigger_metadata: Any) -> Any:
        if data is None or data.type is None:
            return None
        if data.type in ("string", "bytes", "json"):
            return data.value
        raise ValueError(f"unexpected type of data received for the generic binding: {data.type!r}")

    @staticmethod
    def encode(obj: Any, *, expected_type: Any) -> meta.Datum:
        if isinstance(obj, str):
            return meta.Datum(type="string", value=obj)
        if isinstance(obj, (bytes, bytearray)):
            return meta.Datum(type="bytes", value=bytes(obj))
        raise NotImplementedError


def _converter(binding: str) -> Any:
    if binding == _GENERIC:
        return _GenericConverter
    conv = meta.get_binding_registry().get(binding)
    if conv is None:
        raise UnknownFunctionError(
            f"no converter for binding type {binding!r} (not supported by the local host)"
        )
    return conv


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
# Loading and indexing


def load_function_app(app_path: str | Path) -> Any:
    """Import `function_app.py` (its directory on sys.path) and return its one top-level FunctionRegister."""
    path = Path(app_path).resolve()
    if path.is_dir():
        path = path / "function_app.py"
    if not path.is_file():
        raise FunctionLoadError(f"{path}: no such file; pass the path of a function_app.py")
    app_dir = str(path.parent)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    module_name = path.stem
    existing = sys.modules.get(module_name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
        module = existing  # already imported (e.g. a second host on the same app in this process)
    else:
        if existing is not None:  # another app of the same file name is loaded: keep both apart
            module_name = f"{path.stem}_{abs(hash(str(path))):x}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise FunctionLoadError(f"{path}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(module_name, None)
            raise
    registers = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    unique = list({id(r): r for r in registers}.values())
    if not unique:
        raise FunctionLoadError(
            f"{path}: could not find a top level function app instance (FunctionApp/DFApp)"
        )
    if len(unique) > 1:
        raise FunctionLoadError(f"{path}: more than one top level function app instance is defined")
    return unique[0]


def resolve_settings(
    value: Any, environ: Mapping[str, str], where: str, defaults: Mapping[str, str] | None = None
) -> Any:
    """Replace `%NAME%` app-setting references in a binding property, as the host does. A name missing from
    the environment falls back to `defaults` (the app's declared defaults; Azure gets every setting from
    the deployment's app settings)."""
    if not isinstance(value, str) or "%" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in environ:
            return environ[name]
        declared = (defaults or {}).get(name)
        if declared in (None, ""):
            raise FunctionLoadError(
                f"{where}: '%{name}%' does not resolve to a value; set {name} in the "
                f"environment or in local.settings.json Values"
            )
        return declared

    return _SETTING_REF.sub(sub, value)


def _binding_infos(
    function: Any, environ: Mapping[str, str], defaults: Mapping[str, str] | None = None
) -> list[BindingInfo]:
    name = function.get_function_name()
    infos = []
    for raw in json.loads(function.get_function_json())["bindings"]:
        props = {
            k: (
                v
                if k in ("name", "type")
                else resolve_settings(v, environ, f"function {name!r} {k}", defaults)
            )
            for k, v in raw.items()
        }
        infos.append(
            BindingInfo(
                name=raw["name"], type=raw["type"], direction=str(raw["direction"]).lower(), properties=props
            )
        )
    return infos


def _is_out_annotation(anno: Any) -> bool:
    origin = typing.get_origin(anno)
    target = origin if origin is not None else anno
    return isinstance(target, type) and target.__name__ == "Out"


def _has_implicit_output(binding_type: str) -> bool:
    conv = meta.get_binding_registry().get(binding_type)
    return bool(conv is not None and hasattr(conv, "has_implicit_output") and conv.has_implicit_output())


def index_function(
    function: Any, environ: Mapping[str, str], directory: str, defaults: Mapping[str, str] | None = None
) -> IndexedFunction:
    """Check one function's Python signature against its bindings, as the worker does at load time."""
    name = function.get_function_name()
    user_func = function.get_user_function()
    bindings = _binding_infos(function, environ, defaults)
    trigger_obj = function.get_trigger()
    trigger = next(
        (
            b
            for b in bindings
            if trigger_obj is not None
            and b.name == trigger_obj.name
            and b.type == trigger_obj.get_binding_name()
        ),
        None,
    )
    if trigger is None:
        raise FunctionLoadError(f"cannot load the {name} function: it has no trigger")

    def fail(msg: str) -> typing.NoReturn:
        raise FunctionLoadError(f"cannot load the {name} function: {msg}")

    params = dict(inspect.signature(user_func).parameters)
    try:
        annotations = typing.get_type_hints(user_func)
    except Exception:  # noqa: BLE001 - unresolvable string annotations: use what is there
        annotations = {
            k: v for k, v in getattr(user_func, "__annotations__", {}).items() if not isinstance(v, str)
        }

    return_binding: str | None = None
    has_explicit_return = has_implicit_return = False
    bound: dict[str, BindingInfo] = {}
    for b in bindings:
        if b.direction == "inout":
            fail('"inout" bindings are not supported')
        if b.name == "$return":
            if b.direction != "out":
                fail('"$return" binding must have direction set to "out"')
            has_explicit_return, return_binding = True, b.type
        elif _has_implicit_output(b.type):
            has_implicit_return, return_binding = True, b.type
            bound[b.name] = b
        else:
            bound[b.name] = b

    requires_context = False
    if "context" in params and "context" not in bound:
        requires_context = True
        params.pop("context")
    if set(params) - set(bound):
        fail(
            f"the following parameters are declared in Python but not in the bindings: {set(params) - set(bound)!r}"
        )
    if set(bound) - set(params):
        fail(
            f"the following parameters are declared in the bindings but not in Python: {set(bound) - set(params)!r}"
        )

    input_types: dict[str, ParamType] = {}
    output_types: dict[str, ParamType] = {}
    for pname in params:
        desc = bound[pname]
        has_anno = pname in annotations
        anno = annotations.get(pname)
        is_param_out = has_anno and _is_out_annotation(anno)
        pytype = typing.get_args(anno)[0] if is_param_out and typing.get_args(anno) else anno
        is_binding_out = desc.direction == "out"
        if is_binding_out and has_anno and not is_param_out:
            fail(
                f'binding {pname} is declared to have the "out" direction, but its annotation in Python is '
                f"not a subclass of azure.functions.Out"
            )
        if not is_binding_out and is_param_out:
            fail(
                f'binding {pname} is declared to have the "in" direction, but its annotation is azure.functions.Out'
            )
        bind_type = (
            _GENERIC
            if has_anno and pytype in (str, bytes) and not _has_implicit_output(desc.type)
            else desc.type
        )
        conv = meta.get_binding_registry().get(bind_type) if bind_type != _GENERIC else _GenericConverter
        if has_anno and conv is not None and isinstance(pytype, type):
            check = conv.check_output_type_annotation if is_param_out else conv.check_input_type_annotation
            if not check(pytype):
                fail(
                    f'type of {pname} binding "{desc.type}" does not match its Python annotation "{pytype.__name__}"'
                )
        (output_types if is_binding_out else input_types)[pname] = ParamType(bind_type, pytype)

    return_type = None
    if has_explicit_return or has_implicit_return:
        return_pytype = annotations.get("return")
        assert return_binding is not None
        if has_explicit_return and isinstance(return_pytype, type) and return_pytype is not type(None):
            conv = meta.get_binding_registry().get(return_binding)
            if conv is not None and not conv.check_output_type_annotation(return_pytype):
                fail(
                    f'Python return annotation "{return_pytype.__name__}" does not match binding type '
                    f'"{return_binding}"'
                )
        return_type = ParamType(return_binding, return_pytype)

    return IndexedFunction(
        name=name,
        func=user_func,
        trigger=trigger,
        bindings=tuple(bindings),
        is_async=inspect.iscoroutinefunction(user_func),
        requires_context=requires_context,
        input_types=input_types,
        output_types=output_types,
        return_type=return_type,
        directory=directory,
    )


# --------------------------------------------------------------------------------------------------------
# The index


class FunctionIndex:
    """The functions of one app, and how to invoke each through the worker's converters."""

    def __init__(self, functions: list[IndexedFunction], app_dir: Path) -> None:
        self.app_dir = app_dir
        self.functions: dict[str, IndexedFunction] = {}
        for f in functions:
            if f.name in self.functions:
                raise FunctionLoadError(f"two functions are named {f.name!r}; function names must be unique")
            self.functions[f.name] = f
        self.orchestrators = {f.durable_name: f for f in functions if f.trigger_type == ORCHESTRATION_TRIGGER}
        self.activities = {f.durable_name: f for f in functions if f.trigger_type == ACTIVITY_TRIGGER}
        self._client_binding: Callable[[BindingInfo], str] | None = None

    @classmethod
    def load(
        cls,
        app_path: str | Path,
        environ: Mapping[str, str] | None = None,
        setting_defaults: Mapping[str, str] | None = None,
    ) -> FunctionIndex:
        import os

        env = os.environ if environ is None else environ
        app = load_function_app(app_path)
        path = Path(app_path).resolve()
        app_dir = path if path.is_dir() else path.parent
        # get_functions() builds the functions once: a second call on the same app reports duplicates
        functions = getattr(app, "_local_host_functions", None)
        if functions is None:
            try:
                functions = app.get_functions()
            except ValueError as exc:
                raise FunctionLoadError(f"{app_dir}: the function app is invalid: {exc}") from exc
            app._local_host_functions = functions
        return cls([index_function(f, env, str(app_dir), setting_defaults) for f in functions], app_dir)

    # -- queries ------------------------------------------------------------------------------------
    def by_trigger(self, trigger_type: str) -> list[IndexedFunction]:
        return [f for f in self.functions.values() if f.trigger_type == trigger_type]

    def has_function(self, kind: str, name: str) -> bool:
        """`kind` is orchestrator/orchestration/orchestrationTrigger or activity/activityTrigger."""
        k = kind.lower()
        if k.startswith("orchestrat"):
            return name in self.orchestrators
        if k.startswith("activit"):
            return name in self.activities
        return name in self.functions

    def set_durable_client_binding(self, provider: Callable[[BindingInfo], str]) -> None:
        """`provider(binding)` returns the durable client binding JSON the extension would send."""
        self._client_binding = provider

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
