"""The demo service: a supplier API and a marketplace API in one small FastAPI app, state in memory.

Supplier (wants ``X-Api-Key: demo-supplier-key``):

- ``GET /supplier/products?page=&per_page=`` → ``{products, page, per_page, total}``; past the end an empty
  page. Three records are deliberately bad (no sku, a negative cost price, an empty name) and some fields
  are messy (spaces, case, a stock count as text) for the templates to validate and normalise.
- ``GET /supplier/products/{sku}`` → one product, 404 when unknown.
- ``GET /supplier/stock?page=&per_page=`` → ``{stock: [{sku, qty_available, warehouse}]}``, as messy.

Marketplace (wants ``Authorization: Bearer demo-marketplace-token``); writes answer ``{results: [...]}``,
one entry per record written, as batch APIs do:

- ``POST /marketplace/listings`` ``{sku, title, price, quantity, category?, image_url?}`` → 201 with the
  listing id (the same sku again answers 200 with the listing it has). The very first call answers 429
  with ``Retry-After: 1`` to show rate limiting.
- ``PUT /marketplace/listings/{listing_id}/inventory`` ``{quantity}`` → the new quantity; 404 unknown.
- ``GET /marketplace/orders?status=new`` → ``{orders: [...]}``.
- ``POST /marketplace/orders/{order_id}/ship`` ``{carrier, tracking_number?}`` → the shipment.

``GET /_state`` shows everything the service received and holds (listings, inventory updates, shipments,
orders, calls per endpoint, rate-limited calls); ``POST /_reset`` starts over; ``GET /health`` answers
``{status: ok}``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

SUPPLIER_KEY = "demo-supplier-key"
"""What the supplier API wants in ``X-Api-Key``."""
MARKETPLACE_TOKEN = "demo-marketplace-token"
"""What the marketplace API wants as ``Authorization: Bearer ...``."""

_IMG = "https://img.example/products"

SUPPLIER_PRODUCTS: list[dict[str, Any]] = [
    {"sku": "KIT-001", "name": "Chef's Knife 8in", "cost_price": 18.5, "stock": 40,
     "category": "kitchen", "image_url": f"{_IMG}/kit-001.jpg",
     "description": "Forged steel chef knife for the kitchen"},
    {"sku": " kit-002", "name": "  Cast Iron   Skillet ", "cost_price": 22.0, "stock": "12",
     "category": " Kitchen ", "image_url": f"{_IMG}/kit-002.jpg",
     "description": "Pre-seasoned cast iron pan, 26 cm"},
    {"sku": "KIT-003", "name": "Electric Kettle 1.7L", "cost_price": 15.75, "stock": 3,
     "category": "", "image_url": f"{_IMG}/kit-003.jpg",
     "description": "Stainless steel kettle, boils water for tea and coffee"},
    {"sku": "GAR-001", "name": "Garden Hose 25m", "cost_price": 19.9, "stock": 25,
     "category": "garden", "image_url": f"{_IMG}/gar-001.jpg",
     "description": "Flexible hose for watering the lawn and plants"},
    {"sku": "GAR-002", "name": "Pruning Shears", "cost_price": 9.4, "stock": 6,
     "category": "garden", "image_url": f"{_IMG}/gar-002.jpg",
     "description": "Bypass shears for plants and shrubs"},
    {"sku": "OFF-001", "name": "Ergonomic Office Chair", "cost_price": 89.0, "stock": 8,
     "category": "office", "image_url": f"{_IMG}/off-001.jpg",
     "description": "Adjustable desk chair with lumbar support"},
    {"sku": "OFF-002", "name": "LED Desk Lamp", "cost_price": 14.2, "stock": 15,
     "category": None, "image_url": f"{_IMG}/off-002.jpg",
     "description": "Dimmable lamp for the desk, office or study"},
    {"name": "Mystery Item", "cost_price": 5.0, "stock": 1, "category": "misc",
     "image_url": f"{_IMG}/mystery.jpg", "description": "No sku: the import must reject it"},
    {"sku": "GAR-003", "name": "Leaf Rake", "cost_price": -4.0, "stock": 10, "category": "garden",
     "image_url": f"{_IMG}/gar-003.jpg", "description": "Negative cost price: the import must reject it"},
    {"sku": "OFF-003", "name": "Notebook A5 (pack of 3)", "cost_price": 4.5, "stock": 120,
     "category": "office", "image_url": None, "description": "Lined notebooks; no picture yet"},
    {"sku": "KIT-004", "name": "Bamboo Cutting Board", "cost_price": 7.8, "stock": 30,
     "category": "kitchen", "image_url": f"{_IMG}/kit-004.jpg",
     "description": "Bamboo board for the kitchen"},
    {"sku": "KIT-005", "name": "", "cost_price": 3.1, "stock": 4, "category": "kitchen",
     "image_url": f"{_IMG}/kit-005.jpg", "description": "Empty name: the import must reject it"},
]  # fmt: skip
"""Twelve records: nine good ones (two of them messy), three the import must reject."""

SUPPLIER_STOCK: list[dict[str, Any]] = [
    {"sku": "kit-001 ", "qty_available": "35", "warehouse": "north"},
    {"sku": "KIT-002", "qty_available": 12, "warehouse": "north"},
    {"sku": "KIT-003", "qty_available": "2", "warehouse": "south"},
    {"sku": "gar-001", "qty_available": 25, "warehouse": "south"},
    {"sku": "GAR-002", "qty_available": 0, "warehouse": "south"},
    {"sku": "OFF-001", "qty_available": 20, "warehouse": "north"},
    {"sku": "OFF-002", "qty_available": "15", "warehouse": "north"},
    {"sku": "OFF-003", "qty_available": 118, "warehouse": "north"},
    {"sku": "KIT-004", "qty_available": 30, "warehouse": "south"},
    {"sku": "XYZ-999", "qty_available": 7, "warehouse": "south"},
]
"""Stock levels: some changed since the import, two low, one sku we never imported."""

MARKETPLACE_ORDERS: list[dict[str, Any]] = [
    {"order_id": "MO-1001", "sku": "KIT-001", "quantity": 2, "total": 59.98,
     "customer": "ada@example.com", "status": "new"},
    {"order_id": "MO-1002", "sku": "OFF-001", "quantity": 10, "total": 1499.9,
     "customer": "procurement@bigcorp.example", "status": "new"},
    {"order_id": "MO-1003", "sku": "GAR-001", "quantity": 1, "total": 29.9,
     "customer": "grace@example.com", "status": "new"},
    {"order_id": "MO-1004", "sku": "KIT-004", "quantity": 0, "total": 0,
     "customer": "nobody@example.com", "status": "new"},
    {"order_id": "MO-1005", "sku": "KIT-003", "quantity": 5, "total": 115.0,
     "customer": "linus@example.com", "status": "new"},
    {"order_id": "MO-0999", "sku": "KIT-001", "quantity": 1, "total": 29.99,
     "customer": "old@example.com", "status": "shipped"},
]  # fmt: skip
"""New orders: a normal one, a big one (needs approval), one with quantity 0, one beyond the stock."""


class DemoState:
    """Everything the service holds and has received; ``snapshot()`` is what ``GET /_state`` shows."""

    def __init__(self, *, rate_limit: bool = True) -> None:
        self.rate_limit = rate_limit
        self.reset()

    def reset(self) -> None:
        self.listings: dict[str, dict[str, Any]] = {}
        self.inventory_updates: list[dict[str, Any]] = []
        self.shipments: list[dict[str, Any]] = []
        self.orders: list[dict[str, Any]] = copy.deepcopy(MARKETPLACE_ORDERS)
        self.calls: dict[str, int] = {}
        self.rate_limited: list[str] = []
        self._next_listing = 5001

    def count(self, endpoint: str) -> int:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        return self.calls[endpoint]

    def new_listing_id(self) -> str:
        listing_id = f"MP-{self._next_listing}"
        self._next_listing += 1
        return listing_id

    def snapshot(self) -> dict[str, Any]:
        return {
            "listings": list(self.listings.values()),
            "inventory_updates": self.inventory_updates,
            "shipments": self.shipments,
            "orders": self.orders,
            "calls": self.calls,
            "rate_limited": self.rate_limited,
        }


class ListingIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    price: float = Field(gt=0)
    quantity: int = Field(ge=0)
    category: str | None = None
    image_url: str | None = None


class InventoryIn(BaseModel):
    quantity: int = Field(ge=0)


class ShipmentIn(BaseModel):
    carrier: str = Field(default="demo-post", min_length=1)
    tracking_number: str | None = None


def _page(rows: list[dict[str, Any]], page: int, per_page: int) -> list[dict[str, Any]]:
    start = (max(page, 1) - 1) * max(per_page, 1)
    return copy.deepcopy(rows[start : start + max(per_page, 1)])


def create_app(state: DemoState | None = None) -> FastAPI:
    """The demo app; pass a :class:`DemoState` to look at it from a test (``app.state.demo`` holds it)."""
    demo = state or DemoState()
    app = FastAPI(title="Conveyor demo supplier and marketplace")
    app.state.demo = demo

    def supplier_auth(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if x_api_key != SUPPLIER_KEY:
            raise _Refused(401, {"error": "supplier API key missing or wrong (X-Api-Key)"})

    def marketplace_auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization != f"Bearer {MARKETPLACE_TOKEN}":
            raise _Refused(401, {"error": "marketplace bearer token missing or wrong"})

    @app.exception_handler(_Refused)
    async def refused(_request: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    supplier = [Depends(supplier_auth)]
    marketplace = [Depends(marketplace_auth)]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_state")
    async def show_state() -> dict[str, Any]:
        return demo.snapshot()

    @app.post("/_reset")
    async def reset() -> dict[str, Any]:
        demo.reset()
        return demo.snapshot()

    @app.get("/supplier/products", dependencies=supplier)
    async def products(page: int = 1, per_page: int = 5) -> dict[str, Any]:
        demo.count("GET /supplier/products")
        rows = _page(SUPPLIER_PRODUCTS, page, per_page)
        return {"products": rows, "page": page, "per_page": per_page, "total": len(SUPPLIER_PRODUCTS)}

    @app.get("/supplier/products/{sku}", dependencies=supplier)
    async def product(sku: str) -> dict[str, Any]:
        demo.count("GET /supplier/products/{sku}")
        for row in SUPPLIER_PRODUCTS:
            if str(row.get("sku", "")).strip().upper() == sku.strip().upper():
                return copy.deepcopy(row)
        raise _Refused(404, {"error": f"no product {sku}"})

    @app.get("/supplier/stock", dependencies=supplier)
    async def stock(page: int = 1, per_page: int = 5) -> dict[str, Any]:
        demo.count("GET /supplier/stock")
        return {"stock": _page(SUPPLIER_STOCK, page, per_page), "page": page}

    @app.post("/marketplace/listings", dependencies=marketplace, status_code=201)
    async def create_listing(listing: ListingIn) -> Any:
        if demo.count("POST /marketplace/listings") == 1 and demo.rate_limit:
            demo.rate_limited.append("POST /marketplace/listings")
            raise _Refused(429, {"error": "slow down"}, {"Retry-After": "1"})
        for existing in demo.listings.values():
            if existing["sku"] == listing.sku:
                return JSONResponse({"results": [existing]}, status_code=200)
        record = {"listing_id": demo.new_listing_id(), "status": "active", **listing.model_dump()}
        demo.listings[record["listing_id"]] = record
        return {"results": [record]}

    @app.put("/marketplace/listings/{listing_id}/inventory", dependencies=marketplace)
    async def update_inventory(listing_id: str, body: InventoryIn) -> dict[str, Any]:
        demo.count("PUT /marketplace/listings/{id}/inventory")
        listing = demo.listings.get(listing_id)
        if listing is None:
            raise _Refused(404, {"error": f"no listing {listing_id}"})
        listing["quantity"] = body.quantity
        update = {"listing_id": listing_id, "sku": listing["sku"], "quantity": body.quantity}
        demo.inventory_updates.append(update)
        return {"results": [update]}

    @app.get("/marketplace/orders", dependencies=marketplace)
    async def orders(status: str | None = None) -> dict[str, Any]:
        demo.count("GET /marketplace/orders")
        return {"orders": [copy.deepcopy(o) for o in demo.orders if status in (None, o["status"])]}

    @app.post("/marketplace/orders/{order_id}/ship", dependencies=marketplace)
    async def ship(order_id: str, body: ShipmentIn) -> dict[str, Any]:
        demo.count("POST /marketplace/orders/{id}/ship")
        order = next((o for o in demo.orders if o["order_id"] == order_id), None)
        if order is None:
            raise _Refused(404, {"error": f"no order {order_id}"})
        for shipment in demo.shipments:
            if shipment["order_id"] == order_id:
                return {"results": [shipment]}  # shipping twice (a retried call) changes nothing
        shipment = {
            "order_id": order_id,
            "status": "shipped",
            "carrier": body.carrier,
            "tracking_number": body.tracking_number or f"TRK-{order_id}",
        }
        order["status"] = "shipped"
        demo.shipments.append(shipment)
        return {"results": [shipment]}

    return app


class _Refused(Exception):
    """An error answer: ``status`` with a JSON ``body`` (and headers such as Retry-After)."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers
