"""The Event Grid webhook of the local Functions host: `POST /runtime/webhooks/eventgrid?functionName=<name>`
(the eventgrid_extension system key), with the subscription-validation handshake, the CloudEvents
abuse-protection OPTIONS, and Event Grid schema and CloudEvents 1.0 bodies (structured and binary mode)."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from functions_host.functions import EVENT_GRID_TRIGGER, BindingDecodeError, FunctionIndex, HttpResult
from functions_host.http.messages import (
    Request,
    json_response,
    provided_key,
    shown,
    text_response,
    too_deep,
)
from functions_host.keys import EVENTGRID_EXTENSION, HostKeys

log = logging.getLogger("functions_host.http.eventgrid")

EVENTGRID_WEBHOOK_PATH = "/runtime/webhooks/eventgrid"
MAX_EVENTS_PER_BATCH = 5000  # Event Grid delivers at most 5,000 events per batch


class EventGridWebhook:
    """Delivers Event Grid notifications to the app's Event Grid trigger functions."""

    def __init__(self, index: FunctionIndex, keys: HostKeys) -> None:
        self.index = index
        self.keys = keys

    def handle(self, request: Request) -> HttpResult:
        if request.method == "OPTIONS":  # CloudEvents webhook abuse-protection handshake
            if not self.keys.allows_extension(provided_key(request), EVENTGRID_EXTENSION):
                return text_response(
                    401, "Unauthorized: the Event Grid webhook needs the eventgrid_extension system key"
                )
            origin = request.header("WebHook-Request-Origin") or "*"
            return HttpResult(
                200,
                [
                    ("WebHook-Allowed-Origin", origin),
                    ("WebHook-Allowed-Rate", "*"),
                    ("Allow", "POST, OPTIONS"),
                ],
            )
        if request.method != "POST":
            return HttpResult(405, [("Allow", "POST, OPTIONS")], b"the Event Grid webhook takes POST")
        if not self.keys.allows_extension(provided_key(request), EVENTGRID_EXTENSION):
            return text_response(
                401,
                "Unauthorized: the Event Grid webhook needs the eventgrid_extension system key or the "
                "master key (code query parameter or x-functions-key header)",
            )
        if (refused := too_deep(request)) is not None:
            return refused
        name = request.query.get("functionName", "")
        fn = self.index.functions.get(name)
        if fn is None or fn.trigger_type != EVENT_GRID_TRIGGER:
            known = ", ".join(f.name for f in self.index.by_trigger(EVENT_GRID_TRIGGER)) or "none"
            return text_response(
                404, f"cannot find function: {shown(name)} (Event Grid trigger functions: {known})"
            )
        event_type = (request.header("aeg-event-type") or "").strip()
        binary_ce = request.header("ce-specversion") is not None
        if event_type.lower() == "subscriptionvalidation":
            return self._validation_handshake(request.body)
        if event_type.lower() == "unsubscribe":
            return HttpResult(202)
        if event_type and event_type.lower() != "notification":
            return text_response(
                400,
                f"aeg-event-type {shown(event_type)} is not supported; send SubscriptionValidation, "
                "Notification or Unsubscribe",
            )
        try:
            events = _binary_cloud_event(request) if binary_ce else _parse_events(request.body)
        except ValueError as exc:
            return text_response(400, f"Bad Request: {exc}")
        if not event_type and not binary_ce and not all("specversion" in e for e in events):
            return text_response(
                400,
                "missing header aeg-event-type: send 'aeg-event-type: Notification' with Event Grid "
                "events (CloudEvents may come without it)",
            )
        if len(events) > MAX_EVENTS_PER_BATCH:
            return text_response(
                413,
                f"Payload Too Large: {len(events)} events in one batch; Event Grid sends at most "
                f"{MAX_EVENTS_PER_BATCH}: split the batch",
            )
        for position, event in enumerate(events):
            try:
                self.index.invoke_event_grid(name, event)
            except BindingDecodeError as exc:
                # A malformed event never gets better: acknowledge it (a 5xx would make Event Grid retry
                # it for a day) and say so in the log.
                log.warning(
                    "Functions.%s: acknowledged and skipped malformed event %d (id %s): %s",
                    name,
                    position,
                    shown(event.get("id")),
                    shown(str(exc), 300),
                )
            except Exception as exc:  # noqa: BLE001 - Event Grid retries on a 5xx
                log.error("Executed 'Functions.%s' (Failed)\n%s", name, traceback.format_exc())
                return text_response(
                    500,
                    f"Exception while executing function: Functions.{name} -> {type(exc).__name__}: "
                    f"{shown(str(exc), 300)}",
                )
        return HttpResult(202)

    @staticmethod
    def _validation_handshake(body: bytes) -> HttpResult:
        try:
            events = json.loads(body)
            first = events[0] if isinstance(events, list) else events
            code = first["data"]["validationCode"]
            if not isinstance(code, str):
                raise TypeError("validationCode is not a string")
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            return text_response(
                400,
                f"Bad Request: a SubscriptionValidation body is a JSON array whose first event has "
                f"data.validationCode ({exc})",
            )
        return json_response(200, {"validationResponse": code})


def _parse_events(body: bytes) -> list[dict]:
    """An Event Grid notification body: an array (Event Grid schema, or a CloudEvents batch) or one CloudEvent."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"the body is not JSON ({exc}); send a JSON array of Event Grid events or a CloudEvent"
        ) from None
    events = payload if isinstance(payload, list) else [payload] if isinstance(payload, dict) else None
    if not events or not all(isinstance(e, dict) for e in events):
        raise ValueError(
            "send a non-empty JSON array of event objects (Event Grid schema) or a CloudEvents 1.0 "
            "object/batch"
        )
    for i, event in enumerate(events):
        required = (
            ("specversion", "id", "source", "type")
            if "specversion" in event
            else ("id", "subject", "eventType", "eventTime", "data")
        )
        missing = [k for k in required if k not in event]
        if missing:
            schema = "CloudEvents 1.0" if "specversion" in event else "Event Grid"
            raise ValueError(f"event {i} lacks {', '.join(missing)} (required by the {schema} schema)")
    return events


def _binary_cloud_event(request: Request) -> list[dict]:
    """A CloudEvent in binary content mode: attributes in `ce-*` headers, the body is the data."""
    event: dict[str, Any] = {}
    for key, value in request.headers.items():
        if key.lower().startswith("ce-"):
            event[key[3:].lower()] = value
    missing = [k for k in ("specversion", "id", "source", "type") if k not in event]
    if missing:
        raise ValueError(f"binary-mode CloudEvent lacks header(s) {', '.join('ce-' + k for k in missing)}")
    content_type = request.header("Content-Type") or ""
    if content_type:
        event["datacontenttype"] = content_type
    if request.body:
        try:
            event["data"] = json.loads(request.body) if "json" in content_type else request.body.decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"the CloudEvent data is not valid {content_type or 'text'} ({exc})") from None
    return [event]
