"""The local Azure Functions host: index a function_app.py, run its durable functions on the SQLite engine,
serve its HTTP surface on 127.0.0.1 and fire its timers.

    with LocalHost("function_app.py", "state") as host:   # or host.start() ... host.stop()
        requests.post(f"{host.url}/api/<route>", headers={"x-functions-key": host.function_key})

`serve(app_path, state_dir, port=7071)` runs it in the foreground until Ctrl-C (what `func start` does; `retrain serve` wraps LocalHost itself).

One host per state dir: `start()` takes an exclusive lock on `<state>/host/host.lock` for the host's life
(the kernel drops it when the process dies) and records `{"pid", "url", "port"}` in `<state>/host/host.json`;
a second host on the same state dir raises `HostAlreadyRunning` instead of starting a second scheduler on
the same durable store. `running_host(state_dir)` tells whether a live host holds a state dir, and where.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from functions_host import ncrontab
from functions_host.functions import (
    EVENT_GRID_TRIGGER,
    HTTP_TRIGGER,
    SUPPORTED_TRIGGERS,
    TIMER_TRIGGER,
    FunctionIndex,
    FunctionLoadError,
    IndexedFunction,
    close_durable_client_sessions,
)
from functions_host.http import ALL_METHODS, DurableUrls, HostHTTPServer, HostRouter
from functions_host.keys import DURABLE_EXTENSION, EVENTGRID_EXTENSION, HostKeys, load_or_create_keys
from functions_host.settings import load_local_settings

log = logging.getLogger("functions_host.host")

HOST_URL_SETTING = "RETRAIN_LOCAL_HOST_URL"
DEFAULT_HUB_NAME = "TestHubName"  # what the Durable extension uses locally when host.json names no hub
PAST_DUE_TOLERANCE = timedelta(seconds=1)

EngineFactory = Callable[..., Any]
HOST_INFO_WAIT_S = 30.0  # how long to wait for a host that holds the lock to record where it listens


class HostAlreadyRunning(RuntimeError):
    """Another live host holds the state dir; `url` and `pid` say which (None while it is still starting)."""

    def __init__(self, state_dir: Path, url: str | None, pid: int | None) -> None:
        where = url or "(still starting)"
        super().__init__(
            f"a local Functions host already runs on state dir {state_dir}: {where} (pid {pid}); "
            "use that host or stop it first"
        )
        self.state_dir = state_dir
        self.url = url
        self.pid = pid


def host_lock_path(state_dir: Path) -> Path:
    return Path(state_dir) / "host" / "host.lock"


def host_info_path(state_dir: Path) -> Path:
    return Path(state_dir) / "host" / "host.json"


def _try_lock(state_dir: Path) -> int | None:
    """An open fd holding the state dir's exclusive lock, or None when another open file holds it."""
    path = host_lock_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by child processes (PEP 446)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _read_host_info(state_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(host_info_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _write_host_info(state_dir: Path, info: dict[str, Any]) -> None:
    path = host_info_path(state_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def running_host(state_dir: str | Path, wait_s: float = HOST_INFO_WAIT_S) -> dict[str, Any] | None:
    """`{"pid", "url", "port"}` of the live host holding `state_dir`, or None when none does. A host that
    holds the lock but has not yet recorded where it listens is waited for up to `wait_s` (then its
    url/port are None)."""
    state = Path(state_dir).resolve()
    deadline = time.monotonic() + wait_s
    while True:
        fd = _try_lock(state)
        if fd is not None:  # nobody holds it
            _release_lock(fd)
            return None
        info = _read_host_info(state)  # the holder removed any stale record before taking over
        if info and info.get("url"):
            return info
        if time.monotonic() >= deadline:
            return {"pid": None, "url": None, "port": None}
        time.sleep(0.1)


def _read_host_json(app_dir: Path, environ: MutableMapping[str, str]) -> tuple[str, str]:
    """(route prefix, task hub name) from host.json, with the host's defaults."""
    path = app_dir / "host.json"
    config: dict[str, Any] = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except ValueError as exc:
            raise FunctionLoadError(f"{path}: not valid JSON ({exc})") from exc
    extensions = config.get("extensions") or {}
    prefix = (extensions.get("http") or {}).get("routePrefix", "api")
    hub = (extensions.get("durableTask") or {}).get("hubName") or DEFAULT_HUB_NAME
    if isinstance(hub, str) and hub.startswith("%") and hub.endswith("%"):
        hub = environ.get(hub.strip("%")) or DEFAULT_HUB_NAME
    return str(prefix).strip("/"), str(hub)


def _durable_default_version(app_dir: Path) -> str:
    """host.json's extensions.durableTask.defaultVersion ("" without one); the file was validated already."""
    path = app_dir / "host.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    durable = ((config.get("extensions") or {}).get("durableTask") or {}) if isinstance(config, dict) else {}
    return str(durable.get("defaultVersion") or "")


class LocalHost:
    """An in-process Functions host. Not started by the constructor; `start()` binds the port."""

    def __init__(
        self,
        app_path: str | Path,
        state_dir: str | Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        environ: MutableMapping[str, str] | None = None,
        timers: bool = True,
        max_workers: int = 4,
        out: TextIO | None = None,
        engine_factory: EngineFactory | None = None,
        setting_defaults: Mapping[str, str] | None = None,
    ) -> None:
        path = Path(app_path).resolve()
        self.app_path = path / "function_app.py" if path.is_dir() else path
        self.app_dir = self.app_path.parent
        self.state_dir = Path(state_dir).resolve()
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self._port = port
        self._host = host
        self._timers_enabled = timers
        self._max_workers = max_workers
        self._out = out
        self._engine_factory = engine_factory
        self._setting_defaults = dict(setting_defaults or {})
        self.index: FunctionIndex | None = None
        self.engine: Any = None
        self.keys: HostKeys | None = None
        self.urls: DurableUrls | None = None
        self._server: HostHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self._timers: list[TimerRunner] = []
        self._stop_timers = threading.Event()
        self._previous_host_url: str | None = None
        self._route_prefix = "api"
        self._lock_fd: int | None = None

    # -- public state -------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        self._require_started()
        assert self._server is not None
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:7071 (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    @property
    def function_key(self) -> str:
        self._require_started()
        assert self.keys is not None
        return self.keys.function_key

    @property
    def system_key(self) -> str:
        """The master key: it opens every route."""
        self._require_started()
        assert self.keys is not None
        return self.keys.system_key

    @property
    def durable_key(self) -> str:
        """The Durable extension's system key: it opens the Durable HTTP API only."""
        self._require_started()
        assert self.keys is not None
        return self.keys.extension_key(DURABLE_EXTENSION)

    @property
    def eventgrid_key(self) -> str:
        """The Event Grid extension's system key: it opens the Event Grid webhook only."""
        self._require_started()
        assert self.keys is not None
        return self.keys.extension_key(EVENTGRID_EXTENSION)

    def function_url(self, name: str) -> str:
        """The URL template of an HTTP-triggered function (route parameters left as `{...}`)."""
        self._require_started()
        assert self.index is not None
        return self._route_url(self.index.functions[name])

    def _route_url(self, fn: IndexedFunction) -> str:
        prefix = f"/{self._route_prefix}" if self._route_prefix else ""
        return f"{self.url}{prefix}/{fn.route.lstrip('/')}"

    def event_grid_url(self, function_name: str) -> str:
        query = urllib.parse.urlencode({"functionName": function_name, "code": self.eventgrid_key})
        return f"{self.url}/runtime/webhooks/eventgrid?{query}"

    def _require_started(self) -> None:
        if self._server is None:
            raise RuntimeError("the local host is not started; call start() first")

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> LocalHost:
        if self._server is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "host").mkdir(exist_ok=True)
        self._lock_state_dir()
        try:
            self._start_locked()
        except BaseException:
            self._unlock_state_dir()
            raise
        return self

    def _lock_state_dir(self) -> None:
        """Take the state dir for this host, or raise HostAlreadyRunning naming the host that has it."""
        fd = _try_lock(self.state_dir)
        if fd is None:
            info = running_host(self.state_dir) or {}
            raise HostAlreadyRunning(self.state_dir, info.get("url"), info.get("pid"))
        self._lock_fd = fd
        # A record left by a host that died is stale: gone until this host knows its URL.
        with contextlib.suppress(FileNotFoundError):
            host_info_path(self.state_dir).unlink()

    def _unlock_state_dir(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            host_info_path(self.state_dir).unlink()  # before the lock goes: no one reads a dead URL
        _release_lock(self._lock_fd)
        self._lock_fd = None

    def _start_locked(self) -> None:
        load_local_settings(self.app_dir / "local.settings.json", self.environ)  # as `func start` does
        self.keys = load_or_create_keys(self.state_dir, self.environ)
        self._route_prefix, hub_name = _read_host_json(self.app_dir, self.environ)
        self.index = FunctionIndex.load(self.app_path, self.environ, self._setting_defaults)
        timers = [
            TimerRunner.for_function(f, self.index, self.state_dir, self._stop_timers)
            for f in self.index.by_trigger(TIMER_TRIGGER)
        ]  # parse schedules before binding anything

        server = HostHTTPServer(self._host, self._port)
        try:
            self.urls = DurableUrls(
                base_url=f"http://{self._host}:{server.port}",
                system_key=self.keys.extension_key(DURABLE_EXTENSION),
                rpc_token=secrets.token_urlsafe(16),
                hub_name=hub_name,
            )
            urls = self.urls
            self.index.set_durable_client_binding(lambda b: urls.client_binding_json(b.get("taskHub")))
            self.engine = self._make_engine()
            self.engine.start()
            server.router = HostRouter(self.index, self.keys, self.urls, self.engine, self._route_prefix)
        except BaseException:
            server.server_close()
            if self.engine is not None:
                self.engine.stop()
            raise
        self._server = server
        self._server_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="functions-host-http",
            daemon=True,
        )
        self._server_thread.start()
        _write_host_info(self.state_dir, {"pid": os.getpid(), "url": self.url, "port": self.port})
        self._previous_host_url = os.environ.get(HOST_URL_SETTING)
        os.environ[HOST_URL_SETTING] = self.url  # like WEBSITE_HOSTNAME: how local services reach us
        if self.environ is not os.environ:
            self.environ[HOST_URL_SETTING] = self.url
        self._print_functions()
        if self._timers_enabled:
            self._stop_timers.clear()
            self._timers = timers
            for runner in self._timers:
                runner.start()

    def _make_engine(self) -> Any:
        assert self.index is not None
        factory = self._engine_factory
        if factory is None:
            from functions_host.durable import DurableEngine

            factory = DurableEngine
        return factory(
            self.state_dir / "host" / "durable.sqlite",
            self.index.run_orchestrator,
            self.index.run_activity,
            has_function=self.index.has_function,
            max_workers=self._max_workers,
            default_version=_durable_default_version(self.app_dir),
        )

    def stop(self) -> None:
        self._stop_timers.set()
        for runner in self._timers:
            runner.join(timeout=30)
        self._timers = []
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._server_thread is not None:
                self._server_thread.join(timeout=10)
            if os.environ.get(HOST_URL_SETTING) == self.url:
                if self._previous_host_url is None:
                    os.environ.pop(HOST_URL_SETTING, None)
                else:
                    os.environ[HOST_URL_SETTING] = self._previous_host_url
            self._server = None
            self._server_thread = None
        if self.engine is not None:
            stop = getattr(self.engine, "close", None) or self.engine.stop
            stop()
            self.engine = None
        close_durable_client_sessions()
        self._unlock_state_dir()

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start-up listing, as `func start` prints it ------------------------------------------------
    def describe_functions(self) -> str:
        assert self.index is not None
        lines = ["", "Functions:", ""]
        for fn in sorted(
            self.index.functions.values(), key=lambda f: (f.trigger_type != HTTP_TRIGGER, f.name)
        ):
            if fn.trigger_type == HTTP_TRIGGER:
                methods = ",".join(fn.methods or ALL_METHODS)
                lines.append(f"\t{fn.name}: [{methods}] {self._route_url(fn)}")
            elif fn.trigger_type == EVENT_GRID_TRIGGER:
                lines.append(
                    f"\t{fn.name}: eventGridTrigger (POST {self.url}/runtime/webhooks/eventgrid"
                    f"?functionName={fn.name})"
                )
            elif fn.trigger_type == TIMER_TRIGGER:
                lines.append(f"\t{fn.name}: timerTrigger ({fn.trigger.get('schedule')} UTC)")
            elif fn.trigger_type in SUPPORTED_TRIGGERS:
                lines.append(f"\t{fn.name}: {fn.trigger_type}")
            else:
                lines.append(
                    f"\t{fn.name}: {fn.trigger_type} (not supported by the local host: never invoked)"
                )
            lines.append("")
        lines.append(
            f"Host keys are in {self.state_dir / 'host' / 'keys.json'} unless RETRAIN_FUNCTION_KEY / "
            "RETRAIN_SYSTEM_KEY are set."
        )
        return "\n".join(lines)

    def _print_functions(self) -> None:
        text = self.describe_functions()
        out = self._out if self._out is not None else sys.stdout
        print(text, file=out, flush=True)


# ------------------------------------------------------------------------------------------------------
# Timers


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


class TimerRunner(threading.Thread):
    """Fires one timer-triggered function on its schedule; keeps the schedule monitor status in the state
    dir (as Azure keeps it in storage) so an occurrence missed while the host was down fires at start-up
    with `past_due` set."""

    def __init__(
        self,
        fn: IndexedFunction,
        index: FunctionIndex,
        schedule: ncrontab.Schedule,
        status_path: Path,
        stop: threading.Event,
        run_on_startup: bool,
        use_monitor: bool,
    ) -> None:
        super().__init__(name=f"timer-{fn.name}", daemon=True)
        self.fn = fn
        self.index = index
        self.schedule = schedule
        self.status_path = status_path
        self.stop_event = stop
        self.run_on_startup = run_on_startup
        self.use_monitor = use_monitor

    @classmethod
    def for_function(
        cls, fn: IndexedFunction, index: FunctionIndex, state_dir: Path, stop: threading.Event
    ) -> TimerRunner:
        expr = fn.trigger.get("schedule")
        try:
            schedule = ncrontab.parse(str(expr))
        except ncrontab.NCrontabError as exc:
            raise FunctionLoadError(f"timer function {fn.name!r}: invalid schedule: {exc}") from exc
        use_monitor = fn.trigger.get("useMonitor")
        if use_monitor is None:  # Azure: monitored unless the schedule fires more often than once a minute
            first, second = schedule.occurrences(datetime(2024, 1, 1, tzinfo=UTC), 2)
            use_monitor = (second - first) >= timedelta(minutes=1)
        status_path = state_dir / "host" / "timers" / f"{fn.name}.json"
        return cls(
            fn, index, schedule, status_path, stop, bool(fn.trigger.get("runOnStartup")), bool(use_monitor)
        )

    def _read_status(self) -> dict[str, str] | None:
        try:
            data = json.loads(self.status_path.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def _write_status(self, status: dict[str, str | None]) -> None:
        if not self.use_monitor:
            return
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.status_path)

    def _invoke(self, past_due: bool, status: dict[str, str | None] | None) -> None:
        try:
            self.index.invoke_timer(
                self.fn.name,
                past_due=past_due,
                schedule_status={k: v for k, v in (status or {}).items() if v},
            )
        except Exception:  # noqa: BLE001 - a failed run is logged; the schedule goes on
            log.error("Executed 'Functions.%s' (Failed)\n%s", self.fn.name, traceback.format_exc())

    def run(self) -> None:
        now = datetime.now(UTC)
        stored = self._read_status() if self.use_monitor else None
        last = datetime.fromisoformat(stored["Last"]) if stored and stored.get("Last") else None
        missed = bool(stored and stored.get("Next") and datetime.fromisoformat(stored["Next"]) < now)
        if self.run_on_startup or missed:
            status = {
                "Last": _iso(last),
                "Next": _iso(self.schedule.next_after(now)),
                "LastUpdated": _iso(now),
            }
            self._invoke(past_due=missed, status=status)
            last = now
        while not self.stop_event.is_set():
            due = self.schedule.next_after(max(datetime.now(UTC), now))
            self._write_status(
                {"Last": _iso(last), "Next": _iso(due), "LastUpdated": _iso(datetime.now(UTC))}
            )
            if self.stop_event.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            fired = datetime.now(UTC)
            following = self.schedule.next_after(due)
            status = {"Last": _iso(last), "Next": _iso(following), "LastUpdated": _iso(fired)}
            self._invoke(past_due=fired - due > PAST_DUE_TOLERANCE, status=status)
            last, now = due, due


# ------------------------------------------------------------------------------------------------------
# Foreground


def serve(app_path: str | Path, state_dir: str | Path, port: int = 7071, *, host: str = "127.0.0.1") -> None:
    """Run the local host until Ctrl-C or SIGTERM (what `retrain serve` and `func start` do)."""
    stopped = threading.Event()
    local = LocalHost(app_path, state_dir, port=port, host=host)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stopped.set())
    try:
        local.start()
        print(f"Local Functions host listening on {local.url} (Ctrl-C to stop)", flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        local.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
