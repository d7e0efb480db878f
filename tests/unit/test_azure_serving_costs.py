"""bench/azure_serving_costs.py: the arithmetic of the Azure cost and quota table on a small case, the
flagging of a layout over a quota, and the documented defaults it records."""

from __future__ import annotations

import pytest

from bench import azure_serving_costs as costs


def test_a_small_case_counts_endpoints_deployments_vcpus_and_hours() -> None:
    # 5 tickers, groups of 2 -> 3 endpoints; 2 instances per deployment; 8 vCPUs; 10 % upgrade reserve.
    inputs = costs.Inputs(
        vcpu_quota=1000,
        vcpus_per_instance=8,
        upgrade_reserve=0.1,
        instances_per_deployment=2,
        hours_per_month=336.0,  # two weeks
        swap_hours_per_week=3.0,
        hourly_price=0.5,
    )
    rows = {r.layout: r for r in costs.table([5], ["per-ticker", "shared", "groups of 2"], inputs)}

    assert {name: r.endpoints for name, r in rows.items()} == {"per-ticker": 5, "shared": 1, "groups of 2": 3}
    groups = rows["groups of 2"]
    assert (groups.deployments, groups.peak_deployments, groups.peak_per_endpoint) == (3, 6, 2)
    assert (groups.instances, groups.peak_instances) == (6, 12)
    # ceil(1.1 x 2) = 3 instances of quota per deployment, 8 vCPUs each, 6 deployments at the peak
    assert groups.peak_vcpu_quota == 6 * 3 * 8
    # 3 endpoints x 2 instances x (336 h + 3 h a week x 2 weeks)
    assert groups.instance_hours == pytest.approx(3 * 2 * (336 + 6))
    assert groups.monthly_cost(inputs) == pytest.approx(3 * 2 * 342 * 0.5)
    assert groups.over == ()
    assert costs.Row.monthly_cost(groups, costs.Inputs()) is None  # no price, no cost


def test_the_upgrade_reserve_rounds_up_per_deployment() -> None:
    # The documented example: 10 DS3_v2 instances need quota for 12 x 4 = 48 cores (one deployment, steady).
    row = costs.row("shared", 1, costs.Inputs(instances_per_deployment=10, vcpu_quota=10_000))
    assert row.peak_vcpu_quota == 2 * 48
    assert costs.row("shared", 1, costs.Inputs()).peak_vcpu_quota == 2 * 2 * 4  # ceil(1.2 x 1) = 2


def test_a_layout_over_a_quota_is_flagged_in_the_table() -> None:
    inputs = costs.Inputs(endpoint_quota=3, deployment_quota=7, vcpu_quota=40)
    rows = {r.layout: r for r in costs.table([4], ["per-ticker", "shared"], inputs)}

    assert rows["per-ticker"].over == ("endpoints 4 > 3", "deployments 8 > 7", "vCPUs 64 > 40")
    assert rows["shared"].over == ()  # 1 endpoint, 2 deployments at the peak, 16 vCPUs
    table = costs.markdown(list(rows.values()), inputs)
    (per_ticker,) = [line for line in table.splitlines() if "| per-ticker |" in line]
    (shared,) = [line for line in table.splitlines() if "| shared |" in line]
    assert per_ticker.endswith("| **endpoints 4 > 3; deployments 8 > 7; vCPUs 64 > 40** |")
    assert shared.endswith("| no |")
    assert "USD" not in table  # no price given: instance-hours only


def test_at_the_quota_is_not_over_it() -> None:
    row = costs.row("per-ticker", 100, costs.Inputs(vcpu_quota=10_000))
    assert (row.endpoints, row.peak_deployments, row.over) == (100, 200, ())


def test_the_defaults_are_the_documented_quotas_and_no_price() -> None:
    recorded = costs.DEFAULT_SETTINGS(costs.BLOCK)
    assert recorded["endpoint_quota"] == 100 and recorded["deployment_quota"] == 500
    assert recorded["deployments_per_endpoint_quota"] == 20 and recorded["vcpus_per_instance"] == 4
    assert recorded["hourly_price"] is None
    assert recorded["tickers"] == [1, 10, 100, 500]
    assert recorded["layouts"] == ["per-ticker", "shared", "groups of 100"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--hourly-price", "0"], "--hourly-price"),
        (["--tickers", "ten"], "whole numbers"),
        (["--group-size", "0"], "--group-size"),
    ],
)
def test_bad_input_says_what_to_send(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        costs.main(argv)
    assert says in capsys.readouterr().err


def test_an_unknown_layout_says_what_to_send() -> None:
    with pytest.raises(ValueError, match="'per-ticker', 'shared' or 'groups of G'"):
        costs.endpoint_count("groups of ten", 3)
