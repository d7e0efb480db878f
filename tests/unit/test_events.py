"""Event Grid / CloudEvents payloads -> JobEvent. The base payloads follow the samples Microsoft documents
for Azure Machine Learning as an Event Grid source (learn.microsoft.com/azure/event-grid/
event-schema-machine-learning), in both schemas, with our job tags added where the test needs them."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from retrain.events import (
    INSTANCE_ID_TAG,
    RUN_COMPLETED,
    RUN_STATUS_CHANGED,
    SUBSCRIPTION_VALIDATION_EVENT,
    EventPayloadError,
    JobEvent,
    event_types,
    parse_events,
    parse_function_event,
    validation_code,
)

TOPIC = (
    "/subscriptions/{subscription-id}/resourceGroups/{resource-group-name}/providers/"
    "Microsoft.MachineLearningServices/workspaces/{workspace-name}"
)
RUN_ID = "AutoML_ad912b2d-6467-4f32-a616-dbe4af6dd8fc_5"
EXPERIMENT_ID = "0fa9dfaa-cba3-4fa7-b590-23e48548f5c1"
RUN_PROPERTIES = {
    "runTemplate": "automl_child",
    "pipeline_id": "5adc0a4fe02504a586f09a4fcbb241f9a4012062",
    "training_percent": "100",
    "iteration": "5",
    "model_name": "AutoMLad912b2d65",
}


def documented_data(*, status: str | None = None, tags: dict[str, str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "experimentId": EXPERIMENT_ID,
        "experimentName": "automl-local-regression",
        "runId": RUN_ID,
        "runType": None,
        "runTags": {} if tags is None else tags,
        "runProperties": dict(RUN_PROPERTIES),
    }
    if status is not None:
        data["runStatus"] = status
    return data


def event_grid(event_type: str, data: Any) -> dict[str, Any]:
    return {
        "topic": TOPIC,
        "subject": f"experiments/{EXPERIMENT_ID}/runs/{RUN_ID}",
        "eventType": event_type,
        "eventTime": "2017-06-26T18:41:00.9584103Z",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


def cloud_event(event_type: str, data: Any) -> dict[str, Any]:
    return {
        "source": TOPIC,
        "subject": f"experiments/{EXPERIMENT_ID}/runs/{RUN_ID}",
        "type": event_type,
        "time": "2017-06-26T18:41:00.9584103Z",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "data": data,
        "specversion": "1.0",
    }


OUR_TAGS = {
    INSTANCE_ID_TAG: "retrain-MSFT-2024w10",
    "ticker": "MSFT",
    "data_asset": "msft-daily",
    "data_version": "20240301-0123456789ab",
}


# ------------------------------------------------------------------------------ the documented samples


@pytest.mark.parametrize("wrap, schema", [(event_grid, "eventgrid"), (cloud_event, "cloudevents")])
def test_documented_run_completed_sample(wrap, schema: str) -> None:
    body = json.dumps([wrap(RUN_COMPLETED, documented_data())]).encode()
    (event,) = parse_events(body)
    assert event == JobEvent(
        job_name=RUN_ID,
        instance_id=None,
        status="Completed",
        event_type=RUN_COMPLETED,
        experiment_name="automl-local-regression",
        ticker=None,
        event_id="831e1650-001e-001b-66ab-eeb76e069631",
        event_time="2017-06-26T18:41:00.9584103Z",
        schema=schema,
        tags={},
    )
    assert not event.relevant  # the sample's runTags are empty: not one of our jobs
    assert event.terminal and event.succeeded


@pytest.mark.parametrize("wrap", [event_grid, cloud_event])
def test_documented_run_status_changed_sample_lower_case_failed(wrap) -> None:
    (event,) = parse_events(json.dumps([wrap(RUN_STATUS_CHANGED, documented_data(status="failed"))]))
    assert event.status == "Failed"  # normalised to Azure ML's JobStatus spelling
    assert event.terminal and not event.succeeded
    assert event.event_type == RUN_STATUS_CHANGED


@pytest.mark.parametrize("wrap", [event_grid, cloud_event])
def test_our_job_carries_instance_id_and_ticker(wrap) -> None:
    (event,) = parse_events([wrap(RUN_COMPLETED, documented_data(tags=OUR_TAGS))])
    assert event.relevant
    assert event.instance_id == "retrain-MSFT-2024w10"
    assert event.ticker == "MSFT"
    assert event.tags == OUR_TAGS
    assert event.to_dict()["instance_id"] == "retrain-MSFT-2024w10"


def test_single_object_and_array_give_the_same_events() -> None:
    one = event_grid(RUN_COMPLETED, documented_data(tags=OUR_TAGS))
    assert parse_events(one) == parse_events([one]) == parse_events(json.dumps(one))


def test_a_batch_keeps_order_and_skips_other_event_types() -> None:
    model_registered = event_grid(
        "Microsoft.MachineLearningServices.ModelRegistered",
        {"ModelName": "sklearn_regression_model", "ModelVersion": 20},
    )
    body = [
        event_grid(RUN_STATUS_CHANGED, documented_data(status="Running", tags=OUR_TAGS)),
        model_registered,
        event_grid(RUN_COMPLETED, documented_data(tags=OUR_TAGS)),
    ]
    events = parse_events(body)
    assert [(e.event_type, e.status) for e in events] == [
        (RUN_STATUS_CHANGED, "Running"),
        (RUN_COMPLETED, "Completed"),
    ]
    assert not events[0].terminal
    assert event_types(body)[1] == "Microsoft.MachineLearningServices.ModelRegistered"
    assert parse_events([model_registered]) == []
    assert parse_events([]) == []


# ------------------------------------------------------------------------------ field-name variants


def test_pascal_case_fields() -> None:
    data = {"ExperimentName": "msft", "RunId": "job-1", "RunTags": OUR_TAGS, "RunStatus": "Canceled"}
    (event,) = parse_events([event_grid(RUN_STATUS_CHANGED, data)])
    assert (event.job_name, event.status, event.instance_id, event.experiment_name) == (
        "job-1",
        "Canceled",
        "retrain-MSFT-2024w10",
        "msft",
    )


def test_snake_case_fields_and_plain_tags_and_status() -> None:
    data = {"experiment_name": "msft", "run_id": "job-2", "tags": OUR_TAGS, "status": "cancelled"}
    (event,) = parse_events([cloud_event(RUN_STATUS_CHANGED, data)])
    assert (event.job_name, event.status, event.instance_id) == ("job-2", "Canceled", "retrain-MSFT-2024w10")


def test_job_name_from_subject_when_data_has_no_run_id() -> None:
    data = documented_data(tags=OUR_TAGS)
    del data["runId"]
    (event,) = parse_events([event_grid(RUN_COMPLETED, data)])
    assert event.job_name == RUN_ID


def test_run_completed_honours_a_run_status_it_carries() -> None:
    (event,) = parse_events([event_grid(RUN_COMPLETED, documented_data(status="Failed", tags=OUR_TAGS))])
    assert event.status == "Failed"


def test_data_as_a_json_string() -> None:
    (event,) = parse_events([cloud_event(RUN_COMPLETED, json.dumps(documented_data(tags=OUR_TAGS)))])
    assert event.instance_id == "retrain-MSFT-2024w10"


def test_cloud_event_with_data_base64() -> None:
    raw = cloud_event(RUN_STATUS_CHANGED, None)
    del raw["data"]
    raw["data_base64"] = base64.b64encode(
        json.dumps(documented_data(status="Completed", tags=OUR_TAGS)).encode()
    ).decode()
    (event,) = parse_events(raw)
    assert (event.status, event.instance_id, event.schema) == (
        "Completed",
        "retrain-MSFT-2024w10",
        "cloudevents",
    )


def test_tags_serialised_as_a_string_and_non_string_values() -> None:
    data = documented_data(tags=None)
    data["runTags"] = json.dumps({INSTANCE_ID_TAG: "abc", "epochs": 3})
    (event,) = parse_events([event_grid(RUN_COMPLETED, data)])
    assert event.instance_id == "abc" and event.tags["epochs"] == "3"


def test_instance_id_in_run_properties_is_found_too() -> None:
    data = documented_data()
    data["runProperties"][INSTANCE_ID_TAG] = "from-properties"
    (event,) = parse_events([event_grid(RUN_COMPLETED, data)])
    assert event.instance_id == "from-properties"


def test_bytes_with_bom_and_type_spelled_with_capital() -> None:
    raw = event_grid(RUN_COMPLETED, documented_data(tags=OUR_TAGS))
    raw["EventType"] = raw.pop("eventType")
    (event,) = parse_events(b"\xef\xbb\xbf" + json.dumps([raw]).encode())
    assert event.event_type == RUN_COMPLETED


def test_unknown_status_is_kept_as_sent_and_is_not_terminal() -> None:
    (event,) = parse_events([event_grid(RUN_STATUS_CHANGED, documented_data(status="Hibernating"))])
    assert event.status == "Hibernating" and not event.terminal


# ------------------------------------------------------------------------------ subscription validation


def test_subscription_validation_code() -> None:
    handshake = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": TOPIC,
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x/validate?id=y",
            },
            "eventType": SUBSCRIPTION_VALIDATION_EVENT,
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    assert validation_code(handshake) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert parse_events(handshake) == []  # not a run event: skipped
    assert validation_code([event_grid(RUN_COMPLETED, documented_data())]) is None
    broken = copy.deepcopy(handshake)
    broken[0]["data"] = {}
    with pytest.raises(EventPayloadError, match="validationCode"):
        validation_code(broken)


# ------------------------------------------------------------------------------ malformed


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "payload is empty"),
        ("   ", "payload is empty"),
        (b"\xff\xfe\x00", "not UTF-8"),
        ("{not json", "not valid JSON"),
        ("42", "payload is a JSON int"),
        ('"text"', "payload is a JSON str"),
        ("[1, 2]", "event 0 is a int, not an object"),
        ('[{"subject": "x", "data": {}}]', "event 0 has no eventType .* or type"),
    ],
)
def test_malformed_payloads(body: Any, message: str) -> None:
    with pytest.raises(EventPayloadError, match=message):
        parse_events(body)


def test_run_event_without_any_run_id() -> None:
    raw = event_grid(RUN_COMPLETED, {"experimentName": "x"})
    raw["subject"] = "something/else"
    with pytest.raises(EventPayloadError, match=r"names no run: expected data.runId or a subject"):
        parse_events([raw])


def test_status_changed_without_status() -> None:
    with pytest.raises(EventPayloadError, match="RunStatusChanged for .* has no data.runStatus"):
        parse_events([event_grid(RUN_STATUS_CHANGED, documented_data())])


@pytest.mark.parametrize(
    "data, message", [([1, 2], "data is a list"), ("{oops", "data is a string but not JSON")]
)
def test_bad_data(data: Any, message: str) -> None:
    with pytest.raises(EventPayloadError, match=message):
        parse_events([event_grid(RUN_COMPLETED, data)])


def test_bad_base64_and_bad_tags() -> None:
    raw = cloud_event(RUN_COMPLETED, None)
    del raw["data"]
    raw["data_base64"] = "!!not base64!!"
    with pytest.raises(EventPayloadError, match="data_base64"):
        parse_events(raw)
    with pytest.raises(EventPayloadError, match="run tags are a list"):
        parse_events([event_grid(RUN_COMPLETED, documented_data(tags=["a"]))])  # type: ignore[arg-type]


def test_function_event_object_from_the_real_azure_functions_sdk() -> None:
    import datetime as dt

    func = pytest.importorskip("azure.functions")
    raw = event_grid(RUN_STATUS_CHANGED, documented_data(status="Failed", tags=OUR_TAGS))
    event = func.EventGridEvent(
        id=raw["id"],
        data=raw["data"],
        topic=raw["topic"],
        subject=raw["subject"],
        event_type=raw["eventType"],
        event_time=dt.datetime(2017, 6, 26, 18, 41, tzinfo=dt.UTC),
        data_version="",
    )
    (parsed,) = parse_function_event(event)
    assert (parsed.job_name, parsed.status, parsed.instance_id) == (RUN_ID, "Failed", "retrain-MSFT-2024w10")
    assert parsed.event_time == "2017-06-26T18:41:00+00:00"
    with pytest.raises(EventPayloadError, match="not an Event Grid event object"):
        parse_function_event(object())


def test_event_payload_error_is_a_value_error() -> None:
    assert issubclass(EventPayloadError, ValueError)


def test_module_imports_no_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = "import sys, retrain.events; print(sorted(m for m in ('torch', 'lightning', 'mlflow', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
