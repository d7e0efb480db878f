"""The Azure ML adapter of the `MLPlatform` port (azure-ai-ml). Imported lazily: only the azureml
platform loads the SDK."""

from __future__ import annotations

from typing import Any

__all__ = ["AzureMLPlatform"]


def __getattr__(name: str) -> Any:
    if name == "AzureMLPlatform":
        from retrain.azureml.platform import AzureMLPlatform

        return AzureMLPlatform
    raise AttributeError(name)
