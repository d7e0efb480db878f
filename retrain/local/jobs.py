"""The local training job runner: what an Azure ML command job is on a laptop.

`LocalPlatform.submit_training` writes `<state>/jobs/<job>/job.json` (the job spec) and starts
`python -m retrain.local.jobs --job-dir <dir>` in its own session, so the job survives the host being
killed. The runner runs the trainer, streams its output to `std_log.txt` (Azure's name), records the
status transitions in `status.json` (Azure ML's vocabulary) and, when the trainer exits, delivers the
Event Grid event Azure ML would send to the Function App's `job_events` trigger through the local
host's webhook route, with the Event Grid extension's own key. Like Event Grid, it retries with back-off
while the host is down (up to `EVENT_RETRY_BOUND_S`, each delay capped at `EVENT_RETRY_MAX_DELAY_S`) and
looks the host up again before each attempt, so a restarted host (on whatever port) hears of a finished
job within a minute, not after the orchestrator's poll interval. A lost event is still not fatal: the
orchestrator polls the job status as well.

A batch job (`LocalPlatform.submit_batch_training`) is the same runner around the kit's batch runner; it
first waits, Queued, for one of the state dir's batch slots (`RETRAIN_LOCAL_BATCH_JOBS`: a lock file
each, freed by the kernel if the runner dies), and fails with its summary's per-ticker reasons when no
ticker trained.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.local.processes import process_alive, process_start_ticks, read_json, write_json_atomic

log = logging.getLogger("retrain.local.jobs")

RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
EVENT_FUNCTION = "job_events"
HOST_URL_ENV = "RETRAIN_LOCAL_HOST_URL"
SYSTEM_KEY_ENV = "RETRAIN_SYSTEM_KEY"
EVENT_RETRY_BOUND_S = 24 * 3600.0  # Event Grid retries a webhook delivery for up to 24 hours
EVENT_RETRY_MAX_DELAY_S = 30.0  # locally the host is back within seconds: look often
_RETRYABLE_4XX = {404, 408, 429}  # a host still starting, a timeout, throttling
# The runner touches `heartbeat` this often while it runs; the platform calls a runner whose heartbeat is
# older than HEARTBEAT_STALE_S hung (a process can be alive and stuck, e.g. stopped or on a dead disk).
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_STALE_S = 120.0

# A workspace resource id, as Azure puts in `topic`; the local workspace is not a real resource.
LOCAL_TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.MachineLearningServices/workspaces/local"
)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ----------------------------------------------------------------------------------------------------
# Status file


def status_path(job_dir: Path) -> Path:
    return job_dir / "status.json"


def heartbeat_path(job_dir: Path) -> Path:
    return job_dir / "heartbeat"


def heartbeat_age(job_dir: Path, now: float | None = None) -> float | None:
    """Seconds since the runner last touched its heartbeat file, or None when there is none (a runner
    of older code, or one that has not started yet)."""
    try:
        return max(0.0, (now if now is not None else time.time()) - heartbeat_path(job_dir).stat().st_mtime)
    except OSError:
        return None


def _beat(job_dir: Path, stop: threading.Event, interval: float = HEARTBEAT_INTERVAL_S) -> None:
    """Touch the heartbeat file until `stop` is set; a failed write (a read-only disk) is skipped: the
    staleness bound is many intervals long."""
    path = heartbeat_path(job_dir)
    while True:
        try:
            path.write_text(f"{os.getpid()} {time.time():.3f}\n")
        except OSError as exc:
            log.warning("cannot write the heartbeat %s: %s", path, exc)
        if stop.wait(interval):
            return


def update_status(job_dir: Path, status: str, **fields: Any) -> dict[str, Any]:
    """Record a status transition (atomic rewrite of status.json, history kept)."""
    path = status_path(job_dir)
    current: dict[str, Any] = read_json(path) if path.is_file() else {"job_name": job_dir.name, "history": []}
    current.update(fields)
    if current.get("status") != status:
        current["history"] = [*current.get("history", []), {"status": status, "time": utc_now()}]
    current["status"] = status
    write_json_atomic(path, current)
    return current


# ----------------------------------------------------------------------------------------------------
# The event Azure ML would send


def build_job_event(spec: dict[str, Any], succeeded: bool, event_time: str | None = None) -> dict[str, Any]:
    """The Event Grid (schema v1) event Azure ML emits when a job ends: RunCompleted on success,
    RunStatusChanged with runStatus Failed on failure. `runId` is the job name, as in Azure ML."""
    job_name = spec["job_name"]
    data: dict[str, Any] = {
        "experimentId": spec["experiment_id"],
        "experimentName": spec["experiment_name"],
        "runId": job_name,
        "runType": "azureml.scriptrun",
        "runTags": dict(spec.get("tags", {})),
        "runProperties": {"mlflow.runId": spec["run_id"], "azureml.runsource": "local"},
    }
    if not succeeded:
        data["runStatus"] = "Failed"
    return {
        "id": str(uuid.uuid4()),
        "topic": LOCAL_TOPIC,
        "subject": f"experiments/{spec['experiment_id']}/runs/{job_name}",
        "eventType": RUN_COMPLETED if succeeded else RUN_STATUS_CHANGED,
        "eventTime": event_time or utc_now(),
        "data": data,
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def read_event_key(state_dir: Path) -> str | None:
    """The key that opens the host's Event Grid webhook: the Event Grid extension's system key the local
    host keeps in the state dir (read, never generated here), else the master key setting
    RETRAIN_SYSTEM_KEY."""
    from functions_host import keys as host_keys

    path = host_keys.keys_path(state_dir)
    if path.is_file():
        try:
            key = (host_keys.read_keys_file(path).get("systemKeys") or {}).get(host_keys.EVENTGRID_EXTENSION)
            if key:
                return str(key)
        except host_keys.KeysError as exc:
            log.warning("cannot read the host's keys: %s", exc)
    return os.environ.get(SYSTEM_KEY_ENV) or None


def live_host_url(state_dir: Path) -> str | None:
    """Where the local host that holds `state_dir` listens now (its record, if its process lives), or
    None. Read without taking the host's lock, so a host starting meanwhile is never refused."""
    from functions_host.host import host_info_path

    try:
        info = json.loads(host_info_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not info.get("url") or not isinstance(info.get("pid"), int):
        return None
    return str(info["url"]) if process_alive(info["pid"]) else None


def webhook_url(host_url: str, system_key: str | None) -> str:
    query = {"functionName": EVENT_FUNCTION}
    if system_key:
        query["code"] = system_key
    return f"{host_url.rstrip('/')}/runtime/webhooks/eventgrid?{urllib.parse.urlencode(query)}"


def deliver_event(
    event: dict[str, Any], url: str, attempts: int = 4, first_delay: float = 0.5, timeout: float = 10.0
) -> tuple[bool, str]:
    """POST one Event Grid event (as a one-element array, as Event Grid does) with retries on
    connection errors and 5xx/429. Returns (delivered, detail); never raises."""
    body = json.dumps([event]).encode()
    detail = ""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return True, f"HTTP {response.status} after {attempt} attempt(s)"
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}"
            if exc.code < 500 and exc.code not in _RETRYABLE_4XX:
                return False, detail  # a 4xx will not get better by retrying
        except (urllib.error.URLError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            time.sleep(delay)
            delay *= 2
    return False, detail


def deliver_with_backoff(
    event: dict[str, Any],
    state_dir: Path,
    fallback_url: str | None,
    *,
    first_delay: float = 1.0,
    max_delay: float = EVENT_RETRY_MAX_DELAY_S,
    bound_s: float = EVENT_RETRY_BOUND_S,
    on_attempt: Any = None,
) -> tuple[bool, str, int]:
    """Deliver `event` as Event Grid would: retry with exponential back-off (capped at `max_delay`) for
    up to `bound_s` while the host is down or answers 5xx; before each attempt look up the live host
    of `state_dir` (it may have restarted on another port) and its Event Grid key. Returns
    (delivered, detail, attempts); never raises. `on_attempt(attempts, detail)` records progress."""
    deadline = time.monotonic() + bound_s
    delay = first_delay
    attempts = 0
    detail = "no attempt"
    while True:
        host_url = live_host_url(state_dir) or fallback_url
        attempts += 1
        if host_url:
            delivered, detail = deliver_event(
                event, webhook_url(host_url, read_event_key(state_dir)), attempts=1
            )
            if delivered:
                return True, f"{detail.split(' after ')[0]} after {attempts} attempt(s)", attempts
            if (
                detail.startswith("HTTP ")
                and int(detail[5:8]) < 500
                and int(detail[5:8]) not in _RETRYABLE_4XX
            ):
                return False, detail, attempts
        else:
            detail = f"no local host runs on {state_dir}"
        if on_attempt is not None:
            on_attempt(attempts, detail)
        if time.monotonic() + delay > deadline:
            return False, f"{detail} (gave up after {attempts} attempt(s))", attempts
        if not Path(state_dir).is_dir():  # the state dir was deleted: no host will ever want it
            return False, f"{detail} (state dir {state_dir} is gone)", attempts
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


# ----------------------------------------------------------------------------------------------------
# The runner


def _failure_reason(exit_code: int, stderr_tail: deque[str]) -> str:
    lines = [line.rstrip() for line in stderr_tail if line.strip()]
    message = " | ".join(lines[-3:])[-1000:]
    return f"trainer exited with code {exit_code}" + (f": {message}" if message else "")


def batch_failure_reason(summary_path: Path) -> str | None:
    """Why a batch trained no ticker, from its batch_summary.json (each ticker's reason), or None when the
    runner wrote no summary (an unusable batch: its stderr says why)."""
    try:
        summary = read_json(summary_path)
    except (OSError, ValueError):
        return None
    tickers = summary.get("tickers") if isinstance(summary, dict) else None
    if not isinstance(tickers, dict) or summary.get("ok") != 0:  # some trained: the job failed otherwise
        return None
    reasons = "; ".join(
        f"{ticker}: {(entry or {}).get('error') or (entry or {}).get('status')}"
        for ticker, entry in tickers.items()
    )
    return f"no ticker of the batch trained ({len(tickers)} failed): {reasons}"[:2000]


def _acquire_slot(job_dir: Path, spec: dict[str, Any], poll_s: float = 1.0) -> Any:
    """Wait for one of the `slots` batch-training slots of the state dir (a lock file each, held until
    this process closes it or exits, so a killed runner frees its slot) and return its open file."""
    import fcntl

    slots = int(spec["slots"])
    locks = Path(spec["state_dir"]) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        for i in range(slots):
            handle = (locks / f"batch-slot-{i}.lock").open("w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            update_status(job_dir, "Queued", waiting=None, slot=i)
            return handle
        if not waiting:  # said once: the status file is not rewritten every poll
            waiting = True
            update_status(job_dir, "Queued", waiting=f"all {slots} local batch slots are busy")
        time.sleep(poll_s)


def _mark_mlflow_run_failed(spec: dict[str, Any]) -> None:
    """The trainer died without ending its run: end it as FAILED so MLflow shows the truth."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=spec["tracking_uri"])
        if client.get_run(spec["run_id"]).info.status == "RUNNING":
            client.set_terminated(spec["run_id"], status="FAILED")
    except Exception as exc:  # noqa: BLE001 - best effort; the job status already says Failed
        log.warning("could not mark MLflow run %s failed: %s", spec.get("run_id"), exc)


RUNNER_LOCK = "runner.lock"


def _hold_runner_lock(job_dir: Path) -> Any:
    """The job's runner lock, held (open file) until this process closes it or exits; None when another
    runner holds it."""
    import fcntl

    handle = (job_dir / RUNNER_LOCK).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def runner_holds_job(job_dir: Path) -> bool:
    """Whether a live runner holds the job (its runner lock): a submit retried after the submitter died
    between starting the runner and recording it (runner.json) must not start a second one."""
    if not (job_dir / RUNNER_LOCK).is_file():
        return False
    handle = _hold_runner_lock(job_dir)
    if handle is None:
        return True
    handle.close()
    return False


def run_job(job_dir: Path) -> int:
    """Run the job described by `<job_dir>/job.json` to the end; returns the trainer's exit code. One runner
    per job: a second one (a launch retried while the first lived) exits at once, touching nothing."""
    ownership = _hold_runner_lock(job_dir)
    if ownership is None:
        log.warning("job %s: another runner holds it; this one exits", job_dir.name)
        return 0
    try:
        return _run_job(job_dir)
    finally:
        ownership.close()


def _run_job(job_dir: Path) -> int:
    spec = read_json(job_dir / "job.json")
    std_log = job_dir / "std_log.txt"
    env = {**os.environ, **spec.get("env", {})}
    runner = {"runner_pid": os.getpid(), "runner_start": process_start_ticks(os.getpid())}
    stop_beating = threading.Event()
    slot = None
    try:
        if spec.get("slots"):  # a batch job trains only in a free slot: it stays Queued until then
            update_status(job_dir, "Queued", **runner)
            threading.Thread(
                target=_beat, args=(job_dir, stop_beating), name="heartbeat", daemon=True
            ).start()
            slot = _acquire_slot(job_dir, spec)
            update_status(job_dir, "Running", **runner)
        else:
            update_status(job_dir, "Running", **runner)
            threading.Thread(
                target=_beat, args=(job_dir, stop_beating), name="heartbeat", daemon=True
            ).start()
        return _run_trainer(job_dir, spec, std_log, env, slot)
    finally:
        stop_beating.set()
        if slot is not None:
            slot.close()


def _run_trainer(
    job_dir: Path, spec: dict[str, Any], std_log: Path, env: dict[str, str], slot: Any = None
) -> int:
    stderr_tail: deque[str] = deque(maxlen=20)
    with std_log.open("ab") as out:
        try:
            trainer = subprocess.Popen(
                spec["command"],
                cwd=spec.get("cwd") or str(job_dir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            stderr_tail.append(f"could not start the trainer: {exc}")
            exit_code = 127
        else:
            update_status(job_dir, "Running", trainer_pid=trainer.pid)
            lock = threading.Lock()

            def pump() -> None:
                assert trainer.stderr is not None
                for raw in trainer.stderr:
                    with lock:
                        out.write(raw)
                        out.flush()
                    stderr_tail.append(raw.decode("utf-8", "replace"))

            pumper = threading.Thread(target=pump, daemon=True)
            pumper.start()
            exit_code = trainer.wait()
            pumper.join(timeout=10)
    if slot is not None:
        slot.close()  # the next batch may train while this runner reports

    succeeded = exit_code == 0
    if succeeded:
        update_status(job_dir, "Completed", exit_code=0, error=None, finished=utc_now())
    else:
        _mark_mlflow_run_failed(spec)
        # A batch that trained no ticker (exit 1) fails with each ticker's reason from its summary.
        summary_reason = batch_failure_reason(Path(spec["summary"])) if spec.get("summary") else None
        update_status(
            job_dir,
            "Failed",
            exit_code=exit_code,
            error=summary_reason or _failure_reason(exit_code, stderr_tail),
            finished=utc_now(),
        )

    event = build_job_event(spec, succeeded)
    write_json_atomic(job_dir / "event.json", event)

    def record(delivered: bool | None, detail: str) -> None:
        current = read_json(status_path(job_dir))
        current["event"] = {
            "type": event["eventType"],
            "id": event["id"],
            "delivered": delivered,  # None: still retrying
            "detail": detail,
        }
        write_json_atomic(status_path(job_dir), current)

    host_url = spec.get("host_url") or os.environ.get(HOST_URL_ENV)
    state_dir = Path(spec["state_dir"])
    if not host_url and live_host_url(state_dir) is None:
        delivered, detail = (
            False,
            f"no host URL ({HOST_URL_ENV} unset); the orchestrator's status poll will see the job",
        )
    else:
        delivered, detail, _ = deliver_with_backoff(
            event,
            state_dir,
            host_url,
            bound_s=float(spec.get("event_retry_bound_s", EVENT_RETRY_BOUND_S)),
            on_attempt=lambda attempts, last: record(None, f"retrying (attempt {attempts}): {last}"),
        )
    if not delivered:
        log.warning("job %s: event %s not delivered: %s", spec["job_name"], event["eventType"], detail)
    record(delivered, detail)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one local training job (started by LocalPlatform).")
    parser.add_argument("--job-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job_dir = args.job_dir.resolve()
    try:
        run_job(job_dir)
    except Exception as exc:  # the runner itself broke: record it so nobody waits forever
        log.exception("job runner failed")
        update_status(
            job_dir, "Failed", error=f"job runner failed: {type(exc).__name__}: {exc}", finished=utc_now()
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
