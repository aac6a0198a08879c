"""Time per GRPO step of the client trainer, and the adapter's size, for the tiny model and SmolLM2.

    .venv/bin/python bench/step_time.py --model tiny --steps 20
    .venv/bin/python bench/step_time.py --model smollm2 --steps 3      # ~10 s a step on 2 CPU cores

One client, one round of `--steps` local GRPO steps with the demo's (smollm2) or tiny config's
settings, on CUDA when present (`--device`). The first step is reported apart (it includes
TRL's set-up). Writes bench/results/step-time-<model>-<device>.json and prints a markdown row.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fgrpo_core.config import parse_config  # noqa: E402
from fgrpo_core.deltas import encode  # noqa: E402
from fgrpo_core.federation import client_update  # noqa: E402
from fgrpo_core.models import get_adapter, load_bundle  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA).")
    parser.add_argument(
        "--model-folder",
        help="A Hugging Face folder to load instead of --model's weights (source 'local'), e.g. "
        "SmolLM2's architecture with random weights from bench/device_kit.py.",
    )
    parser.add_argument("--results-dir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    raw = yaml.safe_load(
        (REPO / "configs" / ("demo.yaml" if args.model == "smollm2" else "tiny.yaml")).read_text()
    )
    raw["grpo"] = {**raw["grpo"], "local_steps": args.steps, "device": args.device, "bf16": args.bf16}
    raw["model"]["cache_dir"] = str(REPO / ".cache" / "fgrpo" / "models")
    if args.model_folder:
        raw["model"] = {"source": "local", "path": args.model_folder, "revision": "random-weights"}
    raw["tracking"] = {"enabled": False}
    cfg = parse_config(raw)

    started = time.perf_counter()
    bundle = load_bundle(cfg)
    load_s = time.perf_counter() - started
    global_adapter = get_adapter(bundle.model)
    steps_at: list[float] = []

    def progress(step: int, total: int, reward: float) -> None:
        steps_at.append(time.perf_counter())

    client = cfg.clients[0].id
    t0 = time.perf_counter()
    update = client_update(bundle, global_adapter, cfg, client, 1, tempfile.mkdtemp(), progress)
    round_s = time.perf_counter() - t0
    gaps = [b - a for a, b in itertools.pairwise(steps_at)]
    n_params = sum(t.numel() for t in global_adapter.values())
    result = {
        "model": args.model,
        "weights": "random" if args.model_folder else "trained",
        "model_folder": args.model_folder,
        "device": str(bundle.device),
        "bf16": args.bf16,
        "torch_threads": __import__("torch").get_num_threads(),
        "steps": update.stats.steps,
        "completions_per_step": cfg.grpo.per_device_train_batch_size,
        "max_completion_length": cfg.grpo.max_completion_length,
        "model_load_s": load_s,
        "round_s": round_s,
        "train_wall_s": update.stats.wall_time_s,
        "s_per_step_after_first": sum(gaps) / len(gaps) if gaps else None,
        "first_step_s": steps_at[0] - t0 if steps_at else None,
        "adapter_tensors": len(global_adapter),
        "adapter_params": n_params,
        "adapter_bytes": {d: len(encode(update.delta, d)) for d in ("float32", "bfloat16", "int8")},
        "base_params": sum(p.numel() for n, p in bundle.model.named_parameters() if "lora_" not in n),
        "r_pre": update.stats.r_pre,
        "r_post": update.stats.r_post,
    }
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.model}{'-random' if args.model_folder else ''}-{result['device']}{'-bf16' if args.bf16 else ''}"
    path = out / f"step-time-{tag}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
