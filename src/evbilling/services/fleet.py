"""Fleet (post-paid) accounts on the ledger: outstanding balance, credit limit, monthly statement.

* A fleet account is a name drivers share (``drivers.fleet_account``); its sessions are posted
  to the ledger account ``fleet_receivable:<name>`` (debit-normal: what the fleet owes).
* Its **credit limit** is the smallest ``credit_limit_minor`` of the fleet plans its drivers hold
  at the time asked (the conservative choice when drivers of one account are on different fleet
  plans); none = no limit known (no driver on a fleet plan). ``available`` = limit - outstanding.
* A **statement** covers one accounting month ``YYYY-MM``. Every ledger transaction carries its
  month, fixed when it is posted: a session belongs to the month in which it ended, in the time
  zone of its site (docs/ledger.md). Opening balance = the account's postings of earlier months,
  closing = up to and including the month; the lines are the month's transactions and must add
  up to closing - opening (checked).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from evbilling.adapters.db import schema as s
from evbilling.domain.errors import DomainError
from evbilling.domain.invariants import require
from evbilling.domain.ledger import Account, AccountKind, TransactionKind
from evbilling.domain.plans import PlanKind
from evbilling.services import catalog, ledger

MAX_PAGE = 100
MAX_STATEMENT_LINES = 5_000
MAX_PLANS_PER_ACCOUNT = 50
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class InvalidMonthError(DomainError):
    code = "invalid_month"
    field = "month"


class StatementTooLargeError(DomainError):
    code = "statement_too_large"


@dataclass(frozen=True, slots=True)
class CreditLimit:
    limit_minor: int
    currency: str


def credit_limit(conn: Connection, operator_id: str, name: str, at: dt.datetime
                 ) -> CreditLimit | None:
    """The smallest credit limit of the fleet plans the account's drivers hold at ``at``."""
    d, dp = s.drivers.c, s.driver_plans.c
    plan_ids = conn.execute(select(dp.plan_id).distinct().join(
        s.drivers, d.id == dp.driver_id).where(
        d.operator_id == operator_id, d.fleet_account == name, dp.starts_at <= at,
        (dp.ends_at.is_(None)) | (dp.ends_at > at)).limit(MAX_PLANS_PER_ACCOUNT)).scalars()
    limits = []
    for plan_id in plan_ids:
        plan = catalog.load_plan_at(conn, operator_id, plan_id, at)
        if plan.kind is PlanKind.FLEET and plan.credit_limit_minor is not None:
            limits.append(CreditLimit(plan.credit_limit_minor, plan.currency.code))
    return min(limits, key=lambda x: x.limit_minor, default=None)


def outstanding_minor(conn: Connection, operator_id: str, name: str, currency: str,
                      period_max: str | None = None) -> int:
    return ledger.balance_minor(conn, operator_id, Account.fleet(name), currency,
                                period_max=period_max)


@dataclass(frozen=True, slots=True)
class FleetAccountView:
    name: str
    currency: str
    drivers: int
    outstanding_minor: int
    credit_limit_minor: int | None
    available_minor: int | None


def _names(conn: Connection, operator_id: str) -> list[str]:
    """Every fleet account name: on the operator's drivers, or with ledger history."""
    d, a = s.drivers.c, s.ledger_accounts.c
    prefix = AccountKind.FLEET_RECEIVABLE.value + ":"
    from_drivers = select(d.fleet_account).distinct().where(
        d.operator_id == operator_id, d.fleet_account.is_not(None))
    from_ledger = select(a.code).distinct().where(
        a.operator_id == operator_id, a.kind == AccountKind.FLEET_RECEIVABLE.value)
    names = set(conn.execute(from_drivers).scalars())
    names |= {code.removeprefix(prefix) for code in conn.execute(from_ledger).scalars()}
    return sorted(names)


def list_accounts(conn: Connection, operator_id: str, at: dt.datetime, *, limit: int,
                  starting_after: str | None) -> tuple[list[FleetAccountView], bool]:
    names = _names(conn, operator_id)
    if starting_after:
        names = [n for n in names if n > starting_after]
    page = names[:min(limit, MAX_PAGE)]
    return [account_view(conn, operator_id, n, at) for n in page], len(names) > len(page)


def account_exists(conn: Connection, operator_id: str, name: str) -> bool:
    d, a = s.drivers.c, s.ledger_accounts.c
    if conn.execute(select(d.id).where(d.operator_id == operator_id, d.fleet_account == name)
                    .limit(1)).first() is not None:
        return True
    return conn.execute(select(a.id).where(
        a.operator_id == operator_id, a.code == Account.fleet(name).code).limit(1)
    ).first() is not None


def account_view(conn: Connection, operator_id: str, name: str, at: dt.datetime
                 ) -> FleetAccountView:
    if not account_exists(conn, operator_id, name):
        raise catalog.NotFoundError(f"no fleet account {name!r}")
    limit = credit_limit(conn, operator_id, name, at)
    currency = limit.currency if limit is not None else catalog.operator_currency(
        conn, operator_id)
    d = s.drivers.c
    drivers = int(conn.execute(select(func.count()).select_from(s.drivers).where(
        d.operator_id == operator_id, d.fleet_account == name)).scalar_one())
    outstanding = outstanding_minor(conn, operator_id, name, currency)
    return FleetAccountView(
        name, currency, drivers, outstanding, None if limit is None else limit.limit_minor,
        None if limit is None else max(0, limit.limit_minor - outstanding))


# -- statements ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatementLine:
    transaction_id: str
    kind: TransactionKind
    posted_at: dt.datetime
    amount_minor: int  # what it adds to the amount owed (incl. VAT)
    excl_vat_minor: int | None  # sessions: revenue posted
    vat_minor: int | None
    session_id: str | None
    driver_id: str | None
    site_id: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    energy_milliwh: int | None


@dataclass(frozen=True, slots=True)
class Statement:
    account: FleetAccountView
    month: str
    currency: str
    opening_minor: int
    closing_minor: int
    lines: tuple[StatementLine, ...]

    @property
    def sessions(self) -> tuple[StatementLine, ...]:
        return tuple(x for x in self.lines if x.kind is TransactionKind.SESSION_SETTLEMENT)

    @property
    def adjustments(self) -> tuple[StatementLine, ...]:
        return tuple(x for x in self.lines if x.kind is not TransactionKind.SESSION_SETTLEMENT)


def previous_month(month: str) -> str:
    match = MONTH.match(month)
    if match is None:
        raise InvalidMonthError(f"a month is YYYY-MM, not {month!r}")
    year, number = int(match.group(1)), int(match.group(2))
    return f"{year - 1:04d}-12" if number == 1 else f"{year:04d}-{number - 1:02d}"


def statement(conn: Connection, operator_id: str, name: str, month: str, at: dt.datetime
              ) -> Statement:
    before = previous_month(month)
    view = account_view(conn, operator_id, name, at)
    account, currency = Account.fleet(name), view.currency
    opening = outstanding_minor(conn, operator_id, name, currency, period_max=before)
    closing = outstanding_minor(conn, operator_id, name, currency, period_max=month)
    posted = ledger.transactions_in_period(conn, operator_id, account, currency, month,
                                           MAX_STATEMENT_LINES + 1)
    if len(posted) > MAX_STATEMENT_LINES:
        raise StatementTooLargeError(
            f"more than {MAX_STATEMENT_LINES} transactions in {month}; ask finance for an export")
    sessions = _sessions(conn, operator_id, [p.session_id for p in posted if p.session_id])
    lines = tuple(_line(p, account, currency, sessions.get(p.session_id or "")) for p in posted)
    require(opening + sum(x.amount_minor for x in lines) == closing,
            "a statement's lines add up to closing - opening")
    return Statement(view, month, currency, opening, closing, lines)


def _sessions(conn: Connection, operator_id: str, ids: list[str]) -> dict[str, Any]:
    c = s.charging_sessions.c
    found: dict[str, Any] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in conn.execute(select(s.charging_sessions).where(
                c.operator_id == operator_id, c.id.in_(chunk))):
            found[row.id] = row
    return found


def _line(posted: ledger.PostedTransaction, account: Account, currency: str,
          session: Any) -> StatementLine:
    amount = account.balance_minor(posted.amount_of(account, currency))
    revenue = Account(AccountKind.CHARGING_REVENUE)
    vat = Account(AccountKind.VAT_PAYABLE)
    is_session = posted.kind is TransactionKind.SESSION_SETTLEMENT
    return StatementLine(
        transaction_id=posted.id, kind=posted.kind, posted_at=posted.created_at,
        amount_minor=amount,
        excl_vat_minor=-posted.amount_of(revenue, currency) if is_session else None,
        vat_minor=-posted.amount_of(vat, currency) if is_session else None,
        session_id=posted.session_id,
        driver_id=None if session is None else session.driver_id,
        site_id=None if session is None else session.site_id,
        started_at=None if session is None else ledger.aware(session.started_at),
        ended_at=None if session is None or session.ended_at is None
        else ledger.aware(session.ended_at),
        energy_milliwh=None if session is None else session.energy_milliwh)
