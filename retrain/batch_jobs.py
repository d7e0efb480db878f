"""The activities of a fleet cycle's batch (docs/architecture.md, fleet cycles): the champions of the
batch's tickers, ONE training job for the batch, the gate per ticker from the job's outputs, and the
registration of every trained ticker's model. Each is a call of the platform's `TrainsBatches` capability
(retrain/ports.py); a platform without it fails the activity permanently, saying which platform it is.

Registered like the single cycle's activities (`retrain.activities.report_failures`): a transient failure
raises, for Durable to retry; any other is a structured ``{"activity_error": ...}`` result. Imports nothing
heavy: the Function App side runs these.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import azure.durable_functions as df

from retrain.activities import (
    _cycle_ended,
    code_version,
    report_failures,
)
from retrain.adapters import get_platform
from retrain.ports import (
    BatchTrainingRequest,
    ModelRef,
    PlatformError,
    TrainsBatches,
    TransientPlatformError,
)

log = logging.getLogger(__name__)

bp = df.Blueprint()


def batch_platform() -> TrainsBatches:
    """The configured platform, if it trains batches; a PlatformError saying which one cannot."""
    platform = get_platform()
    if not isinstance(platform, TrainsBatches):
        raise PlatformError(
            f"the {type(platform).__name__} platform cannot train batches (no TrainsBatches capability); "
            "use the local or the azureml platform for fleet cycles"
        )
    return platform


def get_champions(payload: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """{"model_names": {T: model name}} -> {T: the champion's ModelRef dict, or None}."""
    platform = get_platform()
    found: dict[str, dict[str, Any] | None] = {}
    for ticker, name in payload["model_names"].items():
        champion = platform.get_champion(name)
        found[ticker] = champion.to_dict() if champion else None
    return found


def submit_batch_training_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Submit the batch's training job (a second submit of the same name is a no-op)."""
    version = code_version()
    request = BatchTrainingRequest.from_dict({**payload, "code_version": version})
    job_name = batch_platform().submit_batch_training(request)
    return {"job_name": job_name, "code_version": version}


async def submit_batch_training(
    payload: dict[str, Any], client: df.DurableOrchestrationClient
) -> dict[str, Any]:
    """The `submit_batch_training` activity: as `activities.submit_training`, the job is submitted only
    while the batch's orchestration runs, and canceled when it ended during the submit (a terminate that
    landed between the scheduling and the submit finds the job that way)."""
    instance_id = str(payload.get("instance_id") or "")
    if await _cycle_ended(client, instance_id):
        log.warning(
            "submit_batch_training: %s has ended; job %s not submitted", instance_id, payload["job_name"]
        )
        return {"job_name": payload["job_name"], "code_version": code_version(), "submitted": False}
    submitted = await asyncio.to_thread(submit_batch_training_job, payload)
    if await _cycle_ended(client, instance_id):
        status = await asyncio.to_thread(get_platform().cancel_job, submitted["job_name"])
        log.warning(
            "submit_batch_training: %s ended while its job %s was being submitted: canceled it (%s)",
            instance_id,
            submitted["job_name"],
            status.status if status else None,
        )
        return {**submitted, "canceled": status.status if status else None}
    return submitted


def judge_batch(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The gate per ticker of a finished batch job, from its outputs.

    {"job_name", "tickers": {T: {"has_champion": bool}}, "gate": {baseline_margin, gate_alpha, force,
    gate_metrics, gate_policy, gate_noninferiority_margin, gate_baseline_rule}} -> {T: {"status": "ok",
    "metrics", "decision": GateDecision dict, "warnings"} | {"status": "failed", "error"}}. A ticker the
    batch did not train is failed with the summary's reason; one whose test errors cannot be read for a
    reason a retry would not fix is judged with the fixed margins and a warning (as a single cycle is); a
    transient failure raises, for Durable to retry the whole activity."""
    from retrain.gate import GateError, GateMetrics, GatePolicy, decide_with_test_errors

    platform = batch_platform()
    job_name = payload["job_name"]
    gate = payload.get("gate") or {}
    policy = GatePolicy(
        gate.get("gate_policy", "superiority"),
        gate.get("gate_noninferiority_margin", 0.01),
        gate.get("gate_baseline_rule", "significance"),
    )
    summary = platform.get_batch_summary(job_name).get("tickers") or {}
    judged: dict[str, dict[str, Any]] = {}
    for ticker, facts in payload["tickers"].items():
        entry = summary.get(ticker)
        if entry is None or entry.get("status") != "ok":
            why = (entry or {}).get("error") or f"{ticker} is not in the summary of batch job {job_name}"
            judged[ticker] = {"status": "failed", "error": str(why)[:2000]}
            continue
        warnings: list[str] = []
        try:
            metrics = platform.get_batch_metrics(job_name, ticker)
            try:
                test_errors = platform.get_batch_test_errors(job_name, ticker)
            except TransientPlatformError:
                raise
            except PlatformError as exc:  # 401/403, not JSON: the fixed margins, and say so
                warnings.append(
                    f"test_errors.json of {ticker} in batch job {job_name} could not be read ({exc}); the gate "
                    "used its fixed margins, without the significance test"
                )
                test_errors = None
            decision = decide_with_test_errors(
                metrics,
                test_errors,
                has_champion=bool(facts.get("has_champion")),
                baseline_margin=float(gate.get("baseline_margin", 0.05)),
                level=float(gate.get("gate_alpha", 0.05)),
                force=bool(gate.get("force", False)),
                names=GateMetrics.from_dict(gate.get("gate_metrics")),
                policy=policy,
            )
        except TransientPlatformError:
            raise
        except (PlatformError, GateError) as exc:
            judged[ticker] = {"status": "failed", "error": f"{ticker} could not be judged: {exc}"[:2000]}
            continue
        judged[ticker] = {
            "status": "ok",
            "metrics": metrics,
            "decision": decision.to_dict(),
            "warnings": warnings,
        }
    return judged


def register_batch_models(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"job_name", "models": {T: {"name", "tags"}}} -> {T: ModelRef dict}: every trained ticker's model
    (rejected ones too: the audit trail), each registered once per job and ticker, so a replay returns the
    same versions."""
    platform = batch_platform()
    job_name = payload["job_name"]
    registered: dict[str, dict[str, Any]] = {}
    for ticker, model in payload["models"].items():
        tags = {str(k): str(v) for k, v in (model.get("tags") or {}).items()}
        ref: ModelRef = platform.register_batch_model(model["name"], job_name, ticker, tags)
        registered[ticker] = ref.to_dict()
    return registered


BATCH_ACTIVITIES = (get_champions, judge_batch, register_batch_models)

for _activity in BATCH_ACTIVITIES:
    bp.activity_trigger(input_name="payload")(report_failures(_activity))
# With the durable client binding: it reads its own orchestration's status before and after submitting.
bp.activity_trigger(input_name="payload")(
    bp.durable_client_input(client_name="client")(report_failures(submit_batch_training))
)
