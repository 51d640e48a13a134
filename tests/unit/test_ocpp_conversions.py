"""Wire values to our units: energy registers to integer mWh (exact, Decimal), power to W,
current to mA over phases, timestamps to epoch ms; strict for MeterValues, lenient for stops."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from evbilling.entrypoints.ocpp.conversions import (
    SampleError,
    display_amount,
    epoch_ms,
    epoch_ms_or,
    iso_utc,
    register_at,
    samples_v16,
    samples_v201,
)
from evbilling.services.ports import LiveCost

AT = "2024-05-01T10:00:00Z"
AT_MS = 1_714_557_600_000


def v16(*sampled: dict[str, Any], at: str = AT) -> list[dict[str, Any]]:
    return [{"timestamp": at, "sampledValue": list(sampled)}]


def v201(*sampled: dict[str, Any], at: str = AT) -> list[dict[str, Any]]:
    return [{"timestamp": at, "sampledValue": list(sampled)}]


def energy16(value: str, **more: Any) -> int | None:
    return samples_v16(v16({"value": value, **more}), strict=True)[0].energy_milliwh


def test_a_register_without_measurand_or_unit_is_energy_in_wh() -> None:
    assert energy16("12345") == 12_345_000


@pytest.mark.parametrize(("value", "unit", "milliwh"), [
    ("1234.567", "Wh", 1_234_567), ("12.345678", "kWh", 12_345_678), ("0", "kWh", 0),
    ("1e3", "Wh", 1_000_000), ("7", "kWh", 7_000_000)])
def test_16_energy_converts_exactly(value: str, unit: str, milliwh: int) -> None:
    assert energy16(value, unit=unit, measurand="Energy.Active.Import.Register") == milliwh


@pytest.mark.parametrize(("value", "unit", "multiplier", "milliwh"), [
    (1234.5, "Wh", 0, 1_234_500), (12.5, "kWh", 0, 12_500_000), (1.2345, "Wh", 3, 1_234_500),
    (12345, "Wh", -3, 12_345), (3, None, 0, 3000)])
def test_201_energy_converts_with_unit_and_multiplier(value: float, unit: str | None,
                                                      multiplier: int, milliwh: int) -> None:
    uom: dict[str, Any] = {"multiplier": multiplier}
    if unit is not None:
        uom["unit"] = unit
    sample = samples_v201(v201({"value": value, "unitOfMeasure": uom}), strict=True)[0]
    assert sample.energy_milliwh == milliwh


def test_a_register_finer_than_one_milliwatt_hour_is_refused_when_strict() -> None:
    with pytest.raises(SampleError, match="finer than 1 mWh"):
        energy16("1.0005", unit="Wh")
    with pytest.raises(SampleError, match="finer than 1 mWh"):
        energy16("0.0000001", unit="kWh")


def test_a_register_finer_than_one_milliwatt_hour_is_floored_when_lenient() -> None:
    sample = samples_v16(v16({"value": "1.0009", "unit": "Wh"}), strict=False)[0]
    assert sample.energy_milliwh == 1000


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", "1_000", "", "-5"])
def test_an_unreadable_or_negative_register_is_refused_when_strict(value: str) -> None:
    with pytest.raises(SampleError):
        energy16(value)


def test_an_unreadable_register_leaves_the_sample_without_energy_when_lenient() -> None:
    sample = samples_v16(v16({"value": "abc"}), strict=False)[0]
    assert sample.energy_milliwh is None and sample.at_ms == AT_MS


def test_an_energy_register_in_a_unit_we_do_not_know_is_refused_when_strict() -> None:
    with pytest.raises(SampleError, match="unit"):
        energy16("5", unit="varh")


def test_power_in_kw_becomes_watts_and_current_is_summed_over_phases_in_milliamperes() -> None:
    sample = samples_v16(v16(
        {"value": "1000", "unit": "Wh"},
        {"value": "11.04", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "16.1", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
        {"value": "15.9", "measurand": "Current.Import", "phase": "L3", "unit": "A"},
        {"value": "230", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
        {"value": "80", "measurand": "SoC", "unit": "Percent"}), strict=True)[0]
    assert (sample.power_w, sample.current_ma) == (11_040, 48_000)


def test_a_total_current_without_phase_wins_over_the_phases() -> None:
    sample = samples_v201(v201(
        {"value": 32, "measurand": "Current.Import"},
        {"value": 16, "measurand": "Current.Import", "phase": "L1"}), strict=True)[0]
    assert sample.current_ma == 32_000


def test_an_unreadable_power_never_costs_the_frame() -> None:
    sample = samples_v16(v16({"value": "1000"}, {"value": "x", "measurand": "Power.Active.Import"}),
                         strict=True)[0]
    assert sample.power_w is None and sample.energy_milliwh == 1_000_000


def test_the_outlet_register_wins_over_other_locations() -> None:
    sample = samples_v16(v16({"value": "5", "location": "Inlet"},
                             {"value": "7", "location": "Outlet"}), strict=True)[0]
    assert sample.energy_milliwh == 7000


def test_per_phase_registers_are_summed_when_there_is_no_total() -> None:
    sample = samples_v16(v16({"value": "1", "phase": "L1"}, {"value": "2", "phase": "L2"},
                             {"value": "3", "phase": "L3"}), strict=True)[0]
    assert sample.energy_milliwh == 6000


def test_a_signed_value_is_not_read_as_a_number() -> None:
    sample = samples_v16(v16({"value": "AB12", "format": "SignedData"}, {"value": "9"}),
                         strict=True)[0]
    assert sample.energy_milliwh == 9000


def test_a_sample_without_an_energy_register_has_none() -> None:
    sample = samples_v16(v16({"value": "11", "measurand": "Power.Active.Import"}), strict=True)[0]
    assert sample.energy_milliwh is None and sample.power_w == 11


def test_the_charging_state_is_stamped_on_every_sample() -> None:
    samples = samples_v201(v201({"value": 1}) + v201({"value": 2}), charging=False, strict=True)
    assert [s.charging for s in samples] == [False, False]


def test_timestamps_become_epoch_milliseconds_of_an_aware_instant() -> None:
    assert epoch_ms("2024-05-01T10:00:00Z") == AT_MS
    assert epoch_ms("2024-05-01T12:00:00.1239+02:00") == AT_MS + 123
    assert epoch_ms("2024-05-01T10:00:00") == AT_MS  # no offset: UTC, as OCPP requires


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01T10:00:00Z", "", 17, None])
def test_an_unreadable_timestamp_is_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        epoch_ms(text)
    assert epoch_ms_or(text, 42) == 42


def test_a_sample_with_an_unreadable_timestamp_is_refused_when_strict_and_dropped_when_lenient(
        ) -> None:
    with pytest.raises(SampleError, match="timestamp"):
        samples_v16(v16({"value": "1"}, at="soon"), strict=True)
    assert samples_v16(v16({"value": "1"}, at="soon") + v16({"value": "2"}), strict=False)[0] \
        .energy_milliwh == 2000


def test_iso_utc_writes_milliseconds_and_z() -> None:
    assert iso_utc(AT_MS + 5) == "2024-05-01T10:00:00.005Z"


def test_the_latest_register_of_a_frame_is_found() -> None:
    samples = samples_v16(v16({"value": "1"}, at="2024-05-01T10:01:00Z")
                          + v16({"value": "3"}, at="2024-05-01T10:03:00Z")
                          + v16({"value": "11", "measurand": "Power.Active.Import"},
                                at="2024-05-01T10:04:00Z"), strict=True)
    last = register_at(samples)
    assert last is not None and last.energy_milliwh == 3000


@pytest.mark.parametrize(("currency", "minor", "shown"), [("EUR", 331, Decimal("3.31")),
                                                          ("JPY", 331, Decimal("331")),
                                                          ("KWD", 1234, Decimal("1.234"))])
def test_the_displayed_cost_is_the_rounded_amount_in_major_units(currency: str, minor: int,
                                                                 shown: Decimal) -> None:
    cost = LiveCost(session_id="s", ocpp_transaction_id="1", currency=currency,
                    energy_milliwh=0, total_excl=Decimal(0), total_incl=Decimal(0),
                    amount_minor_incl=minor)
    assert display_amount(cost) == shown
    assert str(display_amount(cost)) == str(shown)
