"""Index a `function_app.py` the way the Azure Functions Python worker does.

The module is imported from its directory, its one top-level `FunctionRegister` (FunctionApp / DFApp) is
asked for `get_functions()`, and each function's function.json (its trigger and bindings, as the
decorators wrote them) is read, with `%NAME%` references resolved from the app settings. Nothing here
knows the app's function names: triggers are found from the decorators. Running the indexed functions is
functions_host/invocation.py; `FunctionIndex` (functions_host/functions.py) joins the two.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import meta

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
