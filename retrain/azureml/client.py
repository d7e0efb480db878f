"""MLClient construction and the mapping of Azure errors onto the port's error types.

Transient failures are retried inside the SDK by azure-core's `RetryPolicy` (exponential back-off on
408/429/500/502/503/504 and connection errors, honouring `Retry-After` on throttling). What still fails
after those retries surfaces as `TransientPlatformError` (the Durable activity retry policy may try
again later) or `PlatformError` (retrying will not help: bad request, missing entity, no permission).

409 Conflict is deliberately NOT retried: ARM answers it while another operation runs on the endpoint
(a traffic update, a deployment, a delete), and that operation takes minutes, so azure-core's quick
retries (it retries any status that carries `Retry-After`) would only meet the same refusal. On an
endpoint operation it surfaces at once as `EndpointBusyError`; the orchestrator waits with a durable
timer until the endpoint is no longer busy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import RetryPolicy

from retrain import settings
from retrain.ports import EndpointBusyError, PlatformError, TransientPlatformError

T = TypeVar("T")

# azure-core retry settings passed to every pipeline the MLClient builds (kwargs of RetryPolicy).
RETRY_OPTIONS: dict[str, Any] = {
    "retry_total": 6,
    "retry_connect": 3,
    "retry_read": 3,
    "retry_status": 4,
    "retry_backoff_factor": 1.0,
    "retry_backoff_max": 60,
}
# The same pipelines use these socket timeouts (seconds): an activity never hangs on a dead socket.
TIMEOUT_OPTIONS: dict[str, Any] = {"connection_timeout": 20, "read_timeout": 120}

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
CONFLICT = 409


class ConflictAwareRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy, except that a 409 Conflict is never retried (not even with Retry-After):
    the operation that holds the endpoint runs for minutes; the caller waits for it instead."""

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        if response.http_response.status_code == CONFLICT:
            return False
        return bool(super().is_retry(settings, response))


def retry_policy(**options: Any) -> ConflictAwareRetryPolicy:
    """The retry policy of every pipeline: RETRY_OPTIONS, overridden by any `retry_*` option given."""
    return ConflictAwareRetryPolicy(
        **{**RETRY_OPTIONS, **{k: v for k, v in options.items() if k.startswith("retry_")}}
    )


REQUIRED = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")


def workspace_settings(environ: Mapping[str, str] | None = None) -> tuple[str, str, str]:
    values = [settings.get(name, environ) for name in REQUIRED]
    missing = [name for name, value in zip(REQUIRED, values, strict=True) if not value]
    if missing:
        raise PlatformError(
            f"the azureml platform needs {', '.join(missing)}; set them in the app settings "
            "(or local.settings.json) to the subscription, resource group and name of the Azure ML workspace"
        )
    return values[0], values[1], values[2]  # type: ignore[return-value]


def default_credential(environ: Mapping[str, str] | None = None) -> Any:
    """DefaultAzureCredential: the user-assigned managed identity named by AZURE_CLIENT_ID in Azure,
    the developer's `az login` on a laptop."""
    from azure.identity import DefaultAzureCredential

    client_id = settings.get("AZURE_CLIENT_ID", environ)
    return (
        DefaultAzureCredential(managed_identity_client_id=client_id)
        if client_id
        else DefaultAzureCredential()
    )


_credential_lock = threading.Lock()
_credentials: dict[str, Any] = {}  # AZURE_CLIENT_ID ("" for none) -> the process's credential


def shared_credential(environ: Mapping[str, str] | None = None) -> Any:
    """The process's one `default_credential` per identity, built on first use (thread-safe). Every Azure
    client of the process (MLClient, MLflow, Blob, Table) shares it, so the identity endpoint is asked for
    a token once per scope and expiry, not once per client or call."""
    key = settings.get("AZURE_CLIENT_ID", environ) or ""
    with _credential_lock:
        if key not in _credentials:
            _credentials[key] = default_credential(environ)
        return _credentials[key]


def reset_shared_credentials() -> None:
    """Forget the process's credentials (tests that swap identities)."""
    with _credential_lock:
        _credentials.clear()


def make_ml_client(
    environ: Mapping[str, str] | None = None, *, credential: Any = None, **pipeline_options: Any
):
    """An MLClient for the configured workspace. `pipeline_options` go to every azure-core pipeline
    (for example `transport=`); the retry and timeout options above are the defaults."""
    from azure.ai.ml import MLClient

    subscription, resource_group, workspace = workspace_settings(environ)
    options = {**RETRY_OPTIONS, **TIMEOUT_OPTIONS, **pipeline_options}
    options.setdefault("retry_policy", retry_policy(**options))
    return MLClient(
        credential if credential is not None else shared_credential(environ),
        subscription_id=subscription,
        resource_group_name=resource_group,
        workspace_name=workspace,
        enable_telemetry=False,
        show_progress=False,
        **options,
    )


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientAuthenticationError):
        return False
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code in TRANSIENT_STATUS
    return False


def to_platform_error(exc: BaseException, action: str, busy_endpoint: str | None = None) -> PlatformError:
    """The port's error for an Azure SDK error. `busy_endpoint`: the call was an operation on that online
    endpoint (or one of its deployments), where a 409 means another operation is still running."""
    status = getattr(exc, "status_code", None)
    detail = (
        str(getattr(exc, "message", None) or exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
    )
    text = f"{action} failed" + (f" (HTTP {status})" if status else "") + f": {detail}"
    if status == CONFLICT and busy_endpoint:
        return EndpointBusyError(
            text + f"; endpoint {busy_endpoint} is busy with another operation: wait until it is no longer "
            "Creating/Updating/Deleting, then try again"
        )
    if is_transient(exc):
        return TransientPlatformError(text + " (transient; retried by azure-core, try again later)")
    if isinstance(exc, ClientAuthenticationError):
        return PlatformError(
            text + "; check the managed identity (AZURE_CLIENT_ID) and its role on the workspace"
        )
    return PlatformError(text)


@contextmanager
def azure_call(action: str, busy_endpoint: str | None = None) -> Iterator[None]:
    """Re-raise Azure SDK errors as the port's errors, naming the action that failed (a 409 on an
    operation on `busy_endpoint` as `EndpointBusyError`)."""
    try:
        yield
    except PlatformError:
        raise
    except AzureError as exc:
        raise to_platform_error(exc, action, busy_endpoint) from exc
    except Exception as exc:  # the SDK raises its own MlException/ValidationException for bad entities
        if type(exc).__module__.startswith("azure."):
            raise PlatformError(f"{action} failed: {exc}") from exc
        raise


def call(action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with azure_call(action):
        return fn(*args, **kwargs)


def endpoint_call(endpoint: str, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call` for an operation on an online endpoint or its deployments: 409 -> EndpointBusyError."""
    with azure_call(action, busy_endpoint=endpoint):
        return fn(*args, **kwargs)
