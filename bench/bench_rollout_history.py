"""The endpoint rollout's durable history for N changed tickers, through the real local host.

    .venv/bin/python bench/bench_rollout_history.py [--sizes 20 200] [--per-ticker-sizes 20]
                                                    [--rounds retrained] [--write-figures]

Runs function_app.py in an in-process `LocalHost` on the in-memory platform (tests/integration/memory_platform.py:
no training, no model servers: only the orchestrations, their activities and the durable store are real).
Per N, on a fresh state dir, each round is one rollout of N tickers at once:

1. a warm-up start (ticker W000) starts the endpoint's rollout, whose deployment is held (the platform's
   `deploy_gate`) until N `{ticker}` starts (T000..; each a fleet of one, as every single-ticker start
   is) have each registered a model and wait for the rollout (their status lists the endpoint); the
   rollout's next generation (continue_as_new) then finds the N challengers in one batch;
2. round "new": the N tickers enter the endpoint (the serving bundle holds only W000);
   round "retrained": the same N tickers again, now held by the serving bundle (the full path: smoke on
   the idle slot, canary, smoke through the stable URL, promote, champions). Without round "new"
   (`--rounds retrained`, the default), the platform starts with a bundle of W000 and the N tickers
   serving from blue at 100 %, as round "new" would have left it (its models are version 0).

`--sizes`: the rollout as it runs (one `smoke_test_many` per smoke phase, one `set_champions`);
`--per-ticker-sizes`: the reference, the same rollout with one `smoke_test` per ticker per phase and one
`set_champion` per ticker (the code before them, which the rollout keeps for replaying a rollout that code
started: `rollout.started_per_ticker` is made to answer True), measured in the same run.

For the rollout generation that carried the N tickers it prints: history events and bytes when it
continued as new (what Azure Storage would hold and every replay reads), the episodes it took, the
events and bytes replayed over all its episodes (each episode replays the whole history: the quadratic
term), the time its episodes took on the engine's scheduler thread, wall and CPU (the local engine runs
one episode at a time for all instances, so every other orchestration waited that long too), and the
round's wall time (mostly the N fleets of one). Times depend on the machine's load; the counts and bytes
do not.
Below the table: for the largest N, the activities whose events weigh most in the history.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from functions_host.durable import episodes, instances  # noqa: E402
from functions_host.host import LocalHost  # noqa: E402
from retrain import activities, adapters, fleet, naming, rollout  # noqa: E402
from retrain.host_client import HostClient  # noqa: E402
from retrain.ports import BundleRef  # noqa: E402
from retrain.settings import declared_defaults  # noqa: E402
from tests.integration.memory_platform import shared  # noqa: E402

ENDPOINT = naming.group_endpoint_name(naming.SHARED_GROUP, "")
PREFIX = naming.rollout_instance_prefix(ENDPOINT)
WARM_UP = "W000"
# The file that holds this script's figures block (bench/readme_figures.py).
FIGURES_FILE = REPO / "docs" / "benchmarks.md"
BLOCK = "rollout-history"


class HistoryProbe:
    """Wraps the engine's history writes: per rollout execution, its episodes, the history each replayed,
    the scheduler time they took, and the history it held when it continued as new."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, dict[str, float]] = {}  # instance id -> running totals
        self.generations: list[dict[str, float]] = []  # ended rollout executions, in order

    def install(self) -> Callable[[], None]:
        append, continue_as_new, run = (
            instances.append_history,
            instances.continue_as_new,
            episodes.EpisodeRunner._run,
        )
        probe = self

        def size(conn: Any, instance_id: str) -> tuple[int, int]:
            row = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(event AS BLOB))), 0) FROM history WHERE instance_id=?",
                (instance_id,),
            ).fetchone()
            return int(row[0]), int(row[1])

        def breakdown(conn: Any, instance_id: str) -> dict[str, list[int]]:
            """activity -> [calls, bytes of its scheduled and completed events]."""
            rows = conn.execute("SELECT event FROM history WHERE instance_id=?", (instance_id,)).fetchall()
            events = [json.loads(r[0]) for r in rows]
            names = {
                e.get("EventId"): e.get("Name")
                for e in events
                if e.get("Name") and "TaskScheduledId" not in e
            }
            out: dict[str, list[int]] = {}
            for row, e in zip(rows, events, strict=True):
                name = e.get("Name") if "TaskScheduledId" not in e else names.get(e["TaskScheduledId"])
                entry = out.setdefault(str(name or "(other)"), [0, 0])
                entry[0] += 1 if "TaskScheduledId" not in e and e.get("Name") else 0
                entry[1] += len(row[0].encode())
            return out

        def counted_append(conn: Any, instance_id: str, events: list[dict[str, Any]]) -> None:
            if instance_id.startswith(PREFIX):
                events_before, bytes_before = size(conn, instance_id)
                with probe.lock:
                    gen = probe.current.setdefault(instance_id, probe.fresh())
                    gen["episodes"] += 1
                    gen["replayed_events"] += events_before
                    gen["replayed_bytes"] += bytes_before
            append(conn, instance_id, events)

        def counted_continue(conn: Any, inst: Any, *args: Any) -> None:
            instance_id = inst["instance_id"]
            if instance_id.startswith(PREFIX):
                events_now, bytes_now = size(conn, instance_id)
                by_activity = breakdown(conn, instance_id)
                with probe.lock:
                    gen = probe.current.pop(instance_id, probe.fresh())
                    # The last episode (the one that continues as new) replayed the whole history too.
                    gen["episodes"] += 1
                    gen["replayed_events"] += events_now
                    gen["replayed_bytes"] += bytes_now
                    probe.generations.append(
                        {**gen, "events": events_now, "bytes": bytes_now, "by_activity": by_activity}
                    )
            continue_as_new(conn, inst, *args)

        def timed_run(runner: Any, instance_id: str) -> None:
            started, cpu = time.perf_counter(), time.thread_time()  # episodes run on one thread
            try:
                run(runner, instance_id)
            finally:
                if instance_id.startswith(PREFIX):
                    with probe.lock:
                        gen = probe.current.setdefault(instance_id, probe.fresh())
                        gen["scheduler_s"] += time.perf_counter() - started
                        gen["scheduler_cpu_s"] += time.thread_time() - cpu

        instances.append_history = counted_append  # type: ignore[assignment]
        instances.continue_as_new = counted_continue  # type: ignore[assignment]
        episodes.EpisodeRunner._run = timed_run  # type: ignore[method-assign]

        def uninstall() -> None:
            instances.append_history, instances.continue_as_new = append, continue_as_new
            episodes.EpisodeRunner._run = run  # type: ignore[method-assign]

        return uninstall

    @staticmethod
    def fresh() -> dict[str, float]:
        return {
            "episodes": 0,
            "replayed_events": 0,
            "replayed_bytes": 0,
            "scheduler_s": 0.0,
            "scheduler_cpu_s": 0.0,
        }


def write_prices(folder: Path, ticker: str, seed: int, days: int = 400) -> None:
    """A random walk of `days` business days, OHLCV (the csv: source's format)."""
    rng = random.Random(seed)
    lines, close, day = ["Date,Open,High,Low,Close,Volume"], 100.0, 0
    start = time.mktime((2012, 1, 2, 0, 0, 0, 0, 0, -1))
    while len(lines) <= days:
        stamp = time.localtime(start + day * 86400)
        day += 1
        if stamp.tm_wday >= 5:
            continue
        close *= 1 + rng.gauss(0, 0.01)
        lines.append(f"{time.strftime('%Y-%m-%d', stamp)},{close},{close * 1.01},{close * 0.99},{close},1000")
    (folder / f"{ticker}.csv").write_text("\n".join(lines) + "\n")


def awaiting(db: Path) -> int:
    """Running fleets whose custom status lists the endpoint as awaiting its rollout (the fleet form,
    `fleet.awaiting_entry`, that `activities.pending_rollouts` reads): a `{ticker}` start is a fleet of one,
    so one per ticker that passed its gate."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT COUNT(DISTINCT i.instance_id) FROM instances i, "
            "json_each(i.custom_status, '$.awaiting_rollout') AS a WHERE i.status='Running' AND i.name=? "
            "AND json_valid(i.custom_status) AND json_extract(a.value, '$.endpoint')=?",
            (fleet.FLEET_ORCHESTRATOR, ENDPOINT),
        ).fetchone()[0]


def one_round(host: LocalHost, client: HostClient, tickers: list[str], probe: HistoryProbe) -> dict[str, Any]:
    memory = shared()
    gate = threading.Event()
    memory.script.deploying.clear()
    memory.script.deploy_gate = gate
    started = time.perf_counter()
    ids = []
    try:
        code, warm = client.start_cycle({"ticker": WARM_UP, "source": f"csv:{WARM_UP}.csv", "force": True})
        assert code == 202, warm
        ids.append(warm["id"])
        assert memory.script.deploying.wait(120), "the warm-up's rollout never began its deployment"
        for ticker in tickers:
            code, answer = client.start_cycle(
                {"ticker": ticker, "source": f"csv:{ticker}.csv", "force": True}
            )
            assert code == 202, answer
            ids.append(answer["id"])
        db = host.state_dir / "host" / "durable.sqlite"
        deadline = time.monotonic() + 600
        while awaiting(db) < len(tickers) + 1:  # the warm-up's fleet waits too
            assert time.monotonic() < deadline, f"only {awaiting(db)} fleets of one wait for the rollout"
            time.sleep(0.2)
        before = len(probe.generations)
    finally:
        memory.script.deploy_gate = None
        gate.set()
    ends = [client.follow_cycle(i, poll_s=0.5, timeout_s=900) for i in ids]
    wall = time.perf_counter() - started
    bad = [e for e in ends if e.get("runtime_status") != "Completed"]
    assert not bad, bad[0].get("error")
    # a fleet completes when its ticker fails too: each fleet of one's ticker must have been deployed
    outcomes = {t: o for e in ends for t, o in ((e.get("output") or {}).get("tickers") or {}).items()}
    undeployed = {t: o for t, o in outcomes.items() if (o or {}).get("status") != "deployed"}
    assert len(outcomes) == len(ids) and not undeployed, undeployed or sorted(outcomes)
    deadline = time.monotonic() + 60
    while len(probe.generations) < before + 2:  # the warm-up's generation, then the N tickers'
        assert time.monotonic() < deadline, "the rollout's batch generation never continued as new"
        time.sleep(0.1)
    return {**probe.generations[before + 1], "wall_s": wall}


def seed_serving_bundle(tickers: list[str]) -> None:
    """Bundle 1 of W000 and `tickers` (models of version 0) serving from blue at 100 %."""
    memory = shared()
    entries = {
        t: {
            "model_name": naming.model_name(t),
            "model_version": "0",
            "family": "ridge",
            "fitted_data_end": None,
        }
        for t in [WARM_UP, *tickers]
    }
    bundle = BundleRef(naming.bundle_name(ENDPOINT), "1", ENDPOINT, tickers=entries, changed=sorted(entries))
    blue = {"model": bundle.as_model().to_dict(), "ready_at": 0.0, "state": "Succeeded"}
    with memory.lock:
        memory.bundles[(ENDPOINT, "1")] = bundle
        memory.endpoints[ENDPOINT] = {"traffic": {"blue": 100}, "slots": {"blue": blue}, "op": None}


def run_size(n: int, probe: HistoryProbe, rounds: list[str], per_ticker: bool) -> list[dict[str, Any]]:
    tickers = [f"T{i:03d}" for i in range(n)]
    decide = rollout.started_per_ticker
    rollout.started_per_ticker = lambda context: per_ticker  # type: ignore[assignment]
    try:
        return _run_size(n, tickers, probe, rounds, per_ticker)
    finally:
        rollout.started_per_ticker = decide  # type: ignore[assignment]


def _run_size(
    n: int, tickers: list[str], probe: HistoryProbe, rounds: list[str], per_ticker: bool
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        data = Path(tmp) / "data"
        data.mkdir()
        for seed, ticker in enumerate([WARM_UP, *tickers]):
            write_prices(data, ticker, seed)
        env = {
            "RETRAIN_PLATFORM": "tests.integration.memory_platform:shared",
            "RETRAIN_STATE_DIR": str(state),
            "RETRAIN_DATA_DIR": str(data),
            "RETRAIN_SOURCE": "sample",
            "RETRAIN_LOOKBACK_DAYS": "900",
            "RETRAIN_JOB_POLL_MINUTES": "1",
            "RETRAIN_CANARY_PERCENT": "10",
            "RETRAIN_KEEP_OLD_SLOT": "false",
            "RETRAIN_ENDPOINTS": "shared",
            "RETRAIN_ROLLOUT_POLL_MINUTES": "0.5",
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        adapters.reset()
        host = LocalHost(
            REPO / "function_app.py",
            state,
            port=0,
            timers=False,
            out=io.StringIO(),
            setting_defaults=declared_defaults(),
        )
        host.start()
        shared().reset(host_url=host.url, system_key=host.system_key)
        try:
            client = HostClient(host.url, host.function_key, timeout=120)
            if "new" not in rounds:
                seed_serving_bundle(tickers)
            rows = []
            for name in [r for r in ("new", "retrained") if r in rounds]:
                mode = "per ticker" if per_ticker else "per phase"
                rows.append(
                    {"n": n, "activities": mode, "round": name, **one_round(host, client, tickers, probe)}
                )
            return rows
        finally:
            host.stop()
            adapters.reset()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


HEADER = (
    "| N | activities | round | history events | history | episodes | replayed events | replayed "
    "| episodes' time (CPU) | round wall |\n|---|---|---|---|---|---|---|---|---|---|"
)


def row_line(r: dict[str, Any]) -> str:
    return (
        f"| {r['n']} | {r['activities']} | {r['round']} | {r['events']} | {r['bytes'] / 1e6:.2f} MB | "
        f"{r['episodes']} | {r['replayed_events']} | {r['replayed_bytes'] / 1e6:.1f} MB | "
        f"{r['scheduler_s']:.1f} s ({r['scheduler_cpu_s']:.1f} s) | {r['wall_s']:.0f} s |"
    )


def weights_line(r: dict[str, Any]) -> str:
    top = sorted(r["by_activity"].items(), key=lambda kv: -kv[1][1])[:6]
    return (
        f"Largest history (N = {r['n']}, {r['activities']}), kB by activity (its scheduled and completed "
        "events; calls): " + ", ".join(f"`{k}` {b / 1e3:.0f} ({c})" for k, (c, b) in top) + "."
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    ordered = sorted(rows, key=lambda r: (r["n"], r["activities"] != "per ticker", r["round"]))
    batched = [r for r in rows if r["activities"] == "per phase"] or rows
    return "\n".join([HEADER, *map(row_line, ordered), "", weights_line(max(batched, key=lambda r: r["n"]))])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200], help="N, the rollout as it runs")
    parser.add_argument(
        "--per-ticker-sizes", type=int, nargs="*", default=[20], help="N, the per-ticker reference"
    )
    parser.add_argument("--rounds", nargs="+", choices=("new", "retrained"), default=["retrained"])
    parser.add_argument(
        "--write-figures", action="store_true", help=f"write the table into {FIGURES_FILE.name}"
    )
    return parser


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "sizes": args.sizes,
        "per_ticker_sizes": args.per_ticker_sizes,
        "rounds": args.rounds,
        "per_activity": rollout.PER_ACTIVITY,
        "smoke_batch_instances": activities.SMOKE_BATCH_INSTANCES,
        "platform": "tests/integration/memory_platform.py through the in-process local host",
    }


def DEFAULT_SETTINGS(block: str) -> dict[str, Any]:  # noqa: N802 (the name readme_figures looks for)
    """What the block records when this script runs with its defaults."""
    return settings_of(build_parser().parse_args([]))


def command_of(args: argparse.Namespace) -> str:
    defaults = vars(build_parser().parse_args([]))
    words = ["bench/bench_rollout_history.py"]
    for key, value in vars(args).items():
        if key == "write_figures" or value == defaults[key]:
            continue
        words.append(" ".join(["--" + key.replace("_", "-"), *map(str, value)]))
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"rollout history, {time.strftime('%Y-%m-%d')}, in-memory platform through the local host")
    print(HEADER, flush=True)
    probe = HistoryProbe()
    uninstall = probe.install()
    rows: list[dict[str, Any]] = []
    try:
        for per_ticker, sizes in ((True, args.per_ticker_sizes), (False, args.sizes)):
            for n in sizes:
                for r in run_size(n, probe, args.rounds, per_ticker):
                    rows.append(r)
                    print(row_line(r), flush=True)
    finally:
        uninstall()
    md = markdown(rows)
    print(f"\n{md}")
    if args.write_figures:
        from bench.readme_figures import write_block

        write_block(FIGURES_FILE, BLOCK, md, settings_of(args), command_of(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
