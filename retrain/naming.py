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

Every derived name is one-to-one over valid tickers. Azure names allow only letters, digits and
hyphens, so ``BRK.B``, ``BRK-B`` and ``BRK^B`` cannot all keep their spelling: a ticker whose slug is
lossless (``[A-Z0-9]+`` runs joined by single hyphens, e.g. MSFT, BRK-B) keeps today's names; any
other (BRK.B, ^GSPC, EURUSD=X, a ticker with ``--``) gets ``<readable>--<6 hex of SHA-256 of the
ticker>``, e.g. ``brk-b--1a2b3c``. A lossless slug never contains ``--``, so the two kinds never meet,
and two hashed names differ unless both their readable parts and their hashes agree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

INSTANCE_PREFIX = "retrain-"

# Ticker symbols are upper-case `[A-Z0-9.^=-]`; instance ids are lower-case and URL-path friendly.
# The mapping is one-to-one because `_` and `~` never occur in a ticker.
_TO_SLUG = str.maketrans({"^": "_", "=": "~"})
_FROM_SLUG = str.maketrans({"_": "^", "~": "="})

_WEEK_SUFFIX = r"(?P<year>\d{4})w(?P<week>\d{2})"
_ADHOC_SUFFIX = r"(?P<stamp>\d{8}t\d{6}z)"
_INSTANCE_RE = re.compile(rf"^retrain-(?P<slug>[a-z0-9.\-_~]{{1,15}})-(?:{_WEEK_SUFFIX}|{_ADHOC_SUFFIX})\Z")


# The naming of derived names a cycle uses (`CycleInput.naming_version`): 2 is today's one-to-one naming;
# 1 (`legacy_names`) is the lossy naming before it, kept ONLY so that a cycle started by that code and
# replayed by this one goes on with the names it started with (an input without the field).
NAMING_VERSION = 2
LEGACY_NAMING_VERSION = 1


class NamingError(ValueError):
    pass


class TickerError(NamingError):
    """Not a ticker symbol; the message says what to send."""


_TICKER_RE = re.compile(r"^[A-Z0-9.^=-]{1,15}\Z")


def validate_ticker(symbol: str) -> str:
    """The upper-cased ticker if it matches `[A-Z0-9.^=-]{1,15}` (the whole text); no other input becomes a path."""
    if not isinstance(symbol, str):
        raise TickerError(f"ticker must be a string such as 'MSFT', got {type(symbol).__name__}")
    ticker = symbol.strip().upper()
    if not _TICKER_RE.fullmatch(ticker):
        shown = repr(symbol[:20]) + ("..." if len(symbol) > 20 else "")  # never echo a huge value
        raise TickerError(
            f"invalid ticker {shown}: send 1-15 characters of A-Z, 0-9 and . ^ = - "
            "(for example MSFT, BRK.B, ^GSPC, EURUSD=X)"
        )
    return ticker


@dataclass(frozen=True)
class ParsedInstanceId:
    ticker: str
    kind: str  # "scheduled" or "adhoc"
    suffix: str


def ticker_slug(ticker: str) -> str:
    """The ticker as it appears in instance ids (lower case, one-to-one)."""
    return ticker.upper().translate(_TO_SLUG).lower()


# A ticker whose lower-cased spelling is already a valid, unambiguous Azure name part.
_LOSSLESS_RE = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*")
HASH_DIGITS = 6
_HASH_MARK = "--"  # never inside a lossless slug: it tells hashed names from plain ones


def ticker_hash(ticker: str) -> str:
    """Six hex digits of the SHA-256 of the canonical ticker: stable across runs and machines."""
    return hashlib.sha256(validate_ticker(ticker).encode()).hexdigest()[:HASH_DIGITS]


def azure_slug(ticker: str, *, letter_first: bool = False, max_len: int = 64) -> str:
    """The ticker as it appears in Azure resource names: letters, digits and hyphens, starting and ending
    with a letter or digit, at most `max_len` (>= 9) characters, one-to-one over valid tickers.

    The lower-cased ticker when that is lossless (and starts with a letter, if `letter_first`); else
    `<readable>--<ticker_hash>`, the readable part cut to fit (see the module docstring)."""
    canonical = validate_ticker(ticker)
    plain = canonical.lower()
    if (
        _LOSSLESS_RE.fullmatch(canonical)
        and len(plain) <= max_len
        and (not letter_first or plain[0].isalpha())
    ):
        return plain
    readable = re.sub(r"[^a-z0-9]+", "-", plain).strip("-")
    if letter_first and not readable[:1].isalpha():
        readable = f"t{readable}"
    readable = readable[: max_len - len(_HASH_MARK) - HASH_DIGITS].rstrip("-") or "x"
    return f"{readable}{_HASH_MARK}{ticker_hash(canonical)}"


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


# ---- fleet cycles (retrain/fleet.py): one orchestration over many tickers, one sub-orchestration per batch ----
# Fleet ids: "fleet-<yyyymmdd>t<hhmmss><microseconds>z" (HTTP, CLI: two requests in one second differ) or
# "fleet-<isoyear>w<isoweek>" (the timer: a second firing in the same ISO week finds it). A batch of a fleet
# is "<fleet id>-b<4 digits>", so a batch names its fleet and a fleet's batches share its prefix. Fleet ids
# never look like a cycle's ("retrain-...") or a rollout's ("rollout-..."); the endpoint "fleet-models" is
# an endpoint name, not an instance id (instance ids and endpoint names never meet).
FLEET_PREFIX = "fleet-"
BATCH_DIGITS = 4
MAX_BATCHES = 10**BATCH_DIGITS
_FLEET_SUFFIX = rf"(?:{_WEEK_SUFFIX}|(?P<stamp>\d{{8}}t\d{{12}}z))"
_FLEET_RE = re.compile(rf"^fleet-{_FLEET_SUFFIX}\Z")
_BATCH_RE = re.compile(rf"^(?P<fleet>fleet-{_FLEET_SUFFIX})-b(?P<index>\d{{{BATCH_DIGITS}}})\Z")
# The experiment every fleet's batch jobs run in (a per-ticker experiment cannot hold a batch's run).
FLEET_EXPERIMENT = "retrain-fleet"


@dataclass(frozen=True)
class ParsedFleetId:
    kind: str  # "scheduled" or "adhoc"
    suffix: str  # "2026w49" or "20261206t101500123456z"


def fleet_instance_id(at: datetime) -> str:
    """An HTTP or CLI fleet request's instance id: one per microsecond (the stamp also orders them)."""
    return f"{FLEET_PREFIX}{_utc(at):%Y%m%dt%H%M%S%f}z"


def scheduled_fleet_instance_id(at: datetime) -> str:
    """The timer's fleet id: one per ISO week, so a second firing in the same week finds the first."""
    year, week, _ = _utc(at).isocalendar()
    return f"{FLEET_PREFIX}{year:04d}w{week:02d}"


def parse_fleet_instance_id(instance_id: str) -> ParsedFleetId | None:
    """The kind of one of our fleet ids, or None (a batch's id, a cycle's, anything else)."""
    match = _FLEET_RE.match(instance_id) if isinstance(instance_id, str) else None
    if not match:
        return None
    if match["stamp"]:
        return ParsedFleetId("adhoc", match["stamp"])
    return ParsedFleetId("scheduled", f"{match['year']}w{match['week']}")


def batch_instance_id(fleet_id: str, index: int) -> str:
    """The sub-orchestration id of a fleet's batch `index` (0-based): deterministic, so a replay of the
    fleet finds the batch it started."""
    if parse_fleet_instance_id(fleet_id) is None:
        raise NamingError(f"{fleet_id!r} is not a fleet id (fleet-2026w49, fleet-20261206t101500123456z)")
    if not 0 <= index < MAX_BATCHES:
        raise NamingError(f"batch index {index}: from 0 to {MAX_BATCHES - 1}")
    return f"{fleet_id}-b{index:0{BATCH_DIGITS}d}"


def parse_batch_instance_id(instance_id: str) -> tuple[str, int] | None:
    """(fleet id, batch index) of one of our batch ids, or None."""
    match = _BATCH_RE.match(instance_id) if isinstance(instance_id, str) else None
    return (match["fleet"], int(match["index"])) if match else None


def is_our_instance_id(instance_id: str) -> bool:
    """Whether `instance_id` is a cycle's, a fleet's or a fleet batch's id (ours to look up or to tell)."""
    return any(
        parse(instance_id) is not None
        for parse in (parse_instance_id, parse_fleet_instance_id, parse_batch_instance_id)
    )


def job_name(instance_id: str) -> str:
    """The training job's name: submitting the same orchestration's job twice is a no-op.
    Azure ML job names allow letters, digits, `-` and `_` and must start with a letter or digit.

    An id that needs no change keeps it (`retrain-msft-2026w48-train`); one with other characters
    (`retrain-brk.b-...`, which would read as BRK-B's) also carries 6 hex digits of its SHA-256. Our
    ids end in `w<ww>` or `z`, never in `-<6 hex>`, so the two kinds never meet."""
    if re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]*", instance_id) and len(instance_id) <= 240:
        return f"{instance_id}-train"
    safe = re.sub(r"[^a-zA-Z0-9_-]", "-", instance_id).strip("-_")[:240] or "x"
    digest = hashlib.sha256(instance_id.encode()).hexdigest()[:HASH_DIGITS]
    return f"{safe}-{digest}-train"


def experiment_name(ticker: str) -> str:
    return f"retrain-{azure_slug(ticker)}"


def model_name(ticker: str) -> str:
    return f"{azure_slug(ticker)}-forecaster"


def asset_name(ticker: str) -> str:
    """The data asset of a ticker: `<slug>-daily` (Azure ML asset names start with a letter or digit)."""
    return f"{azure_slug(ticker)}-daily"


# Online endpoint names are unique per Azure REGION (they become <name>.<region>.inference.ml.azure.com),
# so `msft-forecast` alone would collide with any other customer's. In Azure the name carries a suffix
# that is stable per workspace.
ENDPOINT_NAME_MAX = 32
ENDPOINT_SUFFIX_MAX = 6
_SUFFIX_RE = re.compile(rf"[a-z0-9]{{1,{ENDPOINT_SUFFIX_MAX}}}")
_ENDPOINT_RE = re.compile(rf"[a-z][a-z0-9-]{{1,{ENDPOINT_NAME_MAX - 2}}}[a-z0-9]")


def workspace_suffix(subscription_id: str, resource_group: str, workspace: str) -> str:
    """Six hex digits of the SHA-256 of the workspace's ARM id (case-insensitive, as ARM ids are):
    the same workspace always gives the same suffix, another workspace almost surely another."""
    arm_id = (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    ).lower()
    return hashlib.sha256(arm_id.encode()).hexdigest()[:ENDPOINT_SUFFIX_MAX]


def endpoint_suffix(environ: Mapping[str, str] | None = None) -> str:
    """The endpoint name suffix from the settings: RETRAIN_ENDPOINT_SUFFIX when set; otherwise, on the
    azureml platform, derived from the subscription, resource group and workspace; locally none."""
    from retrain import settings

    explicit = (settings.get("RETRAIN_ENDPOINT_SUFFIX", environ) or "").strip()
    if explicit:
        if not _SUFFIX_RE.fullmatch(explicit):
            raise NamingError(
                f"RETRAIN_ENDPOINT_SUFFIX={explicit!r} is invalid: use 1 to {ENDPOINT_SUFFIX_MAX} lower-case "
                "letters or digits, or leave it empty to derive one from the workspace"
            )
        return explicit
    from retrain.adapters import on_azure

    if not on_azure(environ):
        return ""
    ids = [settings.get(n, environ) for n in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP")]
    workspace = settings.get("AZUREML_WORKSPACE_NAME", environ)
    if not all(ids) or not workspace:
        raise NamingError(
            "the azureml platform derives endpoint names from AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP "
            "and AZUREML_WORKSPACE_NAME; set them (or RETRAIN_ENDPOINT_SUFFIX)"
        )
    return workspace_suffix(str(ids[0]), str(ids[1]), str(workspace))


def endpoint_name(ticker: str, suffix: str | None = None) -> str:
    """The ticker's online endpoint: `<ticker>-forecast[-<suffix>]`, within Azure's rule (3 to 32
    characters, a letter first, letters, digits and hyphens, no hyphen last). `suffix=None` takes it
    from the settings (`endpoint_suffix`)."""
    suffix = endpoint_suffix() if suffix is None else suffix
    if suffix and not _SUFFIX_RE.fullmatch(suffix):
        raise NamingError(
            f"endpoint suffix {suffix!r}: use 1 to {ENDPOINT_SUFFIX_MAX} lower-case letters or digits"
        )
    tail = "-forecast" + (f"-{suffix}" if suffix else "")
    name = azure_slug(ticker, letter_first=True, max_len=ENDPOINT_NAME_MAX - len(tail)) + tail
    if not _ENDPOINT_RE.fullmatch(name):
        raise NamingError(f"{ticker!r} gives no valid endpoint name ({name!r})")
    return name


@dataclass(frozen=True)
class CycleNames:
    """Every name one cycle derives from its ticker and instance id, in one naming version."""

    experiment: str
    model: str
    asset: str
    endpoint: str
    job: str


def cycle_names(ticker: str, instance_id: str, version: int | None, suffix: str | None = None) -> CycleNames:
    """The cycle's names in `version`: `NAMING_VERSION` (today's, one-to-one), or None / 1 for the lossy
    naming of the code before it (`legacy_names`: a replayed cycle started by that code keeps its names).
    `suffix` as `endpoint_name`'s."""
    if version is None or version == LEGACY_NAMING_VERSION:
        return legacy_names(ticker, instance_id, suffix)
    if version != NAMING_VERSION:
        raise NamingError(f"naming_version={version!r}: send {NAMING_VERSION} (or omit it: the older naming)")
    return CycleNames(
        experiment=experiment_name(ticker),
        model=model_name(ticker),
        asset=asset_name(ticker),
        endpoint=endpoint_name(ticker, suffix),
        job=job_name(instance_id),
    )


def legacy_names(ticker: str, instance_id: str, suffix: str | None = None) -> CycleNames:
    """The names the code before one-to-one naming derived (naming version 1). Lossy: BRK.B and BRK-B, or
    ^GSPC and GSPC, share them. Use ONLY through `cycle_names` for a cycle whose input has no
    `naming_version` (started by that code): it must finish with the names it started with."""
    slug = re.sub(r"[^a-z0-9-]", "-", validate_ticker(ticker).lower()).strip("-") or "x"
    asset_slug = re.sub(r"[^a-z0-9]+", "-", ticker.lower()).strip("-") or "x"
    suffix = endpoint_suffix() if suffix is None else suffix
    tail = "-forecast" + (f"-{suffix}" if suffix else "")
    endpoint_slug = slug if slug[0].isalpha() else f"t{slug}"
    safe_id = re.sub(r"[^a-zA-Z0-9_-]", "-", instance_id).strip("-_")
    return CycleNames(
        experiment=f"retrain-{slug}",
        model=f"{slug}-forecaster",
        asset=f"{asset_slug}-daily",
        endpoint=endpoint_slug[: ENDPOINT_NAME_MAX - len(tail)].rstrip("-") + tail,
        job=f"{safe_id}-train"[:255],
    )


# ---- serving targets: which endpoint serves which ticker (docs/architecture.md, "Fleet serving") ----------
# RETRAIN_ENDPOINTS names the layout: empty or "shared" (every ticker on one endpoint), "per-ticker" (an
# endpoint of its own per ticker: the names the code before endpoint groups used), or groups
# "tech=MSFT,AAPL;energy=XOM" (the tickers it lists on their group's endpoint, every other ticker on the
# shared one). Adding a ticker never moves another: a ticker's endpoint depends on its own entry only.
SHARED_GROUP = "fleet"
PER_TICKER = "per-ticker"
GROUP_NAME_MAX = 12
_GROUP_RE = re.compile(rf"[a-z][a-z0-9]{{0,{GROUP_NAME_MAX - 1}}}")
# Group endpoints end in "-models[-suffix]", ticker endpoints in "-forecast[-suffix]": the two never meet.
_GROUP_TAIL = "-models"


@dataclass(frozen=True)
class EndpointGroups:
    """The parsed RETRAIN_ENDPOINTS: per-ticker endpoints, or ticker -> group (others: SHARED_GROUP)."""

    per_ticker: bool = False
    groups: tuple[tuple[str, str], ...] = ()  # (ticker, group), sorted

    def group_of(self, ticker: str) -> str | None:
        """The ticker's group; None in the per-ticker layout."""
        if self.per_ticker:
            return None
        return dict(self.groups).get(validate_ticker(ticker), SHARED_GROUP)


def parse_endpoint_groups(spec: str | None) -> EndpointGroups:
    """RETRAIN_ENDPOINTS -> EndpointGroups; a bad spec is a NamingError saying what to send."""
    text = (spec or "").strip()
    if text in ("", "shared"):
        return EndpointGroups()
    if text == PER_TICKER:
        return EndpointGroups(per_ticker=True)
    example = "send 'shared', 'per-ticker', or groups such as 'tech=MSFT,AAPL;energy=XOM'"
    placed: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        group, sep, tickers = part.partition("=")
        group = group.strip()
        if not sep or not _GROUP_RE.fullmatch(group):
            raise NamingError(
                f"RETRAIN_ENDPOINTS: {part!r} is not GROUP=TICKER,...; a group name is 1 to {GROUP_NAME_MAX} "
                f"lower-case letters or digits, a letter first; {example}"
            )
        for raw in filter(None, (t.strip() for t in tickers.split(","))):
            ticker = validate_ticker(raw)
            if placed.get(ticker, group) != group:
                raise NamingError(
                    f"RETRAIN_ENDPOINTS: {ticker} is in two groups ({placed[ticker]}, {group}); one each"
                )
            placed[ticker] = group
    if not placed:
        raise NamingError(f"RETRAIN_ENDPOINTS={text!r} names no ticker; {example}")
    return EndpointGroups(groups=tuple(sorted(placed.items())))


def group_endpoint_name(group: str, suffix: str | None = None) -> str:
    """A group's endpoint: `<group>-models[-<suffix>]` (never a ticker endpoint's `-forecast` name)."""
    if not _GROUP_RE.fullmatch(group):
        raise NamingError(f"endpoint group {group!r}: 1 to {GROUP_NAME_MAX} lower-case letters or digits")
    suffix = endpoint_suffix() if suffix is None else suffix
    if suffix and not _SUFFIX_RE.fullmatch(suffix):
        raise NamingError(
            f"endpoint suffix {suffix!r}: use 1 to {ENDPOINT_SUFFIX_MAX} lower-case letters or digits"
        )
    return group + _GROUP_TAIL + (f"-{suffix}" if suffix else "")


def serving_target(ticker: str, groups: EndpointGroups, suffix: str | None = None) -> str:
    """The endpoint that serves `ticker` in this layout (`suffix` as `endpoint_name`'s)."""
    group = groups.group_of(ticker)
    return endpoint_name(ticker, suffix) if group is None else group_endpoint_name(group, suffix)


def is_endpoint_name(name: str) -> bool:
    """Whether `name` keeps Azure's rule for online endpoint names (3 to 32 characters, a letter first)."""
    return bool(_ENDPOINT_RE.fullmatch(name))


def rollout_instance_prefix(endpoint: str) -> str:
    """The instance ids of an endpoint's rollouts start with this (then their UTC start time)."""
    return f"rollout-{endpoint}-"


def bundle_name(endpoint: str) -> str:
    """The registered name of the bundles an endpoint serves (one version per rollout)."""
    return f"{endpoint}-bundle"
