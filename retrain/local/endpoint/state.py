"""Slot state persistence: `<state>/endpoints/<endpoint>/state.json`, the one record of an endpoint (the
router's kept port, the applied traffic, each slot's model, PID and port, the operation in progress).
Written atomically (write then rename) under a per-endpoint file lock, with a revision number the router
follows; a corrupt file is refused with an error that says how to recover."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrain.local.endpoint.routing import validate_endpoint_name
from retrain.local.inference_server import LOCAL_HOST
from retrain.local.processes import read_json, write_json_atomic
from retrain.ports import PlatformError


class EndpointStateStore:
    """Read, lock and write the endpoints' state files under `self.root` (`<state>/endpoints`)."""

    root: Path

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _state_file(self, name: str) -> Path:
        return self._dir(name) / "state.json"

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self._state_file(name)
        if not path.is_file():
            return None
        try:
            state = read_json(path)
            if not isinstance(state, dict) or "router_port" not in state:
                raise ValueError("not an endpoint state object")
            return state
        except (OSError, ValueError) as exc:
            raise PlatformError(
                f"endpoint {name!r}: its state file {path} is unreadable ({exc}); restore it from a backup, "
                f"or delete the directory {path.parent} (after stopping its slot processes) so the next "
                "rollout creates the endpoint again"
            ) from exc

    def _require(self, name: str) -> dict[str, Any]:
        state = self._read(validate_endpoint_name(name))
        if state is None:
            raise PlatformError(
                f"endpoint {name!r} does not exist; create it first with begin_create_endpoint"
            )
        return state

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Serialise read-modify-write of one endpoint's state across threads and processes."""
        self._dir(name).mkdir(parents=True, exist_ok=True)
        with (self._dir(name) / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, name: str, state: dict[str, Any]) -> None:
        """Write the state with a new revision; this process's router takes it at once."""
        state["revision"] = int(state.get("revision", 0)) + 1
        write_json_atomic(self._state_file(name), state)
        self._state_written(name)

    def _state_written(self, name: str) -> None:
        """Called after each write (LocalEndpoints reloads the router it runs in this process)."""

    def scoring_uri(self, name: str) -> str:
        state = self._require(name)
        return f"http://{LOCAL_HOST}:{state['router_port']}/score"

    def endpoint_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/state.json"))


def _now() -> str:
    return datetime.now(UTC).isoformat()
