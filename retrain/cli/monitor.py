"""The monitoring commands: `retrain served`, `retrain monitor`, `retrain report`.

`retrain report --ticker T --out FILE.png [--no-mlflow]`: the PNG of `retrain.monitoring.report` and the
daily series in MLflow (experiment `monitor-<ticker>`); prints one JSON object.

`retrain monitor --ticker T [--from DATE --to DATE] [--source S]`: steps the monitor through each trading day
of the range as if it were today (data as of each day), through the local host like `retrain run`
(`POST /api/monitor`, then the orchestration's status). Progress per day on stderr; the last stdout line
is one JSON object: ticker, days, forecasts, scored, mae_ratio, alerts, retrains, instance_id,
runtime_status. Exit 0 when the monitor completed, 1 when it failed, 2 for bad usage.

`retrain served --ticker T [--at TIME]`: which model versions served T's endpoint at TIME (default: now),
read from the served ledger of the state dir; prints one JSON object (the answer of
`GET /api/served/{ticker}`). Exit 2 with a message for a bad ticker or time.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from retrain.cli.common import (
    CliError,
    add_state_dir,
    open_or_join_host,
    operator_request_source,
    prepare_environment,
    restore_endpoints,
    say,
    stop_host,
)


def add_commands(sub: Any) -> None:
    monitor = sub.add_parser("monitor", help="step the monitor through trading days (offline replay)")
    monitor.add_argument("--ticker", help="ticker symbol (default: the first of RETRAIN_TICKERS)")
    monitor.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: today)")
    monitor.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: --from)")
    monitor.add_argument(
        "--source",
        help="yfinance, sample, csv:PATH (any path, absolute or relative to the working directory) or "
        "blob:CONTAINER/PATH (default: RETRAIN_SOURCE)",
    )
    monitor.add_argument("--port", type=int, help="host port (default: a free one)")
    add_state_dir(monitor)
    monitor.set_defaults(func=cmd_monitor)

    report = sub.add_parser("report", help="draw the monitor's record (PNG) and log it to MLflow")
    report.add_argument("--ticker", required=True)
    report.add_argument("--out", required=True, help="the PNG to write")
    report.add_argument("--no-mlflow", action="store_true", help="only the PNG")
    add_state_dir(report)
    report.set_defaults(func=cmd_report)

    served = sub.add_parser("served", help="which model versions served a ticker's endpoint at a time")
    served.add_argument("--ticker", required=True)
    served.add_argument("--at", help="ISO 8601 time or YYYY-MM-DD (end of that day, UTC); default now")
    add_state_dir(served)
    served.set_defaults(func=cmd_served)


def cmd_served(args: argparse.Namespace) -> int:
    from retrain.market_data import MarketDataError
    from retrain.monitoring.http import served_answer
    from retrain.monitoring.ledger import LedgerError

    prepare_environment(args.state_dir)
    try:
        answer = served_answer(args.ticker, args.at)
    except (LedgerError, MarketDataError) as exc:
        raise CliError(str(exc), 2) from None
    print(json.dumps(answer), flush=True)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from retrain.host_client import TERMINAL_RUNTIME_STATUSES, HostClient, http_json, with_code

    started = time.monotonic()
    state_dir = prepare_environment(args.state_dir)
    host, base_url, key = open_or_join_host(state_dir, args.port, "monitor")
    try:
        # The same rule as `retrain run`: the CLI user's file is read as named (README "Naming data").
        _, source = operator_request_source(args.source, in_process=host is not None)
        if host is not None:
            restore_endpoints()
        body = {
            k: v
            for k, v in {
                "ticker": args.ticker,
                "from": args.start,
                "to": args.end,
                "source": source,
            }.items()
            if v
        }
        say(f"retrain monitor: host {base_url}, state {state_dir}, request {json.dumps(body)}")
        code, answer = HostClient(base_url, key).start_monitor(body)
        if code != 202:
            raise CliError(f"POST /api/monitor answered {code}: {(answer or {}).get('error', answer)}", 2)
        instance_id = answer["id"]
        status_url = with_code(answer["statusQueryGetUri"], key)  # GET /api/monitor/{id}
        printed: set[int] = set()
        while True:
            code, status = http_json("GET", status_url)
            if code == 200 and isinstance(status, dict):
                custom = status.get("custom_status") or {}
                recent = custom.get("recent") if isinstance(custom, dict) else None
                for day in recent or []:
                    if day["n"] in printed:
                        continue
                    printed.add(day["n"])
                    ratio = day.get("mae_ratio")
                    data = "" if day.get("as_of") in (None, day["date"]) else f" (data to {day['date']})"
                    say(
                        f"[{time.monotonic() - started:7.1f}s] day {day.get('as_of') or day['date']}{data} "
                        f"({day['n']}/{custom.get('of')}): forecast {day.get('forecast')}, mae_ratio(20) "
                        f"{'-' if ratio is None else f'{ratio:.3f}'}, alerts {day.get('alerts') or '[]'}"
                        + (f", RETRAIN ({day['trigger']})" if day.get("trigger") else "")
                    )
                if status.get("runtime_status") in TERMINAL_RUNTIME_STATUSES:
                    break
            time.sleep(0.5)
        raw_output = status.get("output")
        output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
        summary = {
            **output,
            "instance_id": instance_id,
            "runtime_status": status.get("runtime_status"),
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        if status.get("runtime_status") != "Completed":
            summary["error"] = str(status.get("output"))[:2000]
    finally:
        if host is not None:
            stop_host(host)
    print(json.dumps(summary), flush=True)
    return 0 if summary["runtime_status"] == "Completed" else 1


def cmd_report(args: argparse.Namespace) -> int:
    from retrain.market_data import MarketDataError
    from retrain.monitoring.report import ReportError, log_to_mlflow, write_report

    prepare_environment(args.state_dir)
    try:
        summary = write_report(args.ticker, args.out)
        if not args.no_mlflow:
            summary["mlflow_run_id"] = log_to_mlflow(args.ticker)
    except (ReportError, MarketDataError) as exc:
        raise CliError(str(exc), 2) from None
    print(json.dumps(summary), flush=True)
    return 0
