"""A minimal stand-in for the host's function index, for the durable engine's own tests.

It calls the functions of a DFApp the way the Python worker does for durable triggers: the
orchestrator handle (`Orchestrator.create`) receives the raw context JSON string and returns the
SDK's JSON state; an activity receives its input decoded from JSON (`ActivityTriggerConverter`)
and its return value is encoded back to JSON. Async activities are awaited.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from azure.functions import _durable_functions

APP_PATH = Path(__file__).with_name("function_app.py")


def load_app_module(path: Path = APP_PATH, module_name: str = "durable_test_function_app") -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class AppFunctions:
    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.orchestrators: dict[str, Any] = {}
        self.activities: dict[str, Any] = {}
        for fn in module.app.get_functions():
            trigger = fn.get_trigger()
            if trigger.type == "orchestrationTrigger":
                self.orchestrators[fn.get_function_name()] = fn.get_user_function()
            elif trigger.type == "activityTrigger":
                self.activities[fn.get_function_name()] = fn.get_user_function()

    def run_orchestrator(self, name: str, context_json: str) -> str:
        return self.orchestrators[name](context_json)

    def run_activity(self, name: str, input_json: str | None) -> str:
        fn = self.activities[name]
        arg = None if input_json is None else _durable_functions.df_loads(input_json)
        result = fn(arg)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
        return json.dumps(result)

    def has_function(self, kind: str, name: str) -> bool:
        return name in (self.orchestrators if kind == "orchestrator" else self.activities)
