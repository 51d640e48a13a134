"""ocpp gateway: sessions from chargers, meter samples, raw frames, notifications

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 22:39:00.668263
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_webhook_endpoints_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_endpoints_operator_id"), ["operator_id"], unique=False
        )

    op.create_table(
        "notification_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("driver_id", sa.String(length=40), nullable=True),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("minutes", sa.Integer(), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["drivers.id"], name=op.f("fk_notification_rules_driver_id_drivers")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_notification_rules_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_rules")),
    )
    with op.batch_alter_table("notification_rules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_rules_driver_id"), ["driver_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_notification_rules_operator_id"), ["operator_id"], unique=False
        )

    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("driver_id", sa.String(length=40), nullable=True),
        sa.Column("session_id", sa.String(length=40), nullable=True),
        sa.Column("charger_id", sa.String(length=40), nullable=True),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["drivers.id"], name=op.f("fk_notifications_driver_id_drivers")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_notifications_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_driver_created",
            ["operator_id", "driver_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_notifications_operator_id"), ["operator_id"], unique=False
        )

    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("notification_id", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("channel in ('email','webhook')", name=op.f("ck_deliveries_channel")),
        sa.CheckConstraint(
            "status in ('pending','delivered','failed')", name=op.f("ck_deliveries_status")
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_deliveries_notification_id_notifications"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_deliveries_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("notification_id", "channel", "target", name="uq_deliveries_target"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_deliveries_operator_id"), ["operator_id"], unique=False
        )

    op.create_table(
        "ocpp_messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("charger_id", sa.String(length=40), nullable=False),
        sa.Column("ocpp_version", sa.String(length=8), nullable=False),
        sa.Column("unique_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("frame", sa.Text(), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status in ('received','processed','failed')", name=op.f("ck_ocpp_messages_status")
        ),
        sa.ForeignKeyConstraint(
            ["charger_id"], ["chargers.id"], name=op.f("fk_ocpp_messages_charger_id_chargers")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_ocpp_messages_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ocpp_messages")),
    )
    with op.batch_alter_table("ocpp_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ocpp_messages_charger_unique", ["charger_id", "unique_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ocpp_messages_operator_id"), ["operator_id"], unique=False
        )
        batch_op.create_index("ix_ocpp_messages_status", ["status"], unique=False)

    op.create_table(
        "meter_samples",
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("energy_milliwh", sa.BigInteger(), nullable=True),
        sa.Column("power_w", sa.Integer(), nullable=True),
        sa.Column("current_ma", sa.Integer(), nullable=True),
        sa.Column("soc_percent", sa.Integer(), nullable=True),
        sa.Column("charging", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_meter_samples_operator_id_operators")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["charging_sessions.id"],
            name=op.f("fk_meter_samples_session_id_charging_sessions"),
        ),
        sa.PrimaryKeyConstraint("session_id", "at_ms", name=op.f("pk_meter_samples")),
    )
    op.create_table(
        "ocpp_transaction_numbers",
        sa.Column(
            "number",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["charging_sessions.id"],
            name=op.f("fk_ocpp_transaction_numbers_session_id_charging_sessions"),
        ),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_ocpp_transaction_numbers")),
        sa.UniqueConstraint("session_id", name=op.f("uq_ocpp_transaction_numbers_session_id")),
    )
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("boot", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), server_default="completed", nullable=False)
        )
        batch_op.add_column(sa.Column("charger_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("token_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("ocpp_transaction_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("energy_milliwh_start", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("last_sample_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("meter_state", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("live", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("cap_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("cap_milliwh", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("stop_reason", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("last_seq_no", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("flags", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("cdr", sa.JSON(), nullable=True))
        batch_op.create_index("ix_charging_sessions_status", ["status"], unique=False)
        batch_op.create_unique_constraint(
            "uq_charging_sessions_charger_tx", ["charger_id", "ocpp_transaction_id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_charging_sessions_charger_id_chargers"),
            "chargers",
            ["charger_id"],
            ["id"],
        )
        batch_op.create_check_constraint(
            op.f("ck_charging_sessions_status"),
            "status in ('active','settling','completed','billing_failed')",
        )

    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("status_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("error_code", sa.String(length=50), nullable=True))

    with op.batch_alter_table("drivers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_cap_minor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("session_cap_milliwh", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drivers", schema=None) as batch_op:
        batch_op.drop_column("session_cap_milliwh")
        batch_op.drop_column("session_cap_minor")

    with op.batch_alter_table("connectors", schema=None) as batch_op:
        batch_op.drop_column("error_code")
        batch_op.drop_column("status_at")
        batch_op.drop_column("status")

    with op.batch_alter_table("charging_sessions", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_charging_sessions_status"), type_="check")
        batch_op.drop_constraint(
            batch_op.f("fk_charging_sessions_charger_id_chargers"), type_="foreignkey"
        )
        batch_op.drop_constraint("uq_charging_sessions_charger_tx", type_="unique")
        batch_op.drop_index("ix_charging_sessions_status")
        batch_op.drop_column("cdr")
        batch_op.drop_column("flags")
        batch_op.drop_column("last_seq_no")
        batch_op.drop_column("stop_reason")
        batch_op.drop_column("cap_milliwh")
        batch_op.drop_column("cap_minor")
        batch_op.drop_column("live")
        batch_op.drop_column("meter_state")
        batch_op.drop_column("last_sample_at")
        batch_op.drop_column("energy_milliwh_start")
        batch_op.drop_column("ocpp_transaction_id")
        batch_op.drop_column("token_uid")
        batch_op.drop_column("charger_id")
        batch_op.drop_column("status")

    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.drop_column("last_seen_at")
        batch_op.drop_column("status")
        batch_op.drop_column("boot")

    op.drop_table("ocpp_transaction_numbers")
    op.drop_table("meter_samples")
    with op.batch_alter_table("ocpp_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_ocpp_messages_status")
        batch_op.drop_index(batch_op.f("ix_ocpp_messages_operator_id"))
        batch_op.drop_index("ix_ocpp_messages_charger_unique")

    op.drop_table("ocpp_messages")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_operator_id"))
        batch_op.drop_index("ix_deliveries_due")

    op.drop_table("deliveries")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_operator_id"))
        batch_op.drop_index("ix_notifications_driver_created")

    op.drop_table("notifications")
    with op.batch_alter_table("notification_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_rules_operator_id"))
        batch_op.drop_index(batch_op.f("ix_notification_rules_driver_id"))

    op.drop_table("notification_rules")
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_endpoints_operator_id"))

    op.drop_table("webhook_endpoints")
