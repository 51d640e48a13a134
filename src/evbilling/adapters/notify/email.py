"""E-mail over SMTP (stdlib ``smtplib``, run in a worker thread so the loop never waits).

Configured by a URL, ``EVBILLING_SMTP_URL``:

* ``smtp://host:port`` plain SMTP (a local relay; tests use an aiosmtpd server);
* ``smtp://user:password@host:587?starttls=true`` STARTTLS, then AUTH;
* ``smtps://user:password@host:465`` implicit TLS.

The sender address comes from ``EVBILLING_SMTP_FROM`` (default ``evbilling@localhost``). Each
message carries ``Message-ID: <notification id@evbilling>``, so a resent notification can be
recognized by the receiving side. A 5xx reply is permanent (no retry); timeouts, refused
connections and 4xx replies are retried by the delivery worker.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

from evbilling.services.notifications import SendResult

DEFAULT_FROM = "evbilling@localhost"
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    from_address: str = DEFAULT_FROM
    timeout_s: float = TIMEOUT_S

    @staticmethod
    def from_url(url: str, *, from_address: str | None = None,
                 timeout_s: float = TIMEOUT_S) -> SmtpSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("EVBILLING_SMTP_URL: smtp://host:port or smtps://host:port")
        query = parse_qs(parts.query)
        return SmtpSettings(
            host=parts.hostname, port=parts.port or (465 if parts.scheme == "smtps" else 25),
            implicit_tls=parts.scheme == "smtps",
            starttls=query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            from_address=from_address or DEFAULT_FROM, timeout_s=timeout_s)


class SmtpEmailSender:
    """``services.notifications.EmailSender`` over SMTP."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, *, to: str, subject: str, body: str, message_id: str) -> SendResult:
        return await asyncio.to_thread(self._send, to, subject, body, message_id)

    def _send(self, to: str, subject: str, body: str, message_id: str) -> SendResult:
        cfg = self.settings
        message = EmailMessage()
        message["From"] = cfg.from_address
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<{message_id}@evbilling>"
        message.set_content(body)
        try:
            smtp: smtplib.SMTP
            if cfg.implicit_tls:
                smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
            with smtp:
                if cfg.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.username:
                    smtp.login(cfg.username, cfg.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return SendResult(False, f"recipient refused: {codes}",
                              permanent=all(500 <= c < 600 for c in codes))
        except smtplib.SMTPResponseException as exc:
            return SendResult(False, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:500],
                              permanent=500 <= exc.smtp_code < 600)
        except (smtplib.SMTPException, OSError) as exc:
            return SendResult(False, f"{type(exc).__name__}: {exc}"[:500])
        return SendResult(True)
