"""Generic, tenant-safe CRUD endpoints for the plain records of the platform.

Each ``Resource`` declares its table, schemas, who may read and write it, how rows belong to a
driver, and which references must point at rows of the same operator. Every query is filtered by
the caller's ``operator_id`` (and, for drivers, by their ``driver_id``), so a row of another tenant
is indistinguishable from a missing one (404). Lists use keyset pagination on the time-sortable id.
Business operations with rules of their own (tariff versions, quotes, plan changes) have their own
routers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.entrypoints.api.auth import (
    CurrentPrincipal,
    Principal,
    Role,
    audit,
    now,
    require_role,
)
from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.openapi import raises
from evbilling.services.catalog_generation import bump_catalog_generation

MAX_PAGE = 100
Row = TypeVar("Row", bound=BaseModel)


class Page(BaseModel, Generic[Row]):
    """A page of a list: ``next_cursor`` is the ``starting_after`` of the next page."""

    data: list[Row]
    has_more: bool
    next_cursor: str | None = None

Prepare = Callable[[dict[str, Any], Principal, Connection, bool], dict[str, Any]]


@dataclass(frozen=True)
class Resource:
    name: str  # URL segment, e.g. "sites"
    table: Table
    prefix: str  # id prefix, e.g. "site"
    create: type[BaseModel]
    update: type[BaseModel] | None
    out: type[BaseModel]
    read_roles: frozenset[Role]
    write_roles: frozenset[Role]
    #: How a row belongs to a driver: the column holding the driver id ("id" for drivers).
    driver_column: str | None = None
    #: body field -> table it must reference within the same operator
    references: dict[str, Table] = field(default_factory=dict)
    filters: tuple[str, ...] = ()
    deletable: bool = True
    prepare: Prepare | None = None  # turn a validated body into column values
    drivers_write_own: bool = False
    audited: bool = False
    #: Checks a PATCH against the stored row (rules that span stored and new values).
    check_update: Callable[[Any, dict[str, Any]], None] | None = None
    lowercase_filters: tuple[str, ...] = ()  # filters on columns stored in lower case
    #: Quotes read these rows from a per-process snapshot: every write bumps the operator's
    #: catalog generation in its transaction (``services/catalog_generation.py``).
    catalog: bool = False
    #: Problem codes of ``prepare`` / ``check_update`` beyond the generic ones (OpenAPI).
    write_codes: tuple[str, ...] = ()


def _scoped(res: Resource, principal: Principal) -> list[Any]:
    c = res.table.c
    conditions = [c.operator_id == principal.operator_id]
    if principal.is_driver:
        if res.driver_column is None:
            return conditions  # operator-wide public records (sites, plans, tariffs)
        conditions.append(c[res.driver_column] == principal.driver_id)
    return conditions


def _check_references(res: Resource, values: dict[str, Any], principal: Principal,
                      conn: Connection) -> None:
    for name, table in res.references.items():
        ref = values.get(name)
        if ref is None:
            continue
        found = conn.execute(select(table.c.id).where(
            table.c.id == ref, table.c.operator_id == principal.operator_id)).first()
        if found is None:
            raise ApiError("unknown_reference", f"{name}: no such record: {ref!r}",
                           extra={"field": name})


def _out(res: Resource, row: Any) -> dict[str, Any]:
    model = res.out.model_validate(dict(row._mapping))
    return model.model_dump(mode="json")


def build_router(res: Resource) -> APIRouter:
    router = APIRouter(prefix=f"/{res.name}", tags=[res.name])
    c = res.table.c
    write_roles = res.write_roles | ({Role.DRIVER} if res.drivers_write_own else set())

    def check_write(principal: Principal) -> None:
        require_role(principal, frozenset(write_roles), write=True)
        if principal.is_driver and res.driver_column is None:
            raise ApiError("forbidden", "drivers may not change this record")

    @router.get("", summary=f"List {res.name}", response_model=Page[res.out])  # type: ignore[name-defined]
    def list_rows(request: Request, principal: CurrentPrincipal,
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
                  starting_after: Annotated[str | None, Query(max_length=64)] = None
                  ) -> dict[str, Any]:
        require_role(principal, res.read_roles)
        conditions = _scoped(res, principal)
        for name in res.filters:
            value = request.query_params.get(name)
            if value is not None:
                if name in res.lowercase_filters:
                    value = value.lower()
                conditions.append(c[name] == value)
        if starting_after:
            conditions.append(c.id > starting_after)
        with request.app.state.engine.connect() as conn:
            rows = conn.execute(select(res.table).where(*conditions).order_by(c.id)
                                .limit(limit + 1)).fetchall()
        page = rows[:limit]
        return {"data": [_out(res, r) for r in page], "has_more": len(rows) > limit,
                "next_cursor": page[-1].id if len(rows) > limit else None}

    @router.get("/{row_id}", summary=f"Get one of {res.name}", response_model=res.out)
    def get_row(row_id: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        require_role(principal, res.read_roles)
        with request.app.state.engine.connect() as conn:
            row = conn.execute(select(res.table).where(c.id == row_id,
                                                       *_scoped(res, principal))).first()
        if row is None:
            raise ApiError("not_found", f"no {res.prefix} {row_id!r}")
        return _out(res, row)

    def create_row(body: BaseModel, request: Request, response: Response,
                   principal: CurrentPrincipal) -> dict[str, Any]:
        check_write(principal)
        values = body.model_dump()
        with write_transaction(request.app.state.engine) as conn:
            if principal.is_driver and res.driver_column:
                values[res.driver_column] = principal.driver_id
            _check_references(res, values, principal, conn)
            if res.prepare is not None:
                values = res.prepare(values, principal, conn, True)
            values.update(id=new_id(res.prefix), operator_id=principal.operator_id,
                          created_at=now())
            try:
                conn.execute(insert(res.table).values(**values))
            except IntegrityError as exc:
                raise ApiError("already_exists",
                               f"a {res.prefix} with these unique fields exists") from exc
            if res.audited:
                audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                      action=f"{res.name}.create", target=values["id"], outcome="success")
            if res.catalog:
                bump_catalog_generation(conn, principal.operator_id)
            row = conn.execute(select(res.table).where(c.id == values["id"])).one()
        response.status_code = 201
        return _out(res, row)

    create_row.__annotations__["body"] = res.create
    router.add_api_route("", create_row, methods=["POST"], status_code=201, response_model=res.out,
                         summary=f"Create one of {res.name}",
                         openapi_extra=raises("already_exists", "unknown_reference",
                                              *res.write_codes))

    if res.update is not None:
        def update_row(row_id: str, body: BaseModel, request: Request,
                       principal: CurrentPrincipal) -> dict[str, Any]:
            check_write(principal)
            values = body.model_dump(exclude_unset=True)
            with write_transaction(request.app.state.engine) as conn:
                scoped = [c.id == row_id, *_scoped(res, principal)]
                current = conn.execute(select(res.table).where(*scoped)).first()
                if current is None:
                    raise ApiError("not_found", f"no {res.prefix} {row_id!r}")
                if res.check_update is not None:
                    res.check_update(current, values)
                _check_references(res, values, principal, conn)
                if res.prepare is not None:
                    values = res.prepare(values, principal, conn, False)
                for name, value in values.items():  # an explicit null on a required column
                    if value is None and not c[name].nullable:
                        raise ApiError("validation_error", f"{name}: may not be null",
                                       extra={"field": name})
                if values:
                    try:
                        conn.execute(update(res.table).where(*scoped).values(**values))
                    except IntegrityError as exc:
                        raise ApiError("already_exists",
                                       f"a {res.prefix} with these unique fields exists"
                                       ) from exc
                if res.audited:
                    audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                          action=f"{res.name}.update", target=row_id, outcome="success")
                if res.catalog and values:
                    bump_catalog_generation(conn, principal.operator_id)
                row = conn.execute(select(res.table).where(*scoped)).one()
            return _out(res, row)

        update_row.__annotations__["body"] = res.update
        router.add_api_route("/{row_id}", update_row, methods=["PATCH"], response_model=res.out,
                             summary=f"Change one of {res.name}",
                             openapi_extra=raises("already_exists", "unknown_reference",
                                                  *res.write_codes))

    if res.deletable:
        @router.delete("/{row_id}", status_code=204, summary=f"Delete one of {res.name}",
                       openapi_extra=raises("in_use"))
        def delete_row(row_id: str, request: Request, principal: CurrentPrincipal) -> Response:
            check_write(principal)
            with write_transaction(request.app.state.engine) as conn:
                scoped = [c.id == row_id, *_scoped(res, principal)]
                try:
                    result = conn.execute(delete(res.table).where(*scoped))
                except IntegrityError as exc:
                    raise ApiError("in_use", f"{res.prefix} {row_id!r} is still referenced"
                                   ) from exc
                if result.rowcount == 0:
                    raise ApiError("not_found", f"no {res.prefix} {row_id!r}")
                if res.audited:
                    audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                          action=f"{res.name}.delete", target=row_id, outcome="success")
                if res.catalog:
                    bump_catalog_generation(conn, principal.operator_id)
            return Response(status_code=204)

    return router
