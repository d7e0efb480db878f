"""The composition root: which adapter each port gets, chosen in this one place from `RETRAIN_PLATFORM`.

| `RETRAIN_PLATFORM` | `MLPlatform` (`get_platform`) | served ledger (`get_ledger`) | forecast log (`get_forecast_log`) |
|---|---|---|---|
| ``local`` (default) | `retrain.local.platform.LocalPlatform` on the state dir | SQLite, `<state>/monitoring/ledger.sqlite` | SQLite, `<state>/monitoring/monitor.sqlite` |
| ``azureml`` | `retrain.azureml.platform.AzureMLPlatform` (`azure-ai-ml`) | Azure Table `retrainservedledger` | Azure Table `retrainmonitor` |
| ``package.module:factory`` | whatever the callable returns (an `MLPlatform`; e.g. an in-memory platform in tests) | SQLite, as local | SQLite, as local |

Adapters are imported lazily, so the Function App never imports the local runtime (MLflow) and the
local host never imports azure-ai-ml. The platform is built once per (choice, state dir) and process.
The ledger and the forecast log are opened on each call: the SQLite adapters check their file as they
open it (a corrupt, emptied or replaced file is refused with a `StateError` naming it, not silently
started over), which a kept instance would check only once; the Azure Table adapters wrap the
process's one client per table (`monitoring.tables`).

Tests swap adapters here, not by patching the modules that use them: `use(platform=..., ledger=...,
forecast_log=...)` for a block, or `RETRAIN_PLATFORM=package.module:factory` for a host in another
process.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from retrain.ports import MLPlatform
from retrain.settings import SettingsError, get, state_dir

if TYPE_CHECKING:
    from retrain.monitoring.forecast_log import ForecastLog
    from retrain.monitoring.ledger import ServedLedger

PlatformKind = Literal["local", "azureml", "factory"]

_lock = threading.Lock()
_instances: dict[tuple[str, str], MLPlatform] = {}
_overrides: dict[str, Any] = {}  # port -> the adapter `use` put in place


def _setting(environ: Mapping[str, str] | None) -> str:
    return str(get("RETRAIN_PLATFORM", environ) or "").strip()


def platform_choice(environ: Mapping[str, str] | None = None) -> tuple[PlatformKind, str]:
    """(kind, choice) of `RETRAIN_PLATFORM`: `local` or `azureml` (either case), or a
    `package.module:factory`; anything else is a SettingsError saying what to set."""
    choice = _setting(environ)
    if choice.lower() == "local":
        return "local", "local"
    if choice.lower() == "azureml":
        return "azureml", "azureml"
    if ":" in choice:
        return "factory", choice
    raise SettingsError(
        f"RETRAIN_PLATFORM={choice!r} is not a platform; use local, azureml or package.module:factory"
    )


def on_azure(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Azure's adapters serve (`RETRAIN_PLATFORM=azureml`): the stores' choice and the endpoint
    names' suffix (`naming.endpoint_suffix`) ask here."""
    return _setting(environ).lower() == "azureml"


# ------------------------------------------------------------------------------------------ platform


def _build(kind: PlatformKind, choice: str, environ: Mapping[str, str] | None) -> Any:
    if kind == "local":
        from retrain.local.platform import LocalPlatform

        return LocalPlatform(state_dir(environ))
    if kind == "azureml":
        from retrain.azureml import platform as azure_platform

        return azure_platform.AzureMLPlatform(environ=environ)
    module_name, _, attr = choice.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(
            f"RETRAIN_PLATFORM={choice!r}: cannot load {attr!r} from {module_name!r} ({exc})"
        ) from exc
    return factory()


def get_platform(environ: Mapping[str, str] | None = None) -> MLPlatform:
    """The configured platform adapter (created once per process, per choice and state dir)."""
    with _lock:
        if "platform" in _overrides:
            return _overrides["platform"]  # type: ignore[no-any-return]
    kind, choice = platform_choice(environ)
    key = (choice, str(state_dir(environ)))
    with _lock:
        if key not in _instances:
            platform = _build(kind, choice, environ)
            if not isinstance(platform, MLPlatform):
                raise SettingsError(
                    f"RETRAIN_PLATFORM={choice!r} built {type(platform).__name__}, "
                    "which does not implement retrain.ports.MLPlatform"
                )
            _instances[key] = platform
        return _instances[key]


# ------------------------------------------------------------------------------- the monitor's stores


def get_ledger(environ: Mapping[str, str] | None = None) -> ServedLedger:
    """The served ledger: SQLite under the state dir, or Table Storage in the Function App's storage
    account on azureml (missing Table settings are a LedgerError naming them)."""
    with _lock:
        if "ledger" in _overrides:
            return _overrides["ledger"]  # type: ignore[no-any-return]
    from retrain.monitoring import ledger

    if on_azure(environ):
        from retrain.monitoring.tables import TableSettingsError, table_client

        try:
            return ledger.TableLedger(table_client(ledger.TABLE_NAME, environ))
        except TableSettingsError as exc:
            raise ledger.LedgerError(str(exc)) from None
    return ledger.SqliteLedger(state_dir(environ) / "monitoring" / "ledger.sqlite")


def get_forecast_log(environ: Mapping[str, str] | None = None) -> ForecastLog:
    """The monitor's forecast log: SQLite under the state dir, or the Table in the Function App's
    storage account on azureml."""
    with _lock:
        if "forecast_log" in _overrides:
            return _overrides["forecast_log"]  # type: ignore[no-any-return]
    from retrain.monitoring import forecast_log

    if on_azure(environ):
        from retrain.monitoring.tables import table_client

        return forecast_log.TableForecastLog(table_client(forecast_log.FORECAST_TABLE_NAME, environ))
    return forecast_log.SqliteForecastLog(forecast_log.default_path(environ))


def check_forecast_log(environ: Mapping[str, str] | None = None) -> None:
    """Open the local forecast log once, so a start refuses a bad file before it is accepted
    (`StateError` naming it) rather than the monitor orchestration failing after a 202. Azure's Table
    log (and a log put in place by `use`) has no file to check: nothing is done there."""
    with _lock:
        if "forecast_log" in _overrides:
            return
    if not on_azure(environ):
        from retrain.monitoring import forecast_log

        forecast_log.SqliteForecastLog(forecast_log.default_path(environ))


# ------------------------------------------------------------------------------------------- tests


@contextlib.contextmanager
def use(
    *,
    platform: MLPlatform | None = None,
    ledger: ServedLedger | None = None,
    forecast_log: ForecastLog | None = None,
) -> Iterator[None]:
    """Within the block, every caller of this process gets these adapters (the ports not given are
    chosen as usual); what was in place before comes back after it."""
    given = {
        k: v
        for k, v in {"platform": platform, "ledger": ledger, "forecast_log": forecast_log}.items()
        if v is not None
    }
    with _lock:
        before = dict(_overrides)
        _overrides.update(given)
    try:
        yield
    finally:
        with _lock:
            _overrides.clear()
            _overrides.update(before)


def reset() -> None:
    """Forget the cached adapters (tests that switch state dirs or platforms)."""
    with _lock:
        _instances.clear()
