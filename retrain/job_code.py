"""A training job's code folder: the trainer folder plus the trainer kit, assembled in a temporary folder.

Azure ML uploads a command job's `code=` folder as its whole snapshot, so a job can import only what is in
it. The trainer folder (trainer/, trainers/<name>/) holds the family; `trainer_kit/` (the batch runner and
what every family shares) is COPIED beside it here, at submit time, never imported across folders. The
local job runner and the Azure adapter both take the job's code from `assemble_job_code`, so a job runs
the same files in both worlds. The copy is deterministic: the same sources give the same file list and
bytes (and mtimes), so Azure ML's content-hashed code snapshots are reused between submits.

Imports nothing heavy: the Function App side uses this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KIT_DIR = REPO_ROOT / "trainer_kit"
KIT_NAME = "trainer_kit"
# The runner the job executes for a batch, relative to the assembled folder (docs/trainer-contract.md).
BATCH_RUNNER = f"{KIT_NAME}/batch.py"
# Never part of a job's code: caches and the outputs a local run may leave in a folder.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache")
FIXED_MTIME = 946684800  # 2000-01-01: copies carry no submit-time timestamps


class JobCodeError(ValueError):
    """The trainer folder cannot become a job's code; the message says what to change."""


def assemble_job_code(trainer_folder: Path, parent: Path | None = None, kit: Path = KIT_DIR) -> Path:
    """Copy `trainer_folder` and the kit into a new folder under `parent` (a new temporary folder when
    None) and return it: `<it>/train.py` (the family, as in its folder) and `<it>/trainer_kit/` (the batch
    runner, `BATCH_RUNNER`). The caller removes it (`shutil.rmtree(path.parent)` for a temporary one)."""
    source = Path(trainer_folder).resolve()
    if not source.is_dir():
        raise JobCodeError(f"trainer folder not found: {source}; pass a folder with the family's train.py")
    if (source / KIT_NAME).exists():
        raise JobCodeError(
            f"{source / KIT_NAME} exists: the kit is copied in at submit time; remove it from the trainer folder"
        )
    base = Path(parent) if parent is not None else Path(tempfile.mkdtemp(prefix="job-code-"))
    dest = base / source.name
    shutil.copytree(source, dest, ignore=IGNORED)
    shutil.copytree(kit, dest / KIT_NAME, ignore=IGNORED)
    for root, dirs, files in os.walk(dest):
        for name in dirs + files:
            os.utime(Path(root) / name, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(dest, (FIXED_MTIME, FIXED_MTIME))
    return dest


def kit_pythonpath(existing: str | None = None) -> str:
    """PYTHONPATH for a process that runs a trainer folder's train.py in place, from the repository (tests
    and bench scripts; jobs run the assembled job code): the repository root first, so `import trainer_kit`
    finds the kit. In-process callers (the backtest, tests) have the root on sys.path."""
    return os.pathsep.join(p for p in (str(REPO_ROOT), existing) if p)
