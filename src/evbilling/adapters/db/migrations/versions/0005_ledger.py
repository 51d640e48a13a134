"""ledger: double-entry accounts, transactions and postings (append-only, balanced per currency,
enforced by the database), and auto top-up requests

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 03:30:00.000000

What the database enforces (docs/ledger.md):

* every backend: UPDATE and DELETE on ledger_accounts, ledger_transactions and ledger_postings
  are rejected by triggers (corrections are reversal transactions);
* PostgreSQL: TRUNCATE of those tables is rejected too, and a DEFERRABLE INITIALLY DEFERRED
  constraint trigger rejects, at commit, a transaction whose postings do not sum to zero per
  currency or that has fewer than two postings;
* SQLite has no deferred triggers: the service checks the balance before it inserts (the domain
  refuses an unbalanced transaction) and ``services.ledger.unbalanced_transactions`` re-checks.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LEDGER_TABLES = ("ledger_accounts", "ledger_transactions", "ledger_postings")

PG_FUNCTIONS = (
    """
    CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'the ledger is append-only: % on % is not allowed (post a reversal)',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
    END $$
    """,
    """
    CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      txn_id text;
      bad record;
      postings_n integer;
    BEGIN
      IF TG_TABLE_NAME = 'ledger_transactions' THEN
        txn_id := NEW.id;
      ELSE
        txn_id := NEW.transaction_id;
      END IF;
      SELECT count(*) INTO postings_n FROM ledger_postings WHERE transaction_id = txn_id;
      IF postings_n < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % posting(s); at least 2 are needed',
          txn_id, postings_n USING ERRCODE = 'check_violation';
      END IF;
      SELECT a.currency, sum(p.amount_minor) AS total INTO bad
        FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id
       WHERE p.transaction_id = txn_id
       GROUP BY a.currency HAVING sum(p.amount_minor) <> 0 LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % postings sum to %',
          txn_id, bad.currency, bad.total USING ERRCODE = 'check_violation';
      END IF;
      RETURN NULL;
    END $$
    """,
)


def _create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in PG_FUNCTIONS:
            op.execute(statement)
        for table in LEDGER_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION ledger_reject_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change()"
            )
        for table in ("ledger_transactions", "ledger_postings"):
            op.execute(
                f"CREATE CONSTRAINT TRIGGER {table}_balanced AFTER INSERT ON {table} "
                f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                f"EXECUTE FUNCTION ledger_check_balanced()"
            )
        return
    for table in LEDGER_TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {action} on {table} "
                f"is not allowed (post a reversal)'); END"
            )


def _drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in LEDGER_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_balanced ON {table}")
        op.execute("DROP FUNCTION IF EXISTS ledger_check_balanced()")
        op.execute("DROP FUNCTION IF EXISTS ledger_reject_change()")
        return
    for table in LEDGER_TABLES:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=250), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_ledger_accounts_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint("operator_id", "code", "currency", name="uq_ledger_accounts_code"),
    )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_accounts_operator_id"), ["operator_id"], unique=False
        )

    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=True),
        sa.Column("reversal_of", sa.String(length=40), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_ledger_transactions_operator_id_operators"),
        ),
        sa.ForeignKeyConstraint(
            ["reversal_of"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_transactions_reversal_of_ledger_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["charging_sessions.id"],
            name=op.f("fk_ledger_transactions_session_id_charging_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("operator_id", "idempotency_key", name="uq_ledger_transactions_key"),
        sa.UniqueConstraint("reversal_of", name=op.f("uq_ledger_transactions_reversal_of")),
    )
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_transactions_operator_id"), ["operator_id"], unique=False
        )
        batch_op.create_index(
            "ix_ledger_transactions_session", ["operator_id", "session_id"], unique=False
        )

    op.create_table(
        "wallet_top_up_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("driver_id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status in ('pending','executed','failed','cancelled')",
            name=op.f("ck_wallet_top_up_requests_status"),
        ),
        sa.CheckConstraint(
            "amount_minor > 0", name=op.f("ck_wallet_top_up_requests_amount_positive")
        ),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["drivers.id"], name=op.f("fk_wallet_top_up_requests_driver_id_drivers")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_wallet_top_up_requests_operator_id_operators"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["charging_sessions.id"],
            name=op.f("fk_wallet_top_up_requests_session_id_charging_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_top_up_requests")),
        sa.UniqueConstraint("operator_id", "session_id", name="uq_wallet_top_up_requests_session"),
    )
    with op.batch_alter_table("wallet_top_up_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_wallet_top_up_requests_driver_id"), ["driver_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_wallet_top_up_requests_operator_id"), ["operator_id"], unique=False
        )

    op.create_table(
        "ledger_postings",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("operator_id", sa.String(length=40), nullable=False),
        sa.Column("transaction_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_minor <> 0", name=op.f("ck_ledger_postings_non_zero")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_postings_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_ledger_postings_operator_id_operators")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_postings_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_postings")),
        sa.UniqueConstraint("transaction_id", "account_id", name="uq_ledger_postings_account"),
    )
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_postings_account_seq", ["account_id", "seq"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ledger_postings_operator_id"), ["operator_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_postings_transaction_id"), ["transaction_id"], unique=False
        )

    _create_triggers()


def downgrade() -> None:
    _drop_triggers()
    with op.batch_alter_table("ledger_postings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_postings_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_postings_operator_id"))
        batch_op.drop_index("ix_ledger_postings_account_seq")

    op.drop_table("ledger_postings")
    with op.batch_alter_table("wallet_top_up_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_top_up_requests_operator_id"))
        batch_op.drop_index(batch_op.f("ix_wallet_top_up_requests_driver_id"))

    op.drop_table("wallet_top_up_requests")
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_transactions_session")
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_operator_id"))

    op.drop_table("ledger_transactions")
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_accounts_operator_id"))

    op.drop_table("ledger_accounts")
