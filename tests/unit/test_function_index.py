"""Indexing a function_app.py from its decorators and invoking functions through the worker's converters."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from functions_host.functions import (
    ACTIVITY_TRIGGER,
    EVENT_GRID_TRIGGER,
    HTTP_TRIGGER,
    ORCHESTRATION_TRIGGER,
    TIMER_TRIGGER,
    FunctionIndex,
    FunctionLoadError,
    HttpRequestData,
    UnknownFunctionError,
)

TESTS = Path(__file__).resolve().parents[1]
HTTP_APP = TESTS / "http_app" / "function_app.py"
DURABLE_APP = TESTS / "durable_app" / "function_app.py"


@pytest.fixture(scope="module")
def http_index() -> FunctionIndex:
    return FunctionIndex.load(HTTP_APP, {"HTTP_APP_SCHEDULE": "0 */5 * * * *"})


@pytest.fixture(scope="module")
def durable_index() -> FunctionIndex:
    return FunctionIndex.load(DURABLE_APP, {})


def test_triggers_and_bindings_come_from_the_decorators(http_index: FunctionIndex) -> None:
    kinds = {name: f.trigger_type for name, f in http_index.functions.items()}
    assert kinds["start"] == HTTP_TRIGGER and kinds["job_events"] == EVENT_GRID_TRIGGER
    assert kinds["tick"] == TIMER_TRIGGER and kinds["wait_for_job"] == ORCHESTRATION_TRIGGER
    assert kinds["shout"] == ACTIVITY_TRIGGER
    start = http_index.functions["start"]
    assert start.route == "orchestrators/{function_name}/{instance_id?}"
    assert start.methods == ("POST",) and start.auth_level == "function" and start.is_async
    assert [b.type for b in start.bindings] == ["durableClient", "httpTrigger", "http"]
    assert (
        start.input_types["client"].binding == "generic"
    )  # the SDK forces `str`, the worker's generic binding
    assert http_index.functions["item"].auth_level == "anonymous"
    assert http_index.functions["admin_ping"].auth_level == "admin"
    assert set(http_index.orchestrators) == {"wait_for_job"} and set(http_index.activities) == {"shout"}
    assert http_index.has_function("orchestrator", "wait_for_job") and not http_index.has_function(
        "activity", "nope"
    )


def test_setting_references_resolve_and_missing_ones_fail(http_index: FunctionIndex) -> None:
    assert http_index.functions["tick"].trigger.get("schedule") == "0 */5 * * * *"
    assert http_index.functions["tick"].trigger.get("runOnStartup") is True
    with pytest.raises(FunctionLoadError, match="'%HTTP_APP_SCHEDULE%' does not resolve to a value"):
        FunctionIndex.load(HTTP_APP, {})


def test_activity_round_trip_through_the_activity_converter(durable_index: FunctionIndex) -> None:
    assert durable_index.run_activity("double", "21") == "42"
    assert durable_index.run_activity("greet", json.dumps("local")) == json.dumps(
        "Hello local!"
    )  # async, awaited
    with pytest.raises(RuntimeError, match="flaky k attempt 1 failed"):  # the user's exception propagates
        durable_index.run_activity("flaky", json.dumps({"key": "k", "fail_times": 1}))
    assert (
        json.loads(durable_index.run_activity("flaky", json.dumps({"key": "k", "fail_times": 1})))
        == "k ok after 2"
    )
    with pytest.raises(UnknownFunctionError, match="no activity named 'missing'"):
        durable_index.run_activity("missing", None)


def test_orchestrator_episode_returns_the_sdk_state(durable_index: FunctionIndex) -> None:
    context = {
        "history": [
            {"EventType": 12, "EventId": -1, "IsPlayed": False, "Timestamp": "2024-01-01T00:00:00.000000Z"},
            {
                "EventType": 0,
                "EventId": -1,
                "IsPlayed": False,
                "Timestamp": "2024-01-01T00:00:00.000000Z",
                "Name": "sequence",
                "Input": "3",
                "Version": "",
            },
        ],
        "input": "3",
        "instanceId": "abc",
        "isReplaying": False,
        "parentInstanceId": None,
        "upperSchemaVersion": 2,
    }
    state = json.loads(durable_index.run_orchestrator("sequence", json.dumps(context)))
    assert state["isDone"] is False
    action = (
        state["actions"][0][0]
        if state["actions"] and isinstance(state["actions"][0], list)
        else state["actions"][0]
    )
    assert action["functionName"] == "double" and json.loads(action["input"]) == 3


def test_http_invocation_uses_the_request_and_response_converters(http_index: FunctionIndex) -> None:
    request = HttpRequestData(
        method="POST",
        url="http://127.0.0.1:1/api/echo?x=1",
        headers={"Content-Type": "a/b"},
        query={"x": "1"},
        route_params={},
        body=b"\x00payload",
    )
    result = http_index.invoke_http("echo", request)
    assert result.status == 201 and result.body == b"\x00payload"
    headers = dict(result.headers)
    assert headers["X-Echo-Method"] == "POST" and headers["Set-Cookie"].startswith("flavour=ginger")
    plain = http_index.invoke_http(
        "plain", HttpRequestData("GET", "http://x/api/plain?name=ada", {}, {"name": "ada"}, {}, b"")
    )
    assert (plain.status, plain.body) == (200, b"hello ada")  # a str return is a 200 text/plain


def _write_app(tmp_path: Path, body: str) -> Path:
    app = tmp_path / "function_app.py"
    app.write_text("import azure.functions as func\n" + textwrap.dedent(body))
    return app


def test_an_app_without_a_function_app_instance_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FunctionLoadError, match="could not find a top level function app"):
        FunctionIndex.load(_write_app(tmp_path, "x = 1\n"), {})


def test_parameters_must_match_the_bindings(tmp_path: Path) -> None:
    app = _write_app(
        tmp_path,
        """
        app = func.FunctionApp()

        @app.route(route="r")
        def r(req: func.HttpRequest, extra: str) -> func.HttpResponse:
            return func.HttpResponse("x")
    """,
    )
    with pytest.raises(FunctionLoadError, match="declared in Python but not in the bindings"):
        FunctionIndex.load(app, {})


def test_annotation_must_suit_the_converter(tmp_path: Path) -> None:
    app = _write_app(
        tmp_path,
        """
        app = func.FunctionApp()

        @app.event_grid_trigger(arg_name="event")
        def on_event(event: func.HttpRequest) -> None:
            pass
    """,
    )
    with pytest.raises(FunctionLoadError, match='type of event binding "eventGridTrigger" does not match'):
        FunctionIndex.load(app, {})


def test_unset_settings_fall_back_to_the_defaults_the_app_declares(tmp_path: Path) -> None:
    app = _write_app(
        tmp_path,
        """
        app = func.FunctionApp()

        @app.timer_trigger(arg_name="timer", schedule="%RETRAIN_SCHEDULE%")
        def weekly(timer: func.TimerRequest) -> None:
            pass
    """,
    )
    defaults = {"RETRAIN_SCHEDULE": "0 0 1 * * Mon"}
    assert (
        FunctionIndex.load(app, {}, defaults).functions["weekly"].trigger.get("schedule") == "0 0 1 * * Mon"
    )
    with pytest.raises(FunctionLoadError, match="RETRAIN_SCHEDULE"):
        FunctionIndex.load(app, {})
    assert (
        FunctionIndex.load(app, {"RETRAIN_SCHEDULE": "0 0 2 * * *"}, defaults)
        .functions["weekly"]
        .trigger.get("schedule")
        == "0 0 2 * * *"
    )
