"""The one error type the API raises; the server turns it into ``{"error": {...}}``."""
from __future__ import annotations


class ApiError(Exception):
    """A refused request: HTTP status, a message for people, and the offending field if any."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def as_json(self) -> dict:
        return {"error": {"status": self.status, "message": self.message, "field": self.field}}


def not_found(kind: str, key: str) -> ApiError:
    return ApiError(404, f"no {kind} {key!r}")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", field)
