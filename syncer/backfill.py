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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from syncer import outcomes
from syncer.client import CloudPosClient, CloudPosError, RequestRefused
from syncer.config import Config, LicenseConfig
from syncer.ledger import Ledger, utcnow
from syncer.load import Counts
from syncer.outcomes import EXIT_INTERRUPTED, Scope
from syncer.resources import Pull, Resource
from syncer.resume import BackfillProgress
from syncer.sync import PullResult, Sync, WindowWalk, parse_context

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


class Reporter:
    """Progress output: plain log lines; the CLI swaps in a rich progress bar on a terminal."""

    def started(self, summary: Summary) -> None:
        log.info("%s/%s: started", summary.license, summary.resource)

    def advanced(self, summary: Summary, result: PullResult) -> None:
        log.info("%s/%s: %d records (%d bytes), cursor %s", summary.license, summary.resource,
                 result.records, result.nbytes, summary.cursor)

    def finished(self, summary: Summary) -> None:
        log.info("%s/%s: %s %s", summary.license, summary.resource, summary.status, summary.note)


class Stop(Exception):
    """Stop the whole license: the budget or the API said so."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


INTERRUPTED = EXIT_INTERRUPTED
INTERRUPTED_NOTE = "interrupted; what was committed stays, run again to continue"


class Backfill:
    """Backfill one license."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        license: LicenseConfig,
        client: CloudPosClient,
        ledger: Ledger,
        *,
        since: dt.date | None = None,
        reporter: Reporter | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.config = config
        self.license = license
        self.client = client
        self.ledger = ledger
        self.since = since
        self.reporter = reporter or Reporter()
        self.clock = clock
        self.sync = Sync(engine, license.name, client, parse_context(config, license), clock,
                         keep_answers=config.archive.enabled)
        self.engine = engine

    def run(self, resources: Sequence[Resource]) -> tuple[list[Summary], int]:
        """Backfill these resources; returns the summaries and the exit code (the worst
        outcome's, see `outcomes`; 130 after Ctrl-C)."""
        summaries: list[Summary] = []
        exit_code = outcomes.EXIT_OK
        stop: Stop | None = None
        self.progress = BackfillProgress(self.engine, self.license.name,
                                         self.clock().astimezone(self.config.api.tz).date(),
                                         [r.name for r in resources])
        for resource in resources:
            summary = Summary(self.license.name, resource.name)
            summaries.append(summary)
            if stop is not None:
                summary.status, summary.note = "stopped", str(stop)
                continue
            self.reporter.started(summary)
            before = self.ledger.sent
            try:
                if resource.pull is Pull.FULL_LIST and resource.name in self.progress.lists:
                    summary.note = "stored earlier today by this backfill"
                elif resource.pull is Pull.FULL_LIST:
                    result = self.sync.pull_full_list(resource)
                    summary.counts += result.counts
                    self.reporter.advanced(summary, result)
                    self.progress.stored(resource.name)
                else:
                    self._windows(resource, summary)
                summary.status = "done"
            except KeyboardInterrupt:
                # Ctrl-C: the page in hand rolled back with its transaction; every cursor
                # is where its last commit left it, so a rerun continues from there.
                stop = Stop(INTERRUPTED_NOTE, INTERRUPTED)
                summary.status, summary.note = "stopped", str(stop)
                exit_code = INTERRUPTED
            except (CloudPosError, RequestRefused) as exc:
                meaning = outcomes.of(exc)
                note = meaning.message(exc)
                exit_code = max(exit_code, meaning.exit_code)
                if meaning.scope is Scope.LICENSE:
                    stop = Stop(note, meaning.exit_code)
                    summary.status, summary.note = "stopped", note
                else:
                    summary.status = "skipped" if meaning.scope is Scope.RESOURCE else "failed"
                    summary.note = note
                    self.sync.record_error(resource, note, **(
                        {"disabled_reason": str(exc)} if meaning.scope is Scope.RESOURCE else {}))
            finally:
                summary.requests = self.ledger.sent - before
            self.reporter.finished(summary)
        if exit_code == outcomes.EXIT_OK:
            self.progress.finished()
        spent = self.sync.timings
        log.info("%s: time in HTTP + JSON %.2f s, parsing to rows %.2f s, database %.2f s",
                 self.license.name, spent["http_json"], spent["parse"], spent["database"])
        return summaries, exit_code

    def _windows(self, resource: Resource, summary: Summary) -> None:
        cursor, _ = self.sync.cursor(resource)
        if cursor > 0 and self.since is not None:
            log.warning("%s: --since %s does not apply: it continues from its cursor (id %d)",
                        resource.name, self.since, cursor)
        if cursor == 0 and self.since is not None and "date" in resource.filters:
            today = self.clock().astimezone(self.config.api.tz).date()
            self.sync.start_history(resource, self.since, today)
        walk = WindowWalk(self.sync, resource, self.config.resource(resource.name),
                          attempts=self.config.api.max_attempts, probes=START_PROBES)
        summary.cursor = walk.cursor
        while True:
            step = walk.step()
            summary.counts += step.result.counts
            if step.done:
                return
            if step.result.max_id is not None:
                summary.cursor = walk.cursor
                self.reporter.advanced(summary, step.result)
