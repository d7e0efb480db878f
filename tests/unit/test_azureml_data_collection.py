"""Every online deployment enables Azure ML's data collector, so model monitoring has production data:
checked on the PUT the real azure-ai-ml SDK sends (recording transport), and read back the way the SDK
reads a deployment from ARM."""

from __future__ import annotations

from azure.ai.ml.entities import ManagedOnlineDeployment

from retrain.azureml.entities import DATA_COLLECTIONS
from retrain.ports import ModelRef


def test_the_deployment_put_enables_every_collection(platform, arm) -> None:
    platform.begin_create_endpoint("retrain-msft")
    platform.begin_deployment("retrain-msft", "blue", ModelRef("msft-forecaster", "1"))
    [put] = arm.find("PUT", r"/onlineEndpoints/retrain-msft/deployments/blue$")
    collector = put.body["properties"]["dataCollector"]
    assert set(collector["collections"]) == {"model_inputs", "model_outputs", "request", "response"}
    assert all(c["dataCollectionMode"].lower() == "enabled" for c in collector["collections"].values())

    found = platform.ml_client.online_deployments.get(name="blue", endpoint_name="retrain-msft")
    assert isinstance(found, ManagedOnlineDeployment)
    assert sorted(found.data_collector.collections) == sorted(DATA_COLLECTIONS)
    assert all(c.enabled == "true" for c in found.data_collector.collections.values())
