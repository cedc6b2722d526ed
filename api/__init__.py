"""The HTTP API: definitions, executions, keys, health. ``api.app:app`` is the ASGI application."""
