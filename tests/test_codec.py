"""AES-GCM payload encryption (core/codec.py) and the codec endpoint (api/routers/codec.py), down to what the
Temporal CLI shows with and without ``--codec-endpoint``."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.codec import ENCODING, KEY_ID, EncryptionCodec, PayloadDecryptFailed, encryption_codec
from core.payloads import ENCODING as BLOB_REF
from core.payloads import data_converter
from core.sealing import KeyConfigInvalid, new_key
from core.settings import Settings
from tests.conftest import api_settings
from tests.support.api import running_api
from worker import conveyor_worker

TEMPORAL = Path(sys.executable).parent / "temporal"
ADMIN_KEY = "cvk_codec000_" + "c" * 40
UI_ORIGIN = "http://localhost:8233"
SECRET_INPUT = "Ada Lovelace, card 4242-4242"
"""What the execution's input holds; it must never show in the history without the codec."""


def keys(**values: bytes) -> dict[str, bytes]:
    return values


def json_payload(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


async def test_encrypts_with_the_active_key_and_names_it() -> None:
    codec = EncryptionCodec(keys(k1=b"a" * 32), "k1")
    [sealed] = await codec.encode([json_payload({"customer": SECRET_INPUT})])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert SECRET_INPUT.encode() not in sealed.data
    [again] = await codec.encode([json_payload({"customer": SECRET_INPUT})])
    assert again.data != sealed.data, "a fresh nonce per payload"
    [opened] = await codec.decode([sealed])
    assert json.loads(opened.data) == {"customer": SECRET_INPUT}
    assert opened.metadata["encoding"] == b"json/plain"


async def test_keys_rotate_old_payloads_still_decrypt() -> None:
    old = EncryptionCodec(keys(k1=b"a" * 32), "k1")
    [written_before] = await old.encode([json_payload("before")])
    rotated = EncryptionCodec(keys(k1=b"a" * 32, k2=b"b" * 32), "k2")
    [written_after] = await rotated.encode([json_payload("after")])
    assert written_after.metadata[KEY_ID] == b"k2"
    decoded = await rotated.decode([written_before, written_after])
    assert [json.loads(p.data) for p in decoded] == ["before", "after"]
    with pytest.raises(PayloadDecryptFailed, match="unknown key 'k2'"):
        await old.decode([written_after])


async def test_tampering_and_key_swaps_are_detected() -> None:
    codec = EncryptionCodec(keys(k1=b"a" * 32, k2=b"b" * 32), "k1")
    [sealed] = await codec.encode([json_payload("x")])
    flipped = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(PayloadDecryptFailed, match="tampered"):
        await codec.decode([flipped])
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID: b"k2"}, data=sealed.data)
    with pytest.raises(PayloadDecryptFailed):
        await codec.decode([relabelled])


async def test_plain_payloads_pass_through_decode() -> None:
    """History written before encryption was turned on stays readable."""
    codec = EncryptionCodec(keys(k1=b"a" * 32), "k1")
    plain = json_payload("old")
    assert await codec.decode([plain]) == [plain]


@pytest.mark.parametrize(
    ("values", "active", "problem"),
    [
        ({"k1": "not base64!"}, None, "not valid base64"),
        ({"k1": base64.b64encode(b"short").decode()}, None, "AES-256 needs 32"),
        ({"k1": new_key(), "k2": new_key()}, None, "name the active one"),
        ({"k1": new_key()}, "k9", "not among"),
    ],
)
def test_unusable_key_settings_fail_at_start(
    values: dict[str, str], active: str | None, problem: str
) -> None:
    settings = Settings(
        payload_encryption_keys={k: SecretStr(v) for k, v in values.items()}, payload_encryption_key_id=active
    )
    with pytest.raises(KeyConfigInvalid, match=problem):
        encryption_codec(settings)


def test_no_keys_no_encryption() -> None:
    assert encryption_codec(Settings()) is None


async def test_large_payloads_are_encrypted_before_the_claim_check(tmp_path: Path) -> None:
    codec = EncryptionCodec(keys(k1=b"a" * 32), "k1")
    converter = data_converter(tmp_path, 1_000, encryption=codec)
    assert converter.payload_codec is not None
    big = json_payload({"customer": SECRET_INPUT, "filler": "y" * 5_000})
    [reference] = await converter.payload_codec.encode([big])
    assert reference.metadata["encoding"] == BLOB_REF
    [blob] = await asyncio.to_thread(lambda: [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()])
    assert SECRET_INPUT.encode() not in blob, "the blob store keeps ciphertext"
    [back] = await converter.payload_codec.decode([reference])
    assert json.loads(back.data)["customer"] == SECRET_INPUT


# The codec endpoint and the Temporal CLI, on the real API, worker and dev server.


@pytest.fixture
def encrypted_settings(temporal_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> Settings:
    return api_settings(
        temporal_env,
        task_queue,
        f"sqlite+aiosqlite:///{tmp_path}/api.db",
        auth="on",
        bootstrap_admin_key=ADMIN_KEY,
        payload_encryption_keys={"k1": new_key()},
        temporal_ui_origin=UI_ORIGIN,
    )


@pytest.fixture
async def encrypted_api(
    temporal_env: WorkflowEnvironment, encrypted_settings: Settings, blob_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """API and worker that both encrypt; the worker's client is built as the worker process builds it."""
    base = temporal_env.client
    client = Client(
        base.service_client,
        namespace=base.namespace,
        data_converter=data_converter(
            blob_dir, encrypted_settings.payload_ref_bytes, encryption=encryption_codec(encrypted_settings)
        ),
    )
    async with (
        conveyor_worker(client, encrypted_settings),
        running_api(encrypted_settings, key=ADMIN_KEY) as http,
    ):
        yield http


def payloads_json(*values: Any) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(json.dumps(v).encode()).decode(),
            }
            for v in values
        ]
    }


async def test_codec_endpoint_round_trip(encrypted_api: httpx.AsyncClient) -> None:
    encoded = await encrypted_api.post("/codec/encode", json=payloads_json({"customer": SECRET_INPUT}))
    assert encoded.status_code == 200, encoded.text
    [sealed] = encoded.json()["payloads"]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == ENCODING
    assert SECRET_INPUT.encode() not in base64.b64decode(sealed["data"])
    decoded = await encrypted_api.post(
        "/codec/decode", json=encoded.json(), headers={"X-Namespace": "default"}
    )
    assert decoded.status_code == 200, decoded.text
    [opened] = decoded.json()["payloads"]
    assert json.loads(base64.b64decode(opened["data"])) == {"customer": SECRET_INPUT}


async def test_codec_endpoint_refuses_what_it_cannot_read(encrypted_api: httpx.AsyncClient) -> None:
    not_payloads = await encrypted_api.post("/codec/decode", content=b'{"payloads": 3}')
    assert not_payloads.status_code == 400 and not_payloads.json()["error_code"] == "BAD_REQUEST"
    foreign = {
        "payloads": [
            {
                "metadata": {
                    "encoding": base64.b64encode(ENCODING).decode(),
                    KEY_ID: base64.b64encode(b"k9").decode(),
                },
                "data": "AAAA",
            }
        ]
    }
    unknown_key = await encrypted_api.post("/codec/decode", json=foreign)
    assert unknown_key.status_code == 400 and unknown_key.json()["error_code"] == "CODEC_FAILED"
    assert "k9" in unknown_key.json()["message"]


async def test_codec_cors_is_for_the_temporal_ui_only(encrypted_api: httpx.AsyncClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    allowed = await encrypted_api.options("/codec/decode", headers={"Origin": UI_ORIGIN, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "X-Namespace" in allowed.headers["access-control-allow-headers"]
    assert "POST" in allowed.headers["access-control-allow-methods"]
    other = await encrypted_api.options(
        "/codec/decode", headers={"Origin": "https://evil.example", **preflight}
    )
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
    # Real requests: the UI origin sees the answer, errors included; other origins get no CORS header.
    anonymous = httpx.AsyncClient(base_url=encrypted_api.base_url)
    async with anonymous:
        refused = await anonymous.post("/codec/decode", json=payloads_json(1), headers={"Origin": UI_ORIGIN})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == UI_ORIGIN
    answered = await encrypted_api.post(
        "/codec/decode", json=payloads_json(1), headers={"Origin": "https://evil.example"}
    )
    assert answered.status_code == 200 and "access-control-allow-origin" not in answered.headers
    # CORS stays on /codec: the rest of the API never answers a browser from another origin.
    elsewhere = await encrypted_api.get("/api/v1/definitions", headers={"Origin": UI_ORIGIN})
    assert "access-control-allow-origin" not in elsewhere.headers


async def temporal_show(address: str, workflow_id: str, *codec: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(TEMPORAL),
        *["workflow", "show", "--workflow-id", workflow_id, "--address", address, "--namespace", "default"],
        *["--output", "json", *codec],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def decoded_strings(document: Any) -> str:
    """Every base64 ``data`` field of the CLI's JSON decoded, so plaintext cannot hide in base64."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    try:
                        found.append(base64.b64decode(value).decode("utf-8", errors="replace"))
                    except ValueError:
                        found.append(value)
                walk(value)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(document)
    return "\n".join(found)


async def test_temporal_cli_shows_the_input_only_through_the_codec(
    encrypted_api: httpx.AsyncClient, temporal_env: WorkflowEnvironment
) -> None:
    definition = {
        "name": "codec-demo",
        "steps": [{"id": "greet", "type": "transform", "with": {"value": "hello {{ input.customer }}"}}],
    }
    assert (await encrypted_api.post("/api/v1/definitions", json=definition)).status_code == 201
    started = await encrypted_api.post(
        "/api/v1/definitions/codec-demo/executions", json={"input": {"customer": SECRET_INPUT}, "wait": 30}
    )
    assert started.status_code in (200, 201), started.text
    assert started.json()["state"] == "COMPLETED", started.json()
    execution_id = started.json()["execution_id"]
    address = temporal_env.client.service_client.config.target_host

    raw = await temporal_show(address, execution_id)
    assert SECRET_INPUT not in raw and SECRET_INPUT not in decoded_strings(json.loads(raw))
    assert base64.b64encode(ENCODING).decode() in raw, "the payloads are there, encrypted"

    endpoint = f"{encrypted_api.base_url}".rstrip("/") + "/codec"
    shown = await temporal_show(
        address, execution_id, "--codec-endpoint", endpoint, "--codec-auth", f"Bearer {ADMIN_KEY}"
    )
    assert SECRET_INPUT in shown or SECRET_INPUT in decoded_strings(json.loads(shown)), shown[:2000]
    assert f"hello {SECRET_INPUT}" in shown or f"hello {SECRET_INPUT}" in decoded_strings(json.loads(shown))

    # The codec endpoint wants a key: without one the CLI cannot decode.
    process = await asyncio.create_subprocess_exec(
        str(TEMPORAL),
        *["workflow", "show", "--workflow-id", execution_id, "--address", address, "--output", "json"],
        *["--codec-endpoint", endpoint],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _err = await process.communicate()
    assert SECRET_INPUT not in out.decode()
