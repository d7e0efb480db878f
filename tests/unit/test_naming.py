"""Instance ids, job names and Azure names computed by `retrain.naming`."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from retrain import market_data, naming


def test_scheduled_id_is_one_per_iso_week():
    monday = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    assert naming.scheduled_instance_id("MSFT", monday) == "retrain-msft-2026w48"
    # Every moment of the same ISO week gives the same id; the next week another one.
    for hours in (0, 30, 24 * 6 + 22):
        assert naming.scheduled_instance_id("MSFT", monday + timedelta(hours=hours)) == "retrain-msft-2026w48"
    assert naming.scheduled_instance_id("MSFT", monday + timedelta(days=7)) == "retrain-msft-2026w49"
    assert naming.scheduled_instance_id("AAPL", monday) == "retrain-aapl-2026w48"


def test_iso_year_not_calendar_year():
    # 2027-01-01 is a Friday: ISO week 53 of 2026.
    assert naming.scheduled_instance_id("MSFT", datetime(2027, 1, 1, tzinfo=UTC)) == "retrain-msft-2026w53"


def test_times_are_taken_in_utc():
    # Monday 00:30 in UTC+2 is still Sunday in UTC: the previous ISO week.
    local = datetime(2026, 11, 23, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert naming.scheduled_instance_id("MSFT", local) == "retrain-msft-2026w47"
    assert naming.adhoc_instance_id("MSFT", local) == "retrain-msft-20261122t223000z"


@pytest.mark.parametrize("ticker", ["MSFT", "BRK-B", "BRK.B", "^GSPC", "EURUSD=X", "A", "3M"])
def test_instance_ids_parse_back_to_their_ticker(ticker):
    at = datetime(2026, 11, 24, 23, 14, 5, tzinfo=UTC)
    for instance_id, kind in (
        (naming.scheduled_instance_id(ticker, at), "scheduled"),
        (naming.adhoc_instance_id(ticker, at), "adhoc"),
    ):
        parsed = naming.parse_instance_id(instance_id)
        assert parsed is not None and parsed.ticker == ticker and parsed.kind == kind
        assert instance_id.startswith(naming.ticker_instance_prefix(ticker))
        # URL-path friendly: no characters that need escaping in /instances/<id>.
        assert re.fullmatch(r"[a-z0-9._~-]+", instance_id), instance_id


def test_prefix_sharing_tickers_are_told_apart():
    at = datetime(2026, 11, 24, tzinfo=UTC)
    brk_b = naming.adhoc_instance_id("BRK-B", at)
    assert brk_b.startswith(naming.ticker_instance_prefix("BRK"))  # why the prefix alone is not enough
    assert not naming.is_instance_of(brk_b, "BRK")
    assert naming.is_instance_of(brk_b, "BRK-B")
    assert naming.is_instance_of(naming.scheduled_instance_id("BRK", at), "brk")


@pytest.mark.parametrize(
    "foreign",
    [
        "",
        "retrain-msft",
        "retrain-msft-2026w4",
        "other-msft-2026w48",
        "retrain-msft-20261124t231405",
        "retrain-MSFT-2026w48",
        "retrain-msft-2026w48\n",  # `$` matched before a trailing newline
        "abc",
    ],
)
def test_foreign_ids_are_not_parsed(foreign):
    assert naming.parse_instance_id(foreign) is None
    assert not naming.is_instance_of(foreign, "MSFT")


def test_job_name_follows_the_instance_id_and_is_valid_for_azure():
    assert naming.job_name("retrain-msft-2026w48") == "retrain-msft-2026w48-train"
    assert naming.job_name("retrain-msft-2026w48") == naming.job_name("retrain-msft-2026w48")
    assert naming.job_name("retrain-msft-2026w48") != naming.job_name("retrain-msft-2026w49")
    odd = naming.job_name(naming.adhoc_instance_id("^GSPC", datetime(2026, 1, 1, tzinfo=UTC)))
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]*", odd), odd


@pytest.mark.parametrize("ticker", ["MSFT", "BRK.B", "^GSPC", "3M", "EURUSD=X"])
def test_azure_resource_names(ticker):
    endpoint = naming.endpoint_name(ticker)
    assert re.fullmatch(r"[a-z][a-z0-9-]{1,30}[a-z0-9]", endpoint), endpoint
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", naming.model_name(ticker))
    assert naming.experiment_name(ticker).startswith("retrain-")


# ------------------------------------------------------------------------------ one name per ticker

SEPARATORS = ".^=-"


def _generated_tickers(count: int, seed: int = 20) -> list[str]:
    """Random valid tickers plus the families that collide under a naive slug: every separator between
    the same letters, leading/trailing/doubled separators, digit-first and its `T` twin."""
    import random

    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + SEPARATORS
    tickers = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 15))) for _ in range(count)}
    for base in ("BRK", "GSPC", "EURUSD", "ABCDEFGHIJKLMN", "3M", "T3M", "X", "A"):
        for sep in SEPARATORS:
            tickers |= {f"{base}{sep}B", f"{sep}{base}", f"{base}{sep}", f"{base}{sep}{sep}B"}
    tickers |= {"3M", "T3M", "-", ".", "^", "=", "X", "T", "ABCDEFGHIJKLMNO", "ABCDEFGH.IJKLMNO"}
    return sorted(t for t in tickers if len(t) <= 15)


DERIVED = {
    "endpoint": lambda t: naming.endpoint_name(t, ""),
    "endpoint with suffix": lambda t: naming.endpoint_name(t, "abc123"),
    "model": naming.model_name,
    "data asset": lambda t: market_data.asset_name(t),
    "experiment": naming.experiment_name,
    "scheduled id": lambda t: naming.scheduled_instance_id(t, datetime(2026, 11, 24, tzinfo=UTC)),
    "adhoc id": lambda t: naming.adhoc_instance_id(t, datetime(2026, 11, 24, tzinfo=UTC)),
    "scheduled job": lambda t: naming.job_name(
        naming.scheduled_instance_id(t, datetime(2026, 11, 24, tzinfo=UTC))
    ),
    "adhoc job": lambda t: naming.job_name(naming.adhoc_instance_id(t, datetime(2026, 11, 24, tzinfo=UTC))),
}


@pytest.mark.parametrize("kind", sorted(DERIVED))
def test_no_two_tickers_share_a_derived_name(kind):
    derive = DERIVED[kind]
    seen: dict[str, str] = {}
    for ticker in _generated_tickers(20000):
        name = derive(ticker)
        assert seen.setdefault(name, ticker) == ticker, f"{kind}: {ticker} and {seen[name]} share {name}"
    assert len(seen) > 20000 * 0.9  # the generator did produce many distinct tickers


def test_names_stay_valid_for_azure_for_every_ticker():
    for ticker in _generated_tickers(5000):
        for suffix in ("", "abc123"):
            name = naming.endpoint_name(ticker, suffix)
            assert re.fullmatch(r"[a-z][a-z0-9-]{1,30}[a-z0-9]", name), (ticker, name)
        for name in (
            naming.model_name(ticker),
            market_data.asset_name(ticker),
            naming.experiment_name(ticker),
        ):
            assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name) and len(name) <= 64, (ticker, name)
        job = naming.job_name(naming.adhoc_instance_id(ticker, datetime(2026, 1, 1, tzinfo=UTC)))
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]*", job) and len(job) <= 255, (ticker, job)


def test_lossless_tickers_keep_their_names_and_lossy_ones_carry_a_stable_hash():
    # Existing deployments keep their names: a ticker spelt in letters, digits and single hyphens.
    assert naming.endpoint_name("BRK-B", "") == "brk-b-forecast"
    assert naming.model_name("MSFT") == "msft-forecaster"
    assert market_data.asset_name("MSFT") == "msft-daily"
    assert naming.experiment_name("BRK-B") == "retrain-brk-b"
    assert naming.job_name("retrain-msft-2026w48") == "retrain-msft-2026w48-train"
    # BRK.B is no longer BRK-B: readable part, "--", six hex digits of the ticker's SHA-256.
    digest = hashlib.sha256(b"BRK.B").hexdigest()[:6]
    assert naming.endpoint_name("BRK.B", "") == f"brk-b--{digest}-forecast"
    assert naming.endpoint_name("brk.b ", "") == naming.endpoint_name("BRK.B", "")  # canonical ticker
    assert naming.model_name("^GSPC") != naming.model_name("GSPC")
    assert market_data.asset_name("^GSPC") != market_data.asset_name("GSPC")
    at = datetime(2026, 11, 24, 23, 14, 5, tzinfo=UTC)
    assert naming.job_name(naming.adhoc_instance_id("BRK.B", at)) != naming.job_name(
        naming.adhoc_instance_id("BRK-B", at)
    )


@pytest.mark.parametrize(
    ("ticker", "old", "new"),
    [
        ("BRK.B", ("brk-b-forecaster", "brk-b-daily", "brk-b-forecast"), ("brk-b--0907ab-forecaster",)),
        ("^GSPC", ("gspc-forecaster", "gspc-daily", "gspc-forecast"), ("gspc--df302d-forecaster",)),
        ("MSFT", ("msft-forecaster", "msft-daily", "msft-forecast"), ("msft-forecaster",)),
    ],
)
def test_a_cycle_without_naming_version_keeps_the_older_lossy_names(ticker, old, new):
    instance_id = naming.adhoc_instance_id(ticker, datetime(2026, 1, 5, tzinfo=UTC))
    legacy = naming.cycle_names(ticker, instance_id, None, suffix="")
    assert (legacy.model, legacy.asset, legacy.endpoint) == old  # what the code before b74fe09 derived
    assert naming.cycle_names(ticker, instance_id, 1, suffix="") == legacy
    current = naming.cycle_names(ticker, instance_id, naming.NAMING_VERSION, suffix="")
    assert current.model == new[0] == naming.model_name(ticker)
    assert current.endpoint == naming.endpoint_name(ticker, "") and current.job == naming.job_name(
        instance_id
    )
    with pytest.raises(naming.NamingError, match="naming_version=7"):
        naming.cycle_names(ticker, instance_id, 7, suffix="")


def test_fleet_ids_batch_ids_and_cycle_ids_parse_back_and_never_meet():
    at = datetime(2026, 12, 6, 10, 15, 0, 123456, tzinfo=UTC)
    adhoc, weekly = naming.fleet_instance_id(at), naming.scheduled_fleet_instance_id(at)
    assert (adhoc, weekly) == ("fleet-20261206t101500123456z", "fleet-2026w49")
    assert naming.scheduled_fleet_instance_id(at - timedelta(days=6)) == weekly  # the same ISO week (Mon-Sun)
    assert naming.parse_fleet_instance_id(adhoc) == naming.ParsedFleetId("adhoc", "20261206t101500123456z")
    assert naming.parse_fleet_instance_id(weekly) == naming.ParsedFleetId("scheduled", "2026w49")
    batch = naming.batch_instance_id(adhoc, 7)
    assert batch == f"{adhoc}-b0007" and naming.parse_batch_instance_id(batch) == (adhoc, 7)
    assert naming.job_name(batch) == f"{batch}-train"  # a batch's job, named from its id as a cycle's
    # A batch is not a fleet, a fleet not a batch, and neither is a cycle (nor the fleet-models endpoint).
    cycle = naming.adhoc_instance_id("MSFT", at)
    assert naming.parse_fleet_instance_id(batch) is None and naming.parse_batch_instance_id(adhoc) is None
    for foreign in (cycle, "fleet-models", "fleet-2026w49-b1", "fleet-2026w49x", "rollout-fleet-models-1"):
        assert (
            naming.parse_fleet_instance_id(foreign) is None
            and naming.parse_batch_instance_id(foreign) is None
        )
    assert naming.parse_instance_id(adhoc) is None and naming.parse_instance_id(batch) is None
    assert all(naming.is_our_instance_id(i) for i in (adhoc, weekly, batch, cycle))
    assert not naming.is_our_instance_id("fleet-models")
    with pytest.raises(naming.NamingError, match="not a fleet id"):
        naming.batch_instance_id(cycle, 0)
