"""`fgrpo rollback CONFIG --to-round T`: make an earlier committed global the head again.

Takes the experiment's lease (no coordinator may be running) and checks the config pin, then
writes the rollback as the next round in the store (``fgrpo_io/rollback.py``) and moves the
registry's `champion` alias to the restored round's version, with a tag saying why.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fgrpo_app.cli_common import ConfigArgument, ConfigOption, config_path, fail, load_or_fail
from fgrpo_core.errors import FgrpoError
from fgrpo_io.environment import apply_defaults


def rollback(
    to_round: Annotated[
        int, typer.Option("--to-round", min=0, help="The committed round to restore (0: theta_0).")
    ],
    config: ConfigArgument = None,
    config_opt: ConfigOption = None,
    reason: Annotated[str, typer.Option(help="Why, recorded with the rollback.")] = "",
) -> None:
    """Restore round T's global adapter as the head (recorded as a new round; nothing is deleted)."""
    cfg = load_or_fail(config_path(config, config_opt, "rollback"))
    apply_defaults()
    from fgrpo_io import lease, pin
    from fgrpo_io.ledger import Ledger
    from fgrpo_io.registry import record_rollback, registered_name, round_version_by_tag
    from fgrpo_io.rollback import rollback as write_rollback

    ledger = Ledger(cfg)
    try:
        held = lease.take(ledger.store, ledger.ident, ttl_s=600.0)
        try:
            pin.pin_or_check(ledger.store, cfg)
            result = write_rollback(ledger, to_round, reason)
            champion = None
            if cfg.tracking.enabled:
                client, name = ledger.tracker.client, registered_name(cfg)
                champion = round_version_by_tag(client, name, cfg.name, to_round) if to_round else None
                record_rollback(client, name, result.round, to_round, champion, reason)
        finally:
            lease.release(ledger.store, ledger.ident, held)
    except FgrpoError as err:
        fail(f"{type(err).__name__}: {err}", code=1)
    typer.echo(
        f"{cfg.name}: round {result.round} restores round {to_round}'s global adapter "
        f"(macro accuracy {result.macro_accuracy:.3f}); champion: "
        + (f"version {champion}" if champion else "none")
    )
    typer.echo(
        f"the next `fgrpo run` trains round {result.round + 1} from it "
        f"(raise federation.rounds above {result.round} to train further)"
    )
