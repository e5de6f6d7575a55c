"""Keeping tokens out of every log line, error and exception text, and log lines whole.

The CloudPOS token travels in the URL, and httpx/httpcore log full URLs. Rather
than trusting every logger to behave, a log record factory redacts each record
as it is created: `token=...` query values and every registered secret value, as
written and in the forms a URL or a JSON text spells it. The same factory writes
control characters (a newline, ESC) in a message as escapes, so a message quoting
the API cannot start a log line of its own or move a terminal's cursor.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

_TOKEN_IN_QUERY = re.compile(r"(?i)(token=)[^&\s'\"<>]*")
_MASK = "***"

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


# C0 and C1 controls, DEL and the Unicode line and paragraph separators: each is written
# as its Python escape (`\n`, `\x1b`, `\u2028`), so a message stays one visible line.
_CONTROLS = {code: (json.dumps(chr(code))[1:-1] if code < 0x20 and chr(code) in "\n\r\t"
                    else f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
             for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def printable(text: str) -> str:
    """`text` with its control characters written as escapes: one line, no terminal codes."""
    return text.translate(_CONTROLS)


def register_secret(value: str) -> None:
    """Remember a secret so that it is masked wherever it shows up: as is, URL-encoded
    (as it travels in the query, so an answer quoting the request URL holds it so) and
    as a JSON string spells it (an answer echoing it with `\u00e9` escapes)."""
    # Very short values would mask innocent text; a real token is long.
    if len(value) >= 4:
        forms = {value, quote_plus(value), quote(value, safe=""), json.dumps(value)[1:-1],
                 printable(value)}
        with _lock:
            _secrets.update(forms)


def redact(text: str) -> str:
    """The text with registered secrets and `token=` values masked.

    The secrets go first: a token may hold `&` or a space, where the `token=` pattern
    stops, and masking its head first would leave its tail unknown to the exact match."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return _TOKEN_IN_QUERY.sub(lambda m: m.group(1) + _MASK, text)


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
        cleaned = printable(redact(message))
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, redacted, so handlers never format the raw one.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)
