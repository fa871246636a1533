"""The API's one error tree, and its rendering as RFC 9457 problem details.

Every error a handler raises becomes ``application/problem+json`` with a stable
``type`` (``https://smartlocker.dev/problems/<slug>``), a ``title``, the HTTP
``status`` and a ``detail``. Errors of the cloud's business rules (``CloudError``,
with its own ``type`` slug) are mapped by :func:`problem_from_exception` too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_CONTENT_TYPE",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Problem",
    "ProblemFieldError",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "ValidationFailed",
    "problem_type",
]

PROBLEM_BASE = "https://smartlocker.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_type(slug: str) -> str:
    """The ``type`` URI of a problem slug."""
    return PROBLEM_BASE + slug


class ProblemFieldError(BaseModel):
    """One invalid input field (from pydantic's validation)."""

    model_config = ConfigDict(extra="forbid")

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Stable URI naming the kind of problem.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="Invalid fields (validation problems only)."
    )
    retry_after: int | None = Field(
        default=None, description="Seconds to wait before retrying (rate limits)."
    )


class ApiError(Exception):
    """Root of the errors the API answers with; each leaf fixes a status and a slug."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, *, slug: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        if slug is not None:
            self.slug = slug  # type: ignore[misc]

    def problem(self) -> Problem:
        return Problem(
            type=problem_type(self.slug), title=self.title, status=self.status, detail=self.detail
        )

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ApiError, ValueError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class ValidationFailed(BadRequest):
    """The body, the query or a path parameter does not match its model."""

    slug = "validation"
    title = "Invalid input"

    def __init__(self, detail: str, errors: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = [
            ProblemFieldError(
                loc=[p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
                msg=str(e.get("msg", "invalid")),
                type=str(e.get("type", "invalid")),
            )
            for e in errors or []
        ]

    def problem(self) -> Problem:
        problem = super().problem()
        problem.errors = self.errors
        return problem


class Unauthorized(ApiError, PermissionError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="smartlocker"'}


class Forbidden(ApiError, PermissionError):
    status = 403
    slug = "forbidden"
    title = "Not allowed for this API key"


class NotFound(ApiError, LookupError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(ApiError):
    status = 409
    slug = "conflict"
    title = "Conflict with the current state"


class Unprocessable(ApiError, ValueError):
    status = 422
    slug = "unprocessable"
    title = "Cannot be done"


class RateLimited(ApiError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, slug: str | None = None):
        super().__init__(detail, slug=slug)
        self.retry_after = max(1, int(retry_after))

    def problem(self) -> Problem:
        problem = super().problem()
        problem.retry_after = self.retry_after
        return problem

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(ApiError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"
