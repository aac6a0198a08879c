"""Invalid deltas and reports (SPEC §5): the bad client is rejected with a reason, the round goes on."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fgrpo_core.errors import QuorumError
from fgrpo_core.types import Adapter
from tests.faults.shared import (
    Round1,
    assert_equals_the_honest_rest,
    replace_update,
    row_of,
)

pytestmark = [pytest.mark.slow]


# --- invalid deltas: rejected with a reason, the round goes on -----------------------------------


def _nan(delta: Adapter) -> Adapter:
    key = sorted(delta)[0]
    bad = {k: v.clone() for k, v in delta.items()}
    bad[key].view(-1)[0] = float("nan")
    return bad


def _wrong_shape(delta: Adapter) -> Adapter:
    key = sorted(delta)[1]
    return {**delta, key: torch.zeros(delta[key].shape[0] + 1, *delta[key].shape[1:])}


def _missing_key(delta: Adapter) -> Adapter:
    return {k: v for k, v in delta.items() if k != sorted(delta)[-1]}


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [(_nan, "non_finite"), (_wrong_shape, "shape"), (_missing_key, "missing_key")],
    ids=["nan-delta", "wrong-shape", "missing-key"],
)
def test_invalid_delta_is_rejected_and_the_round_is_the_honest_rest(
    round1: Round1, corrupt: Callable[[Adapter], Adapter], reason: str
) -> None:
    # Prepare: owner-c's delta is broken.
    updates = replace_update(round1, "owner-c", delta=corrupt(round1.honest["owner-c"].delta))
    # Execute
    outcome = round1.aggregate(updates)
    # Assert: rejected with its reason code and the tensor named; the round is the others' round.
    row = row_of(outcome, "owner-c")
    assert row.reason.startswith(f"{reason}: ") and "lora" in row.reason
    assert_equals_the_honest_rest(round1, outcome, "owner-c")


def test_replayed_stats_of_an_earlier_round_are_rejected(round1: Round1) -> None:
    # Prepare: owner-b re-sends its round-0 report (and delta) in round 1.
    updates = replace_update(round1, "owner-b", round=0)
    # Execute
    outcome = round1.aggregate(updates)
    # Assert
    assert row_of(outcome, "owner-b").reason.startswith("manifest: ")
    assert "replay" in row_of(outcome, "owner-b").reason
    assert_equals_the_honest_rest(round1, outcome, "owner-b")


def test_non_finite_reported_stats_reject_the_client_not_the_round(round1: Round1) -> None:
    # Prepare: owner-a's evaluation diverged; its report says r_post = NaN.
    updates = replace_update(round1, "owner-a", r_post=float("nan"))
    # Execute
    outcome = round1.aggregate(updates)
    # Assert
    assert row_of(outcome, "owner-a").reason.startswith("stats: ")
    assert_equals_the_honest_rest(round1, outcome, "owner-a")


def test_below_quorum_raises_listing_every_client_and_why(round1: Round1) -> None:
    # Prepare: two of three deltas are bad and the round needs two.
    updates = replace_update(round1, "owner-a", delta=_nan(round1.honest["owner-a"].delta))
    failed = {"owner-c": "client failed: RuntimeError: boom"}
    del updates["owner-c"]
    # Execute / Assert
    with pytest.raises(QuorumError) as err:
        round1.aggregate(updates, failed=failed)
    message = str(err.value)
    assert "1 valid delta(s) ['owner-b']" in message and "federation.min_clients is 2" in message
    assert "owner-a: non_finite" in message and "owner-c: client failed: RuntimeError: boom" in message
    assert "previous global adapter stays" in message
