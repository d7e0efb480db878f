"""The quality gate: should the challenger (the model just trained) replace the champion?

A pure function of the training job's test metrics (`metrics.json` of the trainer). Which metrics it
reads, and which direction is better, are settings (`GateMetrics`, from `RETRAIN_GATE_*`); the defaults:
- `mae`: the challenger's mean absolute error on the test window (lower is better);
- `naive_mae`: the persistence forecast's (tomorrow = today) on the same window;
- `champion_mae`: the current champion's on the same window (present when a champion was given).

The champion comparison is a named policy (`GatePolicy.champion`, setting `RETRAIN_GATE_POLICY`):
- `superiority`: the challenger replaces the champion only when it is better (with test errors:
  significantly better, one-sided Diebold-Mariano p < alpha);
- `non-inferiority`: the challenger replaces the champion unless it is worse than the champion's error
  x (1 + `noninferiority_margin`) (with test errors: significantly worse than the champion's errors scaled
  so, on the same days). A fresh model of similar skill then serves instead of an ageing one.

Fixed-margin rules (`decide`, lower is better): deploy only if `metric <= baseline * (1 + baseline_margin)`
and, when a champion exists, `metric < champion` (superiority) or `metric <= champion * (1 +
noninferiority_margin)` (non-inferiority); higher is better: `metric >= baseline - margin * |baseline|`
and `metric > champion` or `metric >= champion - noninferiority_margin * |champion|`. The first model
needs only the baseline check. `force` deploys regardless and the override is recorded. A metric that is
missing or not finite fails its check with a reason; a missing or non-finite challenger metric is an
error, because without it there is nothing to judge.

`GatePolicy()` (no arguments) is the gate of the code before policies existed (superiority, and a
baseline check that fails only on significance): what an orchestration input without the policy fields
replays. `GatePolicy.from_settings()` is what a new cycle uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class GateError(ValueError):
    """The metrics cannot be judged at all (no usable challenger `mae`, or a bad margin)."""


SUPERIORITY = "superiority"
NON_INFERIORITY = "non-inferiority"
POLICIES = (SUPERIORITY, NON_INFERIORITY)

# How the baseline check (the only check of the first model) judges a challenger with test errors:
# - "significance": fails only when significantly worse than naive x (1 + margin): a model 10 % worse than
#   persistence passes most 187-day windows, because that test has little power (the rule before policies);
# - "estimate-and-significance": the point estimate must also be within the margin
#   (mae <= naive_mae x (1 + margin)), so a clearly worse model fails even when the test cannot tell.
BASELINE_SIGNIFICANCE = "significance"
BASELINE_ESTIMATE_AND_SIGNIFICANCE = "estimate-and-significance"
BASELINE_RULES = (BASELINE_SIGNIFICANCE, BASELINE_ESTIMATE_AND_SIGNIFICANCE)


@dataclass(frozen=True)
class GatePolicy:
    """How the gate compares: the champion policy, its margin, the baseline rule (settings RETRAIN_GATE_*).

    The defaults are the gate before policies existed, so an orchestration input without these fields
    (started by the previous code, replayed) decides as it did; `from_settings` is what new cycles use."""

    champion: str = SUPERIORITY
    noninferiority_margin: float = 0.01  # only read by the non-inferiority policy
    baseline_rule: str = BASELINE_SIGNIFICANCE

    def __post_init__(self) -> None:
        if self.champion not in POLICIES:
            raise GateError(
                f"gate policy {self.champion!r} is unknown; use {' or '.join(POLICIES)} "
                "(setting RETRAIN_GATE_POLICY)"
            )
        margin = self.noninferiority_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 1:
            raise GateError(
                f"non-inferiority margin {margin!r} is invalid; use a fraction in [0, 1), e.g. 0.01 for "
                "1 % worse than the champion tolerated (setting RETRAIN_GATE_NONINFERIORITY_MARGIN)"
            )
        if self.baseline_rule not in BASELINE_RULES:
            raise GateError(
                f"baseline rule {self.baseline_rule!r} is unknown; use {' or '.join(BASELINE_RULES)}"
            )

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> GatePolicy:
        """The policy of a new cycle: RETRAIN_GATE_POLICY and RETRAIN_GATE_NONINFERIORITY_MARGIN, and the
        baseline rule with power (estimate and significance). A bad setting is a SettingsError."""
        from retrain.settings import SettingsError, get, get_float

        name = str(get("RETRAIN_GATE_POLICY", environ)).strip().lower()
        try:
            return cls(
                champion=name,
                noninferiority_margin=get_float("RETRAIN_GATE_NONINFERIORITY_MARGIN", environ),
                baseline_rule=BASELINE_ESTIMATE_AND_SIGNIFICANCE,
            )
        except GateError as exc:
            raise SettingsError(str(exc)) from None

    def describe(self) -> str:
        """The policy as reasons name it, e.g. `non-inferiority, margin 0.01`."""
        if self.champion == NON_INFERIORITY:
            return f"{NON_INFERIORITY}, margin {self.noninferiority_margin:g}"
        return SUPERIORITY

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    deploy: bool
    reasons: list[str] = field(default_factory=list)
    forced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"deploy": self.deploy, "reasons": list(self.reasons), "forced": self.forced}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        return cls(
            deploy=bool(data["deploy"]),
            reasons=list(data.get("reasons", [])),
            forced=bool(data.get("forced")),
        )


_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}\Z")


@dataclass(frozen=True)
class GateMetrics:
    """Which metrics the gate compares, and which direction is better (settings RETRAIN_GATE_*)."""

    metric: str = "mae"  # the challenger's score on the test days
    baseline: str = "naive_mae"  # the naive forecast's score on the same days
    champion: str = "champion_mae"  # the champion's score on the same days
    higher_is_better: bool = False

    def __post_init__(self) -> None:
        for role in ("metric", "baseline", "champion"):
            value = getattr(self, role)
            if not isinstance(value, str) or not _METRIC_NAME.match(value):
                raise GateError(
                    f"gate {role} metric name {value!r} is invalid; use a metric name the trainer writes "
                    "to metrics.json, e.g. mae, naive_mae, champion_mae"
                )
        if len({self.metric, self.baseline, self.champion}) != 3:
            raise GateError(
                f"gate metrics must be three different names, got {self.metric}, {self.baseline}, "
                f"{self.champion}"
            )

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> GateMetrics:
        from retrain.settings import get

        direction = str(get("RETRAIN_GATE_DIRECTION", environ)).strip().lower()
        if direction not in ("lower", "higher"):
            raise GateError(
                f"RETRAIN_GATE_DIRECTION={direction!r}: use lower (errors such as mae) or higher (scores)"
            )
        return cls(
            metric=str(get("RETRAIN_GATE_METRIC", environ)),
            baseline=str(get("RETRAIN_GATE_BASELINE_METRIC", environ)),
            champion=str(get("RETRAIN_GATE_CHAMPION_METRIC", environ)),
            higher_is_better=direction == "higher",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GateMetrics:
        return cls(**dict(data)) if data else cls()


def decide(
    metrics: Mapping[str, float],
    *,
    has_champion: bool,
    baseline_margin: float,
    force: bool = False,
    names: GateMetrics | None = None,
    policy: GatePolicy | None = None,
) -> GateDecision:
    """Judge the challenger's metrics with fixed margins; every check contributes a reason with its
    numbers, and the champion check names the policy (`policy`: default `GatePolicy()`, superiority)."""
    names = names or GateMetrics()
    policy = policy or GatePolicy()
    m, b, c = names.metric, names.baseline, names.champion
    higher = names.higher_is_better
    if (
        not isinstance(baseline_margin, int | float)
        or not math.isfinite(baseline_margin)
        or baseline_margin < 0
    ):
        raise GateError(
            f"baseline_margin must be a finite number >= 0 (e.g. 0.05 for 5 %), got {baseline_margin!r}"
        )
    mae = _number(metrics, m)
    if mae is None:
        raise GateError(
            f"metrics have no finite {m!r} (got {metrics.get(m)!r}); the training job must write "
            f"metrics.json with {m}, {b} and, with a champion, {c}"
        )

    reasons: list[str] = []
    passed = True

    naive_mae = _number(metrics, b)
    if naive_mae is None:
        passed = False
        reasons.append(f"baseline check failed: {b} is missing or not finite ({metrics.get(b)!r})")
    elif not higher:
        limit = naive_mae * (1 + baseline_margin)
        ok = mae <= limit
        passed &= ok
        reasons.append(
            f"baseline check {'passed' if ok else 'failed'}: {m} {mae:.6g} {'<=' if ok else '>'} "
            f"{b} {naive_mae:.6g} x (1 + {baseline_margin:g}) = {limit:.6g}"
        )
    else:
        limit = naive_mae - baseline_margin * abs(naive_mae)
        ok = mae >= limit
        passed &= ok
        reasons.append(
            f"baseline check {'passed' if ok else 'failed'}: {m} {mae:.6g} {'>=' if ok else '<'} "
            f"{b} {naive_mae:.6g} - {baseline_margin:g} x |{b}| = {limit:.6g}"
        )

    if has_champion:
        champion_mae = _number(metrics, c)
        if champion_mae is None:
            passed = False
            reasons.append(
                f"champion check ({policy.describe()}) failed: {c} is missing or not finite "
                f"({metrics.get(c)!r}); the challenger must be scored on the champion's test window"
            )
        elif policy.champion == NON_INFERIORITY:
            ni = policy.noninferiority_margin
            if higher:
                limit = champion_mae - ni * abs(champion_mae)
                ok = mae >= limit
                bound = f"{c} {champion_mae:.6g} - {ni:g} x |{c}| = {limit:.6g}"
            else:
                limit = champion_mae * (1 + ni)
                ok = mae <= limit
                bound = f"{c} {champion_mae:.6g} x (1 + {ni:g}) = {limit:.6g}"
            within, beyond = (">=", "<") if higher else ("<=", ">")
            passed &= ok
            reasons.append(
                f"champion check ({policy.describe()}) {'passed' if ok else 'failed'}: {m} {mae:.6g} "
                f"{within if ok else beyond} {bound}"
            )
        else:
            ok = mae > champion_mae if higher else mae < champion_mae
            better, worse = (">", "<=") if higher else ("<", ">=")
            passed &= ok
            reasons.append(
                f"champion check ({policy.describe()}) {'passed' if ok else 'failed'}: {m} {mae:.6g} "
                f"{better if ok else worse} {c} {champion_mae:.6g}"
            )
    else:
        reasons.append(_no_champion(policy))
    return _verdict(passed, reasons, force)


def _no_champion(policy: GatePolicy) -> str:
    return f"no champion yet: only the baseline check applies (the {policy.describe()} policy judges later challengers)"


def _verdict(passed: bool, reasons: list[str], force: bool) -> GateDecision:
    """The decision from the checks; `force` deploys regardless and records what the gate would have said."""
    if force:
        verdict = "would deploy" if passed else "would NOT deploy"
        reasons.append(f"forced: deploying regardless of the checks (the gate {verdict} on its own)")
        return GateDecision(deploy=True, reasons=reasons, forced=True)
    return GateDecision(deploy=passed, reasons=reasons, forced=False)


def _number(metrics: Mapping[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def decide_with_test_errors(
    metrics: Mapping[str, float],
    test_errors: Mapping[str, Any] | None,
    *,
    has_champion: bool,
    baseline_margin: float,
    level: float = 0.05,
    force: bool = False,
    names: GateMetrics | None = None,
    policy: GatePolicy | None = None,
) -> GateDecision:
    """The gate with a significance test on the per-day errors of the test window (`test_errors.json`).

    Diebold-Mariano (HLN small-sample correction, Newey-West variance; `retrain.monitoring.significance`):
    - baseline check: fails when the challenger is significantly WORSE than the naive forecast with the
      tolerated margin (its errors x (1 + baseline_margin); one-sided p < level); with the baseline rule
      `estimate-and-significance` also when the point estimate is beyond it (mae > naive_mae x (1 + margin));
    - champion check, by `policy.champion` (default `GatePolicy()`: superiority, the rule before policies):
      superiority passes only when the challenger is significantly BETTER than the champion (one-sided
      p < level); non-inferiority passes unless the challenger is significantly WORSE than the champion's
      errors x (1 + noninferiority_margin) on the same days.
    Each reason carries the statistic and the p-value; the champion check names the policy. Without usable
    test errors (a trainer that does not write test_errors.json) this is `decide` with its fixed margins
    and the same policy, and a reason says so. The test is on absolute errors, so it judges the default
    metrics (mae vs naive_mae and champion_mae); other gate metrics (`names`) are judged by `decide`."""
    from retrain.monitoring.significance import SignificanceError, diebold_mariano

    if not isinstance(level, int | float) or not 0 < level < 1:
        raise GateError(f"the significance level must be a number between 0 and 1 (e.g. 0.05), got {level!r}")
    names = names or GateMetrics()
    policy = policy or GatePolicy()

    def fixed_margin(note: str, names: GateMetrics | None = None) -> GateDecision:
        fallback = decide(
            metrics,
            has_champion=has_champion,
            baseline_margin=baseline_margin,
            force=force,
            names=names,
            policy=policy,
        )
        return GateDecision(fallback.deploy, [note, *fallback.reasons], fallback.forced)

    if names != GateMetrics():
        return fixed_margin(
            f"no significance test: it judges absolute errors (mae), the gate metric is {names.metric}", names
        )
    ni = policy.noninferiority_margin
    try:
        actual = _series(test_errors, "actual")
        model = _series(test_errors, "model") - actual
        naive = _series(test_errors, "naive") - actual
        champion_values = (test_errors or {}).get("champion")
        champion = _series(test_errors, "champion") - actual if champion_values is not None else None
        # The naive errors scaled by (1 + margin): the test asks whether the challenger is worse than the
        # tolerated band, not than persistence itself (a model 1 % worse every day is "significantly" worse).
        vs_naive = diebold_mariano(model, naive * (1 + baseline_margin))
        # Non-inferiority scales the champion's errors the same way: worse than the tolerated band.
        champion_band = 1 + ni if policy.champion == NON_INFERIORITY else 1.0
        vs_champion = diebold_mariano(model, champion * champion_band) if champion is not None else None
    except (SignificanceError, GateError, ValueError) as exc:
        return fixed_margin(f"no significance test ({exc}); the fixed margin applies")
    if has_champion and vs_champion is None:
        return fixed_margin(
            "no significance test: test_errors.json has no champion forecasts; the fixed margin applies"
        )

    mae = float(np.mean(np.abs(model)))
    naive_mae = float(np.mean(np.abs(naive)))
    reasons: list[str] = []
    worse = vs_naive.p_a_worse < level
    dm_naive = (
        f"Diebold-Mariano {vs_naive.statistic:.3f} (n={vs_naive.n}), p(worse than naive x "
        f"{1 + baseline_margin:g}) = {vs_naive.p_a_worse:.4f} {'<' if worse else '>='} {level:g}"
        + ("" if worse else ": not significantly worse")
    )
    if policy.baseline_rule == BASELINE_ESTIMATE_AND_SIGNIFICANCE:
        limit = naive_mae * (1 + baseline_margin)
        within = mae <= limit
        passed = within and not worse
        reasons.append(
            f"baseline check {'passed' if passed else 'failed'}: mae {mae:.6g} {'<=' if within else '>'} "
            f"naive_mae {naive_mae:.6g} x (1 + {baseline_margin:g}) = {limit:.6g}"
            f"{'' if within else ' (point estimate beyond the margin)'}; {dm_naive}"
        )
    else:
        passed = not worse
        reasons.append(
            f"baseline check {'failed' if worse else 'passed'}: mae {mae:.6g} vs naive_mae "
            f"{naive_mae:.6g} x (1 + {baseline_margin:g}), {dm_naive}"
        )
    if has_champion and vs_champion is not None and champion is not None:
        champion_mae = float(np.mean(np.abs(champion)))
        if policy.champion == NON_INFERIORITY:
            inferior = vs_champion.p_a_worse < level
            passed &= not inferior
            reasons.append(
                f"champion check ({policy.describe()}) {'failed' if inferior else 'passed'}: mae {mae:.6g} "
                f"vs champion_mae {champion_mae:.6g} x (1 + {ni:g}), Diebold-Mariano "
                f"{vs_champion.statistic:.3f} (n={vs_champion.n}), p(worse than champion x {1 + ni:g}) = "
                f"{vs_champion.p_a_worse:.4f} {'<' if inferior else '>='} {level:g}"
                + ("" if inferior else ": not significantly worse")
            )
        else:
            better = vs_champion.p_a_better < level
            passed &= better
            reasons.append(
                f"champion check ({policy.describe()}) {'passed' if better else 'failed'}: mae {mae:.6g} "
                f"vs champion_mae {champion_mae:.6g}, Diebold-Mariano {vs_champion.statistic:.3f} "
                f"(n={vs_champion.n}), p(better than champion) = {vs_champion.p_a_better:.4f} "
                f"{'<' if better else '>='} {level:g}" + ("" if better else ": not significantly better")
            )
    else:
        reasons.append(_no_champion(policy))
    return _verdict(passed, reasons, force)


def _series(test_errors: Mapping[str, Any] | None, key: str) -> np.ndarray:
    if not isinstance(test_errors, Mapping):
        raise GateError("no test_errors.json")
    values = test_errors.get(key)
    if not isinstance(values, list) or not values:
        raise GateError(f"test_errors.json has no list {key!r}")
    array = np.asarray(values, dtype=np.float64)
    if array.size != len(test_errors.get("actual") or []):
        raise GateError(f"test_errors.json: {key!r} has {array.size} values, 'actual' has another count")
    return array
