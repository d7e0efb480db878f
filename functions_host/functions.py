"""The function index of one app: what `function_app.py` declares and how to run it, as the Azure
Functions Python worker does. Indexing lives in functions_host/indexing.py, invocation in
functions_host/invocation.py; this module joins them in `FunctionIndex` and re-exports the names the
host, its HTTP surface and the durable engine use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from functions_host.indexing import (
    ACTIVITY_TRIGGER,
    DURABLE_CLIENT,
    ENTITY_TRIGGER,
    EVENT_GRID_TRIGGER,
    HTTP_TRIGGER,
    ORCHESTRATION_TRIGGER,
    SUPPORTED_TRIGGERS,
    TIMER_TRIGGER,
    BindingDecodeError,
    BindingInfo,
    FunctionLoadError,
    IndexedFunction,
    ParamType,
    UnknownFunctionError,
    index_function,
    load_function_app,
    resolve_settings,
)
from functions_host.invocation import (
    FunctionInvoker,
    HttpRequestData,
    HttpResult,
    close_durable_client_sessions,
)

__all__ = [
    "ACTIVITY_TRIGGER",
    "DURABLE_CLIENT",
    "ENTITY_TRIGGER",
    "EVENT_GRID_TRIGGER",
    "HTTP_TRIGGER",
    "ORCHESTRATION_TRIGGER",
    "SUPPORTED_TRIGGERS",
    "TIMER_TRIGGER",
    "BindingDecodeError",
    "BindingInfo",
    "FunctionIndex",
    "FunctionLoadError",
    "HttpRequestData",
    "HttpResult",
    "IndexedFunction",
    "ParamType",
    "UnknownFunctionError",
    "close_durable_client_sessions",
    "index_function",
    "load_function_app",
    "resolve_settings",
]


class FunctionIndex(FunctionInvoker):
    """The functions of one app (indexed by functions_host/indexing.py), and how to invoke each through
    the worker's converters (functions_host/invocation.py)."""

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
