"""bench/azure_training_costs.py: the arithmetic of the training cost table (jobs and node-minutes, batched
against one job per ticker) on fixed times, the defaults it records, and bad input."""

from __future__ import annotations

import pytest

from bench import azure_training_costs as costs

# 2 s a ticker and 30 s of set-up a job on a dedicated node (wall and CPU: the node takes the shorter).
RIDGE = costs.Measurement("ridge", 3, per_ticker_s=2.5, per_ticker_cpu_s=2.0, setup_s=30.0, setup_cpu_s=45.0)


def test_batched_and_per_ticker_jobs_and_node_minutes_on_a_small_case() -> None:
    inputs = costs.Inputs(batch_size=4, job_overhead_minutes=1.5)
    rows = {(r.tickers, r.mode): r for r in costs.table([10], [RIDGE], inputs)}
    batched, single = rows[(10, "batched (4 a job)")], rows[(10, "one job per ticker")]
    assert (batched.jobs, single.jobs) == (3, 10)  # ceil(10 / 4)
    # jobs x (90 s start-up + 30 s set-up) + 10 tickers x 2 s
    assert batched.startup_minutes == pytest.approx(3 * 120 / 60)
    assert batched.node_minutes == pytest.approx((3 * 120 + 20) / 60)
    assert single.node_minutes == pytest.approx((10 * 120 + 20) / 60)
    assert single.per_ticker_minutes == pytest.approx(122 / 60)
    table = costs.markdown(list(rows.values()), [RIDGE], inputs)
    assert "| 10 | ridge | batched (4 a job) | 3 | 6.3 | 6.0 | 0.63 |" in table
    assert "**1.5 min, an assumption**" in table  # the start-up used is printed, and said to be assumed
    assert "ridge: 2.00 s a ticker (wall 2.50 s, CPU 2.00 s), set-up 30.0 s a job" in table


def test_the_defaults_are_the_fleet_batch_and_an_overhead_marked_as_assumed() -> None:
    recorded = costs.DEFAULT_SETTINGS(costs.BLOCK)
    assert recorded["batch_size"] == 50 and recorded["tickers"] == [10, 100, 500]
    assert recorded["families"] == ["ridge", "lstm"] and recorded["job_overhead_minutes"] == 3.0
    written = costs.settings_of(costs.build_parser().parse_args([]))  # the block also records these
    assert (written["RETRAIN_MAX_EPOCHS"], written["RETRAIN_LOOKBACK_DAYS"]) == ("30", "1825")
    assert "ASSUMPTION" in costs.__doc__ and "not a Microsoft" in costs.__doc__


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--tickers", "ten"], "whole numbers"),
        (["--batch-size", "0"], "--batch-size"),
        (["--job-overhead-minutes", "-1"], "--job-overhead-minutes"),
        (["--families", "xgboost"], "unknown trainer 'xgboost'"),
    ],
)
def test_bad_input_says_what_to_send(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        costs.main(argv)
    assert says in capsys.readouterr().err
