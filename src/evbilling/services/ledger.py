"""Posting ledger transactions, idempotently, inside the caller's database transaction.

``post(conn, operator_id, txn, ...)`` (RELIABILITY R4/R5, TigerBeetle's ``exists`` results):

1. A transaction with the same idempotency key exists: the same fingerprint (same kind, postings,
   metadata) returns it, marked ``replayed`` — nothing is posted twice; a different fingerprint
   raises ``IdempotencyKeyReusedError`` (``idempotency_key_reused``).
2. Otherwise its accounts are created if new (``ledger_accounts`` is insert-only), then the
   transaction row and its postings are inserted inside a savepoint. A concurrent writer with the
   same key makes the unique constraint fail: the savepoint is rolled back and step 1 answers.

The caller owns the unit of work (``write_transaction``): the postings commit or roll back with
whatever else it changes (the session's completion). A posting to a driver's wallet also moves
``wallets.balance_minor`` here, in the same savepoint, so the stored balance can never drift from
the postings whoever posts. Balances are sums of postings (``account_sum_minor``); the ledger
tables are never updated (migration 0005).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from evbilling.adapters.db import schema as s
from evbilling.adapters.ids import new_id
from evbilling.domain.errors import DomainError
from evbilling.domain.invariants import InvariantViolation, require
from evbilling.domain.ledger import (
    Account,
    AccountKind,
    IdempotencyKeyReusedError,
    JournalTransaction,
    Posting,
    TransactionKind,
    reverse,
)

MAX_MOVEMENTS = 100


class TransactionNotFoundError(DomainError):
    code = "not_found"


class AlreadyReversedError(DomainError):
    code = "already_reversed"


class RecordedFailureError(DomainError):
    """A command refused before, refused again with the same code (a retry never flips)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class StoredPosting:
    seq: int
    account: Account
    currency: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class PostedTransaction:
    id: str
    idempotency_key: str
    kind: TransactionKind
    fingerprint: str
    period: str
    session_id: str | None
    reversal_of: str | None  # the reversed transaction's id
    details: dict[str, Any]
    created_at: dt.datetime
    postings: tuple[StoredPosting, ...]
    replayed: bool = False

    def amount_of(self, account: Account, currency: str) -> int:
        return sum(p.amount_minor for p in self.postings
                   if p.account == account and p.currency == currency)

    @property
    def last_seq(self) -> int:
        return max(p.seq for p in self.postings)


def post(conn: Connection, operator_id: str, txn: JournalTransaction, *, at: dt.datetime,
         period: str, session_id: str | None = None) -> PostedTransaction:
    """Post ``txn`` once (see the module doc). ``period`` is its accounting month."""
    require(at.tzinfo is not None, "ledger times are aware")
    require(len(period) == 7 and period[4] == "-", "an accounting month is YYYY-MM")
    existing = find(conn, operator_id, txn.idempotency_key)
    if existing is not None:
        return _replay(existing, txn)
    reversal_of = None
    if txn.reversal_of is not None:
        reversal_of = _reversed_id(conn, operator_id, txn.reversal_of)
    accounts = {(p.account, p.currency): _account_id(conn, operator_id, p.account, p.currency, at)
                for p in txn.postings}
    txn_id = new_id("ltx")
    try:
        with conn.begin_nested():
            conn.execute(s.ledger_transactions.insert().values(
                id=txn_id, operator_id=operator_id, idempotency_key=txn.idempotency_key,
                kind=txn.kind.value, fingerprint=txn.fingerprint(), period=period,
                session_id=session_id, reversal_of=reversal_of, details=dict(txn.metadata),
                created_at=at))
            conn.execute(s.ledger_postings.insert(), [
                {"operator_id": operator_id, "transaction_id": txn_id,
                 "account_id": accounts[p.account, p.currency], "amount_minor": p.amount_minor}
                for p in txn.postings])
            for p in txn.postings:
                if p.account.kind is AccountKind.DRIVER_WALLET:
                    _move_wallet(conn, operator_id, p)
    except IntegrityError:
        concurrent = find(conn, operator_id, txn.idempotency_key)
        if concurrent is None:
            raise
        return _replay(concurrent, txn)
    posted = find(conn, operator_id, txn.idempotency_key)
    if posted is None:
        raise InvariantViolation("a posted transaction can be read back")
    return posted


def _move_wallet(conn: Connection, operator_id: str, posting: Posting) -> None:
    """Keep ``wallets.balance_minor`` equal to the wallet account's postings, in the posting's
    transaction (a debit lowers it; CHECK ``balance_non_negative`` refuses going below zero).
    The caller has locked and, if new, created the row (``wallets.lock_wallet``)."""
    w = s.wallets.c
    moved = conn.execute(update(s.wallets).where(
        w.operator_id == operator_id, w.driver_id == posting.account.ref,
        w.currency == posting.currency).values(
        balance_minor=w.balance_minor - posting.amount_minor, version=w.version + 1))
    if moved.rowcount != 1:
        raise InvariantViolation(f"a posting to {posting.account.code} needs the driver's "
                                 f"{posting.currency} wallet row (wallets.lock_wallet first)")


def _replay(existing: PostedTransaction, txn: JournalTransaction) -> PostedTransaction:
    if existing.fingerprint != txn.fingerprint():
        raise IdempotencyKeyReusedError(
            f"the idempotency key {txn.idempotency_key!r} was used for a different "
            f"{existing.kind.value} transaction")
    return dataclasses.replace(existing, replayed=True)


def _reversed_id(conn: Connection, operator_id: str, key: str) -> str:
    original = find(conn, operator_id, key)
    if original is None:
        raise TransactionNotFoundError(f"no ledger transaction with key {key!r}")
    t = s.ledger_transactions.c
    if conn.execute(select(t.id).where(t.reversal_of == original.id)).first() is not None:
        raise AlreadyReversedError(f"ledger transaction {key!r} has already been reversed")
    return original.id


def _account_id(conn: Connection, operator_id: str, account: Account, currency: str,
                at: dt.datetime) -> str:
    a = s.ledger_accounts.c
    query = select(a.id).where(a.operator_id == operator_id, a.code == account.code,
                               a.currency == currency)
    found = conn.execute(query).scalar()
    if found is not None:
        return str(found)
    dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" \
        else sqlite.insert
    conn.execute(dialect_insert(s.ledger_accounts).values(
        id=new_id("lac"), operator_id=operator_id, code=account.code, kind=account.kind.value,
        currency=currency, created_at=at).on_conflict_do_nothing())
    return str(conn.execute(query).scalar_one())


def find(conn: Connection, operator_id: str, idempotency_key: str) -> PostedTransaction | None:
    t = s.ledger_transactions.c
    row = conn.execute(select(s.ledger_transactions).where(
        t.operator_id == operator_id, t.idempotency_key == idempotency_key)).first()
    return None if row is None else _loaded(conn, [row])[0]


def _loaded(conn: Connection, rows: Iterable[Any]) -> list[PostedTransaction]:
    rows = list(rows)
    if not rows:
        return []
    p, a = s.ledger_postings.c, s.ledger_accounts.c
    by_txn: dict[str, list[StoredPosting]] = {r.id: [] for r in rows}
    for r in conn.execute(select(p.seq, p.transaction_id, p.amount_minor, a.code, a.currency)
                          .join(s.ledger_accounts, a.id == p.account_id)
                          .where(p.transaction_id.in_(list(by_txn))).order_by(p.seq)):
        by_txn[r.transaction_id].append(
            StoredPosting(r.seq, Account.parse(r.code), r.currency, r.amount_minor))
    return [PostedTransaction(
        id=r.id, idempotency_key=r.idempotency_key, kind=TransactionKind(r.kind),
        fingerprint=r.fingerprint, period=r.period, session_id=r.session_id,
        reversal_of=r.reversal_of, details=dict(r.details or {}),
        created_at=aware(r.created_at), postings=tuple(by_txn[r.id])) for r in rows]


def aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def journal_transaction(conn: Connection, posted: PostedTransaction) -> JournalTransaction:
    """The domain transaction a stored one was posted from (its fingerprint is the stored one)."""
    reversed_key = None
    if posted.reversal_of is not None:
        t = s.ledger_transactions.c
        reversed_key = conn.execute(select(t.idempotency_key).where(
            t.id == posted.reversal_of)).scalar_one()
    txn = JournalTransaction(
        idempotency_key=posted.idempotency_key, kind=posted.kind,
        postings=tuple(Posting(p.account, p.amount_minor, p.currency) for p in posted.postings),
        metadata=posted.details, reversal_of=reversed_key)
    require(txn.fingerprint() == posted.fingerprint, "a stored transaction matches its hash")
    return txn


def post_reversal(conn: Connection, operator_id: str, idempotency_key: str, *,
                  at: dt.datetime, period: str) -> PostedTransaction:
    """Post the correcting transaction of the one with ``idempotency_key`` (once)."""
    original = find(conn, operator_id, idempotency_key)
    if original is None:
        raise TransactionNotFoundError(f"no ledger transaction with key {idempotency_key!r}")
    correction = reverse(journal_transaction(conn, original))
    existing = find(conn, operator_id, correction.idempotency_key)
    if existing is not None:
        return _replay(existing, correction)
    return post(conn, operator_id, correction, at=at, period=period,
                session_id=original.session_id)


# -- refused commands (R5) -------------------------------------------------------------------------
MAX_FAILURE_DETAIL_LENGTH = 500


def request_fingerprint(**fields: object) -> str:
    """SHA-256 of a command's fields (canonical JSON): what "the same request" means."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_recorded_failure(conn: Connection, operator_id: str, idempotency_key: str,
                           fingerprint: str) -> None:
    """Raise the refusal recorded for this key (same request) or ``idempotency_key_reused``
    (another request); nothing recorded: return."""
    f = s.idempotency_failures.c
    row = conn.execute(select(s.idempotency_failures).where(
        f.operator_id == operator_id, f.idempotency_key == idempotency_key)).first()
    if row is None:
        return
    if row.request_fingerprint != fingerprint:
        raise IdempotencyKeyReusedError(
            f"the idempotency key {idempotency_key!r} was used for a different request")
    raise RecordedFailureError(row.code, row.detail)


def record_failure(conn: Connection, operator_id: str, idempotency_key: str, fingerprint: str,
                   error: DomainError, at: dt.datetime) -> None:
    """Remember a refusal (in the caller's new transaction, after the command rolled back).
    Nothing is recorded when the key has meanwhile succeeded or failed already."""
    if find(conn, operator_id, idempotency_key) is not None:
        return
    dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" \
        else sqlite.insert
    conn.execute(dialect_insert(s.idempotency_failures).values(
        id=new_id("idf"), operator_id=operator_id, idempotency_key=idempotency_key,
        request_fingerprint=fingerprint, code=error.code[:60],
        detail=error.message[:MAX_FAILURE_DETAIL_LENGTH], created_at=at
    ).on_conflict_do_nothing())


# -- balances and movements ------------------------------------------------------------------------
def account_sum_minor(conn: Connection, operator_id: str, account: Account, currency: str, *,
                      period_max: str | None = None, seq_max: int | None = None) -> int:
    """The signed sum of the account's postings (optionally up to an accounting month, or up to
    and including posting ``seq_max``). 0 for an account with no postings."""
    p, a, t = s.ledger_postings.c, s.ledger_accounts.c, s.ledger_transactions.c
    query = select(func.coalesce(func.sum(p.amount_minor), 0)).select_from(
        s.ledger_postings.join(s.ledger_accounts, a.id == p.account_id)).where(
        a.operator_id == operator_id, a.code == account.code, a.currency == currency)
    if period_max is not None:
        query = query.join(s.ledger_transactions, t.id == p.transaction_id).where(
            t.period <= period_max)
    if seq_max is not None:
        query = query.where(p.seq <= seq_max)
    return int(conn.execute(query).scalar_one())


def balance_minor(conn: Connection, operator_id: str, account: Account, currency: str,
                  **kwargs: Any) -> int:
    """The balance on the account's normal side (a wallet's money, a fleet's debt)."""
    return account.balance_minor(account_sum_minor(conn, operator_id, account, currency,
                                                   **kwargs))


def recent_transactions(conn: Connection, operator_id: str, account: Account, currency: str,
                        limit: int) -> list[PostedTransaction]:
    """The account's newest transactions first (at most ``MAX_MOVEMENTS``)."""
    p, a, t = s.ledger_postings.c, s.ledger_accounts.c, s.ledger_transactions.c
    ids = select(p.transaction_id).join(s.ledger_accounts, a.id == p.account_id).where(
        a.operator_id == operator_id, a.code == account.code, a.currency == currency)
    rows = conn.execute(select(s.ledger_transactions).where(t.id.in_(ids))
                        .order_by(t.created_at.desc(), t.id.desc())
                        .limit(min(limit, MAX_MOVEMENTS))).all()
    return _loaded(conn, rows)


def transactions_in_period(conn: Connection, operator_id: str, account: Account,
                           currency: str, period: str, limit: int) -> list[PostedTransaction]:
    """The account's transactions of one accounting month, oldest first."""
    p, a, t = s.ledger_postings.c, s.ledger_accounts.c, s.ledger_transactions.c
    ids = select(p.transaction_id).join(s.ledger_accounts, a.id == p.account_id).where(
        a.operator_id == operator_id, a.code == account.code, a.currency == currency)
    rows = conn.execute(select(s.ledger_transactions).where(
        t.id.in_(ids), t.period == period).order_by(t.created_at, t.id).limit(limit)).all()
    return _loaded(conn, rows)


def unbalanced_transactions(conn: Connection, operator_id: str | None = None,
                            limit: int = 100) -> list[str]:
    """Audit query: ids of transactions whose postings do not sum to zero in some currency or
    that have fewer than two postings (the PostgreSQL trigger makes this empty; on SQLite it is
    the re-check of what the service verified before inserting)."""
    p, a, t = s.ledger_postings.c, s.ledger_accounts.c, s.ledger_transactions.c
    per_currency = select(p.transaction_id.label("txn"), a.currency,
                          func.sum(p.amount_minor).label("total"),
                          func.count().label("n")).join(
        s.ledger_accounts, a.id == p.account_id).group_by(p.transaction_id, a.currency)
    if operator_id is not None:
        per_currency = per_currency.where(p.operator_id == operator_id)
    sums = per_currency.subquery()
    unbalanced = set(conn.execute(select(sums.c.txn).where(sums.c.total != 0)
                                  .limit(limit)).scalars())
    counts = select(p.transaction_id, func.count().label("n")).group_by(
        p.transaction_id).subquery()
    lonely = select(t.id).outerjoin(counts, counts.c.transaction_id == t.id).where(
        func.coalesce(counts.c.n, 0) < 2)
    if operator_id is not None:
        lonely = lonely.where(t.operator_id == operator_id)
    unbalanced |= set(conn.execute(lonely.limit(limit)).scalars())
    return sorted(unbalanced)[:limit]
