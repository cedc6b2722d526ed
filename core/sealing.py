"""AES-256-GCM under rotating keys: the one place Conveyor encrypts, for payloads and for secrets at rest.

A :class:`Keyring` holds keys by id, one of them active. New data is sealed with the active key and names
its key id, so data sealed under an older key still opens after a new key became active; a key is removed
once nothing sealed with it is left. The key id (and a context, see below) is the associated data, so
ciphertext cannot be passed off as sealed under another key or for another row.

Two users: the payload codec (``core/codec.py``, optional, ``CONVEYOR_PAYLOAD_ENCRYPTION_KEYS__<ID>``) and
:class:`Sealer`, which keeps connector configurations and webhook secrets in the store as
``aes256gcm:<key id>:<base64>`` (``CONVEYOR_SECRET_KEYS__<ID>``). Secrets at rest have no clear-text mode:
without a key the API and the worker refuse to start, and a value that does not open is an error, never
read as it stands.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from core.errors import Unavailable
from core.settings import Settings

NONCE_BYTES = 12
KEY_BYTES = 32
TOKEN_PREFIX = "aes256gcm"
"""First part of a sealed value: the algorithm, so a value says how it was sealed."""


class KeyConfigInvalid(ValueError):
    """Key settings that cannot work: no key, one that is not base64 of 32 bytes, an unknown active id."""


class KeyUnknown(LookupError):
    """Data names a key id this process does not have."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


class WrongKey(ValueError):
    """Data does not open with the key its id names: another key under that id, or tampered data."""


class Keyring:
    """AES-256-GCM keys by id; :meth:`seal` uses the active one, :meth:`open` the one the data names."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise KeyConfigInvalid(f"the active key {active!r} is not among {sorted(keys)}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active = active

    @property
    def active_key_id(self) -> str:
        return self._active

    def seal(self, plain: bytes, context: bytes = b"") -> tuple[str, bytes]:
        """``plain`` sealed under the active key: its id, and the nonce followed by the ciphertext."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._active].encrypt(nonce, plain, self._active.encode() + context)
        return self._active, nonce + sealed

    def open(self, key_id: str, sealed: bytes, context: bytes = b"") -> bytes:
        """What :meth:`seal` sealed under ``key_id`` with the same ``context``."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyUnknown(key_id)
        try:
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], key_id.encode() + context)
        except InvalidTag:
            raise WrongKey(key_id) from None


def keys_from(
    values: Mapping[str, SecretStr], active: str | None, *, keys_variable: str, active_variable: str
) -> tuple[dict[str, bytes], str] | None:
    """The keys by id that settings give as base64, and the active id (None without keys); raises
    :class:`KeyConfigInvalid` naming the environment variable at fault."""
    if not values:
        return None
    keys: dict[str, bytes] = {}
    for key_id, secret in values.items():
        try:
            key = base64.b64decode(secret.get_secret_value(), validate=True)
        except binascii.Error:
            raise KeyConfigInvalid(f"{keys_variable}__{key_id.upper()} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyConfigInvalid(
                f"{keys_variable}__{key_id.upper()} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
            )
        keys[key_id] = key
    if active is None:
        if len(keys) > 1:
            raise KeyConfigInvalid(
                f"several keys in {keys_variable}__*: name the active one in {active_variable}"
            )
        [active] = keys
    # Ids from the environment arrive in lower case; one given in a variable's value may not.
    return keys, active.lower() if active.lower() in keys else active


def new_key() -> str:
    """A fresh key for ``CONVEYOR_SECRET_KEYS__<ID>`` or ``CONVEYOR_PAYLOAD_ENCRYPTION_KEYS__<ID>``."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


class SealedValueUnreadable(Unavailable):
    """A sealed value does not open here: its key is not configured, the key is wrong, or the value was never
    sealed. The message names the value and the key id, never the value's content."""

    def __init__(self, what: str, reason: str, key_id: str | None) -> None:
        super().__init__(
            "SECRET_UNREADABLE",
            f"{what} cannot be decrypted: {reason}",
            {"key_id": key_id} if key_id is not None else {},
        )
        self.key_id = key_id


class Sealer:
    """Seals short text for the store (connector configurations, webhook secrets) under the active key.

    ``context`` names what the value belongs to (``connector:warehouse``); it is bound into the ciphertext,
    so a sealed value copied onto another row does not open there.
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    @property
    def active_key_id(self) -> str:
        return self._keyring.active_key_id

    def seal(self, plain: str, *, context: str) -> str:
        """``plain`` as ``aes256gcm:<key id>:<base64 of nonce and ciphertext>``."""
        key_id, sealed = self._keyring.seal(plain.encode(), context.encode())
        return f"{TOKEN_PREFIX}:{key_id}:{base64.b64encode(sealed).decode()}"

    def open(self, token: str, *, context: str) -> str:
        """The text :meth:`seal` sealed for ``context``; raises :class:`SealedValueUnreadable`."""
        key_id = key_id_of(token)
        if key_id is None:
            raise SealedValueUnreadable(context, "it is not a sealed value", None)
        try:
            sealed = base64.b64decode(token.rsplit(":", 1)[1], validate=True)
            return self._keyring.open(key_id, sealed, context.encode()).decode()
        except KeyUnknown:
            reason = f"it is sealed with key {key_id!r}, which CONVEYOR_SECRET_KEYS__* does not hold here"
            raise SealedValueUnreadable(context, reason, key_id) from None
        except (WrongKey, binascii.Error, UnicodeDecodeError):
            reason = f"key {key_id!r} here is not the key it was sealed with, or the value was altered"
            raise SealedValueUnreadable(context, reason, key_id) from None

    def is_current(self, token: str) -> bool:
        """Whether ``token`` is sealed under the active key (else :meth:`seal` it again to rotate)."""
        return key_id_of(token) == self._keyring.active_key_id


def key_id_of(token: str) -> str | None:
    """The key id a sealed value names; None for anything that is not one."""
    prefix, _, rest = token.partition(":")
    key_id, separator, _ = rest.partition(":")
    return key_id if prefix == TOKEN_PREFIX and separator and key_id else None


def secret_sealer(settings: Settings) -> Sealer:
    """The sealer of secrets at rest; :class:`KeyConfigInvalid` when no key is set or one is unusable."""
    keys = keys_from(
        settings.secret_keys,
        settings.secret_key_id,
        keys_variable="CONVEYOR_SECRET_KEYS",
        active_variable="CONVEYOR_SECRET_KEY_ID",
    )
    if keys is None:
        raise KeyConfigInvalid(
            "no key for secrets at rest: set CONVEYOR_SECRET_KEYS__<ID> (on the API and every worker) to "
            "base64 of 32 random bytes, e.g. the output of "
            "`python -c 'from core.sealing import new_key; print(new_key())'`. Connector credentials and "
            "webhook secrets are stored encrypted with it; `make run` keeps a development key in .data/."
        )
    return Sealer(Keyring(*keys))
