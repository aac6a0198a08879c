"""Downloads in the configured encoding (fgrpo_core/downlink.py): every reader holds the same theta_t."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fgrpo_core.deltas import encode, sha256_hex
from fgrpo_core.downlink import apply_step, encoded_step
from fgrpo_core.errors import DeltaValidationError
from fgrpo_core.types import Adapter
from fgrpo_io import exchange
from fgrpo_io.objects import Identity
from fgrpo_io.store import LocalStore
from tests.aggregation_helpers import Q_A, make_adapter

IDENT = Identity("fgrpo", "downlink", "tiny", "main", "0" * 64)


def _round(seed: int) -> tuple[Adapter, Adapter]:
    """theta_{t-1} and a candidate one small step away, at a size where headers do not dominate."""
    parent = make_adapter(seed, rank=8, hidden=2048)
    step = make_adapter(seed + 1, rank=8, hidden=2048)
    return parent, {k: parent[k] + 1e-3 * step[k] for k in parent}


@pytest.mark.parametrize("encoding", ["int8", "bfloat16"])
def test_theta_t_is_the_decoded_step_and_close_to_the_candidate(encoding: str) -> None:
    # Prepare
    parent, candidate = _round(0)
    # Execute
    theta, data = encoded_step(parent, candidate, encoding)  # type: ignore[arg-type]
    # Assert: an owner's add on the same bytes gives the same bits
    again = apply_step(parent, data)
    assert all(torch.equal(theta[k], again[k]) for k in parent)
    for key in parent:
        step = candidate[key] - parent[key]
        tolerance = float(step.abs().max()) * (1 / 254 if encoding == "int8" else 2**-8) * 1.01
        assert float((theta[key] - candidate[key]).abs().max()) <= tolerance + 1e-7


def test_int8_step_is_a_quarter_of_the_float32_adapter() -> None:
    # Prepare
    parent, candidate = _round(3)
    # Execute
    _, data = encoded_step(parent, candidate, "int8")
    # Assert
    assert len(data) <= 0.26 * len(encode(candidate, "float32"))


def test_a_step_for_another_layout_is_refused() -> None:
    # Prepare
    parent, candidate = _round(5)
    _, data = encoded_step(parent, candidate, "int8")
    other = {k: v for k, v in parent.items() if k != Q_A}
    # Execute / Assert
    with pytest.raises(DeltaValidationError, match="another global adapter"):
        apply_step(other, data)


def _publish(store: LocalStore) -> tuple[Adapter, Adapter]:
    """theta_0 in float32 and round 1 as the coordinator writes it (tasks/aggregate.py)."""
    parent, candidate = _round(7)
    head = exchange.write_global_adapter(store, IDENT, 0, parent)
    exchange.write_global_manifest(store, IDENT, 0, head, clients=[], strategy="init")
    theta, data = encoded_step(parent, candidate, "int8")
    step = exchange.write_global_step(store, IDENT, 1, (head[0], head[1]), data, "int8")
    written = exchange.write_global_adapter(store, IDENT, 1, theta)
    exchange.write_global_manifest(store, IDENT, 1, written, ["a"], "fgrpo", step=step)
    return parent, theta


def test_an_owner_holding_theta_0_downloads_only_the_step(tmp_path: Path) -> None:
    # Prepare: the owner is another process: nothing of the coordinator's cache
    store = LocalStore(tmp_path)
    _, theta = _publish(store)
    exchange.forget_cached_globals()
    exchange.read_global(store, IDENT, 0)
    before = exchange.downloaded_global_bytes
    # Execute
    owner = exchange.read_global(store, IDENT, 1)
    downloaded = exchange.downloaded_global_bytes - before
    # Assert: the step's bytes only, and bit for bit the float32 theta_1 under the manifest's sha256
    manifest = exchange.read_global_manifest(store, IDENT, 1)
    assert manifest.step is not None and downloaded == manifest.step.nbytes
    assert downloaded <= 0.26 * manifest.nbytes
    assert all(torch.equal(owner[k], theta[k]) for k in theta)
    assert sha256_hex(encode(owner, "float32")) == manifest.sha256


def test_a_reader_without_theta_0_reads_the_float32_adapter(tmp_path: Path) -> None:
    # Prepare
    store = LocalStore(tmp_path)
    _, theta = _publish(store)
    exchange.forget_cached_globals()
    before = exchange.downloaded_global_bytes
    # Execute
    cold = exchange.read_global(store, IDENT, 1)
    # Assert
    manifest = exchange.read_global_manifest(store, IDENT, 1)
    assert exchange.downloaded_global_bytes - before == manifest.nbytes
    assert all(torch.equal(cold[k], theta[k]) for k in theta)
