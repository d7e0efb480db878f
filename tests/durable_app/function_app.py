"""A small Durable Functions app (Python v2 model) exercising every action the local host supports.

Activities append to the file named by the setting `DURABLE_TEST_LOG` (when set) so tests can see
how often each one ran; `flaky` fails until it has been called `fail_times` times for a given key.
"""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_calls: dict[str, int] = {}
_calls_lock = threading.Lock()


def _log(line: str) -> None:
    path = os.environ.get("DURABLE_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


# --- activities ---------------------------------------------------------------------------------
@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="name")
async def greet(name: str) -> str:
    await asyncio.sleep(0)
    return f"Hello {name}!"


@app.activity_trigger(input_name="payload")
def flaky(payload: dict) -> str:
    key = payload["key"]
    with _calls_lock:
        _calls[key] = _calls.get(key, 0) + 1
        attempt = _calls[key]
    _log(f"flaky {key} {attempt}")
    if attempt <= payload["fail_times"]:
        raise RuntimeError(f"flaky {key} attempt {attempt} failed")
    return f"{key} ok after {attempt}"


@app.activity_trigger(input_name="payload")
def step(payload: dict) -> str:
    """One crash-test step: records that it ran, then (optionally) takes a while."""
    _log(f"step {payload['run']} {payload['i']}")
    delay = float(payload.get("delay", 0))
    if delay:
        import time

        time.sleep(delay)
    return f"s{payload['i']}"


@app.activity_trigger(input_name="value")
def noop(value: int) -> int:
    return value


# --- orchestrators -------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("double", context.get_input())
    second = yield context.call_activity("double", first)
    hello = yield context.call_activity("greet", "durable")
    return {"doubled": second, "hello": hello}


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    n = context.get_input()
    results = yield context.task_all([context.call_activity("double", i) for i in range(n)])
    context.set_custom_status({"done": len(results)})
    return sum(results)


@app.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext):
    options = context.get_input()
    retry = df.RetryOptions(
        first_retry_interval_in_milliseconds=options["interval_ms"],
        max_number_of_attempts=options["attempts"],
    )
    try:
        result = yield context.call_activity_with_retry(
            "flaky", retry, {"key": options["key"], "fail_times": options["fail_times"]}
        )
    except Exception as exc:
        return {"error": str(exc)}
    after = yield context.call_activity("double", 21)  # numbering after the retries must still match
    return {"result": result, "after": after}


@app.orchestration_trigger(context_name="context")
def event_or_timeout(context: df.DurableOrchestrationContext):
    """Waits for `approval`, raced against a timer; cancels the timer when the event wins."""
    seconds = context.get_input()
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    approval = context.wait_for_external_event("approval")
    winner = yield context.task_any([approval, timer])
    if winner == approval:
        timer.cancel()
        return {"winner": "event", "value": approval.result}
    return {"winner": "timer"}


@app.orchestration_trigger(context_name="context")
def collect_events(context: df.DurableOrchestrationContext):
    """Waits for `count` events named `item`, one after the other, after a first activity."""
    count = context.get_input()
    yield context.call_activity("noop", 0)
    items = []
    for _ in range(count):
        value = yield context.wait_for_external_event("item")
        items.append(value)
    return items


@app.orchestration_trigger(context_name="context")
def timer_then_activity(context: df.DurableOrchestrationContext):
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=context.get_input()))
    return (yield context.call_activity("double", 5))


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    """continue_as_new: counts up to the limit; each generation waits for one `tick` event."""
    state = context.get_input()
    if state["n"] >= state["limit"]:
        return state
    tick = yield context.wait_for_external_event("tick")
    state = {"n": state["n"] + 1, "limit": state["limit"], "ticks": [*state.get("ticks", []), tick]}
    context.set_custom_status({"n": state["n"]})
    context.continue_as_new(state)


@app.orchestration_trigger(context_name="context")
def waits_forever(context: df.DurableOrchestrationContext):
    yield context.wait_for_external_event("never")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def uses_http(context: df.DurableOrchestrationContext):
    yield context.call_http("GET", "http://127.0.0.1:9/never")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def raises(context: df.DurableOrchestrationContext):
    yield context.call_activity("double", 1)
    raise ValueError("the orchestrator gave up")


@app.orchestration_trigger(context_name="context")
def raises_with_status(context: df.DurableOrchestrationContext):
    """Reports progress in its custom status, then fails: the failed instance keeps that status."""
    context.set_custom_status({"step": "train", "done": []})
    first = yield context.call_activity("double", 1)
    context.set_custom_status({"step": "evaluate", "done": ["train"], "value": first})
    raise RuntimeError("evaluation found no champion")


@app.orchestration_trigger(context_name="context")
def catches_activity_failure(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("flaky", {"key": context.get_input(), "fail_times": 99})
    except Exception as exc:
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def calls_missing(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("no_such_activity", 1)
    except Exception as exc:
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("sequence", context.get_input())
    return {"child": child}


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    """Fails (through its activity) until `flaky` has been called `fail_times` times for the key."""
    value = yield context.call_activity("flaky", context.get_input())
    return {"value": value, "version": context.version}


@app.orchestration_trigger(context_name="context")
def sub_with_retry(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=spec["attempts"])
    try:
        child = yield context.call_sub_orchestrator_with_retry(
            "flaky_child", retry, {"key": spec["key"], "fail_times": spec["fail_times"]}, version="2.5"
        )
    except Exception as exc:
        return {"error": str(exc)}
    after = yield context.call_activity("double", 21)  # numbering after the retries must still match
    return {"child": child, "after": after}


@app.orchestration_trigger(context_name="context")
def countdown(context: df.DurableOrchestrationContext):
    n = context.get_input()
    if n == 0:
        return "lift-off"
    yield context.call_activity("noop", n)
    context.continue_as_new(n - 1)


@app.orchestration_trigger(context_name="context")
def parent_of_countdown(context: df.DurableOrchestrationContext):
    return (yield context.call_sub_orchestrator("countdown", context.get_input()))


@app.orchestration_trigger(context_name="context")
def loop(context: df.DurableOrchestrationContext):
    """N sequential no-op activities (the bench and the crash test use it)."""
    spec = context.get_input()
    results = []
    for i in range(spec["n"]):
        if spec.get("step"):
            results.append(
                (
                    yield context.call_activity(
                        "step", {"run": spec["run"], "i": i, "delay": spec.get("delay", 0)}
                    )
                )
            )
        else:
            results.append((yield context.call_activity("noop", i)))
        if spec.get("timer_at") == i:
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=spec["timer_s"]))
    if spec.get("fan_out"):
        results.append(
            sum(
                (yield context.task_all([context.call_activity("double", j) for j in range(spec["fan_out"])]))
            )
        )
    return results


@app.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    """Calls the activity named in the module-level switch: tests flip it to change the code."""
    yield context.call_activity(NONDETERMINISTIC_FIRST, 1)
    context.set_custom_status({"step": "waiting for go"})
    yield context.wait_for_external_event("go")
    return "done"


NONDETERMINISTIC_FIRST = "double"
