"""House rules on the domain code itself: no float, no assert, invariants that survive -O.

The rules are implemented as small functions tested on examples first, so a green run over
``src/`` means "checked and clean", not "checked nothing".
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

import evbilling

PACKAGE = Path(evbilling.__file__).resolve().parent
DOMAIN = PACKAGE / "domain"
SERVICES = PACKAGE / "services"


def python_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


# -- the float rule ----------------------------------------------------------------------------


def _char_col(line: str, byte_col: int) -> int:
    """ast gives UTF-8 byte offsets; tokenize gives character offsets."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8"))


def _isinstance_float_positions(tree: ast.AST, lines: list[str]) -> set[tuple[int, int]]:
    """Where ``float`` is the type checked by ``isinstance(x, float)`` or
    ``isinstance(x, (..., float, ...))``: the one use that refuses floats rather than makes them."""
    allowed: set[tuple[int, int]] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance" and len(node.args) == 2 and not node.keywords):
            continue
        checked = node.args[1]
        names = checked.elts if isinstance(checked, ast.Tuple) else [checked]
        for name in names:
            if isinstance(name, ast.Name) and name.id == "float":
                allowed.add((name.lineno, _char_col(lines[name.lineno - 1], name.col_offset)))
    return allowed


def _float_in_fstrings(tree: ast.AST) -> set[int]:
    """Lines of ``float`` inside f-string expressions, which tokenize on Python < 3.12 reports
    as one STRING token (and so would not see)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and inner.id == "float":
                    found.add(node.lineno)
    return found


def forbidden_float_lines(source: str) -> list[int]:
    """Line numbers where the NAME ``float`` appears in code other than an isinstance check.

    Comments, docstrings and strings are COMMENT/STRING tokens, so the word there is ignored.
    """
    lines = source.splitlines()
    tree = ast.parse(source)
    allowed = _isinstance_float_positions(tree, lines)
    found = set(_float_in_fstrings(tree))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.string == "float" \
                and token.start not in allowed:
            found.add(token.start[0])
    return sorted(found)


def test_the_float_rule_flags_a_float_annotation() -> None:
    assert forbidden_float_lines("price: float = 0\n") == [1]


def test_the_float_rule_flags_a_float_conversion() -> None:
    assert forbidden_float_lines("x = 1\ny = float(x)\n") == [2]


def test_the_float_rule_flags_float_as_an_attribute_or_keyword() -> None:
    assert forbidden_float_lines("a = np.float\nb = f(float=1)\n") == [1, 2]


def test_the_float_rule_flags_float_inside_an_f_string_expression() -> None:
    assert forbidden_float_lines('s = f"{float(x):.2f}"\n') == [1]


def test_the_float_rule_allows_an_isinstance_check_that_refuses_float() -> None:
    assert forbidden_float_lines("if isinstance(value, float):\n    raise TypeError\n") == []


def test_the_float_rule_allows_float_in_an_isinstance_tuple() -> None:
    assert forbidden_float_lines("ok = isinstance(value, (int, float))\n") == []


def test_the_float_rule_flags_float_as_the_checked_value_of_isinstance() -> None:
    assert forbidden_float_lines("ok = isinstance(float(x), int)\n") == [1]


def test_the_float_rule_flags_float_next_to_an_allowed_use_on_the_same_line() -> None:
    assert forbidden_float_lines("ok = isinstance(v, float) and float(v) > 0\n") == [1]


def test_the_float_rule_ignores_comments_docstrings_and_strings() -> None:
    source = '"""No float here."""\n# float is refused\nmessage = "never float"\n'
    assert forbidden_float_lines(source) == []


def test_the_float_rule_counts_columns_in_characters_not_bytes() -> None:
    assert forbidden_float_lines('ok = "€" and isinstance(v, float)\n') == []


@pytest.mark.parametrize("path", python_files(DOMAIN), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_domain_never_uses_float(path: Path) -> None:
    assert forbidden_float_lines(path.read_text(encoding="utf-8")) == [], (
        f"{path.relative_to(PACKAGE)} uses float; money, energy and prices are int or Decimal")


def test_the_float_rule_checks_real_files() -> None:
    # money.py refuses floats with isinstance(value, float): the rule sees it and allows it.
    source = (DOMAIN / "money.py").read_text(encoding="utf-8")
    assert _isinstance_float_positions(ast.parse(source), source.splitlines())


# -- the assert rule ---------------------------------------------------------------------------


def assert_lines(source: str) -> list[int]:
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Assert))


def test_the_assert_rule_flags_an_assert_statement() -> None:
    assert assert_lines("def f(x):\n    assert x > 0, 'positive'\n") == [2]


def test_the_assert_rule_ignores_the_word_in_comments_and_strings() -> None:
    assert assert_lines("# assert x\nmessage = 'assert it'\n") == []


@pytest.mark.parametrize(
    "path", python_files(DOMAIN) + python_files(SERVICES),
    ids=lambda p: str(p.relative_to(PACKAGE)))
def test_domain_and_services_use_require_not_assert(path: Path) -> None:
    assert assert_lines(path.read_text(encoding="utf-8")) == [], (
        f"{path.relative_to(PACKAGE)}: assert vanishes under python -O; use require()")


# -- invariants stay on under python -O ----------------------------------------------------------

_UNDER_O = """
from evbilling.domain.invariants import InvariantViolation, require
assert False, "stripped under -O"
try:
    require(False, "still checked")
except InvariantViolation as exc:
    print(__debug__, exc)
"""


def test_require_still_raises_under_python_dash_o() -> None:
    result = subprocess.run([sys.executable, "-O", "-c", _UNDER_O], capture_output=True,
                            text=True, timeout=60, check=False)
    # __debug__ False proves -O is on (the assert above was stripped); the message proves
    # require() raised InvariantViolation anyway.
    assert (result.returncode, result.stdout.strip()) == (0, "False still checked"), \
        result.stderr
