"""``python -m examples.demo_service --port 8100``: serve the demo supplier and marketplace on loopback."""

from __future__ import annotations

import argparse

import uvicorn

from examples.demo_service.app import DemoState, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--no-rate-limit", action="store_true", help="do not answer the first listing call with 429"
    )
    args = parser.parse_args()
    uvicorn.run(create_app(DemoState(rate_limit=not args.no_rate_limit)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
