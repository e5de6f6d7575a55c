"""The jobs of `syncer run`, each declared once: what it pulls, how, and its planner spec.

The planner's defaults (`DEFAULT_JOBS`), the daemon's dispatch and `syncer status`
all read this registry. A job is one resource's own pull (its full list, or one id
window past its cursor), or one of the bounded re-scans for late changes (design
rule 3): `orders_recheck` and `invoices_recheck` re-pull today and yesterday by
`date`; `coupons_rescan` walks the stored coupon ids one window per run, from its
own position (`sync_state.rescan_position`), so that `used` changes arrive.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table

from syncer import resources as res
from syncer import tables as t
from syncer.planner import JobSpec, hours, minutes


class Kind(enum.Enum):
    OWN = "own"  # the resource's own pull: a full list, or one id window past the cursor
    RECHECK = "recheck"  # today and yesterday again, by `date` (two requests)
    RESCAN = "rescan"  # one window of stored ids again, from the job's own position


@dataclass(frozen=True)
class Job:
    resource: res.Resource
    kind: Kind
    spec: JobSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def table(self) -> Table | None:
        """The table whose rows this job owns (None for a re-scan: its resource's job owns it)."""
        return self.resource.table if self.kind is Kind.OWN else None

    @property
    def history(self) -> bool:
        """It walks a history by id windows (orders, invoices, coupons): it has a history
        to catch up on before its data is whole."""
        return self.kind is Kind.OWN and self.resource.pull is res.Pull.ID_WINDOW


# The day each stored record of a history belongs to: orders and invoices carry their
# time, so how far a history has come is how far its days have (coupons carry none).
HISTORY_DAY: dict[str, Column[Any]] = {"orders": t.orders.c.business_date,
                                       "invoices": t.invoices.c.invoice_date}
def loading(job: Job, last_success_at: dt.datetime | None,
            catching_up_since: dt.datetime | None) -> bool:
    """Whether the job's history is not in yet: a history job that never succeeded, or
    is catching up (the audit waits for it; the status says so)."""
    return job.history and (last_success_at is None or catching_up_since is not None)


# A history job's catch-up columns in sync_state as they are once its history is in.
CAUGHT_UP: dict[str, Any] = {"catching_up_since": None, "catch_up_from_day": None,
                             "history_first_day": None, "history_reached_day": None}


def _job(resource: res.Resource, kind: Kind, weight: float, min_interval: dt.timedelta,
         max_interval: dt.timedelta, closed_weight: float = 0.0,
         closed_max_interval: dt.timedelta | None = None, *, follows_sales: bool = False,
         watches_shoulders: bool = False, rests_when_quiet: bool = False) -> Job:
    name = resource.name if kind is Kind.OWN else f"{resource.name}_{kind.value}"
    cost = 2 if kind is Kind.RECHECK else 1  # requests per run
    return Job(resource, kind, JobSpec(name, weight, min_interval, max_interval, closed_weight,
                                       closed_max_interval, cost, follows_sales, watches_shoulders,
                                       rests_when_quiet))


OWN, RECHECK, RESCAN = Kind.OWN, Kind.RECHECK, Kind.RESCAN

# Defaults for a typical restaurant on 500 requests a day: orders every few minutes
# while open, tables and credits often, the catalog a few times a day, almost nothing
# at night. Columns: weight (share while open), interval bounds while open, weight and
# longest interval while closed (see planner.JobSpec). The orders follow the shop's
# sales: their share of the open time goes where its orders are expected. Open tables,
# charge-card credits and invoices change while guests are in: in the quiet hours they
# rest at their longest interval and the orders get what that leaves.
JOBS: tuple[Job, ...] = (
    _job(res.ORDERS, OWN, 10.0, minutes(1), minutes(15), 0.3, hours(2), follows_sales=True,
         watches_shoulders=True),
    _job(res.POS_TABLES, OWN, 3.0, minutes(2), minutes(30), rests_when_quiet=True),
    _job(res.CUSTOMER_CREDITS, OWN, 1.0, minutes(5), hours(2), rests_when_quiet=True),
    _job(res.INVOICES, OWN, 0.8, minutes(5), hours(2), 0.05, hours(8), rests_when_quiet=True),
    _job(res.ORDERS, RECHECK, 0.4, minutes(30), hours(4), 0.1, hours(12), follows_sales=True),
    _job(res.COUPONS, OWN, 0.4, minutes(10), hours(4)),
    _job(res.CUSTOMERS, OWN, 0.3, minutes(15), hours(4), 0.02, hours(24)),
    _job(res.PRODUCTS, OWN, 0.5, minutes(15), hours(4), 0.02, hours(24)),
    _job(res.SUBPRODUCTS, OWN, 0.15, minutes(30), hours(6), 0.01, hours(24)),
    _job(res.GIFT_VOUCHERS, OWN, 0.15, minutes(30), hours(6), 0.01, hours(24)),
    _job(res.INVOICES, RECHECK, 0.1, hours(1), hours(12), 0.05, hours(24)),
    _job(res.COUPONS, RESCAN, 0.1, hours(1), hours(12)),
    _job(res.CATEGORIES, OWN, 0.05, hours(2), hours(12), 0.01, hours(24)),
    _job(res.USERS, OWN, 0.05, hours(2), hours(12), 0.01, hours(24)),
    _job(res.PAYMENT_METHODS, OWN, 0.05, hours(2), hours(12), 0.01, hours(24)),
    _job(res.PRINTERS, OWN, 0.05, hours(2), hours(12), 0.01, hours(24)),
)
BY_NAME: dict[str, Job] = {job.name: job for job in JOBS}
DEFAULT_JOBS: tuple[JobSpec, ...] = tuple(job.spec for job in JOBS)
# Resources whose late changes a day re-check brings (no look-ahead needed past a gap).
RECHECKED: frozenset[str] = frozenset(j.resource.name for j in JOBS if j.kind is RECHECK)

if {j.resource.name for j in JOBS if j.kind is OWN} != set(res.BY_NAME):
    raise ValueError("every resource needs exactly one job of its own in jobs.JOBS")


def listed() -> list[Job]:
    """The jobs in the order people read them: each resource's own job in resource order,
    then the re-checks and re-scans."""
    order = {r.name: i for i, r in enumerate(res.RESOURCES)}
    return sorted(JOBS, key=lambda j: (j.kind is not OWN, order[j.resource.name]))
