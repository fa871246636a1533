"""Request and response models of the REST API: explicit, ``extra="forbid"``.

Requests name every field a client may set (no mass assignment: a client cannot
set ``state``, ``site`` of an existing object, ``created_by`` …). Responses are the
shapes the OpenAPI document promises.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from smartlocker.protocol.ids import CABINET_ID_PATTERN, COMPARTMENT_ID_PATTERN

from .pagination import PageQuery

__all__ = [
    "PARCEL_ID_PATTERN",
    "SITE_ID_PATTERN",
    "Alert",
    "AlertList",
    "AlertQuery",
    "CabinetCreate",
    "CabinetDetail",
    "CabinetList",
    "CabinetProvisioned",
    "CabinetQuery",
    "CabinetSummary",
    "Command",
    "Compartment",
    "CompartmentSpec",
    "CompartmentUpdate",
    "CredentialSet",
    "Event",
    "EventList",
    "EventQuery",
    "OccupancyPoint",
    "OccupancyQuery",
    "OccupancySeries",
    "Parcel",
    "ParcelCreate",
    "ParcelDetail",
    "ParcelExtend",
    "ParcelHistoryEntry",
    "ParcelList",
    "ParcelQuery",
    "ParcelReserved",
    "PickupRequest",
    "ResendResult",
    "Site",
    "SiteCreate",
    "SiteList",
    "SiteUpdate",
    "TelemetryBucket",
    "TelemetryQuery",
    "TelemetrySeries",
    "UnlockRequest",
    "WaitQuery",
]

SITE_ID_PATTERN = CABINET_ID_PATTERN
PARCEL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

SiteId = Annotated[str, Field(pattern=SITE_ID_PATTERN)]
CabinetId = Annotated[str, Field(pattern=CABINET_ID_PATTERN)]
CompartmentId = Annotated[str, Field(pattern=COMPARTMENT_ID_PATTERN)]
ParcelId = Annotated[str, Field(pattern=PARCEL_ID_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Size = Literal["xs", "s", "m", "l", "xl"]
NotifyChannel = Literal["email", "sms", "push", "log"]
Locale = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", examples=["en", "de-AT"])]
Contact = Annotated[str, Field(min_length=1, max_length=200)]
ParcelState = Literal["reserved", "deposited", "picked_up", "expired", "returned", "cancelled"]
CommandState = Literal["created", "sent", "succeeded", "failed", "rejected", "timed_out"]
#: A bucket width like ``5m``, ``1h``, ``1d`` (seconds s, minutes m, hours h, days d).
Bucket = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,3}[smhd]$")]


def _plausible(value: datetime) -> datetime:
    """Times the database and Python both represent (years 2000 to 2999)."""
    if not 2000 <= value.year <= 2999:
        raise ValueError("a time between the years 2000 and 2999")
    return value


#: An input time: with a zone, and within a sane range.
Moment = Annotated[AwareDatetime, AfterValidator(_plausible)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- sites ----------------------------------------------------------------------


class SiteCreate(_In):
    id: SiteId
    name: Name
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    hold_hours: Annotated[int, Field(ge=1, le=24 * 90)] = 72
    reservation_hours: Annotated[int, Field(ge=1, le=24 * 90)] = 48


class SiteUpdate(_In):
    name: Name | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    hold_hours: Annotated[int, Field(ge=1, le=24 * 90)] | None = None
    reservation_hours: Annotated[int, Field(ge=1, le=24 * 90)] | None = None


class Site(_Out):
    id: str
    name: str
    timezone: str
    hold_hours: int
    reservation_hours: int
    created_at: datetime


class SiteList(_Out):
    items: list[Site]
    next_cursor: str | None


# --- cabinets and compartments ---------------------------------------------------


class CompartmentSpec(_In):
    id: CompartmentId
    size: Size
    temperature_controlled: bool = False
    temp_min_c: Annotated[float, Field(ge=-50, le=100)] | None = None
    temp_max_c: Annotated[float, Field(ge=-50, le=100)] | None = None

    @model_validator(mode="after")
    def _range(self) -> CompartmentSpec:
        if (
            self.temp_min_c is not None
            and self.temp_max_c is not None
            and self.temp_min_c > self.temp_max_c
        ):
            raise ValueError("temp_min_c must not exceed temp_max_c")
        return self


class CabinetCreate(_In):
    id: CabinetId
    site: SiteId
    name: Name | None = None
    compartments: Annotated[list[CompartmentSpec], Field(min_length=1, max_length=200)]

    @model_validator(mode="after")
    def _unique(self) -> CabinetCreate:
        ids = [c.id for c in self.compartments]
        if len(set(ids)) != len(ids):
            raise ValueError("compartment ids must be unique")
        return self


class Compartment(_Out):
    id: str
    size: str
    enabled: bool
    out_of_service: bool
    door: Literal["open", "closed", "unknown"]
    lock: Literal["locked", "unlocked", "unknown"]
    occupancy: Literal["free", "reserved", "occupied"]
    temperature_controlled: bool
    temperature_c: float | None
    temperature_at: datetime | None
    parcel: str | None = Field(
        default=None, description="The parcel reserved for or stored in it (none when free)."
    )
    occupied_since: datetime | None = Field(
        default=None, description="When that parcel was deposited (how long it has been inside)."
    )


class CabinetSummary(_Out):
    id: str
    site: str
    name: str | None
    online: bool
    last_seen: datetime | None
    created_at: datetime


class CabinetDetail(CabinetSummary):
    agent_version: str | None
    desired_version: int
    reported_version: int
    compartments: list[Compartment]


class CabinetList(_Out):
    items: list[CabinetSummary]
    next_cursor: str | None


class CredentialSet(_Out):
    """Shown once at provisioning: what goes into the cabinet's TOML config."""

    mqtt_username: str
    mqtt_password: str
    mqtt_client_id: str
    mqtt_url: str | None = Field(description="The broker address cabinets use, if configured.")
    cloud_public_key_pem: str
    code_key_hex: str = Field(description="The cabinet's code key (hex), for offline code checks.")
    broker_registered: bool = Field(
        description="Whether the API registered the credentials with the broker itself."
    )


class CabinetProvisioned(_Out):
    cabinet: CabinetDetail
    credentials: CredentialSet


class CabinetQuery(PageQuery):
    site: SiteId | None = None


class CompartmentUpdate(_In):
    enabled: bool | None = None
    out_of_service: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> CompartmentUpdate:
        if self.enabled is None and self.out_of_service is None:
            raise ValueError("give enabled and/or out_of_service")
        return self


# --- commands ----------------------------------------------------------------------


class UnlockRequest(_In):
    reason: Annotated[str, Field(min_length=3, max_length=200)]


class WaitQuery(_In):
    wait: Annotated[
        float | None,
        Field(ge=0, le=30, description="Wait up to this many seconds for the outcome."),
    ] = None


class Command(_Out):
    id: str
    cabinet: str
    compartment: str
    action: Literal["unlock"] = "unlock"
    purpose: Literal["deposit", "pickup", "return", "operator"]
    parcel: str | None
    reason: str | None
    actor: str
    status: CommandState
    outcome: str | None
    outcome_reason: str | None
    created_at: datetime
    expires_at: datetime


# --- parcels ---------------------------------------------------------------------------


class ParcelCreate(_In):
    """Reserve a compartment: at a ``site`` (any cabinet) or at one ``cabinet``."""

    size: Size
    site: SiteId | None = None
    cabinet: CabinetId | None = None
    temperature: bool = False
    direction: Literal["inbound", "outbound"] = "inbound"
    recipient: Contact | None = Field(
        default=None, description="Where the recipient is told: address, phone or push token."
    )
    notify_channel: NotifyChannel = "log"
    locale: Locale = "en"
    courier_contact: Contact | None = Field(
        default=None, description="Told to collect the parcel if it expires."
    )
    courier_channel: NotifyChannel = "log"
    reference: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    deadline: Moment | None = None
    id: ParcelId | None = Field(default=None, description="Your own parcel id (default: random).")

    @model_validator(mode="after")
    def _where(self) -> ParcelCreate:
        if self.site is None and self.cabinet is None:
            raise ValueError("give a site or a cabinet")
        return self


class Parcel(_Out):
    id: str
    site: str
    cabinet: str
    compartment: str
    direction: Literal["inbound", "outbound"]
    size: str
    state: ParcelState
    reference: str | None
    recipient: str | None
    notify_channel: NotifyChannel
    locale: str
    deadline: datetime | None
    reserved_at: datetime
    deposited_at: datetime | None
    picked_up_at: datetime | None
    expired_at: datetime | None
    closed_at: datetime | None
    fee: str | None
    fee_currency: str | None
    created_by: str


class ParcelReserved(Parcel):
    deposit_code: str = Field(description="Shown once: the courier's (or sender's) kiosk code.")
    deposit_code_valid_until: datetime


class ParcelHistoryEntry(_Out):
    at: datetime
    from_state: str | None
    to_state: str
    actor: str
    cause: str | None


class ParcelDetail(Parcel):
    history: list[ParcelHistoryEntry]


class ParcelList(_Out):
    items: list[Parcel]
    next_cursor: str | None


class ParcelQuery(PageQuery):
    site: SiteId | None = None
    cabinet: CabinetId | None = None
    state: ParcelState | None = None
    reference: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    recipient: Contact | None = Field(default=None, description="The recipient, exactly.")


class PickupRequest(_In):
    code: Annotated[str, Field(min_length=1, max_length=40)]


class ParcelExtend(_In):
    deadline: Moment


class ResendResult(_Out):
    parcel: str
    notification: int | None = Field(
        description="The queued message (null: the parcel has no recipient contact)."
    )


class RecipientUpdate(_In):
    """Where and how the recipient is told from now on."""

    recipient: Contact | None = None
    notify_channel: NotifyChannel | None = None
    locale: Locale | None = None

    @model_validator(mode="after")
    def _something(self) -> RecipientUpdate:
        if self.recipient is None and self.notify_channel is None and self.locale is None:
            raise ValueError("give recipient, notify_channel and/or locale")
        return self


# --- notifications and webhooks ---------------------------------------------------------


class OutboundQuery(PageQuery):
    status: Literal["pending", "sent", "dead"] | None = None
    channel: Literal["email", "sms", "push", "log", "webhook"] | None = None
    parcel: ParcelId | None = None
    site: SiteId | None = None


class OutboundMessage(_Out):
    """One message to a recipient, a courier or an operator webhook (never its code)."""

    id: int
    created_at: datetime
    channel: str
    topic: str
    destination: str
    site: str | None
    parcel: str | None
    locale: str
    status: Literal["pending", "sent", "dead"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    response_status: int | None
    sent_at: datetime | None


class OutboundList(_Out):
    items: list[OutboundMessage]
    next_cursor: str | None


class WebhookCreate(_In):
    site: SiteId
    url: Annotated[str, Field(pattern=r"^https?://[^\s]{1,500}$")]
    event_types: Annotated[list[str], Field(min_length=1, max_length=20)]


class Webhook(_Out):
    id: int
    site: str
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="Shown once: verifies the signature of every delivery.")


class WebhookList(_Out):
    items: list[Webhook]
    next_cursor: str | None


# --- events, telemetry, stats, alerts -----------------------------------------------------


class EventQuery(PageQuery):
    source: Literal["cabinet", "operator"] | None = None
    site: SiteId | None = None
    cabinet: CabinetId | None = None
    compartment: CompartmentId | None = None
    type: Annotated[str, Field(pattern=r"^[a-z_.]{1,64}$")] | None = None
    since: Moment | None = None
    until: Moment | None = None


class Event(_Out):
    id: str
    source: Literal["cabinet", "operator"]
    at: datetime
    type: str
    site: str | None
    cabinet: str | None
    compartment: str | None
    actor: str | None
    detail: dict[str, object] | None


class EventList(_Out):
    items: list[Event]
    next_cursor: str | None


class TelemetryQuery(_In):
    bucket: Bucket = "5m"
    since: Moment | None = None
    until: Moment | None = None


class TelemetryBucket(_Out):
    bucket: datetime
    samples: int
    cpu_temp_c_avg: float | None
    cpu_temp_c_max: float | None
    outbox_depth_max: int | None
    compartment_temps_c: dict[str, float] = Field(
        default_factory=dict,
        description="Average temperature of each temperature-controlled compartment.",
    )


class TelemetrySeries(_Out):
    cabinet: str
    bucket: str
    items: list[TelemetryBucket]


class OccupancyQuery(_In):
    site: SiteId | None = None
    cabinet: CabinetId | None = None
    bucket: Bucket = "1h"
    since: Moment | None = None
    until: Moment | None = None


class OccupancyPoint(_Out):
    bucket: datetime
    site: str
    cabinet: str
    compartments: int
    occupied: int
    reserved: int
    dwell_avg_s: float | None = Field(
        description="Of the parcels inside during the bucket: how long each had been"
        " inside at the bucket's end (or when it left), on average, in seconds."
    )
    dwell_max_s: float | None = Field(description="The longest of those, in seconds.")


class OccupancySeries(_Out):
    bucket: str
    items: list[OccupancyPoint]


class AlertQuery(PageQuery):
    site: SiteId | None = None
    cabinet: CabinetId | None = None
    kind: (
        Literal[
            "forced_open",
            "held_open",
            "unlock_failed",
            "lock_fault",
            "temperature",
            "offline",
            "command_failed",
            "fault",
        ]
        | None
    ) = None
    open: bool | None = Field(default=None, description="Only open (true) or cleared (false).")


class Alert(_Out):
    id: int
    site: str
    cabinet: str
    compartment: str | None
    kind: str
    detail: str | None
    raised_at: datetime
    last_seen_at: datetime
    occurrences: int
    cleared_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None


class AlertList(_Out):
    items: list[Alert]
    next_cursor: str | None
