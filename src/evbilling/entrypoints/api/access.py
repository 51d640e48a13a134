"""Log-in, log-out, who am I, and operator API keys (shown once, stored hashed, revocable)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import insert, select, update

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.uow import write_transaction
from evbilling.adapters.ids import new_id
from evbilling.adapters.security import new_token, token_hash
from evbilling.entrypoints.api import auth
from evbilling.entrypoints.api.auth import API_KEY_PREFIX, CurrentPrincipal, Role, now, require_role
from evbilling.entrypoints.api.errors import ApiError
from evbilling.entrypoints.api.limits import login_limiter
from evbilling.entrypoints.api.openapi import raises
from evbilling.entrypoints.api.resources import Strict

router = APIRouter(tags=["access"])
Scope = Literal["read", "write"]
ALL_SCOPES: tuple[Scope, ...] = ("read", "write")


class LoginRequest(Strict):
    operator_id: str = Field(min_length=1, max_length=40)
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=200)


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: dt.datetime
    role: str


@router.post("/auth/login", summary="Log in with e-mail and password; returns a bearer token",
             openapi_extra=raises("unauthenticated", "rate_limited"))
def login(body: LoginRequest, request: Request) -> LoginResponse:
    source = request.client.host if request.client else None
    login_limiter.check(f"{body.operator_id}:{body.email.lower()}", source)
    failure: ApiError | None = None
    with write_transaction(request.app.state.engine) as conn:
        try:
            token, expires_at, role = auth.login(conn, operator_id=body.operator_id,
                                                 email=body.email, password=body.password,
                                                 source_ip=source)
        except ApiError as exc:
            failure = exc  # raised after the commit, which keeps the failure's audit row
    if failure is not None:
        login_limiter.failed(f"{body.operator_id}:{body.email.lower()}", source)
        raise failure
    return LoginResponse(token=token, expires_at=expires_at, role=role)


@router.post("/auth/logout", status_code=204, summary="Revoke the current session token")
def logout(request: Request, principal: CurrentPrincipal) -> Response:
    with write_transaction(request.app.state.engine) as conn:
        auth.logout(conn, request.headers.get("authorization"))
    return Response(status_code=204)


class MeOut(BaseModel):
    operator_id: str
    role: Role
    actor: str = Field(description="user:<id> or key:<id>")
    driver_id: str | None
    can_write: bool


@router.get("/me", summary="The caller: operator, role, driver", response_model=MeOut)
def me(principal: CurrentPrincipal) -> dict[str, Any]:
    return {"operator_id": principal.operator_id, "role": principal.role.value,
            "actor": principal.actor, "driver_id": principal.driver_id,
            "can_write": principal.can_write}


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "operator_staff", "finance"] = "operator_staff"
    scopes: list[Scope] = Field(default_factory=lambda: list(ALL_SCOPES))


class ApiKeyOut(BaseModel):
    id: str
    name: str
    role: str
    scopes: list[Scope]
    prefix: str = Field(description="the secret's first 12 characters, to recognise it")
    created_at: dt.datetime
    revoked: bool


class ApiKeyCreated(BaseModel):
    id: str
    name: str
    role: str
    scopes: list[Scope]
    secret: str = Field(description="shown once")
    prefix: str


class ApiKeys(BaseModel):
    data: list[ApiKeyOut]
    has_more: bool


@router.post("/api-keys", status_code=201, summary="Create an API key (the secret is shown once)",
             response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, request: Request, principal: CurrentPrincipal
                   ) -> dict[str, Any]:
    require_role(principal, frozenset({Role.ADMIN}), write=True)
    secret = new_token(API_KEY_PREFIX)
    key_id = new_id("key")
    with write_transaction(request.app.state.engine) as conn:
        conn.execute(insert(s.api_keys).values(
            id=key_id, operator_id=principal.operator_id, name=body.name, prefix=secret[:12],
            key_hash=token_hash(secret), role=body.role, scopes=sorted(set(body.scopes)),
            created_at=now()))
        auth.audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                   action="api_keys.create", target=key_id, outcome="success")
    return {"id": key_id, "name": body.name, "role": body.role, "scopes": sorted(set(body.scopes)),
            "secret": secret, "prefix": secret[:12]}


@router.get("/api-keys", summary="List API keys (never their secrets)", response_model=ApiKeys)
def list_api_keys(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    require_role(principal, frozenset({Role.ADMIN}))
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(select(s.api_keys).where(
            s.api_keys.c.operator_id == principal.operator_id).order_by(s.api_keys.c.id)).all()
    return {"data": [{"id": r.id, "name": r.name, "role": r.role, "scopes": r.scopes,
                      "prefix": r.prefix, "created_at": r.created_at.isoformat(),
                      "revoked": r.revoked_at is not None} for r in rows], "has_more": False}


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke an API key")
def revoke_api_key(key_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    require_role(principal, frozenset({Role.ADMIN}), write=True)
    with write_transaction(request.app.state.engine) as conn:
        result = conn.execute(update(s.api_keys).where(
            s.api_keys.c.id == key_id, s.api_keys.c.operator_id == principal.operator_id,
            s.api_keys.c.revoked_at.is_(None)).values(revoked_at=now()))
        if result.rowcount == 0:
            raise ApiError("not_found", f"no active API key {key_id!r}")
        auth.forget_all_tokens()  # the key's secret is not known here: drop the whole cache
        auth.audit(conn, operator_id=principal.operator_id, actor=principal.actor,
                   action="api_keys.revoke", target=key_id, outcome="success")
    return Response(status_code=204)
