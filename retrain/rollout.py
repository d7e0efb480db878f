"""The rollout of an endpoint: one orchestration per endpoint at a time, batching the challengers that wait.

A cycle whose gate accepts its challenger does not deploy it: it marks itself `awaiting_rollout` in its
custom status and asks for its endpoint's rollout (`workflow.await_rollout`). This orchestration then

    guard: the earliest active rollout of the endpoint goes on, a later one ends at once
    -> pending_rollouts: the Running cycles awaiting this endpoint (one challenger per ticker, the newest;
       an older one of the same ticker is answered "left out: superseded"; one already served, "deployed")
    -> none: done. Else: endpoint -> what serves (slot, its bundle k)
    -> bundle k+1 = k with the changed tickers' models -> idle slot at 0 %
    -> smoke test EACH changed ticker on the idle slot (and a sample of unchanged ones)
       a changed ticker that fails is LEFT OUT: bundle k+2 without it (parent k), redeploy, smoke again
    -> canary % (with an old slot) -> smoke the changed tickers on the new slot and through the stable URL
    -> 100 % -> each changed ticker's champion -> retire the old slot
    (each smoke phase is ONE `smoke_test_many` activity, batch requests to the scorer, and the champions
    ONE `set_champions`, per `PER_ACTIVITY` tickers: the history grows per phase, not per ticker, since
    every episode replays all of it)
    any failure once traffic moved: traffic back to the old slot (bundle k serves), every changed cycle fails
    -> rollout_outcomes: the `rollout_outcome` event to each cycle (deployed / left_out / failed, and why)
    -> continue_as_new: the next batch (challengers that arrived meanwhile), with a fresh history.

A fleet cycle (retrain/fleet.py) awaits its endpoints the same way, in the fleet form of the status (the
endpoint, the fleet and the batches whose outputs hold its challengers): its challengers join the batch
like any cycle's, and it hears ONE `rollout_outcome` per endpoint with every ticker's outcome.

Why discovery (the cycles' own status) rather than a singleton fed by events or a fan-in: an event raised
to an instance that has just completed is lost, and how continue_as_new carries unprocessed events
differs between hosts; a queue of our own would be a new store in both worlds. A cycle stays
`awaiting_rollout` until it has its outcome, and asks again on a timer, so none is lost (docs/architecture.md).

Deterministic: every effect is an activity, time from the context, the settings from the input (copied
from the requesting cycle's input by `request_rollout`, never read during replay).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from retrain import naming
from retrain.ports import BundleRef, EndpointState, is_bundle
from retrain.progress import Progress
from retrain.vocabulary import TAG_FITTED_DATA_END, TAG_MODEL_FAMILY, TAG_TRAINER
from retrain.workflow import (
    _CYCLE_WARNINGS,
    WorkflowFailed,
    _reason,
    call_activity,
    deploy_to_idle_slot,
    ensure_endpoint,
    retire_old_slot,
    roll_back,
    set_traffic_and_wait,
)

ROLLOUT_ORCHESTRATOR = "rollout_orchestrator"
ROLLOUT_GUARD_ACTIVITY = "earlier_active_rollout"
# How many unchanged tickers are smoke-tested on the idle slot (they must still answer with their model).
SMOKE_SAMPLE = 3
DEPLOYED, LEFT_OUT, FAILED = "deployed", "left_out", "failed"
STATUS_OUTCOMES = 10  # outcomes listed in the rollout's custom status (all of them go to their cycles)
# Tickers per `smoke_test_many` / `set_champions` activity: one activity per phase up to this many (a
# fleet batch of 200 and the unchanged sample fit), so that a call stays well inside the Functions
# timeout (Azure's set_champion is a few registry calls per model, ~1-2 s).
PER_ACTIVITY = 250
# The per-ticker activities of the code before the batched ones: a rollout whose history scheduled one
# (started by that code, replayed by this) keeps calling them, so its replay schedules what it did.
PER_TICKER_ACTIVITIES = ("smoke_test", "set_champion")
# The tags of a model that register_bundle may read (the bundle entry's family and fitted-data end); the
# other lineage tags stay in the registry and out of this orchestration's history.
BUNDLE_ENTRY_TAGS = (TAG_MODEL_FAMILY, TAG_TRAINER, TAG_FITTED_DATA_END)

Task = Generator[Any, Any, Any]


@dataclass(frozen=True)
class RolloutInput:
    """The rollout's settings, fixed when it starts (from the requesting cycle's input)."""

    endpoint: str
    canary_percent: int = 10
    smoke_max_latency_ms: float = 2000.0
    keep_old_slot: bool = False
    deploy_timeout_minutes: float = 60.0
    # The cycles the previous iteration answered (`answer_key` -> model version): their status may still
    # say `awaiting_rollout` until they process the event, and must not be rolled out twice.
    answered: dict[str, str] = field(default_factory=dict)
    # The workflow's endpoint steps read these: a rollout always has today's behaviour.
    rollback_waits_for_old_slot: bool = True
    record_traffic_when_applied: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutInput:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Challenger:
    """A cycle awaiting the rollout, as `pending_rollouts` found it in the cycle's custom status."""

    instance_id: str
    ticker: str
    model: dict[str, Any]  # ModelRef dict
    closes: list[float]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Challenger:
        return cls(data["instance_id"], data["ticker"], data["model"], list(data.get("closes") or []))

    def outcome(self, outcome: str, reason: str, **extra: Any) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "ticker": self.ticker,
            "model": self.model,
            "outcome": outcome,
            "reason": reason,
            **extra,
        }


def answer_key(instance_id: str, ticker: str) -> str:
    """The key of `RolloutInput.answered`: a cycle's id, or "<fleet id>/<ticker>" for a fleet's challenger
    (a fleet holds many; "/" is in no instance id)."""
    return f"{instance_id}/{ticker}" if naming.parse_fleet_instance_id(instance_id) else instance_id


class _Rollout:
    """One rollout iteration's running state: what the workflow's endpoint steps need (`EndpointRun`)."""

    def __init__(self, context: df.DurableOrchestrationContext):
        self.context = context
        self.input = RolloutInput.from_dict(context.get_input() or {})
        self.endpoint = self.input.endpoint
        self.instance_id = context.instance_id
        self.deploy_timeout = timedelta(minutes=self.input.deploy_timeout_minutes)
        # The serving bundle and the new one: they go with this rollout's ledger records (deploy,
        # traffic), so the served ledger stores each ticker map once without asking the registry.
        self.bundles: list[dict[str, Any]] = []
        self.progress = Progress(context, "")
        del self.progress.status["ticker"]
        self.progress.status.update({"endpoint": self.endpoint, "rollout": True, "outcomes": []})
        _CYCLE_WARNINGS[context] = self.progress.status["warnings"]
        self.out: dict[str, Any] = {
            "rollout": self.instance_id,
            "endpoint": self.endpoint,
            "scoring_uri": None,
        }
        self.per_ticker = started_per_ticker(context)

    def call(self, activity: str, payload: dict[str, Any]) -> Task:
        return (yield from call_activity(self.context, activity, payload))

    def set_traffic(self, traffic: dict[str, int]) -> Task:
        return (
            yield from set_traffic_and_wait(
                self.context,
                self.endpoint,
                traffic,
                self.deploy_timeout,
                instance_id=self.instance_id,
                record_when_applied=True,
                bundles=self.bundles,
            )
        )

    def step(self, name: str, **ids: Any) -> None:
        self.progress.step(name, **ids)

    def note(self, **ids: Any) -> None:
        self.progress.note(**ids)


def started_per_ticker(context: df.DurableOrchestrationContext) -> bool:
    """Whether this execution's history scheduled a per-ticker smoke test or champion (the code before
    `smoke_test_many` / `set_champions`): its replay then goes on per ticker, as that code did. Read from
    the history, so every episode of an execution decides the same way."""
    from azure.durable_functions.models.history import HistoryEventType

    return any(
        e.event_type == HistoryEventType.TASK_SCHEDULED and e.Name in PER_TICKER_ACTIVITIES
        for e in getattr(context, "histories", None) or []
    )


def rollout_orchestrator(context: df.DurableOrchestrationContext) -> Task:
    """One batch of the endpoint's rollout (see the module docstring), then the next as a new generation."""
    run = _Rollout(context)
    earlier = yield from run.call(
        ROLLOUT_GUARD_ACTIVITY, {"endpoint": run.endpoint, "instance_id": run.instance_id}
    )
    if earlier:  # one rollout per endpoint: the earlier one finds this one's challengers too
        run.progress.finish("skipped", earlier=earlier)
        return {**run.out, "status": "skipped", "earlier": earlier}
    run.step("pending_rollouts")
    found = yield from run.call(
        "pending_rollouts", {"endpoint": run.endpoint, "answered": run.input.answered}
    )
    challengers = [Challenger.from_dict(c) for c in found.get("challengers") or []]
    outcomes = [
        Challenger.from_dict(c).outcome(
            LEFT_OUT, f"superseded by the newer challenger of {c['superseded_by']}"
        )
        for c in found.get("superseded") or []
    ]
    if challengers:
        outcomes += yield from roll_out_batch(run, challengers)
    if not outcomes:
        run.progress.finish("idle")
        return {**run.out, "status": "idle"}
    run.step("notify_cycles")
    if run.progress.status["warnings"]:  # e.g. a served-ledger record lost: each cycle's status says so
        outcomes = [{**o, "warnings": list(run.progress.status["warnings"])} for o in outcomes]
    # The first few and the counts: a fleet's hundreds of tickers would pass Azure's 16 KB status cap.
    run.progress.status["outcomes"] = [
        {k: o.get(k) for k in ("instance_id", "ticker", "outcome", "reason", "bundle_version")}
        for o in outcomes[:STATUS_OUTCOMES]
    ]
    run.progress.status["outcome_counts"] = {
        kind: sum(o["outcome"] == kind for o in outcomes) for kind in (DEPLOYED, LEFT_OUT, FAILED)
    }
    # A fleet's challengers hear their outcomes together: one event per fleet (activities.rollout_outcomes).
    yield from run.call("rollout_outcomes", {"outcomes": outcomes, "endpoint": run.endpoint})
    run.progress.finish("done")
    answered = {answer_key(o["instance_id"], o["ticker"]): str(o["model"]["version"]) for o in outcomes}
    context.continue_as_new({**run.input.to_dict(), "answered": answered})
    return None


def roll_out_batch(run: _Rollout, challengers: list[Challenger]) -> Task:
    """Bundle k+1 with the challengers, through the idle slot to all traffic. Returns each one's outcome;
    never raises (every waiting cycle must hear how its challenger fared)."""
    try:
        endpoint = yield from ensure_endpoint(run)
        old_slot, new_slot = endpoint.serving_slot(), endpoint.idle_slot()
        current = yield from serving_bundle(run, endpoint, old_slot)
        run.note(old_slot=old_slot, new_slot=new_slot, serving_bundle=current.version if current else None)
        run.bundles = [ledger_bundle(current)] if current else []
    except Exception as exc:  # noqa: BLE001 - nothing moved: each cycle hears why
        reason = (
            f"{exc if isinstance(exc, WorkflowFailed) else _reason(exc)}; the previous bundle keeps serving"
        )
        return [c.outcome(FAILED, reason, rollout=run.instance_id) for c in challengers]
    common = {"rollout": run.instance_id, "slot": old_slot, "old_slot": None}
    outcomes: list[dict[str, Any]] = []
    changed: list[Challenger] = []
    for c in challengers:
        served = current.model_of(c.ticker) if current else None
        if served is not None and (served.name, served.version) == (c.model["name"], str(c.model["version"])):
            # Already in the bundle that serves (its event was lost after an earlier rollout): idempotent.
            outcomes.append(c.outcome(DEPLOYED, "already served", **common, **_bundle_fields(current, run)))
        else:
            changed.append(c)
    if not changed:
        return outcomes
    try:
        bundle, left_out = yield from bundle_on_idle_slot(run, endpoint, new_slot, current, changed)
    except Exception as exc:  # noqa: BLE001 - the idle slot never had traffic: nothing to roll back
        reason = (
            f"{exc if isinstance(exc, WorkflowFailed) else _reason(exc)}; the previous bundle keeps serving"
        )
        return outcomes + [c.outcome(FAILED, reason, rollout=run.instance_id) for c in changed]
    outcomes += [
        c.outcome(
            LEFT_OUT, f"{left_out[c.ticker]}; its previous model keeps serving", rollout=run.instance_id
        )
        for c in changed
        if c.ticker in left_out
    ]
    going = [c for c in changed if c.ticker not in left_out]
    if bundle is None:
        return outcomes
    try:
        held_before = set(current.tickers) if current else set()
        yield from shift_traffic(run, bundle, going, old_slot, new_slot, held_before)
    except WorkflowFailed as exc:  # rolled back (or could not be: the reason says what serves)
        return outcomes + [c.outcome(FAILED, str(exc), rollout=run.instance_id) for c in going]
    try:
        run.step("set_champion")
        yield from set_champions(run, going)
    except Exception as exc:  # noqa: BLE001 - the bundle serves; the registry's champion lags: say so
        run.progress.status["warnings"].append(f"set_champion failed: {_reason(exc)}")
    if old_slot is not None:
        yield from retire_old_slot(run, old_slot)
    done = {**_bundle_fields(bundle, run), "rollout": run.instance_id, "slot": new_slot, "old_slot": old_slot}
    return outcomes + [c.outcome(DEPLOYED, f"serves in bundle {bundle.version}", **done) for c in going]


def set_champions(run: _Rollout, going: list[Challenger]) -> Task:
    """Each deployed challenger becomes its name's champion: `set_champions` per `PER_ACTIVITY` models.
    Models the platform refused are a warning (the bundle serves them; the registry's champion lags)."""
    if run.per_ticker:
        for c in going:
            yield from run.call("set_champion", {"model": c.model})
        return
    models = [brief_model(c.model, ()) for c in going]
    for start in range(0, len(models), PER_ACTIVITY):
        answer = yield from run.call("set_champions", {"models": models[start : start + PER_ACTIVITY]})
        for model, why in sorted((answer.get("failed") or {}).items()):
            run.progress.status["warnings"].append(f"set_champion of {model} failed: {why}")


def brief_model(model: dict[str, Any], tags: tuple[str, ...] = BUNDLE_ENTRY_TAGS) -> dict[str, Any]:
    """A ModelRef dict with only the `tags` an activity reads: what it costs the history is its name and
    version, not its lineage."""
    kept = {k: v for k, v in (model.get("tags") or {}).items() if k in tags}
    return {"name": model["name"], "version": str(model["version"]), "tags": kept}


def ledger_bundle(bundle: BundleRef) -> dict[str, Any]:
    """What the served ledger keeps of a bundle (its identity, parent and ticker map), for the endpoint
    activities' records: not the orchestration ids nor the changed list."""
    return {
        "name": bundle.name,
        "version": bundle.version,
        "endpoint": bundle.endpoint,
        "parent_version": bundle.parent_version,
        "tickers": bundle.tickers,
    }


def _bundle_fields(bundle: BundleRef | None, run: _Rollout) -> dict[str, Any]:
    return {
        "bundle": bundle.name if bundle else None,
        "bundle_version": bundle.version if bundle else None,
        "scoring_uri": run.out.get("scoring_uri"),
    }


def serving_bundle(run: _Rollout, endpoint: EndpointState, old_slot: str | None) -> Task:
    """The bundle the serving slot serves (None: nothing serves, or a single model from older code)."""
    model = endpoint.deployments.get(old_slot) if old_slot else None
    if not is_bundle(model):
        return None
    assert model is not None
    found = yield from run.call("get_bundle", {"endpoint": run.endpoint, "version": model["version"]})
    if found is None:
        raise WorkflowFailed(
            f"endpoint {run.endpoint} serves bundle {model['version']}, which is not registered"
        )
    return BundleRef.from_dict(found)


def bundle_on_idle_slot(
    run: _Rollout,
    endpoint: EndpointState,
    new_slot: str,
    current: BundleRef | None,
    changed: list[Challenger],
) -> Task:
    """Register the next bundle (the current one with the changed tickers), deploy it to the idle slot at
    0 % and smoke-test each changed ticker there, and a sample of unchanged ones. Changed tickers that
    fail are left out: the next version without them (parent: the current one), deployed and tested
    again. Returns (the bundle that passed, or None when every changed ticker failed; {ticker: why})."""
    left_out: dict[str, str] = {}
    after = current.version if current else "0"
    while True:
        going = [c for c in changed if c.ticker not in left_out]
        if not going:
            return None, left_out
        run.step("register_bundle")
        version = (yield from run.call("next_bundle_version", {"endpoint": run.endpoint, "after": after}))[
            "version"
        ]
        bundle = BundleRef.from_dict(
            (
                yield from run.call(
                    "register_bundle",
                    {
                        "endpoint": run.endpoint,
                        "version": version,
                        "parent": current.to_dict() if current else None,
                        "changes": {c.ticker: brief_model(c.model) for c in going},
                        # each once: a fleet's challengers share its id
                        "orchestration_ids": list(
                            dict.fromkeys([run.instance_id, *(c.instance_id for c in going)])
                        ),
                    },
                )
            )
        )
        run.note(bundle=bundle.name, bundle_version=bundle.version)
        run.bundles = [*([ledger_bundle(current)] if current else []), ledger_bundle(bundle)]
        yield from deploy_to_idle_slot(run, endpoint, new_slot, bundle.as_model().to_dict())
        run.step("smoke_test")
        unchanged = sorted(set(bundle.tickers) - {c.ticker for c in going})[:SMOKE_SAMPLE]
        sample = []  # the rest of the bundle must still answer with its own model
        for ticker in unchanged:
            model = bundle.model_of(ticker)
            assert model is not None
            sample.append(_test(ticker, going[0].closes, [model.version], plausible=False))
        if run.per_ticker:  # as the code before: the changed tickers, then the sample up to a failure
            failures, verdicts = yield from smoke_changed(run, going, new_slot, expect_new=True)
            for test in sample:
                verdicts.update((yield from smoke_many(run, [test], new_slot)))
                if not verdicts[test["ticker"]].get("ok"):
                    break
        else:  # one activity: the changed tickers and the sample
            failures, verdicts = yield from smoke_changed(run, going, new_slot, expect_new=True, also=sample)
        for ticker in unchanged:
            if ticker in verdicts and not verdicts[ticker].get("ok"):
                raise WorkflowFailed(
                    f"bundle {bundle.version} on slot {new_slot}: unchanged ticker {ticker}: "
                    f"{verdicts[ticker].get('reason')}"
                )
        if not failures:
            return bundle, left_out
        left_out.update(failures)
        after = bundle.version


def _test(ticker: str, closes: list[float], versions: list[str], plausible: bool = True) -> dict[str, Any]:
    return {"ticker": ticker, "closes": closes, "expect_versions": versions, "plausible": plausible}


def smoke_many(run: _Rollout, tests: list[dict[str, Any]], slot: str | None) -> Task:
    """{ticker: verdict} of `tests` on `slot` (None: the stable URL): one `smoke_test_many` activity per
    `PER_ACTIVITY` tests (a `smoke_test` per test for a rollout started per ticker, see `per_ticker`)."""
    common = {"endpoint": run.endpoint, "slot": slot, "max_latency_ms": run.input.smoke_max_latency_ms}
    verdicts: dict[str, dict[str, Any]] = {}
    if run.per_ticker:
        for test in tests:
            verdicts[test["ticker"]] = yield from run.call("smoke_test", {**common, **test})
        return verdicts
    for start in range(0, len(tests), PER_ACTIVITY):
        chunk = tests[start : start + PER_ACTIVITY]
        verdicts.update((yield from run.call("smoke_test_many", {**common, "tests": chunk})))
    return verdicts


def smoke_changed(
    run: _Rollout,
    going: list[Challenger],
    slot: str | None,
    expect_new: bool,
    also: list[dict[str, Any]] | None = None,
) -> Task:
    """Each changed ticker's smoke test (and the `also` tests, in the same requests); returns ({ticker:
    why} for the changed tickers that failed, every verdict). Through the stable URL during a canary
    (`expect_new` False) either the new model or the one it replaces may answer."""
    tests = [
        _test(c.ticker, c.closes, [str(c.model["version"]), *([] if expect_new else ["*"])]) for c in going
    ]
    verdicts = yield from smoke_many(run, [*tests, *(also or [])], slot)
    for test in [*tests, *(also or [])]:  # a verdict missing is a failure, never a pass
        verdicts.setdefault(test["ticker"], {"ok": False, "reason": "no verdict came back"})
    failures = {
        c.ticker: f"smoke test of {c.ticker} on slot {slot or 'endpoint'}: {verdicts[c.ticker].get('reason')}"
        for c in going
        if not verdicts[c.ticker].get("ok")
    }
    return failures, verdicts


def shift_traffic(
    run: _Rollout,
    bundle: BundleRef,
    going: list[Challenger],
    old_slot: str | None,
    new_slot: str,
    held_before: set[str],
) -> Task:
    """Canary (with an old slot) -> smoke -> 100 % (-> smoke through the live URL for a first bundle).
    Any failure rolls traffic back to the old slot (`workflow.roll_back`, which always raises)."""
    canary = run.input.canary_percent
    try:
        if old_slot is not None and 0 < canary < 100:
            run.step("canary")
            split = {old_slot: 100 - canary, new_slot: canary}
            yield from run.set_traffic(split)
            run.note(traffic=split)
            run.step("smoke_test_canary")
            # Through the stable URL the old bundle may answer: only for the tickers it holds.
            held = [c for c in going if c.ticker in held_before]
            for slot, tested, expect_new in ((new_slot, going, True), (None, held, False)):
                if not tested:
                    continue
                failures, _ = yield from smoke_changed(run, tested, slot, expect_new)
                if failures:
                    raise WorkflowFailed("; ".join(failures.values()))
        run.step("promote")
        traffic = {new_slot: 100, **({old_slot: 0} if old_slot else {})}
        promoted = yield from run.set_traffic(traffic)
        run.out["scoring_uri"] = promoted.get("scoring_uri") or run.out["scoring_uri"]
        run.note(traffic=traffic)
        if old_slot is None or not set(c.ticker for c in going) <= held_before:
            run.step("smoke_test_live")  # a ticker new to the endpoint is heard through its URL only now
            failures, _ = yield from smoke_changed(run, going, None, expect_new=True)
            if failures:
                raise WorkflowFailed("; ".join(failures.values()))
    except Exception as exc:  # noqa: BLE001 - any failure once traffic moved rolls it back
        failed = (
            f"rollout of bundle {bundle.name}:{bundle.version} to slot {new_slot} failed ({_reason(exc)})"
        )
        yield from roll_back(run, failed, old_slot, new_slot)


__all__ = [
    "ROLLOUT_GUARD_ACTIVITY",
    "answer_key",
    "ROLLOUT_ORCHESTRATOR",
    "Challenger",
    "RolloutInput",
    "rollout_orchestrator",
]
