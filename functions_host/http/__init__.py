"""The local Functions host's HTTP surface on 127.0.0.1, mirroring the Azure Functions host:

- `router`: keys and dispatch; HTTP triggers at `/<routePrefix>/<route>` (route parameters from
  `routes`, methods and auth levels from the decorators);
- `eventgrid`: the Event Grid webhook `POST /runtime/webhooks/eventgrid?functionName=<name>` (system key);
- `durable_api`: the Durable Functions HTTP API under `/runtime/webhooks/durabletask/` (system key) and
  under the extension's RPC base URL (`/durabletask/<token>/`), which the Durable SDK client calls;
- `messages`: the request, the responses and the guards every route applies;
- `server`: the thin stdlib threaded server (framing, timeouts, bounded worker threads).

See docs/architecture.md.
"""

from functions_host.http.durable_api import DurableBackend, DurableUrls
from functions_host.http.messages import Request, json_nesting_exceeds
from functions_host.http.router import HostRouter
from functions_host.http.routes import ALL_METHODS, RouteError, compile_route
from functions_host.http.server import HostHTTPServer

__all__ = [
    "ALL_METHODS",
    "DurableBackend",
    "DurableUrls",
    "HostHTTPServer",
    "HostRouter",
    "Request",
    "RouteError",
    "compile_route",
    "json_nesting_exceeds",
]
