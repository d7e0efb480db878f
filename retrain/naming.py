"""Every name the workflow uses, computed from the ticker, the time and the orchestration instance id.

Pure functions (no I/O, no clock): the triggers pass the time in, the orchestrator passes its own
replay-safe time. Nothing is read from or written to a file: a name is a function of its inputs.

Instance ids:
- scheduled (timer): ``retrain-<ticker>-<isoyear>w<isoweek>``, e.g. ``retrain-msft-2026w48``: a second
  firing in the same ISO week computes the same id, so the timer skips it;
- ad hoc (HTTP): ``retrain-<ticker>-<yyyymmdd>t<hhmmss>z``, e.g. ``retrain-msft-20261124t231405z``.

``parse_instance_id`` inverts both, so "is this ticker being retrained?" is answered exactly by listing
instances with the prefix ``retrain-<ticker>-`` and keeping those whose parsed ticker is equal (a
prefix alone would confuse ``BRK`` with ``BRK-B``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

INSTANCE_PREFIX = "retrain-"

# Ticker symbols are upper-case `[A-Z0-9.^=-]`; instance ids are lower-case and URL-path friendly.
# The mapping is one-to-one because `_` and `~` never occur in a ticker.
_TO_SLUG = str.maketrans({"^": "_", "=": "~"})
_FROM_SLUG = str.maketrans({"_": "^", "~": "="})

_WEEK_SUFFIX = r"(?P<year>\d{4})w(?P<week>\d{2})"
_ADHOC_SUFFIX = r"(?P<stamp>\d{8}t\d{6}z)"
_INSTANCE_RE = re.compile(rf"^retrain-(?P<slug>[a-z0-9.\-_~]{{1,15}})-(?:{_WEEK_SUFFIX}|{_ADHOC_SUFFIX})$")


class NamingError(ValueError):
    pass


@dataclass(frozen=True)
class ParsedInstanceId:
    ticker: str
    kind: str  # "scheduled" or "adhoc"
    suffix: str


def ticker_slug(ticker: str) -> str:
    """The ticker as it appears in instance ids (lower case, one-to-one)."""
    return ticker.upper().translate(_TO_SLUG).lower()


def azure_slug(ticker: str) -> str:
    """The ticker as it appears in Azure resource names (letters, digits and hyphens only)."""
    return re.sub(r"[^a-z0-9-]", "-", ticker.lower()).strip("-") or "x"


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def scheduled_instance_id(ticker: str, at: datetime) -> str:
    """The timer's instance id: one per ticker and ISO week."""
    year, week, _ = _utc(at).isocalendar()
    return f"{INSTANCE_PREFIX}{ticker_slug(ticker)}-{year:04d}w{week:02d}"


def adhoc_instance_id(ticker: str, at: datetime) -> str:
    """An HTTP request's instance id: one per ticker and second."""
    return f"{INSTANCE_PREFIX}{ticker_slug(ticker)}-{_utc(at):%Y%m%dt%H%M%S}z"


def ticker_instance_prefix(ticker: str) -> str:
    """The prefix every instance id of this ticker starts with (other tickers may share it: filter
    with `parse_instance_id`)."""
    return f"{INSTANCE_PREFIX}{ticker_slug(ticker)}-"


def parse_instance_id(instance_id: str) -> ParsedInstanceId | None:
    """The ticker and kind behind one of our instance ids, or None for an id we did not compute."""
    match = _INSTANCE_RE.match(instance_id)
    if not match:
        return None
    ticker = match["slug"].translate(_FROM_SLUG).upper()
    if match["stamp"]:
        return ParsedInstanceId(ticker=ticker, kind="adhoc", suffix=match["stamp"])
    return ParsedInstanceId(ticker=ticker, kind="scheduled", suffix=f"{match['year']}w{match['week']}")


def is_instance_of(instance_id: str, ticker: str) -> bool:
    parsed = parse_instance_id(instance_id)
    return parsed is not None and parsed.ticker == ticker.upper()


def job_name(instance_id: str) -> str:
    """The training job's name: submitting the same orchestration's job twice is a no-op.
    Azure ML job names allow letters, digits, `-` and `_` and must start with a letter or digit."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "-", instance_id).strip("-_")
    return f"{safe}-train"[:255]


def experiment_name(ticker: str) -> str:
    return f"retrain-{azure_slug(ticker)}"


def model_name(ticker: str) -> str:
    return f"{azure_slug(ticker)}-forecaster"


def endpoint_name(ticker: str) -> str:
    """Azure online endpoint names: 3 to 32 characters, a letter first, letters, digits and hyphens."""
    slug = azure_slug(ticker)
    if not slug[0].isalpha():
        slug = f"t{slug}"
    return f"{slug}-forecast"[:32].rstrip("-")
