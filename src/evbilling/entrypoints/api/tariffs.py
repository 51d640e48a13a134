"""Tariffs: OCPI 2.2.1 documents, versioned; a version is immutable once a session used it.

Decimal numbers in API responses are JSON strings ("0.3949"), so no client parses a price into a
binary float; requests accept numbers or strings.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.documents import tariff_document
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.domain.errors import TariffParseError
from evbilling.domain.tariffs import Tariff, parse_tariff
from evbilling.entrypoints.api.auth import (
    EVERYONE,
    STAFF,
    CurrentPrincipal,
    audit,
    now,
    require_role,
)
from evbilling.entrypoints.api.crud import Page
from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.openapi import raises
from evbilling.entrypoints.api.resources import Strict
from evbilling.services.catalog_generation import bump_catalog_generation

router = APIRouter(prefix="/tariffs", tags=["tariffs"])


class TariffCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    document: dict[str, Any] = Field(description="OCPI 2.2.1 Tariff object")


class VersionCreate(Strict):
    document: dict[str, Any] = Field(description="OCPI 2.2.1 Tariff object")


class TariffOut(BaseModel):
    id: str
    name: str
    currency: str
    created_at: dt.datetime
    current_version: int
    document: dict[str, Any]


class TariffVersionOut(BaseModel):
    id: str
    version: int
    created_at: dt.datetime
    used: bool = Field(description="a session was priced with it: immutable")
    document: dict[str, Any]


class TariffVersions(BaseModel):
    data: list[TariffVersionOut]
    has_more: bool


async def _exact_json(request: Request) -> Any:
    """The request body with JSON numbers as exact Decimals: FastAPI's own decoding gives binary
    floats, which the OCPI parser refuses (so does this API: prices stay exact)."""
    try:
        return json.loads(await request.body(), parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError("validation_error", f"body: not valid JSON ({exc})",
                       extra={"field": "body"}) from exc


ExactJson = Annotated[Any, Depends(_exact_json)]


def parse_document(document: dict[str, Any], tariff_id: str) -> Tariff:
    """Validate an OCPI tariff body; errors name the field under ``document``."""
    doc = dict(document)
    doc.setdefault("id", tariff_id)
    try:
        return parse_tariff(doc, path="document")
    except TariffParseError as exc:
        raise ApiError("invalid_tariff", exc.message, extra={"field": exc.field}) from exc


def canonical(tariff: Tariff) -> dict[str, Any]:
    return tariff_document(tariff)


def _latest(conn: Connection, tariff_id: str) -> Any:
    return conn.execute(select(s.tariff_versions).where(s.tariff_versions.c.tariff_id == tariff_id)
                        .order_by(s.tariff_versions.c.version.desc()).limit(1)).first()


def _tariff_out(tariff: Any, version: Any) -> dict[str, Any]:
    return TariffOut(id=tariff.id, name=tariff.name, currency=tariff.currency,
                     created_at=tariff.created_at, current_version=version.version,
                     document=version.document).model_dump(mode="json")


def _get_tariff(conn: Connection, tariff_id: str, operator_id: str) -> Any:
    tariff = conn.execute(select(s.tariffs).where(
        s.tariffs.c.id == tariff_id, s.tariffs.c.operator_id == operator_id)).first()
    if tariff is None:
        raise ApiError("not_found", f"no tariff {tariff_id!r}")
    return tariff


@router.post("", status_code=201, summary="Create a tariff (version 1)",
             openapi_extra=raises("invalid_tariff"), response_model=TariffOut)
def create_tariff(body: TariffCreate, exact: ExactJson, request: Request,
                  principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    tariff_id = new_id("trf")
    parsed = parse_document(exact["document"], tariff_id)
    created = now()
    with write_transaction(request.app.state.engine) as conn:
        conn.execute(insert(s.tariffs).values(id=tariff_id, operator_id=principal.operator_id,
                                              name=body.name, currency=parsed.currency.code,
                                              created_at=created))
        conn.execute(insert(s.tariff_versions).values(
            id=new_id("trv"), operator_id=principal.operator_id, tariff_id=tariff_id,
            version=1, document=canonical(parsed), created_at=created))
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="tariffs.create", target=tariff_id, outcome="success")
        bump_catalog_generation(conn, principal.operator_id)
        return _tariff_out(_get_tariff(conn, tariff_id, principal.operator_id),
                           _latest(conn, tariff_id))


@router.get("", summary="List tariffs", response_model=Page[TariffOut])
def list_tariffs(request: Request, principal: CurrentPrincipal,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20,
                 starting_after: Annotated[str | None, Query(max_length=64)] = None
                 ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    conditions = [s.tariffs.c.operator_id == principal.operator_id]
    if starting_after:
        conditions.append(s.tariffs.c.id > starting_after)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(select(s.tariffs).where(*conditions).order_by(s.tariffs.c.id)
                            .limit(limit + 1)).fetchall()
        page = rows[:limit]
        data = [_tariff_out(t, _latest(conn, t.id)) for t in page]
    return {"data": data, "has_more": len(rows) > limit,
            "next_cursor": page[-1].id if len(rows) > limit else None}


@router.get("/{tariff_id}", summary="Get a tariff with its current version",
            response_model=TariffOut)
def get_tariff(tariff_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        return _tariff_out(_get_tariff(conn, tariff_id, principal.operator_id),
                           _latest(conn, tariff_id))


@router.get("/{tariff_id}/versions", summary="All versions of a tariff, newest first",
            response_model=TariffVersions)
def list_versions(tariff_id: str, request: Request, principal: CurrentPrincipal
                  ) -> dict[str, Any]:
    require_role(principal, EVERYONE)
    with request.app.state.engine.connect() as conn:
        _get_tariff(conn, tariff_id, principal.operator_id)
        rows = conn.execute(select(s.tariff_versions).where(
            s.tariff_versions.c.tariff_id == tariff_id).order_by(
            s.tariff_versions.c.version.desc())).fetchall()
    return {"data": [{"id": r.id, "version": r.version, "created_at": r.created_at.isoformat(),
                      "used": r.used_at is not None, "document": r.document} for r in rows],
            "has_more": False}


@router.post("/{tariff_id}/versions", status_code=201, summary="Publish a new version",
             openapi_extra=raises("invalid_tariff", "conflict"), response_model=TariffOut)
def create_version(tariff_id: str, body: VersionCreate, exact: ExactJson, request: Request,
                   principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    parsed = parse_document(exact["document"], tariff_id)
    with write_transaction(request.app.state.engine) as conn:
        tariff = _get_tariff(conn, tariff_id, principal.operator_id)
        if parsed.currency.code != tariff.currency:
            raise ApiError("validation_error", "document.currency: a tariff keeps its currency "
                           f"({tariff.currency}); create a new tariff instead",
                           extra={"field": "document.currency"})
        version = (conn.execute(select(func.max(s.tariff_versions.c.version)).where(
            s.tariff_versions.c.tariff_id == tariff_id)).scalar_one() or 0) + 1
        try:
            conn.execute(insert(s.tariff_versions).values(
                id=new_id("trv"), operator_id=principal.operator_id, tariff_id=tariff_id,
                version=version, document=canonical(parsed), created_at=now()))
        except IntegrityError as exc:
            raise ApiError("conflict", "another version was published at the same moment; "
                           "retry") from exc
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="tariffs.version", target=f"{tariff_id}@{version}", outcome="success")
        bump_catalog_generation(conn, principal.operator_id)
        return _tariff_out(tariff, _latest(conn, tariff_id))


@router.put("/{tariff_id}/versions/{version}", summary="Correct a version not used yet",
            openapi_extra=raises("invalid_tariff", "tariff_version_in_use"),
            response_model=TariffOut)
def replace_version(tariff_id: str, version: int, body: VersionCreate, exact: ExactJson,
                    request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, STAFF, write=True)
    parsed = parse_document(exact["document"], tariff_id)
    with write_transaction(request.app.state.engine) as conn:
        tariff = _get_tariff(conn, tariff_id, principal.operator_id)
        row = conn.execute(select(s.tariff_versions).where(
            s.tariff_versions.c.tariff_id == tariff_id,
            s.tariff_versions.c.version == version)).first()
        if row is None:
            raise ApiError("not_found", f"tariff {tariff_id!r} has no version {version}")
        if row.used_at is not None:
            raise ApiError("tariff_version_in_use", f"version {version} priced sessions "
                           "already and is immutable; publish a new version")
        if parsed.currency.code != tariff.currency:
            raise ApiError("validation_error", "document.currency: a tariff keeps its currency",
                           extra={"field": "document.currency"})
        conn.execute(update(s.tariff_versions).where(s.tariff_versions.c.id == row.id)
                     .values(document=canonical(parsed)))
        audit(conn, operator_id=principal.operator_id, actor=principal.actor,
              action="tariffs.replace_version", target=f"{tariff_id}@{version}",
              outcome="success")
        bump_catalog_generation(conn, principal.operator_id)
        return _tariff_out(tariff, _latest(conn, tariff_id))
