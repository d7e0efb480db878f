"""The workflow's activities: one small function per step, each a call to the `MLPlatform` port.

Inputs and outputs are plain JSON (the ports' `to_dict`), because they travel through the durable
history. A verdict (smoke test) is returned, never raised. As registered with the Functions host, each
activity reports its failures by kind (see `report_failures`): only a transient failure raises, so that
Durable's retry policy retries it; a permanent failure or a busy endpoint comes back as a structured
``{"activity_error": {...}}`` result the orchestrator acts on (Durable would otherwise retry any failure,
and an exception reaches the orchestrator only as text).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import azure.durable_functions as df

import retrain
from retrain import naming
from retrain.adapters import get_platform
from retrain.ports import (
    BundleRef,
    EndpointBusyError,
    ModelRef,
    PlatformError,
    PreparesInvoke,
    TrainingRequest,
    TransientPlatformError,
)
from retrain.vocabulary import TAG_AS_OF, TAG_INSTANCE_ID, TAG_SHA256, TAG_SOURCE, TAG_TICKER

log = logging.getLogger(__name__)

bp = df.Blueprint()

# How many recent closes travel with the data asset for the smoke test: more than any model window.
SMOKE_CLOSES = 64
REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    """`git describe` of the checkout when there is one (a laptop), else the package version (Azure)."""
    if (REPO_ROOT / ".git").exists():
        try:
            described = subprocess.run(
                ["git", "describe", "--tags", "--always", "--dirty"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            if described:
                return f"{retrain.__version__}+g{described}"
        except (OSError, subprocess.SubprocessError):
            pass
    return retrain.__version__


def fetch_data(payload: dict[str, Any]) -> dict[str, Any]:
    """Fetch prices, snapshot them (content-versioned) and register the snapshot as a data asset."""
    from retrain import settings
    from retrain.market_data import fetch_prices, request_data_dir

    ticker = payload["ticker"]
    source = payload.get("source") or "yfinance"
    # A CSV the request named (not the operator's RETRAIN_SOURCE) is read only inside RETRAIN_DATA_DIR.
    data_dir = request_data_dir(source, settings.get("RETRAIN_SOURCE"), settings.get("RETRAIN_DATA_DIR"))
    prices = fetch_prices(
        ticker,
        source=source,
        lookback_days=payload.get("lookback_days"),
        end=payload.get("as_of"),
        data_dir=data_dir,
    )
    # The orchestrator names the asset in its cycle's naming version; a payload from the code before it
    # (no asset_name) gets that code's name.
    name = payload.get("asset_name") or naming.legacy_names(ticker, "").asset
    return _register_prices(prices, ticker, name, payload)


def fetch_batch_data(payload: dict[str, Any]) -> dict[str, Any]:
    """`fetch_data` for a fleet batch: {"tickers", "source", "lookback_days", "as_of", "instance_id",
    "asset_names": {T: name}} -> {"fetched": {T: fetch_data's result}, "failed": {T: why}}.

    The prices come in one call where the source allows (`market_data.fetch_many_prices`: one yfinance
    download for the batch, one read of a file holding every ticker); `{ticker}` in a csv:/blob: source
    is filled per ticker. A ticker whose data is missing or bad goes in "failed" with the error
    fetch_data would give, and the batch goes on. When the source failed for the whole batch in a way
    that may pass (rate limit, network) the activity raises a transient error: Durable retries it.
    Each ticker's snapshot is registered as fetch_data registers it (immutable, content-versioned, the
    same tags); registration is idempotent, so a retried activity registers nothing twice."""
    from retrain import settings
    from retrain.market_data import MarketDataError, SourceUnavailable, fetch_many_prices, request_data_dir

    source = payload.get("source") or "yfinance"
    data_dir = request_data_dir(source, settings.get("RETRAIN_SOURCE"), settings.get("RETRAIN_DATA_DIR"))
    try:
        batch = fetch_many_prices(
            list(payload["tickers"]),
            source=source,
            lookback_days=payload.get("lookback_days"),
            end=payload.get("as_of"),
            data_dir=data_dir,
        )
    except SourceUnavailable as exc:
        raise TransientPlatformError(str(exc)) from exc
    names = payload.get("asset_names") or {}
    fetched: dict[str, Any] = {}
    failed = dict(batch.failed)
    for ticker, prices in batch.prices.items():
        try:
            name = names.get(ticker) or naming.asset_name(ticker)
            fetched[ticker] = _register_prices(prices, ticker, name, payload)
        except TransientPlatformError:
            raise  # the platform is unreachable for now: the whole activity is retried
        except (PlatformError, MarketDataError, naming.NamingError) as exc:
            failed[ticker] = str(exc)
    if failed:
        log.warning(
            "fetch_batch_data %s: %d fetched, %d failed",
            payload.get("instance_id"),
            len(fetched),
            len(failed),
        )
    return {"fetched": fetched, "failed": failed}


def _register_prices(prices: Any, ticker: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Snapshot `prices` (content-versioned) and register it as data asset `name`: fetch_data's result."""
    from retrain.market_data import fill_source, write_snapshot

    source = payload.get("source")
    with tempfile.TemporaryDirectory(prefix="retrain-snapshot-") as staging:
        snapshot = write_snapshot(prices, ticker, staging, name=name)
        tags = {
            **snapshot.tags,
            TAG_TICKER: ticker,
            # The source this ticker read: csv:{ticker}.csv is recorded as csv:MSFT.csv.
            TAG_SOURCE: fill_source(source, ticker) if source else str(source),
            TAG_SHA256: snapshot.sha256,
            TAG_INSTANCE_ID: str(payload.get("instance_id")),
        }
        if payload.get("as_of"):
            tags[TAG_AS_OF] = str(payload["as_of"])
        # The platform copies (local) or uploads (Azure) the file: the staging copy can go.
        asset = get_platform().register_data(snapshot.name, snapshot.version, str(snapshot.path), tags)
    closes = [float(c) for c in prices["Close"].tail(SMOKE_CLOSES)]
    return {
        "data": asset.to_dict(),
        "rows": len(prices),
        "recent_closes": closes,
        "last_date": str(prices["Date"].iloc[-1].date()),
    }


def get_champion(payload: dict[str, Any]) -> dict[str, Any] | None:
    champion = get_platform().get_champion(payload["model_name"])
    return champion.to_dict() if champion else None


def submit_training_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Submit the cycle's training job (a second submit of the same name is a no-op)."""
    version = code_version()
    request = TrainingRequest.from_dict({**payload, "code_version": version})
    job_name = get_platform().submit_training(request)
    return {"job_name": job_name, "code_version": version}


async def submit_training(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """The `submit_training` activity: submit the job unless the cycle has ended, and cancel the job it
    just submitted when the cycle ended meanwhile.

    An activity already scheduled still runs after its orchestration is terminated (Durable does not stop
    it), and `POST /api/retrain/{id}/terminate` cancels the job by name: a terminate that lands between
    the scheduling and the submit finds no job. So the activity reads its orchestration's status (the
    durable client binding, as `earlier_active_cycle` does; Azure and the local host both support it)
    before and after submitting. With the route, which cancels only once the instance reads Terminated,
    every order of the two ends with the job canceled: if this check reads Running, the terminate was
    applied later, so the job existed when the route cancelled it."""
    instance_id = str(payload.get("instance_id") or "")
    if await _cycle_ended(client, instance_id):
        log.warning(
            "submit_training: %s has ended; its job %s was not submitted", instance_id, payload["job_name"]
        )
        return {"job_name": payload["job_name"], "code_version": code_version(), "submitted": False}
    submitted = await asyncio.to_thread(submit_training_job, payload)
    if await _cycle_ended(client, instance_id):
        status = await asyncio.to_thread(get_platform().cancel_job, submitted["job_name"])
        log.warning(
            "submit_training: %s ended while its job %s was being submitted: canceled it (%s)",
            instance_id,
            submitted["job_name"],
            status.status if status else None,
        )
        return {**submitted, "canceled": status.status if status else None}
    return submitted


async def _cycle_ended(client: df.DurableOrchestrationClient, instance_id: str) -> bool:
    """Whether the orchestration `instance_id` has ended (terminated, most likely: its activity runs). A
    status that cannot be read counts as running: the job is then submitted as before this check."""
    from retrain.triggers import ACTIVE_VALUES, instance_status, runtime_of

    if not instance_id:
        return False
    try:
        status = await instance_status(client, instance_id)
    except Exception as exc:  # noqa: BLE001 - the check is a safeguard; the submit must not fail on it
        log.warning("submit_training: could not read the status of %s: %s", instance_id, exc)
        return False
    runtime = runtime_of(status)
    return runtime is not None and runtime not in ACTIVE_VALUES


def get_job_status(payload: dict[str, Any]) -> dict[str, Any]:
    return get_platform().get_job(payload["job_name"]).to_dict()


def get_job_metrics(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) for k, v in get_platform().get_job_metrics(payload["job_name"]).items()}


def get_job_test_errors(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The job's test_errors.json (per-day test forecasts) or None when its trainer wrote none. One that
    cannot be read for a reason a retry would not fix (401/403: the identity's role not yet propagated, a
    storage firewall; not JSON) is ``{TEST_ERRORS_UNREADABLE: reason}``: the gate falls back to its fixed
    margins with a warning, as the monitor does, rather than failing a cycle whose training has finished.
    A transient failure still raises, for Durable to retry."""
    try:
        return get_platform().get_job_test_errors(payload["job_name"])
    except TransientPlatformError:
        raise
    except PlatformError as exc:
        log.warning("test errors of job %s unreadable: %s", payload["job_name"], exc)
        return {TEST_ERRORS_UNREADABLE: str(exc)[:1000]}


def register_model(payload: dict[str, Any]) -> dict[str, Any]:
    return get_platform().register_model(payload["name"], payload["job_name"], payload["tags"]).to_dict()


def set_champion(payload: dict[str, Any]) -> dict[str, Any]:
    model = ModelRef.from_dict(payload["model"])
    get_platform().set_champion(model)
    return model.to_dict()


def set_champions(payload: dict[str, Any]) -> dict[str, Any]:
    """Mark each model its name's champion (idempotent, as `set_champion`): {"set": n}, and {"failed":
    {"name:version": why}} for the ones the platform refused (the others are still set). A transient
    failure raises: Durable runs the activity again, and the ones already set are set again (a no-op)."""
    models = payload.get("models")
    if not isinstance(models, list):
        raise ValueError('set_champions: send "models": [{"name", "version"}, ...]')
    platform, done, failed = get_platform(), 0, {}
    for item in models:
        model = ModelRef.from_dict(item)
        try:
            platform.set_champion(model)
            done += 1
        except PlatformError as exc:
            if is_transient(exc):
                raise
            failed[f"{model.name}:{model.version}"] = str(exc)[:300]
    return {"set": done, **({"failed": failed} if failed else {})}


def begin_create_endpoint(payload: dict[str, Any]) -> dict[str, Any]:
    return get_platform().begin_create_endpoint(payload["name"]).to_dict()


def get_endpoint(payload: dict[str, Any]) -> dict[str, Any]:
    return get_platform().get_endpoint(payload["name"]).to_dict()


def begin_deployment(payload: dict[str, Any]) -> dict[str, Any]:
    from retrain.monitoring.ledger import record_traffic_change

    model = ModelRef.from_dict(payload["model"])
    platform = get_platform()
    started = platform.begin_deployment(payload["endpoint"], payload["slot"], model).to_dict()
    recorded = record_traffic_change(
        platform,
        payload["endpoint"],
        "deploy",
        new_model=(payload["slot"], model.to_dict()),
        instance_id=payload.get("instance_id"),
        bundles=payload.get("bundles") or (),
    )
    return _with_ledger_warning(started, recorded)


def get_deployment(payload: dict[str, Any]) -> dict[str, Any]:
    return get_platform().get_deployment(payload["endpoint"], payload["slot"]).to_dict()


def set_traffic(payload: dict[str, Any]) -> dict[str, Any]:
    from retrain.monitoring.ledger import record_traffic_change

    traffic = {str(k): int(v) for k, v in payload["traffic"].items()}
    platform = get_platform()
    state = platform.set_traffic(payload["endpoint"], traffic).to_dict()
    if payload.get("record_when_applied"):
        return state  # the cycle records it with `record_traffic` once the platform serves it
    # An older cycle's payload: recorded when asked, as that code did.
    recorded = record_traffic_change(
        platform,
        payload["endpoint"],
        payload.get("reason"),
        traffic=traffic,
        instance_id=payload.get("instance_id"),
        bundles=payload.get("bundles") or (),
    )
    return _with_ledger_warning(state, recorded)


def record_traffic(payload: dict[str, Any]) -> dict[str, Any]:
    """Append a traffic change to the served ledger once it has applied (the cycle waited until the
    endpoint is `Succeeded` with it), so the event's time is when that traffic began to serve."""
    from retrain.monitoring.ledger import record_traffic_change

    traffic = {str(k): int(v) for k, v in payload["traffic"].items()}
    recorded = record_traffic_change(
        get_platform(),
        payload["endpoint"],
        payload.get("reason"),
        traffic=traffic,
        instance_id=payload.get("instance_id"),
        bundles=payload.get("bundles") or (),
    )
    return _with_ledger_warning({"recorded": not isinstance(recorded, str)}, recorded)


def begin_delete_deployment(payload: dict[str, Any]) -> dict[str, Any]:
    from retrain.monitoring.ledger import record_traffic_change

    platform = get_platform()
    begun = platform.begin_delete_deployment(payload["endpoint"], payload["slot"]).to_dict()
    recorded = record_traffic_change(
        platform,
        payload["endpoint"],
        "retire",
        removed_slot=payload["slot"],
        instance_id=payload.get("instance_id"),
        bundles=payload.get("bundles") or (),
    )
    return _with_ledger_warning(begun, recorded)


def _with_ledger_warning(result: dict[str, Any], recorded: Any) -> dict[str, Any]:
    """The activity's result, with the ledger's warning when its record was lost (a str from
    record_traffic_change): the workflow moves it into the cycle's `warnings`."""
    return {**result, LEDGER_WARNING: recorded} if isinstance(recorded, str) else result


def smoke_test(payload: dict[str, Any]) -> dict[str, Any]:
    """Score the latest closes through the endpoint (one slot, or the traffic split when slot is None):
    the answer must be one finite, plausible forecast and arrive within the latency bound."""
    if payload.get("ticker"):  # a bundle's rollout tests each ticker
        return smoke_test_ticker(payload)
    closes = [float(c) for c in payload["closes"]]
    slot = payload.get("slot")
    max_ms = float(payload["max_latency_ms"])
    platform = get_platform()
    try:
        # The Azure adapter fetches the scoring URI and key here (once): the timer measures scoring only.
        if isinstance(platform, PreparesInvoke):
            platform.prepare_invoke(payload["endpoint"])
        started = time.perf_counter()
        answer = platform.invoke(payload["endpoint"], {"close": closes}, slot=slot)
    except PlatformError as exc:
        return {"ok": False, "reason": f"scoring call failed: {exc}", "slot": slot}
    latency_ms = (time.perf_counter() - started) * 1000
    verdict = judge_smoke_answer(answer, closes[-1], latency_ms, max_ms)
    log.info("smoke test slot=%s: %s", slot, verdict)
    return {**verdict, "slot": slot, "latency_ms": round(latency_ms, 1)}


def smoke_test_ticker(payload: dict[str, Any]) -> dict[str, Any]:
    """A bundle's smoke test for one ticker: its answer must be a valid forecast (as `judge_smoke_answer`)
    made by one of `expect_versions` of the ticker's model ("*": any version, e.g. through the stable URL
    during a canary, where the old bundle may answer). `plausible` False skips the range check (an
    unchanged ticker is scored with another ticker's closes: only its model and a finite answer count)."""
    closes = [float(c) for c in payload["closes"]]
    slot, ticker = payload.get("slot"), payload["ticker"]
    platform = get_platform()
    try:
        if isinstance(platform, PreparesInvoke):
            platform.prepare_invoke(payload["endpoint"])
        started = time.perf_counter()
        answer = platform.invoke(payload["endpoint"], {"ticker": ticker, "close": closes}, slot=slot)
    except PlatformError as exc:
        return {"ok": False, "reason": f"scoring call failed: {exc}", "slot": slot, "ticker": ticker}
    latency_ms = (time.perf_counter() - started) * 1000
    verdict = _judge_ticker_answer(payload, closes, answer, latency_ms, float(payload["max_latency_ms"]))
    log.info("smoke test %s slot=%s: %s", ticker, slot, verdict)
    return {**verdict, "slot": slot, "ticker": ticker, "latency_ms": round(latency_ms, 1)}


def _judge_ticker_answer(
    test: dict[str, Any], closes: list[float], answer: Any, latency_ms: float, max_ms: float
) -> dict[str, Any]:
    """One ticker's verdict (`smoke_test_ticker`'s rules) on its answer, single or from a batch."""
    ticker = test["ticker"]
    if isinstance(answer, dict) and "error" in answer:  # a batch's per-instance error (scorer/score.py)
        return {
            "ok": False,
            "reason": f"the scorer answered {answer.get('status')}: {str(answer['error'])[:300]}",
        }
    if isinstance(answer, dict) and answer.get("ticker") not in (None, ticker):
        return {"ok": False, "reason": f"{ticker}'s request was answered for ticker {answer.get('ticker')}"}
    last = closes[-1] if test.get("plausible", True) else None
    verdict = judge_smoke_answer(answer, last, latency_ms, max_ms)
    model = answer.get("model") if isinstance(answer, dict) else None
    version = str((model or {}).get("version"))
    expected = [str(x) for x in test.get("expect_versions") or []]
    if verdict["ok"] and expected and "*" not in expected and version not in expected:
        verdict = {
            "ok": False,
            "reason": f"{ticker} was answered by model version {version}, expected {' or '.join(expected)}",
        }
    return verdict


# Instances per scoring request of `smoke_test_many`: the latency bound is judged per request of at most
# this many tickers (a fraction of the scorer's 1000 instances and 1 MiB per request: 64 closes each).
SMOKE_BATCH_INSTANCES = 50


def smoke_test_many(payload: dict[str, Any]) -> dict[str, Any]:
    """Many tickers' smoke tests on one slot (None: through the stable URL) in batch requests
    `{"instances": [{"ticker", "close"}, ...]}` of at most `SMOKE_BATCH_INSTANCES` (payload
    `max_instances` may lower it); returns {ticker: verdict}, each by `smoke_test_ticker`'s rules.

    Latency: a request's latency is every instance's in it; within `max_latency_ms` it passes them all
    (none waited longer). Over it, it proves nothing about one ticker's own request: those tickers are
    scored again one request each and judged as `smoke_test_ticker` judges, so no ticker fails for being
    in a batch, and the bound means what it means for one ticker. A request that fails as a whole (the
    slot is down, a 4xx/5xx for the request) fails each of its tickers with the reason; a per-instance
    error answer fails that ticker only."""
    tests = payload.get("tests")
    if not isinstance(tests, list) or not all(isinstance(t, dict) and t.get("ticker") for t in tests):
        raise ValueError(
            'smoke_test_many: send "tests": [{"ticker", "closes", "expect_versions", "plausible"}]'
        )
    tickers = [str(t["ticker"]) for t in tests]
    twice = sorted({t for t in tickers if tickers.count(t) > 1})
    if twice:
        raise ValueError(
            f"smoke_test_many: tests name {', '.join(twice)} more than once; send each ticker once"
        )
    endpoint, slot = payload["endpoint"], payload.get("slot")
    max_ms = float(payload["max_latency_ms"])
    size = max(1, min(int(payload.get("max_instances") or SMOKE_BATCH_INSTANCES), SMOKE_BATCH_INSTANCES))
    platform = get_platform()
    verdicts: dict[str, dict[str, Any]] = {}
    for start in range(0, len(tests), size):
        chunk = tests[start : start + size]
        closes = [[float(c) for c in t["closes"]] for t in chunk]
        instances = [{"ticker": t["ticker"], "close": c} for t, c in zip(chunk, closes, strict=True)]
        try:
            if isinstance(platform, PreparesInvoke):
                platform.prepare_invoke(endpoint)
            started = time.perf_counter()
            answer = platform.invoke(endpoint, {"instances": instances}, slot=slot)
        except PlatformError as exc:
            for t in chunk:
                verdicts[t["ticker"]] = {"ok": False, "reason": f"scoring call failed: {exc}"}
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(chunk):
            reason = f"expected {{'predictions': [{len(chunk)} answers]}}, got {str(answer)[:200]}"
            for t in chunk:
                verdicts[t["ticker"]] = {"ok": False, "reason": reason}
            continue
        if latency_ms > max_ms:  # inconclusive for each ticker: its own request decides
            log.info(
                "smoke batch of %d on slot=%s took %.0f ms: one request each", len(chunk), slot, latency_ms
            )
            for t in chunk:
                single = smoke_test_ticker(
                    {**t, "endpoint": endpoint, "slot": slot, "max_latency_ms": max_ms}
                )
                verdicts[t["ticker"]] = {k: v for k, v in single.items() if k not in ("slot", "ticker")}
            continue
        for t, c, one in zip(chunk, closes, predictions, strict=True):
            verdict = _judge_ticker_answer(t, c, one, latency_ms, max_ms)
            verdicts[t["ticker"]] = {**verdict, "latency_ms": round(latency_ms, 1), "batch": len(chunk)}
    failed = sorted(t for t, v in verdicts.items() if not v["ok"])
    log.info("smoke test of %d tickers slot=%s: %d failed %s", len(tests), slot, len(failed), failed[:20])
    return verdicts


def judge_smoke_answer(
    answer: Any, last_close: float | None, latency_ms: float, max_ms: float
) -> dict[str, Any]:
    """Pure verdict on one scoring answer (`last_close` None: no plausibility range)."""
    forecast = answer.get("forecast") if isinstance(answer, dict) else None
    if not isinstance(forecast, list) or len(forecast) != 1:
        return {"ok": False, "reason": f"expected {{'forecast': [one float]}}, got {str(answer)[:200]}"}
    value = forecast[0]
    if not isinstance(value, int | float) or not math.isfinite(value):
        return {"ok": False, "reason": f"forecast {value!r} is not a finite number"}
    # A next-day close outside [0.5x, 2x] of today's close is a broken model, not a forecast.
    if last_close is not None and not 0.5 * last_close <= value <= 2.0 * last_close:
        return {
            "ok": False,
            "reason": f"forecast {value:.4g} is implausible next to the last close {last_close:.4g}",
        }
    if latency_ms > max_ms:
        return {
            "ok": False,
            "reason": f"latency {latency_ms:.0f} ms exceeds RETRAIN_SMOKE_MAX_LATENCY_MS={max_ms:g}",
        }
    return {
        "ok": True,
        "reason": "valid answer within the latency bound",
        "forecast": float(value),
        "model": answer.get("model"),
    }


# ---- bundles and the endpoint's rollout (retrain/rollout.py) -----------------------------------------
def register_bundle(payload: dict[str, Any]) -> dict[str, Any]:
    """Bundle `version` of the endpoint: `parent` with `changes` ({ticker: ModelRef dict}); idempotent."""
    parent = BundleRef.from_dict(payload["parent"]) if payload.get("parent") else None
    changes = {str(t): ModelRef.from_dict(m) for t, m in payload["changes"].items()}
    return (
        get_platform()
        .register_bundle(
            payload["endpoint"],
            str(payload["version"]),
            parent,
            changes,
            [str(i) for i in payload.get("orchestration_ids") or []],
            payload.get("removed"),
        )
        .to_dict()
    )


def get_bundle(payload: dict[str, Any]) -> dict[str, Any] | None:
    found = get_platform().get_bundle(payload["endpoint"], str(payload["version"]))
    return found.to_dict() if found else None


def next_bundle_version(payload: dict[str, Any]) -> dict[str, Any]:
    """The first version after `after` that is not registered yet: a rolled-back or left-out bundle keeps
    its version (bundles are immutable), so the next one must not reuse it."""
    platform, version = get_platform(), int(payload.get("after") or 0) + 1
    while platform.get_bundle(payload["endpoint"], str(version)) is not None:
        version += 1
    return {"version": str(version)}


async def request_rollout(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """Start the endpoint's rollout unless one is active; `{"instance_id", "started"}` either way. Two
    cycles asking at once may start two: the later one gives way (`earlier_active_rollout`)."""
    from datetime import UTC, datetime

    from retrain.rollout import ROLLOUT_ORCHESTRATOR, RolloutInput
    from retrain.triggers import start_or_find

    rollout = RolloutInput.from_dict(payload["rollout"])
    active = await _active_rollouts(client, rollout.endpoint)
    if active:
        return {"instance_id": active[0], "started": False}
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S%fz")
    instance_id = f"{naming.rollout_instance_prefix(rollout.endpoint)}{stamp}"
    existing = await start_or_find(client, ROLLOUT_ORCHESTRATOR, instance_id, rollout.to_dict())
    return {"instance_id": instance_id, "started": existing is None}


_ROLLOUT_STAMP = re.compile(r"\d{8}t\d{12}z")


async def _active_rollouts(client: df.DurableOrchestrationClient, endpoint: str) -> list[str]:
    """The active rollouts of `endpoint`, earliest first (their ids carry their start time)."""
    from retrain.triggers import ACTIVE_STATUSES, ACTIVE_VALUES, runtime_of

    prefix = naming.rollout_instance_prefix(endpoint)
    found = await client.get_status_by(instance_id_prefix=prefix, runtime_status=ACTIVE_STATUSES)
    return sorted(
        s.instance_id
        for s in found
        if runtime_of(s) in ACTIVE_VALUES
        and (s.instance_id or "").startswith(prefix)  # "fleet-models-" also prefixes "fleet-models-x-"
        and _ROLLOUT_STAMP.fullmatch(s.instance_id[len(prefix) :])
    )


async def earlier_active_rollout(
    payload: dict[str, Any], client: df.DurableOrchestrationClient
) -> str | None:
    """The rollout's guard: an active rollout of the endpoint started before this one, if any."""
    active = await _active_rollouts(client, payload["endpoint"])
    earlier = [i for i in active if i < payload["instance_id"]]
    return earlier[0] if earlier else None


async def pending_rollouts(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """The challengers awaiting this endpoint's rollout: Running cycles whose status says `awaiting_rollout`
    on it, and Running fleets whose status lists it (the fleet form: the challengers are in the outputs of
    the batches it names). One challenger per ticker (the newest orchestration's, by created time), sorted
    by ticker; older ones of a ticker are `superseded` (named by the newer). Challengers in `answered` with
    that model (the previous iteration told them; they may not have read it yet) are skipped."""
    from retrain.rollout import answer_key
    from retrain.triggers import ACTIVE_STATUSES, ACTIVE_VALUES, runtime_of

    endpoint, answered = payload["endpoint"], payload.get("answered") or {}
    waiting: dict[str, list[dict[str, Any]]] = {}
    for status in await client.get_status_by(runtime_status=ACTIVE_STATUSES):
        custom = status.custom_status if isinstance(status.custom_status, dict) else {}
        awaiting = custom.get("awaiting_rollout")
        if runtime_of(status) not in ACTIVE_VALUES or not isinstance(awaiting, dict | list):
            continue
        created = status.created_time.isoformat() if status.created_time else ""
        if isinstance(awaiting, list):  # a fleet: its batches' outputs hold the challengers
            found = await _fleet_challengers(client, status.instance_id, awaiting, endpoint)
        elif awaiting.get("endpoint") == endpoint:
            found = [
                {
                    "instance_id": status.instance_id,
                    "ticker": awaiting["ticker"],
                    "model": awaiting.get("model") or {},
                    "closes": awaiting.get("closes") or [],
                }
            ]
        else:
            continue
        for challenger in found:
            key = answer_key(challenger["instance_id"], challenger["ticker"])
            if answered.get(key) == str(challenger["model"].get("version")):
                continue
            waiting.setdefault(challenger["ticker"], []).append({**challenger, "created": created})
    challengers, superseded = [], []
    for ticker in sorted(waiting):
        newest_first = sorted(waiting[ticker], key=lambda c: (c["created"], c["instance_id"]), reverse=True)
        challengers.append(newest_first[0])
        superseded += [{**c, "superseded_by": newest_first[0]["instance_id"]} for c in newest_first[1:]]
    return {"challengers": challengers, "superseded": superseded}


async def _fleet_challengers(
    client: df.DurableOrchestrationClient, fleet_id: str, awaiting: list[Any], endpoint: str
) -> list[dict[str, Any]]:
    """A fleet's accepted challengers on `endpoint`, read from the outputs of the batches its status names
    for it (only its own batches: an id goes into a URL). A batch whose output cannot be read yet adds
    none; the fleet asks again on its timer."""
    from retrain.triggers import instance_status

    if naming.parse_fleet_instance_id(fleet_id) is None:
        return []
    found: list[dict[str, Any]] = []
    for entry in awaiting:
        if not isinstance(entry, dict) or entry.get("endpoint") != endpoint or entry.get("fleet") != fleet_id:
            continue
        for batch_id in entry.get("batches") or []:
            parsed = naming.parse_batch_instance_id(str(batch_id))
            if parsed is None or parsed[0] != fleet_id:
                continue
            status = await instance_status(client, str(batch_id))
            output = status.output if status is not None else None
            tickers = output.get("tickers") if isinstance(output, dict) else None
            for ticker, result in (tickers or {}).items():
                if not isinstance(result, dict) or result.get("status") != "accepted":
                    continue
                if result.get("endpoint") != endpoint or not isinstance(result.get("model"), dict):
                    continue
                found.append(
                    {
                        "instance_id": fleet_id,
                        "ticker": ticker,
                        "model": result["model"],
                        "closes": result.get("closes") or [],
                    }
                )
    return found


async def rollout_outcomes(payload: dict[str, Any], client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """Raise `rollout_outcome` to each cycle with its outcome, and ONE to each fleet with the outcomes of
    all its challengers on this endpoint ({"fleet", "endpoint", "outcomes"}). An orchestration that has
    ended meanwhile (terminated) cannot hear it: noted, not an error."""
    from retrain.workflow import ROLLOUT_OUTCOME_EVENT

    events: dict[str, Any] = {}
    for outcome in payload["outcomes"]:
        instance_id = outcome["instance_id"]
        if naming.parse_fleet_instance_id(instance_id) is not None:
            grouped = events.setdefault(
                instance_id, {"fleet": instance_id, "endpoint": payload.get("endpoint"), "outcomes": []}
            )
            grouped["outcomes"].append(outcome)
        else:
            events[instance_id] = outcome
    told, missed = [], []
    for instance_id, event in events.items():
        try:
            await client.raise_event(instance_id, ROLLOUT_OUTCOME_EVENT, event)
            told.append(instance_id)
        except Exception as exc:  # noqa: BLE001 - one ended cycle must not keep the others from hearing
            log.warning("rollout_outcome to %s not delivered: %s", instance_id, exc)
            missed.append(instance_id)
    return {"told": told, "missed": missed}


ACTIVITIES = (
    fetch_data,
    fetch_batch_data,
    get_champion,
    get_job_status,
    get_job_metrics,
    get_job_test_errors,
    register_model,
    set_champion,
    set_champions,
    begin_create_endpoint,
    get_endpoint,
    begin_deployment,
    get_deployment,
    set_traffic,
    record_traffic,
    begin_delete_deployment,
    smoke_test,
    smoke_test_many,
    register_bundle,
    get_bundle,
    next_bundle_version,
)
# With the durable client binding: the rollout's orchestration reads and tells the cycles.
CLIENT_ACTIVITIES = (request_rollout, earlier_active_rollout, pending_rollouts, rollout_outcomes)

# The key of the structured failure result; the orchestrator's `call_activity` unwraps it.
ACTIVITY_ERROR = "activity_error"
# The key an activity's result carries when the traffic changed but its served-ledger record was lost.
LEDGER_WARNING = "ledger_warning"
# The one key of get_job_test_errors' result when the job's test_errors.json could not be read.
TEST_ERRORS_UNREADABLE = "test_errors_unreadable"
# Failures worth retrying: the platform said so, or the network did.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransientPlatformError, ConnectionError, TimeoutError)
# Third-party network errors (requests, curl_cffi under yfinance) are not builtin ConnectionErrors;
# they are known by their class names anywhere in the exception chain (a data source wraps them).
TRANSIENT_NAMES = ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "RateLimit")


def is_transient(exc: BaseException) -> bool:
    """A network failure, throttling or a platform's transient error, here or in the chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TRANSIENT_ERRORS) or any(
            name in cls.__name__ for cls in type(current).__mro__ for name in TRANSIENT_NAMES
        ):
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def report_failures(activity: Any) -> Any:
    """The activity as registered: a transient failure raises (Durable retries it), a busy endpoint
    returns ``{"activity_error": {"kind": "busy", ...}}`` (the orchestrator waits for the running
    operation, then tries again) and any other failure (bad request, missing entity, invalid input, a
    bug) returns ``{"activity_error": {"kind": "permanent", ...}}``: retrying it would only fail again."""

    def failure(error: Exception) -> dict[str, Any]:
        if isinstance(error, EndpointBusyError):
            kind = "busy"
        elif is_transient(error):
            raise error
        else:  # permanent by elimination: reported, not retried
            kind = "permanent"
        log.warning("activity %s failed (%s): %s", activity.__name__, kind, error)
        return {ACTIVITY_ERROR: {"kind": kind, "type": type(error).__name__, "message": str(error)[:2000]}}

    if inspect.iscoroutinefunction(activity):  # e.g. with a durable client binding: same signature

        @functools.wraps(activity)
        async def registered_async(payload: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await activity(payload, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - sorted by kind in failure()
                return failure(exc)

        return registered_async

    @functools.wraps(activity)
    def registered(payload: Any) -> Any:
        try:
            return activity(payload)
        except Exception as exc:  # noqa: BLE001 - sorted by kind in failure()
            return failure(exc)

    return registered


for _activity in ACTIVITIES:
    # Registering does not replace the module-level function: the plain functions stay callable.
    bp.activity_trigger(input_name="payload")(report_failures(_activity))
# With the durable client binding: submit_training reads its own status; the rollout reads and tells the cycles.
for _client_activity in (submit_training, *CLIENT_ACTIVITIES):
    bp.activity_trigger(input_name="payload")(
        bp.durable_client_input(client_name="client")(report_failures(_client_activity))
    )
