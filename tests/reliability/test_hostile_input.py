"""Row 1: hostile input through the whole pipeline (parse, sync, load) into a real database.

Records: real rendered records with arbitrary JSON in any field, keys missing, ids 0 or
text, duplicated ids in one response. Every record lands as rows or in the quarantine
with a reason; no exception escapes; money read back from the database is exactly
the parsed Decimal. Responses: not JSON, truncated, huge, of an unknown envelope: each
attempt is counted, the pull is retried up to `max_attempts` (or the budget), then
reported; nothing of it is applied.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import Engine, Numeric, func, select

from syncer import tables as t
from syncer.backfill import Backfill
from syncer.client import _META_KEYS, BadResponse, CloudPosClient, Page
from syncer.config import ApiConfig, Config, DatabaseConfig, LicenseConfig
from syncer.db import make_engine, migrate
from syncer.load import quarantine_raw
from syncer.parse import ParseContext, ParseError, Rows
from syncer.resources import RESOURCES, Pull, Resource
from syncer.runtime import Runtime
from syncer.simulator import generate
from syncer.simulator.data import RENDERERS
from syncer.sync import Sync, _keepable, _raw_id, parse_context
from tests.conftest import ANCHOR, SUITE_DATABASES, TOKEN, database
from tests.reliability.conftest import Figures
from tests.test_parse import ANYTHING, FIELDS, LINES

DATA = generate(seed=3, orders=40, anchor=ANCHOR)
BASE_URL = "http://cloudpos.invalid/api/"
_licenses = itertools.count()


def _rendered(name: str) -> list[dict[str, Any]]:
    store = getattr(DATA, name)
    items = list(store.values()) if isinstance(store, dict) else list(store)
    return [RENDERERS[name](item) for item in items]


BASE = {r.name: _rendered(r.name) for r in RESOURCES}
KEY = {r.name: "customerid" if r.name == "customer_credits" else "id" for r in RESOURCES}
ODD_IDS = st.sampled_from([0, "0", -1, "-7", "abc", "", None, "12", 12, 2**70, "1e3", 1.5, " 3 ",
                           [1], {"id": 1}])


def _field_values(name: str) -> dict[str, st.SearchStrategy[Any]]:
    fields = dict(FIELDS.get(name, {}))
    if name in LINES:
        detail, _ = LINES[name]
        fields[detail] = ANYTHING
    return fields


@st.composite
def hostile_record(draw: st.DrawFn, name: str) -> Any:
    """A real record of `name` with some fields replaced by junk or removed."""
    if draw(st.integers(0, 30)) == 0:
        return draw(ANYTHING)  # not even an object
    record = dict(draw(st.sampled_from(BASE[name])))
    typed = _field_values(name)
    keys = sorted(set(record) | set(typed))
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        how = draw(st.integers(0, 3))
        if how == 0:
            record.pop(key, None)
        elif how == 1 or key not in typed:
            record[key] = draw(ANYTHING)
        else:
            record[key] = draw(typed[key])
    if draw(st.integers(0, 5)) == 0:
        record[KEY[name]] = draw(ODD_IDS)
    if draw(st.integers(0, 6)) == 0:
        record[draw(st.text(max_size=6))] = draw(ANYTHING)
    return record


@st.composite
def hostile_page(draw: st.DrawFn, name: str) -> list[Any]:
    records = draw(st.lists(hostile_record(name), min_size=1, max_size=5))
    if draw(st.booleans()):
        # The same id twice in one response, with the same or another content.
        twin = draw(st.sampled_from(records))
        if isinstance(twin, dict):
            copy = dict(twin)
            if draw(st.booleans()):
                copy["zz_changed"] = draw(ANYTHING)
            records.insert(draw(st.integers(0, len(records))), copy)
    return records


class _StubClient:
    """Hands the sync one page of records, as the client would after unwrapping."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records

    def fetch(self, function: str, params: Any = None, *, max_attempts: int | None = None,
              whole_list: bool = False) -> Page:
        return Page(body=None, records=list(self.records), nbytes=len(repr(self.records)))


@pytest.fixture(scope="module", params=SUITE_DATABASES)
def shared_engine(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated database per module; each example uses its own license."""
    with database(request.param, tmp_path_factory.mktemp("hostile"), "h") as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


def _examples(request: pytest.FixtureRequest, fast: int, slow: int) -> int:
    return slow if request.config.getoption("--slow") else fast


def _ctx(license: str) -> ParseContext:
    config = Config(licenses=(LicenseConfig(name=license, token=SecretStr(TOKEN)),))
    return parse_context(config, config.licenses[0])


def _expected(resource: Resource, records: list[Any], ctx: ParseContext, window_end: int | None = None
              ) -> tuple[dict[tuple[Any, ...], Rows], set[str]]:
    """What must land: the last parsed record per key; what must be quarantined (raw
    hashes): records that do not parse, and in an id window those past its end."""
    names = list(resource.key)
    kept: dict[tuple[Any, ...], tuple[Rows, Any]] = {}
    quarantined: set[str] = set()

    def digest(raw: Any) -> str:
        kept = _keepable(raw, ctx)  # the quarantine masks the national number
        return hashlib.sha256(quarantine_raw(kept).encode("utf-8", "replace")).hexdigest()

    for raw in records:
        if window_end is not None and (rid := _raw_id(raw)) is not None and rid > window_end:
            quarantined.add(digest(raw))
            continue
        if not isinstance(raw, dict):
            quarantined.add(digest(raw))
            continue
        try:
            rows = resource.parse(raw, ctx)
        except ParseError:
            quarantined.add(digest(raw))
            continue
        key = tuple(rows.parent[n] for n in names)
        if key in kept and kept[key][0] != rows:
            quarantined.add(digest(kept[key][1]))
        kept[key] = (rows, raw)
    return {k: rows for k, (rows, _) in kept.items()}, quarantined


def _money_columns(table: sa.Table) -> list[str]:
    return [c.name for c in table.columns if isinstance(c.type, Numeric)]


def _check_stored(engine: Engine, resource: Resource, license: str,
                  kept: dict[tuple[Any, ...], Rows], quarantined: set[str]) -> None:
    table = resource.table
    with engine.connect() as conn:
        stored = {tuple(getattr(r, n) for n in resource.key): r for r in conn.execute(
            select(table).where(table.c.license == license))}
        hashes = set(conn.execute(select(t.quarantine.c.raw_hash, t.quarantine.c.reason)
                                  .where(t.quarantine.c.license == license)).all())
        assert set(stored) == set(kept), "a parsed record did not land, or something else did"
        assert {h for h, _ in hashes} == quarantined, "quarantine differs from the records that failed"
        assert all(reason for _, reason in hashes), "a quarantined record has no reason"
        for key, rows in kept.items():
            row = stored[key]
            for col in _money_columns(table):
                want = rows.parent.get(col)
                got = getattr(row, col)
                assert (want is None and got is None) or Decimal(got) == want, (col, want, got)
                if want is not None:
                    assert isinstance(want, Decimal)
            for child in resource.children:
                parent_col = next(c.name for c in child.columns
                                  if c.name in ("order_id", "invoice_id", "subproduct_id"))
                children = conn.execute(select(child).where(
                    child.c.license == license, getattr(child.c, parent_col) == key[0])).all()
                want_children = rows.children.get(child.name, [])
                assert len(children) == len(want_children), child.name
                for col in _money_columns(child):
                    got_money = sorted(Decimal(getattr(c, col)) for c in children
                                       if getattr(c, col) is not None)
                    want_money = sorted(w[col] for w in want_children if w.get(col) is not None)
                    assert got_money == want_money, (child.name, col)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)
def test_hostile_records_land_as_rows_or_in_quarantine(
    resource: Resource, shared_engine: Engine, request: pytest.FixtureRequest, figures: Figures
) -> None:
    tried = 0

    @settings(max_examples=_examples(request, 8, 200), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(records=hostile_page(resource.name))
    def prop(records: list[Any]) -> None:
        nonlocal tried
        tried += 1
        license = f"h{next(_licenses)}-{uuid.uuid4().hex[:6]}"
        ctx = _ctx(license)
        sync = Sync(shared_engine, license, cast(CloudPosClient, _StubClient(records)), ctx)
        window_end = None
        if resource.pull is Pull.FULL_LIST:
            sync.pull_full_list(resource)
        else:
            window_end = 10**6  # a drawn id past it is quarantined, not stored
            sync.pull_window(resource, 1, window_end, window=500)
        kept, quarantined = _expected(resource, records, ctx, window_end)
        _check_stored(shared_engine, resource, license, kept, quarantined)
        if resource.pull is Pull.ID_WINDOW:
            cursor, _ = sync.cursor(resource)
            assert all(k[0] <= cursor for k in kept), "a stored id lies past the cursor"

    prop()
    figures.add("1 hostile input", inputs=tried)


# --- whole responses ---------------------------------------------------------------------

PRODUCTS_BODY = json.dumps({"success": 1, "data": BASE["products"]}).encode()
ORDERS_BODY = json.dumps({"success": 1, "data": BASE["orders"]}).encode()


def _not_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return True
    return False


BAD_BODIES = st.one_of(
    st.binary(max_size=200).filter(_not_json),
    st.sampled_from([PRODUCTS_BODY, ORDERS_BODY]).flatmap(
        lambda body: st.integers(1, len(body) - 1).map(lambda n: body[:n]).filter(_not_json)),
    st.just(b'{"success":1,"data":[' + b'{"id":1,"name":"x"},' * 250_000),  # ~5 MB, truncated
    st.just(b"<!DOCTYPE html><html><body>Onderhoud</body></html>"),
    st.dictionaries(st.text(min_size=1, max_size=5).filter(
        # Meta keys alone ({"success": 1, "count": 0}) are read as an empty answer, on purpose.
        lambda k: k not in ("data", "products", "orders", "id", *_META_KEYS)),
        st.one_of(st.integers(), st.text(max_size=5), st.booleans()), min_size=1, max_size=4
    ).map(lambda d: json.dumps({"success": 1, **d}).encode()),
    st.sampled_from([b"null", b"1", b'"ok"', b"true", b'{"success":1,"data":5}',
                     b'{"success":1,"a":[1],"b":[2]}', b'{"errorcode":"x"}']),
)


def _handler(bodies: list[bytes], good: bytes) -> Callable[[httpx.Request], httpx.Response]:
    """Answer the queued bad bodies, then the good one."""
    queue = list(bodies)

    def answer(request: httpx.Request) -> httpx.Response:
        body = queue.pop(0) if queue else good
        ctype = "text/html" if body.startswith(b"<!") else "application/json"
        return httpx.Response(200, content=body, headers={"content-type": ctype})

    return answer


@pytest.mark.parametrize("resource_name", ["products", "orders"])
def test_broken_responses_are_retried_within_the_budget_then_reported_never_applied(
    resource_name: str, shared_engine: Engine, request: pytest.FixtureRequest, figures: Figures
) -> None:
    resource = next(r for r in RESOURCES if r.name == resource_name)
    good = PRODUCTS_BODY if resource_name == "products" else ORDERS_BODY
    tried = 0

    @settings(max_examples=_examples(request, 6, 80), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies=st.lists(BAD_BODIES, min_size=1, max_size=4), budget=st.integers(1, 6))
    def prop(bodies: list[bytes], budget: int) -> None:
        nonlocal tried
        tried += 1
        license = f"r{next(_licenses)}-{uuid.uuid4().hex[:6]}"
        config = Config(database=DatabaseConfig(url="sqlite:///unused.db"),
                        api=ApiConfig(base_url=BASE_URL, max_attempts=3, daily_budget=budget,
                                      reserve=0),
                        licenses=(LicenseConfig(name=license, token=SecretStr(TOKEN)),))
        lic = config.licenses[0]
        with Runtime(shared_engine, config, lic, purpose="backfill", sleep=lambda _: None,
                     transport=httpx.MockTransport(_handler(bodies, good))) as rt:
            summaries, code = Backfill(rt).run([resource])
        with shared_engine.connect() as conn:
            spent = conn.execute(select(func.count()).select_from(t.request_ledger)
                                 .where(t.request_ledger.c.license == license)).scalar_one()
            rows = conn.execute(select(func.count()).select_from(resource.table)
                                .where(resource.table.c.license == license)).scalar_one()
            held = conn.execute(select(func.count()).select_from(t.quarantine)
                                .where(t.quarantine.c.license == license)).scalar_one()
        bad_first = min(len(bodies), 3)
        assert spent <= budget, "the budget was passed"
        assert held == 0, "a broken response reached the quarantine"
        if len(bodies) >= 3 and budget >= 3:
            # Three broken answers: reported as failed after exactly max_attempts.
            assert code == 1 and summaries[0].status == "failed", summaries
            assert spent == 3
            assert rows == 0, "a broken response was half-applied"
        elif budget <= bad_first:
            assert code == 3 and summaries[0].status == "stopped", summaries
            assert rows == 0
        else:
            # Fewer broken answers than attempts: the good one lands whole.
            assert code in (0, 3), summaries
            assert rows == len(BASE[resource_name])
        assert not any(isinstance(s.note, BadResponse) for s in summaries)

    prop()
    figures.add("1 hostile input", inputs=tried)
