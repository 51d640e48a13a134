"""Notification rules: which notifications an event of the charging stream produces (pure).

A rule belongs to an operator and, optionally, to one driver:

* a **driver's rule** (``driver_id`` set) tells that driver about their own sessions (in-app list
  and e-mail to their address); it may not use the ``webhook`` channel nor watch chargers;
* an **operator-wide rule** (``driver_id`` None) is the operator's default for every driver
  (in-app and e-mail go to the session's driver) and its integration feed (``webhook``: the
  operator's endpoints). For an event without a driver (``charger.faulted``, a session started
  without a known driver) in-app and e-mail go to the operator's staff.
* For one event kind, a driver's own rules (active or not) **replace** the operator-wide ones
  for that driver's in-app and e-mail: a driver chooses another step for cost thresholds, or
  switches a kind off with an inactive rule. Operator webhooks are not affected.

Some events are *derived* here from the stream, never published by the charging service:
``session.cost_threshold`` (the cost incl. VAT passed another multiple of a rule's step; once per
multiple, a jump over several multiples reports the highest), ``session.cap_approaching`` (80 % of
the money or energy cap, once per session, only while still below the cap) and
``session.idle_fee_soon`` (``minutes`` before ``idle_fee_starts_at`` of a ``ChargingCompleted``; at
once if that moment has passed; dropped when charging resumes or the session ends).

Every id is derived from what happened: a derived event's id from the session and the fact, a
notification's from its event id and rule id. A replayed event therefore produces the same ids
and the store drops the duplicate by primary key; ``SessionState`` makes a replayed meter update
produce nothing at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from evbilling.domain.errors import DomainError
from evbilling.domain.events import (
    ChargerFaulted,
    ChargingCompleted,
    CostThresholdCrossed,
    CostUpdated,
    Event,
    IdleFeeSoon,
    SessionEnded,
    SessionEvent,
    SessionStarted,
    SpendingCapApproaching,
    SpendingCapReached,
)
from evbilling.domain.money import Currency, Money

#: The events a rule may watch (``session.cost_updated`` is the live stream's, never a rule's).
RULE_EVENTS = (
    "session.started",
    "session.cost_threshold",
    "session.cap_approaching",
    "session.cap_reached",
    "session.charging_completed",
    "session.idle_fee_soon",
    "session.ended",
    "charger.faulted",
)
CHANNELS = ("in_app", "email", "webhook")
DRIVER_CHANNELS = ("in_app", "email")
CAP_APPROACHING_PERCENT = 80
STEP_MINOR_MAX = 1_000_000_000  # a cost-threshold step
MINUTES_MAX = 24 * 60  # "idle fee starts in N minutes"

#: Delivery retries (e-mail and webhooks): the delay after the n-th failed attempt. 13 attempts
#: over about 3.3 days, then the delivery is ``failed`` (Stripe retries webhooks for 3 days).
RETRY_DELAYS_S = (10, 30, 120, 600, 1_800, 3_600, 7_200, 14_400, 28_800, 57_600, 86_400,
                  86_400)
RETRY_JITTER_PERMILLE_MAX = 100  # each delay varies by up to +-10 %


class InvalidNotificationRuleError(DomainError):
    code = "invalid_notification_rule"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    operator_id: str
    driver_id: str | None
    event: str
    channels: frozenset[str]
    amount_minor: int | None = None  # session.cost_threshold: the step, minor units incl. VAT
    minutes: int | None = None  # session.idle_fee_soon: how long before the idle fee starts
    active: bool = True


def check_rule(*, event: str, driver_id: str | None, channels: Sequence[str],
               amount_minor: int | None, minutes: int | None) -> None:
    """Refuse a rule that could never work (``InvalidNotificationRuleError`` naming the field).
    Precedence: event, channels, amount_minor, minutes."""
    if event not in RULE_EVENTS:
        raise InvalidNotificationRuleError("event", f"one of {', '.join(RULE_EVENTS)}")
    if driver_id is not None and event == "charger.faulted":
        raise InvalidNotificationRuleError("event", "charger.faulted is for the operator only")
    allowed = DRIVER_CHANNELS if driver_id is not None else CHANNELS
    if not channels or len(set(channels)) != len(channels) \
            or any(c not in allowed for c in channels):
        raise InvalidNotificationRuleError(
            "channels", f"one or more distinct of {', '.join(allowed)}"
            + (" (webhooks are the operator's)" if driver_id is not None else ""))
    if event == "session.cost_threshold":
        if amount_minor is None or not 1 <= amount_minor <= STEP_MINOR_MAX:
            raise InvalidNotificationRuleError(
                "amount_minor", f"the step in minor units, 1 to {STEP_MINOR_MAX}")
    elif amount_minor is not None:
        raise InvalidNotificationRuleError("amount_minor", "only for session.cost_threshold")
    if event == "session.idle_fee_soon":
        if minutes is None or not 1 <= minutes <= MINUTES_MAX:
            raise InvalidNotificationRuleError("minutes", f"1 to {MINUTES_MAX}")
    elif minutes is not None:
        raise InvalidNotificationRuleError("minutes", "only for session.idle_fee_soon")


# -- the rules of one operator ------------------------------------------------------------------
Match = tuple[tuple[Rule, bool], ...]  # (rule, overridden by the driver's own rules), by rule id


class RuleSet:
    """One operator's rules, indexed once (per cache load) for the event stream."""

    __slots__ = ("_driver", "_matches", "_operator", "_overridden", "watches_cost")

    def __init__(self, rules: Iterable[Rule]) -> None:
        operator: dict[str, list[Rule]] = {}
        driver: dict[tuple[str, str], list[Rule]] = {}
        overridden: set[tuple[str, str]] = set()
        for rule in sorted(rules, key=lambda r: r.rule_id):
            if rule.driver_id is not None:
                overridden.add((rule.driver_id, rule.event))
            if not rule.active:
                continue
            if rule.driver_id is None:
                operator.setdefault(rule.event, []).append(rule)
            else:
                driver.setdefault((rule.driver_id, rule.event), []).append(rule)
        self._operator = {k: tuple(v) for k, v in operator.items()}
        self._driver = {k: tuple(v) for k, v in driver.items()}
        self._overridden = frozenset(overridden)
        self._matches: dict[tuple[str, str | None], Match] = {}
        #: any rule that needs the running cost (the fast path of ``CostUpdated`` skips the rest)
        self.watches_cost = any(
            e == "session.cost_threshold"
            for e in (*self._operator, *(k[1] for k in self._driver)))

    def matching(self, event: str, driver_id: str | None) -> Match:
        """The active rules for ``event`` of ``driver_id``'s session, by rule id."""
        key = (event, driver_id)
        found = self._matches.get(key)
        if found is None:
            override = driver_id is not None and (driver_id, event) in self._overridden
            pairs = [(r, override) for r in self._operator.get(event, ())]
            if driver_id is not None:
                pairs += [(r, False) for r in self._driver.get((driver_id, event), ())]
            found = tuple(sorted(pairs, key=lambda p: p[0].rule_id))
            if len(self._matches) < 100_000:  # a bound: drivers x events of one operator
                self._matches[key] = found
        return found


NO_RULES = RuleSet(())


# -- per-session memory and the result of one event --------------------------------------------
@dataclass(slots=True)
class SessionState:
    """What the rules remember about a running session (kept by the service, in memory)."""

    thresholds: dict[int, int] = field(default_factory=dict)  # step -> highest multiple told
    cap_approaching: bool = False
    charging: bool = True
    idle_fee_starts_at: dt.datetime | None = None  # of the pending idle-fee reminders


@dataclass(frozen=True, slots=True)
class PlannedNotification:
    """A notification to store (and deliver): ``driver_id`` None = addressed to the operator."""

    notification_id: str
    rule_id: str
    event: Event
    driver_id: str | None
    in_app: bool
    email: bool
    webhook: bool


@dataclass(frozen=True, slots=True)
class IdleFeeTimer:
    """Evaluate ``event`` at ``event.at`` (unless charging resumes or the session ends)."""

    session_id: str
    event: IdleFeeSoon


@dataclass(frozen=True, slots=True)
class Outcome:
    derived: tuple[Event, ...] = ()  # events derived from the stream (live stream, webhooks)
    notifications: tuple[PlannedNotification, ...] = ()
    timers: tuple[IdleFeeTimer, ...] = ()  # to schedule
    cancel_timers: bool = False  # drop the session's pending idle-fee timers (before scheduling)


NOTHING = Outcome()


def evaluate(event: Event, rules: RuleSet, state: SessionState | None,
             now: dt.datetime) -> Outcome:
    """What ``event`` produces under ``rules``; updates ``state`` (the session's, or None for
    events without a session). ``now`` decides whether an idle-fee reminder is already due."""
    if isinstance(event, CostUpdated):
        return _cost_updated(event, rules, state if state is not None else SessionState())
    if isinstance(event, ChargingCompleted):
        return _charging_completed(event, rules,
                                   state if state is not None else SessionState(), now)
    if isinstance(event, IdleFeeSoon):
        return _idle_fee_soon(event, rules, state)
    if isinstance(event, SessionEnded):
        if state is not None:
            state.idle_fee_starts_at = None
        return Outcome(notifications=_notify(event, rules.matching(event.name, event.driver_id)),
                       cancel_timers=True)
    if isinstance(event, SpendingCapReached) and state is not None:
        state.cap_approaching = True
    if isinstance(event, CostThresholdCrossed):  # published by someone else: match its step
        pairs = tuple(p for p in rules.matching(event.name, event.driver_id)
                      if p[0].amount_minor and event.threshold_minor % p[0].amount_minor == 0)
        return Outcome(notifications=_notify(event, pairs))
    driver_id = event.driver_id if isinstance(event, SessionEvent) else None
    return Outcome(notifications=_notify(event, rules.matching(event.name, driver_id)))


def _cost_updated(event: CostUpdated, rules: RuleSet, state: SessionState) -> Outcome:
    cancel = False
    if event.charging != state.charging:
        state.charging = event.charging
        if event.charging and state.idle_fee_starts_at is not None:  # charging resumed
            state.idle_fee_starts_at = None
            cancel = True
    derived: list[Event] = []
    notifications: list[PlannedNotification] = []
    amount = event.amount_minor_incl
    if rules.watches_cost:
        by_step: dict[int, list[tuple[Rule, bool]]] = {}
        for pair in rules.matching("session.cost_threshold", event.driver_id):
            if pair[0].amount_minor:
                by_step.setdefault(pair[0].amount_minor, []).append(pair)
        for step, pairs in sorted(by_step.items()):
            multiple = amount // step
            if multiple < 1 or multiple <= state.thresholds.get(step, 0):
                continue
            state.thresholds[step] = multiple
            crossed = CostThresholdCrossed(
                event_id=derived_event_id(event.session_id, "cost_threshold", step, multiple),
                operator_id=event.operator_id, at=event.at, session_id=event.session_id,
                driver_id=event.driver_id, charger_id=event.charger_id, currency=event.currency,
                threshold_minor=multiple * step, amount_minor_incl=amount)
            derived.append(crossed)
            notifications += _notify(crossed, tuple(pairs))
    if not state.cap_approaching and (event.cap_minor is not None
                                      or event.cap_milliwh is not None):
        approaching = _cap_approaching(event, state)
        if approaching is not None:
            derived.append(approaching)
            notifications += _notify(approaching,
                                     rules.matching(approaching.name, event.driver_id))
    if not derived and not cancel:
        return NOTHING
    return Outcome(derived=tuple(derived), notifications=tuple(notifications),
                   cancel_timers=cancel)


def _cap_approaching(event: CostUpdated, state: SessionState) -> SpendingCapApproaching | None:
    money, energy = event.cap_minor, event.cap_milliwh
    percent = CAP_APPROACHING_PERCENT
    near = (money is not None and event.amount_minor_incl * 100 >= money * percent) or \
        (energy is not None and event.energy_milliwh * 100 >= energy * percent)
    if not near:
        return None
    state.cap_approaching = True  # once, even when the first sample is already past the cap
    reached = (money is not None and event.amount_minor_incl >= money) or \
        (energy is not None and event.energy_milliwh >= energy)
    if reached:
        return None  # session.cap_reached tells this better
    return SpendingCapApproaching(
        event_id=derived_event_id(event.session_id, "cap_approaching"),
        operator_id=event.operator_id, at=event.at, session_id=event.session_id,
        driver_id=event.driver_id, charger_id=event.charger_id, currency=event.currency,
        percent=percent, cap_minor=money, cap_milliwh=energy,
        amount_minor_incl=event.amount_minor_incl, energy_milliwh=event.energy_milliwh)


def _charging_completed(event: ChargingCompleted, rules: RuleSet, state: SessionState,
                        now: dt.datetime) -> Outcome:
    state.charging = False
    cancel = state.idle_fee_starts_at is not None  # a newer completion replaces the reminders
    state.idle_fee_starts_at = event.idle_fee_starts_at
    notifications = list(_notify(event, rules.matching(event.name, event.driver_id)))
    derived: list[Event] = []
    timers: list[IdleFeeTimer] = []
    starts = event.idle_fee_starts_at
    if starts is not None:
        pairs = rules.matching("session.idle_fee_soon", event.driver_id)
        for minutes in sorted({r.minutes for r, _ in pairs if r.minutes}):
            soon = IdleFeeSoon(
                event_id=derived_event_id(event.session_id, "idle_fee_soon", minutes,
                                          starts.isoformat()),
                operator_id=event.operator_id, at=starts - dt.timedelta(minutes=minutes),
                session_id=event.session_id, driver_id=event.driver_id,
                charger_id=event.charger_id, currency=event.currency,
                idle_fee_starts_at=starts, minutes=minutes)
            if soon.at <= now:
                derived.append(soon)
                notifications += _notify(soon, tuple(p for p in pairs
                                                     if p[0].minutes == minutes))
            else:
                timers.append(IdleFeeTimer(event.session_id, soon))
    return Outcome(derived=tuple(derived), notifications=tuple(notifications),
                   timers=tuple(timers), cancel_timers=cancel)


def _idle_fee_soon(event: IdleFeeSoon, rules: RuleSet, state: SessionState | None) -> Outcome:
    """A reminder's time has come (or it was published by someone else)."""
    if state is not None and (state.charging
                              or state.idle_fee_starts_at != event.idle_fee_starts_at):
        return NOTHING  # charging resumed, the session ended, or a newer completion
    pairs = tuple(p for p in rules.matching(event.name, event.driver_id)
                  if p[0].minutes == event.minutes)
    return Outcome(derived=(event,), notifications=_notify(event, pairs))


def _notify(event: Event, pairs: Match) -> tuple[PlannedNotification, ...]:
    """One notification per rule; the operator's webhooks get each event once."""
    if not pairs:
        return ()
    driver_id = event.driver_id if isinstance(event, SessionEvent) else None
    webhook_taken = False
    planned: list[PlannedNotification] = []
    for rule, overridden in pairs:
        in_app = "in_app" in rule.channels and not overridden
        email = "email" in rule.channels and not overridden
        webhook = "webhook" in rule.channels and rule.driver_id is None and not webhook_taken
        webhook_taken = webhook_taken or webhook
        if not (in_app or email or webhook):
            continue
        audience = rule.driver_id if rule.driver_id is not None else (
            None if overridden else driver_id)
        planned.append(PlannedNotification(
            notification_id=notification_id(event, rule.rule_id), rule_id=rule.rule_id,
            event=event, driver_id=audience, in_app=in_app, email=email, webhook=webhook))
    return tuple(planned)


# -- deterministic ids --------------------------------------------------------------------------
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, as adapters/ids.py


def derived_event_id(*parts: object) -> str:
    """The id of an event derived here (the same scheme as the charging service's ids)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f"evt_{digest}"


def notification_id(event: Event, rule_id: str) -> str:
    """``ntf_`` + the event time (10 base32 chars of epoch ms: ids sort by time, so pages are
    stable) + 88 bits of SHA-256(event id, rule id). Same event and rule, same id."""
    ms = max(0, (event.at - _EPOCH) // _MS)
    stamp = "".join(_ALPHABET[(ms >> (5 * i)) & 31] for i in range(9, -1, -1))
    digest = hashlib.sha256(f"{event.event_id}|{rule_id}".encode()).hexdigest()[:22]
    return f"ntf_{stamp}{digest}"


def delivery_id(notification_id_: str, channel: str, target: str) -> str:
    digest = hashlib.sha256(f"{notification_id_}|{channel}|{target}".encode()).hexdigest()[:32]
    return f"dlv_{digest}"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


# -- retries ------------------------------------------------------------------------------------
def retry_delay_ms(attempts: int, jitter_permille: int) -> int | None:
    """The wait after ``attempts`` failed attempts (1 = the first failed), varied by
    ``jitter_permille`` (-100..100, chosen at random by the caller, so retries of many
    deliveries spread out); None = give up."""
    if attempts < 1 or attempts > len(RETRY_DELAYS_S):
        return None
    jitter = max(-RETRY_JITTER_PERMILLE_MAX, min(RETRY_JITTER_PERMILLE_MAX, jitter_permille))
    return RETRY_DELAYS_S[attempts - 1] * (1000 + jitter)


# -- rendering ----------------------------------------------------------------------------------
_PLAIN, _DECIMAL, _TIME = 0, 1, 2
_PLANS: dict[type, tuple[tuple[str, int], ...]] = {}


def _plan(kind: type) -> tuple[tuple[str, int], ...]:
    """Each field of an event class and how it is rendered (from its annotation, once)."""
    plan = _PLANS.get(kind)
    if plan is None:
        plan = _PLANS[kind] = tuple(
            (f.name, _DECIMAL if "Decimal" in str(f.type) else
             _TIME if "datetime" in str(f.type) else _PLAIN)
            for f in dataclasses.fields(kind))
    return plan


def event_data(event: Event, *, times_as_text: bool = True) -> dict[str, Any]:
    """The event as JSON-ready values: decimals as exact strings, times RFC 3339 UTC (with
    ``times_as_text=False`` they stay aware UTC datetimes, for a JSON encoder that writes them
    the same way, faster)."""
    data: dict[str, Any] = {}
    for name, kind in _plan(type(event)):
        value = getattr(event, name)
        if value is not None and kind:
            if kind == _DECIMAL:
                text = str(value)
                value = format(value, "f") if "E" in text else text
            elif times_as_text:
                value = value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
            elif value.tzinfo is not dt.UTC:
                value = value.astimezone(dt.UTC)
        data[name] = value
    return data


def envelope(event: Event) -> dict[str, Any]:
    """The webhook body (Stripe-shaped): ``id`` (the event id: receivers deduplicate by it),
    ``type``, ``created`` (epoch seconds), ``data``."""
    return {"id": event.event_id, "type": event.name,
            "created": (event.at - _EPOCH) // dt.timedelta(seconds=1), "data": event_data(event)}


def describe(event: Event) -> tuple[str, str]:
    """A notification's title and text (times in UTC; amounts incl. VAT)."""
    if isinstance(event, SessionStarted):
        cap = _cap_text(event.currency, event.cap_minor, event.cap_milliwh)
        return ("Charging started",
                f"Your charging session started at {_time(event.at)}."
                + (f" Spending cap: {cap}." if cap else ""))
    if isinstance(event, CostThresholdCrossed):
        amount = _money(event.amount_minor_incl, event.currency)
        return (f"Cost passed {_money(event.threshold_minor, event.currency)}",
                f"Your charging session has cost {amount} so far (incl. VAT).")
    if isinstance(event, SpendingCapApproaching):
        cap = _cap_text(event.currency, event.cap_minor, event.cap_milliwh)
        return (f"{event.percent} % of your spending cap reached",
                f"{_money(event.amount_minor_incl, event.currency)} and "
                f"{_kwh(event.energy_milliwh)} so far; the cap is {cap}.")
    if isinstance(event, SpendingCapReached):
        cap = _cap_text(event.currency, event.cap_minor, event.cap_milliwh)
        return ("Spending cap reached",
                f"Your cap of {cap} is reached: charging is being stopped at "
                f"{_money(event.amount_minor_incl, event.currency)}.")
    if isinstance(event, ChargingCompleted):
        return ("Charging complete",
                "Your car has stopped charging. "
                + (f"Idle fees start at {_time(event.idle_fee_starts_at)}: please unplug."
                   if event.idle_fee_starts_at else "Please unplug when you are ready."))
    if isinstance(event, IdleFeeSoon):
        return (f"Idle fee starts in {event.minutes} minutes",
                f"Idle fees start at {_time(event.idle_fee_starts_at)}: unplug to avoid them.")
    if isinstance(event, SessionEnded):
        total = _money(event.amount_minor_incl, event.currency)
        return (f"Session ended: {total}",
                f"{_kwh(event.energy_milliwh)} charged; total {total} incl. VAT "
                f"({_money(event.amount_minor_excl, event.currency)} excl. VAT)."
                + ("" if event.billed else " The bill follows shortly."))
    if isinstance(event, ChargerFaulted):
        where = f" connector {event.connector_number}" if event.connector_number else ""
        if event.evse_number:
            where = f" EVSE {event.evse_number}{where}"
        return (f"Charger {event.charger_identity} faulted",
                f"Charger {event.charger_identity}{where} reports {event.error_code}"
                + (f": {event.info}" if event.info else "") + f" at {_time(event.at)}.")
    return (event.name, f"{event.name} at {_time(event.at)}.")


def _money(amount_minor: int, currency: str) -> str:
    return str(Money(amount_minor, Currency.of(currency)))


def _kwh(energy_milliwh: int) -> str:
    return f"{Decimal(energy_milliwh).scaleb(-6).quantize(Decimal('0.001'))} kWh"


def _cap_text(currency: str, cap_minor: int | None, cap_milliwh: int | None) -> str:
    parts = ([_money(cap_minor, currency)] if cap_minor is not None else []) + \
        ([_kwh(cap_milliwh)] if cap_milliwh is not None else [])
    return " or ".join(parts)


def _time(at: dt.datetime | None) -> str:
    return "" if at is None else at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

