"""One cycle per ticker, across single cycles and fleet cycles: which active orchestration holds a ticker.

A ticker is held by an active (Pending, Running, ContinuedAsNew) single cycle of it (`retrain-<ticker>-...`)
and by an active fleet cycle (`fleet-...`, retrain/fleet.py) whose input lists it, from its creation to its
end (the tickers it skipped too: conservative, never two at once). `busy_tickers` answers "who holds
these tickers"; with `before_instance`, only holders created no later than that instance count, which
is the rule both orchestrators apply to themselves, as their first activity:

- a single cycle is refused when an earlier (or same-second) active cycle of its ticker or an earlier
  active fleet holding it exists (`earlier_active_cycle`, triggers.py);
- a fleet skips, and says so in its output, each ticker held by an earlier active cycle or an earlier
  active fleet (`fleet_busy_tickers`, below).

Why this is safe: for two orchestrations A and B of one ticker, one was created no later than the other,
say A; B's check runs after B was created, so A already existed and, if still active, is seen: B gives
way. Created times have whole seconds in the Durable API, so two created in the same second both give way
(never two at once; the starters never make such a pair). The order is the created time, never the id:
a fleet's and a cycle's ids are not comparable.

Reading an active fleet's tickers: from its INPUT, read with `get_status(id, show_input=True)`, not from
a custom-status field. The input exists from the moment the fleet is created (a Pending fleet that has not
run its first episode has no custom status yet, and the rule above needs the earlier one to be visible as
soon as it exists); it is what the fleet will do, written once; and a list of hundreds of tickers would eat
Azure's 16 KB custom-status cap. `show_input=True` is passed explicitly: the Python SDK sends
showInput=false by default, and whether a list query carries inputs differs between extension versions;
a single status read with showInput=true returns it both in Azure (the extension fetches a large input
from its blob) and on the local host (functions_host/).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df

from retrain import naming

log = logging.getLogger(__name__)

bp = df.Blueprint()

# Suspended is not queried: the local engine has no suspension, and a suspended cycle is an operator's call.
ACTIVE_STATUSES = [
    df.OrchestrationRuntimeStatus.Pending,
    df.OrchestrationRuntimeStatus.Running,
    df.OrchestrationRuntimeStatus.ContinuedAsNew,
]
ACTIVE_VALUES = {s.value for s in ACTIVE_STATUSES}
# The fleet's guard activity (retrain/fleet.py schedules it first).
FLEET_GUARD_ACTIVITY = "fleet_busy_tickers"
# Up to this many tickers, one instance query per ticker (its own prefix); more: one query of every cycle.
_PER_TICKER_QUERIES = 4


def runtime_of(status: Any) -> str | None:
    """A status's runtime status as text (None: no such instance)."""
    return status.runtime_status.value if status is not None and status.runtime_status else None


def created_of(status: Any) -> datetime:
    """A status's created time, timezone-aware (the earliest possible when the host gives none)."""
    created = status.created_time or datetime.min.replace(tzinfo=UTC)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _active(statuses: Iterable[Any]) -> list[Any]:
    return [s for s in statuses if runtime_of(s) in ACTIVE_VALUES]


async def active_cycles(
    client: df.DurableOrchestrationClient, tickers: Iterable[str]
) -> dict[str, list[Any]]:
    """The active single cycles of each ticker (statuses, by ticker; only tickers that have one)."""
    wanted = {naming.validate_ticker(t) for t in tickers}
    if len(wanted) <= _PER_TICKER_QUERIES:
        found = []
        for ticker in sorted(wanted):
            found += await client.get_status_by(
                instance_id_prefix=naming.ticker_instance_prefix(ticker), runtime_status=ACTIVE_STATUSES
            )
    else:  # one query for a fleet's hundreds of tickers
        found = await client.get_status_by(
            instance_id_prefix=naming.INSTANCE_PREFIX, runtime_status=ACTIVE_STATUSES
        )
    held: dict[str, list[Any]] = {}
    for status in _active(found):
        parsed = naming.parse_instance_id(status.instance_id or "")
        if parsed is not None and parsed.ticker in wanted:  # a prefix alone confuses BRK with BRK-B
            held.setdefault(parsed.ticker, []).append(status)
    return held


def _input_tickers(data: Any) -> list[str] | None:
    if isinstance(data, str):  # a host may hand the input back as JSON text
        try:
            data = json.loads(data)
        except ValueError:
            return None
    tickers = data.get("tickers") if isinstance(data, dict) else None
    if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
        return None
    return list(tickers)


async def active_fleets(client: df.DurableOrchestrationClient) -> list[tuple[Any, list[str]]]:
    """The active fleet cycles (not their batches) and the tickers of each one's input, by created time."""
    found = await client.get_status_by(instance_id_prefix=naming.FLEET_PREFIX, runtime_status=ACTIVE_STATUSES)
    fleets = []
    for status in sorted(_active(found), key=lambda s: (created_of(s), s.instance_id)):
        if naming.parse_fleet_instance_id(status.instance_id or "") is None:
            continue  # a fleet's batch, or not ours
        # Its input, read explicitly (see the module docstring for why the input and why show_input).
        full = await client.get_status(status.instance_id, show_input=True)
        tickers = _input_tickers(getattr(full, "input_", None)) if full is not None else None
        if tickers is None:  # a malformed input fails the fleet at once (validate_fleet_input): holds nothing
            log.warning("fleet %s: no ticker list in its input; it holds no ticker", status.instance_id)
            continue
        fleets.append((full if full.created_time else status, tickers))
    return fleets


async def _created_time(client: df.DurableOrchestrationClient, instance_id: str) -> datetime | None:
    from retrain.triggers import instance_status

    status = await instance_status(client, instance_id)
    return created_of(status) if status is not None else None


async def busy_tickers(
    client: df.DurableOrchestrationClient, tickers: Iterable[str], before_instance: str | None = None
) -> dict[str, str]:
    """{ticker: the id of the active cycle or fleet holding it} for those of `tickers` that are held.

    Without `before_instance` (a starter's check): any active holder. With it (an orchestration's own
    guard): holders other than `before_instance` created no later than it (the module docstring says why
    that never lets two run at once). Of several holders, the earliest (created time, then id)."""
    wanted = [naming.validate_ticker(t) for t in tickers]
    if not wanted:
        return {}
    cycles = await active_cycles(client, wanted)
    fleets = await active_fleets(client)
    bound: datetime | None = None
    if before_instance is not None:
        known = [s for held in cycles.values() for s in held] + [s for s, _ in fleets]
        mine = next((s for s in known if s.instance_id == before_instance), None)
        bound = created_of(mine) if mine is not None else await _created_time(client, before_instance)
    busy: dict[str, str] = {}
    for ticker in wanted:
        holders = list(cycles.get(ticker, [])) + [s for s, held in fleets if ticker in held]
        holders = [
            s
            for s in holders
            if s.instance_id != before_instance and (bound is None or created_of(s) <= bound)
        ]
        if holders:
            busy[ticker] = min(holders, key=lambda s: (created_of(s), s.instance_id)).instance_id
    return busy


async def earliest_active_cycle(
    client: df.DurableOrchestrationClient, ticker: str, instance_id: str
) -> Any | None:
    """The earliest active single cycle of `ticker` other than `instance_id` created no later than it,
    or None (the single-cycle rule before fleets; `busy_tickers` adds the fleets)."""
    held = (await active_cycles(client, [ticker])).get(naming.validate_ticker(ticker), [])
    mine = next((s for s in held if s.instance_id == instance_id), None)
    others = sorted(
        (s for s in held if s.instance_id != instance_id), key=lambda s: (created_of(s), s.instance_id)
    )
    earlier = [s for s in others if mine is None or created_of(s) <= created_of(mine)]
    return earlier[0] if earlier else None


async def fleet_busy_tickers(
    payload: dict[str, Any], client: df.DurableOrchestrationClient
) -> dict[str, str]:
    """The fleet's guard (`fleet.FLEET_GUARD_ACTIVITY`): {ticker: the active cycle or EARLIER active fleet
    holding it} for the fleet `instance_id`'s `tickers`; the fleet skips those and says so."""
    return await busy_tickers(client, payload["tickers"], before_instance=payload["instance_id"])


def _register() -> None:
    from retrain.activities import report_failures

    bp.activity_trigger(input_name="payload")(
        bp.durable_client_input(client_name="client")(report_failures(fleet_busy_tickers))
    )


_register()

__all__ = [
    "ACTIVE_STATUSES",
    "ACTIVE_VALUES",
    "FLEET_GUARD_ACTIVITY",
    "active_cycles",
    "active_fleets",
    "busy_tickers",
    "created_of",
    "earliest_active_cycle",
    "fleet_busy_tickers",
    "runtime_of",
]
