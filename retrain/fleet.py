"""The fleet cycle: one orchestration retrains many tickers, in batches, fanned out and in (issue 22).

    fleet_orchestrator (one per fleet cycle, id fleet-<stamp> or fleet-<isoyear>w<isoweek>)
      guard: tickers held by an active cycle or an EARLIER active fleet are skipped, with the holder's id
      batches of `batch_size` tickers -> one sub-orchestration each ("<fleet>-b0000", ...), at most
        `max_parallel_batches` in flight (a sliding window: the next starts as soon as one ends)
          fleet_batch_orchestrator:
            fetch_batch_data -> get_champions -> submit_batch_training (ONE job) -> wait_for_job
            -> judge_batch (the gate, per ticker) -> register_batch_models (lineage tags) -> its output
      fan in: the accepted challengers grouped by serving target; per endpoint the custom status says
        `awaiting_rollout` (endpoint, fleet, the batches holding its challengers) and `request_rollout`
        starts the endpoint's rollout (retrain/rollout.py), which answers with ONE `rollout_outcome` event
        per endpoint; a timer asks again (none is lost), as a single cycle's `workflow.await_rollout` does.
      output: every ticker's outcome (deployed / rejected / failed / skipped), endpoints, batches, counts.

Why sub-orchestrations: each batch's history (its activities, its job wait) stays in its own instance,
so the fleet's history grows by a few events per batch and per endpoint, not per ticker and poll
(Microsoft's guidance for large fan-outs); a batch replays alone; its output is what the rollout reads.

Deterministic like retrain/workflow.py: every effect is an activity or a sub-orchestration, time from the
context, configuration from the input (resolved when the fleet starts, `FleetInput.from_settings`). A
ticker's failure (its data, its fit, its gate, its registration, its smoke test) is its own: the others
go on. A fleet of one ticker goes the same way: it is what every single-ticker start runs (POST
`{"ticker"}`, Azure ML monitoring's breach, the per-ticker monitor, `retrain run --ticker`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from retrain import naming
from retrain import vocabulary as v
from retrain.cycle_guard import FLEET_GUARD_ACTIVITY
from retrain.progress import Progress
from retrain.settings import get, get_int
from retrain.workflow import (
    MAX_REASON_CHARS,
    REQUEST_ROLLOUT_ACTIVITY,
    RETRY,
    ROLLOUT_OUTCOME_EVENT,
    ROLLOUT_WAIT_FACTOR,
    SMOKE_CLOSES_SENT,
    ActivityFailed,
    CycleInput,
    InvalidCycleInput,
    WorkflowFailed,
    _reason,
    call_activity,
    lineage_tags,
    validate_cycle_input,
    wait_for_job,
)

FLEET_ORCHESTRATOR = "fleet_orchestrator"
BATCH_ORCHESTRATOR = "fleet_batch_orchestrator"
DEFAULT_BATCH_SIZE = 50  # RETRAIN_TRAINING_BATCH
DEFAULT_PARALLEL_BATCHES = 4  # RETRAIN_FLEET_PARALLEL_BATCHES
MAX_FLEET_TICKERS = 5000
MAX_BATCH_SIZE = 1000
MAX_PARALLEL_BATCHES = 32
# The batch ids of an endpoint's challengers travel in the fleet's custom status, which Azure caps at 16 KB
# of UTF-16 (8192 characters): at most this many batches, ~37 characters each.
MAX_FLEET_BATCHES = 100
STATUS_MAX_CHARS = 7500  # the custom status is kept under this (below Azure's 8192 characters)
AWAITING_BUDGET_CHARS = 4000  # endpoints awaiting their rollout at once: as many as fit in this
STATUS_WARNINGS = 5  # the custom status shows the last few warnings (the output has them all)

DEPLOYED, REJECTED, FAILED, SKIPPED, ACCEPTED = "deployed", "rejected", "failed", "skipped", "accepted"

Task = Generator[Any, Any, Any]


class InvalidFleetInput(ValueError):
    """A fleet input that breaks the edge's rules; the message names the field and what to send."""


@dataclass(frozen=True)
class FleetInput:
    """Everything a fleet cycle needs, fixed when it starts (a replay never reads a setting)."""

    tickers: list[str]  # canonical, unique, in the order asked
    cycle: dict[str, Any]  # a CycleInput dict: the shared settings (its ticker and serving_target unused)
    serving_targets: dict[str, str]  # ticker -> endpoint (RETRAIN_ENDPOINTS when the fleet started)
    batch_size: int = DEFAULT_BATCH_SIZE
    max_parallel_batches: int = DEFAULT_PARALLEL_BATCHES
    # ticker -> {"trigger", "reason"}: the monitor's breach of each ticker it retrains (the fleet's own
    # `cycle.trigger` and `cycle.reason` summarise them); its model's `trigger` and `trigger_reason` tags.
    breaches: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls,
        tickers: list[str],
        trigger: str,
        environ: Any = None,
        breaches: dict[str, dict[str, str]] | None = None,
        **cycle_overrides: Any,
    ) -> FleetInput:
        """The input of a fleet over `tickers` under the current settings (`CycleInput.from_settings` with
        `cycle_overrides`, the serving targets, the batch size and parallelism), validated. `breaches`: the
        monitor's trigger and reason per ticker (the fleet monitor, monitoring/fleet_monitor.py)."""
        from retrain.trainers import TrainerError

        canonical = canonical_tickers(tickers)
        try:
            first = CycleInput.from_settings(canonical[0], trigger, environ, **cycle_overrides)
            groups = naming.parse_endpoint_groups(get("RETRAIN_ENDPOINTS", environ))
            suffix = first.endpoint_suffix
            if suffix is None:  # an incomplete Azure configuration: say which settings
                suffix = naming.endpoint_suffix(environ)
            targets = {t: naming.serving_target(t, groups, suffix) for t in canonical}
        except (InvalidCycleInput, TrainerError, naming.NamingError) as exc:
            raise InvalidFleetInput(str(exc)) from None
        cycle = {k: val for k, val in first.to_dict().items() if k not in _PER_TICKER_FIELDS}
        fleet = cls(
            tickers=canonical,
            cycle=cycle,
            serving_targets=targets,
            batch_size=get_int("RETRAIN_TRAINING_BATCH", environ),
            max_parallel_batches=get_int("RETRAIN_FLEET_PARALLEL_BATCHES", environ),
            breaches=dict(breaches or {}),
        )
        return validate_fleet_input(fleet.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetInput:
        known = {f.name for f in fields(cls)}
        return cls(**{k: val for k, val in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ticker_cycle(self, ticker: str) -> CycleInput:
        """The CycleInput of one of the fleet's tickers (the shared settings, its ticker and endpoint)."""
        return CycleInput.from_dict(
            {**self.cycle, "ticker": ticker, "serving_target": self.serving_targets.get(ticker)}
        )

    def batches(self, tickers: list[str] | None = None) -> list[list[str]]:
        return plan_batches(self.tickers if tickers is None else tickers, self.batch_size)


# A CycleInput's fields that are per ticker in a fleet (from `tickers` and `serving_targets`).
_PER_TICKER_FIELDS = ("ticker", "serving_target")


def canonical_tickers(tickers: Any) -> list[str]:
    """The tickers validated, upper-cased, without repeats, in the order given (InvalidFleetInput else)."""
    if isinstance(tickers, str) or not isinstance(tickers, list | tuple):
        raise InvalidFleetInput(
            f'tickers={_shown(tickers)}: expected a list of ticker symbols, e.g. ["MSFT", "AAPL"]'
        )
    if not tickers:
        raise InvalidFleetInput('tickers is empty: send at least one ticker, e.g. ["MSFT"]')
    if len(tickers) > MAX_FLEET_TICKERS:
        raise InvalidFleetInput(
            f"tickers: {len(tickers)} tickers; a fleet takes at most {MAX_FLEET_TICKERS}: split it"
        )
    seen: dict[str, None] = {}
    for raw in tickers:
        try:
            seen.setdefault(naming.validate_ticker(raw), None)
        except naming.TickerError as exc:
            raise InvalidFleetInput(f"tickers: {exc}") from None
    return list(seen)


def plan_batches(tickers: list[str], batch_size: int) -> list[list[str]]:
    """The tickers cut into batches of `batch_size`, in order (the last one may be smaller)."""
    size = max(1, int(batch_size))
    return [tickers[i : i + size] for i in range(0, len(tickers), size)]


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validate_fleet_input(data: Any) -> FleetInput:
    """The fleet input checked with the edge's rules, or `InvalidFleetInput` naming the field and what to
    send. Pure (no settings, no files, no clock): the starters call it on the input they built, and
    `fleet_orchestrator` again on whatever it was started with (the Durable HTTP API can start it too)."""
    if not isinstance(data, dict):
        raise InvalidFleetInput(
            f"the fleet input must be a JSON object, not {type(data).__name__}; start fleets with "
            'POST /api/retrain {"tickers": ["MSFT", "AAPL"]}'
        )
    known = {f.name for f in fields(FleetInput)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        names = ", ".join(_shown(k, 40) for k in unknown[:5])
        raise InvalidFleetInput(f"unknown fleet input field(s) {names}; known: {', '.join(sorted(known))}")
    tickers = data.get("tickers")
    if canonical_tickers(tickers) != tickers:
        raise InvalidFleetInput(
            f"tickers={_shown(tickers)}: expected the canonical symbols, upper case, each once "
            f"({_shown(canonical_tickers(tickers))})"
        )
    assert isinstance(tickers, list)
    for name, low, high, what in (
        ("batch_size", 1, MAX_BATCH_SIZE, "tickers per training job (RETRAIN_TRAINING_BATCH)"),
        (
            "max_parallel_batches",
            1,
            MAX_PARALLEL_BATCHES,
            "batches in flight at once (RETRAIN_FLEET_PARALLEL_BATCHES)",
        ),
    ):
        value = data.get(name, getattr(FleetInput, name))
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidFleetInput(
                f"{name}={_shown(value)}: expected an integer from {low} to {high}, {what}"
            )
    batch_size = int(data.get("batch_size", DEFAULT_BATCH_SIZE))
    batches = math.ceil(len(tickers) / batch_size)
    if batches > MAX_FLEET_BATCHES:
        raise InvalidFleetInput(
            f"batch_size={batch_size}: {len(tickers)} tickers would make {batches} batches, more than "
            f"{MAX_FLEET_BATCHES}; raise RETRAIN_TRAINING_BATCH to at least "
            f"{math.ceil(len(tickers) / MAX_FLEET_BATCHES)} or split the fleet"
        )
    breaches = data.get("breaches", {})
    bad = _bad_breach(breaches, tickers)
    if bad:
        raise InvalidFleetInput(
            f"breaches{bad}: expected an object of the fleet's tickers, each "
            f'{{"trigger": one of {", ".join(BREACH_TRIGGERS)}, "reason": a text of at most {MAX_REASON_CHARS} '
            "characters} (the fleet monitor builds it)"
        )
    targets = data.get("serving_targets")
    if not isinstance(targets, dict) or set(targets) != set(tickers):
        missing = sorted(set(tickers) - set(targets)) if isinstance(targets, dict) else tickers
        raise InvalidFleetInput(
            f"serving_targets: expected an object with one endpoint per ticker (RETRAIN_ENDPOINTS decides "
            f"them), {'missing ' + _shown(missing) if missing else 'with no other key'}"
        )
    for ticker, endpoint in targets.items():
        if not (isinstance(endpoint, str) and naming.is_endpoint_name(endpoint)):
            raise InvalidFleetInput(
                f"serving_targets[{ticker}]={_shown(endpoint)}: expected an endpoint name (3 to 32 "
                "lower-case letters, digits and hyphens, a letter first)"
            )
    cycle = data.get("cycle")
    if not isinstance(cycle, dict):
        raise InvalidFleetInput(
            f"cycle={_shown(cycle)}: expected an object of the shared cycle settings "
            "(retrain.workflow.CycleInput's fields; FleetInput.from_settings builds it)"
        )
    if cycle.get("naming_version") != naming.NAMING_VERSION:
        raise InvalidFleetInput(
            f"cycle.naming_version={_shown(cycle.get('naming_version'))}: expected {naming.NAMING_VERSION} "
            "(a fleet always uses today's names)"
        )
    first = tickers[0]
    try:
        validate_cycle_input({**cycle, "ticker": first, "serving_target": targets[first]})
    except InvalidCycleInput as exc:
        raise InvalidFleetInput(f"cycle: {exc}") from None
    return FleetInput.from_dict(data)


BREACH_TRIGGERS = ("drift", "performance")


def _bad_breach(breaches: Any, tickers: list[str]) -> str | None:
    """Where `breaches` breaks its shape ("" for the whole, "[T]" for one ticker's), or None."""
    if not isinstance(breaches, dict):
        return f"={_shown(breaches)}"
    for ticker, breach in breaches.items():
        if (
            ticker not in tickers
            or not isinstance(breach, dict)
            or set(breach) != {"trigger", "reason"}
            or breach["trigger"] not in BREACH_TRIGGERS
            or not isinstance(breach["reason"], str)
            or len(breach["reason"]) > MAX_REASON_CHARS
        ):
            return f"[{_shown(ticker, 20)}]={_shown(breach)}"
    return None


# ------------------------------------------------------------------------------------- the batch


class _Batch:
    """One batch's running state: the input, the per-ticker outcomes and the custom status."""

    def __init__(self, context: df.DurableOrchestrationContext):
        self.context = context
        self.instance_id = context.instance_id
        data = context.get_input()
        parsed = naming.parse_batch_instance_id(self.instance_id)
        parent = getattr(context, "parent_instance_id", None)
        tickers = data.get("tickers") if isinstance(data, dict) else None
        targets = data.get("serving_targets") if isinstance(data, dict) else None
        if (
            parsed is None
            or not isinstance(data, dict)
            or data.get("fleet") != parsed[0]
            or parent != parsed[0]
            or not isinstance(tickers, list)
            or not tickers
            or not isinstance(data.get("cycle"), dict)
            or not isinstance(targets, dict)
        ):
            progress = Progress(context, "")
            progress.finish("failed", error="not a fleet's batch")
            raise WorkflowFailed(
                f"{self.instance_id}: a fleet batch runs only as its fleet's sub-orchestration "
                '("<fleet id>-b0000", started by fleet_orchestrator); start a fleet instead; nothing was done'
            )
        self.fleet: str = parsed[0]
        self.tickers: list[str] = [naming.validate_ticker(t) for t in tickers]
        self.targets: dict[str, str] = {t: str(targets.get(t)) for t in self.tickers}
        self.input = CycleInput.from_dict({**data["cycle"], "ticker": self.tickers[0]})
        breaches = data.get("breaches")
        self.breaches: dict[str, dict[str, str]] = breaches if isinstance(breaches, dict) else {}
        self.names = {
            t: naming.cycle_names(t, self.instance_id, naming.NAMING_VERSION, "") for t in self.tickers
        }
        self.job_name: str | None = None
        self.warnings: list[str] = []
        self.progress = Progress(context, "")
        status = self.progress.status
        del status["ticker"], status["decision"]
        status.update({"fleet": self.fleet, "batch": True, "tickers": len(self.tickers)})
        self.out: dict[str, dict[str, Any]] = {
            t: {
                "status": None,
                "model": None,
                "gate": None,
                "error": None,
                "data_version": None,
                "endpoint": self.targets[t],
            }
            for t in self.tickers
        }

    def call(self, activity: str, payload: dict[str, Any]) -> Task:
        return (yield from call_activity(self.context, activity, payload))

    def step(self, name: str, **ids: Any) -> None:
        self.progress.step(name, **ids)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.progress.status["warnings"] = _last_warnings(self.warnings)

    def fail(self, ticker: str, error: str) -> None:
        self.out[ticker].update(status=FAILED, error=str(error)[:2000])

    def open(self) -> list[str]:
        """The tickers without an outcome yet, in order."""
        return [t for t in self.tickers if self.out[t]["status"] is None]

    def result(self) -> dict[str, Any]:
        counts = {s: sum(o["status"] == s for o in self.out.values()) for s in (ACCEPTED, REJECTED, FAILED)}
        self.progress.finish("done", counts=counts)
        return {
            "batch": self.instance_id,
            "fleet": self.fleet,
            "job_name": self.job_name,
            "tickers": self.out,
            "counts": counts,
            "warnings": self.warnings,
            "timings_s": self.progress.timings(),
        }


def _last_warnings(warnings: list[str]) -> list[str]:
    shown = [w[:300] for w in warnings[-STATUS_WARNINGS:]]
    if len(warnings) > STATUS_WARNINGS:
        shown.insert(0, f"... {len(warnings) - STATUS_WARNINGS} more in the output")
    return shown


def fleet_batch_orchestrator(context: df.DurableOrchestrationContext) -> Task:
    """One batch of a fleet (see the module docstring). Never fails for a ticker's sake: its output names
    each ticker's outcome; a failure of the batch's own steps fails the tickers still open, with why."""
    batch = _Batch(context)
    try:
        yield from run_batch(batch)
    except Exception as exc:  # noqa: BLE001 - every ticker still open hears why; the fleet goes on
        reason = str(exc) if isinstance(exc, WorkflowFailed) else _reason(exc)
        for ticker in batch.open():
            batch.fail(ticker, reason)
    for ticker in batch.open():  # never a ticker without an outcome
        batch.fail(ticker, f"batch {batch.instance_id} reached no verdict for {ticker}")
    return batch.result()


def run_batch(batch: _Batch) -> Task:
    """fetch -> champions -> one training job -> wait -> judge -> register, each one activity per batch."""
    cycle = batch.input
    batch.step("fetch_batch_data")
    fetched = yield from batch.call(
        "fetch_batch_data",
        {
            "tickers": batch.tickers,
            "source": cycle.source,
            "lookback_days": cycle.lookback_days,
            "as_of": cycle.as_of,
            "instance_id": batch.instance_id,
            "asset_names": {t: batch.names[t].asset for t in batch.tickers},
        },
    )
    data = fetched.get("fetched") or {}
    for ticker in batch.tickers:
        if ticker in data:
            batch.out[ticker]["data_version"] = data[ticker]["data"]["version"]
        else:
            why = (fetched.get("failed") or {}).get(ticker) or "no data came back"
            batch.fail(ticker, f"data: {why}")
    going = batch.open()
    if not going:
        return
    batch.step("get_champions")
    champions = yield from batch.call(
        "get_champions", {"model_names": {t: batch.names[t].model for t in going}}
    )
    batch.step("submit_batch_training")
    job_name = batch.job_name = naming.job_name(batch.instance_id)
    submitted = yield from batch.call(
        "submit_batch_training",
        {
            "job_name": job_name,
            "experiment_name": naming.FLEET_EXPERIMENT,
            "instance_id": batch.instance_id,
            "trainer": cycle.trainer,
            "hyperparameters": cycle.hyperparameters,
            "entries": [{"ticker": t, "data": data[t]["data"], "champion": champions.get(t)} for t in going],
        },
    )
    batch.progress.note(job_name=job_name, code_version=submitted.get("code_version"))
    batch.step("wait_for_job")
    poll, timeout = timedelta(minutes=cycle.poll_minutes), timedelta(hours=cycle.job_timeout_hours)
    first = timedelta(seconds=cycle.job_first_poll_seconds) if cycle.job_first_poll_seconds else None
    job = yield from wait_for_job(batch.context, job_name, poll, timeout, first)
    batch.progress.note(job_status=job["status"], job_signal=job["via"])
    batch.step("judge_batch")
    gate = {
        "baseline_margin": cycle.baseline_margin,
        "gate_alpha": cycle.gate_alpha,
        "force": cycle.force,
        "gate_metrics": cycle.gate_metrics,
        "gate_policy": cycle.gate_policy,
        "gate_noninferiority_margin": cycle.gate_noninferiority_margin,
        "gate_baseline_rule": cycle.gate_baseline_rule,
    }
    payload = {"job_name": job_name, "tickers": {t: {"has_champion": bool(champions.get(t))} for t in going}}
    ended = f"training job {job_name} ended {job['status']}: {job.get('error') or 'no error message'}"
    if job["status"] != "Completed":
        # Nothing of a job that did not complete is registered; its summary may still say why per ticker.
        try:
            judged = yield from batch.call("judge_batch", {**payload, "gate": gate})
        except ActivityFailed:
            judged = {}
        for ticker in going:
            own = (
                (judged.get(ticker) or {}).get("error")
                if judged.get(ticker, {}).get("status") == FAILED
                else None
            )
            batch.fail(ticker, f"{own} ({ended})" if own else f"{ended}; nothing was registered")
        return
    judged = yield from batch.call("judge_batch", {**payload, "gate": gate})
    yield from register(batch, going, data, judged, str(submitted.get("code_version")))


def register(
    batch: _Batch, going: list[str], data: dict[str, Any], judged: dict[str, Any], code_version: str
) -> Task:
    """Every judged ticker's model, registered with its lineage (rejected ones too: the audit trail)."""
    from retrain.trainers import get_trainer  # the registry: pure data

    cycle = batch.input
    family = get_trainer(cycle.trainer).model_family
    batch.step("register_batch_models")
    models: dict[str, Any] = {}
    for ticker in going:
        verdict = judged.get(ticker) or {}
        if verdict.get("status") != "ok":
            batch.fail(ticker, str(verdict.get("error") or f"the batch job reported nothing for {ticker}"))
            continue
        for warning in verdict.get("warnings") or []:
            batch.warn(str(warning))
        tags = lineage_tags(
            ticker=ticker,
            data=data[ticker]["data"],
            job_name=str(batch.job_name),
            instance_id=batch.instance_id,
            code_version=code_version,
            metrics=verdict.get("metrics") or {},
            decision=verdict["decision"],
            trainer=cycle.trainer,
            model_family=family,
        ) | {
            # The monitor's breach of this ticker when a fleet monitor started the fleet, else the fleet's.
            "trigger": batch.breaches.get(ticker, {}).get("trigger") or cycle.trigger,
            "trigger_reason": (batch.breaches.get(ticker, {}).get("reason") or cycle.reason or "")[:1000],
            v.TAG_FLEET: batch.fleet,
            v.TAG_BATCH: batch.instance_id,
        }
        models[ticker] = {"name": batch.names[ticker].model, "tags": tags}
    if not models:
        return
    registered = yield from batch.call(
        "register_batch_models", {"job_name": batch.job_name, "models": models}
    )
    for ticker in models:
        model = registered.get(ticker) or {}
        if "version" not in model:
            batch.fail(ticker, str(model.get("error") or f"{ticker}'s model was not registered"))
            continue
        decision = judged[ticker]["decision"]
        deploy = bool(decision.get("deploy"))
        batch.out[ticker].update(
            status=ACCEPTED if deploy else REJECTED,
            model={"name": model["name"], "version": str(model["version"]), "tags": model.get("tags") or {}},
            gate={"deploy": deploy, "reasons": list(decision.get("reasons") or [])},
        )
        if deploy:  # the rollout's smoke test scores these
            batch.out[ticker]["closes"] = list(data[ticker].get("recent_closes") or [])[-SMOKE_CLOSES_SENT:]


# ------------------------------------------------------------------------------------- the fleet


class _Fleet:
    """The fleet's running state: input, per-ticker outcomes, batches, and the custom status."""

    def __init__(self, context: df.DurableOrchestrationContext, fleet: FleetInput):
        self.context = context
        self.input = fleet
        self.instance_id = context.instance_id
        self.cycle = fleet.ticker_cycle(fleet.tickers[0])
        self.deploy_timeout = timedelta(minutes=self.cycle.deploy_timeout_minutes)
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.accepted: dict[str, dict[str, Any]] = {}  # ticker -> the batch output's entry, with its batch
        self.gate_accepted = 0  # tickers whose gate accepted their challenger
        self.batches: list[dict[str, Any] | None] = []
        self.endpoints: dict[str, str | None] = {}
        self.warnings: list[str] = []
        self.progress = _fleet_progress(context, fleet)

    def call(self, activity: str, payload: dict[str, Any]) -> Task:
        return (yield from call_activity(self.context, activity, payload))

    def step(self, name: str) -> None:
        self.progress.step(name)
        self.publish()

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def outcome(self, ticker: str, status: str, **fields_: Any) -> None:
        self.outcomes[ticker] = {
            "status": status,
            "model_version": None,
            "gate": None,
            "error": None,
            "endpoint": self.input.serving_targets.get(ticker),
            **fields_,
        }

    def counts(self) -> dict[str, int]:
        """How many tickers are deployed, rejected, failed, skipped; `accepted`: passed their gate (deployed,
        awaiting their rollout, or failed in it)."""
        counts = {s: 0 for s in (ACCEPTED, DEPLOYED, REJECTED, FAILED, SKIPPED)}
        for outcome in self.outcomes.values():
            counts[outcome["status"]] += 1
        counts[ACCEPTED] = self.gate_accepted
        return counts

    def publish(self, awaiting: list[dict[str, Any]] | None = None) -> None:
        """The custom status, kept under Azure's cap (`STATUS_MAX_CHARS`): counts, never per-ticker lists."""
        status = self.progress.status
        if awaiting is not None:
            status["awaiting_rollout"] = awaiting
        status["counts"] = self.counts()
        status["batches_done"] = sum(b is not None for b in self.batches)
        status["warnings"] = _last_warnings(self.warnings)
        while len(json.dumps(status)) > STATUS_MAX_CHARS and status["warnings"]:
            status["warnings"] = status["warnings"][1:]
        self.context.set_custom_status(status)

    def result(self) -> dict[str, Any]:
        missing = [t for t in self.input.tickers if t not in self.outcomes]
        status = "completed" if not missing else FAILED
        self.progress.status["awaiting_rollout"] = []
        self.publish()
        self.progress.finish("done" if not missing else FAILED)
        return {
            "instance_id": self.instance_id,
            "status": status,
            "tickers": {t: self.outcomes.get(t) for t in self.input.tickers},
            "endpoints": dict(sorted(self.endpoints.items())),
            "batches": [b for b in self.batches if b is not None],
            "counts": self.counts(),
            "timings_s": self.progress.timings(),
            "elapsed_s": self.progress.status["seconds"],
            "warnings": list(self.warnings),
        }


def _fleet_progress(context: df.DurableOrchestrationContext, fleet: FleetInput | None) -> Progress:
    progress = Progress(context, "")
    status = progress.status
    del status["ticker"], status["decision"]
    tickers = len(fleet.tickers) if fleet else 0
    batches = len(fleet.batches()) if fleet else 0
    status.update(
        {
            "fleet": True,
            "tickers": tickers,
            "skipped": 0,
            "batches": batches,
            "batches_done": 0,
            "counts": {},
            "awaiting_rollout": [],
        }
    )
    return progress


def fleet_orchestrator(context: df.DurableOrchestrationContext) -> Task:
    """The fleet cycle, step by step (see the module docstring)."""
    try:
        if naming.parse_fleet_instance_id(context.instance_id) is None:
            raise InvalidFleetInput(
                f"instance id {context.instance_id!r}: a fleet's id looks like fleet-2026w49 (timer) or "
                "fleet-20261206t101500123456z (naming.fleet_instance_id)"
            )
        fleet = validate_fleet_input(context.get_input())
    except InvalidFleetInput as exc:
        reason = f"invalid fleet input: {exc}; nothing was done"
        _fleet_progress(context, None).finish(FAILED, error=reason)
        raise WorkflowFailed(reason) from None
    run = _Fleet(context, fleet)
    try:
        run.step("guard")
        busy = yield from run.call(
            FLEET_GUARD_ACTIVITY, {"tickers": fleet.tickers, "instance_id": run.instance_id}
        )
        for ticker, holder in sorted((busy or {}).items()):
            run.outcome(
                ticker,
                SKIPPED,
                held_by=holder,
                error=f"{ticker} is already being retrained by {holder}; skipped by this fleet",
            )
        run.progress.status["skipped"] = len(run.outcomes)
        going = [t for t in fleet.tickers if t not in run.outcomes]
        groups = fleet.batches(going)
        run.progress.status["batches"] = len(groups)
        run.batches = [None] * len(groups)
        if groups:
            yield from run_batches(run, groups)
        if run.accepted:
            yield from await_rollouts(run)
    except Exception as exc:  # noqa: BLE001 - the fleet's own step failed: its status says why
        reason = str(exc) if isinstance(exc, WorkflowFailed) else _reason(exc)
        run.progress.finish(FAILED, error=reason)
        raise WorkflowFailed(reason) from None
    return run.result()


def run_batches(run: _Fleet, groups: list[list[str]]) -> Task:
    """One sub-orchestration per batch, at most `max_parallel_batches` in flight: a sliding window (the
    next batch starts as soon as any one ends, not when a whole window has)."""
    run.step("batches")
    context, cycle = run.context, {k: val for k, val in run.input.cycle.items()}
    waiting = list(range(len(groups)))
    running: list[tuple[Any, int]] = []
    while waiting or running:
        while waiting and len(running) < run.input.max_parallel_batches:
            index = waiting.pop(0)
            tickers = groups[index]
            batch_input = {
                "fleet": run.instance_id,
                "tickers": tickers,
                "cycle": cycle,
                "serving_targets": {t: run.input.serving_targets[t] for t in tickers},
            }
            breaches = {t: run.input.breaches[t] for t in tickers if t in run.input.breaches}
            if breaches:  # only then: a batch input of a fleet without breaches stays as it was
                batch_input["breaches"] = breaches
            batch_id = naming.batch_instance_id(run.instance_id, index)
            running.append((context.call_sub_orchestrator(BATCH_ORCHESTRATOR, batch_input, batch_id), index))
        done = yield context.task_any([task for task, _ in running])
        finished = next(entry for entry in running if entry[0] is done)
        running.remove(finished)
        index = finished[1]
        record_batch(run, index, groups[index], done.result)
        run.publish()


def record_batch(run: _Fleet, index: int, tickers: list[str], output: Any) -> None:
    """A batch's output into the fleet's outcomes; a batch that failed as a whole fails its tickers."""
    batch_id = naming.batch_instance_id(run.instance_id, index)
    if isinstance(output, BaseException) or not isinstance(output, dict):
        reason = (
            f"batch {batch_id} failed: {_reason(output) if isinstance(output, BaseException) else output!r}"
        )
        for ticker in tickers:
            run.outcome(ticker, FAILED, error=reason, batch=batch_id)
        run.batches[index] = {"batch": batch_id, "tickers": len(tickers), "job_name": None, "status": FAILED}
        run.warn(reason[:500])
        return
    reported = output.get("tickers") or {}
    for warning in output.get("warnings") or []:
        run.warn(str(warning))
    for ticker in tickers:
        entry = reported.get(ticker) or {}
        gate = entry.get("gate") or {}
        model = entry.get("model") or {}
        common = {
            "batch": batch_id,
            "model_version": model.get("version"),
            "gate": gate.get("reasons"),
            "data_version": entry.get("data_version"),
        }
        if entry.get("status") == ACCEPTED:
            run.gate_accepted += 1
            run.accepted[ticker] = {**entry, "batch": batch_id, "endpoint": run.input.serving_targets[ticker]}
        elif entry.get("status") == REJECTED:
            run.outcome(ticker, REJECTED, **common)
        else:
            error = entry.get("error") or f"batch {batch_id} reported nothing for {ticker}"
            run.outcome(ticker, FAILED, **{**common, "error": error})
    run.batches[index] = {
        "batch": batch_id,
        "tickers": len(tickers),
        "job_name": output.get("job_name"),
        "status": "completed",
        "counts": output.get("counts"),
        "timings_s": output.get("timings_s"),
    }


def awaiting_entry(fleet_id: str, endpoint: str, batches: list[str]) -> dict[str, Any]:
    """The fleet form of `awaiting_rollout`: what `activities.pending_rollouts` reads (the batches' outputs
    hold the challengers, their models and closes; the status itself stays small)."""
    return {"endpoint": endpoint, "fleet": fleet_id, "batches": batches}


def await_rollouts(run: _Fleet) -> Task:
    """Fan in: each endpoint's accepted challengers go out through its rollout (retrain/rollout.py).

    The custom status lists the endpoints awaiting their rollout (as many at once as fit the status's
    budget; the next when one is answered), `request_rollout` asks for each one's rollout, and one
    `rollout_outcome` event per endpoint brings every ticker's outcome. A timer asks again every
    `rollout_poll_minutes` (a rollout that was ending when this status became visible missed it), within
    `ROLLOUT_WAIT_FACTOR` deploy timeouts per endpoint, as a single cycle's `workflow.await_rollout`.
    The event waiters stay open from one wait to the next (the Python SDK keeps at most one event of a name
    that arrives while nothing waits for it), one per endpoint awaited."""
    context = run.context
    groups: dict[str, list[str]] = {}
    for ticker in sorted(run.accepted):
        groups.setdefault(run.accepted[ticker]["endpoint"], []).append(ticker)
    queue = sorted(groups)
    window: dict[str, dict[str, Any]] = {}
    waiters: list[Any] = []
    wait = run.deploy_timeout * ROLLOUT_WAIT_FACTOR
    poll = timedelta(minutes=run.cycle.rollout_poll_minutes)
    settings = {
        "canary_percent": run.cycle.canary_percent,
        "smoke_max_latency_ms": run.cycle.smoke_max_latency_ms,
        "keep_old_slot": run.cycle.keep_old_slot,
        "deploy_timeout_minutes": run.cycle.deploy_timeout_minutes,
    }
    run.step("await_rollout")
    ask: list[str] = []
    while queue or window:
        while queue:  # admit endpoints while the status has room (always one)
            endpoint = queue[0]
            batches = sorted({run.accepted[t]["batch"] for t in groups[endpoint]})
            entry = awaiting_entry(run.instance_id, endpoint, batches)
            entries = [w["entry"] for w in window.values()]
            if window and len(json.dumps([*entries, entry])) > AWAITING_BUDGET_CHARS:
                break
            queue.pop(0)
            window[endpoint] = {
                "entry": entry,
                "deadline": context.current_utc_datetime + wait,
                "rollout": None,
            }
            ask.append(endpoint)
        run.publish([w["entry"] for w in window.values()])
        while len(waiters) < len(window):
            waiters.append(context.wait_for_external_event(ROLLOUT_OUTCOME_EVENT))
        if ask:
            yield from request_rollouts(run, sorted(set(ask)), settings, window)
            ask = []
        now = context.current_utc_datetime
        expired = sorted(e for e, w in window.items() if now >= w["deadline"])
        for endpoint in expired:
            reason = (
                f"no rollout of endpoint {endpoint} took this fleet's challengers within {wait} (the deploy "
                f"timeout x {ROLLOUT_WAIT_FACTOR}); look at its rollout {window[endpoint]['rollout']}; the "
                "champion keeps serving"
            )
            for ticker in groups[endpoint]:
                _settle(run, ticker, FAILED, error=reason)
            del window[endpoint]
        if expired:
            continue
        deadline = min(w["deadline"] for w in window.values())
        timer = context.create_timer(min(now + poll, deadline))
        winner = yield context.task_any([*waiters, timer])
        if winner is timer:
            ask = sorted(window)  # ask again
            continue
        timer.cancel()
        waiters.remove(winner)
        event = winner.result if isinstance(winner.result, dict) else {}
        answered = str(event.get("endpoint"))
        if event.get("fleet") != run.instance_id or answered not in window:
            continue  # a stale or foreign answer (an endpoint already answered): not awaited
        apply_outcomes(run, answered, groups[answered], event.get("outcomes") or [])
        del window[answered]
    run.publish([])


def request_rollouts(
    run: _Fleet, endpoints: list[str], settings: dict[str, Any], window: dict[str, dict[str, Any]]
) -> Task:
    """`request_rollout` for each endpoint at once (a fan-out of activities). A request that fails is a
    warning: the timer asks again."""
    from retrain.activities import ACTIVITY_ERROR

    tasks = [
        run.context.call_activity_with_retry(
            REQUEST_ROLLOUT_ACTIVITY, RETRY, {"rollout": {**settings, "endpoint": e}}
        )
        for e in endpoints
    ]
    try:
        answers = yield run.context.task_all(tasks)
    except Exception as exc:  # noqa: BLE001 - retries spent on a transient failure: ask again on the timer
        run.warn(f"request_rollout failed ({_reason(exc)}); asked again on the timer")
        return
    for endpoint, answer in zip(endpoints, answers, strict=True):
        failure = answer.get(ACTIVITY_ERROR) if isinstance(answer, dict) else None
        if isinstance(failure, dict):
            run.warn(f"request_rollout of {endpoint} failed: {failure.get('message')}")
        elif isinstance(answer, dict):
            window[endpoint]["rollout"] = answer.get("instance_id")


def _settle(run: _Fleet, ticker: str, status: str, **fields_: Any) -> None:
    """An accepted challenger's final outcome (deployed or failed)."""
    entry = run.accepted.pop(ticker)
    model = entry.get("model") or {}
    run.outcome(
        ticker,
        status,
        model_version=model.get("version"),
        gate=(entry.get("gate") or {}).get("reasons"),
        batch=entry.get("batch"),
        data_version=entry.get("data_version"),
        **fields_,
    )


def apply_outcomes(run: _Fleet, endpoint: str, tickers: list[str], outcomes: list[dict[str, Any]]) -> None:
    """One endpoint's rollout outcomes (the event) onto its tickers: deployed, or failed with why."""
    by_ticker = {str(o.get("ticker")): o for o in outcomes if isinstance(o, dict)}
    for outcome in outcomes:
        for warning in (outcome or {}).get("warnings") or []:
            run.warn(str(warning))
    for ticker in tickers:
        mine = run.accepted[ticker]["model"]
        found = by_ticker.get(ticker)
        if found is None or str((found.get("model") or {}).get("version")) != str(mine.get("version")):
            _settle(
                run,
                ticker,
                FAILED,
                error=f"the rollout of endpoint {endpoint} answered without {ticker}'s model "
                f"{mine.get('name')}:{mine.get('version')}; the champion keeps serving",
            )
            continue
        if found.get("outcome") == DEPLOYED:
            if found.get("scoring_uri"):
                run.endpoints[endpoint] = found["scoring_uri"]
            _settle(
                run,
                ticker,
                DEPLOYED,
                bundle=found.get("bundle"),
                bundle_version=found.get("bundle_version"),
                rollout=found.get("rollout"),
                # the slot that now serves the bundle, and the one it took over from (None: the first)
                slot=found.get("slot"),
                old_slot=found.get("old_slot"),
            )
        else:
            what = str(found.get("outcome") or FAILED).replace("_", " ")
            _settle(
                run,
                ticker,
                FAILED,
                rollout=found.get("rollout"),
                error=f"{what} by rollout {found.get('rollout')} of endpoint {endpoint}: {found.get('reason')}",
            )
    run.endpoints.setdefault(endpoint, None)


__all__ = [
    "BATCH_ORCHESTRATOR",
    "FLEET_ORCHESTRATOR",
    "FleetInput",
    "InvalidFleetInput",
    "awaiting_entry",
    "canonical_tickers",
    "fleet_batch_orchestrator",
    "fleet_orchestrator",
    "plan_batches",
    "validate_fleet_input",
]
