"""A settled session's price on the ledger, and the funding check at session start.

``post_session`` runs inside the charging service's settlement transaction (the one that marks
the session completed), so the session's completion, its ledger transaction and the wallet's
balance commit together or not at all. Its idempotency key is ``session_settlement:<session
id>``: a replayed or retried settlement returns the first posting and moves nothing.

Who pays the price incl. VAT (the plan in force when the session started):

* **prepaid wallet**: the driver's wallet, up to its balance. A wallet never goes negative: what
  it cannot pay goes to ``customer_receivable:<driver>`` (collected by card in the payments
  issue) and the session is flagged ``wallet_shortfall_minor``. A wallet in another currency
  than the session pays nothing (flag ``wallet_currency_mismatch``). When the balance after the
  debit is below the plan's threshold, an auto top-up request is recorded
  (``wallet_top_up_requests``, ``domain.plans.auto_top_up_minor``) for the gateway to execute.
* **fleet**: ``fleet_receivable:<drivers.fleet_account>``, even above the credit limit (the energy
  was delivered; the limit is enforced at start) — then flagged ``credit_limit_exceeded``. A
  fleet-plan driver without a fleet account name pays like pay-per-use (flag
  ``fleet_account_missing``).
* **anything else** (pay-per-use, subscription, flat rate, no driver), and a session that
  costs less than nothing (exported energy: the driver is owed money, whatever the plan):
  ``customer_receivable:<driver or "unidentified">``.

The other side: ``charging_revenue`` is credited with the price excl. VAT, ``vat_payable`` with
the VAT (incl. - excl., both already rounded once per line by the pricing pipeline).

``start_refusal`` (Authorize / StartTransaction): a wallet driver whose wallet holds nothing, or
a fleet driver whose account owes its credit limit or more, is refused (token ``Blocked``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select

from evbilling.adapters.db import schema as s
from evbilling.adapters.ids import new_id
from evbilling.domain.ledger import (
    Account,
    SettlementSplit,
    accounting_month,
    session_settlement,
    wallet_split,
)
from evbilling.domain.money import Currency
from evbilling.domain.plans import FleetAccount, Plan, PlanKind, Wallet, auto_top_up_minor
from evbilling.services import fleet, ledger, wallets


def settlement_key(session_id: str) -> str:
    return f"session_settlement:{session_id}"


@dataclass(frozen=True, slots=True)
class SessionPosting:
    transaction_id: str | None  # None: the session cost nothing
    payer: str  # wallet | fleet | customer | none
    flags: dict[str, Any] = field(default_factory=dict)
    top_up_request_id: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Payer:
    kind: str
    split: SettlementSplit
    flags: dict[str, Any]
    wallet: wallets.WalletRow | None = None


def post_session(conn: Connection, *, operator_id: str, session_id: str,
                 driver_id: str | None, plan: Plan | None, currency: str,
                 total_excl_minor: int, total_incl_minor: int, ended_at: dt.datetime,
                 time_zone: str, at: dt.datetime) -> SessionPosting:
    """Post the session's price (see the module doc); the caller's transaction commits it."""
    key = settlement_key(session_id)
    known = ledger.find(conn, operator_id, key)
    if known is not None:
        flags = {k: v for k, v in known.details.items() if k in _FLAG_NAMES}
        return SessionPosting(known.id, str(known.details.get("payer")), flags, replayed=True)
    payer = _payer(conn, operator_id, driver_id, plan, currency, total_incl_minor, at)
    txn = session_settlement(
        idempotency_key=key, session_id=session_id, currency=currency,
        total_excl_minor=total_excl_minor, total_incl_minor=total_incl_minor,
        split=payer.split, metadata={"payer": payer.kind, "driver_id": driver_id,
                                     "plan_id": None if plan is None else plan.id,
                                     **payer.flags})
    if txn is None:
        return SessionPosting(None, "none")
    posted = ledger.post(conn, operator_id, txn, at=at,
                         period=accounting_month(ended_at, time_zone), session_id=session_id)
    request_id = None
    if payer.wallet is not None and plan is not None and not posted.replayed:
        request_id = _debit_wallet(conn, operator_id, payer.wallet, plan, session_id,
                                   posted.amount_of(Account.wallet(payer.wallet.driver_id),
                                                    currency), at)
    return SessionPosting(posted.id, payer.kind, payer.flags, request_id, posted.replayed)


_FLAG_NAMES = frozenset({"wallet_shortfall_minor", "wallet_currency_mismatch",
                         "credit_limit_exceeded", "fleet_account_missing"})


def _payer(conn: Connection, operator_id: str, driver_id: str | None, plan: Plan | None,
           currency: str, price_minor: int, at: dt.datetime) -> _Payer:
    customer = SettlementSplit(((Account.customer(driver_id), price_minor),)
                               if price_minor != 0 else ())
    if driver_id is None or plan is None or price_minor < 0:
        return _Payer("customer", customer, {})  # < 0: exported energy, owed to the driver
    if plan.kind is PlanKind.PREPAID_WALLET:
        wallet = wallets.lock_wallet(conn, operator_id, driver_id, at, plan.currency.code)
        if wallet.currency != currency:
            return _Payer("customer", customer, {"wallet_currency_mismatch": True})
        split, shortfall = wallet_split(wallet_balance_minor=wallet.balance_minor,
                                        price_minor=price_minor, driver_id=driver_id)
        flags: dict[str, Any] = {"wallet_shortfall_minor": shortfall} if shortfall else {}
        return _Payer("wallet", split, flags, wallet=wallet)
    if plan.kind is PlanKind.FLEET:
        name = _fleet_account(conn, operator_id, driver_id)
        if name is None:
            return _Payer("customer", customer, {"fleet_account_missing": True})
        split = SettlementSplit(((Account.fleet(name), price_minor),) if price_minor else ())
        owed = fleet.outstanding_minor(conn, operator_id, name, currency)
        limit = plan.credit_limit_minor
        over = limit is not None and owed + price_minor > limit
        return _Payer("fleet", split, {"credit_limit_exceeded": True} if over else {})
    return _Payer("customer", customer, {})


def _fleet_account(conn: Connection, operator_id: str, driver_id: str) -> str | None:
    d = s.drivers.c
    name = conn.execute(select(d.fleet_account).where(
        d.operator_id == operator_id, d.id == driver_id)).scalar()
    return None if name is None else str(name)


def _debit_wallet(conn: Connection, operator_id: str, wallet: wallets.WalletRow, plan: Plan,
                  session_id: str, signed_minor: int, at: dt.datetime) -> str | None:
    """Check the wallet's new balance; record an auto top-up request if it fell too low."""
    paid = -Account.wallet(wallet.driver_id).balance_minor(signed_minor)  # > 0 when debited
    after = Wallet(Currency.of(wallet.currency), wallet.balance_minor)
    if paid > 0:
        after = after.debit(paid)
        wallets.check_balance(conn, operator_id, wallet.driver_id, after.balance_minor)
    amount = auto_top_up_minor(after, plan)
    if amount <= 0:
        return None
    request_id = new_id("wtr")
    conn.execute(insert(s.wallet_top_up_requests).values(
        id=request_id, operator_id=operator_id, driver_id=wallet.driver_id,
        session_id=session_id, currency=wallet.currency, amount_minor=amount,
        balance_minor=after.balance_minor, status="pending", created_at=at))
    return request_id


# -- session start ---------------------------------------------------------------------------------
def start_refusal(conn: Connection, operator_id: str, driver_id: str, at: dt.datetime
                  ) -> str | None:
    """Why this driver may not start charging now (None: they may). Two to four indexed reads."""
    plan = wallets.current_plan(conn, operator_id, driver_id, at)
    if plan is None:
        return None
    if plan.kind is PlanKind.PREPAID_WALLET:
        wallet = wallets.find_wallet(conn, operator_id, driver_id)
        if wallet is None or wallet.balance_minor <= 0:
            return "wallet_empty"
        return None
    if plan.kind is PlanKind.FLEET and plan.credit_limit_minor is not None:
        name = _fleet_account(conn, operator_id, driver_id)
        if name is None:
            return None
        owed = fleet.outstanding_minor(conn, operator_id, name, plan.currency.code)
        account = FleetAccount(plan.currency, plan.credit_limit_minor, max(0, owed))
        if account.available_minor <= 0:
            return "credit_limit_reached"
    return None
