"""What the `retrain` commands share: the CLI's error, settings and state dir as the local host sees them,
the host (this process's own, or the one already running on the state dir), the endpoints' slots, and
scoring a ticker through its endpoint's stable URL.

One host per state dir: when `retrain serve` (or another host) already runs on the state dir, a command
sends its request through that host and leaves the endpoint slots to it; a second `serve` refuses to start.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain import naming, settings
from retrain.host_client import http_json
from retrain.ports import HostsEndpoints
from retrain.serving import TickerEndpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PATH = REPO_ROOT / "function_app.py"
PREDICT_CLOSES = 64


class CliError(RuntimeError):
    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_environment(state_dir: str | None) -> Path:
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


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    """The option every command takes."""
    parser.add_argument("--state-dir", help="state directory (default: RETRAIN_STATE_DIR or .retrain)")


# ------------------------------------------------------------------------------------------- the host


def open_host(state_dir: Path, port: int | None, timers: bool) -> Any:
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


def open_or_join_host(state_dir: Path, port: int | None, command: str) -> tuple[Any, str, str]:
    """(host, base URL, function key): a new in-process host on the state dir, or (None, ...) the host that
    already runs there. The running host owns the durable store and the endpoint slots: go through it,
    touch no slot."""
    from functions_host.host import HostAlreadyRunning

    try:
        host = open_host(state_dir, port, timers=False)
    except HostAlreadyRunning as running:
        if not running.url:
            raise CliError(str(running), 1) from running
        say(f"retrain {command}: using the running host at {running.url} (pid {running.pid})")
        from functions_host.keys import load_or_create_keys

        return None, running.url, load_or_create_keys(state_dir).function_key
    return host, host.url, host.function_key


def stop_host(host: Any) -> None:
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
            say(f"warning: could not stop the endpoint slots: {exc}")


def stop_host_keep_endpoints(host: Any) -> None:
    try:
        host.stop()
    finally:
        from retrain.adapters import get_platform

        platform = get_platform()
        if isinstance(platform, HostsEndpoints):
            platform.release_endpoints()


def restore_endpoints(wait: bool = False) -> None:
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
                say(f"warning: endpoint {endpoint.name} is not ready: {exc}")
                continue
        say(f"endpoint {endpoint.name}: {endpoint.scoring_uri} traffic {endpoint.traffic}")
        recorded = record_traffic_change(platform, endpoint.name, "restore")
        if isinstance(recorded, str):
            say(f"warning: {recorded}")
    for name, reason in platform.broken_endpoints().items():
        say(f"warning: endpoint {name} not restored: {reason}")


# ------------------------------------------------------------------------------------------- data and scoring


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


def predict_through(served: TickerEndpoint, closes: Sequence[float], timeout: float = 30.0) -> dict[str, Any]:
    """Score `closes` for the ticker through its endpoint's stable URL (naming the ticker to a bundle)."""
    from retrain.serving import scoring_request

    scoring_uri = str(served.endpoint.scoring_uri)
    request = scoring_request(served.ticker, [float(c) for c in closes], served.bundled)
    code, answer = http_json("POST", scoring_uri, request, timeout=timeout)
    if code != 200 or not isinstance(answer, dict):
        raise CliError(f"{scoring_uri} answered {code}: {answer}", 1)
    return answer


def recent_closes(ticker: str, source: str, lookback_days: int | None) -> list[float]:
    from retrain.market_data import fetch_prices

    prices = fetch_prices(ticker, source=source, lookback_days=lookback_days)
    return [float(c) for c in prices["Close"].tail(PREDICT_CLOSES)]


def serving_endpoint(ticker: str) -> TickerEndpoint | None:
    """The endpoint that serves `ticker` (RETRAIN_ENDPOINTS' endpoint, else its own from an older state
    dir) when it has a scoring URL, else None."""
    from retrain.adapters import get_platform
    from retrain.serving import find_ticker_endpoint

    try:
        served = find_ticker_endpoint(get_platform(), ticker)
    except naming.NamingError as exc:
        raise CliError(f"RETRAIN_ENDPOINTS: {exc}") from exc
    return served if served is not None and served.endpoint.scoring_uri else None
