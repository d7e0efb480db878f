"""Host keys of the local Functions host, as the Azure Functions host has them:

- the function key opens function-level HTTP routes;
- one system key per extension opens only that extension's webhook: `durabletask_extension` the Durable
  Functions HTTP API (it is the key in the management URLs a 202 hands out), `eventgrid_extension` the
  Event Grid webhook;
- the master key (`system_key`, the setting `RETRAIN_SYSTEM_KEY`) opens everything.

The settings `RETRAIN_FUNCTION_KEY` / `RETRAIN_SYSTEM_KEY` win when set; otherwise each key is generated
once and kept in `<state>/host/keys.json` (mode 0600, written to a temp name then renamed). The extension
keys are always kept there; a keys.json from before they existed gets them added on first use.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FUNCTION_KEY_SETTING = "RETRAIN_FUNCTION_KEY"
SYSTEM_KEY_SETTING = "RETRAIN_SYSTEM_KEY"
DURABLE_EXTENSION = "durabletask_extension"
EVENTGRID_EXTENSION = "eventgrid_extension"
EXTENSIONS = (DURABLE_EXTENSION, EVENTGRID_EXTENSION)


class KeysError(RuntimeError):
    """The stored keys file cannot be used."""


@dataclass(frozen=True)
class HostKeys:
    function_key: str
    system_key: str  # the master key
    extension_keys: Mapping[str, str] = field(default_factory=dict)

    def allows(self, provided: str | None, auth_level: str) -> bool:
        """Whether `provided` grants access at `auth_level` (anonymous, function or admin/system)."""
        level = auth_level.lower()
        if level == "anonymous":
            return True
        if not provided:
            return False
        if _same(provided, self.system_key):
            return True  # the master key opens every level
        return level == "function" and _same(provided, self.function_key)

    def allows_extension(self, provided: str | None, extension: str) -> bool:
        """Whether `provided` opens `extension`'s webhook: its own system key, or the master key."""
        if not provided:
            return False
        own = self.extension_keys.get(extension)
        return _same(provided, self.system_key) or (own is not None and _same(provided, own))

    def extension_key(self, extension: str) -> str:
        """The system key of one extension (`durabletask_extension`, `eventgrid_extension`)."""
        try:
            return self.extension_keys[extension]
        except KeyError:
            raise KeysError(f"no system key for {extension!r}; known: {', '.join(EXTENSIONS)}") from None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def keys_path(state_dir: Path) -> Path:
    return Path(state_dir) / "host" / "keys.json"


def load_or_create_keys(state_dir: Path, environ: Mapping[str, str] | None = None) -> HostKeys:
    """The host keys: from the settings when set, else from the state dir (generated on first use)."""
    env = os.environ if environ is None else environ
    path = keys_path(state_dir)
    stored = read_keys_file(path) if path.exists() else {}
    stored_system = stored.get("systemKeys") or {}
    wanted: dict[str, Any] = dict(stored)
    for name, setting in (("functionKey", FUNCTION_KEY_SETTING), ("systemKey", SYSTEM_KEY_SETTING)):
        if not env.get(setting) and not wanted.get(name):  # a key given by a setting is not stored
            wanted[name] = secrets.token_urlsafe(32)
    wanted["systemKeys"] = {name: stored_system.get(name) or secrets.token_urlsafe(32) for name in EXTENSIONS}
    if wanted != stored:  # first use, or a keys.json from before the extension keys: add what is missing
        _write_private_json(path, wanted)
    return HostKeys(
        function_key=env.get(FUNCTION_KEY_SETTING) or str(wanted["functionKey"]),
        system_key=env.get(SYSTEM_KEY_SETTING) or str(wanted["systemKey"]),
        extension_keys=dict(wanted["systemKeys"]),
    )


def read_keys_file(path: Path) -> dict[str, Any]:
    """The stored keys, checked: `functionKey`, `systemKey` and `systemKeys` (extension -> key)."""
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
        system_keys = stored.get("systemKeys", {})
        flat = {k: v for k, v in stored.items() if k != "systemKeys"}
        if not all(isinstance(v, str) and v for v in flat.values()) or not (
            isinstance(system_keys, dict) and all(isinstance(v, str) and v for v in system_keys.values())
        ):
            raise ValueError('expected {"functionKey": "...", "systemKey": "...", "systemKeys": {...}}')
    except ValueError as exc:
        raise KeysError(
            f"{path}: unreadable host keys ({exc}); delete the file to generate new keys"
        ) from exc
    return stored


def _write_private_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
