"""GPU options validated on the CPU: vLLM and 4-bit need CUDA and an extra; checkpointing trains here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fgrpo_core.config import ExperimentConfig, parse_config
from fgrpo_core.errors import ConfigError
from fgrpo_core.gpu_options import gpu_option_problems
from fgrpo_core.models import get_adapter, load_bundle
from fgrpo_core.preflight import preflight
from fgrpo_core.trainer import grpo_config, train_client
from tests.byo_helpers import add1_client, byo_config, save_arch_model


def _cfg(tmp_path: Path, model: dict[str, object] | None = None, **grpo: object) -> ExperimentConfig:
    """A tiny local Llama on device 'cpu' (so the CUDA checks fail on a GPU machine too)."""
    folder = save_arch_model("llama", tmp_path / "m")
    raw = byo_config({"source": "local", "path": str(folder), **(model or {})})
    raw["grpo"] = {**raw["grpo"], "device": "cpu", **grpo}
    return parse_config(raw)


def test_use_vllm_without_cuda_or_vllm_is_a_clear_error(tmp_path: Path) -> None:
    # Prepare
    cfg = _cfg(tmp_path, use_vllm=True)
    # Execute / Assert: both missing pieces named, before any model loads; preflight lists them.
    with pytest.raises(ConfigError) as info:
        load_bundle(cfg)
    assert "grpo.use_vllm needs a CUDA device" in str(info.value)
    if importlib.util.find_spec("vllm") is None:
        assert "pip install 'fgrpo[vllm]'" in str(info.value)
    assert [p.kind for p in preflight(cfg)] == ["gpu"] * len(gpu_option_problems(cfg))


def test_load_in_4bit_without_cuda_or_bitsandbytes_is_a_clear_error(tmp_path: Path) -> None:
    # Prepare
    cfg = _cfg(tmp_path, model={"load_in_4bit": True})
    # Execute / Assert
    with pytest.raises(ConfigError) as info:
        load_bundle(cfg)
    assert "model.load_in_4bit needs a CUDA device" in str(info.value)
    if importlib.util.find_spec("bitsandbytes") is None:
        assert "pip install 'fgrpo[qlora]'" in str(info.value)


def test_gradient_checkpointing_reaches_trl_and_trains_lora(tmp_path: Path) -> None:
    # Prepare
    cfg = _cfg(tmp_path, gradient_checkpointing=True)
    bundle = load_bundle(cfg)
    start = get_adapter(bundle.model)

    def varied(completions: list[str], **kwargs: object) -> list[float | None]:
        return [float(ord(c[0]) % 5) if c else 0.0 for c in completions]

    # Execute
    args = grpo_config(cfg.grpo, 0, tmp_path, use_cpu=True)
    result = train_client(
        bundle,
        start,
        add1_client(),
        varied,
        (0.0, 4.0),
        cfg.grpo,
        cfg.evaluation,
        round_idx=0,
        seed=0,
        output_dir=tmp_path / "run",
    )
    # Assert
    assert args.gradient_checkpointing is True and args.use_vllm is False
    assert result.stats.steps == 1
    assert any(not torch.equal(result.adapter[k], start[k]) for k in start)
