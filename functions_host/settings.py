"""App settings as `func start` reads them: `Values` of local.settings.json into the environment."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path


class LocalSettingsError(ValueError):
    """local.settings.json exists but is not of the form {"Values": {...}}."""


def load_local_settings(
    path: str | Path = "local.settings.json", environ: MutableMapping[str, str] | None = None
) -> None:
    """Copy `Values` from a local.settings.json into the environment without overriding what is set,
    as `func start` does."""
    env = os.environ if environ is None else environ
    p = Path(path)
    if not p.is_file():
        return
    try:
        values = json.loads(p.read_text()).get("Values", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise LocalSettingsError(
            f'{p}: not valid local.settings.json ({exc}); expected {{"Values": {{...}}}}'
        ) from exc
    for key, value in values.items():
        env.setdefault(key, str(value))
