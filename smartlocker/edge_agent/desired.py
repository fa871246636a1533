"""The signed, versioned desired state: which compartments are enabled, which codes
are valid. Verified and version-checked here; persisted by the agent."""

from __future__ import annotations

from dataclasses import dataclass

from smartlocker.protocol import (
    Channel,
    CodeGrant,
    DesiredState,
    Ed25519PublicKey,
    ProtocolError,
    decode_verified,
)

__all__ = ["DesiredRefused", "DesiredView", "verify_desired"]


class DesiredRefused(ProtocolError):
    """A desired state that is authentic but not applicable (older, other cabinet)."""


@dataclass(frozen=True)
class DesiredView:
    """A desired state indexed for the agent's look-ups."""

    version: int
    enabled: dict[str, bool]
    codes: dict[str, CodeGrant]

    @classmethod
    def empty(cls) -> DesiredView:
        return cls(version=0, enabled={}, codes={})

    @classmethod
    def of(cls, state: DesiredState) -> DesiredView:
        return cls(
            version=state.version,
            enabled={c.id: c.enabled for c in state.compartments},
            codes={g.hash: g for g in state.codes},
        )

    def is_enabled(self, compartment: str) -> bool:
        """Compartments not named by the desired state are enabled."""
        return self.enabled.get(compartment, True)


def verify_desired(
    payload: bytes, *, key: Ed25519PublicKey, cabinet: str, applied_version: int
) -> DesiredState:
    """The desired state in ``payload`` if it is authentic, ours and new.

    Raises :class:`ProtocolError` (``malformed``, ``bad_signature``,
    ``wrong_cabinet``, ``stale_version``); an equal version raises
    ``already_applied``.
    """
    state = decode_verified(Channel.DESIRED, payload, key)
    if not isinstance(state, DesiredState):
        raise DesiredRefused("not a desired state", reason="malformed")
    if state.cabinet != cabinet:
        raise DesiredRefused(f"desired state for {state.cabinet!r}", reason="wrong_cabinet")
    if state.version == applied_version:
        raise DesiredRefused(f"version {state.version} already applied", reason="already_applied")
    if state.version < applied_version:
        raise DesiredRefused(
            f"version {state.version} is older than applied {applied_version}",
            reason="stale_version",
        )
    return state
