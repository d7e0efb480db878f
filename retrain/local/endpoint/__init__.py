"""The local online endpoint: blue/green slots behind one stable scoring URL, as strict as Azure.

Each slot is a real `azmlinfsrv` process running `scorer/score.py` with the slot's model (see
`inference_server.py`). One small threaded HTTP/1.1 reverse proxy on 127.0.0.1 (the router) is the
endpoint's scoring URL: it sends each request to a slot by the traffic weights (smooth weighted
round-robin), or to the slot named in the `azureml-model-deployment` header, as Azure does. It keeps
alive its clients' connections and a small pool of connections to each slot, probes each slot's
liveness and never forwards to a slot it knows is down (503 with Retry-After when no slot with traffic
is live; 404 "No valid deployments to route to" when no slot has traffic, as Azure answers).

Everything lives in `<state>/endpoints/<endpoint>/state.json` (written atomically under a file lock,
with a revision number): the router's port (chosen once, so the scoring URL never changes), the applied
traffic, each slot's model, PID and port, and the operation in progress. As in Azure, a traffic update
or a delete is long-running (`Updating`/`Deleting` first) and an endpoint takes one operation at a time
(`EndpointBusyError`, Azure's 409). The router follows state.json and swaps its table as one object
under the lock that also counts requests in flight, so a delete stops a slot's process only after the
router routes by the new table with nothing in flight to it: no request is dropped.

Slot liveness for callers: `get_deployment` is `Succeeded` only while the slot answers its liveness
probe; `Creating` during its first start, `Failed` if that start failed (delete it before reuse),
`Updating` while a slot that was live is down and being restarted. The router's own status
(`GET /-/router` on the scoring port) lists the table revision, requests in flight and live slots.

Modules: `routing` (pure decisions and validation), `router` (the HTTP server and its connection pool),
`state` (state.json), `operations` (long-running operations, one at a time), `slots` (slot processes,
health, supervisor), `endpoints` (`LocalEndpoints`, the MLPlatform calls) and `detached` (the router as
its own process).
"""

from retrain.local.endpoint.detached import main
from retrain.local.endpoint.endpoints import LocalEndpoints, ModelFetcher
from retrain.local.endpoint.router import (
    HEALTH_INTERVAL_S,
    ROUTER_STATUS_PATH,
    ScoringRouter,
    SlotPool,
    router_status,
)
from retrain.local.endpoint.routing import (
    DEPLOYMENT_HEADER,
    NO_VALID_DEPLOYMENTS,
    RETRY_AFTER_S,
    RoutingTable,
    WeightedPicker,
    choose_slot,
    validate_endpoint_name,
    validate_slot,
    validate_traffic,
)

__all__ = [
    "DEPLOYMENT_HEADER",
    "HEALTH_INTERVAL_S",
    "NO_VALID_DEPLOYMENTS",
    "RETRY_AFTER_S",
    "ROUTER_STATUS_PATH",
    "LocalEndpoints",
    "ModelFetcher",
    "RoutingTable",
    "ScoringRouter",
    "SlotPool",
    "WeightedPicker",
    "choose_slot",
    "main",
    "router_status",
    "validate_endpoint_name",
    "validate_slot",
    "validate_traffic",
]
