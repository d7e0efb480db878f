"""The quality gate: should the challenger (the model just trained) replace the champion?

A pure function of the training job's test metrics (`metrics.json` of the trainer). Which metrics it
reads, and which direction is better, are settings (`GateMetrics`, from `RETRAIN_GATE_*`); the defaults:
- `mae`: the challenger's mean absolute error on the test window (lower is better);
- `naive_mae`: the persistence forecast's (tomorrow = today) on the same window;
- `champion_mae`: the current champion's on the same window (present when a champion was given).

Rules (lower is better): deploy only if `metric <= baseline * (1 + baseline_margin)` and, when a champion
exists, `metric < champion` (higher is better: `metric >= baseline - margin * |baseline|` and
`metric > champion`). The first model needs only the baseline check. `force` deploys regardless and the
override is recorded. A metric that is missing or not finite fails its check with a reason; a missing or
non-finite challenger metric is an error, because without it there is nothing to judge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


class GateError(ValueError):
    """The metrics cannot be judged at all (no usable challenger `mae`, or a bad margin)."""


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


_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")


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
) -> GateDecision:
    """Judge the challenger's metrics; every check contributes a reason with its numbers."""
    names = names or GateMetrics()
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
                f"champion check failed: {c} is missing or not finite "
                f"({metrics.get(c)!r}); the challenger must be scored on the champion's test window"
            )
        else:
            ok = mae > champion_mae if higher else mae < champion_mae
            better, worse = (">", "<=") if higher else ("<", ">=")
            passed &= ok
            reasons.append(
                f"champion check {'passed' if ok else 'failed'}: {m} {mae:.6g} "
                f"{better if ok else worse} {c} {champion_mae:.6g}"
            )
    else:
        reasons.append("no champion yet: only the baseline check applies")

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
