"""What `backfill --json` and `run --once --json` print: one JSON document on standard
output that a scheduler or a script can act on (as dlt's load info does).

Per license and resource (or job): the requests spent, rows inserted / updated /
unchanged / deleted / quarantined, the cursor after it, and how it ended: `outcome` is
the name of its row in `syncer.outcomes` (`"ok"` when nothing went wrong, or e.g.
`"credentials refused (1002)"`, `"budget spent"`), `exit_code` that row's exit code,
`message` the words a person reads. The document's own `exit_code` is the command's.
The shape is described in docs/operations.md ("Machine-readable results").
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from syncer import jobs as registry
from syncer.backfill import Summary
from syncer.load import Counts
from syncer.outcomes import EXIT_OK, REFUSED_BEFORE, Scope
from syncer.redact import redact

if TYPE_CHECKING:
    from syncer.daemon import RunResult

SHAPE_VERSION = 1  # raised when a field changes meaning or goes


def _counts(c: Counts) -> dict[str, int]:
    return {"inserted": c.inserted, "updated": c.updated, "unchanged": c.unchanged,
            "deleted": c.deleted, "quarantined": c.quarantined}


def _document(command: str, started: dt.datetime, finished: dt.datetime, exit_code: int,
              licenses: list[dict[str, Any]]) -> str:
    return json.dumps({
        "syncer_results": SHAPE_VERSION,
        "command": command,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "exit_code": exit_code,
        "requests": sum(lic["requests"] for lic in licenses),
        "licenses": licenses,
    }, indent=2, ensure_ascii=False)


def _license(name: str, entries: list[dict[str, Any]], stopped: dict[str, Any] | None,
             key: str) -> dict[str, Any]:
    return {"license": name,
            "exit_code": max([e["exit_code"] for e in entries]
                             + [stopped["exit_code"] if stopped else EXIT_OK]),
            "requests": sum(e["requests"] for e in entries),
            "stopped": stopped, key: entries}


def backfill(summaries: Sequence[Summary], *, started: dt.datetime, finished: dt.datetime,
             exit_code: int) -> str:
    """`syncer backfill --json`: per license, per resource what the backfill did."""
    by_license: dict[str, list[Summary]] = {}
    for s in summaries:
        by_license.setdefault(s.license, []).append(s)
    licenses = []
    for name, done in by_license.items():
        entries = [{"resource": s.resource, "requests": s.requests, **_counts(s.counts),
                    "cursor": s.cursor, "status": s.status, "outcome": s.outcome,
                    "exit_code": s.exit_code,
                    "message": redact(s.note) if s.note and s.status != "done" else None}
                   for s in done]
        stop = next((s for s in done if s.status == "stopped"), None)
        stopped = None if stop is None else {"outcome": stop.outcome, "exit_code": stop.exit_code,
                                             "message": redact(stop.note)}
        licenses.append(_license(name, entries, stopped, "resources"))
    return _document("backfill", started, finished, exit_code, licenses)


def run_once(results: Sequence[RunResult], licenses: Sequence[str], refused: Mapping[str, str],
             *, started: dt.datetime, finished: dt.datetime, exit_code: int) -> str:
    """`syncer run --once --json`: per license, per job that was due what it did; a
    license stopped before (its credentials refused) says so under `stopped`."""
    out = []
    for name in licenses:
        ran = [r for r in results if r.license == name]
        entries = [{"job": r.job, "resource": registry.BY_NAME[r.job].resource.name,
                    "requests": r.requests, **_counts(r.counts), "cursor": r.cursor,
                    "outcome": r.outcome, "exit_code": r.exit_code,
                    "message": redact(r.error) if r.error else None,
                    "next_run": r.next_run.isoformat()} for r in ran]
        stop = next((r for r in ran if r.error and r.scope is Scope.LICENSE), None)
        stopped: dict[str, Any] | None = None
        if stop is not None and stop.error is not None:
            stopped = {"outcome": stop.outcome, "exit_code": stop.exit_code,
                       "message": redact(stop.error)}
        elif name in refused:
            stopped = {"outcome": REFUSED_BEFORE.name, "exit_code": REFUSED_BEFORE.exit_code,
                       "message": refused[name]}
        out.append(_license(name, entries, stopped, "jobs"))
    return _document("run --once", started, finished, exit_code, out)
