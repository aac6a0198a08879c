"""GPU-only options (vLLM generation, 4-bit QLoRA): checked before a model loads, with what to install.

They are validated on any machine; they run only on CUDA (README "GPU options").
"""

from __future__ import annotations

import importlib.util

from fgrpo_core.config import ExperimentConfig
from fgrpo_core.errors import ConfigError


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def gpu_option_problems(cfg: ExperimentConfig, device: str | None = None) -> list[str]:
    """Every GPU option of ``cfg`` that cannot run here, each with what to fix."""
    wanted = device or cfg.grpo.device
    on_cuda = wanted.startswith("cuda") or (wanted == "auto" and _cuda_available())
    problems = []
    if cfg.grpo.use_vllm:
        if importlib.util.find_spec("vllm") is None:
            problems.append("grpo.use_vllm needs vLLM: pip install 'fgrpo[vllm]' (or set use_vllm: false)")
        if not on_cuda:
            problems.append(
                "grpo.use_vllm needs a CUDA device (TRL's colocate mode); set use_vllm: false on the CPU"
            )
    if cfg.model.load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append(
                "model.load_in_4bit needs bitsandbytes: pip install 'fgrpo[qlora]' (or set load_in_4bit: false)"
            )
        if not on_cuda:
            problems.append(
                "model.load_in_4bit needs a CUDA device (bitsandbytes 4-bit); set load_in_4bit: false"
            )
        if cfg.model.source == "tiny":
            problems.append("model.load_in_4bit applies to 'local', 'hub' and 'smollm2' models, not 'tiny'")
    return problems


def require_gpu_options(cfg: ExperimentConfig, device: str | None = None) -> None:
    """Raise ConfigError listing every GPU option that cannot run on this machine."""
    problems = gpu_option_problems(cfg, device)
    if problems:
        raise ConfigError("; ".join(problems))
