"""The custom status of a retraining cycle, which ``GET /api/retrain/{id}`` and `retrain run` follow: the
current step, per-step times from the orchestration's replay-safe clock, and the ids found on the way
(see docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import azure.durable_functions as df


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
        return step_timings(self.status["steps"])


def step_timings(steps: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per step name, summed over the steps of a custom status (a step may run more than once;
    a step still running counts 0): the `timings_s` of the orchestrator's output and of `retrain run`."""
    totals: dict[str, float] = {}
    for s in steps:
        totals[s["step"]] = round(totals.get(s["step"], 0.0) + (s.get("seconds") or 0.0), 3)
    return totals
