"""One azmlinfsrv serving a bundle of N ridge tickers vs one serving a single model, in the same run.

    .venv/bin/python bench/bench_bundle_scorer.py [--sizes 1 50 200] [--runs 3] [--requests 300]

For each server (a single model; bundles of N tickers), started as a slot runs (retrain/scoring_server.py
settings, one worker) on 127.0.0.1 with the bundle laid out as Azure mounts it:
  init s         from start until GET / answers (every ticker's model loaded)
  PSS MB         proportional set size of the server's processes (launcher, gunicorn master, worker),
                 summed from /proc/PID/smaps_rollup
  p50 one ms     one-ticker requests over a kept connection, tickers in rotation ({"ticker", "close"};
                 the single model gets today's {"close"})
  p50 one run() ms  the same requests' time inside the server (its x-ms-run-fn-exec-ms header)
  p50 batch ms   a 200-instance batch (200 tickers' windows for N >= 200, else rows repeated over its N)
All servers of a run are up at once and the requests are interleaved in blocks of 50 across them (the
background load of a shared machine falls on all alike). Medians over --runs runs of fresh servers. Models: the ridge trainer's own fit and save_model, one per
ticker on its own synthetic random walk (window 20); the bundle build time is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrain.bundles import BundleEntry, build_bundle, model_folder  # noqa: E402
from retrain.scoring_server import SLOT_SERVER_ENVIRONMENT  # noqa: E402
from tests.bundle_models import closes_for, ridge_model  # noqa: E402
from tests.inference_server import lay_out_like_azure, start_inference_server  # noqa: E402

SCORER = REPO / "scorer" / "score.py"
WINDOW = 20
BATCH = 200


def tickers(n: int) -> list[str]:
    return [f"T{i:03d}" for i in range(n)]


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo.extend(int(c) for c in task.read_text().split())
    return found


def pss_mb(pid: int) -> float:
    total_kb = 0
    for p in descendants(pid):
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def timed_posts(port: int, bodies: list[bytes], n: int, run_ms: list[float] | None = None) -> list[float]:
    """Client-side milliseconds per request; `run_ms` collects the server's own run() time
    (azmlinfsrv's x-ms-run-fn-exec-ms header), which leaves out the HTTP and loopback noise."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out = []
    try:
        for i in range(n):
            body = bodies[i % len(bodies)]
            started = time.perf_counter()
            conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            out.append((time.perf_counter() - started) * 1000)
            if run_ms is not None:
                run_ms.append(float(response.getheader("x-ms-run-fn-exec-ms", "nan")))
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {payload[:300]!r}")
    finally:
        conn.close()
    return out


def measure_run(
    rows: dict[str, tuple[Path, list[bytes], bytes]], requests: int, work: Path, run: int
) -> dict[str, dict[str, float]]:
    """One run: every server started (one at a time, timing its init), then the requests interleaved in
    blocks across the servers, so the machine's background load falls on all of them alike."""
    env = {**SLOT_SERVER_ENVIRONMENT, "RETRAIN_MODEL_NAME": "bench", "RETRAIN_MODEL_VERSION": "1"}
    with contextlib.ExitStack() as stack:
        servers, results = {}, {}
        for label, (model_dir, _, _) in rows.items():
            started = time.perf_counter()
            log = work / f"{label.replace(' ', '-')}-{run}.log"
            servers[label] = stack.enter_context(
                start_inference_server(SCORER, model_dir, env=env, log_path=log)
            )
            results[label] = {"init s": time.perf_counter() - started}
        one_ms: dict[str, list[float]] = {label: [] for label in rows}
        one_run_ms: dict[str, list[float]] = {label: [] for label in rows}
        batch_ms: dict[str, list[float]] = {label: [] for label in rows}
        for label, (_, one, _) in rows.items():
            timed_posts(servers[label].port, one, 20)  # warm-up
        block = 50
        for _ in range(max(1, requests // block)):
            for label, (_, one, batch) in rows.items():
                one_ms[label] += timed_posts(servers[label].port, one, block, one_run_ms[label])
                batch_ms[label] += timed_posts(servers[label].port, [batch], 3)
        for label in rows:
            results[label].update(
                {
                    "PSS MB": pss_mb(servers[label].pid),
                    "p50 one ms": statistics.median(one_ms[label]),
                    "p50 one run() ms": statistics.median(one_run_ms[label]),
                    "p50 batch ms": statistics.median(batch_ms[label]),
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    try:
        n_max = max(args.sizes)
        started = time.perf_counter()
        models = {t: ridge_model(work / "models" / model_folder(t), t, WINDOW) for t in tickers(n_max)}
        print(f"# {n_max} ridge models fitted and saved in {time.perf_counter() - started:.1f} s", flush=True)
        windows = {t: closes_for(t)[-WINDOW:].tolist() for t in tickers(n_max)}

        first = tickers(1)[0]
        single_dir = lay_out_like_azure(models[first], work / "single", "bench", 1)
        rows: dict[str, tuple[Path, list[bytes], bytes]] = {
            "single model": (
                single_dir,
                [json.dumps({"close": windows[first]}).encode()],
                json.dumps({"instances": [windows[first]] * BATCH}).encode(),
            )
        }
        for n in args.sizes:
            names = tickers(n)
            out = work / f"azure-{n}" / "fleet" / "1" / "bundle"
            changes = {
                t: (models[t], BundleEntry(f"forecast-{t.lower()}", "1", "ridge", "2026-12-04"))
                for t in names
            }
            started = time.perf_counter()
            build_bundle(
                out, None, changes, name="fleet", version="1", endpoint="bench", orchestration_ids=[]
            )
            print(f"# bundle of {n}: built in {time.perf_counter() - started:.2f} s", flush=True)
            batch = [{"ticker": names[i % n], "close": windows[names[i % n]]} for i in range(BATCH)]
            rows[f"bundle of {n}"] = (
                out.parent,
                [json.dumps({"ticker": t, "close": windows[t]}).encode() for t in names],
                json.dumps({"instances": batch}).encode(),
            )

        results: dict[str, list[dict[str, float]]] = {label: [] for label in rows}
        for run in range(args.runs):
            for label, measured in measure_run(rows, args.requests, work, run).items():
                results[label].append(measured)
                print(f"# run {run + 1}/{args.runs} {label}: {measured}", flush=True)

        columns = ["init s", "PSS MB", "p50 one ms", "p50 one run() ms", "p50 batch ms"]
        print(
            f"\nbench_bundle_scorer: {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, medians of {args.runs} runs "
            f"of fresh servers, {args.requests} one-ticker requests per server and run, ridge window {WINDOW}, batch {BATCH}"
        )
        print(f"| server | {' | '.join(columns)} | PSS vs single | p50 one vs single |")
        print(f"|---|{'---|' * (len(columns) + 2)}")
        base = {c: statistics.median(r[c] for r in results["single model"]) for c in columns}
        for label, runs in results.items():
            med = {c: statistics.median(r[c] for r in runs) for c in columns}
            cells = " | ".join(f"{med[c]:.2f}" if c != "PSS MB" else f"{med[c]:.0f}" for c in columns)
            print(
                f"| {label} | {cells} | {med['PSS MB'] / base['PSS MB']:.2f}x | {med['p50 one ms'] / base['p50 one ms']:.2f}x |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
