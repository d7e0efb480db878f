"""The monitor as Durable Functions: a timer, an HTTP start route, the orchestrator and its activities.

- `monitor_timer` (`RETRAIN_MONITOR_SCHEDULE`, default 21:30 UTC on weekdays, after the US close): ONE
  fleet monitor a day over every ticker of `RETRAIN_TICKERS` (`fleetmonitor-<YYYYMMDD>`, for the latest
  data; monitoring/fleet_monitor.py: one batch request per endpoint, the day's breaches one fleet cycle).
- `POST /api/monitor` (`{"ticker", "from", "to", "source"}`): step the monitor through each trading day
  from..to as if it were today (offline sources: data as of each day); `{"tickers": [...], ...}` steps the
  fleet monitor the same way. 202 with the id and the status (`GET /api/monitor/{id}`) and terminate
  (`POST /api/monitor/{id}/terminate`) routes, under the function key.
- `monitor_orchestrator` (deterministic): for each day, the `monitor_day` activity (forecast through the
  stable scoring URL, forecast log, joins, rolling metrics, checks); on a trigger, a fleet of one
  (`fleet.FLEET_ORCHESTRATOR`, the path of every start) as a sub-orchestration (`trigger` = drift/
  performance, the reason in its input's `breaches`, status and model tags, data as of that day), so one
  monitor never runs two cycles at once; the cooldown is applied by `monitor_day`. Its output:
  `{ticker, days, forecasts, scored, mae_ratio, alerts, retrains}`, each retrain's `status` the ticker's
  outcome in the fleet (deployed, rejected, "failed: why", "skipped: ..."). A monitor started by older code
  (no `retrain_as` in its input) still runs the per-ticker cycle it recorded, so its replay matches.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from retrain import naming, settings

log = logging.getLogger(__name__)

bp = df.Blueprint()
MONITOR_ORCHESTRATOR = "monitor_orchestrator"
MAX_DAYS = 400  # one orchestration's history stays small; longer spans are several requests
RETRAIN_AS_FLEET = "fleet"  # a monitor spec's `retrain_as`: a breach starts a fleet of one


EXAMPLE = '{"ticker": "MSFT", "from": "2012-01-03", "to": "2012-03-30"}'
FLEET_EXAMPLE = '{"tickers": ["MSFT", "AAPL"], "from": "2012-01-03", "to": "2012-03-30"}'


class MonitorRequestError(ValueError):
    """A monitor request we cannot accept; the message says what to send."""


def monitor_instance_id(ticker: str, first_day: str, now: datetime) -> str:
    return f"monitor-{naming.ticker_slug(ticker)}-{first_day.replace('-', '')}-{now:%H%M%S}"


# POST /api/monitor's ids and the timer's (`monitor-<slug>-<YYYYMMDD>`): only these reach the client.
_MONITOR_ID = re.compile(r"monitor-[a-z0-9._~-]{1,40}-\d{8}(-\d{6})?\Z")


def is_monitor_instance_id(instance_id: str) -> bool:
    """A per-ticker monitor's id or a fleet monitor's (`fleetmonitor-<YYYYMMDD>[-<HHMMSS>]`)."""
    from retrain.monitoring.fleet_monitor import is_fleet_monitor_instance_id

    return bool(_MONITOR_ID.match(instance_id)) or is_fleet_monitor_instance_id(instance_id)


def trading_days(start: str, end: str) -> list[str]:
    """Weekdays from start to end inclusive (the offline sources skip holidays themselves: a holiday's
    as-of data ends on the day before, which the monitor then sees twice and logs once)."""
    import numpy as np

    first = np.datetime64(start, "D")
    last = np.datetime64(end, "D")
    days = np.arange(first, last + 1, dtype="datetime64[D]")
    return [str(d) for d in days[np.is_busday(days)]]


def parse_monitor_request(body: Any, environ: Any = None) -> dict[str, Any]:
    """Validate `{"ticker", "from", "to", "source"}`; the orchestration input with the thresholds. With
    `"tickers"` (a list, instead of `ticker`): the fleet monitor's input (`fleet_monitor.fleet_spec`)."""
    from retrain.market_data import (
        MarketDataError,
        check_request_source,
        parse_as_of,
        validate_ticker,
    )
    from retrain.monitoring.calibration import thresholds_from_settings

    if not isinstance(body, dict):
        raise MonitorRequestError(f"send a JSON object such as {EXAMPLE}")
    unknown = sorted(set(body) - {"ticker", "tickers", "from", "to", "source"})
    if unknown:
        cut = [k if len(k) <= 40 else f"{k[:40]}..." for k in unknown[:5]]  # never echo a huge name
        names = ", ".join(cut) + (" ..." if len(unknown) > 5 else "")
        raise MonitorRequestError(f"unknown field(s) {names}; send ticker (or tickers), from, to and source")
    fleet: list[str] | None = None
    if "tickers" in body:
        from retrain.monitoring.fleet_monitor import request_tickers

        if body.get("ticker") is not None:
            raise MonitorRequestError(
                f"send ticker (one monitor) or tickers (the fleet monitor), not both: {FLEET_EXAMPLE}"
            )
        try:
            fleet = request_tickers(body["tickers"])
        except ValueError as exc:
            raise MonitorRequestError(f"{exc}; send e.g. {FLEET_EXAMPLE}") from None
    try:
        ticker = validate_ticker(fleet[0] if fleet else body.get("ticker") or settings.tickers(environ)[0])
        start = parse_as_of(body.get("from"))
        end = parse_as_of(body.get("to"))
    except (MarketDataError, settings.SettingsError) as exc:
        raise MonitorRequestError(str(exc)) from None
    if start is None or end is None:
        today = datetime.now(UTC).date()
        start, end = start or end or today, end or start or today
    if end < start:
        raise MonitorRequestError(f"to ({end}) is before from ({start}); send from <= to")
    days = trading_days(start.isoformat(), end.isoformat())
    if not days:
        raise MonitorRequestError(f"no weekday between {start} and {end}; send a range with a trading day")
    if len(days) > MAX_DAYS:
        raise MonitorRequestError(f"{len(days)} trading days; send at most {MAX_DAYS} per request")
    source = body.get("source") or settings.get("RETRAIN_SOURCE", environ)
    if not isinstance(source, str) or not (
        source in ("yfinance", "sample") or source.startswith(("csv:", "blob:"))
    ):
        raise MonitorRequestError(
            f"source={str(source)[:80]!r}: send yfinance, sample, csv:PATH or blob:CONTAINER/PATH"
        )
    try:  # a request names only files the operator allowed (RETRAIN_DATA_DIR), as POST /api/retrain
        check_request_source(
            source,
            settings.get("RETRAIN_SOURCE", environ),
            settings.get("RETRAIN_DATA_DIR", environ),
            None if fleet else ticker,  # a fleet's files are checked per ticker as they are read
        )
    except MarketDataError as exc:
        raise MonitorRequestError(str(exc)) from None  # data_refusal's wording, which names the source
    thresholds = thresholds_from_settings(environ).to_dict()
    if fleet:
        from retrain.monitoring.fleet_monitor import fleet_spec

        try:
            return fleet_spec(fleet, days, source, thresholds, environ)
        except ValueError as exc:
            raise MonitorRequestError(str(exc)) from None
    # `retrain_as`: how a breach retrains (a fleet of one); a monitor started by older code has none and
    # keeps the per-ticker cycle its history recorded (see monitor_orchestrator).
    return {
        "ticker": ticker,
        "days": days,
        "source": source,
        "thresholds": thresholds,
        "retrain_as": RETRAIN_AS_FLEET,
    }


def summarise(ticker: str, results: list[dict[str, Any]], retrains: list[dict[str, Any]]) -> dict[str, Any]:
    """The orchestration's output (and the last stdout line of `retrain monitor`)."""
    last = results[-1] if results else {}
    window = (last.get("metrics") or {}).get("20") or {}
    return {
        "ticker": ticker,
        "days": len(results),
        "forecasts": sum(1 for r in results if r.get("forecast")),
        "scored": last.get("scored", 0),
        "mae_ratio": window.get("mae_ratio"),
        "alerts": [{"date": r["date"], **a} for r in results for a in r.get("alerts", [])],
        "retrains": retrains,
        # Failures that did not stop the monitor (e.g. its metrics not logged to MLflow), by day.
        "warnings": [{"date": r["date"], "warning": w} for r in results for w in r.get("warnings", [])],
    }


@bp.orchestration_trigger(context_name="context", orchestration=MONITOR_ORCHESTRATOR)
def monitor_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    from retrain.workflow import ORCHESTRATOR_NAME

    spec = context.get_input() or {}
    ticker = spec["ticker"]
    results: list[dict[str, Any]] = []
    retrains: list[dict[str, Any]] = []
    recent: list[dict[str, Any]] = []  # the last days' one-line summaries, for progress on the CLI
    # The retraining cycle (a fleet of one) this monitor runs right now (its sub-orchestration), if any:
    # terminating the monitor does not stop a sub-orchestration, so `terminate_monitor` reads it here and
    # stops it.
    running: dict[str, str | None] = {"cycle": None}

    def progress(day: str | None) -> None:
        context.set_custom_status(
            {
                "day": day,
                "done": len(results),
                "of": len(spec["days"]),
                "retrains": len(retrains),
                "recent": recent[-30:],
                "cycle": running["cycle"],
            }
        )

    def retrain_fleet_of_one(trigger: dict[str, Any], date: str, day: str) -> Any:
        """The breach as a fleet of one (`fleet.FLEET_ORCHESTRATOR`, a sub-orchestration, waited for):
        its input built by an activity by the rules of every start (`monitor_fleet_input`, the fleet
        monitor's: a ticker held by an active cycle or fleet is skipped); (the fleet's id or the holder's,
        the ticker's outcome status: deployed, rejected, or "failed: why", "skipped: ...")."""
        from retrain.monitoring.fleet_monitor import _failure, run_fleet
        from retrain.workflow import MAX_REASON_CHARS, RETRY

        reason = str(trigger["reason"])[:MAX_REASON_CHARS]
        planned = yield context.call_activity_with_retry(
            "monitor_fleet_input",
            RETRY,
            {
                "tickers": [ticker],
                "trigger": trigger["trigger"],
                "reason": reason,
                "breaches": {ticker: {"trigger": trigger["trigger"], "reason": reason}},
                "source": spec["source"],
                "as_of": date,
            },
        )
        why = _failure(planned)
        if why:
            return None, f"failed: no fleet started: {why}"
        holder = (planned.get("skipped") or {}).get(ticker)
        if holder or not planned.get("fleet"):
            return holder, "skipped: a cycle of this ticker was already running"
        child, statuses = yield from run_fleet(context, planned["fleet"], running, progress, day)
        return child, statuses[ticker]

    def legacy_cycle(trigger: dict[str, Any], date: str, day: str) -> Any:
        """What a monitor started by older code (no `retrain_as` in its spec) did on a breach, kept so that
        its replay matches its history: the per-ticker cycle (`workflow.ORCHESTRATOR_NAME`)."""
        # The cycle's settings are read by an activity: an orchestrator reads no app settings, so a replay
        # after a settings change still sees the input its first execution recorded.
        cycle = yield context.call_activity(
            "monitor_cycle_input",
            {
                "ticker": ticker,
                "trigger": trigger["trigger"],
                "source": spec["source"],
                "as_of": date,
                "reason": trigger["reason"],
            },
        )
        # One cycle per ticker: a cycle already running (started by HTTP or the timer) takes this breach.
        holder = yield context.call_activity("monitor_running_cycle", {"ticker": ticker})
        child = holder or naming.adhoc_instance_id(ticker, context.current_utc_datetime)
        if holder:
            return child, "skipped: a cycle of this ticker was already running"
        running["cycle"] = child
        progress(day)  # saved with this episode, with the sub-orchestration's start
        try:
            output = yield context.call_sub_orchestrator(ORCHESTRATOR_NAME, cycle, child)
            status = (output or {}).get("status", "completed")
        except Exception as exc:  # noqa: BLE001 - a failed cycle is recorded; the monitor goes on
            status = f"failed: {str(exc)[:300]}"
        running["cycle"] = None
        progress(day)
        return child, status

    for day in spec["days"]:
        progress(day)
        result = yield context.call_activity(
            "monitor_day",
            {"ticker": ticker, "as_of": day, "source": spec["source"], "thresholds": spec["thresholds"]},
        )
        results.append(result)
        trigger = result.get("trigger")
        window = (result.get("metrics") or {}).get("20") or {}
        recent.append(
            {
                "n": len(results),
                "as_of": day,
                "date": result["date"],
                "forecast": (result.get("forecast") or {}).get("forecast"),
                "mae_ratio": window.get("mae_ratio"),
                "alerts": [a["kind"] for a in result.get("alerts", [])],
                "trigger": (trigger or {}).get("trigger"),
            }
        )
        if not trigger:
            continue
        if spec.get("retrain_as") == RETRAIN_AS_FLEET:
            child, status = yield from retrain_fleet_of_one(trigger, result["date"], day)
        else:  # a monitor started by older code: its history has the per-ticker cycle (replay it as it was)
            child, status = yield from legacy_cycle(trigger, result["date"], day)
        retrains.append(
            {
                "instance_id": child,
                "date": result["date"],
                "trigger": trigger["trigger"],
                "reason": trigger["reason"],
                "status": status,
            }
        )
        yield context.call_activity(
            "monitor_record_retrain",
            {"ticker": ticker, "date": result["date"], "instance_id": child or "", "status": status},
        )
    summary = summarise(ticker, results, retrains)
    progress(None)
    return summary


@bp.activity_trigger(input_name="payload")
def monitor_cycle_input(payload: dict[str, Any]) -> dict[str, Any]:
    """Legacy (a monitor started by older code): the input of the per-ticker cycle its trigger starts: the
    app settings as they are now, with the trigger, its reason and the day's data (cycle_start.py)."""
    from retrain.cycle_start import cycle_input

    return cycle_input(
        payload["ticker"],
        payload["trigger"],
        reason=payload["reason"],
        source=payload["source"],
        as_of=payload["as_of"],
    )


@bp.activity_trigger(input_name="payload")
@bp.durable_client_input(client_name="client")
async def monitor_running_cycle(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> str | None:
    """Legacy (a monitor started by older code): the id of the active cycle or fleet holding the ticker, if
    any (`cycle_start.holder`); today's monitors ask `monitor_fleet_input`, which also builds the fleet."""
    from retrain.cycle_start import holder

    return await holder(client, payload["ticker"])


@bp.activity_trigger(input_name="payload")
def monitor_day(payload: dict[str, Any]) -> dict[str, Any]:
    from retrain.monitoring.monitor import monitor_day as run_day

    return run_day(payload)


@bp.activity_trigger(input_name="payload")
def monitor_record_retrain(payload: dict[str, Any]) -> dict[str, Any]:
    from retrain.monitoring.monitor import record_retrain

    return record_retrain(payload)


@bp.route(route="monitor", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_monitor(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        raw = req.get_body()
        text = raw.decode("utf-8") if raw else ""
        body = json.loads(text) if text.strip() else {}
        spec = parse_monitor_request(body)
    except UnicodeDecodeError as exc:
        return _json(
            {
                "error": f"the body is not UTF-8 (byte {exc.start}); send a UTF-8 JSON object such as {EXAMPLE}"
            },
            400,
        )
    except json.JSONDecodeError as exc:
        return _json(
            {
                "error": f"the body is not valid JSON ({exc.msg} at character {exc.pos}); send a JSON object such as {EXAMPLE}"
            },
            400,
        )
    except RecursionError:
        return _json({"error": f"the body nests too deeply; send a flat JSON object such as {EXAMPLE}"}, 400)
    except (MonitorRequestError, settings.SettingsError) as exc:
        return _json({"error": str(exc)}, 400)
    from retrain.adapters import check_forecast_log
    from retrain.state_files import StateError
    from retrain.triggers import (
        accepted,
        instance_status,
        management_links,
        start_lock,
        start_or_find,
        store_unavailable_response,
    )

    try:  # every monitored day writes the forecast log: a bad file is refused now, not after a 202
        check_forecast_log()
    except StateError as exc:
        return _json({"error": str(exc)}, 503)
    from retrain.monitoring.fleet_monitor import FLEET_MONITOR_ORCHESTRATOR, fleet_monitor_instance_id

    if "tickers" in spec:
        orchestrator = FLEET_MONITOR_ORCHESTRATOR
        instance_id = fleet_monitor_instance_id(spec["days"][0], datetime.now(UTC))
    else:
        orchestrator = MONITOR_ORCHESTRATOR
        instance_id = monitor_instance_id(spec["ticker"], spec["days"][0], datetime.now(UTC))
    async with start_lock(instance_id):
        # An id that exists, even finished (a one-day run ends within the second), is not started again:
        # a new start would replace that run's history.
        try:
            existing = await instance_status(client, instance_id) or await start_or_find(
                client, orchestrator, instance_id, spec
            )
        except Exception as exc:
            if (unavailable := store_unavailable_response(exc)) is None:
                raise
            return unavailable
    if existing is not None:  # the same ticker(s) and first day, started in the same second
        state = existing.runtime_status.value if existing.runtime_status else "unknown"
        return _json(
            {
                "error": f"monitor {instance_id} was started in this same second ({state}); "
                "follow it, or send the request again in a second",
                "instance_id": instance_id,
                **management_links(req.url, instance_id, "monitor"),
            },
            409,
        )
    return accepted(req.url, instance_id, "monitor")


@bp.route(route="monitor/{instance_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def monitor_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The monitor's status under the function key: runtime status, progress (`custom_status`), output."""
    from retrain.triggers import instance_status, store_unavailable_response

    instance_id = req.route_params.get("instance_id", "")
    try:
        status = await instance_status(client, instance_id) if is_monitor_instance_id(instance_id) else None
    except Exception as exc:
        if (unavailable := store_unavailable_response(exc)) is None:
            raise
        return unavailable
    if status is None:
        return _json(
            {
                "error": f"no monitor {instance_id[:80]!r}; ids look like monitor-msft-20120702-213000 "
                "or fleetmonitor-20120702"
            },
            404,
        )
    return _json(readable_monitor_status(status), 200)


def readable_monitor_status(status: Any) -> dict[str, Any]:
    """A DurableOrchestrationStatus as the answer of GET /api/monitor/{id}."""
    return {
        "instance_id": status.instance_id,
        "runtime_status": status.runtime_status.value if status.runtime_status else None,
        "custom_status": status.custom_status,
        "output": status.output,
        "created": status.created_time.isoformat() if status.created_time else None,
        "last_updated": status.last_updated_time.isoformat() if status.last_updated_time else None,
    }


@bp.route(route="monitor/{instance_id}/terminate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def terminate_monitor(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Terminate a monitor run and the retraining cycle it is running (a sub-orchestration, which Durable
    does not terminate with its parent), cancelling that cycle's job: 202 with `cycles` (what was stopped)."""
    from retrain.triggers import store_unavailable_response, terminate_instance

    instance_id = req.route_params.get("instance_id", "")
    try:
        code, body = await terminate_instance(
            client, instance_id, req.params.get("reason"), is_monitor_instance_id
        )
        if code == 202:
            body["cycles"] = await terminate_monitor_cycles(client, instance_id, body["reason"])
    except Exception as exc:
        if (unavailable := store_unavailable_response(exc)) is None:
            raise
        return unavailable
    return _json(body, code)


# How long terminate_monitor waits for the monitor's running cycle to appear (Azure creates a
# sub-orchestration from its parent's message, a moment after the parent's status names it).
CYCLE_APPEARS_TIMEOUT_S = 10.0


async def terminate_monitor_cycles(
    client: df.DurableOrchestrationClient, monitor_id: str, reason: str
) -> list[dict[str, Any]]:
    """Once the monitor's terminate is applied (it then starts nothing more), terminate the retraining
    cycle its status names as running (`cycle`) and cancel that cycle's job. One entry per cycle:
    `instance_id`, `runtime_status` after the terminate, `job` (as POST /api/retrain/{id}/terminate says),
    or `error` when it could not be stopped. A cycle the monitor only handed a breach to (one started by
    POST /api/retrain or the timer) is not the monitor's, and runs on. A monitor started by the code before
    `cycle` was recorded names none: stop its cycle with POST /api/retrain/{id}/terminate. A fleet monitor's
    cycle is a fleet: it is terminated with its active batches, their jobs canceled (`batches`), as
    POST /api/retrain/{fleet id}/terminate does."""
    import asyncio

    from retrain.triggers import (
        ACTIVE_VALUES,
        cancel_terminated_cycle,
        instance_status,
        runtime_of,
        terminate_fleet_batches,
        terminate_instance,
        wait_until_ended,
    )

    monitor = await wait_until_ended(client, monitor_id)
    custom = monitor.custom_status if monitor is not None else None
    child = custom.get("cycle") if isinstance(custom, dict) else None
    if not isinstance(child, str):
        return []
    fleet = naming.parse_fleet_instance_id(child) is not None
    if not fleet and naming.parse_instance_id(child) is None:
        return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CYCLE_APPEARS_TIMEOUT_S
    while (status := await instance_status(client, child)) is None and loop.time() < deadline:
        await asyncio.sleep(0.2)
    runtime = runtime_of(status)
    if runtime not in ACTIVE_VALUES:
        return [{"instance_id": child, "runtime_status": runtime, "terminated": False}]
    why = f"its monitor {monitor_id} was terminated: {reason}"[:500]
    ours = naming.parse_fleet_instance_id if fleet else naming.parse_instance_id
    code, answer = await terminate_instance(client, child, why, ours)
    if code != 202:  # it ended between the two reads
        return [{"instance_id": child, "terminated": False, "error": answer.get("error")}]
    if fleet:
        return [
            {"instance_id": child, "terminated": True, **(await terminate_fleet_batches(client, child, why))}
        ]
    return [{"instance_id": child, "terminated": True, **(await cancel_terminated_cycle(client, child))}]


@bp.timer_trigger(schedule="%RETRAIN_MONITOR_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def monitor_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await start_daily_monitor(client, datetime.now(UTC))


async def start_daily_monitor(client: df.DurableOrchestrationClient, now: datetime) -> str | None:
    """Today's fleet monitor over every ticker of RETRAIN_TICKERS, for the latest data
    (`fleetmonitor-<YYYYMMDD>`); a second firing the same day finds it and does nothing. Its id, or None
    when the settings name no ticker it can monitor (logged)."""
    import numpy as np

    from retrain.monitoring.fleet_monitor import FLEET_MONITOR_ORCHESTRATOR, fleet_monitor_instance_id
    from retrain.triggers import start_lock, start_or_find

    today = now.date().isoformat()
    # The schedule decides the days it fires on; on a weekend the latest data ends on the last weekday.
    weekday = str(np.busday_offset(today, 0, roll="backward"))
    try:
        spec = parse_monitor_request({"tickers": settings.tickers(), "from": weekday, "to": weekday})
    except (MonitorRequestError, settings.SettingsError) as exc:
        log.error("monitor timer: no monitor today: %s", exc)
        return None
    spec["days"] = [None]  # the latest data, not an as-of replay
    instance_id = fleet_monitor_instance_id(today, now, scheduled=True)
    existing = await client.get_status(instance_id)
    if existing is not None and existing.runtime_status is not None:
        return instance_id  # today's instance exists
    async with start_lock(instance_id):
        await start_or_find(client, FLEET_MONITOR_ORCHESTRATOR, instance_id, spec)  # exists: a twin fired
    return instance_id


def _json(body: Any, status_code: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status_code, mimetype="application/json")
