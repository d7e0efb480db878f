"""A new state dir's MLflow store is a copy of the empty store MLflow migrated once (retrain/local/mlflow_store.py):
the same database MLflow itself would have made, never written over a store that exists, and MLflow's own
creation whenever the cache cannot be used. Real MLflow on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from retrain.local import mlflow_store
from retrain.local.platform import LocalPlatform


def _contents(db: Path) -> dict[str, object]:
    """Structure (tables, their columns, indexes and the columns they cover), the Alembic revision and the
    rows of a store, creation times left out. Structural, not the SQL text SQLite keeps: that text differs
    with how a migration rebuilt a table (the order of a CHECK's values, quoting), not what it holds."""
    with sqlite3.connect(db) as con:
        tables = sorted(
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        )
        columns = {t: list(con.execute(f'PRAGMA table_info("{t}")')) for t in tables}
        indexes = {
            t: sorted(
                (i[1], i[2], tuple(c[2] for c in con.execute(f'PRAGMA index_info("{i[1]}")')))
                for i in con.execute(f'PRAGMA index_list("{t}")')
            )
            for t in tables
        }
        rows = {
            t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables if t != "experiments"
        }
        experiments = list(
            con.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments")
        )
    return {"columns": columns, "indexes": indexes, "rows": rows, "experiments": experiments}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "retrain"


def test_a_new_store_is_the_database_mlflow_makes_and_the_template_is_made_once(tmp_path: Path, cache: Path):
    from mlflow.tracking import MlflowClient

    made_by_mlflow = tmp_path / "direct" / "mlflow.db"
    made_by_mlflow.parent.mkdir()
    uri = f"sqlite:///{made_by_mlflow}"
    direct = MlflowClient(tracking_uri=uri, registry_uri=uri)
    direct.search_experiments(max_results=1)
    direct.search_registered_models(max_results=1)

    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    assert mlflow_store.create_store_from_template(first)
    (template,) = cache.glob("mlflow-*-empty.db")
    made_at = template.stat().st_mtime_ns
    assert mlflow_store.create_store_from_template(second)
    assert template.stat().st_mtime_ns == made_at  # the second store reused it
    assert _contents(first) == _contents(second) == _contents(made_by_mlflow)
    assert not [p for p in first.parent.iterdir() if p.name != "mlflow.db"]  # no staged copy left behind

    # MLflow opens the copy as its own store: experiments and registered models work.
    copied = MlflowClient(tracking_uri=f"sqlite:///{second}", registry_uri=f"sqlite:///{second}")
    copied.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    copied.create_registered_model("m")
    assert [e.name for e in copied.search_experiments()] == ["e", "Default"]


def test_an_existing_store_is_never_replaced(tmp_path: Path):
    platform = LocalPlatform(tmp_path / "state")
    platform.client.create_registered_model("kept")
    db = tmp_path / "state" / "mlflow" / "mlflow.db"
    assert not mlflow_store.create_store_from_template(db)
    assert [m.name for m in LocalPlatform(tmp_path / "state").client.search_registered_models()] == ["kept"]


def test_without_a_usable_cache_mlflow_makes_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    db = tmp_path / "state" / "mlflow" / "mlflow.db"
    assert not mlflow_store.create_store_from_template(db)
    assert not db.exists()
    platform = LocalPlatform(tmp_path / "state")
    assert platform.get_champion("nothing-yet") is None  # MLflow created the store itself
    assert db.is_file()
