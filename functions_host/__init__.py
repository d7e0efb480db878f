"""A local Azure Functions host for Python v2-model function apps, with Durable Functions.

It serves any function app folder (`function_app.py`, `host.json`, `local.settings.json`) on 127.0.0.1 with
the Azure Functions host's HTTP surface, and runs its orchestrations on a SQLite-backed durable engine that
drives the real `azure-functions-durable` SDK. It knows nothing of the app it serves.
See docs/architecture.md.
"""
