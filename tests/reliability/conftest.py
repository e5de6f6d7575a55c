"""The reliability suite's fixtures: the figures and a shared simulator.

The secrets guard (`leaks`, autouse for every test) lives in tests/conftest.py.

Figures: a test adds counters with `figures.add(row, **counts)`; when
`SYNCER_RELIABILITY_FIGURES` names a directory, one JSON file per test lands
there and `python -m benchmarks.reliability` sums them into the table in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncer.db import make_engine
from syncer.simulator import Simulator, generate
from tests.conftest import ANCHOR, LICENSE, TOKEN
from tests.helpers import cli_env, dump, run_cli

FIGURES_ENV = "SYNCER_RELIABILITY_FIGURES"
COUNTERS = ("inputs", "faults", "crashes", "sim_requests", "ledger_requests", "rows_lost",
            "rows_doubled")
Dump = dict[str, list[tuple[Any, ...]]]


# --- figures --------------------------------------------------------------------------


class Figures:
    def __init__(self) -> None:
        self.rows: dict[str, Counter[str]] = {}

    def add(self, row: str, **counts: int) -> None:
        unknown = set(counts) - set(COUNTERS)
        assert not unknown, unknown
        self.rows.setdefault(row, Counter()).update(counts)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    collected = Figures()
    yield collected
    target = os.environ.get(FIGURES_ENV)
    if target and collected.rows:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-180:]
        Path(target).mkdir(parents=True, exist_ok=True)
        Path(target, f"{name}.json").write_text(json.dumps(
            {"test": request.node.nodeid, "rows": {k: dict(v) for k, v in collected.rows.items()}}))


def compare(actual: Dump, reference: Dump, tables: list[str] | None = None) -> tuple[int, int]:
    """(rows lost, rows doubled or extra) of `actual` against `reference`, as multisets."""
    lost = doubled = 0
    for name in tables or list(reference):
        want, got = Counter(map(repr, reference[name])), Counter(map(repr, actual[name]))
        lost += sum((want - got).values())
        doubled += sum((got - want).values())
    return lost, doubled


# --- a shared simulator and its clean reference -----------------------------------------


def new_simulator(orders: int = 600, seed: int = 1) -> Simulator:
    # A session's tests share it: no daily limit (the budget tests bring their own simulator).
    sim = Simulator(generate(seed=seed, orders=orders, anchor=ANCHOR), licenses={LICENSE: TOKEN},
                    daily_limit=10**9)
    sim.start()
    return sim


@pytest.fixture(scope="session")
def shared_sim() -> Iterator[Simulator]:
    """One simulator per session (per xdist worker) for tests that do not change its data."""
    sim = new_simulator()
    yield sim
    sim.stop()


@pytest.fixture
def quiet_sim(shared_sim: Simulator) -> Iterator[Simulator]:
    shared_sim.clear_faults()
    shared_sim.reset_stats()
    yield shared_sim
    shared_sim.clear_faults()


def clean_backfill_dump(sim: Simulator, directory: Path) -> tuple[Dump, int]:
    """A clean, uninterrupted backfill into a fresh SQLite file: its dump and request count."""
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory}/reference.db"
    before = sim.stats()["requests"]
    result = run_cli(["backfill"], cli_env(url, sim.base_url), cwd=directory)
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    try:
        return dump(engine), sim.stats()["requests"] - before
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def reference(shared_sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Dump:
    shared_sim.clear_faults()
    return clean_backfill_dump(shared_sim, tmp_path_factory.mktemp("reference"))[0]
