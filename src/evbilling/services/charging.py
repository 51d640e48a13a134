"""Charging sessions reported by chargers: start, meter values (live cost), stop and settle.

The OCPP gateway calls ``ChargingService`` through ``ports.ChargingPort``. The service keeps one
``_Live`` object per active session in memory (the incremental period builder
``domain.metering.SessionMeter``, the incremental ``SessionRater`` and the pricing context read
once at the start), so a meter sample costs O(1) in the session's length: the new periods are
rated, the open one is previewed (``snapshot_with``), the pipeline adds plan, promotions and
VAT. The database sees each sample once, through the group-commit writer (one transaction per
few milliseconds of traffic, never one per sample).

Durability and idempotency:
* StartTransaction: the session row (and the 1.6 transaction number) is committed before the
  answer. A replayed start (same charger, connector and start instant; 2.0.1: same
  transactionId) returns the first answer.
* MeterValues: samples are keyed by (session, instant): a replay inserts nothing and the
  builder ignores samples at or before the last one (the register carries their energy).
* StopTransaction: the raw frame is committed first, then the session is settled: periods
  rebuilt from every stored sample (sorted, so a late or out-of-order delivery gives the same
  CDR), priced by the pipeline from scratch, CDR and totals stored, all in one transaction. If
  settlement fails the session is marked ``billing_failed`` and the frame stays ``received``;
  ``settle_pending`` retries. The gateway always acknowledges the stop.
* A stop for a settled session returns the stored final cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.documents import periods_document, storable
from evbilling.adapters.db.group_commit import GroupCommitWriter, PreparedWrite
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.domain import events as ev
from evbilling.domain.idle import idle_fee_starts_ms
from evbilling.domain.metering import MeterSample, SessionMeter, periods_from_samples
from evbilling.domain.money import Money
from evbilling.domain.periods import ChargingPeriod, from_epoch_ms
from evbilling.domain.pricing import PricedSession, RunningPricer, RunningTotals
from evbilling.domain.rating import SessionRater
from evbilling.services.ports import (
    BootInfo,
    ChargerCommands,
    ChargerRef,
    ChargerStatus,
    EventSink,
    LiveCost,
    RecordMeterValues,
    StartTransaction,
    StopTransaction,
    TokenStatus,
    TransactionStarted,
)
from evbilling.services.session_pricing import (
    PricingContext,
    load_context,
    price,
    running_pricer,
)
from evbilling.services.settlement_posting import post_session, start_refusal

logger = logging.getLogger(__name__)

#: An active session that has not reported for this long is closed at its last sample.
SESSION_TIMEOUT = dt.timedelta(hours=48)
#: The session row's running state trails the samples by at most this much sample time.
LIVE_CHECKPOINT_MS = 30_000
#: Active sessions whose live state is rebuilt when the service starts (newest first).
MAX_RESUMED_AT_START = 50_000
#: Limits (TigerBeetle style): a session longer than this is refused further samples.
MAX_SAMPLES_PER_MESSAGE = 1_000
CAP_WARNING_PERCENT = 80


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def event_id(*parts: object) -> str:
    """A deterministic event id: the same facts give the same id (replays deduplicate)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f"evt_{digest}"


@dataclass(slots=True)
class _Live:
    """An active session in memory."""

    session_id: str
    operator_id: str
    driver_id: str | None
    charger: ChargerRef
    ocpp_transaction_id: str
    token_uid: str | None
    start_ms: int
    energy_milliwh_start: int | None  # None: not known yet (taken from the first sample)
    ctx: PricingContext
    meter: SessionMeter
    rater: SessionRater
    pricer: RunningPricer
    cap_minor: int | None
    cap_milliwh: int | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    charging: bool = True
    stop_requested: bool = False
    last_seq_no: int | None = None
    last_cost: LiveCost | None = None
    checkpoint_at_ms: int | None = None  # sample time of the session row's running state
    idle_since: tuple[int, int] | None = None  # rebuilt idle: (charging end ms, energy mWh)
    closed: list[ChargingPeriod] = field(default_factory=list)  # as fed to the rater
    charging_ms_closed: int = 0
    parking_ms_closed: int = 0
    flags: dict[str, Any] = field(default_factory=dict)

    def feed(self, periods: tuple[ChargingPeriod, ...]) -> None:
        """Closed periods from the meter go to the rater (once) and the running totals."""
        self.rater.add_all(periods)
        self.closed.extend(periods)
        for p in periods:
            self.charging_ms_closed += p.time_ms
            self.parking_ms_closed += p.parking_ms


@dataclass(frozen=True, slots=True)
class SettledSession:
    session_id: str
    cost: LiveCost
    priced: PricedSession | None
    replayed: bool


class UnknownTransactionError(LookupError):
    """A transaction message names a transaction this central system never started."""


class ChargingService:
    """Implements ``ports.ChargingPort`` (see the module doc)."""

    def __init__(self, engine: Engine, events: EventSink, *,
                 writer: GroupCommitWriter | None = None,
                 commands: ChargerCommands | None = None,
                 clock: Callable[[], dt.datetime] = _utc_now,
                 session_timeout: dt.timedelta = SESSION_TIMEOUT) -> None:
        self.engine = engine
        self.events = events
        self.writer = writer or GroupCommitWriter(engine)
        self.commands = commands
        self.clock = clock
        self.session_timeout = session_timeout
        self._live: dict[tuple[str, str], _Live] = {}
        self._by_session: dict[str, _Live] = {}
        self._sweeper: asyncio.Task[None] | None = None
        dialect = engine.dialect.name
        samples = s.meter_samples
        if dialect == "postgresql":
            insert_sample: Any = postgresql.insert(samples).on_conflict_do_nothing()
        else:
            insert_sample = sqlite.insert(samples).on_conflict_do_nothing()
        self._insert_sample = PreparedWrite(insert_sample)  # the hot writes: driver-level
        c = s.charging_sessions.c
        self._update_live = PreparedWrite(update(s.charging_sessions).where(
            c.id == bindparam("b_id"), c.status == "active").values(
            energy_milliwh=bindparam("b_energy"), last_sample_at=bindparam("b_at"),
            live=bindparam("b_live"), last_seq_no=bindparam("b_seq")))

    # -- life cycle ------------------------------------------------------------------------
    async def start(self, *, sweep_every_s: float = 60.0) -> None:
        self.writer.start()
        await self.settle_pending()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(sweep_every_s),
                                                               name="session-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for live in list(self._by_session.values()):  # the rows catch up with the samples
            at_ms = live.meter.last_at_ms
            if live.last_cost is not None and live.checkpoint_at_ms != at_ms:
                self._checkpoint(live, live.last_cost, at_ms)
        await self.writer.stop()

    # -- tokens ----------------------------------------------------------------------------
    async def authorize(self, charger: ChargerRef, id_token: str) -> TokenStatus:
        status, _driver = await asyncio.to_thread(self._token, charger.operator_id, id_token)
        return status

    def _token(self, operator_id: str, uid: str) -> tuple[TokenStatus, str | None]:
        with self.engine.connect() as conn:
            row = conn.execute(select(s.tokens.c.status, s.tokens.c.driver_id).where(
                s.tokens.c.operator_id == operator_id, s.tokens.c.uid == uid)).first()
            if row is None:
                return "Invalid", None
            status: TokenStatus = {"ACTIVE": "Accepted", "BLOCKED": "Blocked",
                                   "EXPIRED": "Expired"}.get(row.status, "Invalid")  # type: ignore[assignment]
            # ledger: an empty wallet or a fleet account at its credit limit may not start
            if status == "Accepted" and row.driver_id is not None and start_refusal(
                    conn, operator_id, row.driver_id, self.clock()) is not None:
                status = "Blocked"
        return status, row.driver_id

    # -- start -----------------------------------------------------------------------------
    async def start_transaction(self, cmd: StartTransaction) -> TransactionStarted:
        if cmd.ocpp_transaction_id is not None:
            known = self._live.get((cmd.charger.charger_id, cmd.ocpp_transaction_id))
            if known is not None:
                return TransactionStarted(known.session_id, known.ocpp_transaction_id,
                                          "Accepted")
        result, live, previous = await asyncio.to_thread(self._start_sync, cmd)
        for old in previous:  # a session left open on this connector: it ended unreported
            await self._close_unreported(old)
        if live is not None:
            self._remember(live)
            self.events.publish(ev.SessionStarted(
                event_id=event_id(live.session_id, "started"), operator_id=live.operator_id,
                at=from_epoch_ms(live.start_ms), session_id=live.session_id,
                driver_id=live.driver_id, charger_id=live.charger.charger_id,
                currency=live.ctx.currency, token_uid=live.token_uid,
                cap_minor=live.cap_minor, cap_milliwh=live.cap_milliwh))
        return result

    def _start_sync(self, cmd: StartTransaction
                    ) -> tuple[TransactionStarted, _Live | None, list[str]]:
        ch = cmd.charger
        started_at = from_epoch_ms(cmd.started_at_ms)
        c = s.charging_sessions.c
        with write_transaction(self.engine) as conn:
            # idempotency: the same start seen before
            query = select(s.charging_sessions).where(c.charger_id == ch.charger_id)
            if cmd.ocpp_transaction_id is not None:
                query = query.where(c.ocpp_transaction_id == cmd.ocpp_transaction_id)
            else:
                query = query.where(c.started_at == started_at,
                                    c.energy_milliwh_start == cmd.energy_milliwh_start)
            existing = conn.execute(query).first()
            answer: TokenStatus = "Accepted"
            driver_id: str | None = None
            if cmd.id_token is not None:
                answer, driver_id = self._token(ch.operator_id, cmd.id_token)
            if existing is not None:
                return (TransactionStarted(existing.id, existing.ocpp_transaction_id, answer),
                        None, [])
            connector_id = self._connector_id(conn, ch, cmd.evse_number, cmd.connector_number)
            previous = [r.id for r in conn.execute(
                select(c.id).where(c.charger_id == ch.charger_id, c.status == "active",
                                   c.connector_id == connector_id,
                                   c.started_at < started_at))] if connector_id else []
            ctx = load_context(conn, operator_id=ch.operator_id, site_id=ch.site_id,
                               connector_id=connector_id, driver_id=driver_id, at=started_at)
            cap_minor = cap_milliwh = None
            if driver_id is not None:
                caps = conn.execute(select(s.drivers.c.session_cap_minor,
                                           s.drivers.c.session_cap_milliwh)
                                    .where(s.drivers.c.id == driver_id)).one()
                cap_minor, cap_milliwh = caps.session_cap_minor, caps.session_cap_milliwh
            session_id = new_id("cs")
            now = self.clock()
            conn.execute(insert(s.charging_sessions).values(
                id=session_id, operator_id=ch.operator_id, driver_id=driver_id,
                site_id=ch.site_id, connector_id=connector_id,
                plan_id=ctx.plan.id if ctx.has_plan else None,
                tariff_version_id=ctx.tariff.version_id, started_at=started_at,
                ended_at=None, energy_milliwh=0, periods=[], currency=ctx.currency,
                status="active", charger_id=ch.charger_id, token_uid=cmd.id_token,
                ocpp_transaction_id=cmd.ocpp_transaction_id,
                energy_milliwh_start=cmd.energy_milliwh_start, cap_minor=cap_minor,
                cap_milliwh=cap_milliwh, last_seq_no=cmd.seq_no,
                flags=None if answer == "Accepted" else {"token_status": answer},
                created_at=now))
            tx_id = cmd.ocpp_transaction_id
            if tx_id is None:
                number = conn.execute(insert(s.ocpp_transaction_numbers).values(
                    session_id=session_id)).inserted_primary_key
                tx_id = str(number[0]) if number is not None else session_id
                conn.execute(update(s.charging_sessions).where(c.id == session_id)
                             .values(ocpp_transaction_id=tx_id))
            conn.execute(update(s.tariff_versions).where(
                s.tariff_versions.c.id == ctx.tariff.version_id,
                s.tariff_versions.c.used_at.is_(None)).values(used_at=now))
            self._store_frame(conn, ch, cmd.frame, session_id, "processed")
        live = self._new_live(session_id=session_id, charger=ch, tx_id=tx_id,
                              driver_id=driver_id, token_uid=cmd.id_token,
                              start_ms=cmd.started_at_ms,
                              energy_start=cmd.energy_milliwh_start, ctx=ctx,
                              cap_minor=cap_minor, cap_milliwh=cap_milliwh,
                              seq_no=cmd.seq_no)
        return TransactionStarted(session_id, tx_id, answer), live, previous

    @staticmethod
    def _connector_id(conn: Connection, ch: ChargerRef, evse_number: int | None,
                      connector_number: int) -> str | None:
        """1.6: connectorId n is the n-th EVSE's connector 1; 2.0.1: evse id + connector."""
        evse = evse_number if evse_number is not None else connector_number
        connector = connector_number if evse_number is not None else 1
        row = conn.execute(select(s.connectors.c.id).join(
            s.evses, s.evses.c.id == s.connectors.c.evse_id).where(
            s.evses.c.charger_id == ch.charger_id, s.evses.c.ocpp_evse_id == evse,
            s.connectors.c.connector_number == connector)).first()
        return None if row is None else str(row.id)

    def _new_live(self, *, session_id: str, charger: ChargerRef, tx_id: str,
                  driver_id: str | None, token_uid: str | None, start_ms: int,
                  energy_start: int | None, ctx: PricingContext, cap_minor: int | None,
                  cap_milliwh: int | None, seq_no: int | None) -> _Live:
        return _Live(
            session_id=session_id, operator_id=charger.operator_id, driver_id=driver_id,
            charger=charger, ocpp_transaction_id=tx_id, token_uid=token_uid,
            start_ms=start_ms, energy_milliwh_start=energy_start, ctx=ctx,
            meter=SessionMeter(ctx.compiled, ctx.time_zone, start_ms, energy_start or 0),
            rater=SessionRater(ctx.compiled, ctx.time_zone, start_ms),
            pricer=running_pricer(ctx, start_ms=start_ms), cap_minor=cap_minor,
            cap_milliwh=cap_milliwh, last_seq_no=seq_no)

    def _remember(self, live: _Live) -> None:
        self._live[(live.charger.charger_id, live.ocpp_transaction_id)] = live
        self._by_session[live.session_id] = live

    def _forget(self, live: _Live) -> None:
        self._live.pop((live.charger.charger_id, live.ocpp_transaction_id), None)
        self._by_session.pop(live.session_id, None)

    # -- meter values ----------------------------------------------------------------------
    async def record_meter_values(self, cmd: RecordMeterValues) -> LiveCost | None:
        if cmd.ocpp_transaction_id is None or not cmd.samples:
            return None
        live = await self._find(cmd.charger, cmd.ocpp_transaction_id)
        if live is None:
            await self._store_orphan(cmd.charger, cmd.frame, "unknown transaction")
            return None
        async with live.lock:
            if self._by_session.get(live.session_id) is not live:
                return None  # settled meanwhile
            return self._apply_samples(live, cmd.samples, cmd.seq_no)

    def _apply_samples(self, live: _Live, samples: Sequence[MeterSample],
                       seq_no: int | None) -> LiveCost | None:
        if seq_no is not None:
            if live.last_seq_no is not None and seq_no > live.last_seq_no + 1:
                gaps = live.flags.setdefault("seq_no_gaps", [])
                if len(gaps) < 100:
                    gaps.append([live.last_seq_no + 1, seq_no - 1])
            if live.last_seq_no is None or seq_no > live.last_seq_no:
                live.last_seq_no = seq_no
        if live.energy_milliwh_start is None:
            self._start_register_from(live, samples)
        meter = live.meter
        accepted: list[MeterSample] = []
        for sample in sorted(samples[:MAX_SAMPLES_PER_MESSAGE], key=lambda x: x.at_ms):
            update_ = meter.add(sample)
            if update_.closed:
                live.feed(update_.closed)
            if update_.accepted:
                accepted.append(sample)
                if update_.meter_reset:
                    live.flags["meter_resets"] = meter.meter_resets
            elif update_.late:
                live.flags["late_samples"] = live.flags.get("late_samples", 0) + 1
        if not accepted:
            return live.last_cost
        for sample in accepted:
            self.writer.submit_nowait(self._insert_sample, {
                "session_id": live.session_id, "at_ms": sample.at_ms,
                "operator_id": live.operator_id, "energy_milliwh": sample.energy_milliwh,
                "power_w": sample.power_w, "current_ma": sample.current_ma,
                "soc_percent": None, "charging": sample.charging})
        last = accepted[-1]
        cost = self._live_cost(live, last.at_ms)
        charging = self._is_charging(live, last)
        checkpoint = (live.checkpoint_at_ms is None or charging != live.charging
                      or last.at_ms - live.checkpoint_at_ms >= LIVE_CHECKPOINT_MS)
        common: dict[str, Any] = {
            "operator_id": live.operator_id, "session_id": live.session_id,
            "driver_id": live.driver_id, "charger_id": live.charger.charger_id,
            "currency": live.ctx.currency}
        at = from_epoch_ms(last.at_ms)
        time_ms, parking_ms = self._durations(live)
        self.events.publish(ev.CostUpdated(
            event_id=event_id(live.session_id, "cost", last.at_ms), at=at,
            sample_at_ms=last.at_ms, energy_milliwh=meter.energy_milliwh, charging_ms=time_ms,
            parking_ms=parking_ms, total_excl=cost.total_excl, total_incl=cost.total_incl,
            amount_minor_incl=cost.amount_minor_incl, cap_minor=live.cap_minor,
            cap_milliwh=live.cap_milliwh, charging=charging, **common))
        if live.charging and not charging:
            self.events.publish(self._charging_completed(live, last.at_ms,
                                                         meter.energy_milliwh))
        live.charging = charging
        if not live.stop_requested and self._cap_reached(live, cost):
            live.stop_requested = True
            self.events.publish(ev.SpendingCapReached(
                event_id=event_id(live.session_id, "cap_reached"), at=at,
                cap_minor=live.cap_minor, cap_milliwh=live.cap_milliwh,
                amount_minor_incl=cost.amount_minor_incl,
                energy_milliwh=meter.energy_milliwh, **common))
            cost = replace(cost, stop_requested=True)
            checkpoint = True
        if checkpoint:
            self._checkpoint(live, cost, last.at_ms)
        live.last_cost = cost
        return cost

    @staticmethod
    def _charging_completed(live: _Live, at_ms: int, energy_milliwh: int
                            ) -> ev.ChargingCompleted:
        """The car stopped drawing power at ``at_ms`` (the same event, id included, when a
        restarted service finds the session idle in its samples)."""
        starts = idle_fee_starts_ms(live.ctx.compiled, live.ctx.time_zone,
                                    session_start_ms=live.start_ms,
                                    energy_milliwh=energy_milliwh, charging_end_ms=at_ms)
        return ev.ChargingCompleted(
            event_id=event_id(live.session_id, "charging_completed", at_ms),
            at=from_epoch_ms(at_ms),
            idle_fee_starts_at=None if starts is None else from_epoch_ms(starts),
            operator_id=live.operator_id, session_id=live.session_id,
            driver_id=live.driver_id, charger_id=live.charger.charger_id,
            currency=live.ctx.currency)

    def _checkpoint(self, live: _Live, cost: LiveCost, at_ms: int) -> None:
        """The session row's running state (API readers on any node, the timeout sweeper,
        recovery of the sequence check): written with the first sample, then at most every
        ``LIVE_CHECKPOINT_MS`` of sample time and at every change of state. The samples are
        the record; the row trails them by less than the interval."""
        live.checkpoint_at_ms = at_ms
        self.writer.submit_nowait(self._update_live, {
            "b_id": live.session_id, "b_energy": live.meter.energy_milliwh,
            "b_at": from_epoch_ms(live.meter.last_at_ms), "b_seq": live.last_seq_no,
            "b_live": _live_document(cost, at_ms)})

    def running_state(self, session_id: str) -> dict[str, Any] | None:
        """The newest running cost of a session live in this process (the document the row's
        ``live`` column holds, fresher than the row's checkpoint), or None."""
        live = self._by_session.get(session_id)
        cost = None if live is None else live.last_cost
        if live is None or cost is None:
            return None
        return _live_document(cost, live.meter.last_at_ms)

    def _start_register_from(self, live: _Live, samples: Sequence[MeterSample]) -> None:
        """The charger gave no register at the start: the first reading is the start (the
        energy before it is unknown and not billed; the session is flagged)."""
        first = min((x for x in samples if x.energy_milliwh is not None),
                    key=lambda x: x.at_ms, default=None)
        if first is None or first.energy_milliwh is None:
            return
        live.energy_milliwh_start = first.energy_milliwh
        live.meter = SessionMeter(live.ctx.compiled, live.ctx.time_zone, live.start_ms,
                                  first.energy_milliwh)
        live.flags["start_register_unknown"] = True
        c = s.charging_sessions.c
        self.writer.submit(update(s.charging_sessions).where(c.id == live.session_id).values(
            energy_milliwh_start=first.energy_milliwh))

    @staticmethod
    def _is_charging(live: _Live, sample: MeterSample) -> bool:
        pending = live.meter.pending()
        if sample.charging is not None:
            return sample.charging
        if pending is not None:
            return pending.time_ms > 0 and pending.parking_ms == 0
        return live.charging

    @staticmethod
    def _durations(live: _Live) -> tuple[int, int]:
        """Charging and idle time so far (closed periods plus the open one)."""
        pending = live.meter.pending()
        time_ms, parking_ms = live.charging_ms_closed, live.parking_ms_closed
        if pending is not None:
            time_ms += pending.time_ms
            parking_ms += pending.parking_ms
        return time_ms, parking_ms

    @staticmethod
    def _cap_reached(live: _Live, cost: LiveCost) -> bool:
        return ((live.cap_minor is not None and cost.amount_minor_incl >= live.cap_minor)
                or (live.cap_milliwh is not None
                    and cost.energy_milliwh >= live.cap_milliwh))

    def _live_cost(self, live: _Live, at_ms: int) -> LiveCost:
        pending = live.meter.pending()
        rated = live.rater.snapshot_with(pending, at_ms)
        return _running_cost(live, live.pricer.totals(live.closed, pending, rated),
                             live.meter.energy_milliwh)

    # -- stop ------------------------------------------------------------------------------
    async def stop_transaction(self, cmd: StopTransaction) -> LiveCost | None:
        frame_seq = await asyncio.to_thread(self._store_frame_now, cmd.charger, cmd.frame,
                                            None, "received")
        try:
            live = await self._find(cmd.charger, cmd.ocpp_transaction_id)
        except Exception:  # noqa: BLE001 - never fail a stop; the frame is stored
            logger.exception("looking up transaction %s failed", cmd.ocpp_transaction_id)
            return None
        if live is None:
            settled = await asyncio.to_thread(self._stored_result, cmd.charger,
                                              cmd.ocpp_transaction_id)
            if settled is None:
                await asyncio.to_thread(self._mark_frame, frame_seq, "failed",
                                        "unknown transaction")
            else:
                await asyncio.to_thread(self._mark_frame, frame_seq, "processed", None)
            return settled
        async with live.lock:
            if self._by_session.get(live.session_id) is not live:
                return await asyncio.to_thread(self._stored_result, cmd.charger,
                                               cmd.ocpp_transaction_id)
            if cmd.samples:
                try:
                    self._apply_samples(live, cmd.samples, cmd.seq_no)
                except Exception:  # noqa: BLE001 - the stop still counts
                    logger.exception("stop samples of %s refused", live.session_id)
            await self.writer.flush()
            return await self._settle(live, end_ms=cmd.stopped_at_ms,
                                      energy_end=cmd.energy_milliwh_stop,
                                      reason=cmd.reason, frame_seq=frame_seq)

    async def _settle(self, live: _Live, *, end_ms: int, energy_end: int | None,
                      reason: str | None, frame_seq: int | None) -> LiveCost | None:
        try:
            settled = await asyncio.to_thread(self._settle_sync, live.session_id, end_ms,
                                              energy_end, reason, frame_seq, live.flags)
        except Exception as exc:  # noqa: BLE001 - stored; settle_pending retries
            logger.exception("settling session %s failed", live.session_id)
            await asyncio.to_thread(self._mark_failed, live.session_id, end_ms, energy_end,
                                    reason, frame_seq, repr(exc))
            self._forget(live)
            self.events.publish(ev.SessionEnded(
                event_id=event_id(live.session_id, "ended"), operator_id=live.operator_id,
                at=from_epoch_ms(end_ms), session_id=live.session_id, driver_id=live.driver_id,
                charger_id=live.charger.charger_id, currency=live.ctx.currency,
                energy_milliwh=live.meter.energy_milliwh, total_excl=Decimal(0),
                total_incl=Decimal(0), amount_minor_excl=0, amount_minor_incl=0,
                stop_reason=reason, billed=False))
            return None
        self._forget(live)
        if not settled.replayed and settled.priced is not None:
            self.events.publish(ev.SessionEnded(
                event_id=event_id(live.session_id, "ended"), operator_id=live.operator_id,
                at=from_epoch_ms(end_ms), session_id=live.session_id, driver_id=live.driver_id,
                charger_id=live.charger.charger_id, currency=live.ctx.currency,
                energy_milliwh=settled.cost.energy_milliwh, total_excl=settled.cost.total_excl,
                total_incl=settled.cost.total_incl,
                amount_minor_excl=settled.priced.total_excl_vat.amount_minor,
                amount_minor_incl=settled.cost.amount_minor_incl, stop_reason=reason,
                billed=True))
        return settled.cost

    def _settle_sync(self, session_id: str, end_ms: int, energy_end: int | None,
                     reason: str | None, frame_seq: int | None,
                     flags: dict[str, Any] | None) -> SettledSession:
        c = s.charging_sessions.c
        with write_transaction(self.engine) as conn:
            query = select(s.charging_sessions).where(c.id == session_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).one()
            if row.status == "completed":
                if frame_seq is not None:
                    self._mark_frame_in(conn, frame_seq, "processed", None)
                return SettledSession(session_id, _stored_cost(row), None, True)
            started_at = row.started_at.replace(tzinfo=dt.UTC) \
                if row.started_at.tzinfo is None else row.started_at
            start_ms = int(started_at.timestamp() * 1000)
            ctx = load_context(conn, operator_id=row.operator_id, site_id=row.site_id,
                               connector_id=row.connector_id, driver_id=row.driver_id,
                               at=started_at)
            samples = [MeterSample(r.at_ms, r.energy_milliwh, r.power_w, r.current_ma,
                                   r.charging)
                       for r in conn.execute(select(s.meter_samples).where(
                           s.meter_samples.c.session_id == session_id))]
            end_ms = max(end_ms, start_ms)
            periods = periods_from_samples(ctx.compiled, ctx.time_zone, start_ms,
                                           _start_register(row, samples), samples, end_ms,
                                           energy_end)
            priced = price(ctx, periods, start_ms=start_ms, end_ms=end_ms)
            energy = sum(p.energy_milliwh for p in periods)
            cost = LiveCost(session_id=session_id, ocpp_transaction_id=row.ocpp_transaction_id,
                            currency=ctx.currency, energy_milliwh=energy,
                            total_excl=priced.total_excl_vat.amount,
                            total_incl=priced.total_incl_vat.amount,
                            amount_minor_incl=priced.total_incl_vat.amount_minor, final=True)
            # ledger: the price is posted in this transaction (services/settlement_posting.py)
            posting = post_session(
                conn, operator_id=row.operator_id, session_id=session_id,
                driver_id=row.driver_id, plan=ctx.plan if ctx.has_plan else None,
                currency=ctx.currency, total_excl_minor=priced.total_excl_vat.amount_minor,
                total_incl_minor=priced.total_incl_vat.amount_minor,
                ended_at=from_epoch_ms(end_ms), time_zone=ctx.time_zone, at=self.clock())
            all_flags = {**(row.flags or {}), **(flags or {}), **posting.flags}
            conn.execute(update(s.charging_sessions).where(c.id == session_id).values(
                status="completed", ended_at=from_epoch_ms(end_ms), energy_milliwh=energy,
                periods=periods_document(periods), stop_reason=reason,
                total_excl_minor=priced.total_excl_vat.amount_minor,
                total_incl_minor=priced.total_incl_vat.amount_minor,
                flags=all_flags or None,
                live={"amount_minor_incl": cost.amount_minor_incl,
                      "total_excl": str(cost.total_excl), "total_incl": str(cost.total_incl),
                      "energy_milliwh": energy, "at_ms": end_ms, "final": True},
                cdr=cdr_document(row, ctx, periods, priced, end_ms)))
            if row.driver_id is not None:  # redemptions count against the promotions' caps
                for applied in priced.applied_promotions:
                    conn.execute(insert(s.promotion_redemptions).values(
                        id=new_id("rd"), operator_id=row.operator_id,
                        promotion_id=applied.promotion_id, driver_id=row.driver_id,
                        session_id=session_id,
                        amount_minor=applied.discount_incl_vat.amount_minor,
                        created_at=self.clock()))
            if frame_seq is not None:
                self._mark_frame_in(conn, frame_seq, "processed", None)
        return SettledSession(session_id, cost, priced, False)

    def _mark_failed(self, session_id: str, end_ms: int, energy_end: int | None,
                     reason: str | None, frame_seq: int | None, error: str) -> None:
        c = s.charging_sessions.c
        with write_transaction(self.engine) as conn:
            conn.execute(update(s.charging_sessions).where(
                c.id == session_id, c.status == "active").values(
                status="billing_failed", ended_at=from_epoch_ms(end_ms), stop_reason=reason,
                flags={"settle_error": error[:500], "energy_milliwh_stop": energy_end}))
            if frame_seq is not None:
                self._mark_frame_in(conn, frame_seq, "received", error[:500])

    def _stored_result(self, charger: ChargerRef, tx_id: str) -> LiveCost | None:
        c = s.charging_sessions.c
        with self.engine.connect() as conn:
            row = conn.execute(select(s.charging_sessions).where(
                c.charger_id == charger.charger_id, c.ocpp_transaction_id == tx_id)).first()
        if row is None or row.status != "completed":
            return None
        return _stored_cost(row)

    async def settle_pending(self) -> int:
        """Retry settling sessions whose settlement failed (at start, then every sweep)."""
        rows = await asyncio.to_thread(self._billing_failed)
        done = 0
        for row in rows:
            flags = row.flags or {}
            try:
                await asyncio.to_thread(
                    self._settle_sync, row.id, _ms(row.ended_at),
                    flags.get("energy_milliwh_stop"), row.stop_reason, None, None)
                done += 1
            except Exception:  # noqa: BLE001 - stays billing_failed, retried later
                logger.exception("settling session %s failed again", row.id)
        return done

    def _billing_failed(self) -> list[Any]:
        c = s.charging_sessions.c
        with self.engine.connect() as conn:
            return list(conn.execute(select(s.charging_sessions).where(
                c.status == "billing_failed").limit(1000)))

    # -- missing stops -----------------------------------------------------------------------
    async def _sweep(self, every_s: float) -> None:
        try:
            await self.resume_active()
        except Exception:  # noqa: BLE001 - sessions still resume on their next message
            logger.exception("resuming active sessions failed")
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.close_timed_out()
                await self.settle_pending()
            except Exception:  # noqa: BLE001 - the sweeper keeps going
                logger.exception("session sweep failed")

    async def close_timed_out(self) -> int:
        """Close active sessions silent for longer than the timeout, at their last sample."""
        cutoff = self.clock() - self.session_timeout
        c = s.charging_sessions.c

        def stale() -> list[str]:
            with self.engine.connect() as conn:
                return [r.id for r in conn.execute(select(c.id).where(
                    c.status == "active",
                    ((c.last_sample_at < cutoff)
                     | (c.last_sample_at.is_(None) & (c.started_at < cutoff)))).limit(1000))]

        ids = await asyncio.to_thread(stale)
        for session_id in ids:
            await self._close_unreported(session_id, reason="Timeout")
        return len(ids)

    async def _close_unreported(self, session_id: str, reason: str = "NoStopReported") -> None:
        live = self._by_session.get(session_id) or await self._resume_by_id(session_id)
        if live is None:
            return
        async with live.lock:
            if self._by_session.get(session_id) is not live:
                return
            live.flags["missing_stop"] = True
            await self.writer.flush()
            await self._settle(live, end_ms=live.meter.last_at_ms, energy_end=None,
                               reason=reason, frame_seq=None)

    # -- status, boot ----------------------------------------------------------------------
    async def status_changed(self, cmd: ChargerStatus) -> None:
        await asyncio.to_thread(self._status_sync, cmd)
        if cmd.status == "Faulted":
            self.events.publish(ev.ChargerFaulted(
                event_id=event_id(cmd.charger.charger_id, "faulted",
                                  *(() if cmd.evse_number is None else (cmd.evse_number,)),
                                  cmd.connector_number, cmd.at_ms),
                operator_id=cmd.charger.operator_id, at=from_epoch_ms(cmd.at_ms),
                charger_id=cmd.charger.charger_id, charger_identity=cmd.charger.identity,
                connector_number=cmd.connector_number, evse_number=cmd.evse_number,
                error_code=cmd.error_code or "OtherError", info=cmd.info))

    def _status_sync(self, cmd: ChargerStatus) -> None:
        at = from_epoch_ms(cmd.at_ms)
        with write_transaction(self.engine) as conn:
            if not cmd.connector_number:
                conn.execute(update(s.chargers).where(s.chargers.c.id == cmd.charger.charger_id)
                             .values(status=cmd.status[:20], last_seen_at=at))
                return
            connector_id = self._connector_id(conn, cmd.charger, cmd.evse_number,
                                              cmd.connector_number)
            if connector_id is not None:
                conn.execute(update(s.connectors).where(s.connectors.c.id == connector_id)
                             .values(status=cmd.status[:20], status_at=at,
                                     error_code=(cmd.error_code or None)))

    async def booted(self, cmd: BootInfo) -> None:
        def write() -> None:
            with write_transaction(self.engine) as conn:
                conn.execute(update(s.chargers).where(
                    s.chargers.c.id == cmd.charger.charger_id).values(
                    boot={"vendor": cmd.vendor, "model": cmd.model, "serial": cmd.serial,
                          "firmware": cmd.firmware, "reason": cmd.reason, "at_ms": cmd.at_ms},
                    last_seen_at=from_epoch_ms(cmd.at_ms)))
        await asyncio.to_thread(write)

    async def seen(self, charger: ChargerRef, at_ms: int) -> None:
        return None  # heartbeats are not worth a write each; boot and status record presence

    # -- driver / staff actions ------------------------------------------------------------
    async def set_cap(self, session_id: str, *, cap_minor: int | None,
                      cap_milliwh: int | None) -> None:
        def write() -> None:
            with write_transaction(self.engine) as conn:
                conn.execute(update(s.charging_sessions).where(
                    s.charging_sessions.c.id == session_id).values(
                    cap_minor=cap_minor, cap_milliwh=cap_milliwh))
        await asyncio.to_thread(write)
        live = self._by_session.get(session_id)
        if live is not None:
            live.cap_minor, live.cap_milliwh = cap_minor, cap_milliwh
            cost = live.last_cost
            if cost is not None and not live.stop_requested and self._cap_reached(live, cost):
                live.stop_requested = True
                await self.request_stop(session_id)

    async def request_stop(self, session_id: str) -> bool:
        live = self._by_session.get(session_id) or await self._resume_by_id(session_id)
        if live is None or self.commands is None:
            return False
        return await self.commands.stop_transaction(live.charger.identity,
                                                    live.ocpp_transaction_id)

    def live_cost(self, session_id: str) -> LiveCost | None:
        live = self._by_session.get(session_id)
        return None if live is None else live.last_cost

    # -- finding and resuming sessions -----------------------------------------------------
    async def _find(self, charger: ChargerRef, tx_id: str) -> _Live | None:
        live = self._live.get((charger.charger_id, tx_id))
        if live is not None:
            return live
        c = s.charging_sessions.c

        def lookup() -> str | None:
            with self.engine.connect() as conn:
                row = conn.execute(select(c.id).where(
                    c.charger_id == charger.charger_id, c.ocpp_transaction_id == tx_id,
                    c.status == "active")).first()
            return None if row is None else str(row.id)

        session_id = await asyncio.to_thread(lookup)
        return None if session_id is None else await self._resume_by_id(session_id)

    async def _resume_by_id(self, session_id: str) -> _Live | None:
        """Rebuild an active session's state after a restart from its stored samples."""
        live = await asyncio.to_thread(self._resume_sync, session_id)
        if live is None:
            return None
        known = self._by_session.get(session_id)
        if known is not None:
            return known
        self._remember(live)
        if live.idle_since is not None:  # re-arms the idle-fee reminder (same event id)
            self.events.publish(self._charging_completed(live, *live.idle_since))
        return live

    async def resume_active(self, limit: int = MAX_RESUMED_AT_START) -> int:
        """After a start: rebuild every active session's live state from its samples (newest
        first), so timers such as idle-fee reminders are armed again without waiting for the
        charger's next message."""
        c = s.charging_sessions.c

        def active() -> list[str]:
            with self.engine.connect() as conn:
                return [r.id for r in conn.execute(
                    select(c.id).where(c.status == "active")
                    .order_by(c.last_sample_at.desc()).limit(limit))]

        resumed = 0
        for session_id in await asyncio.to_thread(active):
            if session_id in self._by_session:
                continue
            try:
                if await self._resume_by_id(session_id) is not None:
                    resumed += 1
            except Exception:  # noqa: BLE001 - one broken session does not stop the others
                logger.exception("resuming session %s failed", session_id)
        return resumed

    def _resume_sync(self, session_id: str) -> _Live | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(s.charging_sessions, s.chargers.c.ocpp_identity,
                                      s.chargers.c.ocpp_version).join(
                s.chargers, s.chargers.c.id == s.charging_sessions.c.charger_id).where(
                s.charging_sessions.c.id == session_id,
                s.charging_sessions.c.status == "active")).first()
            if row is None:
                return None
            started_at = row.started_at.replace(tzinfo=dt.UTC) \
                if row.started_at.tzinfo is None else row.started_at
            ctx = load_context(conn, operator_id=row.operator_id, site_id=row.site_id,
                               connector_id=row.connector_id, driver_id=row.driver_id,
                               at=started_at)
            samples = [MeterSample(r.at_ms, r.energy_milliwh, r.power_w, r.current_ma,
                                   r.charging)
                       for r in conn.execute(select(s.meter_samples).where(
                           s.meter_samples.c.session_id == session_id)
                           .order_by(s.meter_samples.c.at_ms))]
        charger = ChargerRef(row.charger_id, row.operator_id, row.ocpp_identity, row.site_id,
                             row.ocpp_version)
        live = self._new_live(session_id=session_id, charger=charger,
                              tx_id=row.ocpp_transaction_id, driver_id=row.driver_id,
                              token_uid=row.token_uid, start_ms=int(started_at.timestamp()
                                                                    * 1000),
                              energy_start=_start_register(row, samples)
                              if samples else row.energy_milliwh_start, ctx=ctx,
                              cap_minor=row.cap_minor, cap_milliwh=row.cap_milliwh,
                              seq_no=row.last_seq_no)
        live.flags.update(row.flags or {})
        for sample in samples:
            update_ = live.meter.add(sample)
            if update_.closed:
                live.feed(update_.closed)
            if update_.accepted:
                charging = self._is_charging(live, sample)
                if live.charging and not charging:
                    live.idle_since = (sample.at_ms, live.meter.energy_milliwh)
                elif charging:
                    live.idle_since = None
                live.charging = charging
        if samples:
            live.last_cost = self._live_cost(live, live.meter.last_at_ms)
            live.checkpoint_at_ms = live.meter.last_at_ms
        return live

    # -- raw frames --------------------------------------------------------------------------
    def _store_frame(self, conn: Connection, charger: ChargerRef, frame: Any,
                     session_id: str | None, status: str, error: str | None = None) -> int:
        result = conn.execute(insert(s.ocpp_messages).values(
            operator_id=charger.operator_id, charger_id=charger.charger_id,
            ocpp_version=charger.ocpp_version, unique_id=frame.unique_id[:64],
            action=frame.action[:40], frame=frame.text, session_id=session_id,
            received_at=self.clock(), status=status, error=error))
        key = result.inserted_primary_key
        return int(key[0]) if key is not None else 0

    def _store_frame_now(self, charger: ChargerRef, frame: Any, session_id: str | None,
                         status: str) -> int:
        with write_transaction(self.engine) as conn:
            return self._store_frame(conn, charger, frame, session_id, status)

    async def _store_orphan(self, charger: ChargerRef, frame: Any, error: str) -> None:
        await asyncio.to_thread(self._store_orphan_sync, charger, frame, error)

    def _store_orphan_sync(self, charger: ChargerRef, frame: Any, error: str) -> None:
        with write_transaction(self.engine) as conn:
            self._store_frame(conn, charger, frame, None, "failed", error)

    def _mark_frame(self, seq: int, status: str, error: str | None) -> None:
        with write_transaction(self.engine) as conn:
            self._mark_frame_in(conn, seq, status, error)

    @staticmethod
    def _mark_frame_in(conn: Connection, seq: int, status: str, error: str | None) -> None:
        conn.execute(update(s.ocpp_messages).where(s.ocpp_messages.c.seq == seq)
                     .values(status=status, error=error))


# -- helpers ------------------------------------------------------------------------------------
def _start_register(row: Any, samples: Sequence[MeterSample]) -> int:
    """The register at the start: as the charger reported it, else the first reading."""
    if row.energy_milliwh_start is not None:
        return int(row.energy_milliwh_start)
    readings = sorted((x.at_ms, x.energy_milliwh) for x in samples
                      if x.energy_milliwh is not None)
    return readings[0][1] if readings else 0


def _ms(value: dt.datetime) -> int:
    aware = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
    return int(aware.timestamp() * 1000)


def _running_cost(live: _Live, totals: RunningTotals, energy: int) -> LiveCost:
    cur = live.ctx.plan.currency
    return LiveCost(session_id=live.session_id, ocpp_transaction_id=live.ocpp_transaction_id,
                    currency=live.ctx.currency, energy_milliwh=energy,
                    total_excl=Money(totals.total_excl_minor, cur).amount,
                    total_incl=Money(totals.total_incl_minor, cur).amount,
                    amount_minor_incl=totals.total_incl_minor)


def _live_document(cost: LiveCost, at_ms: int) -> dict[str, Any]:
    return {"amount_minor_incl": cost.amount_minor_incl, "total_excl": str(cost.total_excl),
            "total_incl": str(cost.total_incl), "energy_milliwh": cost.energy_milliwh,
            "at_ms": at_ms}


def _stored_cost(row: Any) -> LiveCost:
    live = row.live or {}
    return LiveCost(session_id=row.id, ocpp_transaction_id=row.ocpp_transaction_id,
                    currency=row.currency, energy_milliwh=row.energy_milliwh,
                    total_excl=Decimal(live.get("total_excl", "0")),
                    total_incl=Decimal(live.get("total_incl", "0")),
                    amount_minor_incl=row.total_incl_minor or 0, final=True)


def cdr_document(row: Any, ctx: PricingContext, periods: tuple[ChargingPeriod, ...],
                 priced: PricedSession, end_ms: int) -> dict[str, Any]:
    """The session's CDR: OCPI 2.2.1 totals of the rating (exact, 12 decimals), the exact
    periods they were rated from, and the billed amounts (pipeline lines)."""
    rated = priced.rated
    document: dict[str, Any] = storable({
        "id": row.id,
        "start_date_time": row.started_at.isoformat() if row.started_at else None,
        "end_date_time": from_epoch_ms(end_ms).isoformat(),
        "currency": ctx.currency,
        "tariff": {"tariff_id": ctx.tariff.tariff_id, "version_id": ctx.tariff.version_id,
                   "version": ctx.tariff.version, "role": ctx.tariff.role},
        "time_zone": ctx.time_zone,
        "periods": periods_document(periods),
        "total_cost": {"excl_vat": rated.total_cost.excl_vat,
                       "incl_vat": rated.total_cost.incl_vat},
        "total_energy": rated.total_energy,
        "total_energy_cost": _price_json(rated.total_energy_cost),
        "total_time": rated.total_time,
        "total_time_cost": _price_json(rated.total_time_cost),
        "total_parking_time": rated.total_parking_time,
        "total_parking_cost": _price_json(rated.total_parking_cost),
        "total_fixed_cost": _price_json(rated.total_fixed_cost),
        "billing": {
            "plan_id": priced.plan_id,
            "total_excl_vat_minor": priced.total_excl_vat.amount_minor,
            "total_incl_vat_minor": priced.total_incl_vat.amount_minor,
            "lines": [{"kind": str(line.kind), "code": str(line.code),
                       "description": line.description,
                       "amount_excl_vat_minor": line.amount_excl_vat.amount_minor,
                       "amount_incl_vat_minor": line.amount_incl_vat.amount_minor,
                       "source_id": line.source_id} for line in priced.lines],
        },
    })
    return document


def _price_json(value: Any) -> dict[str, Any]:
    return {"excl_vat": value.excl_vat, "incl_vat": value.incl_vat}
