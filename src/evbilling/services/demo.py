"""The demo operator: sites, chargers, tariffs, drivers and tokens with known log-ins.

Everything listed here is documented in README.md ("Demo data"). Seeding is idempotent: an
existing demo operator (matched by its OCPI party DE*EVB) is left as it is.
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
from evbilling.adapters.ids import new_id
from evbilling.adapters.security import hash_password
from evbilling.domain.tariffs import parse_tariff, tariff_to_ocpi
from evbilling.services.operators import create_operator

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
DEMO_CHARGERS = (
    # identity, OCPP version, site index
    ("DEMO-CP16-001", "1.6", 0),
    ("DEMO-CP201-001", "2.0.1", 0),
    ("DEMO-CP16-AMS", "1.6", 1),
)


def _tariff_document(name: str) -> dict[str, Any]:
    text = (resources.files("evbilling") / "demo" / name).read_text(encoding="utf-8")
    return dict(json.loads(text, parse_float=Decimal))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def seed_demo(conn: Connection) -> str:
    """Create the demo operator if missing; return its id."""
    existing = conn.execute(select(s.operators.c.id).where(
        s.operators.c.country_code == "DE", s.operators.c.party_id == "EVB")).first()
    if existing is not None:
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
        document=_jsonable(tariff_to_ocpi(public)), created_at=at))
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
    return oid
