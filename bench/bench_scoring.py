"""Scoring latency and throughput, every layer of one model version measured in one run on this machine:

  floor                the model's own compute: its torch forward on one window (in-process)
  numpy path           the python model's forecast_from_closes(ndarray) (in-process), what the scorer calls
  pyfunc.predict       in-process pyfunc.predict(DataFrame) (pandas + MLflow's per-call schema enforcement)
  azmlinfsrv app       the slot's application without its socket: azmlinfsrv's Flask app and the scorer
                       called as a WSGI callable in a process of its own (bench/scoring_probes.py)
  bare HTTP hop        a stdlib keep-alive server answering a constant, no model: one Python HTTP hop
  slot direct          one endpoint slot: the real azmlinfsrv + scorer/score.py, started by the local
                       endpoint's own launcher with the slot settings (retrain/scoring_server.py)
  stable URL           the real local endpoint (LocalEndpoints): its router, then the slot
  mlflow models serve  `mlflow models serve --env-manager local` of the same model folder
  slot, sync worker    the same slot with gunicorn's default sync worker (azmlinfsrv's default), for
                       comparison; plus the held-connection probe: one client keeps its connection
                       open after a response, how long does the next client's request take?

    python bench/bench_scoring.py [--model MLFLOW_MODEL_DIR] [--requests 300] [--rounds 3]
                                  [--seconds 10] [--clients 16,64] [--slot-setting KEY=VALUE ...]

Without --model it trains one quickly (trainer/train.py --max-epochs 2 on the bundled MSFT sample).
Sequential requests (one `close` history of one window each) with two clients: keep-alive (one
persistent http.client connection, reopened only if the server closes it) and new connection (a new
TCP connection per request). Each round measures every path in turn; the tables show the median over
rounds of each round's p50 / p90 / p99, with ratios against the floor and against `mlflow models serve`
(same client) from the same run. Then N concurrent keep-alive clients for --seconds each against the
stable URL and a slot directly: requests/s, p50, p99, errors (median over rounds). The load generator
runs on the same cores as the servers (Python threads), so the concurrency figures are a lower bound.
Servers bind 127.0.0.1 and are stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The file that holds this script's figures blocks (bench/readme_figures.py).
FIGURES_FILE = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(REPO))

from bench.readme_figures import machine  # noqa: E402
from retrain.job_code import kit_pythonpath  # noqa: E402
from retrain.local.endpoint import LocalEndpoints  # noqa: E402
from retrain.local.inference_server import (  # noqa: E402
    start_inference_server,
    stop_inference_server,
    wait_until_live,
)
from retrain.local.processes import free_port, read_json  # noqa: E402
from retrain.ports import ModelRef  # noqa: E402
from retrain.scoring_server import SLOT_SERVER_ENVIRONMENT  # noqa: E402
from tests.helpers import mlflow_models_serve, stop_group, wait_for  # noqa: E402

SCORE_PY = REPO / "scorer" / "score.py"
PROBES_PY = REPO / "bench" / "scoring_probes.py"
LOCALHOST = "127.0.0.1"
ENDPOINT = "bench-scoring"
MODEL_NAME = "bench-forecaster"
JSON_HEADERS = {"Content-Type": "application/json"}


# ------------------------------------------------------------------------------------------- model


def sample_closes(workdir: Path) -> tuple[Path, list[float]]:
    from retrain.market_data import fetch_prices, write_snapshot

    prices = fetch_prices("MSFT", source="sample", lookback_days=1500)
    snapshot = write_snapshot(prices, "MSFT", workdir / "data")
    return snapshot.path, prices["Close"].astype(float).tolist()


def train_quick_model(csv: Path, workdir: Path) -> Path:
    out = workdir / "trained"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    env["PYTHONPATH"] = kit_pythonpath(
        env.get("PYTHONPATH")
    )  # train.py from its folder: the kit from the root
    env.pop("MLFLOW_RUN_ID", None)
    started = time.perf_counter()
    command = [sys.executable, str(REPO / "trainer" / "train.py"), "--data", str(csv), "--output", str(out)]
    subprocess.run(
        [*command, "--max-epochs", "2"],
        check=True,
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=900,
    )
    log(f"trained a 2-epoch model in {time.perf_counter() - started:.1f}s")
    return out / "model"


# ------------------------------------------------------------------------------------------ clients


@dataclass(frozen=True)
class HttpTarget:
    name: str
    port: int
    path: str
    body: bytes
    expected: float | None  # None: an answer without a forecast to compare (the bare HTTP hop)
    parse: Callable[[bytes], float]

    def check(self, payload: bytes) -> None:
        if self.expected is None:
            return
        got = self.parse(payload)
        if not np.isclose(got, self.expected, rtol=1e-9, atol=0.0):
            raise RuntimeError(f"{self.name} answered {got}, in-process predict {self.expected}")


class KeepAliveClient:
    """One persistent connection, reopened only when the server closes it (as a pooling client does)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=60)
        try:
            self.conn.request("POST", path, body=body, headers=JSON_HEADERS)
            response = self.conn.getresponse()
            payload = response.read()
        except Exception:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def post_new_connection(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={**JSON_HEADERS, "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def time_sequential(target: HttpTarget, keep_alive: bool, n: int) -> list[float]:
    client = KeepAliveClient(target.port)
    samples = []
    last = b""
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            if keep_alive:
                status, last = client.post(target.path, target.body)
            else:
                status, last = post_new_connection(target.port, target.path, target.body)
            samples.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{target.name} answered {status}: {last[:300]!r}")
    finally:
        client.close()
    target.check(last)
    return samples


def time_in_process(fn: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


@dataclass
class LoadResult:
    ok: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.ok / self.seconds


def concurrent_load(target: HttpTarget, clients: int, seconds: float) -> LoadResult:
    """`clients` threads, each a keep-alive client sending requests back to back for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        client = KeepAliveClient(target.port)
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                try:
                    status, _ = client.post(target.path, target.body)
                except OSError:
                    errors[i] += 1
                    continue
                if status == 200:
                    latencies[i].append(time.perf_counter() - t0)
                else:
                    errors[i] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    elapsed = time.perf_counter() - began
    flat = [x for per in latencies for x in per]
    return LoadResult(ok=len(flat), errors=sum(errors), seconds=elapsed, latencies=flat)


def held_connection_wait(port: int, body: bytes) -> float:
    """Client A sends one request and keeps its socket open after reading the response (as a pool that
    closes lazily does); returns how long client B's request then takes."""
    request = (
        b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    held = socket.create_connection((LOCALHOST, port), timeout=60)
    try:
        held.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += held.recv(65536)
        head, rest = data.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(rest) < length:
            rest += held.recv(65536)
        t0 = time.perf_counter()
        status, _ = post_new_connection(port, "/score", body)
        waited = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"held-connection probe answered {status}")
        return waited
    finally:
        held.close()


# ------------------------------------------------------------------------------------------ servers


@contextlib.contextmanager
def sync_worker_slot(model_dir: Path, log_path: Path, overrides: dict[str, str]):
    """A slot as azmlinfsrv runs by default (gunicorn's sync worker), otherwise with the slot settings."""
    settings = {**overrides, "GUNICORN_CMD_ARGS": ""}
    server = start_inference_server(SCORE_PY, model_dir, free_port(), log_path, server_settings=settings)
    try:
        wait_until_live(server)
        yield server.port
    finally:
        stop_inference_server(server.pid, server.start_ticks)


@contextlib.contextmanager
def local_endpoint(model_dir: Path, state_dir: Path, slot_settings: dict[str, str]):
    """The real local endpoint with the model on its blue slot at 100 %; yields (router port, slot port)."""

    def fetch(model: ModelRef, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(model_dir, dest / "model")

    # Slot settings overridden for this run reach the slot through its launcher's environment.
    saved = {k: os.environ.get(k) for k in slot_settings}
    os.environ.update(slot_settings)
    endpoints = LocalEndpoints(state_dir, fetch, SCORE_PY)
    try:
        endpoints.begin_create_endpoint(ENDPOINT)
        endpoints.begin_deployment(ENDPOINT, "blue", ModelRef(MODEL_NAME, "1"))
        endpoints.wait_until_ready(ENDPOINT)
        endpoints.set_traffic(ENDPOINT, {"blue": 100})
        state = read_json(state_dir / "endpoints" / ENDPOINT / "state.json")
        yield int(state["router_port"]), int(state["slots"]["blue"]["port"])
    finally:
        endpoints.stop_all(everything=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def wsgi_probe(model_dir: Path, log_path: Path, body: bytes, extra_env: dict[str, str]):
    """azmlinfsrv's app with the scorer in a process of its own, called without a socket; yields
    (answer body, samples(n) -> n latencies in seconds)."""
    env = {**os.environ, **extra_env}
    command = [sys.executable, str(PROBES_PY), "wsgi", "--entry-script", str(SCORE_PY)]
    command += ["--model-dir", str(model_dir), "--log", str(log_path), "--body", body.decode()]
    proc = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready = proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the WSGI probe exited: {log_path.read_text(errors='replace')[-2000:]}")

        def samples(n: int) -> list[float]:
            proc.stdin.write(f"{n}\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return [float(x) for x in json.loads(proc.stdout.readline())]  # type: ignore[union-attr]

        yield json.loads(ready)["answer"].encode(), samples
    finally:
        stop_group(proc.pid)
        proc.wait(timeout=5)


@contextlib.contextmanager
def constant_http_server():
    """A bare stdlib keep-alive HTTP server answering a constant (no model) on 127.0.0.1; yields its port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PROBES_PY), "http", "--port", str(port)], start_new_session=True
    )

    def listening() -> bool:
        socket.create_connection((LOCALHOST, port), timeout=1).close()
        return True

    def exited() -> str | None:
        return None if proc.poll() is None else f"exited with {proc.returncode}"

    try:
        wait_for("the bare HTTP server", listening, 30, exited)
        yield port
    finally:
        stop_group(proc.pid)
        proc.wait(timeout=5)


# ------------------------------------------------------------------------------------------- report


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pcts_ms(samples_s: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(np.asarray(samples_s) * 1e3, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def median_of(rounds: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(statistics.median(r[i] for r in rounds) for i in range(len(rounds[0])))


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="MLflow pyfunc model folder (default: train a quick one)")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each concurrency run")
    parser.add_argument("--clients", default="16,64", help="concurrent keep-alive clients, comma-separated")
    parser.add_argument(
        "--slot-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one slot server setting for this run (e.g. WORKER_COUNT=2)",
    )
    parser.add_argument(
        "--write-figures",
        "--write-readme",  # the name before the figures moved to docs/
        dest="write_figures",
        action="store_true",
        help=f"also write the `scoring` figures block of {FIGURES_FILE.relative_to(REPO)}",
    )
    parser.add_argument(
        "--figures-file",
        "--readme",
        dest="figures_file",
        type=Path,
        default=FIGURES_FILE,
        help=argparse.SUPPRESS,
    )
    return parser


def settings_of(args: argparse.Namespace) -> dict[str, object]:
    """What the figures depend on, as the scoring block (docs/benchmarks.md) records it."""
    overrides = dict(kv.split("=", 1) for kv in args.slot_setting)
    return {
        "clients": args.clients,
        "model": str(args.model) if args.model else "trainer/train.py --max-epochs 2 on the MSFT sample",
        "requests": args.requests,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "slot_settings": {**SLOT_SERVER_ENVIRONMENT, **overrides},
        "warmup": args.warmup,
    }


def DEFAULT_SETTINGS(block: str) -> dict[str, object]:  # noqa: N802 (the name readme_figures looks for)
    """What the `scoring` block records when this script runs with its defaults."""
    return settings_of(build_parser().parse_args([]))


# Row labels of the sequential table: (bench path, client) in the scoring block's order.
README_ROWS = (
    ("floor: torch forward", "in-process", "the model's torch forward on one window (the floor)"),
    ("numpy forecast_from_closes", "in-process", "`forecast_from_closes` (numpy in, numpy out)"),
    ("pyfunc.predict(DataFrame)", "in-process", "`pyfunc.predict(DataFrame)`"),
    ("azmlinfsrv app, no socket", "in-process", "`azmlinfsrv`'s app and the scorer, no socket (WSGI call)"),
    (
        "bare HTTP hop (constant)",
        "keep-alive",
        "a bare HTTP hop (stdlib keep-alive server, constant answer, no model)",
    ),
    ("slot direct (azmlinfsrv)", "keep-alive", "a slot's `azmlinfsrv` directly"),
    ("slot direct (azmlinfsrv)", "new connection", "a slot's `azmlinfsrv` directly"),
    ("stable URL (router+slot)", "keep-alive", "the stable URL (router, then slot)"),
    ("stable URL (router+slot)", "new connection", "the stable URL (router, then slot)"),
    ("mlflow models serve", "keep-alive", "`mlflow models serve` of the same model"),
    ("mlflow models serve", "new connection", "`mlflow models serve` of the same model"),
    ("slot, sync worker", "keep-alive", "a slot with gunicorn's sync worker (azmlinfsrv's default)"),
)
README_TARGETS = {
    "stable URL (router+slot)": "stable URL (router, then slot)",
    "slot direct (azmlinfsrv)": "a slot directly",
}


def readme_markdown(
    sequential: dict[tuple[str, str], list[tuple[float, float, float]]],
    concurrency: dict[tuple[str, int], list[tuple[float, float, float, float]]],
    held: dict[str, list[float]],
    args: argparse.Namespace,
    worker_boots: int,
) -> str:
    """The scoring block's tables from one run's measurements."""
    floor = median_of(sequential[("floor: torch forward", "in-process")])[0]
    lines = [
        "| path | client | p50 ms | p90 ms | p99 ms | p50 / floor | p50 / mlflow serve | p99 / p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, client, label in README_ROWS:
        if (key, client) not in sequential:
            continue
        p50, p90, p99 = median_of(sequential[(key, client)])
        serve = sequential.get(("mlflow models serve", client))
        vs_serve = f"{p50 / median_of(serve)[0]:.2f}x" if serve else ""
        lines.append(
            f"| {label} | {client} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {p50 / floor:.1f}x | {vs_serve} "
            f"| {p99 / p50:.1f}x |"
        )
    errors = sum(int(r[3]) for rounds in concurrency.values() for r in rounds)
    workers = int(settings_of(args)["slot_settings"]["WORKER_COUNT"])  # type: ignore[index]
    restarts = (
        "no worker restarts" if worker_boots == workers else f"{worker_boots} worker boots for {workers}"
    )
    lines += [
        "",
        f"Concurrent keep-alive clients, {args.seconds:.0f} s each (the load generator is Python threads on "
        f"the same {os.cpu_count()} cores,",
        f"so these are lower bounds), median of {args.rounds} rounds; {errors or 'no'} errors, {restarts}:",
        "",
        "| target | clients | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for (name, clients), rounds in concurrency.items():
        rps, p50, p99, _ = median_of(rounds)
        total = int(sum(r[3] for r in rounds))
        lines.append(
            f"| {README_TARGETS.get(name, name)} | {clients} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {total} |"
        )

    def waits(name: str) -> str:
        return " / ".join(f"{w * 1e3:.1f}" if w < 1 else f"{w * 1e3:.0f}" for w in held.get(name, []))

    lines += [
        "",
        "One client keeps its connection open after a response; the next client's request then took",
        f"{waits('slot direct (azmlinfsrv)')} ms on the slot, {waits('slot, sync worker')} ms on the sync-worker slot.",
    ]
    return "\n".join(lines)


def main() -> int:
    args = build_parser().parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.slot_setting)
    slot_settings = {**SLOT_SERVER_ENVIRONMENT, **overrides}
    client_counts = [int(c) for c in args.clients.split(",") if c]

    import mlflow.pyfunc
    import pandas as pd
    import torch

    # The in-process paths run with the slot's torch threads, so the floor is the slot's own compute.
    torch.set_num_threads(int(slot_settings.get("OMP_NUM_THREADS", "1")))
    # The other servers get the slot's torch threads too, so they all run the same compute.
    torch_threads = {k: v for k, v in slot_settings.items() if k.endswith("_NUM_THREADS")}
    started_at = datetime.now(UTC)
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        workdir = Path(tmp)
        csv, closes = sample_closes(workdir)
        model_dir = (args.model or train_quick_model(csv, workdir)).resolve()
        pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        python_model = pyfunc.unwrap_python_model()
        window = int(pyfunc.metadata.metadata["window"])
        columns = [f"c{i}" for i in range(window)]
        history = closes[-window:]
        row = np.asarray([history], dtype=np.float64)
        frame = pd.DataFrame(row, columns=columns)
        expected = float(pyfunc.predict(frame)["forecast"].iloc[0])

        # The floor: the network's forward alone, on the window already turned into its input tensor.
        from forecast_features import window_log_returns  # the model's code (its code_paths)

        x = torch.as_tensor(python_model.scaler.transform(window_log_returns(row)), dtype=torch.float32)
        x = x.unsqueeze(-1)

        def forward() -> None:
            with torch.inference_mode():
                python_model.net(x)

        in_process: dict[str, Callable[[], object]] = {
            "floor: torch forward": forward,
            "numpy forecast_from_closes": lambda: python_model.forecast_from_closes(row),
            "pyfunc.predict(DataFrame)": lambda: pyfunc.predict(frame),
        }
        if not np.isclose(float(python_model.forecast_from_closes(row)[0]), expected, rtol=1e-9, atol=0.0):
            raise RuntimeError("forecast_from_closes and pyfunc.predict disagree")

        score_body = json.dumps({"close": history}).encode()
        serve_body = json.dumps({"dataframe_split": {"columns": columns, "data": [history]}}).encode()

        def scorer_answer(payload: bytes) -> float:
            return float(json.loads(payload)["forecast"][0])

        def serve_answer(payload: bytes) -> float:
            predictions = json.loads(payload)["predictions"]
            first = predictions[0]
            return float(first["forecast"] if isinstance(first, dict) else first)

        with (
            local_endpoint(model_dir, workdir / "state", overrides) as (router_port, slot_port),
            mlflow_models_serve(model_dir, workdir / "mlflow-serve.log", torch_threads) as serve,
            sync_worker_slot(model_dir, workdir / "sync-slot.log", overrides) as sync_port,
            wsgi_probe(model_dir, workdir / "wsgi-probe.log", score_body, torch_threads) as (
                wsgi_answer,
                wsgi,
            ),
            constant_http_server() as bare_port,
        ):
            if not np.isclose(scorer_answer(wsgi_answer), expected, rtol=1e-9, atol=0.0):
                raise RuntimeError(f"the WSGI probe answered {wsgi_answer[:300]!r}, in-process {expected}")
            targets = {
                "slot direct (azmlinfsrv)": HttpTarget(
                    "slot", slot_port, "/score", score_body, expected, scorer_answer
                ),
                "stable URL (router+slot)": HttpTarget(
                    "stable URL", router_port, "/score", score_body, expected, scorer_answer
                ),
                "mlflow models serve": HttpTarget(
                    "mlflow models serve", serve.port, "/invocations", serve_body, expected, serve_answer
                ),
                "slot, sync worker": HttpTarget(
                    "slot, sync worker", sync_port, "/score", score_body, expected, scorer_answer
                ),
                "bare HTTP hop (constant)": HttpTarget(
                    "bare HTTP hop", bare_port, "/score", score_body, None, scorer_answer
                ),
            }
            for fn in in_process.values():
                time_in_process(fn, args.warmup)
            wsgi(args.warmup)
            for target in targets.values():
                time_sequential(target, True, args.warmup)
                time_sequential(target, False, args.warmup)

            sequential: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
            for r in range(args.rounds):
                log(f"round {r + 1}/{args.rounds}: sequential (load {load_average()})")
                for name, fn in in_process.items():
                    sequential.setdefault((name, "in-process"), []).append(
                        pcts_ms(time_in_process(fn, args.requests))
                    )
                sequential.setdefault(("azmlinfsrv app, no socket", "in-process"), []).append(
                    pcts_ms(wsgi(args.requests))
                )
                for name, target in targets.items():
                    for client, keep_alive in (("keep-alive", True), ("new connection", False)):
                        sequential.setdefault((name, client), []).append(
                            pcts_ms(time_sequential(target, keep_alive, args.requests))
                        )

            held: dict[str, list[float]] = {}
            for name in ("slot direct (azmlinfsrv)", "slot, sync worker"):
                for _ in range(3):
                    held.setdefault(name, []).append(held_connection_wait(targets[name].port, score_body))

            concurrency: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
            load_targets = {k: targets[k] for k in ("stable URL (router+slot)", "slot direct (azmlinfsrv)")}
            for r in range(args.rounds):
                for name, target in load_targets.items():
                    for clients in client_counts:
                        log(
                            f"round {r + 1}/{args.rounds}: {clients} clients -> {name} (load {load_average()})"
                        )
                        result = concurrent_load(target, clients, args.seconds)
                        p50, _, p99 = pcts_ms(result.latencies) if result.latencies else (0.0, 0.0, 0.0)
                        concurrency.setdefault((name, clients), []).append(
                            (result.rps, p50, p99, float(result.errors))
                        )

        slot_log = workdir / "state" / "endpoints" / ENDPOINT / "blue" / "server.log"
        worker_boots = (
            slot_log.read_text(errors="replace").count("Booting worker") if slot_log.exists() else -1
        )

    print(f"\nScoring, one model version (window {window}), one instance per request")
    print(f"machine: {machine()}")
    print(
        f"date: {started_at:%Y-%m-%d %H:%M} UTC; load average (1/5/15 min) {load_before} at start, "
        f"{load_average()} at end"
    )
    print(f"slot settings: {json.dumps(slot_settings)}")
    print(
        f"{args.requests} sequential requests per path per round, {args.rounds} rounds: median of the "
        "rounds' percentiles"
    )
    floor = median_of(sequential[("floor: torch forward", "in-process")])[0]
    header = f"{'path':<28}{'client':<16}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
    print(f"\n{header}{'p50/floor':>11}{'p50/serve':>11}{'p99/p50':>9}")
    for (name, client), rounds in sequential.items():
        p50, p90, p99 = median_of(rounds)
        serve = sequential.get(("mlflow models serve", client))
        vs_serve = f"{p50 / median_of(serve)[0]:>10.2f}x" if serve else f"{'':>11}"
        print(
            f"{name:<28}{client:<16}{p50:>8.3f}{p90:>8.3f}{p99:>8.3f}{p50 / floor:>10.1f}x{vs_serve}{p99 / p50:>8.1f}x"
        )

    app = median_of(sequential[("azmlinfsrv app, no socket", "in-process")])[0]
    hop = median_of(sequential[("bare HTTP hop (constant)", "keep-alive")])[0]
    stable = median_of(sequential[("stable URL (router+slot)", "keep-alive")])[0]
    print(
        f"\nLower bound of the stable URL through azmlinfsrv (keep-alive): the app without its socket "
        f"{app:.3f} ms + two bare HTTP hops (client -> router -> slot) 2 x {hop:.3f} ms = "
        f"{app + 2 * hop:.3f} ms = {(app + 2 * hop) / floor:.1f}x the floor; measured {stable:.3f} ms = "
        f"{stable / floor:.1f}x"
    )

    print(f"\nConcurrent keep-alive clients, {args.seconds:.0f} s each, median of {args.rounds} rounds")
    print(f"{'target':<28}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for (name, clients), rounds in concurrency.items():
        rps, p50, p99, errors = median_of(rounds)
        total_errors = int(sum(r[3] for r in rounds))
        print(f"{name:<28}{clients:>8}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}{total_errors:>8}")
    print("\nOne client keeps its connection open after a response; the next client's request (3 tries)")
    for name, waits in held.items():
        print(f"{name:<28}{' / '.join(f'{w * 1e3:.1f}' for w in waits)} ms")
    print(f"\nslot worker boots during the run: {worker_boots} (1 per worker: none died)")
    if args.write_figures:
        from bench.readme_figures import write_block

        command = shlex.join(["bench/bench_scoring.py", *sys.argv[1:]])
        markdown = readme_markdown(sequential, concurrency, held, args, worker_boots)
        write_block(args.figures_file, "scoring", markdown, settings_of(args), command)
        log(f"wrote the scoring block of {args.figures_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
