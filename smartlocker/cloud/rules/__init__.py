"""The business rules, in one place: ingest and the API call these, never re-implement them.

* :mod:`.lifecycle`: the parcel transition table and the one function that applies it.
* :mod:`.allocation`: the smallest free compartment that fits, safe under concurrency.
* :mod:`.codes`: pickup/deposit codes (CSPRNG, keyed hashes only).
* :mod:`.parcels`: reserve, deposit, pickup, cancel, expire, return, extend, resend.
* :mod:`.commands`: the command lifecycle table.
* :mod:`.alerts`, :mod:`.presence`, :mod:`.clock` (a cabinet's wrong clock), :mod:`.fees`.

Every rule takes ``now``; none reads the clock.
"""

from .alerts import AlertKind, ack_alert, clear_alert, clear_alerts, raise_alert
from .allocation import SIZES, Allocation, allocate
from .clock import ClockCheck, ClockPolicy, check_clock, clock_correction
from .codes import issue_code, revoke_codes
from .commands import COMMAND_TRANSITIONS, COMMAND_TTL, CommandRow, CommandStatus
from .fees import FeePolicy, compute_fee, load_fee_policy
from .lifecycle import (
    ACTIVE_STATES,
    TRANSITIONS,
    ParcelState,
    Transition,
    apply_transition,
    is_allowed,
)
from .parcels import (
    Deposit,
    Reservation,
    cancel_parcel,
    expire_overdue,
    extend_deadline,
    record_deposit,
    record_late_pickup,
    record_pickup,
    record_return,
    request_opening,
    resend_pickup_code,
    reserve_parcel,
)

__all__ = [
    "ACTIVE_STATES",
    "COMMAND_TRANSITIONS",
    "COMMAND_TTL",
    "SIZES",
    "TRANSITIONS",
    "AlertKind",
    "Allocation",
    "ClockCheck",
    "ClockPolicy",
    "CommandRow",
    "CommandStatus",
    "Deposit",
    "FeePolicy",
    "ParcelState",
    "Reservation",
    "Transition",
    "ack_alert",
    "allocate",
    "apply_transition",
    "cancel_parcel",
    "check_clock",
    "clear_alert",
    "clear_alerts",
    "clock_correction",
    "compute_fee",
    "expire_overdue",
    "extend_deadline",
    "is_allowed",
    "issue_code",
    "load_fee_policy",
    "raise_alert",
    "record_deposit",
    "record_late_pickup",
    "record_pickup",
    "record_return",
    "request_opening",
    "resend_pickup_code",
    "reserve_parcel",
    "revoke_codes",
]
