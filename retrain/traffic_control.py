"""Operator traffic control (issue 20, item 3): set an endpoint's traffic, or roll it back, by hand.

`retrain traffic --ticker T --set blue=100`, `retrain rollback --ticker T`, and the HTTP routes
``POST /api/endpoints/{ticker}/traffic`` (body ``{"traffic": {"blue": 100}}``) and
``POST /api/endpoints/{ticker}/rollback`` go through the same `MLPlatform` port as a cycle (`set_traffic`,
then wait until the endpoint is `Succeeded` with that traffic), locally and in Azure, and the change is
appended to the served ledger with the reason ``operator``. A change is refused while a cycle of the
ticker runs (409: the cycle owns the endpoint), for a table that names unknown slots or does not sum to
100 (400; all 0 too, which the port takes from a cycle's rollback of its first model but an operator
almost never means), and for a slot that is not live (409: sending traffic there would fail requests).

A rollback puts all traffic on the slot that serves the champion; when that slot already has all of it,
on the other slot, if one is deployed (a cold slot kept by RETRAIN_KEEP_OLD_SLOT). The champion (the
registry's alias) is not changed: the next cycle is judged against it as before.

Endpoint groups (RETRAIN_ENDPOINTS, docs/bundles.md): the ticker names its endpoint, and a change acts on
the WHOLE endpoint, every ticker it serves (the answer lists them). Slots serve bundles there, so a
rollback restores the previous bundle: the other deployed slot when one slot has all the traffic, else
(a split left by an interrupted rollout) the slot of the older bundle. A change is refused while a
rollout of the endpoint runs (409), as while a cycle of the ticker runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from retrain import naming
from retrain.ports import SLOTS, EndpointBusyError, EndpointState, PlatformError, is_bundle
from retrain.serving import find_ticker_endpoint, layout_endpoint

bp = df.Blueprint()

APPLY_TIMEOUT_S = 120.0  # an HTTP answer cannot wait for ever; Azure applies traffic within a minute or two
EXAMPLE = '{"traffic": {"blue": 100, "green": 0}}'


class TrafficError(ValueError):
    """A refused change; `status` is the HTTP status that says why (400 bad table, 404, 409 busy/not live)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_traffic(raw: Any) -> dict[str, int]:
    """A traffic table from a request: known slots, integer percentages 0..100 that sum to 100."""
    if not isinstance(raw, dict) or not raw:
        raise TrafficError(f"traffic must be an object slot -> percent; send e.g. {EXAMPLE}")
    table: dict[str, int] = {}
    for slot, percent in raw.items():
        if slot not in SLOTS:
            shown = slot if len(str(slot)) <= 40 else f"{str(slot)[:40]}..."
            raise TrafficError(
                f"unknown slot {shown!r}: the slots are {', '.join(SLOTS)}; send e.g. {EXAMPLE}"
            )
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise TrafficError(
                f"traffic for {slot} must be an integer from 0 to 100, not {str(percent)[:40]!r}"
            )
        table[slot] = percent
    if not any(table.values()):
        # The port takes an all-zero table (a cycle's first model rolled back: no slot serves), but from an
        # operator it is far more likely a slip than a wish to answer every unpinned request 404.
        raise TrafficError(
            f"all 0 would leave no slot serving (unpinned requests would answer 404); give one slot "
            f"traffic, e.g. {EXAMPLE}"
        )
    if sum(table.values()) != 100:
        raise TrafficError(f"the percentages must sum to 100, not {sum(table.values())}; send e.g. {EXAMPLE}")
    return table


def rollback_table(endpoint: EndpointState, champion_version: str | None) -> dict[str, int]:
    """All traffic to the champion's slot; when it already has all of it, to the other deployed slot.
    Slots that serve bundles: to the previous bundle (`champion_version` is not used)."""
    deployed = {slot: model for slot, model in (endpoint.deployments or {}).items() if model}
    live = {slot: int(pct) for slot, pct in endpoint.traffic.items() if int(pct) > 0}
    if any(is_bundle(m) for m in deployed.values()):
        champion_slots = [] if len(live) == 1 else sorted(deployed, key=lambda s: _version(deployed[s]))[:1]
    else:
        champion_slots = [s for s, m in deployed.items() if str(m.get("version")) == str(champion_version)]
    target = champion_slots[0] if champion_slots else None
    if target is None or live == {target: 100}:
        others = [s for s in deployed if s != target and live.get(s, 0) < 100]
        if not others:
            raise TrafficError(
                f"nothing to roll back to on {endpoint.name}: traffic {endpoint.traffic}, deployments "
                f"{ {s: (m or {}).get('version') for s, m in deployed.items()} }; a rollback needs a second "
                "deployed slot (RETRAIN_KEEP_OLD_SLOT=true keeps the previous model cold)",
                409,
            )
        target = others[0]
    return {slot: (100 if slot == target else 0) for slot in sorted({*deployed, target})}


def _version(model: dict[str, Any]) -> tuple[int, str]:
    text = str(model.get("version"))
    return (int(text), text) if text.isdigit() else (0, text)


def apply_traffic(
    platform: Any,
    endpoint: str,
    table: dict[str, int],
    timeout_s: float = APPLY_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> EndpointState:
    """Set `table` through the port and wait until the endpoint serves it; record it as `operator`."""
    from retrain.monitoring.ledger import record_traffic_change

    state = platform.get_endpoint(endpoint)
    if state.state == "NotFound":
        raise TrafficError(f"endpoint {endpoint} does not exist; run a cycle of its ticker first", 404)
    for slot, percent in table.items():
        if percent <= 0:
            continue
        deployment = platform.get_deployment(endpoint, slot)
        if deployment.state != "Succeeded":
            raise TrafficError(
                f"slot {slot} of {endpoint} is {deployment.state}, not live: traffic there would fail; "
                "wait until it is Succeeded or send a table that gives it 0",
                409,
            )
    try:
        state = platform.set_traffic(endpoint, table)
    except EndpointBusyError as exc:
        raise TrafficError(f"{exc}", 409) from exc
    except PlatformError as exc:
        raise TrafficError(f"the platform refused {table}: {exc}", 409) from exc
    wanted = {s: p for s, p in table.items() if p > 0}
    deadline, delay = time.monotonic() + timeout_s, 0.25
    while not (state.state == "Succeeded" and {s: p for s, p in state.traffic.items() if p > 0} == wanted):
        if state.state in ("Failed", "Canceled", "NotFound"):
            raise TrafficError(f"the traffic update {table} of {endpoint} ended {state.state}", 409)
        if time.monotonic() > deadline:
            raise TrafficError(
                f"{endpoint} still {state.state} with traffic {state.traffic} {timeout_s:.0f} s after "
                f"asking for {table}; look at the endpoint",
                504,
            )
        sleep(delay)
        delay = min(delay * 2, 5.0)
        state = platform.get_endpoint(endpoint)
    record_traffic_change(platform, endpoint, "operator", traffic=table)
    return state


def operator_change(ticker: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """The change an operator asked for (`traffic` with body {"traffic": {...}}, or `rollback`), applied."""
    from retrain.adapters import get_platform

    platform = get_platform()
    try:
        served = find_ticker_endpoint(platform, ticker)
        endpoint = served.endpoint.name if served else layout_endpoint(ticker)
    except naming.NamingError as exc:  # the host's settings, not the request
        raise TrafficError(f"RETRAIN_ENDPOINTS: {exc}", 500) from exc
    tickers = list(served.tickers) if served else [ticker]
    before = platform.get_endpoint(endpoint)
    if action == "rollback":
        if before.state == "NotFound":
            raise TrafficError(f"endpoint {endpoint} does not exist; run a cycle of {ticker} first", 404)
        champion = platform.get_champion(naming.model_name(ticker))
        table = rollback_table(before, champion.version if champion else None)
    else:
        table = parse_traffic(body.get("traffic"))
    after = apply_traffic(platform, endpoint, table)
    return {
        "ticker": ticker,
        "endpoint": endpoint,
        # A change of traffic is the endpoint's: on a shared endpoint it moves every ticker it serves.
        "tickers": tickers,
        "scope": f"the whole endpoint {endpoint}: the {len(tickers)} ticker(s) it serves",
        "action": action,
        "traffic_before": before.traffic,
        "traffic": after.traffic,
        "deployments": {s: (m or {}).get("version") for s, m in (after.deployments or {}).items()},
        "ledger_reason": "operator",
    }


def _answer(body: Any, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2), status_code=status, mimetype="application/json")


async def _running_rollout(client: df.DurableOrchestrationClient, ticker: str) -> Any | None:
    """The active rollout of the ticker's endpoint (which moves its traffic), if any."""
    from retrain.triggers import ACTIVE_STATUSES, ACTIVE_VALUES

    try:
        endpoint = layout_endpoint(ticker)
    except naming.NamingError:
        return None  # a bad layout: the change itself says so
    found = await client.get_status_by(
        instance_id_prefix=naming.rollout_instance_prefix(endpoint), runtime_status=ACTIVE_STATUSES
    )
    active = [s for s in found if s.runtime_status and s.runtime_status.value in ACTIVE_VALUES]
    return active[0] if active else None


async def _handle(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, action: str
) -> func.HttpResponse:
    from retrain.cycle_guard import busy_tickers
    from retrain.market_data import MarketDataError, validate_ticker
    from retrain.triggers import start_lock, store_unavailable_response

    try:
        ticker = validate_ticker(req.route_params.get("ticker", ""))
    except MarketDataError as exc:
        return _answer({"error": f"ticker: {exc}"}, 400)
    body: dict[str, Any] = {}
    if action == "traffic":
        try:
            parsed = json.loads(req.get_body().decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return _answer({"error": f"the body is not JSON; send e.g. {EXAMPLE}"}, 400)
        if not isinstance(parsed, dict) or set(parsed) != {"traffic"}:
            return _answer({"error": f"send a JSON object with one field, traffic: e.g. {EXAMPLE}"}, 400)
        body = parsed
    # The ticker's start lock: no POST /api/retrain of this worker starts a cycle while the change runs.
    async with start_lock(ticker):
        try:
            # Any holder: a fleet (every start's path, a single ticker's too) or an older single cycle.
            running = (await busy_tickers(client, [ticker])).get(ticker)
        except Exception as exc:
            if (unavailable := store_unavailable_response(exc)) is None:
                raise
            return unavailable
        if running is not None:
            return _answer(
                {
                    "error": f"{ticker} is being retrained by {running}: its cycle owns the "
                    "endpoint's traffic; wait until it ends (or terminate it), then try again",
                    "instance_id": running,
                },
                409,
            )
        rollout = await _running_rollout(client, ticker)
        if rollout is not None:
            return _answer(
                {
                    "error": f"{rollout.instance_id} is rolling out a bundle on {ticker}'s endpoint: it owns "
                    "the endpoint's traffic; wait until it ends, then try again",
                    "instance_id": rollout.instance_id,
                },
                409,
            )
        try:
            result = await asyncio.to_thread(operator_change, ticker, action, body)
        except TrafficError as exc:
            return _answer({"error": str(exc)}, exc.status)
    return _answer(result, 200)


@bp.route(route="endpoints/{ticker}/traffic", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def set_endpoint_traffic(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    return await _handle(req, client, "traffic")


@bp.route(route="endpoints/{ticker}/rollback", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def roll_back_endpoint(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    return await _handle(req, client, "rollback")
