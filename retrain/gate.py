"""The quality gate: should the challenger (the model just trained) replace the champion?

A pure function of the training job's test metrics (`metrics.json` of `trainer/train.py`):
- `mae`: the challenger's mean absolute error on the test window;
- `naive_mae`: the persistence forecast's (tomorrow = today) on the same window;
- `champion_mae`: the current champion's on the same window (present when a champion was given).

Rules: deploy only if `mae <= naive_mae * (1 + baseline_margin)` and, when a champion exists,
`mae < champion_mae`. The first model needs only the baseline check. `force` deploys regardless and the
override is recorded. A metric that is missing or not finite fails its check with a reason; a missing or
non-finite `mae` is an error, because without it there is nothing to judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
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


def decide(
    metrics: Mapping[str, float], *, has_champion: bool, baseline_margin: float, force: bool = False
) -> GateDecision:
    """Judge the challenger's metrics; every check contributes a reason with its numbers."""
    if (
        not isinstance(baseline_margin, int | float)
        or not math.isfinite(baseline_margin)
        or baseline_margin < 0
    ):
        raise GateError(
            f"baseline_margin must be a finite number >= 0 (e.g. 0.05 for 5 %), got {baseline_margin!r}"
        )
    mae = _number(metrics, "mae")
    if mae is None:
        raise GateError(
            f"metrics have no finite 'mae' (got {metrics.get('mae')!r}); the training job must write "
            "metrics.json with mae, naive_mae and, with a champion, champion_mae"
        )

    reasons: list[str] = []
    passed = True

    naive_mae = _number(metrics, "naive_mae")
    if naive_mae is None:
        passed = False
        reasons.append(
            f"baseline check failed: naive_mae is missing or not finite ({metrics.get('naive_mae')!r})"
        )
    else:
        limit = naive_mae * (1 + baseline_margin)
        ok = mae <= limit
        passed &= ok
        reasons.append(
            f"baseline check {'passed' if ok else 'failed'}: mae {mae:.6g} {'<=' if ok else '>'} "
            f"naive_mae {naive_mae:.6g} x (1 + {baseline_margin:g}) = {limit:.6g}"
        )

    if has_champion:
        champion_mae = _number(metrics, "champion_mae")
        if champion_mae is None:
            passed = False
            reasons.append(
                "champion check failed: champion_mae is missing or not finite "
                f"({metrics.get('champion_mae')!r}); the challenger must be scored on the champion's test window"
            )
        else:
            ok = mae < champion_mae
            passed &= ok
            reasons.append(
                f"champion check {'passed' if ok else 'failed'}: mae {mae:.6g} "
                f"{'<' if ok else '>='} champion_mae {champion_mae:.6g}"
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
