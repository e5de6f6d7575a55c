"""The one-shot, resumable backfill: every full list once, then history by id windows.

Id windows start past the stored cursor and move it, with the rows, to the highest
id seen. The window adapts to the data: it doubles while answers are small (sparse
ids, small orders) and halves when an answer is huge or times out, within
`[resources.X] min_window..max_window`, and is remembered for the next run.
An empty window past the cursor means the resource is up to date (one request).
A run stopped by the budget or `--max-requests` exits 3 and the next run
continues at the cursor; nothing is fetched twice and nothing is skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from syncer import audit, outcomes
from syncer.jobs import CAUGHT_UP
from syncer.load import Counts
from syncer.outcomes import EXIT_INTERRUPTED, Scope
from syncer.resources import Pull, Resource
from syncer.resume import BackfillProgress
from syncer.runtime import Runtime
from syncer.sync import PullResult

log = logging.getLogger("syncer.backfill")

START_PROBES = 8  # growing probes to find the first id when history does not start at 1


@dataclass
class Summary:
    """What the backfill did for one resource of one license."""

    license: str
    resource: str
    requests: int = 0
    counts: Counts = field(default_factory=Counts)
    status: str = "pending"  # done, stopped, failed, skipped
    note: str = ""
    cursor: int | None = None
    outcome: str = outcomes.OK.name  # the name of its `outcomes` row ("interrupted": Ctrl-C)
    exit_code: int = outcomes.EXIT_OK  # that outcome's


class Reporter:
    """Progress output: plain log lines; the CLI swaps in a rich progress bar on a terminal."""

    def started(self, summary: Summary) -> None:
        log.info("%s/%s: started", summary.license, summary.resource,
                 extra={"license": summary.license, "resource": summary.resource})

    def advanced(self, summary: Summary, result: PullResult) -> None:
        # A full list has no cursor: only an id window's is worth a word.
        log.info("%s/%s: %d record(s) (%d bytes)%s", summary.license, summary.resource,
                 result.records, result.nbytes,
                 "" if summary.cursor is None else f", cursor {summary.cursor}",
                 extra={"license": summary.license, "resource": summary.resource,
                        "records": result.records, "bytes": result.nbytes,
                        "cursor": summary.cursor, "requests": summary.requests})

    def finished(self, summary: Summary) -> None:
        c = summary.counts
        log.info("%s/%s: %s%s", summary.license, summary.resource, summary.status,
                 f" ({summary.note})" if summary.note else "",
                 extra={"license": summary.license, "resource": summary.resource,
                        "status": summary.status, "requests": summary.requests,
                        "inserted": c.inserted, "updated": c.updated, "unchanged": c.unchanged,
                        "deleted": c.deleted, "quarantined": c.quarantined,
                        "cursor": summary.cursor, "outcome": summary.outcome,
                        "exit_code": summary.exit_code})


class Stop(Exception):
    """Stop the whole license: the budget or the API said so."""

    def __init__(self, message: str, exit_code: int, outcome: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.outcome = outcome


INTERRUPTED = EXIT_INTERRUPTED
INTERRUPTED_NOTE = "interrupted; what was committed stays, run again to continue"


class Backfill:
    """Backfill one license, through its runtime (purpose `backfill`)."""

    def __init__(self, runtime: Runtime, *, since: dt.date | None = None,
                 reporter: Reporter | None = None) -> None:
        self.engine = runtime.engine
        self.runtime = runtime
        self.config = runtime.config
        self.license = runtime.license
        self.clock = runtime.clock
        self.since = since
        self.reporter = reporter or Reporter()

    def run(self, resources: Sequence[Resource]) -> tuple[list[Summary], int]:
        """Backfill these resources; returns the summaries and the exit code (the worst
        outcome's, see `outcomes`; 130 after Ctrl-C)."""
        summaries: list[Summary] = []
        exit_code = outcomes.EXIT_OK
        stop: Stop | None = None
        ledger = self.runtime.ledger
        self.progress = BackfillProgress(self.engine, self.license.name,
                                         self.clock().astimezone(self.config.api.tz).date(),
                                         [r.name for r in resources])
        for resource in resources:
            summary = Summary(self.license.name, resource.name)
            summaries.append(summary)
            if stop is not None:
                summary.status, summary.note = "stopped", str(stop)
                summary.outcome, summary.exit_code = stop.outcome, stop.exit_code
                continue
            self.reporter.started(summary)
            sent = None
            try:
                with ledger.for_job(resource.name) as sent:
                    failed = self.runtime.attempt(resource.name, self._pull, resource, summary)
            except KeyboardInterrupt:
                # Ctrl-C: the page in hand rolled back with its transaction; every cursor
                # is where its last commit left it, so a rerun continues from there.
                stop = Stop(INTERRUPTED_NOTE, INTERRUPTED, "interrupted")
                summary.status, summary.note = "stopped", str(stop)
                summary.outcome, summary.exit_code = stop.outcome, stop.exit_code
                exit_code = INTERRUPTED
            else:
                if failed is None:
                    summary.status = "done"
                else:
                    exit_code = max(exit_code, failed.meaning.exit_code)
                    summary.note = failed.note
                    summary.outcome = failed.meaning.name
                    summary.exit_code = failed.meaning.exit_code
                    scope = failed.meaning.scope
                    if scope is Scope.LICENSE:
                        stop = Stop(failed.note, failed.meaning.exit_code, failed.meaning.name)
                    summary.status = {Scope.LICENSE: "stopped",
                                      Scope.RESOURCE: "skipped"}.get(scope, "failed")
            finally:
                summary.requests = 0 if sent is None else sent.sent
            self.reporter.finished(summary)
        if exit_code == outcomes.EXIT_OK:
            self.progress.finished()
            # Every history is in: audit what is stored now (the status shows it).
            audit.after_loading(self.engine, self.config, self.license.name, self.clock)
        spent = self.runtime.sync.timings
        log.info("%s: time in HTTP + JSON %.2f s, parsing to rows %.2f s, database %.2f s",
                 self.license.name, spent["http_json"], spent["parse"], spent["database"])
        return summaries, exit_code

    def _pull(self, resource: Resource, summary: Summary) -> None:
        """The resource to its end: the full list (once a day), or every id window past
        the cursor."""
        full = resource.pull is Pull.FULL_LIST
        if full and resource.name in self.progress.lists:
            summary.note = "stored earlier today by this backfill"
            return
        cursor = 0 if full else self.runtime.sync.cursor(resource)[0]
        if cursor > 0 and self.since is not None:
            log.warning("%s: --since %s does not apply: it continues from its cursor (id %d)",
                        resource.name, self.since, cursor)
        if cursor == 0 and self.since is not None and "date" in resource.filters:
            today = self.clock().astimezone(self.config.api.tz).date()
            self.runtime.sync.start_history(resource, self.since, today)
        walk = self.runtime.walk(resource, probes=START_PROBES)
        summary.cursor = walk.cursor
        while True:
            step = walk.step()
            summary.counts += step.result.counts
            if step.result.max_id is not None or full:
                summary.cursor = walk.cursor
                self.reporter.advanced(summary, step.result)
            if step.done:
                break
        if full:
            self.progress.stored(resource.name)
        else:  # its history is in: no longer catching up (as the daemon would have said)
            self.runtime.sync.save(resource, **CAUGHT_UP)
