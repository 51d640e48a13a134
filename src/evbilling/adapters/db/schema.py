"""The relational schema (SQLAlchemy Core). SQLite embedded, PostgreSQL in production.

Every tenant-owned table carries ``operator_id`` (first in its indexes, Citus-compatible).
Money is integer minor units (BigInteger); tariff rates live inside OCPI tariff documents as
exact decimal strings. Ids are prefixed, time-sortable strings (``adapters/ids.py``).
Changing this file needs an Alembic revision (``evbilling db revision``); the schema test fails
when the migrations and these tables disagree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on every backend (SQLite keeps no offset itself)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any
                             ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

ID = 40  # length of our prefixed ids


def _id() -> Column[str]:
    return Column("id", String(ID), primary_key=True)


def _operator() -> Column[str]:
    return Column("operator_id", String(ID), ForeignKey("operators.id"), nullable=False,
                  index=True)


def _created() -> Column[object]:
    return Column("created_at", UtcDateTime(), nullable=False)


operators = Table(
    "operators", metadata,
    _id(),
    Column("name", String(200), nullable=False),
    Column("country_code", String(2), nullable=False),
    Column("party_id", String(3), nullable=False),
    Column("currency", String(3), nullable=False),
    _created(),
    UniqueConstraint("country_code", "party_id", name="uq_operators_ocpi_party"),
)

users = Table(
    "users", metadata,
    _id(),
    _operator(),
    Column("email", String(320), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    _created(),
    UniqueConstraint("operator_id", "email", name="uq_users_operator_email"),
    CheckConstraint("role in ('admin','operator_staff','finance','driver')", name="role"),
)

auth_sessions = Table(
    "auth_sessions", metadata,
    _id(),
    _operator(),
    Column("user_id", String(ID), ForeignKey("users.id"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    _created(),
)

api_keys = Table(
    "api_keys", metadata,
    _id(),
    _operator(),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("last_used_at", UtcDateTime(), nullable=True),
    _created(),
)

sites = Table(
    "sites", metadata,
    _id(),
    _operator(),
    Column("name", String(200), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("vat_percent", Numeric(5, 2), nullable=False),
    Column("street", String(200), nullable=True),
    Column("city", String(100), nullable=True),
    Column("postal_code", String(20), nullable=True),
    Column("country", String(3), nullable=False),
    _created(),
)

chargers = Table(
    "chargers", metadata,
    _id(),
    _operator(),
    Column("site_id", String(ID), ForeignKey("sites.id"), nullable=False, index=True),
    Column("ocpp_identity", String(48), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=True),
    Column("security_profile", Integer, nullable=False),
    Column("ocpp_version", String(8), nullable=False),
    Column("vendor", String(50), nullable=True),
    Column("model", String(50), nullable=True),
    Column("boot", JSON, nullable=True),  # last BootNotification: firmware, serial, reason
    Column("status", String(20), nullable=True),  # charger-level OCPP status (connector 0)
    Column("last_seen_at", UtcDateTime(), nullable=True),
    _created(),
    CheckConstraint("security_profile in (0, 1, 2, 3)", name="security_profile"),
)

evses = Table(
    "evses", metadata,
    _id(),
    _operator(),
    Column("charger_id", String(ID), ForeignKey("chargers.id"), nullable=False, index=True),
    Column("evse_uid", String(48), nullable=False),
    Column("ocpp_evse_id", Integer, nullable=False),
    _created(),
    UniqueConstraint("charger_id", "ocpp_evse_id", name="uq_evses_charger_ocpp"),
)

connectors = Table(
    "connectors", metadata,
    _id(),
    _operator(),
    Column("evse_id", String(ID), ForeignKey("evses.id"), nullable=False, index=True),
    Column("connector_number", Integer, nullable=False),
    Column("standard", String(40), nullable=False),
    Column("power_type", String(20), nullable=False),
    Column("max_power_w", Integer, nullable=False),
    Column("status", String(20), nullable=True),  # OCPP connector status, last reported
    Column("status_at", UtcDateTime(), nullable=True),
    Column("error_code", String(50), nullable=True),
    _created(),
    UniqueConstraint("evse_id", "connector_number", name="uq_connectors_evse_number"),
)

tariffs = Table(
    "tariffs", metadata,
    _id(),
    _operator(),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    _created(),
)

tariff_versions = Table(
    "tariff_versions", metadata,
    _id(),
    _operator(),
    Column("tariff_id", String(ID), ForeignKey("tariffs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("document", JSON, nullable=False),  # OCPI 2.2.1 Tariff, numbers as decimal strings
    Column("used_at", UtcDateTime(), nullable=True),  # set once used: immutable
    _created(),
    UniqueConstraint("tariff_id", "version", name="uq_tariff_versions_tariff_version"),
)

tariff_assignments = Table(
    "tariff_assignments", metadata,
    _id(),
    _operator(),
    Column("tariff_id", String(ID), ForeignKey("tariffs.id"), nullable=False, index=True),
    Column("site_id", String(ID), ForeignKey("sites.id"), nullable=True, index=True),
    Column("connector_id", String(ID), ForeignKey("connectors.id"), nullable=True),
    Column("plan_id", String(ID), ForeignKey("plans.id"), nullable=True),
    Column("valid_from", UtcDateTime(), nullable=False),
    Column("valid_to", UtcDateTime(), nullable=True),
    _created(),
    CheckConstraint("site_id is not null or connector_id is not null", name="target"),
)

drivers = Table(
    "drivers", metadata,
    _id(),
    _operator(),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=True),
    Column("fleet_account", String(200), nullable=True),
    Column("time_zone", String(64), nullable=False),
    # default spending cap for each new session (money or energy); None = no cap
    Column("session_cap_minor", BigInteger, nullable=True),
    Column("session_cap_milliwh", BigInteger, nullable=True),
    _created(),
)

tokens = Table(
    "tokens", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=False, index=True),
    Column("kind", String(10), nullable=False),
    Column("uid", String(64), nullable=False),
    Column("status", String(10), nullable=False),
    _created(),
    UniqueConstraint("operator_id", "uid", name="uq_tokens_operator_uid"),
    CheckConstraint("kind in ('RFID','APP_USER','AD_HOC_USER','OTHER')", name="kind"),
    CheckConstraint("status in ('ACTIVE','BLOCKED','EXPIRED')", name="status"),
)

vehicles = Table(
    "vehicles", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=False, index=True),
    Column("make", String(100), nullable=False),
    Column("model", String(100), nullable=False),
    Column("battery_kwh", Numeric(8, 3), nullable=True),
    _created(),
)

plans = Table(
    "plans", metadata,
    _id(),
    _operator(),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("terms", JSON, nullable=False),  # kind-specific terms, validated by the domain
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    _created(),
)

plan_versions = Table(
    "plan_versions", metadata,
    _id(),
    _operator(),
    Column("plan_id", String(ID), ForeignKey("plans.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("terms", JSON, nullable=False),  # as plans.terms; a published version never changes
    Column("active", Boolean, nullable=False),
    _created(),
    UniqueConstraint("plan_id", "version", name="uq_plan_versions_plan_version"),
)

driver_plans = Table(
    "driver_plans", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=False, index=True),
    Column("plan_id", String(ID), ForeignKey("plans.id"), nullable=False),
    Column("starts_at", UtcDateTime(), nullable=False),
    Column("ends_at", UtcDateTime(), nullable=True),
    _created(),
)

wallets = Table(
    "wallets", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=False, unique=True),
    Column("currency", String(3), nullable=False),
    Column("balance_minor", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    _created(),
    CheckConstraint("balance_minor >= 0", name="balance_non_negative"),
)

#: The double-entry ledger (``domain/ledger.py``, ``docs/ledger.md``). Append-only: the database
#: rejects UPDATE and DELETE on these three tables (triggers, migration 0005); on PostgreSQL a
#: deferred constraint trigger also rejects, at commit, a transaction whose postings do not sum
#: to zero per currency or that has fewer than two postings.
ledger_accounts = Table(
    "ledger_accounts", metadata,
    _id(),
    _operator(),
    Column("code", String(250), nullable=False),  # kind[:ref], e.g. driver_wallet:drv_01...
    Column("kind", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    _created(),
    UniqueConstraint("operator_id", "code", "currency", name="uq_ledger_accounts_code"),
)

ledger_transactions = Table(
    "ledger_transactions", metadata,
    _id(),
    _operator(),
    Column("idempotency_key", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 of the content (idempotency)
    Column("period", String(7), nullable=False),  # accounting month YYYY-MM (docs/ledger.md)
    Column("session_id", String(ID), ForeignKey("charging_sessions.id"), nullable=True),
    Column("reversal_of", String(ID), ForeignKey("ledger_transactions.id"), nullable=True,
           unique=True),
    Column("details", JSON, nullable=False),  # the transaction's metadata
    _created(),
    UniqueConstraint("operator_id", "idempotency_key", name="uq_ledger_transactions_key"),
    Index("ix_ledger_transactions_session", "operator_id", "session_id"),
)

ledger_postings = Table(
    "ledger_postings", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    _operator(),
    Column("transaction_id", String(ID), ForeignKey("ledger_transactions.id"), nullable=False,
           index=True),
    Column("account_id", String(ID), ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),  # > 0 debit, < 0 credit
    UniqueConstraint("transaction_id", "account_id", name="uq_ledger_postings_account"),
    Index("ix_ledger_postings_account_seq", "account_id", "seq"),
    CheckConstraint("amount_minor <> 0", name="non_zero"),
)

#: Money commands that were refused (e.g. a top-up above the wallet limit), kept so that a retry
#: with the same idempotency key gets the same refusal instead of a new attempt (RELIABILITY R5,
#: TigerBeetle ``id_already_failed``). Written in its own transaction after the command rolled
#: back; never updated.
idempotency_failures = Table(
    "idempotency_failures", metadata,
    _id(),
    _operator(),
    Column("idempotency_key", String(200), nullable=False),  # as the ledger's key
    Column("request_fingerprint", String(64), nullable=False),  # sha256 of the request
    Column("code", String(60), nullable=False),
    Column("detail", String(500), nullable=False),
    _created(),
    UniqueConstraint("operator_id", "idempotency_key", name="uq_idempotency_failures_key"),
)

#: Auto top-ups a settlement asked for (the wallet fell below the plan's threshold); the
#: payments issue executes them through the gateway. Not a ledger table: its status changes.
wallet_top_up_requests = Table(
    "wallet_top_up_requests", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=False, index=True),
    Column("session_id", String(ID), ForeignKey("charging_sessions.id"), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("balance_minor", BigInteger, nullable=False),  # the wallet balance that triggered it
    Column("status", String(12), nullable=False),
    _created(),
    UniqueConstraint("operator_id", "session_id", name="uq_wallet_top_up_requests_session"),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("status in ('pending','executed','failed','cancelled')", name="status"),
)

promotions = Table(
    "promotions", metadata,
    _id(),
    _operator(),
    Column("name", String(200), nullable=False),
    Column("code", String(64), nullable=True),
    Column("terms", JSON, nullable=False),
    Column("active", Boolean, nullable=False),
    _created(),
    UniqueConstraint("operator_id", "code", name="uq_promotions_operator_code"),
)

promotion_redemptions = Table(
    "promotion_redemptions", metadata,
    _id(),
    _operator(),
    Column("promotion_id", String(ID), ForeignKey("promotions.id"), nullable=False, index=True),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=False, index=True),
    Column("session_id", String(ID), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    _created(),
    UniqueConstraint("promotion_id", "session_id", name="uq_redemptions_promotion_session"),
)

loyalty_tiers = Table(
    "loyalty_tiers", metadata,
    _id(),
    _operator(),
    Column("name", String(100), nullable=False),
    Column("terms", JSON, nullable=False),
    _created(),
)

charging_sessions = Table(
    "charging_sessions", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=True),
    Column("site_id", String(ID), ForeignKey("sites.id"), nullable=False),
    Column("connector_id", String(ID), ForeignKey("connectors.id"), nullable=True),
    Column("plan_id", String(ID), ForeignKey("plans.id"), nullable=True),
    Column("tariff_version_id", String(ID), ForeignKey("tariff_versions.id"), nullable=True),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("energy_milliwh", BigInteger, nullable=False),
    Column("periods", JSON, nullable=False),  # OCPI charging periods
    Column("currency", String(3), nullable=False),
    Column("total_excl_minor", BigInteger, nullable=True),
    Column("total_incl_minor", BigInteger, nullable=True),
    # -- sessions reported by chargers over OCPP (null for imported / demo history) ----------
    Column("status", String(20), nullable=False, server_default="completed"),
    Column("charger_id", String(ID), ForeignKey("chargers.id"), nullable=True),
    Column("token_uid", String(64), nullable=True),
    Column("ocpp_transaction_id", String(64), nullable=True),
    Column("energy_milliwh_start", BigInteger, nullable=True),  # meter register at start
    Column("last_sample_at", UtcDateTime(), nullable=True),
    Column("meter_state", JSON, nullable=True),  # domain.metering.SessionMeter.to_state()
    Column("live", JSON, nullable=True),  # the last running cost pushed to the driver
    Column("cap_minor", BigInteger, nullable=True),  # spending cap incl. VAT, minor units
    Column("cap_milliwh", BigInteger, nullable=True),  # or an energy cap
    Column("stop_reason", String(40), nullable=True),
    Column("last_seq_no", Integer, nullable=True),  # OCPP 2.0.1 TransactionEvent seqNo
    Column("flags", JSON, nullable=True),  # seq_no gaps, meter resets, late samples, timeout
    Column("cdr", JSON, nullable=True),  # the final OCPI CDR with its priced breakdown
    _created(),
    Index("ix_charging_sessions_driver_started", "operator_id", "driver_id", "started_at"),
    Index("ix_charging_sessions_status", "status"),
    UniqueConstraint("charger_id", "ocpp_transaction_id", name="uq_charging_sessions_charger_tx"),
    CheckConstraint("status in ('active','settling','completed','billing_failed')",
                    name="status"),
)

ocpp_transaction_numbers = Table(
    # OCPP 1.6 transactionId is an integer the central system hands out: one row per id.
    "ocpp_transaction_numbers", metadata,
    Column("number", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("session_id", String(ID), ForeignKey("charging_sessions.id"), nullable=False,
           unique=True),
)

meter_samples = Table(
    # Every accepted meter sample of an OCPP session (settlement rebuilds periods from them).
    "meter_samples", metadata,
    Column("session_id", String(ID), ForeignKey("charging_sessions.id"), primary_key=True),
    Column("at_ms", BigInteger, primary_key=True),  # epoch milliseconds
    Column("operator_id", String(ID), ForeignKey("operators.id"), nullable=False),
    Column("energy_milliwh", BigInteger, nullable=True),
    Column("power_w", Integer, nullable=True),
    Column("current_ma", Integer, nullable=True),
    Column("soc_percent", Integer, nullable=True),
    Column("charging", Boolean, nullable=True),
)

ocpp_messages = Table(
    # Raw inbound OCPP frames that move money (transaction messages) or failed to process:
    # acknowledged first, settled from here afterwards, replayable.
    "ocpp_messages", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    _operator(),
    Column("charger_id", String(ID), ForeignKey("chargers.id"), nullable=False),
    Column("ocpp_version", String(8), nullable=False),
    Column("unique_id", String(64), nullable=False),
    Column("action", String(40), nullable=False),
    Column("frame", Text, nullable=False),
    Column("session_id", String(ID), nullable=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("status", String(12), nullable=False),
    Column("error", Text, nullable=True),
    Index("ix_ocpp_messages_charger_unique", "charger_id", "unique_id"),
    Index("ix_ocpp_messages_status", "status"),
    CheckConstraint("status in ('received','processed','failed')", name="status"),
)

notification_rules = Table(
    # Who gets told what: operator-wide (driver_id null) or a driver's own rule.
    "notification_rules", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=True, index=True),
    Column("event", String(40), nullable=False),
    Column("amount_minor", BigInteger, nullable=True),  # "every N currency units"
    Column("minutes", Integer, nullable=True),  # "idle fee starts in N minutes"
    Column("channels", JSON, nullable=False),  # ["in_app", "email", "webhook"]
    Column("active", Boolean, nullable=False),
    _created(),
)

notifications = Table(
    # One row per event (the id is derived from the event, so a replay adds nothing);
    # the in-app list, and the source of email / webhook deliveries.
    "notifications", metadata,
    _id(),
    _operator(),
    Column("driver_id", String(ID), ForeignKey("drivers.id"), nullable=True),
    Column("session_id", String(ID), nullable=True),
    Column("charger_id", String(ID), nullable=True),
    Column("event", String(40), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("read_at", UtcDateTime(), nullable=True),
    _created(),
    Index("ix_notifications_driver_created", "operator_id", "driver_id", "created_at"),
)

webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    _id(),
    _operator(),
    Column("url", String(500), nullable=False),
    Column("secret", String(200), nullable=False),  # HMAC-SHA256 signing secret
    Column("events", JSON, nullable=False),  # event names, or ["*"]
    Column("active", Boolean, nullable=False),
    _created(),
)

deliveries = Table(
    # Outbox of email and webhook deliveries, retried with back-off; one per target and event.
    "deliveries", metadata,
    _id(),
    _operator(),
    Column("notification_id", String(ID), ForeignKey("notifications.id"), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("target", String(500), nullable=False),  # email address or webhook endpoint id
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UtcDateTime(), nullable=True),
    _created(),
    UniqueConstraint("notification_id", "channel", "target", name="uq_deliveries_target"),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    CheckConstraint("channel in ('email','webhook')", name="channel"),
    CheckConstraint("status in ('pending','delivered','failed')", name="status"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("operator_id", String(ID), nullable=True, index=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(200), nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("source_ip", String(64), nullable=True),
    Column("detail", Text, nullable=True),
)

#: One row per operator whose catalog changed: ``generation`` goes up by one in the same
#: transaction as every change to what a quote reads (sites, chargers, EVSEs, connectors,
#: tariffs, tariff versions and assignments, plans and plan versions, promotions, loyalty tiers).
#: Processes keep a snapshot of that catalog and trust it while the generation is unchanged
#: (``services/catalog_cache.py``). No row = generation 0.
catalog_generations = Table(
    "catalog_generations", metadata,
    Column("operator_id", String(ID), ForeignKey("operators.id"), primary_key=True),
    Column("generation", BigInteger, nullable=False),
)
