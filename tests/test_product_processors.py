"""The product pipeline's processors: images fetched from a real loopback HTTP server (through the outbound
guard), enrichment by the local provider, the score formula, and search over the index on SQLite and
PostgreSQL."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI, Response
from sqlmodel import select
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.stages import StageItem, load
from core.db import create_engine, migrate, session_factory
from core.models import IndexedProduct
from core.settings import Settings, get_settings
from examples.pipelines import products
from examples.pipelines.context import dispose_engines
from tests.support.run import start
from tests.support.target import serve
from worker import stage_workers
from workflows import errors

PIPELINE = "product-pipeline"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STAGES = ("discovery", "image_fetch", "enrichment", "data_mapping", "scoring", "indexing", "notification")


def png(width: int, height: int) -> bytes:
    """A real PNG (one grey pixel row per line)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg_header(width: int, height: int) -> bytes:
    """The start of a baseline JPEG: SOI, a JFIF APP0 segment and the SOF0 frame header (no scan data)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = (
        b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


GIF = b"GIF89a" + struct.pack("<HH", 7, 5) + b"\x00\x00\x00;"


@pytest.fixture(scope="module")
async def images() -> AsyncIterator[str]:
    """A loopback server standing in for a supplier's image host."""
    app = FastAPI()
    served = {
        "knife.png": (png(64, 48), "image/png"),
        "knife.jpg": (jpeg_header(800, 600), "image/jpeg"),
        "knife.gif": (GIF, "image/gif"),
        "page.html": (b"<html>not an image</html>", "text/html"),
    }

    @app.get("/img/{name}")
    async def image(name: str) -> Response:
        if name not in served:
            return Response(b"missing", status_code=404)
        data, kind = served[name]
        return Response(data, media_type=kind)

    async with serve(app) as url:
        yield url


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1")
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/store.db")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
async def store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    engine = create_engine(database_url)
    await migrate(engine)
    await engine.dispose()
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", database_url)
    monkeypatch.setenv("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1")
    get_settings.cache_clear()
    yield database_url
    await dispose_engines()
    get_settings.cache_clear()


def item(stage: str, data: dict[str, Any], execution_id: str | None = None) -> StageItem:
    return StageItem(PIPELINE, stage, execution_id or f"{PIPELINE}/{uuid.uuid4()}", data)


def record(images_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "sku": " kt-100 ",
        "name": "Forged   chef knife 20 cm",
        "description": "A forged steel chef knife for everyday cooking. Balanced, sharp, and easy to care "
        "for; the blade is hardened to 58 HRC and ships in a gift box.",
        "brand": "Kitchenly",
        "price": "$1,049.90",
        "images": [f"{images_url}/img/knife.png", f"{images_url}/img/knife.jpg", "ftp://nope/x.png"],
        **extra,
    }


async def run_all(rec: dict[str, Any], execution_id: str | None = None) -> dict[str, Any]:
    """Every stage in the definition's order, each fed what the definition feeds it."""
    found: dict[str, Any] = {}
    found["discover"] = products.discover(item("discovery", {"record": rec})).data
    product = found["discover"]["product"]
    found["images"] = (await products.fetch_images(item("image_fetch", {"product": product}))).data
    found["enrich"] = (await products.enrich(item("enrichment", {"product": product}))).data
    mapping = {"product": product, "images": found["images"]["images"], "enrichment": found["enrich"]}
    found["map"] = products.map_product(item("data_mapping", mapping)).data
    rec_out = found["map"]["record"]
    found["score"] = products.score_product(
        item("scoring", {"record": rec_out, "images_ok": found["images"]["ok"]})
    ).data
    index_input = {"record": rec_out, "score": found["score"]["score"]}
    found["index"] = (await products.index(item("indexing", index_input, execution_id))).data
    return found


def test_processors_register_under_the_pipeline_stage_names() -> None:
    registered = load(["examples.pipelines.products"])
    for name in (
        "discovery",
        "image_fetch",
        "enrichment",
        "data_mapping",
        "scoring",
        "indexing",
        "notification",
    ):
        assert registered[name].task_queue == f"stage.{name}"


def test_discovery_normalises_the_record() -> None:
    out = products.discover(item("discovery", {"record": record("http://h")})).data
    assert out["product"] == {
        "sku": "KT-100",
        "title": "Forged chef knife 20 cm",
        "description": out["product"]["description"],
        "brand": "Kitchenly",
        "category": None,
        "price": 1049.9,
        "currency": "USD",
        "stock": None,
        "images": ["http://h/img/knife.png", "http://h/img/knife.jpg"],
    }
    assert out["problems"] == []


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (12.5, (12.5, None)),
        ("12.50", (12.5, None)),
        ("€12,50", (12.5, "EUR")),
        ("1.299,00 EUR", (1299.0, "EUR")),
        ("1,299.00", (1299.0, None)),
        ("free", (None, None)),
        (None, (None, None)),
    ],
)
def test_parse_price(raw: Any, parsed: tuple[float | None, str | None]) -> None:
    assert products.parse_price(raw) == parsed


def test_discovery_without_a_sku_is_a_data_error() -> None:
    with pytest.raises(ApplicationError) as caught:
        products.discover(item("discovery", {"record": {"title": "x"}}))
    assert caught.value.type == errors.VALIDATION_FAILED and "input.sku" in str(caught.value)


async def test_image_fetch_reads_type_size_hash_and_dimensions(images: str, allow_loopback: None) -> None:
    urls = [
        f"{images}/img/{name}" for name in ("knife.png", "knife.jpg", "knife.gif", "page.html", "gone.png")
    ]
    out = (await products.fetch_images(item("image_fetch", {"product": {"images": urls}}))).data
    by_name = {image["url"].rsplit("/", 1)[1]: image for image in out["images"]}
    assert (out["ok"], out["failed"]) == (3, 2)
    png_image = by_name["knife.png"]
    assert png_image["ok"] and png_image["content_type"] == "image/png" and png_image["status"] == 200
    assert (png_image["format"], png_image["width"], png_image["height"]) == ("png", 64, 48)
    assert png_image["size"] == len(png(64, 48))
    import hashlib

    assert png_image["sha256"] == hashlib.sha256(png(64, 48)).hexdigest()
    assert (
        by_name["knife.jpg"]["format"],
        by_name["knife.jpg"]["width"],
        by_name["knife.jpg"]["height"],
    ) == (
        "jpeg",
        800,
        600,
    )
    assert (by_name["knife.gif"]["width"], by_name["knife.gif"]["height"]) == (7, 5)
    assert not by_name["page.html"]["ok"] and "not an image" in by_name["page.html"]["error"]
    assert not by_name["gone.png"]["ok"] and by_name["gone.png"]["error"] == "HTTP 404"


async def test_image_fetch_goes_through_the_outbound_guard(
    images: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONVEYOR_OUTBOUND_ALLOW", raising=False)
    get_settings.cache_clear()
    try:
        out = (
            await products.fetch_images(
                item("image_fetch", {"product": {"images": [f"{images}/img/knife.png"]}})
            )
        ).data
    finally:
        get_settings.cache_clear()
    assert out["ok"] == 0
    assert "loopback" in out["images"][0]["error"]


async def test_enrichment_picks_a_category_and_keywords(allow_loopback: None) -> None:
    product = products.normalise(record("http://h"))
    out = (await products.enrich(item("enrichment", {"product": product}))).data
    assert out["category"] == "kitchen"
    assert "knife" in out["keywords"]
    assert out["summary"] == "A forged steel chef knife for everyday cooking."


async def test_enrichment_keeps_the_records_own_category(allow_loopback: None) -> None:
    product = products.normalise(record("http://h", category="Tools"))
    out = (await products.enrich(item("enrichment", {"product": product}))).data
    assert out["category"] == "tools"


def test_score_formula() -> None:
    full = {
        "id": "A",
        "title": "A good long title",
        "description": " ".join(["word"] * 20),
        "image_link": "http://x/1.png",
        "price": "10.00 USD",
        "price_value": 10.0,
        "currency": "USD",
        "brand": "B",
        "product_type": "kitchen",
    }
    assert products.score(full, 3) == {
        "score": 100.0,
        "grade": "A",
        "parts": {"completeness": 1.0, "images": 1.0, "price": 1.0, "text": 1.0},
    }
    # No images (so no image_link), no currency (so no feed price), a short title, ten words:
    sparse = {**full, "image_link": None, "price": None, "currency": None, "title": "Knife"}
    sparse["description"] = " ".join(["word"] * 10)
    result = products.score(sparse, 0)
    # 0.4 * 5/7 + 0.3 * 0 + 0.2 * 0.5 + 0.1 * 0.25 = 0.410714…
    assert result["score"] == 41.1 and result["grade"] == "D"
    assert result["parts"] == {"completeness": 0.714, "images": 0.0, "price": 0.5, "text": 0.25}
    assert products.score({**full, "price_value": products.PRICE_CAP * 2}, 3)["parts"]["price"] == 0.0


async def test_the_whole_pipeline_indexes_a_searchable_product(images: str, store: str) -> None:
    first_execution = f"{PIPELINE}/{uuid.uuid4()}"
    found = await run_all(record(images), first_execution)
    rec = found["map"]["record"]
    assert rec["id"] == "KT-100" and rec["price"] == "1049.90 USD" and rec["product_type"] == "kitchen"
    assert rec["image_link"].endswith("/img/knife.png")
    assert rec["additional_image_links"] == [f"{images}/img/knife.jpg"]
    assert found["images"]["ok"] == 2
    assert found["score"]["grade"] == "A" and found["score"]["parts"]["images"] == round(2 / 3, 3)
    assert found["index"] == {"indexed": True, "sku": "KT-100"}
    await run_all({"sku": "GD-7", "title": "Garden hose 25 m", "description": "A hose for the lawn."})

    engine = create_engine(store)
    try:
        async with session_factory(engine)() as session:
            hits = await products.search_products(session, "chef knife")
            assert [hit["sku"] for hit in hits] == ["KT-100"]
            assert hits[0]["price"] == 1049.9 and hits[0]["category"] == "kitchen"
            assert [h["sku"] for h in await products.search_products(session, "hose")] == ["GD-7"]
            assert [h["sku"] for h in await products.search_products(session, "KITCHEN")] == ["KT-100"]
            assert await products.search_products(session, "chef hose") == []
            # FTS5 and tsquery syntax in a query is not interpreted (nor a syntax error): words only.
            assert [h["sku"] for h in await products.search_products(session, '"knife*" NEAR(')] == []
            assert [h["sku"] for h in await products.search_products(session, "(knife*")] == ["KT-100"]
            assert await products.search_products(session, "  ") == []
    finally:
        await engine.dispose()

    # Indexing the same sku again replaces its row: one hit, the newer title.
    await run_all(record(images, name="Forged chef knife 24 cm"))
    engine = create_engine(store)
    try:
        async with session_factory(engine)() as session:
            hits = await products.search_products(session, "knife")
            assert [(h["sku"], h["title"]) for h in hits] == [("KT-100", "Forged chef knife 24 cm")]
            rows = (await session.exec(select(IndexedProduct))).all()
            assert sorted(r.sku for r in rows) == ["GD-7", "KT-100"]
    finally:
        await engine.dispose()


async def test_notification_logs_and_posts_the_summary(allow_loopback: None) -> None:
    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(body: dict[str, Any]) -> dict[str, str]:
        received.append(body)
        return {"ok": "yes"}

    async with serve(app) as url:
        data = {"sku": "KT-100", "score": 91.0, "grade": "A", "images_ok": 2, "notify_url": f"{url}/hook"}
        out = (await products.notify(item("notification", data, "product-pipeline/x"))).data
    assert out["delivered"] == ["log", "webhook"] and out["status"] == 200
    assert out["message"] == "product KT-100 indexed: score 91.0 (grade A), 2 image(s)"
    assert received == [
        {
            "pipeline": PIPELINE,
            "execution_id": "product-pipeline/x",
            "message": out["message"],
            "sku": "KT-100",
            "score": 91.0,
            "grade": "A",
        }
    ]


async def test_notification_without_url_only_logs(allow_loopback: None) -> None:
    out = (await products.notify(item("notification", {"sku": "A", "notify_url": None}))).data
    assert out["delivered"] == ["log"]


def test_unknown_channel_is_a_data_error() -> None:
    data = {"product": {"sku": "A"}, "images": [], "enrichment": {}, "channel": "ebay"}
    with pytest.raises(ApplicationError) as caught:
        products.map_product(item("data_mapping", data))
    assert caught.value.type == errors.VALIDATION_FAILED and "input.channel" in str(caught.value)


async def test_product_pipeline_end_to_end(
    client: Client, worker: Worker, settings: Settings, images: str, store: str
) -> None:
    """The example definition on the dev server: every stage on its own queue, served by stage workers."""
    definition = yaml.safe_load((EXAMPLES / "product-pipeline.yaml").read_text())
    processors = list(load(["examples.pipelines.products"]).values())
    stages = [p for p in processors if p.name in STAGES]
    # The stage workers' own settings name the store and let the image fetch reach the loopback host.
    serving = settings.model_copy(update={"database_url": store, "outbound_allow": ["127.0.0.1"]})
    async with stage_workers(client, serving, stages, max_concurrent=2):
        handle = await start(client, worker.task_queue, definition, record(images, stock=3))
        result = await handle.result()
    assert result.state == "COMPLETED", result.error
    output = result.output
    assert output["sku"] == "KT-100" and output["problems"] == []
    assert (output["images_ok"], output["images_failed"]) == (2, 0)
    assert output["category"] == "kitchen" and output["indexed"] is True
    assert output["record"]["availability"] == "in_stock"
    assert output["grade"] == "A" and output["score"] == products.score(output["record"], 2)["score"]
    assert [s.id for s in result.steps] == ["discover", "images", "enrich", "map", "score", "index", "notify"]
    engine = create_engine(store)
    try:
        async with session_factory(engine)() as session:
            assert [h["sku"] for h in await products.search_products(session, "forged knife")] == ["KT-100"]
    finally:
        await engine.dispose()
