"""Secrets at rest: argon2id for passwords (people, chargers), SHA-256 for high-entropy tokens
(API keys, session tokens: 160+ random bits need no slow hash, and lookups must be fast)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)

MIN_PASSWORD_LENGTH = 12
MIN_CHARGER_PASSWORD_LENGTH = 16  # OCPP 1.6 security whitepaper: 16..40 characters


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token(prefix: str) -> str:
    """An opaque bearer token: ``prefix_`` + 32 chars of URL-safe randomness (192 bits)."""
    return f"{prefix}_{secrets.token_urlsafe(24)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
