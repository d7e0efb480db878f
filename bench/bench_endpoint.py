"""The local endpoint under load: keep-alive vs new connections (a slot directly and the stable URL),
failed requests during blue/green swaps, and seconds of failed requests across a crash (SIGKILL) and a
graceful stop (SIGTERM) of `retrain serve` followed by a new `serve` on the same state dir.

    python bench/bench_endpoint.py [--requests 300] [--rounds 3] [--swaps 10] [--restarts 2]

It trains one quick model (trainer/train.py --max-epochs 1 on the bundled MSFT sample) in a temporary
folder and builds the endpoint with `LocalEndpoints` there. Tables print medians over rounds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrain.job_code import kit_pythonpath  # noqa: E402
from retrain.local.endpoint import LocalEndpoints  # noqa: E402
from retrain.local.inference_server import (  # noqa: E402
    start_inference_server,
    stop_inference_server,
    wait_until_live,
)
from retrain.local.processes import process_alive, read_json  # noqa: E402
from retrain.ports import ModelRef  # noqa: E402

SCORER = REPO / "scorer" / "score.py"
NAME = "bench-forecaster"
ENDPOINT = "bench-endpoint"


def train(workdir: Path) -> tuple[Path, list[float]]:
    from retrain.market_data import fetch_prices, write_snapshot

    prices = fetch_prices("MSFT", source="sample", lookback_days=1500)
    csv = write_snapshot(prices, "MSFT", workdir / "data").path
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    env["PYTHONPATH"] = kit_pythonpath(
        env.get("PYTHONPATH")
    )  # train.py from its folder: the kit from the root
    env.pop("MLFLOW_RUN_ID", None)
    out = workdir / "trained"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "trainer" / "train.py"),
            "--data",
            str(csv),
            "--output",
            str(out),
            "--max-epochs",
            "1",
        ],
        check=True,
        env=env,
        cwd=workdir,
        capture_output=True,
    )
    return out / "model", prices["Close"].astype(float).tolist()[-40:]


def fetcher(model_dir: Path):
    def fetch(model: ModelRef, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(model_dir, dest / "model")

    return fetch


def latencies(port: int, path: str, body: bytes, n: int, keep_alive: bool) -> list[float]:
    out = []
    conn = None
    for _ in range(n):
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.perf_counter()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        out.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, response.status
        if not keep_alive or response.will_close:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return out


class Client(threading.Thread):
    """One request every `interval` seconds to the stable URL, each on a new connection (a restart closes
    kept connections); records (sent at, ok)."""

    def __init__(self, port: int, body: bytes, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.port, self.body, self.interval = port, body, interval
        self.results: list[tuple[float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", "/score", body=self.body, headers={"Content-Type": "application/json"})
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            self.results.append((sent, ok))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def failed_seconds(self, since: float) -> tuple[int, int, float]:
        window = [r for r in self.results if r[0] >= since]
        failed = [r[0] for r in window if not r[1]]
        return len(window), len(failed), (max(failed) - min(failed) + self.interval) if failed else 0.0


def wait_scoring(port: int, body: bytes, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the scoring URL did not answer")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(state: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RETRAIN_STATE_DIR": str(state), "RETRAIN_PLATFORM": "local"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "retrain", "serve", "--port", str(free_port()), "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=state,
            start_new_session=True,
        )


def wait_ready_line(log: Path, count: int, serve: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count("Ctrl-C to stop") < count:
        if serve.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"serve did not get ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--restarts", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
    eps = None
    try:
        model, closes = train(work)
        body = json.dumps({"close": closes}).encode()
        state = work / "state"
        eps = LocalEndpoints(state, fetcher(model), SCORER)
        eps.begin_create_endpoint(ENDPOINT)
        eps.begin_deployment(ENDPOINT, "blue", ModelRef(NAME, "1"))
        eps.wait_until_ready(ENDPOINT)
        eps.set_traffic(ENDPOINT, {"blue": 100})
        eps.wait_until_ready(ENDPOINT)
        info = read_json(state / "endpoints" / ENDPOINT / "state.json")
        router_port, slot_port = int(info["router_port"]), int(info["slots"]["blue"]["port"])

        # The same slot with gunicorn's gthread worker: the default sync worker closes every connection.
        os.environ["GUNICORN_CMD_ARGS"] = "--worker-class gthread --threads 1 --keep-alive 75"
        model_dir = Path(info["slots"]["blue"]["model_dir"])
        gthread = start_inference_server(SCORER, model_dir, free_port(), work / "gthread.log")
        del os.environ["GUNICORN_CMD_ARGS"]
        wait_until_live(gthread)

        print("\n## Sequential requests, p50 ms (median over rounds)\n")
        print("| path | new connection | keep-alive |\n|---|---|---|")
        paths = (
            ("slot directly (azmlinfsrv, gunicorn sync worker)", slot_port),
            ("slot directly (gunicorn gthread worker)", gthread.port),
            ("stable URL (router -> sync slot)", router_port),
        )
        # Modes and paths interleaved round by round, so a change in the machine's load hits them alike.
        p50s: dict[tuple[int, bool], list[float]] = {}
        for _ in range(args.rounds):
            for _label, port in paths:
                for keep in (False, True):
                    sample = latencies(port, "/score", body, args.requests, keep)
                    p50s.setdefault((port, keep), []).append(statistics.median(sample))
        for label, port in paths:
            row = [f"{statistics.median(p50s[(port, keep)]):.2f}" for keep in (False, True)]
            print(f"| {label} | {row[0]} | {row[1]} |")
        stop_inference_server(gthread.pid, gthread.start_ticks)

        print(f"\n## {args.swaps} blue/green swaps (deploy idle, 90/10, 0/100, delete old) under load\n")
        client = Client(router_port, body)
        client.start()
        started = time.monotonic()
        for swap in range(args.swaps):
            old = eps.get_endpoint(ENDPOINT).serving_slot()
            new = "green" if old == "blue" else "blue"
            eps.begin_deployment(ENDPOINT, new, ModelRef(NAME, str(swap + 2)))
            eps.wait_until_ready(ENDPOINT)
            for traffic in ({old: 90, new: 10}, {old: 0, new: 100}):
                eps.set_traffic(ENDPOINT, traffic)
                eps.wait_until_ready(ENDPOINT)
            eps.begin_delete_deployment(ENDPOINT, old)
            while eps.get_deployment(ENDPOINT, old).state != "NotFound":
                time.sleep(0.1)
        client.stop.set()
        client.join()
        sent, failed, _ = client.failed_seconds(started)
        print(
            f"| swaps | requests sent | failed | seconds |\n|---|---|---|---|\n| {args.swaps} | {sent} | {failed} | {time.monotonic() - started:.0f} |"
        )

        eps.stop_routers()  # `retrain serve` takes the endpoint over (it adopts the running slot)
        print("\n## `retrain serve` restarts under load (a request every 20 ms, new connection each)\n")
        print("| how serve stops | requests | failed | seconds with failures |\n|---|---|---|---|")
        log = work / "serve.log"
        serve = start_serve(state, log)
        ready = 1
        wait_ready_line(log, ready, serve)
        wait_scoring(router_port, body)
        client = Client(router_port, body)
        client.start()
        try:
            for how in ["SIGKILL", "SIGTERM"] * args.restarts:
                time.sleep(1.0)
                since = time.monotonic()
                os.killpg(serve.pid, getattr(signal, how)) if how == "SIGKILL" else os.kill(
                    serve.pid, signal.SIGTERM
                )
                serve.wait(timeout=120)
                serve = start_serve(state, log)
                ready += 1
                wait_ready_line(log, ready, serve)
                wait_scoring(router_port, body)
                time.sleep(1.0)
                sent, failed, seconds = client.failed_seconds(since)
                print(f"| {how} then start | {sent} | {failed} | {seconds:.2f} |")
        finally:
            client.stop.set()
            client.join()
            os.kill(serve.pid, signal.SIGINT)  # Ctrl-C: the host and the endpoint's slots stop
            serve.wait(timeout=120)
    finally:
        if eps is not None:
            eps.stop_all(everything=True)
        for path in (work / "state" / "endpoints").glob("*/state.json"):
            state = read_json(path)
            for proc in [*state.get("slots", {}).values(), state.get("router") or {}]:
                if process_alive(proc.get("pid"), proc.get("start_ticks")):
                    os.killpg(proc["pid"], signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
