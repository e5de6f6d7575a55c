"""`syncer doctor`: what the API's answers look like to this version's parser.

For each synced function it reads the latest archived answer with records (with
`--fresh`, first one new budgeted request per function, which is archived and
loaded like any pull) and reports: the envelope style, the records, the fields
seen against the fields the parser reads (missing, unknown, always empty), the
formats of the values (numbers as strings, decimal commas, date formats, ...) and
what parsing made of them (rows, quarantined, with reasons). The report and a few
sample records go to one JSON support bundle.

The bundle is redacted: it never holds the token (nothing archived does, and the
text passes `redact`), national register numbers (as text or as a JSON number),
e-mail addresses or phone numbers. Sample records keep numbers, dates and flags as the API sent them (that
is what parsing is about) and replace every other text by its shape
(`<text, 12 chars>`); e-mail, phone and national-number patterns are masked in
every string of the bundle, reasons included.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from syncer import archive, writers
from syncer import tables as t
from syncer.client import BadResponse, decode_body, raise_for_api_error, records_from
from syncer.config import Config, LicenseConfig
from syncer.parse import IGNORED_KEYS
from syncer.redact import redact
from syncer.resources import Pull, Resource
from syncer.sync import Sync, parse_context, parse_records

SAMPLES = 3
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_COMMA_NUMBER = re.compile(r"[+-]?[0-9]+,[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}(?::[0-9]{2})?")
_ZERO_DATE = re.compile(r"0000-00-00(?: 00:00(?::00)?)?")
# Personal data, masked wherever it shows: e-mail, Belgian national register number
# (YY.MM.DD-XXX.CC, with or without separators), phone numbers (+32 / 0..., 8+ digits).
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NATIONAL = re.compile(r"(?<![\d])\d{2}[.]?\d{2}[.]?\d{2}[-. ]?\d{3}[.]?\d{2}(?![\d])")
_PHONE = re.compile(r"(?<![\w.:-])(?:\+|00|0)\d(?:[ ./-]?\d){7,12}(?![\w])")
_PERSONAL_KEYS = frozenset({"secnr", "email", "phone", "mobile", "gsm", "fax", "tel"})


def mask(text: str) -> str:
    """`text` without tokens, e-mail addresses, national numbers or phone numbers."""
    text = _EMAIL.sub("<e-mail>", redact(text))
    text = _NATIONAL.sub("<national number>", text)
    return _PHONE.sub("<phone>", text)


def value_format(value: Any) -> str:
    """How a value is written, in the words of the API page's quirks."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "JSON boolean"
    if isinstance(value, int | float) or type(value).__name__ == "Decimal":
        return "JSON number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    text = str(value).strip()
    if text == "":
        return "empty string"
    if _ZERO_DATE.fullmatch(text):
        return "zero date"
    if _NUMBER.fullmatch(text):
        return "number as string"
    if _COMMA_NUMBER.fullmatch(text):
        return "decimal comma"
    if _LOCAL_TIME.fullmatch(text):
        return "local time YYYY-MM-DD HH:MM[:SS]"
    if _DATE.fullmatch(text):
        return "date YYYY-MM-DD"
    return "text"


def envelope_style(body: Any, function: str) -> str:
    """Which accepted envelope the body came in (docs/api-reading.md)."""
    if isinstance(body, list):
        return "list"
    if not isinstance(body, dict):
        return f"unknown ({type(body).__name__})"
    if "errorcode" in body:
        return f"error {body.get('errorcode')}"
    if "data" in body:
        return "data"
    if function.removeprefix("get-") in body:
        return "named"
    rest = [v for k, v in body.items() if k not in ("success", "count", "total")]
    if rest and all(isinstance(v, dict) for v in rest):
        return "keyed"
    return "single object"


def _shape(key: str, value: Any) -> Any:
    """A sample value: numbers, dates and flags as sent; other text by its shape."""
    if key.lower() in _PERSONAL_KEYS and value not in (None, ""):
        return "<redacted>"
    if isinstance(value, dict):
        return {k: _shape(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(key, v) for v in value]
    if isinstance(value, str) and value_format(value) == "text":
        return f"<text, {len(value)} chars>"
    return value


def _fields(records: Sequence[Any]) -> tuple[Counter[str], dict[str, Counter[str]], set[str]]:
    seen: Counter[str] = Counter()
    formats: dict[str, Counter[str]] = {}
    filled: set[str] = set()
    for raw in records:
        if not isinstance(raw, dict):
            continue
        for key, value in raw.items():
            seen[key] += 1
            kind = value_format(value)
            formats.setdefault(key, Counter())[kind] += 1
            if kind not in ("null", "empty string", "zero date"):
                filled.add(key)
    return seen, formats, filled


def examine(resource: Resource, content: bytes, ctx: Any) -> dict[str, Any]:
    """The report of one function from one answer's bytes."""
    function = resource.function
    try:
        body = decode_body(function, content)
    except BadResponse as exc:
        return {"envelope": "not JSON", "error": mask(str(exc))}
    style = envelope_style(body, function)
    try:
        empty = raise_for_api_error(body, function, ctx.tz)
        records = [] if empty else records_from(body, function)
    except Exception as exc:  # an envelope the client refuses: that is the finding
        return {"envelope": style, "error": mask(str(exc))}
    seen, formats, filled = _fields(records)
    groups = resource.parse.keys
    known = {key for group in groups for key in group}
    parsed = parse_records(resource, records, ctx)
    reasons = Counter(mask(r.reason) for r in parsed.rejected)
    return {
        "envelope": style,
        "records": len(records),
        "fields": {
            "seen": sorted(seen),
            "known_to_parser": sorted(k for k in seen if k in known),
            "unknown": sorted(k for k in seen if k not in known and k not in IGNORED_KEYS),
            "missing": sorted("/".join(g) for g in groups if not any(k in seen for k in g)),
            "always_empty": sorted(k for k in seen if k not in filled),
        },
        "formats": {key: dict(counter.most_common()) for key, counter in sorted(formats.items())},
        "parsed": {"rows": len(parsed.rows), "quarantined": len(parsed.rejected),
                   "reasons": dict(reasons.most_common(10))},
        "samples": [_shape("", raw) for raw in records[:SAMPLES]],
    }


def _latest(engine: Engine, license: str, function: str) -> tuple[archive.Answer, bytes] | None:
    """The latest archived answer with records (else the latest of all)."""
    ra = t.response_archive.c
    with engine.connect() as conn:
        row = conn.execute(
            select(ra.id).where(ra.license == license, ra.function == function)
            .order_by((ra.records > 0).desc(), ra.id.desc()).limit(1)).scalar()
        if row is None:
            return None
        answer = next(archive.answers(engine, license, [function], after=int(row) - 1, upto=int(row)))
        return answer, archive.content(conn, answer.body_id)


def fresh_pulls(engine: Engine, config: Config, license: LicenseConfig, resources: Sequence[Resource],
                sync: Sync) -> dict[str, str]:
    """One budgeted request per function (archived and loaded like any pull); per
    resource, the error of the ones that failed."""
    errors: dict[str, str] = {}
    for resource in resources:
        try:
            if resource.pull is Pull.FULL_LIST:
                sync.pull_full_list(resource, max_deletes=config.resource(
                    resource.name).empty_list_max_deletes)
            else:
                cursor, _ = sync.cursor(resource)
                if cursor > 0:  # the newest stored records, again
                    sync.rescan_window(resource, max(1, cursor - 49), cursor)
                else:
                    sync.pull_window(resource, 1, 50, window=config.resource(resource.name).window)
        except Exception as exc:  # a finding for the report, not the end of it
            errors[resource.name] = mask(f"{type(exc).__name__}: {exc}")
    return errors


def report(engine: Engine, config: Config, license: LicenseConfig, resources: Sequence[Resource],
           *, fresh_errors: dict[str, str] | None = None, now: dt.datetime) -> dict[str, Any]:
    """The doctor's report of one license (see the module doc)."""
    ctx = parse_context(config, license)
    functions: dict[str, Any] = {}
    for resource in resources:
        latest = _latest(engine, license.name, resource.function)
        entry: dict[str, Any] = {"resource": resource.name}
        if latest is None:
            entry["note"] = "no archived answer yet: run a backfill, or doctor --fresh"
        else:
            answer, content = latest
            entry.update({
                "answer": {"received_at": answer.received_at.astimezone(config.api.tz).isoformat(),
                           "kind": answer.kind, "params": answer.params, "bytes": len(content)},
                **examine(resource, content, ctx),
            })
        if fresh_errors and resource.name in fresh_errors:
            entry["fresh_request_error"] = fresh_errors[resource.name]
        functions[resource.function] = entry
    return {
        "license": license.name,
        "generated_at": now.astimezone(config.api.tz).isoformat(),
        "timezone": config.api.timezone,
        "archive": archive.sizes(engine, license.name),
        "functions": functions,
    }


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float) or type(value).__name__ == "Decimal":
        # A national number sent as a JSON number (`"rrn": 85073003328`) is masked as its
        # text would be; any other number stays as sent ("12.50" stays 12.50).
        text = str(value)
        masked = mask(text)
        return masked if masked != text else text if type(value).__name__ == "Decimal" else value
    return value


def write_bundle(reports: list[dict[str, Any]], path: Path, *, replace: bool = False) -> Path:
    """The support bundle: one JSON file, every string and number in it masked once more;
    an existing file is kept unless `replace` (see `writers.write_file`)."""
    text = json.dumps(_masked({"syncer_doctor": 1, "licenses": reports}), indent=2,
                      sort_keys=True, ensure_ascii=False)
    writers.write_file(path, lambda out: out.write((text + "\n").encode("utf-8")), replace=replace)
    return path
