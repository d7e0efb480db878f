"""The local Functions host's request router: the pure request -> response part of the HTTP surface.

It checks keys and sends each request to the HTTP trigger functions (`/<routePrefix>/<route>`, route
parameters, methods and auth levels from the decorators), the Event Grid webhook (http/eventgrid.py) or
the Durable Functions HTTP API (http/durable_api.py); see docs/architecture.md."""

from __future__ import annotations

import json
import logging
import threading
import traceback
import urllib.parse
from dataclasses import dataclass

from functions_host.functions import (
    HTTP_TRIGGER,
    TIMER_TRIGGER,
    FunctionIndex,
    HttpRequestData,
    HttpResult,
    IndexedFunction,
)
from functions_host.http.durable_api import DURABLE_WEBHOOK_PATH, DurableBackend, DurableHttpApi, DurableUrls
from functions_host.http.eventgrid import EVENTGRID_WEBHOOK_PATH, EventGridWebhook
from functions_host.http.messages import Request, provided_key, shown, text_response, too_deep
from functions_host.http.routes import ALL_METHODS, RouteTemplate, compile_route
from functions_host.keys import DURABLE_EXTENSION, HostKeys

log = logging.getLogger("functions_host.http.router")
ADMIN_FUNCTIONS_PATH = "/admin/functions/"


@dataclass
class HttpRoute:
    function: IndexedFunction
    template: RouteTemplate


class HostRouter:
    """Routes a request to an HTTP trigger, the Event Grid webhook or the Durable HTTP API."""

    def __init__(
        self,
        index: FunctionIndex,
        keys: HostKeys,
        urls: DurableUrls,
        engine: DurableBackend | None,
        route_prefix: str = "api",
    ) -> None:
        self.index = index
        self.keys = keys
        self.urls = urls
        self.event_grid = EventGridWebhook(index, keys)
        self.durable_api = DurableHttpApi(index, urls, engine)
        self.route_prefix = route_prefix
        routes = [HttpRoute(f, compile_route(f.route, route_prefix)) for f in index.by_trigger(HTTP_TRIGGER)]
        self.routes = sorted(routes, key=lambda r: r.template.precedence)

    @property
    def engine(self) -> DurableBackend | None:
        return self.durable_api.engine

    @engine.setter
    def engine(self, engine: DurableBackend | None) -> None:
        self.durable_api.engine = engine

    # -- entry ------------------------------------------------------------------------------------
    def handle(self, request: Request) -> HttpResult:
        path = request.path
        try:
            if path == EVENTGRID_WEBHOOK_PATH or path.startswith(EVENTGRID_WEBHOOK_PATH + "/"):
                return self.event_grid.handle(request)
            if path == DURABLE_WEBHOOK_PATH or path.startswith(DURABLE_WEBHOOK_PATH + "/"):
                if not self._authorized_extension(request, DURABLE_EXTENSION):
                    return text_response(
                        401,
                        "Unauthorized: the Durable Task webhook needs the durabletask_extension system key "
                        "or the master key (x-functions-key header or code query parameter)",
                    )
                return too_deep(request) or self.durable_api.handle(
                    request, path[len(DURABLE_WEBHOOK_PATH) :]
                )
            if path.startswith(ADMIN_FUNCTIONS_PATH):
                return self._run_function(request, urllib.parse.unquote(path[len(ADMIN_FUNCTIONS_PATH) :]))
            rpc_prefix = f"/durabletask/{self.urls.rpc_token}"
            if path == rpc_prefix or path.startswith(rpc_prefix + "/"):
                return too_deep(request) or self.durable_api.handle(request, path[len(rpc_prefix) :])
            if path in ("", "/"):
                return text_response(200, "The local Functions host is running.")
            return self._http_trigger(request)
        except RecursionError:
            return text_response(400, "Bad Request: the input nests too deeply; send a flatter document")
        except Exception as exc:  # noqa: BLE001 - the host answers 500, never drops the connection
            log.error("unhandled error on %s %s\n%s", request.method, shown(path), traceback.format_exc())
            return text_response(500, f"Internal Server Error: {type(exc).__name__}: {shown(str(exc), 300)}")

    def _authorized(self, request: Request, level: str) -> bool:
        return self.keys.allows(provided_key(request), level)

    def _authorized_extension(self, request: Request, extension: str) -> bool:
        return self.keys.allows_extension(provided_key(request), extension)

    # -- admin: run a non-HTTP function now ---------------------------------------------------------
    def _run_function(self, request: Request, name: str) -> HttpResult:
        """`POST /admin/functions/{name}` with the master key and a body `{"input": ...}`: Azure's "manually
        run a non HTTP-triggered function" (the portal's Test/Run). As the Azure host does, the run is
        queued and the answer is 202 at once. The local host runs timer functions this way (a timer's
        `past_due` is false and its schedule status empty: an occurrence out of schedule)."""
        if not self._authorized(request, "admin"):
            return text_response(
                401, "Unauthorized: /admin/ routes need the master key (x-functions-key header or code query)"
            )
        if request.method != "POST":
            return text_response(405, f'Method Not Allowed: {request.method}; POST {{"input": ""}} runs it')
        fn = self.index.functions.get(name)
        if fn is None:
            return text_response(404, f"Not Found: no function named {shown(name)}")
        if fn.trigger_type != TIMER_TRIGGER:
            return text_response(
                400,
                f"Bad Request: {fn.name} is a {fn.trigger_type}; the local host runs timer functions this way "
                "(call an HTTP function at its route, send an event to the Event Grid webhook)",
            )
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return text_response(400, 'Bad Request: send a JSON object body, {"input": ""}')

        def run() -> None:
            try:
                self.index.invoke_timer(fn.name, past_due=False, schedule_status=None)
            except Exception:  # noqa: BLE001 - as a scheduled run: logged, nobody waits for it
                log.error("Executed 'Functions.%s' (Failed)\n%s", fn.name, traceback.format_exc())

        threading.Thread(target=run, name=f"admin-run-{fn.name}", daemon=True).start()
        return HttpResult(202, [], b"")

    # -- HTTP triggers ----------------------------------------------------------------------------
    def _http_trigger(self, request: Request) -> HttpResult:
        matched = [(r, p) for r in self.routes if (p := r.template.match(request.path)) is not None]
        allowed = [(r, p) for r, p in matched if request.method in (r.function.methods or ALL_METHODS)]
        if not allowed:
            # Azure's routing answers 404 for a known route with another method (azure-functions-host#10098)
            return text_response(404, f"Not Found: no function at {request.method} {shown(request.path)}")
        route, params = allowed[0]
        level = route.function.auth_level
        if not self._authorized(request, "admin" if level in ("admin", "system") else level):
            return text_response(
                401,
                f"Unauthorized: function {route.function.name!r} needs a "
                f"{'system' if level in ('admin', 'system') else 'function'} key "
                "(x-functions-key header or code query parameter)",
            )
        if (refused := too_deep(request)) is not None:
            return refused
        data = HttpRequestData(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            query=dict(request.query),
            route_params=params,
            body=request.body,
        )
        try:
            return self.index.invoke_http(route.function.name, data)
        except Exception as exc:  # noqa: BLE001 - a failing function is a 500, as in Azure
            log.error("Executed 'Functions.%s' (Failed)\n%s", route.function.name, traceback.format_exc())
            return text_response(
                500,
                f"Exception while executing function: Functions.{route.function.name} -> "
                f"{type(exc).__name__}: {shown(str(exc), 300)}",
            )
