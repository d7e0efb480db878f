"""A small Function App for the local host's HTTP-surface tests: HTTP starters using the real
DurableOrchestrationClient, route parameters and auth levels, an Event Grid trigger that raises an event
into an orchestration, and a timer trigger. Each trigger appends one JSON line to the file named by the
setting `HTTP_APP_LOG` so tests can see what ran, with which inputs."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def _record(kind: str, **fields: object) -> None:
    path = os.environ.get("HTTP_APP_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, **fields}, default=str) + "\n")


def _json(payload: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


# --- HTTP starters and management through the real DurableOrchestrationClient ------------------------
@app.route(route="orchestrators/{function_name}/{instance_id?}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(
        req.route_params["function_name"],
        req.route_params.get("instance_id"),
        json.loads(body) if body else None,
    )
    return client.create_check_status_response(req, instance_id)


@app.route(route="status/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    st = await client.get_status(req.route_params["instance_id"], show_input=True)
    if st.runtime_status is None:
        return _json({"error": "not found"}, 404)
    return _json(
        {
            "runtimeStatus": st.runtime_status.value,
            "output": st.output,
            "input": st.input_,
            "customStatus": st.custom_status,
        }
    )


@app.route(route="events/{instance_id}/{event_name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def send_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.raise_event(req.route_params["instance_id"], req.route_params["event_name"], req.get_json())
    return func.HttpResponse(status_code=202)


@app.route(route="terminate/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def stop(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.terminate(req.route_params["instance_id"], req.params.get("reason", "stopped"))
    return func.HttpResponse(status_code=202)


# --- routing and auth levels ------------------------------------------------------------------------
@app.route(route="items/{item_id:int}/{label?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route_params": dict(req.route_params), "query": dict(req.params)})


@app.route(route="echo", methods=["POST", "PUT"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    headers = {"X-Echo-Method": req.method, "Set-Cookie": "flavour=ginger; Path=/"}
    return func.HttpResponse(
        req.get_body(), status_code=201, headers=headers, mimetype="application/octet-stream"
    )


@app.route(route="plain", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def plain(req: func.HttpRequest) -> str:
    return f"hello {req.params.get('name', 'world')}"


@app.route(route="admin/ping", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_ping(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"pong": True})


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the boom function always fails")


# --- Event Grid -> orchestration ----------------------------------------------------------------------
@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def job_events(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    data = event.get_json()
    _record(
        "event",
        cls=type(event).__name__,
        id=event.id,
        subject=event.subject,
        type=getattr(event, "event_type", None) or getattr(event, "type", None),
        data=data,
    )
    if isinstance(data, dict) and data.get("instanceId"):
        await client.raise_event(data["instanceId"], "job_finished", data)


# --- timer --------------------------------------------------------------------------------------------
@app.timer_trigger(arg_name="timer", schedule="%HTTP_APP_SCHEDULE%", run_on_startup=True, use_monitor=True)
def tick(timer: func.TimerRequest) -> None:
    _record("timer", past_due=timer.past_due, schedule_status=timer.schedule_status)


# --- orchestrations ---------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def wait_for_job(context: df.DurableOrchestrationContext):
    """Waits for `job_finished` raced against a timer of `timeout_s` seconds."""
    options = context.get_input() or {}
    context.set_custom_status({"waiting": True})
    timer = context.create_timer(
        context.current_utc_datetime + timedelta(seconds=options.get("timeout_s", 60))
    )
    event = context.wait_for_external_event("job_finished")
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        shouted = yield context.call_activity("shout", event.result.get("status", ""))
        return {"outcome": "event", "event": event.result, "shouted": shouted}
    return {"outcome": "timeout"}


@app.activity_trigger(input_name="text")
def shout(text: str) -> str:
    return text.upper()
