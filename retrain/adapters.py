"""Which `MLPlatform` adapter the activities talk to, chosen by the `RETRAIN_PLATFORM` setting.

- ``local`` (default): the embedded platform on the state dir (`retrain.local.platform.LocalPlatform`);
- ``azureml``: Azure ML through `azure-ai-ml` (`retrain.azureml`);
- ``package.module:factory``: any other adapter (a callable returning an `MLPlatform`), e.g. an
  in-memory platform in tests.

Adapters are imported lazily, so the Function App never imports the local runtime (MLflow) and the
local host never imports azure-ai-ml. One instance per (choice, state dir) and process.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from retrain.ports import MLPlatform
from retrain.settings import SettingsError, get, state_dir

_lock = threading.Lock()
_instances: dict[tuple[str, str], MLPlatform] = {}


def _build(choice: str, environ: Mapping[str, str] | None) -> Any:
    if choice == "local":
        from retrain.local.platform import LocalPlatform

        return LocalPlatform(state_dir(environ))
    if choice == "azureml":
        from retrain.azureml import platform as azure_platform

        return azure_platform.AzureMLPlatform(environ=environ)
    if ":" in choice:
        module_name, _, attr = choice.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SettingsError(
                f"RETRAIN_PLATFORM={choice!r}: cannot load {attr!r} from {module_name!r} ({exc})"
            ) from exc
        return factory()
    raise SettingsError(
        f"RETRAIN_PLATFORM={choice!r} is not a platform; use local, azureml or package.module:factory"
    )


def get_platform(environ: Mapping[str, str] | None = None) -> MLPlatform:
    """The configured platform adapter (created once per process, per choice and state dir)."""
    choice = str(get("RETRAIN_PLATFORM", environ)).strip()
    key = (choice, str(state_dir(environ)))
    with _lock:
        if key not in _instances:
            platform = _build(choice, environ)
            if not isinstance(platform, MLPlatform):
                raise SettingsError(
                    f"RETRAIN_PLATFORM={choice!r} built {type(platform).__name__}, "
                    "which does not implement retrain.ports.MLPlatform"
                )
            _instances[key] = platform
        return _instances[key]


def reset() -> None:
    """Forget the cached adapters (tests that switch state dirs or platforms)."""
    with _lock:
        _instances.clear()
