"""The product pipeline's stages: DISCOVERY → IMAGE_FETCH → ENRICHMENT → DATA_MAPPING → SCORING → INDEXING →
NOTIFICATION, over one product record per item (a JSON upload to the pipeline).

- ``discovery``: normalise the record: ``sku`` (required, upper-case), ``title`` (or ``name``), description,
  brand, category, ``price`` as a number (``"$12.50"`` and ``"12,50"`` too) with its currency, ``stock``,
  and the image URLs (``images``, ``image_urls`` or ``image_url``; http(s) only, duplicates dropped).
- ``image_fetch``: GET each image through the outbound guard (``CONVEYOR_OUTBOUND_ALLOW`` lets private
  addresses through): status, content type, size, SHA-256, and width * height read from the PNG, GIF or
  JPEG header. A failed image is recorded with its error, not raised: the score says what it costs.
- ``enrichment``: the ``ai_process`` ``enrich`` task (category from ``CATEGORIES`` when the record has none,
  keywords) and ``summarize`` (a one-sentence summary), by the configured provider (local by default).
- ``data_mapping``: the record in the channel's feed schema (``merchant``: Google Merchant-like fields).
- ``scoring``: the formula below.
- ``indexing``: upsert into the store's ``indexed_products`` table, searchable through SQLite FTS5 or
  PostgreSQL full-text (``search_products``).
- ``notification``: log a one-line summary, and POST it as JSON to ``notify_url`` when the item has one.

Score (0-100), with every part between 0 and 1::

    score = 100 * (0.4 * completeness + 0.3 * images + 0.2 * price + 0.1 * text)

    completeness = share of the feed's key fields present: id, title, description, image_link, price,
                   brand, product_type
    images       = min(images fetched as an image, 3) / 3
    price        = 1 if 0 < price ≤ 100,000 with a currency; 0.5 with no currency; 0 otherwise
    text         = 0.5 if the title has 10-150 characters, plus 0.5 * min(description words / 20, 1)

Grade: A from 85, B from 70, C from 50, else D.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from typing import Any

import httpx
from sqlalchemy import text as sql
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.exceptions import ApplicationError

from activities.stages import StageItem, StageResult, stage
from core.models import IndexedProduct, utcnow
from core.ssrf import OUTBOUND_BLOCKED, outbound_client
from examples.pipelines.ai import run_task
from examples.pipelines.context import settings_of, store_session
from workflows import errors

log = logging.getLogger(__name__)

CATEGORIES: dict[str, list[str]] = {
    "kitchen": ["knife", "pan", "skillet", "kettle", "cook", "cooking", "board", "chef", "pot"],
    "garden": ["hose", "lawn", "plants", "shears", "rake", "garden", "seeds"],
    "office": ["desk", "lamp", "chair", "notebook", "pen", "study", "office"],
    "electronics": ["usb", "battery", "charger", "cable", "wireless", "bluetooth", "speaker"],
    "apparel": ["shirt", "jacket", "cotton", "size", "wear", "shoes"],
}
"""Categories the enrichment stage picks from (label -> words that count for it)."""
MAX_IMAGES = 8
IMAGE_MAX_BYTES = 10_000_000
IMAGE_TIMEOUT_S = 20.0
PRICE_CAP = 100_000.0
FEED_FIELDS = ("id", "title", "description", "image_link", "price", "brand", "product_type")
"""The channel fields the completeness part of the score counts."""
CURRENCY_SIGNS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.VALIDATION_FAILED, non_retryable=True)


def _product(item: StageItem) -> dict[str, Any]:
    product = item.data.get("product")
    if not isinstance(product, dict):
        raise _invalid("input.product: expected the product record DISCOVERY produced")
    return product


# -- discovery --------------------------------------------------------------------------------------------


def parse_price(value: Any) -> tuple[float | None, str | None]:
    """``(amount, currency)`` from ``12.5``, ``"12.50"``, ``"$12.50"``, ``"12,50 EUR"``, ``"1,299.00"``."""
    if value is None or isinstance(value, bool):
        return None, None
    if isinstance(value, (int, float)):
        return float(value), None
    raw = str(value).strip()
    currency = next((code for sign, code in CURRENCY_SIGNS.items() if sign in raw), None)
    code = re.search(r"\b([A-Z]{3})\b", raw.upper())
    if code:
        currency = code.group(1)
    digits = re.sub(r"[^\d.,-]", "", raw)
    if not re.search(r"\d", digits):
        return None, currency
    if "," in digits and "." in digits:
        digits = digits.replace(",", "") if digits.rfind(".") > digits.rfind(",") else digits.replace(".", "")
    if "," in digits:
        head, _, tail = digits.rpartition(",")
        digits = f"{head.replace(',', '')}.{tail}" if len(tail) in (1, 2) else digits.replace(",", "")
    try:
        return float(digits.replace(",", ".")), currency
    except ValueError:
        return None, currency


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    """The record in the shape the later stages read; raises a data error without a usable ``sku``."""
    sku = _text(record.get("sku") or record.get("id"))
    if not sku:
        raise _invalid("input.sku: a product needs a sku")
    title = _text(record.get("title") or record.get("name"))
    price, sign = parse_price(record.get("price"))
    currency = _text(record.get("currency")) or sign
    images: Any = record.get("images") or record.get("image_urls") or record.get("image_url") or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list):
        raise _invalid("input.images: expected a list of URLs")
    urls = [
        str(url).strip()
        for url in images
        if isinstance(url, str) and re.match(r"^https?://", url.strip(), re.IGNORECASE)
    ]
    stock = record.get("stock")
    category = _text(record.get("category"))
    return {
        "sku": sku.upper()[:128],
        "title": title,
        "description": _text(record.get("description")),
        "brand": _text(record.get("brand")),
        "category": category.lower() if category else None,
        "price": price,
        "currency": currency.upper()[:8] if currency else None,
        "stock": int(stock) if isinstance(stock, (int, float)) and not isinstance(stock, bool) else None,
        "images": list(dict.fromkeys(urls))[:MAX_IMAGES],
    }


@stage("discovery")
def discover(item: StageItem) -> StageResult:
    """DISCOVERY: the uploaded record, normalised; the original is left in the execution's input."""
    record = item.data.get("record", item.data)
    if not isinstance(record, dict):
        raise _invalid("input.record: expected a product object")
    product = normalise(record)
    problems = [name for name in ("title", "price", "images") if not product.get(name)]
    return StageResult({"product": product, "problems": problems})


# -- image fetch ------------------------------------------------------------------------------------------


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` from a PNG, GIF or JPEG header, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "gif", width, height
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            index += 1
            continue
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            index += 1 if marker == 0xFF else 2  # fill bytes and markers without a length
            continue
        length = struct.unpack(">H", data[index + 2 : index + 4])[0]
        # Start-of-frame markers (baseline, progressive, …) carry the size; C4, C8 and CC are not frames.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return "jpeg", width, height
        index += 2 + length
    return None


async def fetch_image(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """What one image URL gave: ``ok`` with its type, size, hash and dimensions, or its ``error``."""
    result: dict[str, Any] = {"url": url, "ok": False}
    try:
        async with client.stream("GET", url, timeout=IMAGE_TIMEOUT_S) as response:
            result["status"] = response.status_code
            result["content_type"] = response.headers.get("content-type", "").split(";")[0].strip() or None
            if response.status_code != 200:
                result["error"] = f"HTTP {response.status_code}"
                return result
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > IMAGE_MAX_BYTES:
                    result["error"] = f"larger than {IMAGE_MAX_BYTES} bytes"
                    return result
    except ApplicationError as exc:  # the outbound guard refused the address
        if exc.type != OUTBOUND_BLOCKED:
            raise
        result["error"] = str(exc)
        return result
    except httpx.HTTPError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    data = bytes(body)
    result.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    found = image_size(data)
    if found is not None:
        result.update(format=found[0], width=found[1], height=found[2])
    is_image = found is not None or (result["content_type"] or "").startswith("image/")
    result["ok"] = is_image
    if not is_image:
        result["error"] = f"not an image ({result['content_type'] or 'no content type'})"
    return result


@stage("image_fetch")
async def fetch_images(item: StageItem) -> StageResult:
    """IMAGE_FETCH: every image of the product, fetched over HTTP."""
    product = _product(item)
    images: list[dict[str, Any]] = []
    async with outbound_client(settings_of(item)) as client:
        for number, url in enumerate(product.get("images") or []):
            item.heartbeat({"image": number})
            images.append(await fetch_image(client, str(url)))
    ok = [image for image in images if image["ok"]]
    return StageResult({"images": images, "ok": len(ok), "failed": len(images) - len(ok)})


# -- enrichment -------------------------------------------------------------------------------------------


@stage("enrichment")
async def enrich(item: StageItem) -> StageResult:
    """ENRICHMENT: category, keywords and a summary through the ``ai_process`` providers."""
    product = _product(item)
    settings = settings_of(item)
    content = {key: product.get(key) or "" for key in ("title", "description", "brand")}
    enriched = await run_task(settings, task="enrich", data=content, labels=CATEGORIES)
    description = product.get("description") or product.get("title") or ""
    summary = ""
    if description:
        summary = (await run_task(settings, task="summarize", text=description, max_sentences=1))["summary"]
    category = product.get("category") or enriched.get("category")
    keywords = [str(word) for word in enriched.get("keywords") or []]
    return StageResult({"category": category, "keywords": keywords, "summary": summary})


# -- data mapping -----------------------------------------------------------------------------------------


def to_channel(
    product: dict[str, Any], images: list[dict[str, Any]], enrichment: dict[str, Any]
) -> dict[str, Any]:
    """The product as a Google Merchant-like feed entry."""
    links = [image["url"] for image in images if image.get("ok")]
    price = product.get("price")
    currency = product.get("currency")
    stock = product.get("stock")
    return {
        "id": product.get("sku"),
        "title": (product.get("title") or "")[:150] or None,
        "description": (product.get("description") or enrichment.get("summary") or "")[:5000] or None,
        "image_link": links[0] if links else None,
        "additional_image_links": links[1:10],
        "price": f"{price:.2f} {currency}".strip() if isinstance(price, (int, float)) and currency else None,
        "price_value": price,
        "currency": currency,
        "availability": "in_stock" if stock is None or stock > 0 else "out_of_stock",
        "brand": product.get("brand"),
        "product_type": enrichment.get("category") or product.get("category"),
        "custom_labels": list(enrichment.get("keywords") or [])[:5],
        "summary": enrichment.get("summary") or None,
    }


@stage("data_mapping")
def map_product(item: StageItem) -> StageResult:
    """DATA_MAPPING: the record in the channel's schema."""
    channel = str(item.data.get("channel") or "merchant")
    if channel != "merchant":
        raise _invalid(f"input.channel: {channel!r} is not a known channel (merchant)")
    images = item.data.get("images") or []
    enrichment = item.data.get("enrichment") or {}
    if not isinstance(images, list) or not isinstance(enrichment, dict):
        raise _invalid("input.images and input.enrichment: expected IMAGE_FETCH's and ENRICHMENT's outputs")
    return StageResult({"channel": channel, "record": to_channel(_product(item), images, enrichment)})


# -- scoring ----------------------------------------------------------------------------------------------


def score(record: dict[str, Any], images_ok: int) -> dict[str, Any]:
    """``{score, grade, parts}`` by the formula in the module docstring."""
    completeness = sum(1 for name in FEED_FIELDS if record.get(name)) / len(FEED_FIELDS)
    image_part = min(images_ok, 3) / 3
    price = record.get("price_value")
    price_part = 0.0
    if isinstance(price, (int, float)) and 0 < price <= PRICE_CAP:
        price_part = 1.0 if record.get("currency") else 0.5
    title = record.get("title") or ""
    words = len((record.get("description") or "").split())
    text_part = (0.5 if 10 <= len(title) <= 150 else 0.0) + 0.5 * min(words / 20, 1.0)
    value = round(100 * (0.4 * completeness + 0.3 * image_part + 0.2 * price_part + 0.1 * text_part), 1)
    grade = "A" if value >= 85 else "B" if value >= 70 else "C" if value >= 50 else "D"
    parts = {
        "completeness": round(completeness, 3),
        "images": round(image_part, 3),
        "price": price_part,
        "text": round(text_part, 3),
    }
    return {"score": value, "grade": grade, "parts": parts}


@stage("scoring")
def score_product(item: StageItem) -> StageResult:
    """SCORING: how ready the product is for the channel."""
    record = item.data.get("record")
    if not isinstance(record, dict):
        raise _invalid("input.record: expected DATA_MAPPING's record")
    images_ok = item.data.get("images_ok") or 0
    return StageResult(score(record, int(images_ok)))


# -- indexing and search ----------------------------------------------------------------------------------

PG_DOCUMENT = (
    "to_tsvector('english', coalesce(title, '') || ' ' || coalesce(description, '') || ' ' || "
    "coalesce(category, '') || ' ' || coalesce(keywords, '') || ' ' || sku)"
)
"""The same expression as migration 0006's GIN index, so PostgreSQL uses the index."""


def _dialect(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else "sqlite"


async def index_product(
    session: AsyncSession, execution_id: str, record: dict[str, Any], value: float
) -> IndexedProduct:
    """Insert or replace the product's row (and, on SQLite, its FTS5 row); the caller commits."""
    sku = str(record.get("id") or "")
    if not sku:
        raise _invalid("input.record.id: the record has no sku")
    row = await session.get(IndexedProduct, sku)
    if row is None:
        row = IndexedProduct(sku=sku, execution_id=execution_id, title="", record={})
    row.execution_id = execution_id
    row.title = str(record.get("title") or "")[:500]
    row.description = str(record.get("description") or "")
    row.category = str(record["product_type"])[:128] if record.get("product_type") else None
    row.keywords = " ".join(str(word) for word in record.get("custom_labels") or [])
    price = record.get("price_value")
    row.price = float(price) if isinstance(price, (int, float)) else None
    row.currency = str(record["currency"])[:8] if record.get("currency") else None
    row.score = value
    row.record = record
    row.updated_at = utcnow()
    session.add(row)
    if _dialect(session) == "sqlite":
        connection = (
            await session.connection()
        )  # the session's transaction: the row and its FTS row commit together
        await connection.execute(sql("DELETE FROM indexed_products_fts WHERE sku = :sku"), {"sku": sku})
        await connection.execute(
            sql(
                "INSERT INTO indexed_products_fts (sku, title, description, category, keywords) "
                "VALUES (:sku, :title, :description, :category, :keywords)"
            ),
            {
                "sku": sku,
                "title": row.title,
                "description": row.description,
                "category": row.category or "",
                "keywords": row.keywords,
            },
        )
    return row


async def search_products(session: AsyncSession, q: str, limit: int = 20) -> list[dict[str, Any]]:
    """Indexed products matching every word of ``q``, best match first:
    ``[{sku, title, category, price, currency, score, rank}]``. Words only: operators in ``q`` are ignored."""
    words = re.findall(r"\w+", q.lower())
    if not words:
        return []
    if _dialect(session) == "postgresql":
        statement = sql(
            "SELECT sku, title, category, price, currency, score, "
            f"ts_rank({PG_DOCUMENT}, plainto_tsquery('english', :q)) AS rank FROM indexed_products "
            f"WHERE {PG_DOCUMENT} @@ plainto_tsquery('english', :q) ORDER BY rank DESC, sku LIMIT :limit"
        )
        params: dict[str, Any] = {"q": " ".join(words), "limit": limit}
    else:
        statement = sql(
            "SELECT p.sku, p.title, p.category, p.price, p.currency, p.score, -f.rank AS rank "
            "FROM indexed_products_fts AS f JOIN indexed_products AS p ON p.sku = f.sku "
            "WHERE indexed_products_fts MATCH :q ORDER BY f.rank, p.sku LIMIT :limit"
        )
        # Each word quoted: FTS5 would read AND, OR, NEAR and * in a user's query as operators.
        params = {"q": " ".join(f'"{word}"' for word in words), "limit": limit}
    found = (await (await session.connection()).execute(statement, params)).mappings().all()
    return [{**row, "rank": float(row["rank"] or 0.0)} for row in found]


@stage("indexing")
async def index(item: StageItem) -> StageResult:
    """INDEXING: the product into the searchable table."""
    record = item.data.get("record")
    if not isinstance(record, dict):
        raise _invalid("input.record: expected DATA_MAPPING's record")
    value = item.data.get("score")
    async with store_session(settings_of(item)) as session:
        row = await index_product(session, item.execution_id, record, float(value or 0.0))
        await session.commit()
    return StageResult({"indexed": True, "sku": row.sku})


# -- notification -----------------------------------------------------------------------------------------


@stage("notification")
async def notify(item: StageItem) -> StageResult:
    """NOTIFICATION: a one-line summary to the log, and to ``notify_url`` when the item names one."""
    data = item.data
    message = (
        f"product {data.get('sku')} indexed: score {data.get('score')} (grade {data.get('grade')}), "
        f"{data.get('images_ok', 0)} image(s)"
    )
    log.info("[%s] %s", item.execution_id, message)
    output: dict[str, Any] = {"message": message, "delivered": ["log"]}
    url = data.get("notify_url")
    if url:
        async with outbound_client(settings_of(item)) as client:
            response = await client.post(
                str(url),
                json={
                    "pipeline": item.pipeline,
                    "execution_id": item.execution_id,
                    "message": message,
                    **{k: data.get(k) for k in ("sku", "score", "grade")},
                },
                timeout=settings_of(item).http_timeout_s,
            )
        if response.status_code >= 500 or response.status_code == 429:
            raise RuntimeError(f"notify_url answered {response.status_code}")  # retried
        if response.status_code >= 400:
            raise _invalid(f"input.notify_url: answered {response.status_code}")
        output["delivered"].append("webhook")
        output["status"] = response.status_code
    return StageResult(output)
