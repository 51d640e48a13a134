"""Who is calling: API keys (operators' integrations) and session tokens (staff and drivers).

Both are opaque bearer tokens stored only as SHA-256 hashes. Passwords are argon2id.
Roles: ``admin`` and ``operator_staff`` manage their operator's data, ``finance`` reads it
(money actions come with payments), ``driver`` sees only their own records.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import URL, Connection, Engine, insert, select, update

from evbilling.adapters.db import schema as s
from evbilling.adapters.ids import new_id
from evbilling.adapters.security import hash_password, new_token, token_hash, verify_password
from evbilling.entrypoints.api.errors import ApiError

API_KEY_PREFIX = "evbk"
SESSION_PREFIX = "evbs"
SESSION_TTL = dt.timedelta(hours=12)
_DUMMY_HASH = hash_password("no account has this password")


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR_STAFF = "operator_staff"
    FINANCE = "finance"
    DRIVER = "driver"


STAFF = frozenset({Role.ADMIN, Role.OPERATOR_STAFF})
STAFF_AND_FINANCE = frozenset({Role.ADMIN, Role.OPERATOR_STAFF, Role.FINANCE})
EVERYONE = frozenset(Role)


@dataclass(frozen=True, slots=True)
class Principal:
    operator_id: str
    role: Role
    actor: str  # "user:usr_..." or "key:key_..."
    driver_id: str | None = None
    can_write: bool = True

    @property
    def is_driver(self) -> bool:
        return self.role is Role.DRIVER


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def audit(conn: Connection, *, operator_id: str | None, actor: str, action: str,
          outcome: str, target: str | None = None, source_ip: str | None = None,
          detail: str | None = None) -> None:
    conn.execute(insert(s.audit_log).values(
        operator_id=operator_id, at=now(), actor=actor, action=action, target=target,
        outcome=outcome, source_ip=source_ip, detail=detail))


def authenticate(conn: Connection, authorization: str | None) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise ApiError("unauthenticated", "send 'Authorization: Bearer <API key or session "
                       "token>'", headers={"WWW-Authenticate": "Bearer"})
    token = authorization[7:].strip()
    digest = token_hash(token)
    if token.startswith(API_KEY_PREFIX + "_"):
        key = conn.execute(select(s.api_keys).where(s.api_keys.c.key_hash == digest)).first()
        if key is not None and key.revoked_at is None:
            scopes = set(key.scopes or [])
            return Principal(operator_id=key.operator_id, role=Role(key.role),
                             actor=f"key:{key.id}", can_write="write" in scopes)
    elif token.startswith(SESSION_PREFIX + "_"):
        row = conn.execute(
            select(s.auth_sessions, s.users.c.role, s.users.c.driver_id, s.users.c.disabled)
            .join(s.users, s.users.c.id == s.auth_sessions.c.user_id)
            .where(s.auth_sessions.c.token_hash == digest)).first()
        if row is not None and row.revoked_at is None and not row.disabled \
                and _aware(row.expires_at) > now():
            return Principal(operator_id=row.operator_id, role=Role(row.role),
                             actor=f"user:{row.user_id}", driver_id=row.driver_id)
    raise ApiError("unauthenticated", "the token is unknown, revoked or expired",
                   headers={"WWW-Authenticate": "Bearer"})


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


#: Seconds a verified token is trusted without looking it up again. A revocation or log-out on
#: this node takes effect at once; on other nodes within this many seconds.
PRINCIPAL_CACHE_TTL_S = 5.0
_PRINCIPAL_CACHE_MAX = 10_000
#: (Authorization header, database URL) -> (trusted until, principal). The database is part of
#: the key: a token verified against one database says nothing about another app's (two apps in
#: one process answered with the first one's operator and failed on its foreign keys).
_principals: dict[tuple[str, URL], tuple[float, Principal]] = {}


def forget_token(authorization: str | None) -> None:
    """Drop a token from this node's cache (after a revocation or log-out)."""
    for key in [k for k in _principals if k[0] == (authorization or "")]:
        _principals.pop(key, None)


def forget_all_tokens() -> None:
    _principals.clear()


def cached_principal(authorization: str | None, engine: Engine) -> Principal | None:
    """The principal this node verified for this header against ``engine``'s database less than
    ``PRINCIPAL_CACHE_TTL_S`` ago, else None (``get_principal`` then verifies it)."""
    cached = _principals.get((authorization or "", engine.url))
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    return None


async def get_principal(request: Request) -> Principal:
    authorization = request.headers.get("authorization")
    engine: Engine = request.app.state.engine
    key = (authorization or "", engine.url)
    at = time.monotonic()
    cached = _principals.get(key)
    if cached is not None and cached[0] > at:
        return cached[1]
    with engine.connect() as conn:
        principal = authenticate(conn, authorization)
    if len(_principals) >= _PRINCIPAL_CACHE_MAX:
        _principals.clear()
    _principals[key] = (at + PRINCIPAL_CACHE_TTL_S, principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_role(principal: Principal, roles: frozenset[Role], *, write: bool = False) -> None:
    if principal.role not in roles:
        raise ApiError("forbidden", f"the {principal.role.value} role may not do this")
    if write and not principal.can_write:
        raise ApiError("forbidden", "this API key is read-only")


def login(conn: Connection, *, operator_id: str, email: str, password: str,
          source_ip: str | None) -> tuple[str, dt.datetime, str]:
    """Verify a password and open a session. Returns (token, expires_at, role)."""
    user = conn.execute(select(s.users).where(
        s.users.c.operator_id == operator_id, s.users.c.email == email.lower())).first()
    # Unknown accounts cost the same argon2 work, so timing does not reveal which exist.
    valid = verify_password(user.password_hash if user is not None else _DUMMY_HASH, password)
    if user is None or user.disabled or not valid:
        known_operator = conn.execute(select(s.operators.c.id).where(
            s.operators.c.id == operator_id)).first() is not None
        audit(conn, operator_id=operator_id if known_operator else None,
              actor=f"email:{email.lower()}", action="login", outcome="failure",
              source_ip=source_ip, detail="unknown account" if user is None else None)
        raise ApiError("unauthenticated", "wrong e-mail or password")
    token = new_token(SESSION_PREFIX)
    expires_at = now() + SESSION_TTL
    conn.execute(insert(s.auth_sessions).values(
        id=new_id("ses"), operator_id=operator_id, user_id=user.id,
        token_hash=token_hash(token), expires_at=expires_at, created_at=now()))
    audit(conn, operator_id=operator_id, actor=f"user:{user.id}", action="login",
          outcome="success", source_ip=source_ip)
    return token, expires_at, str(user.role)


def logout(conn: Connection, authorization: str | None) -> None:
    forget_token(authorization)
    if authorization and authorization.lower().startswith("bearer "):
        conn.execute(update(s.auth_sessions)
                     .where(s.auth_sessions.c.token_hash == token_hash(authorization[7:].strip()))
                     .values(revoked_at=now()))
