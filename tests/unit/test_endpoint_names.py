"""Online endpoint names: unique per Azure region, so in Azure they carry a suffix that is stable per
workspace (derived from its ARM id, or RETRAIN_ENDPOINT_SUFFIX), within Azure's 3-32 character rule."""

from __future__ import annotations

import re

import pytest

from retrain import naming

AZURE_RULE = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]")
WORKSPACE = {
    "RETRAIN_PLATFORM": "azureml",
    "AZURE_SUBSCRIPTION_ID": "00000000-1111-2222-3333-444444444444",
    "AZURE_RESOURCE_GROUP": "rg-retrain",
    "AZUREML_WORKSPACE_NAME": "mlw-retrain",
}
TICKERS = ["MSFT", "BRK-B", "BRK.B", "^GSPC", "3M", "EURUSD=X", "A", "ABCDEFGHIJKLMNO", "123456789012345"]


def test_azure_names_carry_a_suffix_stable_per_workspace():
    suffix = naming.endpoint_suffix(WORKSPACE)
    assert re.fullmatch(r"[0-9a-f]{6}", suffix)
    assert naming.endpoint_suffix(dict(WORKSPACE)) == suffix  # stable
    # ARM ids are case-insensitive: the same workspace spelled otherwise is the same workspace.
    shouty = {**WORKSPACE, "AZURE_RESOURCE_GROUP": "RG-Retrain"}
    assert naming.endpoint_suffix(shouty) == suffix
    for key, other in (
        ("AZURE_SUBSCRIPTION_ID", "99999999-1111-2222-3333-444444444444"),
        ("AZURE_RESOURCE_GROUP", "rg-other"),
        ("AZUREML_WORKSPACE_NAME", "mlw-other"),
    ):
        assert naming.endpoint_suffix({**WORKSPACE, key: other}) != suffix, key
    assert naming.endpoint_name("MSFT", suffix) == f"msft-forecast-{suffix}"


def test_explicit_suffix_wins_and_bad_ones_say_what_to_send():
    assert naming.endpoint_suffix({**WORKSPACE, "RETRAIN_ENDPOINT_SUFFIX": "prod1"}) == "prod1"
    assert naming.endpoint_suffix({"RETRAIN_PLATFORM": "local", "RETRAIN_ENDPOINT_SUFFIX": "x"}) == "x"
    for bad in ("Prod", "p-1", "toolong7", "é"):
        with pytest.raises(naming.NamingError, match="1 to 6 lower-case letters or digits"):
            naming.endpoint_suffix({**WORKSPACE, "RETRAIN_ENDPOINT_SUFFIX": bad})
        with pytest.raises(naming.NamingError, match="1 to 6 lower-case letters or digits"):
            naming.endpoint_name("MSFT", bad)


def test_local_platform_keeps_the_plain_name():
    assert naming.endpoint_suffix({"RETRAIN_PLATFORM": "local"}) == ""
    assert naming.endpoint_suffix({}) == ""  # RETRAIN_PLATFORM defaults to local
    assert naming.endpoint_name("MSFT", "") == "msft-forecast"


def test_azureml_without_workspace_settings_is_a_clear_error():
    with pytest.raises(naming.NamingError, match="AZURE_SUBSCRIPTION_ID.*RETRAIN_ENDPOINT_SUFFIX"):
        naming.endpoint_suffix({"RETRAIN_PLATFORM": "azureml"})


def test_endpoint_name_reads_the_settings_when_no_suffix_is_given(monkeypatch):
    for key, value in WORKSPACE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RETRAIN_ENDPOINT_SUFFIX", raising=False)
    assert naming.endpoint_name("MSFT") == f"msft-forecast-{naming.endpoint_suffix(WORKSPACE)}"
    monkeypatch.setenv("RETRAIN_ENDPOINT_SUFFIX", "abc")
    assert naming.endpoint_name("MSFT") == "msft-forecast-abc"


@pytest.mark.parametrize("suffix", ["", "a", "abc123"])
def test_every_ticker_gives_a_valid_distinct_name(suffix):
    names = {naming.endpoint_name(ticker, suffix) for ticker in TICKERS}
    assert len(names) == len(TICKERS)  # BRK.B and BRK-B too: the lossy one carries a hash
    for name in names:
        assert AZURE_RULE.fullmatch(name) and 3 <= len(name) <= 32, name
        assert name.endswith(f"-{suffix}" if suffix else "-forecast"), name
    # The longest ticker slug (15 characters) still fits with the longest suffix, untruncated.
    assert naming.endpoint_name("ABCDEFGHIJKLMNO", "abc123") == "abcdefghijklmno-forecast-abc123"
    # A digit-first ticker gets a letter in front, which makes it lossy (T3M is "t3m"): it carries a hash.
    assert re.fullmatch(r"t3m--[0-9a-f]{6}-forecast.*", naming.endpoint_name("3M", suffix))
    assert naming.endpoint_name("T3M", suffix).startswith("t3m-forecast")
