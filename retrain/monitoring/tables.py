"""The Function App's Azure Table clients (the served ledger, the monitor's forecast log), built once per
process and table, on the process's shared credential (`retrain.azureml.client.shared_credential`): a
client keeps its bearer token until it nears expiry, so the identity endpoint is not asked on every call.

The Table endpoint is `AzureWebJobsStorage__tableServiceUri` where set (sovereign clouds, or a custom
domain: the Functions host reads the same setting), else `https://<AzureWebJobsStorage__accountName>.
table.core.windows.net`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

TABLE_SERVICE_URI_SETTING = "AzureWebJobsStorage__tableServiceUri"
ACCOUNT_NAME_SETTING = "AzureWebJobsStorage__accountName"

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}  # (endpoint, table) -> TableClient


class TableSettingsError(ValueError):
    """Neither Table setting is set; the message names what to set."""


def table_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The Table service endpoint of the Function App's storage account."""
    env = os.environ if environ is None else environ
    uri = (env.get(TABLE_SERVICE_URI_SETTING) or "").strip()
    if uri:
        return uri.rstrip("/")
    account = (env.get(ACCOUNT_NAME_SETTING) or "").strip()
    if not account:
        raise TableSettingsError(
            f"the monitor's tables in Azure need {ACCOUNT_NAME_SETTING} (identity-based storage) or "
            f"{TABLE_SERVICE_URI_SETTING} (e.g. https://<account>.table.core.chinacloudapi.cn)"
        )
    return f"https://{account}.table.core.windows.net"


def table_client(table_name: str, environ: Mapping[str, str] | None = None, **client_options: Any) -> Any:
    """The process's `azure.data.tables.TableClient` of `table_name`, built on first use (thread-safe);
    `client_options` (e.g. `transport=`) apply only to that first build."""
    endpoint = table_endpoint(environ)
    key = (endpoint, table_name)
    with _lock:
        client = _clients.get(key)
        if client is None:
            from azure.data.tables import TableClient

            from retrain.azureml.client import shared_credential

            client = TableClient(
                endpoint, table_name, credential=shared_credential(environ), **client_options
            )
            _clients[key] = client
        return client


def reset() -> None:
    """Forget the cached clients (tests that switch accounts or transports)."""
    with _lock:
        _clients.clear()
