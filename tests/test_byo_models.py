"""Bring your own model: any causal-LM folder, a Hub model from the local cache, all-linear LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from transformers import AutoModelForCausalLM

from fgrpo_core.config import parse_config
from fgrpo_core.errors import ConfigError
from fgrpo_core.families import Example
from fgrpo_core.lora_targets import linear_layer_names
from fgrpo_core.models import example_prompt, get_adapter, load_bundle, save_adapter_folder
from fgrpo_core.trainer import train_client
from tests.byo_helpers import add1_client, byo_config, hub_cache_layout, save_arch_model

# PEFT's all-linear on each architecture (the output head excluded): the layers an adapter gets.
EXPECTED_LINEAR = {
    "gpt2": ["c_attn", "c_fc", "c_proj"],
    "qwen2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "gpt_neox": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "opt": ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"],
}


def varied(completions: list[str], **kwargs: Any) -> list[float | None]:
    """A reward that differs between random completions (exact match would be all 0: no gradient)."""
    return [float(ord(c[0]) % 7) if c else 0.0 for c in completions]


@pytest.mark.parametrize("arch", sorted(EXPECTED_LINEAR))
def test_each_architecture_trains_one_grpo_step_with_all_linear_lora(arch: str, tmp_path: Path) -> None:
    # Prepare: a random-init model of this architecture saved as a user would bring it.
    folder = save_arch_model(arch, tmp_path / arch)
    cfg = parse_config(byo_config({"source": "local", "path": str(folder)}))
    bundle = load_bundle(cfg)
    base_before = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if "lora_" not in n}
    start = get_adapter(bundle.model)
    # Execute
    result = train_client(
        bundle,
        start,
        add1_client(),
        varied,
        (0.0, 6.0),
        cfg.grpo,
        cfg.evaluation,
        round_idx=0,
        seed=0,
        output_dir=tmp_path / "run",
    )
    # Assert: every linear layer but the head got an adapter; LoRA moved, the base did not.
    assert linear_layer_names(AutoModelForCausalLM.from_pretrained(folder)) == EXPECTED_LINEAR[arch]
    targeted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in start}
    assert targeted == set(EXPECTED_LINEAR[arch])
    assert result.stats.steps == 1 and bundle.chat is False
    assert any(not torch.equal(result.adapter[k], start[k]) for k in start)
    after = dict(bundle.model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in base_before.items())


def test_target_mismatch_names_the_real_linear_layers_at_validation(tmp_path: Path) -> None:
    # Prepare: GPT-2 has c_attn/c_proj/c_fc, not Llama's q_proj.
    folder = save_arch_model("gpt2", tmp_path / "gpt2")
    cfg = byo_config({"source": "local", "path": str(folder)}, lora={"target_modules": ["q_proj", "c_attn"]})
    # Execute / Assert: validation (no run) names the unknown target and the model's linear layers.
    with pytest.raises(ConfigError) as info:
        parse_config(cfg)
    message = str(info.value)
    assert "['q_proj'] are not linear layers of GPT2LMHeadModel" in message
    assert "['c_attn', 'c_fc', 'c_proj']" in message and "all-linear" in message
    assert parse_config({**cfg, "lora": {"target_modules": ["c_attn"]}}).lora.target_modules == ["c_attn"]


def test_hub_model_loads_from_the_local_cache_and_names_its_base_by_id(tmp_path: Path) -> None:
    # Prepare: a Qwen2 model in the hub cache layout, as `hf download` leaves it.
    cache = hub_cache_layout(save_arch_model("qwen2", tmp_path / "src"), tmp_path / "hub", "acme/tiny-qwen")
    model = {"source": "hub", "name": "acme/tiny-qwen", "hub_cache": str(cache)}
    cfg = parse_config(byo_config(model))
    # Execute
    bundle = load_bundle(cfg)
    folder = save_adapter_folder(
        bundle.model.peft_config["default"], get_adapter(bundle.model), tmp_path / "adapter"
    )
    # Assert: revision defaults to main; the adapter names the base by Hub id and revision.
    written = json.loads((folder / "adapter_config.json").read_text())
    assert (cfg.model.revision, cfg.model.model_id) == ("main", "acme/tiny-qwen")
    assert (written["base_model_name_or_path"], written["revision"]) == ("acme/tiny-qwen", "main")
    assert isinstance(bundle.model, peft.PeftModel)


def test_missing_hub_model_says_how_to_pre_download(tmp_path: Path) -> None:
    # Prepare
    model = {"source": "hub", "name": "acme/absent", "revision": "v1", "hub_cache": str(tmp_path)}
    cfg = parse_config(byo_config(model))
    # Execute / Assert
    with pytest.raises(
        ConfigError, match=r"not in .* offline: pre-download it .*`hf download acme/absent --revision v1`"
    ):
        load_bundle(cfg)
    with pytest.raises(ConfigError, match=r"model\.name is required"):
        parse_config(byo_config({"source": "hub"}))


def test_local_adapter_names_an_absolute_base_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a relative model path, as a config in the repository would give it.
    save_arch_model("gpt2", tmp_path / "models" / "g")
    monkeypatch.chdir(tmp_path)
    bundle = load_bundle(parse_config(byo_config({"source": "local", "path": "models/g"})))
    # Execute
    folder = save_adapter_folder(
        bundle.model.peft_config["default"], get_adapter(bundle.model), tmp_path / "adapter"
    )
    # Assert
    written = json.loads((folder / "adapter_config.json").read_text())
    assert written["base_model_name_or_path"] == str((tmp_path / "models" / "g").resolve())


def test_prompt_formats_plain_template_and_chat(tmp_path: Path) -> None:
    # Prepare: one model without a chat template, one with.
    plain_dir = save_arch_model("llama", tmp_path / "plain")
    chat_dir = save_arch_model(
        "llama", tmp_path / "chat", chat_template="{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
    )
    plain = load_bundle(
        parse_config(
            byo_config({"source": "local", "path": str(plain_dir), "plain_prompt": "Q: {prompt}\nA:"})
        )
    )
    chat = load_bundle(parse_config(byo_config({"source": "local", "path": str(chat_dir)})))
    family = Example("3+4", 7, "add1")
    messages = Example("hi", "x", "", prompt=[{"role": "user", "content": "hi"}], columns={"answer": "x"})
    string = Example("What is 2+2?", "4", "", prompt="What is 2+2?", columns={"answer": "4"})
    # Execute / Assert: plain models use plain_prompt; chat models template message lists only.
    assert bundle_prompts(plain, [family, messages, string]) == [
        "Q: 3+4=\nA:",
        "Q: hi\nA:",
        "Q: What is 2+2?\nA:",
    ]
    assert chat.chat is True
    assert bundle_prompts(chat, [messages, string]) == ["<hi>", "What is 2+2?"]
    with pytest.raises(ConfigError, match="no chat template"):
        load_bundle(
            parse_config(byo_config({"source": "local", "path": str(plain_dir), "prompt_format": "chat"}))
        )
    with pytest.raises(ConfigError, match="must contain"):
        parse_config(byo_config({"source": "local", "path": str(plain_dir), "plain_prompt": "Q:"}))


def bundle_prompts(bundle: object, examples: list[Example]) -> list[str]:
    return [example_prompt(bundle, ex) for ex in examples]  # type: ignore[arg-type]
