"""Rendering rated sessions for people (Rich tables) and machines (JSON).

Numbers in JSON are exact decimals written as JSON numbers, with at least four decimal places and
no trailing zeros beyond them (0.5502, 30.0000, 0.30024); rating results are never rounded here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import simplejson
from rich import box
from rich.console import Console
from rich.table import Table

from evbilling.domain.rating import RatedSession
from evbilling.domain.tariffs.model import Price

_FOUR_PLACES = Decimal("0.0001")

TOTAL_PRICE_FIELDS = (
    "total_cost",
    "total_fixed_cost",
    "total_energy_cost",
    "total_time_cost",
    "total_parking_cost",
    "total_reservation_cost",
)
TOTAL_QUANTITY_FIELDS = (
    "total_energy",
    "total_time",
    "total_parking_time",
    "total_reservation_time",
)


def number(value: Decimal) -> Decimal:
    """At least four decimal places, otherwise the value's own (exact) digits."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -4:
        return value.quantize(_FOUR_PLACES)
    return normal


def text(value: Decimal) -> str:
    """``number`` in plain positional notation (never 1E-12)."""
    return format(number(value), "f")


def json_number(value: Decimal) -> simplejson.RawJSON:
    """A JSON number written exactly as ``text`` writes it."""
    return simplejson.RawJSON(text(value))


def price(value: Price) -> dict[str, simplejson.RawJSON | None]:
    return {
        "excl_vat": json_number(value.excl_vat),
        "incl_vat": None if value.incl_vat is None else json_number(value.incl_vat),
    }


def rated_session_to_json(rated: RatedSession, *, tariff_id: str | None = None,
                          time_zone: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tariff_id is not None:
        out["tariff_id"] = tariff_id
    out["currency"] = rated.currency.code
    if time_zone is not None:
        out["time_zone"] = time_zone
    for name in TOTAL_PRICE_FIELDS:
        out[name] = price(getattr(rated, name))
    for name in TOTAL_QUANTITY_FIELDS:
        out[name] = json_number(getattr(rated, name))
    out["price_bound"] = rated.price_bound
    out["price_bound_adjustment"] = price(rated.price_bound_adjustment)
    out["final"] = rated.final
    out["warnings"] = list(rated.warnings)
    out["periods"] = [
        {
            "index": period.index,
            "start_date_time": period.start_date_time,
            "dimensions": [
                {
                    "type": d.type,
                    "volume": json_number(d.volume),
                    "billed_volume": json_number(d.billed_volume),
                    "element_index": d.element_index,
                    "price": None if d.price is None else json_number(d.price),
                    "vat": None if d.vat is None else json_number(d.vat),
                    "cost": price(d.cost),
                }
                for d in period.dimensions
            ],
        }
        for period in rated.periods()
    ]
    return out


def dumps(document: Any) -> str:
    return str(simplejson.dumps(document, use_decimal=True, indent=2))


_SHORT = {"ENERGY": "kWh", "TIME": "charge h", "PARKING_TIME": "park h",
          "RESERVATION_TIME": "resv h", "FLAT": "flat"}


def print_rated_session(console: Console, rated: RatedSession, *, title: str) -> None:
    periods = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
                    padding=(0, 1), collapse_padding=True, show_edge=False)
    for header, justify in (("#", "right"), ("start UTC", "left"), ("dim.", "left"),
                            ("volume", "right"), ("billed", "right"), ("el.", "right"),
                            ("price", "right"), ("VAT%", "right"), ("excl.", "right"),
                            ("incl.", "right")):
        periods.add_column(header, justify=justify)  # type: ignore[arg-type]
    for period in rated.periods():
        for k, d in enumerate(period.dimensions):
            periods.add_row(
                str(period.index) if k == 0 else "",
                period.start_date_time[5:16].replace("T", " ") if k == 0 else "",
                _SHORT.get(d.type, d.type),
                text(d.volume),
                "" if d.billed_volume == d.volume else text(d.billed_volume),
                "-" if d.element_index is None else str(d.element_index),
                "-" if d.price is None else text(d.price),
                "n/a" if d.vat is None else str(d.vat.normalize()),
                text(d.cost.excl_vat),
                text(d.cost.incl_vat) if d.cost.incl_vat is not None else "-",
            )
    console.print(periods)

    totals = Table(box=box.SIMPLE_HEAVY, title=f"Totals ({rated.currency.code})",
                   title_justify="left")
    totals.add_column("field")
    totals.add_column("quantity", justify="right")
    totals.add_column("excl. VAT", justify="right")
    totals.add_column("incl. VAT", justify="right")
    rows = (
        ("energy", rated.total_energy, "kWh", rated.total_energy_cost),
        ("charging time", None, "", rated.total_time_cost),
        ("parking time", rated.total_parking_time, "h", rated.total_parking_cost),
        ("reservation", rated.total_reservation_time, "h", rated.total_reservation_cost),
        ("fixed (FLAT)", None, "", rated.total_fixed_cost),
    )
    for label, quantity, unit, cost in rows:
        totals.add_row(label, "" if quantity is None else f"{number(quantity)} {unit}",
                       text(cost.excl_vat), text(cost.incl_vat or Decimal(0)))
    if rated.price_bound is not None:
        adj = rated.price_bound_adjustment
        totals.add_row(f"{rated.price_bound} adjustment", "", text(adj.excl_vat),
                       text(adj.incl_vat or Decimal(0)))
    totals.add_row("[bold]total cost[/bold]", f"{number(rated.total_time)} h session",
                   f"[bold]{number(rated.total_cost.excl_vat)}[/bold]",
                   f"[bold]{number(rated.total_cost.incl_vat or Decimal(0))}[/bold]")
    console.print(totals)
    if rated.warnings:
        console.print("[yellow]warnings:[/yellow] " + ", ".join(rated.warnings))
