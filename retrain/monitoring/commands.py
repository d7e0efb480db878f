"""The monitoring commands of the `retrain` CLI: `served` (and later `monitor`, `report`).

`retrain served --ticker T [--at TIME]`: which model versions served T's endpoint at TIME (default: now),
read from the served ledger of the state dir; prints one JSON object (the answer of
`GET /api/served/{ticker}`). Exit 2 with a message for a bad ticker or time.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def add_commands(
    sub: Any, state: Callable[[argparse.ArgumentParser], None], prepare: Callable[[str | None], Any]
) -> None:
    """Register the monitoring commands on the CLI's subparsers (`state` adds --state-dir; `prepare`
    loads the settings and the state dir as the other commands do)."""

    def cmd_served(args: argparse.Namespace) -> int:
        from retrain.cli import CliError
        from retrain.market_data import MarketDataError
        from retrain.monitoring.http import served_answer
        from retrain.monitoring.ledger import LedgerError

        prepare(args.state_dir)
        try:
            answer = served_answer(args.ticker, args.at)
        except (LedgerError, MarketDataError) as exc:
            raise CliError(str(exc), 2) from None
        print(json.dumps(answer), flush=True)
        return 0

    served = sub.add_parser("served", help="which model versions served a ticker's endpoint at a time")
    served.add_argument("--ticker", required=True)
    served.add_argument("--at", help="ISO 8601 time or YYYY-MM-DD (end of that day, UTC); default now")
    state(served)
    served.set_defaults(func=cmd_served)
