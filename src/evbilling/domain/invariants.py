"""Invariant checks that stay on in production (unlike ``assert`` under ``python -O``)."""

from __future__ import annotations


class InvariantViolation(Exception):  # noqa: N818 - a broken invariant, not an expected error
    """A programmer error or broken invariant; aborts the unit of work."""


def require(condition: bool, message: str) -> None:
    """Raise ``InvariantViolation(message)`` unless ``condition`` holds."""
    if not condition:
        raise InvariantViolation(message)
