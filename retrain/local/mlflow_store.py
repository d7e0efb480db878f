"""A new state dir's MLflow store, copied from an empty store migrated once per machine and MLflow version.

MLflow creates a new SQLite store by running its schema migrations (some fifty Alembic revisions): 2-4 s of
CPU for every new state dir, paid by `retrain run` on a fresh checkout and by every test that starts from
an empty state dir. The result is the same empty database each time, so the first store a machine creates
with a given MLflow version is kept as a template in the user's cache (`$XDG_CACHE_HOME/retrain`, else
`~/.cache/retrain`) and later stores start as a copy of it.

What keeps that safe:
- The template is made by MLflow itself (a client on a scratch file), then renamed into place: a reader
  never sees half a template, and two processes making it at once each rename a complete one.
- A store is only ever created, never replaced: the copy is linked into place (`os.link` refuses an
  existing name), so a store another process created meanwhile, and may be writing to, is left alone.
- The template's name carries MLflow's version and its schema head; MLflow checks the schema again when
  it opens the copy. Experiment 0 ("Default", which MLflow makes with the store) gets the artifact
  location MLflow would have given it in this process.
- Anything unexpected (no writable cache, a template that does not open) falls back to MLflow's own
  creation: the cache only ever saves time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where the template lives: $XDG_CACHE_HOME/retrain, else ~/.cache/retrain."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "retrain"


def _template_name() -> str:
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    return f"mlflow-{mlflow.__version__}-{_get_latest_schema_revision()}-empty.db"


def _make_template(template: Path) -> None:
    """An empty store made by MLflow (its migrations), renamed into place complete."""
    from mlflow.tracking import MlflowClient

    template.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".template-", dir=template.parent))
    try:
        uri = f"sqlite:///{scratch / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the tracking store's tables
        client.search_registered_models(max_results=1)  # the registry's (the same file)
        os.replace(scratch / "mlflow.db", template)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()


def _default_experiment_location() -> str:
    """The artifact location MLflow gives experiment 0 when a client creates a store in this process."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    return str(append_to_uri_path(resolve_uri_if_local(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH), "0"))


def create_store_from_template(db: Path) -> bool:
    """Create the SQLite store `db` as a copy of the cached empty store, unless `db` exists. True when the
    copy is now `db`; False when `db` existed, or the cache could not be used (MLflow creates it then)."""
    if db.exists():
        return False
    try:
        template = cache_dir() / _template_name()
        if not template.is_file():
            _make_template(template)
        db.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".mlflow-", suffix=".db", dir=db.parent)
        staged = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(template.read_bytes())
            now = int(time.time() * 1000)
            with contextlib.closing(sqlite3.connect(staged)) as con, con:
                con.execute(
                    "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                    "WHERE experiment_id = 0",
                    (_default_experiment_location(), now, now),
                )
            try:
                os.link(staged, db)  # never over a store created meanwhile
            except FileExistsError:
                return False
            return True
        finally:
            staged.unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - the cache only saves time; MLflow makes the store instead
        log.debug("MLflow store %s not made from the cached template: %s", db, exc)
        return False


__all__ = ["cache_dir", "create_store_from_template"]
