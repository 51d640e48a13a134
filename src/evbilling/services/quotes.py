"""Quotes: price a hypothetical session so drivers and staff can preview it.

site or connector -> site time zone and currency -> tariff in force for the plan and start ->
periods cut at every tariff-relevant moment -> rating (-> plan, promotions: pricing pipeline).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from evbilling.adapters.db import schema as s
from evbilling.domain.errors import DomainError
from evbilling.domain.periods import SessionFacts, epoch_ms
from evbilling.domain.profiles import synthesize_periods
from evbilling.domain.rating import RatedSession, rate
from evbilling.services.tariff_selection import TariffInForce, tariff_in_force

MAX_QUOTE_DURATION = dt.timedelta(days=7)


class UnknownLocationError(DomainError):
    code = "not_found"


class QuoteLimitError(DomainError):
    code = "validation_error"


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    operator_id: str
    site_id: str | None
    connector_id: str | None
    start_at: dt.datetime
    energy_milliwh: int
    charging_ms: int
    idle_ms: int
    plan_id: str | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    site_id: str
    time_zone: str
    currency: str
    tariff: TariffInForce
    session: SessionFacts
    rated: RatedSession


def _site_of(conn: Connection, req: QuoteRequest) -> Any:
    if req.connector_id is not None:
        row = conn.execute(
            select(s.sites).join(s.chargers, s.chargers.c.site_id == s.sites.c.id)
            .join(s.evses, s.evses.c.charger_id == s.chargers.c.id)
            .join(s.connectors, s.connectors.c.evse_id == s.evses.c.id)
            .where(s.connectors.c.id == req.connector_id,
                   s.connectors.c.operator_id == req.operator_id)).first()
        if row is None:
            raise UnknownLocationError(f"no connector {req.connector_id!r}")
        if req.site_id is not None and req.site_id != row.id:
            raise QuoteLimitError("site_id: the connector belongs to another site")
        return row
    row = conn.execute(select(s.sites).where(s.sites.c.id == req.site_id,
                                             s.sites.c.operator_id == req.operator_id)).first()
    if row is None:
        raise UnknownLocationError(f"no site {req.site_id!r}")
    return row


def quote(conn: Connection, req: QuoteRequest) -> Quote:
    if req.start_at.tzinfo is None:
        raise QuoteLimitError("start_at: give a time zone offset (e.g. Z)")
    if dt.timedelta(milliseconds=req.charging_ms + req.idle_ms) > MAX_QUOTE_DURATION:
        raise QuoteLimitError("charging_minutes + idle_minutes: at most 7 days")
    site = _site_of(conn, req)
    selected = tariff_in_force(conn, operator_id=req.operator_id, site_id=site.id,
                               connector_id=req.connector_id, plan_id=req.plan_id,
                               at=req.start_at)
    compiled = selected.compiled
    start = epoch_ms(req.start_at)
    periods = synthesize_periods(compiled, site.time_zone, start, req.charging_ms,
                                 req.energy_milliwh, req.idle_ms)
    facts = SessionFacts(periods, site.time_zone, start,
                         start + req.charging_ms + req.idle_ms)
    return Quote(site.id, site.time_zone, site.currency, selected, facts, rate(compiled, facts))


