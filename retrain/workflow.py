"""The per-ticker retraining orchestrator (legacy: replay only), and the cycle's input and shared steps.

No trigger starts `retrain_orchestrator` any more: a single ticker is a fleet of one (retrain/fleet.py,
started through retrain/cycle_start.py). It stays registered so that cycles started by older code (ids
`retrain-<ticker>-...`, and the per-ticker cycle a monitor started by older code runs on a breach) replay
and finish. What the fleet path shares lives here too: `CycleInput` and its validation, `wait_for_job`,
`lineage_tags`, `call_activity`, the rollout's event names and retry policy.

It reads like the diagram of the cycle in docs/architecture.md and is deterministic: no I/O (every effect is an activity),
time only from ``context.current_utc_datetime``, configuration only from the orchestration input
(resolved from the settings by the trigger that started it, so a replay never sees a changed setting).

    fetch data -> register data asset -> champion? -> submit training
    -> wait: "job_finished" event raced against a timer; on the timer poll the job (events can be lost)
    -> metrics -> gate -> register model (lineage tags)
    -> [gate says deploy] endpoint -> idle slot at 0 % -> smoke -> canary % -> smoke -> 100 %
       -> champion -> retire the old slot
    any failure after the new slot exists: traffic back to the old slot, the champion keeps serving.

`retrain_orchestrator` is that list; each step is a generator below it (`train_and_wait`,
`gate_and_register`, `deploy_to_idle_slot`, `roll_out` with `roll_back`, `retire_old_slot`), all
writing the one custom status that ``GET /api/retrain/{id}`` follows (`Progress`).

Decisions worth knowing:
- A rejected challenger is still registered (tag ``gate_decision=reject``, never the champion), so
  the registry keeps an audit trail of every trained model and why it did not ship. A failed job
  registers nothing.
- The first model (no slot serving yet) goes 0 % -> smoke -> 100 %: a canary needs an old slot.
- Retiring the old slot is clean-up: the new champion already serves, so a failure there is reported
  as a warning in the output instead of failing (and rolling back) a finished rollout.
- Azure's endpoint operations are long-running and one at a time, and the local platform behaves the
  same: after every traffic change (canary, promote, rollback) the cycle waits with durable timers
  (capped back-off, within RETRAIN_DEPLOY_TIMEOUT_MINUTES) until the endpoint is `Succeeded` with the
  traffic asked for; a refusal because the endpoint is busy (409, `EndpointBusyError`) waits until it
  is no longer updating and tries again; a delete is done at `NotFound`; a leftover deployment in the
  idle slot (Failed: Azure cannot update it; or kept cold) is deleted before the new one goes there.
- Failures by kind: only a transient failure (network, throttling, 5xx) is retried (Durable's retry
  policy, 3 attempts); a permanent one (bad request, missing entity, invalid input) fails the cycle at
  once. See `activities.report_failures`.
- A "job finished" event is a hint, never a verdict: the job's status is confirmed with the platform,
  and when the platform says the job still runs (a forged, early or stray event), the wait goes on.
- A rollback only targets a live slot. Before traffic goes back to the old slot, its deployment must
  read `Succeeded`. One that is restarting (Updating: the platform heals a crashed slot in seconds) is
  waited for with durable timers within the deploy timeout. When it does not come back (it failed, is
  gone, or the time ran out), moving 100 % onto it would fail every request, and sending everything to
  the new model that just failed its checks is no safer. So the traffic is left exactly as it stands,
  the cycle fails with a reason that names the old slot's state and what serves (each live slot's share
  and model), and the champion stays unchanged: the operator decides (`retrain traffic`, `retrain
  rollback`, or their HTTP routes).
- A dead job runner sends no event: the first job poll comes 15 s after submitting, then the interval
  doubles up to the poll interval.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import azure.durable_functions as df

from retrain import naming
from retrain import vocabulary as v
from retrain.activities import ACTIVITY_ERROR, LEDGER_WARNING, TEST_ERRORS_UNREADABLE
from retrain.ports import (
    JOB_TERMINAL_STATUSES,
    PROVISIONING_IN_PROGRESS,
    PROVISIONING_TERMINAL,
    SLOTS,
    EndpointState,
    JobStatus,
)
from retrain.progress import Progress
from retrain.settings import get, get_bool, get_float, get_int

if TYPE_CHECKING:
    from retrain.gate import GatePolicy

ORCHESTRATOR_NAME = "retrain_orchestrator"
JOB_FINISHED_EVENT = "job_finished"
# The activity that names an earlier active cycle of the same ticker (registered in retrain.triggers).
TICKER_GUARD_ACTIVITY = "earlier_active_cycle"

# The rollout orchestration (retrain/rollout.py): the activity a waiting cycle asks for one with, and the
# event that brings the cycle its outcome.
REQUEST_ROLLOUT_ACTIVITY = "request_rollout"
ROLLOUT_OUTCOME_EVENT = "rollout_outcome"
# A cycle waits for its rollout this many deploy timeouts (rollouts before it, then its own), then fails.
ROLLOUT_WAIT_FACTOR = 4
# The recent closes a waiting cycle shows in its status for its smoke test (enough for any model window).
SMOKE_CLOSES_SENT = 64

# Durable timers cannot be longer than 6 days (Azure Storage backend); longer waits loop.
MAX_TIMER = timedelta(days=6)
# A job's first status poll: soon, because a job runner that died can send no event; later polls back
# off (doubling) to the cycle's poll interval.
JOB_FIRST_POLL_S = 15.0
# Deployments and endpoints are polled with a capped exponential back-off (deterministic).
DEPLOY_POLL_FIRST_S = 1.0
DEPLOY_POLL_MAX_S = 30.0
# A delete is done when the deployment is gone, and only then: until Azure registers the delete, a read
# still shows the old state (Succeeded, or Failed for a deployment that failed to provision).
DELETED = frozenset({"NotFound"})
# While the endpoint is in one of these states, another operation on it is refused (Azure: 409).
ENDPOINT_BUSY_STATES = PROVISIONING_IN_PROGRESS

# Transient platform failures (network, throttling, 5xx) are retried: the only failures an activity
# raises (`activities.report_failures`). A permanent failure or a busy endpoint is a structured result,
# and a verdict (smoke test, gate, job status) a return value: none of them is retried by Durable.
RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)


class WorkflowFailed(RuntimeError):
    """Ends the orchestration as Failed; the message is the reason shown in its status."""


@dataclass(frozen=True)
class CycleInput:
    """Everything one cycle needs, fixed when the orchestration starts."""

    ticker: str
    source: str = "yfinance"
    lookback_days: int | None = 1825
    force: bool = False
    trainer: str = "lstm"  # a name in retrain.trainers.TRAINERS
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # passed as `--param key=value`
    gate_metrics: dict[str, Any] = field(default_factory=dict)  # retrain.gate.GateMetrics.to_dict()
    poll_minutes: float = 10.0
    job_timeout_hours: float = 24.0
    baseline_margin: float = 0.05
    gate_alpha: float = 0.05  # significance level of the gate's Diebold-Mariano tests
    # The gate's policy (retrain.gate.GatePolicy). The defaults are the gate before policies existed, so an
    # input without these fields (an orchestration started by the previous code, replayed) decides the
    # same; `from_settings` fills them from RETRAIN_GATE_POLICY / RETRAIN_GATE_NONINFERIORITY_MARGIN.
    gate_policy: str = "superiority"
    gate_noninferiority_margin: float = 0.01
    gate_baseline_rule: str = "significance"
    canary_percent: int = 10
    smoke_max_latency_ms: float = 2000.0
    keep_old_slot: bool = False
    deploy_timeout_minutes: float = 60.0
    trigger: str = "http"  # timer, http, drift, performance or azureml_monitor
    reason: str | None = None  # why a monitor started this cycle (statistic, threshold, window)
    as_of: str | None = None  # YYYY-MM-DD: data up to and including that day (offline replay)
    # Both default to the behaviour before they existed, so a replayed older orchestration does the same;
    # `from_settings` turns them on. The first job poll comes after this many seconds (then the interval
    # doubles up to poll_minutes): a runner that died sends no event. 0: the first poll at poll_minutes.
    job_first_poll_seconds: float = 0.0
    # A rollback waits (durable timers, within the deploy timeout) for an old slot that is restarting.
    rollback_waits_for_old_slot: bool = False
    # The naming of the cycle's derived names (naming.cycle_names): absent (None), the lossy naming of the
    # code before one-to-one names, so a cycle that code started keeps its endpoint, model, asset and job
    # names when replayed; `from_settings` sets naming.NAMING_VERSION.
    naming_version: int | None = None
    # The endpoint name's suffix (RETRAIN_ENDPOINT_SUFFIX, or derived from the Azure workspace; "" locally),
    # resolved when the cycle starts, so a replay never reads a setting for its endpoint. None (an input
    # from older code): the orchestrator resolves it from the settings, as that code did.
    endpoint_suffix: str | None = None
    # The served ledger records a traffic change once it has applied (after the wait), with the
    # orchestration's id; False (an input from older code): the set_traffic activity records it when asked.
    record_traffic_when_applied: bool = False
    # The endpoint that serves this ticker (RETRAIN_ENDPOINTS, resolved when the cycle starts). Set: an
    # accepted challenger goes out through its endpoint's rollout orchestration (retrain/rollout.py), in a
    # bundle with the other tickers' models. None (an input from older code): today's inline per-ticker
    # blue/green rollout, so a replay does what it did.
    serving_target: str | None = None
    # While waiting for that rollout, ask for one again this often (RETRAIN_ROLLOUT_POLL_MINUTES).
    rollout_poll_minutes: float = 2.0

    @classmethod
    def from_settings(cls, ticker: str, trigger: str, environ: Any = None, **overrides: Any) -> CycleInput:
        from retrain.gate import GateMetrics, GatePolicy
        from retrain.trainers import default_hyperparameters, get_trainer, validate_hyperparameters

        trainer = get_trainer(overrides.pop("trainer", None) or get("RETRAIN_TRAINER", environ))
        hyperparameters = {
            **default_hyperparameters(trainer, environ),
            **(overrides.pop("hyperparameters", None) or {}),
        }
        # Every entry point (HTTP, timer, the monitor's cycles, the CLI through HTTP) builds its input here:
        # the trainer's declared bounds hold for all of them, settings included.
        validate_hyperparameters(trainer, hyperparameters)
        values: dict[str, Any] = {
            "trainer": trainer.name,
            "hyperparameters": hyperparameters,
            "gate_metrics": GateMetrics.from_settings(environ).to_dict(),
            "ticker": ticker,
            "source": get("RETRAIN_SOURCE", environ),
            "lookback_days": get_int("RETRAIN_LOOKBACK_DAYS", environ),
            "poll_minutes": get_float("RETRAIN_JOB_POLL_MINUTES", environ),
            "job_timeout_hours": get_float("RETRAIN_JOB_TIMEOUT_HOURS", environ),
            "baseline_margin": get_float("RETRAIN_GATE_BASELINE_MARGIN", environ),
            "gate_alpha": get_float("RETRAIN_GATE_ALPHA", environ),
            **_gate_policy_fields(GatePolicy.from_settings(environ)),
            "canary_percent": get_int("RETRAIN_CANARY_PERCENT", environ),
            "smoke_max_latency_ms": get_float("RETRAIN_SMOKE_MAX_LATENCY_MS", environ),
            "keep_old_slot": get_bool("RETRAIN_KEEP_OLD_SLOT", environ),
            "deploy_timeout_minutes": get_float("RETRAIN_DEPLOY_TIMEOUT_MINUTES", environ),
            "trigger": trigger,
            "job_first_poll_seconds": JOB_FIRST_POLL_S,
            "rollback_waits_for_old_slot": True,
            "naming_version": naming.NAMING_VERSION,
            "endpoint_suffix": _endpoint_suffix_from_settings(environ),
            "record_traffic_when_applied": True,
            "rollout_poll_minutes": get_float("RETRAIN_ROLLOUT_POLL_MINUTES", environ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["serving_target"] = _serving_target_from_settings(ticker, values["endpoint_suffix"], environ)
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleInput:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def gate_policy_of(self) -> GatePolicy:
        """The gate policy this cycle was started with (validated: a bad input fails the cycle clearly)."""
        from retrain.gate import GatePolicy

        return GatePolicy(self.gate_policy, self.gate_noninferiority_margin, self.gate_baseline_rule)


def _endpoint_suffix_from_settings(environ: Any) -> str | None:
    """The endpoint suffix under the current settings, or None when they cannot give one (an incomplete
    Azure configuration): the cycle then fails naming its endpoint, as before."""
    try:
        return naming.endpoint_suffix(environ)
    except naming.NamingError:
        return None


def _serving_target_from_settings(ticker: str, suffix: str | None, environ: Any) -> str | None:
    """The endpoint serving `ticker` under RETRAIN_ENDPOINTS (a bad value is refused saying what to send).
    None when the suffix cannot be resolved (an incomplete Azure configuration): the cycle then fails
    naming its endpoint, as before."""
    try:
        groups = naming.parse_endpoint_groups(get("RETRAIN_ENDPOINTS", environ))
    except naming.NamingError as exc:
        raise InvalidCycleInput(f"RETRAIN_ENDPOINTS: {exc}") from None
    if suffix is None:
        return None
    return naming.serving_target(ticker, groups, suffix)


class InvalidCycleInput(ValueError):
    """A cycle input that breaks the edge's rules; the message names the field and what to send."""


TRIGGERS = ("timer", "http", "drift", "performance", "azureml_monitor")
# Bounds of the numeric inputs: (field, smallest, largest, what it is). Settings and requests both land
# here; a value outside is refused before the cycle does anything.
_NUMBER_BOUNDS: tuple[tuple[str, float, float, str], ...] = (
    ("poll_minutes", 0.001, 10080.0, "minutes between job polls (RETRAIN_JOB_POLL_MINUTES)"),
    ("job_timeout_hours", 0.001, 720.0, "hours a training job may take (RETRAIN_JOB_TIMEOUT_HOURS)"),
    ("baseline_margin", 0.0, 1.0, "a fraction (RETRAIN_GATE_BASELINE_MARGIN)"),
    ("gate_alpha", 1e-6, 0.5, "the gate's significance level (RETRAIN_GATE_ALPHA)"),
    ("smoke_max_latency_ms", 0.0, 600000.0, "milliseconds (RETRAIN_SMOKE_MAX_LATENCY_MS)"),
    ("deploy_timeout_minutes", 0.001, 10080.0, "minutes (RETRAIN_DEPLOY_TIMEOUT_MINUTES)"),
    ("rollout_poll_minutes", 0.001, 1440.0, "minutes (RETRAIN_ROLLOUT_POLL_MINUTES)"),
)
MAX_REASON_CHARS = 2000


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validate_cycle_input(data: Any) -> CycleInput:
    """The cycle input checked with the edge's rules, or `InvalidCycleInput` saying what to send.

    Pure (no settings, no files, no clock): `POST /api/retrain` calls it on the input it built, and
    `retrain_orchestrator` calls it again on whatever input it was started with, so a start through the
    Durable HTTP API (the extension key) is held to the same rules. A request's `csv:` path is confined
    to RETRAIN_DATA_DIR at the edge and again by the fetch activity (`market_data.request_data_dir`)."""
    from datetime import date

    from retrain.gate import GateError, GateMetrics
    from retrain.trainers import TrainerError, get_trainer, validate_hyperparameters

    def bad(name: str, expected: str) -> InvalidCycleInput:
        return InvalidCycleInput(f"{name}={_shown(data.get(name))}: expected {expected}")

    if not isinstance(data, dict):
        raise InvalidCycleInput(
            f"the cycle input must be a JSON object, not {type(data).__name__}; start cycles with "
            'POST /api/retrain {"ticker": "MSFT"}'
        )
    known = {f.name for f in fields(CycleInput)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        names = ", ".join(_shown(k, 40) for k in unknown[:5])
        raise InvalidCycleInput(f"unknown cycle input field(s) {names}; known: {', '.join(sorted(known))}")
    ticker = data.get("ticker")
    try:
        canonical = naming.validate_ticker(ticker)  # type: ignore[arg-type]
    except naming.TickerError as exc:
        raise InvalidCycleInput(f"ticker: {exc}") from None
    if canonical != ticker:
        raise bad("ticker", f"the canonical ticker {canonical!r}")
    source = data.get("source", "yfinance")
    if not isinstance(source, str) or not (
        source in ("yfinance", "sample")
        or (source.startswith("csv:") and source[4:].strip())
        or (source.startswith("blob:") and source[5:].strip())
    ):
        raise bad("source", "yfinance, sample, csv:PATH or blob:CONTAINER/PATH")
    from retrain.market_data import MarketDataError, check_placeholders

    try:  # {ticker} is the one placeholder (one file per ticker); any other is a mistake
        check_placeholders(source)
    except MarketDataError as exc:
        raise InvalidCycleInput(str(exc)) from None
    lookback = data.get("lookback_days")
    if lookback is not None and (
        isinstance(lookback, bool) or not isinstance(lookback, int) or not 30 <= lookback <= 36500
    ):
        raise bad("lookback_days", "an integer from 30 to 36500 (RETRAIN_LOOKBACK_DAYS)")
    for flag in ("force", "keep_old_slot", "rollback_waits_for_old_slot", "record_traffic_when_applied"):
        if flag in data and not isinstance(data[flag], bool):
            raise bad(flag, "true or false")
    for name, low, high, what in _NUMBER_BOUNDS:
        value = data.get(name)
        if name in data and (
            isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high
        ):
            raise bad(name, f"a number from {low:g} to {high:g}: {what}")
    canary = data.get("canary_percent")
    if "canary_percent" in data and (
        isinstance(canary, bool) or not isinstance(canary, int) or not 0 <= canary <= 100
    ):
        raise bad("canary_percent", "an integer from 0 to 100 (RETRAIN_CANARY_PERCENT)")
    version = data.get("naming_version")
    if version is not None and (isinstance(version, bool) or version != naming.NAMING_VERSION):
        raise bad("naming_version", f"{naming.NAMING_VERSION} (or no field: the older, lossy naming)")
    if data.get("trigger", "http") not in TRIGGERS:
        raise bad("trigger", " or ".join(TRIGGERS))
    suffix = data.get("endpoint_suffix")
    if suffix is not None:
        try:
            if not isinstance(suffix, str):
                raise naming.NamingError(suffix)
            naming.endpoint_name(canonical, suffix)  # the suffix's rule (and that it makes a valid name)
        except naming.NamingError:
            raise bad(
                "endpoint_suffix",
                f'1 to {naming.ENDPOINT_SUFFIX_MAX} lower-case letters or digits, "" (none), or null (the settings)',
            ) from None
    target = data.get("serving_target")
    if target is not None and not (isinstance(target, str) and naming.is_endpoint_name(target)):
        raise bad("serving_target", "an endpoint name (RETRAIN_ENDPOINTS decides it), or null")
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise bad("reason", f"a text of at most {MAX_REASON_CHARS} characters, or null")
    as_of = data.get("as_of")
    if as_of is not None:
        try:
            if not isinstance(as_of, str) or len(as_of) != 10:
                raise ValueError(as_of)
            date.fromisoformat(as_of)
        except ValueError:
            raise bad("as_of", 'a date "YYYY-MM-DD", or null') from None
    try:
        trainer = get_trainer(data.get("trainer", "lstm"))  # the registry: a name, never a path
        if data.get("hyperparameters", {}) is None:
            raise TrainerError("hyperparameters must be an object of name -> value, not null")
        # names, types and bounds as the trainer declares them (its hyperparameters.json, code files)
        validate_hyperparameters(trainer, data.get("hyperparameters", {}))
        if "gate_metrics" in data and not isinstance(data["gate_metrics"], dict):
            raise GateError("gate_metrics must be an object (retrain.gate.GateMetrics)")
        cycle = CycleInput.from_dict(data)
        GateMetrics.from_dict(cycle.gate_metrics)
        cycle.gate_policy_of()
    except (TrainerError, GateError, TypeError) as exc:
        raise InvalidCycleInput(str(exc)) from None
    return cycle


def _gate_policy_fields(policy: GatePolicy) -> dict[str, Any]:
    return {
        "gate_policy": policy.champion,
        "gate_noninferiority_margin": policy.noninferiority_margin,
        "gate_baseline_rule": policy.baseline_rule,
    }


Task = Generator[Any, Any, Any]


class ActivityFailed(WorkflowFailed):
    """An activity reported a failure that a quick retry would not fix (see `activities.report_failures`):
    ``kind`` is "permanent" (bad request, missing entity, invalid input) or "busy" (the endpoint is
    running another operation)."""

    def __init__(self, activity: str, kind: str, message: str):
        super().__init__(f"{activity} failed: {message}")
        self.activity = activity
        self.kind = kind


def call_activity(context: df.DurableOrchestrationContext, activity: str, payload: dict[str, Any]) -> Task:
    """Run an activity: a transient failure is retried by Durable (`RETRY`); a permanent failure or a
    busy endpoint arrives as a structured result and raises `ActivityFailed` at once."""
    result = yield context.call_activity_with_retry(activity, RETRY, payload)
    failure = result.get(ACTIVITY_ERROR) if isinstance(result, dict) and len(result) == 1 else None
    if isinstance(failure, dict):
        raise ActivityFailed(activity, str(failure.get("kind")), str(failure.get("message")))
    if isinstance(result, dict) and LEDGER_WARNING in result:  # the traffic changed, its record was lost
        warning = str(result[LEDGER_WARNING] or _lost_record(activity))
        result = {k: val for k, val in result.items() if k != LEDGER_WARNING}
        warnings = _CYCLE_WARNINGS.get(context)
        if warnings is not None:
            warnings.append(warning)
    return result


def _lost_record(activity: str) -> str:
    return f"served ledger: the change made by {activity} was NOT recorded"


# Each running cycle's `warnings` list (its custom status), by orchestration context: call_activity moves
# an activity's ledger warning there, so a lost record shows in the cycle's status and output.
_CYCLE_WARNINGS: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def _deadline(context: df.DurableOrchestrationContext, timeout: timedelta) -> datetime:
    return context.current_utc_datetime + timeout


def _backoff(context: df.DurableOrchestrationContext, delay: float, deadline: datetime) -> Task:
    """One durable timer of `delay` seconds (never past the deadline); returns the next, doubled delay."""
    yield context.create_timer(min(context.current_utc_datetime + timedelta(seconds=delay), deadline))
    return min(delay * 2, DEPLOY_POLL_MAX_S)


def wait_for_job(
    context: df.DurableOrchestrationContext,
    job_name: str,
    poll: timedelta,
    timeout: timedelta,
    first_poll: timedelta | None = None,
) -> Task:
    """The job's terminal status: the "job_finished" event raced against a poll timer. Events can be
    lost (or never configured), so every timer tick asks the platform directly. An event is only a hint
    (it may be forged, early or stray): the platform must confirm a terminal status before the wait ends.
    With `first_poll`, the first tick comes that soon and each later one doubles up to `poll`: a dead job
    runner (which the platform reports Failed) sends no event, and is noticed within seconds."""
    deadline = _deadline(context, timeout)
    poll = min(max(poll, timedelta(seconds=1)), MAX_TIMER)
    interval = min(max(first_poll, timedelta(seconds=1)), poll) if first_poll else poll
    polls = hints_refuted = 0
    while True:
        now = context.current_utc_datetime
        if now >= deadline:
            raise WorkflowFailed(
                f"training job {job_name} did not finish within {timeout}; "
                "raise RETRAIN_JOB_TIMEOUT_HOURS or look at the job in the platform"
            )
        timer = context.create_timer(min(now + interval, deadline))
        event = context.wait_for_external_event(JOB_FINISHED_EVENT)
        winner = yield context.task_any([event, timer])
        if winner == event:
            timer.cancel()
            hint = event.result if isinstance(event.result, dict) else {}
            if (
                hint.get("job_name") not in (None, job_name)
                or hint.get("status") not in JOB_TERMINAL_STATUSES
            ):
                continue  # not about our job's end: no need to ask the platform
            via = "event"
        else:
            polls += 1
            via = "poll"
            interval = min(interval * 2, poll)
        status = JobStatus.from_dict(
            (yield from call_activity(context, "get_job_status", {"job_name": job_name}))
        )
        if status.terminal:
            return {**status.to_dict(), "via": via, "polls": polls, "hints_refuted": hints_refuted}
        if via == "event":
            hints_refuted += 1  # the platform says the job still runs: the event was forged or early


def wait_for_provisioning(
    context: df.DurableOrchestrationContext,
    activity: str,
    payload: dict[str, Any],
    first: dict[str, Any],
    timeout: timedelta,
    key: str = "state",
    until: frozenset[str] = PROVISIONING_TERMINAL,
) -> Task:
    """Poll a long Azure operation (endpoint or deployment) with durable timers (capped back-off) until
    its state is one of `until`: a create ends Succeeded/Failed/Canceled, a delete only at `DELETED`."""
    state, deadline, delay = first, _deadline(context, timeout), DEPLOY_POLL_FIRST_S
    while state.get(key) not in until:
        if context.current_utc_datetime >= deadline:
            raise WorkflowFailed(
                f"{activity} {payload} still {state.get(key)} after {timeout}; "
                "raise RETRAIN_DEPLOY_TIMEOUT_MINUTES or look at it in the platform"
            )
        delay = yield from _backoff(context, delay, deadline)
        state = yield from call_activity(context, activity, payload)
    return state


def endpoint_operation(
    context: df.DurableOrchestrationContext,
    activity: str,
    payload: dict[str, Any],
    endpoint: str,
    timeout: timedelta,
) -> Task:
    """An operation on the endpoint (traffic, deploy, delete). Azure runs one at a time and refuses
    another with 409 (`EndpointBusyError`): then wait with durable timers until the endpoint is no
    longer updating and try again, within the deploy timeout, instead of three quick retries."""
    deadline, delay = _deadline(context, timeout), DEPLOY_POLL_FIRST_S
    while True:
        try:
            return (yield from call_activity(context, activity, payload))
        except ActivityFailed as exc:
            if exc.kind != "busy":
                raise
            busy = str(exc)
        while True:
            if context.current_utc_datetime >= deadline:
                raise WorkflowFailed(
                    f"endpoint {endpoint} stayed busy for {timeout} ({busy}); "
                    "raise RETRAIN_DEPLOY_TIMEOUT_MINUTES or look at its operations in the platform"
                )
            delay = yield from _backoff(context, delay, deadline)
            now = yield from call_activity(context, "get_endpoint", {"name": endpoint})
            if now.get("state") not in ENDPOINT_BUSY_STATES:
                break


def _live(traffic: dict[str, Any]) -> dict[str, int]:
    return {str(slot): int(pct) for slot, pct in traffic.items() if int(pct) > 0}


def set_traffic_and_wait(
    context: df.DurableOrchestrationContext,
    endpoint: str,
    traffic: dict[str, int],
    timeout: timedelta,
    *,
    instance_id: str | None = None,
    record_when_applied: bool = False,
    bundles: list[dict[str, Any]] | None = None,
) -> Task:
    """Change the traffic split and wait until the platform serves it: the endpoint is `Succeeded` and
    its traffic equals what was asked (slots at 0 % may be absent). A traffic update is a long-running
    operation in Azure: until then, requests still follow the old split (or answer 404). With
    `record_when_applied`, the served ledger records the change then (`record_traffic`), not when asked;
    `bundles` (BundleRef dicts: the rollout's new bundle and the serving one) go with the record, so the
    ledger stores their ticker maps without asking the registry."""
    payload: dict[str, Any] = {"endpoint": endpoint, "traffic": traffic, "instance_id": instance_id}
    if record_when_applied:
        payload["record_when_applied"] = True
    deadline = _deadline(context, timeout)  # one budget for waiting out a busy endpoint and the update
    state = yield from endpoint_operation(context, "set_traffic", payload, endpoint, timeout)
    delay = DEPLOY_POLL_FIRST_S
    while not (state.get("state") == "Succeeded" and _live(state.get("traffic") or {}) == _live(traffic)):
        if state.get("state") in ("Failed", "Canceled", "NotFound"):
            raise WorkflowFailed(
                f"traffic update {traffic} of endpoint {endpoint} ended {state.get('state')}"
            )
        if context.current_utc_datetime >= deadline:
            raise WorkflowFailed(
                f"endpoint {endpoint} still {state.get('state')} with traffic {state.get('traffic')} "
                f"{timeout} after asking for {traffic}; raise RETRAIN_DEPLOY_TIMEOUT_MINUTES or look at it"
            )
        delay = yield from _backoff(context, delay, deadline)
        state = yield from call_activity(context, "get_endpoint", {"name": endpoint})
    if record_when_applied:
        record: dict[str, Any] = {"endpoint": endpoint, "traffic": traffic, "instance_id": instance_id}
        if bundles:
            record["bundles"] = bundles
        try:
            yield from call_activity(context, "record_traffic", record)
        except Exception as exc:  # noqa: BLE001 - the ledger is a record, never a reason to roll back
            warnings = _CYCLE_WARNINGS.get(context)
            if warnings is not None:
                warnings.append(f"{_lost_record('set_traffic')} ({_reason(exc)})")
    return state


def lineage_tags(
    *,
    ticker: str,
    data: dict[str, Any],
    job_name: str,
    instance_id: str,
    code_version: str,
    metrics: dict[str, Any],
    decision: dict[str, Any],
    trainer: str | None = None,
    model_family: str | None = None,
) -> dict[str, str]:
    """Registry tags that say where a model came from and why it was (not) deployed. All strings."""
    tags = {
        v.TAG_TICKER: ticker,
        v.TAG_DATA_ASSET: str(data.get("name")),
        v.TAG_DATA_VERSION: str(data.get("version")),
        v.TAG_JOB_NAME: job_name,
        v.TAG_INSTANCE_ID: instance_id,
        v.TAG_CODE_VERSION: code_version,
        v.TAG_GATE_DECISION: v.GATE_DEPLOY if decision.get("deploy") else v.GATE_REJECT,
        v.TAG_GATE_FORCED: str(bool(decision.get("forced"))).lower(),
        v.TAG_GATE_REASONS: "; ".join(str(r) for r in decision.get("reasons", []))[:1000],
    }
    if trainer:  # which trainer and model family produced it (champion and challenger may differ)
        tags[v.TAG_TRAINER] = str(trainer)
        tags[v.TAG_MODEL_FAMILY] = str(model_family or trainer)
    for key, value in sorted(metrics.items()):
        if isinstance(value, int | float):
            tags[f"{v.TAG_METRIC_PREFIX}{key}"] = f"{float(value):.6g}"
    return tags


class EndpointRun(Protocol):
    """What the endpoint steps below (`ensure_endpoint`, `deploy_to_idle_slot`, `roll_back`,
    `retire_old_slot`) use: a cycle's inline rollout (`_Cycle`) or an endpoint's rollout
    (`retrain.rollout`), so both follow the same deploy, rollback and retire rules."""

    context: df.DurableOrchestrationContext
    input: Any  # canary_percent, keep_old_slot, rollback_waits_for_old_slot, record_traffic_when_applied
    endpoint: str
    instance_id: str
    deploy_timeout: timedelta
    progress: Progress
    out: dict[str, Any]
    # The bundles a rollout deploys and replaces (BundleRef dicts), for the served ledger's records; a
    # cycle's inline rollout deploys a single model and has none.
    bundles: list[dict[str, Any]]

    def call(self, activity: str, payload: dict[str, Any]) -> Task: ...

    def set_traffic(self, traffic: dict[str, int]) -> Task: ...

    def step(self, name: str, **ids: Any) -> None: ...

    def note(self, **ids: Any) -> None: ...


class _Cycle:
    """One cycle's running state, shared by the step generators below: the replay-safe context, the
    input, the custom status and the summary that becomes the orchestration's output."""

    def __init__(self, context: df.DurableOrchestrationContext):
        self.context = context
        self.input = CycleInput.from_dict(context.get_input() or {})
        self.ticker = self.input.ticker
        self.instance_id = context.instance_id
        self.progress = Progress(context, self.ticker)
        _CYCLE_WARNINGS[context] = self.progress.status["warnings"]
        reason = {"trigger_reason": self.input.reason} if self.input.reason else {}
        self.progress.note(trigger=self.input.trigger, **reason)
        self.deploy_timeout = timedelta(minutes=self.input.deploy_timeout_minutes)
        # Every derived name, in the naming this cycle started with (a replay keeps its names).
        # The endpoint's suffix from the input; only an input from older code has none (read from the settings).
        self.names = naming.cycle_names(
            self.ticker, self.instance_id, self.input.naming_version, self.input.endpoint_suffix
        )
        # The endpoint that serves this ticker: its serving target (endpoint groups); an input from older
        # code has none and keeps the ticker's own endpoint.
        self.endpoint = self.input.serving_target or self.names.endpoint
        self.bundles: list[dict[str, Any]] = []  # a single model, no bundle (EndpointRun)
        self.out: dict[str, Any] = {
            "instance_id": self.instance_id,
            "ticker": self.ticker,
            "data_version": None,
            "job_name": None,
            "gate": None,
            "model_version": None,
            "scoring_uri": None,
        }

    def call(self, activity: str, payload: dict[str, Any]) -> Task:
        return (yield from call_activity(self.context, activity, payload))

    def set_traffic(self, traffic: dict[str, int]) -> Task:
        """`set_traffic_and_wait` on this cycle's endpoint, recorded as this orchestration's change."""
        return (
            yield from set_traffic_and_wait(
                self.context,
                self.endpoint,
                traffic,
                self.deploy_timeout,
                instance_id=self.instance_id,
                record_when_applied=self.input.record_traffic_when_applied,
            )
        )

    def step(self, name: str, **ids: Any) -> None:
        self.progress.step(name, **ids)

    def note(self, **ids: Any) -> None:
        self.progress.note(**ids)

    def result(self, status: str, **extra: Any) -> dict[str, Any]:
        self.progress.finish(status)
        return {
            **self.out,
            "status": status,
            "endpoint": self.endpoint,
            **extra,
            "timings_s": self.progress.timings(),
        }


def started_by_unguarded_code(context: df.DurableOrchestrationContext) -> bool:
    """Whether this orchestration was started by code from before the input check and the ticker guard:
    its history's first scheduled activity is another. Its replay then does what that code did (no new
    first activity, which the replay would find missing); every new orchestration is guarded. Read from
    the history, which a caller cannot write, never from the input, which a caller can."""
    from azure.durable_functions.models.history import HistoryEventType

    for event in getattr(context, "histories", None) or []:
        if event.event_type == HistoryEventType.TASK_SCHEDULED:
            return bool(event.Name != TICKER_GUARD_ACTIVITY)
    return False


def has_scheduled_work(context: df.DurableOrchestrationContext) -> bool:
    """Whether the history has scheduled an activity: False on an orchestration's first execution."""
    from azure.durable_functions.models.history import HistoryEventType

    return any(
        e.event_type == HistoryEventType.TASK_SCHEDULED for e in getattr(context, "histories", None) or []
    )


def lossy_names_without_version(context: df.DurableOrchestrationContext) -> str | None:
    """Why a NEW cycle is refused for lacking `naming_version`, or None. Without the field a cycle keeps
    the older, lossy names (so that one started by the code before them replays with its names); a fresh
    start through the Durable HTTP API could use that to share BRK-B's names as BRK.B. A first execution
    (no activity in the history) of a ticker whose names differ between the two namings must carry it."""
    data = context.get_input()
    if not isinstance(data, dict) or "naming_version" in data or has_scheduled_work(context):
        return None
    ticker, instance_id = data["ticker"], context.instance_id
    if naming.legacy_names(ticker, instance_id, "") == naming.cycle_names(
        ticker, instance_id, naming.NAMING_VERSION, ""
    ):
        return None
    return (
        f"naming_version is missing, and {ticker}'s names differ in the older naming: send "
        f"naming_version={naming.NAMING_VERSION} (POST /api/retrain and every starter of this app set it)"
    )


def _refuse_input(context: df.DurableOrchestrationContext, reason: str) -> WorkflowFailed:
    ticker = (context.get_input() or {}).get("ticker") if isinstance(context.get_input(), dict) else None
    progress = Progress(context, ticker if isinstance(ticker, str) else "?")
    progress.finish("failed", error=reason)
    return WorkflowFailed(reason)


def guard_ticker(run: _Cycle) -> Task:
    """One cycle per ticker, enforced here so that no entry point (HTTP, timer, monitor, a start through
    the Durable HTTP API) can run two at once: the activity lists the ticker's active cycles and names
    the earliest one created before this one; then this cycle ends at once, having touched nothing."""
    earlier = yield from run.call(
        TICKER_GUARD_ACTIVITY, {"ticker": run.ticker, "instance_id": run.instance_id}
    )
    if earlier:
        raise WorkflowFailed(
            f"ticker {run.ticker} is already being retrained by {earlier}; this cycle did nothing "
            "(wait for that one to finish, or terminate it, then start again)"
        )


def retrain_orchestrator(context: df.DurableOrchestrationContext) -> Task:
    """The cycle, step by step (see the module docstring); each step is a generator below.

    Legacy: registered only so that cycles started by older code replay and finish; every trigger now
    starts a fleet (a single ticker: a fleet of one, `cycle_start.start_fleet`)."""
    guarded = not started_by_unguarded_code(context)
    if guarded:
        try:
            validate_cycle_input(context.get_input())
        except InvalidCycleInput as exc:
            raise _refuse_input(context, f"invalid cycle input: {exc}; nothing was done") from None
        if (unversioned := lossy_names_without_version(context)) is not None:
            raise _refuse_input(context, f"invalid cycle input: {unversioned}; nothing was done")
    run = _Cycle(context)
    try:
        if guarded:
            yield from guard_ticker(run)
        fetched = yield from fetch_data(run)
        champion = yield from get_champion(run)
        code_version = yield from train_and_wait(run, fetched["data"], champion)
        decision, model = yield from gate_and_register(run, fetched["data"], champion, code_version)
        if not decision.get("deploy"):
            return run.result("rejected", warnings=run.progress.status["warnings"])
        if run.input.serving_target is not None:  # the endpoint's rollout takes it (retrain/rollout.py)
            outcome = yield from await_rollout(run, model, fetched["recent_closes"])
            return run.result("deployed", **outcome, warnings=run.progress.status["warnings"])
        endpoint = yield from ensure_endpoint(run)
        old_slot, new_slot = endpoint.serving_slot(), endpoint.idle_slot()
        run.note(
            endpoint=run.endpoint, scoring_uri=endpoint.scoring_uri, old_slot=old_slot, new_slot=new_slot
        )
        yield from deploy_to_idle_slot(run, endpoint, new_slot, model)
        yield from roll_out(run, model, old_slot, new_slot, fetched["recent_closes"])
        run.step("set_champion")
        yield from run.call("set_champion", {"model": model})
        if old_slot is not None:
            yield from retire_old_slot(run, old_slot)
    except Exception as exc:  # noqa: BLE001 - every failure ends the cycle with its reason in the status
        reason = str(exc) if isinstance(exc, WorkflowFailed) else _reason(exc)
        run.progress.finish("failed", error=reason)
        raise WorkflowFailed(reason) from None
    warnings = run.progress.status["warnings"]
    return run.result("deployed", slot=new_slot, old_slot=old_slot, warnings=warnings)


def await_rollout(run: _Cycle, model: dict[str, Any], closes: list[float]) -> Task:
    """Hand the accepted challenger to its endpoint's rollout and wait for its outcome.

    The custom status says `awaiting_rollout` (endpoint, ticker, model, closes for the smoke test): that is
    how the rollout finds it (`pending_rollouts`), so nothing is queued anywhere else. `request_rollout`
    starts the endpoint's rollout unless one runs. The outcome arrives as the `rollout_outcome` event; a
    timer asks again every `rollout_poll_minutes` (a rollout that ended just before this status was
    visible left it behind), within `ROLLOUT_WAIT_FACTOR` deploy timeouts. Returns the output's fields
    when deployed; raises (the cycle fails with the reason) when left out or rolled back."""
    run.step("await_rollout")
    endpoint = run.endpoint = str(run.input.serving_target)
    run.progress.status["awaiting_rollout"] = {
        "endpoint": endpoint,
        "ticker": run.ticker,
        "model": model,
        "closes": closes[-SMOKE_CLOSES_SENT:],
    }
    run.note(endpoint=endpoint)
    settings = {
        "endpoint": endpoint,
        "canary_percent": run.input.canary_percent,
        "smoke_max_latency_ms": run.input.smoke_max_latency_ms,
        "keep_old_slot": run.input.keep_old_slot,
        "deploy_timeout_minutes": run.input.deploy_timeout_minutes,
    }
    wait = run.deploy_timeout * ROLLOUT_WAIT_FACTOR
    deadline = _deadline(run.context, wait)
    poll = timedelta(minutes=run.input.rollout_poll_minutes)
    while True:
        asked = yield from run.call(REQUEST_ROLLOUT_ACTIVITY, {"rollout": settings})
        run.note(rollout=asked.get("instance_id"))
        now = run.context.current_utc_datetime
        if now >= deadline:
            raise WorkflowFailed(
                f"no rollout of endpoint {endpoint} took model {model['name']}:{model['version']} within "
                f"{wait} (the deploy timeout x {ROLLOUT_WAIT_FACTOR}); look at its rollout "
                f"{asked.get('instance_id')}; the champion keeps serving"
            )
        timer = run.context.create_timer(min(now + poll, deadline))
        event = run.context.wait_for_external_event(ROLLOUT_OUTCOME_EVENT)
        winner = yield run.context.task_any([event, timer])
        if winner != event:
            continue
        timer.cancel()
        outcome = event.result if isinstance(event.result, dict) else {}
        if (outcome.get("model") or {}).get("version") != model["version"]:
            continue  # about another challenger of this cycle's ticker: not ours
        break
    run.progress.status["awaiting_rollout"] = None
    run.note(rollout=outcome.get("rollout"), bundle_version=outcome.get("bundle_version"))
    run.progress.status["warnings"].extend(str(w) for w in outcome.get("warnings") or [])  # the rollout's
    if outcome.get("outcome") != "deployed":
        raise WorkflowFailed(
            f"{outcome.get('outcome', 'failed').replace('_', ' ')} by rollout {outcome.get('rollout')} of "
            f"endpoint {endpoint}: {outcome.get('reason')}"
        )
    run.out["scoring_uri"] = outcome.get("scoring_uri") or run.out["scoring_uri"]
    return {
        "bundle": outcome.get("bundle"),
        "bundle_version": outcome.get("bundle_version"),
        "rollout": outcome.get("rollout"),
        "slot": outcome.get("slot"),
        "old_slot": outcome.get("old_slot"),
    }


def fetch_data(run: _Cycle) -> Task:
    """Market data -> an immutable, content-versioned data asset."""
    run.step("fetch_data")
    payload = {
        "ticker": run.ticker,
        "source": run.input.source,
        "lookback_days": run.input.lookback_days,
        "as_of": run.input.as_of,
        "instance_id": run.instance_id,
    }
    if run.input.naming_version is not None:  # an older cycle's payload stays as that code sent it
        payload["asset_name"] = run.names.asset
    fetched = yield from run.call("fetch_data", payload)
    data = fetched["data"]
    run.out["data_version"] = data["version"]
    run.note(data_asset=data["name"], data_version=data["version"], rows=fetched.get("rows"))
    return fetched


def get_champion(run: _Cycle) -> Task:
    """The current champion: the trainer scores it on the same test window as the challenger."""
    run.step("get_champion")
    champion = yield from run.call("get_champion", {"model_name": run.names.model})
    run.note(champion_version=(champion or {}).get("version"))
    return champion


def train_and_wait(run: _Cycle, data: dict[str, Any], champion: dict[str, Any] | None) -> Task:
    """Submit the training job (named from the instance id, so a replayed submit is a no-op) and wait for
    it: the event, or a poll when the event is late or lost. Returns the code version it ran."""
    run.step("submit_training")
    job_name = run.out["job_name"] = run.names.job
    submitted = yield from run.call(
        "submit_training",
        {
            "job_name": job_name,
            "experiment_name": run.names.experiment,
            "ticker": run.ticker,
            "data": data,
            "instance_id": run.instance_id,
            "champion": champion,
            "hyperparameters": run.input.hyperparameters,
            "trainer": run.input.trainer,
        },
    )
    run.note(job_name=job_name, code_version=submitted["code_version"])
    run.step("wait_for_job")
    poll, timeout = timedelta(minutes=run.input.poll_minutes), timedelta(hours=run.input.job_timeout_hours)
    first = timedelta(seconds=run.input.job_first_poll_seconds) if run.input.job_first_poll_seconds else None
    job = yield from wait_for_job(run.context, job_name, poll, timeout, first)
    run.note(job_status=job["status"], job_signal=job["via"])
    if job["status"] != "Completed":
        raise WorkflowFailed(
            f"training job {job_name} ended {job['status']}: {job.get('error') or 'no error message'}; "
            "nothing was registered and the champion keeps serving"
        )
    return submitted["code_version"]


def gate_and_register(
    run: _Cycle, data: dict[str, Any], champion: dict[str, Any] | None, code_version: str
) -> Task:
    """Metrics -> quality gate (pure, so it runs in the orchestrator) -> the challenger registered with
    its lineage, deployed or not (a rejected one is the audit trail). Returns (decision, model)."""
    # Pure; imported here so a broken gate module fails only the cycle.
    from retrain.gate import GateMetrics, decide_with_test_errors
    from retrain.trainers import get_trainer  # the registry: pure data

    run.step("gate")
    job_name = run.out["job_name"]
    metrics = yield from run.call("get_job_metrics", {"job_name": job_name})
    # Per-day test forecasts: the gate tests whether the errors differ significantly (None: fixed margin).
    test_errors = yield from run.call("get_job_test_errors", {"job_name": job_name})
    if isinstance(test_errors, dict) and set(test_errors) == {TEST_ERRORS_UNREADABLE}:
        # Unreadable (401/403: a role not yet propagated, a storage firewall): judge with the fixed margins,
        # as a trainer without test_errors.json is judged, and say so, instead of failing the cycle.
        run.progress.status["warnings"].append(
            f"test_errors.json of job {job_name} could not be read ({test_errors[TEST_ERRORS_UNREADABLE]}); "
            "the gate used its fixed margins, without the significance test"
        )
        test_errors = None
    cycle = run.input
    decision = decide_with_test_errors(
        metrics,
        test_errors,
        has_champion=champion is not None,
        baseline_margin=cycle.baseline_margin,
        level=cycle.gate_alpha,
        force=cycle.force,
        names=GateMetrics.from_dict(cycle.gate_metrics),
        policy=cycle.gate_policy_of(),
    ).to_dict()
    run.out["gate"] = run.progress.status["decision"] = decision
    run.note(metrics=metrics)
    run.step("register_model")
    tags = lineage_tags(
        ticker=run.ticker,
        data=data,
        job_name=job_name,
        instance_id=run.instance_id,
        code_version=code_version,
        metrics=metrics,
        decision=decision,
        trainer=cycle.trainer,
        model_family=get_trainer(cycle.trainer).model_family,
    ) | {"trigger": cycle.trigger, "trigger_reason": (cycle.reason or "")[:1000]}
    payload = {"name": run.names.model, "job_name": job_name, "tags": tags}
    model = yield from run.call("register_model", payload)
    run.out["model_version"] = model["version"]
    run.note(model_name=model["name"], model_version=model["version"])
    return decision, model


def ensure_endpoint(run: EndpointRun) -> Task:
    """The endpoint, created once and then reused: its scoring URL is stable."""
    run.step("ensure_endpoint")
    ref = {"name": run.endpoint}
    first = yield from endpoint_operation(
        run.context, "begin_create_endpoint", ref, run.endpoint, run.deploy_timeout
    )
    state = yield from wait_for_provisioning(run.context, "get_endpoint", ref, first, run.deploy_timeout)
    endpoint = EndpointState.from_dict(state)
    if endpoint.state != "Succeeded":
        raise WorkflowFailed(f"endpoint {run.endpoint} is {endpoint.state}; the champion keeps serving")
    run.out["scoring_uri"] = endpoint.scoring_uri
    return endpoint


def deploy_to_idle_slot(run: EndpointRun, endpoint: EndpointState, slot: str, model: dict[str, Any]) -> Task:
    """The new model into the idle slot at 0 % traffic. A leftover there (a deployment that failed its
    first provisioning cannot be updated in Azure; a slot kept cold) is deleted first, and gone."""
    run.step("deploy")
    ref = {"endpoint": run.endpoint, "slot": slot}
    leftover = yield from run.call("get_deployment", ref)
    if leftover["state"] != "NotFound" and not endpoint.traffic.get(slot):
        yield from delete_deployment(run, slot)
        run.note(cleared=f"{slot} was {leftover['state']}")
    deployment: dict[str, Any] = {**ref, "model": model, "instance_id": run.instance_id}
    if run.bundles:
        deployment["bundles"] = run.bundles
    started = yield from endpoint_operation(
        run.context,
        "begin_deployment",
        deployment,
        run.endpoint,
        run.deploy_timeout,
    )
    deployed = yield from wait_for_provisioning(
        run.context, "get_deployment", ref, started, run.deploy_timeout
    )
    if deployed["state"] != "Succeeded":
        raise WorkflowFailed(
            f"deployment of {model['name']}:{model['version']} to slot {slot} ended "
            f"{deployed['state']}: {deployed.get('error')}; traffic unchanged, the champion keeps serving"
        )


def roll_out(
    run: _Cycle, model: dict[str, Any], old_slot: str | None, new_slot: str, closes: list[float]
) -> Task:
    """Smoke test the new slot directly, canary (with an old slot to compare against), smoke again, then
    all traffic; the first model goes 0 % -> smoke -> 100 % -> smoke through the live URL. Every traffic
    change waits until the platform serves it. Any failure rolls traffic back (`roll_back`)."""
    smoke = {"endpoint": run.endpoint, "closes": closes, "max_latency_ms": run.input.smoke_max_latency_ms}
    canary = run.input.canary_percent
    try:
        run.step("smoke_test")
        yield from _smoke(run.context, {**smoke, "slot": new_slot})
        if old_slot is not None and 0 < canary < 100:
            run.step("canary")
            split = {old_slot: 100 - canary, new_slot: canary}
            yield from run.set_traffic(split)
            run.note(traffic=split)
            run.step("smoke_test_canary")
            yield from _smoke(run.context, {**smoke, "slot": new_slot})
            yield from _smoke(run.context, {**smoke, "slot": None})
        run.step("promote")
        traffic = {new_slot: 100, **({old_slot: 0} if old_slot else {})}
        promoted = yield from run.set_traffic(traffic)
        run.out["scoring_uri"] = promoted.get("scoring_uri") or run.out["scoring_uri"]
        run.note(traffic=traffic)
        if old_slot is None:
            run.step("smoke_test_live")
            yield from _smoke(run.context, {**smoke, "slot": None})
    except Exception as exc:  # noqa: BLE001 - any failure after deploy rolls traffic back
        failed = f"rollout of {model['name']}:{model['version']} to slot {new_slot} failed ({_reason(exc)})"
        yield from roll_back(run, failed, old_slot, new_slot)


def roll_back(run: EndpointRun, failed: str, old_slot: str | None, new_slot: str) -> Task:
    """Traffic back where it was, but only onto a live slot: sending 100 % to an old slot that is not
    `Succeeded` (crashed, failed, gone) would fail every request. An old slot that is restarting (the
    platform heals a crashed one within seconds) is waited for, with durable timers within the deploy
    timeout; one that will not come back (Failed, gone) or does not within that time leaves the traffic
    as it is, and the cycle fails saying what serves. Always raises: the cycle failed."""
    run.step("rollback")
    if old_slot is None:
        target = {new_slot: 0}  # the first model: nothing served before, nothing serves now
        try:
            yield from run.set_traffic(target)
        except Exception as exc:  # noqa: BLE001 - report both: the operator must look
            raise WorkflowFailed(
                f"{failed} and the rollback to no slot failed too ({_reason(exc)}); check the endpoint's traffic"
            ) from None
        run.note(traffic=target)
        raise WorkflowFailed(
            f"{failed}; traffic is back on no slot: nothing serves (the endpoint had no model before), "
            f"unpinned requests answer 404 until a cycle deploys one; slot {new_slot} stays deployed at 0 % "
            "for a look (pin it with the azureml-model-deployment header); the champion is unchanged"
        )
    target = {old_slot: 100, new_slot: 0}
    waits = run.input.rollback_waits_for_old_slot
    deadline, delay = _deadline(run.context, run.deploy_timeout), DEPLOY_POLL_FIRST_S
    while True:
        old = yield from run.call("get_deployment", {"endpoint": run.endpoint, "slot": old_slot})
        restarting = old["state"] in PROVISIONING_IN_PROGRESS and old["state"] != "Deleting"
        if old["state"] == "Succeeded":
            try:
                yield from run.set_traffic(target)
            except Exception as exc:  # noqa: BLE001 - the old slot may have died again: look once more
                if waits and run.context.current_utc_datetime < deadline:
                    again = yield from run.call(
                        "get_deployment", {"endpoint": run.endpoint, "slot": old_slot}
                    )
                    if again["state"] in PROVISIONING_IN_PROGRESS and again["state"] != "Deleting":
                        delay = yield from _backoff(run.context, delay, deadline)
                        continue
                serving = yield from _serving(run)
                raise WorkflowFailed(
                    f"{failed} and the rollback to {old_slot} failed too ({_reason(exc)}); "
                    f"{serving['text']}: check the endpoint's traffic"
                ) from None
            run.note(traffic=target)
            raise WorkflowFailed(f"{failed}; traffic is back on {old_slot}, the champion is unchanged")
        if not (waits and restarting and run.context.current_utc_datetime < deadline):
            serving = yield from _serving(run)
            waited = f" after waiting {run.deploy_timeout} for it" if waits and restarting else ""
            raise WorkflowFailed(
                f"{failed}; the old slot {old_slot} is {old['state']}, not live{waited}, so traffic was not "
                f"moved to it and stays {serving['traffic']}: {serving['text']}; the champion is unchanged: "
                "look at the endpoint, or set its traffic (retrain traffic / POST /api/endpoints/{ticker}/traffic)"
            )
        delay = yield from _backoff(run.context, delay, deadline)


def _serving(run: EndpointRun) -> Task:
    """What the endpoint serves now, for a failure's reason: its traffic and each live slot's model."""
    now = yield from run.call("get_endpoint", {"name": run.endpoint})
    traffic = now.get("traffic") or {}
    run.note(traffic=traffic)
    deployments = now.get("deployments") or {}
    parts = []
    for slot, pct in sorted(traffic.items()):
        if int(pct) > 0:
            model = deployments.get(slot) or {}
            name = f"{model.get('name')}:{model.get('version')}" if model else "an unknown model"
            parts.append(f"{slot} {int(pct)}% ({name})")
    text = "serving " + (", ".join(parts) if parts else "nothing")
    return {"traffic": traffic, "text": text}


def retire_old_slot(run: EndpointRun, old_slot: str) -> Task:
    """Clean-up once the new champion serves: a failure here is a warning, not a rollback."""
    run.step("retire_old_slot")
    if run.input.keep_old_slot:
        run.note(retired=f"{old_slot} kept cold at 0%")
        return
    try:
        yield from delete_deployment(run, old_slot)
        run.note(retired=f"{old_slot} deleted")
    except Exception as exc:  # noqa: BLE001 - clean-up only: the rollout has finished
        run.progress.status["warnings"].append(f"could not delete old slot {old_slot}: {_reason(exc)}")


def delete_deployment(run: EndpointRun, slot: str) -> Task:
    """Delete a slot's deployment and wait until it is gone (`NotFound`), within the deploy timeout."""
    ref = {"endpoint": run.endpoint, "slot": slot}
    begun = yield from endpoint_operation(
        run.context,
        "begin_delete_deployment",
        {**ref, "instance_id": run.instance_id},
        run.endpoint,
        run.deploy_timeout,
    )
    yield from wait_for_provisioning(
        run.context, "get_deployment", ref, begun, run.deploy_timeout, until=DELETED
    )


def _smoke(context: df.DurableOrchestrationContext, payload: dict[str, Any]) -> Task:
    verdict = yield from call_activity(context, "smoke_test", payload)
    if not verdict.get("ok"):
        raise WorkflowFailed(
            f"smoke test on slot {payload.get('slot') or 'endpoint'}: {verdict.get('reason')}"
        )
    return verdict


def _reason(exc: BaseException) -> str:
    # Activity failures arrive as "Reason \n Details"; the first line is the useful part.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = [
    "CycleInput",
    "InvalidCycleInput",
    "JOB_FINISHED_EVENT",
    "TICKER_GUARD_ACTIVITY",
    "ORCHESTRATOR_NAME",
    "SLOTS",
    "WorkflowFailed",
    "call_activity",
    "retrain_orchestrator",
    "validate_cycle_input",
    "lineage_tags",
    "wait_for_job",
    "wait_for_provisioning",
]
