"""A demo supplier and marketplace HTTP API for the business templates in ``examples/``.

Run it with ``python -m examples.demo_service --port 8100``; tests serve :func:`create_app` on loopback.
"""

from examples.demo_service.app import MARKETPLACE_TOKEN, SUPPLIER_KEY, DemoState, create_app

__all__ = ["MARKETPLACE_TOKEN", "SUPPLIER_KEY", "DemoState", "create_app"]
