"""Which prompts each client holds: seeded Dirichlet family mixes over one global pool (SPEC §4).

Everything here is a pure function of the config, so a data owner recomputes its own share on
its own machine and no data ever moves:

1. ``family_mix``: client k draws proportions ``p ~ Dirichlet(alpha)`` over its families and turns
   them into integer counts summing to ``n_train`` (largest remainder, ``min_per_family`` each).
2. ``training_pool``: per family one seeded sequence of generated examples for the whole
   experiment; clients take consecutive slices in the order of ``cfg.clients``, so every generated
   prompt is used exactly once.
3. Validation, evaluation and probe prompts come from separate seeded streams. Where a family's
   question space is large (add2, sub2) they exclude the training pool's questions; small spaces
   (add1, mul1: 100 questions each) necessarily repeat questions across sets.

Seeds are derived from ``data.seed``, a stream label and ``zlib.crc32`` of a name (client id or
family), never Python's ``hash()``, which changes between processes.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fgrpo_core.config import ClientSpec, ExperimentConfig
from fgrpo_core.errors import ConfigError
from fgrpo_core.families import NO_FAMILY, Example, generate_examples, get_family
from fgrpo_core.owner_data import load_owner_examples

# Exclusion of training questions is applied while the excluded questions plus the draw fill at
# most this share of the family's question space (rejection sampling then stays fast).
_EXCLUDE_MAX_SHARE = 0.5


@dataclass(frozen=True)
class ClientData:
    """A client's prompts; ``mix`` counts training prompts per family (zeros included)."""

    client_id: str
    train: list[Example]
    val: list[Example]
    mix: dict[str, int]


@dataclass(frozen=True)
class EvalSets:
    """Global held-out evaluation prompts and public probe prompts, per family."""

    eval: dict[str, list[Example]]
    probe: dict[str, list[Example]]


def _stream_seed(cfg: ExperimentConfig, stream: str, name: str) -> int:
    """A 128-bit seed for one named stream, stable across processes and machines."""
    entropy = [cfg.data.seed % 2**64, zlib.crc32(stream.encode()), zlib.crc32(name.encode())]
    state = np.random.SeedSequence(entropy).generate_state(4, dtype=np.uint32)
    return int.from_bytes(state.tobytes(), "little")


def _client_spec(cfg: ExperimentConfig, client_id: str) -> ClientSpec:
    for spec in cfg.clients:
        if spec.id == client_id:
            return spec
    raise ConfigError(f"unknown client {client_id!r}; the config lists {[c.id for c in cfg.clients]}")


def _client_families(cfg: ExperimentConfig, spec: ClientSpec) -> list[str]:
    return list(spec.families) if spec.families else list(cfg.data.families)


def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Integer counts proportional to ``weights`` that sum exactly to ``total``."""
    weight_sum = float(sum(weights))
    raw = [total * w / weight_sum for w in weights]
    counts = [int(r) for r in raw]
    leftover = total - sum(counts)
    # Largest fractional parts first; ties go to the earlier family, so the order is deterministic.
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[:leftover]:
        counts[i] += 1
    return counts


def family_mix(cfg: ExperimentConfig, client_id: str) -> dict[str, int]:
    """Training prompts per family for a generated-data client (Dirichlet(alpha), seeded).

    ``min_per_family`` prompts go to each listed family first; the rest follow the proportions.
    """
    spec = _client_spec(cfg, client_id)
    families = _client_families(cfg, spec)
    floor_total = cfg.data.min_per_family * len(families)
    if floor_total > spec.n_train:
        raise ConfigError(
            f"clients[{client_id}].n_train ({spec.n_train}) is smaller than data.min_per_family "
            f"({cfg.data.min_per_family}) x {len(families)} families; raise n_train or lower min_per_family"
        )
    rng = np.random.default_rng(_stream_seed(cfg, "mix", client_id))
    proportions = rng.dirichlet([cfg.data.dirichlet_alpha] * len(families))
    extra = _largest_remainder(spec.n_train - floor_total, [float(p) for p in proportions])
    return {f: cfg.data.min_per_family + e for f, e in zip(families, extra, strict=True)}


def _pool_demand(cfg: ExperimentConfig) -> list[tuple[str, dict[str, int]]]:
    """(client id, mix) of every generated-data client, in config order."""
    return [(spec.id, family_mix(cfg, spec.id)) for spec in cfg.clients if spec.data_path is None]


def training_pool(cfg: ExperimentConfig) -> dict[str, list[Example]]:
    """The experiment's generated training prompts per family (of ``data.families``).

    Client slices of it, in config order, cover it exactly once.
    """
    totals = dict.fromkeys(cfg.data.families, 0)
    for _, mix in _pool_demand(cfg):
        for family, count in mix.items():
            totals[family] += count
    return {
        family: generate_examples(family, total, random.Random(_stream_seed(cfg, "pool", family)))
        for family, total in totals.items()
    }


def _draw(family: str, n: int, rng: random.Random, avoid: set[str]) -> list[Example]:
    """``n`` examples, avoiding the questions in ``avoid`` where the question space allows it."""
    space = get_family(family).space_size
    if len(avoid) + n > _EXCLUDE_MAX_SHARE * space:
        return generate_examples(family, n, rng)  # small space: repeats are unavoidable
    drawn: list[Example] = []
    while len(drawn) < n:
        candidate = generate_examples(family, 1, rng)[0]
        if candidate.question not in avoid:
            drawn.append(candidate)
    return drawn


def _pool_questions(pool: dict[str, list[Example]]) -> dict[str, set[str]]:
    return {family: {e.question for e in examples} for family, examples in pool.items()}


def _generated_client(cfg: ExperimentConfig, spec: ClientSpec) -> ClientData:
    pool = training_pool(cfg)
    offsets = dict.fromkeys(cfg.data.families, 0)
    own_mix: dict[str, int] | None = None
    for other_id, mix in _pool_demand(cfg):
        if other_id == spec.id:
            own_mix = mix
            break
        for family, count in mix.items():
            offsets[family] += count
    assert own_mix is not None  # spec is a generated-data client of cfg
    train = [e for f, count in own_mix.items() for e in pool[f][offsets[f] : offsets[f] + count]]

    # Validation follows the training mix, with at least one prompt per present family if n_val allows.
    present = [f for f, count in own_mix.items() if count > 0]
    floor = 1 if spec.n_val >= len(present) else 0
    val_extra = _largest_remainder(spec.n_val - floor * len(present), [own_mix[f] for f in present])
    avoid = _pool_questions(pool)
    val: list[Example] = []
    for family, extra in zip(present, val_extra, strict=True):
        rng = random.Random(_stream_seed(cfg, "val", f"{spec.id}/{family}"))
        val.extend(_draw(family, floor + extra, rng, avoid[family]))
    return ClientData(spec.id, train, val, own_mix)


def _local_client(cfg: ExperimentConfig, spec: ClientSpec, data_path: str) -> ClientData:
    """A client with its own file: shuffled (seeded), the first n_val are validation, the rest train.

    All remaining examples are training prompts: ``n_train`` sizes generated data only. TRL-format
    records (no family) count under ``mix[""]``.
    """
    families = _client_families(cfg, spec)
    default_family = families[0] if len(families) == 1 else None
    examples = load_owner_examples(data_path, default_family=default_family)
    if examples[0].family == NO_FAMILY:
        families = [NO_FAMILY]
    foreign = sorted({e.family for e in examples} - set(families))
    if foreign:
        raise ConfigError(
            f"clients[{spec.id}].data_path {data_path}: families {foreign} are not among the "
            f"client's families {families}; fix the file or list them in data.families"
        )
    if len(examples) <= spec.n_val:
        raise ConfigError(
            f"clients[{spec.id}].n_val ({spec.n_val}) leaves no training prompts: {data_path} holds "
            f"{len(examples)} examples; lower n_val or add examples"
        )
    shuffled = list(examples)
    random.Random(_stream_seed(cfg, "local", spec.id)).shuffle(shuffled)
    val, train = shuffled[: spec.n_val], shuffled[spec.n_val :]
    mix = {f: sum(1 for e in train if e.family == f) for f in families}
    return ClientData(spec.id, train, val, mix)


def client_data(cfg: ExperimentConfig, client_id: str) -> ClientData:
    """The client's training and validation prompts, recomputed from the config alone."""
    spec = _client_spec(cfg, client_id)
    if spec.data_path is not None:
        return _local_client(cfg, spec, spec.data_path)
    return _generated_client(cfg, spec)


def eval_sets(cfg: ExperimentConfig) -> EvalSets:
    """Global evaluation (``eval_per_family``) and probe (``probe_per_family``) prompts per family.

    Both avoid the generated training pool's questions where the family's space allows it
    (add2, sub2); add1 and mul1 have 100 questions each, so they share questions with training.
    """
    avoid = _pool_questions(training_pool(cfg))
    evaluation: dict[str, list[Example]] = {}
    probe: dict[str, list[Example]] = {}
    for family in cfg.data.families:
        eval_rng = random.Random(_stream_seed(cfg, "eval", family))
        probe_rng = random.Random(_stream_seed(cfg, "probe", family))
        evaluation[family] = _draw(family, cfg.data.eval_per_family, eval_rng, avoid[family])
        probe[family] = _draw(family, cfg.data.probe_per_family, probe_rng, avoid[family])
    return EvalSets(evaluation, probe)
