"""A distributed experiment (Prefect server, one worker per owner, S3 server, MLflow server) against
the same experiment on embedded defaults, side by side on this machine.

    .venv/bin/python bench/distributed.py [--config configs/tiny.yaml] [--rounds 2]

Both runs are `fgrpo run --json` subprocesses on the same config, seeds and warm model cache;
only `federation.mode`, the store and the tracking server differ. `fgrpo stack up` starts the
distributed topology on 127.0.0.1 first (not timed) and `down` stops it afterwards. Writes
bench/results/distributed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fgrpo_app import stack  # noqa: E402
from fgrpo_core.config import parse_config  # noqa: E402
from fgrpo_core.models import load_bundle  # noqa: E402
from fgrpo_io.environment import child_env  # noqa: E402


def _fgrpo_run(config: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fgrpo_app.cli", "run", "--config", str(config), "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"fgrpo run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    # The summary is the last JSON document on stdout (log lines may come before it).
    start = proc.stdout.find("\n{")
    text = proc.stdout if proc.stdout.startswith("{") else proc.stdout[start + 1 :]
    try:
        return wall, json.loads(text)
    except json.JSONDecodeError as err:
        raise RuntimeError(f"fgrpo run printed no JSON summary:\n{proc.stdout[-3000:]}") from err


def _env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if "=" in line
    )
    return {k: v for k, v in pairs}


def headline(ratio: float, summary: dict[str, Any], owners: int) -> dict[str, float | None]:
    """The figures the issue tracks, under their fixed names.

    ``model_loads_per_owner_per_experiment`` is the largest count over owners of what the
    distributed run's summary reports under ``model_loads`` (owner id -> base-model loads);
    None when the summary counts none (counted, never inferred from timings).
    """
    loads = summary.get("model_loads")
    per_owner = max(loads.values()) if isinstance(loads, dict) and len(loads) == owners else None
    return {"distributed_over_embedded": round(ratio, 3), "model_loads_per_owner_per_experiment": per_owner}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="fgrpo-dist-bench-"))
    raw = yaml.safe_load(Path(args.config).read_text())
    raw["output_dir"] = str(work / "out")
    raw["model"]["cache_dir"] = str(work / "model-cache")
    raw["federation"] = {**raw.get("federation", {}), "rounds": args.rounds, "round_timeout_s": 900}
    embedded = {**raw, "store": {"kind": "local", "root": str(work / "store")}}
    distributed = {
        **raw,
        "federation": {**raw["federation"], "mode": "distributed"},
        "store": {"kind": "s3", "bucket": "fgrpo", "prefix": "fgrpo"},
    }
    emb_path, dist_path = work / "embedded.yaml", work / "distributed.yaml"
    emb_path.write_text(yaml.safe_dump(embedded))
    dist_path.write_text(yaml.safe_dump(distributed))
    load_bundle(parse_config(embedded))  # warm the model cache both modes read

    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_", "FGRPO_"))
    }
    base = child_env(base)
    stack_dir = work / "stack"
    t0 = time.perf_counter()
    stack.up(parse_config(distributed), dist_path, stack_dir)
    stack_up_s = time.perf_counter() - t0
    try:
        dist_env = base | _env_file(stack_dir / "coordinator.env")
        dist_wall, dist_summary = _fgrpo_run(dist_path, dist_env)
        emb_env = base | {"PREFECT_HOME": str(work / "prefect-home")}
        emb_wall, emb_summary = _fgrpo_run(emb_path, emb_env)
    finally:
        stack.down(stack_dir)

    def macro(summary: dict[str, Any]) -> list[float]:
        return [r["evaluation"]["macro_accuracy"] for r in summary["rounds"]]

    result = {
        "headline": headline(dist_wall / emb_wall, dist_summary, len(raw["clients"])),
        "config": args.config,
        "rounds": args.rounds,
        "owners": len(raw["clients"]),
        "stack_up_s": stack_up_s,
        "embedded_wall_s": emb_wall,
        "distributed_wall_s": dist_wall,
        "ratio": dist_wall / emb_wall,
        "per_round_embedded_s": emb_wall / args.rounds,
        "per_round_distributed_s": dist_wall / args.rounds,
        "macro_accuracy_embedded": macro(emb_summary),
        "macro_accuracy_distributed": macro(dist_summary),
        "timings_embedded": emb_summary.get("timings"),
        "timings_distributed": dist_summary.get("timings"),
        "cpus": os.cpu_count(),
    }
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distributed.json").write_text(json.dumps(result, indent=1))
    md = [
        "# Distributed against embedded, same experiment, same machine",
        "",
        f"`bench/distributed.py --config {Path(args.config).name} --rounds {args.rounds}`: "
        f"{result['owners']} owners, {os.cpu_count()} CPUs; `fgrpo run` wall time including process start.",
        "",
        "| mode | wall s | per round s | macro accuracy per round |",
        "|---|---|---|---|",
        f"| embedded (ephemeral Prefect, local store, MLflow SQLite) | {emb_wall:.1f} | {emb_wall / args.rounds:.1f} | "
        f"{', '.join(f'{a:.3f}' for a in result['macro_accuracy_embedded'])} |",
        f"| distributed (Prefect server + {result['owners']} workers, S3 server, MLflow server) | {dist_wall:.1f} | "
        f"{dist_wall / args.rounds:.1f} | {', '.join(f'{a:.3f}' for a in result['macro_accuracy_distributed'])} |",
        "",
        f"Ratio distributed / embedded: **{result['ratio']:.2f}**. `fgrpo stack up` itself (not timed above): "
        f"{stack_up_s:.0f} s.",
        "",
        "Base-model loads per owner per experiment (distributed, counted by `fgrpo run`): "
        f"{result['headline']['model_loads_per_owner_per_experiment'] or 'not counted by this fgrpo run'}.",
    ]
    (out / "distributed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
