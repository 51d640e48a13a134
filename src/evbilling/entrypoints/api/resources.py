"""The plain records of the platform and who may touch them (see crud.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection

from evbilling.adapters.db import schema as s
from evbilling.adapters.security import (
    MIN_CHARGER_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    hash_password,
)
from evbilling.domain.errors import DomainError
from evbilling.domain.money import Currency
from evbilling.domain.timezones import zone
from evbilling.entrypoints.api.auth import (
    EVERYONE,
    STAFF,
    STAFF_AND_FINANCE,
    Principal,
    Role,
    forget_all_tokens,
)
from evbilling.entrypoints.api.crud import Resource
from evbilling.entrypoints.api.errors import ApiError


class Strict(BaseModel):
    # No whitespace stripping: it would silently change passwords and secrets.
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    created_at: dt.datetime


Name = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=40)]


def _currency(value: str) -> str:
    try:
        return Currency.of(value).code
    except DomainError as exc:
        raise ValueError(exc.message) from exc


def _time_zone(value: str) -> str:
    try:
        zone(value)
    except DomainError as exc:
        raise ValueError(exc.message) from exc
    return value


# -- sites ----------------------------------------------------------------------------------------
class SiteCreate(Strict):
    name: Name
    time_zone: str = Field(description="IANA time zone, e.g. Europe/Berlin", max_length=64)
    currency: str = Field(min_length=3, max_length=3)
    vat_percent: Decimal = Field(ge=0, le=100, decimal_places=2)
    street: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    country: str = Field(min_length=2, max_length=3)

    _tz = field_validator("time_zone")(lambda cls, v: _time_zone(v))
    _cur = field_validator("currency")(lambda cls, v: _currency(v))


class SiteUpdate(Strict):
    name: Name | None = None
    time_zone: str | None = Field(default=None, max_length=64)
    vat_percent: Decimal | None = Field(default=None, ge=0, le=100, decimal_places=2)
    street: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)

    _tz = field_validator("time_zone")(lambda cls, v: v if v is None else _time_zone(v))


class SiteOut(Out):
    name: str
    time_zone: str
    currency: str
    vat_percent: Decimal
    street: str | None
    city: str | None
    postal_code: str | None
    country: str


# -- chargers, EVSEs, connectors -------------------------------------------------------------------
class ChargerCreate(Strict):
    site_id: Id
    ocpp_identity: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9._\-:*]+$")
    password: str | None = Field(default=None, min_length=MIN_CHARGER_PASSWORD_LENGTH,
                                 max_length=40, description="HTTP Basic password (profiles 1-2)")
    security_profile: Literal[0, 1, 2, 3] = 1
    ocpp_version: Literal["1.6", "2.0.1"] = "1.6"
    vendor: str | None = Field(default=None, max_length=50)
    model: str | None = Field(default=None, max_length=50)


class ChargerUpdate(Strict):
    password: str | None = Field(default=None, min_length=MIN_CHARGER_PASSWORD_LENGTH,
                                 max_length=40)
    security_profile: Literal[0, 1, 2, 3] | None = None
    vendor: str | None = Field(default=None, max_length=50)
    model: str | None = Field(default=None, max_length=50)


class ChargerOut(Out):
    site_id: str
    ocpp_identity: str
    security_profile: int
    ocpp_version: str
    vendor: str | None
    model: str | None


def _charger_values(values: dict[str, Any], _p: Principal, _c: Connection,
                    creating: bool) -> dict[str, Any]:
    password = values.pop("password", None)
    if password is not None:
        values["password_hash"] = hash_password(password)
    elif creating:
        values["password_hash"] = None
    if creating and values.get("security_profile", 1) in (1, 2) and password is None:
        raise ApiError("validation_error", "password: security profiles 1 and 2 need a "
                       f"password of at least {MIN_CHARGER_PASSWORD_LENGTH} characters",
                       extra={"field": "password"})
    return values


def _charger_update_check(current: Any, values: dict[str, Any]) -> None:
    profile = values.get("security_profile", current.security_profile)
    has_password = values.get("password") is not None or current.password_hash is not None
    if profile in (1, 2) and not has_password:
        raise ApiError("validation_error", "password: security profiles 1 and 2 need a "
                       f"password of at least {MIN_CHARGER_PASSWORD_LENGTH} characters",
                       extra={"field": "password"})


class EvseCreate(Strict):
    charger_id: Id
    evse_uid: str = Field(min_length=1, max_length=48)
    ocpp_evse_id: int = Field(ge=1, le=100)


class EvseOut(Out):
    charger_id: str
    evse_uid: str
    ocpp_evse_id: int


class ConnectorCreate(Strict):
    evse_id: Id
    connector_number: int = Field(ge=1, le=20)
    standard: str = Field(min_length=1, max_length=40, examples=["IEC_62196_T2"])
    power_type: Literal["AC_1_PHASE", "AC_2_PHASE", "AC_3_PHASE", "DC"]
    max_power_w: int = Field(gt=0, le=1_000_000)


class ConnectorUpdate(Strict):
    standard: str | None = Field(default=None, min_length=1, max_length=40)
    power_type: Literal["AC_1_PHASE", "AC_2_PHASE", "AC_3_PHASE", "DC"] | None = None
    max_power_w: int | None = Field(default=None, gt=0, le=1_000_000)


class ConnectorOut(Out):
    evse_id: str
    connector_number: int
    standard: str
    power_type: str
    max_power_w: int


# -- drivers, tokens, vehicles ---------------------------------------------------------------------
class DriverCreate(Strict):
    name: Name
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    fleet_account: str | None = Field(default=None, max_length=200)
    time_zone: str = Field(default="UTC", max_length=64)

    _tz = field_validator("time_zone")(lambda cls, v: _time_zone(v))


class DriverUpdate(Strict):
    name: Name | None = None
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    fleet_account: str | None = Field(default=None, max_length=200)


class DriverOut(Out):
    name: str
    email: str | None
    fleet_account: str | None
    time_zone: str


class TokenCreate(Strict):
    driver_id: Id
    kind: Literal["RFID", "APP_USER", "AD_HOC_USER", "OTHER"] = "RFID"
    uid: str = Field(min_length=1, max_length=64)
    status: Literal["ACTIVE", "BLOCKED", "EXPIRED"] = "ACTIVE"


class TokenUpdate(Strict):
    status: Literal["ACTIVE", "BLOCKED", "EXPIRED"] | None = None


class TokenOut(Out):
    driver_id: str
    kind: str
    uid: str
    status: str


class VehicleCreate(Strict):
    driver_id: Id | None = None  # drivers create their own; staff name the driver
    make: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=1, max_length=100)
    battery_kwh: Decimal | None = Field(default=None, gt=0, le=1000, decimal_places=3)


class VehicleUpdate(Strict):
    make: str | None = Field(default=None, min_length=1, max_length=100)
    model: str | None = Field(default=None, min_length=1, max_length=100)
    battery_kwh: Decimal | None = Field(default=None, gt=0, le=1000, decimal_places=3)


class VehicleOut(Out):
    driver_id: str
    make: str
    model: str
    battery_kwh: Decimal | None


def _vehicle_values(values: dict[str, Any], principal: Principal, _c: Connection,
                    creating: bool) -> dict[str, Any]:
    if creating and not values.get("driver_id"):
        raise ApiError("validation_error", "driver_id: required", extra={"field": "driver_id"})
    return values


# -- users and API keys ----------------------------------------------------------------------------
class UserCreate(Strict):
    email: str = Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=200)
    role: Role
    driver_id: Id | None = None


class UserUpdate(Strict):
    password: str | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=200)
    disabled: bool | None = None


class UserOut(Out):
    email: str
    role: str
    driver_id: str | None
    disabled: bool


def _user_values(values: dict[str, Any], _p: Principal, _c: Connection,
                 creating: bool) -> dict[str, Any]:
    password = values.pop("password", None)
    if password is not None:
        values["password_hash"] = hash_password(password)
    if not creating and ("disabled" in values or password is not None):
        forget_all_tokens()  # sessions of this user must not outlive the change on this node
    if creating:
        values["email"] = values["email"].lower()
        values.setdefault("disabled", False)
        if (values["role"] == Role.DRIVER) != (values.get("driver_id") is not None):
            raise ApiError("validation_error",
                           "driver_id: required for the driver role and only for it",
                           extra={"field": "driver_id"})
    return values


# -- tariff assignments ----------------------------------------------------------------------------
class AssignmentCreate(Strict):
    tariff_id: Id
    site_id: Id | None = None
    connector_id: Id | None = None
    plan_id: Id | None = Field(default=None, description="per-plan override")
    valid_from: dt.datetime
    valid_to: dt.datetime | None = None


class AssignmentUpdate(Strict):
    valid_to: dt.datetime | None = None


class AssignmentOut(Out):
    tariff_id: str
    site_id: str | None
    connector_id: str | None
    plan_id: str | None
    valid_from: dt.datetime
    valid_to: dt.datetime | None


def _assignment_values(values: dict[str, Any], _p: Principal, _c: Connection,
                       creating: bool) -> dict[str, Any]:
    for key in ("valid_from", "valid_to"):
        value = values.get(key)
        if value is not None and value.tzinfo is None:
            raise ApiError("validation_error", f"{key}: give a time zone offset (e.g. Z)",
                           extra={"field": key})
    if creating and values.get("site_id") is None and values.get("connector_id") is None:
        raise ApiError("validation_error", "site_id: name a site or a connector",
                       extra={"field": "site_id"})
    if values.get("valid_to") is not None and values.get("valid_from") is not None \
            and values["valid_to"] <= values["valid_from"]:
        raise ApiError("validation_error", "valid_to: must be after valid_from",
                       extra={"field": "valid_to"})
    return values


def _assignment_update_check(current: Any, values: dict[str, Any]) -> None:
    valid_to = values.get("valid_to")
    valid_from = current.valid_from
    if valid_to is not None and valid_to.tzinfo is not None and valid_from is not None \
            and valid_to <= valid_from:
        raise ApiError("validation_error", "valid_to: must be after valid_from",
                       extra={"field": "valid_to"})


def resources() -> list[Resource]:
    return [
        Resource("sites", s.sites, "site", SiteCreate, SiteUpdate, SiteOut,
                 read_roles=EVERYONE, write_roles=STAFF, filters=("country", "currency"),
                 catalog=True),
        Resource("chargers", s.chargers, "chg", ChargerCreate, ChargerUpdate, ChargerOut,
                 read_roles=STAFF_AND_FINANCE, write_roles=STAFF,
                 references={"site_id": s.sites}, filters=("site_id", "ocpp_identity"),
                 prepare=_charger_values, audited=True, check_update=_charger_update_check,
                 catalog=True),
        Resource("evses", s.evses, "evse", EvseCreate, None, EvseOut,
                 read_roles=STAFF_AND_FINANCE, write_roles=STAFF,
                 references={"charger_id": s.chargers}, filters=("charger_id",), catalog=True),
        Resource("connectors", s.connectors, "con", ConnectorCreate, ConnectorUpdate,
                 ConnectorOut, read_roles=STAFF_AND_FINANCE, write_roles=STAFF,
                 references={"evse_id": s.evses}, filters=("evse_id",), catalog=True),
        Resource("tariff-assignments", s.tariff_assignments, "tas", AssignmentCreate,
                 AssignmentUpdate, AssignmentOut, read_roles=STAFF_AND_FINANCE,
                 write_roles=STAFF, filters=("tariff_id", "site_id", "connector_id", "plan_id"),
                 references={"tariff_id": s.tariffs, "site_id": s.sites,
                             "connector_id": s.connectors, "plan_id": s.plans},
                 prepare=_assignment_values, audited=True,
                 check_update=_assignment_update_check, catalog=True),
        Resource("drivers", s.drivers, "drv", DriverCreate, DriverUpdate, DriverOut,
                 read_roles=EVERYONE, write_roles=STAFF, driver_column="id",
                 filters=("email", "fleet_account")),
        Resource("tokens", s.tokens, "tok", TokenCreate, TokenUpdate, TokenOut,
                 read_roles=EVERYONE, write_roles=STAFF, driver_column="driver_id",
                 references={"driver_id": s.drivers}, filters=("driver_id", "uid", "status"),
                 audited=True),
        Resource("vehicles", s.vehicles, "veh", VehicleCreate, VehicleUpdate, VehicleOut,
                 read_roles=EVERYONE, write_roles=STAFF, driver_column="driver_id",
                 references={"driver_id": s.drivers}, filters=("driver_id",),
                 prepare=_vehicle_values, drivers_write_own=True),
        Resource("users", s.users, "usr", UserCreate, UserUpdate, UserOut,
                 read_roles=frozenset({Role.ADMIN}), write_roles=frozenset({Role.ADMIN}),
                 references={"driver_id": s.drivers}, filters=("role", "email"),
                 prepare=_user_values, deletable=False, audited=True,
                 lowercase_filters=("email",)),
    ]
