"""Onboarding: create an operator with its first admin user and API key.

(Storage is reached directly through the Core schema here; the ports/unit-of-work split of
STYLE.md arrives with the money-moving services, where it pays for itself.)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, insert

from evbilling.adapters.db import schema as s
from evbilling.adapters.ids import new_id
from evbilling.adapters.security import hash_password, new_token, token_hash
from evbilling.domain.money import Currency

API_KEY_PREFIX = "evbk"


@dataclass(frozen=True, slots=True)
class NewOperator:
    operator_id: str
    admin_user_id: str
    api_key_id: str
    api_key: str  # the secret: shown once, stored only as a hash


def create_operator(conn: Connection, *, name: str, country_code: str, party_id: str,
                    currency: str, admin_email: str, admin_password: str,
                    api_key: str | None = None) -> NewOperator:
    at = dt.datetime.now(dt.UTC)
    operator_id = new_id("op")
    conn.execute(insert(s.operators).values(
        id=operator_id, name=name, country_code=country_code.upper(),
        party_id=party_id.upper(), currency=Currency.of(currency).code, created_at=at))
    user_id = new_id("usr")
    conn.execute(insert(s.users).values(
        id=user_id, operator_id=operator_id, email=admin_email.lower(),
        password_hash=hash_password(admin_password), role="admin", disabled=False,
        created_at=at))
    secret = api_key or new_token(API_KEY_PREFIX)
    key_id = new_id("key")
    conn.execute(insert(s.api_keys).values(
        id=key_id, operator_id=operator_id, name="bootstrap admin key", prefix=secret[:12],
        key_hash=token_hash(secret), role="admin", scopes=["read", "write"], created_at=at))
    return NewOperator(operator_id, user_id, key_id, secret)
