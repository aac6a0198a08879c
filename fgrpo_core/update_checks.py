"""The coordinator's checks of what one owner delivers (SPEC §5), each made once per path.

An owner's update is a ``ClientManifest`` (identity, delta reference, size, stats) and the delta it
points at. Two checks, one per object, nothing checked twice:

- ``check_envelope``: the manifest's identity, key, encoding and size, against what the
  coordinator expects for that owner and round, before a byte of the delta is read (a 256 MiB
  delta claiming 10 bytes is refused from its manifest and its object size alone).
- ``check_update``: the reported stats (round and owner, finiteness, bounds, the enrolment figure)
  and the delta's layout and finiteness, in one pass; the bare loop and the pipeline both go
  through it (``federation.aggregate_round``).

Everything in a manifest is a claim: a bad claim rejects that owner, never the round. Pure.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from fgrpo_core.deltas import Encoding, encode, validate_delta
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.manifest import ClientManifest
from fgrpo_core.types import Adapter, ClientStats

# Counts an honest owner never comes near; anything above is refused before it is used as a number.
MAX_COUNT = 10**9


@dataclass(frozen=True)
class Expected:
    """What the coordinator expects of owner ``client_id``'s manifest for round ``round``."""

    experiment: str
    round: int
    client_id: str
    base_model_id: str
    base_revision: str
    adapter_config_hash: str
    delta_key: str
    encoding: str
    nbytes: int  # the exact encoded size of a delta of the global adapter's layout


def check_envelope(m: ClientManifest, expected: Expected) -> None:
    """Raise DeltaValidationError(reason "manifest" or "size") unless the manifest is the expected one."""
    # (field, value found, value expected, what a mismatch usually means)
    checks: list[tuple[str, object, object, str]] = [
        ("experiment", m.experiment, expected.experiment, "a delta from another experiment"),
        ("round", m.round, expected.round, "a replay of another round, or a late delta"),
        ("client_id", m.client_id, expected.client_id, "a delta that claims to be another client's"),
        ("base_model_id", m.base_model_id, expected.base_model_id, "trained on another base model"),
        ("base_revision", m.base_revision, expected.base_revision, "trained on another base revision"),
        (
            "adapter_config_hash",
            m.adapter_config_hash,
            expected.adapter_config_hash,
            "trained with another LoRA configuration",
        ),
        ("delta_key", m.delta_key, expected.delta_key, "a delta outside its owner's own prefix"),
        ("encoding", m.encoding, expected.encoding, "encoded otherwise than federation.delta_dtype"),
    ]
    for field, found, want, meaning in checks:
        if found != want:
            raise DeltaValidationError(
                "manifest",
                f"client {expected.client_id}: manifest field '{field}' is {found!r} but {want!r} was "
                f"expected ({meaning}); the client must upload a delta for the current global adapter",
            )
    if m.nbytes != expected.nbytes:
        raise DeltaValidationError(
            "size",
            f"client {expected.client_id}: manifest claims {m.nbytes} bytes, a {expected.encoding} "
            f"delta of this adapter has exactly {expected.nbytes}; nothing of it was read",
        )


def check_stats(client_id: str, stats: ClientStats, round_idx: int, enrolled_n: int) -> None:
    """Refuse a report of another round or owner, or one whose numbers cannot be weighted.

    ``enrolled_n`` is the coordinator's own figure for the owner (its config's ``n_train``): a
    claimed ``n_k`` above it would buy weight under FedAvg and FGRPO alike.
    """
    if stats.round != round_idx or stats.client_id != client_id:
        raise DeltaValidationError(
            "manifest",
            f"client {client_id!r} reported stats of client {stats.client_id!r} for round "
            f"{stats.round}, but this is round {round_idx} (a replay or a late delta); the client "
            "must train from the current global adapter",
        )
    counts = {
        "n_k": stats.n_k,
        "m": stats.m,
        "steps": stats.steps,
        "tokens_generated": stats.tokens_generated,
    }
    huge = sorted(name for name, value in counts.items() if value > MAX_COUNT)
    if huge:
        raise DeltaValidationError(
            "stats", f"client {client_id!r} reported absurd counts {huge} (> {MAX_COUNT:.0e})"
        )
    if stats.n_k > enrolled_n:
        raise DeltaValidationError(
            "stats",
            f"client {client_id!r} claims n_k={stats.n_k} training prompts, but it is enrolled with "
            f"{enrolled_n} (clients[].n_train); n_k may not exceed the coordinator's enrolment figure",
        )
    scalars = {
        "r_pre": stats.r_pre,
        "r_post": stats.r_post,
        "sigma": stats.sigma,
        "sigma_diff": stats.sigma_diff,
        "reward_lo": stats.reward_lo,
        "reward_hi": stats.reward_hi,
        "wall_time_s": stats.wall_time_s,
        "train_reward_mean": stats.train_reward_mean,
    }
    bad = sorted(name for name, value in scalars.items() if not math.isfinite(value))
    if bad:
        raise DeltaValidationError(
            "stats", f"client {client_id!r} reported non-finite {bad}: its evaluation diverged"
        )
    if stats.reward_hi <= stats.reward_lo:
        raise DeltaValidationError(
            "stats",
            f"client {client_id!r} reported the reward range [{stats.reward_lo}, {stats.reward_hi}]: "
            "reward_hi must exceed reward_lo (report its task family's range)",
        )


def check_update(
    client_id: str,
    stats: ClientStats,
    delta: Adapter,
    global_adapter: Adapter,
    round_idx: int,
    enrolled_n: int,
) -> None:
    """The content of one owner's update: its stats, then its delta's layout and finiteness."""
    check_stats(client_id, stats, round_idx, enrolled_n)
    validate_delta(delta, global_adapter)


@functools.lru_cache(maxsize=8)
def _encoded_nbytes(signature: tuple[tuple[str, tuple[int, ...]], ...], encoding: Encoding) -> int:
    return len(encode({k: torch.zeros(shape) for k, shape in signature}, encoding))


def expected_delta_nbytes(global_adapter: Adapter, encoding: Encoding) -> int:
    """The exact size of a delta of this layout in this encoding (the header does not depend on values)."""
    signature = tuple((k, tuple(global_adapter[k].shape)) for k in sorted(global_adapter))
    return _encoded_nbytes(signature, encoding)
