"""The store under attack (SPEC §3): sha256, replays, identity, idempotent writes, through the aggregate task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import QuorumError
from fgrpo_core.manifest import sha256_hex
from fgrpo_core.models import set_adapter
from fgrpo_core.types import EvalSummary, ServerState
from fgrpo_io import exchange, layout
from fgrpo_io.exchange import ConflictError
from fgrpo_io.ledger import Ledger
from fgrpo_io.s3_store import S3Store
from fgrpo_io.store import LocalStore, ObjectStore, get_json, put_json
from tests.faults.shared import (
    CLIENTS,
    Round1,
    same_adapter,
)

pytestmark = [pytest.mark.slow]


# --- the store: sha256, replays, identity, idempotent writes (through the aggregate task) --------


@dataclass
class StoreRound:
    cfg: ExperimentConfig
    store: LocalStore
    ident: exchange.Identity


def _store_round(round1: Round1, root: Path, **sections: dict[str, Any]) -> StoreRound:
    """theta_0 committed and the three honest round-1 deltas uploaded, in a fresh local store."""
    cfg = round1.config(store={"root": str(root)}, **sections)
    store = LocalStore(root)
    ident = exchange.identity(cfg)
    written = exchange.write_global_adapter(store, ident, 0, round1.theta0)
    exchange.write_global_manifest(store, ident, 0, written, clients=[], strategy="init")
    exchange.write_state(store, ident, ServerState(round=0, global_key=written[0]))
    # The commit gate compares with theta_0's stored evaluation (no drop limit configured here).
    key = layout.initial_evaluation_key(ident.prefix, ident.experiment)
    put_json(store, key, EvalSummary(families={}, macro_accuracy=0.0).model_dump(mode="json"))
    for cid in CLIENTS:
        update = round1.honest[cid]
        exchange.write_client_delta(store, ident, 1, update.delta, update.stats, "float32")
    return StoreRound(cfg, store, ident)


def _aggregate_task(sr: StoreRound, t: int = 1, delivered: tuple[str, ...] = CLIENTS) -> dict[str, Any]:
    """The coordinator's aggregate and commit tasks for round t (the evaluation is not the point)."""
    from tasks.aggregate import aggregate_task, commit_task

    candidate = aggregate_task.fn(sr.cfg, t, list(delivered), {})
    evaluation = EvalSummary(families={}, macro_accuracy=0.0)
    return commit_task.fn(sr.cfg, candidate, evaluation).model_dump()


def _snapshot(store: LocalStore) -> dict[str, str]:
    return {
        p.relative_to(store.root).as_posix(): sha256_hex(p.read_bytes())
        for p in sorted(store.root.rglob("*"))
        if p.is_file()
    }


def test_bytes_corrupted_in_the_store_fail_the_sha256_check(round1: Round1, tmp_path: Path) -> None:
    # Prepare: one byte of owner-a's committed delta flips on disk.
    sr = _store_round(round1, tmp_path / "store")
    path = sr.store.root / layout.client_delta_key(sr.ident.prefix, sr.ident.experiment, "owner-a", 1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    # Execute
    result = _aggregate_task(sr)
    # Assert: recorded as a sha256 mismatch naming the object; the committed global is the others'.
    row = next(r for r in result["rows"] if r["client_id"] == "owner-a")
    assert not row["accepted"] and row["weight"] == 0.0 and row["reason"].startswith("sha256: ")
    assert "delta.safetensors" in row["reason"] and "upload it again" in row["reason"]
    committed = exchange.read_global(sr.store, sr.ident, 1)
    assert same_adapter(committed, round1.without("owner-a").adapter)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("experiment", "other-experiment"), ("base_model_id", "another-base-model"), ("round", 0)],
    ids=["other-experiment", "other-base-model", "replay-of-round-0"],
)
def test_manifest_of_another_experiment_model_or_round_is_rejected(
    round1: Round1, tmp_path: Path, field_name: str, value: Any
) -> None:
    # Prepare: owner-c's manifest (with its stats, consistently) claims another identity; the
    # owner may write its own prefix, so nothing but the manifest check stands in the way.
    sr = _store_round(round1, tmp_path / "store")
    mkey = layout.client_manifest_key(sr.ident.prefix, sr.ident.experiment, "owner-c", 1)
    manifest = get_json(sr.store, mkey)
    manifest[field_name] = value
    if field_name == "round":
        manifest["stats"]["round"] = value
    sr.store.put_bytes(mkey, json.dumps(manifest).encode(), overwrite=True)
    # Execute
    result = _aggregate_task(sr)
    # Assert
    row = next(r for r in result["rows"] if r["client_id"] == "owner-c")
    assert not row["accepted"] and row["reason"].startswith("manifest: client owner-c: manifest field")
    assert f"manifest field '{field_name}'" in row["reason"]
    assert same_adapter(exchange.read_global(sr.store, sr.ident, 1), round1.without("owner-c").adapter)


def test_replayed_round_1_upload_in_round_2_is_rejected(round1: Round1, tmp_path: Path) -> None:
    # Prepare: round 1 committed; in round 2 owners a and b upload, owner-c copies its round-1
    # delta and manifest byte for byte under its round-2 keys (a replay).
    sr = _store_round(round1, tmp_path / "store")
    _aggregate_task(sr, 1)
    for cid in ("owner-a", "owner-b"):
        update = round1.honest[cid]
        exchange.write_client_delta(
            sr.store, sr.ident, 2, update.delta, update.stats.model_copy(update={"round": 2}), "float32"
        )
    for name in ("delta.safetensors", "manifest.json"):
        old = layout.client_prefix(sr.ident.prefix, sr.ident.experiment, "owner-c") + f"round-0001/{name}"
        sr.store.put_bytes(old.replace("round-0001", "round-0002"), sr.store.get_bytes(old))
    # Execute
    result = _aggregate_task(sr, 2)
    # Assert
    row = next(r for r in result["rows"] if r["client_id"] == "owner-c")
    assert not row["accepted"] and row["weight"] == 0.0
    assert "field 'round' is 1 but 2 was expected (a replay" in row["reason"]
    assert exchange.read_global_manifest(sr.store, sr.ident, 2).clients == ["owner-a", "owner-b"]


def test_quorum_miss_in_the_aggregate_task_writes_nothing(round1: Round1, tmp_path: Path) -> None:
    # Prepare: min_clients 3, and owner-b's delta is corrupted in the store.
    sr = _store_round(round1, tmp_path / "store", federation={"min_clients": 3})
    key = layout.client_delta_key(sr.ident.prefix, sr.ident.experiment, "owner-b", 1)
    sr.store.put_bytes(key, b"not a safetensors file", overwrite=True)
    before = _snapshot(sr.store)
    # Execute
    with pytest.raises(QuorumError) as err:
        _aggregate_task(sr)
    # Assert: not one object added or changed; theta_0 still reads back against its sha256.
    assert _snapshot(sr.store) == before
    assert "owner-b: sha256" in str(err.value)
    assert Ledger(sr.cfg, sr.store).last_committed() == 0
    assert same_adapter(exchange.read_global(sr.store, sr.ident, 0), round1.theta0)


def test_theta_0_is_the_seeded_adapter_even_on_a_used_model(round1: Round1, tmp_path: Path) -> None:
    # Prepare: this worker's pooled model holds a trained adapter (an earlier experiment's round).
    from fgrpo_io import runtime
    from tasks.aggregate import initialise_task

    cfg = round1.config(store={"root": str(tmp_path / "store")})
    with runtime.borrowed_bundle(cfg) as bundle:
        set_adapter(bundle.model, round1.outcome.adapter)
    # Execute
    initialise_task.fn(cfg)
    # Assert: theta_0 is the adapter as seeded (lora.init_seed), not what the model held.
    theta0 = exchange.read_global(LocalStore(tmp_path / "store"), exchange.identity(cfg), 0)
    assert same_adapter(theta0, round1.theta0)


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    env = request.getfixturevalue("s3_env")
    return S3Store(env.bucket, endpoint_url=env.endpoint_url, region=env.region)


def test_retried_upload_never_overwrites_a_committed_object(round1: Round1, any_store: ObjectStore) -> None:
    # Prepare: owner-a's delta committed once.
    ident = exchange.identity(round1.cfg)
    update = round1.honest["owner-a"]
    first = exchange.write_client_delta(any_store, ident, 1, update.delta, update.stats, "float32")
    mkey = layout.client_manifest_key(ident.prefix, ident.experiment, "owner-a", 1)
    written = exchange.write_global_adapter(any_store, ident, 1, round1.outcome.adapter)
    exchange.write_global_manifest(any_store, ident, 1, written, list(CLIENTS), "fgrpo")
    gkey = written[0]
    keys = [first.delta_key, mkey, gkey, layout.global_manifest_key(ident.prefix, ident.experiment, 1)]
    committed = [any_store.get_bytes(k) for k in keys]
    other = {k: v + 1e-3 for k, v in update.delta.items()}
    # Execute: a retry with the same bytes passes; a "retry" that computed something else fails.
    again = exchange.write_client_delta(any_store, ident, 1, update.delta, update.stats, "float32")
    with pytest.raises(ConflictError, match="never replaced"):
        exchange.write_client_delta(any_store, ident, 1, other, update.stats, "float32")
    with pytest.raises(ConflictError, match="never overwritten"):
        exchange.write_global_adapter(any_store, ident, 1, other)
    # Assert: the retry returns the committed manifest; no committed byte changed.
    assert again == first
    assert [any_store.get_bytes(k) for k in keys] == committed
    assert sha256_hex(any_store.get_bytes(first.delta_key)) == first.sha256
