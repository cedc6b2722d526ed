"""Optional AES-256-GCM encryption of everything Conveyor stores in Temporal.

With ``CONVEYOR_PAYLOAD_ENCRYPTION_KEYS__<ID>`` set, every payload (execution input, step outputs, signals,
results, failure details) is encrypted by the API and the workers before it reaches the Temporal server,
so the server, its database and its Web UI see only ciphertext. The key id travels in the payload's metadata:
new payloads use the active key, old ones still decrypt with theirs, so a key rotates by adding a new one,
making it active, and removing the old one once no open execution holds data written with it.

The codec runs *before* the claim check of :mod:`core.payloads`: a large payload is encrypted first and the
ciphertext goes to the blob store, so blobs at rest are encrypted too, and the reference left in the history
(a SHA-256 of ciphertext) says nothing about the data. Readers who need plaintext — the Web UI and
``temporal workflow show`` — ask the API's codec endpoint (``api/routers/codec.py``).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.settings import Settings

ENCODING = b"binary/encrypted"
"""The encoding Temporal's samples and tools use for encrypted payloads."""
KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12


class KeyConfigInvalid(ValueError):
    """The encryption settings cannot work: a key is not base64 of 32 bytes, or the active id is unknown."""


class PayloadDecryptFailed(ValueError):
    """A payload names a key this process does not have, or its ciphertext was tampered with."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the serialized payload; the key id is also the associated data, so a payload cannot be
    passed off as encrypted under another key."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise KeyConfigInvalid(f"the active encryption key {active!r} is not among {sorted(keys)}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active = active

    @property
    def active_key_id(self) -> str:
        return self._active

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._active]
        key_id = self._active.encode()
        encoded = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id)
            encoded.append(Payload(metadata={"encoding": ENCODING, KEY_ID: key_id}, data=nonce + sealed))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode_one(p) for p in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was turned on
        key_id = payload.metadata.get(KEY_ID, b"")
        cipher = self._ciphers.get(key_id.decode(errors="replace"))
        if cipher is None:
            raise PayloadDecryptFailed(
                f"payload encrypted with unknown key {key_id.decode(errors='replace')!r}"
            )
        try:
            plain = cipher.decrypt(payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:], key_id)
        except InvalidTag:
            raise PayloadDecryptFailed("payload does not decrypt: wrong key or tampered data") from None
        original = Payload()
        original.ParseFromString(plain)
        return original


class CodecChain(PayloadCodec):
    """Codecs applied in order when encoding and in reverse when decoding."""

    def __init__(self, codecs: Sequence[PayloadCodec]) -> None:
        self._codecs = list(codecs)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        current = list(payloads)
        for codec in self._codecs:
            current = await codec.encode(current)
        return current

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        current = list(payloads)
        for codec in reversed(self._codecs):
            current = await codec.decode(current)
        return current


def encryption_codec(settings: Settings) -> EncryptionCodec | None:
    """The codec the settings ask for, or None when no key is configured; raises on an unusable key."""
    if not settings.payload_encryption_keys:
        return None
    keys: dict[str, bytes] = {}
    for key_id, secret in settings.payload_encryption_keys.items():
        try:
            key = base64.b64decode(secret.get_secret_value(), validate=True)
        except binascii.Error:
            raise KeyConfigInvalid(f"encryption key {key_id!r} is not valid base64") from None
        if len(key) != 32:
            raise KeyConfigInvalid(f"encryption key {key_id!r} is {len(key)} bytes; AES-256 needs 32")
        keys[key_id] = key
    active = settings.payload_encryption_key_id
    if active is None:
        if len(keys) > 1:
            raise KeyConfigInvalid(
                "several encryption keys: name the active one in PAYLOAD_ENCRYPTION_KEY_ID"
            )
        [active] = keys
    return EncryptionCodec(keys, active.lower() if active.lower() in keys else active)


def new_key() -> str:
    """A fresh key for ``CONVEYOR_PAYLOAD_ENCRYPTION_KEYS__<ID>``."""
    return base64.b64encode(os.urandom(32)).decode()
