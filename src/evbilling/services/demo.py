"""The demo operator: sites, chargers, tariffs, drivers and tokens with known log-ins, plus
plans of every kind, promotions, loyalty tiers and about 90 days of charging history.

Everything listed here is documented in README.md ("Demo data"). Seeding is idempotent: an
existing demo operator (matched by its OCPI party DE*EVB) is left as it is, except that one
seeded before plans existed gets its plans, promotions, tiers and history once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

from sqlalchemy import Connection, insert, select

from evbilling.adapters.db import schema as s
from evbilling.adapters.db.documents import tariff_document
from evbilling.adapters.ids import new_id
from evbilling.adapters.security import hash_password
from evbilling.domain.money import Currency
from evbilling.domain.periods import MILLIWH_PER_KWH, SessionFacts, epoch_ms
from evbilling.domain.plans import PlanKind, local_date, local_midnight
from evbilling.domain.profiles import synthesize_periods
from evbilling.domain.promotions import Benefit, PromotionScope, Stacking
from evbilling.domain.rating import compile_tariff
from evbilling.domain.tariffs import parse_tariff
from evbilling.domain.timezones import zone
from evbilling.services import catalog
from evbilling.services.catalog_generation import bump_catalog_generation
from evbilling.services.operators import create_operator
from evbilling.services.tariff_selection import stored_tariff

DEMO_API_KEY = "evbk_demo_admin_key_do_not_use_in_production"  # noqa: S105 - documented
DEMO_PASSWORD = "demo-password-123"  # noqa: S105 - documented demo log-in
DEMO_CHARGER_PASSWORD = "demo-charger-secret-16"  # noqa: S105 - documented demo


@dataclass(frozen=True, slots=True)
class DemoLogin:
    email: str
    role: str
    driver: str | None = None


DEMO_USERS = (
    DemoLogin("admin@demo.evbilling.dev", "admin"),
    DemoLogin("staff@demo.evbilling.dev", "operator_staff"),
    DemoLogin("finance@demo.evbilling.dev", "finance"),
    DemoLogin("alice@demo.evbilling.dev", "driver", "Alice Driver"),
    DemoLogin("bob@demo.evbilling.dev", "driver", "Bob Fleet"),
)
DEMO_DRIVERS = (
    # name, e-mail, fleet account, RFID uids
    ("Alice Driver", "alice@demo.evbilling.dev", None, ("04A1B2C3D4E5F6",)),
    ("Bob Fleet", "bob@demo.evbilling.dev", "ACME Logistics", ("04B0B0B0B0B0B0", "APP-BOB-1")),
    ("Carol Casual", "carol@demo.evbilling.dev", None, ("04C4C4C4C4C4C4",)),
)
BERLIN = "Europe/Berlin"
VAT = Decimal("19")
#: Member (subscription) and fallback (flat rate above the fair-use cap) tariffs, OCPI 2.2.1.
MEMBER_TARIFF: dict[str, Any] = {
    "country_code": "DE", "party_id": "EVB", "id": "demo-member", "currency": "EUR",
    "tariff_alt_text": [{"language": "en", "text": "Members: 0.25/kWh, idle 6.00/h after "
                         "charging; the 0.50 session fee is waived by the subscription"}],
    "elements": [{"price_components": [
        {"type": "FLAT", "price": "0.50", "vat": "19", "step_size": 1},
        {"type": "ENERGY", "price": "0.25", "vat": "19", "step_size": 100},
        {"type": "PARKING_TIME", "price": "6.00", "vat": "19", "step_size": 60}]}],
}
FALLBACK_TARIFF: dict[str, Any] = {
    "country_code": "DE", "party_id": "EVB", "id": "demo-fallback", "currency": "EUR",
    "tariff_alt_text": [{"language": "en", "text": "Flat rate above the fair-use cap: "
                         "0.35/kWh, idle 6.00/h"}],
    "elements": [{"price_components": [
        {"type": "FLAT", "price": "0.50", "vat": "19", "step_size": 1},
        {"type": "ENERGY", "price": "0.35", "vat": "19", "step_size": 100},
        {"type": "PARKING_TIME", "price": "6.00", "vat": "19", "step_size": 60}]}],
}
#: Charging history (driver, site index, every n-th day, kWh by day pattern, local start hour)
DEMO_HISTORY = (
    ("Alice Driver", 0, 4, (9, 14, 11, 16, 8), 18),   # ~275 kWh in 90 days: Silver
    ("Bob Fleet", 0, 2, (32, 27, 35, 30), 7),         # ~1400 kWh: Gold
    ("Bob Fleet", 1, 9, (24, 21), 12),                # some of it in Amsterdam
)

DEMO_CHARGERS = (
    # identity, OCPP version, site index
    ("DEMO-CP16-001", "1.6", 0),
    ("DEMO-CP201-001", "2.0.1", 0),
    ("DEMO-CP16-AMS", "1.6", 1),
)


def _tariff_document(name: str) -> dict[str, Any]:
    text = (resources.files("evbilling") / "demo" / name).read_text(encoding="utf-8")
    return dict(json.loads(text, parse_float=Decimal))


def seed_demo(conn: Connection) -> str:
    """Create the demo operator if missing; return its id."""
    existing = conn.execute(select(s.operators.c.id).where(
        s.operators.c.country_code == "DE", s.operators.c.party_id == "EVB")).first()
    if existing is not None:
        seed_catalog(conn, str(existing.id), dt.datetime.now(dt.UTC))
        return str(existing.id)
    at = dt.datetime.now(dt.UTC)
    op = create_operator(conn, name="Demo Charging GmbH", country_code="DE", party_id="EVB",
                         currency="EUR", admin_email="admin@demo.evbilling.dev",
                         admin_password=DEMO_PASSWORD, api_key=DEMO_API_KEY)
    oid = op.operator_id

    def add(table: Any, prefix: str, **values: Any) -> str:
        row_id = new_id(prefix)
        conn.execute(insert(table).values(id=row_id, operator_id=oid, created_at=at, **values))
        return row_id

    site_ids = [
        add(s.sites, "site", name="Berlin Mitte Hub", time_zone="Europe/Berlin", currency="EUR",
            vat_percent=Decimal("19.00"), street="Invalidenstrasse 1", city="Berlin",
            postal_code="10115", country="DEU"),
        add(s.sites, "site", name="Amsterdam Zuid", time_zone="Europe/Amsterdam",
            currency="EUR", vat_percent=Decimal("21.00"), street="Zuidplein 10",
            city="Amsterdam", postal_code="1077 XV", country="NLD"),
    ]
    for identity, version, site in DEMO_CHARGERS:
        charger = add(s.chargers, "chg", site_id=site_ids[site], ocpp_identity=identity,
                      password_hash=hash_password(DEMO_CHARGER_PASSWORD), security_profile=1,
                      ocpp_version=version, vendor="DemoVendor", model="DV-22")
        for number in (1, 2):
            evse = add(s.evses, "evse", charger_id=charger,
                       evse_uid=f"DE*EVB*E{identity[-3:]}*{number}", ocpp_evse_id=number)
            add(s.connectors, "con", evse_id=evse, connector_number=1, standard="IEC_62196_T2",
                power_type="AC_3_PHASE", max_power_w=22_000)

    public = parse_tariff(_tariff_document("tou_tariff.json"))
    tariff_id = add(s.tariffs, "trf", name="Public time-of-use", currency="EUR")
    conn.execute(insert(s.tariff_versions).values(
        id=new_id("trv"), operator_id=oid, tariff_id=tariff_id, version=1,
        document=tariff_document(public), created_at=at))
    for site_id in site_ids:
        add(s.tariff_assignments, "tas", tariff_id=tariff_id, site_id=site_id,
            valid_from=at - dt.timedelta(days=365))

    driver_ids: dict[str, str] = {}
    for name, email, fleet, uids in DEMO_DRIVERS:
        driver = add(s.drivers, "drv", name=name, email=email, fleet_account=fleet,
                     time_zone="Europe/Berlin")
        driver_ids[name] = driver
        for uid in uids:
            add(s.tokens, "tok", driver_id=driver, kind="APP_USER" if uid.startswith("APP")
                else "RFID", uid=uid, status="ACTIVE")
    add(s.tokens, "tok", driver_id=driver_ids["Carol Casual"], kind="RFID",
        uid="04BLOCKED00000", status="BLOCKED")
    add(s.vehicles, "veh", driver_id=driver_ids["Alice Driver"], make="Volkswagen",
        model="ID.4", battery_kwh=Decimal("77.000"))
    for login in DEMO_USERS:
        if login.role == "admin":
            continue
        add(s.users, "usr", email=login.email, password_hash=hash_password(DEMO_PASSWORD),
            role=login.role, driver_id=driver_ids.get(login.driver or ""), disabled=False)
    seed_catalog(conn, oid, at)
    bump_catalog_generation(conn, oid)  # sites, chargers and the public tariff above
    return oid


def seed_catalog(conn: Connection, operator_id: str, at: dt.datetime) -> None:
    """Plans of every kind (with a member and a fallback tariff), two promotions, two loyalty
    tiers, Alice on the subscription and Bob on the fleet plan, and their last ~90 days of
    sessions. Skipped when the operator has plans already."""
    if conn.execute(select(s.plans.c.id).where(s.plans.c.operator_id == operator_id)
                    .limit(1)).first() is not None:
        return
    oid = operator_id

    def tariff(name: str, document: dict[str, Any]) -> str:
        parsed = parse_tariff(document)
        tariff_id = new_id("trf")
        conn.execute(insert(s.tariffs).values(id=tariff_id, operator_id=oid, name=name,
                                              currency="EUR", created_at=at))
        conn.execute(insert(s.tariff_versions).values(
            id=new_id("trv"), operator_id=oid, tariff_id=tariff_id, version=1,
            document=tariff_document(parsed), created_at=at))
        return tariff_id

    member = tariff("Member tariff", MEMBER_TARIFF)
    fallback = tariff("Flat rate above the cap", FALLBACK_TARIFF)
    kwh = MILLIWH_PER_KWH
    specs: list[tuple[PlanKind, str, dict[str, Any]]] = [
        (PlanKind.PAY_PER_USE, "Pay as you go", {}),
        (PlanKind.SUBSCRIPTION, "Member 100", {
            "fee_minor": 999, "fee_vat_percent": VAT, "included_energy_milliwh": 100 * kwh,
            "member_tariff_id": member, "waive_flat_fee": True}),
        (PlanKind.FLAT_RATE, "Flat 300", {
            "fee_minor": 3999, "fee_vat_percent": VAT, "fair_use_cap_milliwh": 300 * kwh,
            "fallback_tariff_id": fallback, "waive_flat_fee": True}),
        (PlanKind.PREPAID_WALLET, "Prepaid wallet", {
            "wallet_top_up_threshold_minor": 500, "wallet_top_up_amount_minor": 2000}),
        (PlanKind.FLEET, "ACME Fleet", {
            "fee_minor": 499, "fee_vat_percent": VAT, "credit_limit_minor": 200_000}),
    ]
    plans = {name: catalog.create_plan(conn, oid, kind=kind, name=name, currency="EUR",
                                       options=options, at=at).plan
             for kind, name, options in specs}

    year_start = dt.datetime(at.year, 1, 1, tzinfo=dt.UTC)
    catalog.create_promotion(conn, oid, {
        "name": "Welcome", "code": "WELCOME10", "currency": Currency.of("EUR"),
        "benefit": Benefit.percent_off_energy(Decimal("10")), "starts_at": year_start,
        "redemptions_max_per_driver": 1, "stacking": Stacking.STACKABLE, "priority": 10},
        at)
    catalog.create_promotion(conn, oid, {
        "name": "Night owl", "currency": Currency.of("EUR"),
        "benefit": Benefit.percent_off_energy(Decimal("15")), "starts_at": year_start,
        "scope": PromotionScope(local_start_time=dt.time(22), local_end_time=dt.time(6)),
        "stacking": Stacking.STACKABLE, "priority": 20}, at)
    for name, threshold_kwh, percent in (("Silver", 100, "5"), ("Gold", 300, "10")):
        catalog.save_tier(conn, oid, None, {
            "name": name, "min_energy_milliwh": threshold_kwh * kwh,
            "benefit": Benefit.percent_off_energy(Decimal(percent)), "window_days": 90}, at)

    drivers = {row.name: row.id for row in conn.execute(
        select(s.drivers.c.name, s.drivers.c.id).where(s.drivers.c.operator_id == oid))}
    sites = conn.execute(select(s.sites.c.id, s.sites.c.time_zone).where(
        s.sites.c.operator_id == oid).order_by(s.sites.c.name)).fetchall()
    # sorted by name: Amsterdam Zuid, Berlin Mitte Hub -> index 0 = Berlin in DEMO_HISTORY
    berlin, amsterdam = sites[1], sites[0]
    first_day = local_date(at, BERLIN).replace(day=1)
    for _ in range(4):  # on their plans since the 1st, four months ago
        first_day = (first_day - dt.timedelta(days=1)).replace(day=1)
    since = local_midnight(first_day, BERLIN)
    plan_of = {"Alice Driver": plans["Member 100"], "Bob Fleet": plans["ACME Fleet"]}
    for driver, plan in plan_of.items():
        conn.execute(insert(s.driver_plans).values(
            id=new_id("dpl"), operator_id=oid, driver_id=drivers[driver],
            plan_id=plan.id, starts_at=since, ends_at=None, created_at=at))

    public_id, public = conn.execute(select(s.tariff_versions.c.tariff_id,
                                            s.tariff_versions.c.document).join(
        s.tariff_assignments, s.tariff_assignments.c.tariff_id == s.tariff_versions.c.tariff_id)
        .where(s.tariff_assignments.c.site_id == berlin.id)).one()
    compiled = compile_tariff(stored_tariff(public_id, public))
    today = local_date(at, BERLIN)
    for driver, site_index, every, pattern, hour in DEMO_HISTORY:
        site = berlin if site_index == 0 else amsterdam
        plan = plan_of[driver]
        for k, days_ago in enumerate(range(89, 0, -every)):
            energy_kwh = pattern[k % len(pattern)]
            local_start = dt.datetime.combine(today - dt.timedelta(days=days_ago),
                                              dt.time(hour, 3 * (k % 20)),
                                              tzinfo=zone(site.time_zone))
            start = epoch_ms(local_start)
            charging_ms = (36 + 3 * (energy_kwh % 7)) * 60_000 * 2
            idle_ms = 3 * (k % 5) * 60_000
            periods = synthesize_periods(compiled, site.time_zone, start, charging_ms,
                                         energy_kwh * kwh, idle_ms)
            facts = SessionFacts(periods, site.time_zone, start, start + charging_ms + idle_ms)
            catalog.store_session(conn, operator_id=oid, site_id=site.id,
                                  driver_id=drivers[driver], plan_id=plan.id, currency="EUR",
                                  facts=facts, at=at)

