"""The `evbilling` console script, run as a user would run it (a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "data" / "ocpi-vectors" / "tandemdrive-ocpi-tariffs" / "ocpi-tariffs" \
    / "test_data"
DEMO = ROOT / "src" / "evbilling" / "demo"
EVBILLING = shutil.which("evbilling", path=str(Path(sys.executable).parent)) or "evbilling"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EVBILLING, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_rate_json_prints_the_ocpi_totals_at_full_precision() -> None:
    result = run("rate", "--tariff", str(VECTORS / "step_size" / "tariff.json"),
                 "--cdr", str(VECTORS / "step_size" / "cdr1.json"), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout, parse_float=Decimal)
    assert doc["total_cost"] == {"excl_vat": Decimal("0.55024"), "incl_vat": Decimal("0.55024")}
    assert doc["total_time_cost"]["excl_vat"] == Decimal("0.30024")
    assert doc["total_parking_cost"]["excl_vat"] == Decimal("0.2500")
    assert doc["total_time"] == Decimal("0.2000")
    for key in ("total_energy", "total_energy_cost", "total_fixed_cost", "total_parking_time",
                "total_reservation_cost"):
        assert key in doc
    last = doc["periods"][-1]["dimensions"][0]
    assert last["type"] == "PARKING_TIME"
    assert last["billed_volume"] == Decimal("0.2500")  # 2 min parking billed as 15 min
    assert last["element_index"] == 1


def test_rate_json_writes_at_least_four_decimals() -> None:
    result = run("rate", "--tariff", str(VECTORS / "simple_025kwh" / "tariff.json"),
                 "--cdr", str(VECTORS / "simple_025kwh" / "cdr1.json"), "--json")
    assert result.returncode == 0, result.stderr
    assert '"excl_vat": 5.0000' in result.stdout


def test_rate_uses_the_time_zone_for_time_of_use() -> None:
    base = ["rate", "--tariff", str(DEMO / "tou_tariff.json"), "--cdr", str(DEMO / "tou_cdr.json"),
            "--json"]
    berlin = json.loads(run(*base, "--time-zone", "Europe/Berlin").stdout, parse_float=Decimal)
    utc = json.loads(run(*base).stdout, parse_float=Decimal)
    # 16:00 UTC is 17:00 in Berlin in November: the peak price starts an hour earlier there.
    assert berlin["periods"][1]["dimensions"][0]["price"] == Decimal("0.3900")
    assert utc["periods"][1]["dimensions"][0]["price"] == Decimal("0.2900")
    assert berlin["total_cost"] != utc["total_cost"]


def test_rate_without_json_prints_a_readable_table() -> None:
    result = run("rate", "--tariff", str(DEMO / "tou_tariff.json"),
                 "--cdr", str(DEMO / "tou_cdr.json"), "--time-zone", "Europe/Berlin")
    assert result.returncode == 0, result.stderr
    assert "Totals (EUR)" in result.stdout
    assert "total cost" in result.stdout


@pytest.mark.parametrize(("tariff_text", "expected"), [
    ('{"id": "x", "currency": "EUR", "elements": [{"price_components": '
     '[{"type": "ENERGY", "price": "abc", "step_size": 1}]}]}',
     "elements[0].price_components[0].price: must be a number"),
    ('{"id": "x", "currency": "XXY", "elements": []}', "currency: unknown ISO 4217"),
    ('{"id": "x", "currency": "EUR", "elements": [{"price_components": '
     '[{"type": "ENERGY", "price": 1, "step_size": 1}], '
     '"restrictions": {"start_time": "25:00"}}]}', "elements[0].restrictions.start_time"),
    ('{"id": "x", ', "invalid JSON at line 1"),
])
def test_a_bad_tariff_file_exits_non_zero_with_one_line_naming_file_and_field(
        tmp_path: Path, tariff_text: str, expected: str) -> None:
    tariff = tmp_path / "tariff.json"
    tariff.write_text(tariff_text)
    result = run("rate", "--tariff", str(tariff), "--cdr", str(DEMO / "tou_cdr.json"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(tariff) in lines[0]
    assert expected in lines[0]


def test_a_bad_cdr_names_the_period_and_dimension(tmp_path: Path) -> None:
    cdr = tmp_path / "cdr.json"
    cdr.write_text('{"start_date_time": "2024-01-01T10:00:00Z", "end_date_time": '
                   '"2024-01-01T11:00:00Z", "charging_periods": [{"start_date_time": '
                   '"2024-01-01T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 1}, '
                   '{"type": "WATTS", "volume": 2}]}]}')
    result = run("rate", "--tariff", str(DEMO / "tou_tariff.json"), "--cdr", str(cdr))
    assert result.returncode == 2
    assert "charging_periods[0].dimensions[1].type: unknown CDR dimension type 'WATTS'" \
        in result.stderr


def test_an_unknown_time_zone_is_refused_clearly() -> None:
    result = run("rate", "--tariff", str(DEMO / "tou_tariff.json"),
                 "--cdr", str(DEMO / "tou_cdr.json"), "--time-zone", "Mars/Olympus")
    assert result.returncode == 2
    assert "--time-zone: unknown IANA time zone: 'Mars/Olympus'" in result.stderr


def test_a_missing_file_is_reported_not_traced() -> None:
    result = run("rate", "--tariff", "/nonexistent/tariff.json", "--cdr", "x.json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "/nonexistent/tariff.json: file not found" in result.stderr


def test_the_rating_demo_shows_live_costs_ending_at_the_final_price() -> None:
    result = run("demo", "rating")
    assert result.returncode == 0, result.stderr
    assert "Running cost" in result.stdout
    assert "Final CDR" in result.stdout
