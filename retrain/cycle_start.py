"""One way in: every trigger starts a fleet cycle here (issue 22, "One way in"; a single ticker is a
fleet of one).

The HTTP route (`POST /api/retrain`, `{"ticker"}` and `{"tickers"}` alike), the timer, Azure ML model
monitoring's breach (triggers.py) and the monitors before their sub-orchestrations (monitoring/) all go
through this module, so "validate the ticker(s), check for a running cycle or fleet, build the id and
input, start" is written once:

- `start_fleet(client, tickers, trigger, ...)`: a fleet cycle (`fleet.FLEET_ORCHESTRATOR`) over the
  tickers; one ticker is a fleet of one. The held tickers are reported in `skipped` (the fleet's own guard
  skips them again and says so in its output); refused when every ticker is held (for a fleet of one: when
  its ticker is held).
- With `instance_id` (the timer's weekly ids): an instance of that id that exists already, finished or
  not, is found and left alone (`existing`); a second firing in the same ISO week does nothing.

No trigger starts the per-ticker `retrain_orchestrator` any more (it stays registered so that cycles
started by older code replay and finish); `cycle_input` still builds its input for the legacy monitor
path (an in-flight monitor started by older code) and for `triggers.parse_retrain_request`.

Checking before starting is for a clear answer, not for safety: each orchestration's own guard (its first
activity) is what keeps one cycle per ticker across workers, and `cycle_guard` sees both kinds of holders
(a fleet, or a single cycle of older code still running). Within this worker the starts of one ticker are
serialized (`triggers.start_lock`; a fleet takes its tickers' locks in sorted order, so two fleets never
deadlock), so two requests at once get "started" and "busy", never two starts.

Bad input raises `InvalidStart` (a ValueError saying what to send); the store's failures propagate (the
HTTP routes turn them into 503s).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df

from retrain import cycle_guard, naming

log = logging.getLogger(__name__)


class InvalidStart(ValueError):
    """A start we cannot make from what was sent or configured; the message says what to send instead."""


@dataclass(frozen=True)
class StartResult:
    """What a start did.

    - `instance_id`: the instance started, or found (`existing`); None when refused.
    - `started`: this call started it.
    - `existing`: an instance with that id already existed (the timer's second firing in a week, or two
      starts in the same instant); it was left alone.
    - `skipped`: ticker -> the id of the active cycle or fleet holding it (a fleet goes on without them).
    - `refused`: why nothing was started (every ticker held), else None.
    - `fleet`: always true (kept in the dict for callers that read it)."""

    instance_id: str | None
    started: bool
    existing: bool = False
    skipped: dict[str, str] = field(default_factory=dict)
    refused: str | None = None
    fleet: bool = True  # every start is a fleet's now (a single ticker is a fleet of one)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "started": self.started,
            "existing": self.existing,
            "skipped": dict(self.skipped),
            "refused": self.refused,
            "fleet": self.fleet,
        }


# ------------------------------------------------------------------------------------------ inputs


def cycle_input(
    ticker: str, trigger: str, *, reason: str | None = None, environ: Any = None, **overrides: Any
) -> dict[str, Any]:
    """A single cycle's input under the current settings with `overrides`, validated (InvalidStart)."""
    from retrain.trainers import TrainerError
    from retrain.workflow import MAX_REASON_CHARS, CycleInput, InvalidCycleInput, validate_cycle_input

    symbol = _ticker(ticker)
    try:
        cycle = CycleInput.from_settings(
            symbol, trigger, environ, reason=reason[:MAX_REASON_CHARS] if reason else None, **overrides
        )
        return validate_cycle_input(cycle.to_dict()).to_dict()
    except (InvalidCycleInput, TrainerError) as exc:
        raise InvalidStart(f"{exc} (from the request or the settings)") from None


def fleet_input(
    tickers: Iterable[str], trigger: str, *, reason: str | None = None, environ: Any = None, **overrides: Any
) -> dict[str, Any]:
    """A fleet's input over `tickers` (canonical, unique, order kept) under the current settings with
    `overrides`, validated (InvalidStart naming the field: an empty list, too many, a bad symbol)."""
    from retrain.fleet import FleetInput, InvalidFleetInput
    from retrain.trainers import TrainerError
    from retrain.workflow import MAX_REASON_CHARS

    try:
        fleet = FleetInput.from_settings(
            list(tickers) if not isinstance(tickers, str) else tickers,  # type: ignore[arg-type]
            trigger,
            environ,
            reason=reason[:MAX_REASON_CHARS] if reason else None,
            **overrides,
        )
    except (InvalidFleetInput, TrainerError) as exc:
        raise InvalidStart(f"{exc} (from the request or the settings)") from None
    return fleet.to_dict()


def _ticker(ticker: Any) -> str:
    try:
        return naming.validate_ticker(ticker.strip() if isinstance(ticker, str) else ticker)
    except naming.TickerError as exc:
        raise InvalidStart(f"ticker: {exc}") from None


# ------------------------------------------------------------------------------------------ checks


async def holders(client: df.DurableOrchestrationClient, tickers: Iterable[str]) -> dict[str, str]:
    """{ticker: the active cycle or fleet holding it} (`cycle_guard.busy_tickers`, any holder)."""
    return await cycle_guard.busy_tickers(client, tickers)


async def holder(client: df.DurableOrchestrationClient, ticker: str) -> str | None:
    """The id of the active cycle or fleet holding `ticker`, if any (the monitor asks this before it
    starts its own cycle as a sub-orchestration)."""
    symbol = _ticker(ticker)
    return (await holders(client, [symbol])).get(symbol)


def _describe(held: Mapping[str, str], limit: int = 10) -> str:
    shown = [f"{t} by {h}" for t, h in list(held.items())[:limit]]
    more = f" and {len(held) - limit} more" if len(held) > limit else ""
    return ", ".join(shown) + more


# ------------------------------------------------------------------------------------------ starts


async def start_fleet(
    client: df.DurableOrchestrationClient,
    tickers: Iterable[str],
    trigger: str,
    *,
    instance_id: str | None = None,
    reason: str | None = None,
    environ: Any = None,
    **overrides: Any,
) -> StartResult:
    """Start a fleet cycle (`fleet.FLEET_ORCHESTRATOR`) over `tickers`; the held ones are `skipped`, and
    nothing starts when all are held. A single ticker is `[ticker]`: a fleet of one."""
    fleet = fleet_input(tickers, trigger, reason=reason, environ=environ, **overrides)
    if instance_id is not None and naming.parse_fleet_instance_id(instance_id) is None:
        raise InvalidStart(
            f"instance_id {instance_id!r}: not a fleet's id (naming.fleet_instance_id, scheduled_fleet_instance_id)"
        )
    return await _start(client, list(fleet["tickers"]), fleet, instance_id)


async def _start(
    client: df.DurableOrchestrationClient,
    tickers: list[str],
    input_: dict[str, Any],
    instance_id: str | None,
) -> StartResult:
    from retrain.fleet import FLEET_ORCHESTRATOR
    from retrain.triggers import instance_status, start_lock, start_or_find

    if instance_id is not None and (found := await instance_status(client, instance_id)) is not None:
        log.info("start of %s: it exists already (%s)", instance_id, cycle_guard.runtime_of(found))
        return StartResult(instance_id, started=False, existing=True)
    async with AsyncExitStack() as stack:
        for ticker in sorted(tickers):  # one order for every starter: no two wait on each other
            await stack.enter_async_context(start_lock(ticker))
        busy = await holders(client, tickers)
        if len(busy) == len(tickers):
            what = (
                f"every ticker of the fleet is already being retrained: {_describe(busy)}"
                if len(tickers) > 1
                else f"{tickers[0]} is already being retrained by {busy[tickers[0]]}"
            )
            return StartResult(None, started=False, skipped=busy, refused=what)
        chosen = instance_id or naming.fleet_instance_id(datetime.now(UTC))
        existing = await start_or_find(client, FLEET_ORCHESTRATOR, chosen, input_)
    if existing is not None:  # the same id started meanwhile (another worker, the same instant)
        return StartResult(chosen, started=False, existing=True, skipped=busy)
    log.info(
        "started %s (%s, %d ticker(s)%s)",
        chosen,
        (input_.get("cycle") or {}).get("trigger"),
        len(tickers),
        f", {len(busy)} skipped" if busy else "",
    )
    return StartResult(chosen, started=True, skipped=busy)


__all__ = [
    "InvalidStart",
    "StartResult",
    "cycle_input",
    "fleet_input",
    "holder",
    "holders",
    "start_fleet",
]
