"""The coordinator's lease on its experiment: taken first, renewed each round, released at the end."""

from __future__ import annotations

from prefect import task

from fgrpo_core.config import ExperimentConfig
from fgrpo_io import lease
from fgrpo_io.ledger import Ledger
from fgrpo_io.timing import timed
from tasks.retry import is_transient


def lease_ttl_s(cfg: ExperimentConfig) -> float:
    """Long enough for a round's wait plus its aggregation; a live coordinator renews every round."""
    return max(3600.0, cfg.federation.round_timeout_s + 900.0)


@task(name="take-lease", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
@timed("store_io_s")
def take_lease_task(cfg: ExperimentConfig) -> lease.Lease:
    """Take the experiment's lease; a second coordinator fails here, before it writes anything."""
    ledger = Ledger(cfg)
    return lease.take(ledger.store, ledger.ident, lease_ttl_s(cfg))


@task(
    name="renew-lease",
    task_run_name="renew-lease-{round_idx}",
    retries=2,
    retry_condition_fn=is_transient,
    retry_delay_seconds=2,
)
@timed("store_io_s")
def renew_lease_task(cfg: ExperimentConfig, held: lease.Lease, round_idx: int) -> lease.Lease:
    """Renew before round t; fails (LeaseLostError) if another coordinator took the experiment over."""
    ledger = Ledger(cfg)
    return lease.renew(ledger.store, ledger.ident, held, lease_ttl_s(cfg))


@task(name="release-lease", retries=2, retry_condition_fn=is_transient, retry_delay_seconds=2)
@timed("store_io_s")
def release_lease_task(cfg: ExperimentConfig, held: lease.Lease) -> None:
    ledger = Ledger(cfg)
    lease.release(ledger.store, ledger.ident, held)
