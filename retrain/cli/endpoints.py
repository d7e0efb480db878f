"""The endpoint commands: `retrain predict` (score the latest closes through a ticker's stable scoring URL),
`retrain traffic` and `retrain rollback` (operator traffic, through the host's routes)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from retrain import settings
from retrain.cli.common import (
    CliError,
    add_state_dir,
    open_or_join_host,
    predict_through,
    prepare_environment,
    recent_closes,
    restore_endpoints,
    serving_endpoint,
    stop_host,
)
from retrain.host_client import HostClient, http_json


def add_commands(sub: Any) -> None:
    predict = sub.add_parser("predict", help="score the latest closes through the stable scoring URL")
    predict.add_argument("--ticker", required=True)
    predict.add_argument(
        "--close", type=float, nargs="+", help="closes, oldest first (default: the latest data)"
    )
    predict.add_argument("--source", help="where the latest closes come from (default: RETRAIN_SOURCE)")
    add_state_dir(predict)
    predict.set_defaults(func=cmd_predict)

    traffic = sub.add_parser("traffic", help="set a ticker's endpoint traffic by hand (recorded: operator)")
    traffic.add_argument("--ticker", required=True)
    traffic.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="SLOT=PERCENT",
        help="e.g. --set blue=100 (repeatable)",
    )
    add_state_dir(traffic)
    traffic.set_defaults(func=cmd_traffic)
    rollback = sub.add_parser(
        "rollback", help="all traffic back to the champion's slot (or the previous one)"
    )
    rollback.add_argument("--ticker", required=True)
    add_state_dir(rollback)
    rollback.set_defaults(func=cmd_traffic)


def cmd_predict(args: argparse.Namespace) -> int:
    prepare_environment(args.state_dir)
    from retrain.market_data import MarketDataError, validate_ticker

    try:
        ticker = validate_ticker(args.ticker)
        served = serving_endpoint(ticker)  # before fetching: no endpoint needs no data
        if served is None:
            raise CliError(f"no endpoint serves {ticker} yet; run `retrain run --ticker {ticker}` first", 1)
        scoring_uri = served.endpoint.scoring_uri
        closes = args.close or recent_closes(
            ticker,
            args.source or str(settings.get("RETRAIN_SOURCE")),
            settings.get_int("RETRAIN_LOOKBACK_DAYS"),
        )
    except MarketDataError as exc:  # a bad ticker, or no data (offline): say so, not a traceback
        raise CliError(str(exc), 2) from exc
    try:
        answer = predict_through(served, closes, timeout=10)
    except OSError as exc:
        raise CliError(
            f"{scoring_uri} does not answer ({exc}); start `retrain serve` on this state dir", 1
        ) from exc
    print(
        json.dumps(
            {
                "ticker": ticker,
                "endpoint": served.endpoint.name,
                "scoring_uri": scoring_uri,
                "last_close": closes[-1],
                **answer,
            }
        )
    )
    return 0


def _traffic_table(pairs: list[str]) -> dict[str, int]:
    """`--set blue=90 --set green=10` -> {"blue": 90, "green": 10} (checked again by the route)."""
    table: dict[str, int] = {}
    for pair in pairs:
        slot, sep, percent = pair.partition("=")
        if not sep or not percent.strip().isdigit():
            raise CliError(f"--set {pair!r}: use --set SLOT=PERCENT, e.g. --set blue=100")
        table[slot.strip()] = int(percent)
    return table


def cmd_traffic(args: argparse.Namespace) -> int:
    """`retrain traffic` / `retrain rollback`: POST /api/endpoints/{ticker}/traffic|rollback on the host
    (a running `retrain serve`, else one started here), so the same checks apply as over HTTP."""
    import urllib.parse

    action = "rollback" if args.command == "rollback" else "traffic"
    body = {"traffic": _traffic_table(args.set)} if action == "traffic" else {}
    state_dir = prepare_environment(args.state_dir)
    host, base_url, key = open_or_join_host(state_dir, None, action)
    try:
        if host is not None:
            restore_endpoints(wait=True)  # the slots must be live to take traffic
        ticker = urllib.parse.quote(args.ticker.strip(), safe="")
        client = HostClient(base_url, key)
        code, answer = http_json("POST", client.url(f"/api/endpoints/{ticker}/{action}"), body, 180.0)
    finally:
        if host is not None:
            stop_host(host)
    if code != 200:
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise CliError(f"{action} answered {code}: {error}", 3 if code == 409 else 1 if code >= 500 else 2)
    print(json.dumps(answer), flush=True)
    return 0
