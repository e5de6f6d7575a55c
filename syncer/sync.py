"""The sync step: the one place that knows both the client and the loader.

Each pull is: one request through the client (and so through the ledger), pure
parsing, then one transaction that loads the rows, quarantines what could not
be parsed, and moves the resource's state (cursor, window, last success).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, or_, select
from tenacity import RetryCallState

import syncer.load as load_module
import syncer.parse as parse_module
import syncer.resources as resources_module
from syncer import __version__, archive
from syncer import tables as t
from syncer.client import AnswerTooLarge, CloudPosClient, Page, ResponseTimeout, SuspiciousAnswer
from syncer.config import Config, LicenseConfig, ResourceConfig
from syncer.db import prepared, upsert
from syncer.ledger import utcnow
from syncer.load import Counts, Rejected, key_columns, load, quarantine
from syncer.parse import ParseContext, ParseError, Rows, _int_id, parse_key
from syncer.resources import Pull, Resource

log = logging.getLogger("syncer.sync")

# An id window's answer aims at this size: few requests for a long history, one page
# held and parsed at a time (5,000 orders are about 7 MB).
TARGET_BYTES = 16 * 1024 * 1024

# `--since` probes (one `date` request each): days after it, days before it one by
# one, and how far back powers of two reach (see Sync._history_start).
SINCE_AHEAD = 14
SINCE_BEHIND = 7
SINCE_REACH = 4096


def adapt_window(window: int, nbytes: int, lo: int, hi: int) -> int:
    """The next window after an answer of `nbytes`: halved when it was huge, doubled
    when small, within lo..hi (the backfill and the daemon's catch-up share this)."""
    if nbytes > TARGET_BYTES:
        return max(lo, window // 2)
    if nbytes * 2 <= TARGET_BYTES:
        return min(hi, window * 2)
    return window


def parse_context(config: Config, license: LicenseConfig) -> ParseContext:
    """How records of this license are parsed (time zone, national number policy)."""
    privacy = config.privacy
    # No key of the user's: no hash. A national number has few enough values to be
    # brute-forced from an unkeyed hash, and a key derived from the token would change
    # every stored hash (and rewrite every user) when the token is rotated.
    key = privacy.hash_key.get_secret_value().encode() if privacy.hash_key is not None else None
    return ParseContext(tz=config.api.tz, secnr_key=key,
                        store_national_number=privacy.store_national_number)


@dataclass
class Parsed:
    rows: list[Rows] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # Keys of records that failed to parse: still listed, so a full list keeps their rows.
    unparsed_keys: set[tuple[Any, ...]] = field(default_factory=set)
    max_id: int | None = None  # the highest record id seen, parsed or not


def _raw_id(raw: Any) -> int | None:
    """A record's id as its parse reads it (the same check: an id past BIGINT, which
    the parser quarantines, would fail the whole page's transaction as a cursor)."""
    if not isinstance(raw, dict):
        return None
    try:
        return _int_id(raw.get("id"), "id")
    except ParseError:
        return None


def _keepable(raw: Any, ctx: ParseContext) -> Any:
    """A raw record as the quarantine may keep it: no national number unless opted in."""
    if ctx.store_national_number or not isinstance(raw, dict) or raw.get("secnr") in (None, ""):
        return raw
    return {**raw, "secnr": "***"}


class _GcPause:
    """No cyclic garbage collection while a page is parsed (threads share one count).

    Parsing a page allocates a few hundred thousand dicts, lists and Decimals that live
    until the page is loaded, so the collector's runs over them find nothing and cost
    15-20% of the parse (measured on 5,000-order pages). Parsing makes no cycles (but
    for the tracebacks of quarantined records, freed at the next collection); the
    collector runs again as soon as no thread is parsing, unless it was off before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parsing = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._parsing == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._parsing += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._parsing -= 1
            if self._parsing == 0 and self._resume:
                gc.enable()


_gc_paused = _GcPause()


def parse_records(resource: Resource, raw_records: Sequence[Any], ctx: ParseContext, *,
                  window: tuple[int, int] | None = None) -> Parsed:
    """Parse a page; bad records and conflicting duplicates become quarantine entries.

    `window`: the ids (first, last) an id-window answer was asked for. A record whose
    id lies past the last is quarantined, not loaded, and does not count in `max_id`:
    it is not data of this window. It is not kept for the window it claims either:
    that window is asked for when the cursor gets there, and the API's answer then is
    the one to believe; a stored id ahead of the cursor would make an empty window
    step over the ids between (`_stored_past`), and a cursor moved to it would never
    ask for them, or (an id of 2^63-1) ask for a `start` past the database's range.
    Ids below the first were asked for by earlier windows: a repeated answer is loaded
    as before and the walk stops there (`WindowWalk.step`), the cursor does not move.
    """
    with _gc_paused:
        return _parse_records(resource, raw_records, ctx, window)


def window_ids(raw_records: Sequence[Any], window: tuple[int, int]) -> list[int]:
    """The ids of an id-window answer's records up to the window's last id."""
    return [i for r in raw_records if (i := _raw_id(r)) is not None and i <= window[1]]


def _parse_records(resource: Resource, raw_records: Sequence[Any], ctx: ParseContext,
                   window: tuple[int, int] | None) -> Parsed:
    out = Parsed()
    names = [c.name for c in key_columns(resource.table)]
    by_key: dict[Any, tuple[Rows, Any]] = {}
    for raw in raw_records:
        rid = _raw_id(raw)
        key_text = str(rid) if rid is not None else None
        if window is not None and rid is not None and rid > window[1]:
            out.rejected.append(Rejected(
                _keepable(raw, ctx),
                f"id {rid} is outside the window {window[0]}-{window[1]} asked for", key_text))
            continue
        if rid is not None and (out.max_id is None or rid > out.max_id):
            out.max_id = rid
        if not isinstance(raw, dict):
            out.rejected.append(Rejected(raw, "record is not an object", key_text))
            continue
        try:
            rows = resource.parse(raw, ctx)
        except Exception as exc:  # one record must never stop the batch (rule 6)
            reason = str(exc) if isinstance(exc, ParseError) else f"unexpected {type(exc).__name__}: {exc}"
            out.rejected.append(Rejected(_keepable(raw, ctx), reason, key_text))
            if (unparsed := parse_key(raw, names)) is not None:
                out.unparsed_keys.add(unparsed)
            continue
        key = tuple(rows.parent[n] for n in names)
        if key in by_key and by_key[key][0] != rows:
            earlier = by_key[key][1]
            out.rejected.append(Rejected(
                _keepable(earlier, ctx),
                f"duplicate key {'/'.join(map(str, key))} in one response; the last one was kept",
                "/".join(map(str, key))))
        by_key[key] = (rows, raw)
    out.rows = [rows for rows, _ in by_key.values()]
    return out


def write_parsed(conn: Connection, license: str, resource: Resource, parsed: Parsed,
                 now: dt.datetime, *, full_list: bool) -> Counts:
    """Load a parsed page and quarantine what it rejected, on the caller's transaction
    (a live pull and `syncer rebuild` write through this one function)."""
    counts = load(conn, resource.table, resource.children, license, parsed.rows, now,
                  full_list=full_list, unparsed=parsed.unparsed_keys)
    counts.quarantined = quarantine(conn, license, resource.name, parsed.rejected, now)
    return counts


@functools.cache  # read once, at the first answer (not at every command's start)
def _source_digest() -> bytes:
    """The code that turns an answer into rows: a change to it (an upgrade, a relaxed
    parser) makes every list parse again once."""
    digest = hashlib.sha256(__version__.encode())
    for module in (parse_module, load_module, t, resources_module):
        with contextlib.suppress(OSError):  # no source at hand: the version alone
            digest.update(Path(module.__file__ or "").read_bytes())
    return digest.digest()


def answer_mark(content: bytes, ctx: ParseContext) -> str | None:
    """A digest of what an answer's rows follow from: its bytes, the parsing and
    loading code, and the parse settings (zone, national-number policy, the digest of
    the hash key, never the key). None for an answer without its bytes."""
    if not content:
        return None
    digest = hashlib.sha256(_source_digest())
    digest.update(f"{ctx.tz.key}|{ctx.store_national_number}|".encode())
    digest.update(hashlib.sha256(ctx.secnr_key).digest() if ctx.secnr_key is not None else b"-")
    digest.update(content)
    return digest.hexdigest()


@dataclass
class Applied:
    """What loading one answer did."""

    counts: Counts
    parsed: Parsed
    parse_seconds: float = 0.0
    skipped: bool = False  # the same answer as the last one loaded: not parsed


def apply_answer(conn: Connection, license: str, resource: Resource, records: Sequence[Any],
                 content: bytes, params: Mapping[str, Any] | None, ctx: ParseContext,
                 now: dt.datetime, *, full_list: bool, remember: bool = True,
                 window: tuple[int, int] | None = None) -> Applied:
    """Parse and load one answer on the caller's transaction, unless it is the same
    answer as the last one loaded for these parameters and nothing wrote its records
    since (`answer_marks`): then it would write nothing, and it is not parsed.
    `window`: an id window's first and last id (`parse_records`).

    `remember`: keep a mark for this answer. A pull past the cursor does not (its
    parameters never come again: the cursor moves on, and a `reset` forgets marks);
    full lists, day re-checks and re-scan windows do, they repeat all day. The mark is
    kept only for an answer loaded without quarantine (those are parsed every time,
    so the quarantine sees them). A load that writes rows drops the marks of the
    function's other parameters whose record ids overlap its own (a re-check of a
    day, a re-scan window): theirs no longer describe the rows. `syncer reset` and
    `syncer rebuild` drop a resource's marks (`forget_marks`).
    """
    function, key = resource.function, archive.params_key(params)
    mark = answer_mark(content, ctx) if records and remember else None
    marks = t.answer_marks.c
    ids = [i for r in records if (i := _raw_id(r)) is not None]
    low, high = (min(ids), max(ids)) if ids else (None, None)
    if mark is not None and conn.execute(prepared(conn, ("mark",), lambda _: select(marks.mark).where(
            marks.license == bindparam("license"), marks.function == bindparam("function"),
            marks.params_key == bindparam("key"))),
            {"license": license, "function": function, "key": key}).scalar() == mark:
        return Applied(Counts(unchanged=len(records)), Parsed(max_id=high), skipped=True)
    parsing = time.perf_counter()
    parsed = parse_records(resource, records, ctx, window=window)
    parse_seconds = time.perf_counter() - parsing
    counts = write_parsed(conn, license, resource, parsed, now, full_list=full_list)
    which = {"license": license, "function": function, "key": key, "low": low, "high": high}
    if counts.written:
        # Its own mark is set below (`remember`); ids unknown: every other mark goes.
        drop = "others" if remember else "all"
        conn.execute(prepared(conn, ("drop_marks", drop, low is not None),
                              lambda _: _drop_marks(drop, overlapping=low is not None)), which)
    if mark is None or parsed.rejected:
        if remember:  # a stale mark for these parameters must not outlive this answer
            conn.execute(prepared(conn, ("drop_marks", "own", False),
                                  lambda _: _drop_marks("own", overlapping=False)), which)
    else:
        values = {"mark": mark, "min_id": low, "max_id": high, "loaded_at": now}
        upsert(conn, t.answer_marks, {"license": license, "function": function,
                                      "params_key": key, **values})
    return Applied(counts, parsed, parse_seconds)


def _drop_marks(which: str, *, overlapping: bool) -> Any:
    """The DELETE of a function's marks (`:license`, `:function`): "own" for the
    parameters `:key`, "others" for every other, "all"; `overlapping`: only those whose
    id range meets `:low`..`:high` (or is unknown)."""
    marks = t.answer_marks.c
    stmt = delete(t.answer_marks).where(marks.license == bindparam("license"),
                                        marks.function == bindparam("function"))
    if which == "own":
        stmt = stmt.where(marks.params_key == bindparam("key"))
    elif which == "others":
        stmt = stmt.where(marks.params_key != bindparam("key"))
    if overlapping:
        stmt = stmt.where(or_(marks.min_id.is_(None), marks.max_id.is_(None),
                              and_(marks.min_id <= bindparam("high"),
                                   marks.max_id >= bindparam("low"))))
    return stmt


def forget_marks(conn: Connection, license: str, resources: Sequence[Resource]) -> None:
    """The next answer of these resources is parsed and compared row by row again."""
    conn.execute(delete(t.answer_marks).where(
        t.answer_marks.c.license == license,
        t.answer_marks.c.function.in_([r.function for r in resources])))


def save_state(conn: Connection, license: str, resource: str, **values: Any) -> None:
    """Update one resource's sync state (creating its row if needed): one statement."""
    upsert(conn, t.sync_state, {"license": license, "resource": resource, **values})


def read_state(conn: Connection, license: str, resource: str) -> Any:
    stmt = prepared(conn, ("read_state",), lambda _: select(t.sync_state).where(
        t.sync_state.c.license == bindparam("license"),
        t.sync_state.c.resource == bindparam("resource")))
    return conn.execute(stmt, {"license": license, "resource": resource}).first()


@dataclass
class PullResult:
    counts: Counts
    records: int
    nbytes: int
    elapsed: float
    max_id: int | None
    # An empty id window: whether the database holds a record past its end (see
    # `WindowWalk`), asked in the transaction that stored the answer. None otherwise.
    stored_past: bool | None = None


class Sync:
    """Pulls for one license: full lists, id windows and day re-scans."""

    def __init__(
        self,
        engine: Engine,
        license: str,
        client: CloudPosClient,
        ctx: ParseContext,
        clock: Callable[[], dt.datetime] = utcnow,
        *,
        keep_answers: bool = True,
    ) -> None:
        self.engine = engine
        self.license = license
        self.client = client
        self.ctx = ctx
        self.clock = clock
        self.keep_answers = keep_answers  # [archive] enabled
        # Seconds spent per step, summed over pulls (two clock reads per step: cheap).
        self.timings: dict[str, float] = {"http_json": 0.0, "parse": 0.0, "database": 0.0}

    def _apply(self, resource: Resource, page: Page, *, kind: str,
               params: dict[str, Any] | None = None, state: dict[str, Any],
               window: tuple[int, int] | None = None) -> PullResult:
        """Load, archive and move the state for one answer, in one transaction;
        `window`: an id window's first and last id (an empty one asks `stored_past` too)."""
        started = time.perf_counter()
        now = self.clock()
        past = None
        with self.engine.begin() as conn:
            applied = apply_answer(conn, self.license, resource, page.records, page.content,
                                   params, self.ctx, now, full_list=kind == archive.FULL_LIST,
                                   remember=kind != archive.WINDOW, window=window)
            counts, parsed = applied.counts, applied.parsed
            if window is not None and parsed.max_id is None:  # no id in the window
                past = _stored_past(conn, self.license, resource, window[1])
            # An answer with records: the module is licensed (again), whatever a 1005 said.
            save_state(conn, self.license, resource.name, last_success_at=now, last_attempt_at=now,
                       last_error=None, disabled_reason=None, **state)
            if self.keep_answers:
                # With the rows it produced (rule 8): both commit, or neither.
                archive.keep(conn, self.license, resource.function, params, page, kind=kind,
                             state=state, counts=counts, received_at=now)
        parse_seconds = applied.parse_seconds
        self.timings["http_json"] += page.elapsed
        self.timings["parse"] += parse_seconds
        self.timings["database"] += time.perf_counter() - started - parse_seconds
        if parsed.rejected:
            log.warning("%s: %d record(s) quarantined, e.g. %s", resource.name,
                        len(parsed.rejected), parsed.rejected[0].reason)
        return PullResult(counts, len(page.records), page.nbytes, page.elapsed, parsed.max_id,
                          past)

    def pull_full_list(self, resource: Resource, *, max_deletes: int | None = None) -> PullResult:
        """One request for the whole list; write what changed, mark what left.

        `max_deletes`: an empty list while more rows than this are live is not applied
        (`SuspiciousAnswer`; `[resources.NAME] empty_list_max_deletes`); None: always."""
        assert resource.pull is Pull.FULL_LIST
        page = self.client.fetch(resource.function, whole_list=True)
        if not page.records:
            live = self.live_rows(resource)
            if max_deletes is not None and live > max_deletes:
                raise SuspiciousAnswer(
                    f"{resource.function}: the API lists none while {live} {resource.name} are "
                    f"live; not applied (it would mark every one deleted). If the shop did "
                    f"empty the list, raise [resources.{resource.name}] empty_list_max_deletes "
                    f"above {live}")
            if live:
                log.warning("%s: the API lists none; the %d rows still present are marked "
                            "deleted", resource.name, live)
        return self._apply(resource, page, kind=archive.FULL_LIST, state={})

    def live_rows(self, resource: Resource) -> int:
        """Rows of the license in a full list's table not marked deleted."""
        table = resource.table
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(
                table.c.license == self.license, table.c.deleted_at.is_(None))).scalar_one())

    def pull_window(self, resource: Resource, start: int, end: int, *, window: int,
                    max_attempts: int | None = None) -> PullResult:
        """One id window; the cursor moves to the highest id seen in it (never past
        `end`), with the rows."""
        assert resource.pull is Pull.ID_WINDOW
        params = {"start": start, "end": end}
        page = self.client.fetch(resource.function, params, max_attempts=max_attempts)
        parsed_max = max(window_ids(page.records, (start, end)), default=None)
        state: dict[str, Any] = {"window": window}
        if parsed_max is not None:
            state["cursor"] = max(parsed_max, start - 1)
        return self._apply(resource, page, kind=archive.WINDOW, params=params, state=state,
                           window=(start, end))

    def pull_date(self, resource: Resource, day: dt.date) -> PullResult:
        """Re-pull one API day of orders or invoices (late changes); the cursor stays."""
        params = {"date": day.isoformat()}
        page = self.client.fetch(resource.function, params)
        return self._apply(resource, page, kind=archive.DATE, params=params, state={})

    def start_history(self, resource: Resource, since: dt.date, today: dt.date) -> int:
        """Set the cursor of a resource with none yet so its history starts at `since`
        (the choice is kept: later runs and the daemon go on from there)."""
        cursor = self._history_start(resource, since, today)
        if cursor > 0:
            with self.engine.begin() as conn:
                save_state(conn, self.license, resource.name, cursor=cursor)
        return cursor

    def _history_start(self, resource: Resource, since: dt.date, today: dt.date) -> int:
        """The cursor a history from `since` starts after, found with `date` probes.

        1. The `SINCE_AHEAD` days from `since`, one by one: the first with records
           gives the exact start (its lowest id, minus one).
        2. Otherwise the records after `since` (if any) come later, and the last id
           before `since` bounds them: the `SINCE_BEHIND` days before it one by one,
           then every power of two further back, up to `SINCE_REACH` days. The first
           day with records gives its highest id. Records on days skipped between it
           and `since` are loaded too: loading a little too much beats losing some.
        3. No record on any probed day: 0, the history from its first id.
        Ids grow with time (the register numbers its documents as it makes them).
        """
        def ids_on(day: dt.date) -> list[int]:
            if day > today:
                return []
            page = self.client.fetch(resource.function, {"date": day.isoformat()})
            return [i for r in page.records if (i := _raw_id(r)) is not None]

        for offset in range(SINCE_AHEAD):
            day = since + dt.timedelta(days=offset)
            if day > today:
                break
            if ids := ids_on(day):
                log.info("%s: history from %s starts at id %d (%s)", resource.name, since,
                         min(ids), day)
                return min(ids) - 1
        back = [*range(1, SINCE_BEHIND + 1),
                *(2**k for k in range(SINCE_BEHIND.bit_length(), SINCE_REACH.bit_length()))]
        for offset in back:
            day = since - dt.timedelta(days=offset)
            if ids := ids_on(day):
                log.info("%s: none in the %d days from %s; loading the ids after %d, the last "
                         "on %s%s", resource.name, SINCE_AHEAD, since, max(ids), day,
                         "" if offset <= SINCE_BEHIND else
                         " (records of the unprobed days before --since come too)")
                return max(ids)
        log.info("%s: no record on or near %s, nor on the days probed before it; loading "
                 "from the first id", resource.name, since)
        return 0

    def rescan_window(self, resource: Resource, start: int, end: int) -> PullResult:
        """Re-pull a window of already stored ids (coupons' `used`); the cursor stays."""
        params = {"start": start, "end": end}
        page = self.client.fetch(resource.function, params)
        return self._apply(resource, page, kind=archive.RESCAN, params=params, state={})

    def record_error(self, job: str, message: str, **values: Any) -> None:
        """Keep a failed pull's message on the job's (or resource's) sync state."""
        now = self.clock()
        with self.engine.begin() as conn:
            save_state(conn, self.license, job, last_attempt_at=now, last_error=message,
                       last_error_at=now, **values)

    def save(self, resource: Resource, **values: Any) -> None:
        """Update the resource's sync state in a transaction of its own."""
        with self.engine.begin() as conn:
            save_state(conn, self.license, resource.name, **values)

    def window_plan(self, resource: Resource, settings: ResourceConfig,
                    state: Any = None) -> tuple[int, int, int, int]:
        """(cursor, window, lo, hi): where the next id window starts, its size (the one
        stored by the last pull, else the configured one) and the bounds it adapts in.
        `state`: the resource's sync_state row, when the caller has just read it."""
        cursor, stored = self.cursor(resource) if state is None else _cursor_of(state)
        lo, hi = min(settings.min_window, settings.max_window), settings.max_window
        return cursor, min(max(stored or settings.window, lo), hi), lo, hi

    def cursor(self, resource: Resource) -> tuple[int, int | None]:
        """(cursor, window) of an id-window resource; (0, None) before its first pull."""
        with self.engine.connect() as conn:
            return _cursor_of(read_state(conn, self.license, resource.name))


def _stored_past(conn: Connection, license: str, resource: Resource, end: int) -> bool:
    """Whether the database holds a record of this license with an id past `end`
    (the day re-check stores new orders and invoices before the id windows reach
    them): then an empty window up to `end` is a run of ids that will not come."""
    table = resource.table
    stmt = prepared(conn, ("stored_past", table.name), lambda _: select(table.c.id).where(
        table.c.license == bindparam("license"), table.c.id > bindparam("end")).limit(1))
    return conn.execute(stmt, {"license": license, "end": end}).first() is not None


def _cursor_of(state: Any) -> tuple[int, int | None]:
    """(cursor, window) of a sync_state row; (0, None) for none."""
    if state is None:
        return 0, None
    return int(state.cursor or 0), state.window


@dataclass
class Step:
    """What one step of a window walk did."""

    result: PullResult
    start: int
    end: int
    done: bool = False  # nothing past the cursor: the resource is up to date
    more: bool = False  # a full window, or empty space stepped over: go on at once


class WindowWalk:
    """The walk of one id-window resource past its cursor, one request per `step()`.

    State: the cursor (highest id stored), where the next window starts (`probe`, past
    the cursor while stepping over empty space), the window size and the probes left.
    The window doubles while answers are small and halves when an answer is huge or
    times out, within `min_window..max_window`. The backfill steps until `done`; the
    daemon takes one step per run (and its once-a-day `look_ahead`). Each step retries
    with the client's one policy (`CloudPosClient.retrying`).

    An empty window past the cursor means "up to date", except (1) while probing for
    the first id of a history that does not start at 1 (`probes`, in memory only), and
    (2) when the database already holds later ids (the day re-check stored them): the
    ids between will not come, so the cursor steps over them, durably.
    """

    def __init__(self, sync: Sync, resource: Resource, settings: ResourceConfig, *,
                 attempts: int, probes: int = 0, state: Any = None) -> None:
        """`state`: the resource's sync_state row when the caller has just read it (the
        daemon reads it with the job's lease); otherwise it is read here."""
        assert resource.pull is Pull.ID_WINDOW
        self.sync = sync
        self.resource = resource
        self.attempts = attempts
        self.cursor, self.window, self.lo, self.hi = sync.window_plan(resource, settings, state)
        self.probe = self.cursor
        self.probes_left = probes if self.cursor == 0 else 0

    def step(self) -> Step:
        """One window past `probe` (one request, more only to retry a fault)."""
        start = self.probe + 1
        result, end = self._pull(start)
        name = self.resource.name
        if result.max_id is None:
            if self.probes_left > 0:
                self.probes_left -= 1
                self.probe, self.window = end, min(self.window * 2, self.hi)
                return Step(result, start, end, more=True)
            if result.stored_past:
                self.probe = self.cursor = end
                self.window = min(self.window * 2, self.hi)
                self.sync.save(self.resource, cursor=end, window=self.window)
                log.info("%s/%s: ids %d-%d are empty and later ones exist; going on past them",
                         self.sync.license, name, start, end)
                return Step(result, start, end, more=True)
            return Step(result, start, end, done=True)
        self.probes_left = 0
        if result.max_id <= self.probe:
            log.warning("%s: the API answered ids at or below %d for start=%d; stopping",
                        name, result.max_id, start)
            return Step(result, start, end, done=True)
        used = end - start + 1
        self.cursor = self.probe = result.max_id
        self.window = adapt_window(used, result.nbytes, self.lo, self.hi)
        full = result.max_id >= start - 1 + used * 0.9
        if full and self.window != used:
            # May be the last step of this run: the next one starts with the adapted size.
            self.sync.save(self.resource, window=self.window)
        return Step(result, start, end, more=full)

    def look_ahead(self) -> Step:
        """After an empty window: one window of `max_window` ids beyond it, for ids that
        skipped more than a window (voided documents); what it finds moves the cursor."""
        start = self.probe + self.window + 1
        result, end = self._pull(start, self.hi)
        if result.max_id is not None:
            self.cursor = self.probe = max(self.cursor, result.max_id)
        return Step(result, start, end, more=result.max_id is not None)

    def _pull(self, start: int, width: int | None = None) -> tuple[PullResult, int]:
        """Pull `width` ids (default: the window) from `start`, retrying a fault with the
        client's policy; a timeout or a too-large answer halves the window before the next
        try."""
        name, attempts = self.resource.name, self.attempts

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            tried = state.attempt_number
            if isinstance(exc, ResponseTimeout | AnswerTooLarge):
                self.window = max(self.lo, self.window // 2)
                why = "timed out" if isinstance(exc, ResponseTimeout) else "answered too much"
                log.warning("%s: ids from %d %s; trying %d ids (try %d of %d)",
                            name, start, why, self.window, tried + 1, attempts)
            else:
                log.warning("%s: ids from %d failed (%s); again (try %d of %d)", name, start,
                            type(exc).__name__, tried + 1, attempts)

        for attempt in self.sync.client.retrying(attempts, before_sleep=before_sleep):
            with attempt:
                end = start + (width or self.window) - 1
                result = self.sync.pull_window(self.resource, start, end, window=self.window,
                                               max_attempts=1)
                return result, end
        raise AssertionError("unreachable")  # pragma: no cover - the policy re-raises
