"""The activities of a fleet cycle's batch (retrain/fleet.py, `fleet_batch_orchestrator`): one call each for
the whole batch, through the platform's `TrainsBatches` capability (retrain/ports.py).

    get_champions           {"model_names": {T: name}} -> {T: ModelRef dict | None}
    submit_batch_training   ONE training job for the batch (a client activity, as activities.submit_training:
                            nothing is submitted once the batch's orchestration has ended, and a job submitted
                            while it ended is cancelled)
    judge_batch             per ticker: the batch summary, metrics and test errors -> the gate's decision
    register_batch_models   every trained ticker's model with its lineage tags (rejected ones too); idempotent

A ticker's own failure (no result in the batch summary, unreadable metrics, a gate that cannot judge, a
registration refused) is that ticker's, in the result; only a transient failure raises (Durable retries the
whole call, which is idempotent), and any other failure of the call is permanent (`report_failures`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import azure.durable_functions as df

from retrain.activities import _cycle_ended, code_version, report_failures
from retrain.adapters import get_platform
from retrain.ports import BatchTrainingRequest, PlatformError, TrainsBatches, TransientPlatformError

log = logging.getLogger(__name__)

bp = df.Blueprint()


def batch_platform() -> TrainsBatches:
    """The platform, which must train batches; else a permanent failure naming the platform."""
    platform = get_platform()
    if not isinstance(platform, TrainsBatches):
        raise PlatformError(
            f"the {type(platform).__name__} platform cannot train batches (it does not implement "
            "retrain.ports.TrainsBatches): a fleet cycle needs a platform adapter that does"
        )
    return platform


def get_champions(payload: dict[str, Any]) -> dict[str, Any]:
    """Each ticker's current champion (the trainer scores it on the challenger's test window)."""
    platform = get_platform()
    found: dict[str, Any] = {}
    for ticker, name in payload["model_names"].items():
        champion = platform.get_champion(str(name))
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
    """The `submit_batch_training` activity: as `activities.submit_training`, the batch orchestration's
    status is read before submitting (ended: nothing is submitted) and after (ended meanwhile: the job just
    submitted is cancelled), so a terminate and a submit in flight never leave a job running."""
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


def judge_batch(payload: dict[str, Any]) -> dict[str, Any]:
    """Per ticker of the batch: {"status": "ok", "metrics", "decision" (GateDecision dict), "warnings"}, or
    {"status": "failed", "error"} (its fit failed, per the batch summary, or its results cannot be judged).
    Test errors that cannot be read (401/403, not JSON) leave the gate its fixed margins, with a warning, as
    a single cycle's gate does."""
    from retrain.gate import GateMetrics, GatePolicy, decide_with_test_errors

    platform = batch_platform()
    job_name = str(payload["job_name"])
    gate = payload.get("gate") or {}
    names = GateMetrics.from_dict(gate.get("gate_metrics") or {})
    policy = GatePolicy(
        gate.get("gate_policy", "superiority"),
        gate.get("gate_noninferiority_margin", 0.01),
        gate.get("gate_baseline_rule", "significance"),
    )
    summary = platform.get_batch_summary(job_name)
    results = summary.get("tickers") if isinstance(summary, dict) else None
    results = results if isinstance(results, dict) else {}
    judged: dict[str, Any] = {}
    for ticker, info in payload["tickers"].items():
        entry = results.get(ticker)
        if not isinstance(entry, dict) or entry.get("status") != "ok":
            why = entry.get("error") if isinstance(entry, dict) else None
            judged[ticker] = {
                "status": "failed",
                "error": str(why or f"batch job {job_name} reported no result for {ticker}")[:1000],
            }
            continue
        try:
            metrics = {k: float(v) for k, v in platform.get_batch_metrics(job_name, ticker).items()}
            warnings: list[str] = []
            try:
                test_errors = platform.get_batch_test_errors(job_name, ticker)
            except TransientPlatformError:
                raise
            except PlatformError as exc:
                test_errors = None
                warnings.append(
                    f"test_errors.json of {ticker} in job {job_name} could not be read ({str(exc)[:300]}); "
                    "the gate used its fixed margins, without the significance test"
                )
            decision = decide_with_test_errors(
                metrics,
                test_errors,
                has_champion=bool(info.get("has_champion")),
                baseline_margin=float(gate.get("baseline_margin", 0.05)),
                level=float(gate.get("gate_alpha", 0.05)),
                force=bool(gate.get("force", False)),
                names=names,
                policy=policy,
            ).to_dict()
        except TransientPlatformError:
            raise
        except Exception as exc:  # noqa: BLE001 - this ticker cannot be judged; the others go on
            log.warning("judge_batch: %s of %s: %s", ticker, job_name, exc)
            judged[ticker] = {"status": "failed", "error": f"cannot judge {ticker}: {exc}"[:1000]}
            continue
        judged[ticker] = {"status": "ok", "metrics": metrics, "decision": decision, "warnings": warnings}
    return judged


def register_batch_models(payload: dict[str, Any]) -> dict[str, Any]:
    """Register each ticker's model of the batch job with its tags: {T: ModelRef dict}, or {T: {"error"}}
    for a ticker the registry refused (permanently). Registering again returns the same versions."""
    platform = batch_platform()
    job_name = str(payload["job_name"])
    registered: dict[str, Any] = {}
    for ticker, model in payload["models"].items():
        try:
            ref = platform.register_batch_model(str(model["name"]), job_name, ticker, dict(model["tags"]))
            registered[ticker] = ref.to_dict()
        except TransientPlatformError:
            raise
        except PlatformError as exc:
            log.warning("register_batch_models: %s of %s: %s", ticker, job_name, exc)
            registered[ticker] = {"error": f"registering {ticker}'s model failed: {exc}"[:1000]}
    return registered


ACTIVITIES = (get_champions, judge_batch, register_batch_models)
for _activity in ACTIVITIES:
    bp.activity_trigger(input_name="payload")(report_failures(_activity))
bp.activity_trigger(input_name="payload")(
    bp.durable_client_input(client_name="client")(report_failures(submit_batch_training))
)

__all__ = [
    "batch_platform",
    "get_champions",
    "judge_batch",
    "register_batch_models",
    "submit_batch_training",
]
