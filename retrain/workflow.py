"""The retraining orchestrator: one durable orchestration per ticker and cycle.

It reads like the diagram in DESIGN.md and is deterministic: no I/O (every effect is an activity),
time only from ``context.current_utc_datetime``, configuration only from the orchestration input
(resolved from the settings by the trigger that started it, so a replay never sees a changed setting).

    fetch data -> register data asset -> champion? -> submit training
    -> wait: "job_finished" event raced against a timer; on the timer poll the job (events can be lost)
    -> metrics -> gate -> register model (lineage tags)
    -> [gate says deploy] endpoint -> idle slot at 0 % -> smoke -> canary % -> smoke -> 100 %
       -> champion -> retire the old slot
    any failure after the new slot exists: traffic back to the old slot, the champion keeps serving.

Decisions worth knowing:
- A rejected challenger is still registered (tag ``gate_decision=reject``, never the champion), so
  the registry keeps an audit trail of every trained model and why it did not ship. A failed job
  registers nothing.
- The first model (no slot serving yet) goes 0 % -> smoke -> 100 %: a canary needs an old slot.
- Retiring the old slot is clean-up: the new champion already serves, so a failure there is reported
  as a warning in the output instead of failing (and rolling back) a finished rollout.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from retrain import naming
from retrain.ports import JOB_TERMINAL_STATUSES, SLOTS, EndpointState, JobStatus
from retrain.settings import get, get_bool, get_float, get_int

ORCHESTRATOR_NAME = "retrain_orchestrator"
JOB_FINISHED_EVENT = "job_finished"

# Durable timers cannot be longer than 6 days (Azure Storage backend); longer waits loop.
MAX_TIMER = timedelta(days=6)
# Deployments and endpoints are polled with a capped exponential back-off (deterministic).
DEPLOY_POLL_FIRST_S = 1.0
DEPLOY_POLL_MAX_S = 30.0

# Transient platform failures (network, throttling) are retried; a verdict (smoke test, gate, job
# status) is a return value, never an exception, so it is not retried.
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
    canary_percent: int = 10
    smoke_max_latency_ms: float = 2000.0
    keep_old_slot: bool = False
    deploy_timeout_minutes: float = 60.0
    trigger: str = "http"  # timer or http

    @classmethod
    def from_settings(cls, ticker: str, trigger: str, environ: Any = None, **overrides: Any) -> CycleInput:
        from retrain.gate import GateMetrics
        from retrain.trainers import default_hyperparameters, get_trainer

        trainer = get_trainer(overrides.pop("trainer", None) or get("RETRAIN_TRAINER", environ))
        hyperparameters = {
            **default_hyperparameters(trainer, environ),
            **(overrides.pop("hyperparameters", None) or {}),
        }
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
            "canary_percent": get_int("RETRAIN_CANARY_PERCENT", environ),
            "smoke_max_latency_ms": get_float("RETRAIN_SMOKE_MAX_LATENCY_MS", environ),
            "keep_old_slot": get_bool("RETRAIN_KEEP_OLD_SLOT", environ),
            "deploy_timeout_minutes": get_float("RETRAIN_DEPLOY_TIMEOUT_MINUTES", environ),
            "trigger": trigger,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CycleInput:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class Progress:
    """The custom status: current step, per-step times (from the replay-safe clock) and ids."""

    def __init__(self, context: df.DurableOrchestrationContext, ticker: str):
        self._context = context
        self.started = context.current_utc_datetime
        self.status: dict[str, Any] = {
            "instance_id": context.instance_id,
            "ticker": ticker,
            "step": None,
            "started": _iso(self.started),
            "steps": [],
            "ids": {},
            "decision": None,
            "warnings": [],
        }

    def _close_current(self) -> None:
        steps = self.status["steps"]
        if steps and steps[-1].get("seconds") is None:
            begun = datetime.fromisoformat(steps[-1]["started"].replace("Z", "+00:00"))
            steps[-1]["seconds"] = round((self._context.current_utc_datetime - begun).total_seconds(), 3)

    def step(self, name: str, **ids: Any) -> None:
        self._close_current()
        self.status["step"] = name
        self.status["steps"].append(
            {"step": name, "started": _iso(self._context.current_utc_datetime), "seconds": None}
        )
        self.note(**ids)

    def note(self, **ids: Any) -> None:
        self.status["ids"].update({k: v for k, v in ids.items() if v is not None})
        self._context.set_custom_status(self.status)

    def finish(self, outcome: str, **extra: Any) -> None:
        self._close_current()
        self.status["step"] = outcome
        self.status.update(extra)
        self.status["seconds"] = round((self._context.current_utc_datetime - self.started).total_seconds(), 3)
        self._context.set_custom_status(self.status)

    def timings(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for s in self.status["steps"]:
            totals[s["step"]] = round(totals.get(s["step"], 0.0) + (s["seconds"] or 0.0), 3)
        return totals


Task = Generator[Any, Any, Any]


def _call(context: df.DurableOrchestrationContext, activity: str, payload: dict[str, Any]) -> Task:
    return (yield context.call_activity_with_retry(activity, RETRY, payload))


def wait_for_job(
    context: df.DurableOrchestrationContext, job_name: str, poll: timedelta, timeout: timedelta
) -> Task:
    """The job's terminal status: the "job_finished" event raced against a poll timer. Events can be
    lost (or never configured), so every timer tick asks the platform directly."""
    deadline = context.current_utc_datetime + timeout
    poll = min(max(poll, timedelta(seconds=1)), MAX_TIMER)
    polls = 0
    while True:
        now = context.current_utc_datetime
        if now >= deadline:
            raise WorkflowFailed(
                f"training job {job_name} did not finish within {timeout}; "
                "raise RETRAIN_JOB_TIMEOUT_HOURS or look at the job in the platform"
            )
        timer = context.create_timer(min(now + poll, deadline))
        event = context.wait_for_external_event(JOB_FINISHED_EVENT)
        winner = yield context.task_any([event, timer])
        if winner == event:
            timer.cancel()
            outcome = event.result if isinstance(event.result, dict) else {}
            # Only our job's terminal status ends the wait; anything else (a stray or early event) waits on.
            if outcome.get("job_name") in (None, job_name) and outcome.get("status") in JOB_TERMINAL_STATUSES:
                return {
                    **JobStatus(
                        job_name=job_name, status=outcome["status"], error=outcome.get("error")
                    ).to_dict(),
                    "via": "event",
                    "polls": polls,
                }
            continue
        polls += 1
        status = JobStatus.from_dict((yield from _call(context, "get_job_status", {"job_name": job_name})))
        if status.terminal:
            return {**status.to_dict(), "via": "poll", "polls": polls}


def wait_for_provisioning(
    context: df.DurableOrchestrationContext,
    activity: str,
    payload: dict[str, Any],
    first: dict[str, Any],
    timeout: timedelta,
    key: str = "state",
) -> Task:
    """Poll a long Azure operation (endpoint or deployment) with durable timers until it is terminal."""
    state = first
    deadline = context.current_utc_datetime + timeout
    delay = DEPLOY_POLL_FIRST_S
    while state.get(key) not in ("Succeeded", "Failed", "Canceled", "NotFound"):
        now = context.current_utc_datetime
        if now >= deadline:
            raise WorkflowFailed(
                f"{activity} {payload} still {state.get(key)} after {timeout}; "
                "raise RETRAIN_DEPLOY_TIMEOUT_MINUTES or look at it in the platform"
            )
        yield context.create_timer(min(now + timedelta(seconds=delay), deadline))
        delay = min(delay * 2, DEPLOY_POLL_MAX_S)
        state = yield from _call(context, activity, payload)
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
        "ticker": ticker,
        "data_asset": str(data.get("name")),
        "data_version": str(data.get("version")),
        "job_name": job_name,
        "orchestration_instance_id": instance_id,
        "code_version": code_version,
        "gate_decision": "deploy" if decision.get("deploy") else "reject",
        "gate_forced": str(bool(decision.get("forced"))).lower(),
        "gate_reasons": "; ".join(str(r) for r in decision.get("reasons", []))[:1000],
    }
    if trainer:  # which trainer and model family produced it (champion and challenger may differ)
        tags["trainer"] = str(trainer)
        tags["model_family"] = str(model_family or trainer)
    for key, value in sorted(metrics.items()):
        if isinstance(value, int | float):
            tags[f"metric_{key}"] = f"{float(value):.6g}"
    return tags


def retrain_orchestrator(context: df.DurableOrchestrationContext) -> Task:
    # Pure; imported here so a broken gate module fails only the cycle.
    from retrain.gate import GateMetrics, decide
    from retrain.trainers import get_trainer  # the registry: pure data

    cycle = CycleInput.from_dict(context.get_input() or {})
    instance_id = context.instance_id
    ticker = cycle.ticker
    progress = Progress(context, ticker)
    out: dict[str, Any] = {
        "instance_id": instance_id,
        "ticker": ticker,
        "data_version": None,
        "job_name": None,
        "gate": None,
        "model_version": None,
        "scoring_uri": None,
    }

    def fail(reason: str) -> WorkflowFailed:
        progress.finish("failed", error=reason)
        return WorkflowFailed(reason)

    # 1. Market data -> immutable data asset.
    progress.step("fetch_data")
    fetched = yield from _call(
        context,
        "fetch_data",
        {
            "ticker": ticker,
            "source": cycle.source,
            "lookback_days": cycle.lookback_days,
            "instance_id": instance_id,
        },
    )
    data = fetched["data"]
    out["data_version"] = data["version"]
    progress.note(data_asset=data["name"], data_version=data["version"], rows=fetched.get("rows"))

    # 2. The current champion (compared against on the same window by the trainer).
    progress.step("get_champion")
    model_name = naming.model_name(ticker)
    champion = yield from _call(context, "get_champion", {"model_name": model_name})
    progress.note(champion_version=(champion or {}).get("version"))

    # 3. Training job; its name follows from the instance id, so a replayed submit is a no-op.
    progress.step("submit_training")
    job_name = naming.job_name(instance_id)
    out["job_name"] = job_name
    submitted = yield from _call(
        context,
        "submit_training",
        {
            "job_name": job_name,
            "experiment_name": naming.experiment_name(ticker),
            "ticker": ticker,
            "data": data,
            "instance_id": instance_id,
            "champion": champion,
            "hyperparameters": cycle.hyperparameters,
            "trainer": cycle.trainer,
        },
    )
    code_version = submitted["code_version"]
    progress.note(job_name=job_name, code_version=code_version)

    # 4. Wait for the job: event, or poll when the event is late or lost.
    progress.step("wait_for_job")
    job = yield from wait_for_job(
        context, job_name, timedelta(minutes=cycle.poll_minutes), timedelta(hours=cycle.job_timeout_hours)
    )
    progress.note(job_status=job["status"], job_signal=job["via"])
    if job["status"] != "Completed":
        raise fail(
            f"training job {job_name} ended {job['status']}: {job.get('error') or 'no error message'}; "
            "nothing was registered and the champion keeps serving"
        )

    # 5. Metrics -> quality gate (pure, so it runs inside the orchestrator).
    progress.step("gate")
    metrics = yield from _call(context, "get_job_metrics", {"job_name": job_name})
    decision = decide(
        metrics,
        has_champion=champion is not None,
        baseline_margin=cycle.baseline_margin,
        force=cycle.force,
        names=GateMetrics.from_dict(cycle.gate_metrics),
    ).to_dict()
    out["gate"] = decision
    progress.status["decision"] = decision
    progress.note(metrics=metrics)

    # 6. Register the challenger with its lineage (deployed or not).
    progress.step("register_model")
    model = yield from _call(
        context,
        "register_model",
        {
            "name": model_name,
            "job_name": job_name,
            "tags": lineage_tags(
                ticker=ticker,
                data=data,
                job_name=job_name,
                instance_id=instance_id,
                code_version=code_version,
                metrics=metrics,
                decision=decision,
                trainer=cycle.trainer,
                model_family=get_trainer(cycle.trainer).model_family,
            ),
        },
    )
    out["model_version"] = model["version"]
    progress.note(model_name=model["name"], model_version=model["version"])

    endpoint_name = naming.endpoint_name(ticker)
    if not decision.get("deploy"):
        progress.finish("rejected")
        return {**out, "status": "rejected", "endpoint": endpoint_name, "timings_s": progress.timings()}

    # 7. Endpoint (created once, then reused: its scoring URL is stable).
    progress.step("ensure_endpoint")
    deploy_timeout = timedelta(minutes=cycle.deploy_timeout_minutes)
    first = yield from _call(context, "begin_create_endpoint", {"name": endpoint_name})
    endpoint = EndpointState.from_dict(
        (
            yield from wait_for_provisioning(
                context, "get_endpoint", {"name": endpoint_name}, first, deploy_timeout
            )
        )
    )
    if endpoint.state != "Succeeded":
        raise fail(f"endpoint {endpoint_name} is {endpoint.state}; the champion keeps serving")
    out["scoring_uri"] = endpoint.scoring_uri
    old_slot = endpoint.serving_slot()
    new_slot = endpoint.idle_slot()
    progress.note(
        endpoint=endpoint_name, scoring_uri=endpoint.scoring_uri, old_slot=old_slot, new_slot=new_slot
    )

    # 8. The new model into the idle slot, at 0 % traffic.
    progress.step("deploy")
    slot_ref = {"endpoint": endpoint_name, "slot": new_slot}
    started = yield from _call(context, "begin_deployment", {**slot_ref, "model": model})
    deployed = yield from wait_for_provisioning(context, "get_deployment", slot_ref, started, deploy_timeout)
    if deployed["state"] != "Succeeded":
        raise fail(
            f"deployment of {model['name']}:{model['version']} to slot {new_slot} ended "
            f"{deployed['state']}: {deployed.get('error')}; traffic unchanged, the champion keeps serving"
        )

    smoke_input = {
        "endpoint": endpoint_name,
        "closes": fetched["recent_closes"],
        "max_latency_ms": cycle.smoke_max_latency_ms,
    }
    try:
        # 9. Smoke test the new slot directly, canary, smoke again, then all traffic.
        progress.step("smoke_test")
        yield from _smoke(context, {**smoke_input, "slot": new_slot})
        if old_slot is not None and 0 < cycle.canary_percent < 100:
            progress.step("canary")
            yield from _call(
                context,
                "set_traffic",
                {
                    "endpoint": endpoint_name,
                    "traffic": {old_slot: 100 - cycle.canary_percent, new_slot: cycle.canary_percent},
                },
            )
            progress.note(traffic={old_slot: 100 - cycle.canary_percent, new_slot: cycle.canary_percent})
            progress.step("smoke_test_canary")
            yield from _smoke(context, {**smoke_input, "slot": new_slot})
            yield from _smoke(context, {**smoke_input, "slot": None})
        progress.step("promote")
        traffic = {new_slot: 100, **({old_slot: 0} if old_slot else {})}
        promoted = yield from _call(context, "set_traffic", {"endpoint": endpoint_name, "traffic": traffic})
        out["scoring_uri"] = promoted.get("scoring_uri") or out["scoring_uri"]
        progress.note(traffic=traffic)
        if old_slot is None:
            progress.step("smoke_test_live")
            yield from _smoke(context, {**smoke_input, "slot": None})
    except Exception as exc:  # noqa: BLE001 - any failure after deploy rolls traffic back
        reason = _reason(exc)
        progress.step("rollback")
        rollback = {old_slot: 100, new_slot: 0} if old_slot else {}
        try:
            yield from _call(context, "set_traffic", {"endpoint": endpoint_name, "traffic": rollback})
            progress.note(traffic=rollback)
        except Exception as rollback_exc:  # noqa: BLE001 - report both: the operator must look
            raise fail(
                f"rollout of {model['name']}:{model['version']} to slot {new_slot} failed ({reason}) and "
                f"the rollback to {old_slot or 'no slot'} failed too ({_reason(rollback_exc)}); "
                "check the endpoint's traffic"
            ) from None
        raise fail(
            f"rollout of {model['name']}:{model['version']} to slot {new_slot} failed ({reason}); "
            f"traffic is back on {old_slot or 'no slot'}, the champion is unchanged"
        ) from None

    # 10. The new model is the champion; the old slot is retired.
    progress.step("set_champion")
    yield from _call(context, "set_champion", {"model": model})
    if old_slot is not None:
        progress.step("retire_old_slot")
        if cycle.keep_old_slot:
            progress.note(retired=f"{old_slot} kept cold at 0%")
        else:
            try:
                old_ref = {"endpoint": endpoint_name, "slot": old_slot}
                begun = yield from _call(context, "begin_delete_deployment", old_ref)
                yield from wait_for_provisioning(context, "get_deployment", old_ref, begun, deploy_timeout)
                progress.note(retired=f"{old_slot} deleted")
            except Exception as exc:  # noqa: BLE001 - clean-up only: the rollout has finished
                progress.status["warnings"].append(f"could not delete old slot {old_slot}: {_reason(exc)}")
    progress.finish("deployed")
    return {
        **out,
        "status": "deployed",
        "endpoint": endpoint_name,
        "slot": new_slot,
        "old_slot": old_slot,
        "warnings": progress.status["warnings"],
        "timings_s": progress.timings(),
    }


def _smoke(context: df.DurableOrchestrationContext, payload: dict[str, Any]) -> Task:
    verdict = yield from _call(context, "smoke_test", payload)
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
    "JOB_FINISHED_EVENT",
    "ORCHESTRATOR_NAME",
    "SLOTS",
    "WorkflowFailed",
    "retrain_orchestrator",
    "lineage_tags",
]
