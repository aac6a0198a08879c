"""Partitioning: seeded Dirichlet mixes, one global pool used exactly once, held-out sets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.errors import ConfigError
from fgrpo_core.partition import client_data, eval_sets, family_mix, training_pool

FAMILIES = ["add1", "mul1", "add2", "sub2"]


def _config(clients: list[dict[str, Any]] | None = None, **data: Any) -> ExperimentConfig:
    data_section: dict[str, Any] = {
        "families": FAMILIES,
        "seed": 3,
        "eval_per_family": 20,
        "probe_per_family": 12,
    }
    data_section.update(data)
    if clients is None:
        clients = [
            {"id": "a", "n_train": 40, "n_val": 8},
            {"id": "b", "n_train": 25, "n_val": 6, "families": ["add2", "sub2"]},
            {"id": "c", "n_train": 60, "n_val": 10},
        ]
    return parse_config({"name": "t", "clients": clients, "data": data_section})


def _triples(examples: list[Any]) -> list[tuple[str, str, int]]:
    return [(e.family, e.question, e.answer) for e in examples]


def test_same_config_gives_identical_data_and_seeds_differ() -> None:
    # Prepare
    cfg, twin, other = _config(), _config(), _config(seed=4)
    # Execute
    first = [client_data(cfg, c.id) for c in cfg.clients]
    again = [client_data(twin, c.id) for c in twin.clients]
    reseeded = [client_data(other, c.id) for c in other.clients]
    # Assert
    assert first == again
    assert eval_sets(cfg) == eval_sets(twin)
    assert [d.train for d in first] != [d.train for d in reseeded]
    assert [d.mix for d in first] != [d.mix for d in reseeded]


def test_shares_are_stable_across_processes() -> None:
    # Prepare: a child interpreter with another string-hash seed recomputes client b's share.
    code = (
        "import json; from tests.test_partition import _config, _triples; "
        "from fgrpo_core.partition import client_data; "
        "d = client_data(_config(), 'b'); print(json.dumps([_triples(d.train), _triples(d.val)]))"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(repo)}
    # Execute
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo, timeout=120
    )
    here = client_data(_config(), "b")
    # Assert: the same prompts (seeds come from crc32, not hash()).
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        [list(t) for t in _triples(here.train)],
        [list(t) for t in _triples(here.val)],
    ]


@pytest.mark.parametrize("min_per_family", [0, 2, 6])
def test_mix_counts_sum_to_n_train_and_respect_minimum(min_per_family: int) -> None:
    # Prepare
    cfg = _config(min_per_family=min_per_family, dirichlet_alpha=0.1)
    for spec in cfg.clients:
        # Execute
        mix = family_mix(cfg, spec.id)
        data = client_data(cfg, spec.id)
        # Assert: the listed families only, the exact total, the floor, and train matches the mix.
        assert list(mix) == (spec.families or FAMILIES)
        assert sum(mix.values()) == spec.n_train
        assert min(mix.values()) >= min_per_family
        assert data.mix == mix
        assert {f: sum(e.family == f for e in data.train) for f in mix} == mix


def test_minimum_larger_than_n_train_names_the_field() -> None:
    # Prepare: 4 families x 11 > 40 prompts of client a.
    cfg = _config(min_per_family=11)
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"clients\[a\]\.n_train"):
        family_mix(cfg, "a")


def test_clients_cover_the_pool_exactly_once_in_order() -> None:
    # Prepare
    cfg = _config()
    pool = training_pool(cfg)
    # Execute: per family, the clients' slices in config order.
    datas = [client_data(cfg, c.id) for c in cfg.clients]
    by_family = {f: [t for d in datas for t in _triples(d.train) if t[0] == f] for f in FAMILIES}
    # Assert: the concatenation is the pool itself (no instance unused or used twice).
    assert sum(len(v) for v in pool.values()) == sum(c.n_train for c in cfg.clients)
    assert by_family == {f: _triples(pool[f]) for f in FAMILIES}


def test_appending_a_client_keeps_earlier_shares_and_extends_the_pool() -> None:
    # Prepare
    cfg = _config()
    grown = _config([*(c.model_dump() for c in cfg.clients), {"id": "d", "n_train": 30}])
    # Execute
    pool, grown_pool = training_pool(cfg), training_pool(grown)
    # Assert: each family's pool is a prefix of the longer one; earlier clients are untouched.
    for family in FAMILIES:
        assert grown_pool[family][: len(pool[family])] == pool[family]
    for spec in cfg.clients:
        assert client_data(grown, spec.id).train == client_data(cfg, spec.id).train


def _entropy(mix: dict[str, int]) -> float:
    total = sum(mix.values())
    return -sum(c / total * math.log(c / total) for c in mix.values() if c > 0)


def test_small_alpha_skews_mixes() -> None:
    # Prepare: ten clients of 100 prompts over four families, seed fixed.
    ids = [f"c{i}" for i in range(10)]
    clients: list[dict[str, Any]] = [{"id": i, "n_train": 100} for i in ids]
    skewed, flat = _config(clients, dirichlet_alpha=0.05), _config(clients, dirichlet_alpha=100.0)
    # Execute
    skewed_mixes = [family_mix(skewed, i) for i in ids]
    flat_mixes = [family_mix(flat, i) for i in ids]
    # Assert: small alpha concentrates on one family; large alpha is close to uniform (log 4 = 1.386).
    assert sum(max(m.values()) for m in skewed_mixes) / 10 > 80
    assert max(_entropy(m) for m in skewed_mixes) < 1.0
    assert min(_entropy(m) for m in flat_mixes) > 1.3


def test_validation_follows_mix_and_avoids_large_space_training_questions() -> None:
    # Prepare
    cfg = _config()
    pool_questions = {f: {e.question for e in v} for f, v in training_pool(cfg).items()}
    for spec in cfg.clients:
        # Execute
        data = client_data(cfg, spec.id)
        present = {f for f, n in data.mix.items() if n > 0}
        # Assert: n_val prompts, every present family represented, none from an absent family.
        assert len(data.val) == spec.n_val
        assert {e.family for e in data.val} == present
        for e in data.val:
            if e.family in ("add2", "sub2"):
                assert e.question not in pool_questions[e.family]


def test_client_with_data_path_uses_its_file(tmp_path: Path) -> None:
    # Prepare: 12 local examples of sub2 without a family field (the client's only family).
    path = tmp_path / "own.jsonl"
    questions = [f"{50 + i}-{i}" for i in range(12)]
    path.write_text("".join(json.dumps({"question": q, "answer": 50}) + "\n" for q in questions))
    clients = [
        {"id": "a", "n_train": 10, "n_val": 4},
        {"id": "own", "families": ["sub2"], "n_val": 3, "data_path": str(path)},
    ]
    cfg = _config(clients)
    # Execute
    own = client_data(cfg, "own")
    # Assert: a seeded split of exactly the file's examples; the generated pool serves client a only.
    assert sorted(e.question for e in own.train + own.val) == sorted(questions)
    assert (len(own.val), len(own.train), own.mix) == (3, 9, {"sub2": 9})
    assert own == client_data(cfg, "own")
    assert sum(len(v) for v in training_pool(cfg).values()) == 10


def test_data_path_too_small_for_n_val(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "tiny.jsonl"
    path.write_text(json.dumps({"question": "1+1", "answer": 2, "family": "add1"}) + "\n")
    cfg = _config([{"id": "own", "n_val": 2, "data_path": str(path)}])
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"clients\[own\]\.n_val"):
        client_data(cfg, "own")


def test_eval_and_probe_sets_sized_and_disjoint_from_training_where_feasible() -> None:
    # Prepare
    cfg = _config()
    pool_questions = {f: {e.question for e in v} for f, v in training_pool(cfg).items()}
    # Execute
    sets = eval_sets(cfg)
    # Assert
    assert {f: len(v) for f, v in sets.eval.items()} == dict.fromkeys(FAMILIES, 20)
    assert {f: len(v) for f, v in sets.probe.items()} == dict.fromkeys(FAMILIES, 12)
    assert all(e.family == f for f, v in sets.eval.items() for e in v)
    assert sets.eval["add2"][:12] != sets.probe["add2"]  # separate streams
    for family in ("add2", "sub2"):
        held_out = {e.question for e in sets.eval[family] + sets.probe[family]}
        assert not held_out & pool_questions[family]


def test_unknown_client_is_a_config_error() -> None:
    # Prepare
    cfg = _config()
    # Execute / Assert
    with pytest.raises(ConfigError, match="unknown client 'zz'"):
        client_data(cfg, "zz")
    with pytest.raises(ConfigError, match="unknown client 'zz'"):
        family_mix(cfg, "zz")
