"""`retrain`: one full cycle (`run`), the local host (`serve`), `status`, `predict` and the MLflow `ui`.

`run` starts the local Functions host in this process on the state dir, starts the cycle through the
host's real `POST /api/retrain` route (the same trigger Azure runs), follows the readable status route
printing each step as it happens (stderr), and prints ONE JSON line last on stdout:
`instance_id, status, ticker, data_version, job_name, gate, model_version, scoring_uri, prediction,
timings_s` (plus `runtime_status`, `error`, `elapsed_s`). Exit status: 0 when the cycle completed
(deployed or rejected by the gate), 1 when it failed, 2 for bad usage, 3 when the ticker is busy.

One host per state dir: when `retrain serve` (or another host) already runs on the state dir, `run` sends
its request through that host and leaves the endpoint slots to it; a second `serve` refuses to start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain import naming, settings
from retrain.host_client import HostClient, HostClientError, http_json
from retrain.ports import HostsEndpoints
from retrain.progress import step_timings
from retrain.serving import TickerEndpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_PATH = REPO_ROOT / "function_app.py"
PREDICT_CLOSES = 64


class CliError(RuntimeError):
    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _prepare_environment(state_dir: str | None) -> Path:
    """Settings as `func start` sees them: local.settings.json Values, then declared defaults, with the
    state dir pinned (the activities run in this process and read it)."""
    # The local host's own reading of local.settings.json: the CLI runs that host.
    from functions_host.settings import load_local_settings

    load_local_settings(REPO_ROOT / "local.settings.json")
    load_local_settings(Path.cwd() / "local.settings.json")
    if state_dir:
        os.environ["RETRAIN_STATE_DIR"] = str(Path(state_dir).resolve())
    for setting in settings.SETTINGS:
        if setting.default is not None:
            os.environ.setdefault(setting.name, setting.default)
    path = settings.state_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["RETRAIN_STATE_DIR"] = str(path)
    return path


# ------------------------------------------------------------------------------------------- the host


def _open_host(state_dir: Path, port: int | None, timers: bool) -> Any:
    """The local Functions host on 127.0.0.1, started. It points RETRAIN_LOCAL_HOST_URL at itself, so
    the jobs the local platform starts deliver their Event Grid event to it."""
    from functions_host.host import LocalHost

    host = LocalHost(
        APP_PATH,
        state_dir,
        port=port or 0,
        timers=timers,
        out=sys.stderr,
        setting_defaults=settings.declared_defaults(),
    )
    return host.start()


def follow(host: HostClient, instance_id: str, started: float) -> dict[str, Any]:
    """Follow the readable status until the orchestration ends, printing each step as it starts and ends."""
    printed_start: set[int] = set()
    printed_end: set[int] = set()

    def show(status: dict[str, Any]) -> None:
        for i, step in enumerate(status.get("steps") or []):
            if i not in printed_start:
                printed_start.add(i)
                _say(f"[{time.monotonic() - started:7.1f}s] {step['step']} ...")
            if step.get("seconds") is not None and i not in printed_end:
                printed_end.add(i)
                _say(f"[{time.monotonic() - started:7.1f}s] {step['step']} done in {step['seconds']:.1f}s")

    try:
        return host.follow_cycle(instance_id, on_status=show)
    except HostClientError as exc:
        raise CliError(str(exc), 1) from exc


def predict_through(served: TickerEndpoint, closes: Sequence[float], timeout: float = 30.0) -> dict[str, Any]:
    """Score `closes` for the ticker through its endpoint's stable URL (naming the ticker to a bundle)."""
    from retrain.serving import scoring_request

    scoring_uri = str(served.endpoint.scoring_uri)
    request = scoring_request(served.ticker, [float(c) for c in closes], served.bundled)
    code, answer = http_json("POST", scoring_uri, request, timeout=timeout)
    if code != 200 or not isinstance(answer, dict):
        raise CliError(f"{scoring_uri} answered {code}: {answer}", 1)
    return answer


def _recent_closes(ticker: str, source: str, lookback_days: int | None) -> list[float]:
    from retrain.market_data import fetch_prices

    prices = fetch_prices(ticker, source=source, lookback_days=lookback_days)
    return [float(c) for c in prices["Close"].tail(PREDICT_CLOSES)]


def _serving_endpoint(ticker: str) -> TickerEndpoint | None:
    """The endpoint that serves `ticker` (RETRAIN_ENDPOINTS' endpoint, else its own from an older state
    dir) when it has a scoring URL, else None."""
    from retrain.adapters import get_platform
    from retrain.serving import find_ticker_endpoint

    try:
        served = find_ticker_endpoint(get_platform(), ticker)
    except naming.NamingError as exc:
        raise CliError(f"RETRAIN_ENDPOINTS: {exc}") from exc
    return served if served is not None and served.endpoint.scoring_uri else None


# ------------------------------------------------------------------------------------------- commands


def _params(pairs: list[str] | None) -> dict[str, str] | None:
    """`--param key=value` pairs -> the request's hyperparameters (strings: the trainer parses them)."""
    if not pairs:
        return None
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--param {pair!r}: use --param key=value, e.g. --param alpha=0.5")
        values[key] = value
    return values


def cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.trainer is not None:  # before starting anything: a clear error with the valid names
        from retrain.trainers import TrainerError, get_trainer

        try:
            get_trainer(args.trainer)
        except TrainerError as exc:
            raise CliError(f"--trainer: {exc}") from exc
    hyperparameters = _params(args.param)
    state_dir = _prepare_environment(args.state_dir)
    host, base_url, key = _open_or_join_host(state_dir, args.port, "run")
    summary: dict[str, Any] = {}
    try:
        args.source, request_source = operator_request_source(args.source, in_process=host is not None)
        if host is not None:
            _restore_endpoints()  # the champion's slot serves again before a new model is rolled out
        body = {
            k: v
            for k, v in {
                "ticker": args.ticker,
                "source": request_source,
                "lookback_days": args.lookback_days,
                "force": args.force or None,
                "max_epochs": args.max_epochs,
                "as_of": args.as_of,
                "trainer": args.trainer,
                "hyperparameters": hyperparameters,
            }.items()
            if v is not None
        }
        _say(f"retrain run: host {base_url}, state {state_dir}, request {json.dumps(body)}")
        client = HostClient(base_url, key)
        code, answer = client.start_cycle(body)
        if code == 409:
            raise CliError(f"{answer.get('error')}\n  status: {answer.get('statusQueryGetUri')}", 3)
        if code != 202:
            raise CliError(f"POST /api/retrain answered {code}: {answer}", 2)
        instance_id = answer["id"]
        _say(f"[{time.monotonic() - started:7.1f}s] started {instance_id}")
        status = follow(client, instance_id, started)
        summary = _summary(status, args, started)
    finally:
        if host is not None:
            _stop_host(host)
    print(json.dumps(summary), flush=True)
    return 0 if summary.get("runtime_status") == "Completed" else 1


def _summary(status: dict[str, Any], args: argparse.Namespace, started: float) -> dict[str, Any]:
    raw_output = status.get("output")
    output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
    ids = status.get("ids") or {}
    ticker = output.get("ticker") or (args.ticker or settings.tickers()[0]).upper()
    summary: dict[str, Any] = {
        "instance_id": status.get("instance_id"),
        "status": output.get("status") or ("failed" if status.get("runtime_status") == "Failed" else None),
        "runtime_status": status.get("runtime_status"),
        "ticker": ticker,
        "data_version": output.get("data_version") or ids.get("data_version"),
        "job_name": output.get("job_name") or ids.get("job_name"),
        "gate": output.get("gate") or status.get("decision"),
        "model_version": output.get("model_version") or ids.get("model_version"),
        "scoring_uri": output.get("scoring_uri") or ids.get("scoring_uri"),
        # The rollout's endpoint when deployed; otherwise the one found serving the ticker (below).
        "endpoint": output.get("endpoint") if output.get("bundle") else None,
        "bundle": (
            {"name": output["bundle"], "version": output.get("bundle_version")}
            if output.get("bundle")
            else None
        ),
        "rollout": output.get("rollout"),
        "slot": output.get("slot"),
        "prediction": None,
        "error": status.get("error"),
        "warnings": status.get("warnings") or [],
        "timings_s": step_timings(status.get("steps") or []),
    }
    # Score the latest window through the stable URL (whatever serves: the new model or the champion).
    try:
        served = _serving_endpoint(ticker)
        if served is not None:
            summary["scoring_uri"] = served.endpoint.scoring_uri
            summary["endpoint"] = summary["endpoint"] or served.endpoint.name
            source = args.source or settings.get("RETRAIN_SOURCE")
            lookback = args.lookback_days or settings.get_int("RETRAIN_LOOKBACK_DAYS")
            closes = _recent_closes(ticker, str(source), lookback)
            answer = predict_through(served, closes)
            summary["prediction"] = {
                "last_close": closes[-1],
                "forecast": answer["forecast"][0],
                "model": answer.get("model"),
                **({"bundle": answer["bundle"]} if answer.get("bundle") else {}),
            }
    except Exception as exc:  # noqa: BLE001 - the cycle's outcome stands; say why there is no prediction
        summary["prediction"] = {"error": str(exc)}
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    return summary


def operator_request_source(source: str | None, *, in_process: bool) -> tuple[str | None, str | None]:
    """(the source as this process reads it, the source to send in the request) for a `--source` the CLI
    user named. The CLI user is the operator: a `csv:` path is read as named, absolute or relative to the
    working directory (`market_data.operator_source`, README "Naming data"). With the CLI's own in-process
    host the file becomes that host's configured source (`RETRAIN_SOURCE`, which it trusts). A host
    that already runs on the state dir (`retrain serve`) is sent the file's name relative to its
    `RETRAIN_DATA_DIR`; a file outside it is refused here, before anything starts."""
    from retrain.market_data import data_refusal, operator_source

    if not source:
        return source, source
    resolved = operator_source(source)
    if not resolved.lower().startswith("csv:") or resolved == settings.get("RETRAIN_SOURCE"):
        return resolved, resolved
    if in_process:
        os.environ["RETRAIN_SOURCE"] = resolved
        return resolved, resolved
    path, data_dir = Path(resolved[4:]), settings.get("RETRAIN_DATA_DIR")
    if data_dir and data_dir.strip() and path.is_relative_to(Path(data_dir.strip()).resolve()):
        return resolved, f"csv:{path.relative_to(Path(data_dir.strip()).resolve())}"
    raise CliError(
        str(
            data_refusal(
                source,
                "is outside RETRAIN_DATA_DIR, and a host already runs on this state dir (retrain serve: "
                "it reads a request's file only there); copy the file into RETRAIN_DATA_DIR or stop that host",
            )
        ),
        2,
    )


def _open_or_join_host(state_dir: Path, port: int | None, command: str) -> tuple[Any, str, str]:
    """(host, base URL, function key): a new in-process host on the state dir, or (None, ...) the host that
    already runs there. The running host owns the durable store and the endpoint slots: go through it,
    touch no slot."""
    from functions_host.host import HostAlreadyRunning

    try:
        host = _open_host(state_dir, port, timers=False)
    except HostAlreadyRunning as running:
        if not running.url:
            raise CliError(str(running), 1) from running
        _say(f"retrain {command}: using the running host at {running.url} (pid {running.pid})")
        from functions_host.keys import load_or_create_keys

        return None, running.url, load_or_create_keys(state_dir).function_key
    return host, host.url, host.function_key


def _stop_host(host: Any) -> None:
    try:
        host.stop()
    finally:
        # The endpoint's slots are processes of this run: stop them (`retrain serve` brings them back).
        try:
            from retrain.adapters import get_platform

            platform = get_platform()
            if isinstance(platform, HostsEndpoints):
                platform.stop_all()
        except Exception as exc:  # noqa: BLE001 - best effort at exit
            _say(f"warning: could not stop the endpoint slots: {exc}")


def _restore_endpoints(wait: bool = False) -> None:
    """Start the kept endpoints' slots and scoring URLs again (local platform only); with `wait`,
    return only once each endpoint's slots are live (an endpoint whose slot failed is reported)."""
    from retrain.adapters import get_platform

    platform = get_platform()
    from retrain.monitoring.ledger import record_traffic_change

    if not isinstance(platform, HostsEndpoints):
        return  # Azure: the endpoints live in Azure, nothing to bring back
    for endpoint in platform.restore():
        if wait:
            try:
                endpoint = platform.wait_until_ready(endpoint.name)
            except Exception as exc:  # noqa: BLE001 - the other endpoints and the host still serve
                _say(f"warning: endpoint {endpoint.name} is not ready: {exc}")
                continue
        _say(f"endpoint {endpoint.name}: {endpoint.scoring_uri} traffic {endpoint.traffic}")
        recorded = record_traffic_change(platform, endpoint.name, "restore")
        if isinstance(recorded, str):
            _say(f"warning: {recorded}")
    for name, reason in platform.broken_endpoints().items():
        _say(f"warning: endpoint {name} not restored: {reason}")


def cmd_serve(args: argparse.Namespace) -> int:
    state_dir = _prepare_environment(args.state_dir)
    from functions_host.host import HostAlreadyRunning

    try:  # the host first: its lock says whether the endpoint slots are ours to restore
        host = _open_host(state_dir, args.port, timers=True)
    except HostAlreadyRunning as running:
        raise CliError(
            f"a host already runs on state dir {state_dir}: {running.url or '(still starting)'} "
            f"(pid {running.pid}); use it, or stop it first",
            1,
        ) from running
    try:
        from retrain.adapters import get_platform

        platform = get_platform()
        if isinstance(
            platform, HostsEndpoints
        ):  # the scoring URLs are served by processes that outlive this one
            platform.detach_routers()
        _restore_endpoints(wait=True)  # ready means the restored slots answer
    except BaseException:
        _stop_host(host)
        raise
    stop: dict[str, int | None] = {"signal": None}

    def _stop(signum: int, frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, _stop)
    # Ctrl-C (SIGINT) handled here too, not left to KeyboardInterrupt: a process started in the background
    # of a non-interactive shell inherits SIGINT ignored, and then Ctrl-C (or `kill -INT`) did nothing.
    signal.signal(signal.SIGINT, _stop)
    try:
        _say(f"retrain serve: host {host.url} (state {state_dir}); Ctrl-C to stop")
        while stop["signal"] is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if stop["signal"] == signal.SIGTERM:
            # A service manager's stop or restart: the endpoints (their routers and slots) outlive the
            # host, as an Azure endpoint outlives the Function App; the next `serve` adopts them, so the
            # scoring URL never stops answering.
            _say("retrain serve: stopping; the endpoints keep serving (Ctrl-C stops them too)")
            _stop_host_keep_endpoints(host)
        else:
            _say("retrain serve: stopping")
            _stop_host(host)
    return 0


def _stop_host_keep_endpoints(host: Any) -> None:
    try:
        host.stop()
    finally:
        from retrain.adapters import get_platform

        platform = get_platform()
        if isinstance(platform, HostsEndpoints):
            platform.release_endpoints()


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = _prepare_environment(args.state_dir)
    from functions_host.durable.engine import DurableEngine

    def _never(*_: Any) -> str:
        raise RuntimeError("status is read-only")

    engine = DurableEngine(
        state_dir / "host" / "durable.sqlite", _never, _never
    )  # not started: read-only queries
    try:
        if args.instance_id:
            status = engine.get_status(args.instance_id, show_input=False)
            if status is None:
                raise CliError(f"no orchestration {args.instance_id!r} in {state_dir}", 1)
            print(json.dumps(_readable(status), indent=2))
        else:
            for status in engine.list_instances():
                raw_custom = status.get("customStatus")
                custom: dict[str, Any] = raw_custom if isinstance(raw_custom, dict) else {}
                print(
                    f"{status['instanceId']:40} {status['runtimeStatus']:10} {custom.get('step') or '':18} "
                    f"{status.get('createdTime')}"
                )
    finally:
        engine.close()
    return 0


def _readable(status: dict[str, Any]) -> dict[str, Any]:
    from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

    from retrain.triggers import readable_status

    return readable_status(DurableOrchestrationStatus.from_json(status))


def cmd_predict(args: argparse.Namespace) -> int:
    _prepare_environment(args.state_dir)
    from retrain.market_data import MarketDataError, validate_ticker

    try:
        ticker = validate_ticker(args.ticker)
        served = _serving_endpoint(ticker)  # before fetching: no endpoint needs no data
        if served is None:
            raise CliError(f"no endpoint serves {ticker} yet; run `retrain run --ticker {ticker}` first", 1)
        scoring_uri = served.endpoint.scoring_uri
        closes = args.close or _recent_closes(
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


def cmd_ui(args: argparse.Namespace) -> int:
    state_dir = _prepare_environment(args.state_dir)
    store = state_dir / "mlflow" / "mlflow.db"
    if not store.exists():
        raise CliError(f"no MLflow store at {store}; run `retrain run` first", 1)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        f"sqlite:///{store}",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    # One worker and no job consumers: a viewer for one person, not a shared tracking server.
    command += ["--workers", "1"]
    env = {**os.environ}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    _say(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    # Its own process group (the server runs uvicorn in child processes), stopped as a whole on
    # Ctrl-C or SIGTERM to this process, so stopping `retrain ui` by its PID leaves nothing behind.
    process = subprocess.Popen(command, env=env, start_new_session=True)

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after `timeout`; returns when it is empty."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        process.poll()  # reap the leader, so an empty group is seen as gone
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.1)


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
    state_dir = _prepare_environment(args.state_dir)
    host, base_url, key = _open_or_join_host(state_dir, None, action)
    try:
        if host is not None:
            _restore_endpoints(wait=True)  # the slots must be live to take traffic
        ticker = urllib.parse.quote(args.ticker.strip(), safe="")
        client = HostClient(base_url, key)
        code, answer = http_json("POST", client.url(f"/api/endpoints/{ticker}/{action}"), body, 180.0)
    finally:
        if host is not None:
            _stop_host(host)
    if code != 200:
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise CliError(f"{action} answered {code}: {error}", 3 if code == 409 else 1 if code >= 500 else 2)
    print(json.dumps(answer), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrain", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def state(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", help="state directory (default: RETRAIN_STATE_DIR or .retrain)")

    run = sub.add_parser("run", help="one full retraining cycle through the local host")
    run.add_argument("--ticker", help="ticker symbol (default: the first of RETRAIN_TICKERS)")
    run.add_argument(
        "--source",
        help="yfinance, sample, csv:PATH (any path, absolute or relative to the working directory) or "
        "blob:CONTAINER/PATH (default: RETRAIN_SOURCE)",
    )
    run.add_argument(
        "--lookback-days", type=int, help="calendar days of history (default: RETRAIN_LOOKBACK_DAYS)"
    )
    run.add_argument("--force", action="store_true", help="deploy even when the quality gate rejects")
    run.add_argument("--max-epochs", type=int, help="training epochs (default: RETRAIN_MAX_EPOCHS)")
    run.add_argument(
        "--trainer", help="a trainer of this repository, e.g. lstm or ridge (default: RETRAIN_TRAINER)"
    )
    run.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a hyperparameter for the trainer (repeatable)"
    )
    run.add_argument("--port", type=int, help="host port (default: a free one)")
    run.add_argument(
        "--as-of", help="YYYY-MM-DD: train on data up to and including that trading day (default: latest)"
    )
    state(run)
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser("serve", help="run the local host, timer and scoring URL until Ctrl-C")
    serve.add_argument("--port", type=int, default=7071)
    state(serve)
    serve.set_defaults(func=cmd_serve)

    status = sub.add_parser("status", help="list orchestrations, or show one")
    status.add_argument("instance_id", nargs="?")
    state(status)
    status.set_defaults(func=cmd_status)

    predict = sub.add_parser("predict", help="score the latest closes through the stable scoring URL")
    predict.add_argument("--ticker", required=True)
    predict.add_argument(
        "--close", type=float, nargs="+", help="closes, oldest first (default: the latest data)"
    )
    predict.add_argument("--source", help="where the latest closes come from (default: RETRAIN_SOURCE)")
    state(predict)
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
    state(traffic)
    traffic.set_defaults(func=cmd_traffic)
    rollback = sub.add_parser(
        "rollback", help="all traffic back to the champion's slot (or the previous one)"
    )
    rollback.add_argument("--ticker", required=True)
    state(rollback)
    rollback.set_defaults(func=cmd_traffic)

    check = sub.add_parser("check-trainer", help="run a trainer folder on the sample and check the contract")
    from retrain import trainer_check

    trainer_check.add_arguments(check)
    check.set_defaults(func=lambda args: trainer_check.run(args))

    ui = sub.add_parser("ui", help="the MLflow UI on the state dir's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    state(ui)
    ui.set_defaults(func=cmd_ui)

    from retrain.monitoring.commands import add_commands

    add_commands(sub, state, _prepare_environment)  # served, monitor, report
    from retrain.backtest.command import add_command as add_backtest

    add_backtest(sub, state, _prepare_environment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from functions_host.keys import KeysError
    from functions_host.settings import LocalSettingsError
    from retrain.ports import PlatformError
    from retrain.state_files import StateError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        _say(f"retrain {args.command}: {exc}")
        return exc.code
    except (settings.SettingsError, LocalSettingsError, KeysError, StateError, PlatformError) as exc:
        # Bad settings, a bad state file (keys, ledger, an endpoint's state) or a platform's refusal:
        # each message says what to do; a traceback would only hide it.
        _say(f"retrain {args.command}: {exc}")
        return 2
    except Exception as exc:
        from functions_host.durable import DurableStoreError

        if not isinstance(exc, DurableStoreError):
            raise
        _say(f"retrain {args.command}: {exc}")  # a corrupt durable.sqlite: what to do, not a traceback
        return 1


if __name__ == "__main__":
    sys.exit(main())
