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

from collections.abc import Mapping, Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.sealing import Keyring, KeyUnknown, WrongKey, keys_from
from core.settings import Settings

ENCODING = b"binary/encrypted"
"""The encoding Temporal's samples and tools use for encrypted payloads."""
KEY_ID = "encryption-key-id"


class PayloadDecryptFailed(ValueError):
    """A payload names a key this process does not have, or its ciphertext was tampered with."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the serialized payload (``core.sealing.Keyring``); the key id is the associated
    data, so a payload cannot be passed off as encrypted under another key."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        self._keyring = Keyring(keys, active)

    @property
    def active_key_id(self) -> str:
        return self._keyring.active_key_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            key_id, sealed = self._keyring.seal(payload.SerializeToString())
            encoded.append(Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=sealed))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode_one(p) for p in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was turned on
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        try:
            plain = self._keyring.open(key_id, payload.data)
        except KeyUnknown:
            raise PayloadDecryptFailed(f"payload encrypted with unknown key {key_id!r}") from None
        except WrongKey:
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
    keys = keys_from(
        settings.payload_encryption_keys,
        settings.payload_encryption_key_id,
        keys_variable="CONVEYOR_PAYLOAD_ENCRYPTION_KEYS",
        active_variable="CONVEYOR_PAYLOAD_ENCRYPTION_KEY_ID",
    )
    return EncryptionCodec(*keys) if keys is not None else None
