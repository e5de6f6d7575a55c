"""The contract of a synced resource, checked for each one in `resources.RESOURCES` (the
shape of meltano/sdk's generated per-stream tests): a resource is tested end to end the
moment it is declared, and one that misses a part fails here under its own name.

Its parts: a recorded fixture (tests/fixtures/parse/<name>.json) that exercises every key
its parser reads and fills every column of its tables; the bundled simulator serving its
function over HTTP; a job of its own in `jobs.JOBS`; and `syncer doctor` describing its
answers field by field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncer import jobs
from syncer.client import CloudPosClient, OpenDoor
from syncer.parse import ParseContext, Rows
from syncer.resources import RESOURCES, Pull, Resource
from syncer.simulator import Simulator, generate
from syncer.sync import parse_records
from tests.conftest import ANCHOR, LICENSE, TOKEN
from tests.helpers import cli_env, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "parse"
TZ = ZoneInfo("Europe/Brussels")
# Every column filled: the national number hashed with a key and kept as sent.
CTX = ParseContext(tz=TZ, secnr_key=b"contract-key", store_national_number=True)
LOADER_COLUMNS = {"license", "synced_at", "deleted_at"}  # the loader's, not the parser's
per_resource = pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)


def recorded(resource: Resource) -> dict[str, Any]:
    path = FIXTURES / f"{resource.name}.json"
    assert path.exists(), f"no recorded fixture {path}"
    return dict(json.loads(path.read_text()))


def tables_of(rows: Rows, resource: Resource) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table name, row) for the parent row and every child row."""
    yield resource.table.name, rows.parent
    for table, children in rows.children.items():
        for row in children:
            yield table, row


@per_resource
def test_a_recorded_fixture_exercises_every_key_its_parser_reads(resource: Resource) -> None:
    records = recorded(resource)
    assert records and all(isinstance(r, dict) for r in records.values())
    sent = {key for record in records.values() for key in record}
    assert resource.parse.keys, "the parse function declares the keys it reads (parse.reads)"
    assert [group for group in resource.parse.keys if not sent.intersection(group)] == []


@per_resource
def test_its_parser_fills_every_column_of_its_tables(resource: Resource) -> None:
    columns = {t.name: {c.name for c in t.columns} - LOADER_COLUMNS for t in resource.tables}
    filled: dict[str, set[str]] = {name: set() for name in columns}
    for record in recorded(resource).values():
        for table, row in tables_of(resource.parse(record, CTX), resource):
            assert set(row) == columns[table], table  # no column left out, none unknown
            filled[table].update(name for name, value in row.items() if value is not None)
    never_filled = {table: sorted(columns[table] - filled[table]) for table in columns}
    assert never_filled == {table: [] for table in columns}  # some record fills each column


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(generate(seed=1, orders=300, anchor=ANCHOR), licenses={LICENSE: TOKEN})
    simulator.start()
    yield simulator
    simulator.stop()


def served(sim: Simulator, resource: Resource, params: dict[str, Any]) -> list[Any]:
    """The records of one answer of the simulator, over HTTP."""
    with CloudPosClient(sim.base_url, LICENSE, TOKEN, tz=TZ, door=OpenDoor()) as client:
        return client.fetch(resource.function, params).records


@per_resource
def test_the_simulator_serves_records_that_parse(sim: Simulator, resource: Resource) -> None:
    params = {"start": 1, "end": 500} if resource.pull is Pull.ID_WINDOW else {}
    records = served(sim, resource, params)
    parsed = parse_records(resource, records, CTX)
    assert records and len(parsed.rows) == len(records) and parsed.rejected == []


@per_resource
def test_a_job_of_its_own_pulls_it(resource: Resource) -> None:
    job = jobs.BY_NAME[resource.name]
    assert job.resource is resource and job.kind is jobs.Kind.OWN and job.table is resource.table
    assert job.spec in jobs.DEFAULT_JOBS


@pytest.fixture(scope="module")
def doctored(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`syncer doctor`'s report of every function, after a backfill from the simulator
    (whose exit code is left to the tests: one resource failing is that resource's)."""
    where = tmp_path_factory.mktemp("doctor")
    env = cli_env(f"sqlite:///{where}/syncer.db", sim.base_url)
    run_cli(["backfill"], env, cwd=where)
    result = run_cli(["doctor", "--out", str(where / "bundle.json")], env, cwd=where)
    assert result.exit_code == 0, result.output
    report = json.loads((where / "bundle.json").read_text())["licenses"][0]
    return dict(report["functions"])


@per_resource
def test_doctor_describes_its_answers(doctored: dict[str, Any], sim: Simulator,
                                      resource: Resource) -> None:
    entry = doctored[resource.function]
    assert entry["resource"] == resource.name and "answer" in entry, entry
    assert entry["records"] > 0 and entry["parsed"]["rows"] == entry["records"]
    fields = entry["fields"]
    assert fields["known_to_parser"] and fields["missing"] == []
    # The keys it calls unknown are those the parser keeps in `extra`: the parser's
    # declared keys are the ones it reads.
    records = served(sim, resource, entry["answer"]["params"])
    kept = {key for rows in parse_records(resource, records, CTX).rows
            for key in rows.parent["extra"] or ()}
    assert fields["unknown"] == sorted(kept)
