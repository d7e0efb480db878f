"""Fleet serving on the real local platform: one endpoint serving a bundle of N tickers vs the per-ticker
layout (an endpoint per ticker), measured in the same run.

    .venv/bin/python bench/bench_fleet_serving.py [--sizes 1 50 200] [--per-ticker-sizes 1 4 8] [--runs 3]
                                                  [--requests 400] [--rollouts 3] [--swaps 3] [--clients 4]
                                                  [--quick] [--write-figures]

Everything runs through `retrain.local.platform.LocalPlatform` on a temporary state dir, with the scoring
URLs served by detached router processes as under `retrain serve`. The models are ridge models (window 20,
each ticker its own synthetic random walk) registered in the platform's MLflow registry without training
jobs (tests/local_registry.py), so the figures are serving's, not training's.

- Processes and PSS: an endpoint is its router process and two slots (each slot an azmlinfsrv launcher,
  its gunicorn master and one worker), both slots up as during a rollout. PSS is summed from
  /proc/PID/smaps_rollup over those processes (found from the endpoint's state.json). Ours: one endpoint
  serving a bundle of N, for each N of --sizes. The per-ticker layout: N endpoints each serving a bundle of
  one (RETRAIN_ENDPOINTS=per-ticker), measured at the small --per-ticker-sizes; its per-ticker slope (least
  squares) and its extrapolation to the larger N are printed marked as extrapolated.
- Scoring: one-ticker requests ({"ticker", "close"}, tickers in rotation) over a kept connection through
  the stable URL of the largest endpoint, interleaved in blocks of 50 with the same requests to a
  one-ticker endpoint's stable URL (the reference); a 200-instance batch request to the large endpoint.
- Rollout of one changed ticker: from register_bundle of the next bundle version to 100 % traffic on it
  (begin_deployment to the idle slot, wait until it is Succeeded, set_traffic, wait until the endpoint is
  Succeeded); the old slot is then retired (not timed). The large endpoint and the one-ticker endpoint
  alternate, --rollouts each per run.
- Swaps under load: --clients threads score several tickers through the large endpoint's stable URL
  during --swaps rollouts; every non-200 answer and every connection error is a failed request.

Medians over --runs runs (each run builds its endpoints afresh); ratios are against the reference
measured in the same run. `--quick` is a small smoke run (sizes 1 10, per-ticker 1 2, one run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The file that holds this script's figures block (bench/readme_figures.py).
FIGURES_FILE = REPO / "README.md"  # the headline figures of a portfolio (issue 21)
BLOCK = "fleet-serving"
sys.path.insert(0, str(REPO))
os.environ.setdefault(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
)  # registering 200 models prints 200 bars

from retrain.local.endpoint.operations import TRAFFIC_APPLY_DELAY_S  # noqa: E402
from retrain.scoring_server import SLOT_SERVER_ENVIRONMENT  # noqa: E402

WINDOW = 20
BATCH = 200
BLOCK_REQUESTS = 50
QUICK = {"sizes": [1, 10], "per_ticker_sizes": [1, 2], "runs": 1, "requests": 100, "rollouts": 1, "swaps": 1}
OURS = "fleet"  # endpoint names: fleet<N>-models; the per-ticker layout: t<i>-forecast


def tickers(n: int) -> list[str]:
    return [f"T{i:03d}" for i in range(n)]


# ---- settings and the table (pure; tests/unit/test_bench_fleet_serving.py) ---------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 200], help="tickers on our endpoint")
    parser.add_argument(
        "--per-ticker-sizes",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        help="endpoints of the per-ticker layout",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400, help="one-ticker requests per endpoint and run")
    parser.add_argument("--rollouts", type=int, default=3, help="timed rollouts per endpoint and run")
    parser.add_argument("--swaps", type=int, default=3, help="rollouts under load per run")
    parser.add_argument("--clients", type=int, default=4, help="client threads during the swaps")
    parser.add_argument("--quick", action="store_true", help="a small smoke run: " + json.dumps(QUICK))
    parser.add_argument(
        "--write-figures",
        dest="write_figures",
        action="store_true",
        help=f"also write the {BLOCK} block of {FIGURES_FILE.relative_to(REPO)}",
    )
    parser.add_argument("--figures-file", type=Path, default=FIGURES_FILE, help=argparse.SUPPRESS)
    return parser


def resolved(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments with --quick applied; a bad value is a ValueError that says what to send."""
    out = argparse.Namespace(**vars(args))
    if out.quick:
        for key, value in QUICK.items():
            setattr(out, key, value)
    problems = []
    if min(out.sizes) < 1 or min(out.per_ticker_sizes) < 1:
        problems.append("--sizes and --per-ticker-sizes: send whole numbers >= 1")
    for key in ("runs", "requests", "rollouts", "swaps", "clients"):
        if getattr(out, key) < 1:
            problems.append(f"--{key}: send a whole number >= 1")
    if len(set(out.per_ticker_sizes)) < 2:
        problems.append("--per-ticker-sizes: send at least two different sizes (the slope needs them)")
    if problems:
        raise ValueError("; ".join(problems))
    out.sizes = sorted(set(out.sizes))
    out.per_ticker_sizes = sorted(set(out.per_ticker_sizes))
    return out


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What the figures depend on (recorded in the block)."""
    args = resolved(args)
    return {
        "sizes": args.sizes,
        "per_ticker_sizes": args.per_ticker_sizes,
        "runs": args.runs,
        "requests": args.requests,
        "rollouts": args.rollouts,
        "swaps": args.swaps,
        "clients": args.clients,
        "batch": BATCH,
        "model": f"ridge, window {WINDOW}, registered without a training job",
        "slot_settings": dict(SLOT_SERVER_ENVIRONMENT),
        "traffic_apply_delay_s": TRAFFIC_APPLY_DELAY_S,
    }


def DEFAULT_SETTINGS(block: str) -> dict[str, Any]:  # noqa: N802 (the name readme_figures looks for)
    """What the block records when this script runs with its defaults."""
    return settings_of(build_parser().parse_args([]))


def command_of(args: argparse.Namespace) -> str:
    """The command line that reproduces these figures (defaults left out)."""
    defaults = vars(build_parser().parse_args([]))
    words = ["bench/bench_fleet_serving.py"]
    for key, value in vars(args).items():
        if key in ("write_figures", "figures_file") or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words.append(" ".join([flag, *map(str, value if isinstance(value, list) else [value])]))
    return " ".join(words)


@dataclass(frozen=True)
class Memory:
    """A layout's processes and PSS serving (router and one slot per endpoint) and during a rollout
    (both slots up)."""

    processes: int
    pss_mb: float
    rollout_processes: int
    rollout_pss_mb: float


@dataclass
class RunResult:
    """One run's measurements (medians within the run where a run holds several samples)."""

    ours: dict[int, Memory] = field(default_factory=dict)  # N tickers on one endpoint
    per_ticker: dict[int, Memory] = field(default_factory=dict)  # N endpoints of one ticker each
    p50_one_ms: float = 0.0  # the one-ticker endpoint (reference)
    p50_large_ms: float = 0.0  # one ticker through the large endpoint
    p50_batch_ms: float = 0.0  # a 200-instance batch to the large endpoint
    # Median rollout (register, slot start, traffic) seconds; the total is their sum's median.
    rollout_one_s: float = 0.0
    rollout_large_s: float = 0.0
    rollout_one_phases: tuple[float, ...] = (0.0, 0.0, 0.0)
    rollout_large_phases: tuple[float, ...] = (0.0, 0.0, 0.0)
    load_requests: int = 0
    load_failures: dict[str, int] = field(default_factory=dict)  # ticker -> failed requests
    load_tickers: list[str] = field(default_factory=list)


def slope(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares (intercept, per-unit slope) of value against N."""
    xs, ys = list(points), list(points.values())
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def _median(values: list[float]) -> float:
    return statistics.median(values)


def median_memory(runs: list[RunResult], layout: str, n: int) -> Memory:
    """The median of each measure of `layout` ("ours" or "per_ticker") at size `n` over the runs."""
    measured = [getattr(r, layout)[n] for r in runs]
    return Memory(*(statistics.median(getattr(m, f) for m in measured) for f in Memory.__dataclass_fields__))


def markdown(runs: list[RunResult], args: argparse.Namespace) -> str:
    """The tables of figures (GitHub markdown) from the runs' measurements."""
    args = resolved(args)
    large = max(args.sizes)
    say: list[str] = [
        f"Serving only: the real local platform (`LocalPlatform`, detached routers as under `retrain serve`), "
        f"ridge models registered without training jobs; medians of {len(runs)} run(s), ratios against the "
        f"reference measured in the same run. An endpoint is a router and its slots (each slot a gunicorn "
        f"master and one worker); serving: one slot, during a rollout: both. Target: ours <= 2x one ticker's "
        f"endpoint."
    ]
    say += [
        "",
        "| layout | tickers | endpoints | processes | PSS MB | processes during a rollout | PSS MB during a rollout | PSS vs one ticker's endpoint |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ours = {n: median_memory(runs, "ours", n) for n in args.sizes}
    per = {n: median_memory(runs, "per_ticker", n) for n in args.per_ticker_sizes}
    base = (ours[1] if 1 in ours else per[min(per)]).pss_mb

    def row(label: str, n: int, endpoints: int, m: Memory) -> str:
        return (
            f"| {label} | {n} | {endpoints} | {m.processes:.0f} | {m.pss_mb:.0f} | {m.rollout_processes:.0f} | "
            f"{m.rollout_pss_mb:.0f} | {m.pss_mb / base:.2f}x |"
        )

    for n, m in ours.items():
        say.append(row("one endpoint, a bundle of N (ours)", n, 1, m))
    for n, m in per.items():
        say.append(row("per-ticker", n, n, m))
    fits = {f: slope({n: getattr(m, f) for n, m in per.items()}) for f in Memory.__dataclass_fields__}
    for n in [n for n in args.sizes if n > max(per)]:
        m = Memory(*(a + b * n for a, b in fits.values()))
        say.append(row("per-ticker, **extrapolated**", n, n, m))
    say += [
        "",
        f"Per-ticker layout, per ticker (least-squares slope over {', '.join(map(str, per))} endpoints, the "
        f"extrapolated rows from it): {fits['processes'][1]:.1f} processes and {fits['pss_mb'][1]:.0f} MB PSS "
        f"serving, {fits['rollout_processes'][1]:.1f} processes and {fits['rollout_pss_mb'][1]:.0f} MB during a rollout.",
        "",
        "| measure | ours | reference (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    one, big = _median([r.p50_one_ms for r in runs]), _median([r.p50_large_ms for r in runs])
    say.append(
        f"| p50 ms, one ticker through the stable URL | {big:.2f} ({large} tickers) | {one:.2f} (one-ticker "
        f"endpoint) | {big / one:.2f}x | <= 1.2x |"
    )
    batch = _median([r.p50_batch_ms for r in runs])
    say.append(f"| p50 ms, a {BATCH}-instance batch request | {batch:.2f} ({large} tickers) |  |  |  |")
    roll_one, roll_big = _median([r.rollout_one_s for r in runs]), _median([r.rollout_large_s for r in runs])

    def phases(of: str) -> str:
        reg, slot, traffic = (_median([getattr(r, of)[i] for r in runs]) for i in range(3))
        return f"register {reg:.2f} + slot {slot:.2f} + traffic {traffic:.2f}"

    say.append(
        f"| rollout s, one changed ticker, register to 100 % traffic | {roll_big:.2f} ({large} tickers: "
        f"{phases('rollout_large_phases')}) | {roll_one:.2f} (one-ticker endpoint: "
        f"{phases('rollout_one_phases')}) | {roll_big / roll_one:.2f}x | <= 1.5x |"
    )
    requests = sum(r.load_requests for r in runs)
    failed: dict[str, int] = {}
    for r in runs:
        for ticker in r.load_tickers:
            failed[ticker] = failed.get(ticker, 0) + r.load_failures.get(ticker, 0)
    worst = max(failed.values(), default=0)
    say.append(
        f"| failed requests while bundles swap under load ({args.clients} clients, {len(failed)} tickers, "
        f"{args.swaps} swaps a run) | {sum(failed.values())} of {requests} (worst ticker {worst}) |  |  | 0 |"
    )
    return "\n".join(say)


def ensure_block(path: Path, name: str = BLOCK) -> None:
    """Put the block's marker lines at the end of `path` under a lead paragraph when they are missing (the
    first --write-figures); write_block then fills them."""
    text = path.read_text(encoding="utf-8")
    if f"<!-- figures:{name} -->" in text:
        return
    lead = (
        "**Fleet serving** (`bench/bench_fleet_serving.py`; issue 21): one endpoint serving a bundle of N "
        "tickers against the per-ticker layout, measured in the same run."
    )
    path.write_text(
        text.rstrip("\n") + f"\n\n{lead}\n\n<!-- figures:{name} -->\n<!-- /figures:{name} -->\n",
        encoding="utf-8",
    )


# ---- measuring ----------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:  # the thread ended meanwhile
                continue
    return found


def pss_kb(pid: int) -> int:
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:  # the process ended meanwhile
        return 0
    return sum(int(line.split()[1]) for line in lines if line.startswith("Pss:"))


def endpoint_processes(state_dir: Path, endpoint: str) -> list[int]:
    """The endpoint's router process and every slot's processes (from its state.json)."""
    from retrain.local.processes import read_json

    state = read_json(state_dir / "endpoints" / endpoint / "state.json")
    roots = [state["router"]["pid"]] if state.get("router") else []
    roots += [info["pid"] for info in state["slots"].values() if info.get("pid")]
    return [p for root in roots for p in descendants(int(root))]


def wait_for(what: Callable[[], bool], timeout: float = 300.0, what_said: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout:.0f} s: {what_said}")
        time.sleep(0.05)


class Fleet:
    """The registry (one state dir for the whole bench), the bundles and the endpoints of each phase."""

    def __init__(self, work: Path, n_max: int, rollout_tickers: list[str]) -> None:
        from retrain.local.platform import LocalPlatform
        from tests.local_registry import register_ridge

        self.work = work
        self.state_dir = work / "state"
        self.platform = LocalPlatform(self.state_dir)
        started = time.perf_counter()
        self.models = {t: register_ridge(self.platform, t, WINDOW, work / "fit") for t in tickers(n_max)}
        # A second version of each ticker a rollout changes (window 19): bundles alternate between the two.
        self.changed = {
            t: register_ridge(self.platform, t, WINDOW - 1, work / "fit") for t in rollout_tickers
        }
        print(
            f"# {n_max + len(rollout_tickers)} ridge versions registered in {time.perf_counter() - started:.1f} s"
        )
        self.bundles: dict[str, Any] = {}  # endpoint -> its serving bundle (BundleRef)

    def bundle(self, endpoint: str, names: list[str]) -> Any:
        """The endpoint's first bundle (registered once; the runs deploy it again)."""
        if endpoint not in self.bundles:
            self.bundles[endpoint] = self.platform.register_bundle(
                endpoint, "1", None, {t: self.models[t] for t in names}, ["bench"]
            )
        return self.bundles[endpoint]

    @contextmanager
    def endpoints(self, layout: dict[str, list[str]]) -> Iterator[Any]:
        """Endpoints `layout` (endpoint -> tickers) serving their first bundles from blue at 100 %, with
        detached routers; stopped and forgotten afterwards. A fresh
        LocalPlatform per phase (the registry is shared through the state dir)."""
        from retrain.local.platform import LocalPlatform

        for endpoint, names in layout.items():
            self.bundle(endpoint, names)
        platform = LocalPlatform(self.state_dir)
        platform.detach_routers()
        try:
            for endpoint in layout:  # the endpoints start in parallel
                platform.begin_create_endpoint(endpoint)
                platform.begin_deployment(endpoint, "blue", self.bundles[endpoint].as_model())
            for endpoint in layout:
                wait_for(
                    lambda e=endpoint: platform.get_deployment(e, "blue").state == "Succeeded",
                    what_said=f"{endpoint} blue Succeeded",
                )
                platform.set_traffic(endpoint, {"blue": 100})
            for endpoint in layout:
                wait_for(lambda e=endpoint: platform.get_endpoint(e).state == "Succeeded", what_said=endpoint)
            yield platform
        finally:
            platform.stop_all(everything=True)
            for endpoint in layout:
                # Forgotten: the next phase deploys the first bundle again (later versions stay registered).
                shutil.rmtree(self.state_dir / "endpoints" / endpoint, ignore_errors=True)

    def measure_memory(self, layout: dict[str, list[str]]) -> Memory:
        """Processes and PSS of the layout's endpoints serving from blue, then with green up too."""

        def measured() -> tuple[int, float]:
            pids = [p for endpoint in layout for p in endpoint_processes(self.state_dir, endpoint)]
            return len(pids), sum(pss_kb(p) for p in pids) / 1024

        with self.endpoints(layout) as platform:
            serving = measured()
            for endpoint in layout:
                platform.begin_deployment(endpoint, "green", self.bundles[endpoint].as_model())
            for endpoint in layout:
                wait_for(
                    lambda e=endpoint: platform.get_deployment(e, "green").state == "Succeeded",
                    what_said=f"{endpoint} green",
                )
            return Memory(*serving, *measured())


class Rollouts:
    """Rollouts of one changed ticker on one endpoint: bundle versions after the highest registered."""

    def __init__(self, fleet: Fleet, platform: Any, endpoint: str, ticker: str) -> None:
        self.fleet, self.platform, self.endpoint, self.ticker = fleet, platform, endpoint, ticker
        self.serving = fleet.bundles[endpoint]
        self.slot = "blue"
        root = fleet.state_dir / "bundles" / f"{endpoint}-bundle"
        self.next_version = max(int(p.name) for p in root.iterdir() if p.name.isdigit()) + 1

    def once(self) -> tuple[float, float, float]:
        """One rollout, timed from register_bundle to 100 % traffic on the idle slot, in seconds: registering
        the bundle, the idle slot starting until Succeeded, the traffic update until applied. Then the old
        slot is retired (untimed), as the rollout orchestration does."""
        p, endpoint = self.platform, self.endpoint
        current = self.serving.model_of(self.ticker)
        new = self.fleet.changed[self.ticker]
        model = self.fleet.models[self.ticker] if current == new else new
        idle = "green" if self.slot == "blue" else "blue"
        started = time.perf_counter()
        bundle = p.register_bundle(
            endpoint, str(self.next_version), self.serving, {self.ticker: model}, ["bench"]
        )
        registered = time.perf_counter()
        p.begin_deployment(endpoint, idle, bundle.as_model())
        wait_for(
            lambda: p.get_deployment(endpoint, idle).state == "Succeeded", what_said=f"{endpoint} {idle}"
        )
        deployed = time.perf_counter()
        p.set_traffic(endpoint, {idle: 100, self.slot: 0})
        wait_for(lambda: p.get_endpoint(endpoint).state == "Succeeded", what_said=f"{endpoint} traffic")
        phases = (registered - started, deployed - registered, time.perf_counter() - deployed)
        p.begin_delete_deployment(endpoint, self.slot)
        old = self.slot
        wait_for(lambda: p.get_deployment(endpoint, old).state == "NotFound", what_said=f"{endpoint} retire")
        self.serving, self.slot, self.next_version = bundle, idle, self.next_version + 1
        return phases


def _body(ticker: str) -> bytes:
    from tests.bundle_models import closes_for

    return json.dumps({"ticker": ticker, "close": closes_for(ticker)[-WINDOW:].tolist()}).encode()


def timed_posts(port: int, bodies: list[bytes], n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out = []
    try:
        for i in range(n):
            started = time.perf_counter()
            conn.request(
                "POST", "/score", body=bodies[i % len(bodies)], headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            payload = response.read()
            out.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {payload[:300]!r}")
    finally:
        conn.close()
    return out


def router_port(state_dir: Path, endpoint: str) -> int:
    from retrain.local.processes import read_json

    return int(read_json(state_dir / "endpoints" / endpoint / "state.json")["router_port"])


class Load:
    """Client threads scoring tickers through a stable URL until stopped; counts answers and failures."""

    def __init__(self, port: int, names: list[str], clients: int) -> None:
        self.port, self.names = port, names
        self.requests = 0
        self.failures: dict[str, int] = dict.fromkeys(names, 0)
        self.examples: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def _client(self, i: int) -> None:
        bodies = {t: _body(t) for t in self.names}
        conn: http.client.HTTPConnection | None = None
        k = i
        while not self._stop.is_set():
            ticker = self.names[k % len(self.names)]
            k += 1
            failure = None
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request(
                    "POST", "/score", body=bodies[ticker], headers={"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    failure = f"{ticker}: {response.status} {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                failure = f"{ticker}: {type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.requests += 1
                if failure:
                    self.failures[ticker] += 1
                    if len(self.examples) < 5:
                        self.examples.append(failure)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def one_run(fleet: Fleet, args: argparse.Namespace, run: int) -> RunResult:
    result = RunResult()
    large = max(args.sizes)
    for n in args.sizes:
        result.ours[n] = fleet.measure_memory({f"{OURS}{n}-models": tickers(n)})
        print(f"# run {run}: ours, {n} tickers: {result.ours[n]}", flush=True)
    for n in args.per_ticker_sizes:
        result.per_ticker[n] = fleet.measure_memory(
            {f"t{i:03d}-forecast": [t] for i, t in enumerate(tickers(n))}
        )
        print(f"# run {run}: per-ticker, {n} endpoints: {result.per_ticker[n]}", flush=True)

    one_endpoint, large_endpoint = "t000-forecast", f"{OURS}{large}-models"
    layout = {one_endpoint: tickers(1), large_endpoint: tickers(large)}
    with fleet.endpoints(layout) as platform:
        one_port, large_port = (
            router_port(fleet.state_dir, one_endpoint),
            router_port(fleet.state_dir, large_endpoint),
        )
        one_bodies, large_bodies = [_body(tickers(1)[0])], [_body(t) for t in tickers(large)]
        from tests.bundle_models import closes_for

        names = tickers(large)
        batch = json.dumps(
            {
                "instances": [
                    {"ticker": names[i % large], "close": closes_for(names[i % large])[-WINDOW:].tolist()}
                    for i in range(BATCH)
                ]
            }
        ).encode()
        timed_posts(one_port, one_bodies, 20)  # warm-up
        timed_posts(large_port, large_bodies, 20)
        one_ms, large_ms, batch_ms = [], [], []
        for _ in range(max(1, args.requests // BLOCK_REQUESTS)):
            one_ms += timed_posts(one_port, one_bodies, BLOCK_REQUESTS)
            large_ms += timed_posts(large_port, large_bodies, BLOCK_REQUESTS)
            batch_ms += timed_posts(large_port, [batch], 3)
        result.p50_one_ms, result.p50_large_ms = _median(one_ms), _median(large_ms)
        result.p50_batch_ms = _median(batch_ms)
        print(
            f"# run {run}: p50 one-ticker endpoint {result.p50_one_ms:.2f} ms, {large} tickers "
            f"{result.p50_large_ms:.2f} ms, batch {result.p50_batch_ms:.2f} ms",
            flush=True,
        )

        ticker = tickers(large)[-1]  # a ticker other than the one-ticker endpoint's
        on_one = Rollouts(fleet, platform, one_endpoint, tickers(1)[0])
        on_large = Rollouts(fleet, platform, large_endpoint, ticker)
        one_s, large_s = [], []
        for _ in range(args.rollouts):  # alternated, so the machine's load falls on both alike
            one_s.append(on_one.once())
            large_s.append(on_large.once())
        result.rollout_one_s = _median([sum(t) for t in one_s])
        result.rollout_large_s = _median([sum(t) for t in large_s])
        result.rollout_one_phases = tuple(_median(list(p)) for p in zip(*one_s, strict=True))
        result.rollout_large_phases = tuple(_median(list(p)) for p in zip(*large_s, strict=True))
        print(
            f"# run {run}: rollout (register, slot, traffic) s, one-ticker endpoint "
            f"{[[round(x, 2) for x in t] for t in one_s]}, {large} tickers {[[round(x, 2) for x in t] for t in large_s]}",
            flush=True,
        )

        watched = sorted({*tickers(min(large, 4)), ticker})
        with Load(large_port, watched, args.clients) as load:
            time.sleep(1.0)
            for _ in range(args.swaps):
                on_large.once()
            time.sleep(1.0)
        result.load_requests, result.load_failures, result.load_tickers = (
            load.requests,
            load.failures,
            watched,
        )
        print(
            f"# run {run}: under load, {load.requests} requests, failed {load.failures} {load.examples}",
            flush=True,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    raw = parser.parse_args(argv)
    try:
        args = resolved(raw)
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # each in-process fit's pickling warning
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        large = max(args.sizes)
        fleet = Fleet(work, max(large, max(args.per_ticker_sizes)), [tickers(1)[0], tickers(large)[-1]])
        runs = []
        for run in range(1, args.runs + 1):
            runs.append(one_run(fleet, args, run))
        md = markdown(runs, raw)
        if raw.write_figures:
            from bench.readme_figures import write_block

            ensure_block(raw.figures_file)
            write_block(raw.figures_file, BLOCK, md, settings_of(raw), command_of(raw))
        print(f"\nsettings: {json.dumps(settings_of(raw))}\n")
        print(md)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
