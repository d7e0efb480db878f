"""Azure ML job events from Event Grid, parsed into `JobEvent`s. Pure: no I/O, no Azure SDK.

Accepted payloads (what the Event Grid trigger or the webhook receives):
- Event Grid schema: a JSON array of events, or one event object, each with `eventType`, `subject`,
  `data`, `dataVersion`, `metadataVersion`.
- CloudEvents 1.0: the same as an array (batch mode) or one object, with `specversion`, `type`, `source`,
  `subject` and `data` (or `data_base64`).

Only the run events `Microsoft.MachineLearningServices.RunCompleted` and `RunStatusChanged` become
`JobEvent`s; every other event type (model registered, drift, subscription validation, ...) is SKIPPED,
so `parse_events` of a payload with none of ours returns `[]`. A `JobEvent.relevant` is True when the
run's tags name an orchestration instance, i.e. the job is one this app submitted.

Field names are read tolerantly because real payloads vary: keys are matched ignoring case and `_`/`-`
(`runId`, `RunId`, `run_id`), tags come from `runTags`, `RunTags` or `tags`, the status from `runStatus`,
`RunStatus` or `status` (the documented sample says `"failed"`: statuses are normalised to Azure ML's
`JobStatus` spelling), the job name falls back to the subject `experiments/<id>/runs/<runId>`, and `data`
may arrive as a JSON string or as CloudEvents `data_base64`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from retrain import naming
from retrain.ports import JOB_STATUSES, JOB_TERMINAL_STATUSES
from retrain.vocabulary import TAG_INSTANCE_ID, TAG_TICKER

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
RUN_EVENT_TYPES = frozenset({RUN_COMPLETED, RUN_STATUS_CHANGED})
# Event Grid sends this (Event Grid schema) when a webhook subscription is created; answer its
# `data.validationCode` as {"validationResponse": code}. The Functions host does this for its triggers.
SUBSCRIPTION_VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
SUBSCRIPTION_DELETED_EVENT = "Microsoft.EventGrid.SubscriptionDeletedEvent"
# The `aeg-event-type` header values Event Grid uses for webhook deliveries.
AEG_NOTIFICATION = "Notification"
AEG_SUBSCRIPTION_VALIDATION = "SubscriptionValidation"

# Job tags (set when the job is submitted) that tie a run to its orchestration.
INSTANCE_ID_TAG = TAG_INSTANCE_ID
TICKER_TAG = TAG_TICKER

SCHEMA_EVENT_GRID = "eventgrid"
SCHEMA_CLOUD_EVENTS = "cloudevents"

_SUBJECT_RUN_RE = re.compile(r"(?:^|/)runs/([^/]+)/?\Z")
_STATUS_BY_KEY = {s.lower(): s for s in JOB_STATUSES} | {
    "cancelled": "Canceled",
    "finished": "Completed",
    "succeeded": "Completed",
}
_MAX_EVENTS = 5000  # Event Grid batches are at most 5000 events (and 1 MB)


class EventPayloadError(ValueError):
    """The payload is not a usable Event Grid / CloudEvents delivery; the message says what is wrong."""


@dataclass(frozen=True)
class JobEvent:
    """What the orchestration needs to know about an Azure ML run event."""

    job_name: str  # the Azure ML job name (= runId)
    instance_id: str | None  # the orchestration instance id from the job's tags, None if not ours
    status: str  # Azure ML JobStatus spelling: Completed, Failed, Canceled, Running, ...
    event_type: str
    experiment_name: str | None
    ticker: str | None
    event_id: str | None = None
    event_time: str | None = None
    schema: str = SCHEMA_EVENT_GRID  # "eventgrid" or "cloudevents"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def relevant(self) -> bool:
        """True when the run belongs to one of our orchestrations (its tags carry an instance id)."""
        return self.instance_id is not None

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_events(body: bytes | str | list[Any] | dict[str, Any]) -> list[JobEvent]:
    """The Azure ML run events in an Event Grid or CloudEvents payload (other event types are skipped).

    Raises `EventPayloadError` for a payload that is not JSON, not an event or array of events, or a run
    event without a job name (or, for RunStatusChanged, without a status)."""
    events = _as_event_list(body)
    parsed: list[JobEvent] = []
    for index, raw in enumerate(events):
        if not isinstance(raw, Mapping):
            raise EventPayloadError(
                f"event {index} is a {type(raw).__name__}, not an object; send Event Grid or CloudEvents events"
            )
        job_event = _parse_event(raw, index)
        if job_event is not None:
            parsed.append(job_event)
    return parsed


def parse_function_event(event: Any) -> list[JobEvent]:
    """The same as `parse_events` for an `azure.functions.EventGridEvent` (duck-typed: `id`, `topic`,
    `subject`, `event_type`, `event_time`, `data_version` and `get_json()`), which is what the Event Grid
    trigger binding hands the function instead of the raw body."""
    try:
        data = event.get_json()
        event_time = getattr(event, "event_time", None)
        raw = {
            "id": getattr(event, "id", None),
            "topic": getattr(event, "topic", None),
            "subject": getattr(event, "subject", None),
            "eventType": event.event_type,
            "eventTime": event_time.isoformat() if isinstance(event_time, date) else event_time,
            "dataVersion": getattr(event, "data_version", None),
            "data": data,
        }
    except AttributeError as exc:
        raise EventPayloadError(f"not an Event Grid event object ({exc}); pass func.EventGridEvent") from None
    return parse_events(raw)


def event_types(body: bytes | str | list[Any] | dict[str, Any]) -> list[str]:
    """The type of each event in a payload (for logging what was skipped)."""
    return [_event_type(e, i) for i, e in enumerate(_as_event_list(body)) if isinstance(e, Mapping)]


def validation_code(body: bytes | str | list[Any] | dict[str, Any]) -> str | None:
    """The `validationCode` when the payload is Event Grid's subscription-validation handshake, else None."""
    for index, raw in enumerate(_as_event_list(body)):
        if isinstance(raw, Mapping) and _event_type(raw, index) == SUBSCRIPTION_VALIDATION_EVENT:
            code = _get(_event_data(raw, index), "validationCode")
            if not isinstance(code, str) or not code:
                raise EventPayloadError("subscription validation event without data.validationCode")
            return code
    return None


# --------------------------------------------------------------------------------------------------


def _as_event_list(body: bytes | str | list[Any] | dict[str, Any]) -> list[Any]:
    payload: Any = body
    if isinstance(payload, bytes | bytearray):
        try:
            payload = bytes(payload).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise EventPayloadError(
                f"payload is not UTF-8 text ({exc}); send a JSON array of events"
            ) from None
    if isinstance(payload, str):
        if not payload.strip():
            raise EventPayloadError("payload is empty; send a JSON array of Event Grid or CloudEvents events")
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise EventPayloadError(
                f"payload is not valid JSON ({exc}); send a JSON array of events"
            ) from None
    if isinstance(payload, Mapping):
        return [payload]
    if isinstance(payload, list):
        if len(payload) > _MAX_EVENTS:
            raise EventPayloadError(
                f"{len(payload)} events in one payload; Event Grid sends at most {_MAX_EVENTS}"
            )
        return payload
    raise EventPayloadError(
        f"payload is a JSON {type(payload).__name__}; send an event object or an array of events"
    )


def _parse_event(raw: Mapping[str, Any], index: int) -> JobEvent | None:
    event_type = _event_type(raw, index)
    if event_type not in RUN_EVENT_TYPES:
        return None
    schema = SCHEMA_CLOUD_EVENTS if _get(raw, "specversion") is not None else SCHEMA_EVENT_GRID
    data = _event_data(raw, index)
    subject = _get(raw, "subject")

    job_name = _text(_get(data, "runId", "jobName", "jobId"))
    if job_name is None and isinstance(subject, str):
        match = _SUBJECT_RUN_RE.search(subject.strip())
        job_name = match.group(1) if match else None
    if job_name is None:
        raise EventPayloadError(
            f"event {index} ({event_type}) names no run: expected data.runId or a subject "
            "'experiments/<experimentId>/runs/<runId>'"
        )

    raw_status = _text(_get(data, "runStatus", "status"))
    if raw_status is None:
        if event_type == RUN_STATUS_CHANGED:
            raise EventPayloadError(f"event {index} (RunStatusChanged for {job_name}) has no data.runStatus")
        raw_status = "Completed"
    status = _STATUS_BY_KEY.get(raw_status.lower(), raw_status)

    tags = _tags(_get(data, "runTags", "tags"), index)
    properties = _tags(_get(data, "runProperties", "properties"), index)
    instance_id = _text(_get(tags, INSTANCE_ID_TAG)) or _text(_get(properties, INSTANCE_ID_TAG))
    ticker = _text(_get(tags, TICKER_TAG))

    return JobEvent(
        job_name=job_name,
        instance_id=instance_id,
        status=status,
        event_type=event_type,
        experiment_name=_text(_get(data, "experimentName")),
        ticker=ticker,
        event_id=_text(_get(raw, "id")),
        event_time=_text(_get(raw, "eventTime", "time")),
        schema=schema,
        tags=tags,
    )


def _event_type(raw: Mapping[str, Any], index: int) -> str:
    value = _text(_get(raw, "eventType", "type"))
    if value is None:
        raise EventPayloadError(
            f"event {index} has no eventType (Event Grid schema) or type (CloudEvents); "
            f"keys present: {', '.join(sorted(map(str, raw))) or 'none'}"
        )
    return value


def _event_data(raw: Mapping[str, Any], index: int) -> Mapping[str, Any]:
    data = _get(raw, "data")
    if data is None:
        encoded = _get(raw, "data_base64", "dataBase64")
        if encoded is not None:
            try:
                data = base64.b64decode(str(encoded), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise EventPayloadError(
                    f"event {index}: data_base64 is not base64 of UTF-8 JSON ({exc})"
                ) from None
    if isinstance(data, bytes | bytearray):
        data = bytes(data).decode("utf-8", errors="replace")
    if isinstance(data, str):
        if not data.strip():
            return {}
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise EventPayloadError(f"event {index}: data is a string but not JSON ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise EventPayloadError(f"event {index}: data is a {type(data).__name__}; expected an object")
    return data


def _tags(value: Any, index: int) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):  # some producers serialise tag dictionaries
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise EventPayloadError(f"event {index}: run tags are a string but not a JSON object") from None
    if not isinstance(value, Mapping):
        raise EventPayloadError(f"event {index}: run tags are a {type(value).__name__}; expected an object")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _get(mapping: Mapping[str, Any], *names: str) -> Any:
    """The first present value among `names`, matching keys regardless of case, '_' and '-'."""
    if not isinstance(mapping, Mapping):
        return None
    for name in names:
        if name in mapping and mapping[name] is not None:
            return mapping[name]
    wanted = [_key(n) for n in names]
    normalised = {_key(str(k)): v for k, v in mapping.items() if v is not None}
    for key in wanted:
        if key in normalised:
            return normalised[key]
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()
    return text or None


# Azure ML model monitoring tags the threshold-evaluation step run of a signal that breached with this
# (Azure/azureml-assets, model-monitoring `evaluate_metrics_threshold.py`), its value the message
# "The signal '<signal name>' has failed due to one or more features violating metric thresholds.\n..."
# Users cannot add tags to that run: the ticker comes from the signal's name (docs/azure.md).
MODEL_MONITOR_BREACH_TAG = "azureml_modelmonitor_threshold_breached"
_BREACHED_SIGNAL_RE = re.compile(r"The signal '(?P<signal>[^']+)' has failed")
# A signal named `<ticker slug>_<anything>` (or just `<ticker slug>`) watches that ticker's endpoint; the
# slug is `naming.azure_slug(ticker)` (letters, digits, '-'), which never contains this separator.
SIGNAL_TICKER_SEPARATOR = "_"


@dataclass(frozen=True)
class MonitorBreach:
    """A breached Azure ML model monitoring signal. `ticker` is None when no ticker could be told from it
    (`problem` says why and what to name the signal instead)."""

    job_name: str
    signal: str | None
    ticker: str | None
    reason: str
    problem: str | None = None


def breached_signal(message: str) -> str | None:
    """The signal name in Azure ML's breach message, or None when the message is not in that format."""
    match = _BREACHED_SIGNAL_RE.search(message or "")
    return match["signal"] if match else None


def signal_ticker(
    signal: str, tickers: Sequence[str] = (), signal_tickers: Mapping[str, str] | None = None
) -> str | None:
    """The ticker a monitoring signal watches: the explicit mapping first (signal name -> ticker, exact),
    else the naming convention `<azure_slug(ticker)>_<rest>` (or the slug alone, case-insensitive) for
    one of `tickers`. One-to-one: two tickers never share a slug, and a slug never contains '_'."""
    if signal_tickers and signal in signal_tickers:
        return signal_tickers[signal]
    prefix = signal.strip().lower().split(SIGNAL_TICKER_SEPARATOR, 1)[0]
    for ticker in tickers:
        try:
            if naming.azure_slug(ticker) == prefix:
                return naming.validate_ticker(ticker)
        except naming.NamingError:
            continue  # a bad RETRAIN_TICKERS entry names no signal
    return None


def model_monitor_breach(
    job: JobEvent,
    tickers: Sequence[str] = (),
    signal_tickers: Mapping[str, str] | None = None,
) -> MonitorBreach | None:
    """The breach when `job` is an Azure ML model monitoring run tagged with a breached threshold (None for
    any other run, and for our own training runs). Its ticker comes from the breached signal's name
    (`signal_ticker` over `tickers`, normally RETRAIN_TICKERS, and the `signal_tickers` mapping), else
    from a `ticker` tag on the run (kept for monitors that tag their runs themselves)."""
    tags = {_key(k): (k, v) for k, v in job.tags.items()}
    breach = tags.get(_key(MODEL_MONITOR_BREACH_TAG))
    if breach is None or job.instance_id:
        return None
    message = str(breach[1] or "")
    signal = breached_signal(message)
    detail = (message.strip().splitlines() or ["a signal breached its threshold"])[0][:500]
    reason = f"Azure ML model monitoring run {job.job_name} ({job.status}): {detail}"
    ticker = signal_ticker(signal, tickers, signal_tickers) if signal else None
    ticker = ticker or job.ticker
    problem = None
    if ticker is None:
        named = f"signal {signal!r}" if signal else "a signal (the breach message names none)"
        problem = (
            f"{named} names no ticker: name the signal <ticker>_<signal>, its ticker part as in "
            "naming.azure_slug (e.g. msft_data-drift, brk-b_prediction-drift) for a ticker in "
            'RETRAIN_TICKERS, or map it in RETRAIN_MONITOR_SIGNAL_TICKERS (e.g. {"'
            f'{signal or "data-drift-signal"}": "MSFT"}})'
        )
    return MonitorBreach(job_name=job.job_name, signal=signal, ticker=ticker, reason=reason, problem=problem)
