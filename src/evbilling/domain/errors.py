"""Expected business outcomes, each with a stable ``code`` (mapped once per entry point)."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every expected business error; ``code`` is stable and machine-readable."""

    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LossyCalculationError(DomainError, TypeError):
    """A float reached money arithmetic."""

    code = "lossy_calculation"


class CurrencyMismatchError(DomainError):
    code = "currency_mismatch"


class UnknownCurrencyError(DomainError):
    code = "unknown_currency"


class InvalidDocumentError(DomainError):
    """An OCPI document (tariff, CDR) is malformed; ``field`` names the bad field."""

    code = "invalid_document"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class TariffParseError(InvalidDocumentError):
    code = "invalid_tariff"


class CdrParseError(InvalidDocumentError):
    code = "invalid_cdr"


class RatingError(DomainError):
    """The session cannot be rated under this tariff (e.g. a limit is exceeded)."""

    code = "rating_failed"


class CurrencyNotSupportedError(RatingError):
    code = "currency_not_supported"


class MeterError(DomainError):
    """Meter data that cannot become charging periods: negative or contradictory values.

    Precedence when several apply (the first is raised): ``MeterClosedError``, then a bad
    value (``MeterError``: negative time or reading, a stop before an accepted sample, a
    malformed saved state), then a limit (``MeterLimitError``)."""

    code = "invalid_meter_data"


class MeterLimitError(MeterError):
    """Meter data beyond a session limit (duration, energy, number of periods)."""

    code = "meter_limit_exceeded"


class MeterClosedError(MeterError):
    """A sample or stop for a session meter that has already been closed."""

    code = "meter_closed"
