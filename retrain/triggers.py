"""How cycles start and how jobs report back: the timer, HTTP and Event Grid functions.

- ``retrain_timer`` (``%RETRAIN_SCHEDULE%``): one fleet cycle (retrain/fleet.py) over ``RETRAIN_TICKERS``
  with the id ``fleet-<yyyy>w<ww>``; a second firing in the same ISO week finds it and does nothing.

Every start goes through the one way in, retrain/cycle_start.py (validate, check the holders, build the id
and input, start).
- ``start_retrain`` (``POST /api/retrain``): an ad-hoc fleet cycle (``{"tickers": [...]}``, or
  ``{"ticker": X}``: a fleet of one); 202 with the id and this module's status and terminate routes (no
  key: never the Durable extension's), 400 for a bad body, 409 with the holders' ids and routes when every
  ticker is already being retrained.
- ``retrain_status`` (``GET /api/retrain/{instance_id}``): current step, per-step times, decision;
  ``terminate_retrain`` (``POST /api/retrain/{instance_id}/terminate``), under the function key, which also
  cancels the cycle's training job (``MLPlatform.cancel_job``).
- ``earlier_active_cycle`` (activity): the per-ticker orchestrator's own one-cycle-per-ticker guard (that
  orchestrator only replays cycles started by older code; no trigger starts it).
- ``job_events`` (Event Grid): a finished training job becomes the ``job_finished`` event of the
  orchestration named in the job's tags. Not ours, or already finished: acknowledged and ignored.

"Being retrained" is answered by listing the Pending/Running instances whose id starts with the
ticker's prefix and parsing each id back to its ticker (`retrain.naming`): scheduled and ad-hoc
instances share the prefix, so one lookup covers both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from retrain import cycle_guard, naming, settings
from retrain.fleet import MAX_FLEET_TICKERS
from retrain.trainers import names as trainer_names
from retrain.vocabulary import TAG_INSTANCE_ID
from retrain.workflow import (
    JOB_FINISHED_EVENT,
    CycleInput,
)

log = logging.getLogger(__name__)

bp = df.Blueprint()

# Which runtime statuses are active: one definition, with the one-cycle-per-ticker rule (retrain/cycle_guard.py).
ACTIVE_STATUSES = cycle_guard.ACTIVE_STATUSES
ACTIVE_VALUES = cycle_guard.ACTIVE_VALUES
REQUEST_FIELDS = {
    "ticker": 'a ticker symbol, e.g. "MSFT": one cycle (default: the first of RETRAIN_TICKERS)',
    "tickers": 'a list of ticker symbols, e.g. ["MSFT", "AAPL"]: one fleet cycle over them (at most '
    f'{MAX_FLEET_TICKERS}; not with "ticker"; a file of tickers is the operator\'s: RETRAIN_TICKERS=@FILE or '
    "retrain run --tickers @FILE)",
    "lookback_days": "calendar days of history, an integer from 30 to 36500 (default: RETRAIN_LOOKBACK_DAYS)",
    "source": "yfinance, sample, csv:PATH or blob:CONTAINER/PATH ({ticker} in PATH becomes the ticker, e.g. "
    "csv:{ticker}.csv); a request's PATH must name a CSV file inside RETRAIN_DATA_DIR (relative to it), which the operator must configure, and a blob: source must "
    "be the operator's RETRAIN_SOURCE (default: RETRAIN_SOURCE)",
    "force": "true to deploy even when the quality gate rejects (recorded on the model)",
    "max_epochs": "training epochs, an integer from 1 to 1000 (default: RETRAIN_MAX_EPOCHS; trainers that train in epochs)",
    "trainer": f"a trainer of this repository: {' or '.join(trainer_names())} (default: RETRAIN_TRAINER)",
    "hyperparameters": 'an object of name -> string/number/boolean, each passed as --param name=value, e.g. {"alpha": 0.5}',
    "as_of": 'a date "YYYY-MM-DD": train on data up to and including that trading day (default: latest)',
}


class BadRequest(ValueError):
    """An HTTP body we cannot accept; the message says what to send instead."""


def _shown(value: Any, limit: int = 60) -> str:
    """A request's value quoted back in an answer, cut short: a 10 MB value is not echoed."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# ---------------------------------------------------------------------------------------------- pure


@dataclass(frozen=True)
class RetrainRequest:
    """A valid POST /api/retrain body: one cycle (`ticker`) or a fleet (`tickers`), and the fields that
    override the settings (`overrides`, for `cycle_start`'s builders)."""

    ticker: str | None
    tickers: list[str] | None
    overrides: dict[str, Any]

    @property
    def fleet(self) -> bool:
        return self.tickers is not None


def parse_retrain_request(body: bytes | str | None, environ: Any = None) -> CycleInput:
    """Validate a single cycle's POST body (empty, or a JSON object with the fields of REQUEST_FIELDS)
    into its input; a fleet's body (`tickers`) is refused here (`parse_request` takes both)."""
    request = parse_request(body, environ)
    if request.ticker is None:
        raise BadRequest('tickers: a fleet request; send {"ticker": "MSFT"} for one cycle')
    return CycleInput.from_dict(_built(request, environ))


def _built(request: RetrainRequest, environ: Any) -> dict[str, Any]:
    """The request's orchestration input, built and validated now (a 400, not a failed orchestration)."""
    from retrain.cycle_start import InvalidStart, cycle_input, fleet_input

    try:
        if request.tickers is not None:
            return fleet_input(request.tickers, "http", environ=environ, **request.overrides)
        assert request.ticker is not None
        return cycle_input(request.ticker, "http", environ=environ, **request.overrides)
    except InvalidStart as exc:
        raise BadRequest(str(exc)) from None


def parse_request(body: bytes | str | None, environ: Any = None) -> RetrainRequest:
    """Validate the POST body (empty, or a JSON object with the fields of REQUEST_FIELDS): one cycle
    (`ticker`, or none: the first of RETRAIN_TICKERS) or a fleet (`tickers`), its input built and checked."""
    from retrain.market_data import MarketDataError, check_request_source, validate_ticker

    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else (body or "")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f'the body is not UTF-8 (byte {exc.start}); send a UTF-8 JSON object such as {{"ticker": "MSFT"}}, '
            "or no body"
        ) from None
    if text.strip():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest(
                f"the body is not valid JSON ({exc.msg} at character {exc.pos}); send a JSON object "
                'such as {"ticker": "MSFT"}, or no body'
            ) from None
        except RecursionError:
            raise BadRequest(
                'the body nests too deeply; send a flat JSON object such as {"ticker": "MSFT"}'
            ) from None
        if not isinstance(data, dict):
            raise BadRequest(
                f"the body must be a JSON object, not {type(data).__name__}; "
                'send e.g. {"ticker": "MSFT", "force": false}'
            )
    else:
        data = {}
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        allowed = "; ".join(f"{k}: {v}" for k, v in REQUEST_FIELDS.items())
        cut = [k if len(k) <= 40 else f"{k[:40]}..." for k in unknown[:5]]
        names = ", ".join(cut) + (" ..." if len(unknown) > 5 else "")
        raise BadRequest(f"unknown field(s) {names}; allowed fields are {allowed}")

    if "ticker" in data and "tickers" in data:
        raise BadRequest(
            'send either "ticker" (one cycle, e.g. {"ticker": "MSFT"}) or "tickers" (a fleet, e.g. '
            '{"tickers": ["MSFT", "AAPL"]}), not both'
        )
    tickers: list[str] | None = None
    ticker: str | None = None
    if "tickers" in data:
        tickers = _request_tickers(data["tickers"])
    elif "ticker" in data:
        raw_ticker = data["ticker"]
    else:
        try:
            raw_ticker = settings.tickers(environ)[0]
        except settings.SettingsError as exc:
            raise BadRequest(f"ticker: none sent, and the default cannot be read: {exc}") from None
    if tickers is None:
        if not isinstance(raw_ticker, str) or not raw_ticker.strip():
            raise BadRequest(f"ticker must be a non-empty string: {REQUEST_FIELDS['ticker']}")
        try:
            ticker = validate_ticker(raw_ticker.strip())
        except MarketDataError as exc:
            raise BadRequest(f"ticker: {exc}") from None

    lookback = data.get("lookback_days")
    if lookback is not None and (
        isinstance(lookback, bool) or not isinstance(lookback, int) or not 30 <= lookback <= 36500
    ):
        raise BadRequest(f"lookback_days={_shown(lookback)}: expected {REQUEST_FIELDS['lookback_days']}")
    source = data.get("source")
    if source is not None and (
        not isinstance(source, str)
        or not (source in ("yfinance", "sample") or source.startswith(("csv:", "blob:")))
        or source in ("csv:", "blob:")
    ):
        raise BadRequest(f"source={_shown(source)}: expected {REQUEST_FIELDS['source']}")
    if source is not None:
        # A request names only files the operator allowed (RETRAIN_DATA_DIR); checked again at fetch time.
        try:
            check_request_source(
                source,
                settings.get("RETRAIN_SOURCE", environ),
                settings.get("RETRAIN_DATA_DIR", environ),
                ticker,  # a csv:{ticker}.csv source: this ticker's file
            )
        except MarketDataError as exc:
            raise BadRequest(str(exc)) from None  # data_refusal's wording, which names the source
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest(f"force={_shown(force)}: expected true or false")
    epochs = data.get("max_epochs")
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 1000
    ):
        raise BadRequest(f"max_epochs={_shown(epochs)}: expected {REQUEST_FIELDS['max_epochs']}")
    as_of = data.get("as_of")
    if as_of is not None:
        from retrain.market_data import parse_as_of

        try:
            if not isinstance(as_of, str) or len(as_of.strip()) != 10:
                raise MarketDataError("not YYYY-MM-DD")
            parsed = parse_as_of(as_of)
            if parsed is None:
                raise MarketDataError("not YYYY-MM-DD")
            as_of = parsed.isoformat()
        except MarketDataError:
            raise BadRequest(f"as_of={_shown(data['as_of'])}: expected {REQUEST_FIELDS['as_of']}") from None
    from retrain.trainers import TrainerError, get_trainer, validate_hyperparameters

    try:  # validated against the registry: a request names a trainer, never a path
        trainer = get_trainer(
            data["trainer"] if "trainer" in data else settings.get("RETRAIN_TRAINER", environ)
        )
        # names, types and the bounds the trainer declares (its hyperparameters.json)
        validate_hyperparameters(trainer, data.get("hyperparameters"))
        hyperparameters = dict(data.get("hyperparameters") or {})
    except TrainerError as exc:
        raise BadRequest(
            f"{exc} (trainer: {REQUEST_FIELDS['trainer']}; hyperparameters: {REQUEST_FIELDS['hyperparameters']})"
        ) from None
    if epochs is not None:
        if "max_epochs" not in trainer.setting_params:
            raise BadRequest(
                f"max_epochs: trainer {trainer.name} does not train in epochs; send its own settings in hyperparameters"
            )
        hyperparameters.setdefault("max_epochs", epochs)
    overrides = {
        "lookback_days": lookback,
        "source": source,
        "force": force,
        "as_of": as_of,
        "trainer": trainer.name,
        "hyperparameters": hyperparameters,
    }
    request = RetrainRequest(ticker, tickers, overrides)
    _built(request, environ)  # refused now, with what to send, rather than as a failed orchestration
    return request


def _request_tickers(value: Any) -> list[str]:
    """A request's `tickers`: a JSON list of symbols, canonical (upper case, each once, order kept)."""
    from retrain.fleet import InvalidFleetInput, canonical_tickers

    example = '["MSFT", "AAPL"]'
    if isinstance(value, str):
        what = (
            "a file of tickers is the operator's (RETRAIN_TICKERS=@FILE, retrain run --tickers @FILE), "
            "never a request's"
            if value.strip().startswith("@")
            else "a string"
        )
        raise BadRequest(f"tickers={_shown(value)}: {what}; send a JSON list of symbols, e.g. {example}")
    if not isinstance(value, list):
        raise BadRequest(f"tickers={_shown(value)}: expected a JSON list of symbols, e.g. {example}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise BadRequest(
                f"tickers: {_shown(item)} is not a symbol; send a JSON list of symbols, e.g. {example}"
            )
        if item.strip().startswith("@"):
            raise BadRequest(
                f"tickers: {_shown(item)}: a file of tickers is the operator's (RETRAIN_TICKERS=@FILE, "
                f"retrain run --tickers @FILE), never a request's; send the symbols, e.g. {example}"
            )
    try:
        return canonical_tickers([item.strip() for item in value])
    except InvalidFleetInput as exc:
        raise BadRequest(str(exc)) from None


def is_retrain_id(instance_id: str) -> bool:
    """Whether `instance_id` is a cycle's or a fleet's id (what /api/retrain/{id} answers for)."""
    return bool(naming.parse_instance_id(instance_id) or naming.parse_fleet_instance_id(instance_id))


# A fleet's custom status fields (retrain/fleet.py) that its GET answer carries besides a cycle's.
FLEET_STATUS_FIELDS = ("tickers", "skipped", "batches", "batches_done", "counts", "awaiting_rollout")


def readable_status(status: Any) -> dict[str, Any]:
    """A DurableOrchestrationStatus as the answer of GET /api/retrain/{id} (a cycle's or a fleet's: a
    fleet's adds `fleet: true` and its progress per batch, `FLEET_STATUS_FIELDS`)."""
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    runtime = status.runtime_status.value if status.runtime_status else None
    if naming.parse_fleet_instance_id(status.instance_id or ""):
        answer: dict[str, Any] = {
            "instance_id": status.instance_id,
            "fleet": True,
            "runtime_status": runtime,
            "step": custom.get("step"),
            **{name: custom.get(name) for name in FLEET_STATUS_FIELDS},
            "steps": custom.get("steps", []),
            "warnings": custom.get("warnings", []),
            "created": status.created_time.isoformat() if status.created_time else None,
            "last_updated": status.last_updated_time.isoformat() if status.last_updated_time else None,
        }
        if runtime == "Failed":
            answer["error"] = custom.get("error") or status.output
        elif status.output is not None:
            answer["output"] = status.output
        return answer
    answer = {
        "instance_id": status.instance_id,
        "runtime_status": runtime,
        "step": custom.get("step"),
        "steps": custom.get("steps", []),
        "decision": custom.get("decision"),
        "ids": custom.get("ids", {}),
        "warnings": custom.get("warnings", []),
        "created": status.created_time.isoformat() if status.created_time else None,
        "last_updated": status.last_updated_time.isoformat() if status.last_updated_time else None,
    }
    if runtime == "Failed":
        answer["error"] = custom.get("error") or status.output
    elif status.output is not None:
        answer["output"] = status.output
    return answer


def _json(body: Any, status_code: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status_code, mimetype="application/json")


def _event_payload(event: Any) -> dict[str, Any]:
    """The binding's EventGridEvent / CloudEvent back to the wire shape `retrain.events` parses."""
    if isinstance(event, dict):
        return event
    data = event.get_json()
    if hasattr(event, "specversion"):
        return {
            "specversion": event.specversion,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "time": event.time.isoformat() if event.time else None,
            "data": data,
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "data": data,
        "dataVersion": getattr(event, "data_version", None),
    }


# ------------------------------------------------------------------------------------- with a client

# What the local host's Durable API answers (functions_host/http/durable_api.py) when its store fails.
DURABLE_STORE_UNAVAILABLE = "The durable store is unavailable"


def durable_store_unavailable(exc: BaseException) -> str | None:
    """The 503 message when `exc` is the Durable client's report of a 503 from the Durable API (the
    orchestration store cannot be used), else None. The SDK raises a bare Exception: with the host's error
    body (start_new) or only the status code (status queries), so the message names the local file."""
    arg = exc.args[0] if len(exc.args) == 1 else None
    if isinstance(arg, dict) and arg.get("Message") == DURABLE_STORE_UNAVAILABLE:
        return str(arg.get("ExceptionMessage") or DURABLE_STORE_UNAVAILABLE)
    if type(exc) is Exception and str(exc).endswith("unexpected status code 503"):
        local = settings.state_dir() / "host" / "durable.sqlite"
        return (
            "the orchestration store is unavailable (the Durable API answered 503): locally it is "
            f"{local}, unwritable or corrupt (the host's log says which and what to do: make the state dir "
            "writable, or restore the file); in Azure, the task hub's storage account (AzureWebJobsStorage). "
            "Retry once it is fixed"
        )
    return None


def store_unavailable_response(exc: BaseException) -> func.HttpResponse | None:
    """A 503 naming the store when `exc` means the orchestration store is unavailable, else None."""
    message = durable_store_unavailable(exc)
    if message is None:
        return None
    return func.HttpResponse(
        json.dumps({"error": message}, indent=2),
        status_code=503,
        mimetype="application/json",
        headers={"Retry-After": "30"},
    )


async def instance_status(client: df.DurableOrchestrationClient, instance_id: str) -> Any | None:
    """The instance's status, or None when there is no such instance. (The SDK parses a 404's body as
    JSON; a host that answers 404 with a text message makes that raise: it still means "not found".)"""
    try:
        status = await client.get_status(instance_id)
    except ValueError:  # json.JSONDecodeError
        return None
    return status if status and status.runtime_status is not None else None


async def earlier_active_instance(
    client: df.DurableOrchestrationClient, ticker: str, instance_id: str
) -> Any | None:
    """The earliest active single cycle of `ticker` other than `instance_id` created no later than it, or
    None (`cycle_guard.earliest_active_cycle`). A cycle that checks before another exists goes on, and the
    other, created later, then sees it. Created times have whole seconds (as the Durable HTTP API reports
    them), so two cycles created in the same second both give way: never two at once, at the price of a
    retry for a same-second pair (the HTTP starter never makes one: it starts one at a time). Active fleets
    holding the ticker: `cycle_guard.busy_tickers`, which the guard activity below asks."""
    return await cycle_guard.earliest_active_cycle(client, ticker, instance_id)


@bp.activity_trigger(input_name="payload")
@bp.durable_client_input(client_name="client")
async def earlier_active_cycle(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> str | None:
    """The orchestrator's one-cycle-per-ticker guard (`workflow.guard_ticker`; its name is
    `workflow.TICKER_GUARD_ACTIVITY`): the id of an earlier active cycle of the ticker, or of an earlier
    active fleet cycle holding it (retrain/cycle_guard.py), if any."""
    busy = await cycle_guard.busy_tickers(client, [payload["ticker"]], before_instance=payload["instance_id"])
    return busy.get(naming.validate_ticker(payload["ticker"]))


@bp.route(route="retrain", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_retrain(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A fleet cycle through the one way in (retrain/cycle_start.py): `{"tickers": [...]}`, or
    `{"ticker": X}` (or no ticker: the first of RETRAIN_TICKERS), which is exactly `{"tickers": [X]}`, a
    fleet of one, with the same 202 body. The check and the start are one step per ticker in this worker;
    across workers (or beside a timer or a monitor breach) the start's conflict is caught and the
    orchestration's own guard gives way. Either way a busy ticker answers 409, never a 500."""
    from retrain.cycle_start import InvalidStart, start_fleet

    try:
        request = parse_request(req.get_body())
    except BadRequest as exc:
        return _json({"error": str(exc)}, 400)
    tickers = request.tickers if request.tickers is not None else [str(request.ticker)]
    try:
        started = await start_fleet(client, tickers, "http", **request.overrides)
    except InvalidStart as exc:  # the settings changed since the request was parsed
        return _json({"error": str(exc)}, 400)
    except Exception as exc:
        if (unavailable := store_unavailable_response(exc)) is None:
            raise
        return unavailable
    if started.started:
        # `skipped`: ticker -> the cycle or fleet holding it (the fleet's output lists them too)
        extra = {"skipped": started.skipped} if started.skipped else {}
        log.info("started %s for %d ticker(s) (http)", started.instance_id, len(tickers))
        return accepted(req.url, str(started.instance_id), "retrain", **extra)
    return _fleet_refused(req, started)


def _fleet_refused(req: func.HttpRequest, started: Any) -> func.HttpResponse:
    """409 when every ticker of a fleet request is held (by a cycle or a running fleet), naming the holders
    and their routes; or when a fleet of the same id exists already."""
    if started.existing:
        return _json(
            {
                "error": f"fleet {started.instance_id} was started at the same instant; follow it",
                "instance_id": started.instance_id,
                **management_links(req.url, started.instance_id, "retrain"),
            },
            409,
        )
    holders = sorted(set(started.skipped.values()))
    # A fleet of one (a `{"ticker"}` request) also names its one holder at the top, as a busy ticker's
    # answer always did: `instance_id` and its status and terminate routes.
    single = management_links(req.url, holders[0], "retrain") if len(started.skipped) == 1 else {}
    return _json(
        {
            "error": f"{started.refused}; wait for them or follow their status URLs",
            **({"instance_id": holders[0], **single} if single else {}),
            "skipped": dict(started.skipped),
            "holders": {h: management_links(req.url, h, "retrain") for h in holders[:20]},
        },
        409,
    )


# What a request may set of a cycle's input (the rest comes from the settings).
REQUEST_OVERRIDES = ("lookback_days", "source", "force", "as_of", "trainer", "hyperparameters")


def request_overrides(cycle: CycleInput) -> dict[str, Any]:
    """The fields of a parsed request that override the settings, for `cycle_start`'s builders."""
    return {name: getattr(cycle, name) for name in REQUEST_OVERRIDES}


_START_LOCKS: dict[str, asyncio.Lock] = {}


def start_lock(key: str) -> asyncio.Lock:
    """One start at a time per key (a ticker's cycles, a monitor id) in this worker."""
    # Created and used on the worker's one event loop thread, so the dict needs no lock of its own.
    return _START_LOCKS.setdefault(key, asyncio.Lock())


async def start_or_find(
    client: df.DurableOrchestrationClient, name: str, instance_id: str, input_: Any
) -> Any | None:
    """Start orchestration `name` as `instance_id`: None when it started; when an instance with that id
    already exists (two starts in the same second, another worker), its status. Other failures raise."""
    try:
        await client.start_new(name, instance_id, input_)
        return None
    except Exception:
        existing = await instance_status(client, instance_id)
        if existing is None:
            raise
        log.info("start of %s: the instance exists already (%s)", instance_id, existing.runtime_status)
        return existing


def management_links(request_url: str, instance_id: str, route: str) -> dict[str, str]:
    """What a 202 or 409 hands out: the project's own routes (`/api/<route>/{id}`, `.../terminate`),
    opened by the caller's function key (send it as `code=` or the `x-functions-key` header). No key is in
    them: the Durable extension's key, which can also start orchestrations and purge histories, is never
    handed out."""
    parts = urllib.parse.urlsplit(request_url)
    base = f"{parts.scheme}://{parts.netloc}/api/{route}/{urllib.parse.quote(instance_id, safe='')}"
    return {"id": instance_id, "statusQueryGetUri": base, "terminatePostUri": f"{base}/terminate"}


def accepted(request_url: str, instance_id: str, route: str, **extra: Any) -> func.HttpResponse:
    """202 for a started instance: its id and management links (replaces the Durable SDK's
    create_check_status_response, whose URLs carry the extension's system key), and `extra` fields."""
    links = management_links(request_url, instance_id, route)
    return func.HttpResponse(
        json.dumps({**links, **extra}, indent=2),
        status_code=202,
        mimetype="application/json",
        headers={"Location": links["statusQueryGetUri"], "Retry-After": "10"},
    )


@bp.route(route="retrain/{instance_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def retrain_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = req.route_params.get("instance_id", "")
    # Only our own ids reach the client: the SDK puts the id into a URL unescaped, so "x?showHistory=..."
    # or "#" would query something else.
    try:
        status = await instance_status(client, instance_id) if is_retrain_id(instance_id) else None
    except Exception as exc:
        if (unavailable := store_unavailable_response(exc)) is None:
            raise
        return unavailable
    if status is None:
        return _json(
            {
                "error": f"no orchestration {_shown(instance_id)}; ids look like retrain-msft-20261124t231405z "
                "(a cycle), fleet-2026w48 (the timer's fleet) or fleet-20261124t231405123456z (a fleet request)"
            },
            404,
        )
    return _json(readable_status(status), 200)


@bp.route(route="retrain/{instance_id}/terminate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def terminate_retrain(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Terminate a cycle or a fleet under the function key (`?reason=` optional), then cancel its training
    job (a fleet: terminate its active batches and cancel theirs): 202 (with the jobs' status), 404
    unknown, 409 finished."""
    instance_id = req.route_params.get("instance_id", "")
    try:
        code, body = await terminate_instance(client, instance_id, req.params.get("reason"), is_retrain_id)
        if code == 202 and naming.parse_fleet_instance_id(instance_id):
            body.update(await terminate_fleet_batches(client, instance_id, body["reason"]))
        elif code == 202:
            body.update(await cancel_terminated_cycle(client, instance_id))
    except Exception as exc:
        if (unavailable := store_unavailable_response(exc)) is None:
            raise
        return unavailable
    return _json(body, code)


async def terminate_fleet_batches(
    client: df.DurableOrchestrationClient, fleet_id: str, reason: str
) -> dict[str, Any]:
    """After a fleet's terminate: wait until it is applied (it then starts no more batches), terminate its
    active batch sub-orchestrations (terminating a parent does not stop its sub-orchestrations) and cancel
    each one's training job as a cycle's (`cancel_terminated_cycle`: the same order, so a batch's submit
    still running meets one of the two). What the terminate body adds: `runtime_status`, `batches`
    ([{batch, runtime_status, job}])."""
    status = await wait_until_ended(client, fleet_id)
    found = await client.get_status_by(instance_id_prefix=f"{fleet_id}-b", runtime_status=ACTIVE_STATUSES)
    batches = sorted(
        s.instance_id
        for s in found
        if runtime_of(s) in ACTIVE_VALUES
        and (naming.parse_batch_instance_id(s.instance_id or "") or ("",))[0] == fleet_id
    )
    for batch in batches:
        try:
            await client.terminate(batch, f"its fleet {fleet_id} was terminated: {reason}"[:500])
        except Exception as exc:  # noqa: BLE001 - it ended between the list and the terminate: its job is done
            log.info("terminate of %s's batch %s: %s", fleet_id, batch, exc)
    cancelled = await asyncio.gather(*(cancel_terminated_cycle(client, batch) for batch in batches))
    return {
        "runtime_status": runtime_of(status),
        "batches": [{"batch": b, **c} for b, c in zip(batches, cancelled, strict=True)],
    }


# How long the terminate routes wait for a terminate to be applied before they cancel the job anyway.
TERMINATE_APPLIED_TIMEOUT_S = 30.0


runtime_of = cycle_guard.runtime_of  # a status's runtime status as text (None: no such instance)


async def wait_until_ended(
    client: df.DurableOrchestrationClient, instance_id: str, timeout_s: float = TERMINATE_APPLIED_TIMEOUT_S
) -> Any | None:
    """The instance's status once it is no longer active, polling within `timeout_s`; the last status
    read (an active one) when the time runs out. A terminate is only queued (in Azure and the local host
    alike): the instance reads Terminated once its worker has applied it."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + timeout_s, 0.05
    while True:
        status = await instance_status(client, instance_id)
        if runtime_of(status) not in ACTIVE_VALUES or loop.time() >= deadline:
            return status
        await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
        delay = min(delay * 2, 1.0)


async def cancel_terminated_cycle(client: df.DurableOrchestrationClient, instance_id: str) -> dict[str, Any]:
    """After a terminate: wait until it is applied, then cancel the cycle's job. In this order, a
    `submit_training` activity still running always meets one of the two: either it reads the cycle ended
    after its submit and cancels the job itself, or its job existed before the terminate was applied and
    is cancelled here. The job's name is the one the cycle's status shows once submitted (its naming
    version's), else today's. What the terminate body adds: `runtime_status`, `job`."""
    status = await wait_until_ended(client, instance_id)
    custom = status.custom_status if status is not None else None
    ids = custom.get("ids") if isinstance(custom, dict) else None
    named = ids.get("job_name") if isinstance(ids, dict) else None
    job = await cancel_cycle_job(instance_id, named if isinstance(named, str) and named else None)
    return {"runtime_status": runtime_of(status), "job": job}


async def cancel_cycle_job(instance_id: str, job_name: str | None = None) -> dict[str, Any]:
    """Cancel the training job of a terminated cycle (`job_name`, by default derived from the instance
    id): a terminated orchestration runs no more code, so nothing else would stop the job. What the body's
    `job` says: the job's name and status after the cancel (None: no job was submitted), or the platform's
    error."""
    from retrain.adapters import get_platform
    from retrain.ports import PlatformError

    job_name = job_name or naming.job_name(instance_id)
    try:
        status = await asyncio.to_thread(get_platform().cancel_job, job_name)
    except PlatformError as exc:
        log.warning("terminated %s, but its job %s was not canceled: %s", instance_id, job_name, exc)
        return {"name": job_name, "status": None, "error": f"the job was not canceled: {exc}"[:500]}
    return {"name": job_name, "status": status.status if status else None}


async def terminate_instance(
    client: df.DurableOrchestrationClient, instance_id: str, reason: str | None, is_ours: Any
) -> tuple[int, dict[str, Any]]:
    """(status code, body) of a terminate request; only ids `is_ours` accepts reach the client."""
    status = await instance_status(client, instance_id) if is_ours(instance_id) else None
    if status is None:
        return 404, {"error": f"no orchestration {_shown(instance_id)}"}
    runtime = status.runtime_status.value if status.runtime_status else "unknown"
    if runtime not in ACTIVE_VALUES:
        return 409, {"error": f"{instance_id} is already {runtime}", "instance_id": instance_id}
    reason = (reason or "terminated through the function-key route")[:500]
    await client.terminate(instance_id, reason)
    return 202, {"instance_id": instance_id, "terminating": True, "reason": reason}


@bp.timer_trigger(schedule="%RETRAIN_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def retrain_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await start_scheduled(client, datetime.now(UTC))


async def start_scheduled(
    client: df.DurableOrchestrationClient, now: datetime, environ: Any = None
) -> dict[str, Any]:
    """Start this week's fleet cycle over RETRAIN_TICKERS (`naming.scheduled_fleet_instance_id`): a second
    firing in the same ISO week finds it and does nothing. What happened (`StartResult.to_dict`), or
    `error` when the settings cannot give a fleet (logged: a timer has nobody else to tell)."""
    from retrain.cycle_start import InvalidStart, start_fleet

    instance_id = naming.scheduled_fleet_instance_id(now)
    try:
        tickers = settings.tickers(environ)
        started = await start_fleet(client, tickers, "timer", instance_id=instance_id, environ=environ)
    except (settings.SettingsError, InvalidStart) as exc:
        log.error("timer: no fleet started: %s", exc)
        return {"instance_id": None, "started": False, "error": str(exc)}
    outcome = started.to_dict()
    if started.started:
        log.info(
            "timer: started %s (%d tickers, %d skipped)", instance_id, len(tickers), len(started.skipped)
        )
    elif started.existing:
        log.info("timer: %s exists already: nothing to do", instance_id)
    else:
        log.warning("timer: no fleet started: %s", started.refused)
    return outcome


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def job_events(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    await forward_job_events(client, _event_payload(event))


async def forward_job_events(client: df.DurableOrchestrationClient, payload: Any) -> list[str]:
    """Raise `job_finished` on each orchestration a finished job belongs to; what happened per event.
    Never raises for an event that is not ours: Event Grid would only retry it."""
    from retrain.events import EventPayloadError, parse_events

    try:
        jobs = parse_events(payload)
    except EventPayloadError as exc:
        # A malformed delivery never gets better: acknowledge it (a raise would make Event Grid retry).
        log.warning("job_events: ignored a malformed payload: %s", exc)
        return [f"ignored malformed payload: {exc}"]
    outcomes: list[str] = []
    for job in jobs:
        if (breach := _monitor_breach(job)) is not None:
            outcomes.append(await start_monitor_breach_cycle(client, breach))
        elif not job.instance_id:
            outcomes.append(f"ignored {job.job_name}: no {TAG_INSTANCE_ID} tag (not ours)")
        elif (  # it would go into a URL: only our ids (a cycle's, or a fleet batch's for its batch job)
            naming.parse_instance_id(job.instance_id) is None
            and naming.parse_batch_instance_id(job.instance_id) is None
        ):
            outcomes.append(f"ignored {job.job_name}: {_shown(job.instance_id)} is not a retraining id")
        elif not job.terminal:
            outcomes.append(f"ignored {job.job_name}: status {job.status} is not final")
        else:
            status = await instance_status(client, job.instance_id)
            runtime = status.runtime_status.value if status is not None else None
            if runtime not in ACTIVE_VALUES:
                outcomes.append(
                    f"ignored {job.job_name}: orchestration {job.instance_id} is {runtime or 'unknown'}"
                )
            else:
                try:
                    await client.raise_event(
                        job.instance_id,
                        JOB_FINISHED_EVENT,
                        {
                            "job_name": job.job_name,
                            "status": job.status,
                            "error": None if job.succeeded else f"job {job.job_name} ended {job.status}",
                        },
                    )
                    outcomes.append(
                        f"raised {JOB_FINISHED_EVENT} on {job.instance_id} ({job.job_name} {job.status})"
                    )
                except Exception as exc:  # noqa: BLE001 - it finished between the two calls: nothing to do
                    outcomes.append(f"ignored {job.job_name}: {exc}")
        log.info("job_events: %s", outcomes[-1])
    return outcomes


def monitor_signal_tickers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """RETRAIN_MONITOR_SIGNAL_TICKERS: a JSON object from Azure ML monitoring signal names to tickers
    (empty when unset). A bad value is a SettingsError that shows what to set instead."""
    raw = (settings.get("RETRAIN_MONITOR_SIGNAL_TICKERS", environ) or "").strip()
    if not raw:
        return {}
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        mapping, error = None, f"not JSON ({exc})"
    else:
        error = "not an object of strings"
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise settings.SettingsError(
            f"RETRAIN_MONITOR_SIGNAL_TICKERS is {error}; set a JSON object from signal names to tickers, "
            'e.g. {"data-drift-signal": "MSFT"}'
        )
    return mapping


def _monitor_breach(job: Any) -> Any:
    """`events.model_monitor_breach` with the tickers of the settings (RETRAIN_TICKERS and the signal
    mapping); a bad mapping leaves the breach without a ticker, its problem the setting's error."""
    from retrain.events import MonitorBreach, model_monitor_breach

    found = model_monitor_breach(job)
    if found is None:
        return None  # not a monitoring breach: the settings are not read
    try:
        tickers = settings.tickers()
    except settings.SettingsError as exc:  # the signal mapping may still name the ticker
        log.error("job_events: %s", exc)
        tickers = []
    try:
        mapping = monitor_signal_tickers()
    except settings.SettingsError as exc:
        found = model_monitor_breach(job, tickers)
        if found is None or found.ticker is not None:
            return found
        return MonitorBreach(found.job_name, found.signal, None, found.reason, str(exc))
    return model_monitor_breach(job, tickers, mapping)


async def start_monitor_breach_cycle(client: df.DurableOrchestrationClient, breach: Any) -> str:
    """Azure ML model monitoring's breach (an `events.MonitorBreach`) starts a fleet of one through the one
    way in (`cycle_start.start_fleet`, trigger `azureml_monitor`, its reason the fleet's: the model's
    `trigger` and `trigger_reason` tags), unless the ticker is already being retrained or the breach names
    no ticker (the outcome says how to name the signal)."""
    from retrain.cycle_start import InvalidStart, start_fleet

    if breach.ticker is None:
        log.warning("job_events: model monitoring breach of run %s: %s", breach.job_name, breach.problem)
        return f"ignored a model monitoring breach of run {breach.job_name}: {breach.problem}"
    try:
        ticker = naming.validate_ticker(breach.ticker.strip())
        started = await start_fleet(client, [ticker], "azureml_monitor", reason=breach.reason)
    except (InvalidStart, naming.TickerError) as exc:
        return f"ignored a model monitoring breach: {exc}"
    if not started.started:
        holder = started.skipped.get(ticker) or started.instance_id
        return f"ignored a model monitoring breach for {ticker}: {holder} is running"
    return f"started {started.instance_id} for {ticker} (Azure ML model monitoring breach)"
