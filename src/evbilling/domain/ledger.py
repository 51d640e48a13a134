"""The double-entry ledger: accounts, postings, balanced transactions, reversals. Pure, no I/O.

Rules (``docs/ledger.md``):

* An account is ``(operator, code, currency)``; the code is its kind, plus ``:<ref>`` for kinds
  held per driver or fleet (``driver_wallet:drv_01...``, ``fleet_receivable:ACME``).
* A posting is a signed amount in minor units: **positive = debit, negative = credit**. An
  account's *balance* is shown on its normal side (``Account.balance_minor``): assets
  (receivables, clearing) are debit-normal, liabilities and revenue (wallets, VAT, revenue)
  are credit-normal, so a wallet holding 20.00 has postings summing to -2000.
* A ``JournalTransaction`` has 2..``MAX_POSTINGS`` postings, none zero, at most one per
  (account, currency), and its postings sum to zero in every currency. These are invariants
  (``require``): breaking one is a programmer error that aborts the unit of work.
* Transactions are immutable; a correction is ``reverse(txn)``, the same postings negated.
* ``fingerprint`` is what "same content" means for idempotency: the same key with another
  fingerprint is ``IdempotencyKeyReusedError`` (``idempotency_key_reused``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from evbilling.domain.errors import DomainError
from evbilling.domain.invariants import require
from evbilling.domain.money import Currency
from evbilling.domain.plans import local_date

# -- limits ---------------------------------------------------------------------------------------
MAX_POSTINGS = 16
#: One posting never moves more than this (10 billion in major units of a 2-decimal currency).
MAX_POSTING_MINOR = 1_000_000_000_000
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_ACCOUNT_REF_LENGTH = 200
MAX_ACCOUNT_CODE_LENGTH = 250
MAX_METADATA_ENTRIES = 16
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 200
#: One wallet top-up request moves at most this (100 000.00 in a 2-decimal currency); the
#: wallet itself never holds more than ``plans.MAX_WALLET_BALANCE_MINOR``.
MAX_TOP_UP_MINOR = 10_000_000

MetadataValue = str | int | bool | None


class AccountKind(StrEnum):
    """What an account is for, and so its normal side."""

    DRIVER_WALLET = "driver_wallet"  # liability: prepaid money we owe the driver
    FLEET_RECEIVABLE = "fleet_receivable"  # asset: post-paid sessions a fleet owes
    CUSTOMER_RECEIVABLE = "customer_receivable"  # asset: to be captured from the driver's card
    CHARGING_REVENUE = "charging_revenue"  # revenue, excl. VAT
    VAT_PAYABLE = "vat_payable"  # liability to the tax office
    WALLET_FUNDING = "wallet_funding"  # asset: top-ups received, not yet cleared by a gateway
    GATEWAY_CLEARING = "gateway_clearing"  # asset: money at the payment gateway
    PLAN_FEE_REVENUE = "plan_fee_revenue"  # revenue from subscription fees, excl. VAT


#: Kinds kept per driver or per fleet account: their code carries a reference.
REFERENCED_KINDS = frozenset({AccountKind.DRIVER_WALLET, AccountKind.FLEET_RECEIVABLE,
                              AccountKind.CUSTOMER_RECEIVABLE})
CREDIT_NORMAL = frozenset({AccountKind.DRIVER_WALLET, AccountKind.CHARGING_REVENUE,
                           AccountKind.VAT_PAYABLE, AccountKind.PLAN_FEE_REVENUE})


class TransactionKind(StrEnum):
    WALLET_TOP_UP = "wallet_top_up"
    SESSION_SETTLEMENT = "session_settlement"
    REVERSAL = "reversal"


class IdempotencyKeyReusedError(DomainError):
    """The idempotency key was used before for a different transaction."""

    code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True, order=True)
class Account:
    kind: AccountKind
    ref: str | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.kind, AccountKind), "an account has a known kind")
        if self.kind in REFERENCED_KINDS:
            require(isinstance(self.ref, str) and 0 < len(self.ref) <= MAX_ACCOUNT_REF_LENGTH,
                    f"a {self.kind} account needs a reference of 1..{MAX_ACCOUNT_REF_LENGTH}")
        else:
            require(self.ref is None, f"a {self.kind} account has no reference")

    @property
    def code(self) -> str:
        return self.kind.value if self.ref is None else f"{self.kind.value}:{self.ref}"

    @staticmethod
    def parse(code: str) -> Account:
        kind, _, ref = code.partition(":")
        return Account(AccountKind(kind), ref or None)

    @property
    def credit_normal(self) -> bool:
        return self.kind in CREDIT_NORMAL

    def balance_minor(self, signed_sum_minor: int) -> int:
        """The balance on the account's normal side from the signed sum of its postings."""
        return -signed_sum_minor if self.credit_normal else signed_sum_minor

    @staticmethod
    def wallet(driver_id: str) -> Account:
        return Account(AccountKind.DRIVER_WALLET, driver_id)

    @staticmethod
    def fleet(fleet_account: str) -> Account:
        return Account(AccountKind.FLEET_RECEIVABLE, fleet_account)

    @staticmethod
    def customer(driver_id: str | None) -> Account:
        return Account(AccountKind.CUSTOMER_RECEIVABLE, driver_id or "unidentified")


@dataclass(frozen=True, slots=True)
class Posting:
    """``amount_minor`` > 0 debits the account, < 0 credits it."""

    account: Account
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        require(isinstance(self.account, Account), "a posting names an Account")
        require(type(self.amount_minor) is int, "a posting amount is an int (minor units)")
        require(self.amount_minor != 0, "a posting is never zero")
        require(abs(self.amount_minor) <= MAX_POSTING_MINOR,
                f"a posting moves at most {MAX_POSTING_MINOR} minor units")
        require(isinstance(self.currency, str) and Currency.of(self.currency).code
                == self.currency, "a posting's currency is an ISO 4217 code")

    def negated(self) -> Posting:
        return Posting(self.account, -self.amount_minor, self.currency)

    @staticmethod
    def debit(account: Account, amount_minor: int, currency: str) -> Posting:
        require(type(amount_minor) is int and amount_minor > 0, "a debit is positive")
        return Posting(account, amount_minor, currency)

    @staticmethod
    def credit(account: Account, amount_minor: int, currency: str) -> Posting:
        require(type(amount_minor) is int and amount_minor > 0, "a credit is given positive")
        return Posting(account, -amount_minor, currency)


def _check_metadata(metadata: Mapping[str, MetadataValue]) -> None:
    require(len(metadata) <= MAX_METADATA_ENTRIES,
            f"at most {MAX_METADATA_ENTRIES} metadata entries")
    for key, value in metadata.items():
        require(isinstance(key, str) and 0 < len(key) <= MAX_METADATA_KEY_LENGTH,
                "a metadata key is a short string")
        require(value is None or isinstance(value, bool | int)
                or (isinstance(value, str) and len(value) <= MAX_METADATA_VALUE_LENGTH),
                f"metadata {key!r} is a short string, an int, a bool or None")


@dataclass(frozen=True, slots=True)
class JournalTransaction:
    """One balanced, immutable money movement, identified by its idempotency key."""

    idempotency_key: str
    kind: TransactionKind
    postings: tuple[Posting, ...]
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    #: the idempotency key of the transaction this one reverses
    reversal_of: str | None = None

    def __post_init__(self) -> None:
        key = self.idempotency_key
        require(isinstance(key, str) and 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH,
                f"an idempotency key has 1..{MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        require(isinstance(self.kind, TransactionKind), "a transaction has a known kind")
        object.__setattr__(self, "postings", tuple(self.postings))
        postings = self.postings
        require(2 <= len(postings) <= MAX_POSTINGS,
                f"a ledger transaction has 2..{MAX_POSTINGS} postings")
        require(all(isinstance(p, Posting) for p in postings), "postings are Postings")
        require(len({(p.account, p.currency) for p in postings}) == len(postings),
                "at most one posting per account and currency")
        for currency, total in sums_by_currency(postings).items():
            require(total == 0,
                    f"ledger transaction doesn't balance: {currency} postings sum to {total}")
        _check_metadata(self.metadata)
        object.__setattr__(self, "metadata", MappingProxyType(dict(sorted(
            self.metadata.items()))))
        require((self.kind is TransactionKind.REVERSAL) == (self.reversal_of is not None),
                "a reversal, and only a reversal, names the transaction it reverses")

    def fingerprint(self) -> str:
        """SHA-256 of the canonical content (kind, postings, metadata, reversed key)."""
        content = {
            "kind": self.kind.value,
            "postings": sorted([p.account.code, p.currency, p.amount_minor]
                               for p in self.postings),
            "metadata": dict(self.metadata),
            "reversal_of": self.reversal_of,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def amount_of(self, account: Account, currency: str) -> int:
        """The signed amount posted to ``account`` in ``currency`` (0 if none)."""
        return sum(p.amount_minor for p in self.postings
                   if p.account == account and p.currency == currency)


def sums_by_currency(postings: Iterable[Posting]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for p in postings:
        totals[p.currency] = totals.get(p.currency, 0) + p.amount_minor
    return totals


def reverse(txn: JournalTransaction, idempotency_key: str | None = None) -> JournalTransaction:
    """The correcting transaction: every posting negated (default key ``reversal:<key>``)."""
    key = idempotency_key or f"reversal:{txn.idempotency_key}"
    return JournalTransaction(
        idempotency_key=key, kind=TransactionKind.REVERSAL,
        postings=tuple(p.negated() for p in txn.postings),
        metadata={"reverses_kind": txn.kind.value}, reversal_of=txn.idempotency_key)


def balances(transactions: Iterable[JournalTransaction]) -> dict[tuple[Account, str], int]:
    """Signed sums per (account, currency); accounts that net to zero are left out."""
    totals: dict[tuple[Account, str], int] = {}
    for txn in transactions:
        for p in txn.postings:
            key = (p.account, p.currency)
            totals[key] = totals.get(key, 0) + p.amount_minor
    return {key: total for key, total in totals.items() if total != 0}


def accounting_month(at: dt.datetime, time_zone: str) -> str:
    """``YYYY-MM`` of ``at`` in ``time_zone``: the month a transaction belongs to."""
    return local_date(at, time_zone).strftime("%Y-%m")


# -- the transactions the platform posts -----------------------------------------------------------


def wallet_top_up(*, idempotency_key: str, driver_id: str, amount_minor: int, currency: str,
                  reference: str | None) -> JournalTransaction:
    """A top-up: debit ``wallet_funding`` (money received, cleared by a gateway later), credit
    the driver's wallet."""
    return JournalTransaction(
        idempotency_key=idempotency_key, kind=TransactionKind.WALLET_TOP_UP,
        postings=(Posting.debit(Account(AccountKind.WALLET_FUNDING), amount_minor, currency),
                  Posting.credit(Account.wallet(driver_id), amount_minor, currency)),
        metadata={"driver_id": driver_id, "reference": reference})


@dataclass(frozen=True, slots=True)
class SettlementSplit:
    """Who pays a session's price incl. VAT: debits by account, which sum to the price."""

    debits: tuple[tuple[Account, int], ...]


def session_settlement(*, idempotency_key: str, session_id: str, currency: str,
                       total_excl_minor: int, total_incl_minor: int, split: SettlementSplit,
                       metadata: Mapping[str, MetadataValue] | None = None
                       ) -> JournalTransaction | None:
    """Debit the payers (``split``) the price incl. VAT, credit ``charging_revenue`` with the
    price excl. VAT and ``vat_payable`` with the VAT (incl. - excl.). None for a session that
    moves nothing.

    Any signs are posted as they are, never refused: a session that exported energy can cost
    less than nothing (the payer is credited), and the per-line rounding of the pricing pipeline
    can leave a discount's VAT one minor unit above the charge's (``vat_payable`` debited)."""
    require(type(total_excl_minor) is int and type(total_incl_minor) is int,
            "session totals are ints")
    require(sum(amount for _, amount in split.debits) == total_incl_minor,
            "the payers' debits add up to the price incl. VAT")
    vat_minor = total_incl_minor - total_excl_minor
    postings = [Posting(account, amount, currency) for account, amount in split.debits
                if amount != 0]
    if total_excl_minor != 0:
        postings.append(Posting(Account(AccountKind.CHARGING_REVENUE), -total_excl_minor,
                                currency))
    if vat_minor != 0:
        postings.append(Posting(Account(AccountKind.VAT_PAYABLE), -vat_minor, currency))
    if not postings:
        return None
    return JournalTransaction(
        idempotency_key=idempotency_key, kind=TransactionKind.SESSION_SETTLEMENT,
        postings=tuple(postings), metadata={"session_id": session_id, **(metadata or {})})


def wallet_split(*, wallet_balance_minor: int, price_minor: int, driver_id: str
                 ) -> tuple[SettlementSplit, int]:
    """A wallet pays what it holds, never more: the rest (the shortfall) goes to the driver's
    receivable, to be collected by card. Returns the split and the shortfall."""
    require(wallet_balance_minor >= 0 and price_minor >= 0, "amounts are not negative")
    from_wallet = min(wallet_balance_minor, price_minor)
    shortfall = price_minor - from_wallet
    debits = ((Account.wallet(driver_id), from_wallet), (Account.customer(driver_id), shortfall))
    return SettlementSplit(tuple(d for d in debits if d[1] > 0)), shortfall
