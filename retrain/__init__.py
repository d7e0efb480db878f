"""Event-driven retraining for Azure Machine Learning, orchestrated by Azure Durable Functions."""

__version__ = "0.1.0"
