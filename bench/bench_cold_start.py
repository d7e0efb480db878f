"""Five first cycles at once on a fresh `retrain serve` (issue 9, point 2): how many trials deploy all five.

Each trial: a new state dir, `retrain serve` started cold (nothing imported yet), five tickers posted to
`POST /api/retrain` at the same moment (four from the bundled sample, one CSV from RETRAIN_DATA_DIR), every
cycle followed to its end through the Durable status URL, then Ctrl-C (SIGINT) stops the host, its routers and
slots. Before the fix, concurrent first imports of mlflow left "partially initialized module 'mlflow'" and every
cycle of the process failed. The ridge trainer keeps a trial short; the race is in the host, not the trainer.

    .venv/bin/python bench/bench_cold_start.py [--trials 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TICKERS = ["MSFT", "AAPL", "IBM", "GOOG"]


def _http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fifth_ticker_csv(data_dir: Path) -> str:
    """A fifth ticker: MSFT's bundled history as a CSV in the operator's data directory."""
    sys.path.insert(0, str(REPO))
    from retrain.market_data import fetch_prices

    fetch_prices("MSFT", source="sample", lookback_days=1500).to_csv(data_dir / "pwc.csv", index=False)
    return "csv:pwc.csv"


def trial(workdir: Path, timeout: float) -> dict[str, Any]:
    state_dir, data_dir = workdir / "state", workdir / "data"
    data_dir.mkdir(parents=True)
    requests = [{"ticker": t, "source": "sample"} for t in SAMPLE_TICKERS]
    requests.append({"ticker": "PWC", "source": _fifth_ticker_csv(data_dir)})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "MLFLOW_"))}
    env |= {
        "RETRAIN_TRAINER": "ridge",
        "RETRAIN_SOURCE": "sample",
        "RETRAIN_DATA_DIR": str(data_dir),
        "RETRAIN_LOOKBACK_DAYS": "1500",
        "RETRAIN_JOB_POLL_MINUTES": "0.1",
        "RETRAIN_SMOKE_MAX_LATENCY_MS": "20000",
    }
    port = _free_port()
    log = (workdir / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "retrain", "serve", "--port", str(port), "--state-dir", str(state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workdir,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        keys = state_dir / "host" / "keys.json"
        while not keys.is_file() or _safe_get(f"{base}/") != 200:
            if serve.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError(f"serve did not start: {(workdir / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
        key = urllib.parse.quote(json.loads(keys.read_text())["functionKey"])
        answers: list[tuple[int, Any]] = [(0, None)] * len(requests)
        go = threading.Barrier(len(requests))

        def post(i: int) -> None:
            go.wait()
            answers[i] = _http("POST", f"{base}/api/retrain?code={key}", requests[i])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcomes: dict[str, str] = {}
        for request, (code, answer) in zip(requests, answers, strict=True):
            if code != 202:
                outcomes[request["ticker"]] = f"HTTP {code}: {answer}"
                continue
            # GET /api/retrain/{id} (the readable status) under the function key
            outcomes[request["ticker"]] = _follow(
                f"{answer['statusQueryGetUri']}?code={key}", request["ticker"], started + timeout
            )
        return {"outcomes": outcomes, "seconds": time.monotonic() - started}
    finally:
        serve.send_signal(signal.SIGINT)  # Ctrl-C: the host, its routers and slots stop
        try:
            serve.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        log.close()


def _safe_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _follow(status_url: str, ticker: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        code, status = _http("GET", status_url)
        if code == 200 and isinstance(status, dict):
            runtime = status.get("runtime_status")
            if runtime == "Completed":  # a fleet of one: its ticker's outcome says what happened to it
                outcome = ((status.get("output") or {}).get("tickers") or {}).get(ticker) or {}
                if outcome.get("status") == "deployed":
                    return "deployed"
                return f"{outcome.get('status')}: {str(outcome.get('error'))[:200]}"
            if runtime in ("Failed", "Terminated"):
                return f"{runtime}: {str(status.get('error') or status.get('output'))[:200]}"
        time.sleep(1.0)
    return "timed out"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per trial")
    args = parser.parse_args()
    rows = []
    for n in range(1, args.trials + 1):
        workdir = Path(tempfile.mkdtemp(prefix="retrain-cold-start-"))
        try:
            result = trial(workdir, args.timeout)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        deployed = sum(1 for o in result["outcomes"].values() if o == "deployed")
        rows.append((n, deployed, result["seconds"], result["outcomes"]))
        print(f"trial {n}: {deployed}/5 deployed in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"\n{'trial':>5} | {'deployed':>8} | {'seconds':>7} | not deployed")
    print(f"{'-' * 5}-+-{'-' * 8}-+-{'-' * 7}-+-{'-' * 30}")
    for n, deployed, seconds, outcomes in rows:
        bad = {t: o for t, o in outcomes.items() if o != "deployed"}
        print(f"{n:>5} | {deployed:>6}/5 | {seconds:>7.0f} | {bad or '-'}")
    all_five = sum(1 for _, deployed, _, _ in rows if deployed == 5)
    print(f"\n{all_five} of {len(rows)} trials deployed all five tickers")
    return 0 if all_five == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
