"""Which tariff version prices a session: the one in force for its connector, plan and start.

Rules (docs/api.md): a connector assignment beats a site assignment; an assignment for the
driver's plan beats a generic one (per-plan override); among equals the latest ``valid_from``
wins. The version in force is the newest one published at or before the start (a session keeps
the version it started with).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, or_, select

from evbilling.adapters.db import schema as s
from evbilling.domain.errors import DomainError
from evbilling.domain.rating import CompiledTariff, compile_tariff
from evbilling.domain.tariffs import Tariff, parse_tariff


class NoTariffInForceError(DomainError):
    code = "no_tariff_in_force"


@dataclass(frozen=True, slots=True)
class TariffInForce:
    tariff_id: str
    version_id: str
    version: int
    document: dict[str, Any]  # the stored OCPI document

    @property
    def tariff(self) -> Tariff:
        return stored_tariff(self.tariff_id, self.document)

    @property
    def compiled(self) -> CompiledTariff:
        return compile_tariff(self.tariff)


@lru_cache(maxsize=512)
def _stored(tariff_id: str, document_json: str) -> Tariff:
    return parse_tariff({**json.loads(document_json), "id": tariff_id})


def stored_tariff(tariff_id: str, document: Mapping[str, Any]) -> Tariff:
    """A stored tariff document as a domain ``Tariff`` whose id is our tariff id (the id a plan
    names). Parsed once per distinct content (a version may still be corrected while unused, so
    the content, not the version id, is the key); the same object comes back, so
    ``compile_tariff`` reuses its compiled form too."""
    return _stored(tariff_id, json.dumps(document, sort_keys=True, separators=(",", ":")))


def tariff_in_force(conn: Connection, *, operator_id: str, site_id: str,
                    connector_id: str | None, plan_id: str | None, at: dt.datetime
                    ) -> TariffInForce:
    a = s.tariff_assignments.c
    target = a.site_id == site_id
    if connector_id is not None:
        target = or_(target, a.connector_id == connector_id)
    rows = conn.execute(select(s.tariff_assignments).where(
        a.operator_id == operator_id, target, a.valid_from <= at,
        or_(a.valid_to.is_(None), a.valid_to > at),
        or_(a.plan_id.is_(None), a.plan_id == plan_id) if plan_id else a.plan_id.is_(None),
    )).fetchall()
    if not rows:
        raise NoTariffInForceError(f"no tariff is assigned to site {site_id!r} at {at.isoformat()}")

    def rank(row: Any) -> tuple[int, int, dt.datetime]:
        return (int(row.connector_id is not None and row.connector_id == connector_id),
                int(row.plan_id is not None), row.valid_from)

    best = max(rows, key=rank)
    return version_at(conn, operator_id, best.tariff_id, at)


def version_at(conn: Connection, operator_id: str, tariff_id: str, at: dt.datetime
               ) -> TariffInForce:
    """The version of a tariff in force at ``at``: the newest published at or before it; for a
    time before the first version (a quote for the past), the first."""
    v = s.tariff_versions.c
    version = conn.execute(select(s.tariff_versions).where(
        v.tariff_id == tariff_id, v.operator_id == operator_id, v.created_at <= at)
        .order_by(v.version.desc()).limit(1)).first()
    if version is None:
        version = conn.execute(select(s.tariff_versions).where(
            v.tariff_id == tariff_id, v.operator_id == operator_id)
            .order_by(v.version).limit(1)).first()
    if version is None:
        raise NoTariffInForceError(f"no tariff {tariff_id!r}")
    return TariffInForce(tariff_id, version.id, version.version, dict(version.document))
