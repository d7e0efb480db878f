"""Bad input and bad state against the local host: which answers are 5xx?

Starts the local Functions host (function_app.py on the in-memory ML platform, 127.0.0.1 only) as a
child process on a fresh state dir, sends each case of issue 20 (items 6, 9, 11: times the ledger cannot
order, bodies that are not UTF-8, a corrupt or read-only state dir, oversized or loose input; item 7: two
POST /api/monitor for one ticker and day at once), prints one row per case (case, status, expected, the
first words of the answer) and the count of 5xx, then stops the child by its PID. The durable store's
cases come last: they leave the host's history unusable. Bounded: one request per case (two for the
race), a 10 s timeout each, about 40 cases.

    python bench/probe_errors.py [--keep STATE_DIR]

Exit 0 when no case answered 5xx, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import io, sys, time
from pathlib import Path
from functions_host.host import LocalHost
from retrain.settings import declared_defaults
from tests.integration.memory_platform import shared
host = LocalHost(Path(sys.argv[1]) / "function_app.py", Path(sys.argv[2]), port=0, timers=False,
                 out=io.StringIO(), setting_defaults=declared_defaults())
host.start()
shared().reset(host_url=host.url, system_key=host.system_key)
print(host.url, host.function_key, host.system_key, flush=True)
while True:
    time.sleep(3600)
"""


def _request(method: str, url: str, body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError as exc:
        return 0, f"no answer: {exc}"


Case = tuple[str, str, str, bytes | None, str, Callable[[Path], None] | None]


def _corrupt(name: str) -> Callable[[Path], None]:
    def corrupt(state: Path) -> None:
        path = state / "monitoring" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"this is not a database" * 100)

    return corrupt


def _unopenable(name: str) -> Callable[[Path], None]:
    # What a read-only state dir does to SQLite ("unable to open database file"), also when run as root
    # (who may write anywhere): the database's path is a directory.
    def unopenable(state: Path) -> None:
        path = state / "monitoring" / name
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)

    return unopenable


def _corrupt_durable(state: Path) -> None:
    # Garbage in place in the file and its WAL; the mapped WAL index (-shm) only has its header zeroed, so
    # SQLite rebuilds it and reads the garbage. Never shrunk nor filled with garbage: that can be a SIGBUS in
    # the host, not the corrupt store probed here.
    db = state / "host" / "durable.sqlite"
    for path in (db, db.with_name("durable.sqlite-wal")):
        size = max(path.stat().st_size, 1)
        with path.open("r+b") as file:
            file.write((b"this is not a database" * (size // 22 + 1))[:size])
    with db.with_name("durable.sqlite-shm").open("r+b") as file:
        file.write(bytes(136))


def durable_cases() -> list[Case]:
    """A corrupt host/durable.sqlite, through the Durable HTTP API (system key) and the routes that read it."""
    return [
        (
            "durable API list, durable.sqlite corrupt",
            "GET",
            "/runtime/webhooks/durabletask/instances",
            None,
            "503",
            _corrupt_durable,
        ),
        (
            "retrain status, durable.sqlite corrupt",
            "GET",
            "/api/retrain/retrain-msft-20261124t231405z",
            None,
            "503",
            None,
        ),
        ("retrain start, durable.sqlite corrupt", "POST", "/api/retrain", b'{"ticker": "AAPL"}', "503", None),
    ]


def race_rows(url: str, key: str) -> list[tuple[str, int, str, str]]:
    """Item 7: two POST /api/monitor for the same ticker and first day at once: 202 and 409, never 500.
    Waits (bounded) for the started run to end, so no writer races the cases after it."""
    import threading

    body = b'{"ticker": "MSFT", "from": "2012-02-07", "to": "2012-02-07"}'
    answers: list[tuple[int, str]] = []
    gate = threading.Barrier(2)

    def post() -> None:
        gate.wait()
        answers.append(_request("POST", f"{url}/api/monitor?code={key}", body))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for status, text in answers:
        if status == 202:
            location = json.loads(text)["statusQueryGetUri"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                code, state = _request("GET", f"{location}?code={key}")
                if code != 200 or json.loads(state).get("runtime_status") not in ("Running", "Pending"):
                    break
                time.sleep(0.5)
    return [
        (
            f"monitor race, same ticker+day ({n + 1} of 2)",
            status,
            "202/409",
            f"[{len(text)} B] " + " ".join(text.split())[:80],
        )
        for n, (status, text) in enumerate(answers)
    ]


def cases() -> list[Case]:
    """(case, method, path, body, expected, state change before the request)."""
    big = json.dumps({"ticker": "MSFT", "from": "x" * 1_000_000}).encode()
    monitor = "/api/monitor"
    return [
        # item 6: times
        ("served ?at=0999-06-01 (year < 1970)", "GET", "/api/served/MSFT?at=0999-06-01", None, "400", None),
        (
            "served ?at=1900-01-01T00:00:00Z",
            "GET",
            "/api/served/MSFT?at=1900-01-01T00:00:00Z",
            None,
            "400",
            None,
        ),
        (
            "served ?at=9999-12-31T23:59:59-01:00",
            "GET",
            "/api/served/MSFT?at=9999-12-31T23:59:59-01:00",
            None,
            "400",
            None,
        ),
        ("served ?at=20261127 (loose)", "GET", "/api/served/MSFT?at=20261127", None, "400", None),
        ("served ?at=2026-W48-1 (loose)", "GET", "/api/served/MSFT?at=2026-W48-1", None, "400", None),
        ("served ?at=2026-11-27", "GET", "/api/served/MSFT?at=2026-11-27", None, "200", None),
        # item 9: bodies
        ("monitor non-UTF-8 body", "POST", monitor, b'{"ticker": "\xff\xfe"}', "400", None),
        ("monitor body \\xff only", "POST", monitor, b"\xff", "400", None),
        ("retrain non-UTF-8 body", "POST", "/api/retrain", b'{"ticker": "\xff"}', "400", None),
        ("monitor body is a list", "POST", monitor, b"[1]", "400", None),
        ("monitor body nests deeply", "POST", monitor, b"[" * 100_000, "400", None),
        # item 11: input
        ("monitor 1 MB value (echo cut)", "POST", monitor, big, "400", None),
        ("monitor 1 MB field name", "POST", monitor, json.dumps({"x" * 1_000_000: 1}).encode(), "400", None),
        (
            "monitor from=20120103 (loose)",
            "POST",
            monitor,
            b'{"from": "20120103", "to": "2012-01-05"}',
            "400",
            None,
        ),
        ("monitor from=2012-W01-2 (loose)", "POST", monitor, b'{"from": "2012-W02-2"}', "400", None),
        (
            "monitor from=0999-01-04",
            "POST",
            monitor,
            b'{"from": "0999-01-05", "to": "0999-01-06"}',
            "400",
            None,
        ),
        ("retrain as_of=20120103", "POST", "/api/retrain", b'{"as_of": "2012-1-3 "}', "400", None),
        ("retrain ticker 'MSFT\\n'", "POST", "/api/retrain", b'{"ticker": "MS\\nFT"}', "400", None),
        (
            "retrain hyperparameter 'alpha\\n'",
            "POST",
            "/api/retrain",
            b'{"trainer": "ridge", "hyperparameters": {"alpha\\n": 1}}',
            "400",
            None,
        ),
        ("status id with trailing newline", "GET", "/api/retrain/retrain-msft-2026w48%0A", None, "404", None),
        # item 9: state
        ("served, ledger.sqlite corrupt", "GET", "/api/served/MSFT", None, "503", _corrupt("ledger.sqlite")),
        (
            "served, ledger.sqlite unopenable",
            "GET",
            "/api/served/MSFT",
            None,
            "503",
            _unopenable("ledger.sqlite"),
        ),
        (
            "monitor, monitor.sqlite corrupt",
            "POST",
            monitor,
            b'{"from": "2012-02-06"}',
            "503",
            _corrupt("monitor.sqlite"),
        ),
        (
            "monitor, monitor.sqlite unopenable",
            "POST",
            monitor,
            b'{"from": "2012-02-06"}',
            "503",
            _unopenable("monitor.sqlite"),
        ),
    ]


def run(state: Path) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "RETRAIN_PLATFORM": "tests.integration.memory_platform:shared",
        "RETRAIN_STATE_DIR": str(state),
        "RETRAIN_TICKERS": "MSFT",
        "RETRAIN_SOURCE": "sample",
        "RETRAIN_SCHEDULE": "0 0 1 * * Mon",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO), str(state)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(state / "probe-host.log").open("w"),  # the host's tracebacks: not the table's business
        text=True,
        start_new_session=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        if not line:
            print(f"the host did not start (exit {child.wait()})", file=sys.stderr)
            return 2
        url, key, system_key = line.split()
        rows: list[tuple[str, int, str, str]] = race_rows(url, key)
        for name, method, path, body, expected, prepare in cases() + durable_cases():
            if prepare is not None:
                prepare(state)
            sep = "&" if "?" in path else "?"
            code = system_key if path.startswith("/runtime/") else key
            status, text = _request(method, f"{url}{path}{sep}code={code}", body)
            rows.append((name, status, expected, f"[{len(text)} B] " + " ".join(text.split())[:80]))
    finally:
        os.killpg(child.pid, signal.SIGTERM)  # our child's own session: it and nothing else
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  status  expected  answer")
    for name, status, expected, text in rows:
        server_error = status == 0 or (status >= 500 and not (status == 503 and "503" in expected))
        mark = "5xx" if server_error else ("" if str(status) in expected else "!=")
        print(f"{name:<{width}}  {status:>6}  {expected:>8}  {mark:>3} {text}")
    server_errors = sum(1 for r in rows if r[1] == 0 or (r[1] >= 500 and not (r[1] == 503 and "503" in r[2])))
    unexpected = sum(1 for r in rows if str(r[1]) not in r[2])
    print(f"\n{len(rows)} cases: {server_errors} answered 500 (or nothing), {unexpected} not as expected")
    return 1 if server_errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="use (and keep) this state dir instead of a temporary one")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(args.keep.resolve())
    with tempfile.TemporaryDirectory(prefix="probe-errors-") as tmp:
        started = time.monotonic()
        code = run(Path(tmp))
        print(f"({time.monotonic() - started:.1f} s)")
        return code


if __name__ == "__main__":
    raise SystemExit(main())
