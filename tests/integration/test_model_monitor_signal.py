"""Azure ML model monitoring's signal: the RunStatusChanged event of a monitoring run tagged
azureml_modelmonitor_threshold_breached (as Azure ML tags it: the message naming the signal, no `ticker`
tag) starts a retraining cycle of the ticker the signal is named after (trigger azureml_monitor, the reason
on record) through the real Event Grid webhook of the local host; other monitoring runs are ignored."""

from __future__ import annotations

import time

from retrain.events import model_monitor_breach, parse_events
from retrain.host_client import http_json
from tests.helpers import deliver, grid_event, outcome, wait

# The tag exactly as Azure/azureml-assets' evaluate_metrics_threshold.py writes it; the signal is named
# <ticker>_<signal> (docs/azure.md), and RETRAIN_TICKERS of the host is MSFT.
BREACH = {
    "azureml_modelmonitor_threshold_breached": "The signal 'msft_data-drift' has failed due to one or more "
    "features violating metric thresholds.\nThe feature names and their corresponding computed metric values "
    'violating the threshold are \n[\'{"group":"close","metric_value":0.31}\']\n'
}


def test_a_breached_monitoring_run_starts_one_cycle_with_its_reason(host, memory):
    assert deliver(host, [grid_event("msft-monitor-run-1", "Failed", BREACH)]) in (200, 202)
    deadline = time.monotonic() + 30
    started = []
    while not started and time.monotonic() < deadline:
        code, listing = http_json(
            "GET", f"{host.url}/runtime/webhooks/durabletask/instances?code={host.system_key}"
        )
        started = [i for i in listing if i["name"] == "fleet_orchestrator"]  # a fleet of one
        time.sleep(0.2)
    [instance] = started
    assert (
        instance["input"]["tickers"] == ["MSFT"]
        and instance["input"]["cycle"]["trigger"] == "azureml_monitor"
    )
    status = wait(host, instance["instanceId"])
    assert outcome(status)["status"] == "deployed", status
    model = memory.models["msft-forecaster"][-1]
    assert model.tags["trigger"] == "azureml_monitor"
    assert "Azure ML model monitoring run msft-monitor-run-1" in model.tags["trigger_reason"]
    assert "violating metric thresholds" in model.tags["trigger_reason"]


def test_only_breached_monitoring_runs_count() -> None:
    ours = parse_events([grid_event("j", "Completed", {"orchestration_instance_id": "retrain-msft-x"})])[0]
    quiet = parse_events([grid_event("m", "Completed", {"ticker": "MSFT"})])[0]
    unnamed = parse_events([grid_event("m", "Failed", {"azureml_modelmonitor_threshold_breached": "x"})])[0]
    breach = parse_events([grid_event("m", "Failed", BREACH)])[0]
    assert model_monitor_breach(ours, ["MSFT"]) is None and model_monitor_breach(quiet, ["MSFT"]) is None
    assert model_monitor_breach(unnamed, ["MSFT"]).ticker is None
    assert model_monitor_breach(breach, ["MSFT"]).ticker == "MSFT"
