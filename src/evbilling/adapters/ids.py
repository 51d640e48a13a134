"""Prefixed, time-sortable ids (``site_01JD...``): readable in logs and APIs, sortable by
creation for stable keyset pagination."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 chars of milliseconds + 16 random chars (80 bits)."""
    ms = time.time_ns() // 1_000_000
    stamp = "".join(_ALPHABET[(ms >> (5 * i)) & 31] for i in range(9, -1, -1))
    rand = int.from_bytes(os.urandom(10), "big")
    tail = "".join(_ALPHABET[(rand >> (5 * i)) & 31] for i in range(15, -1, -1))
    return f"{prefix}_{stamp}{tail}"
