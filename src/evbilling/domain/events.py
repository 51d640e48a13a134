"""What happened to a charging session, in the past tense (cosmic: events are facts).

The charging service publishes these while a session runs; notification rules, the live stream to
the driver, outgoing webhooks and e-mails consume them. Each event carries a deterministic
``event_id`` (derived from the session and what happened, never random), so a replayed OCPP
message that repeats an event produces the same id and every consumer drops the duplicate.

Amounts: ``total_excl`` / ``total_incl`` are the exact running cost (12 decimals, never rounded);
``amount_minor_incl`` is the same incl. VAT rounded once to the currency's minor unit by the
one rounding rule (``money.round_to_minor``): the number a person is shown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

#: Event names, as used by notification rules, webhooks and the live stream.
EVENT_NAMES = (
    "session.started",
    "session.cost_updated",
    "session.cost_threshold",
    "session.cap_approaching",
    "session.cap_reached",
    "session.charging_completed",
    "session.idle_fee_soon",
    "session.ended",
    "charger.faulted",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    name: ClassVar[str] = "event"
    event_id: str
    operator_id: str
    at: dt.datetime  # when it happened (charger time for meter-driven events), aware UTC


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent(Event):
    session_id: str
    driver_id: str | None
    charger_id: str | None
    currency: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(SessionEvent):
    name: ClassVar[str] = "session.started"
    token_uid: str | None
    cap_minor: int | None = None
    cap_milliwh: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CostUpdated(SessionEvent):
    """The running cost after a meter sample (also the live stream's payload)."""

    name: ClassVar[str] = "session.cost_updated"
    sample_at_ms: int  # the meter sample that caused it (live-cost delay is measured from it)
    energy_milliwh: int
    charging_ms: int
    parking_ms: int
    total_excl: Decimal
    total_incl: Decimal
    amount_minor_incl: int
    cap_minor: int | None = None
    cap_milliwh: int | None = None
    charging: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CostThresholdCrossed(SessionEvent):
    """The running cost incl. VAT went past another multiple of a rule's step."""

    name: ClassVar[str] = "session.cost_threshold"
    threshold_minor: int
    amount_minor_incl: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendingCapApproaching(SessionEvent):
    name: ClassVar[str] = "session.cap_approaching"
    percent: int  # 80
    cap_minor: int | None
    cap_milliwh: int | None
    amount_minor_incl: int
    energy_milliwh: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendingCapReached(SessionEvent):
    """The cap is reached: the charger has been told to stop."""

    name: ClassVar[str] = "session.cap_reached"
    cap_minor: int | None
    cap_milliwh: int | None
    amount_minor_incl: int
    energy_milliwh: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargingCompleted(SessionEvent):
    """The car stopped drawing power but is still plugged in; idle fees may follow."""

    name: ClassVar[str] = "session.charging_completed"
    idle_fee_starts_at: dt.datetime | None  # None: this tariff has no idle fee


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleFeeSoon(SessionEvent):
    name: ClassVar[str] = "session.idle_fee_soon"
    idle_fee_starts_at: dt.datetime
    minutes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(SessionEvent):
    name: ClassVar[str] = "session.ended"
    energy_milliwh: int
    total_excl: Decimal
    total_incl: Decimal
    amount_minor_excl: int
    amount_minor_incl: int
    stop_reason: str | None
    billed: bool  # False: stored, settlement failed and will be retried


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerFaulted(Event):
    name: ClassVar[str] = "charger.faulted"
    charger_id: str
    charger_identity: str
    connector_number: int | None
    error_code: str
    info: str | None = None
    evse_number: int | None = None  # 2.0.1: the EVSE of the connector
