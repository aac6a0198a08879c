"""What a lent GPU machine needs to time the client trainer, built here and carried there.

    .venv/bin/python bench/device_kit.py build                  # here: writes .device-kit/ (~40 MB)
    python3 bench/device_kit.py random-model --out /tmp/arch    # there: SmolLM2's shape, random weights

The GPU machine (the `device` tool) reaches no network, its image lacks TRL, datasets and
pydantic and holds other versions of transformers and huggingface_hub, and a call carries at
most 64 MiB. So `build` downloads CPython 3.12 manylinux wheels of the versions this project
pins (requirements.lock) for the packages the image lacks or holds at another version, and
copies SmolLM2-135M-Instruct's config and tokenizer. Its weights (a 94 MB GGUF) do not fit a
call: `random-model` builds the same architecture with random weights. At a fixed completion
length (random weights never stop early) a GRPO step costs the same compute as with the real
weights, so it times the trainer but says nothing about learning. bench/gpu_check.sh runs it all.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KIT = REPO / ".device-kit"
# Missing from the GPU image, or there at another version than requirements.lock pins
# (the device README's package list, 2026-11-17: transformers 5.17, huggingface_hub 1.33).
CARRIED = (
    "transformers",
    "huggingface_hub",
    "tokenizers",
    "hf-xet",
    "safetensors",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "dill",
    "multiprocess",
    "fsspec",
    "pydantic",
    "pydantic_core",
    "annotated-types",
    "typing-inspection",
    "typing_extensions",
)
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def pinned_versions(lock: Path, names: tuple[str, ...]) -> dict[str, str]:
    """``name -> version`` from a pip lock file, names compared the way pip does (- _ . alike)."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {}
    for line in lock.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[norm(name)] = version.strip()
    missing = [n for n in names if norm(n) not in pins]
    if missing:
        raise SystemExit(f"{lock} pins no version of {missing}; add them to the lock or to CARRIED")
    return {n: pins[norm(n)] for n in names}


def build(kit: Path) -> None:
    """Wheels for CPython 3.12 (the GPU image's Python) and SmolLM2's config and tokenizer."""
    from fgrpo_core.base_models import SMOLLM2_CACHE_NAME, load_base_model
    from fgrpo_core.settings import DataSettings, ModelSettings

    wheels = kit / "whl"
    shutil.rmtree(kit, ignore_errors=True)
    wheels.mkdir(parents=True)
    pins = pinned_versions(REPO / "requirements.lock", CARRIED)
    platform_args = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
         "3.12", "--implementation", "cp", *platform_args, "-d", str(wheels),
         *(f"{name}=={version}" for name, version in pins.items())],
        check=True,
    )  # fmt: skip
    model = ModelSettings(source="smollm2")
    load_base_model(model, DataSettings().families)  # converts the GGUF once into the cache
    converted = Path(model.cache_dir).resolve() / SMOLLM2_CACHE_NAME
    target = kit / "smollm2-arch"
    target.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(converted / name, target / name)
    if (converted / "chat_template.jinja").is_file():
        shutil.copy2(converted / "chat_template.jinja", target / "chat_template.jinja")
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    print(f"wrote {kit}: {len(list(wheels.iterdir()))} wheels, {size / 2**20:.1f} MiB in all (limit 64)")


def random_model(source: Path, out: Path, seed: int) -> None:
    """A Hugging Face folder with ``source``'s config and tokenizer and random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(source)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for path in source.iterdir():
        if path.name != "config.json":
            shutil.copy2(path, out / path.name)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {config.model_type}, {params / 1e6:.1f}M parameters, random weights")


def summary(results: Path) -> str:
    """Markdown table of the step-time JSONs in ``results``: seconds a step and CPU / device ratio."""
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("step-time-*.json"))]
    cpu = {(r["model"], r.get("weights")): r["s_per_step_after_first"] for r in rows if r["device"] == "cpu"}
    lines = [
        "| model | weights | device | bf16 | torch threads | s / step (after the first) | first step s | CPU s / this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = cpu.get((r["model"], r.get("weights")))
        ratio = f"{base / r['s_per_step_after_first']:.1f}×" if base and r["s_per_step_after_first"] else ""
        lines.append(
            f"| {r['model']} | {r.get('weights', 'trained')} | {r['device']} | {r['bf16']} | "
            f"{r['torch_threads']} | {r['s_per_step_after_first']:.3f} | {r['first_step_s']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build_p = sub.add_parser("build", help="Here: wheels and SmolLM2's config and tokenizer.")
    build_p.add_argument("--kit", type=Path, default=KIT)
    model_p = sub.add_parser("random-model", help="There: SmolLM2's architecture, random weights.")
    model_p.add_argument("--source", type=Path, default=KIT / "smollm2-arch")
    model_p.add_argument("--out", type=Path, required=True)
    model_p.add_argument("--seed", type=int, default=0)
    summary_p = sub.add_parser("summary", help="Markdown table of a folder of step-time JSONs.")
    summary_p.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.kit)
    elif args.command == "random-model":
        random_model(args.source, args.out, args.seed)
    else:
        print(summary(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
