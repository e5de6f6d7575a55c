"""Wiring for one license: its ledger (the door) and its client."""

from __future__ import annotations

from sqlalchemy import Engine

from syncer.client import CloudPosClient
from syncer.config import Config, LicenseConfig
from syncer.ledger import MAY_USE_RESERVE, Clock, Ledger, utcnow


def make_ledger(
    engine: Engine,
    config: Config,
    license: LicenseConfig,
    *,
    purpose: str,
    max_requests: int | None = None,
    clock: Clock = utcnow,
) -> Ledger:
    """The door for `purpose`: scheduled work and backfills keep the reserve; `call` and
    `check` may use it."""
    cap = config.cap(license, may_use_reserve=purpose in MAY_USE_RESERVE)
    return Ledger(engine, license.name, fingerprint=license.fingerprint(), tz=config.api.tz,
                  cap=cap, purpose=purpose, max_requests=max_requests, clock=clock)


def make_client(config: Config, license: LicenseConfig, ledger: Ledger) -> CloudPosClient:
    """The license's client; every request passes `ledger` (rule 1: nothing is sent
    that the ledger did not count first)."""
    return CloudPosClient(
        config.api.base_url,
        license.name,
        license.resolved_token(),
        tz=config.api.tz,
        timeout=config.api.timeout_seconds,
        max_attempts=config.api.max_attempts,
        door=ledger,
    )
