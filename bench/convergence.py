"""Does FGRPO beat FedAvg on non-IID owners? Every strategy and reference, side by side, same seeds.

    .venv/bin/python bench/convergence.py                     # tiny model, 6 scenarios, 5 seeds
    .venv/bin/python bench/convergence.py --ablation          # plus FGRPO's option ablation
    .venv/bin/python bench/convergence.py --quick             # CI form: 1 seed, 2 rounds
    .venv/bin/python bench/convergence.py --model smollm2     # the demo model (hours on a CPU)
    .venv/bin/python bench/convergence.py --model smollm2 --scenarios disjoint   # ~1.5 h on 2 cores

Writes bench/results/convergence-<model>.json, docs/results[-smollm2].md (tables, goals), PNG plots in
docs/img/. Runs are spread over worker processes (one torch thread each); every run of a
scenario uses the same seeds and the same owners, so differences are the arm's alone.
Evaluation seeds are 1-5 (3 were too few to call any difference); nothing is tuned on them: the
tuning seed is 0. How each model's budget was chosen is in scenarios.BUDGETS; what each
scenario must build before it tests anything is checked by bench/preconditions.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from bench import scenarios  # noqa: E402
from bench.references import run_arm  # noqa: E402
from fgrpo_io.environment import apply_defaults  # noqa: E402

EVAL_SEEDS = (1, 2, 3, 4, 5)
TUNING_SEED = 0
ARM_PRIORITY = (
    "fedavg",
    "fgrpo",
    "local",
    "fgrpo-probe",
    "median",
    "trimmed_mean",
    "fgrpo:scale_start=first_round",
    "fgrpo:gain_n=informative",
    "fgrpo-probe:exclude",
    "reward",
    "central",
)


def _source_digest() -> str:
    """Digest of the code a run depends on: a kept result is reused only with the same code."""
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("fgrpo_core/*.py"), *REPO.glob("bench/*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _job(args: tuple[str, str, str, int, dict[str, Any], str]) -> dict[str, Any]:
    """One (scenario, arm, seed) run in a worker process."""
    scenario, arm_name, kind, seed, raw, work = args
    # Runs are deterministic given their config and code: a finished run is kept and reused, so
    # an interrupted benchmark resumes where it stopped.
    key = json.dumps([kind, raw, _source_digest()], sort_keys=True).encode()
    done = Path(work) / f"result-{hashlib.sha256(key).hexdigest()[:16]}.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    import torch

    torch.set_num_threads(1)  # two single-thread workers beat one two-thread run on tiny models
    result = {
        "scenario": scenario,
        "arm": arm_name,
        "kind": kind,
        "seed": seed,
        **run_arm(kind, raw, Path(work)),
    }
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result))
    return result


def _warm_cache(raw: dict[str, Any]) -> float:
    """Build (or load) the base model once before the workers race to build it."""
    from fgrpo_core.config import parse_config
    from fgrpo_core.models import load_bundle

    started = time.perf_counter()
    load_bundle(parse_config(raw))
    return time.perf_counter() - started


def plan(
    model: scenarios.Model,
    budget: scenarios.Budget,
    seeds: list[int],
    names: list[str],
    ablation: bool,
    out: Path,
    only_arms: list[str] | None = None,
) -> list[tuple[str, str, str, int, dict[str, Any], str]]:
    """Every job of the run (of ``only_arms`` when given), the arms a verdict needs first.

    FedAvg, FGRPO and local-only on every seed come first, then the other arms in ARM_PRIORITY
    order, so a run cut short (results are kept per job) still has whole paired comparisons.
    """
    cache = str(out / "model-cache")
    jobs = []
    for scenario in names:
        for arm in scenarios.arms_for(scenario, references=True, ablation=ablation):
            if only_arms and arm.name not in only_arms:
                continue
            for seed in seeds:
                raw = scenarios.with_arm(
                    scenarios.base_config(scenario, model, budget, seed, cache, str(out / "runs")), arm
                )
                scenarios.write_local_datasets(raw)  # the silent owners' JSONL files
                jobs.append((scenario, arm.name, arm.kind, seed, raw, str(out / "work" / raw["name"])))
    rank = {name: i for i, name in enumerate(ARM_PRIORITY)}
    return sorted(jobs, key=lambda j: (rank.get(j[1], len(rank)), j[3], names.index(j[0])))


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = scenarios.BUDGETS["quick" if args.quick else args.model]
    seeds = [1] if args.quick else list(args.seeds)
    names = list(args.scenarios) if args.scenarios else list(scenarios.SCENARIOS)
    out = Path(args.work_dir)
    jobs = plan(args.model, budget, seeds, names, args.ablation, out, args.arms)
    if not jobs:
        raise SystemExit(f"no arm named {args.arms} in {names} (with --ablation for FGRPO's options)")
    started = time.perf_counter()
    warm_s = _warm_cache(jobs[0][4])
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for done in pool.map(_job, jobs):
            results.append(done)
            print(
                f"{done['scenario']:<11} {done['arm']:<34} seed {done['seed']} "
                f"macro {done['rounds'][-1]['macro_accuracy']:.3f} ({done['wall_time_s']:.0f} s)",
                flush=True,
            )
    import torch

    return {
        "model": args.model,
        "quick": args.quick,
        "budget": budget.__dict__,
        "seeds": seeds,
        "tuning_seed": TUNING_SEED,
        "scenarios": names,
        "configs": {f"{j[0]}/{j[1]}": j[4] for j in jobs if j[3] == seeds[0]},
        "runs": results,
        "wall_time_s": time.perf_counter() - started,
        "model_load_s": warm_s,
        "machine": {
            "cpus": os.cpu_count(),
            "workers": args.workers,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    parser.add_argument("--scenarios", nargs="+", choices=scenarios.SCENARIOS)
    parser.add_argument("--ablation", action="store_true", help="Also run FGRPO's option ablation.")
    parser.add_argument(
        "--arms", nargs="+", help="Run only these arms (e.g. 'fgrpo:tau=2' with --ablation), to add to a run."
    )
    parser.add_argument("--quick", action="store_true", help="CI form: 1 seed, the quick budget.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--docs",
        help="Results page ('' = none); default docs/results.md (tiny), docs/results-smollm2.md (smollm2).",
    )
    args = parser.parse_args(argv)
    apply_defaults()

    data = run(args)
    from bench.results_page import default_page, write_page

    suffix = f"{args.model}{'-quick' if args.quick else ''}{'-ablation' if args.ablation else ''}"
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"convergence-{suffix}.json"
    json_path.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {json_path} ({data['wall_time_s']:.0f} s)")
    docs = default_page(args.model) if args.docs is None else args.docs
    if docs:
        page = write_page(data, Path(docs), json_path)
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
