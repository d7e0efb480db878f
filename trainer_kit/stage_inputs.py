"""Stage a batch's inputs folder from inputs mounted one per ticker (an Azure ML command job's inputs).

    python trainer_kit/stage_inputs.py --into DIR --data TICKER:PATH [--data ...] [--champion TICKER:PATH ...]

An Azure ML batch job takes each ticker's data asset as an input of its own (so the job records every data
asset version it trained on) and the champion models likewise; each arrives at its own mount path. The
batch runner (`trainer_kit/batch.py`) reads one folder: this writes DIR/batch.json listing the tickers in
the order of the `--data` flags and links each ticker's CSV into DIR as `<TICKER>.csv` (a copy where links
are refused); a champion is named by its absolute path. Then the job runs `batch.py --inputs DIR`.
Exit status 2 with one `error:` line when the flags are unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

MANIFEST = "batch.json"


class StageError(RuntimeError):
    """The flags cannot make a batch; the message says what to send."""


def _pairs(values: list[str], flag: str) -> list[tuple[str, Path]]:
    """TICKER:PATH pairs (':' never appears in a ticker; '=' does, as in EURUSD=X)."""
    pairs = []
    for value in values:
        ticker, sep, path = value.partition(":")
        if not sep or not ticker or not path:
            raise StageError(f"{flag} {value!r}: send TICKER:PATH")
        pairs.append((ticker, Path(path)))
    return pairs


def _data_file(path: Path, ticker: str) -> Path:
    """The CSV of a mounted file input (a folder holding one file is taken as that file)."""
    if path.is_file():
        return path
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        if len(files) == 1:
            return files[0]
    raise StageError(f"{ticker}'s data {path} is not a file (nor a folder holding one)")


def _model_dir(path: Path, ticker: str) -> Path:
    """The MLflow model folder of a mounted model input (the shallowest folder holding MLmodel)."""
    found = sorted(path.rglob("MLmodel"), key=lambda p: (len(p.parts), str(p))) if path.is_dir() else []
    if not found:
        raise StageError(f"{ticker}'s champion {path} holds no MLmodel file")
    return found[0].parent


def stage(into: Path, data: list[tuple[str, Path]], champions: list[tuple[str, Path]]) -> list[dict]:
    """Write `into`/batch.json and link each ticker's CSV beside it; the manifest's entries."""
    tickers = [t for t, _ in data]
    if not tickers:
        raise StageError("no --data TICKER:PATH: a batch needs at least one ticker")
    if len(set(tickers)) != len(tickers):
        raise StageError(f"a ticker appears twice in --data ({', '.join(tickers)}); list each once")
    unknown = sorted({t for t, _ in champions} - set(tickers))
    if unknown:
        raise StageError(f"--champion for {', '.join(unknown)}, which has no --data")
    champion_of = dict(champions)
    into.mkdir(parents=True, exist_ok=True)
    entries = []
    for ticker, path in data:
        source, target = _data_file(path, ticker), into / f"{ticker}.csv"
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.symlink(source.resolve(), target)
        except OSError:
            shutil.copyfile(source, target)
        entry: dict = {"ticker": ticker, "data": target.name}
        if ticker in champion_of:
            entry["champion_model"] = str(_model_dir(champion_of[ticker], ticker).resolve())
        entries.append(entry)
    (into / MANIFEST).write_text(json.dumps({"tickers": entries}, indent=2) + "\n", encoding="utf-8")
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Stage a batch's inputs folder from per-ticker mounts.")
    p.add_argument("--into", required=True, type=Path, help="the folder to write (batch.json and CSVs)")
    p.add_argument("--data", action="append", default=[], metavar="TICKER:PATH", help="a ticker's CSV")
    p.add_argument(
        "--champion", action="append", default=[], metavar="TICKER:PATH", help="a ticker's champion model"
    )
    args = p.parse_args(argv)
    try:
        entries = stage(args.into, _pairs(args.data, "--data"), _pairs(args.champion, "--champion"))
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"staged {len(entries)} tickers in {args.into}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
