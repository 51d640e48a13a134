"""The rules engine (domain/notification_rules.py): what each event produces, and only once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from evbilling.domain import events as ev
from evbilling.domain.notification_rules import (
    RETRY_DELAYS_S,
    InvalidNotificationRuleError,
    Outcome,
    Rule,
    RuleSet,
    SessionState,
    check_rule,
    delivery_id,
    describe,
    envelope,
    evaluate,
    event_data,
    notification_id,
    retry_delay_ms,
)

T0 = dt.datetime(2025, 3, 3, 10, 0, tzinfo=dt.UTC)
OPERATOR = "op_1"
DRIVER = "drv_1"
SESSION = "cs_1"


def rule(event: str, *, rule_id: str | None = None, driver_id: str | None = None,
         channels: tuple[str, ...] = ("in_app",), amount_minor: int | None = None,
         minutes: int | None = None, active: bool = True) -> Rule:
    return Rule(rule_id=rule_id or f"nr_{event}_{driver_id}_{amount_minor}_{minutes}",
                operator_id=OPERATOR, driver_id=driver_id, event=event,
                channels=frozenset(channels), amount_minor=amount_minor, minutes=minutes,
                active=active)


def common(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"operator_id": OPERATOR, "session_id": SESSION,
                              "driver_id": DRIVER, "charger_id": "chg_1", "currency": "EUR"}
    return {**values, **overrides}


def cost(amount_minor: int, *, at_s: int = 0, energy_milliwh: int = 1_000_000,
         charging: bool = True, cap_minor: int | None = None,
         cap_milliwh: int | None = None) -> ev.CostUpdated:
    at = T0 + dt.timedelta(seconds=at_s)
    return ev.CostUpdated(
        event_id=f"evt_cost_{at_s}", at=at, sample_at_ms=int(at.timestamp() * 1000),
        energy_milliwh=energy_milliwh, charging_ms=at_s * 1000, parking_ms=0,
        total_excl=Decimal(amount_minor) / 119, total_incl=Decimal(amount_minor) / 100,
        amount_minor_incl=amount_minor, cap_minor=cap_minor, cap_milliwh=cap_milliwh,
        charging=charging, **common())


def started() -> ev.SessionStarted:
    return ev.SessionStarted(event_id="evt_started", at=T0, token_uid="RFID1",  # noqa: S106
                             **common())


def completed(starts_in_min: int | None = 30, at_min: int = 60) -> ev.ChargingCompleted:
    at = T0 + dt.timedelta(minutes=at_min)
    return ev.ChargingCompleted(
        event_id=f"evt_completed_{at_min}", at=at,
        idle_fee_starts_at=None if starts_in_min is None
        else at + dt.timedelta(minutes=starts_in_min), **common())


def ended() -> ev.SessionEnded:
    return ev.SessionEnded(event_id="evt_ended", at=T0 + dt.timedelta(hours=2),
                           energy_milliwh=20_000_000, total_excl=Decimal("6.72268907563"),
                           total_incl=Decimal("8.00"), amount_minor_excl=672,
                           amount_minor_incl=800, stop_reason="Local", billed=True, **common())


def names(outcome: Outcome) -> list[str]:
    return [n.event.name for n in outcome.notifications]


# -- rule validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("fields, field", [
    ({"event": "session.cost_updated"}, "event"),
    ({"event": "charger.faulted", "driver_id": DRIVER}, "event"),
    ({"channels": []}, "channels"),
    ({"channels": ["sms"]}, "channels"),
    ({"channels": ["email", "email"]}, "channels"),
    ({"channels": ["webhook"], "driver_id": DRIVER}, "channels"),
    ({"event": "session.cost_threshold"}, "amount_minor"),
    ({"event": "session.cost_threshold", "amount_minor": 0}, "amount_minor"),
    ({"amount_minor": 500}, "amount_minor"),
    ({"event": "session.idle_fee_soon"}, "minutes"),
    ({"event": "session.idle_fee_soon", "minutes": 24 * 60 + 1}, "minutes"),
    ({"minutes": 5}, "minutes"),
])
def test_a_rule_that_could_never_work_is_refused_naming_the_field(fields, field):
    values = {"event": "session.started", "driver_id": None, "channels": ["in_app"],
              "amount_minor": None, "minutes": None, **fields}

    with pytest.raises(InvalidNotificationRuleError) as caught:
        check_rule(**values)

    assert caught.value.field == field
    assert caught.value.code == "invalid_notification_rule"


def test_valid_rules_of_every_kind_pass():
    check_rule(event="session.cost_threshold", driver_id=DRIVER, channels=["in_app", "email"],
               amount_minor=500, minutes=None)
    check_rule(event="session.idle_fee_soon", driver_id=None, channels=["webhook"],
               amount_minor=None, minutes=10)
    check_rule(event="charger.faulted", driver_id=None, channels=["email", "webhook"],
               amount_minor=None, minutes=None)


# -- one rule kind at a time ---------------------------------------------------------------------
def test_session_started_notifies_the_driver():
    outcome = evaluate(started(), RuleSet([rule("session.started", driver_id=DRIVER)]),
                       SessionState(), T0)

    [planned] = outcome.notifications
    assert (planned.event.name, planned.driver_id, planned.in_app) == \
        ("session.started", DRIVER, True)


def test_every_step_of_cost_is_told_once_per_multiple():
    rules = RuleSet([rule("session.cost_threshold", amount_minor=500)])
    state = SessionState()

    told = [names(evaluate(cost(amount, at_s=i), rules, state, T0))
            for i, amount in enumerate([100, 499, 500, 501, 999, 1000, 1200])]

    assert told == [[], [], ["session.cost_threshold"], [], [], ["session.cost_threshold"], []]


def test_a_jump_over_several_steps_reports_the_highest_once():
    rules = RuleSet([rule("session.cost_threshold", amount_minor=500)])
    state = SessionState()

    outcome = evaluate(cost(1_650), rules, state, T0)

    [crossed] = outcome.derived
    assert isinstance(crossed, ev.CostThresholdCrossed)
    assert (crossed.threshold_minor, crossed.amount_minor_incl) == (1_500, 1_650)
    assert names(evaluate(cost(1_900, at_s=1), rules, state, T0)) == []


def test_cap_at_80_percent_is_told_once_and_reached_is_told_when_the_service_says_so():
    rules = RuleSet([rule("session.cap_approaching"), rule("session.cap_reached")])
    state = SessionState()

    first = [names(evaluate(cost(a, at_s=a, cap_minor=1000), rules, state, T0))
             for a in (700, 799, 800, 850, 990)]
    reached = evaluate(ev.SpendingCapReached(
        event_id="evt_cap", at=T0, cap_minor=1000, cap_milliwh=None, amount_minor_incl=1000,
        energy_milliwh=5_000_000, **common()), rules, state, T0)

    assert first == [[], [], ["session.cap_approaching"], [], []]
    assert names(reached) == ["session.cap_reached"]


def test_an_energy_cap_counts_too():
    rules = RuleSet([rule("session.cap_approaching")])

    outcome = evaluate(cost(10, energy_milliwh=8_000_000, cap_milliwh=10_000_000), rules,
                       SessionState(), T0)

    [approaching] = outcome.derived
    assert isinstance(approaching, ev.SpendingCapApproaching)
    assert (approaching.percent, approaching.cap_milliwh) == (80, 10_000_000)


def test_a_first_sample_already_past_the_cap_skips_the_80_percent_warning():
    state = SessionState()

    outcome = evaluate(cost(1200, cap_minor=1000), RuleSet([rule("session.cap_approaching")]),
                       state, T0)

    assert outcome.notifications == () and state.cap_approaching


def test_cap_approaching_reaches_the_live_stream_even_without_a_rule():
    outcome = evaluate(cost(900, cap_minor=1000), RuleSet([]), SessionState(), T0)

    assert [d.name for d in outcome.derived] == ["session.cap_approaching"]
    assert outcome.notifications == ()


def test_charging_completed_and_session_ended_with_the_price():
    rules = RuleSet([rule("session.charging_completed"), rule("session.ended")])
    state = SessionState()

    done = evaluate(completed(starts_in_min=None), rules, state, T0)
    end = evaluate(ended(), rules, state, T0)

    assert names(done) == ["session.charging_completed"]
    assert names(end) == ["session.ended"] and end.cancel_timers
    title, body = describe(end.notifications[0].event)
    assert title == "Session ended: 8.00 EUR"
    assert "20.000 kWh" in body and "6.72 EUR excl. VAT" in body


def test_a_charger_fault_goes_to_the_operator():
    fault = ev.ChargerFaulted(event_id="evt_fault", operator_id=OPERATOR, at=T0,
                              charger_id="chg_1", charger_identity="CP-1", connector_number=2,
                              error_code="GroundFailure")
    rules = RuleSet([rule("charger.faulted", channels=("in_app", "email", "webhook"))])

    [planned] = evaluate(fault, rules, None, T0).notifications

    assert planned.driver_id is None  # the operator's staff
    assert (planned.in_app, planned.email, planned.webhook) == (True, True, True)
    assert describe(fault)[0] == "Charger CP-1 faulted"


def test_inactive_rules_and_rules_of_other_drivers_do_nothing():
    rules = RuleSet([rule("session.started", active=False),
                     rule("session.started", driver_id="drv_other")])

    assert evaluate(started(), rules, SessionState(), T0).notifications == ()


def test_most_running_costs_produce_nothing():
    rules = RuleSet([rule("session.started"), rule("session.ended")])
    state = SessionState()

    outcomes = {evaluate(cost(a, at_s=a), rules, state, T0) for a in range(0, 5000, 7)}

    assert outcomes == {Outcome()}


# -- who is told what --------------------------------------------------------------------------
def test_a_drivers_own_rules_replace_the_operator_defaults_for_that_driver():
    operator_default = rule("session.cost_threshold", rule_id="nr_a", amount_minor=500,
                            channels=("in_app", "webhook"))
    own = rule("session.cost_threshold", rule_id="nr_b", driver_id=DRIVER, amount_minor=1000)
    rules = RuleSet([operator_default, own])

    outcome = evaluate(cost(1000), rules, SessionState(), T0)

    by_rule = {n.rule_id: n for n in outcome.notifications}
    assert (by_rule["nr_a"].in_app, by_rule["nr_a"].webhook, by_rule["nr_a"].driver_id) == \
        (False, True, None)  # only the operator's feed
    assert (by_rule["nr_b"].in_app, by_rule["nr_b"].driver_id) == (True, DRIVER)


def test_an_inactive_own_rule_switches_the_operator_default_off():
    rules = RuleSet([rule("session.started", rule_id="nr_a"),
                     rule("session.started", rule_id="nr_b", driver_id=DRIVER, active=False)])

    assert evaluate(started(), rules, SessionState(), T0).notifications == ()


def test_each_event_goes_to_the_operator_webhooks_once_however_many_rules_ask():
    rules = RuleSet([rule("session.started", rule_id="nr_a", channels=("webhook",)),
                     rule("session.started", rule_id="nr_b", channels=("in_app", "webhook"))])

    planned = evaluate(started(), rules, SessionState(), T0).notifications

    assert [(n.rule_id, n.in_app, n.webhook) for n in planned] == [("nr_a", False, True),
                                                                   ("nr_b", True, False)]


# -- replays -------------------------------------------------------------------------------------
def test_a_replayed_stream_produces_the_same_ids_and_no_new_thresholds():
    rules = RuleSet([rule("session.started"), rule("session.cost_threshold", amount_minor=500),
                     rule("session.ended")])
    stream = [started(), cost(200, at_s=1), cost(600, at_s=2), cost(1100, at_s=3), ended()]

    def told(state: SessionState) -> list[tuple[str, str]]:
        return [(n.event.name, n.notification_id) for e in stream
                for n in evaluate(e, rules, state, T0).notifications]

    state = SessionState()
    first = told(state)
    replayed = told(state)  # the session's memory knows the thresholds told
    after_restart = told(SessionState())  # memory lost: the same ids, dropped by the store

    assert [name for name, _ in first] == ["session.started", "session.cost_threshold",
                                           "session.cost_threshold", "session.ended"]
    assert len({i for _, i in first}) == 4
    assert after_restart == first
    assert set(replayed) < set(first)
    assert "session.cost_threshold" not in [name for name, _ in replayed]


def test_notification_ids_sort_by_event_time_and_are_deterministic():
    early, late = cost(100, at_s=1), cost(100, at_s=3600)

    assert notification_id(early, "nr_1") == notification_id(early, "nr_1")
    assert notification_id(early, "nr_1") != notification_id(early, "nr_2")
    assert notification_id(early, "nr_9") < notification_id(late, "nr_1")
    assert len(notification_id(early, "nr_1")) <= 40
    assert delivery_id("ntf_1", "email", "a@b") == delivery_id("ntf_1", "email", "a@b")


# -- idle fee reminders ----------------------------------------------------------------------
def test_an_idle_fee_reminder_is_scheduled_n_minutes_before_the_fee_starts():
    rules = RuleSet([rule("session.idle_fee_soon", minutes=10),
                     rule("session.idle_fee_soon", minutes=5, driver_id=DRIVER)])
    done = completed(starts_in_min=30)

    outcome = evaluate(done, rules, SessionState(), now=done.at)

    assert outcome.notifications == ()
    assert [(t.event.minutes, t.event.at) for t in outcome.timers] == [
        (5, done.at + dt.timedelta(minutes=25)), (10, done.at + dt.timedelta(minutes=20))]


def test_a_reminder_whose_time_has_passed_is_sent_at_once():
    rules = RuleSet([rule("session.idle_fee_soon", minutes=10)])
    done = completed(starts_in_min=5)  # grace of 5 minutes: 10 minutes before is already past

    outcome = evaluate(done, rules, SessionState(), now=done.at)

    assert outcome.timers == ()
    assert names(outcome) == ["session.idle_fee_soon"]
    assert describe(outcome.notifications[0].event)[0] == "Idle fee starts in 10 minutes"


def test_a_due_reminder_is_told_unless_charging_resumed_or_the_session_ended():
    rules = RuleSet([rule("session.idle_fee_soon", minutes=10)])
    done = completed(starts_in_min=30)

    state = SessionState()
    [timer] = evaluate(done, rules, state, done.at).timers
    assert names(evaluate(timer.event, rules, state, timer.event.at)) == [
        "session.idle_fee_soon"]

    resumed = SessionState()
    evaluate(done, rules, resumed, done.at)
    resume = evaluate(cost(100, at_s=4000, charging=True), rules, resumed, done.at)
    assert resume.cancel_timers
    assert evaluate(timer.event, rules, resumed, timer.event.at).notifications == ()

    over = SessionState()
    evaluate(done, rules, over, done.at)
    assert evaluate(ended(), rules, over, done.at).cancel_timers
    assert evaluate(timer.event, rules, over, timer.event.at).notifications == ()


def test_no_idle_fee_no_reminder():
    rules = RuleSet([rule("session.idle_fee_soon", minutes=10)])

    outcome = evaluate(completed(starts_in_min=None), rules, SessionState(), T0)

    assert outcome.timers == () and outcome.notifications == ()


# -- retries ---------------------------------------------------------------------------------
def test_the_back_off_grows_to_a_day_and_gives_up_after_about_three_days():
    delays_s = [retry_delay_ms(n, 0) // 1000 for n in range(1, len(RETRY_DELAYS_S) + 1)]

    assert delays_s[:4] == [10, 30, 120, 600]
    assert delays_s == sorted(delays_s) and max(delays_s) == 86_400
    assert 3 * 86_400 <= sum(delays_s) <= 4 * 86_400
    assert retry_delay_ms(len(RETRY_DELAYS_S) + 1, 0) is None
    assert retry_delay_ms(0, 0) is None


def test_jitter_varies_a_delay_by_at_most_ten_percent():
    assert (retry_delay_ms(1, -100), retry_delay_ms(1, 100)) == (9_000, 11_000)
    assert retry_delay_ms(1, 5_000) == 11_000  # clamped


# -- rendering -------------------------------------------------------------------------------
def test_event_data_has_exact_decimal_strings_and_utc_times():
    data = event_data(cost(1234, at_s=1))

    assert data["total_incl"] == "12.34" and data["amount_minor_incl"] == 1234
    assert data["at"] == "2025-03-03T10:00:01Z" and data["sample_at_ms"] == 1_740_996_001_000


def test_the_webhook_envelope_is_stripe_shaped():
    body = envelope(started())

    assert set(body) == {"id", "type", "created", "data"}
    assert (body["id"], body["type"], body["created"]) == ("evt_started", "session.started",
                                                           int(T0.timestamp()))
