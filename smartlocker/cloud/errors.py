"""One error tree for the cloud's business rules.

Every error has a stable ``type`` slug (the API turns it into an RFC 9457
``application/problem+json`` ``type``) and an HTTP-like ``status``; leaves also
subclass the built-in they resemble. Structured attributes, not just text.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CloudError",
    "ConfigError",
    "Conflict",
    "InvalidTransition",
    "NoCompartmentAvailable",
    "NotFound",
    "ValidationFailed",
]


class CloudError(Exception):
    """Root of every error the cloud's rules raise on purpose."""

    type: str = "cloud-error"
    status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = details

    @property
    def title(self) -> str:
        return str(self)


class NotFound(CloudError, LookupError):
    """A site, cabinet, compartment, parcel, command… that does not exist."""

    type = "not-found"
    status = 404


class ValidationFailed(CloudError, ValueError):
    """A request that can never succeed as given (bad size, bad deadline…)."""

    type = "validation-failed"
    status = 422


class Conflict(CloudError):
    """The request is valid but clashes with the current state."""

    type = "conflict"
    status = 409


class NoCompartmentAvailable(Conflict):
    """No enabled, free compartment fits the parcel."""

    type = "no-compartment-available"


class InvalidTransition(Conflict):
    """The parcel's lifecycle does not allow this transition from its state."""

    type = "invalid-transition"

    def __init__(self, parcel: str, from_state: str, to_state: str) -> None:
        super().__init__(
            f"parcel {parcel}: {from_state} → {to_state} is not allowed",
            parcel=parcel,
            from_state=from_state,
            to_state=to_state,
        )
        self.parcel = parcel
        self.from_state = from_state
        self.to_state = to_state


class ConfigError(CloudError, ValueError):
    """A bad setting (environment variable, key file…), named in the message."""

    type = "config-error"
