"""Keep credentials out of the service's logs.

The service reaches MLflow with credentials that may sit in the tracking URI
(`http://user:password@host`) or in the environment (MLFLOW_TRACKING_PASSWORD, ...), and it may
hold PREDICT_API_TOKEN. MLflow's and the HTTP client's exception texts can quote the URI, so
`install_log_redaction()` masks both in every log record of the process, tracebacks included.
Response bodies never carry such text at all (see holder.public_problem).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
# The userinfo of a URL: everything between `scheme://` and the `@` before the host.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#@]*(?:@[^/\s?#@]*)*@")
# Values masked wherever they show up, not only inside URLs.
SECRET_VARIABLES = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "PREDICT_API_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PREFECT_API_AUTH_STRING",
)
# Any URI (credentials or not): a short reason names no location at all.
_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*:/+[^\s)\]'\">]*")
REASON_CHARS = 200
# Shorter values would mask ordinary words all over the logs (and are no real secret anyway).
_MIN_SECRET_CHARS = 4


def redact_url(url: str) -> str:
    """`url` (or any text) with the `user:password@` of its URLs masked: `http://***@host/`."""
    return _USERINFO.sub(rf"\g<scheme>{MASK}@", url)


def _secret_values() -> list[str]:
    values = (os.environ.get(name, "") for name in SECRET_VARIABLES)
    return sorted((v for v in values if len(v) >= _MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str) -> str:
    """Text with every URL's credentials and every known secret value masked."""
    text = redact_url(text)
    for value in _secret_values():
        text = text.replace(value, MASK)
    return text


def short_reason(stage: str, error: BaseException) -> str:
    """`stage: ExceptionType: message` on one line, credentials and URIs masked, truncated:
    fit for an event payload that goes to other systems."""
    text = redact(f"{stage}: {type(error).__name__}: {error}")
    text = " ".join(_URI.sub("<uri>", text).split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the format: keep the template
        message = str(record.msg)
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text, so the traceback they print is this redacted one.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_log_redaction() -> None:
    """Redact every log record of this process, whichever logger or handler it goes through
    (MLflow's loggers have handlers of their own, so a filter on ours would miss them)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
