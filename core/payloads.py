"""Payloads by reference: large payloads go to a blob store and travel through Temporal as a reference.

A Temporal payload codec (the "claim check" pattern): the API and every worker encode with it, so a step
output of megabytes is one small reference in the history, and anyone reading through Conveyor gets the
data back. The interpreter never sees the difference. The blob store is a directory every process shares
(a local folder by default; a network volume when API and workers run on several machines).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
)

from core.codec import CodecChain

ENCODING = b"conveyor/blob-ref"


class BlobStore:
    """Content-addressed files: the key is the SHA-256 of the bytes, so writing twice stores once."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self._root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # A name of its own per writer: two uploads of the same bytes may race here.
            partial = path.with_name(f"{key}.{uuid.uuid4().hex}.partial")
            partial.write_bytes(data)
            partial.replace(path)  # atomic: a reader never sees half a blob
        return key

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()


class ClaimCheckCodec(PayloadCodec):
    """Payloads larger than ``threshold`` bytes are stored in ``store`` and replaced by their key."""

    def __init__(self, store: BlobStore, threshold: int) -> None:
        self._store = store
        self._threshold = threshold

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self._encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self._decode_one(p) for p in payloads]

    async def _encode_one(self, payload: Payload) -> Payload:
        if payload.ByteSize() <= self._threshold:
            return payload
        key = await asyncio.to_thread(self._store.put, payload.SerializeToString())
        return Payload(metadata={"encoding": ENCODING}, data=key.encode())

    async def _decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        original = Payload()
        original.ParseFromString(await asyncio.to_thread(self._store.get, payload.data.decode()))
        return original


_UNREADABLE = re.compile(r"\\u[dD][89a-fA-F]|NaN|Infinity")
"""What a payload holds when it may carry a lone surrogate or a non-finite number: worth a closer look."""


def readable(value: Any) -> Any:
    """``value`` with every lone UTF-16 surrogate replaced by U+FFFD and non-finite numbers by ``None``.

    Such values can sit in histories written before the API refused them at the edge (and a template can
    still compute ``1e308 * 10``): the worker's JSON encoder writes them, but no UTF-8 or strict JSON
    encoder can answer with them, so a reader would get a 500 for the execution, forever.
    """
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {readable(k): readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [readable(v) for v in value]
    return value


class _ReadableDecoder(json.JSONDecoder):
    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        value = super().decode(s, *args, **kwargs)
        return readable(value) if _UNREADABLE.search(s) else value


class ReadablePayloadConverter(CompositePayloadConverter):
    """Temporal's default converters, with JSON read through :func:`readable`: for readers (the API)."""

    def __init__(self) -> None:
        super().__init__(
            *(
                JSONPlainPayloadConverter(decoder=_ReadableDecoder)
                if isinstance(converter, JSONPlainPayloadConverter)
                else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


def data_converter(
    blob_dir: Path, threshold: int, *, encryption: PayloadCodec | None = None, readable: bool = False
) -> DataConverter:
    """Temporal's default JSON converter with the claim-check codec, after ``encryption`` when given;
    ``readable`` for a process that shows what it reads (:class:`ReadablePayloadConverter`).

    Encryption comes first so that what the blob store keeps is ciphertext too (see :mod:`core.codec`).
    """
    claim_check = ClaimCheckCodec(BlobStore(blob_dir), threshold)
    codec = claim_check if encryption is None else CodecChain([encryption, claim_check])
    if readable:
        return DataConverter(payload_codec=codec, payload_converter_class=ReadablePayloadConverter)
    return DataConverter(payload_codec=codec)
