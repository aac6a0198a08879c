"""Tiny models of several architectures, built from configs and saved as a user would bring them."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    PretrainedConfig,
    Qwen2Config,
)

from fgrpo_core.base_models import build_tiny_tokenizer
from fgrpo_core.families import generate_examples
from fgrpo_core.partition import ClientData

SMALL = {"num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64}


def arch_config(arch: str, vocab: int) -> PretrainedConfig:
    """A ~50k-parameter config of ``arch`` (random init): architecture coverage, not skill."""
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    if arch == "qwen2":
        return Qwen2Config(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_key_value_heads=2, **SMALL
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, **SMALL)
    if arch == "opt":
        return OPTConfig(
            vocab_size=vocab,
            hidden_size=32,
            ffn_dim=64,
            word_embed_proj_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        )
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, **SMALL)
    raise ValueError(arch)


def save_arch_model(arch: str, folder: Path, chat_template: str | None = None) -> Path:
    """``save_pretrained`` of a random-init ``arch`` model and the tiny character tokenizer."""
    tokenizer = build_tiny_tokenizer()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    config = arch_config(arch, len(tokenizer))
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(config, name, getattr(tokenizer, name))
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def hub_cache_layout(folder: Path, cache: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """Copy a saved model into the Hugging Face hub cache layout (refs/main -> snapshots/<commit>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    return cache


def add1_client(n_train: int = 8, n_val: int = 4, seed: int = 1) -> ClientData:
    rng = random.Random(seed)
    return ClientData(
        "c1",
        generate_examples("add1", n_train, rng),
        generate_examples("add1", n_val, rng),
        {"add1": n_train},
    )


def byo_config(model: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A one-client config around ``model`` with one short GRPO step."""
    cfg: dict[str, Any] = {
        "name": "byo",
        "model": model,
        "lora": {"r": 2, "alpha": 4},
        "grpo": {
            "device": "cpu",
            "local_steps": 1,
            "num_generations": 2,
            "per_device_train_batch_size": 4,
            "max_completion_length": 3,
            "learning_rate": 1e-2,
        },
        "data": {"families": ["add1"]},
        "clients": [{"id": "c1", "families": ["add1"], "n_val": 2}],
        "evaluation": {"max_new_tokens": 3},
    }
    cfg.update(sections)
    return cfg
