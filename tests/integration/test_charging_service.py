"""The charging service on SQLite and PostgreSQL, without the OCPP wire: start, meter values
across a time-of-use boundary, stop and settle; replays; caps; refused tokens; failed billing."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.documents import periods_from_document
from evbilling.adapters.db.uow import write_transaction
from evbilling.domain import events as ev
from evbilling.domain.metering import MeterSample
from evbilling.domain.periods import SessionFacts
from evbilling.domain.rating import rate
from evbilling.services import charging as charging_module
from evbilling.services.charging import ChargingService
from evbilling.services.demo import seed_demo
from evbilling.services.ports import (
    ChargerRef,
    RawFrame,
    RecordMeterValues,
    StartTransaction,
    StopTransaction,
)
from evbilling.services.session_pricing import load_context, price

CAROL = "04C4C4C4C4C4C4"
MINUTE_MS = 60_000


class ListSink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def publish(self, event: ev.Event) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[Any]:
        return [e for e in self.events if e.name == name]


def charger(engine: Engine, identity: str) -> ChargerRef:
    with engine.connect() as conn:
        row = conn.execute(select(s.chargers).where(s.chargers.c.ocpp_identity == identity)).one()
    return ChargerRef(row.id, row.operator_id, identity, row.site_id, row.ocpp_version)


def berlin_ms(day: dt.date, hour: int, minute: int) -> int:
    at = dt.datetime(day.year, day.month, day.day, hour, minute,
                     tzinfo=dt.timezone(dt.timedelta(hours=1)))  # Berlin in winter
    return int(at.timestamp() * 1000)


def frame(action: str, n: int = 1) -> RawFrame:
    return RawFrame(f"{action}-{n}", action, f'[2,"{action}-{n}","{action}",{{}}]')


@pytest.fixture
def demo(engine: Engine) -> Engine:
    with write_transaction(engine) as conn:
        seed_demo(conn)
    return engine


def run(engine: Engine, body: Callable[[ChargingService, ListSink], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        sink = ListSink()
        service = ChargingService(engine, sink)
        await service.start(sweep_every_s=3600)
        try:
            return await body(service, sink)
        finally:
            await service.stop()
    return asyncio.run(main())


DAY = dt.date(2026, 11, 20)  # a Friday in winter (UTC+1 in Berlin)


async def charge(service: ChargingService, ch: ChargerRef, *, token: str | None = CAROL,
                 start_ms: int, minutes: int, watts: int = 12_000, every: int = 5,
                 register_start: int = 1_000_000) -> tuple[str, list[Any]]:
    started = await service.start_transaction(StartTransaction(
        ch, 1, None, token, register_start, start_ms, frame("StartTransaction")))
    costs = []
    register = register_start
    for k in range(1, minutes // every + 1):
        register += watts * every * MINUTE_MS // 3_600  # mWh
        costs.append(await service.record_meter_values(RecordMeterValues(
            ch, started.ocpp_transaction_id, 1,
            (MeterSample(start_ms + k * every * MINUTE_MS, register, watts, 52_000, True),),
            frame("MeterValues", k))))
    return started.ocpp_transaction_id, costs


def test_a_session_across_a_time_of_use_boundary_is_billed_as_its_periods_rate(demo):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 16, 50)  # 0.29/kWh until 17:00, then 0.39/kWh

    async def body(service: ChargingService, sink: ListSink) -> Any:
        tx, costs = await charge(service, ch, start_ms=start, minutes=30)
        final = await service.stop_transaction(StopTransaction(
            ch, tx, start + 30 * MINUTE_MS, 1_000_000 + 6_000_000, "Local", CAROL, (),
            frame("StopTransaction")))
        return tx, costs, final

    tx, costs, final = run(demo, body)
    assert tx.isdigit()  # OCPP 1.6: an integer transaction id
    # live costs grow with every sample and the last one equals the final cost
    amounts = [c.amount_minor_incl for c in costs]
    assert amounts == sorted(amounts) and amounts[0] > 0
    # 2 kWh at 0.29 + 4 kWh at 0.39 + 0.50 start = 2.64 excl. VAT
    assert final is not None and final.final
    assert final.total_excl == Decimal("2.64")
    assert final.amount_minor_incl == costs[-1].amount_minor_incl

    with demo.connect() as conn:
        row = conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.ocpp_transaction_id == tx)).one()
        periods = periods_from_document(row.periods)
        # an independent rating of the stored periods gives the CDR's total
        ctx = load_context(conn, operator_id=row.operator_id, site_id=row.site_id,
                           connector_id=row.connector_id, driver_id=row.driver_id,
                           at=row.started_at.replace(tzinfo=dt.UTC))
    assert row.status == "completed" and row.energy_milliwh == 6_000_000
    assert berlin_ms(DAY, 17, 0) in [p.start_epoch_ms for p in periods]
    rated = rate(ctx.compiled, SessionFacts(periods, "Europe/Berlin", start,
                                            start + 30 * MINUTE_MS))
    assert Decimal(str(row.cdr["total_cost"]["excl_vat"])) == rated.total_cost.excl_vat
    assert rated.total_cost.excl_vat == Decimal("2.64")
    again = price(ctx, periods, start_ms=start, end_ms=start + 30 * MINUTE_MS)
    assert again.total_incl_vat.amount_minor == row.total_incl_minor == final.amount_minor_incl


def test_replayed_start_meter_values_and_stop_settle_once(demo):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 10, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        tx, _ = await charge(service, ch, start_ms=start, minutes=10)
        again = await service.start_transaction(StartTransaction(
            ch, 1, None, CAROL, 1_000_000, start, frame("StartTransaction")))
        stop = StopTransaction(ch, tx, start + 10 * MINUTE_MS, 3_000_000, "Local", CAROL, (),
                               frame("StopTransaction"))
        first = await service.stop_transaction(stop)
        replayed = [await service.stop_transaction(stop) for _ in range(3)]
        late = await service.record_meter_values(RecordMeterValues(
            ch, tx, 1, (MeterSample(start + 5 * MINUTE_MS, 2_000_000, 12_000, None, True),),
            frame("MeterValues", 99)))
        return tx, again, first, replayed, late, sink

    tx, again, first, replayed, late, sink = run(demo, body)
    assert again.ocpp_transaction_id == tx
    assert all(r == first for r in replayed)
    assert late is None
    assert len(sink.named("session.ended")) == 1
    with demo.connect() as conn:
        rows = conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.charger_id == ch.charger_id)).all()
    assert len(rows) == 1


def test_a_spending_cap_asks_for_the_stop_once(demo):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 10, 0)
    with write_transaction(demo) as conn:
        conn.execute(s.drivers.update().where(s.drivers.c.name == "Carol Casual")
                     .values(session_cap_minor=250))

    async def body(service: ChargingService, sink: ListSink) -> Any:
        _, costs = await charge(service, ch, start_ms=start, minutes=60)
        return costs, sink

    costs, sink = run(demo, body)
    stops = [c for c in costs if c.stop_requested]
    assert len(stops) == 1 and stops[0].amount_minor_incl >= 250
    before = costs[costs.index(stops[0]) - 1]
    assert before.amount_minor_incl < 250
    reached = sink.named("session.cap_reached")
    assert len(reached) == 1 and reached[0].cap_minor == 250


def test_a_blocked_token_is_reported_and_an_unknown_transaction_loses_nothing(demo):
    ch = charger(demo, "DEMO-CP16-001")

    async def body(service: ChargingService, sink: ListSink) -> Any:
        blocked = await service.authorize(ch, "04BLOCKED00000")
        unknown = await service.authorize(ch, "NOT-A-TOKEN")
        orphan = await service.record_meter_values(RecordMeterValues(
            ch, "424242", 1, (MeterSample(berlin_ms(DAY, 9, 0), 5_000, None, None, None),),
            frame("MeterValues")))
        stop = await service.stop_transaction(StopTransaction(
            ch, "424242", berlin_ms(DAY, 9, 5), 6_000, "Local", None, (),
            frame("StopTransaction")))
        return blocked, unknown, orphan, stop

    blocked, unknown, orphan, stop = run(demo, body)
    assert (blocked, unknown, orphan, stop) == ("Blocked", "Invalid", None, None)
    with demo.connect() as conn:
        frames = conn.execute(select(s.ocpp_messages.c.action, s.ocpp_messages.c.status)
                              .order_by(s.ocpp_messages.c.seq)).all()
    assert [tuple(f) for f in frames] == [("MeterValues", "failed"),
                                          ("StopTransaction", "failed")]


def test_a_stop_whose_billing_fails_is_kept_and_settled_later(demo, monkeypatch):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 10, 0)
    real_price = charging_module.price
    calls = {"n": 0}

    def failing_price(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("end_ms") is not None and calls["n"] == 0:
            calls["n"] += 1
            raise RuntimeError("pricing is down")
        return real_price(*args, **kwargs)

    monkeypatch.setattr(charging_module, "price", failing_price)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        tx, _ = await charge(service, ch, start_ms=start, minutes=10)
        stopped = await service.stop_transaction(StopTransaction(
            ch, tx, start + 10 * MINUTE_MS, 3_000_000, "Local", CAROL, (),
            frame("StopTransaction")))
        with demo.connect() as conn:
            status = conn.execute(select(s.charging_sessions.c.status).where(
                s.charging_sessions.c.ocpp_transaction_id == tx)).scalar_one()
        settled = await service.settle_pending()
        return stopped, status, settled

    stopped, status, settled = run(demo, body)
    assert stopped is None and status == "billing_failed" and settled == 1
    with demo.connect() as conn:
        row = conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.charger_id == ch.charger_id)).one()
    assert row.status == "completed" and row.total_incl_minor > 0


def test_a_session_that_never_reports_its_stop_is_closed_at_its_last_sample(demo):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 10, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        tx, _ = await charge(service, ch, start_ms=start, minutes=20)
        service.clock = lambda: dt.datetime(2026, 11, 23, tzinfo=dt.UTC)  # 3 days later
        closed = await service.close_timed_out()
        return tx, closed, sink

    tx, closed, sink = run(demo, body)
    assert closed == 1
    with demo.connect() as conn:
        row = conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.ocpp_transaction_id == tx)).one()
    assert row.status == "completed" and row.stop_reason == "Timeout"
    assert row.flags["missing_stop"] is True
    assert row.ended_at.replace(tzinfo=dt.UTC) == dt.datetime.fromtimestamp(
        (start + 20 * MINUTE_MS) / 1000, dt.UTC)
    assert [e.stop_reason for e in sink.named("session.ended")] == ["Timeout"]


def test_a_new_start_on_the_connector_closes_the_session_left_open_there(demo):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 10, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        first, _ = await charge(service, ch, start_ms=start, minutes=10)
        second, _ = await charge(service, ch, start_ms=start + 60 * MINUTE_MS, minutes=10,
                                 register_start=5_000_000)
        return first, second

    first, second = run(demo, body)
    with demo.connect() as conn:
        rows = {r.ocpp_transaction_id: r for r in conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.charger_id == ch.charger_id))}
    assert rows[first].status == "completed" and rows[first].stop_reason == "NoStopReported"
    assert rows[second].status == "active"


def test_a_meter_reset_keeps_counting_from_the_new_baseline(demo):
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 10, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        started = await service.start_transaction(StartTransaction(
            ch, 1, None, CAROL, 9_000_000, start, frame("StartTransaction")))
        tx = started.ocpp_transaction_id
        for k, register in enumerate((10_000_000, 500_000, 1_500_000), start=1):
            await service.record_meter_values(RecordMeterValues(
                ch, tx, 1, (MeterSample(start + k * 5 * MINUTE_MS, register, 12_000, None,
                                        True),), frame("MeterValues", k)))
        await service.stop_transaction(StopTransaction(
            ch, tx, start + 20 * MINUTE_MS, 2_500_000, "Local", CAROL, (),
            frame("StopTransaction")))
        return tx

    tx = run(demo, body)
    with demo.connect() as conn:
        row = conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.ocpp_transaction_id == tx)).one()
    # 1 kWh before the reset, 0.5 kWh counted from 0 at the reset, then 1 + 1 kWh
    assert row.energy_milliwh == 1_000_000 + 500_000 + 1_000_000 + 1_000_000
    assert row.flags["meter_resets"] == 1


def test_a_start_without_a_register_counts_from_the_first_reading(demo):
    ch = charger(demo, "DEMO-CP201-001")
    start = berlin_ms(DAY, 10, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        started = await service.start_transaction(StartTransaction(
            ch, 1, 1, CAROL, None, start, frame("TransactionEvent"), ocpp_transaction_id="tx-1",
            seq_no=0))
        for k, register in enumerate((80_000_000, 81_000_000, 82_000_000), start=1):
            await service.record_meter_values(RecordMeterValues(
                ch, "tx-1", 1, (MeterSample(start + k * 5 * MINUTE_MS, register, 12_000, None,
                                            True),), frame("TransactionEvent", k), seq_no=k))
        await service.stop_transaction(StopTransaction(
            ch, "tx-1", start + 20 * MINUTE_MS, 83_000_000, "Local", CAROL, (),
            frame("TransactionEvent", 9), seq_no=4))
        return started

    run(demo, body)
    with demo.connect() as conn:
        row = conn.execute(select(s.charging_sessions).where(
            s.charging_sessions.c.ocpp_transaction_id == "tx-1")).one()
    # the absolute register (80 kWh) is not billed: only what flowed after the first reading
    assert row.energy_milliwh == 3_000_000 and row.energy_milliwh_start == 80_000_000
    assert row.flags["start_register_unknown"] is True


def test_the_session_row_checkpoints_the_running_cost_and_catches_up_on_shutdown(demo):
    """Samples every 10 s: the row's running state is written with the first sample, then
    only once 30 s of samples have passed; the service answers the newest; stopping the
    service brings the row up to date."""
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 9, 0)

    def stored(session_id: str) -> dict[str, Any]:
        with demo.connect() as conn:
            live: dict[str, Any] = conn.execute(select(s.charging_sessions.c.live).where(
                s.charging_sessions.c.id == session_id)).scalar_one()
        return live

    async def body(service: ChargingService, sink: ListSink) -> Any:
        started = await service.start_transaction(StartTransaction(
            ch, 1, None, CAROL, 1_000_000, start, frame("StartTransaction")))
        register, seen = 1_000_000, []
        for k in range(1, 6):  # samples at 10, 20, 30, 40, 50 s
            register += 30_000
            await service.record_meter_values(RecordMeterValues(
                ch, started.ocpp_transaction_id, 1,
                (MeterSample(start + k * 10_000, register, 10_800, 47_000, True),),
                frame("MeterValues", k)))
            await service.writer.flush()
            seen.append(await asyncio.to_thread(stored, started.session_id))
        fresh = service.running_state(started.session_id)
        return started.session_id, seen, fresh

    session_id, seen, fresh = run(demo, body)
    assert [x["at_ms"] - start for x in seen] == [10_000, 10_000, 10_000, 40_000, 40_000]
    assert fresh is not None and fresh["at_ms"] - start == 50_000
    assert fresh["energy_milliwh"] == 150_000
    after = stored(session_id)  # the service has stopped: the row caught up
    assert after == fresh


def test_a_restarted_service_finds_an_idle_session_and_announces_it_again_with_the_same_id(demo):
    """Idle-fee reminders wait on timers in memory: after a restart, the session rebuilt from
    its samples publishes the same ChargingCompleted (same event id: the stored notification is
    not duplicated), which arms the reminder again."""
    ch = charger(demo, "DEMO-CP16-001")
    start = berlin_ms(DAY, 9, 0)

    async def first(service: ChargingService, sink: ListSink) -> Any:
        started = await service.start_transaction(StartTransaction(
            ch, 1, None, CAROL, 1_000_000, start, frame("StartTransaction")))
        register = 1_000_000
        for k, charging in enumerate((True, True, False, False), start=1):
            register += 30_000 if charging else 0
            await service.record_meter_values(RecordMeterValues(
                ch, started.ocpp_transaction_id, 1,
                (MeterSample(start + k * 60_000, register, 10_800 if charging else 0, 0,
                             charging),), frame("MeterValues", k)))
        return sink.named("session.charging_completed")

    async def second(service: ChargingService, sink: ListSink) -> Any:
        # the service's start already resumes in the background; this waits for the rest
        await service.resume_active()
        return sink.named("session.charging_completed")

    before = run(demo, first)
    after = run(demo, second)
    assert len(before) == 1 and len(after) == 1
    assert after[0].event_id == before[0].event_id
    assert after[0].at == before[0].at and after[0].idle_fee_starts_at == \
        before[0].idle_fee_starts_at


def test_statuses_land_on_the_right_connector_and_a_fault_is_announced(demo):
    """1.6: connector n is the n-th EVSE's connector; 2.0.1: EVSE and connector on it (here a
    second connector on EVSE 1); 0 / no connector: the charger itself."""
    from evbilling.adapters.ids import new_id
    from evbilling.services.ports import ChargerStatus

    cp16, cp201 = charger(demo, "DEMO-CP16-001"), charger(demo, "DEMO-CP201-001")
    with write_transaction(demo) as conn:
        evse1 = conn.execute(select(s.evses.c.id).where(
            s.evses.c.charger_id == cp201.charger_id, s.evses.c.ocpp_evse_id == 1)).scalar_one()
        second = new_id("con")
        conn.execute(s.connectors.insert().values(
            id=second, operator_id=cp201.operator_id, evse_id=evse1, connector_number=2,
            standard="CHADEMO", power_type="DC", max_power_w=50_000,
            created_at=dt.datetime.now(dt.UTC)))
    at = berlin_ms(DAY, 8, 0)

    async def body(service: ChargingService, sink: ListSink) -> Any:
        await service.status_changed(ChargerStatus(cp16, 2, "Charging", None, at))
        await service.status_changed(ChargerStatus(cp16, 0, "Available", None, at))
        await service.status_changed(ChargerStatus(cp201, 2, "Faulted", "OtherError", at,
                                                   evse_number=1))
        return sink.named("charger.faulted")

    faulted = run(demo, body)

    def statuses(ch: ChargerRef) -> dict[tuple[int, int], str | None]:
        with demo.connect() as conn:
            return {(r.ocpp_evse_id, r.connector_number): r.status for r in conn.execute(
                select(s.evses.c.ocpp_evse_id, s.connectors.c.connector_number,
                       s.connectors.c.status).join(s.evses, s.evses.c.id == s.connectors.c.evse_id)
                .where(s.evses.c.charger_id == ch.charger_id))}

    assert statuses(cp16) == {(1, 1): None, (2, 1): "Charging"}
    assert statuses(cp201) == {(1, 1): None, (1, 2): "Faulted", (2, 1): None}
    with demo.connect() as conn:
        assert conn.execute(select(s.chargers.c.status).where(
            s.chargers.c.id == cp16.charger_id)).scalar_one() == "Available"
    assert [(e.evse_number, e.connector_number, e.error_code) for e in faulted] == \
        [(1, 2, "OtherError")]
