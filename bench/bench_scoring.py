"""Scoring latency: the real `azmlinfsrv` + scorer/score.py over HTTP on 127.0.0.1, against the floor,
in-process `model.predict` on the same input, measured in the same run.

    python bench/bench_scoring.py [--model MLFLOW_MODEL_DIR] [--requests 500] [--rounds 3]

Without --model it trains one quickly (trainer/train.py --max-epochs 2 on the bundled MSFT sample) in a
temporary folder. Each round sends N sequential requests with one `close` history, alternating with N
in-process predictions on the same input; the table shows the median over rounds of each round's p50 /
p99 (and the spread of the p50 across rounds).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.inference_server import lay_out_like_azure, start_inference_server  # noqa: E402

SCORE_PY = REPO / "scorer" / "score.py"


def sample_closes(workdir: Path) -> tuple[Path, list[float]]:
    from retrain.market_data import fetch_prices, write_snapshot

    prices = fetch_prices("MSFT", source="sample", lookback_days=1500)
    snapshot = write_snapshot(prices, "MSFT", workdir / "data")
    return snapshot.path, prices["Close"].astype(float).tolist()


def train_quick_model(csv: Path, workdir: Path) -> Path:
    out = workdir / "trained"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    env.pop("MLFLOW_RUN_ID", None)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(REPO / "trainer" / "train.py"),
            "--data",
            str(csv),
            "--output",
            str(out),
            "--max-epochs",
            "2",
        ],
        check=True,
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        timeout=900,
    )
    print(f"trained a 2-epoch model in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return out / "model"


def percentiles_ms(samples_s: list[float]) -> tuple[float, float, float]:
    """p50, p90, p99 in milliseconds."""
    p50, p90, p99 = np.percentile(np.asarray(samples_s) * 1e3, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def time_interleaved(
    model, frame: pd.DataFrame, session: requests.Session, url: str, body: bytes, n: int
) -> tuple[list[float], list[float]]:
    """n in-process predictions and n HTTP requests, alternating, so both paths see the same machine
    load (the host is shared; a burst of load then hits both columns alike)."""
    headers = {"Content-Type": "application/json"}
    local, served = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        model.predict(frame)
        t1 = time.perf_counter()
        response = session.post(url, data=body, headers=headers, timeout=30)
        t2 = time.perf_counter()
        if response.status_code != 200:
            raise RuntimeError(f"scoring failed: {response.status_code} {response.text[:300]}")
        local.append(t1 - t0)
        served.append(t2 - t1)
    return local, served


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="MLflow pyfunc model folder (default: train a quick one)")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per round (>= 500)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    if args.requests < 500:
        parser.error("--requests must be at least 500")

    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        workdir = Path(tmp)
        csv, closes = sample_closes(workdir)
        model_dir = args.model or train_quick_model(csv, workdir)
        model = mlflow.pyfunc.load_model(str(model_dir))
        window = int(model.metadata.metadata["window"])
        history = closes[-window:]
        frame = pd.DataFrame([history], columns=[f"c{i}" for i in range(window)], dtype="float64")
        body = json.dumps({"close": history}).encode()

        azure_dir = lay_out_like_azure(model_dir, workdir / "azureml-models", "bench-forecaster", 1)
        server = start_inference_server(SCORE_PY, azure_dir, log_path=workdir / "server.log")
        try:
            session = requests.Session()
            served = session.post(server.scoring_url, data=body, timeout=30).json()["forecast"][0]
            local = float(model.predict(frame)["forecast"].iloc[0])
            if not np.isclose(served, local, rtol=1e-9):
                raise RuntimeError(f"server and in-process forecasts differ: {served} vs {local}")
            time_interleaved(model, frame, session, server.scoring_url, body, args.warmup)

            rounds: dict[str, list[tuple[float, float, float]]] = {
                "in-process predict": [],
                "azmlinfsrv HTTP": [],
            }
            for _ in range(args.rounds):
                local, served = time_interleaved(
                    model, frame, session, server.scoring_url, body, args.requests
                )
                rounds["in-process predict"].append(percentiles_ms(local))
                rounds["azmlinfsrv HTTP"].append(percentiles_ms(served))
        finally:
            server.stop()

    floor_p50 = statistics.median(v[0] for v in rounds["in-process predict"])
    print(
        f"\nScoring latency, window {window}, one instance per request, {args.requests} sequential "
        f"requests x {args.rounds} rounds (median of rounds)"
    )
    print(f"{'path':<22}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'p50 range ms':>18}{'p50 / floor':>13}")
    for name, values in rounds.items():
        p50 = statistics.median(v[0] for v in values)
        p90 = statistics.median(v[1] for v in values)
        p99 = statistics.median(v[2] for v in values)
        spread = f"{min(v[0] for v in values):.3f}-{max(v[0] for v in values):.3f}"
        print(f"{name:<22}{p50:>10.3f}{p90:>10.3f}{p99:>10.3f}{spread:>18}{p50 / floor_p50:>12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
