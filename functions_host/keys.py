"""Host keys of the local Functions host: a function key (function-level HTTP routes) and a system key
(admin-level routes, the Event Grid and Durable Task webhooks), as the Azure Functions host has them.

The settings `RETRAIN_FUNCTION_KEY` / `RETRAIN_SYSTEM_KEY` win when set; otherwise each key is generated
once and kept in `<state>/host/keys.json` (mode 0600, written to a temp name then renamed).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FUNCTION_KEY_SETTING = "RETRAIN_FUNCTION_KEY"
SYSTEM_KEY_SETTING = "RETRAIN_SYSTEM_KEY"


class KeysError(RuntimeError):
    """The stored keys file cannot be used."""


@dataclass(frozen=True)
class HostKeys:
    function_key: str
    system_key: str

    def allows(self, provided: str | None, auth_level: str) -> bool:
        """Whether `provided` grants access at `auth_level` (anonymous, function or admin/system)."""
        level = auth_level.lower()
        if level == "anonymous":
            return True
        if not provided:
            return False
        if _same(provided, self.system_key):
            return True  # the system key opens every level, as the master key does in Azure
        return level == "function" and _same(provided, self.function_key)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def keys_path(state_dir: Path) -> Path:
    return Path(state_dir) / "host" / "keys.json"


def load_or_create_keys(state_dir: Path, environ: Mapping[str, str] | None = None) -> HostKeys:
    """The host keys: from the settings when set, else from the state dir (generated on first use)."""
    env = os.environ if environ is None else environ
    if env.get(FUNCTION_KEY_SETTING) and env.get(SYSTEM_KEY_SETTING):
        return HostKeys(function_key=env[FUNCTION_KEY_SETTING], system_key=env[SYSTEM_KEY_SETTING])
    path = keys_path(state_dir)
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            if not isinstance(stored, dict) or not all(isinstance(v, str) and v for v in stored.values()):
                raise ValueError('expected {"functionKey": "...", "systemKey": "..."}')
        except ValueError as exc:
            raise KeysError(
                f"{path}: unreadable host keys ({exc}); delete the file to generate new keys"
            ) from exc
    wanted = {"functionKey": stored.get("functionKey"), "systemKey": stored.get("systemKey")}
    if not all(wanted.values()):
        wanted = {name: value or secrets.token_urlsafe(32) for name, value in wanted.items()}
        _write_private_json(path, wanted)
    return HostKeys(
        function_key=env.get(FUNCTION_KEY_SETTING) or str(wanted["functionKey"]),
        system_key=env.get(SYSTEM_KEY_SETTING) or str(wanted["systemKey"]),
    )


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
