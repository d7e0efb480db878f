"""Endpoint groups (RETRAIN_ENDPOINTS): which endpoint serves which ticker, computed from the settings."""

import pytest

from retrain import naming
from retrain.naming import NamingError, parse_endpoint_groups, serving_target


def test_the_default_layout_puts_every_ticker_on_one_shared_endpoint() -> None:
    groups = parse_endpoint_groups("")
    assert parse_endpoint_groups("shared") == groups
    targets = {serving_target(t, groups, suffix="ab12cd") for t in ("MSFT", "BRK.B", "^GSPC")}
    assert targets == {"fleet-models-ab12cd"}


def test_per_ticker_keeps_the_names_of_the_one_endpoint_per_ticker_layout() -> None:
    groups = parse_endpoint_groups("per-ticker")
    for ticker in ("MSFT", "BRK.B", "BRK-B"):
        assert serving_target(ticker, groups, suffix="") == naming.endpoint_name(ticker, "")


def test_groups_place_their_tickers_and_every_other_ticker_stays_shared() -> None:
    groups = parse_endpoint_groups("tech=MSFT, aapl ; energy=XOM")
    assert serving_target("AAPL", groups, suffix="") == "tech-models"
    assert serving_target("XOM", groups, suffix="") == "energy-models"
    assert serving_target("IBM", groups, suffix="") == "fleet-models"
    # Adding a ticker to a group never moves another ticker.
    more = parse_endpoint_groups("tech=MSFT,AAPL,NVDA;energy=XOM")
    for ticker in ("MSFT", "AAPL", "XOM", "IBM"):
        assert serving_target(ticker, more, suffix="") == serving_target(ticker, groups, suffix="")


def test_group_endpoints_never_take_a_ticker_endpoints_name() -> None:
    # A ticker called FLEET would have "fleet-forecast"; the shared group's endpoint is "fleet-models".
    assert naming.endpoint_name("FLEET", "") != naming.group_endpoint_name("fleet", "")
    assert naming.bundle_name("fleet-models-ab12cd") == "fleet-models-ab12cd-bundle"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tech", "is not GROUP=TICKER"),
        ("Tech=MSFT", "lower-case"),
        ("tech=MSFT;energy=MSFT", "in two groups"),
        ("tech=", "names no ticker"),
        ("tech=MS FT", "ticker"),
        ("averyveryverylonggroup=MSFT", "1 to 12"),
    ],
)
def test_a_bad_layout_says_what_to_send(spec: str, says: str) -> None:
    with pytest.raises(NamingError, match=says):
        parse_endpoint_groups(spec)
