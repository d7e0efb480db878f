"""Operations in progress: as in Azure, a traffic update or a delete is long-running (`Updating` or
`Deleting` first, finished by a background thread) and an endpoint takes one operation at a time
(`EndpointBusyError`, Azure's 409). The operation is recorded in state.json with its owner's PID, so one
whose owner died is finished by the next caller. A delete drains the slot first: its process is stopped
only once the router routes by the new table with nothing in flight to it."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import Any

from retrain.local.endpoint.router import ScoringRouter, router_status
from retrain.local.endpoint.state import EndpointStateStore, _now
from retrain.local.inference_server import is_live, stop_inference_server
from retrain.local.processes import process_alive
from retrain.ports import EndpointBusyError

log = logging.getLogger("retrain.local.endpoint")

TRAFFIC_APPLY_DELAY_S = 0.5  # a traffic update is applied this long after it is accepted (Azure: seconds)
DRAIN_TIMEOUT_S = 60.0


class EndpointOperations(EndpointStateStore):
    """The long-running operations of LocalEndpoints (which sets `_me`, `_workers`, `_stopping`,
    `_routers` and `traffic_delay_s`)."""

    _me: dict[str, Any]
    _workers: list[threading.Thread]
    _stopping: threading.Event
    _routers: dict[str, ScoringRouter]
    traffic_delay_s: float

    def _settle(self, name: str) -> None:
        """Finish an operation whose owner process died before finishing it."""
        state = self._read(name)
        operation = (state or {}).get("operation")
        if not operation:
            return
        owner = operation.get("owner") or {}
        if process_alive(owner.get("pid"), owner.get("start_ticks")):
            return
        log.warning(
            "endpoint %s: finishing the %s its owner (pid %s) left", name, operation["kind"], owner.get("pid")
        )
        self._finish(name, operation)

    def _busy(self, name: str, state: dict[str, Any]) -> str | None:
        """Why the endpoint cannot take another operation now (under the lock), or None."""
        operation = state.get("operation")
        if operation:
            return f"a {operation['kind']} is in progress since {operation['started']}"
        for slot, info in state.get("slots", {}).items():
            if not info.get("provisioned") and process_alive(info.get("pid"), info.get("start_ticks")):
                if is_live(int(info["port"])):
                    info["provisioned"] = True
                    self._write(name, state)
                else:
                    return f"deployment {slot} is being created"
        return None

    def _refuse_if_busy(self, name: str, state: dict[str, Any]) -> None:
        reason = self._busy(name, state)
        if reason:
            raise EndpointBusyError(
                f"endpoint {name!r} is busy ({reason}); wait until it is Succeeded, then try again"
            )

    def _begin(self, name: str, state: dict[str, Any], operation: dict[str, Any]) -> None:
        """Record the operation (under the lock) and finish it in a background thread."""
        operation = {**operation, "started": _now(), "owner": self._me}
        state["operation"] = operation
        self._write(name, state)
        worker = threading.Thread(
            target=self._run_operation,
            args=(name, operation),
            name=f"endpoint-{name}-{operation['kind']}",
            daemon=True,
        )
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _run_operation(self, name: str, operation: dict[str, Any]) -> None:
        try:
            if operation["kind"] == "traffic update":
                self._stopping.wait(self.traffic_delay_s)
            self._finish(name, operation)
        except Exception:  # noqa: BLE001 - the next caller finishes it (its owner looks dead once we exit)
            log.exception("endpoint %s: %s did not finish", name, operation["kind"])

    def _finish(self, name: str, operation: dict[str, Any]) -> None:
        if operation["kind"] == "delete":
            slot = operation["slot"]
            before = self._read(name) or {}
            self._drain(name, int(before.get("router_port", 0)), slot, int(before.get("revision", 0)))
            info = before.get("slots", {}).get(slot) or {}
            stop_inference_server(info.get("pid"), info.get("start_ticks"))
            shutil.rmtree(self._dir(name) / slot, ignore_errors=True)
        with self._locked(name):
            state = self._read(name)
            if state is None or state.get("operation", {}).get("started") != operation["started"]:
                return  # finished by someone else
            if operation["kind"] == "traffic update":
                state["traffic"] = operation["traffic"]
            else:
                state["slots"].pop(operation["slot"], None)
                state["traffic"].pop(operation["slot"], None)
            del state["operation"]
            self._write(name, state)

    def _drain(self, name: str, router_port: int, slot: str, revision: int) -> None:
        """Wait until the router serving the endpoint (in whichever process) routes by `revision` or later
        and has no request in flight to `slot`: from then on nothing reaches the slot."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            router = self._routers.get(name)
            if router is not None and router.running:
                router.reload()
                status: dict[str, Any] | None = router.status()
            else:
                status = router_status(router_port) if router_port else None
            if status is None:
                return  # no router serves the endpoint: nothing can be in flight
            if int(status["revision"]) >= revision and not status["inflight"].get(slot):
                return
            time.sleep(0.05)
        log.warning(
            "endpoint %s: slot %s still had requests in flight after %.0fs", name, slot, DRAIN_TIMEOUT_S
        )
