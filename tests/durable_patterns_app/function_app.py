"""An app shaped like Microsoft's Durable Functions samples (samples-v2 and the classic patterns), so the
local host's support for them is tested without a checkout of that repository: function chaining (in a
blueprint), fan-out/fan-in, human interaction (an event raced against a timer), monitor, sub-orchestration,
orchestration versioning (host.json defaultVersion), and instance management through the SDK client."""

import json
import threading
from datetime import datetime, timedelta

import azure.durable_functions as df
import azure.functions as func
from patterns_blueprint import bp  # a name no sample uses: modules are cached by name

myApp = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
myApp.register_functions(bp)


# --- starter and management, through the SDK client ------------------------------------------------
@myApp.route(route="orchestrators/{functionName}")
@myApp.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    version = req.params.get("version")  # as the versioning sample: optional, else host.json's default
    instance_id = await client.start_new(
        req.route_params["functionName"], client_input=payload, version=version
    )
    return client.create_check_status_response(req, instance_id)


@myApp.route(route="manage/{instanceId}/{operation}", methods=["POST"])
@myApp.durable_client_input(client_name="client")
async def manage(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id, operation = req.route_params["instanceId"], req.route_params["operation"]
    if operation == "suspend":
        await client.suspend(instance_id, "paused by the test")
    elif operation == "resume":
        await client.resume(instance_id, "resumed by the test")
    elif operation == "purge":
        result = await client.purge_instance_history(instance_id)
        return func.HttpResponse(json.dumps({"instancesDeleted": result.instances_deleted}))
    else:
        return func.HttpResponse(f"unknown operation {operation}", status_code=400)
    status = await client.get_status(instance_id)
    return func.HttpResponse(json.dumps({"runtimeStatus": status.runtime_status.value}))


@myApp.route(route="history", methods=["GET", "DELETE"])
@myApp.durable_client_input(client_name="client")
async def history(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Completed instances created since ?from= (GET lists their ids, DELETE purges them)."""
    since = datetime.fromisoformat(req.params["from"])
    completed = [df.OrchestrationRuntimeStatus.Completed]
    if req.method == "DELETE":
        result = await client.purge_instance_history_by(created_time_from=since, runtime_status=completed)
        return func.HttpResponse(json.dumps({"instancesDeleted": result.instances_deleted}))
    found = await client.get_status_by(created_time_from=since, runtime_status=completed)
    return func.HttpResponse(json.dumps(sorted(s.instance_id for s in found)))


# --- fan-out/fan-in ---------------------------------------------------------------------------------
@myApp.orchestration_trigger(context_name="context")
def fan_out_fan_in(context: df.DurableOrchestrationContext):
    items = yield context.call_activity("list_items", context.get_input())
    sizes = yield context.task_all([context.call_activity("measure", item) for item in items])
    return {"items": len(items), "total": sum(sizes)}


@myApp.activity_trigger(input_name="count")
def list_items(count: int) -> list:
    return [f"file-{i}" * (i + 1) for i in range(count)]


@myApp.activity_trigger(input_name="item")
def measure(item: str) -> int:
    return len(item)


# --- human interaction: an approval event raced against a deadline ------------------------------------
@myApp.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    deadline = context.current_utc_datetime + timedelta(seconds=context.get_input()["timeout_s"])
    timeout = context.create_timer(deadline)
    answer = context.wait_for_external_event("Approval")
    context.set_custom_status("waiting for approval")
    winner = yield context.task_any([answer, timeout])
    if winner == answer:
        timeout.cancel()
        return {"approved": answer.result}
    return {"approved": None, "reason": "timed out"}


# --- monitor: poll until done, with durable timers between polls ---------------------------------------
_polls: dict[str, int] = {}
_polls_lock = threading.Lock()


@myApp.orchestration_trigger(context_name="context")
def monitor(context: df.DurableOrchestrationContext):
    job = context.get_input()
    expiry = context.current_utc_datetime + timedelta(seconds=30)
    checks = 0
    while context.current_utc_datetime < expiry:
        status = yield context.call_activity("job_status", job)
        checks += 1
        if status == "Completed":
            return {"job": job["name"], "checks": checks}
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=job["interval_s"]))
    return {"job": job["name"], "checks": checks, "expired": True}


@myApp.activity_trigger(input_name="job")
def job_status(job: dict) -> str:
    with _polls_lock:
        _polls[job["name"]] = _polls.get(job["name"], 0) + 1
        polls = _polls[job["name"]]
    return "Completed" if polls >= job["done_after"] else "Running"


# --- sub-orchestration ----------------------------------------------------------------------------------
@myApp.orchestration_trigger(context_name="context")
def orchestrator(context: df.DurableOrchestrationContext):
    return (yield context.call_sub_orchestrator("sub_orchestrator", "Seattle"))


@myApp.orchestration_trigger(context_name="context")
def sub_orchestrator(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("hello", context.get_input()))


@myApp.activity_trigger(input_name="name")
def hello(name: str) -> str:
    return "Hello " + name


# --- versioning -----------------------------------------------------------------------------------------
@myApp.orchestration_trigger(context_name="context")
def versioned(context: df.DurableOrchestrationContext):
    # context.version: the start request's version, else host.json's defaultVersion when it was created
    if context.version == "1.0":
        activity_result = yield context.call_activity("activity_a")
    else:
        activity_result = yield context.call_activity("activity_b")
    context.set_custom_status("Waiting for Continue event...")
    yield context.wait_for_external_event("Continue")
    explicit = yield context.call_sub_orchestrator("version_of", version="0.9")
    default = yield context.call_sub_orchestrator("version_of")
    return [context.version, explicit, default, activity_result]


@myApp.orchestration_trigger(context_name="context")
def version_of(context: df.DurableOrchestrationContext):
    return context.version


@myApp.activity_trigger(input_name="input")
def activity_a(input: str) -> str:
    return "Hello from A!"


@myApp.activity_trigger(input_name="input")
def activity_b(input: str) -> str:
    return "Hello from B!"
