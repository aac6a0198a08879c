"""PEFT-named LoRA adapters for the delta tests (tests/test_deltas.py, tests/test_delta_encodings.py)."""

from __future__ import annotations

import json

import torch

from fgrpo_core.types import Adapter

PREFIX = "base_model.model.model.layers.{layer}.self_attn.{module}.lora_{ab}.weight"
Q_A = PREFIX.format(layer=0, module="q_proj", ab="A")
Q_B = PREFIX.format(layer=0, module="q_proj", ab="B")


def make_adapter(seed: int, rank: int = 8, hidden: int = 64, layers: int = 2) -> Adapter:
    """A PEFT-named LoRA state dict: A (rank, hidden), B (hidden, rank) for q_proj and v_proj."""
    generator = torch.Generator().manual_seed(seed)
    adapter: Adapter = {}
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            adapter[PREFIX.format(layer=layer, module=module, ab="A")] = torch.randn(
                rank, hidden, generator=generator
            )
            adapter[PREFIX.format(layer=layer, module=module, ab="B")] = 0.01 * torch.randn(
                hidden, rank, generator=generator
            )
    return adapter


def header_of(data: bytes) -> dict[str, object]:
    header_len = int.from_bytes(data[:8], "little")
    header: dict[str, object] = json.loads(data[8 : 8 + header_len])
    return header
