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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from sqlalchemy import Engine

from syncer.client import (
    AuthRejected,
    CloudPosClient,
    CloudPosError,
    DailyLimitReached,
    IpBlocked,
    ModuleNotLicensed,
    RequestRefused,
    ResponseTimeout,
    Retriable,
)
from syncer.config import Config, LicenseConfig
from syncer.ledger import BudgetExhausted, Ledger, LicenseStopped, utcnow
from syncer.load import Counts
from syncer.resources import Pull, Resource
from syncer.resume import BackfillProgress
from syncer.sync import PullResult, Sync, adapt_window

log = logging.getLogger("syncer.backfill")

T = TypeVar("T")

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


INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from syncer.sync import parse_context  # noqa: PLC0415 - keeps import order one-way

        self.config = config
        self.license = license
        self.client = client
        self.ledger = ledger
        self.since = since
        self.reporter = reporter or Reporter()
        self.clock = clock
        self.sleep = sleep
        self.sync = Sync(engine, license.name, client, parse_context(config, license), clock,
                         keep_answers=config.archive.enabled)
        self.progress = BackfillProgress(engine, license.name,
                                         clock().astimezone(config.api.tz).date())

    def run(self, resources: Sequence[Resource]) -> tuple[list[Summary], int]:
        """Backfill these resources; returns the summaries and the exit code (0, 1, 3, or
        130 after Ctrl-C)."""
        summaries: list[Summary] = []
        exit_code = 0
        stop: Stop | None = None
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
                    result = self._call(partial(self.sync.pull_full_list, resource))
                    summary.counts += result.counts
                    self.reporter.advanced(summary, result)
                    self.progress.stored(resource.name)
                else:
                    self._windows(resource, summary)
                summary.status = "done"
            except Stop as exc:
                stop = exc
                summary.status, summary.note = "stopped", str(exc)
                exit_code = max(exit_code, exc.exit_code)
            except KeyboardInterrupt:
                # Ctrl-C: the page in hand rolled back with its transaction; every cursor
                # is where its last commit left it, so a rerun continues from there.
                stop = Stop(INTERRUPTED_NOTE, INTERRUPTED)
                summary.status, summary.note = "stopped", str(stop)
                exit_code = INTERRUPTED
            except ModuleNotLicensed as exc:
                summary.status, summary.note = "skipped", f"not licensed: {exc}"
                self.sync.record_error(resource, str(exc), disabled_reason=str(exc))
            except CloudPosError as exc:
                summary.status, summary.note = "failed", str(exc)
                self.sync.record_error(resource, str(exc))
                exit_code = 1
            finally:
                summary.requests = self.ledger.sent - before
            self.reporter.finished(summary)
        if exit_code == 0:
            self.progress.finished()
        spent = self.sync.timings
        log.info("%s: time in HTTP + JSON %.2f s, parsing to rows %.2f s, database %.2f s",
                 self.license.name, spent["http_json"], spent["parse"], spent["database"])
        return summaries, exit_code

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one pull, turning budget and license stops into `Stop`."""
        try:
            return fn()
        except BudgetExhausted as exc:
            raise Stop(str(exc), 3) from None
        except LicenseStopped as exc:
            raise Stop(str(exc), 3 if exc.until is not None else 1) from None
        except (DailyLimitReached, IpBlocked) as exc:
            raise Stop(str(exc), 3) from None
        except AuthRejected as exc:
            raise Stop(f"{exc}; the license is stopped until its credentials change", 1) from None
        except RequestRefused as exc:
            raise Stop(str(exc), 3) from None

    def _windows(self, resource: Resource, summary: Summary) -> None:
        cursor, window, lo, hi = self.sync.window_plan(resource, self.config.resource(resource.name))
        if cursor > 0 and self.since is not None:
            log.warning("%s: --since %s does not apply: it continues from its cursor (id %d)",
                        resource.name, self.since, cursor)
        if cursor == 0 and self.since is not None and resource.filters and "date" in resource.filters:
            today = self.clock().astimezone(self.config.api.tz).date()
            cursor = self._call(partial(self.sync.start_history, resource, self.since, today))
        summary.cursor = cursor
        probe = cursor  # where the next window starts; moves past empty space only while searching
        probes_left = START_PROBES if cursor == 0 else 0
        failures = 0
        while True:
            start, end = probe + 1, probe + window
            try:
                result = self._call(partial(self.sync.pull_window, resource, start, end,
                                            window=window, max_attempts=1))
            except ResponseTimeout:
                failures += 1
                if failures >= self.config.api.max_attempts:
                    raise
                window = max(lo, window // 2)
                log.warning("%s: ids %d-%d timed out; trying %d ids (try %d of %d)",
                            resource.name, start, end, window, failures + 1,
                            self.config.api.max_attempts)
                continue
            except Retriable as exc:
                failures += 1
                if failures >= self.config.api.max_attempts:
                    raise
                log.warning("%s: ids %d-%d failed (%s); again (try %d of %d)", resource.name,
                            start, end, type(exc).__name__, failures + 1, self.config.api.max_attempts)
                self.sleep(min(2.0**failures * 0.5, 8.0))
                continue
            failures = 0
            summary.counts += result.counts
            if result.max_id is None:
                if probes_left > 0 or self.sync.stored_past(resource, end):
                    # History may not start at id 1, or voided documents left a run of
                    # ids wider than the window before ones the daemon's day re-check
                    # stored: look further, with growing windows.
                    probes_left = max(probes_left - 1, 0)
                    probe = end
                    window = min(window * 2, hi)
                    continue
                break  # nothing past the cursor: up to date
            probes_left = 0
            if result.max_id <= probe:
                log.warning("%s: the API answered ids at or below %d for start=%d; stopping",
                            resource.name, result.max_id, start)
                break
            cursor = probe = result.max_id
            summary.cursor = cursor
            self.reporter.advanced(summary, result)
            window = adapt_window(window, result.nbytes, lo, hi)
