"""Fixtures shared by every test layer. Layer-specific ones live in that layer's conftest."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

OCPI_EXAMPLES = Path(__file__).parent / "data" / "ocpi-vectors" / "ocpi-ocpi" / "examples"


def _random_ref(prefix: str = "ref") -> str:
    return f"{prefix}-{secrets.token_hex(5)}"


@pytest.fixture(scope="session")
def random_ref() -> Callable[[str], str]:
    """``random_ref("cp")`` -> ``"cp-3f9a0c1b2d"``: unique names so tests never collide."""
    return _random_ref


@pytest.fixture(scope="session")
def ocpi_example() -> Callable[[str], dict[str, Any]]:
    """An example of the OCPI specification by file name, numbers decoded as exact Decimals."""

    def load(name: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((OCPI_EXAMPLES / name).read_text(),
                                              parse_float=Decimal)
        return document

    return load
