"""The monitor at fleet scale: one orchestration per day covers every monitored ticker (issue 22).

    monitor_timer (RETRAIN_MONITOR_SCHEDULE)            -> fleetmonitor-<YYYYMMDD>: RETRAIN_TICKERS, latest data
    POST /api/monitor {"tickers": [...], "from", "to"}  -> fleetmonitor-<YYYYMMDD>-<HHMMSS>: a replay, day by day
      fleet_monitor_orchestrator, for each day:
        monitor_score_group, one per score unit (whole endpoint groups, at most SCORE_UNIT tickers): the
          prices at once, each bundle endpoint's tickers in ONE batch request, the forecasts into the log
        monitor_check_group, one per CHECK_CHUNK tickers: per ticker the per-ticker monitor's checks
          (monitor.check_day: joins, metrics, drift, CUSUM, data quality, trigger, MLflow, the day's record)
        the day's breaches -> monitor_fleet_input (tickers held by an active cycle or fleet are skipped,
          the fleet's input with each ticker's trigger and reason) -> ONE fleet cycle as a sub-orchestration
          (fleet.fleet_orchestrator) -> monitor_record_retrains (each ticker's outcome beside its trigger)

Each ticker's day is the per-ticker monitor's (`monitor.monitor_day`, which `POST /api/monitor {"ticker"}`
still runs): the same forecast row, checks, summary, metrics and record for the same data; only the
scoring request differs (one per endpoint instead of one per ticker). A ticker whose data, scoring or
checks fail is reported alone (`errors` in its output); the others go on.

Why activities that each handle many tickers, not a sub-orchestration per endpoint group: a group's day
has no step of its own to wait on or retry separately (it is a fetch, one request and writes), so a
sub-orchestration would add its own history and three events to the parent's for nothing. The history of
one day is two events per activity plus the orchestrator's episodes: with N tickers, ceil(N / SCORE_UNIT)
score units (more only when small endpoint groups do not pack) and ceil(N / CHECK_CHUNK) check chunks,
so 500 tickers on one endpoint are 1 + 20 activities a day, never one per ticker. CHECK_CHUNK keeps an
activity well inside the Functions timeout (5 minutes on Consumption) at a few seconds per ticker in Azure.
A request spans at most MAX_TICKER_DAYS ticker-days (the output and history grow with them).

Why the fleet is a sub-orchestration and not a client start (`cycle_start.start_fleet`): the monitor waits
for its outcome, as the per-ticker monitor waits for its cycle: each ticker's outcome goes beside its
trigger in the forecast log (a rejected drift challenger re-arms the drift reference), and in a replay the
next day is scored by the models the fleet deployed. A sub-orchestration is that wait at the cost of two
history events; a client start would be a poll. Its input and the held tickers come from the one way in
(`cycle_start.fleet_input`, `cycle_start.holders`), as the per-ticker monitor's cycle does, and the
fleet's own guard runs first, as for any fleet. Durable does not terminate a sub-orchestration with its
parent: `POST /api/monitor/{id}/terminate` terminates the fleet the monitor's status names (`cycle`) with
its batches and their jobs, as the per-ticker monitor's terminate stops its cycle.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from retrain import naming

bp = df.Blueprint()

FLEET_MONITOR_ORCHESTRATOR = "fleet_monitor_orchestrator"
# Never a per-ticker monitor's id (`monitor-<slug>-...`, and a ticker FLEET has the slug "fleet"), never
# a fleet cycle's (`fleet-...`).
ID_PREFIX = "fleetmonitor-"
SCORE_UNIT = 500  # tickers per scoring activity (monitor.MAX_SCORE_BATCH: one request per endpoint)
CHECK_CHUNK = 25  # tickers per checking activity
MAX_TICKER_DAYS = 5000
RECENT_DAYS = 30  # day lines in the custom status (Azure caps it at 16 KB)
REASON_TICKERS = 20  # tickers named in the fleet's own reason (each has its own in `breaches`)

Task = Generator[Any, Any, Any]


def fleet_monitor_instance_id(first_day: str | None, now: datetime, scheduled: bool = False) -> str:
    """`fleetmonitor-<YYYYMMDD>` (the timer: one a day) or `fleetmonitor-<first day>-<HHMMSS>` (a request)."""
    if scheduled:
        return f"{ID_PREFIX}{now:%Y%m%d}"
    return f"{ID_PREFIX}{str(first_day).replace('-', '')}-{now:%H%M%S}"


def is_fleet_monitor_instance_id(instance_id: str) -> bool:
    import re

    return bool(re.fullmatch(rf"{ID_PREFIX}\d{{8}}(-\d{{6}})?", instance_id))


def request_tickers(value: Any) -> list[str]:
    """A request's `tickers`: a list of symbols (or "A,B"), canonical and unique in their order."""
    from retrain.fleet import InvalidFleetInput, canonical_tickers

    if isinstance(value, str) and not value.strip().startswith("@"):
        value = [t.strip() for t in value.split(",") if t.strip()]
    try:
        return canonical_tickers(value)
    except InvalidFleetInput as exc:
        raise ValueError(str(exc)) from None


def plan_units(tickers: list[str], targets: dict[str, str], limit: int = SCORE_UNIT) -> list[list[str]]:
    """The score units: each endpoint's tickers together (one batch request), small groups packed into
    one unit up to `limit` tickers (many per-ticker endpoints need not be many activities), a group larger
    than `limit` cut into units of `limit`. Deterministic: groups in the order of their first ticker."""
    groups: dict[str, list[str]] = {}
    for ticker in tickers:
        groups.setdefault(targets[ticker], []).append(ticker)
    units: list[list[str]] = []
    current: list[str] = []
    for group in groups.values():
        for first in range(0, len(group), limit):
            part = group[first : first + limit]
            if current and len(current) + len(part) > limit:
                units.append(current)
                current = []
            current = current + part
    if current:
        units.append(current)
    return units


def fleet_spec(
    tickers: list[str], days: list[Any], source: str, thresholds: dict[str, Any], environ: Any = None
) -> dict[str, Any]:
    """The orchestration's input: the tickers, the days, the source, the thresholds, the score units from
    each ticker's serving target (RETRAIN_ENDPOINTS when it starts) and the check chunk. Raises ValueError
    saying what to send."""
    from retrain.settings import get

    if len(tickers) * len(days) > MAX_TICKER_DAYS:
        raise ValueError(
            f"{len(tickers)} tickers x {len(days)} days = {len(tickers) * len(days)} ticker-days; send at "
            f"most {MAX_TICKER_DAYS} per request (fewer days or fewer tickers)"
        )
    try:
        groups = naming.parse_endpoint_groups(get("RETRAIN_ENDPOINTS", environ))
        suffix = naming.endpoint_suffix(environ)
        targets = {t: naming.serving_target(t, groups, suffix) for t in tickers}
    except naming.NamingError as exc:
        raise ValueError(str(exc)) from None
    return {
        "tickers": tickers,
        "days": days,
        "source": source,
        "thresholds": thresholds,
        "units": plan_units(tickers, targets),
        "chunk": CHECK_CHUNK,
    }


# ------------------------------------------------------------------------------------------ orchestration


def _failure(result: Any) -> str | None:
    """Why an activity's result is a failure (an exception after the retries, or report_failures' error)."""
    from retrain.activities import ACTIVITY_ERROR

    if isinstance(result, BaseException):
        return str(result)[:500] or type(result).__name__
    if isinstance(result, dict) and len(result) == 1 and isinstance(result.get(ACTIVITY_ERROR), dict):
        return str(result[ACTIVITY_ERROR].get("message"))[:500]
    if not isinstance(result, dict):
        return f"unexpected result {str(result)[:200]}"
    return None


def gather(context: df.DurableOrchestrationContext, calls: list[tuple[str, dict[str, Any]]]) -> Task:
    """The activities at once (a fan-out); their results in order, a failed one as its exception (the
    others are still awaited: task_all would fail at the first)."""
    from retrain.workflow import RETRY

    tasks = [context.call_activity_with_retry(name, RETRY, payload) for name, payload in calls]
    results: list[Any] = [None] * len(tasks)
    pending = list(range(len(tasks)))
    while pending:
        done = yield context.task_any([tasks[i] for i in pending])
        index = next(i for i in pending if tasks[i] is done)
        pending.remove(index)
        results[index] = done.result
    return results


def _ticker_state() -> dict[str, Any]:
    return {
        "days": 0,
        "forecasts": 0,
        "scored": 0,
        "mae_ratio": None,
        "alerts": [],
        "retrains": [],
        "warnings": [],
        "errors": [],
    }


def fleet_monitor_orchestrator(context: df.DurableOrchestrationContext) -> Task:
    """Every ticker, day by day (see the module docstring). Its output: `tickers` (per ticker what a
    per-ticker monitor's output says: days, forecasts, scored, mae_ratio, alerts, retrains, warnings; and
    `errors`, the days it could not be monitored), `retrains` (one per fleet cycle started), `days`,
    `counts`."""
    spec = context.get_input() or {}
    tickers: list[str] = list(spec.get("tickers") or [])
    days: list[Any] = list(spec.get("days") or [])
    units: list[list[str]] = [list(u) for u in spec.get("units") or []]
    if not tickers or not days or sorted(t for u in units for t in u) != sorted(tickers):
        raise ValueError(
            "a fleet monitor's input needs tickers, days and units covering the tickers "
            '(start it with POST /api/monitor {"tickers": [...]} or the monitor timer)'
        )
    chunk = int(spec.get("chunk") or CHECK_CHUNK)
    chunks = [tickers[i : i + chunk] for i in range(0, len(tickers), chunk)]
    state = {t: _ticker_state() for t in tickers}
    retrains: list[dict[str, Any]] = []
    recent: list[dict[str, Any]] = []
    running: dict[str, Any] = {"cycle": None}

    def progress(day: Any) -> None:
        context.set_custom_status(
            {
                "fleet": True,
                "day": day,
                "done": len(recent),
                "of": len(days),
                "tickers": len(tickers),
                "retrains": len(retrains),
                "recent": recent[-RECENT_DAYS:],
                "cycle": running["cycle"],
            }
        )

    for day in days:
        progress(day)
        scored: dict[str, Any] = {}
        answers = yield from gather(
            context,
            [
                ("monitor_score_group", {"tickers": unit, "as_of": day, "source": spec["source"]})
                for unit in units
            ],
        )
        for unit, answer in zip(units, answers, strict=True):
            why = _failure(answer)
            for ticker in unit:
                scored[ticker] = (
                    {"date": None, "error": f"the scoring step failed: {why}"} if why else answer.get(ticker)
                )
        checks = yield from gather(
            context,
            [
                (
                    "monitor_check_group",
                    {
                        "tickers": part,
                        "as_of": day,
                        "source": spec["source"],
                        "thresholds": spec["thresholds"],
                        "scored": {t: scored.get(t) for t in part},
                    },
                )
                for part in chunks
            ],
        )
        results: dict[str, Any] = {}
        for part, answer in zip(chunks, checks, strict=True):
            why = _failure(answer)
            for ticker in part:
                results[ticker] = {"error": f"the check step failed: {why}"} if why else answer.get(ticker)
        breaches: dict[str, dict[str, str]] = {}
        line = {"n": len(recent) + 1, "as_of": day, "forecasts": 0, "alerts": 0, "breaches": 0, "failed": 0}
        for ticker in tickers:
            result = results.get(ticker) or {"error": "no result"}
            mine = state[ticker]
            if "error" in result:
                mine["errors"].append({"date": day, "error": result["error"]})
                line["failed"] += 1
                continue
            mine["days"] += 1
            mine["forecasts"] += result.get("forecast") is not None
            mine["scored"], mine["mae_ratio"] = result.get("scored", 0), result.get("mae_ratio")
            mine["alerts"] += [{"date": result["date"], **a} for a in result.get("alerts") or []]
            mine["warnings"] += [{"date": result["date"], "warning": w} for w in result.get("warnings") or []]
            line["forecasts"] += result.get("forecast") is not None
            line["alerts"] += len(result.get("alerts") or [])
            if result.get("trigger"):
                breaches[ticker] = {**result["trigger"], "date": result["date"]}
        line["breaches"] = len(breaches)
        recent.append(line)
        if breaches:
            retrain = yield from start_fleet(context, spec, breaches, running, progress, day)
            retrains.append(retrain)
            for ticker, outcome in retrain["tickers"].items():
                state[ticker]["retrains"].append(
                    {
                        "instance_id": outcome["instance_id"],
                        "date": breaches[ticker]["date"],
                        "trigger": breaches[ticker]["trigger"],
                        "reason": breaches[ticker]["reason"],
                        "status": outcome["status"],
                    }
                )
    progress(None)
    counts = {
        "tickers": len(tickers),
        "forecasts": sum(s["forecasts"] for s in state.values()),
        "alerts": sum(len(s["alerts"]) for s in state.values()),
        "breaches": sum(len(r["tickers"]) for r in retrains),
        "failed": sum(len(s["errors"]) for s in state.values()),
    }
    return {"days": len(days), "tickers": state, "retrains": retrains, "counts": counts}


def fleet_trigger(breaches: dict[str, dict[str, str]]) -> str:
    """The fleet's one trigger: performance when any ticker breached on performance (its model lost to
    the naive forecast), else drift; each ticker's own trigger and reason go in the fleet's `breaches`."""
    return "performance" if any(b["trigger"] == "performance" for b in breaches.values()) else "drift"


def start_fleet(
    context: df.DurableOrchestrationContext,
    spec: dict[str, Any],
    breaches: dict[str, dict[str, str]],
    running: dict[str, Any],
    progress: Any,
    day: Any,
) -> Task:
    """The day's breaches as ONE fleet cycle (a sub-orchestration, waited for); each ticker's outcome goes
    beside its trigger in the forecast log. Held tickers are skipped, with the id that holds them."""
    from retrain.workflow import RETRY

    trigger = fleet_trigger(breaches)
    as_of = max(b["date"] for b in breaches.values())  # an upper bound: no ticker's data passes its day
    named = list(breaches)[:REASON_TICKERS]
    more = f" and {len(breaches) - len(named)} more" if len(breaches) > len(named) else ""
    reason = (
        f"monitor {context.instance_id}: {len(breaches)} breach(es) on {as_of} ("
        + ", ".join(f"{t} {breaches[t]['trigger']}" for t in named)
        + f"{more}); each ticker's reason is in the fleet's breaches and its model's tags"
    )
    planned = yield context.call_activity_with_retry(
        "monitor_fleet_input",
        RETRY,
        {
            "tickers": list(breaches),
            "trigger": trigger,
            "reason": reason,
            "breaches": {t: {"trigger": b["trigger"], "reason": b["reason"]} for t, b in breaches.items()},
            "source": spec["source"],
            "as_of": as_of,
        },
    )
    outcomes: dict[str, dict[str, Any]] = {}
    fleet_id: str | None = None
    why = _failure(planned)
    if why:
        outcomes = {t: {"instance_id": None, "status": f"failed: no fleet started: {why}"} for t in breaches}
    else:
        for ticker, holder in (planned.get("skipped") or {}).items():
            outcomes[ticker] = {"instance_id": holder, "status": f"skipped: {holder} is retraining it"}
        fleet = planned.get("fleet")
        if fleet:
            fleet_id, statuses = yield from run_fleet(context, fleet, running, progress, day)
            for ticker, status in statuses.items():
                outcomes[ticker] = {"instance_id": fleet_id, "status": status}
    yield context.call_activity_with_retry(
        "monitor_record_retrains",
        RETRY,
        {
            "entries": [
                {
                    "ticker": t,
                    "date": breaches[t]["date"],
                    "instance_id": outcomes[t]["instance_id"],
                    "status": outcomes[t]["status"],
                }
                for t in breaches
            ]
        },
    )
    return {
        "instance_id": fleet_id,
        "date": as_of,
        "trigger": trigger,
        "tickers": {
            t: {**outcomes[t], "trigger": breaches[t]["trigger"], "reason": breaches[t]["reason"]}
            for t in breaches
        },
    }


def run_fleet(
    context: df.DurableOrchestrationContext,
    fleet: dict[str, Any],
    running: dict[str, Any],
    progress: Any,
    day: Any,
) -> Task:
    """A planned fleet (`monitor_fleet_input`'s `fleet`) as a sub-orchestration, waited for; `running["cycle"]`
    names it meanwhile (terminating the monitor stops it). Returns (its id, {ticker: status}): deployed,
    rejected, or "<status>: why" (a fleet that failed as a whole: "failed: why" for each of its tickers)."""
    from retrain.fleet import FLEET_ORCHESTRATOR

    fleet_id = naming.fleet_instance_id(context.current_utc_datetime)
    running["cycle"] = fleet_id
    progress(day)  # saved with this episode, with the sub-orchestration's start
    try:
        output = yield context.call_sub_orchestrator(FLEET_ORCHESTRATOR, fleet, fleet_id)
    except Exception as exc:  # noqa: BLE001 - a failed fleet is recorded; the monitor goes on
        output = {"failed": f"failed: {str(exc)[:300]}"}
    running["cycle"] = None
    progress(day)
    reported = (output or {}).get("tickers") or {}
    statuses: dict[str, str] = {}
    for ticker in fleet["tickers"]:
        outcome = reported.get(ticker) or {}
        status = outcome.get("status")
        if status not in ("deployed", "rejected"):
            status = (output or {}).get("failed") or (
                f"{status or 'failed'}: {outcome.get('error') or 'the fleet reported no outcome'}"
            )
        statuses[ticker] = str(status)[:500]
    return fleet_id, statuses


# ------------------------------------------------------------------------------------------ activities


def monitor_score_group(payload: dict[str, Any]) -> dict[str, Any]:
    from retrain.monitoring.monitor import score_group

    return score_group(payload)


def monitor_check_group(payload: dict[str, Any]) -> dict[str, Any]:
    from retrain.monitoring.monitor import check_group

    return check_group(payload)


async def monitor_fleet_input(
    payload: dict[str, Any], client: df.DurableOrchestrationClient
) -> dict[str, Any]:
    """The fleet the day's breaches start, by the rules of every start (retrain/cycle_start.py): {"fleet":
    its input over the tickers no active cycle or fleet holds (None when all are held), "skipped":
    {ticker: the id holding it}}. A bad setting fails it permanently, saying which (`InvalidStart`)."""
    from retrain.cycle_start import fleet_input, holders

    tickers = list(payload["tickers"])
    held = await holders(client, tickers)
    going = [t for t in tickers if t not in held]
    fleet = None
    if going:
        fleet = fleet_input(
            going,
            payload["trigger"],
            reason=payload["reason"],
            breaches={t: payload["breaches"][t] for t in going},
            source=payload["source"],
            as_of=payload["as_of"],
        )
    return {"fleet": fleet, "skipped": held}


def monitor_record_retrains(payload: dict[str, Any]) -> dict[str, Any]:
    """Each ticker's retrain (its instance id and outcome) beside its trigger in the forecast log."""
    from retrain.adapters import get_forecast_log

    store = get_forecast_log()
    for entry in payload["entries"]:
        store.record_retrain(entry["ticker"], entry["date"], entry["instance_id"] or "", entry["status"])
    return {"recorded": len(payload["entries"])}


def _register() -> None:
    from retrain.activities import report_failures

    bp.orchestration_trigger(context_name="context", orchestration=FLEET_MONITOR_ORCHESTRATOR)(
        fleet_monitor_orchestrator
    )
    for activity in (monitor_score_group, monitor_check_group, monitor_record_retrains):
        bp.activity_trigger(input_name="payload")(report_failures(activity))
    bp.activity_trigger(input_name="payload")(
        bp.durable_client_input(client_name="client")(report_failures(monitor_fleet_input))
    )


_register()

__all__ = [
    "CHECK_CHUNK",
    "FLEET_MONITOR_ORCHESTRATOR",
    "SCORE_UNIT",
    "fleet_monitor_instance_id",
    "fleet_monitor_orchestrator",
    "fleet_spec",
    "is_fleet_monitor_instance_id",
    "plan_units",
    "request_tickers",
]
