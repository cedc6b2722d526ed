"""Errors the store and services raise; the API maps each to its status and JSON body in one place."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """An error with a machine-readable code and details for the API's error body."""

    status = 400

    def __init__(self, error_code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.details = details or {}


class BadRequest(ConveyorError):
    status = 400


class NotFound(ConveyorError):
    status = 404


class Conflict(ConveyorError):
    status = 409


class Unprocessable(ConveyorError):
    status = 422


class Unavailable(ConveyorError):
    """A dependency (Temporal, the database) cannot be reached; the request can be retried."""

    status = 503


class TooLarge(ConveyorError):
    status = 413


class UnsupportedMedia(ConveyorError):
    status = 415
