"""Keeping tokens out of every log line, error and exception text.

The CloudPOS token travels in the URL, and httpx/httpcore log full URLs. Rather
than trusting every logger to behave, a log record factory redacts each record
as it is created: `token=...` query values and every registered secret value.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_TOKEN_IN_QUERY = re.compile(r"(?i)(token=)[^&\s'\"<>]*")
_MASK = "***"

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register_secret(value: str) -> None:
    """Remember a secret so that it is masked wherever it shows up."""
    # Very short values would mask innocent text; a real token is long.
    if len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """The text with `token=` values and registered secrets masked."""
    text = _TOKEN_IN_QUERY.sub(lambda m: m.group(1) + _MASK, text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def install_log_redaction() -> None:
    """Redact every log record created from now on, whatever its logger."""
    global _installed  # noqa: PLW0603 - one process-wide hook, installed once
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, redacted, so handlers never format the raw one.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
