"""A recording azure-core transport that answers like Azure Resource Manager, Azure Blob Storage and
an online endpoint, for the azureml adapter's offline tests.

It is a transport (the bottom of the real SDK's pipeline), not a fake of MLClient: every request the
real azure-ai-ml code builds is recorded (method, host, path, api-version, JSON body, headers) and
answered from a small in-memory resource store the way ARM does: PUT stores the body and echoes it
with `id`, `name`, `type`, `systemData` and a provisioning state; GET returns the stored resource or
404 `ResourceNotFound`; list returns `{"value": [...]}`; DELETE answers 202. Response shapes follow
the azure-sdk-for-python azure-ai-ml test recordings (datastore, listSecrets, code version, job).

Online endpoints behave like Azure's (set `operation_gets` > 0): a PUT or DELETE of an endpoint or a
deployment is a long-running operation that reports Creating/Updating/Deleting for that many GETs of
the resource (by the test's thread; the SDK's background poller sees the state without advancing it),
then Succeeded (a deleted deployment: 404). While any operation runs on an endpoint, another PUT or
DELETE on it or its deployments is refused with 409 Conflict (with `Retry-After`, which azure-core's
default policy would retry). A Failed deployment refuses an update (400): it must be deleted first.
Each endpoint has its own scoring host and key; the scoring URI answers 401 to a wrong key and 404 to
an unpinned request while no deployment takes traffic.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline._tools import is_rest
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
from azure.core.rest._requests_basic import RestRequestsTransportResponse

SUB, RG, WS = "00000000-1111-2222-3333-444444444444", "rg-retrain", "ws-retrain"
WS_PATH = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}"
)
STORAGE_ACCOUNT = "sretrain0blob"
CONTAINER = "azureml-blobstore-332507d7-523d-40e4-98f7-65741efe22b8"
REGION = "westeurope"
MLFLOW_HOST = f"{REGION}.api.azureml.ms"
SCORING_DOMAIN = f"{REGION}.inference.ml.azure.com"
SCORING_HOST = f"retrain-msft.{SCORING_DOMAIN}"


def endpoint_key(endpoint: str) -> str:
    """The primary key listKeys returns for an endpoint (each endpoint its own)."""
    return f"pk-{endpoint}"


class StaticTokenCredential:
    """A credential with a fixed bearer token (what the MLClient asks for; nothing is signed in)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("offline-test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo("offline-test-token", int(time.time()) + 3600)


@dataclass
class Call:
    method: str
    host: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any

    @property
    def api_version(self) -> str | None:
        return (self.query.get("api-version") or [None])[0]


def _type_of(path: str) -> str:
    """ARM resource type of a workspace child path, e.g. `.../jobs/x` -> `workspaces/jobs`."""
    parts = path[len(WS_PATH) :].strip("/").split("/")
    kinds = [parts[i] for i in range(0, len(parts), 2)]
    return "Microsoft.MachineLearningServices/workspaces/" + "/".join(kinds)


@dataclass
class ArmTransport(HttpTransport):
    """Records every request; answers from `store` (ARM path -> resource JSON)."""

    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    scoring_answer: Any = field(
        default_factory=lambda: {"forecast": [101.5], "model": {"name": "m", "version": "1"}}
    )
    put_state: str = (
        "Succeeded"  # provisioningState a PUT answers with (Succeeded: the SDK poller ends at once)
    )
    fail_next: list[tuple[int, dict[str, str]]] = field(
        default_factory=list
    )  # (status, headers) to answer first
    # GETs for which an online endpoint/deployment operation stays in progress (0: done at once).
    operation_gets: int = 0
    # ARM path -> [GETs left, final provisioningState or None for a delete] of the running operations.
    pending: dict[str, list[Any]] = field(default_factory=dict)
    # endpoint name -> its primary key (listKeys); a key set here replaces the default one.
    keys: dict[str, str] = field(default_factory=dict)
    # blob path -> the HTTP status Storage answers for it (403: the identity lacks its data role, or a
    # firewall; 401: no valid token), with Storage's XML error body.
    blob_errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store[WS_PATH] = {
            "id": WS_PATH,
            "name": WS,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": REGION,
            "properties": {
                "mlFlowTrackingUri": f"azureml://{MLFLOW_HOST}/mlflow/v1.0{WS_PATH}",
                "discoveryUrl": f"https://{REGION}.api.azureml.ms/discovery",
                "storageAccount": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/"
                f"storageAccounts/{STORAGE_ACCOUNT}",
            },
        }
        # The workspace's default datastore (shape from the SDK's recorded test sessions).
        self.store[f"{WS_PATH}/datastores/workspaceblobstore"] = {
            "id": f"{WS_PATH}/datastores/workspaceblobstore",
            "name": "workspaceblobstore",
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "description": None,
                "tags": None,
                "properties": None,
                "isDefault": True,
                "credentials": {"credentialsType": "AccountKey"},
                "datastoreType": "AzureBlob",
                "accountName": STORAGE_ACCOUNT,
                "containerName": CONTAINER,
                "endpoint": "core.windows.net",
                "protocol": "https",
                "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
            },
        }

    # ---- azure-core transport protocol --------------------------------------------------------
    def __enter__(self) -> ArmTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> RequestsTransportResponse:
        url = urlparse(request.url)
        raw = getattr(request, "body", None)
        if raw is None:
            raw = getattr(request, "content", None)
        body: Any = raw
        if isinstance(raw, bytes | str) and raw:
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                body = raw
        elif raw is not None and hasattr(raw, "read"):  # a stream (blob upload)
            body = raw.read()
        call = Call(request.method, url.netloc, url.path, parse_qs(url.query), dict(request.headers), body)
        self.calls.append(call)
        if self.fail_next:
            status, headers = self.fail_next.pop(0)
            return self._respond(
                request, status, {"error": {"code": "Throttled", "message": "try later"}}, headers
            )
        if url.netloc.endswith(".blob.core.windows.net"):
            return self._blob(request, call)
        if url.netloc == MLFLOW_HOST:
            return self._mlflow(request, call)
        if url.netloc.endswith("." + SCORING_DOMAIN):
            return self._score(request, call)
        return self._arm(request, call)

    # ---- answers -------------------------------------------------------------------------------
    @staticmethod
    def _respond(request: Any, status: int, payload: Any, headers: dict[str, str] | None = None) -> Any:
        response = requests.Response()
        response.status_code = status
        response.reason = {
            200: "OK",
            201: "Created",
            202: "Accepted",
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            409: "Conflict",
        }.get(status, "Status")
        if payload is None:
            response._content = b""
        else:
            response._content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            response.headers["Content-Type"] = "application/json; charset=utf-8"
        response.headers["x-ms-request-id"] = "00000000-0000-0000-0000-000000000000"
        response.headers.update(headers or {})
        response.url = request.url
        response.raw = io.BytesIO(response._content)
        if is_rest(
            request
        ):  # newer generated clients send azure.core.rest requests (as RequestsTransport does)
            rest = RestRequestsTransportResponse(request=request, internal_response=response)
            rest.read()
            return rest
        return RequestsTransportResponse(request, response)

    def _not_found(self, request: Any, path: str) -> Any:
        return self._respond(
            request, 404, {"error": {"code": "ResourceNotFound", "message": f"{path} was not found"}}
        )

    # ---- online endpoint operations --------------------------------------------------------------
    @staticmethod
    def _endpoint_path(path: str) -> str | None:
        match = re.match(r"^(.*/onlineEndpoints/[^/]+)(?:/deployments/[^/]+)?$", path)
        return match.group(1) if match else None

    def _busy(self, endpoint_path: str) -> str | None:
        """The path of an operation running on the endpoint or one of its deployments, if any."""
        for path, resource in self.store.items():
            if path == endpoint_path or path.startswith(endpoint_path + "/deployments/"):
                state = (resource.get("properties") or {}).get("provisioningState")
                if state in ("Creating", "Updating", "Deleting"):
                    return path
        return None

    def _refuse(self, request: Any, call: Call) -> Any | None:
        """Azure's refusals of a PUT/DELETE on an online endpoint or deployment, or None."""
        path = call.path.rstrip("/")
        endpoint_path = self._endpoint_path(path)
        if endpoint_path is None or call.method not in ("PUT", "DELETE"):
            return None
        running = self._busy(endpoint_path)
        if running is not None:
            message = f"Conflict: an operation on {running.rsplit('/', 1)[-1]} is in progress; retry later"
            return self._respond(
                request, 409, {"error": {"code": "Conflict", "message": message}}, {"Retry-After": "0"}
            )
        current = (self.store.get(path) or {}).get("properties", {}).get("provisioningState")
        if call.method == "PUT" and "/deployments/" in path and current == "Failed":
            message = "Deployment is in Failed state and cannot be updated; delete it and create it again"
            return self._respond(request, 400, {"error": {"code": "BadRequest", "message": message}})
        return None

    def _advance(self, path: str) -> None:
        """One GET of a resource with a running operation, by the test: the operation moves on."""
        if path not in self.pending or threading.current_thread() is not threading.main_thread():
            return  # the SDK's background LRO poller observes without advancing
        left, final = self.pending[path]
        if left > 0:
            self.pending[path][0] = left - 1
            return
        del self.pending[path]
        if final is None:
            self.store.pop(path, None)
        else:
            self.store[path]["properties"]["provisioningState"] = final

    def _score(self, request: Any, call: Call) -> Any:
        endpoint = call.host.split(".", 1)[0]
        endpoint_path = f"{WS_PATH}/onlineEndpoints/{endpoint}"
        if endpoint_path not in self.store:
            return self._respond(request, 404, {"message": f"endpoint {endpoint} not found"})
        if call.headers.get("Authorization") != f"Bearer {self.keys.get(endpoint, endpoint_key(endpoint))}":
            return self._respond(request, 401, {"message": "Key based authentication failed"})
        traffic = self.store[endpoint_path]["properties"].get("traffic") or {}
        if not call.headers.get("azureml-model-deployment") and not any(int(v) > 0 for v in traffic.values()):
            return self._respond(request, 404, {"message": "No valid deployments to route to"})
        return self._respond(request, 200, self.scoring_answer)

    def _arm(self, request: Any, call: Call) -> Any:
        path = call.path.rstrip("/")
        refusal = self._refuse(request, call)
        if refusal is not None:
            return refusal
        if call.method == "PUT":
            resource = dict(call.body or {})
            properties = dict(resource.get("properties") or {})
            if "provisioningState" not in properties and not path.endswith(
                "/versions/" + path.split("/")[-1]
            ):
                properties["provisioningState"] = self.put_state
            if self.operation_gets and self._endpoint_path(path):
                properties["provisioningState"] = "Updating" if path in self.store else "Creating"
                self.pending[path] = [self.operation_gets, "Succeeded"]
            if "/onlineEndpoints/" in path and "/deployments/" not in path:
                properties.setdefault(
                    "scoringUri", f"https://{path.rsplit('/', 1)[-1]}.{SCORING_DOMAIN}/score"
                )
            if "/deployments/" in path:  # service-side defaults a managed deployment reports back
                properties.setdefault("scaleSettings", {"scaleType": "Default"})
                properties.setdefault(
                    "requestSettings", {"requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1}
                )
                probe = {
                    "failureThreshold": 30,
                    "successThreshold": 1,
                    "timeout": "PT2S",
                    "period": "PT10S",
                    "initialDelay": "PT10S",
                }
                properties.setdefault("livenessProbe", probe)
                properties.setdefault("readinessProbe", probe)
                # The service spells enum values its own way (the SDK sends "enabled", ARM says "Enabled").
                for collection in ((properties.get("dataCollector") or {}).get("collections") or {}).values():
                    mode = str(collection.get("dataCollectionMode") or "")
                    collection["dataCollectionMode"] = mode[:1].upper() + mode[1:].lower()
            if "/jobs/" in path:
                properties.setdefault("status", "NotStarted")
            if "/models/" in path and properties.get("modelType") == "mlflow_model":
                # The service reads the flavors from the MLmodel file it finds at modelUri.
                properties.setdefault(
                    "flavors",
                    {
                        "python_function": {
                            "data": {"loader_module": "mlflow.pyfunc.model", "python_version": "3.11.7"}
                        }
                    },
                )
            elif "/models/" in path and "/versions/" in path:  # a custom model: the service reports none
                properties.setdefault("flavors", {})
            resource.update(
                id=path,
                name=path.split("/")[-1],
                type=_type_of(path),
                properties=properties,
                systemData={
                    "createdAt": "2026-01-05T01:00:00.0000000+00:00",
                    "createdBy": "retrain-identity",
                    "createdByType": "Application",
                    "lastModifiedAt": "2026-01-05T01:00:00.0000000+00:00",
                    "lastModifiedBy": "retrain-identity",
                    "lastModifiedByType": "Application",
                },
            )
            existed = path in self.store
            self.store[path] = resource
            return self._respond(request, 200 if existed else 201, resource)
        if call.method == "GET":
            if path.endswith("/op") and path[:-3] in self.pending:  # a delete's Location: still running
                return self._respond(request, 202, None, {"Retry-After": "5"})
            if path.endswith("/cancel/op"):  # a cancel's Location: the job is Canceled
                job_path = path[: -len("/cancel/op")]
                if job_path in self.store:
                    self.store[job_path]["properties"]["status"] = "Canceled"
                return self._respond(request, 200, None)
            if path.endswith("/op") and path[:-3] in self.store:  # a delete's Location: the delete is done
                del self.store[path[:-3]]
                return self._respond(request, 204, None)
            self._advance(path)
            if path in self.store:
                return self._respond(request, 200, self.store[path])
            prefix = path + "/"
            children = [
                v for k, v in self.store.items() if k.startswith(prefix) and "/" not in k[len(prefix) :]
            ]
            if children or path.endswith(("/versions", "/deployments")):
                return self._respond(request, 200, {"value": children})
            return self._not_found(request, path)
        if call.method == "POST":
            if path.endswith("/listSecrets"):
                key = base64.b64encode(b"offline account key").decode()
                return self._respond(request, 200, {"secretsType": "AccountKey", "key": key})
            if path.endswith("/listKeys"):
                endpoint = path.split("/")[-2]
                key = self.keys.get(endpoint, endpoint_key(endpoint))
                return self._respond(request, 200, {"primaryKey": key, "secondaryKey": f"sk-{endpoint}"})
            if path.endswith("/cancel") and "/jobs/" in path:  # Azure ML: 202, the job goes CancelRequested
                job = self.store.get(path[: -len("/cancel")])
                if job is None:
                    return self._not_found(request, path)
                job["properties"]["status"] = "CancelRequested"
                return self._respond(
                    request, 202, None, {"Location": f"https://management.azure.com{path}/op"}
                )
            if path.endswith("/startPendingUpload"):  # code snapshots go to a temporary blob with a SAS
                folder = f"https://{STORAGE_ACCOUNT}.blob.core.windows.net/{path.split('/')[-4]}"
                return self._respond(
                    request,
                    200,
                    {
                        "blobReferenceForConsumption": {
                            "blobUri": folder,
                            "storageAccountArmId": self.store[WS_PATH]["properties"]["storageAccount"],
                            "credential": {
                                "credentialType": "SAS",
                                "sasUri": folder + "?sv=2021-08-06&sig=offline",
                            },
                        },
                        "pendingUploadId": path.split("/")[-4],
                        "pendingUploadType": "TemporaryBlobReference",
                    },
                )
            return self._not_found(request, path)
        if call.method == "DELETE":
            if path not in self.store:
                return self._respond(request, 204, None)
            self.store[path]["properties"]["provisioningState"] = "Deleting"
            if self.operation_gets:
                self.pending[path] = [self.operation_gets, None]
            return self._respond(request, 202, None, {"Location": f"https://management.azure.com{path}/op"})
        return self._not_found(request, path)

    def _blob(self, request: Any, call: Call) -> Any:
        path = call.path
        if path in self.blob_errors:
            status = self.blob_errors[path]
            code = "AuthorizationPermissionMismatch" if status == 403 else "InvalidAuthenticationInfo"
            xml = (
                f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>This request is '
                "not authorized to perform this operation using this permission.</Message></Error>"
            ).encode()
            return self._respond(
                request, status, xml, {"Content-Type": "application/xml", "x-ms-error-code": code}
            )
        if call.method == "HEAD":
            if path in self.blobs:
                return self._respond(request, 200, None, {"x-ms-meta-upload_status": "completed"})
            return self._respond(request, 404, None, {"x-ms-error-code": "BlobNotFound"})
        if call.method == "PUT":
            if "comp" not in call.query:
                data = (
                    call.body
                    if isinstance(call.body, bytes)
                    else json.dumps(call.body).encode()
                    if call.body is not None
                    else b""
                )
                self.blobs[path] = data
            return self._respond(
                request,
                200 if "comp" in call.query else 201,
                None,
                {"ETag": '"0x8DA91174A0CA527"', "Last-Modified": "Mon, 05 Jan 2026 01:00:00 GMT"},
            )
        if call.method == "GET" and call.query.get("comp") == ["list"]:
            return self._respond(request, 200, self._listing(call), {"Content-Type": "application/xml"})
        if call.method == "GET" and path in self.blobs:  # a download (e.g. a job's artifact)
            data = self.blobs[path]
            return self._respond(
                request,
                206 if "x-ms-range" in {k.lower() for k in call.headers} else 200,
                data,
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                    "Content-Range": f"bytes 0-{max(len(data) - 1, 0)}/{len(data)}",
                    "x-ms-blob-type": "BlockBlob",
                    "ETag": '"0x8DA91174A0CA528"',
                    "Last-Modified": "Mon, 05 Jan 2026 01:00:00 GMT",
                },
            )
        return self._respond(request, 404, None, {"x-ms-error-code": "BlobNotFound"})

    def _listing(self, call: Call) -> bytes:
        """A container's List Blobs answer (one page): the stored blobs whose names start with `prefix`,
        and with `delimiter` the virtual folders one level down as BlobPrefix entries, as Storage lists."""
        from xml.sax.saxutils import escape

        container = call.path.strip("/").split("/")[0]
        prefix = (call.query.get("prefix") or [""])[0]
        delimiter = (call.query.get("delimiter") or [None])[0]
        blobs, folders = [], set()
        for path, data in sorted(self.blobs.items()):
            if not path.startswith(f"/{container}/"):
                continue
            name = path[len(container) + 2 :]
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                folders.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            blobs.append(
                f"<Blob><Name>{escape(name)}</Name><Properties><Content-Length>{len(data)}</Content-Length>"
                "<BlobType>BlockBlob</BlobType><Content-Type>application/octet-stream</Content-Type>"
                "</Properties><Metadata /></Blob>"
            )
        entries = "".join(blobs) + "".join(
            f"<BlobPrefix><Name>{escape(folder)}</Name></BlobPrefix>" for folder in sorted(folders)
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint='
            f'"https://{call.host}/" ContainerName="{container}"><Prefix>{escape(prefix)}</Prefix>'
            f"<Blobs>{entries}</Blobs><NextMarker /></EnumerationResults>"
        ).encode()

    def _mlflow(self, request: Any, call: Call) -> Any:
        run_id = (call.query.get("run_id") or [""])[0]
        runs = self.store.setdefault("mlflow-runs", {})
        api = call.path.rsplit("/api/2.0/mlflow/", 1)[-1]
        if api == "runs/get" and run_id in runs:
            return self._respond(request, 200, {"run": runs[run_id]})
        if api.startswith(("experiments/", "runs/search", "runs/create", "runs/log-batch", "metrics/")):
            return self._mlflow_tracking(request, call, api, runs)
        return self._respond(
            request, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Run '{run_id}' not found"}
        )

    def _mlflow_tracking(self, request: Any, call: Call, api: str, runs: dict[str, Any]) -> Any:
        """Experiments, run search (by one `tags.KEY = 'VALUE'` filter), run creation and metric logging,
        answered as an MLflow tracking server does (a run's `data.metrics` holds each key's latest value
        by step; the history holds every point logged, duplicates included)."""
        experiments = self.store.setdefault("mlflow-experiments", {})  # name -> id
        history = self.store.setdefault("mlflow-history", {})  # (run id, key) -> [points]
        body = call.body if isinstance(call.body, dict) else {}
        missing = {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"}
        if api == "experiments/get-by-name":
            name = (call.query.get("experiment_name") or [""])[0]
            if name not in experiments:
                return self._respond(
                    request, 404, {**missing, "message": f"Experiment '{name}' does not exist."}
                )
            return self._respond(
                request, 200, {"experiment": {"experiment_id": experiments[name], "name": name}}
            )
        if api == "experiments/create":
            if body["name"] in experiments:
                return self._respond(
                    request, 400, {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "exists"}
                )
            experiments[body["name"]] = str(len(experiments) + 1)
            return self._respond(request, 200, {"experiment_id": experiments[body["name"]]})
        if api == "runs/search":
            key, value = re.fullmatch(r"tags\.(\S+) = '([^']*)'", body["filter"]).groups()
            found = [
                r
                for r in runs.values()
                if r["info"]["experiment_id"] in body["experiment_ids"]
                and {"key": key, "value": value} in r["data"]["tags"]
            ]
            return self._respond(
                request, 200, {"runs": found[: body.get("max_results", 1000)]} if found else {}
            )
        if api == "runs/create":
            new_id = f"run-{len(runs) + 1}"
            runs[new_id] = {
                "info": {
                    "run_id": new_id,
                    "experiment_id": body["experiment_id"],
                    "run_name": body.get("run_name"),
                    "status": "RUNNING",
                },
                "data": {"metrics": [], "tags": list(body.get("tags", []))},
            }
            return self._respond(request, 200, {"run": runs[new_id]})
        if api == "runs/log-batch":
            run = runs.get(body["run_id"])
            if run is None:
                return self._respond(request, 404, missing)
            latest = {m["key"]: m for m in run["data"]["metrics"]}
            for metric in body.get("metrics", []):
                history.setdefault((body["run_id"], metric["key"]), []).append(dict(metric))
                old = latest.get(metric["key"])
                if old is None or (metric["step"], metric["timestamp"]) >= (old["step"], old["timestamp"]):
                    latest[metric["key"]] = dict(metric)
            run["data"]["metrics"] = list(latest.values())
            return self._respond(request, 200, {})
        if api == "metrics/get-history":
            key = (call.query.get("metric_key") or [""])[0]
            run_id = (call.query.get("run_id") or [""])[0]
            if run_id not in runs:
                return self._respond(request, 404, missing)
            points = history.get((run_id, key), [])
            return self._respond(request, 200, {"metrics": points} if points else {})
        return self._respond(request, 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": api})

    # ---- helpers for assertions ---------------------------------------------------------------
    def find(self, method: str, path_pattern: str) -> list[Call]:
        rx = re.compile(path_pattern)
        return [c for c in self.calls if c.method == method and rx.search(c.path)]


def repr_calls(calls: list[Call]) -> str:
    return "\n".join(f"{c.method} {c.host}{c.path} {c.api_version}" for c in calls)


def route_blob_uploads(monkeypatch: Any, transport: ArmTransport) -> None:
    """azure-ai-ml builds its blob clients (uploads of the CSV and of the code snapshots) without
    forwarding the MLClient's `transport=`; give those real azure-storage-blob clients the recording
    transport too, so uploads are recorded instead of going to the network."""
    import azure.ai.ml._artifacts._blob_storage_helper as helper
    from azure.storage.blob import BlobServiceClient, ContainerClient

    class RoutedBlobServiceClient(BlobServiceClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, transport=transport, **kwargs)

    class RoutedContainerClient(ContainerClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, transport=transport, **kwargs)

    monkeypatch.setattr(helper, "BlobServiceClient", RoutedBlobServiceClient)
    monkeypatch.setattr(helper, "ContainerClient", RoutedContainerClient)


def code_root(tmp_path: Any) -> Any:
    """The repository root whose trainer/ and scorer/ the adapter uploads. The real one once both
    environment files exist; until then a copy of the real code dirs with a minimal conda file."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    if all((repo / d / "environment.yml").is_file() for d in ("trainer", "scorer")):
        return repo
    root = Path(tmp_path) / "repo"
    for d in ("trainer", "scorer"):
        shutil.copytree(repo / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
        env = root / d / "environment.yml"
        if not env.is_file():
            env.write_text(
                f"name: {d}\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n"
                "  - pip:\n      - mlflow==3.17.2\n"
            )
    return root


# The workspace settings of the recorded ARM answers.
WORKSPACE_ENV = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_RESOURCE_GROUP": RG,
    "AZUREML_WORKSPACE_NAME": WS,
    "AZUREML_COMPUTE_NAME": "cpu-cluster",
    "AZUREML_COMPUTE_MAX_NODES": "3",
}
