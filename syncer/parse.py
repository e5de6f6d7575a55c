"""Pure parsing: one raw API record in, rows for a parent table and its children out.

No I/O here. Every function raises `ParseError` with a reason a person can act on
when a record cannot become valid rows; the sync step quarantines that record and
goes on with the rest of the batch.

Rules (shared with the simulator, see docs/api-reading.md):
- numbers may come as numbers or strings, with a decimal comma ("12,50");
- "" (and None) mean missing -> NULL; MySQL zero dates ("0000-00-00 ...") too;
- booleans come as 0/1/"0"/"1" (true/false accepted);
- local times ("YYYY-MM-DD HH:MM:SS") are read in `api.timezone`; an ambiguous
  autumn time takes fold=0 (the first, summer-time occurrence) and a time in the
  spring gap is shifted forward by the gap; both are stored as UTC;
- fields without a column go to `extra` (None when there are none).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

import msgspec

from syncer import tables


class ParseError(ValueError):
    """A record that cannot become valid rows; the message says which field and why."""


@dataclass(frozen=True)
class ParseContext:
    tz: ZoneInfo
    # Key for the HMAC of the national register number (users.secnr); None: no hash.
    secnr_key: bytes | None
    store_national_number: bool = False


@dataclass(frozen=True)
class Rows:
    """One record as rows: the parent row and child rows per child table name.

    Rows carry neither `license` nor `synced_at`: the loader adds them.
    """

    parent: dict[str, Any]
    children: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)


# (value as sent, field name for the error message) -> column value
Convert = Callable[[Any, str], Any]
# (column, key in the record, or keys tried in order, converter)
Field = tuple[str, str | tuple[str, ...], Convert]

_MAX_BIGINT = 2**63 - 1
_SMALLINT = range(-(2**15), 2**15)
# Keys that carry no data of the record itself (the envelope leaks them in).
IGNORED_KEYS = frozenset({"success"})

# ASCII digits only: Python's int() and Decimal() also take "1_000" and Arabic-Indic digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2})?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2})?)?")
_ZERO_DATE = re.compile(r"0000-00-00(?:[ T]00:00(?::00)?)?")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Year 9999: further than any modtime, and datetime cannot go past it.
_MAX_UNIX_SECONDS = 253_402_300_799


# --- value helpers -------------------------------------------------------------


def _show(value: Any) -> str:
    """The value as it goes into an error message: its repr, cut to about 60 characters."""
    try:
        shown = repr(value)
    except ValueError:  # an int too long to print (sys.int_info.str_digits_check_threshold)
        shown = f"<int of {value.bit_length()} bits>"
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _fail(name: str, problem: str, value: Any) -> ParseError:
    """The error for field `name`: what is wrong, and the value as sent."""
    return ParseError(f"{name}: {problem}: {_show(value)}")


def _missing(value: Any) -> bool:
    """Whether the API means "no value": None, "" or blanks."""
    # Whitespace-only counts as empty too: no number, date or name is made of blanks.
    return value is None or (isinstance(value, str) and not value.strip())


@functools.cache
def _plain_number(precision: int, scale: int) -> re.Pattern[str]:
    """Text that fits NUMERIC(precision, scale) as it is written: "12.50", "-3", "0.0600"."""
    return re.compile(rf"-?[0-9]{{1,{precision - scale}}}(?:\.[0-9]{{1,{scale}}})?")


_ZERO = Decimal(0)
_LIMITS = tuple(10**digits for digits in range(40))  # 10 ** (precision - scale), looked up
_UNSEEN = object()


class _SpellingCache(dict[str, Any]):
    """Values already read, by the exact text the API sent: a page of 5,000 orders holds
    ~100,000 numbers but a few hundred distinct spellings, so a dict lookup replaces a
    regex match and a Decimal construction (`_decimal` ~3x faster, cProfile of 5,000 orders).

    Only successful reads are kept (a bad spelling raises every time, with the field's
    name); values are immutable (Decimal, int), so sharing them is safe. Bounded: past
    `limit` spellings (a page of unique amounts) it starts again, so memory stays flat.
    """

    def __init__(self, limit: int = 20_000) -> None:
        super().__init__()
        self.limit = limit

    def put(self, text: str, value: Any) -> Any:
        if len(self) >= self.limit:
            self.clear()
        self[text] = value
        return value


_DECIMALS: dict[tuple[int, int], _SpellingCache] = {
    (precision, scale): _SpellingCache()
    for precision, scale in ((tables.MONEY_PRECISION, tables.MONEY_SCALE),
                             (tables.RATE_PRECISION, tables.RATE_SCALE))
}


def _decimal(
    value: Any,
    name: str,
    precision: int = tables.MONEY_PRECISION,
    scale: int = tables.MONEY_SCALE,
) -> Decimal | None:
    """An exact number that fits NUMERIC(precision, scale); "" and None are None.

    Equal numbers come out as equal Decimals with equal digits ("12.50" and 12.5
    are both Decimal("12.5")), so a re-sent record compares unchanged.
    """
    kind = type(value)
    if kind is str:
        # A page spells few distinct numbers ("0.00", "21.00", "12,50" again and again):
        # each spelling is read once per process (see `_SpellingCache`).
        cache = _DECIMALS.get((precision, scale)) or _DECIMALS.setdefault(
            (precision, scale), _SpellingCache())
        number = cache.get(value, _UNSEEN)
        if number is _UNSEEN:
            number = cache.put(value, _decimal_text(value, value, name, precision, scale))
        return number  # type: ignore[no-any-return]
    if kind is Decimal:
        return _decimal_text(str(value), value, name, precision, scale)
    if kind is int and -_LIMITS[precision - scale] < value < _LIMITS[precision - scale]:
        return Decimal(value) if value else _ZERO
    return _decimal_checked(value, name, precision, scale)


def _decimal_text(text: str, value: Any, name: str, precision: int, scale: int) -> Decimal | None:
    """`_decimal` of `value` (a string or a Decimal) written as `text`: plain text that fits
    as written needs only its trailing zeros cut (most of a page); every other spelling
    goes through `_decimal_checked`."""
    if _plain_number(precision, scale).fullmatch(text):
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        number = Decimal(text)
        return number if number else _ZERO
    return _decimal_checked(value, name, precision, scale)


def _decimal_checked(value: Any, name: str, precision: int, scale: int) -> Decimal | None:
    """`_decimal` for every other spelling: commas, exponents, blanks, ints, floats."""
    if _missing(value):
        return None
    # The client reads JSON numbers with a fraction as Decimal (exact); floats and
    # strings are accepted too.
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise _fail(name, "not a number", value)
    if isinstance(value, int):
        if abs(value) >= 10 ** (precision - scale):
            raise _fail(name, f"does not fit NUMERIC({precision}, {scale})", value)
        return Decimal(value)
    # str() of a float is its shortest round-tripping text: 0.1 stays 0.1, no binary noise.
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        raise _fail(name, "not a number", value)
    try:
        number = Decimal(text.replace(",", "."))
    except InvalidOperation:  # an exponent beyond what Decimal can hold
        raise _fail(name, f"does not fit NUMERIC({precision}, {scale})", value) from None
    sign, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int):  # NaN or Infinity; the pattern lets neither through
        raise _fail(name, "not a number", value)
    # Trailing zeros carry no value: "12.5000" needs one decimal place, "1E+3" four digits.
    # (Decimal keeps no leading zeros: "007" is digits (7,).)
    significant = list(digits)
    while significant and significant[-1] == 0:
        significant.pop()
        exponent += 1
    if not significant:
        return _ZERO
    decimals = max(0, -exponent)
    integer_digits = max(0, len(significant) + exponent)
    if decimals > scale or integer_digits > precision - scale:
        raise _fail(name, f"does not fit NUMERIC({precision}, {scale})", value)
    # A plain fixed-point Decimal without trailing zeros: "12,50" -> 12.5, "1E+3" -> 1000.
    if exponent > 0:
        significant += [0] * exponent
        exponent = 0
    return Decimal((sign, tuple(significant), exponent))


def _rate(value: Any, name: str) -> Decimal | None:
    """A tax rate: NUMERIC(7, 4)."""
    return _decimal(value, name, tables.RATE_PRECISION, tables.RATE_SCALE)


def _integer(value: Any, name: str) -> int | None:
    """An integer sent as a number or a digit string; "" and None are None."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str:
        number = _INTEGERS.get(value, _UNSEEN)
        if number is _UNSEEN:
            number = _INTEGERS.put(value, _integer_text(value, name))
        return number  # type: ignore[no-any-return]
    if _missing(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _fail(name, "not an integer", value)


_INTEGERS = _SpellingCache()


def _integer_text(value: str, name: str) -> int | None:
    """`_integer` of a string."""
    if _missing(value):
        return None
    if _INTEGER.fullmatch(text := value.strip()):
        if len(text) > 25:  # longer than any column holds; int() would take its time
            raise _fail(name, "integer out of range", value)
        return int(text)
    raise _fail(name, "not an integer", value)


def _int_id(value: Any, name: str) -> int:
    """A key: a positive integer that fits BIGINT."""
    number = _integer(value, name)
    if number is None:
        raise _fail(name, "missing", value)
    if not 0 < number <= _MAX_BIGINT:
        raise _fail(name, "not a positive 63-bit id", value)
    return number


def _optional_id(value: Any, name: str) -> int | None:
    """A reference to another record: 0 and "" mean none."""
    number = _integer(value, name)
    if not number:
        return None
    if not 0 < number <= _MAX_BIGINT:
        raise _fail(name, "not a positive 63-bit id", value)
    return number


def _small_int(value: Any, name: str) -> int | None:
    """A code such as a status or a document type (SMALLINT)."""
    number = _integer(value, name)
    if number is not None and number not in _SMALLINT:
        raise _fail(name, "integer out of range", value)
    return number


_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


def _bool(value: Any, name: str) -> bool | None:
    """A flag sent as 0/1, "0"/"1" or true/false."""
    if _missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    raise _fail(name, "not a 0/1 flag", value)


def _storable(text: str, name: str) -> str:
    """`text` unchanged, if a database can store it (Postgres refuses NUL and lone surrogates)."""
    if "\x00" in text:
        raise _fail(name, "contains a NUL character", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(name, "not valid Unicode", text) from None
    return text


def _text(value: Any, name: str) -> str | None:
    """Text as sent (numbers become their digits); "" and None are None."""
    if _missing(value):
        return None
    # A JSON true/false where text belongs is no text we could name; bool is an int, so first.
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _fail(name, "not text", value)
    if isinstance(value, str):
        return _storable(value, name)
    try:
        return str(value)
    except ValueError:  # an int too long to print
        raise _fail(name, "not text", value) from None


def _local_datetime(value: Any, name: str, tz: ZoneInfo) -> dt.datetime | None:
    """A local "YYYY-MM-DD HH:MM[:SS]" in the API's zone, as an aware UTC datetime."""
    if _missing(value):
        return None
    if not isinstance(value, str):
        raise _fail(name, "not a local date and time", value)
    text = value.strip()
    if _ZERO_DATE.fullmatch(text):
        return None
    if not _LOCAL_TIME.fullmatch(text):
        raise _fail(name, "not a local date and time", value)
    try:
        # The pattern let through only ASCII digits in ISO's places, which fromisoformat
        # reads as the fields they are (1.3x faster than int() of each group, one run).
        # fold=0: an ambiguous autumn time is its first (summer) occurrence, and a time
        # in the spring gap keeps the offset before the gap, i.e. lands after it in UTC.
        local = dt.datetime.fromisoformat(text).replace(tzinfo=tz, fold=0)
        return local.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise _fail(name, "not a valid date and time", value) from None


def _unix_time(value: Any, name: str) -> dt.datetime | None:
    """Unix seconds (`modtime`) as an aware UTC datetime; 0, "" and None are None."""
    if _missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise _fail(name, "not unix seconds", value)
    if isinstance(value, int):
        # Clamped so a huge int stays out of range without being converted whole.
        seconds = Decimal(max(-1, min(value, _MAX_UNIX_SECONDS + 1)))
    else:
        text = str(value).strip().replace(",", ".")
        if not _NUMBER.fullmatch(text):
            raise _fail(name, "not unix seconds", value)
        try:
            seconds = Decimal(text)
        except InvalidOperation:  # an exponent beyond what Decimal can hold
            raise _fail(name, "unix seconds out of range", value) from None
    if not seconds:
        return None
    if not 0 < seconds <= _MAX_UNIX_SECONDS:
        raise _fail(name, "unix seconds out of range", value)
    # Whole microseconds, computed in Decimal: a float would blur the last digits.
    microseconds = int(seconds.scaleb(6).to_integral_value())
    return _EPOCH + dt.timedelta(microseconds=microseconds)


def _date(value: Any, name: str) -> dt.date | None:
    """A "YYYY-MM-DD" date (a time part is dropped); zero dates, "" and None are None."""
    if _missing(value):
        return None
    if not isinstance(value, str):
        raise _fail(name, "not a date", value)
    text = value.strip()
    if _ZERO_DATE.fullmatch(text):
        return None
    match = _DATE.fullmatch(text)
    if not match:
        raise _fail(name, "not a date", value)
    try:
        return dt.date(*(int(part) for part in match.groups()))
    except ValueError:
        raise _fail(name, "not a valid date", value) from None


# MariaDB's JSON columns (a CHECK of JSON_VALID) refuse a document nested 32 levels deep
# (measured: 31 is stored); `extra` is one level itself, so a value may hold 30 (its
# containers at depths 0-29). Deeper is refused on every database, alike.
MAX_EXTRA_DEPTH = 29


def _json_value(value: Any, name: str, depth: int = 0) -> Any:
    """A copy of a value for `extra`, refused if a JSON column could not store it."""
    if depth > MAX_EXTRA_DEPTH and isinstance(value, Mapping | list | tuple):
        raise _fail(name, f"nested deeper than {MAX_EXTRA_DEPTH} levels", "...")
    if isinstance(value, str):
        return _storable(value, name)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(name, "not a finite number", value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail(name, "not a finite number", value)
        # Kept a JSON number when a float says it exactly, else its exact text.
        as_float = float(value)
        return as_float if math.isfinite(as_float) and Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, Mapping):
        return {
            _storable(str(key), name): _json_value(item, f"{name}.{key}", depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{name}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3000:
        # json.dumps refuses ints past sys.get_int_max_str_digits(); nobody sends those.
        raise _fail(name, "number too large", value)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise _fail(name, "not a JSON value", value)


# --- record helpers -------------------------------------------------------------


def _record(raw: Any) -> Mapping[str, Any]:
    """The raw record, which must be a JSON object."""
    if not isinstance(raw, Mapping):
        raise ParseError(f"record is not an object: {_show(raw)}")
    return raw


def _keys(fields: Iterable[Field]) -> set[str]:
    """Every record key that `fields` reads."""
    keys: set[str] = set()
    for _, key, _ in fields:
        keys.update((key,) if isinstance(key, str) else key)
    return keys


def _pick(record: Mapping[str, Any], key: str | tuple[str, ...]) -> tuple[str, Any]:
    """The key and value under `key`, or under the first of several spellings that is set."""
    if isinstance(key, str):
        return key, record.get(key)
    return next(((k, record[k]) for k in key if not _missing(record.get(k))), (key[0], None))


def _columns(
    record: Mapping[str, Any], fields: Iterable[Field], prefix: str = ""
) -> dict[str, Any]:
    """The columns `fields` map from `record`; `prefix` locates a line in error messages."""
    if prefix:
        # Most lines parse: read them with the bare keys as names, and only when a value
        # is refused read the line again, the names prefixed (the converters are pure,
        # so the same field fails with the same reason). Saves building a name per field.
        try:
            return _columns(record, fields)
        except ParseError:
            pass
    row = {}
    for column, keys, convert in fields:
        if type(keys) is str:  # one spelling: the common case, without a call
            row[column] = convert(record.get(keys), prefix + keys if prefix else keys)
        else:
            key, value = _pick(record, keys)
            row[column] = convert(value, prefix + key)
    return row


def _extra(
    record: Mapping[str, Any], known: Iterable[str], prefix: str = ""
) -> dict[str, Any] | None:
    """The fields no column reads, kept as sent; None when there are none.

    `known`: the keys columns read; a frozenset is taken as the whole skip set
    (built once, with `IGNORED_KEYS`), any other iterable gets `IGNORED_KEYS` added.
    """
    skip = known if isinstance(known, frozenset) else IGNORED_KEYS.union(known)
    extra = {
        _storable(str(key), prefix + "extra"): _json_value(value, prefix + str(key))
        for key, value in record.items()
        if key not in skip
    }
    return extra or None


@functools.lru_cache(maxsize=64)
def _skipped(fields: tuple[Field, ...], read: tuple[str, ...]) -> frozenset[str]:
    """The keys `_extra` leaves out for a parent read by `fields` (built once per kind)."""
    return frozenset(_keys(fields).union(read, IGNORED_KEYS))


def _parent(record: Mapping[str, Any], fields: tuple[Field, ...], *read: str) -> dict[str, Any]:
    """The parent row from `fields`; `read` names the keys handled outside `fields`."""
    parent = _columns(record, fields)
    parent["extra"] = _extra(record, _skipped(fields, read))
    return parent


def _simple(raw: Any, fields: tuple[Field, ...]) -> Rows:
    """A record that is only a mapping of fields to columns."""
    return Rows(parent=_parent(_record(raw), fields))


def _numeric_order(key: str) -> tuple[int, str, str]:
    """Sorts digit strings as numbers ("9" before "10") without int()'s limit on digits."""
    digits = key.lstrip("0")
    return len(digits), digits, key


def _list(value: Any, name: str) -> list[Any]:
    """A JSON array; PHP's habit of an object keyed "0", "1", ... is read in key order."""
    if _missing(value):
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and k.isascii() and k.isdigit() for k in value
    ):
        return [value[k] for k in sorted(value, key=_numeric_order)]
    raise ParseError(f"{name} is not a list: {_show(value)}")


def _lines(record: Mapping[str, Any], name: str) -> list[tuple[int, Mapping[str, Any]]]:
    """The detail lines of an order or invoice with their 1-based line numbers."""
    lines = []
    for line_no, line in enumerate(_list(record.get(name), name), start=1):
        if not isinstance(line, Mapping):
            raise _fail(f"{name}[{line_no}]", "line is not an object", line)
        lines.append((line_no, line))
    return lines


def _canonical(value: Any) -> Any:
    """The JSON form of the non-JSON values in rows, for the content hash."""
    if isinstance(value, Decimal):
        # normalize() turns 12.50 and 12.5 into the same text; fixed point, never "1E+1".
        text = f"{value.normalize():f}"
        return "0" if text == "-0" else text
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__}")


_HASH_ENCODER = msgspec.json.Encoder(order="sorted")


def _canonical_text(body: Any, extras: Iterable[Any]) -> bytes:
    """`json.dumps(body, sort_keys=True, separators=(",", ":"), default=_canonical)`, encoded.

    Written by msgspec, which gives the same bytes for bodies made by this module when
    they are ASCII (same key order, separators, escapes and integers; a Decimal as its
    str(), which for `_decimal`'s results is `_canonical`'s text; the caller turned the
    datetimes into `_canonical` text already, msgspec would end them in "Z"). Measured on
    orders (benchmarks/load.py): json.dumps 31 us per order, orjson with a default for
    Decimal 10 us, msgspec 6 us. json.dumps takes over where they could differ, so the
    stored hashes stay those of earlier versions and an upgrade rewrites no row: text
    with non-ASCII characters or DEL (json.dumps writes \\uXXXX, msgspec the character)
    and floats, which only `extra` (`extras`: the row's and its lines') can hold
    (1e-05 is 0.00001 in msgspec).
    """
    if not any(map(_has_float, extras)):
        try:
            text = _HASH_ENCODER.encode(body)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if text.isascii() and b"\x7f" not in text:
                return text
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=_canonical).encode()


def _has_float(value: Any) -> bool:
    """Whether a JSON value (an `extra`) holds a float anywhere."""
    if value is None or type(value) is str:
        return False
    if isinstance(value, float):
        return True
    if isinstance(value, Mapping):
        return any(map(_has_float, value.values()))
    if isinstance(value, list | tuple):
        return any(map(_has_float, value))
    return False


_DATETIME = dt.datetime


def _content_hash(parent: Mapping[str, Any], children: Mapping[str, list[dict[str, Any]]]) -> str:
    """md5 of the record's parsed content: equal content, equal hash, whatever the spelling."""
    content = {k: _canonical(v) if type(v) is _DATETIME else v
               for k, v in parent.items() if k != "content_hash"}
    body = {"parent": content, "children": children}
    extras = [parent.get("extra"), *(row.get("extra") for rows in children.values() for row in rows)]
    return hashlib.md5(_canonical_text(body, extras), usedforsecurity=False).hexdigest()


# --- resources --------------------------------------------------------------------


class Parser(Protocol):
    """A parse function that names the record keys it reads (`reads` puts them on it)."""

    # One group per column (keys that stand for one another together: "fistname" and
    # "firstname"), then one per key read by hand. `syncer doctor` compares them with
    # the keys the API sends.
    keys: tuple[tuple[str, ...], ...]

    def __call__(self, raw: Mapping[str, Any], ctx: ParseContext, /) -> Rows: ...


def reads(fields: Iterable[Field], *by_hand: str) -> Callable[[Callable[..., Rows]], Parser]:
    """Declares, on the parse function below it, the keys it reads: `fields`' keys, then
    the keys it reads `by_hand` (kept out of `extra` by the function itself)."""
    keys = (*((key,) if isinstance(key, str) else key for _, key, _ in fields),
            *((key,) for key in by_hand))

    def declare(parse: Callable[..., Rows]) -> Parser:
        parse.keys = keys  # type: ignore[attr-defined]
        return cast(Parser, parse)

    return declare


_CATEGORY: tuple[Field, ...] = (("id", "id", _int_id), ("name", "name", _text))

_PRODUCT: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("name", "name", _text),
    ("category_id", "categorylink", _optional_id),
    ("price", "price", _decimal),
    ("quantity", "quantity", _decimal),
    ("has_popup", "popup", _bool),
    ("has_menu_popup", "menupopup", _bool),
    ("has_open_price", "openprice", _bool),
    ("modified_at", "modtime", _unix_time),
)

_SUBPRODUCT: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("name", "name", _text),
    ("price", "price", _decimal),
    ("quantity", "quantity", _decimal),
    ("modified_at", "modtime", _unix_time),
)

_CUSTOMER: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("name", "name", _text),
    # The vendor page spells it "fistname"; "firstname" is accepted as well.
    ("first_name", ("fistname", "firstname"), _text),
    ("company_name", "companyname", _text),
    ("street_number", "street_number", _text),
    ("phone", "phone", _text),
    ("zipcode", "zipcode", _text),
    ("town", "town", _text),
    ("vat_number", "vatnumber", _text),
    ("email", "email", _text),
    ("tag_id", "tagid", _text),
    ("tag_type", "tagtype", _text),
    ("tag_family_id", "tagfamid", _optional_id),
    ("modified_at", "modtime", _unix_time),
)

_USER: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("username", "username", _text),
    ("is_admin", "admin", _bool),
)

_POS_TABLE: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("table_number", "table", _text),
    ("status", "status", _small_int),
)

_PAYMENT_METHOD: tuple[Field, ...] = (("id", "id", _int_id), ("name", "payment", _text))

_PRINTER: tuple[Field, ...] = (("id", "id", _int_id), ("name", "printername", _text))

_GIFT_VOUCHER: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("barcode", "barcode", _text),
    ("value", "value", _decimal),
    ("valid_from", "validfrom", _date),
    ("valid_until", "validuntil", _date),
    ("modified_at", "modtime", _unix_time),
)

_COUPON: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("barcode", "barcode", _text),
    ("value", "value", _decimal),
    ("value_type", "valuetype", _small_int),
    ("valid_from", "validfrom", _date),
    ("valid_until", "validuntil", _date),
    ("is_used", "used", _bool),
)


def _tag_key(value: Any, name: str) -> str:
    """A credit's tag as a key column: '' for no tag, since a key cannot be NULL."""
    text = _text(value, name) or ""
    if len(text) > 100:  # customer_credits.tag_id is VARCHAR(100)
        raise _fail(name, "longer than 100 characters", value)
    return text


_CUSTOMER_CREDIT: tuple[Field, ...] = (
    ("customer_id", "customerid", _int_id),
    ("tag_id", "tagid", _tag_key),
    ("value", "value", _decimal),
    ("tag_type", "tagtype", _text),
)

# Each key column as the parse functions read it, so a record that fails to parse can
# still be recognized by its key (a full list then keeps its stored row).
_KEY_FIELDS: dict[str, Field] = {
    field[0]: field
    for field in (("id", "id", _int_id), *_CUSTOMER_CREDIT)
    if field[0] in ("id", "customer_id", "tag_id")
}


def parse_key(raw: Any, columns: Sequence[str]) -> tuple[Any, ...] | None:
    """The key `columns` of a record, read as its parse reads them; None if unreadable."""
    if not isinstance(raw, Mapping) or not all(c in _KEY_FIELDS for c in columns):
        return None
    try:
        return tuple(_columns(raw, [_KEY_FIELDS[c] for c in columns]).values())
    except ParseError:
        return None


_PAYMENT_KEYS = {method: f"{method}payment" for method in tables.PAYMENT_METHODS}

_ORDER_LINE: tuple[Field, ...] = (
    ("quantity", "quantity", _decimal),
    ("product_id", "productid", _optional_id),
    ("price", "productprice", _decimal),
    ("tax_rate", "producttax", _rate),
)
_SLOT_KEYS = {
    slot: (f"subproduct{slot}id", f"subproduct{slot}price", f"subproduct{slot}tax")
    for slot in range(1, 11)
}
_LINE_FIELD_KEYS = frozenset(_keys(_ORDER_LINE))
# Frozen, with IGNORED_KEYS: `_extra` takes a frozenset as the whole set of keys to skip.
_ORDER_LINE_KEYS = frozenset(_keys(_ORDER_LINE).union(*_SLOT_KEYS.values(), IGNORED_KEYS))

_INVOICE: tuple[Field, ...] = (
    ("id", "id", _int_id),
    ("customer_id", "customerid", _optional_id),
    ("total_price", "totalprice", _decimal),
    ("invoice_date", "date", _date),
    ("due_date", "expirationdate", _date),
    ("number", "number", _text),
    ("doc_type", "doctype", _small_int),
    ("note", "note", _text),
    ("from_vat_ticket", "docfromvatticket", _bool),
)


_INVOICE_LINE: tuple[Field, ...] = (
    ("quantity", "quantity", _decimal),
    ("product_name", "productname", _text),
    ("price", "productprice", _decimal),
    ("tax_rate", "producttax", _rate),
)
_INVOICE_LINE_KEYS = frozenset(_keys(_INVOICE_LINE) | IGNORED_KEYS)


@reads(_CATEGORY)
def parse_category(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A category (get-categories)."""
    return _simple(raw, _CATEGORY)


@reads(_PRODUCT)
def parse_product(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A product (get-products)."""
    return _simple(raw, _PRODUCT)


def _product_ids(value: Any, name: str) -> list[int]:
    """`productlink`: an array of ids, or the same as "1,2,3" or as a JSON-encoded array."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                raise _fail(name, "not a list of product ids", value) from None
        else:
            value = [part for part in text.split(",") if part.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    ids = {_optional_id(item, name) for item in _list(value, name)}
    return sorted(i for i in ids if i is not None)


@reads(_SUBPRODUCT, "productlink")
def parse_subproduct(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A subproduct and the products it is linked to (get-subproducts)."""
    record = _record(raw)
    parent = _parent(record, _SUBPRODUCT, "productlink")
    links = [
        {"product_id": product_id, "subproduct_id": parent["id"]}
        for product_id in _product_ids(record.get("productlink"), "productlink")
    ]
    return Rows(parent=parent, children={"product_subproducts": links})


@reads(_CUSTOMER)
def parse_customer(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A customer (get-customers)."""
    return _simple(raw, _CUSTOMER)


@reads(_USER, "secnr")
def parse_user(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A user; the national register number becomes a keyed hash (get-users)."""
    record = _record(raw)
    parent = _parent(record, _USER, "secnr")
    secnr = _text(record.get("secnr"), "secnr")
    digits = "".join(c for c in secnr or "" if c in "0123456789")
    parent["secnr_hash"] = (
        hmac.new(ctx.secnr_key, digits.encode(), hashlib.sha256).hexdigest()
        if digits and ctx.secnr_key is not None else None
    )
    parent["national_number"] = secnr if ctx.store_national_number else None
    return Rows(parent=parent)


@reads(_POS_TABLE)
def parse_pos_table(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A table of the restaurant floor (get-tables)."""
    return _simple(raw, _POS_TABLE)


@reads(_PAYMENT_METHOD)
def parse_payment_method(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """An active payment method (get-payment)."""
    return _simple(raw, _PAYMENT_METHOD)


@reads(_PRINTER)
def parse_printer(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A printer (get-printers)."""
    return _simple(raw, _PRINTER)


@reads(_GIFT_VOUCHER)
def parse_gift_voucher(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A gift voucher (get-giftvoucher)."""
    return _simple(raw, _GIFT_VOUCHER)


@reads(_CUSTOMER_CREDIT)
def parse_customer_credit(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A customer's credit on one tag (get-customercredits); top-up fields stay in extra."""
    return _simple(raw, _CUSTOMER_CREDIT)


def _order_line(
    order_id: int, line_no: int, line: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One `orderdetail` line and its used subproduct slots."""
    prefix = f"orderdetail[{line_no}]."
    row = {"order_id": order_id, "line_no": line_no, **_columns(line, _ORDER_LINE, prefix)}
    slots: list[dict[str, Any]] = []
    # A line of only its own fields (many are) has no slot to look for.
    plain = _LINE_FIELD_KEYS.issuperset(line)
    for slot, (id_key, price_key, tax_key) in () if plain else _SLOT_KEYS.items():
        raw_id = line.get(id_key)
        if raw_id is None or raw_id in ("", "0") or (type(raw_id) is int and not raw_id):
            continue  # an unused slot (most of them), without a parse
        subproduct_id = _optional_id(raw_id, prefix + id_key)
        if subproduct_id is None:  # unused too: "00", blanks
            continue
        slots.append({
            "order_id": order_id,
            "line_no": line_no,
            "slot": slot,
            "subproduct_id": subproduct_id,
            "price": _decimal(line.get(price_key), prefix + price_key),
            "tax_rate": _rate(line.get(tax_key), prefix + tax_key),
        })
    row["extra"] = _extra(line, _ORDER_LINE_KEYS, prefix)
    return row, slots


@functools.lru_cache(maxsize=8)
def _order_fields(tz: ZoneInfo) -> tuple[Field, ...]:
    """An order's columns; its local times are read in `tz` (one tuple per zone, so
    the keys to skip are worked out once)."""
    local = functools.partial(_local_datetime, tz=tz)
    return (
        ("id", "id", _int_id),
        ("customer_id", "customerid", _optional_id),
        ("register_id", "kassaid", _optional_id),
        ("user_id", "user", _optional_id),
        ("total_price", "totalprice", _decimal),
        ("ordered_at", "ordertime", local),
        ("clock_in", "clockin", local),
        ("clock_out", "clockout", local),
    )


@reads(_order_fields(ZoneInfo("UTC")), "orderdetail", *_PAYMENT_KEYS.values())
def parse_order(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """An order (or labour record) with its lines, their subproducts and its payments."""
    record = _record(raw)
    parent = _parent(record, _order_fields(ctx.tz), "orderdetail", *_PAYMENT_KEYS.values())
    order_id = parent["id"]
    lines: list[dict[str, Any]] = []
    slots: list[dict[str, Any]] = []
    for line_no, line in _lines(record, "orderdetail"):
        row, line_slots = _order_line(order_id, line_no, line)
        lines.append(row)
        slots.extend(line_slots)
    payments = []
    for method, key in _PAYMENT_KEYS.items():
        amount = _decimal(record.get(key), key)
        if amount:  # a zero or missing amount is no payment
            payments.append({"order_id": order_id, "method": method, "amount": amount})
    children = {"order_lines": lines, "order_line_subproducts": slots, "order_payments": payments}
    parent["content_hash"] = _content_hash(parent, children)
    # Derived from the times above (and the zone), so left out of the hash.
    parent.update(local_reading(parent, ctx.tz))
    return Rows(parent=parent, children=children)


def local_reading(order: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """The local day, hour, minute and ISO weekday of the moment an order counts for.

    A sale counts at `ordered_at`; a labour record on the day its shift began
    (`clock_in`, else `ordered_at`, else `clock_out`). SQLite cannot convert time
    zones, so the reports group on these columns rather than on the UTC times.
    """
    moments: tuple[dt.datetime | None, ...]
    if order["clock_in"] is None and order["clock_out"] is None:
        moments = (order["ordered_at"],)
    else:
        moments = (order["clock_in"], order["ordered_at"], order["clock_out"])
    moment = next((m for m in moments if m is not None), None)
    if moment is None:
        return {"business_date": None, "local_hour": None, "local_weekday": None,
                "local_minute": None}
    local = moment.astimezone(tz)
    return {"business_date": local.date(), "local_hour": local.hour,
            "local_weekday": local.isoweekday(), "local_minute": local.minute}


@reads(_INVOICE, "invoicedetail")
def parse_invoice(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """An invoice, quote or credit note with its lines (get-invoices)."""
    record = _record(raw)
    parent = _parent(record, _INVOICE, "invoicedetail")
    invoice_id = parent["id"]
    lines = []
    for line_no, line in _lines(record, "invoicedetail"):
        prefix = f"invoicedetail[{line_no}]."
        row = {"invoice_id": invoice_id, "line_no": line_no,
               **_columns(line, _INVOICE_LINE, prefix)}
        row["extra"] = _extra(line, _INVOICE_LINE_KEYS, prefix)
        lines.append(row)
    children = {"invoice_lines": lines}
    parent["content_hash"] = _content_hash(parent, children)
    return Rows(parent=parent, children=children)


@reads(_COUPON)
def parse_coupon(raw: Mapping[str, Any], ctx: ParseContext) -> Rows:
    """A discount coupon (get-coupon)."""
    return _simple(raw, _COUPON)

