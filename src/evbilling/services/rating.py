"""Use cases around rating that need no storage yet: price an OCPI CDR under an OCPI tariff."""

from __future__ import annotations

from evbilling.domain.cdrs import parse_cdr
from evbilling.domain.errors import DomainError
from evbilling.domain.rating import RatedSession, SessionRater, rate
from evbilling.domain.tariffs import Tariff, parse_tariff
from evbilling.domain.timezones import zone


class DocumentError(DomainError):
    """A document given to a use case is unusable; ``source`` names it (a file, a request)."""

    code = "invalid_document"

    def __init__(self, source: str, error: DomainError) -> None:
        super().__init__(f"{source}: {error.message}")
        self.source = source
        self.error = error


def rate_cdr_document(tariff_doc: object, cdr_doc: object, time_zone: str = "UTC", *,
                      tariff_source: str = "tariff", cdr_source: str = "cdr"
                      ) -> tuple[Tariff, RatedSession]:
    """Parse an OCPI tariff and an OCPI CDR and price the CDR's charging periods.

    The CDR's own totals are ignored. Errors name the document and the field.
    """
    try:
        zone(time_zone)
    except DomainError as exc:
        raise DocumentError("--time-zone", exc) from exc
    try:
        tariff = parse_tariff(tariff_doc)
    except DomainError as exc:
        raise DocumentError(tariff_source, exc) from exc
    try:
        session = parse_cdr(cdr_doc, time_zone=time_zone)
    except DomainError as exc:
        raise DocumentError(cdr_source, exc) from exc
    return tariff, rate(tariff, session)


def running_costs(tariff: Tariff, cdr_doc: object, time_zone: str = "UTC"
                  ) -> list[tuple[str, RatedSession]]:
    """The live cost after each period arrives, as a driver would see it (ongoing snapshots),
    ending with the final rating at the session end."""
    session = parse_cdr(cdr_doc, time_zone=time_zone)
    rater = SessionRater(tariff, time_zone, session.start_epoch_ms)
    out: list[tuple[str, RatedSession]] = []
    for i, period in enumerate(session.periods):
        rater.add(period)
        following = session.periods[i + 1].start_epoch_ms if i + 1 < len(session.periods) \
            else session.end_epoch_ms
        out.append((period.start_at.isoformat(), rater.snapshot(following)))
    out.append(("end", rater.snapshot(session.end_epoch_ms, final=True)))
    return out
